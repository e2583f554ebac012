#!/usr/bin/env python3
"""test_pretok_regex.py: proves engine/tokenizer.c's gpt-4o pre-split (gpt-oss's o200k) splits
as llama.cpp does, on seeded random strings of tricky characters (case runs, contractions,
digits, punctuation with line breaks and slashes, white space of several kinds, non-Latin
letters and numbers, combining marks, emoji): the reference is llama.cpp's method run in
Python's re (a backtracking engine with leftmost-first alternation, as std::regex's
ECMAScript): every non-ASCII code point collapsed to one stand-in per class (white space,
letter, number, punctuation, mark, symbol, other) and its rewritten regex run over that,
((?=[\\p{L}])([^a-z]))* for the upper-case run and so on.  tests/split_render prints
fusiond's splits.  Usage: test_pretok_regex.py (python3 stdlib only)."""

import os
import random
import re
import subprocess
import sys
import unicodedata

BUILD = os.environ.get("top_builddir", ".")
RENDER = os.path.join(BUILD, "tests", "split_render")

WS = set([0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000] +
         list(range(0x2000, 0x200B)))
STAND = {"L": "\u00d2", "N": "\u00d1", "P": "\u00d3", "M": "\u00d4", "S": "\u00d5"}


def collapse(ch):
    cp = ord(ch)
    if cp < 128:
        return ch
    if cp in WS:
        return "\x0b"
    return STAND.get(unicodedata.category(ch)[0], "\u00d0")


L = "\u00d2A-Za-z"
N = "\u00d10-9"
CONTR = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
UP = "((?=[" + L + "])([^a-z]))"
LO = "((?=[" + L + "])([^A-Z]))"
PRE = "[^\\r\\n" + L + N + "]?"
GPT4O = re.compile(PRE + UP + "*" + LO + "+" + CONTR + "|" + PRE + UP + "+" + LO + "*" + CONTR +
                   "|[" + N + "]{1,3}| ?[^\\s" + L + N + "]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                   re.ASCII)


def ref_ends(text):
    col = "".join(collapse(c) for c in text)
    ends, pos = [], 0
    for m in GPT4O.finditer(col):
        if m.start() > pos:
            ends.append(m.start())
        ends.append(m.end())
        pos = m.end()
    if pos < len(text):
        ends.append(len(text))
    # code points -> bytes
    out, o = [], 0
    for i, ch in enumerate(text):
        o += len(ch.encode("utf-8"))
        if i + 1 in ends:
            out.append(o)
    return out


ALPHABET = list("aZbQz AZ'sStTlLdDrReEvVmM0123456789 \t\n\r/!.,-_?\"(") + [
    "\u00c4", "\u00e9", "\u4e2d", "\u0301", "\u3000", "\u00a0", "\u0661", "\u00bd",
    "\U0001F601", "\u0416", "\u0436", "\u2028", "\u0085", "\u01c5", "\u02b0", "\u0915",
    "\u093f", "\u00df", "\u2160", "\u00b2"]


def main():
    rng = random.Random(20261129)
    texts = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30)))
             for _ in range(4000)]
    texts += ["Hello, y'all! How're you \U0001F601 ?", "XMLHttpRequest camelCase DON'T i'M",
              "\u00c4BC \u00c4Bc a\u00c4b", "a1234567b x!!\n/y e\u0301t 's", "\t\tfoo  bar   1 \n x"]
    inp = "".join(t.encode("utf-8").hex() + "\n" for t in texts).encode()
    p = subprocess.run([RENDER, "gpt-4o"], input=inp, capture_output=True)
    if p.returncode != 0:
        print("FAIL: split_render exited %d: %s" % (p.returncode, p.stderr.decode()))
        sys.exit(1)
    got = p.stdout.decode().split("\n")
    fails = 0
    for i, t in enumerate(texts):
        want = ",".join(str(e) for e in ref_ends(t))
        if got[i] != want:
            fails += 1
            if fails <= 10:
                print("FAIL %r\n want %s\n  got %s" % (t, want, got[i]))
    print("%d texts split, %d differ" % (len(texts), fails))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
