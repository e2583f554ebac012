#!/usr/bin/env python3
"""test_ugm_spm.py: proves fusiond's unigram (t5/UGM) tokenizer gives SentencePiece's ids: small
unigram models are trained here (SentencePieceTrainer, on a multilingual text written below)
with nmt_nfkc, nfkc_cf and identity normalization, byte fallback on and off, no dummy prefix,
extra white space kept, white space as suffix, user-defined and control symbols; each is
converted to a GGUF vocabulary as llama.cpp's convert_hf_to_gguf does (the precompiled_charsmap
and the normalizer flags read from the model proto by hand; one copy realigned as its
XLM-RoBERTa converter does, every id past </s> moved up by one after <s> <pad> </s> <unk>),
and tests/ugm_render's ids for a few hundred strings (accents, CJK, emoji, runs of white space
of several kinds, full-width forms and ligatures that NFKC folds, control characters, the
empty string, seeded random mixes) must equal SentencePiece's encode; the decoding of ids
without <unk> must equal SentencePiece's decode.  Needs python3-sentencepiece (Debian's, so
it re-runs itself under /usr/bin/python3 when the python3 on PATH lacks it); skips (77)
without it unless FUSIOND_REQUIRE_SENTENCEPIECE=1 (CI), where that is a failure."""

import io
import os
import random
import struct
import subprocess
import sys
import tempfile

BUILD = os.environ.get("top_builddir", ".")
RENDER = os.path.join(BUILD, "tests", "ugm_render")


def skip(why):
    if os.environ.get("FUSIOND_REQUIRE_SENTENCEPIECE") == "1":
        print("FAIL: %s (FUSIOND_REQUIRE_SENTENCEPIECE=1)" % why)
        sys.exit(1)
    print("SKIP: %s" % why)
    sys.exit(77)


try:
    import sentencepiece as spm
except ImportError:
    # Debian's python3-sentencepiece lives in the system python's dist-packages; a python3
    # from elsewhere on PATH (pyenv, a venv) does not see it
    sysp = "/usr/bin/python3"
    if (os.environ.get("FUSIOND_UGM_REEXEC") != "1" and os.access(sysp, os.X_OK) and
            os.path.realpath(sys.executable) != os.path.realpath(sysp)):
        os.environ["FUSIOND_UGM_REEXEC"] = "1"
        os.execv(sysp, [sysp] + sys.argv)
    skip("python3-sentencepiece is not installed (apt-get install python3-sentencepiece)")

# --------------------------------------------------------------------------- training text

WORDS = """the quick brown fox jumps over lazy dog while people were reading books about
history science music and languages in the morning evening night today tomorrow
café façade naïve résumé über straße Ärger öffnen Æsir œuvre São Paulo niño señor
東京 日本 首都 中国 北京 上海 学生 先生 天気 ありがとう こんにちは カタカナ ひらがな
서울 한국 수도 안녕하세요 감사합니다 Привет как дела спасибо мир Москва Γειά σου Κόσμε
مرحبا بالعالم שלום עולם नमस्ते दुनिया สวัสดี ครับ Việt Nam Hà Nội tiếng
ＡＢＣ １２３ ｶﾀｶﾅ ﬁ ﬂ ① ② ½ ¼ ™ ℃ Ⅻ ㈱ 🙂 🚀 ❤️ 👍🏽""".split()


def corpus():
    rnd = random.Random(7)
    lines = []
    for _ in range(3000):
        n = rnd.randint(2, 14)
        words = [rnd.choice(WORDS) for _ in range(n)]
        if rnd.random() < 0.2:
            words.append(str(rnd.randint(0, 99999)))
        if rnd.random() < 0.1:
            words.insert(rnd.randint(0, len(words)), "<sep>")
        lines.append(" ".join(words) + rnd.choice(["", ".", "!", "?", ","]))
    return lines


# --------------------------------------------------------------------------- the proto

def varint(b, o):
    v = s = 0
    while True:
        c = b[o]
        o += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, o


def fields(b):
    """(field number, wire type, value) of one protobuf message, by hand."""
    o = 0
    while o < len(b):
        key, o = varint(b, o)
        f, w = key >> 3, key & 7
        if w == 0:
            v, o = varint(b, o)
        elif w == 1:
            v, o = b[o:o + 8], o + 8
        elif w == 2:
            n, o = varint(b, o)
            v, o = b[o:o + n], o + n
        elif w == 5:
            v, o = b[o:o + 4], o + 4
        else:
            raise ValueError("wire type %d" % w)
        yield f, w, v


