"""Shared helpers for the benchmark scripts (speech, image).

Metrics, file listing, a median-of-runs timer, machine description and a
Markdown table printer. Nothing here depends on a particular codec.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so `import vqcodec` works from a checkout
    sys.path.insert(0, str(REPO_ROOT))


def _bad_input_in_one_line(kind, error, trace) -> None:
    """sys.excepthook of every benchmark (each imports this module): vqcodec's error for bad input (a model
    that is not there, a file it cannot read) is one line, as the vqcodec command prints it, and status 1;
    anything else keeps its traceback."""
    from vqcodec.errors import VQCodecError

    if issubclass(kind, VQCodecError):
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, trace)


sys.excepthook = _bad_input_in_one_line


# --------------------------------------------------------------------------- files

def numbers(text: str, kind=float) -> list:
    """A comma-separated command-line list of numbers ("0.1,0.2,0.3"; of whole numbers with kind=int)."""
    return [kind(v) for v in text.split(",") if v.strip()]


def number_list(kind=float, empty: bool = False) -> Callable[[str], str]:
    """An argparse type for a comma-separated list of numbers of `kind` (the scripts split it themselves):
    the text, once each value is one, so that a misspelt or missing one ("4,x", "4,") is refused as the
    argument instead of failing later; "" (no values) only where `empty` allows it."""
    import argparse

    def checked(text: str) -> str:
        try:
            [kind(value) for value in (text.split(",") if text.strip() or not empty else [])]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {'whole ' if kind is int else ''}"
                                             f"numbers: {text!r}") from None
        return text
    return checked


def case_list(names: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for --cases: a comma-separated list of some of `names`, as a list; one that is not among
    them, or none at all, is refused as the argument."""
    import argparse

    def cases(text: str) -> list[str]:
        chosen = [case.strip() for case in text.split(",") if case.strip()]
        if not chosen or any(case not in names for case in chosen):
            raise argparse.ArgumentTypeError(f"cases are {', '.join(names)}, not {text!r}")
        return chosen
    return cases


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""
    import argparse

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"not a whole number of at least {minimum}: {text!r}")
        return value
    return whole_number


positive_int = at_least(1)


def seconds_or_minutes(zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a length of audio: a finite number above 0 (or 0 too, with `zero`: none)."""
    import argparse
    import math

    def length(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"not a number {'of at least 0' if zero else 'above 0'}: {text!r}")
        return value
    return length


def require_folders(*folders) -> None:
    """Stop with one line, before any work, where a data folder that the benchmark reads is missing."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise SystemExit(f"data directory not found: {folder}")


def list_files(directory, extensions: Iterable[str], limit: int | None = None) -> list[Path]:
    """Files in `directory` (recursively, as vqcodec's folder commands walk it: vqcodec.folders.files_under,
    which leaves hidden files and folders out) whose suffix is in `extensions`, sorted by path; the first
    `limit` of them when `limit` is given. Names of those suffixes that are not regular files (a link to nothing,
    a FIFO) are left out with the line vqcodec's folder commands give them (skipped_names)."""
    from vqcodec.folders import files_under

    directory = Path(directory)
    require_folders(directory)
    wanted = {e.lower().lstrip(".") for e in extensions}
    passed_over: list[tuple[Path, str]] = []
    files = [p for p in files_under(directory, passed_over=passed_over) if p.suffix.lower().lstrip(".") in wanted]
    files = skipped_names(files, [(p, why) for p, why in passed_over if p.suffix.lower().lstrip(".") in wanted], limit)
    if not files:
        raise SystemExit(f"no {'/'.join(sorted(wanted))} files in {directory}")
    return files


def find_media(folder, kind: str | None, limit: int | None = None) -> tuple[str, list[Path]]:
    """vqcodec.data.find_media's kind and files (the first `limit` of them when `limit` is given), with the line
    vqcodec's folder commands give each name of that kind it passes over (skipped_names)."""
    from vqcodec.data import find_media as find

    passed_over: list[tuple[Path, str]] = []
    kind, files = find(Path(folder), kind, None, passed_over)
    return kind, skipped_names(files, passed_over, limit)


def skipped_names(files: list[Path], passed_over: list[tuple[Path, str]], limit: int | None) -> list[Path]:
    """The first `limit` of `files` (all without one), once a `skipping NAME: WHY` line is said for each name passed
    over among them (data.say_passed_over, as `vqcodec train` and `fit-prior` say it): those sorted before the
    last file taken, whose place the run would have read."""
    from vqcodec.data import say_passed_over

    if limit is not None and len(files) > limit:
        files = files[:limit]
        passed_over = [(path, why) for path, why in passed_over if files and path < files[-1]]
    say_passed_over(passed_over)
    return files


def shift_signal(signal: np.ndarray, shift: int) -> np.ndarray:
    """Advance a 1-D signal by `shift` samples (delay it when negative), keeping its length:
    out[n] = signal[n + shift], zeros where that falls outside."""
    signal = np.asarray(signal, dtype=np.float32).reshape(-1)
    if shift == 0:
        return signal
    out = np.zeros_like(signal)
    if shift > 0:
        out[:signal.size - shift] = signal[shift:]
    else:
        out[-shift:] = signal[:signal.size + shift]
    return out


def best_shift(references: Sequence[np.ndarray], degraded: Sequence[np.ndarray],
               max_shift: int = 1) -> int:
    """One integer shift for a whole set (same for every file), |shift| <= max_shift, that
    maximises the mean SI-SDR: compensates a codec's residual (sub-)sample delay without
    aligning files one by one. 0 when even the best mean SI-SDR is not positive."""
    scores = {s: np.mean([si_sdr(r, shift_signal(fit_length(d, np.size(r)), s))
                          for r, d in zip(references, degraded)])
              for s in range(-max_shift, max_shift + 1)}
    best = max(scores, key=lambda s: (scores[s], -abs(s)))
    # a codec that does not match the waveform (SI-SDR <= 0 dB: parametric, e.g. Codec 2)
    # has no meaningful sample alignment: leave it alone
    return best if scores[best] > 0 else 0


# --------------------------------------------------------------------------- what a benchmark needs

SPEECH_METRICS = ("pesq", "pystoi")  # PESQ-WB and STOI, from the bench extra


def require_modules(*names: str) -> None:
    """Stop with one line, before any work, where a Python package that the benchmark needs is not
    installed (the bench extra's pesq, pystoi and matplotlib), instead of a traceback once it is used."""
    import importlib.util

    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"missing Python packages: {' '.join(missing)} (pip install '.[bench]' in the repository "
                         "root)")


