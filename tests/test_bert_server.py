#!/usr/bin/env python3
"""test_bert_server.py: proves fusiond serves BERT encoders (random bert files written by
fusion-gguf-gen --arch bert) over HTTP: /v1/embeddings, /embeddings and /embedding give unit
vectors, the same for an input alone or in a batch, different for different texts, with
usage counting [CLS] ... [SEP], and each input runs whole on a server whose steps and
prefill chunks are shorter than it; generation endpoints answer 501 naming the encoder (fusion-cli refuses to generate too); /rerank
without a classification head is 501; with one, /rerank, /v1/rerank and /v1/reranking rank
the documents best first with exactly the score each pair gets alone, honour top_n and
return_text (Jina's shape; TEI's with "texts"); bad requests (no query, empty documents,
non-string documents, top_n 0, a pair past the context, another model) get clear 400/404s;
requests are counted in fusiond_requests_total{endpoint="rerank"}.  An XLM-RoBERTa-shaped
reranker (fusion-gguf-gen -p xlmr: a t5 vocabulary, one token type) tokenizes with the unigram
tokenizer, frames an input <s> ... </s> and a pair <s> query </s></s> document </s>, and
passes the same rerank checks."""

import math
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import Daemon, TmpDir, check, fail  # noqa: E402
import json  # noqa: E402

CTX = 48


def gen(tmp, name, *args):
    tool = os.path.join(os.environ.get("top_builddir", "."), "fusion-gguf-gen")
    if not os.access(tool, os.X_OK):
        fail("fusion-gguf-gen not built: %s" % tool)
    path = os.path.join(tmp.path, name)
    r = subprocess.run([tool, "--arch", "bert", "--n-ctx", str(CTX), "-o", path] + list(args),
                       capture_output=True, text=True)
    check(r.returncode == 0, "fusion-gguf-gen: %s" % r.stderr)
    return path


def start(tmp, model, *extra):
    d = Daemon(["-m", model, "--port", "0", "--threads", "1"] + list(extra), tmp)
    d.wait_ready()
    return d


def post(d, path, body):
    st, _, out = d.request("POST", path, body)
    try:
        return st, json.loads(out)
    except ValueError:
        return st, None


def err_of(js):
    return (js or {}).get("error", {}) if isinstance(js, dict) else {}


def embeddings(d, tmp):
    texts = ["the cat sat on the mat", "hello world", "what is the capital of france"]
    st, js = post(d, "/v1/embeddings", {"input": texts})
    check(st == 200, "embeddings: %s %s" % (st, js))
    vecs = [x["embedding"] for x in js["data"]]
    check(len(vecs) == 3 and all(len(v) == 64 for v in vecs), "3 vectors of 64")
    for v in vecs:
        check(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5, "unit length")
    for i, path in enumerate(["/v1/embeddings", "/embeddings", "/embedding"]):
        st, one = post(d, path, {"input": texts[i]})
        check(st == 200, "%s: %s %s" % (path, st, one))
        v = one["data"][0]["embedding"]
        check(max(abs(a - b) for a, b in zip(v, vecs[i])) < 1e-5,
              "%s: input %d alone differs from the batch" % (path, i))
    check(max(abs(a - b) for a, b in zip(vecs[0], vecs[1])) > 1e-3, "texts differ")
    # [CLS] hello , world [SEP] (the comma an [UNK]: the vocabulary has none)
    st, js = post(d, "/v1/embeddings", {"input": "Hello, World"})
    check(st == 200 and js["usage"]["prompt_tokens"] == 5,
          "usage of [CLS] hello , world [SEP]: %s" % (js or {}).get("usage"))
    st, js = post(d, "/v1/embeddings", {"input": "the " * (CTX + 5)})
    check(st == 400 and err_of(js).get("code") == "context_length_exceeded",
          "too long: %s %s" % (st, js))
    for path, body in (("/v1/completions", {"prompt": "a", "max_tokens": 4}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}]}),
                       ("/completion", {"prompt": "a"})):
        st, js = post(d, path, body)
        check(st == 501 and "encoder" in err_of(js).get("message", ""),
              "%s on an encoder: %s %s" % (path, st, js))
    st, js = post(d, "/rerank", {"query": "a", "documents": ["b"]})
    check(st == 501 and "classification head" in err_of(js).get("message", ""),
          "rerank without a head: %s %s" % (st, js))
    st, js = post(d, "/v1/embeddings", {"input": LONG})
    check(st == 200, "long inputs: %s %s" % (st, js))
    return [x["embedding"] for x in js["data"]]


