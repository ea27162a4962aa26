"""Training-step time and memory of LinChain vs PEFT LoRA vs full fine-tuning, side by side.

    python benchmarks/speed.py [--quick] [--json FILE]

Same model, tokens (batch x length), rank, dropout and targets for every row. Rows:

- ``floor``: the frozen model, forward and backward through the activations only (no weight
  gradients): the least any adapter can cost;
- ``peft-lora``: stock PEFT LoRA;
- ``linchain k=0/1/3`` (k=1 and 3 also with mixer biases), on the fused path (linchain/tuner/fused.py);
- ``linchain-k3-reference``: k=3 on the layer's reference path (modules and separate ops);
- ``full-ft``: every weight trained;
- with ``--compile``: ``floor``, ``peft-lora`` and ``linchain-k3`` under ``torch.compile`` (``-compiled``).

A training step is forward + backward (+ a fused AdamW step for trainable rows, the optimizer
``linchain train`` runs). Repeats are interleaved (every row once per round, the order rotated
each round) and the median is reported, with each row's ratio to the floor and to PEFT LoRA
measured in the same process: on a shared machine only these ratios are meaningful. Memory per row = resident weights + optimiser state it owns (computed)
+ the step's measured peak increment (CPU: VmHWM after resetting it, minus VmRSS before; GPU:
max_memory_allocated minus memory_allocated before), plus the exact bytes of activations autograd
saves (counted with saved-tensor hooks, deterministic). Inference rows compare the base model, the
merged LinChain model and the unmerged adapters. The targets of issue 18 are checked at the end.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["main", "MODEL_PRESETS"]

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]

#: Llama shapes (random weights: step time does not depend on the weight values).
MODEL_PRESETS = {
    "smollm2-random": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),  # Llama-3.2-1B
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),  # Llama-3-8B
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        tie_word_embeddings=True,
    ),
}

_libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


# ------------------------------------------------------------------------------------- memory
def _trim() -> None:
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)  # hand freed heap pages back so RSS reflects live memory


def _fix_mmap_threshold(device: torch.device) -> None:
    """Big blocks mmapped and returned to the OS on free, so RSS follows live memory."""
    if _libc is not None and device.type == "cpu":
        # M_MMAP_THRESHOLD = -3: fixed 128 KiB (glibc otherwise raises it dynamically, keeping freed
        # activations in its heap, where RSS no longer shows what a step needs)
        _libc.mallopt(-3, 128 * 1024)
        _trim()


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory increment of a block: CPU via VmHWM (reset through /proc/self/clear_refs), GPU via the allocator."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "PeakMemory":
        _trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            except OSError:
                pass
            self.before = _proc_status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.before
        else:
            self.peak = _proc_status_kb("VmHWM") * 1024 - self.before


def saved_activation_bytes(step: Callable[[], None], params: set[int]) -> int:
    """Bytes of distinct non-parameter tensors autograd saves for backward during ``step`` (exact)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


