#!/usr/bin/env python3
"""test_lora_server.py: proves LoRA adapters through the real fusiond on stories260K with two
seeded random adapters (fusion-gguf-gen --lora): --lora and --lora-scaled FILE SCALE load
them (the log names them); GET /lora-adapters lists [{id, path, scale}]; POST /lora-adapters
sets the global scales (unlisted ones 0); a request's "lora" (llama-server's shape) changes
the greedy output of /v1/completions and /v1/chat/completions, and a request without it
returns to the base output right after, though the prefix cache holds the adapted prompt's
KV; requests with different adapter sets running at once each get their own output; the
global scales apply to requests without "lora"; bad ids, scales and bodies are 400s;
--lora-init-without-apply starts at scale 0; fusion-cli --lora/--lora-scaled agree between
the fused and unfused plans.  Usage: test_lora_server.py (python3 stdlib only)."""

import json
import os
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

FAILS = []
PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
          "in the park with her friends")


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def complete(d, extra=None, prompt=PROMPT, n=16):
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0}
    body.update(extra or {})
    st, _, js = d.post("/v1/completions", body)
    check(st == 200, "completion %s: %s %s" % (extra, st, js))
    return js["choices"][0]["text"] if st == 200 else None


def chat(d, extra=None):
    body = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 12,
            "temperature": 0}
    body.update(extra or {})
    st, _, js = d.post("/v1/chat/completions", body)
    check(st == 200, "chat %s: %s %s" % (extra, st, js))
    return js["choices"][0]["message"]["content"] if st == 200 else None


