"""Progress bars that read well on a terminal and in a log file.

On a terminal: tqdm as usual. On a pipe or file (a log, CI), tqdm's carriage returns and the
cursor-up codes of nested bars (``ESC[A``) run lines into each other; there :class:`Progress`
writes each refresh as a plain line of its own, at most every :data:`PLAIN_INTERVAL` seconds, and
never moves the cursor or clears a line.
"""

from __future__ import annotations

import sys

from tqdm.std import tqdm

__all__ = ["PLAIN_INTERVAL", "Progress"]

#: seconds between two plain lines of one bar when the output is not a terminal
PLAIN_INTERVAL = 30.0


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no such method, or a closed file
        return False


class Progress(tqdm):
    """tqdm on a terminal; one plain line per refresh (every ``PLAIN_INTERVAL`` s and at the end) elsewhere."""

    def __init__(self, *args, **kwargs):
        file = kwargs.get("file") or sys.stderr
        if not _is_terminal(file):
            kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), PLAIN_INTERVAL)
            kwargs["dynamic_ncols"] = False
            kwargs.setdefault("ncols", 100)
            if not kwargs.get("leave", True):
                kwargs.setdefault(
                    "delay", PLAIN_INTERVAL
                )  # a transient bar (an evaluation inside training): quiet unless long
        super().__init__(*args, **kwargs)

    @staticmethod
    def status_printer(file):
        if _is_terminal(file):
            return tqdm.status_printer(file)

        def print_line(text: str) -> None:
            if text.strip():  # tqdm clears a bar by printing blanks: nothing to write on a pipe
                file.write(text.rstrip() + "\n")
                file.flush()

        return print_line

    def moveto(self, n):
        if _is_terminal(self.fp):
            super().moveto(n)

    def clear(self, nolock=False):
        if _is_terminal(self.fp):
            super().clear(nolock)

    def close(self):
        if self.disable or _is_terminal(self.fp):
            return super().close()
        if self.leave:
            self.display()  # the final line (tqdm's own close would add a bare newline, or a carriage return)
        self.sp = None  # so tqdm's close only does its bookkeeping (it prints nothing without a printer)
        return super().close()
