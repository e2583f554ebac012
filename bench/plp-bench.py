#!/usr/bin/env python3
"""plp-bench.py: prefill throughput with and without the prompt's log-probabilities.
Starts fusiond on MODEL, sends one N-token prompt (token ids) four times each way: plain
(max_tokens 1) and as lm-evaluation-harness asks (echo, logprobs 1, max_tokens 0), and
prints the median prompt tokens/s of the last three, from the answer's timings.total_ms.

Usage: plp-bench.py FUSIOND MODEL N PORT THREADS N_VOCAB  (python3 standard library only)."""
import json, subprocess, sys, time, urllib.request, statistics
fusiond, model, n, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
p = subprocess.Popen([fusiond, "-m", model, "--port", str(port), "--threads", threads, "--access-log=off"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def post(body):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/completions" % port, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())
try:
    for _ in range(100):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2); break
        except Exception:
            time.sleep(0.5)
    V = int(sys.argv[6])
    ids = [1] + [2 + (i * 37) % (V - 2) for i in range(n - 1)]
    res = {"plain": [], "plp": []}
    for r in range(4):
        for k, body in (("plain", {"prompt": ids, "max_tokens": 1, "temperature": 0}),
                        ("plp", {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1})):
            t = post(body)["timings"]
            if r > 0:
                res[k].append(n / (t["total_ms"] / 1000))
    for k in res:
        print("%s %s n=%d: %.0f prompt tok/s (runs %s)" % (model.split("/")[-1], k, n, statistics.median(res[k]),
              ", ".join("%.0f" % x for x in res[k])))
finally:
    p.terminate(); p.wait()
