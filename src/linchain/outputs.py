"""The one write path: every command writes its output folder through an :class:`OutputFolder`.

An output folder has a *kind* (``train``, ``eval``, ``merge``, ``export-lora``, ``analyze``,
``compare``, ``seq-cls``) recorded in a marker file, ``.linchain-output.json``, that linchain writes
into it (``{"kind", "status", "linchain", "pid", "updated"[, "error"]}``; status ``writing`` while a
command writes, then ``complete`` or ``failed``). The folder object decides, before any model loads:

- **what may be replaced**: a missing or empty folder is written; a folder holding files is replaced
  only with ``--overwrite`` and only when linchain wrote it for the same kind of output (its marker,
  or, for folders written before markers existed, a layout made only of that kind's files). A folder
  of another kind, or holding files linchain did not write, is refused even with ``--overwrite``;
- **what is never an output**: a folder that is, holds or lies inside one of the command's inputs
  (the adapter, the base model it names, the data), one that is or holds an input's run folder
  (outputs may live inside a run: ``RUN/analysis``), the current folder, the home folder, ``/``;
- **what would fail later**: the path is a file, the nearest existing folder is not writable, or the
  disk has less free space than the command needs.

While it writes, a command holds an exclusive lock (``flock`` on ``.NAME.lock`` beside the folder):
a second writer is refused at once, naming the process that holds it; a lock file left by a killed
process is taken over (the kernel released its lock), saying so. Outputs that are several files
appear together (:meth:`OutputFolder.replace_whole`: built beside, swapped in whole, the old folder
kept until then); outputs written over time (a training run) are marked ``failed`` when the command
fails (:meth:`OutputFolder.writing`), and ``--overwrite`` removes the previous run's files before the
new run writes its first one (:meth:`OutputFolder.clear`), so old and new results never mix.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

import yaml

from . import runs
from .io import OutputExistsError, atomic_dir, atomic_write_json

__all__ = [
    "KINDS",
    "MARKER",
    "OutputFolder",
    "OutputLockedError",
    "OutputUnwritableError",
    "folder_bytes",
    "read_marker",
    "run_of",
]

PathLike = Union[str, os.PathLike]

MARKER = ".linchain-output.json"

#: the kinds of output folder, one per command that writes one
KINDS = ("train", "seq-cls", "eval", "merge", "export-lora", "analyze", "compare")


#: What a writer of each kind may create between two writes of its marker (top-level names; a run's
#: checkpoint-<digits> folders besides). Only these count as a killed writer's own when they are newer than
#: its marker and unlisted: anything else appearing there is taken for yours, and --overwrite refuses.
_WRITES = {
    "train": (
        runs.ADAPTER,
        runs.MODEL,
        runs.CONFIG,
        runs.METRICS,
        runs.PLOT,
        runs.SUMMARY_TXT,
        runs.SUMMARY_JSON,
        runs.PISSA_INIT,
    ),
    "seq-cls": (
        runs.METRICS,
        "results.json",
        "predictions.jsonl",
        "seq_cls.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    ),
    "compare": ("runs", "data", "base", "settings.json", "report.json", "report.md", "convergence.png", "lr_sweep.png"),
}


def _a(kind: str) -> str:
    """The article before a kind's name ("an eval output", "a merge output")."""
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def legacy_kind(folder: Path) -> Optional[str]:
    """The kind of a folder written before markers existed, recognised by a file only linchain writes
    there (a run's train_config.yaml, a study's settings.json), or None. Such folders are continued
    (``--resume``, a study's next call) but never replaced: without a list of what linchain wrote,
    its files cannot be told from yours."""
    try:
        config = yaml.safe_load((folder / runs.CONFIG).read_text(encoding="utf-8"))
        if isinstance(config, dict) and {"method", "learning_rate"} <= set(config):
            return "train"
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    try:
        settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
        if isinstance(settings, dict) and {"model", "data", "train", "eval"} <= set(settings):
            return "compare"
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return None


