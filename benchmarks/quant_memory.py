"""QLinChain: peak memory of LinChain training on an unquantized vs an 8-bit vs a 4-bit base, and what
requantization costs when merging.

    python benchmarks/quant_memory.py [--model smollm2|smollm2-random|tiny] [--steps 3] [--json FILE]
    python benchmarks/quant_memory.py --section requant          # only the (fast) requantization table

Memory: each variant runs in its own subprocess (a fresh process, so its peak RSS is its own):
load the base (fp32, or bitsandbytes 8-bit / 4-bit nf4 with double quantization, as
``linchain train --load_in_8bit / --load_in_4bit`` does), add a LinChain adapter (k=3, r=16, the
five reference targets; or PEFT LoRA r=16 on the quantized bases, the QLoRA reference), then a few
AdamW steps on random tokens. Reported per variant: bytes
of the model's weights (parameters and buffers as stored, plus 4-bit block scales), RSS after
loading, peak RSS during training (VmHWM reset after loading), median step time; and each as a
ratio to the unquantized run. RSS includes the Python process itself (torch, transformers,
bitsandbytes: ~the ``process`` column, measured before loading).

Requantization: on a tiny Llama (the test model) with an adapter whose update is as large as the
base weights, how far merging moves the logits from the unmerged adapted model, and how far
merge + unmerge moves the base weights, in units of the base's own quantization error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import PeakMemory, _proc_status_kb, _trim  # noqa: E402  (the same RSS/VmHWM readings as the speed benchmark)

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
#: base precision, with a LinChain adapter; "+lora": PEFT LoRA (r=16) on the same base instead, the QLoRA reference
VARIANTS = ("fp32", "8bit", "4bit", "8bit+lora", "4bit+lora")


def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)


def weight_bytes(model) -> int:
    """Bytes the model's weights occupy as stored: parameters and buffers, plus 4-bit quantization state."""
    total = sum(
        t.untyped_storage().nbytes() for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    )
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:  # block scales (and, with double quantization, their own scales)
            total += sum(
                t.numel() * t.element_size()
                for t in (state.absmax, getattr(state.state2, "absmax", None))
                if t is not None
            )
    return total


