"""How many CPU threads a run uses when the user does not say (``--num_threads``).

torch's default is one intra-op thread per core. On a CPU that other jobs share, those threads
wait for each other at every operation while the busy cores run someone else, and a step can
take many times longer than on one thread (BENCHMARKS.md, "CPU threads"). So the default here
is the number of cores that are idle when the run starts (at least 1), read from the kernel's
CPU counters over a fraction of a second; ``--num_threads`` always wins.
"""

from __future__ import annotations

import os
import time
from typing import Optional

__all__ = ["THREADS_HELP", "busy_cores", "default_threads", "set_threads"]

#: the --num_threads help of every command
THREADS_HELP = ("torch intra-op CPU threads. Default: the cores idle when the run starts (all of them on an idle machine; "
                "on a CPU shared with other jobs fewer threads are much faster than all cores).")


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


def set_threads(num_threads: Optional[int], prog: str) -> int:
    """``torch.set_num_threads``: ``num_threads`` when given, else :func:`default_threads`
    (saying so on stderr when that is fewer than torch's default). Returns the count."""
    import sys

    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
        return num_threads
    cores = torch.get_num_threads()
    chosen = default_threads(cores)
    if chosen < cores:
        print(f"{prog}: {cores - chosen} of {cores} cores are busy with other work: using {chosen} CPU thread(s) "
              "(--num_threads to choose)", file=sys.stderr, flush=True)
    torch.set_num_threads(chosen)
    return chosen