# inputs longer than a small server's step (max_running 2 + 2 x prefill_chunk 4 = 10 tokens)
LONG = [" ".join(["the", "cat", "sat", "on", "mat"] * 8), "hello world",
        " ".join(["what", "is", "a", "dog"] * 7)]


def small_steps(tmp, model, want):
    """An encoder's input runs whole even when it is longer than a step (alone in its step)
    or than a prefill chunk: the vectors equal the default server's."""
    d = start(tmp, model, "--max-running", "2", "--prefill-chunk", "4")
    try:
        st, js = post(d, "/v1/embeddings", {"input": LONG})
        check(st == 200, "small steps: %s %s" % (st, js))
        for i, x in enumerate(js["data"]):
            check(max(abs(a - b) for a, b in zip(x["embedding"], want[i])) < 1e-5,
                  "input %d with small steps differs" % i)
    finally:
        d.close()


def rerank(d):
    q = "what is the capital of france"
    docs = ["paris is the capital of france", "the cat sat on the mat", "hello world",
            "a dog is on the mat", "what", "france"]
    alone = []
    for doc in docs:
        st, js = post(d, "/rerank", {"query": q, "documents": [doc]})
        check(st == 200 and len(js["results"]) == 1 and js["results"][0]["index"] == 0,
              "one document: %s %s" % (st, js))
        alone.append(js["results"][0]["relevance_score"])
    check(len(set(alone)) == len(alone), "scores differ between documents: %s" % alone)
    order = sorted(range(len(docs)), key=lambda i: -alone[i])
    for path in ("/rerank", "/v1/rerank", "/v1/reranking", "/reranking"):
        st, js = post(d, path, {"query": q, "documents": docs, "top_n": 4, "return_text": True,
                                "model": "bert-random"})
        check(st == 200, "%s: %s %s" % (path, st, js))
        res = js["results"]
        check([r["index"] for r in res] == order[:4], "%s: order %s, want %s" %
              (path, [r["index"] for r in res], order[:4]))
        for r in res:
            check(abs(r["relevance_score"] - alone[r["index"]]) < 1e-5,
                  "%s: document %d scores %g in the batch, %g alone" %
                  (path, r["index"], r["relevance_score"], alone[r["index"]]))
            check(r["document"]["text"] == docs[r["index"]], "return_text")
        check(js["object"] == "list" and js["usage"]["prompt_tokens"] > 0, "Jina shape: %s" % js)
    st, js = post(d, "/rerank", {"query": q, "texts": docs[:3], "return_text": True})
    check(st == 200 and isinstance(js, list) and len(js) == 3 and
          all(set(x) == {"index", "score", "text"} for x in js),
          "TEI shape: %s %s" % (st, js))
    st, js = post(d, "/rerank", {"query": q, "documents": docs, "top_n": 100})
    check(st == 200 and len(js["results"]) == len(docs) and "document" not in js["results"][0],
          "top_n past the documents: all, no text: %s" % js)
    bad = [
        ({"documents": ["a"]}, 400, "query"),
        ({"query": "a", "documents": []}, 400, "documents"),
        ({"query": "a"}, 400, "documents"),
        ({"query": "a", "documents": ["b", 3]}, 400, "documents"),
        ({"query": "a", "documents": "b"}, 400, "documents"),
        ({"query": 5, "documents": ["b"]}, 400, "query"),
        ({"query": "a", "documents": ["b"], "top_n": 0}, 400, "top_n"),
        ({"query": "a", "documents": ["b", "c " * CTX]}, 400, "documents[1]"),
        ({"query": "a", "documents": ["b"], "model": "gpt-4"}, 404, "model"),
    ]
    for body, want, param in bad:
        st, js = post(d, "/v1/rerank", body)
        check(st == want and err_of(js).get("param") == param,
              "bad rerank %s: %s %s" % (body, st, js))
    m = d.metrics()
    check(m.get('fusiond_requests_total{endpoint="rerank",status="200"}', 0) >= 10,
          "rerank requests counted: %s" % {k: v for k, v in m.items() if "rerank" in k})


