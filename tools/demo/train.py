#!/usr/bin/env python3
"""train.py: trains fusiond's demo model, a small Llama on the King James Bible.

    python3 train.py --corpus DIR --spm models/demo-tokenizer.model --out DIR [--steps N] ...

Input: kjv-train.txt / kjv-valid.txt from make_corpus.sh (one chapter a line) and the
SentencePiece model from train_tokenizer.py.  Each chapter is encoded as
<s> + sp.encode(chapter) + </s> (the dummy-prefix space included, as Llama does), and the
chapters are concatenated, in order, into one training stream and one validation stream.
Training draws windows of n_ctx + 1 tokens at uniformly random offsets of the training
stream (torch generator seeded with --seed); validation is every non-overlapping window of
the validation stream.

The model is Llama as llama.cpp computes it, so the GGUF export needs no reordering:
  - RMSNorm (eps 1e-5) before attention and before the feed-forward, and at the end;
  - attention with grouped queries: query head h uses key/value head h // (n_head / n_kv);
  - RoPE on ADJACENT pairs (x[2i], x[2i+1]) with theta_i = base^(-2i/head_dim), the layout
    of Meta's original code and of GGUF's llama tensors (llama.cpp "normal" rope mode), so
    Q and K are exported as they are (no rotate-half permutation);
  - SwiGLU feed-forward: down(silu(gate(x)) * up(x));
  - tied output: the logits are the final norm's output times token_embd transposed.
Hyperparameters are the argparse defaults below (the committed model used them all).  On
CUDA the forward runs under bf16 autocast (master weights and optimizer state fp32);
without a GPU it runs in fp32 on the CPU, slowly.

Output in --out: kjv-demo.pt (the weights with the lowest validation loss, fp32, and the
config) and train-log.json (losses every --eval-every steps, time, hardware).
"""
import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True, help="folder with kjv-train.txt, kjv-valid.txt")
    p.add_argument("--spm", required=True, help="SentencePiece model (train_tokenizer.py)")
    p.add_argument("--out", required=True, help="output folder")
    # model
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--n-kv-head", type=int, default=4)
    p.add_argument("--ffn", type=int, default=512, help="SwiGLU hidden size")
    p.add_argument("--n-ctx", type=int, default=512, help="training context (tokens)")
    p.add_argument("--rope-base", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--dropout", type=float, default=0.3)
    # optimisation
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="cosine floor / peak")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--max-seconds", type=float, default=0,
                   help="stop (evaluate, save) once training took this long; 0 = no limit")
    p.add_argument("--seed", type=int, default=1611)
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    return p.parse_args(argv)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.to(wide(x.dtype))
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(xf.dtype)).type_as(x)


def wide(dtype):
    """The dtype norms and RoPE compute in: float32 for 16-bit inputs, else the input's."""
    return torch.promote_types(dtype, torch.float32)


