#!/usr/bin/env python3
"""ugm-bench.py: the unigram (t5) tokenizer's speed against SentencePiece's own (BENCHMARKS.md).
Trains an 8000-piece unigram model (nmt_nfkc) with python3-sentencepiece on a seeded
multilingual text, converts it as tests/test_ugm_spm.py does, and times, on 20000 lines of
that text: SentencePiece's encode (each line through the Python binding) and fusiond's
tok_encode (tests/ugm_render --time: the encoding alone), median of RUNS; the ids must be
equal.  Then a vocabulary of XLM-RoBERTa's size (250002 random pieces with that model's
charsmap): its load time and tok_encode's on the same lines.  Run from the build folder: bench/ugm-bench.py [RUNS] (default 5);
needs /usr/bin/python3 with sentencepiece (Debian's python3-sentencepiece)."""

import importlib.util
import io
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..")
spec = importlib.util.spec_from_file_location("ugm_spm", os.path.join(SRC, "tests",
                                                                       "test_ugm_spm.py"))
t = importlib.util.module_from_spec(spec)
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
spec.loader.exec_module(t)  # re-runs itself under /usr/bin/python3 when it must
spm = t.spm
RENDER = os.path.join(os.environ.get("top_builddir", "."), "tests", "ugm_render")


def render(path, feed):
    r = subprocess.run([RENDER, path, "--time"], input=feed, capture_output=True, text=True)
    if r.returncode:
        sys.exit("ugm_render: %s" % r.stderr)
    m = re.search(r"load ([0-9.]+) s, encode (\d+) bytes -> (\d+) ids in ([0-9.]+) s", r.stderr)
    ids = [[int(x) for x in o.split("\t")[0].split(",")] if o.split("\t")[0] else []
           for o in r.stdout.split("\n")[:-1]]
    return float(m.group(1)), float(m.group(4)), ids


def main():
    rnd = random.Random(3)
    syl = ["ka", "to", "ri", "men", "ser", "ta", "lo", "vi", "an", "qu", "es", "tion", "ing",
           "pre", "de", "con", "ung", "keit", "scha", "ft", "和", "平", "学", "習", "서", "울",
           "при", "вет", "ло"]
    lines = t.corpus() + [" ".join("".join(rnd.choice(syl) for _ in range(rnd.randint(1, 4)))
                                   for _ in range(rnd.randint(4, 16))) for _ in range(40000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="unigram", vocab_size=8000,
        hard_vocab_limit=False, character_coverage=0.995, minloglevel=2, num_threads=1,
        normalization_rule_name="nmt_nfkc")
    proto = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    text = lines[:20000]
    feed = "".join(x.encode("utf-8").hex() + "\n" for x in text)
    nbytes = sum(len(x.encode("utf-8")) for x in text)
    with tempfile.TemporaryDirectory(prefix="ugm-bench-") as tmp:
        path = os.path.join(tmp, "b.gguf")
        ns = t.convert(sp, proto, path, False, False)
        spm_s, fd_s = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            want = [sp.encode(x) for x in text]
            spm_s.append(time.perf_counter() - t0)
            _, enc, got = render(path, feed)
            fd_s.append(enc)
            if got != want:
                sys.exit("FAIL: the ids differ from SentencePiece's")
        a, b = statistics.median(spm_s), statistics.median(fd_s)
        print("%d pieces, %d lines, %d bytes, %d ids (equal)" %
              (sp.get_piece_size(), len(text), nbytes, sum(len(x) for x in want)))
        print("SentencePiece encode: median %.3f s (%.1f MB/s); fusiond tok_encode: median "
              "%.3f s (%.1f MB/s); fusiond / SentencePiece time %.2f" %
              (a, nbytes / a / 1e6, b, nbytes / b / 1e6, b / a))
        # a vocabulary of XLM-RoBERTa's size: its load (the piece trie, the tables)
        n = 250002
        seen = set()
        toks = [b"<s>", b"<pad>", b"</s>", b"<unk>"]
        letters = "abcdefghijklmnopqrstuvwxyzäöüéèçñ学習和平서울привет"
        while len(toks) < n:
            w = ("\u2581" if rnd.random() < 0.6 else "") + "".join(
                rnd.choice(letters) for _ in range(rnd.randint(1, 9)))
            if w not in seen:
                seen.add(w)
                toks.append(w.encode("utf-8"))
        big = os.path.join(tmp, "big.gguf")
        t.write_gguf(big, toks, [0.0] * 4 + [-rnd.uniform(5, 15) for _ in range(n - 4)],
                     [3, 3, 3, 2] + [1] * (n - 4), ns,
                     {"bos": 0, "eos": 2, "unknown": 3}, True)
        res = [render(big, feed)[:2] for _ in range(runs)]
        print("%d pieces (%d bytes of text): load median %.3f s; the same lines: tok_encode "
              "median %.3f s (%.1f MB/s)" %
              (n, sum(len(x) for x in toks), statistics.median(r[0] for r in res),
               statistics.median(r[1] for r in res),
               nbytes / statistics.median(r[1] for r in res) / 1e6))


if __name__ == "__main__":
    main()
