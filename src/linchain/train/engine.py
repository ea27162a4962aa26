"""``linchain train``, top to bottom: data -> model -> accuracy before -> HF Trainer -> accuracy after -> outputs.

The engine is the Hugging Face Trainer (gradient accumulation, warm-up and schedule, bf16/fp16,
gradient checkpointing, DDP/FSDP/DeepSpeed through Accelerate); this module only wires it up and
adds what the Trainer lacks: a progress bar with loss and tokens/s, metrics.jsonl, Ctrl-C that
saves a checkpoint, resuming from the newest *intact* checkpoint with the run's own settings, and
the run's outputs, written through the one write path (:class:`linchain.outputs.OutputFolder`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
import math
import signal
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import yaml
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ProgressCallback, TrainerState

from .. import runs
from ..data import Example, load_examples
from ..io import atomic_dir, atomic_write_json, atomic_write_text
from ..outputs import OutputFolder
from ..progress import Progress
from ..resolve import resolve_model_path, torch_dtype
from ..threads import set_threads
from ..tuner.quant import load_base_model
from .accuracy import mc_accuracy
from .args import DataArguments, LinChainTrainingArguments, ModelArguments, warmup_covers_every_step
from .features import SequenceDataset, closed_options, default_val_set_size, split_examples
from .outputs import METRICS_FILE, PLOT_FILE, SUMMARY_FILE, MetricsJsonl, plot_loss_curve

__all__ = [
    "ADAPTER_DIR",
    "CONFIG_FILE",
    "MODEL_DIR",
    "RunResult",
    "SETTINGS_FILE",
    "checkpoint_problem",
    "find_complete_checkpoint",
    "make_trainer",
    "refuse_changed_settings",
    "resume_point",
    "run_config",
    "run_training",
    "stop_cleanly",
    "resumed_by",
    "train_or_finish",
]

logger = logging.getLogger("linchain.train")

# the run folder's layout: linchain/runs.py
ADAPTER_DIR, MODEL_DIR, CONFIG_FILE = runs.ADAPTER, runs.MODEL, runs.CONFIG
TRAINER_STATE = "trainer_state.json"
LOSS_FILE = "linchain_loss.json"  # in each checkpoint: the run's loss sum so far (LinChainTrainer._save_checkpoint)
#: in each checkpoint of a run that records its settings there (seq_cls: --resume compares against it)
SETTINGS_FILE = "linchain_settings.json"
#: how a run was launched, never what it is: not in train_config.yaml (a saved config reused with
#: --config must not wipe or resume a folder; logging_dir is derived from the output folder, so a
#: saved one would send a new run's logs into the old run's folder). Any ``*_token`` field neither.
LAUNCH_FIELDS = frozenset({"overwrite", "resume", "resume_from_checkpoint", "overwrite_output_dir", "logging_dir"})
#: recorded settings that change speed, bookkeeping or what is measured, not what the run trains:
#: --resume may change them (every other recorded setting must stay as the run started)
NOT_DEFINING = frozenset(
    {
        "output_dir",
        "resolved_model_path",
        "num_threads",
        "disable_tqdm",
        "report_to",
        "run_name",
        "use_cpu",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_nan_inf_filter",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "eval_steps",
        "eval_strategy",
        "eval_delay",
        "eval_accumulation_steps",
        "per_device_eval_batch_size",
        "eval_accuracy",
        "max_options",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "include_num_input_tokens_seen",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "skip_memory_metrics",
        # the process and the machine (a run may resume under another launcher: local_rank is -1 alone, 0..N under torchrun)
        "local_rank",
        "ddp_timeout",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "save_on_each_node",
        "debug",
        "project",
        "enable_jit_checkpoint",
        # evaluation only
        "do_train",
        "do_eval",
        "do_predict",
        "eval_on_start",
        "eval_do_concat_batches",
        "eval_use_gather_object",
        "batch_eval_metrics",
        "include_for_metrics",
        "prediction_loss_only",
        "bf16_full_eval",
        "fp16_full_eval",
        "load_best_model_at_end",
        "metric_for_best_model",
        "greater_is_better",
    }
)


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
    #: the training loop alone (steps, periodic evaluation, checkpoints), over every call of a resumed run
    train_s: float = 0.0
    #: the whole run: this call's loading, accuracy before and after, training and outputs, plus the training
    #: loop of the calls before a resume (their own start-up is not recorded)
    wall_s: float = 0.0
    #: the training loop's seconds in the calls before a resume (0 for a run in one call)
    train_s_before: float = 0.0


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
        if "train_loss" in logs and "loss" not in logs and self._initial_global_step:
            # the Trainer's end-of-training row of a resumed run: its train_loss covers the steps since the
            # resume only (break-it check: metrics.jsonl said 0.285 where the summary said 1.094)
            logs["train_loss_since_resume"] = logs["train_loss"]
            logs["resumed_from_step"] = self._initial_global_step
            logs["train_loss"] = (
                self.whole_run_loss(logs["train_loss"])
                if self.loss_before[1]
                else _whole_run_loss(self.state.log_history)  # a checkpoint from before linchain_loss.json
            )
        super().log(logs, start_time)

    #: (sum of the per-step losses, steps) of the run up to the checkpoint it resumed from
    loss_before: tuple[float, int] = (0.0, 0)
    #: seconds of training loop up to the checkpoint it resumed from, and when this call's loop started
    train_s_before: float = 0.0
    loop_started: Optional[float] = None
    #: the run's defining settings, written into each checkpoint when given (a run without train_config.yaml)
    settings: Optional[dict[str, Any]] = None

    def _save_checkpoint(self, model, trial) -> None:
        """Also record, in checkpoint-N/linchain_loss.json, the sum of every step's loss so far: a resumed
        Trainer knows only the steps it trained itself, and logged losses (every --logging_steps) miss the
        steps between the last log and a kill, so the whole run's mean could not be rebuilt from them."""
        super()._save_checkpoint(model, trial)
        if self.args.process_index == 0:
            trained = self._total_loss_scalar + float(self._tr_loss.item())  # this process's steps, logged or not
            folder = Path(self._get_output_dir(trial=trial)) / f"{runs.CHECKPOINT}{self.state.global_step}"
            # and the training loop's seconds so far: a resumed run's time is the sum over its calls
            so_far = self.train_s_before + (time.time() - self.loop_started if self.loop_started else 0.0)
            atomic_write_json(
                folder / LOSS_FILE,
                {
                    "loss_sum": self.loss_before[0] + trained,
                    "steps": self.state.global_step,
                    "train_s": round(so_far, 1),
                },
            )
            if self.settings is not None:
                atomic_write_json(folder / SETTINGS_FILE, self.settings)

    def whole_run_loss(self, trained_loss: Optional[float]) -> Optional[float]:
        """The mean loss over every step of the run: the resumed checkpoint's sum plus this process's."""
        steps_here = self.state.global_step - self._initial_global_step if trained_loss is not None else 0
        total = self.loss_before[0] + (trained_loss or 0.0) * steps_here
        steps = self.loss_before[1] + steps_here
        return total / steps if steps else None

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss).all()):
            raise _diverged(self.args, self.state.global_step + 1, f"the training loss is {loss.item()}")
        return loss


