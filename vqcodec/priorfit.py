"""Fitting a model's entropy-coding prior to the codes of files (fit-prior, and train once a run ends): the
codes of each file and of its other views, and the model files the fitted prior is written into."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import soxr

from .data import read_media
from .errors import VQCodecError
from .streams import checked_flag
from .modelfile import attach_prior, model_files_locked, model_files_read_locked
from .registry import find_model
from .trainoptions import model_name_problem
from .wording import setting, shown, skipping


# Training folders are small: the tens of photos or the hour of speech that train a codec give too
# few codes for the context tables, and the codes of files the network has trained on come out more
# predictable than those of new files. So, for folders of fewer than PRIOR_VIEWS_MAX_FILES files,
# the prior is also fitted to the codes of other views of each file: a photo turned a quarter turn
# and scaled down, a recording played faster and slower (see docs/ENTROPY.md for what this saves).
PRIOR_VIEWS_MAX_FILES = 1000
PRIOR_VIEW_SCALES = (0.71, 0.5)      # photos
PRIOR_VIEW_SPEEDS = (1.1, 0.9)       # recordings: tempo and pitch together, as in speed perturbation


def prior_views(media: np.ndarray, kind: str, sample_rate: int = 0) -> list[np.ndarray]:
    """A file's media and the other views of it the prior is fitted to: a photo (uint8 RGB, height x
    width x 3), a quarter turn of it and its PRIOR_VIEW_SCALES; a recording (float32 channels x
    samples at `sample_rate`) and its PRIOR_VIEW_SPEEDS."""
    if kind == "audio":
        return [media] + [np.ascontiguousarray(soxr.resample(media.T, sample_rate * speed, sample_rate).T)
                          for speed in PRIOR_VIEW_SPEEDS]
    from PIL import Image

    photo = Image.fromarray(media)
    views = [media, np.ascontiguousarray(np.rot90(media))]
    for scale in PRIOR_VIEW_SCALES:
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        views.append(np.asarray(photo.resize(size, Image.LANCZOS)))
    return views


# A progress line every 25 files, and at least this often: a folder of whole songs took minutes for its first 25
PROGRESS_SECONDS = 10


def collect_codes(codec, files: list[Path], log=None, views: bool = False,
                  progress=None) -> tuple[list[np.ndarray], list[int]]:
    """Code planes of every file at full quality, and the index of the file each plane comes from.

    Planes are (levels, frames) per audio channel and (levels, rows, cols) per image; with `views`,
    each file also gives the planes of its prior_views."""
    planes, groups = [], []
    progress = progress or log
    start = said = time.monotonic()
    for number, path in enumerate(files, 1):
        try:
            media = read_media(codec.kind, path, codec.sample_rate)  # what a training run has said of it, not again
            coded = []
            for view in prior_views(media, codec.kind, codec.sample_rate) if views else [media]:
                if codec.kind == "audio":
                    coded.extend(np.asarray(codec.audio_to_codes(view, codec.num_codebooks, channels=view.shape[0])))
                else:
                    coded.append(np.asarray(codec.image_to_codes(view, codec.num_codebooks)))
        except VQCodecError as exc:
            if log:
                log(skipping(path, str(exc)))
        else:
            planes.extend(coded)
            groups.extend([number - 1] * len(coded))
        now = time.monotonic()
        if progress and (number % 25 == 0 or number == len(files) or now - said >= PROGRESS_SECONDS):
            progress(f"coded {number}/{len(files)} files ({now - start:.0f} s)")
            said = now
    return planes, groups


def fit_prior_files(model_path: Path, files: list[Path], out: Path | None = None, device: str = "cpu", log=None,
                    progress=None, replace_shipped: bool = False) -> Path:
    """Fit a CodePrior to the codes the model gives `files` and store it in the model files (or in a copy at `out`,
    model_copy_path); `log` is told what is done, and `progress` (else `log`) how many files are coded, every 25.
    A shipped model's files are written only with `replace_shipped` (refuse_replacing_a_shipped_model). The lock of
    the folder written in (model_files_locked) is held from the start, so that another run writing there is refused
    before the fit, and the model cannot change between the fit and the write; a shared one of the folder the model
    is read from where that is another (model_files_read_locked), so that no run replaces it meanwhile either."""
    model_path = find_model(str(model_path))
    out = None if out is None else model_copy_path(out)  # before the files are coded, which takes minutes
    refuse_replacing_a_shipped_model(out or model_path, out is not None, replace_shipped)
    with model_files_locked(out if out is not None else model_path), model_files_read_locked(model_path):
        return _fit_and_attach_prior(model_path, files, out, device, log, progress)


def _fit_and_attach_prior(model_path: Path, files: list[Path], out: Path | None, device: str, log, progress) -> Path:
    """fit_prior_files, once the model is found and the folder locked."""
    from .codec import AUDIO_CHUNK_FRAMES, IMAGE_CHUNK_ROWS, Codec
    from .prior import CodePrior, check_codebook_size

    began = time.monotonic()
    codec = Codec.load(str(model_path), device=device, coding="fixed")
    check_codebook_size(codec.codebook_size)  # before coding the folder
    views = len(files) < PRIOR_VIEWS_MAX_FILES
    if views and log:
        if codec.kind == "audio":
            speeds = " and ".join(f"{speed:g}x" for speed in PRIOR_VIEW_SPEEDS)
            log(f"fitting the prior to each recording and to it played at {speeds} speed")
        else:
            scales = " and ".join(f"{scale:.0%}" for scale in PRIOR_VIEW_SCALES)
            log(f"fitting the prior to each photo, a quarter turn of it, and it scaled to {scales}")
    coding_began = time.monotonic()
    planes, groups = collect_codes(codec, files, log, views=views, progress=progress)
    coding_seconds = time.monotonic() - coding_began
    if not planes:
        raise VQCodecError("no readable media to fit the prior to")
    chunk = AUDIO_CHUNK_FRAMES if codec.kind == "audio" else IMAGE_CHUNK_ROWS
    prior = CodePrior.fit(planes, codec.codebook_size, codec.kind, chunk, log=log, groups=groups)
    codebooks = [layer.codebook.detach().float().cpu().numpy() for layer in codec.model.quantizer.layers]
    prior = prior.with_network_tables(planes, groups, codebooks, chunk, log=log)
    path = attach_prior(model_path, prior, out)
    if log:
        codes = sum(p.size for p in planes)
        per_level = sum(prior.ideal_bits(p[None] if codec.kind == "audio" else p) for p in planes)
        for line in prior_summary(prior, per_level / sum(p[0].size for p in planes)):
            log(line)
        log(f"prior {prior.prior_id:08x} fitted in {time.monotonic() - began:.0f} s "
            f"(coding the files: {coding_seconds:.0f} s): "
            f"{per_level.sum() / codes:.3f} bits per code on the fitting data "
            f"(fixed width: {np.ceil(np.log2(codec.codebook_size)):.0f}); wrote {path}")
    return path


def model_copy_path(out: str | Path) -> Path:
    """The NAME.safetensors that fit_prior_files writes a model's copy to, given `out`: NAME, NAME.safetensors or
    NAME.json in a folder that exists. A folder, another suffix (runs/v1.2 wrote runs/v1.safetensors, and a folder
    wrote a model beside it) or a name no model can have (model_name_problem: runs/checkpoint replaced a training
    run's checkpoint with a model) is refused; `vqcodec fit-prior --out` is checked by it."""
    if not isinstance(out, (str, Path)):
        raise VQCodecError(f"out is the path of the model to write, not {shown(out)}")
    given, candidate = setting(f"--out {out}", f"out={shown(str(out))}"), Path(out)
    if candidate.is_dir() or str(out).endswith(("/", os.sep)):
        raise VQCodecError(f"{given} names a folder: give the path of the model to write, such as "
                           f"{candidate / 'NAME'}.safetensors")
    if candidate.suffix not in ("", ".safetensors", ".json"):
        raise VQCodecError(f"{given} is not a model path (NAME or NAME.safetensors): give {out}.safetensors")
    name = candidate.stem if candidate.suffix else candidate.name
    problem = model_name_problem(name)
    if problem:
        raise VQCodecError(f"{given} is not a model path: the model name {shown(name)} {problem}")
    target = candidate.with_suffix(".safetensors")
    if not target.parent.is_dir():
        raise VQCodecError(f"{given}: {target.parent} is not a folder" if target.parent.exists()
                           else f"{target.parent}: no such directory")
    return target


def refuse_replacing_a_shipped_model(written: Path, copy: bool, replace_shipped: bool) -> None:
    """Refuse to write the files of a shipped model (`written`: the model refitted in place, or the `copy` that
    fit_prior_files' out names) without `replace_shipped` (fit-prior's --force): every file entropy coded with it
    needs its prior, and those files stopped decoding; `vqcodec fit-prior` is checked by it (--force)."""
    from .registry import shipped_models_dir

    shipped = shipped_models_dir() / written.name
    if checked_flag("replace_shipped", replace_shipped) or not shipped.exists() \
            or os.path.realpath(written) != os.path.realpath(shipped):  # not Path.resolve: it raises for a link loop
        return
    force = setting("--force", "replace_shipped=True")
    if copy:
        raise VQCodecError(f"{setting('--out', 'out=')} {written} names the files of {written.stem}, a shipped model, "
                           f"and every file entropy coded with it needs its prior: give another one, or {force} to "
                           "replace them")
    raise VQCodecError(f"{written.stem} is a shipped model, and every file entropy coded with it needs its prior: give "
                       f"{setting('--out', 'out=')} for a copy with the new prior, or {force} to replace it")


def prior_summary(prior, fitting_bits) -> list[str]:
    """One line per codebook level of a fitted prior: the context it chose (the neighbours it predicts
    each code from, and whether from counts or a network-fitted table), the bits per code that choice
    gave the held-out codes, and `fitting_bits`, the bits per code of that level on the fitting data."""
    lines = []
    for index, (level, bits) in enumerate(zip(prior.levels, fitting_bits)):
        chosen = level.info.get("chosen")
        network = (chosen or "").endswith("/network")
        sources = "+".join(level.sources) or "none (unigram)"
        held = level.info["network"]["heldout_bits"] if network else level.info.get("heldout_bits", {}).get(chosen)
        lines.append(f"level {index}: chose context {sources}, {'a network-fitted table' if network else 'counts'}: "
                     + (f"{held:.3f} bits per held-out code, " if held is not None else "(too few codes to hold some "
                        "out), ")
                     + f"{float(bits):.3f} bits per code on the fitting data")
    return lines