# ------------------------------------------------------------------------------------- models
def load_model(name: str, dtype: torch.dtype, layers: Optional[int], fallback: bool) -> tuple[nn.Module, str]:
    """The benchmark model and a description; ``smollm2`` is the real offline model (random-shape fallback)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if name == "smollm2":
        try:
            from linchain.offline import smollm2_path

            model = AutoModelForCausalLM.from_pretrained(str(smollm2_path()), dtype=dtype)
            if layers:
                model.model.layers = model.model.layers[:layers]
                model.config.num_hidden_layers = layers
            return model, "SmolLM2-135M-Instruct (offline weights)"
        except Exception as err:  # the offline package or its conversion is missing
            if not fallback:
                raise
            print(
                f"[speed] SmolLM2 unavailable ({type(err).__name__}: {err}); using random weights with its shapes "
                "(--no-fallback to fail instead)",
                file=sys.stderr,
            )
            name = "smollm2-random"
    preset = dict(MODEL_PRESETS[name])
    if layers:
        preset["num_hidden_layers"] = layers
    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=4096, **preset)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu")
    # random weights of a realistic scale; the values do not matter for step time
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    model = model.to(dtype)
    n = sum(p.numel() for p in model.parameters())
    return model, f"random Llama, {name} shapes, {config.num_hidden_layers} layers, {n / 1e6:.0f}M parameters"


def shared_copy(base: nn.Module) -> nn.Module:
    """A copy of ``base`` whose (frozen) parameters are the same tensors: adapters cost no second base model."""
    memo = {id(p): p for p in base.parameters()}
    memo.update({id(b): b for b in base.buffers()})
    return copy.deepcopy(base, memo)


@dataclass
class Row:
    name: str
    model: nn.Module
    optimizer: Optional[torch.optim.Optimizer]
    owned_bytes: int  # weights + optimiser state this row adds on top of the shared frozen base
    times: list
    cpu_times: list = field(default_factory=list)  # process CPU time: less hurt by other jobs than wall time
    faults: list = field(default_factory=list)  # minor page faults per step
    peak: int = 0
    saved: int = 0


def build_rows(base: nn.Module, args, device: torch.device) -> list[Row]:
    from peft import LoraConfig, get_peft_model

    import linchain  # noqa: F401  (registers LINCHAIN with PEFT)
    from linchain import LinChainConfig

    for p in base.parameters():
        p.requires_grad_(False)
    specs: list[tuple[str, Callable[[], nn.Module]]] = []

    def floor():
        m = shared_copy(base)
        m.enable_input_require_grads()  # backward runs through every activation, no weight gradients
        return m

    specs.append(("floor", floor))
    specs.append(
        (
            "peft-lora",
            lambda: get_peft_model(
                shared_copy(base),
                LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=args.dropout, target_modules=TARGETS),
            ),
        )
    )
    for k, bias in [(0, False), (1, False), (1, True), (3, False), (3, True)]:
        specs.append(
            (
                f"linchain-k{k}" + ("-bias" if bias else ""),
                lambda k=k, bias=bias: get_peft_model(
                    shared_copy(base),
                    LinChainConfig(
                        r=args.r,
                        alpha=2 * args.r,
                        num_mixers=k,
                        mixer_bias=bias,
                        dropout=args.dropout,
                        target_modules=TARGETS,
                    ),
                ),
            )
        )
    # the same k=3 adapter on the layer's reference path (separate modules and ops, one autograd node
    # each): what the fused Function (linchain/tuner/fused.py) saves
    specs.append(
        (
            "linchain-k3-reference",
            lambda: get_peft_model(
                shared_copy(base),
                LinChainConfig(r=args.r, alpha=2 * args.r, num_mixers=3, dropout=args.dropout, target_modules=TARGETS),
            ),
        )
    )
    if not args.no_full_ft:

        def full():
            m = copy.deepcopy(base)
            for p in m.parameters():
                p.requires_grad_(True)
            return m

        specs.append(("full-ft", full))
    if args.rows:
        specs = [s for s in specs if s[0] in args.rows or s[0] in ("floor", "peft-lora")]
    if args.compile:
        # torch.compile'd twins (inductor): the same models, compiled once in the warm-up round
        specs += [(name + "-compiled", make) for name, make in specs if name in ("floor", "peft-lora", "linchain-k3")]

    rows = []
    for name, make in specs:
        torch.manual_seed(1)
        model = make().to(device).train()
        if name.endswith("-compiled"):
            model = torch.compile(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        # the optimizer `linchain train` gets: transformers' default for torch >= 2.8 is adamw_torch_fused
        # (one fused kernel for all tensors; the for-loop AdamW costs ~4x more per step on CPU, and more
        # for k = 3, whose 750 tensors are 2.5x LoRA's)
        optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True) if trainable else None
        nbytes = sum(p.numel() * p.element_size() for p in trainable)
        # a trained copy owns its weights plus AdamW's two moment buffers of the same size
        rows.append(Row(name, model, optimizer, owned_bytes=3 * nbytes, times=[]))
    return rows


def make_step(row: Row, batch: torch.Tensor, device: torch.device) -> Callable[[], None]:
    from linchain.tuner.fused import use_fused

    fused = not row.name.startswith("linchain-k3-reference")

    def step() -> None:
        with use_fused(fused):
            out = row.model(input_ids=batch, labels=batch)
            out.loss.backward()
        if row.optimizer is not None:
            row.optimizer.step()
            row.optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def rotated(items: list, i: int) -> list:
    """``items`` starting at position ``i`` (mod len): round ``i``'s order, so no row always runs first."""
    return items[i % len(items) :] + items[: i % len(items)]


