"""Training data: the media files of a folder, the files held out for validation, and random
training crops.

A folder whose decoded media fit in IN_MEMORY_BYTES is read once and cropped from memory. A larger
one is never loaded whole: each crop is read from its file when it is needed (audio by seeking to
the crop, images by decoding the one photo), so the memory a run needs does not grow with the
folder (its files are read once first, block by block, to leave out the channels of NaN or
infinite samples that loading would leave out). Either way, `Batches` makes the next batch in
worker threads while a training step runs.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soxr
import torch

from . import parallel, progressline
from .errors import VQCodecError
from .imagedata import PILLOW_READ_ERRORS
from .imageio import (check_pixel_count, image_opened, pillow_log_caught, pillow_refusal, read_image_rgb,
                      unreadable_image, warn_of_pillow_warnings, warnings_recorded)
from .io import media_kind_of
from .soundio import (SOUNDFILE_ERRORS, decoder_lines, open_sound, read_audio, sound_blocks, unreadable_audio,
                      warn_decoder_lines)
from .streams import EmptyInput, file_id, refuse_empty_media
from .wording import one_line, plural, setting, skipping

IN_MEMORY_BYTES = 2 * 2**30      # decoded training media up to this size are held in memory
RESAMPLE_MARGIN_SECONDS = 0.02   # read on both sides of a crop that is resampled, for the filter's sake
MAX_BATCH_WORKERS = 8


def default_batch_workers(processes: int = 1) -> int:
    """Threads that make batches: this process's share of the CPU cores, at most MAX_BATCH_WORKERS."""
    return max(1, min(MAX_BATCH_WORKERS, (os.cpu_count() or 1) // processes))
NOISE_SNR_DB = (10.0, 40.0)
NOISE_MAX_SLOPE = 2.0  # power spectrum ~ 1/f**slope: 0 white, 1 pink, 2 brown


def find_media(folder: Path, kind: str | None, leave_out: Path | None = None,
               passed_over: list[tuple[Path, str]] | None = None) -> tuple[str, list[Path]]:
    """All files of one media kind under `folder`, recursively, sorted (without what is under
    `leave_out`: vqcodec.folders.files_under); the names of that kind that are not regular files (a link to
    nothing, a FIFO) are added to `passed_over`, where given, with why."""
    from .folders import files_under, left_out_note

    check_media_kind(kind)
    others: list[tuple[Path, str]] = []
    files = [p for p in files_under(folder, leave_out, others) if media_kind_of(p)]
    others = [(path, reason) for path, reason in others if media_kind_of(path)]
    if kind is None:
        kinds = {media_kind_of(p) for p in files}
        if not kinds:
            raise VQCodecError(f"{folder}: no audio or image files found{left_out_note(folder, others)}")
        if len(kinds) != 1:
            raise VQCodecError(f"{folder}: cannot tell the media kind ({', '.join(sorted(kinds))}); "
                               + setting("pass --kind audio|image", "pass kind='audio' or kind='image'"))
        kind = kinds.pop()
    found = [p for p in files if media_kind_of(p) == kind]
    others = [(path, reason) for path, reason in others if media_kind_of(path) == kind]
    if not found:
        other = (f" (only {'images' if kind == 'audio' else 'audio files'})" if files
                 else left_out_note(folder, others))
        raise VQCodecError(f"{folder}: no {kind} files found{other}")
    if passed_over is not None:
        passed_over += others
    return kind, found


def image_size(path: Path) -> tuple[int, int]:
    """A photo's width and height, from its header. One that cannot be read raises VQCodecError naming it, which
    says why as open_image does (imageio.pillow_refusal): what Pillow logs as it refuses it, and one that encoding
    refuses (imageio.check_pixel_count) instead of Pillow's DecompressionBombWarning, a Python warning on stderr.
    What Pillow warns of as it opens it is said as reading it says it, the first time only (_warn_of_photo)."""
    from PIL import Image

    logged: list[str] = []
    try:
        with warnings_recorded(ignore=(Image.DecompressionBombWarning,)) as caught, pillow_log_caught(logged), \
                contextlib.ExitStack() as held:
            refuse_empty_media(path)
            with image_opened(path, held)[0] as image:  # warnings_recorded, not catch_warnings: that is the process's
                size = image.width, image.height
        check_pixel_count(*size)
    except EmptyInput:
        raise
    except VQCodecError as exc:
        raise unreadable_image(path, exc) from None
    except (Image.DecompressionBombError, *PILLOW_READ_ERRORS) as exc:  # what Pillow raises of a file it cannot read
        raise unreadable_image(path, pillow_refusal(path, exc, logged)) from None
    with warnings_recorded() as named:
        warn_of_pillow_warnings(caught, path)
    _warn_of_photo(named, path)
    return size


# The audio files that a warning has named what the MP3 decoder said of: training opens and reads each
# file several times (readable_files, longest_length, decodes, AudioCrops), and says so once. A crop
# read from disk of one of them is made in the main thread (AudioCrops.made_in_main_thread).
_WARNED_AUDIO: set[str] = set()


def _warn_once(said: list[str], path: Path) -> None:
    """What the MP3 decoder `said` of `path` as one warning (soundio.warn_decoder_lines), the first time only,
    and in the first process alone: under torchrun every process reads the files alike, and the first alone says so,
    as it says their skipping lines (train._first_process_says)."""
    if said and str(path) not in _WARNED_AUDIO:
        _WARNED_AUDIO.add(str(path))
        if parallel.is_main():
            warn_decoder_lines(said, path)


# What has been warned of each photo (its path's): training opens a photo for its size several times
# (readable_files, longest_length, held_bytes, ImageCrops) and decodes it at each of its crops read from disk
# (and a held-out one to check it first), and says each thing reading it passed over once.
_WARNED_IMAGES: dict[str, set[str]] = {}


def _read_photo(path: Path) -> np.ndarray:
    """imageio.read_image_rgb, whose warnings (corrupt EXIF data, the frames of an animation) are given the first
    time only (_warn_of_photo)."""
    with warnings_recorded() as caught:
        image = read_image_rgb(path)
    _warn_of_photo(caught, path)
    return image


def _warn_of_photo(caught: list, path: Path) -> None:
    """Give the warnings `caught` while reading `path` that no read of it gave before, in the first process alone
    (as _warn_once); every process notes them as given."""
    if not caught:
        return
    given = _WARNED_IMAGES.setdefault(str(path), set())
    for item in caught:
        if str(item.message) not in given:
            given.add(str(item.message))
            if parallel.is_main():
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def check_media_kind(kind) -> None:
    """Refuse a `kind` that is neither "audio", "image" nor None (the folder's): "no video files found", it said."""
    if kind not in (None, "audio", "image"):
        raise VQCodecError(f"kind must be 'audio' or 'image' (or None: the folder's), not {kind!r}")


def read_media(kind: str, path: Path, sample_rate: int = 0) -> np.ndarray:
    """A whole file as training reads it, audio as float32 (channels, samples) at `sample_rate` or a photo as
    uint8 RGB, what reading it passes over said the first time only (_warn_once, _read_photo)."""
    if kind == "image":
        return _read_photo(path)
    said: list[str] = []
    audio = read_audio(path, sample_rate, said)[0]
    _warn_once(said, path)
    return audio


def _audio_header(path: Path) -> tuple[int, int, int]:
    """The frames, rate and channels that an audio file's header gives (soundio.open_sound)."""
    said: list[str] = []
    with open_sound(path, said) as sound:
        header = sound.frames, sound.samplerate, sound.channels
    _warn_once(said, path)
    return header


def one_name_each(files: list[Path], say=progressline.say) -> list[Path]:
    """`files` without a second name of one file (a link to it, symbolic or hard), each with a `skipping`
    line (`say`): training would train on it twice as often, or hold it out and train on it, and eval weigh it
    twice in the means. A file that cannot be examined is kept: reading it says why it cannot be read."""
    kept, names = [], {}
    for path in files:
        found = file_id(path)
        if found is None:
            kept.append(path)
            continue
        first = names.setdefault(found, path)
        if first == path:
            kept.append(path)
        else:
            _skip(path, f"the same file as {first}", say)
    return kept


def readable_files(kind: str, files: list[Path], folder: str = "the training folder",
                   say=progressline.say) -> list[Path]:
    """The files whose header soundfile (audio, with samples) or Pillow (images) reads, one name each
    (one_name_each); each other one gets a `skipping` line (`say`). Training splits these, so that an
    unreadable file is never the validation set; fit-prior fits to them (`folder` names the folder)."""
    kept = []
    for path in one_name_each(files, say):
        try:
            if kind == "audio":
                if _audio_header(path)[0] <= 0:
                    _skip(path, "no samples", say)
                    continue
            else:
                image_size(path)
            kept.append(path)
        except VQCodecError as exc:
            _skip(path, str(exc), say)
    if not kept:
        raise VQCodecError(f"no readable {kind} in {folder}")
    return kept


def longest_length(kind: str, files: list[Path], sample_rate: int = 0) -> int:
    """The most a crop can hold of `files` (readable_files'): the samples of the longest recording at
    `sample_rate`, or the longest side of the photos, in pixels."""
    if kind == "image":
        return max(max(image_size(path)) for path in files)
    lengths = []
    for path in files:
        frames, rate, _ = _audio_header(path)
        lengths.append(round(frames * sample_rate / rate))  # as AudioCrops holds it
    return max(lengths)


def decodes(kind: str, path: Path, say=progressline.say, decoded: dict[Path, str | None] | None = None) -> bool:
    """Whether the whole file decodes (audio block by block, in bounded memory) into something AudioCrops
    keeps, a channel of samples all finite; one that does not (a damaged file whose header reads, a
    recording of NaN samples alone) gets a `skipping` line, which `say` says. Where `decoded` is given, what
    holds_content finds of a file that decodes goes into it, so that holds_content need not decode it again."""
    if kind == "audio":
        variation = _Variation()
        found = _channel_finiteness(path, say, variation)
        if found is None:
            return False
        problem = _channel_problem(found[0], bool(found[1].any()))
        if problem:
            _skip(path, problem, say)
        elif decoded is not None:
            decoded[path] = variation.why_same()
        return not problem
    try:
        image = _read_photo(path)
    except VQCodecError as exc:
        _skip(path, str(exc), say)
        return False
    if decoded is not None:
        decoded[path] = None if (image != image[:1, :1]).any() else "it is of one colour"
    return True


class _Variation:
    """Whether the (channels, n) blocks of a recording, seen one by one, hold more than one value."""

    def __init__(self):
        self.first, self.varies = None, False

    def __call__(self, block: np.ndarray) -> None:
        self.first = block[:, :1] if self.first is None else self.first
        self.varies = self.varies or bool((block != self.first).any())

    def why_same(self) -> str | None:
        """Why the recording gives validation nothing to measure; None where it varies."""
        if self.varies:
            return None
        return "it is silent" if self.first is None or not self.first.any() else "every sample is the same"


def holds_content(kind: str, path: Path, say=progressline.say, decoded: dict[Path, str | None] | None = None) \
        -> bool:
    """Whether a file that decodes (decodes') gives validation something to measure: not a recording whose
    every channel holds one value throughout (silence) nor a photo of one colour (any 1x1 one), whose crops
    any model reconstructs nearly perfectly. One that does not gets a line, which `say` says, saying it is not
    held out. What decodes put in `decoded` of the file is taken from there; a file not there is decoded."""
    decoded = {} if decoded is None else decoded
    if path not in decoded and not decodes(kind, path, say, decoded):
        return False
    why = decoded.pop(path)
    if why:
        say(one_line(f"not holding {path} out for validation: {why}, which any model reconstructs; "
                     "it trains, and the next file is held out instead"))
    return why is None


def split_files(files: list[Path], usable=lambda path: True, validates=lambda path: True, say=progressline.say) \
        -> tuple[list[Path], list[Path]]:
    """Hold out every 20th file (at least one, when there are two or more) for validation. A file due
    to be held out that is not `usable` is left out of both, and one that is but that gives validation
    nothing to measure (not `validates`: holds_content) trains; either way the next one is held out instead,
    so that one damaged or silent file does not leave the validation set empty, or its loss meaningless.
    Where no file `validates`, the first of those passed over is held out all the same, as `say` says."""
    if len(files) < 2:
        return files, files
    train, held, passed_over, due = [], [], [], False
    for index, path in enumerate(files):
        due = due or index % 20 == 0
        if not due:
            train.append(path)
        elif not usable(path):
            continue
        elif validates(path):
            held.append(path)
            due = False
        else:
            train.append(path)
            passed_over.append(path)
    if not held and passed_over:
        held = [passed_over[0]]
        train.remove(held[0])
        say(one_line(f"holding {held[0]} out for validation all the same: no file holds more to validate on"))
    return (train, held) if train else (held, held)


def split_as_before(files: list[Path], folder: Path, held_out: list[str], usable=lambda path: True) \
        -> tuple[list[Path], list[Path]] | None:
    """A resumed run's split: the files its checkpoint held out (`held_out`, paths under `folder`) that are
    still there and `usable` stay held out and every other file trains, so that files added or removed
    since do not move trained files into the validation set. None when none of them is left."""
    names = set(held_out)
    held = [path for path in files if relative_name(path, folder) in names and usable(path)]
    if not held:
        return None
    train = [path for path in files if relative_name(path, folder) not in names]
    return train or held, held


def relative_name(path: Path, folder: Path) -> str:
    """How a checkpoint names a training file: its path under the training folder, with slashes."""
    return Path(path).relative_to(folder).as_posix()


def add_background_noise(clip: np.ndarray, rng: np.random.Generator,
                         snr_range_db: tuple[float, float] = NOISE_SNR_DB) -> np.ndarray:
    """`clip` plus stationary coloured noise at an SNR drawn from `snr_range_db`, so the codec learns to keep
    background noise.

    Both the input and the target of a training step are the noisy clip: the codec is taught to reproduce the
    noise, not to remove it. A silent clip is returned unchanged."""
    power = float(np.mean(clip.astype(np.float64) ** 2))
    if power == 0.0:
        return clip
    spectrum = np.fft.rfft(rng.standard_normal(clip.size))
    frequency = np.arange(spectrum.size, dtype=np.float64)
    frequency[0] = 1.0
    spectrum *= frequency ** (-rng.uniform(0.0, NOISE_MAX_SLOPE) / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=clip.size)
    snr_db = rng.uniform(*snr_range_db)
    noise *= math.sqrt(power / 10 ** (snr_db / 10) / max(float(np.mean(noise ** 2)), 1e-30))
    return (clip + noise).astype(clip.dtype)


def say_passed_over(passed_over: list[tuple[Path, str]], say=progressline.say) -> None:
    """A `skipping` line (`say`) for each name of a training folder that find_media passed over (not a regular
    file)."""
    for path, reason in passed_over:
        _skip(path, reason, say)


def _skip(path, reason: str, say=progressline.say) -> None:
    say(skipping(path, reason))


MAX_READ_ATTEMPTS = 8


def read_or_next(sources: list, index: int, read, unreadable: dict, role: str = "training"):
    """read(sources[index]), or, where that file cannot be read (damaged or removed since the folder
    was scanned), read() of the sources after it in turn, so that one bad file does not end a long
    run from disk. An unreadable file is reported once and passed over from then on, as its `skipping`
    line says (its path and error go into `unreadable`); `role` names the files in the error where none
    could be read."""
    tried = []
    for attempt in range(min(MAX_READ_ATTEMPTS, len(sources))):
        source = sources[(index + attempt) % len(sources)]
        last = unreadable.get(source.path)
        if last is None:
            try:
                return read(source)
            except VQCodecError as exc:
                last = exc
                if unreadable.setdefault(source.path, exc) is exc:  # the first thread to find it reports it
                    _skip(source.path, f"{exc} (its crops come from the next file)")
        tried += [source.path] if source.path not in tried else []
    if len(tried) == 1:  # a file of many channels is as many sources
        alone = all(source.path == tried[0] for source in sources)
        raise VQCodecError(f"{'the' if alone else 'a'} {role} file could not be read ({last})")
    raise VQCodecError(f"{len(tried)} {role} files in a row could not be read ({last})")


class NoReadableMedia(VQCodecError):
    """Crops none of whose files could be read."""


def _no_readable(media: str, role: str, files: list[Path]) -> NoReadableMedia:
    """The error of crops none of whose `files` could be read: the training folder's, or the held-out
    files', one of them named."""
    if role == "training":
        return NoReadableMedia(f"no readable {media} in the training folder")
    if len(files) == 1:
        return NoReadableMedia(f"no readable {media} in the {role} file {files[0]}")
    return NoReadableMedia(f"no readable {media} in the {len(files)} {role} files ({files[0]} and others)")


@dataclass(frozen=True)
class AudioSource:
    """One channel of an audio file: `frames` samples at the file's own `rate`."""
    path: Path
    channel: int
    frames: int
    rate: int


def _audio_sizes(sources: list[AudioSource], sample_rate: int, crop: int) -> tuple[int, int]:
    """The bytes AudioCrops holds of `sources` in memory, each channel at `sample_rate` and padded to a crop
    when shorter, and the most that loading them holds at once besides (a file decoded whole, every channel
    at its own rate)."""
    read_at_once: dict[Path, int] = {}
    for source in sources:
        read_at_once[source.path] = read_at_once.get(source.path, 0) + source.frames * 4
    padded = sum(max(round(s.frames * sample_rate / s.rate), crop) for s in sources) * 4
    return padded, max(read_at_once.values(), default=0)


def _image_bytes(sources: list[ImageSource], crop: int) -> int:
    """The bytes ImageCrops holds of `sources` in memory: 8-bit RGB, padded to a crop when smaller."""
    return sum(max(s.width, crop) * max(s.height, crop) * 3 for s in sources)


def held_bytes(kind: str, files: list[Path], crop: int, sample_rate: int = 0,
               in_memory_bytes: int | None = None) -> int:
    """The bytes that the crops of `files` (readable_files': AudioCrops at `sample_rate`, or ImageCrops) hold
    in memory once made, as their headers give them: the decoded media where they fit in `in_memory_bytes`
    (default IN_MEMORY_BYTES), else 0 (read from disk crop by crop)."""
    limit = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
    held, read_at_once = 0, 0
    for path in files:  # a folder past the limit is read no further (its headers were read twice already)
        if kind == "image":
            held += _image_bytes([ImageSource(Path(path), *image_size(path))], crop)
        else:
            frames, rate, channels = _audio_header(path)
            padded, whole = _audio_sizes([AudioSource(Path(path), c, frames, rate) for c in range(channels)],
                                         sample_rate, crop)
            held, read_at_once = held + padded, max(read_at_once, whole)
        if held + read_at_once > limit:
            return 0
    return held


def _channel_finiteness(path: Path, say=progressline.say, each_block=lambda block: None) \
        -> tuple[int, np.ndarray] | None:
    """The samples per channel a file holds and whether each channel's are all finite, read block by
    block (each block passed to `each_block` besides); None, after a `skipping` line (`say`), for a file that
    cannot be read."""
    said: list[str] = []
    try:
        with open_sound(path, said) as sound:
            samples, finite = 0, np.ones(sound.channels, dtype=bool)
            for block in sound_blocks(sound, path, said=said):
                samples += block.shape[1]
                finite &= np.isfinite(block).all(axis=1)
                each_block(block)
    except VQCodecError as exc:
        _skip(path, str(exc), say)
        return None
    _warn_once(said, path)
    return samples, finite


def _channel_problem(samples: int, finite: bool) -> str | None:
    """Why a channel of `samples` samples, all finite or not, cannot train; None where it can."""
    return "no samples" if not samples else None if finite else "samples that are not finite"


def _usable_channel(source: AudioSource, channels: int, samples: int, finite: bool) -> bool:
    """Whether a channel of `samples` samples trains; one that does not gets a `skipping` line."""
    problem = _channel_problem(samples, finite)
    if problem:  # the file changed since it was listed, or holds NaN or infinity
        _skip(f"{source.path}{f' channel {source.channel + 1}' if channels > 1 else ''}", problem)
    return not problem


@dataclass(frozen=True)
class CropPlan:
    """Every random choice behind one training crop, drawn before any reading is done."""
    source: int
    where: tuple[float, ...]      # position of the crop, as fractions of the room along each axis
    flips: tuple[bool, bool] = (False, False)   # images: left-right, top-bottom
    gain: float | None = None     # audio: log10 of the gain before the peak limit
    noise_seed: int | None = None  # audio: seed of the background noise, when this crop gets some


class Crops:
    """Random training crops: `plan` draws every random choice of a batch, `make` reads one crop."""

    def plan(self, size: int, rng: np.random.Generator, augment: bool = True) -> list[CropPlan]:
        raise NotImplementedError

    def make(self, plan: CropPlan) -> np.ndarray:
        raise NotImplementedError

    def batch(self, size: int, rng: np.random.Generator, augment: bool = True) -> torch.Tensor:
        return stack([self.make(plan) for plan in self.plan(size, rng, augment)])

    def made_in_main_thread(self, plan: CropPlan) -> bool:
        """Whether Batches makes this crop in the main thread, the one thread where io catches what a C
        library writes straight to stderr (file descriptor 2 is the whole process's)."""
        return False

    def files(self) -> list[Path]:
        """The files the crops come from, in order: those of the files given that were not skipped."""
        return list(dict.fromkeys(source.path for source in self.sources))


def stack(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops))


class AudioCrops(Crops):
    """Crops of `crop` samples at `sample_rate` from the channels of audio files, each channel drawn in
    proportion to its length, with a random gain and, for a share `noise` of them, background noise."""

    def __init__(self, files: list[Path], sample_rate: int, crop: int, noise: float = 0.0,
                 noise_snr_db: tuple[float, float] = NOISE_SNR_DB, in_memory_bytes: int | None = None,
                 role: str = "training"):
        self.sample_rate, self.crop, self.noise, self.noise_snr_db = sample_rate, crop, noise, noise_snr_db
        self.role = role
        self.unreadable: dict[Path, VQCodecError] = {}  # read_or_next's
        self.sources: list[AudioSource] = []
        for path in files:
            try:
                frames, rate, channels = _audio_header(path)
            except VQCodecError as exc:
                _skip(path, str(exc))
                continue
            if frames > 0 and rate > 0:
                self.sources += [AudioSource(Path(path), c, frames, rate) for c in range(channels)]
        limit = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
        padded, read_at_once = _audio_sizes(self.sources, sample_rate, crop)
        self.in_memory = padded + read_at_once <= limit
        self.clips: list[np.ndarray] | None = self._load() if self.in_memory else None
        if not self.in_memory:
            self._scan()
        if not self.sources:
            raise _no_readable("audio", role, files)
        if self.clips is not None:
            lengths = np.array([clip.size for clip in self.clips], dtype=np.float64)
        else:
            lengths = np.array([max(self._length(s), crop) for s in self.sources], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.seconds = sum(self._length(s) for s in self.sources) / sample_rate

    def _length(self, source: AudioSource) -> int:
        return round(source.frames * self.sample_rate / source.rate)

    def made_in_main_thread(self, plan: CropPlan) -> bool:
        """A crop read from a file the MP3 decoder has said something of (read through when the folder was
        scanned): in a worker thread, its lines reached stderr raw, at every crop, amid the progress line."""
        return self.clips is None and str(self.sources[plan.source].path) in _WARNED_AUDIO

    def _load(self) -> list[np.ndarray]:
        """Read every file once, keeping the channels whose samples are all finite, with the length they hold."""
        clips, kept, loaded = [], [], {}
        for source in self.sources:
            if source.path not in loaded:
                try:
                    loaded = {source.path: read_media("audio", source.path, self.sample_rate)}
                except VQCodecError as exc:
                    _skip(source.path, str(exc))
                    loaded = {source.path: None}
            audio = loaded[source.path]
            if audio is None:
                continue
            clip = audio[source.channel] if source.channel < len(audio) else np.zeros(0, np.float32)
            if not _usable_channel(source, len(audio), clip.size, bool(np.isfinite(clip).all())):
                continue
            clips.append(np.pad(clip, (0, max(0, self.crop - clip.size))))
            if clip.size != self._length(source):  # a file that holds other than its header says (a cut MP3)
                source = replace(source, frames=round(clip.size * source.rate / self.sample_rate))
            kept.append(source)
        self.sources = kept
        return clips

    def _scan(self) -> None:
        """Read every file once, block by block, keeping the channels _load would keep (crops read
        from disk later are then never of NaN or infinite samples), with the length they hold (crops of a
        file that holds less than its header says would be silence past its end)."""
        kept, scanned = [], {}
        for source in self.sources:
            if source.path not in scanned:
                scanned = {source.path: _channel_finiteness(source.path)}
            found = scanned[source.path]
            if found is None:
                continue
            samples, finite = found
            present = source.channel < len(finite)
            if _usable_channel(source, len(finite), samples if present else 0,
                               present and bool(finite[source.channel])):
                kept.append(replace(source, frames=samples))  # what it holds, not what its header says (a cut MP3)
        self.sources = kept

    def plan(self, size: int, rng: np.random.Generator, augment: bool = True) -> list[CropPlan]:
        sources = rng.choice(len(self.sources), size=size, p=self.weights)
        wheres = rng.random(size)
        if not augment:
            return [CropPlan(int(source), (float(where),)) for source, where in zip(sources, wheres)]
        noisy = rng.random(size) < self.noise
        seeds = rng.integers(2**63, size=size)
        gains = rng.uniform(-1.0, 0.25, size)
        return [CropPlan(int(source), (float(where),), gain=float(gain), noise_seed=int(seed) if noise else None)
                for source, where, noise, seed, gain in zip(sources, wheres, noisy, seeds, gains)]

    def make(self, plan: CropPlan) -> np.ndarray:
        """The (1, crop) float32 crop that `plan` describes."""
        if self.clips is not None:
            clip = self.clips[plan.source]
            start = int(plan.where[0] * (clip.size - self.crop + 1))
            out = clip[start:start + self.crop].copy()
        else:
            out = read_or_next(self.sources, plan.source, lambda source: self._read(source, plan.where[0]),
                               self.unreadable, self.role)
        if plan.noise_seed is not None:
            out = add_background_noise(out, np.random.default_rng(plan.noise_seed), self.noise_snr_db)
        if plan.gain is not None:
            peak = max(float(np.abs(out).max()), 1e-4)
            out *= min(10 ** plan.gain, 0.99 / peak)
        return out[None]

    def _read(self, source: AudioSource, where: float) -> np.ndarray:
        """A crop read from disk: only the samples it covers, and a margin on both sides when it is
        resampled, so that it matches the same crop of the whole file resampled. A crop of samples
        that are not finite (the file changed since _scan read it) is refused."""
        start = int(where * (max(self._length(source), self.crop) - self.crop + 1))
        common = math.gcd(source.rate, self.sample_rate)
        up, down = source.rate // common, self.sample_rate // common  # model sample n is source sample n * up / down
        first = start  # the model sample the read begins at
        margin = 0
        if source.rate != self.sample_rate:
            margin = math.ceil(RESAMPLE_MARGIN_SECONDS * source.rate)
            first = max(0, start - math.ceil(RESAMPLE_MARGIN_SECONDS * self.sample_rate))
            if down <= self.crop:
                first -= first % down  # on a source sample, so the resampled read falls on the whole file's grid
        low = first * up // down
        high = min(source.frames, -(-(start + self.crop) * up // down) + margin)
        said: list[str] = []  # in a batch worker, never anything: file descriptor 2 is not captured there
        with open_sound(source.path, said) as sound:
            try:
                with decoder_lines(sound.format) as lines:
                    sound.seek(low)
                    data = sound.read(max(0, high - low), dtype="float32", always_2d=True)
            except SOUNDFILE_ERRORS as exc:
                raise unreadable_audio(source.path, exc) from None
        _warn_once(said + lines, source.path)
        segment = data[:, source.channel]
        if source.rate != self.sample_rate and segment.size:
            segment = soxr.resample(segment, source.rate, self.sample_rate).astype(np.float32)
        offset = start - first
        out = np.zeros(self.crop, dtype=np.float32)
        part = segment[offset:offset + self.crop]
        if not np.isfinite(part).all():
            raise VQCodecError(f"{source.path}: samples that are not finite")
        out[:part.size] = part
        return out

    def describe(self) -> str:
        short = sum(self._length(s) < self.crop for s in self.sources)
        padding = f", {short} shorter than a crop (padded with silence)" if short else ""
        return (f"{plural(len(self.sources), 'clip')}, {self.seconds / 60:.1f} min{padding}"
                f"{'' if self.in_memory else ', read from disk'}")


TIFF_SUFFIXES = {".tif", ".tiff"}  # the names of TIFF in find_media's (io.IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class ImageSource:
    path: Path
    width: int
    height: int


class ImageCrops(Crops):
    """Square crops of side `crop` from photos, each photo drawn in proportion to its area, flipped at
    random. Photos smaller than a crop are padded by reflection, or by repeating the edge where a side is
    one pixel (which reflects nothing)."""

    def __init__(self, files: list[Path], crop: int, in_memory_bytes: int | None = None, role: str = "training"):
        self.crop, self.role = crop, role
        self.unreadable: dict[Path, VQCodecError] = {}  # read_or_next's
        self.read_in_main_thread: set[Path] = set()  # the TIFFs read from disk once there (made_in_main_thread)
        self.sources: list[ImageSource] = []
        for path in files:
            try:
                self.sources.append(ImageSource(Path(path), *image_size(path)))
            except VQCodecError as exc:
                _skip(path, str(exc))
        limit = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
        self.in_memory = _image_bytes(self.sources, crop) <= limit
        self.images: list[np.ndarray] | None = self._load() if self.in_memory else None
        if not self.sources:
            raise _no_readable("images", role, files)
        areas = np.array([s.width * s.height for s in self.sources], dtype=np.float64)
        self.weights = areas / areas.sum()

    def _load(self) -> list[np.ndarray]:
        images, kept = [], []
        for source in self.sources:
            try:
                images.append(self._padded(_read_photo(source.path)))
                kept.append(source)
            except VQCodecError as exc:
                _skip(source.path, str(exc))
        self.sources = kept
        return images

    def _padded(self, image: np.ndarray) -> np.ndarray:
        h, w, _ = image.shape
        if h >= self.crop and w >= self.crop:
            return image
        mode = "reflect" if min(h, w) > 1 else "edge"
        return np.pad(image, ((0, max(0, self.crop - h)), (0, max(0, self.crop - w)), (0, 0)), mode=mode)

    def made_in_main_thread(self, plan: CropPlan) -> bool:
        """A crop read from disk of a TIFF not yet read there: libtiff writes what it finds wrong straight to
        stderr, which io catches in the main thread alone (a damaged TIFF's line, read in a batch worker, reached
        stderr raw before its `skipping` line, which said "its data cannot be decoded" where libtiff said why).
        Once read whole there, its crops are the workers', unless reading it said something (a warning): libtiff
        would say it again."""
        path = self.sources[plan.source].path
        return self.images is None and path.suffix.lower() in TIFF_SUFFIXES and (
            path not in self.read_in_main_thread or str(path) in _WARNED_IMAGES)

    def _read(self, source: ImageSource) -> np.ndarray:
        image = self._padded(_read_photo(source.path))
        if threading.current_thread() is threading.main_thread():
            self.read_in_main_thread.add(source.path)
        return image

    def plan(self, size: int, rng: np.random.Generator, augment: bool = True) -> list[CropPlan]:
        sources = rng.choice(len(self.sources), size=size, p=self.weights)
        wheres = rng.random((size, 2))
        flips = rng.random((size, 2)) < 0.5 if augment else np.zeros((size, 2), dtype=bool)
        return [CropPlan(int(source), (float(top), float(left)), (bool(flip_lr), bool(flip_tb)))
                for source, (top, left), (flip_lr, flip_tb) in zip(sources, wheres, flips)]

    def make(self, plan: CropPlan) -> np.ndarray:
        """The (3, crop, crop) float32 crop, in [0, 1], that `plan` describes."""
        if self.images is not None:
            image = self.images[plan.source]
        else:
            image = read_or_next(self.sources, plan.source, self._read, self.unreadable, self.role)
        top = int(plan.where[0] * (image.shape[0] - self.crop + 1))
        left = int(plan.where[1] * (image.shape[1] - self.crop + 1))
        patch = image[top:top + self.crop, left:left + self.crop]
        if plan.flips[0]:
            patch = patch[:, ::-1]
        if plan.flips[1]:
            patch = patch[::-1]
        return np.ascontiguousarray(patch.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)

    def describe(self) -> str:
        pixels = sum(s.width * s.height for s in self.sources)
        small = sum(min(s.width, s.height) < self.crop for s in self.sources)
        thin = sum(min(s.width, s.height) == 1 for s in self.sources)  # _padded repeats their edge
        how = {0: "reflection", small: "repeating the edge"}.get(thin, f"reflection, {thin} with a side of one "
                                                                       "pixel by repeating the edge")
        padding = f", {small} smaller than a crop (padded by {how})" if small else ""
        return (f"{plural(len(self.sources), 'image')}, {pixels / 1e6:.1f} Mpixel{padding}"
                f"{'' if self.in_memory else ', read from disk'}")


class Batches:
    """Training batches of `size` crops, each made while the step before it runs.

    Worker threads read, decode, resample and crop (soundfile, soxr, Pillow and numpy release the
    GIL while they work). Every random choice of a batch is drawn from `rng`, in order, before its
    work is handed out, so the batches do not depend on how the threads are scheduled. The crops
    that Crops.made_in_main_thread names are made by `next`, once the workers are done with the
    batch and before they start the next one, so that no other thread writes while io catches
    stderr."""

    def __init__(self, crops: Crops, size: int, rng: np.random.Generator, workers: int | None = None):
        self.crops, self.size, self.rng = crops, size, rng
        workers = default_batch_workers() if workers is None else workers
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="vqcodec-batches")
        self.pending = self._start()

    def _start(self) -> list:
        """The batch's crops to come: a future of a worker's crop, or the plan of a crop made in the main thread."""
        # each in a copy of this thread's context, so that its messages are worded as the caller's (wording.setting)
        return [plan if self.crops.made_in_main_thread(plan) else
                self.pool.submit(contextvars.copy_context().run, self.crops.make, plan)
                for plan in self.crops.plan(self.size, self.rng)]

    def next(self) -> torch.Tensor:
        ready = self.pending
        here = any(isinstance(item, CropPlan) for item in ready)
        if not here:  # the workers go on to the next batch at once
            self.pending = self._start()
        crops = [item.result() if isinstance(item, Future) else item for item in ready]
        crops = [self.crops.make(item) if isinstance(item, CropPlan) else item for item in crops]
        if here:
            self.pending = self._start()
        return stack(crops)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
