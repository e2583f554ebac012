#!/usr/bin/env python3
"""export_gguf.py CKPT SPM_MODEL OUT.gguf: writes the demo model as a GGUF v3 file, all F32.

CKPT is train.py's kjv-demo.pt, SPM_MODEL the SentencePiece model it was trained with.  The
writer below is this script's own (stdlib struct), following the GGUF specification
(ggml docs/gguf.md): little-endian header "GGUF", version 3, tensor count, metadata count;
the metadata key/values; the tensor infos; padding to general.alignment (32); the tensor
data, each tensor at an offset that is a multiple of 32 from the start of the data section.

Tensors use llama.cpp's names and layout: a PyTorch Linear weight [out, in] is stored as is,
which GGUF describes as ne = [in, out] (ne[0] is the contiguous dimension).  Q and K are NOT
permuted: train.py already applies RoPE to adjacent pairs, the layout GGUF's llama tensors
use.  The output projection is tied to token_embd, so output.weight is absent.

The vocabulary is stored as llama.cpp stores a SentencePiece vocabulary: tokenizer.ggml.model
"llama", tokens (pieces, U+2581 for space), scores, token_type (1 normal, 2 unknown,
3 control, 6 byte), <unk> 0, <s> 1, </s> 2, add_bos_token true, add_eos_token false,
add_space_prefix true.
"""
import struct
import sys

import sentencepiece as spm
import torch

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGN = 32
# metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
GGML_TYPE_F32 = 0
LLAMA_FTYPE_ALL_F32 = 0


class GGUFWriter:
    def __init__(self):
        self.kv = []        # (key, type, value[, elem type])
        self.tensors = []   # (name, ne list, bytes)

    def add(self, key, vtype, value, elem=None):
        self.kv.append((key, vtype, value, elem))

    def add_tensor(self, name, t):
        t = t.detach().to(torch.float32).contiguous().cpu()
        ne = list(reversed(t.shape))          # GGUF lists the fastest dimension first
        self.tensors.append((name, ne, t.numpy().tobytes()))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, vtype, v, elem):
        if vtype == STR:
            return self._str(v)
        if vtype == ARR:
            out = struct.pack("<IQ", elem, len(v))
            if elem == STR:
                return out + b"".join(self._str(s) for s in v)
            fmt = {U32: "I", I32: "i", F32: "f", U8: "B"}[elem]
            return out + struct.pack("<%d%s" % (len(v), fmt), *v)
        fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f",
               BOOL: "?", U64: "Q", I64: "q", F64: "d"}[vtype]
        return struct.pack("<" + fmt, v)

    def write(self, path):
        head = bytearray(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors),
                                                  len(self.kv)))
        for key, vtype, v, elem in self.kv:
            head += self._str(key) + struct.pack("<I", vtype) + self._val(vtype, v, elem)
        offset, offsets = 0, []
        for name, ne, data in self.tensors:
            offsets.append(offset)
            head += self._str(name) + struct.pack("<I", len(ne))
            head += struct.pack("<%dQ" % len(ne), *ne)
            head += struct.pack("<IQ", GGML_TYPE_F32, offset)
            offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
        head += b"\0" * (-len(head) % ALIGN)
        with open(path, "wb") as f:
            f.write(head)
            for (name, ne, data), off in zip(self.tensors, offsets):
                f.write(data)
                f.write(b"\0" * (-len(data) % ALIGN))


def vocab(sp):
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    return tokens, scores, types


def export(ckpt_path, spm_path, out_path):
    ck = torch.load(ckpt_path, map_location="cpu")
    cfg, sd = ck["cfg"], ck["state"]
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    if sp.get_piece_size() != cfg["vocab"] or sp.unk_id() != 0 or sp.bos_id() != 1 or sp.eos_id() != 2:
        sys.exit("export_gguf.py: the SentencePiece model does not match the checkpoint")
    head_dim = cfg["dim"] // cfg["n_head"]
    w = GGUFWriter()
    w.add("general.architecture", STR, "llama")
    w.add("general.name", STR, "fusiond-kjv-demo")
    w.add("general.description", STR,
          "fusiond's demo model: a small Llama trained on the King James Bible "
          "(Debian bible-kjv-text); see models/README.md")
    w.add("general.license", STR, "public-domain")
    w.add("general.file_type", U32, LLAMA_FTYPE_ALL_F32)
    w.add("llama.context_length", U32, cfg["n_ctx"])
    w.add("llama.embedding_length", U32, cfg["dim"])
    w.add("llama.block_count", U32, cfg["n_layer"])
    w.add("llama.feed_forward_length", U32, cfg["ffn"])
    w.add("llama.attention.head_count", U32, cfg["n_head"])
    w.add("llama.attention.head_count_kv", U32, cfg["n_kv_head"])
    w.add("llama.rope.dimension_count", U32, head_dim)
    w.add("llama.rope.freq_base", F32, float(cfg["rope_base"]))
    w.add("llama.attention.layer_norm_rms_epsilon", F32, float(cfg["norm_eps"]))
    w.add("llama.vocab_size", U32, cfg["vocab"])
    tokens, scores, types = vocab(sp)
    w.add("tokenizer.ggml.model", STR, "llama")
    w.add("tokenizer.ggml.tokens", ARR, tokens, STR)
    w.add("tokenizer.ggml.scores", ARR, scores, F32)
    w.add("tokenizer.ggml.token_type", ARR, types, I32)
    w.add("tokenizer.ggml.unknown_token_id", U32, sp.unk_id())
    w.add("tokenizer.ggml.bos_token_id", U32, sp.bos_id())
    w.add("tokenizer.ggml.eos_token_id", U32, sp.eos_id())
    w.add("tokenizer.ggml.add_bos_token", BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", BOOL, False)
    w.add("tokenizer.ggml.add_space_prefix", BOOL, True)

    w.add_tensor("token_embd.weight", sd["tok_embeddings.weight"])
    for i in range(cfg["n_layer"]):
        p, b = f"layers.{i}.", f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "attention_norm.weight"])
        w.add_tensor(b + "attn_q.weight", sd[p + "attention.wq.weight"])
        w.add_tensor(b + "attn_k.weight", sd[p + "attention.wk.weight"])
        w.add_tensor(b + "attn_v.weight", sd[p + "attention.wv.weight"])
        w.add_tensor(b + "attn_output.weight", sd[p + "attention.wo.weight"])
        w.add_tensor(b + "ffn_norm.weight", sd[p + "ffn_norm.weight"])
        w.add_tensor(b + "ffn_gate.weight", sd[p + "feed_forward.w1.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "feed_forward.w3.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "feed_forward.w2.weight"])
    w.add_tensor("output_norm.weight", sd["norm.weight"])
    w.write(out_path)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: export_gguf.py CKPT SPM_MODEL OUT.gguf")
    export(*sys.argv[1:])
