"""``linchain train``, top to bottom: data -> model -> accuracy before -> HF Trainer -> accuracy after -> outputs.

The engine is the Hugging Face Trainer (gradient accumulation, warm-up and schedule, bf16/fp16,
gradient checkpointing, DDP/FSDP/DeepSpeed through Accelerate); this module only wires it up and
adds what the Trainer lacks: a progress bar with loss and tokens/s, metrics.jsonl, Ctrl-C that
saves a checkpoint, resuming from the newest *complete* checkpoint, and the run's outputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_callback import ProgressCallback, TrainerState

from ..config import LinChainConfig
from ..layer import refuse_rank_above_layer
from ..progress import Progress
from ..data import Example, load_examples
from ..io import OutputExistsError, atomic_dir, atomic_write_json, atomic_write_text, is_nonempty_dir
from ..resolve import resolve_model_path, torch_dtype
from ..threads import set_threads
from ..quant import load_base_model
from .accuracy import mc_accuracy
from .args import DataArguments, LinChainTrainingArguments, ModelArguments
from .features import SequenceDataset, closed_options, default_val_set_size, split_examples
from .outputs import METRICS_FILE, PLOT_FILE, SUMMARY_FILE, MetricsJsonl, plot_loss_curve

__all__ = ["ADAPTER_DIR", "CONFIG_FILE", "MODEL_DIR", "RunResult", "find_complete_checkpoint", "run_training"]

logger = logging.getLogger("linchain.train")

ADAPTER_DIR = "adapter"  # adapter methods: adapter_config.json + adapter_model.safetensors + tokenizer
MODEL_DIR = "model"  # --method full: the whole model as safetensors + tokenizer
CONFIG_FILE = "train_config.yaml"  # every resolved argument; `linchain train --config` reads it back
TRAINER_STATE = "trainer_state.json"
#: what a run writes into its output_dir besides checkpoint-N folders
RUN_FILES = {ADAPTER_DIR, MODEL_DIR, CONFIG_FILE, METRICS_FILE, PLOT_FILE, SUMMARY_FILE, "summary.json", "runs"}


@dataclasses.dataclass
class RunResult:
    """What :func:`run_training` reports (also written to summary.txt and metrics.jsonl)."""

    output_dir: str
    global_step: int
    interrupted: bool
    train_loss: Optional[float] = None
    eval_loss: Optional[float] = None
    accuracy_before: Optional[float] = None
    accuracy_after: Optional[float] = None
    n_heldout: int = 0
    trainable_params: int = 0
    train_s: float = 0.0  #: the training loop alone (steps, periodic evaluation, checkpoints)
    wall_s: float = 0.0  #: the whole run: loading, accuracy before and after, training, outputs


def _say(message: str) -> None:
    print(f"linchain train: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Trainer additions
# --------------------------------------------------------------------------------------------
class LinChainTrainer(Trainer):
    """The HF Trainer, logging tokens/s over each logging interval besides its own metrics."""

    _last_tokens: Optional[tuple[float, int]] = None

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        now, seen = time.time(), int(self.state.num_input_tokens_seen or 0)
        if "loss" in logs and self._last_tokens is not None and now > self._last_tokens[0]:
            logs["tokens_per_second"] = round((seen - self._last_tokens[1]) / (now - self._last_tokens[0]), 1)
        if "loss" in logs or self._last_tokens is None:
            self._last_tokens = (now, seen)
        super().log(logs, start_time)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss).all()):
            raise _diverged(self.args.output_dir, self.state.global_step + 1, f"the training loss is {loss.item()}")
        return loss


class TrainingDiverged(ValueError):
    """A non-finite loss or weight: the run stops at once; the message names the last good checkpoint."""


def _diverged(output_dir: str, step: int, what: str) -> TrainingDiverged:
    good = find_complete_checkpoint(output_dir)
    keep = f"the last good checkpoint is {good} (--resume continues from it)" if good else "no checkpoint was saved yet"
    return TrainingDiverged(f"step {step}: {what}: training diverged and was stopped, no adapter written; {keep}. "
                            "Lower --learning_rate, or keep --max_grad_norm > 0")


class StopOnNonFinite(TrainerCallback):
    """After every optimizer step: the trainable weights must be finite (a NaN/inf gradient
    reaches them through the step), so a diverged run never saves a checkpoint or an adapter."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        # one reduction and one host sync per step; the culprit is looked up only when there is one
        if not bool(torch.stack([torch.isfinite(p).all() for _, p in trainable]).all()):
            name = next(name for name, p in trainable if not bool(torch.isfinite(p).all()))
            raise _diverged(args.output_dir, state.global_step, f"{name} holds NaN/inf after the optimizer step")
        return control


