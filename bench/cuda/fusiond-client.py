#!/usr/bin/env python3
"""fusiond-client.py: the requests bench/cuda/fusiond-gpu.sh sends to a running fusiond.

Waits for /health, sends one greedy /v1/completions request plain and the same one streamed
(SSE), checks that both give the same text, and writes a JSON record of the answers, the
timings and the model id.  Standard library only (the GPU machine has no pip access).

Usage: fusiond-client.py PORT OUTFILE [--prompt P] [--max-tokens N] [--pid PID]
"""
import argparse
import json
import sys
import time
import urllib.request


def call(url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    return urllib.request.urlopen(req, timeout=timeout)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_health(base, limit, pid):
    end = time.time() + limit
    last = None
    while time.time() < end:
        if pid and not alive(pid):
            raise SystemExit("fusiond (pid %d) exited before it became healthy" % pid)
        try:
            with call(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # not listening yet, or 503 while loading
            last = e
        time.sleep(0.2)
    raise SystemExit("fusiond did not become healthy in %ds: %s" % (limit, last))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--wait", type=int, default=120)
    ap.add_argument("--pid", type=int, default=0, help="fusiond's pid: stop waiting if it exits")
    a = ap.parse_args()
    base = "http://127.0.0.1:%d" % a.port
    wait_health(base, a.wait, a.pid)
    req = {"prompt": a.prompt, "max_tokens": a.max_tokens, "temperature": 0}
    rec = {"request": req}

    t0 = time.time()
    with call(base + "/v1/completions", req) as r:
        ans = json.load(r)
    rec["plain_s"] = time.time() - t0
    rec["plain"] = ans
    text = ans["choices"][0]["text"]

    t0 = time.time()
    parts, first, events, done = [], None, 0, False
    with call(base + "/v1/completions", dict(req, stream=True)) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            ev = json.loads(payload)
            events += 1
            for ch in ev.get("choices", []):
                if ch.get("text"):
                    if first is None:
                        first = time.time() - t0
                    parts.append(ch["text"])
    rec["stream_s"] = time.time() - t0
    rec["stream_first_token_s"] = first
    rec["stream_events"] = events
    rec["stream_done"] = done
    rec["stream_text"] = "".join(parts)
    rec["text"] = text
    rec["stream_equal"] = rec["stream_text"] == text and done
    with open(a.out, "w") as f:
        json.dump(rec, f, indent=1)
    print("text: %r" % text)
    print("usage: %s, plain %.3f s, stream %.3f s (first text %.3f s, %d events), stream "
          "text %s" % (ans.get("usage"), rec["plain_s"], rec["stream_s"], first or -1, events,
                       "equal" if rec["stream_equal"] else "DIFFERENT"))
    return 0 if rec["stream_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