# --------------------------------------------------------------------------- metrics

from vqcodec.metrics import (fit_length, log_mel_l1, pause_level_db, pesq_wb, si_sdr,  # noqa: E402,F401
                             stoi_score)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# --------------------------------------------------------------------------- timing

def time_median(function: Callable[[], object], runs: int):
    """Call `function` `runs` times (at least once); return (median seconds, last result)."""
    durations, result = [], None
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        result = function()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations), result


class Stopwatch:
    """Accumulates wall-clock time over several `with watch:` blocks."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
        return False


# --------------------------------------------------------------------------- reporting

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int | None = None) -> dict:
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads() if threads is None else threads
        info["cpu_amx"] = bool(torch.cpu._is_amx_tile_supported())
        info["cpu_avx512_bf16"] = bool(torch.cpu._is_avx512_bf16_supported())
    except (ImportError, AttributeError):
        pass
    return info


def repro_command(argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces this run, relative to the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in ["python", str(script), *argv[1:]])


def format_value(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], digits: Sequence[int] | int = 2,
                   align: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table. `digits` is the number of decimals for float cells (one value,
    or one per column); `align` is 'l' or 'r' per column (default: text left, numbers right)."""
    ncol = len(headers)
    digits = [digits] * ncol if isinstance(digits, int) else list(digits)
    cells = [[format_value(v, digits[i]) for i, v in enumerate(row)] for row in rows]
    if align is None:
        align = ["r" if rows and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
                 else "l" for i in range(ncol)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if a == "r" else v.ljust(w)
                                 for v, w, a in zip(values, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def side_by_side_axes(height: float):
    """A figure of two plots side by side (matplotlib, headless), for an RD plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=(12, height))


def save_figure(fig, path, title: str, dpi: int) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def save_json(path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")


# --------------------------------------------------------------------------- priors

def bits_per_code(prior, planes, chunk: int, kind: str) -> np.ndarray:
    """Ideal bits per code of each level, over whole container chunks."""
    bits, count = np.zeros(prior.num_levels), 0
    for plane in planes:  # audio (levels, frames), images (levels, rows, cols)
        for start in range(0, plane.shape[-1 if kind == "audio" else 1], chunk):
            bits += prior.ideal_bits(plane[None, :, start:start + chunk] if kind == "audio" else plane[:, start:start + chunk])
        count += plane[0].size
    return bits / count


def add_model_options(parser, out: str) -> None:
    """The options of a benchmark that measures the shipped speech and image models: which models,
    which to skip, and where to write the JSON record."""
    parser.add_argument("--speech-model", default="speech16k",
                        help="speech model name or .safetensors path (default: %(default)s)")
    parser.add_argument("--image-model", default="image",
                        help="image model name or .safetensors path (default: %(default)s)")
    parser.add_argument("--skip-speech", action="store_true", help="leave the speech model out")
    parser.add_argument("--skip-images", action="store_true", help="leave the image model out")
    parser.add_argument("--out", default=out, help="JSON file of the results ('' for none; default: %(default)s)")


def vqcodec_checkout(text: str) -> str:
    """An argparse type for --source: a folder that holds the vqcodec package (a checkout's root)."""
    import argparse

    if not (Path(text) / "vqcodec" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text} holds no vqcodec package: give the root of a checkout (git worktree "
                                         "add ../vqcodec-COMMIT COMMIT makes one)")
    return text


def add_source_option(parser) -> None:
    """--source: the checkouts whose vqcodec a benchmark runs, to compare them in the same run."""
    parser.add_argument("--source", action="append", default=None, type=vqcodec_checkout,
                        help="Folder holding the vqcodec package to run (default this checkout); give it more than "
                             "once to measure each in the same run.")