class TrainingDiverged(ValueError):
    """A non-finite loss or weight: the run stops at once; the message names the last good checkpoint."""


def _diverged(args: TrainingArguments, step: int, what: str) -> TrainingDiverged:
    good = find_complete_checkpoint(args.output_dir)
    # --resume continues the same run (its rate included), so the way out is a new run at a lower rate
    keep = f"the newest checkpoint is {good}" if good else "no checkpoint was saved yet"
    # seq_cls runs plain TrainingArguments (clipped at 1.0) and has no --max_grad_norm flag to name
    clip = ", or keep --max_grad_norm > 0" if isinstance(args, LinChainTrainingArguments) else ""
    return TrainingDiverged(
        f"step {step}: {what}: training diverged and was stopped, no adapter written; {keep}. Start a new run "
        f"(--overwrite replaces this one) with a lower --learning_rate{clip}"
    )


class MarkOnSave(TrainerCallback):
    """Rewrite the output folder's marker after every checkpoint, listing what the run has written so
    far: a run killed later leaves a marker that knows all but its last few files (OutputFolder takes the
    files newer than the marker as the killed run's)."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def on_save(self, args, state, control, **kwargs):
        if args.process_index == 0 and self.folder is not None and self.folder.held:
            self.folder.mark("writing")


class StopOnNonFinite(TrainerCallback):
    """After every optimizer step: the trainable weights must be finite (a NaN/inf gradient
    reaches them through the step), so a diverged run never saves a checkpoint or an adapter."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        # one reduction and one host sync per step; the culprit is looked up only when there is one
        if not bool(torch.stack([torch.isfinite(p).all() for _, p in trainable]).all()):
            name = next(name for name, p in trainable if not bool(torch.isfinite(p).all()))
            raise _diverged(args, state.global_step, f"{name} holds NaN/inf after the optimizer step")
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
                self.prediction_bar = Progress(
                    total=len(eval_dataloader), leave=self.training_bar is None, dynamic_ncols=True
                )
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


