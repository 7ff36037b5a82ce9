"""How good a codec is on a folder of media: every file encoded to `.vq` bytes at each quality level,
decoded, and measured against the original.

Audio is compared at the model's sample rate (each file read and resampled to it once), every
channel on its own; images are coded in their own mode, as `encode` codes them (alpha included), and
compared in RGB. The rate is the real file size: bytes x 8 over the duration (kbps) or over the
pixels (bpp), header included. Speeds are one run, on however many threads torch
is given. PESQ (wide band, 16 kHz models only) and STOI are measured where the `bench` extra's
pesq and pystoi are installed.
"""
from __future__ import annotations

import importlib.util
import math
import numbers
import os
import time
import warnings
from pathlib import Path

import numpy as np

from . import metrics, wording
from .errors import VQCodecError
from .folders import check_callbacks, check_file_list, checked_folder_path, warn_of_level
from .imageio import image_to_planes, open_image
from .io import kind_by_name
from .ratecontrol import RateUnreachable
from .soundio import read_audio
from .streams import why_missing
from .wording import kind_coded, rate_unit, shown

LEVEL_WARNING = "the audio is coded at"  # how Codec.level_warning begins for audio given as an array


def _optional(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def default_levels(codec) -> list[int]:
    """The quality levels measured where none are given: 1, 2, 4, 8, ... and the model's highest."""
    highest = codec.num_codebooks
    return sorted({2 ** k for k in range(highest.bit_length())} | {highest})


def evaluate(codec, files: list[Path], qualities: list[int] | None = None, log=None,
             targets: list[float] | None = None, on_skip=None, on_warning=None) -> dict:
    """Per quality level (`qualities`, None: default_levels), the mean rate and quality over the files that could
    be read, and speeds; the files that could not, with the reason (each also given to `on_skip(path, reason)` as it is
    skipped, before the error that no file could be measured where none could). A recording coded above
    full scale (Codec.level_warning) gets one warning naming it, given to `on_warning(line)`, else a UserWarning.

    With `targets` (kbps for audio, bits per pixel for images), one row per target instead: every
    file coded as `encode --bitrate` / `--bpp` would, at most `qualities`' one level of codebooks (None: all).
    A file too short to fit a target is left out of that row only (its `unreached` count); a row
    that no file reached has the fields of the others, None for its rate, speeds and measures."""
    check_file_list(files, "media")
    check_callbacks(log=log, on_skip=on_skip, on_warning=on_warning)
    if qualities is None:
        qualities = default_levels(codec) if targets is None else [codec.num_codebooks]
    for name, values in (("qualities", qualities), ("targets", targets)):
        if values is not None and _one_value(values):  # a number raised a bare TypeError
            raise VQCodecError(f"{name} is a list of numbers, not {shown(values)}: give [{shown(values)}] for one")
    qualities = list(dict.fromkeys(codec.check_quality(q) for q in qualities))  # each once, as the rows' keys
    if not qualities:
        raise VQCodecError("qualities must hold at least one quality level")
    if targets is not None:
        targets = _checked_targets(targets, rate_unit(codec.kind))
        if len(qualities) != 1:  # the levels after the first were left out without a word
            raise VQCodecError(f"with targets, qualities takes one level: the most codebooks a file may use, not "
                               f"{shown(qualities)}")
    settings = [(qualities[0], t) for t in targets] if targets else [(q, None) for q in qualities]
    measure = _measure_audio if codec.kind == "audio" else _measure_image
    if codec.kind == "audio":
        warm_up = np.zeros((1, codec.sample_rate), np.float32)
    else:
        from PIL import Image
        warm_up = Image.new("RGB", (64, 64))
    measure(codec, warm_up, qualities[0])  # first calls pay one-time costs that the speeds should not show
    scores: dict[tuple, list[dict]] = {setting: [] for setting in settings}
    unreached = {setting: 0 for setting in settings}
    used, skipped = [], []
    for number, path in enumerate(files, 1):
        try:
            if Path(path).suffix.lower() == ".vq":  # read as audio, it said "Format not recognised"
                raise VQCodecError(vq_file_given(path))
            media = (read_audio(path, codec.sample_rate)[0] if codec.kind == "audio"
                     else open_image(path, fits=codec.check_image_encode_fits))
            per_setting = {}
            with warnings.catch_warnings():  # encode_audio's, "the audio is coded at ...", at each setting
                warnings.filterwarnings("ignore", message=LEVEL_WARNING, category=UserWarning)
                for setting in settings:
                    try:
                        per_setting[setting] = measure(codec, media, *setting)
                    except RateUnreachable:
                        unreached[setting] += 1
            warn_of_level(codec, path, on_warning)  # of the last setting's encoding
        except VQCodecError as exc:
            skipped.append({"file": str(path), "reason": str(exc)})
            if on_skip:
                on_skip(path, str(exc))
            continue
        used.append(str(path))
        for setting, score in per_setting.items():
            scores[setting].append(score)
        if log and number % 10 == 0:
            log(f"measured {number}/{len(files)} files")
    if not used:
        raise VQCodecError(f"no file could be measured ({skipped[0]['reason']})" if skipped else "no files")
    measures = dict.fromkeys(_measure_names(codec))
    rows = []
    for setting in settings:
        quality, target = setting
        row = {"quality": quality, **({"target": target, "unreached": unreached[setting]} if targets else {}),
               "rate": None, "encode_speed": None, "decode_speed": None, **measures}
        if scores[setting]:
            total = {key: sum(s[key] for s in scores[setting])
                     for key in ("bytes", "units", "encode_s", "decode_s", "count")}
            row.update(rate=8 * total["bytes"] / total["units"] / (1000 if codec.kind == "audio" else 1),
                       encode_speed=total["count"] / max(total["encode_s"], 1e-9),
                       decode_speed=total["count"] / max(total["decode_s"], 1e-9))
            for key in measures:
                row[key] = _mean([s["metrics"].get(key) for s in scores[setting]])
        rows.append(row)
    return {"model": codec.name, "model_id": codec.model_id.hex(), "kind": codec.kind, "files": used,
            "skipped": skipped, "rows": rows}


def files_of(codec, path, passed_over: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The files that eval measures of `path`: the file itself, or a folder's files of the codec's kind, read
    recursively and sorted (data.find_media: .NAME files and folders left out), a second name of one file left out
    with a `skipping` line (data.one_name_each); names of that kind that are not regular files (a link to nothing, a
    FIFO) are added to `passed_over`, where given, with why. Refused (VQCodecError): a .vq file, a file whose
    extension names the other kind (one without a media extension is read, as encode reads it), anything else that
    is not a file or a folder, a folder without a file of the codec's kind, and a `path` that is no str or Path or is
    empty ("" measured the current folder)."""
    from .data import find_media, one_name_each

    checked_folder_path("path", path, "a file or folder")
    if Path(path).is_file():
        if Path(path).suffix.lower() == ".vq":
            raise VQCodecError(vq_file_given(path))
        if kind_by_name(path) not in (None, codec.kind):
            raise VQCodecError(f"{path}: not {'an audio file' if codec.kind == 'audio' else 'an image'} "
                               f"(model {codec.name} codes {kind_coded(codec.kind)}) by its extension")
        return [Path(path)]
    if Path(path).is_dir():
        return one_name_each(find_media(Path(path), codec.kind, None, passed_over)[1])
    if os.path.exists(path) or str(path) == "-":
        raise VQCodecError(f"{path}: not a regular file or a directory ({wording.setting('eval', 'evaluate')} reads "
                           "no stdin, pipes or devices)")
    raise VQCodecError(f"{path}: {why_missing(path, wording.FILE_OR_FOLDER_MISSING)}")


def vq_file_given(path) -> str:
    """What eval (and evaluate, of each file it skips) says of a .vq file given as media to measure."""
    return (f"{path}: a .vq file; {wording.setting('eval', 'evaluate')} measures a model on the original media, "
            "which it codes")


def _one_value(values) -> bool:
    """Whether what should be a sequence of numbers (a list, tuple, range or array) is one value."""
    return isinstance(values, (str, bytes, numbers.Number)) or not hasattr(values, "__iter__") \
        or (isinstance(values, np.ndarray) and values.ndim == 0)


def _checked_targets(targets, unit: str) -> list[float]:
    """The target rates as floats; refused unless each is a positive number (each file was skipped as if it
    could not be read) and there is one at least (none, or a generator that the check used up, measured the quality
    levels as if no targets were given)."""
    targets = list(targets)
    if not targets:
        raise VQCodecError(f"targets must hold at least one rate ({unit}); None measures quality levels instead")
    if not all(isinstance(t, numbers.Real) and not isinstance(t, bool) and 0 < t < math.inf for t in targets):
        raise VQCodecError(f"targets must be positive numbers of {unit}, not {targets!r}")
    return list(dict.fromkeys(float(t) for t in targets))  # each once: a repeated one counted its files twice


def _measure_names(codec) -> list[str]:
    """The measures each row holds, measured or not (a row that no file reached has them too)."""
    if codec.kind == "image":
        return ["psnr", "ms_ssim"]
    return (["si_sdr", "log_mel"] + (["pesq"] if codec.sample_rate == 16000 and _optional("pesq") else [])
            + (["stoi"] if _optional("pystoi") else []))


def _measure_audio(codec, audio: np.ndarray, quality: int, max_kbps: float | None = None) -> dict:
    """`units` are seconds and `count` seconds too: speeds come out as multiples of real time."""
    rate = codec.sample_rate
    if audio.shape[1] == 0:
        raise VQCodecError("empty audio")
    start = time.perf_counter()
    data = codec.encode_audio(audio, rate, quality, max_kbps, channels=audio.shape[0])  # a file's: (channels, samples)
    encoded = time.perf_counter()
    decoded, _ = codec.decode_audio(data)
    done = time.perf_counter()
    seconds = audio.shape[1] / rate
    values = {"si_sdr": [], "log_mel": [], "pesq": [], "stoi": []}
    for reference, output in zip(audio, decoded):
        values["si_sdr"].append(metrics.si_sdr(reference, output))
        values["log_mel"].append(metrics.log_mel_l1(reference, output, rate))
        if rate == 16000 and _optional("pesq"):
            values["pesq"].append(metrics.pesq_wb(reference, output, rate))
        if _optional("pystoi"):
            values["stoi"].append(metrics.stoi_score(reference, output, rate))
    measured = {key: _mean(v) for key, v in values.items() if v}
    return {"bytes": len(data), "units": seconds, "count": seconds, "encode_s": encoded - start,
            "decode_s": done - encoded, "metrics": measured}


def _measure_image(codec, image, quality: int, max_bpp: float | None = None) -> dict:
    """`units` are pixels and `count` images: speeds come out as images a second. The image is coded
    in its own mode, as `encode` codes it (alpha, 16-bit grey, palettes: all in the file size), and
    compared on the RGB planes the codec codes and decodes."""
    rgb = image_to_planes(image)[0]
    start = time.perf_counter()
    data = codec.encode_image(image, quality, max_bpp)
    encoded = time.perf_counter()
    decoded = image_to_planes(codec.decode_image(data))[0]
    done = time.perf_counter()
    try:
        ms_ssim = metrics.ms_ssim(rgb, decoded)
    except ValueError:  # too small for five scales
        ms_ssim = None
    return {"bytes": len(data), "units": rgb.shape[0] * rgb.shape[1], "count": 1, "encode_s": encoded - start,
            "decode_s": done - encoded, "metrics": {"psnr": metrics.psnr(rgb, decoded), "ms_ssim": ms_ssim}}


COLUMNS = {  # key: (heading, digits; None: as given, e.g. 0.075)
    "target": ("target kbps", None), "unreached": ("unreached", 0), "quality": ("q", 0), "rate": ("kbps", 3),
    "pesq": ("PESQ-WB", 3), "stoi": ("STOI", 4), "log_mel": ("log-mel L1", 4),
    "si_sdr": ("SI-SDR dB", 1), "psnr": ("PSNR dB", 2), "ms_ssim": ("MS-SSIM", 4),
    "encode_speed": ("encode xRT", 1), "decode_speed": ("decode xRT", 1),
}


def _cell(key: str, value) -> str:
    """A table's cell: the column's digits, but for a speed below 1 (a slow image encode), which keeps two
    significant ones, '0.043' where one decimal gave '0.0'."""
    if value is None:
        return "—"
    digits = COLUMNS[key][1]
    if digits is None:
        return f"{value:g}"
    if key.endswith("_speed") and 0 < value < 1:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def table(report: dict) -> str:
    """The report's rows as an aligned Markdown table."""
    rows = report["rows"]
    keys = [key for key in COLUMNS if any(row.get(key) is not None for row in rows)]
    headings = [COLUMNS[key][0] for key in keys]
    if report["kind"] == "image":
        headings = [{"kbps": "bpp", "target kbps": "target bpp", "encode xRT": "encode img/s",
                     "decode xRT": "decode img/s"}.get(h, h)
                    for h in headings]
    cells = [[_cell(key, row.get(key)) for key in keys] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headings)]
    lines = ["| " + " | ".join(h.rjust(w) for h, w in zip(headings, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)
