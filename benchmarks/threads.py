"""CPU thread settings for a training step when the CPU is shared (issue 11).

Times SmolLM2-135M + LinChain (k=3, r=16, dropout 0.05, the default run's targets) training
steps (batch 4 x 128 tokens, forward + backward + AdamW) in a fresh process per setting (OpenMP
reads its environment once), idle and beside N busy-looping processes, and prints each setting's
median step time and its ratio to torch's default (all threads, OpenMP's default wait policy)
measured in the same round:

    python benchmarks/threads.py                 # idle, then beside 2 busy processes
    python benchmarks/threads.py --load 0 2 4 --steps 6
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {  # name -> (environment, torch threads or None for torch's default)
    "default": ({}, None),
    "1 thread": ({}, 1),
    "passive wait": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "auto (linchain)": ({"LINCHAIN_THREADS_AUTO": "1"}, None),
}

CHILD = r"""
import json, os, sys, time, torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM
import linchain
from linchain.offline import smollm2_path
threads = json.loads(sys.argv[1]); steps = int(sys.argv[2])
if os.environ.get("LINCHAIN_THREADS_AUTO"):
    from linchain.threads import default_threads
    threads = default_threads()
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(str(smollm2_path()))
model = get_peft_model(model, linchain.LinChainConfig(r=16, alpha=32, num_mixers=3, dropout=0.05,
                       target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, 1000, (4, 128))
times = []
for i in range(steps + 1):
    t = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times[1:], "threads": torch.get_num_threads()}))
"""


def _busy() -> None:
    while True:
        pass


def run(setting: str, steps: int) -> dict:
    env, threads = SETTINGS[setting]
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(threads), str(steps)], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy processes beside the job (default: 0 2)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    figures = {}
    for load in args.load:
        busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(load)]
        for p in busy:
            p.start()
        time.sleep(1 if load else 0)
        try:
            rows = {name: run(name, args.steps) for name in SETTINGS}
        finally:
            for p in busy:
                p.terminate()
        base = statistics.median(rows["default"]["times"])
        print(f"\nbeside {load} busy process(es): median s/step (ratio to torch's default)")
        for name, row in rows.items():
            med = statistics.median(row["times"])
            print(f"  {name:<16} threads={row['threads']}  {med:7.2f} s  {med / base:5.2f}x")
        figures[str(load)] = {name: row for name, row in rows.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
