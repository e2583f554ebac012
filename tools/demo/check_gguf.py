#!/usr/bin/env python3
"""check_gguf.py MODEL.gguf GOLDEN_DIR: checks an exported demo GGUF without fusiond.

Reads the GGUF with its own small reader (numpy), runs a plain Llama forward the way
llama.cpp reads such a file (adjacent-pair RoPE, query head h on kv head h // group, tied
output when output.weight is absent), in float32 and in float64, and compares with
make_golden.py's PyTorch reference: the logits (max absolute difference printed; fails
above 1e-3) and the greedy ids (must be identical).  It proves the exporter's layout and
metadata independently of the engine.  Needs numpy.
"""
import struct
import sys

import numpy as np

VT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf(path):
    buf = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take("Q")
        s = buf[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(VT[t])

    assert buf[:4] == b"GGUF", "not a GGUF file"
    pos = 4
    version, nt, nkv = take("I"), take("Q"), take("Q")
    assert version == 3
    meta = {}
    for _ in range(nkv):
        k = string()
        meta[k] = value(take("I"))
    infos = []
    for _ in range(nt):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        typ, off = take("I"), take("Q")
        assert typ == 0, "expected F32 tensors"
        infos.append((name, ne, off))
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, off in infos:
        n = int(np.prod(ne))
        a = np.frombuffer(buf, dtype="<f4", count=n, offset=base + off)
        tensors[name] = a.reshape(list(reversed(ne)))
    return meta, tensors


class Ref:
    def __init__(self, meta, t, dtype):
        self.m, self.dt = meta, dtype
        self.t = {k: v.astype(dtype) for k, v in t.items()}
        self.L = meta["llama.block_count"]
        self.nh = meta["llama.attention.head_count"]
        self.nkv = meta["llama.attention.head_count_kv"]
        self.d = meta["llama.embedding_length"]
        self.hd = self.d // self.nh
        self.eps = meta["llama.attention.layer_norm_rms_epsilon"]
        base = meta.get("llama.rope.freq_base", 10000.0)
        self.theta = base ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)

    def norm(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):  # x [T, H, hd]
        ang = pos[:, None] * self.theta[None, :]
        c, s = np.cos(ang).astype(self.dt)[:, None, :], np.sin(ang).astype(self.dt)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * c - x1 * s
        y[..., 1::2] = x0 * s + x1 * c
        return y

    def logits(self, ids):
        t, T = self.t, len(ids)
        x = t["token_embd.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dt), 1)
        g = self.nh // self.nkv
        for i in range(self.L):
            b = f"blk.{i}."
            h = self.norm(x, t[b + "attn_norm.weight"])
            q = self.rope((h @ t[b + "attn_q.weight"].T).reshape(T, self.nh, self.hd), pos)
            k = self.rope((h @ t[b + "attn_k.weight"].T).reshape(T, self.nkv, self.hd), pos)
            v = (h @ t[b + "attn_v.weight"].T).reshape(T, self.nkv, self.hd)
            o = np.empty((T, self.nh, self.hd), dtype=self.dt)
            for hh in range(self.nh):
                s = q[:, hh] @ k[:, hh // g].T / np.sqrt(self.hd).astype(self.dt) + mask
                p = np.exp(s - s.max(-1, keepdims=True))
                o[:, hh] = (p / p.sum(-1, keepdims=True)) @ v[:, hh // g]
            x = x + o.reshape(T, -1) @ t[b + "attn_output.weight"].T
            h = self.norm(x, t[b + "ffn_norm.weight"])
            a = h @ t[b + "ffn_gate.weight"].T
            u = h @ t[b + "ffn_up.weight"].T
            x = x + (a / (1 + np.exp(-a)) * u) @ t[b + "ffn_down.weight"].T
        h = self.norm(x, t["output_norm.weight"])
        out = t.get("output.weight", t["token_embd.weight"])
        return h[-1] @ out.T


def records(path):
    """Yields dicts of key -> raw value string, one per record (a record starts at its first key)."""
    rec, first = {}, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            continue
        k, _, v = line.rstrip("\n").partition(" ")
        if first is None:
            first = k
        if k == first and rec:
            yield rec
            rec = {}
        rec[k] = v
        if k == "logits":
            rec["values"] = []
        elif "values" in rec and k not in ("prompt", "ids"):
            rec["values"].extend(float(x) for x in line.split())
    if rec:
        yield rec


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check_gguf.py MODEL.gguf GOLDEN_DIR")
    meta, t = read_gguf(sys.argv[1])
    gold = sys.argv[2]
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.model"] == "llama"
    toks = meta["tokenizer.ggml.tokens"]
    print(f"{sys.argv[1]}: {len(t)} tensors, {sum(a.size for a in t.values())} params, "
          f"vocab {len(toks)}")
    r32, r64 = Ref(meta, t, np.float32), Ref(meta, t, np.float64)
    worst32 = worst64 = 0.0
    for rec in records(f"{gold}/demo-logits.txt"):
        ids = [int(x) for x in rec["ids"].split()]
        ref = np.array(rec["values"])
        d32 = np.abs(r32.logits(ids) - ref).max()
        d64 = np.abs(r64.logits(ids) - ref).max()
        worst32, worst64 = max(worst32, d32), max(worst64, d64)
        print(f"logits {rec['prompt']!r}: max |f32 - torch| {d32:.2e}, |f64 - torch| {d64:.2e}")
    ok = worst32 < 1e-3 and worst64 < 1e-6
    for rec in records(f"{gold}/demo-greedy.txt"):
        ids = [int(x) for x in rec["ids"].split()]
        want = [int(x) for x in rec["gen"].split()]
        got = []
        for _ in range(int(rec["max"])):
            got.append(int(np.argmax(r32.logits(ids + got))))
            if got[-1] == meta["tokenizer.ggml.eos_token_id"]:
                break
        text = "".join(toks[i] for i in got if i > 2).replace("\u2581", " ")
        same = got == want
        ok &= same
        print(f"greedy {rec['prompt']!r}: f32 ids {'identical' if same else 'DIFFER'}: {text!r}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