def _safetensors_problem(path: Path) -> Optional[str]:
    """Why a .safetensors file cannot load: its header names where every tensor ends, so a file
    cut short (a kill while saving) is shorter than the header says."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError, AttributeError):
        return f"{path.name} is not a readable safetensors file"
    if path.stat().st_size != 8 + size + end:
        return f"{path.name} is truncated ({path.stat().st_size} of {8 + size + end} bytes)"
    return None


def _missing_state(checkpoint: Path) -> Optional[str]:
    """The training state a resumed run needs that the checkpoint lacks (named), or None: the optimizer,
    the schedule, the random-number state (one file per process) and the weights. The Trainer resumes
    without any of the first three, silently, into another run."""
    needs = [
        ("optimizer.pt", ["optimizer.pt", "optimizer.bin"]),
        ("scheduler.pt", ["scheduler.pt"]),
        ("rng_state.pth", [p.name for p in checkpoint.glob("rng_state*.pth")]),
    ]
    needs.append(
        (
            "the weights (adapter_model.safetensors or model.safetensors)",
            [p.name for p in checkpoint.glob("*.safetensors")],
        )
    )
    for what, names in needs:
        if not any((checkpoint / name).is_file() for name in names):
            return what
    return None


def checkpoint_problem(checkpoint: Path) -> Optional[str]:
    """Why ``checkpoint`` cannot be resumed from, or None when it is intact.

    The Trainer writes trainer_state.json last, so a checkpoint cut short by a crash or kill has
    none; a disk that filled up or a copy cut short leaves a truncated file elsewhere. Each file is
    checked as cheaply as its format allows: JSON parses, a safetensors file is as long as its header
    says, a torch file (optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin) is a whole zip.
    """
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE} (cut short while saving)"
    except (OSError, ValueError):
        return f"{TRAINER_STATE} does not parse"
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("global_step"), int)
        or not isinstance(state.get("log_history", []), list)
    ):
        return f"{TRAINER_STATE} is not a Trainer state"
    missing = _missing_state(checkpoint)
    if missing:  # the Trainer would start that state afresh without a word: not the same run any more
        return f"no {missing}"
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        problem = None
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.namelist()
            except (OSError, zipfile.BadZipFile):
                problem = f"{path.relative_to(checkpoint)} is truncated or not a torch file"
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                problem = f"{path.relative_to(checkpoint)} does not parse"
        if problem:
            return problem
    return _adapter_problem(checkpoint)


def _adapter_problem(checkpoint: Path) -> Optional[str]:
    """Why the checkpoint's adapter does not describe its tensors (saved.read_adapter's config check), or None."""
    from ..tuner.saved import read_adapter

    if not (checkpoint / "adapter_config.json").is_file():
        return None  # --method full, or the adapter in a sub-folder the Trainer names itself
    try:
        read_adapter(checkpoint, "a checkpoint holds its adapter")
    except (ValueError, FileNotFoundError) as err:
        return str(err)[:300]
    return None


def find_complete_checkpoint(output_dir: str | Path, say=None) -> Optional[Path]:
    """The newest ``checkpoint-N`` that is intact (:func:`checkpoint_problem`).

    Resuming never starts from a half-written folder: a newer checkpoint that does not load is
    skipped for the newest intact one, and ``say`` (when given) is told which and why. The broken
    one stays where it is (nothing is deleted; the resumed run saves that step again).
    """
    candidates = []
    for path in Path(output_dir).glob(runs.CHECKPOINTS):
        try:
            candidates.append((int(path.name.split("-", 1)[1]), path))
        except ValueError:
            continue
    for _, path in sorted(candidates, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if say is not None:
            say(f"{path.name} cannot be resumed from ({problem}); falling back to an older checkpoint")
    return None


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def load_tokenizer(path: str):
    """The base model's tokenizer as training uses it: padding on the right with a pad token (EOS if none)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # the collator pads labels with -100, so this is never trained on
    tokenizer.padding_side = "right"
    return tokenizer


def build_model(
    model_args: ModelArguments, train_args: LinChainTrainingArguments, path: Optional[str] = None, tokenizer=None
):
    """Base model + tokenizer, wrapped for the chosen method. Returns (model, tokenizer, base_path).
    ``path``: the already resolved model folder or hub id (default: resolved here); ``tokenizer``: the
    one :func:`load_tokenizer` gave (default: loaded here)."""
    path = path or resolve_model_path(model_args.model_name_or_path)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
    dtype = torch_dtype(model_args.torch_dtype)
    model = load_base_model(
        path, dtype, model_args, train_args.gradient_checkpointing
    )  # bitsandbytes-quantized on request
    if model_args.method == "full":
        return model, tokenizer, path
    if train_args.gradient_checkpointing:
        # The frozen embeddings output no grad; checkpointed blocks need an input that requires one.
        model.enable_input_require_grads()
    model = model_args.wrap(model, "CAUSAL_LM")
    if model_args.method == "pissa":
        _save_pissa_init(model, Path(train_args.output_dir))
    return model, tokenizer, path


PISSA_INIT_DIR = runs.PISSA_INIT  # --method pissa: the adapter as initialised, to save the result as a plain LoRA


def _save_pissa_init(model, out: Path) -> None:
    """PiSSA moves the top singular directions of each base weight into A and B and leaves the base
    holding the residual, so its trained adapter only fits that changed base. PEFT converts it to a
    LoRA of rank 2r that fits the original base, given the adapter as initialised: saved here, in the
    run folder, and used by :func:`write_outputs`. (The initialisation is deterministic: a resumed
    run re-creates the same one.)"""
    with atomic_dir(out / PISSA_INIT_DIR, overwrite=True) as tmp:
        model.save_pretrained(tmp)


