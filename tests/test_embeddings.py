#!/usr/bin/env python3
"""test_embeddings.py: proves /v1/embeddings over HTTP with the real fusiond and stories260K:
every input form (a string, strings, token ids, arrays of token ids) gives the vector its text
gives; vectors have length 1; base64 decodes (little-endian float32, as the SDKs do) to the
float answer; a batch equals its inputs sent alone; the same text repeats its vector while
different texts differ; last pooling differs from mean, and a file's pooling_type (last) is
followed under auto and overridden by the option; usage counts the tokens; the
endpoint is counted in fusiond_requests_total; every 400 (empty, too long, bad types,
dimensions, encoding_format, unknown model is 404), and the embeddings option off is 404.

Usage: test_embeddings.py FUSIOND MODEL  (python3 standard library only)."""

import base64
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FUSIOND, MODEL = sys.argv[1], sys.argv[2]
FAILS = []
CTX = 64


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


class Daemon(loopback.Daemon):
    def __init__(self, *args, model=MODEL):
        super().__init__("--ctx-size", str(CTX), *args, fusiond=FUSIOND, model=model)

    def stop(self):
        rc = super().stop(timeout=30)
        if rc != 0:
            FAILS.append("fusiond exited with %s:\n%s" % (rc, self.logtext().decode(errors="replace")[-3000:]))
        self.cleanup()

    def post(self, path, body):
        st, _, out = self.request("POST", path, body if isinstance(body, bytes) else body, None)
        try:
            return st, json.loads(out)
        except ValueError:
            return st, None


def embed(d, inp, **kw):
    body = {"input": inp}
    body.update(kw)
    st, js = d.post("/v1/embeddings", body)
    if not check(st == 200, "embeddings %r: %s %s" % (inp, st, js)):
        return None
    return js


def vecs(js):
    data = sorted(js["data"], key=lambda x: x["index"])
    return [x["embedding"] for x in data]


def close(a, b, tol=1e-6):
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def shapes(d):
    st, _, models = d.get("/v1/models")
    model = json.loads(models)["data"][0]["id"]
    js = embed(d, "Once upon a time", model=model, user="someone")
    if not js:
        return
    check(js["object"] == "list" and js["model"] == model, "object list, the model's id")
    check(len(js["data"]) == 1 and js["data"][0]["object"] == "embedding" and
          js["data"][0]["index"] == 0, "one embedding object at index 0")
    v = js["data"][0]["embedding"]
    check(len(v) == 64 and all(isinstance(x, float) for x in v), "64 floats (n_embd)")
    check(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5, "L2-normalized")
    st, tk = d.post("/tokenize", {"content": "Once upon a time", "add_special": True})
    check(js["usage"] == {"prompt_tokens": len(tk["tokens"]), "total_tokens": len(tk["tokens"])},
          "usage counts the prompt tokens (BOS included): %r" % js["usage"])
    # /embeddings without /v1 is the same endpoint
    st, js2 = d.post("/embeddings", {"input": "Once upon a time"})
    check(st == 200 and close(vecs(js2)[0], v, 0), "/embeddings equals /v1/embeddings")


def forms(d):
    texts = ["Once upon a time", "The cat sat on the mat.", "Lily was happy"]
    alone = [vecs(embed(d, t))[0] for t in texts]
    again = vecs(embed(d, texts[0]))[0]
    check(close(again, alone[0], 0), "the same text gives the same vector")
    check(not close(alone[0], alone[1], 1e-3), "different texts differ")
    batch = vecs(embed(d, texts))
    check(len(batch) == 3 and all(close(b, a, 1e-5) for b, a in zip(batch, alone)),
          "a batch equals its inputs sent alone")
    ids = [d.post("/tokenize", {"content": t, "add_special": True})[1]["tokens"] for t in texts]
    one = vecs(embed(d, ids[1]))[0]
    check(close(one, alone[1], 1e-6), "token ids give the vector of their text")
    many = vecs(embed(d, ids))
    check(len(many) == 3 and all(close(b, a, 1e-5) for b, a in zip(many, alone)),
          "arrays of token ids give their texts' vectors")
    js = embed(d, texts, encoding_format="base64")
    if js:
        dec = []
        for x in sorted(js["data"], key=lambda x: x["index"]):
            check(isinstance(x["embedding"], str), "base64: a string")
            raw = base64.b64decode(x["embedding"])
            check(len(raw) == 4 * 64, "base64: 64 float32")
            dec.append(list(struct.unpack("<64f", raw)))
        # a single input alone in the engine runs the same steps each time: bit for bit
        one = vecs(embed(d, texts[0], encoding_format="base64"))[0]
        f32 = [struct.unpack("<f", struct.pack("<f", y))[0] for y in alone[0]]
        check(list(struct.unpack("<64f", base64.b64decode(one))) == f32,
              "base64 decodes to exactly the float answer (as float32)")
        # a batch's steps may group rows differently from one run to the next (the GEMM's
        # blocking), so its floats agree within rounding
        worst = max(abs(x - y) for a, b in zip(dec, batch) for x, y in zip(a, b))
        check(worst <= 1e-6, "base64 batch decodes to the float batch (off by %g)" % worst)
    js = embed(d, texts[0], encoding_format="float", dimensions=64)
    check(js is not None and close(vecs(js)[0], alone[0], 0), "dimensions equal to the size")