def timed(f: Callable[[], None]) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller batch and fewer repeats: about 1.5-2 minutes on 2 idle CPU cores, 5-8 on a shared machine",
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure to this JSON file")
    p.add_argument(
        "--model",
        default="smollm2",
        choices=["smollm2", *MODEL_PRESETS],
        help="smollm2: the offline SmolLM2-135M weights (falls back to random weights of its shapes); "
        "others: random Llama weights of that architecture (default: %(default)s)",
    )
    p.add_argument(
        "--no-fallback", action="store_true", help="fail instead of using random weights when SmolLM2 is unavailable"
    )
    p.add_argument(
        "--layers", type=int, help="keep only this many transformer layers (e.g. Llama-3-8B shapes on a small GPU)"
    )
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: %(default)s)"
    )
    p.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16"], help="weights and activations dtype (default: %(default)s)"
    )
    p.add_argument("--batch", type=int, help="sequences per step (default: 8; 4 with --quick)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: 128; 64 with --quick)")
    p.add_argument("--r", type=int, default=16, help="rank of every adapter (default: %(default)s)")
    p.add_argument(
        "--dropout", type=float, default=0.05, help="adapter dropout (default: %(default)s, the reference setup)"
    )
    p.add_argument("--repeats", type=int, help="timed rounds (default: 7; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: %(default)s)")
    p.add_argument("--rows", nargs="+", help="only these rows (floor and peft-lora are always kept)")
    p.add_argument("--no-full-ft", action="store_true", help="skip the full fine-tuning row (memory)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="add torch.compile'd rows of the floor, PEFT LoRA and linchain k=3 (compiled in the warm-up)",
    )
    p.add_argument("--no-inference", action="store_true", help="skip the inference rows")
    p.add_argument(
        "--fixed-mmap-threshold",
        action="store_true",
        help="time with glibc's mmap threshold fixed at 128 KiB, as the memory phase runs "
        "(every large tensor page-faults; the pre-2026-11-26 setting of this script)",
    )
    return p