def _save_adapter(model, model_args: ModelArguments, folder: Path, run: Path) -> None:
    """adapter_config.json + adapter_model.safetensors into ``folder``, for the original base model
    (``run``: the run folder, which holds a PiSSA run's initial adapter)."""
    if model_args.method == "pissa":
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(run / PISSA_INIT_DIR))
    else:
        model.save_pretrained(folder)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def load_data(data_args: DataArguments, seed: int) -> list[Example]:
    """All ``--data`` specs concatenated (the split shuffles them together, which mixes them)."""
    examples: list[Example] = []
    for spec in data_args.data:
        got = load_examples(
            spec,
            skip_malformed=data_args.skip_malformed,
            seed=seed,
            split=data_args.data_split,
            columns=data_args.column_map(),
        )
        _say(f"{spec}: {len(got)} rows")
        examples += got
    return examples


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: LinChainTrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> RunResult:
    """Fine-tune as configured and write the outputs to ``args.output_dir``.

    The folder is written through :class:`linchain.outputs.OutputFolder` (kind ``train``): checked
    before any model or data loads, locked for the whole run by the main process, marked
    writing/complete/failed/interrupted; ``--overwrite`` removes the previous run's files under the
    lock before the new run writes its first one, so a failed new run never sits beside an old
    result. Other ranks under torchrun check the folder but neither lock nor write it.
    """
    started = time.time()
    folder = output_folder(model_args, data_args, args)
    main_process = args.process_index == 0
    resume_from = None
    if args.resume:  # the checkpoint to continue from, and the run's own settings, before anything is written
        resume_from = resume_point(folder, say=_say if main_process else None)
        check_resume(model_args, data_args, args)  # before the lock: a refused resume leaves the folder as it was
    if not main_process:
        folder.check()
        _barrier(args)  # every rank checked the folder before the main process writes its marker into it
        inputs = _inputs(model_args, data_args, args)
        return _run(model_args, data_args, args, callbacks, started, folder, resume_from, inputs)
    _barrier(args)
    with folder.locked():
        folder.check()
        # the data loaded and checked before anything is written: a missing or malformed --data leaves the
        # folder, and the previous run that --overwrite would replace, as they were (break-it check)
        inputs = _inputs(model_args, data_args, args)
        try:
            # --overwrite: the previous run's files go before the new run writes any; a run that fails
            # before it saved an adapter or checkpoint leaves a new folder as it found it
            with folder.writing(saved=(ADAPTER_DIR, MODEL_DIR, runs.CHECKPOINTS)):
                return _run(model_args, data_args, args, callbacks, started, folder, resume_from, inputs)
        except _CleanStop as stop:  # Ctrl-C: checkpoint saved, the folder marked "interrupted"
            return stop.result


def resume_point(folder: OutputFolder, say=None) -> Path:
    """--resume: the newest complete checkpoint of ``folder`` (refused in one line when there is none),
    after the folder's own checks (a run of this kind, not being written)."""
    checkpoint = find_complete_checkpoint(folder.path, say=say)
    if checkpoint is None:
        raise FileNotFoundError(
            f"--resume: no complete checkpoint-N folder in {folder.path}; drop --resume to start "
            "a new run (--overwrite replaces this one)"
        )
    folder.check()
    return checkpoint


class _CleanStop(KeyboardInterrupt):
    """A Ctrl-C the run turned into a saved checkpoint: raised through OutputFolder.writing so the
    folder is marked ``interrupted`` (not ``complete``), caught by run_training, which returns."""

    def __init__(self, result: Any) -> None:  # a RunResult (train) or the results dict (seq_cls)
        super().__init__("stopped")
        self.result = result


def output_folder(
    model_args: ModelArguments, data_args: DataArguments, args: LinChainTrainingArguments
) -> OutputFolder:
    """The run's output folder. Inputs are the local base model folder and local --data files: the
    output may not be, hold or lie inside one of them (hub ids and data specs that are not paths
    are skipped by OutputFolder)."""
    inputs = {"the base model (--model_name_or_path)": model_args.model_name_or_path}
    inputs.update({f"the training data (--data {spec})": spec for spec in data_args.data})
    return OutputFolder(
        args.output_dir,
        "train",
        flag="--output_dir",
        overwrite=args.overwrite,
        resume=args.resume,
        inputs=inputs,
        command="linchain train",
    )


def _barrier(args: LinChainTrainingArguments) -> None:
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_config(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: LinChainTrainingArguments,
    base_path: Optional[str] = None,
) -> dict[str, Any]:
    """What defines the run, as train_config.yaml records it: every option but how the run was
    launched (:data:`LAUNCH_FIELDS`) and secrets (``*_token``)."""
    config = {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args), **_init_fields(args)}
    config = {k: v for k, v in config.items() if k not in LAUNCH_FIELDS and not k.endswith("_token")}
    if base_path is not None:
        config["resolved_model_path"] = base_path
    config[DATA_SHA256] = data_fingerprints(data_args.data)
    return config


#: train_config.yaml's record of each local --data file's contents, which --resume compares
DATA_SHA256 = "data_sha256"


def data_fingerprints(specs: Sequence[str]) -> dict[str, str]:
    """{spec: sha256 of the file's bytes} for each --data that is a local file (specs such as ``hf:`` and
    folders are not recorded). A relative path is read from the current folder, so a run resumed from
    another one could name another file with the same spelling."""
    prints = {}
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            prints[spec] = digest.hexdigest()
    return prints