def listing(folder: Path) -> tuple[set[str], list[str]]:
    """``(files, nested)`` under ``folder``: the relative paths of its files (symlinks count as files and
    are not followed; the marker is left out) and the sub-folders holding a marker of their own (other
    outputs, e.g. ``RUN/analysis``), whose files are theirs, not this output's."""
    files, nested = set(), []
    for top, dirs, names in os.walk(folder, followlinks=False):
        here = Path(top)
        rel = here.relative_to(folder)
        if here != folder and MARKER in names:
            nested.append(rel.as_posix())
            dirs[:] = []
            continue
        for d in list(dirs):
            if (here / d).is_symlink():
                files.add((rel / d).as_posix())
                dirs.remove(d)
        files.update((rel / n).as_posix() for n in names if not (here == folder and n == MARKER))
    return files, sorted(nested)


#: space a command needs at least (bytes) unless it says more; below it the write would fail midway
MIN_FREE_BYTES = 64 * 2**20


class OutputLockedError(OutputExistsError):
    """Another process holds the output folder's lock."""


class OutputUnwritableError(OSError):
    """The output folder cannot be written (permissions, a read-only mount, too little free space)."""


#: a marker lists one line per file: far larger is not one linchain wrote (and is not read into memory)
MARKER_MAX_BYTES = 16 * 2**20


def read_marker(path: PathLike) -> Optional[dict]:
    """The marker of output folder ``path`` (None when absent, unreadable, too large or not a mapping;
    a file list that is not a list of strings makes it unreadable too)."""
    marker_path = Path(path) / MARKER
    try:
        if marker_path.stat().st_size > MARKER_MAX_BYTES:
            return None
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    files = marker.get("files")
    if files is not None and not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        return None
    return marker


def run_of(adapter_dir: PathLike) -> Optional[Path]:
    """The training run folder an adapter folder belongs to (``RUN/adapter``), or None (see linchain.runs)."""
    from .runs import RunFolder

    run = RunFolder.of_adapter(adapter_dir)
    return run.path if run else None


def folder_bytes(path: Optional[PathLike], pattern: str = "*.safetensors") -> int:
    """Total size of the files matching ``pattern`` in local folder ``path`` (0 for a hub id or None)."""
    if path is None or not Path(path).is_dir():
        return 0
    return sum(f.stat().st_size for f in Path(path).glob(pattern) if f.is_file())


