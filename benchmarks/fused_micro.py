"""Per-operation CUDA times of the fused bf16 path's pieces at Llama-3.2-1B shapes (T=4096, 2048 -> 8192, r=16).

    python benchmarks/fused_micro.py        # on a GPU; prints microseconds per call (CUDA events, median of 50)
"""
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, "src")
from linchain import LinChainLayer, fused  # noqa: E402


def cuda_time(f, n=50):
    for _ in range(5):
        f()
    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000)
    return statistics.median(times)


def main():
    dev = "cuda"
    T, i, o, r = 4096, 2048, 8192, 16
    x = torch.randn(T, i, device=dev, dtype=torch.bfloat16)
    gy = torch.randn(T, o, device=dev, dtype=torch.bfloat16)
    A = torch.randn(r, i, device=dev)
    B = torch.randn(o, r, device=dev)
    A3 = fused._split3(A).reshape(3 * r, i)
    h = torch.randn(T, r, device=dev)
    y = torch.randn(T, o, device=dev, dtype=torch.bfloat16)
    W = torch.randn(o, i, device=dev, dtype=torch.bfloat16)
    left, right = fused._pairs(fused._split3(h), fused._split3(B).transpose(1, 2))
    rows = {
        "base x W^T (bf16)": lambda: x @ W.t(),
        "mm out_dtype x A3^T": lambda: torch.mm(x, A3.t(), out_dtype=torch.float32),
        "x @ A3^T bf16 out": lambda: x @ A3.t(),
        "x.float() @ A^T": lambda: x.float() @ A.t(),
        "x @ A.bf16()^T": lambda: x @ A.to(torch.bfloat16).t(),
        "split3(A)": lambda: fused._split3(A),
        "pairs(h, B)": lambda: fused._pairs(fused._split3(h), fused._split3(B).transpose(1, 2)),
        "y.addmm_(left, right) K=96": lambda: y.addmm_(left, right),
        "y.add_(h @ B^T) fp32": lambda: y.add_(h @ B.t()),
        "mm out_dtype gy^T H3": lambda: torch.mm(gy.t(), fused._split3(h).permute(1, 0, 2).reshape(T, 3 * r), out_dtype=torch.float32),
        "gy.float()^T @ h": lambda: gy.float().t() @ h,
        "mm out_dtype gy B3": lambda: torch.mm(gy, fused._split3(B).permute(1, 0, 2).reshape(o, 3 * r), out_dtype=torch.float32),
        "bernoulli_ mask": lambda: torch.empty_like(x, dtype=torch.bool).bernoulli_(0.05),
        "masked_fill": lambda: x.masked_fill(x > 3, 0.0),
    }
    for name, f in rows.items():
        print(f"{name:<32} {cuda_time(f):9.1f} us", flush=True)
    for p in (0.0, 0.05):
        base = nn.Linear(i, o, bias=False, device=dev, dtype=torch.bfloat16)
        layer = LinChainLayer(base, "default", r=r, alpha=2 * r, num_mixers=3, dropout=p).to(dev)
        base.requires_grad_(False)
        with torch.no_grad():
            layer.linchain_B["default"].weight.normal_()
        xx = x.view(8, 512, i).requires_grad_()
        g = torch.randn(8, 512, o, device=dev, dtype=torch.bfloat16)
        for on in (True, False):
            def step():
                with fused.use_fused(on):
                    out = layer(xx)
                    out.backward(g)
            print(f"layer k=3 p={p} fused={on}: fwd+bwd {cuda_time(step, 20):9.1f} us", flush=True)
        pl = nn.Linear(i, r, bias=False, device=dev), nn.Linear(r, o, bias=False, device=dev)
        drop = nn.Dropout(p)

        def lora():
            out = base(xx)
            out = out + pl[1](pl[0](drop(xx.float()))) * 2.0
            out.to(torch.bfloat16).backward(g)
        print(f"PEFT-style LoRA p={p}: fwd+bwd {cuda_time(lora, 20):9.1f} us", flush=True)


if __name__ == "__main__":
    main()