class LossProgress(ProgressCallback):
    """HF's progress bar, with the latest loss and tokens/s shown on the bar itself; validation
    loss as one short line above it. (HF's own bar prints every log dict, which interleaves with
    the bar; every log is in metrics.jsonl.)"""

    def on_train_begin(self, args, state, control, **kwargs):
        # as HF's, with bars that write plain lines to a log (linchain.progress)
        if state.is_world_process_zero:
            self.training_bar = Progress(total=state.max_steps, dynamic_ncols=True)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and eval_dataloader is not None and hasattr(eval_dataloader, "__len__"):
            if self.prediction_bar is None:
                self.prediction_bar = Progress(total=len(eval_dataloader), leave=self.training_bar is None,
                                               dynamic_ncols=True)
            self.prediction_bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        if "loss" in logs:
            postfix = {"loss": f"{logs['loss']:.4f}"}
            if "tokens_per_second" in logs:
                postfix["tok/s"] = f"{logs['tokens_per_second']:.0f}"
            self.training_bar.set_postfix(postfix, refresh=False)
        if "eval_loss" in logs:
            self.training_bar.write(f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}")


class StopOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the current optimizer step, save a checkpoint, stop. Second: abort now.

    Stopping at a step boundary (not mid-accumulation) makes the checkpoint an exact resume point.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopOnInterrupt":
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _say("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again to abort without saving)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def _finished_checkpoint(checkpoint: Path, max_steps: int) -> bool:
    """Whether ``checkpoint`` already holds the run's last step (``max_steps`` > 0)."""
    return max_steps > 0 and json.loads((checkpoint / TRAINER_STATE).read_text()).get("global_step", 0) >= max_steps


def find_complete_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The newest ``checkpoint-N`` whose trainer_state.json exists and parses.

    The Trainer writes trainer_state.json last, so a checkpoint cut short by a crash or kill has
    none (or a truncated one) and is skipped: resuming never starts from a half-written folder.
    """
    candidates = []
    for path in Path(output_dir).glob("checkpoint-*"):
        try:
            step = int(path.name.split("-", 1)[1])
            json.loads((path / TRAINER_STATE).read_text())
        except (ValueError, OSError):
            continue
        candidates.append((step, path))
    return max(candidates)[1] if candidates else None


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, to start in a folder that holds something: a previous run needs
    ``--resume`` (continue) or ``--overwrite`` (start afresh); other files need another folder."""
    if resume:
        if find_complete_checkpoint(out) is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint-N folder in {out}; drop --resume to start a new run")
        return
    if overwrite or not is_nonempty_dir(out):
        return
    ours = [p.name for p in out.iterdir() if p.name.startswith("checkpoint-") or p.name in RUN_FILES]
    if ours:
        raise OutputExistsError(f"--output_dir {out} holds a previous run ({', '.join(sorted(ours)[:4])}); pass --resume to "
                                "continue it, --overwrite to start afresh, or choose another --output_dir")
    raise OutputExistsError(f"--output_dir {out} already holds other files; choose an empty or new folder "
                            "(or pass --overwrite: the run's own files are written beside them)")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def build_model(model_args: ModelArguments, train_args: LinChainTrainingArguments, path: Optional[str] = None):
    """Base model + tokenizer, wrapped for the chosen method. Returns (model, tokenizer, base_path).
    ``path``: the already resolved model folder or hub id (default: resolved here)."""
    path = path or resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # the collator pads labels with -100, so this is never trained on
    tokenizer.padding_side = "right"
    dtype = torch_dtype(model_args.torch_dtype)
    model = load_base_model(path, dtype, model_args, train_args.gradient_checkpointing)  # bitsandbytes-quantized on request
    if model_args.method == "full":
        return model, tokenizer, path
    if train_args.gradient_checkpointing:
        # The frozen embeddings output no grad; checkpointed blocks need an input that requires one.
        model.enable_input_require_grads()
    from peft import LoraConfig, get_peft_model

    targets = model_args.target_list()
    if model_args.method == "peft-lora":
        config = LoraConfig(
            r=model_args.r, lora_alpha=model_args.alpha, lora_dropout=model_args.adapter_dropout,
            target_modules=targets, task_type="CAUSAL_LM",
        )
    else:
        config = LinChainConfig(
            r=model_args.r, alpha=model_args.alpha, num_mixers=model_args.chain_length, mixer_bias=model_args.mixer_bias,
            mixer_init=model_args.mixer_init, dropout=model_args.adapter_dropout, target_modules=targets, task_type="CAUSAL_LM",
        )
    with refuse_rank_above_layer():  # --r larger than a target layer: an error here, before any allocation
        model = get_peft_model(model, config)
    if model_args.freeze_mixers:
        # the control of the mixer ablation: the chain keeps its initial (random) mixers, A and B train
        for name, param in model.named_parameters():
            if ".linchain_mixers." in name:
                param.requires_grad_(False)
    return model, tokenizer, path


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def load_data(data_args: DataArguments, seed: int) -> list[Example]:
    """All ``--data`` specs concatenated (the split shuffles them together, which mixes them)."""
    examples: list[Example] = []
    for spec in data_args.data:
        got = load_examples(spec, skip_malformed=data_args.skip_malformed, seed=seed, split=data_args.data_split, columns=data_args.column_map())
        _say(f"{spec}: {len(got)} rows")
        examples += got
    return examples


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: LinChainTrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> RunResult:
    """Fine-tune as configured and write the outputs to ``args.output_dir``."""
    started = time.time()
    out = Path(args.output_dir)
    main_process = args.process_index == 0
    check_output_dir(out, args.resume, args.overwrite)
    set_threads(args.num_threads, "linchain train")
    set_seed(args.seed)

    base_path = resolve_model_path(model_args.model_name_or_path)  # a wrong model name fails now, not after the data loads
    # 1. Data: load, split deterministically by --seed, tokenize.
    examples = load_data(data_args, args.seed)
    val_size = data_args.val_set_size
    if val_size is None:
        val_size = default_val_set_size(len(examples))
        _say(f"--val_set_size not given: holding out {val_size} of {len(examples)} rows (20%, at most 120)")
    train_examples, val_examples = split_examples(examples, val_size, args.seed)
    if len(val_examples) < val_size:
        _say(f"{val_size - len(val_examples)} validation rows repeat a training prompt; moved to training")
    if val_size and not val_examples:
        raise ValueError(f"--data: all {val_size} held-out rows repeat a training prompt (duplicated rows), so nothing is "
                         "held out; deduplicate the data, or pass --val_set_size 0 --eval_strategy no")
    if not val_examples and args.eval_strategy != "no":
        raise ValueError(f"--eval_strategy={args.eval_strategy.value} needs held-out rows; pass --eval_strategy no with --val_set_size 0")
    if data_args.max_train_samples:
        train_examples = train_examples[: data_args.max_train_samples]
    _say(f"{len(train_examples)} training rows, {len(val_examples)} held-out rows")

    # 2. Model and tokenizer, wrapped for the method (adapters start at the base model: B = 0).
    model, tokenizer, base_path = build_model(model_args, args, base_path)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _say(f"method {model_args.method}" + (f" (k={model_args.chain_length})" if model_args.chain_length is not None else "") + f": {trainable:,} trainable parameters")
    train_set = SequenceDataset(tokenizer, train_examples, data_args.cutoff_len, data_args.train_on_inputs, data_args.faithful_prompt)
    if train_set.answer_cut:
        first = train_set.answer_cut[0]
        message = (f"{len(train_set.answer_cut)} of {len(train_set)} training rows have no answer token within "
                   f"--cutoff_len={data_args.cutoff_len} (e.g. {first.source} row {first.row})")
        if len(train_set.answer_cut) == len(train_set) and not data_args.train_on_inputs:
            raise ValueError(f"{message}: nothing would be trained; raise --cutoff_len")
        _say(f"{message}: they train {'on their prompt only' if data_args.train_on_inputs else 'nothing'}")
    val_set = SequenceDataset(tokenizer, val_examples, data_args.cutoff_len, data_args.train_on_inputs, data_args.faithful_prompt) if val_examples else None

    # 3. Held-out accuracy of the starting model (multiple choice by log-likelihood).
    options = closed_options(examples, data_args.max_options)
    has_options = all(e.options for e in val_examples) or options is not None
    if data_args.eval_accuracy == "yes" and not has_options:
        raise ValueError(f"DataArguments.eval_accuracy='yes' but the data has no options and more than {data_args.max_options} distinct answers")
    measure = bool(val_examples) and data_args.eval_accuracy != "no" and has_options and main_process
    result = RunResult(output_dir=str(out), global_step=0, interrupted=False, n_heldout=len(val_examples), trainable_params=trainable)
    # (Also when resuming: the checkpoint is loaded later, inside trainer.train.)
    if measure:
        result.accuracy_before = mc_accuracy(model, tokenizer, val_examples, options, data_args.faithful_prompt,
                                             progress="accuracy before" if not args.disable_tqdm else None)
        _say(f"held-out accuracy before training: {result.accuracy_before:.1%} ({len(val_examples)} rows)")

    # 4. Train with the HF Trainer.
    resume_from = find_complete_checkpoint(out) if args.resume else None
    if args.resume:
        _say(f"resuming from {resume_from}")
    elif main_process and args.overwrite:
        stale = sorted(out.glob("checkpoint-*"))
        if stale:
            _say(f"--overwrite: removing {len(stale)} old checkpoint folder(s) in {out}")
            for path in stale:
                shutil.rmtree(path)
        (out / METRICS_FILE).unlink(missing_ok=True)

    interrupt = StopOnInterrupt()
    trainer = LinChainTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        # Pads input_ids with the pad token and labels with -100 (no loss on padding).
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=None),
        callbacks=[MetricsJsonl(out), StopOnNonFinite(), interrupt, *callbacks],
    )
    trainer.remove_callback(ProgressCallback)
    if not args.disable_tqdm:
        trainer.add_callback(LossProgress())
    finished = resume_from is not None and _finished_checkpoint(resume_from, args.max_steps)
    if finished:
        # HF's loop trains one step past max_steps when resumed from the final checkpoint: load it instead
        _say(f"{resume_from.name} is already at --max_steps={args.max_steps}: nothing left to train, writing the outputs")
        trainer._load_from_checkpoint(str(resume_from))
        trainer.state = TrainerState.load_from_json(str(resume_from / TRAINER_STATE))
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        result.train_loss = sum(losses) / len(losses) if losses else None  # the mean of the logged losses
    else:
        loop_started = time.time()
        with interrupt:
            # HF checkpoints hold optimizer/scheduler/RNG state written with torch.save; the Trainer
            # reloads them with torch.load(weights_only=True). We only ever load our own checkpoints.
            result.train_loss = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None).training_loss
        result.train_s = round(time.time() - loop_started, 1)
    result.global_step = trainer.state.global_step
    if interrupt.requested:
        result.interrupted = True
        _say(f"stopped at step {result.global_step}; checkpoint saved. Continue with the same command plus --resume")
        return result
    if val_set is not None:
        # the periodic evaluation may have just run at the last step: reuse it rather than evaluate twice
        last = [log for log in trainer.state.log_history if "eval_loss" in log and log.get("step") == trainer.state.global_step]
        result.eval_loss = last[-1]["eval_loss"] if last else trainer.evaluate()["eval_loss"]

    # 5. Held-out accuracy after training, then the outputs (main process only).
    if not main_process:
        return result
    if measure:
        result.accuracy_after = mc_accuracy(model, tokenizer, val_examples, options, data_args.faithful_prompt,
                                            progress="accuracy after" if not args.disable_tqdm else None)
        _say(f"held-out accuracy after training:  {result.accuracy_after:.1%} ({len(val_examples)} rows)")
    result.wall_s = round(time.time() - started, 1)
    write_outputs(trainer.model, tokenizer, model_args, data_args, args, result, base_path)
    return result