def _saved_config(out: Path) -> Optional[dict[str, Any]]:
    """The run's train_config.yaml (None when absent); a file that is not a mapping is an error."""
    path = out / CONFIG_FILE
    if not path.exists():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(
            f"--resume: {path} cannot be read ({str(err).splitlines()[0][:200]}); it records the run's "
            "settings, so the run cannot be checked: start a new run with another --output_dir"
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(
            f"--resume: {path} is not a mapping of settings; the run cannot be checked: start a new run "
            "with another --output_dir"
        )
    return saved


def _show(value: Any) -> str:
    return str(value) if not isinstance(value, str) else repr(value)


def check_resume(model_args: ModelArguments, data_args: DataArguments, args: LinChainTrainingArguments) -> None:
    """Refuse a --resume whose defining settings differ from the run's train_config.yaml, naming each
    changed field with its old and new value: a resumed run continues the same run (same data,
    schedule, method), and a longer --max_steps would stretch a schedule already half spent."""
    out = Path(args.output_dir)
    saved = _saved_config(out)
    if saved is None:
        _say(f"--resume: {out} has no {CONFIG_FILE} (an older run): its settings cannot be compared with these")
        return
    # through YAML and back, so both sides have the types the file has
    now = yaml.safe_load(yaml.safe_dump(run_config(model_args, data_args, args), sort_keys=True))
    _refuse_other_data(out, saved.pop(DATA_SHA256, None), now.pop(DATA_SHA256))
    # a training setting at None is not written to the file: a flag given now that was None then (say
    # --neftune_noise_alpha) is a change too (break-it check: it resumed without a word)
    unset = {f.name for f in dataclasses.fields(args) if f.init and f.default is None}
    saved = {**{k: None for k in unset if k in now and k not in saved}, **saved}
    refuse_changed_settings(out, saved, now, NOT_DEFINING)


def _refuse_other_data(out: Path, saved: Optional[dict], now: dict[str, str]) -> None:
    """--resume reading other data under the recorded spelling (break-it check: a relative --data resumed
    from another folder trained on another file without a word). Runs recorded before this check: none."""
    if not isinstance(saved, dict):
        return
    for spec, digest in saved.items():
        if spec in now and now[spec] != digest:
            raise ValueError(
                f"--resume: --data {spec} ({Path(spec).resolve()}) is not the file {out} was trained on (its "
                "contents differ); a relative path is read from the current folder: run from the folder the run "
                "started in, or start a new run with another --output_dir"
            )


def refuse_changed_settings(out: Path, saved: dict[str, Any], now: dict[str, Any], not_defining: frozenset) -> None:
    """Refuse a --resume of the run in ``out`` when a setting of ``saved`` (the run's record) differs in
    ``now`` (both {flag name: value} with the record's types), but for those in ``not_defining``."""
    if _positive(saved.get("max_steps")) and _positive(now.get("max_steps")):
        # --max_steps decides the run's length (HF ignores --num_train_epochs then): not a defining setting
        not_defining = not_defining | {"num_train_epochs"}
    changed = [
        f"--{k} {_show(saved[k])} -> {_show(now[k])}"
        for k in sorted(saved)
        if k in now and k not in not_defining and _setting(k, saved[k]) != _setting(k, now[k])
    ]
    if not changed:
        return
    longer = "max_steps" in saved and saved["max_steps"] != now.get("max_steps")
    raise ValueError(
        f"--resume: {out} was trained with other settings ({'; '.join(changed)}); a resumed run continues "
        "with its own settings: drop the changed flags"
        + (" (another --max_steps would need another learning-rate schedule)" if longer else "")
        + ", or start a new run with another --output_dir"
    )


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _setting(name: str, value: Any) -> Any:
    """A setting as --resume compares it: ``q_proj,v_proj`` and ``v_proj, q_proj`` adapt the same layers.
    (text_columns is not a set for the model, whose input pairs them in order, so only target_modules is.)"""
    if name == "target_modules" and isinstance(value, str):
        return frozenset(t.strip() for t in value.split(",") if t.strip())
    return value


def _loss_record(checkpoint: Optional[Path]) -> tuple[Optional[tuple[float, int]], float]:
    """What a checkpoint recorded (LinChainTrainer._save_checkpoint): ((loss sum, steps) or None for an
    older checkpoint, seconds of training loop so far or 0.0 for one written before they were recorded).
    ``checkpoint`` None (a run not resumed): (None, 0.0)."""
    try:
        record = json.loads((checkpoint / LOSS_FILE).read_text(encoding="utf-8")) if checkpoint else {}
    except (OSError, ValueError):
        return None, 0.0
    record = record if isinstance(record, dict) else {}
    try:
        total, steps = float(record["loss_sum"]), int(record["steps"])
        loss = (total, steps) if math.isfinite(total) and steps >= 0 else None
    except (ValueError, KeyError, TypeError):
        loss = None
    try:
        train_s = float(record["train_s"])
    except (ValueError, KeyError, TypeError):
        train_s = 0.0
    return loss, (train_s if math.isfinite(train_s) and train_s >= 0 else 0.0)


def _whole_run_loss(log_history: list) -> Optional[float]:
    """For a checkpoint without linchain_loss.json: the mean of the logged losses, each weighted by the
    steps since the previous log (exact when the run was resumed at a logging step)."""
    total, steps, previous = 0.0, 0, 0
    for log in sorted((log for log in log_history if "loss" in log and "step" in log), key=lambda log: log["step"]):
        if log["step"] > previous and isinstance(log["loss"], (int, float)) and math.isfinite(log["loss"]):
            total += log["loss"] * (log["step"] - previous)
            steps += log["step"] - previous
        previous = log["step"]
    return total / steps if steps else None


@dataclasses.dataclass
class _Inputs:
    """What a run reads before it writes anything: the base model's path and tokenizer, the data split and tokenized."""

    base_path: str
    tokenizer: Any
    examples: list[Example]
    val_examples: list[Example]
    train_set: SequenceDataset
    val_set: Optional[SequenceDataset]


def _inputs(model_args: ModelArguments, data_args: DataArguments, args: LinChainTrainingArguments) -> _Inputs:
    """Threads, seed, the base model's path and tokenizer, the data loaded, split by --seed and tokenized:
    every input error (a wrong model name, a missing or malformed file, rows that train nothing) is raised
    here, before the output folder is written."""
    set_threads(args.num_threads, "linchain train")
    set_seed(args.seed)
    base_path = resolve_model_path(model_args.model_name_or_path)  # a wrong model name fails now, not after the data
    examples = load_data(data_args, args.seed)
    train_examples, val_examples = _split_data(examples, data_args, args)
    tokenizer = load_tokenizer(base_path)
    train_set, val_set = _datasets(tokenizer, train_examples, val_examples, data_args)
    return _Inputs(base_path, tokenizer, examples, val_examples, train_set, val_set)


def _run(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: LinChainTrainingArguments,
    callbacks: Sequence[TrainerCallback],
    started: float,
    folder: OutputFolder,
    resume_from: Optional[Path],
    inputs: _Inputs,
) -> RunResult:
    """The run itself, inside the checked (and, on the main process, locked) output folder."""
    out = folder.path
    main_process = args.process_index == 0
    if main_process:
        _record_settings(model_args, data_args, args, inputs.base_path)
    # 1. Data: loaded, split deterministically by --seed and tokenized before the folder was written (_inputs).
    examples, val_examples = inputs.examples, inputs.val_examples
    train_set, val_set = inputs.train_set, inputs.val_set
    # 2. The model, wrapped for the method (adapters start at the base model: B = 0).
    model, tokenizer, base_path = build_model(model_args, args, inputs.base_path, inputs.tokenizer)
    result = RunResult(
        output_dir=str(out),
        global_step=0,
        interrupted=False,
        n_heldout=len(val_examples),
        trainable_params=_trainable(model, model_args),
    )
    # 3. Held-out accuracy of the starting model (multiple choice by log-likelihood). Also when resuming:
    # the checkpoint is loaded later, inside trainer.train.
    accuracy = _accuracy(examples, val_examples, data_args, args, main_process)
    if accuracy is not None:
        result.accuracy_before = accuracy(model, tokenizer, "before")
    # 4. Train with the HF Trainer.
    interrupt = StopOnInterrupt()
    # pads input_ids with the pad token and labels with -100 (no loss on padding)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=None)
    if warmup_covers_every_step(args) and main_process:
        # allowed (a smoke run), but said: the run never trains at --learning_rate (break-it check)
        _say(
            f"note: --warmup_steps {args.warmup_steps:g} covers all of --max_steps {args.max_steps}: the run never "
            "reaches --learning_rate, and its first step trains at 0"
        )
    trainer = make_trainer(model, args, train_set, val_set, collator, folder, interrupt, callbacks)
    result.train_loss, result.train_s = train_or_finish(trainer, interrupt, resume_from)
    result.train_s_before = trainer.train_s_before
    result.global_step = trainer.state.global_step
    if interrupt.requested:
        result.interrupted = True
        return stop_cleanly(result, result.global_step, main_process)
    result.eval_loss = _eval_loss(trainer) if val_set is not None else None
    # 5. Held-out accuracy after training, then the outputs (main process only).
    if not main_process:
        return result
    if accuracy is not None:
        result.accuracy_after = accuracy(model, tokenizer, "after")
    result.wall_s = round(time.time() - started + result.train_s_before, 1)
    write_outputs(trainer.model, tokenizer, model_args, data_args, args, result, base_path)
    return result


def _record_settings(model_args, data_args, args: LinChainTrainingArguments, base_path: str) -> None:
    """train_config.yaml, written when the run begins (a resumed run keeps the one it has)."""
    out = Path(args.output_dir)
    if not args.resume or not (out / CONFIG_FILE).exists():
        # the run knows what it is from its first moment: --resume compares against this file
        atomic_write_text(
            out / CONFIG_FILE, yaml.safe_dump(run_config(model_args, data_args, args, base_path), sort_keys=True)
        )


def _split_data(
    examples: list[Example], data_args: DataArguments, args: LinChainTrainingArguments
) -> tuple[list[Example], list[Example]]:
    """(training rows, held-out rows): split by --seed, --val_set_size (default: 20%, at most 120) held out,
    --max_train_samples applied; refuses a split that holds nothing out when validation needs it."""
    val_size = data_args.val_set_size
    if val_size is None:
        val_size = default_val_set_size(len(examples))
        _say(f"--val_set_size not given: holding out {val_size} of {len(examples)} rows (20%, at most 120)")
    train_examples, val_examples = split_examples(examples, val_size, args.seed)
    if len(val_examples) < val_size:
        _say(f"{val_size - len(val_examples)} validation rows repeat a training prompt; moved to training")
    if val_size and not val_examples:
        raise ValueError(
            f"--data: all {val_size} held-out rows repeat a training prompt (duplicated rows), so nothing is "
            "held out; deduplicate the data, or pass --val_set_size 0 --eval_strategy no"
        )
    if not val_examples and args.eval_strategy != "no":
        raise ValueError(
            f"--eval_strategy={args.eval_strategy.value} needs held-out rows; pass --eval_strategy no with --val_set_size 0"
        )
    if data_args.max_train_samples:
        train_examples = train_examples[: data_args.max_train_samples]
    _say(f"{len(train_examples)} training rows, {len(val_examples)} held-out rows")
    return train_examples, val_examples


def _trainable(model, model_args: ModelArguments) -> int:
    """The trainable parameter count, also said."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _say(
        f"method {model_args.method}"
        + (f" (k={model_args.chain_length})" if model_args.chain_length is not None else "")
        + f": {trainable:,} trainable parameters"
    )
    return trainable


def _datasets(
    tokenizer, train_examples: list[Example], val_examples: list[Example], data_args: DataArguments
) -> tuple[SequenceDataset, Optional[SequenceDataset]]:
    """(training set, held-out set or None), tokenized; refuses training rows that would all train nothing."""
    train_set = SequenceDataset(
        tokenizer, train_examples, data_args.cutoff_len, data_args.train_on_inputs, data_args.faithful_prompt
    )
    if train_set.answer_cut:
        first = train_set.answer_cut[0]
        message = (
            f"{len(train_set.answer_cut)} of {len(train_set)} training rows have no answer token within "
            f"--cutoff_len={data_args.cutoff_len} (e.g. {first.source} row {first.row})"
        )
        if len(train_set.answer_cut) == len(train_set) and not data_args.train_on_inputs:
            raise ValueError(f"{message}: nothing would be trained; raise --cutoff_len")
        _say(f"{message}: they train {'on their prompt only' if data_args.train_on_inputs else 'nothing'}")
    if not val_examples:
        return train_set, None
    val_set = SequenceDataset(
        tokenizer, val_examples, data_args.cutoff_len, data_args.train_on_inputs, data_args.faithful_prompt
    )
    if val_set.answer_cut and not data_args.train_on_inputs:
        # a held-out row without an answer token has no loss: it made the validation loss NaN (every row) or
        # silently left it out (break-it check); it is left out of the validation loss, and said
        first, cut = val_set.answer_cut[0], {id(e) for e in val_set.answer_cut}
        message = (
            f"{len(val_set.answer_cut)} of {len(val_examples)} held-out rows have no answer token within "
            f"--cutoff_len={data_args.cutoff_len} (e.g. {first.source} row {first.row})"
        )
        kept = [e for e in val_examples if id(e) not in cut]
        if not kept:
            raise ValueError(f"{message}: there is no validation loss to compute; raise --cutoff_len")
        _say(f"{message}: the validation loss leaves them out")
        val_set = SequenceDataset(
            tokenizer, kept, data_args.cutoff_len, data_args.train_on_inputs, data_args.faithful_prompt
        )
    return train_set, val_set


def _accuracy(
    examples: list[Example],
    val_examples: list[Example],
    data_args: DataArguments,
    args: LinChainTrainingArguments,
    main_process: bool,
):
    """``measure(model, tokenizer, "before"|"after") -> accuracy`` on the held-out rows (said as well), or
    None when accuracy is not measured (another process, no held-out rows, --eval_accuracy no, or answers
    that are not options). A --eval_accuracy yes that cannot be measured is refused on every process."""
    options = closed_options(examples, data_args.max_options)
    has_options = all(e.options for e in val_examples) or options is not None
    if data_args.eval_accuracy == "yes" and not has_options:
        raise ValueError(
            f"DataArguments.eval_accuracy='yes' but the data has no options and more than {data_args.max_options} distinct answers"
        )
    if not (val_examples and main_process and has_options) or data_args.eval_accuracy == "no":
        return None

    def measure(model, tokenizer, when: str) -> float:
        value = mc_accuracy(
            model,
            tokenizer,
            val_examples,
            options,
            data_args.faithful_prompt,
            progress=f"accuracy {when}" if not args.disable_tqdm else None,
        )
        _say(f"held-out accuracy {when + ' training:':<16} {value:.1%} ({len(val_examples)} rows)")
        return value

    return measure


def make_trainer(
    model,
    args: TrainingArguments,
    train_set,
    val_set,
    collator,
    folder: Optional[OutputFolder],
    interrupt: StopOnInterrupt,
    callbacks: Sequence[TrainerCallback] = (),
) -> LinChainTrainer:
    """The run's Trainer with linchain's additions: metrics.jsonl, a stop on a non-finite loss or weight, the
    folder's marker rewritten at every checkpoint, Ctrl-C that saves, and the loss on the progress bar."""
    trainer = LinChainTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        callbacks=[MetricsJsonl(Path(args.output_dir)), StopOnNonFinite(), MarkOnSave(folder), interrupt, *callbacks],
    )
    trainer.remove_callback(ProgressCallback)
    if not args.disable_tqdm:
        trainer.add_callback(LossProgress())
    return trainer


