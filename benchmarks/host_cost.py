"""Host cost per training step on a tiny model, where per-op overhead dominates: a CPU proxy for a GPU's host-bound regime.

    python benchmarks/host_cost.py      # ~1 minute; prints each row's median process CPU time and its ratio to PEFT LoRA

8 layers of hidden 64 (random Llama weights), batch 2 x 16, r = 16, dropout 0.05, targets q,k,v,up,down,
1 thread, 40 interleaved steps (the first 5 dropped). Rows: PEFT LoRA, fused k = 0 and k = 3, and k = 3
on the layer's reference path (``linchain.tuner.fused.use_fused(False)``).
"""

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peft import LoraConfig, get_peft_model

import linchain  # noqa: F401  (registers LINCHAIN with PEFT)
import speed
from linchain import LinChainConfig
from linchain.tuner import fused

torch.set_num_threads(1)
base, _ = speed.load_model("tiny", torch.float32, 8, True)
for p in base.parameters():
    p.requires_grad_(False)
mk = {
    "peft": lambda: get_peft_model(
        speed.shared_copy(base), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=speed.TARGETS)
    ),
    "k3": lambda: get_peft_model(
        speed.shared_copy(base),
        LinChainConfig(r=16, alpha=32, num_mixers=3, dropout=0.05, target_modules=speed.TARGETS),
    ),
    "k0": lambda: get_peft_model(
        speed.shared_copy(base),
        LinChainConfig(r=16, alpha=32, num_mixers=0, dropout=0.05, target_modules=speed.TARGETS),
    ),
}
models = {k: f().train() for k, f in mk.items()}
batch = torch.randint(0, 256, (2, 16))


def step(m, on):
    with fused.use_fused(on):
        m(input_ids=batch, labels=batch).loss.backward()


rows = [("peft", True), ("k0", True), ("k3", True), ("k3", False)]
times = {r: [] for r in rows}
for i in range(40):
    for r in rows:
        t = time.process_time()
        step(models[r[0]], r[1])
        times[r].append(time.process_time() - t)
med = {r: statistics.median(v[5:]) for r, v in times.items()}
for name, on in rows:
    label = name + ("" if on else " (reference path)")
    print(f"{label:<24} {med[(name, on)] * 1e3:8.2f} ms  {med[(name, on)] / med[('peft', True)]:.3f}x PEFT LoRA")
