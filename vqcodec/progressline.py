"""The one progress line a command keeps on stderr (train's steps, eval's files measured, the percentage
of a long recording encoded or decoded).

On a terminal it is rewritten in place, cut to the terminal's width (a carriage return goes back to the start of
the last row only, so a line that wrapped would leave a row behind at each rewrite), and every other
line written to stderr meanwhile (a skipping line, a warning) clears it first (say, clear), so that the
end of a longer progress line never stays visible after a shorter line; elsewhere (a file, a CI log)
each progress line is a line of its own, whole.
"""
from __future__ import annotations

import os
import sys
import threading

_lock = threading.Lock()  # skipping lines come from the threads that make training batches too
_shown = 0                # the length of the line shown in place on the terminal, 0 when none is


def show(line: str) -> None:
    """`line` as the progress: on a terminal in place of the one shown before, elsewhere a line of its own."""
    global _shown
    with _lock:
        if not on_terminal():
            sys.stderr.write(f"{line}\n")
        else:
            _clear()
            line = line[:_columns() - 1]  # the last column: some terminals wrap as soon as it is written
            sys.stderr.write(f"{line}\r")
            _shown = len(line)
        sys.stderr.flush()


def percentages(least: int):
    """A Codec.progress that shows how far each stage of work of more than `least` frames has got, as a
    percentage in place on a terminal, cleared when the stage is done; None (nothing shown) elsewhere,
    where a line per block would only fill a log."""
    if not on_terminal():
        return None

    def report(stage: str, done: int, total: int) -> None:
        if total <= least:
            return
        if done < total:
            show(f"{stage} {100 * done // total}%")
        else:
            clear()
    return report


def say(line: str) -> None:
    """`line` on stderr, a line of its own, with the progress line cleared first."""
    with _lock:
        _clear()
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()


def clear() -> bool:
    """Blank the progress line shown on the terminal, if any (True), for a line that is written another way."""
    with _lock:
        return _clear()


def keep() -> None:
    """Leave the progress line shown as it is: the next line starts below it (with its own newline)."""
    global _shown
    with _lock:
        _shown = 0


def _clear() -> bool:
    global _shown
    if not _shown:
        return False
    sys.stderr.write(" " * _shown + "\r")
    sys.stderr.flush()
    _shown = 0
    return True


def on_terminal() -> bool:
    """Whether stderr is a terminal (not a file, a pipe, or closed)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (OSError, ValueError):  # closed
        return False


def _columns() -> int:
    """The width of the terminal stderr is, in columns (a stream that has no size, as in tests: unlimited)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or sys.maxsize
    except (OSError, ValueError, AttributeError):
        return sys.maxsize