def rope_tables(head_dim, n_pos, base, dtype=torch.float64, device=None):
    """cos/sin of shape [n_pos, head_dim/2] for adjacent-pair RoPE."""
    i = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device)
    inv = base ** (-i / head_dim)
    ang = torch.arange(n_pos, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x, cos, sin):
    """x: [B, T, H, D]; rotates the pairs (x[2i], x[2i+1]) by angle pos * theta_i."""
    dt = wide(x.dtype)
    x0, x1 = x[..., 0::2].to(dt), x[..., 1::2].to(dt)
    c, s = cos[None, :, None, :].to(dt), sin[None, :, None, :].to(dt)
    y0 = x0 * c - x1 * s
    y1 = x0 * s + x1 * c
    return torch.stack((y0, y1), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_kv = cfg["n_head"], cfg["n_kv_head"]
        self.hd = cfg["dim"] // cfg["n_head"]
        self.wq = nn.Linear(cfg["dim"], self.n_head * self.hd, bias=False)
        self.wk = nn.Linear(cfg["dim"], self.n_kv * self.hd, bias=False)
        self.wv = nn.Linear(cfg["dim"], self.n_kv * self.hd, bias=False)
        self.wo = nn.Linear(self.n_head * self.hd, cfg["dim"], bias=False)
        self.dropout = cfg["dropout"]

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_head, self.hd), cos, sin)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv, self.hd), cos, sin)
        v = self.wv(x).view(B, T, self.n_kv, self.hd)
        g = self.n_head // self.n_kv
        k = k.repeat_interleave(g, dim=2)   # query head h reads kv head h // g
        v = v.repeat_interleave(g, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            # Older PyTorch (and the float64 reference in make_golden.py): the same softmax
            # attention written out.
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            a = F.dropout(s.masked_fill(mask, float("-inf")).softmax(-1), p, self.training)
            o = a @ v
        return self.wo(o.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = nn.Linear(cfg["dim"], cfg["ffn"], bias=False)  # gate
        self.w3 = nn.Linear(cfg["dim"], cfg["ffn"], bias=False)  # up
        self.w2 = nn.Linear(cfg["ffn"], cfg["dim"], bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.feed_forward = FeedForward(cfg)
        self.drop = nn.Dropout(cfg["dropout"])

    def forward(self, x, cos, sin):
        x = x + self.drop(self.attention(self.attention_norm(x), cos, sin))
        return x + self.drop(self.feed_forward(self.ffn_norm(x)))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg["vocab"], cfg["dim"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"]))
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        hd = cfg["dim"] // cfg["n_head"]
        cos, sin = rope_tables(hd, cfg["n_ctx"], cfg["rope_base"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        std = 0.02
        for name, prm in self.named_parameters():
            if prm.dim() == 2:
                # residual-branch outputs start smaller (GPT-2's 1/sqrt(2 * layers))
                s = std / math.sqrt(2 * cfg["n_layer"]) if name.endswith(("wo.weight", "w2.weight")) else std
                nn.init.normal_(prm, 0.0, s)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok_embeddings(idx)
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        for blk in self.layers:
            x = blk(x, cos, sin)
        return self.norm(x) @ self.tok_embeddings.weight.t()   # tied output


def load_stream(path, sp):
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            ids.append(sp.bos_id())
            ids.extend(sp.encode(line.rstrip("\n")))
            ids.append(sp.eos_id())
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step, a):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = (step - a.warmup) / max(1, a.steps - a.warmup)
    floor = a.lr * a.min_lr_frac
    return floor + (a.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


def autocast(amp):
    # bf16 on CUDA; a plain context elsewhere (older CPU-only builds reject a disabled CUDA
    # autocast).
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()


@torch.no_grad()
def mean_loss(model, windows, dev, amp, bs=32):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(windows), bs):
        w = windows[i:i + bs].to(dev)
        with autocast(amp):
            logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                               reduction="sum")
        tot += loss.item()
        n += w[:, 1:].numel()
    model.train()
    return tot / n


def main(argv=None):
    a = parse_args(argv)
    import sentencepiece as spm

    torch.manual_seed(a.seed)
    dev = "cuda" if (a.device == "auto" and torch.cuda.is_available()) else (
        "cpu" if a.device == "auto" else a.device)
    amp = dev == "cuda"
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    sp = spm.SentencePieceProcessor(model_file=a.spm)
    train = load_stream(os.path.join(a.corpus, "kjv-train.txt"), sp)
    valid = load_stream(os.path.join(a.corpus, "kjv-valid.txt"), sp)
    L = a.n_ctx + 1
    vwin = torch.stack([valid[i:i + L] for i in range(0, len(valid) - L + 1, L)])
    gen = torch.Generator().manual_seed(a.seed)
    twin = torch.stack([train[i:i + L] for i in
                        torch.randint(0, len(train) - L + 1, (len(vwin),), generator=gen).tolist()])
    cfg = dict(vocab=sp.get_piece_size(), dim=a.dim, n_layer=a.n_layer, n_head=a.n_head,
               n_kv_head=a.n_kv_head, ffn=a.ffn, n_ctx=a.n_ctx, rope_base=a.rope_base,
               norm_eps=a.norm_eps, dropout=a.dropout)
    model = Llama(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    hw = torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor() or "cpu"
    print(f"params {n_params}, train tokens {len(train)}, valid tokens {len(valid)}, "
          f"device {hw}, torch {torch.__version__}", flush=True)
    log = dict(args=vars(a), cfg=cfg, n_params=n_params, train_tokens=len(train),
               valid_tokens=len(valid), hardware=hw, torch=torch.__version__, evals=[])
    best = float("inf")
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    last = a.steps
    for step in range(a.steps + 1):
        if a.max_seconds and step < last and time.time() - t0 > a.max_seconds:
            last = step
        if step % a.eval_every == 0 or step == last:
            tl, vl = mean_loss(model, twin, dev, amp), mean_loss(model, vwin, dev, amp)
            el = time.time() - t0
            print(f"step {step:5d}  train {tl:.4f}  valid {vl:.4f}  {el:7.1f} s", flush=True)
            log["evals"].append(dict(step=step, train=tl, valid=vl, seconds=el))
            if vl < best:
                best = vl
                state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
                torch.save({"cfg": cfg, "state": state}, os.path.join(a.out, "kjv-demo.pt"))
                log["best"] = dict(step=step, train=tl, valid=vl)
        if step == last:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        starts = torch.randint(0, len(train) - L + 1, (a.batch,), generator=gen)
        w = torch.stack([train[s:s + L] for s in starts.tolist()]).to(dev, non_blocking=True)
        with autocast(amp):
            logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg["vocab"]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
    log["seconds"] = time.time() - t0
    log["steps_run"] = last
    with open(os.path.join(a.out, "train-log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"best valid {best:.4f} at step {log['best']['step']}; {log['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