def normalizer_spec(proto):
    """ModelProto.normalizer_spec (field 3): the charsmap and flags (SentencePiece's
    defaults when absent)."""
    spec = {"charsmap": b"", "add_dummy_prefix": True, "remove_extra_whitespaces": True,
            "escape_whitespaces": True}
    suffix = False
    for f, _, v in fields(proto):
        if f == 3:
            for g, _, x in fields(v):
                if g == 2:
                    spec["charsmap"] = bytes(x)
                elif g == 3:
                    spec["add_dummy_prefix"] = bool(x)
                elif g == 4:
                    spec["remove_extra_whitespaces"] = bool(x)
                elif g == 5:
                    spec["escape_whitespaces"] = bool(x)
        elif f == 2:
            for g, _, x in fields(v):
                if g == 24:
                    suffix = bool(x)
    spec["suffix"] = suffix
    return spec


# --------------------------------------------------------------------------- GGUF

def gguf_str(s):
    return struct.pack("<Q", len(s)) + s


def kv(key, vtype, value):
    out = gguf_str(key.encode()) + struct.pack("<I", vtype)
    if vtype == 8:
        out += gguf_str(value)
    elif vtype == 7:
        out += struct.pack("<?", value)
    elif vtype == 4:
        out += struct.pack("<I", value)
    elif vtype == 9:
        et, items = value
        out += struct.pack("<IQ", et, len(items))
        if et == 8:
            out += b"".join(gguf_str(x) for x in items)
        elif et == 6:
            out += b"".join(struct.pack("<f", x) for x in items)
        elif et == 5:
            out += b"".join(struct.pack("<i", x) for x in items)
        elif et == 0:
            out += bytes(items)
    return out


def write_gguf(path, tokens, scores, types, ns, ids, xlmr):
    kvs = [kv("general.architecture", 8, b"bert"),
           kv("tokenizer.ggml.model", 8, b"t5"),
           kv("tokenizer.ggml.pre", 8, b"default"),
           kv("tokenizer.ggml.tokens", 9, (8, tokens)),
           kv("tokenizer.ggml.scores", 9, (6, scores)),
           kv("tokenizer.ggml.token_type", 9, (5, types)),
           kv("tokenizer.ggml.add_space_prefix", 7, ns["add_dummy_prefix"]),
           kv("tokenizer.ggml.remove_extra_whitespaces", 7, ns["remove_extra_whitespaces"])]
    if ns["suffix"]:  # not written by llama.cpp's converter; fusiond reads it
        kvs.append(kv("tokenizer.ggml.treat_whitespace_as_suffix", 7, True))
    if ns["charsmap"]:
        kvs.append(kv("tokenizer.ggml.precompiled_charsmap", 9, (0, ns["charsmap"])))
    for name, v in ids.items():
        kvs.append(kv("tokenizer.ggml.%s_token_id" % name, 4, v))
    if xlmr:
        kvs += [kv("tokenizer.ggml.add_bos_token", 7, True),
                kv("tokenizer.ggml.add_eos_token", 7, True)]
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def piece_types(proto):
    """The type of each piece (ModelProto.pieces, field 1; its type, field 3: 1 normal,
    2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) as the GGUF numbers them."""
    return [dict((g, x) for g, _, x in fields(v)).get(3, 1)
            for f, _, v in fields(proto) if f == 1]


def convert(sp, proto, path, xlmr, user_defined):
    """The vocabulary as convert_hf_to_gguf writes it: T5's SentencePiece path (types from
    IsUnknown/IsControl/IsUnused/IsByte, so a user-defined piece is normal, with score 0),
    or XLM-RoBERTa's realignment; user_defined keeps the proto's user-defined type (as a
    converter that reads added tokens writes them)."""
    ns = normalizer_spec(proto)
    tokens, scores, types = [], [], []
    for i, t in enumerate(piece_types(proto)):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        types.append(t if t != 4 or user_defined else 1)
    if xlmr:
        # <unk>=0 <s>=1 </s>=2 in the model; <s> <pad> </s> <unk> first in the GGUF
        tokens = [b"<s>", b"<pad>", b"</s>", b"<unk>"] + tokens[3:]
        scores = [0.0] * 4 + scores[3:]
        types = [3, 3, 3, 2] + types[3:]
        ids = {"bos": 0, "padding": 1, "eos": 2, "unknown": 3, "seperator": 2}
    else:
        ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unknown": sp.unk_id()}
    write_gguf(path, tokens, scores, types, ns, ids, xlmr)
    return ns


# --------------------------------------------------------------------------- the strings

FIXED = [
    "", " ", "   ", "\t", "\n\n", "a", " a", "a ", "  a  b  ", "hello world",
    "Hello World", "the quick brown fox", "café naïve résumé", "CAFÉ", "cafe\u0301",
    "東京は日本の首都です。", "北京是中国的首都", "안녕하세요 세계", "Привет, мир!",
    "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ",
    "Tiếng Việt", "ＡＢＣ１２３", "ｶﾀｶﾅ", "ﬁnance ﬂow", "① ② ③", "½ ¼ ¾", "™ ℃ Ⅻ ㈱",
    "🙂🚀", "❤️ 👍🏽 👨‍👩‍👧", "a\u00a0b", "a\u3000b", "a\u2003\u2009b", "a\tb\nc\rd",
    "a\x01b\x7fc", "\x00a", "x\u200bz", "\u00a8x", "a  \u00a8  b", "zzzzqqqqxxxx", "☃☃☃",
    "the<sep>end", "<sep>", " <sep> ", "a<ctl>b", "12345 67890", "...!!!???", "'quoted'",
    "l'été", "straße STRASSE", "ǅungla", "ℌℑℜ", "x²+y³", "\ufeffbom", "e\u0301\u0302",
    "\U0001F1EF\U0001F1F5", "日本語zz", "tab\there", "trailing   ", "   leading",
]


