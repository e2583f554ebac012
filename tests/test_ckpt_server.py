#!/usr/bin/env python3
"""test_ckpt_server.py: proves context checkpoints through the real fusiond on a random
gemma3 model (fusion-gguf-gen: window 8, 5 of 6 layers local) served with rings and the
prefix cache: the startup log gives their bytes; a regenerated answer (the same prompt again,
long after the rings moved past its end) reuses the prompt up to its last token from the
checkpoint made at its end (/completion's timings.cache_n, fusiond_prefix_cache_checkpoint_
hits_total, fusiond_ctx_checkpoints_total, fusiond_ctx_checkpoint_bytes) with the same
answer as a cold run; --ctx-checkpoints 0 (spelled --swa-checkpoints, llama-server's older
name) makes none: the prompt is prefilled again, a ring miss; a negative count is refused.
Usage: test_ckpt_server.py (python3 stdlib only)."""

import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

FAILS = []
PROMPT = [(5 + 29 * i) % 500 + 2 for i in range(40)]


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def complete(d):
    st, _, js = d.post("/completion", {"prompt": PROMPT, "n_predict": 24, "temperature": 0,
                                       "ignore_eos": True, "return_tokens": True})
    check(st == 200, "/completion: %s %s" % (st, js))
    return js if st == 200 else {"tokens": None, "timings": {"cache_n": -1}}


ARGS = ("--prefix-cache", "--prefix-cache-min", "4", "--max-running", "1", "--prefill-chunk",
        "8")


def main():
    tmp = tempfile.mkdtemp(prefix="fd-ckpt-")
    model = os.path.join(tmp, "gemma3.gguf")
    subprocess.run([loopback.tool("fusion-gguf-gen"), "-o", model, "--arch", "gemma3",
                    "--n-embd", "64", "--n-layer", "6", "--n-head", "4", "--n-head-kv", "2",
                    "--head-dim", "32", "--n-ff", "160", "--n-vocab", "512", "--n-ctx", "256",
                    "--swa", "8", "-s", "3", "-j", "1"], check=True, stdout=subprocess.DEVNULL)
    try:
        with loopback.daemon(check, "clean exit (cold)", model=model) as d:
            cold = complete(d)["tokens"]
        with loopback.daemon(check, "clean exit", *ARGS, "--ctx-checkpoints", "4",
                             model=model) as d:
            log = d.logtext().decode(errors="replace")
            check("context checkpoints: up to 4 a cached sequence" in log,
                  "the startup log gives the checkpoints' bytes")
            a = complete(d)
            b = complete(d)
            check(a["tokens"] == cold and b["tokens"] == cold,
                  "the answers are the cold run's: %r %r %r" % (a["tokens"], b["tokens"], cold))
            check(a["timings"]["cache_n"] == 0 and b["timings"]["cache_n"] == 39,
                  "regenerated: 39 tokens reused: %r" % b["timings"])
            m = d.metrics()
            check(m.get("fusiond_prefix_cache_checkpoint_hits_total") == 1 and
                  m.get("fusiond_prefix_cache_ring_misses_total") == 0,
                  "one checkpoint hit, no ring miss: %r" % m)
            check(m.get("fusiond_ctx_checkpoints_total", 0) >= 1 and
                  m.get("fusiond_ctx_checkpoint_bytes", 0) > 0, "checkpoints made: %r" % m)
        with loopback.daemon(check, "clean exit (no checkpoints)", *ARGS, "--swa-checkpoints",
                             "0", model=model) as d:
            a = complete(d)
            b = complete(d)
            check(b["tokens"] == cold and b["timings"]["cache_n"] == 0,
                  "without checkpoints the prompt is prefilled again: %r" % b["timings"])
            m = d.metrics()
            check(m.get("fusiond_prefix_cache_checkpoint_hits_total") == 0 and
                  m.get("fusiond_prefix_cache_ring_misses_total") == 1 and
                  m.get("fusiond_ctx_checkpoints_total") == 0 and
                  m.get("fusiond_ctx_checkpoint_bytes") == 0, "no checkpoints: %r" % m)
        r = subprocess.run([loopback.fusiond_path(), "--model", model, "--ctx-checkpoints",
                            "-1", "--test-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        out = r.stdout.decode(errors="replace")
        check(r.returncode != 0 and "--ctx-checkpoints: -1 is out of range" in out,
              "-1 refused: %s" % out)
    finally:
        os.unlink(model)
        os.rmdir(tmp)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("PASS: test_ckpt_server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