def _ratio_table(rows: list[dict], key: str, floor: float, peft: float, fmt: str) -> list[str]:
    lines = []
    for r in rows:
        v = r[key]
        lines.append(f"  {r['name']:<18} {format(v, fmt):>10} {v / floor:>9.3f}x {v / peft:>9.3f}x")
    return lines


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.batch = args.batch or (4 if args.quick else 8)
    args.seq_len = args.seq_len or (64 if args.quick else 128)
    args.repeats = args.repeats or (3 if args.quick else 7)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    started = time.time()

    base, model_desc = load_model(args.model, dtype, args.layers, fallback=not args.no_fallback)
    base.to(device)
    rows = build_rows(base, args, device)
    g = torch.Generator().manual_seed(0)
    vocab = base.config.vocab_size
    batch = torch.randint(0, vocab, (args.batch, args.seq_len), generator=g).to(device)
    steps = {r.name: make_step(r, batch, device) for r in rows}
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for r in rows for p in r.model.parameters()}
    print(
        f"[speed] {model_desc}; {args.batch}x{args.seq_len} tokens, r={args.r}, dropout={args.dropout}, "
        f"{args.dtype} on {device}, {torch.get_num_threads()} threads; {len(rows)} rows x "
        f"({args.warmup} warm-up + {args.repeats}) interleaved rounds",
        flush=True,
    )

    # warm-up (also creates AdamW's state), timing rounds, then memory (one step per row, untimed).
    # Timing runs under glibc's default allocator behaviour, as `linchain train` and PEFT users get it
    # (freed activations are reused from the heap); memory is measured afterwards with big blocks
    # mmapped, because only then does RSS follow live memory. Timing under the fixed threshold
    # (--fixed-mmap-threshold) adds a page fault per 4 KiB of every large tensor to each row.
    if args.fixed_mmap_threshold:
        _fix_mmap_threshold(device)
    for _ in range(args.warmup):
        for j, r in enumerate(rows):
            steps[r.name]()
            print(f"[speed] warm-up {j + 1}/{len(rows)} rows ({time.time() - started:.0f} s)", flush=True)
    for i in range(args.repeats):
        for r in rotated(rows, i):
            cpu, minflt = time.process_time(), _minor_faults()
            r.times.append(timed(steps[r.name]))
            r.cpu_times.append(time.process_time() - cpu)
            r.faults.append(_minor_faults() - minflt)
        print(f"[speed] round {i + 1}/{args.repeats} done ({time.time() - started:.0f} s)", flush=True)
    _fix_mmap_threshold(device)
    print(f"[speed] memory: one measured step per row ({time.time() - started:.0f} s)", flush=True)
    for r in rows:
        with PeakMemory(device) as pm:  # the hooks only count tensors: one step measures both
            r.saved = saved_activation_bytes(steps[r.name], param_ptrs)
        r.peak = pm.peak

    results = []
    for r in rows:
        results.append(
            {
                "name": r.name,
                "median_s": statistics.median(r.times),
                "times_s": r.times,
                "median_cpu_s": statistics.median(r.cpu_times),
                "cpu_times_s": r.cpu_times,
                "median_page_faults": statistics.median(r.faults),
                "trainable_params": sum(p.numel() for p in r.model.parameters() if p.requires_grad),
                "memory_mb": (base_bytes + r.owned_bytes + r.peak) / 2**20,
                "step_peak_increment_mb": r.peak / 2**20,
                "saved_activations_mb": r.saved / 2**20,
            }
        )
    by = {r["name"]: r for r in results}
    floor, peft = by["floor"], by["peft-lora"]

    print(f"\nTraining step, median of {args.repeats} (ratios measured in this process):")
    print(f"  {'row':<18} {'s/step':>10} {'vs floor':>10} {'vs PEFT':>10}")
    print("\n".join(_ratio_table(results, "median_s", floor["median_s"], peft["median_s"], ".3f")))
    if device.type == "cpu":
        print("Process CPU time per step, median (less sensitive to other jobs on the machine):")
        print(f"  {'row':<18} {'cpu s':>10} {'vs floor':>10} {'vs PEFT':>10}")
        print("\n".join(_ratio_table(results, "median_cpu_s", floor["median_cpu_s"], peft["median_cpu_s"], ".3f")))
        print("Minor page faults per step, median:")
        print(f"  {'row':<18} {'faults':>10} {'vs PEFT':>10}")
        for r in results:  # the floor can fault 0 times once the heap is warm: ratios to PEFT only
            print(
                f"  {r['name']:<18} {r['median_page_faults']:>10.0f} "
                f"{r['median_page_faults'] / max(peft['median_page_faults'], 1):>9.3f}x"
            )
    print("\nMemory: weights + owned optimiser state + measured step peak (MB), and saved activations (MB, exact):")
    print(f"  {'row':<18} {'peak MB':>10} {'vs floor':>10} {'vs PEFT':>10} {'saved act':>10} {'vs PEFT':>9}")
    for r in results:
        print(
            f"  {r['name']:<18} {r['memory_mb']:>10.0f} {r['memory_mb'] / floor['memory_mb']:>9.3f}x "
            f"{r['memory_mb'] / peft['memory_mb']:>9.3f}x {r['saved_activations_mb']:>10.1f} "
            f"{r['saved_activations_mb'] / max(peft['saved_activations_mb'], 1e-9):>8.3f}x"
        )

    inference = {}
    if not args.no_inference:
        inference = run_inference(base, rows, batch, args, device)

    targets = check_targets(by, inference, device.type)
    print("\nTargets (issue 18):")
    for t in targets:
        print(
            f"  [{'met' if t['met'] else 'MISSED'}] {t['what']}: {t['value']:.3f} (target <= {t['limit']:.3f})"
            + ("" if t["met"] else f", missed by {100 * (t['value'] / t['limit'] - 1):.1f}%")
        )
    wall = time.time() - started
    print(f"\n[speed] wall time {wall:.0f} s")
    if args.json:
        report = {
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "torch": torch.__version__,
            },
            "model": model_desc,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "training": results,
            "inference": inference,
            "targets": targets,
            "wall_s": wall,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"[speed] wrote {args.json}")
    return 0