def main():
    model = loopback.shared_model()
    tmp = tempfile.mkdtemp(prefix="fd-lora-")
    gen = loopback.tool("fusion-gguf-gen")
    a0, a1 = os.path.join(tmp, "a0.gguf"), os.path.join(tmp, "a1.gguf")
    subprocess.run([gen, "--lora", model, "-o", a0, "--rank", "4", "--alpha", "8", "-s", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([gen, "--lora", model, "-o", a1, "--rank", "8", "--alpha", "4", "-s", "2",
                    "--targets", "attn_q,attn_v,ffn_down", "-t", "F16"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        # the truth without a prefix cache (nothing reused), and --lora-init-without-apply
        with loopback.daemon(check, "clean exit (init without apply)", "--lora", a0,
                             "--lora-init-without-apply") as d:
            st, _, out = d.get("/lora-adapters")
            check(st == 200 and json.loads(out) == [{"id": 0, "path": a0, "scale": 0}],
                  "init without apply: %s" % out)
            truth_base = complete(d)
            truth_lora0 = complete(d, {"lora": [{"id": 0, "scale": 1.0}]})
            check(truth_lora0 != truth_base, "init without apply: the adapter per request")

        with loopback.daemon(check, "clean exit", "--lora", a0, "--lora-scaled", a1, "0.5",
                             "--prefix-cache", "--prefix-cache-min", "4") as d:
            log = d.logtext().decode(errors="replace")
            check("LoRA adapter 0: " + a0 in log and "LoRA adapter 1: " + a1 in log,
                  "the startup log names the adapters")
            st, _, out = d.get("/lora-adapters")

            lst = json.loads(out) if st == 200 else None
            check(lst == [{"id": 0, "path": a0, "scale": 1.0},
                          {"id": 1, "path": a1, "scale": 0.5}], "GET /lora-adapters: %s" % lst)

            # global scales at start (1, 0.5) apply to a request without "lora"
            start = complete(d)
            st, _, out = d.get("/metrics")
            check(('fusiond_lora_adapter_scale{id="0",path="%s"} 1\n' % a0).encode() in out and
                  ('fusiond_lora_adapter_scale{id="1",path="%s"} 0.5\n' % a1).encode() in out,
                  "/metrics names the adapters and their scales")
            st, _, js = d.post("/lora-adapters", [])
            check(st == 200 and js == {"success": True}, "POST [] %s %s" % (st, js))
            st, _, out = d.get("/metrics")
            check(b'fusiond_lora_adapter_scale{id="0",path="' in out and
                  b'fusiond_lora_adapter_scale{id="1",path="%s"} 0\n' % a1.encode() in out,
                  "/metrics follows POST /lora-adapters")
            st, _, out = d.get("/lora-adapters")
            check([e["scale"] for e in json.loads(out)] == [0, 0], "all scales 0: %s" % out)

            base = complete(d)
            check(base != start, "the adapters at start changed the output")
            check(base == truth_base, "the base output after an adapted prompt was cached: "
                  "%r, not %r" % (base, truth_base))
            lora0 = complete(d, {"lora": [{"id": 0, "scale": 1.0}]})
            check(lora0 != base, "per-request lora changes the output (%r)" % lora0)
            check(lora0 == truth_lora0, "the adapted output after the base prompt was cached: "
                  "%r, not %r" % (lora0, truth_lora0))
            # right after: the prefix cache holds the adapted prompt's KV; it must not serve it
            check(complete(d) == base, "a request without lora returns to the base output")
            check(complete(d, {"lora": [{"id": 0, "scale": 1.0}]}) == lora0,
                  "the adapted output repeats (its own cached prefix)")
            check(complete(d, {"lora": [{"id": 0, "scale": 0.0}]}) == base,
                  "scale 0 is the base model")
            check(complete(d, {"lora": []}) == base, "lora [] is the base model")
            both = complete(d, {"lora": [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.5}]})
            check(both == start, "the same scales per request as globally, the same output")
            check(complete(d, {"lora": [{"id": 1, "scale": 2.0}]}) not in (base, lora0),
                  "the second adapter alone differs")

            # global scales set by POST apply to requests without "lora" only
            st, _, js = d.post("/lora-adapters", [{"id": 0, "scale": 1}])
            check(st == 200, "POST id 0 %s %s" % (st, js))
            check(complete(d) == lora0, "the global scale applies")
            check(complete(d, {"lora": []}) == base, "a request's lora [] overrides it")
            d.post("/lora-adapters", [])

            c_base = chat(d)
            c_lora = chat(d, {"lora": [{"id": 0, "scale": 1.0}]})
            check(c_lora != c_base, "chat with lora differs")
            check(chat(d) == c_base, "chat without lora returns to the base")
            # the Responses API passes "lora" to the same chat request
            for ext, want in (({}, c_base), ({"lora": [{"id": 0, "scale": 1.0}]}, c_lora)):
                body = {"input": "Tell me a story", "max_output_tokens": 12, "temperature": 0}
                body.update(ext)
                st, _, js = d.post("/v1/responses", body)
                got = js["output"][0]["content"][0]["text"] if st == 200 else None
                check(got == want, "responses %s: %s %r, want %r" % (ext, st, got, want))

            # different adapter sets at once: each its own output (shared steps or not)
            res = {}

            def run(k, extra):
                res[k] = complete(d, extra, n=24)

            alone = {0: complete(d, None, n=24),
                     1: complete(d, {"lora": [{"id": 0, "scale": 1.0}]}, n=24),
                     2: complete(d, {"lora": [{"id": 1, "scale": 2.0}]}, n=24)}
            ths = [threading.Thread(target=run, args=(k, e)) for k, e in
                   ((0, None), (1, {"lora": [{"id": 0, "scale": 1.0}]}),
                    (2, {"lora": [{"id": 1, "scale": 2.0}]}))]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
            check(res == alone, "concurrent requests with different adapters: %s vs %s" %
                  (res, alone))

            # the 400s
            for body, what in (([{"id": 2, "scale": 1}], "unknown id"),
                               ([{"id": -1, "scale": 1}], "negative id"),
                               ([{"id": 0, "scale": "x"}], "scale not a number"),
                               ([{"id": 0}], "no scale"),
                               ([{"id": 0.5, "scale": 1}], "fractional id"),
                               ({"id": 0, "scale": 1}, "not an array"),
                               ([1], "entry not an object")):
                st, _, js = d.post("/lora-adapters", body)
                check(st == 400, "POST /lora-adapters %s: %s %s" % (what, st, js))
            st, _, _ = d.request("POST", "/lora-adapters", b"[{")
            check(st == 400, "POST /lora-adapters bad JSON: %s" % st)
            st, _, out = d.get("/lora-adapters")
            check([e["scale"] for e in json.loads(out)] == [0, 0],
                  "a refused POST changes nothing: %s" % out)
            for lora, what in (([{"id": 2, "scale": 1}], "unknown id"),
                               ({"id": 0}, "not an array"),
                               ([{"id": 0, "scale": "1"}], "scale a string"),
                               (["a"], "entry a string")):
                body = {"prompt": PROMPT, "max_tokens": 4, "lora": lora}
                st, _, js = d.post("/v1/completions", body)
                check(st == 400, "completion lora %s: %s %s" % (what, st, js))
                st, _, js = d.post("/v1/chat/completions",
                                   {"messages": [{"role": "user", "content": "hi"}],
                                    "max_tokens": 4, "lora": lora})
                check(st == 400, "chat lora %s: %s %s" % (what, st, js))

        with loopback.daemon(check, "clean exit (no adapters)") as d:
            st, _, out = d.get("/lora-adapters")
            check(st == 200 and json.loads(out) == [], "no adapters: %s" % out)
            st, _, js = d.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2,
                                                   "lora": [{"id": 0, "scale": 1}]})
            check(st == 400, "no adapters: lora id 0 is a 400: %s" % st)

        # fusion-cli: fused and unfused plans give the same greedy text with adapters
        cli = loopback.tool("fusion-cli")
        outs = {}
        for f in ("on", "off"):
            for args in ((), ("--lora", a0), ("--lora-scaled", a0, "0"),
                         ("--lora", a0, "--lora-scaled", a1, "0.5")):
                r = subprocess.run([cli, "-m", model, "-p", PROMPT, "-n", "24", "--temp", "0",
                                    "--threads", "1", "--fusion", f, *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                check(r.returncode == 0, "fusion-cli %s %s: %s" % (f, args, r.stderr[-300:]))
                outs[(f, args)] = r.stdout
        for args in ((), ("--lora", a0), ("--lora-scaled", a0, "0"),
                     ("--lora", a0, "--lora-scaled", a1, "0.5")):
            check(outs[("on", args)] == outs[("off", args)], "fusion-cli fused vs unfused %s"
                  % (args,))
        check(outs[("on", ("--lora-scaled", a0, "0"))] == outs[("on", ())],
              "fusion-cli scale 0 is the base")
        check(outs[("on", ("--lora", a0))] != outs[("on", ())], "fusion-cli --lora changes it")
        r = subprocess.run([cli, "-m", model, "-p", "x", "-n", "2", "--lora", model],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check(r.returncode != 0 and b"not a LoRA adapter" in r.stderr,
              "fusion-cli refuses a model as adapter: %s" % r.stderr[-300:])
    finally:
        for f in (a0, a1):
            if os.path.exists(f):
                os.unlink(f)
        os.rmdir(tmp)
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        sys.exit(1)
    print("PASS: test_lora_server")


if __name__ == "__main__":
    main()