def random_strings(n):
    rnd = random.Random(11)
    pool = ("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,!?'\"-_/\\()[]<>" +
            "  \t\n\u00a0\u3000\u2003" + "éèêëçñößæœÅ" + "東京日本中国北京学生こんにちはカタカナ" +
            "서울한국안녕" + "ПриветмирΓειάσου" + "مرحباשלום" + "ＡＢＣ１２３ｶﾀ" + "ﬁﬂ①½™℃" +
            "🙂🚀❤👍" + "\u0301\u0308\u200b\x01\x7f")
    out = []
    for _ in range(n):
        k = rnd.randint(1, 40)
        if rnd.random() < 0.3:
            s = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 8)))
        else:
            s = "".join(rnd.choice(pool) for _ in range(k))
        out.append(s)
    return out


# --------------------------------------------------------------------------- the check

MODELS = [
    # name, trainer arguments, XLM-R layout
    ("nfkc", dict(normalization_rule_name="nmt_nfkc"), False),
    ("nfkc-bytes", dict(normalization_rule_name="nmt_nfkc", byte_fallback=True), False),
    ("identity", dict(normalization_rule_name="identity"), False),
    ("identity-bytes", dict(normalization_rule_name="identity", byte_fallback=True), False),
    ("nfkc_cf", dict(normalization_rule_name="nfkc_cf"), False),
    ("no-prefix", dict(normalization_rule_name="nmt_nfkc", add_dummy_prefix=False), False),
    ("keep-spaces", dict(normalization_rule_name="nmt_nfkc", remove_extra_whitespaces=False),
     False),
    ("keep-spaces-noprefix", dict(normalization_rule_name="identity", add_dummy_prefix=False,
                                  remove_extra_whitespaces=False), False),
    ("suffix", dict(normalization_rule_name="nmt_nfkc", treat_whitespace_as_suffix=True),
     False),
    ("user-defined", dict(normalization_rule_name="nmt_nfkc", user_defined_symbols=["<sep>"],
                          control_symbols=["<ctl>"]), False),
    ("xlmr", dict(normalization_rule_name="nmt_nfkc"), True),
]


def main():
    if not os.access(RENDER, os.X_OK):
        print("FAIL: %s not built" % RENDER)
        return 1
    lines = corpus()
    texts = FIXED + random_strings(300)
    failures = 0
    checked = 0
    with tempfile.TemporaryDirectory(prefix="ugm-spm-") as tmp:
        for name, args, xlmr in MODELS:
            buf = io.BytesIO()
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=buf, model_type="unigram",
                vocab_size=600, hard_vocab_limit=False, character_coverage=0.995,
                minloglevel=2, num_threads=1, **args)
            proto = buf.getvalue()
            sp = spm.SentencePieceProcessor(model_proto=proto)
            path = os.path.join(tmp, name + ".gguf")
            convert(sp, proto, path, xlmr, name == "user-defined")
            feed = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
            r = subprocess.run([RENDER, path], input=feed, capture_output=True, text=True)
            if r.returncode != 0:
                print("FAIL: %s: ugm_render exited %d: %s" % (name, r.returncode, r.stderr))
                failures += 1
                continue
            outs = r.stdout.split("\n")
            bad = 0
            for text, line in zip(texts, outs):
                got_ids, got_dec = line.split("\t")
                got = [int(x) for x in got_ids.split(",")] if got_ids else []
                want = sp.encode(text)
                if xlmr:
                    want = [3 if i == sp.unk_id() else i + 1 for i in want]
                checked += 1
                if got != want:
                    bad += 1
                    if bad <= 5:
                        print("FAIL: %s: %r: fusiond %s, SentencePiece %s (%s)" %
                              (name, text, got, want,
                               [sp.id_to_piece(i) for i in sp.encode(text)]))
                    continue
                if xlmr or sp.unk_id() in want:
                    continue
                ref = sp.decode(want)
                dec = bytes.fromhex(got_dec).decode("utf-8", "replace")
                if dec != ref:
                    bad += 1
                    if bad <= 5:
                        print("FAIL: %s: %r decodes to %r, SentencePiece %r" %
                              (name, text, dec, ref))
            print("%s: %d pieces, %d strings, %d differ" %
                  (name, sp.get_piece_size(), len(texts), bad))
            failures += bad
    if failures:
        print("FAIL: %d differences" % failures)
        return 1
    print("PASS: %d tokenizations equal SentencePiece's" % checked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