def train_or_finish(
    trainer: LinChainTrainer, interrupt: StopOnInterrupt, resume_from: Optional[Path]
) -> tuple[Optional[float], float]:
    """Train (resumed from ``resume_from`` when given) and return (the whole run's mean training loss,
    seconds in the training loop). A checkpoint already at --max_steps is loaded, not trained from."""
    if resume_from is not None:
        _say(f"resuming from {resume_from}")
    loss_record, trainer.train_s_before = _loss_record(resume_from)
    if loss_record is not None:
        trainer.loss_before = loss_record
    if resume_from is not None and _finished_checkpoint(resume_from, trainer.args.max_steps):
        # HF's loop trains one step past max_steps when resumed from the final checkpoint: load it instead
        _say(
            f"{resume_from.name} is already at --max_steps={trainer.args.max_steps}: nothing left to train, "
            "writing the outputs"
        )
        trainer._load_from_checkpoint(str(resume_from))
        trainer.state = TrainerState.load_from_json(str(resume_from / TRAINER_STATE))
        trainer._initial_global_step = trainer.state.global_step
        loss = trainer.whole_run_loss(None) if loss_record is not None else _whole_run_loss(trainer.state.log_history)
        return loss, trainer.train_s_before
    loop_started = trainer.loop_started = time.time()
    with interrupt, _bar_closed(trainer):
        # HF checkpoints hold optimizer/scheduler/RNG state written with torch.save; the Trainer
        # reloads them with torch.load(weights_only=True). We only ever load our own checkpoints.
        loss = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None).training_loss
    train_s = round(trainer.train_s_before + time.time() - loop_started, 1)
    if resume_from is not None:  # the summary covers the whole run, not only the steps trained since the resume
        loss = (
            trainer.whole_run_loss(loss)
            if loss_record is not None
            else _whole_run_loss(trainer.state.log_history)  # a checkpoint from before linchain_loss.json
        )
    return loss, train_s