@torch.no_grad()
def run_inference(base: nn.Module, rows: list[Row], batch: torch.Tensor, args, device: torch.device) -> dict:
    """Forward latency (no grad, eval): base model, unmerged adapters, and the merged LinChain models."""
    models = {"base": base.eval()}
    for r in rows:
        if r.name in ("peft-lora", "linchain-k3", "linchain-k3-bias"):
            models[r.name + " (unmerged)"] = r.model.eval()
    for name in ("linchain-k3", "linchain-k3-bias"):
        src = next((r for r in rows if r.name == name), None)
        if src is not None:
            merged = copy.deepcopy(src.model)
            # trained-looking adapters: random non-zero B so merging really changes the weights
            for n, p in merged.named_parameters():
                if "linchain_B" in n:
                    p.normal_(0, 0.02)
            models[name + " (merged)"] = merged.merge_and_unload().eval()
    times = {k: [] for k in models}
    names = list(models)
    # Forwards are cheap next to training steps: at least 15 rounds, the order rotated as in training,
    # and each model's ratio to the base taken within the round, then the median of those ratios
    # (on this shared CPU, identical architectures differed by up to 7% in medians of 7 fixed-order rounds).
    rounds = max(args.repeats, 15)
    print(f"[speed] inference: {len(names)} models x {rounds + 1} rounds", flush=True)
    for i in range(rounds + 1):
        for k in rotated(names, i):
            m = models[k]
            t = timed(lambda: (m(input_ids=batch), torch.cuda.synchronize() if device.type == "cuda" else None))
            if i:  # round 0 is warm-up
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: sorted(t / b for t, b in zip(times[k], times["base"])) for k in names}
    print(f"\nInference forward, {rounds} rounds (no grad, rotated order); ratio = median of per-round ratios to base:")
    print(f"  {'model':<30} {'median s':>9} {'vs base':>9} {'ratio IQR':>15}")
    out = {}
    for k in names:
        rs = ratios[k]
        q1, q3 = rs[len(rs) // 4], rs[(3 * len(rs)) // 4]
        print(f"  {k:<30} {med[k]:>9.4f} {statistics.median(rs):>8.3f}x {q1:>7.3f}-{q3:.3f}")
        out[k] = {"median_s": med[k], "vs_base": statistics.median(rs), "vs_base_iqr": [q1, q3], "times_s": times[k]}
    for r in rows:
        r.model.train()
    return out


def check_targets(by: dict, inference: dict, device_type: str = "cpu") -> list[dict]:
    """Issue 18's targets, each a ratio measured in this process (the CPU-time one on a CPU only)."""
    out = []
    floor, peft = by["floor"], by["peft-lora"]

    def add(what: str, value: float, limit: float) -> None:
        out.append(dict(what=what, value=value, limit=limit))

    if "linchain-k3" in by:
        k3 = by["linchain-k3"]
        add("linchain k=3 step time / PEFT LoRA", k3["median_s"] / peft["median_s"], 0.90)
        # overhead over the floor at most half of PEFT LoRA's
        add(
            "linchain k=3 overhead over floor / PEFT LoRA's",
            (k3["median_s"] - floor["median_s"]) / max(peft["median_s"] - floor["median_s"], 1e-12),
            0.50,
        )
        if device_type == "cpu" and k3.get("median_cpu_s", 0) > 0 and floor.get("median_cpu_s", 0) > 0:
            add("linchain k=3 CPU time / floor", k3["median_cpu_s"] / floor["median_cpu_s"], 1.10)
        add("linchain k=3 memory / PEFT LoRA", k3["memory_mb"] / peft["memory_mb"], 1.00)
    if "linchain-k3-compiled" in by and "peft-lora-compiled" in by:
        add(
            "compiled linchain k=3 / compiled PEFT LoRA",
            by["linchain-k3-compiled"]["median_s"] / by["peft-lora-compiled"]["median_s"],
            1.00,
        )
    for name in ("linchain-k3 (merged)", "linchain-k3-bias (merged)"):
        if name in inference:
            add(f"{name} inference / base", inference[name]["vs_base"], 1.01)
    for t in out:
        t["met"] = bool(t["value"] <= t["limit"])
    return out


if __name__ == "__main__":
    sys.exit(main())
