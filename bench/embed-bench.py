#!/usr/bin/env python3
"""embed-bench.py: embedding throughput of fusiond (prompt tokens a second through
/v1/embeddings, end to end over loopback HTTP) for a model file, e.g. a bge-small-shaped
random bert from `fusion-gguf-gen --arch bert -p bge-small`.  Each case sends one request of
N inputs of about L tokens; the median of the runs is printed.  Standard library only.

Usage: embed-bench.py FUSIOND MODEL [--threads T] [--runs R] [--cases N:L,N:L,...]"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fusiond")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="1:16,32:128,8:510")
    ap.add_argument("--port", type=int, default=18977)
    a = ap.parse_args()
    log = tempfile.NamedTemporaryFile(prefix="embed-bench.", suffix=".log", delete=False)
    p = subprocess.Popen([a.fusiond, "-m", a.model, "--port", str(a.port), "--threads",
                          str(a.threads)], stdout=log, stderr=log)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        words = "the cat sat on a mat what is the capital of france paris hello world".split()
        print("model %s, threads %d, load %s" % (os.path.basename(a.model), a.threads,
                                                  os.getloadavg()))
        for case in a.cases.split(","):
            n, length = (int(x) for x in case.split(":"))
            # each word is one token; [CLS] and [SEP] make up the rest
            inputs = [" ".join(words[(i + k) % len(words)] for k in range(length - 2))
                      for i in range(n)]
            rates = []
            for _ in range(a.runs + 1):  # the first run warms up
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
                t0 = time.perf_counter()
                c.request("POST", "/v1/embeddings", json.dumps({"input": inputs}),
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                body = json.loads(r.read())
                dt = time.perf_counter() - t0
                if r.status != 200:
                    sys.exit("embeddings: %d %s" % (r.status, body))
                rates.append(body["usage"]["prompt_tokens"] / dt)
            rates = rates[1:]
            print("%3d inputs x %3d tokens: %8.0f tokens/s median (runs: %s)" %
                  (n, length, statistics.median(rates), ", ".join("%.0f" % r for r in rates)))
    finally:
        p.terminate()
        p.wait()
        os.unlink(log.name)


if __name__ == "__main__":
    main()
