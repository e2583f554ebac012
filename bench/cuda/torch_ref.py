"""torch_ref.py: the PyTorch reference decode step of issue 11 on the same GPU: a Llama
decoder step in bf16 with random weights (F.rms_norm + F.linear + SDPA, KV cache in place,
the whole step captured in a CUDA graph), with and without the RMSNorms (the latter is a
lower bound, not a valid model), and the variant that defers the norm with separate kernels
(rsqrt of the mean square, then scale the product's output).  Prints ms/token: back-to-back
graph replays, and replay + logits to the host + synchronize (what fusion-bench synth times).
Usage: python3 torch_ref.py [1b|8b ...] [--batch B] [--ctx C]"""
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {  # n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_layer, tied
    "1b": (2048, 8192, 32, 8, 64, 128256, 16, True),
    "8b": (4096, 14336, 32, 8, 128, 128256, 32, False),
}


def build(shape, B, ctx, dev="cuda", dt=torch.bfloat16):
    E, Fd, H, Hkv, hd, V, L, tied = shape
    def w(o, i):
        return torch.randn(o, i, device=dev, dtype=dt) / i ** 0.5
    layers = [dict(qkv=w((H + 2 * Hkv) * hd, E), o=w(E, H * hd), gu=w(2 * Fd, E), d=w(E, Fd),
                   n1=1 + 0.1 * torch.randn(E, device=dev, dtype=dt),
                   n2=1 + 0.1 * torch.randn(E, device=dev, dtype=dt)) for _ in range(L)]
    emb = w(V, E)
    head = emb if tied else w(V, E)
    nf = 1 + 0.1 * torch.randn(E, device=dev, dtype=dt)
    kc = [torch.zeros(B, Hkv, ctx, hd, device=dev, dtype=dt) for _ in range(L)]
    vc = [torch.zeros(B, Hkv, ctx, hd, device=dev, dtype=dt) for _ in range(L)]
    return layers, emb, head, nf, kc, vc


def sdpa(q, k, v):
    try:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    except TypeError:  # older PyTorch: repeat the KV heads
        rep = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1),
                                              v.repeat_interleave(rep, 1))


def make_step(shape, B, ctx, mode, model):
    """mode: 'norm' (F.rms_norm), 'none' (norms deleted), 'defer' (separate rsqrt + scale)"""
    E, Fd, H, Hkv, hd, V, L, tied = shape
    layers, emb, head, nf, kc, vc = model
    dev = emb.device
    tok = torch.randint(0, V, (B,), device=dev)
    pos = ctx - 1
    inv = 500000.0 ** (-torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd)
    ang = pos * inv
    cos = torch.cat([ang.cos(), ang.cos()]).to(emb.dtype)
    sin = torch.cat([ang.sin(), ang.sin()]).to(emb.dtype)

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def normed_linear(x, g, wt):
        if mode == "norm":
            return F.linear(F.rms_norm(x, (E,), g, 1e-5), wt)
        if mode == "none":
            return F.linear(x, wt)
        # gamma folded into the weights at load: same cost as the unfolded weights here
        r = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype)
        return F.linear(x, wt) * r

    def step():
        x = emb[tok]
        for i, l in enumerate(layers):
            qkv = normed_linear(x, l["n1"], l["qkv"])
            q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], -1)
            q = rope(q.view(B, 1, H, hd).transpose(1, 2))
            k = rope(k.view(B, 1, Hkv, hd).transpose(1, 2))
            kc[i][:, :, pos] = k[:, :, 0]
            vc[i][:, :, pos] = v.view(B, Hkv, hd)
            o = sdpa(q, kc[i], vc[i])
            x = x + F.linear(o.transpose(1, 2).reshape(B, H * hd), l["o"])
            g, u = normed_linear(x, l["n2"], l["gu"]).chunk(2, -1)
            x = x + F.linear(F.silu(g) * u, l["d"])
        return normed_linear(x, nf, head).float()
    return step


def bench(name, B, ctx, reps=100):
    shape = SHAPES[name]
    model = build(shape, B, ctx)
    res = {}
    for mode in ("norm", "none", "defer"):
        step = make_step(shape, B, ctx, mode, model)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = step()
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        for _ in range(10):
            g.replay()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            g.replay()
        torch.cuda.synchronize()
        back = (time.perf_counter() - t0) / reps * 1e3
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            g.replay()
            host.copy_(out)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        res[mode] = (back, ts[len(ts) // 2] * 1e3)
        del g, out
    print(f"torch {name} bf16 batch {B} ctx {ctx}: "
          + "  ".join(f"{m} {b:.3f} ms (+logits to host {l:.3f} ms)" for m, (b, l) in res.items())
          + f"  norm/none {res['norm'][0] / res['none'][0]:.3f}", flush=True)
    del model
    torch.cuda.empty_cache()


if __name__ == "__main__":
    args = sys.argv[1:]
    B, ctx, names = 1, 512, []
    i = 0
    while i < len(args):
        if args[i] == "--batch":
            B = int(args[i + 1]); i += 2
        elif args[i] == "--ctx":
            ctx = int(args[i + 1]); i += 2
        else:
            names.append(args[i]); i += 1
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    for n in names or ["1b", "8b"]:
        bench(n, B, ctx)