def _model_path(name: str, folder: Path) -> tuple[str, str]:
    """A folder with the base model in fp32 safetensors, and a description."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if name == "smollm2":
        from linchain.offline import smollm2_path

        return str(smollm2_path()), "SmolLM2-135M-Instruct (offline weights)"
    if name == "smollm2-random":
        shape = dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            tie_word_embeddings=True,
        )
    else:  # tiny
        shape = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
        )
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**shape)).save_pretrained(folder)
    return str(folder), f"random Llama, {name} shapes"


# ------------------------------------------------------------------------------------- one variant (child process)
def run_variant(args) -> dict:
    _quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from linchain import LinChainConfig
    from linchain.train.args import ModelArguments
    from linchain.tuner.quant import load_base_model

    process_kb = _proc_status_kb("VmRSS")
    bits = args.variant.split("+")[0]
    model_args = ModelArguments(
        model_name_or_path=args.path,
        load_in_8bit=bits == "8bit",
        load_in_4bit=bits == "4bit",
        target_modules=",".join(TARGETS),
    )
    model = load_base_model(args.path, torch.float32, model_args, gradient_checkpointing=args.gradient_checkpointing)
    with torch.no_grad():
        # from_pretrained leaves float weights mapped from the safetensors file, resident only once touched,
        # and the quantized runs keep the whole file's pages resident through that mapping (read while
        # quantizing). Copy the float weights to memory so every run holds its weights, and only those.
        for t in [*model.parameters(), *model.buffers()]:
            if t.dtype.is_floating_point:
                t.data = t.data.clone()
    _trim()
    if (
        args.gradient_checkpointing
    ):  # load_base_model does this for the quantized bases (prepare_model_for_kbit_training)
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    base_bytes = weight_bytes(model)
    if args.variant.endswith("+lora"):
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    else:
        model = get_peft_model(model, LinChainConfig(r=16, alpha=32, num_mixers=3, target_modules=TARGETS))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    tokens = torch.randint(
        0, model.config.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    model.train()
    times = []
    with PeakMemory(torch.device("cpu")) as peak:  # VmHWM reset after loading: the training peak only
        for _ in range(args.steps + 1):  # the first step (allocator warm-up, optimiser state) is not timed
            start = time.perf_counter()
            model(tokens, labels=tokens).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
    return {
        "variant": args.variant,
        "weight_mb": base_bytes / 2**20,
        "process_mb": process_kb / 1024,
        "rss_loaded_mb": peak.before / 2**20,
        "peak_train_mb": (peak.before + peak.peak) / 2**20,
        "step_s": statistics.median(times[1:]),
        "adapter_dtype": str(trainable[0].dtype),
    }


def memory_section(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path, description = _model_path(args.model, Path(tmp))
        print(
            f"Model: {description}; LinChain k=3 r=16 on {TARGETS}; batch {args.batch} x {args.seq_len} tokens, "
            f"{args.steps} timed AdamW steps, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
            "one fresh process per variant\n"
        )
        rows = []
        for variant in VARIANTS:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--path",
                path,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--seq-len",
                str(args.seq_len),
                "--threads",
                str(args.threads or 0),
                "--gradient-checkpointing",
                str(args.gradient_checkpointing),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"[quant_memory] {variant} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    fp = rows[0]
    print(
        f"{'base':<9} {'weights MB':>11} {'process MB':>11} {'RSS loaded':>11} {'peak train':>11} {'step s':>8} "
        f"{'weights':>8} {'loaded':>8} {'peak':>8} {'peak-process':>13} {'step':>6}"
    )
    for r in rows:
        net = (r["peak_train_mb"] - r["process_mb"]) / (fp["peak_train_mb"] - fp["process_mb"])
        print(
            f"{r['variant']:<9} {r['weight_mb']:>11.1f} {r['process_mb']:>11.1f} {r['rss_loaded_mb']:>11.1f} "
            f"{r['peak_train_mb']:>11.1f} {r['step_s']:>8.3f} {r['weight_mb'] / fp['weight_mb']:>7.2f}x "
            f"{r['rss_loaded_mb'] / fp['rss_loaded_mb']:>7.2f}x {r['peak_train_mb'] / fp['peak_train_mb']:>7.2f}x "
            f"{net:>12.2f}x {r['step_s'] / fp['step_s']:>5.2f}x"
        )
    print(
        f"(ratios against fp32 with LinChain; adapters kept in {rows[-1]['adapter_dtype']}; 'peak-process' subtracts each run's "
        "RSS before loading; +lora: PEFT LoRA r=16 instead of LinChain on the same base)"
    )
    return rows


# ------------------------------------------------------------------------------------- requantization
def requant_section(args) -> list[dict]:
    _quiet()
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from linchain import LinChainConfig, LinChainLayer
    from linchain.tuner.quant import dequantized_weight

    settings = {
        "8bit": dict(load_in_8bit=True),
        "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
        "nf4-dq": dict(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        ),
        "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
    }
    tokens = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        LlamaForCausalLM(
            LlamaConfig(
                vocab_size=97,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            )
        ).save_pretrained(tmp)
        fp_logits = AutoModelForCausalLM.from_pretrained(tmp).eval()(tokens).logits
        print(
            "\nRequantization on a tiny Llama (64 wide, 2 layers), LinChain k=3 r=4 on 5 targets, adapter update "
            "about as large as the base weights;\nq = max |logits(quantized base) - logits(fp32 base)|, the base's own "
            "quantization error:\n"
        )
        print(
            f"{'base':<7} {'q':>8} {'adapter':>9} {'merged':>9} {'unmerged':>9} {'max|dW|/max|W0|':>16} {'mean|dW|/mean|W0|':>18}"
        )
        for kind, kw in settings.items():
            model = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=BitsAndBytesConfig(**kw)).eval()
            q = (model(tokens).logits - fp_logits).abs().max().item()
            model = get_peft_model(model, LinChainConfig(r=4, alpha=8, num_mixers=3, target_modules=TARGETS))
            g = torch.Generator().manual_seed(5)
            for name, p in model.named_parameters():
                if "linchain_mixers" in name:
                    p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
                elif "linchain_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.07)
            layers = [m for m in model.modules() if isinstance(m, LinChainLayer)]
            with model.disable_adapter():
                base = model(tokens).logits
            originals = [dequantized_weight(m.base_layer).float().clone() for m in layers]
            adapted = model(tokens).logits
            model.merge_adapter()
            merged = model(tokens).logits
            model.unmerge_adapter()
            unmerged = model(tokens).logits
            moved = [(dequantized_weight(m.base_layer).float() - w).abs() for m, w in zip(layers, originals)]
            drift_max = max((d.max() / w.abs().max()).item() for d, w in zip(moved, originals))
            drift_mean = sum(d.sum().item() for d in moved) / sum(w.abs().sum().item() for w in originals)
            row = {
                "base": kind,
                "q": q,
                "adapter_effect_q": (adapted - base).abs().max().item() / q,
                "merged_q": (merged - adapted).abs().max().item() / q,
                "unmerged_q": (unmerged - adapted).abs().max().item() / q,
                "weight_drift_max": drift_max,
                "weight_drift_mean": drift_mean,
            }
            rows.append(row)
            print(
                f"{kind:<7} {q:>8.4f} {row['adapter_effect_q']:>8.1f}q {row['merged_q']:>8.2f}q {row['unmerged_q']:>8.2f}q "
                f"{drift_max:>16.3f} {drift_mean:>18.3f}"
            )
    print(
        "(adapter / merged / unmerged: max |logits| difference to the base / to the unmerged adapted model, in units of q; "
        "dW: the base weights after merge + unmerge minus the originals, over all adapted layers. Eval mode, as a user "
        "merges after evaluating: on AVX512-BF16 CPUs this includes bitsandbytes' bf16 rounding of the 4-bit scales)"
    )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "smollm2-random", "tiny"])
    parser.add_argument("--section", default="all", choices=["all", "memory", "requant"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument(
        "--gradient-checkpointing",
        type=int,
        default=1,
        choices=[0, 1],
        help="1 (default, the QLoRA recipe): every run checkpoints activations, so weights are a visible share of the peak",
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.variant = args.child
        print(json.dumps(run_variant(args)))
        return 0
    import bitsandbytes

    print(
        f"torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    report = {
        "memory": memory_section(args) if args.section in ("all", "memory") else None,
        "requant": requant_section(args) if args.section in ("all", "requant") else None,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
