"""CPU threads and OpenMP's wait policy for a training step when the CPU is shared (issues 11, 18).

Times SmolLM2-135M + LinChain (k=3, r=16, dropout 0.05, the default run's targets) training
steps (batch 4 x 128 tokens, forward + backward + AdamW) in a fresh process per setting (OpenMP
reads its environment once, when torch loads), idle and beside N busy-looping processes. Each
step's wall time and CPU time (all the process's threads) are measured; it prints the medians,
their ratios to torch's default (all cores, OpenMP's spin-then-sleep wait) measured in the same
round, and each setting's CPU time per step beside the load over its own idle CPU time (the CPU
that the same work costs on a shared machine):

    python benchmarks/threads.py                 # idle, then beside 2 busy processes
    python benchmarks/threads.py --load 0 2 4 --steps 6 --settings "torch default" "linchain default"
    python benchmarks/threads.py --command       # the real `linchain train` (8 steps, no evaluation)

"linchain default" is what the ``linchain`` commands do: :func:`linchain.threads.passive_wait_env`
from the load at the start (``OMP_WAIT_POLICY=PASSIVE`` beside other jobs, OpenMP's own spin on
an idle machine) and :func:`linchain.threads.default_threads`.
``--command`` times the whole command instead (start-up, the default run's data and model, the
steps, saving), as ``python -m linchain train`` against the same ``main()`` called from
``python -c`` (not a command launch, so no wait policy) with ``--num_threads`` = all cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from linchain.threads import WAIT_VARIABLES, busy_cores, passive_wait_env

#: name -> (environment added, torch threads: None = torch's default, "auto" = linchain's default_threads)
SETTINGS = {
    "torch default": ({}, None),
    "1 thread": ({}, 1),
    "passive wait": (passive_wait_env({}), None),
    "auto threads": ({}, "auto"),
    "linchain default": ("as the commands decide", "auto"),
    # libgomp (torch's Linux wheels) only: spin that many rounds (~100 per microsecond) before sleeping
    "spin 3k": ({"GOMP_SPINCOUNT": "3000"}, None),
    "spin 30k": ({"GOMP_SPINCOUNT": "30000"}, None),
}
DEFAULT_SETTINGS = ["torch default", "passive wait", "auto threads", "linchain default"]

CHILD = r"""
import json, os, sys, time, torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM
import linchain
from linchain.offline import smollm2_path
threads = json.loads(sys.argv[1]); steps = int(sys.argv[2])
if threads == "auto":  # as `linchain train` does: at the start of the run, before the model loads
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
wall, cpu = [], []
for i in range(steps + 1):
    t, c = time.perf_counter(), time.process_time()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step(); opt.zero_grad()
    wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
print(json.dumps({"wall": wall[1:], "cpu": cpu[1:], "threads": torch.get_num_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _busy() -> None:
    while True:
        pass


def _environment() -> dict[str, str]:
    """This environment without OpenMP's wait variables: torch's default unless a setting adds one."""
    return {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}


def run(setting: str, steps: int) -> dict:
    env, threads = SETTINGS[setting]
    if env == "as the commands decide":  # passive when other jobs are running now (linchain.threads)
        env = passive_wait_env({}, busy_cores())
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(threads), str(steps)],
        env={**_environment(), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["median_wall"], row["median_cpu"] = statistics.median(row["wall"]), statistics.median(row["cpu"])
    return row


#: --command: the settings, and the flags of a short `linchain train` of the default run (no evaluation)
COMMAND_SETTINGS = ["torch default", "linchain default"]
TRAIN_FLAGS = ["--eval_accuracy", "no", "--val_set_size", "0", "--eval_strategy", "no", "--overwrite"]


def run_command(setting: str, steps: int) -> dict:
    """Wall and CPU time (user + system) of one whole `linchain train --max_steps steps` process."""
    with tempfile.TemporaryDirectory(prefix="threads-bench-") as out:
        flags = ["train", "--max_steps", str(steps), *TRAIN_FLAGS, "--output_dir", out]
        if setting == "torch default":  # the same main(), but not launched as a command: no wait policy set
            argv = [
                sys.executable,
                "-c",
                "import sys; from linchain.cli.main import main; sys.exit(main(sys.argv[1:]))",
                *flags,
                "--num_threads",
                str(os.cpu_count()),
            ]
        else:
            argv = [sys.executable, "-m", "linchain", *flags]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run(argv, env=_environment(), capture_output=True, text=True, check=True)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    chosen = re.search(r"using (\d+) CPU thread", proc.stderr)  # set_threads says so when it chose fewer
    return {
        "median_wall": wall,
        "median_cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
        "threads": int(chosen[1]) if chosen else os.cpu_count(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy processes beside the job (default: 0 2)")
    ap.add_argument(
        "--steps",
        type=int,
        help="timed steps per setting (after one warm-up step; default 3), or the command's --max_steps (default 8)",
    )
    ap.add_argument(
        "--settings",
        nargs="+",
        default=DEFAULT_SETTINGS,
        choices=list(SETTINGS),
        metavar="SETTING",
        help=f"settings to time, of {list(SETTINGS)} (default: {DEFAULT_SETTINGS}); the first is the baseline",
    )
    ap.add_argument(
        "--command", action="store_true", help=f"time the whole `linchain train` command: {COMMAND_SETTINGS}"
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    settings, runner, per = (
        (COMMAND_SETTINGS, run_command, "per command") if args.command else (args.settings, run, "per step (median)")
    )
    steps = args.steps or (8 if args.command else 3)
    baseline = settings[0]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    figures: dict[str, dict] = {}
    for load in args.load:
        busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(load)]
        for p in busy:
            p.start()
        time.sleep(1 if load else 0)
        seen = busy_cores()
        try:
            rows = {name: runner(name, steps) for name in settings}
        finally:
            for p in busy:
                p.terminate()
        base = rows[baseline]
        print(f"\nbeside {load} busy process(es) ({seen:.2f} cores busy before the round): {per}, ratio to {baseline}")
        for name, row in rows.items():
            print(
                f"  {name:<17} threads={row['threads']}  wall {row['median_wall']:6.2f} s ({row['median_wall'] / base['median_wall']:4.2f}x)"
                f"  CPU {row['median_cpu']:6.2f} s ({row['median_cpu'] / base['median_cpu']:4.2f}x)",
                flush=True,
            )
        figures[str(load)] = rows
    if "0" in figures:
        idle = figures["0"]
        for load, rows in figures.items():
            if load == "0":
                continue
            print(f"\nCPU time {per} beside {load} busy process(es) / the same setting idle (wall in brackets):")
            for name, row in rows.items():
                print(
                    f"  {name:<17} {row['median_cpu'] / idle[name]['median_cpu']:4.2f}x  "
                    f"({row['median_wall'] / idle[name]['median_wall']:4.2f}x)"
                )
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