def write_outputs(model, tokenizer, model_args, data_args, args, result: RunResult, base_path: str) -> None:
    """Adapter (or full model), resolved config, metrics record, loss-curve PNG, one-line summary."""
    out = Path(args.output_dir)
    if model_args.method == "full":
        with atomic_dir(out / MODEL_DIR, overwrite=True) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    else:
        with atomic_dir(out / ADAPTER_DIR, overwrite=True) as tmp:
            model.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors
            tokenizer.save_pretrained(tmp)
    config = {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args), **_init_fields(args)}
    config["resolved_model_path"] = base_path
    atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(config, sort_keys=True))
    summary = dataclasses.asdict(result)
    MetricsJsonl(out).append({"summary": summary, "step": result.global_step})
    atomic_write_json(out / "summary.json", summary)
    plot_loss_curve(out / METRICS_FILE, out / PLOT_FILE, title=f"{model_args.method} on {', '.join(data_args.data)}")
    line = (
        f"{model_args.method}"
        + (f" k={model_args.chain_length} r={model_args.r}" if model_args.chain_length is not None else "")
        + f" | {result.global_step} steps in {result.train_s:.0f} s (the whole run {result.wall_s:.0f} s)"
        + (f" | train loss {result.train_loss:.4f}" if result.train_loss is not None else "")
        + (f" | val loss {result.eval_loss:.4f}" if result.eval_loss is not None else "")
        + (
            f" | held-out accuracy {result.accuracy_before:.1%} -> {result.accuracy_after:.1%} ({result.n_heldout} rows)"
            if result.accuracy_before is not None and result.accuracy_after is not None
            else ""
        )
        + f" | {result.trainable_params:,} trainable params | {out}"
    )
    atomic_write_text(out / SUMMARY_FILE, line + "\n")
    print(line, flush=True)


def _init_fields(args: LinChainTrainingArguments) -> dict[str, Any]:
    """The TrainingArguments a user can pass (init fields), as plain YAML-able values."""
    values = args.to_dict()
    names = {f.name for f in dataclasses.fields(args) if f.init and not f.name.startswith("_")}
    return {k: v for k, v in values.items() if k in names and v is not None and k not in ("hub_token",)}