def errors(d):
    long_text = "the cat " * (CTX + 8)
    cases = [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": [[1, 2], []]}, "input[1]"),
        ({"input": long_text}, "input"),
        ({"input": ["a", long_text]}, "input[1]"),
        ({"input": list(range(1, CTX + 2))}, "input"),
        ({"input": 5}, "input"),
        ({"input": None}, "input"),
        ({"input": [1, "a"]}, "input[1]"),
        ({"input": ["a", 1]}, "input[1]"),
        ({"input": [100000]}, "input[0]"),
        ({}, "input"),
        ({"input": "a", "dimensions": 32}, "dimensions"),
        ({"input": "a", "dimensions": "64"}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "encoding_format": 1}, "encoding_format"),
        ({"input": "a", "user": 3}, "user"),
    ]
    for body, param in cases:
        st, js = d.post("/v1/embeddings", body)
        err = (js or {}).get("error", {})
        check(st == 400 and err.get("param") == param,
              "%r: 400 naming %s, got %s %s" % (str(body)[:60], param, st, js))
        if body.get("input") in (long_text, list(range(1, CTX + 2))):
            check(err.get("code") == "context_length_exceeded",
                  "too long: context_length_exceeded (%s)" % err)
    st, js = d.post("/v1/embeddings", b"{not json")
    check(st == 400, "malformed JSON: 400")
    st, js = d.post("/v1/embeddings", {"input": "a", "model": "nope"})
    check(st == 404, "an unknown model: 404 (%s)" % st)
    # exactly the context length is accepted
    st, js = d.post("/v1/embeddings", {"input": list(range(1, CTX + 1))})
    check(st == 200, "an input of exactly the context length: %s %s" % (st, js))


def metrics(d):
    m = d.metrics()
    n = sum(v for k, v in m.items() if k.startswith("fusiond_requests_total") and
            'endpoint="embeddings"' in k and 'status="200"' in k)
    check(n >= 5, "fusiond_requests_total counts the embeddings endpoint (%s)" % n)


def main():
    d = Daemon()
    mean = None
    try:
        for fn in (shapes, forms, errors, metrics):
            try:
                fn(d)
            except Exception as e:  # a crash in a test is a failure, not an abort
                import traceback
                traceback.print_exc()
                FAILS.append("%s raised %r" % (fn.__name__, e))
        mean = vecs(embed(d, "Once upon a time"))[0]
    finally:
        d.stop()
    # last-token pooling (the config's choice over the model's) gives another vector
    last = None
    d = Daemon("--pooling", "last")
    try:
        js = embed(d, "Once upon a time")
        last = js and vecs(js)[0]
        check(js is not None and mean is not None and not close(last, mean, 1e-3),
              "pooling last differs from mean")
    finally:
        d.stop()
    # a copy of the model whose file says llama.pooling_type = 3 (last): auto follows the
    # file, and the option still overrides it
    tmp = scratch_dir("fusiond-embd-")
    copy = os.path.join(tmp, "last.gguf")
    gguf_rewrite(MODEL, copy, None, None, {}, [(b"llama.pooling_type", 4, 3)])
    for args, want, what in (((), last, "the file's pooling_type (last)"),
                             (("--pooling", "mean"), mean, "--pooling mean over the file's")):
        d = Daemon(*args, model=copy)
        try:
            js = embed(d, "Once upon a time")
            check(js is not None and want is not None and close(vecs(js)[0], want, 0),
                  "pooling auto: %s" % what)
        finally:
            d.stop()
    # hundreds of inputs (LangChain sends up to a thousand) through an engine whose queue
    # holds four: the server feeds them a few at a time, in order, each as if alone
    d = Daemon("--max-running", "2", "--max-waiting", "2")
    try:
        texts = ["Input number %d of the batch" % i for i in range(40)]
        js = embed(d, texts)
        many = js and vecs(js)
        if check(many is not None and len(many) == 40 and
                 [x["index"] for x in js["data"]] == list(range(40)),
                 "40 inputs through a 2 + 2 engine: 40 vectors in order"):
            for i in (0, 17, 39):
                one = vecs(embed(d, texts[i]))[0]
                check(close(many[i], one, 1e-5), "input %d of 40 equals it alone" % i)
            check(js["usage"]["prompt_tokens"] > 40, "usage counts every input")
        st, js = d.post("/v1/embeddings", {"input": ["x"] * 2049})
        check(st == 400 and js["error"]["param"] == "input",
              "2049 inputs: 400 on input (%s)" % st)
        st, js = d.post("/v1/embeddings", {"input": ["a b"] * 2048})
        check(st == 200 and len(js["data"]) == 2048, "2048 inputs: served (%s)" % st)
    finally:
        d.stop()
    d = Daemon("--embeddings=off")
    try:
        st, js = d.post("/v1/embeddings", {"input": "a"})
        check(st == 404, "embeddings off: 404 (%s)" % st)
    finally:
        d.stop()
    if FAILS:
        print("\n%d failure(s):" % len(FAILS))
        for f in FAILS:
            print("  -", f)
        return 1
    print("all embeddings tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