# The xlmr preset's t5 vocabulary: <s> <pad> </s> <unk> U+2581, U+2581 a..z, a..z, then the
# words U+2581 the, cat, ... (engine/bert_gen.c)
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "is", "a", "what", "capital", "of", "france",
         "paris", "ing", "hello", "world"]


def wid(w):
    return 57 + WORDS.index(w)


def xlmr(tmp):
    """An XLM-RoBERTa-shaped reranker (t5 vocabulary, one token type): text is tokenized by
    the unigram tokenizer, <s> ... </s> around an input, <s> query </s></s> document </s>
    for a pair; the whole rerank suite passes on it."""
    rr = gen(tmp, "xlmr.gguf", "-p", "xlmr", "--cls", "1")
    d = start(tmp, rr)
    try:
        q = "what is the capital of france"
        ids = [0] + [wid(w) for w in q.split()] + [2]
        st, js = post(d, "/tokenize", {"content": q, "add_special": True})
        check(st == 200 and js.get("tokens") == ids, "tokenize: %s %s, want %s" % (st, js, ids))
        st, js = post(d, "/v1/embeddings", {"input": [q, "  what   is the capital of "
                                                          "france  ", "paris"]})
        check(st == 200 and js["usage"]["prompt_tokens"] == 8 + 8 + 3,
              "xlmr embeddings: %s %s" % (st, js and js.get("usage")))
        v = [x["embedding"] for x in js["data"]]
        st, js = post(d, "/v1/embeddings", {"input": ids})
        check(st == 200, "xlmr embeddings of ids: %s %s" % (st, js))
        v.insert(1, js["data"][0]["embedding"])
        for k in (1, 2):
            check(max(abs(a - b) for a, b in zip(v[0], v[k])) < 1e-6,
                  "input %d (ids, or extra white space) differs from the text's" % k)
        check(max(abs(a - b) for a, b in zip(v[0], v[3])) > 1e-3, "texts differ")
        st, js = post(d, "/rerank", {"query": q, "documents": ["paris", "the cat sat"]})
        # 6 + 1 and 6 + 3 tokens, each pair with <s> </s> </s> ... </s>
        check(st == 200 and js["usage"]["prompt_tokens"] == 7 + 4 + 9 + 4,
              "xlmr pair: %s %s" % (st, js))
        rerank(d)
    finally:
        d.close()


def main():
    tmp = TmpDir()
    try:
        emb = gen(tmp, "emb.gguf")
        d = start(tmp, emb)
        try:
            want = embeddings(d, tmp)
        finally:
            d.close()
        small_steps(tmp, emb, want)
        cli = os.path.join(os.environ.get("top_builddir", "."), "fusion-cli")
        r = subprocess.run([cli, "-m", emb, "-p", "the cat", "-n", "4"], capture_output=True,
                           text=True)
        check(r.returncode == 1 and "is an encoder (bert)" in r.stderr,
              "fusion-cli on an encoder: %d %s" % (r.returncode, r.stderr[-300:]))
        rr = gen(tmp, "rr.gguf", "--cls", "1")
        d = start(tmp, rr)
        try:
            rerank(d)
        finally:
            d.close()
        xlmr(tmp)
    finally:
        tmp.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
