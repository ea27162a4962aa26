"""Progress bars (linchain.progress): tqdm on a terminal; plain lines, no carriage returns or cursor
codes, in a log file (issue 19 item 11: bars written to a pipe ran into the next message with ESC[A)."""

import io

from linchain.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_and_a_final_line():
    log = io.StringIO()
    with Progress(total=5, desc="train", file=log) as outer:
        for _ in range(5):
            inner = Progress(total=3, desc="eval", leave=False, file=log)  # a nested bar, as HF's evaluation
            inner.update(3)
            inner.close()
            outer.update(1)
    text = log.getvalue()
    assert "\r" not in text and "\x1b[" not in text, repr(text)
    lines = text.splitlines()
    assert all(line.strip() for line in lines)
    assert lines[-1].startswith("train: 100%") and "5/5" in lines[-1]
    assert len(lines) <= 5  # at most every 30 s (here: the start lines and the end), not one per update


def test_a_terminal_keeps_tqdms_bar():
    term = _Terminal()
    with Progress(total=3, desc="train", file=term, mininterval=0) as bar:
        bar.update(3)
    assert "\r" in term.getvalue()
