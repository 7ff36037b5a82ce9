"""Counted nouns for the messages the command line prints: "1 file", "2 files"."""
from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, with an "s" unless count is 1."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def skipping(path, reason: str) -> str:
    """A folder command's line for a file it leaves out: its path once, whether or not `reason` names it."""
    return f"skipping {reason}" if str(path) in reason else f"skipping {path}: {reason}"
