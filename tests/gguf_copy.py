"""gguf_copy.py: writes a copy of a GGUF model with another tokenizer.chat_template, context
length and some token texts, for the black-box tests that need a chat template a shared model
lacks (test_tools_server.py, test_sdk.py).  The tensors are copied byte for byte; only the
metadata changes.  python3 standard library only."""

import atexit
import shutil
import struct
import tempfile

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}


def scratch_dir(prefix):
    """A new temporary folder for a test's model copies, removed with everything in it when
    the test's process exits, however it exits (a failed check's exception included)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def gguf_rewrite(src, dst, template, n_ctx, tokens, extra=(), types=None):
    """src -> dst with chat_template `template`, `<arch>.context_length` n_ctx and the token
    texts in `tokens` ({id: text}) replaced (None: template and n_ctx kept), the token types in
    `types` ({id: type}) too, and the metadata in `extra` ((key bytes, GGUF type, value)
    triples) set."""
    b = open(src, "rb").read()
    o = 0

    def u(fmt):
        nonlocal o
        v = struct.unpack_from(fmt, b, o)[0]
        o += struct.calcsize(fmt)
        return v

    def s():
        nonlocal o
        n = u("<Q")
        o += n
        return b[o - n:o]

    def val(t):
        if t == 8:
            return s()
        if t == 9:
            at, n = u("<I"), u("<Q")
            return (at, [val(at) for _ in range(n)])
        return u(SCALAR[t])

    def wstr(x):
        return struct.pack("<Q", len(x)) + x

    def wval(t, v):
        if t == 8:
            return wstr(v)
        if t == 9:
            return struct.pack("<IQ", v[0], len(v[1])) + b"".join(wval(v[0], x) for x in v[1])
        return struct.pack(SCALAR[t], v)

    if b[:4] != b"GGUF":
        raise ValueError("%s is not a GGUF file" % src)
    o = 4
    version, n_t, n_kv = u("<I"), u("<Q"), u("<Q")
    kvs = []
    for _ in range(n_kv):
        k = s()
        t = u("<I")
        kvs.append([k, t, val(t)])
    info_start = o
    for _ in range(n_t):
        s()
        nd = u("<I")
        o += 8 * nd + 4 + 8
    infos = b[info_start:o]
    align = next((v for k, t, v in kvs if k == b"general.alignment"), 32)
    data_start = (o + align - 1) // align * align
    if template is not None:
        kvs = [kv for kv in kvs if kv[0] != b"tokenizer.chat_template"]
        kvs.append([b"tokenizer.chat_template", 8, template.encode()])
    for k, t, v in extra:
        kvs = [kv for kv in kvs if kv[0] != k]
        kvs.append([k, t, v])
    for kv in kvs:
        if kv[0].endswith(b".context_length") and n_ctx is not None:
            kv[2] = n_ctx
        if kv[0] == b"tokenizer.ggml.tokens":
            for i, text in tokens.items():
                kv[2][1][i] = text.encode()
        if kv[0] == b"tokenizer.ggml.token_type":
            for i, ty in (types or {}).items():
                kv[2][1][i] = ty
    out = b"GGUF" + struct.pack("<IQQ", version, n_t, len(kvs))
    out += b"".join(wstr(k) + struct.pack("<I", t) + wval(t, v) for k, t, v in kvs) + infos
    out += b"\0" * ((-len(out)) % align)
    with open(dst, "wb") as f:
        f.write(out + b[data_start:])
