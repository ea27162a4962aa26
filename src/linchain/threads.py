"""How many CPU threads a run uses when the user does not say (``--num_threads``), and how they wait.

torch's default is one intra-op thread per core. On a CPU that other jobs share, those threads
wait for each other at every operation while the busy cores run someone else, and a step can
take many times longer than on one thread (BENCHMARKS.md, "CPU threads"). So the default here
is the number of cores that are idle when the run starts (at least 1), read from the kernel's
CPU counters over a fraction of a second; ``--num_threads`` always wins.

How the threads wait matters too: OpenMP's default (torch's Linux wheels ship GNU libgomp) spins
a waiting thread on its core for a while before it sleeps, so beside other jobs a run burns CPU
time that those jobs needed, and the more so the busier the machine. A ``linchain`` command that
starts beside other jobs (at least :data:`BUSY_CORES` cores busy) therefore sets the standard
``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep; libgomp, LLVM's and Intel's runtimes all read
it); on an idle machine it keeps OpenMP's spin, free there, where a passive wait costs ~1.2x the
wall time of a step on 2 threads (BENCHMARKS.md, "CPU threads"); a wait variable the user set
always wins. OpenMP reads it once, when torch loads, so ``linchain/__init__.py`` calls
:func:`wait_passively_in_commands` before anything imports torch.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping, Optional, Sequence

__all__ = [
    "BUSY_CORES",
    "PASSIVE_WAIT",
    "THREADS_HELP",
    "WAIT_VARIABLES",
    "busy_cores",
    "check_num_threads",
    "default_threads",
    "is_command_process",
    "max_threads",
    "passive_wait_env",
    "set_threads",
    "wait_passively_in_commands",
]

#: OpenMP variables that decide how a waiting thread waits (standard, libgomp's, Intel/LLVM's):
#: when the user sets any of them, linchain sets none
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: what the commands set otherwise: a waiting thread sleeps at once instead of spinning
PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}
#: cores' worth of other jobs' CPU use at start from which the commands wait passively
BUSY_CORES = 0.5
#: the console script's name (``[project.scripts]``), as ``sys.argv[0]`` ends
_COMMAND_SCRIPTS = ("linchain", "linchain.exe", "linchain-script.py")

#: the --num_threads help of every command
THREADS_HELP = (
    "torch intra-op CPU threads. Default: the cores idle when the run starts (all of them on an idle machine; "
    "on a CPU shared with other jobs fewer threads are much faster than all cores)."
)


def _cpu_times() -> Optional[tuple[float, float]]:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is no such file."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(interval: float = 0.25) -> Optional[float]:
    """Cores' worth of CPU time other processes used over ``interval`` seconds (None if unknown)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times()
    total = second[1] - first[1]
    if total <= 0:
        return None
    return (second[0] - first[0]) / total * (os.cpu_count() or 1)


def default_threads(cores: Optional[int] = None) -> int:
    """Threads for this run: the idle cores (rounded, at least 1, at most torch's default)."""
    import torch

    cores = cores or torch.get_num_threads()
    busy = busy_cores()
    if busy is None:
        return cores
    return max(1, min(cores, round((os.cpu_count() or cores) - busy)))


def check_num_threads(value: Optional[int], name: str = "--num_threads") -> None:
    """The one validation of a ``--num_threads`` value (every command's settings call it): unset, or
    1 to :func:`max_threads`; ``name`` is how the error names the field."""
    if value is None:
        return
    if value < 1:
        raise ValueError(f"{name}={value!r}: must be >= 1 (or left unset).")
    if value > max_threads():  # torch.set_num_threads(99999) crashes the process (a segfault, no message)
        raise ValueError(
            f"{name}={value!r}: more than this machine can use ({os.cpu_count()} cores; at most {max_threads()})."
        )


def max_threads() -> int:
    """The most ``--num_threads`` accepts: 8 per core, at least 64 (oversubscription is allowed, not absurd counts)."""
    return max(64, 8 * (os.cpu_count() or 1))


def set_threads(num_threads: Optional[int], prog: str) -> int:
    """``torch.set_num_threads``: ``num_threads`` when given, else :func:`default_threads`
    (saying so on stderr when that is fewer than torch's default). Returns the count."""
    import torch

    if num_threads:
        check_num_threads(num_threads)
        torch.set_num_threads(num_threads)
        return num_threads
    cores = torch.get_num_threads()
    chosen = default_threads(cores)
    if chosen < cores:
        print(
            f"{prog}: {cores - chosen} of {cores} cores are busy with other work: using {chosen} CPU thread(s) "
            "(--num_threads to choose)",
            file=sys.stderr,
            flush=True,
        )
    torch.set_num_threads(chosen)
    return chosen


# ---------------------------------------------------------------------------------------- wait policy
def passive_wait_env(environ: Mapping[str, str], busy: Optional[float] = None) -> dict[str, str]:
    """The variables to add to ``environ`` for passive waiting: :data:`PASSIVE_WAIT` when other jobs
    keep at least :data:`BUSY_CORES` cores busy (``busy``; None: unknown, which counts as busy), none
    when the machine is idle (libgomp's spin is then free and a passive wait costs ~1.2x the wall
    time of a step) or when ``environ`` already sets one of :data:`WAIT_VARIABLES` (the user's choice)."""
    if any(name in environ for name in WAIT_VARIABLES):
        return {}
    if busy is not None and busy < BUSY_CORES:
        return {}
    return dict(PASSIVE_WAIT)


def _module_being_run(argv: Sequence[str], orig_argv: Sequence[str]) -> Optional[str]:
    """MODULE of ``python -m MODULE`` while Python imports it (``sys.argv[0]`` is ``-m`` until then), else None."""
    if argv[:1] != ["-m"]:
        return None
    for i, arg in enumerate(orig_argv[1:], start=1):  # interpreter options come first
        if arg == "-m":
            return orig_argv[i + 1] if i + 1 < len(orig_argv) else None
        if arg.startswith("-m"):
            return arg[2:]
    return None


def is_command_process(argv: Optional[Sequence[str]] = None, orig_argv: Optional[Sequence[str]] = None) -> bool:
    """Whether this process runs a ``linchain`` command: the console script (also ``torchrun
    --no-python linchain``), or ``python -m linchain`` / ``python -m linchain.cli.<command>`` (also
    ``torchrun -m linchain``). A program that imports linchain as a library is not one."""
    argv = list(sys.argv if argv is None else argv)
    orig_argv = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    if argv and os.path.basename(argv[0]) in _COMMAND_SCRIPTS:
        return True
    module = _module_being_run(argv, orig_argv) or ""
    return module == "linchain" or module.startswith("linchain.cli.")


def wait_passively_in_commands() -> dict[str, str]:
    """In a command's process, add :func:`passive_wait_env` to ``os.environ`` (child processes inherit
    it), from the cores other jobs use now (:func:`busy_cores`: a quarter of a second). Must run before
    torch is imported: OpenMP reads its settings once, when it loads. Returns what it set."""
    if not is_command_process() or any(name in os.environ for name in WAIT_VARIABLES):
        return {}
    added = passive_wait_env(os.environ, busy_cores())
    os.environ.update(added)
    return added