@contextlib.contextmanager
def _bar_closed(trainer: LinChainTrainer) -> Iterator[None]:
    """The progress bar closed however training ends: a run stopped by an error (a non-finite loss) would
    otherwise print its bar when it is garbage-collected, after the error, which must be the last line."""
    try:
        yield
    finally:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, LossProgress) and callback.training_bar is not None:
                callback.training_bar.close()
                callback.training_bar = None


#: how the user continues a run stopped by Ctrl-C; a caller that owns the run (compare, which resumes by
#: itself and refuses --resume) says its own way with :func:`resumed_by`
_HOW_TO_CONTINUE = contextvars.ContextVar("how_to_continue", default="Continue with the same command plus --resume")


@contextlib.contextmanager
def resumed_by(how: str) -> Iterator[None]:
    """Within the block, a stopped run's message tells the user ``how`` to continue it."""
    token = _HOW_TO_CONTINUE.set(how)
    try:
        yield
    finally:
        _HOW_TO_CONTINUE.reset(token)


def stop_cleanly(result: Any, step: int, mark_folder: bool) -> Any:
    """After a Ctrl-C that saved a checkpoint: say so; with ``mark_folder`` (the process that holds the
    output folder) raise :class:`_CleanStop`, so the folder is marked "interrupted"; else return ``result``."""
    _say(f"stopped at step {step}; checkpoint saved. {_HOW_TO_CONTINUE.get()}")
    if mark_folder:
        raise _CleanStop(result)  # through OutputFolder.writing: the folder is marked "interrupted"
    return result


