"""The one progress line a command keeps on stderr (train's steps, eval's files measured).

On a terminal it is rewritten in place, and every other line written to stderr meanwhile (a skipping
line, a warning) clears it first (say, clear), so that the end of a longer progress line never stays
visible after a shorter line; elsewhere (a file, a CI log) each progress line is a line of its own.
"""
from __future__ import annotations

import sys
import threading

_lock = threading.Lock()  # skipping lines come from the threads that make training batches too
_shown = 0                # the length of the line shown in place on the terminal, 0 when none is


def show(line: str) -> None:
    """`line` as the progress: on a terminal in place of the one shown before, elsewhere a line of its own."""
    global _shown
    with _lock:
        if not sys.stderr.isatty():
            sys.stderr.write(f"{line}\n")
        else:
            _clear()
            sys.stderr.write(f"{line}\r")
            _shown = len(line)
        sys.stderr.flush()


def say(line: str) -> None:
    """`line` on stderr, a line of its own, with the progress line cleared first."""
    with _lock:
        _clear()
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()


def clear() -> None:
    """Blank the progress line shown on the terminal, if any, for a line that is written another way."""
    with _lock:
        _clear()


def keep() -> None:
    """Leave the progress line shown as it is: the next line starts below it (with its own newline)."""
    global _shown
    with _lock:
        _shown = 0


def _clear() -> None:
    global _shown
    if _shown:
        sys.stderr.write(" " * _shown + "\r")
        sys.stderr.flush()
        _shown = 0