def _sample(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _nearest_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path("/")


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (root passes ``os.access`` on read-only mounts' folders too)."""
    return os.access(folder, os.W_OK | os.X_OK)


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _relation(out: Path, source: Path) -> Optional[str]:
    if out == source:
        return "is"
    if out in source.parents:
        return "holds"
    if source in out.parents:
        return "lies inside"
    return None


#: transformers' checkpoint folder names (trainer_utils.PREFIX_CHECKPOINT_DIR + the step), as its rotation matches them
_TRAINER_CHECKPOINT = re.compile(r"checkpoint-[0-9]+")


def _is_training_output(folder: Path) -> bool:
    """A Trainer's output folder: a linchain run (train_config.yaml) or any folder with a trainer_state.json
    in one of its checkpoints."""
    return (folder / "train_config.yaml").is_file() or any(folder.glob("checkpoint-*/trainer_state.json"))


class OutputFolder:
    """One command's output folder (see the module docstring for what it guarantees).

    ``kind``: a key of :data:`KINDS`. ``flag``: how the user named it (``--output_dir``, ``DST``),
    used in every refusal. ``inputs``: what the command reads, ``{"the adapter being merged": path}``
    (local paths; hub ids are skipped): the output may not be, hold or lie inside one. ``runs``:
    input folders the output may lie inside but not be or hold (an adapter's run folder).
    ``overwrite``: the user's ``--overwrite``. ``resume``: a training run continued in place (the
    folder must be a run of this kind). ``needs_bytes``: free space required before any work.
    """

    def __init__(
        self,
        path: PathLike,
        kind: str,
        *,
        flag: str = "--output_dir",
        overwrite: bool = False,
        resume: bool = False,
        inputs: Optional[Mapping[str, Optional[PathLike]]] = None,
        runs: Optional[Mapping[str, Optional[PathLike]]] = None,
        needs_bytes: int = MIN_FREE_BYTES,
        command: str = "linchain",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown output kind {kind!r} (valid: {', '.join(KINDS)})")
        # a symlink (the folder itself, or on the way: LINK/../out) is written through: the physical folder
        # is the output. Replacing a link itself would leave its target empty and the link renamed aside,
        # and mixing the lexical path (staging beside it) with the physical one fails.
        try:
            resolved = Path(path).resolve()
        except (RuntimeError, OSError) as err:  # a symlink loop (RuntimeError before Python 3.13)
            raise OutputExistsError(f"{flag} {path}: cannot be resolved ({err}); name a folder") from None
        self.path = resolved if resolved != Path(os.path.abspath(path)) else Path(path)
        self.kind, self.flag = kind, flag
        self.overwrite, self.resume, self.needs_bytes, self.command = overwrite, resume, needs_bytes, command
        self.inputs = {k: v for k, v in (inputs or {}).items() if v is not None and Path(v).exists()}
        self.runs = {k: v for k, v in (runs or {}).items() if v is not None and Path(v).exists()}
        self._lock_fd: Optional[int] = None
        self._foreign: set[str] = set()  # files present before this command that are not linchain's

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r}, kind={self.kind!r})"

    # ------------------------------------------------------------------ before any work
    def check(self) -> "OutputFolder":
        """Refuse, naming the folder and the reason, anything the write would lose or fail on. Returns self."""
        self._check_place()
        self._check_inputs()
        self._check_not_held()
        self._check_contents()
        self._check_disk()
        return self

    def _refuse(self, reason: str, cls: type = OutputExistsError) -> None:
        raise cls(f"{self.flag} {self.path} {reason}")

    def _check_place(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            self._refuse("is a file, not a folder; choose a folder for the outputs")
        out = self.path.resolve()
        for what, folder in (("the current folder", Path.cwd()), ("your home folder", Path.home())):
            relation = _relation(out, folder.resolve())
            if relation in ("is", "holds"):
                self._refuse(f"{relation} {what}; name a folder for the outputs (e.g. runs/NAME)")
        if out == Path(out.anchor):
            self._refuse("is the file system's root; name a folder for the outputs")

    def _check_inputs(self) -> None:
        out = self.path.resolve()
        for strict, table in ((True, self.inputs), (False, self.runs)):
            for what, path in table.items():
                relation = _relation(out, Path(path).resolve())
                if relation and (strict or relation != "lies inside"):
                    self._refuse(f"{relation} {what} ({path}); choose another folder")
                if relation == "lies inside" and not strict:
                    first = out.relative_to(Path(path).resolve()).parts[0]
                    if first.startswith(runs.CHECKPOINT):
                        # the Trainer deletes old checkpoints (save_total_limit) and a resume replaces them
                        self._refuse(
                            f"lies inside {what}'s checkpoint {first} ({path}), which training rotates away; "
                            "choose a folder outside the checkpoints"
                        )
        # any training run's checkpoint, not only the adapter's: transformers' rotation matches checkpoint-<digits>
        for folder in (out, *out.parents):
            if _TRAINER_CHECKPOINT.fullmatch(folder.name) and _is_training_output(folder.parent):
                self._refuse(
                    f"lies inside the training checkpoint {folder}, which training rotates away; "
                    "choose a folder outside the checkpoints"
                )

    def _check_not_held(self) -> None:
        """A folder another process is writing is refused as such (not as "holds files": that advice
        would only lead to the lock refusal). Our own lock, held already, is not a refusal."""
        lock = self.lock_path
        if self._lock_fd is not None or not lock.exists():
            return
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            self._refuse_held(lock)
        finally:
            os.close(fd)

    def _check_contents(self) -> None:
        if not self.path.is_dir() or not any(self.path.iterdir()):
            if self.resume:
                self._refuse("holds no run to resume; drop --resume to start a new run")
            return
        marker = read_marker(self.path)
        if marker is not None and marker.get("kind") in KINDS and isinstance(marker.get("files"), list):
            self._check_marked(marker)
        else:
            self._check_unmarked()
        if self.resume:
            return
        if not self.overwrite:
            if self.kind in ("train", "seq-cls"):
                self._refuse(
                    "holds a previous run; pass --resume to continue it, --overwrite to start afresh, "
                    "or choose another folder"
                )
            if self.kind == "compare":
                return  # a study resumes in place (compare checks its settings.json itself)
            self._refuse("already holds files; pass --overwrite to replace them, or choose another folder")

    def _check_marked(self, marker: dict) -> None:
        """A folder linchain wrote: the same kind only; --overwrite only when it holds nothing else."""
        kind = marker["kind"]
        if kind != self.kind:
            self._refuse(f"holds {_a(kind)} output of linchain, not {_a(self.kind)} output; choose another folder")
        if not self.overwrite:
            return
        files, nested = listing(self.path)
        unknown = sorted(files - self._written(marker, files))
        if unknown:
            self._refuse(
                f"holds files linchain did not write ({_sample(unknown)}): move them, or choose another folder "
                "(--overwrite replaces only what linchain wrote)"
            )
        if nested:
            other = (read_marker(self.path / nested[0]) or {}).get("kind", "another")
            self._refuse(
                f"holds another output, {nested[0]}/ ({_a(other)} output of linchain, made from this one): move or "
                "remove it first, or choose another folder"
            )

    def _written(self, marker: dict, files: set[str]) -> set[str]:
        """The files the output's writer wrote: those its marker lists, and, when the writer was killed
        while writing (status ``writing``; the lock is free, so it no longer runs), those that appeared
        after its marker was last written. A run rewrites its marker at every checkpoint, so these are
        what it wrote since its last checkpoint."""
        written = set(marker["files"])
        since = self._killed_since(marker)
        if since is None:
            return written
        listed_tops = {name.split("/", 1)[0] for name in written}
        for name in files - written:
            if not self._may_have_written(name, listed_tops):
                continue  # yours, however new (break-it check: notes added after a kill were removed)
            with contextlib.suppress(OSError):
                if (self.path / name).lstat().st_mtime >= since:
                    written.add(name)
        return written

    def _may_have_written(self, name: str, listed_tops: set[str]) -> bool:
        """Whether a writer of this kind could have made ``name`` after its marker: one of its own top-level
        outputs (or an atomic write's staging file beside one: ``.NAME.*``), or a checkpoint folder the
        marker does not list yet (the one being saved when it was killed)."""
        top = name.split("/", 1)[0]
        own = _WRITES.get(self.kind, ())
        if top in own or any(top.startswith(f".{n}.") or top.startswith(f".{Path(n).stem}.") for n in own):
            return True
        return bool(_TRAINER_CHECKPOINT.fullmatch(top)) and top not in listed_tops

    def _killed_since(self, marker: dict) -> Optional[float]:
        """When a writer killed while writing (status ``writing``) last wrote its marker; None otherwise."""
        if marker.get("status") != "writing":
            return None
        try:
            return (self.path / MARKER).stat().st_mtime
        except OSError:
            return None

    def _check_unmarked(self) -> None:
        """A folder without a (readable) marker: continued when linchain wrote it before markers existed,
        never replaced."""
        kind = legacy_kind(self.path)
        if kind is None:
            names = sorted(p.name for p in self.path.iterdir())
            self._refuse(
                f"holds files linchain did not write ({_sample(names)}); choose another folder "
                "(linchain replaces only folders it wrote, even with --overwrite)"
            )
        if kind != self.kind:
            self._refuse(f"holds {_a(kind)} output of linchain, not {_a(self.kind)} output; choose another folder")
        if self.overwrite:
            why = (
                f"whose marker {MARKER} is damaged"
                if (self.path / MARKER).exists()
                else "written without a linchain marker (by an earlier linchain)"
            )
            self._refuse(
                f"holds {_a(kind)} output {why}, so --overwrite cannot tell its files from yours: move it away, "
                "or choose another folder"
            )

    def _check_disk(self) -> None:
        folder = _nearest_existing(self.path)
        if not _writable(folder):
            self._refuse(
                f"cannot be written: {folder} is not writable; choose a folder you can write to", OutputUnwritableError
            )
        free = _free_bytes(folder)
        if free < self.needs_bytes:
            self._refuse(
                f"cannot be written: {free / 2**20:.0f} MiB free on its disk, the command needs at least "
                f"{self.needs_bytes / 2**20:.0f} MiB; free some space or choose another disk",
                OutputUnwritableError,
            )

    # ------------------------------------------------------------------ the lock
    @property
    def held(self) -> bool:
        """Whether this object holds the folder's lock now."""
        return self._lock_fd is not None

    @property
    def lock_path(self) -> Path:
        path = self.path.resolve()
        return path.parent / f".{path.name}.lock"

    @contextmanager
    def locked(self) -> Iterator["OutputFolder"]:
        """Hold the folder's exclusive lock for the block (re-entrant within this object), checked
        (:meth:`check`) before the lock is taken (a refusal leaves no lock file) and again under it."""
        if self._lock_fd is not None:
            yield self
            return
        self.check()
        self._acquire()
        try:
            self.check()
            yield self
        finally:
            self._release()

    def _acquire(self) -> None:
        lock = self.lock_path
        lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                self._refuse_held(lock)
            try:  # the file may have been removed (released) between open and flock: lock the current one
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        left = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if left:
            print(
                f"{self.command}: taking over the lock of {self.path} left by a process that no longer runs ({left})",
                file=sys.stderr,
                flush=True,
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}".encode())
        self._lock_fd = fd

    def _refuse_held(self, lock: Path) -> None:
        """The one refusal of a folder another process is writing, naming that process."""
        self._refuse(
            f"is being written by another linchain process ({self._holder(lock)}); wait for it to finish, "
            "or choose another folder",
            OutputLockedError,
        )

    @staticmethod
    def _holder(lock: Path) -> str:
        try:
            return lock.read_text(encoding="utf-8", errors="replace").strip()[:200] or "pid unknown"
        except OSError:
            return "pid unknown"

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)  # while still held: a waiting opener re-checks the inode
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ------------------------------------------------------------------ writing
    def _marker(self, status: str, files: set[str], error: Optional[str] = None) -> dict:
        import linchain

        marker = {
            "kind": self.kind,
            "status": status,
            "linchain": linchain.__version__,
            "pid": os.getpid(),
            "updated": _now(),
            "files": sorted(files),  # what linchain wrote: all that --overwrite may remove
        }
        if error:
            marker["error"] = error[:500]  # a bounded summary, never an unbounded input
        return marker

    def mark(self, status: str, error: Optional[str] = None) -> None:
        """Write the marker (``writing`` / ``complete`` / ``failed`` / ``interrupted``) with the list of
        the files the command wrote: every file of the folder but the nested outputs and those that were
        there before and not linchain's (kept aside when a run is resumed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        files, _ = listing(self.path)
        atomic_write_json(self.path / MARKER, self._marker(status, files - self._foreign, error))

    @contextmanager
    def replace_whole(self) -> Iterator[Path]:
        """Check, lock, and yield a temporary sibling folder that becomes the output whole on success.

        The marker (``complete``, listing the new files) is written into it last; a failure leaves the
        previous folder as it was. :meth:`check` refused a previous folder holding anything linchain
        did not write, so the swap loses nothing of yours.
        """
        with self.locked():
            with atomic_dir(self.path, overwrite=True) as tmp:
                yield tmp
                files, _ = listing(tmp)
                atomic_write_json(tmp / MARKER, self._marker("complete", files))

    @contextmanager
    def writing(self, saved: tuple[str, ...] = ()) -> Iterator["OutputFolder"]:
        """Check, lock, clear the previous output (``--overwrite``), mark ``writing``; on success
        ``complete``, on failure ``failed`` (with the error), after a KeyboardInterrupt or SystemExit
        ``interrupted``.

        ``saved``: names (fnmatch patterns, top level) whose presence means the command saved something
        worth keeping (an adapter, a checkpoint). A command that fails in a folder that was new or empty
        before it, having saved none of them, leaves the folder as it found it, so the corrected command
        runs again without ``--overwrite``.
        """
        with self.locked():
            fresh = not self.path.exists() or not any(self.path.iterdir())
            self._foreign = self._not_ours()
            before = (read_marker(self.path) if self.path.is_dir() else None) or {}
            killed_at = self._killed_since(before)
            self.mark("writing")  # before --overwrite clears: a clear that fails leaves a marker saying so
            try:
                if self.overwrite:
                    self.clear()
                    if killed_at is not None:
                        # a writer killed between making a folder and writing into it (the Trainer's next
                        # checkpoint-N) left it empty: no file lists it, yet a Trainer resuming or rotating
                        # its checkpoints would take it for the newest
                        tops = {str(name).split("/", 1)[0] for name in before.get("files") or []}
                        self._remove_empty_folders(killed_at, tops)
                yield self
            except BaseException as err:
                if (
                    fresh
                    and saved
                    and not any(fnmatch.fnmatchcase(p.name, pat) for p in self.path.iterdir() for pat in saved)
                ):
                    self._remove(listing(self.path)[0] - self._foreign)
                    (self.path / MARKER).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        self.path.rmdir()  # only when empty: anything else written there stays
                elif isinstance(err, (KeyboardInterrupt, SystemExit)):
                    self.mark("interrupted")
                else:
                    self.mark("failed", f"{type(err).__name__}: {err}")
                raise
            self.mark("complete")

    def _not_ours(self) -> set[str]:
        """Files present before this command that linchain did not write: not in the marker's list (a
        resumed run: files you added), or every file of an unmarked folder that is not a run linchain
        wrote before markers existed. They stay out of this output's list, so --overwrite never removes them."""
        if not self.path.is_dir():
            return set()
        files, _ = listing(self.path)
        marker = read_marker(self.path)
        if marker is not None and isinstance(marker.get("files"), list):
            return files - self._written(marker, files)
        return set() if legacy_kind(self.path) == self.kind else files

    def clear(self) -> list[str]:
        """Remove the previous output's files (``--overwrite``): exactly those its marker lists, and the
        folders they leave empty. Only under the lock, after :meth:`check` refused a folder holding
        anything else. Returns the paths removed and says so on stderr."""
        if self._lock_fd is None:
            raise RuntimeError("OutputFolder.clear() outside locked()/writing()")
        marker = read_marker(self.path) if self.path.is_dir() else None
        if marker is None or not isinstance(marker.get("files"), list):
            return []
        removed = self._remove(self._written(marker, listing(self.path)[0]))
        if removed:
            tops = sorted({name.split("/", 1)[0] for name in removed})
            print(
                f"{self.command}: --overwrite: removed the previous output's {', '.join(tops[:6])}"
                + (f" and {len(tops) - 6} more" if len(tops) > 6 else ""),
                file=sys.stderr,
                flush=True,
            )
        return removed

    def _inside(self, name: str, root: Path) -> bool:
        """Whether the listed relative path ``name`` names a file of this folder: no absolute path, no
        ``..``, and no symlinked folder on the way (its target lies elsewhere)."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return False
        return (self.path / rel).parent.resolve() == root.joinpath(*rel.parts[:-1])

    def _remove_empty_folders(self, since: float, listed_tops: set[str]) -> None:
        """Remove the empty sub-folders made at or after ``since`` where a killed writer writes
        (:meth:`_may_have_written`), deepest first; older empty folders, empty folders of yours, and
        anything inside another output's folder (one with its own marker) stay."""
        candidates = []
        for top, dirs, names in os.walk(self.path, followlinks=False):
            if Path(top) != self.path and MARKER in names:
                dirs[:] = []  # another output, made from this one: its folders are its own
                continue
            candidates += [Path(top) / d for d in dirs]
        for folder in sorted(candidates, key=lambda p: -len(p.parts)):
            if not self._may_have_written(folder.relative_to(self.path).as_posix(), listed_tops):
                continue
            with contextlib.suppress(OSError):
                if not folder.is_symlink() and folder.stat().st_mtime >= since and not any(folder.iterdir()):
                    folder.rmdir()

    def _remove(self, names: set[str]) -> list[str]:
        """Delete these files (relative paths) of the folder, then the sub-folders they leave empty."""
        removed, parents = [], set()
        root = self.path.resolve()
        for name in sorted(names):
            if not self._inside(name, root):
                continue  # a listed path that leads out of the folder (an edited marker) is never followed
            path = self.path / name
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed.append(name)
                parents.update(p for p in path.parents if self.path in p.parents)
        for folder in sorted(parents, key=lambda p: -len(p.parts)):  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        return removed