def _eval_loss(trainer: LinChainTrainer) -> float:
    """The validation loss at the last step: the periodic evaluation's when it has just run, else evaluated now."""
    last = [
        log for log in trainer.state.log_history if "eval_loss" in log and log.get("step") == trainer.state.global_step
    ]
    return last[-1]["eval_loss"] if last else trainer.evaluate()["eval_loss"]


def write_outputs(model, tokenizer, model_args, data_args, args, result: RunResult, base_path: str) -> None:
    """Adapter (or full model), metrics record, loss-curve PNG, one-line summary (train_config.yaml
    was written when the run began)."""
    out = Path(args.output_dir)
    if model_args.method == "full":
        with atomic_dir(out / MODEL_DIR, overwrite=True) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    else:
        with atomic_dir(out / ADAPTER_DIR, overwrite=True) as tmp:
            _save_adapter(model, model_args, tmp, out)
            tokenizer.save_pretrained(tmp)
    summary = dataclasses.asdict(result)
    MetricsJsonl(out).append({"summary": summary, "step": result.global_step})
    atomic_write_json(out / runs.SUMMARY_JSON, summary)
    plot_loss_curve(out / METRICS_FILE, out / PLOT_FILE, title=f"{model_args.method} on {', '.join(data_args.data)}")
    line = (
        f"{model_args.method}"
        + (f" k={model_args.chain_length} r={model_args.r}" if model_args.chain_length is not None else "")
        + f" | {result.global_step} steps in {result.train_s:.0f} s (the whole run {result.wall_s:.0f} s"
        + (f", {result.train_s_before:.0f} s of it before the resume)" if result.train_s_before else ")")
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
