"""Safe file writes, the primitives under the one write path (:mod:`linchain.outputs`, which decides
what a command may replace): a crash never leaves a half-written file or folder.

- :func:`atomic_write_text` / :func:`atomic_write_json`: temporary file + ``os.replace``; JSON is
  strict (no bare ``NaN``/``Infinity``, which strict parsers reject: non-finite floats are errors).
- :func:`atomic_files`: several files written as temporaries first, then each swapped in.
- :func:`atomic_dir`: build a folder beside the target and swap it in whole. An existing non-empty
  target is refused unless ``overwrite=True`` (the ``--overwrite`` flag); the temporary folder is
  removed on every exit path a process can see (exceptions, Ctrl-C, SIGTERM via
  :func:`linchain.cli.args.run_command`), and one left by a killed process (SIGKILL) is removed by
  the next write to the same target. Folders get ordinary permissions (umask), not mkdtemp's 0700.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence, Union

__all__ = [
    "OutputExistsError",
    "atomic_dir",
    "atomic_files",
    "atomic_write_json",
    "atomic_write_text",
    "is_nonempty_dir",
    "strict_json",
]

PathLike = Union[str, os.PathLike]


class OutputExistsError(FileExistsError):
    """An output folder holds files the command would replace; the message says which flag allows it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` that refuses NaN/inf (``allow_nan=False``) with the offending value named."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as err:
        raise ValueError(
            f"refusing to write non-finite numbers as JSON ({err}); a NaN/inf result is an error"
        ) from None


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: PathLike, obj) -> None:
    atomic_write_text(path, strict_json(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_files(paths: Sequence[PathLike]) -> Iterator[list[Path]]:
    """Temporary siblings of ``paths`` (same suffix) to write; when the block ends without an error each one
    replaces its target, and an error replaces none: files that belong together (a report and its plots)
    are never left half old, half new by a failure while writing them."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        for tmp, target in zip(temps, targets):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
            try:
                os.replace(tmp, target)
            except OSError as err:
                raise OSError(err.errno, f"cannot replace {target} ({err.strerror})") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.NAME.tmp-PID-*`` folders beside ``path`` left by processes that no longer run."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name[len(path.name) + 6 :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def is_nonempty_dir(path: PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.iterdir())


@contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False, flag: str = "--overwrite") -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it becomes ``path`` as a whole.

    A non-empty ``path`` raises :class:`OutputExistsError` naming ``flag`` unless ``overwrite``;
    with it the old folder is kept until the new one is complete, then swapped out, so readers
    see either the old or the new folder, never a mix.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} is a file, not a folder; choose another output folder")
    if is_nonempty_dir(path) and not overwrite:
        raise OutputExistsError(
            f"{path} already holds files; pass {flag} to replace them, or choose another output folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-old-", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
