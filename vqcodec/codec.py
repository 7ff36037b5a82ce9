"""The Python API: load a model, turn media into `.vq` bytes and back, or into integer codes.

    codec = Codec.load("speech16k")
    data = codec.encode_audio(audio, sample_rate, quality=6)   # audio: (channels, samples)
    audio, rate = codec.decode_audio(data)

Long audio is coded in blocks of frames with context on both sides, so memory stays bounded
and the result does not depend on the block size. Images are coded in tiles the same way.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile
import torch

from . import entropy
from . import format as vqformat
from . import ratecontrol
from .arguments import (as_array, checked_amount, checked_count, checked_max_rate, checked_peak, checked_rate,
                        checked_setting, checked_weight, id_bytes, integer_codes, is_real)
from .audioblocks import (LEVEL_TARGET_PEAK, STREAM_BLOCK_SAMPLES, SampleWindow, audio_array, block_iterator,
                          check_audio_size, check_coded_level, check_decoded_fits, check_read_peak, checked_blocks,
                          dropped_samples, float_blocks, joined_blocks, largest_magnitude, level_gain, peak_of,
                          resampled_blocks, scaled_blocks)
from .codekind import decoder_of, kind_of, kinded, maker_of
from .config import config_to_dict
from .devices import resolve_device
from .errors import ClippingWarning, VQCodecError, caller_stacklevel
from .fileinfo import (TRAILING_STREAM_BYTES, UnendedStream, alpha_plane, colour_mode, file_name, naming_damage_in,
                       naming_its_file, vq_bytes)
from .imagedata import PILLOW_READ_ERRORS
from .imageio import (ALPHA_MODES, IMAGE_MODES, IMAGE_MODE_NAMES, TIFF_ORIENTATION, as_displayed, check_image_size,
                      edge_padded, image_array_fixes, image_of_array, image_to_planes, in_srgb, load_pixels, mode_shown,
                      naming_the_image, open_image, pillow_reason, planes_to_image, readable_exif, rebuilt_image_bytes,
                      unreadable_unnamed_image,
                      unrecognised_image, warn_of_frames_left_out, warn_of_pillow_warnings,
                      warn_of_what_codes_leave_out, warnings_recorded)
from .io import (identified_as_an_image, image_by_its_name, is_image_signature, refuse_format_against_name,
                 refuse_format_of_other_kind)
from .memory import memory_bound, refuse_beyond
from .modelfile import build_model, compute_codes_id, inference_state, read_model_files
from .prior import ABSENT, CodePrior, RateCosts, plane_depths
from .recode import FileCuts
from .refine import LEARNING_RATE as REFINE_LEARNING_RATE, refine_codes
from .registry import decoder_advice, find_model, list_models, retired_model_hint
from .soundio import (FLOAT_CODEC_SUBTYPES, SOUNDFILE_ERRORS, STREAMED_HEAD_BYTES, SoundSink, audio_format_named,
                      audio_format_of, check_audio_output, open_sound, sound_blocks, soundfile_format,
                      unrecognised_audio, unwritable_audio)
from .streams import (appends, check_destination, check_format_name, check_source, checked_flag, flush_written,
                      input_called, input_name, is_fifo, is_seekable, is_whole, left_where_it_was, output_name,
                      scalar_of, spooled_fifo, spooled_stream, stops_held, through_spool, unwritable_stream, write_file)
from .wording import kind_coded, kind_held, not_its_codes, plural, setting, shown, shown_cut, type_of

AUDIO_CHUNK_FRAMES = 500        # frames per container chunk: 10 s at 50 frames/s
IMAGE_CHUNK_ROWS = 16           # latent rows per container chunk
AUDIO_BLOCK_FRAMES = 500        # frames the networks see at once, before context
DECODE_GROUP_BLOCKS = 16        # blocks whose chunks are decoded together (audio): 160 s of speech16k's codes
DEFAULT_QUALITY = 8             # codebooks used when no quality is given (and the model has as many)
# Beam width of the residual-VQ search when encoding (quantize.ResidualVQ.encode): wider finds codes
# with a smaller quantisation error at the same quality level, for more encoder time.
DEFAULT_BEAM = {"audio": 1, "image": 4}
MAX_BEAM = 64
# Rate-distortion-optimised quantisation (Codec.rate_weight): bits under the prior are weighed against
# squared latent error when codes are chosen for entropy-coded files, at this multiple of the quality
# ladder's own exchange rate. Chosen on the training sets (bench/rdo.py): for speech it saved 1-2 %
# at equal PESQ but nothing at equal log-mel distance; for photos it saved 3-6 % alone, but nothing
# measurable on top of per-cell depth, for up to 0.3 s more per photo. So both keep the nearest codes.
DEFAULT_RATE_WEIGHT = {"audio": 0.0, "image": 0.0}
MAX_RATE_WEIGHT = 100.0
# Per-cell depth (Codec.depth_weight): an entropy-coded file's cells (audio frames, image latent cells)
# each use only the levels whose error reduction is worth their bits, at this multiple of the ladder's
# exchange rate (0: every cell uses every level). Chosen on the training sets (bench/rdo.py): photos
# saved 8 / 14-15 / 18-21 % at equal PSNR with weights 0.5 / 1 / 2, but the higher weights also lower
# the best quality -q 20 reaches (-0.12 dB at 1, -0.35 dB at 2), so images use 1. Speech (48 recordings)
# saved 13-22 / 19-29 / 23-32 / 24-31 % against fixed width at equal PESQ with weights 1 / 2 / 3 / 4,
# and weight 2 saved as much as 1 (within 0.1 point) at equal log-mel distance too; the best quality
# -q 8 reaches falls by 0.01 / 0.05 / 0.09 / 0.14 PESQ, so audio uses 2.
DEFAULT_DEPTH_WEIGHT = {"audio": 2.0, "image": 1.0}
MAX_DEPTH_WEIGHT = 100.0
MAX_REFINE = 1000
IMAGE_TILE = 64                 # latent cells per tile side, before context
# What the image decoder takes a pixel of a tile's window (context included), on the CPU: this many
# activations of its finest width, and this many bytes besides (the pixels in float, a transposed
# convolution's columns). Counted from the peak resident memory of `vqcodec decode IN.vq OUT.png --threads 2` of
# 20, 35, 50 and 89 Mpx (tiled Kodak kodim23, -q 8) above the loaded model (303 MB), by `/usr/bin/time -v` one run
# at a time: 408, 633, 842 and 877 MB (20 Mpx through the API: 498; writing the PNG raised no peak). Less the 8 bytes
# a pixel of the image counted beside it (the RGB decoded and rebuilt), that is 168, 239, 299 and 101 bytes a pixel
# of the 1.48 Mpx window (229 through the API); 12 activations of 24 bytes (96 channels / 16) plus 64 count 352,
# at least 14 % over the largest, as the old count was. (Until 2026-12-07 decode_image ran the decoder with
# gradients: 1175 to 1281 MB, and 32 activations were counted.)
DECODER_ACTIVATIONS = 12
DECODER_PIXEL_BYTES = 64
# Refinement runs the decoder with gradients, and steps back through it: counted as decoding was while it kept
# gradients (above), not measured for refinement itself.
REFINE_DECODER_ACTIVATIONS = 32
REFINE_DECODER_PIXEL_BYTES = 64
# What encoding takes a pixel, by the mode Pillow reads the image in: the image read, the copies its EXIF
# orientation and colour profile make, its RGB and alpha planes (peak resident memory of imageio.open_image and
# image_to_planes on 4 Mpx of noise with Pillow 13: 7 for 1 and L, 11 for LA and P, 13 to 16 for RGB, RGBA,
# CMYK and deep grey, 16 for P with a transparent entry, 20 for PA; rounded up).
READ_PIXEL_BYTES = {"1": 8, "L": 8, "LA": 12}
READ_PIXEL_BYTES_ELSE = 20
# What the image encoder takes, on the CPU: this many activations of its finest width a pixel of a tile's window
# (context included), and this many bytes a pixel of the image besides (the codes' search). The shipped `image`
# model measured 167, 437 and 511 MB for 1.5, 5.9 and 13.3 Mpx (peak resident memory): about 380 MB, 11
# activations, for the tiles' windows, and 10 bytes a pixel; `vqcodec encode` of 20, 35 and 50 Mpx RGB PNGs (the
# read included) peaked 564, 947 and 687 MB above the loaded model, where 1.1, 1.5 and 2.0 GB are counted (741, 757
# and 815 MB measured again on 2026-12-07; the encoder always ran without gradients). Refinement runs the decoder on
# the window too (REFINE_DECODER_ACTIVATIONS).
ENCODER_ACTIVATIONS = 12
ENCODER_PIXEL_BYTES = 12
CODE_BLOCK_CODES = 1 << 22      # codes of a file read at a time (Codec.code_blocks): 8 MB as int16
HELD_CHUNK_CODES = 256          # the codes' worth of memory a decoded chunk's arrays take besides its codes
CHECKED_CHUNK_BYTES = 1 << 26   # a chunk needing more to decode is checked against memory_bound (a few files read)
RANGE_DECODE_BYTES = 40         # memory a code of the plane being range-decoded takes (int64, contexts): 32-34 measured
WHOLE_READ_SAMPLES = 1 << 22    # files of up to this many samples (16 MiB) are read once, longer ones twice
RESAMPLE_MARGIN_SECONDS = 0.02  # decoded before a range of a file that is resampled, for the filter's sake,
RESAMPLE_MARGIN_SAMPLES = 160   # and at least this many samples of the rate it is resampled to
# Channels of an encoder block that differ from the first by at most this anywhere in the block (-60
# dBFS, 32 steps of 16-bit audio: copies of one signal dithered or processed apart) are coded as one,
# context included, and their codes copied; the difference is far below the codec's own error at any
# quality (where the context differs, next to a stretch whose channels do, so are a few codes).
SAME_CHANNEL_TOLERANCE = 2.0 ** -10
# The largest absolute value a decoder's output may hold (audio: samples at the coded level, before the level gain,
# in units of full scale; images: pixels, 0 to 1): far beyond it, its weights are damaged (finite, of absurd size),
# and what it gives would be written as full-scale noise or clamped pixels. The shipped models reach at most 0.90
# (speech16k: a 0.7 square wave at -q 8; white noise 0.66; speech, music and random codes 0.54) and 1.24 (image:
# Kodak at -q 20; the lowest -0.26, a tests/data photo; random codes 1.14): see README "Limits".
DECODED_BOUND = 1e4


# ---------------------------------------------------------------- what the codec's methods share

def fixed_width_cause(coding: str, has_prior: bool) -> str | None:
    """Why a codec of this coding ("auto", "prior" or "fixed") writes fixed-width files: "fixed
    coding", or "no prior" when its model has none; None when it entropy-codes them."""
    if coding == "fixed":
        return "fixed coding"
    return None if has_prior else "no prior"


def fixed_width_why(cause: str, model: str | None, fixed: str, fit_prior_hint: bool = False) -> str:
    """Why files are coded fixed-width, as a refusal of a weight says it, for a `cause` of fixed_width_cause:
    `fixed` (the caller's name for coding "fixed"), else that model `model` has no prior, with what fits one where
    `fit_prior_hint`."""
    if cause == "fixed coding":
        return fixed
    hint = f" ({setting('vqcodec fit-prior', 'vqcodec.train.fit_prior_files')} fits one)" if fit_prior_hint else ""
    return f"model {model} has no prior{hint}"


def _first_bytes(media, count: int) -> bytes:
    """The first `count` bytes of media given as the path of a file or a stream that can seek (the stream is left
    where it was; a FIFO is not read from); b"" where there are none to read so."""
    try:
        if isinstance(media, (str, Path)):
            if not os.path.isfile(media):
                return b""
            with open(media, "rb") as stream:
                return stream.read(count)
        if is_seekable(media):
            with left_where_it_was(media):
                head = media.read(count)
            return head if isinstance(head, bytes) else b""
    except (OSError, ValueError):  # left to the reading to report
        pass
    return b""


def _opened_from(image) -> str | None:
    """The path Image.open opened a Pillow image from (its filename), or None: it was given a stream, or made."""
    filename = getattr(image, "filename", None)
    return filename if isinstance(filename, str) and filename else None


def _pixels_read(image, source=None):
    """load_pixels of a Pillow image given to encode, which Image.open may have left unread (its warnings naming
    `source`): refused (unreadable_unnamed_image) where its file is closed or cut short."""
    if getattr(image, "tile", None) and getattr(image, "fp", None) is None:  # Pillow only asserts it
        raise unreadable_unnamed_image("its file was closed before its pixels were read "
                                       "(Image.open is lazy: load() it)")
    try:  # Image.open reads the pixels only now: the file may be cut short
        return load_pixels(image, source)
    except PILLOW_READ_ERRORS as exc:
        raise unreadable_unnamed_image(pillow_reason(exc)) from None


def _is_vq_file(media) -> bool:
    """Whether media given as the path of a file or a stream that can seek begins as a `.vq` file does."""
    return _first_bytes(media, 4) == vqformat.MAGIC


def _holds_the_other_kind(media, head: bytes, kind: str, start: int) -> bool:
    """Whether media that begins with `head` (a path, or a stream that begins at `start`), which a model coding `kind`
    failed to read, holds the other kind: an image's signature, or an image's name that soundfile cannot open
    (image_by_its_name: TGA has no signature, ICO none is_image_signature knows), or where it has no name (bytes, a
    BytesIO), one Pillow opens (identified_as_an_image), for audio; audio that libsndfile recognises and Pillow does
    not, for images. A file or stdin of no image name or signature is left to its refusal, which says to pass
    --kind image."""
    if kind == "audio":
        return is_image_signature(head[:16]) or image_by_its_name(media, start) or (
            input_name(media) is None and identified_as_an_image(media, start))
    return bool(head) and unrecognised_image(head, None) is not None and unrecognised_audio(head, None) is None


def _blocks(total: int, block: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, block):
        yield start, min(total, start + block)


def _coded_planes(image, source=None) -> tuple[np.ndarray, int, bytes | None]:
    """The RGB plane, mode code and compressed alpha plane (or None) that a .vq file of a Pillow image whose
    orientation and ICC profile are applied holds (imageio.image_to_planes)."""
    rgb, mode, alpha = image_to_planes(image, source)
    check_image_size(rgb.shape[1], rgb.shape[0])
    return rgb, mode, zlib.compress(alpha.tobytes(), 9) if alpha is not None else None


class _AsideOfSearch:
    """A stream read by a rate search's tries, whose methods (the caller's code: a stream's read may encode on the
    same codec) run with the search set aside (Codec._search_set_aside)."""

    def __init__(self, stream, codec):
        self.stream, self.codec = stream, codec

    def __getattr__(self, name):
        attribute = getattr(self.stream, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def aside(*args, **kwargs):
            with self.codec._search_set_aside():
                return attribute(*args, **kwargs)
        return aside


def _check_audio_file(header: vqformat.Header) -> None:
    if header.kind != vqformat.KIND_AUDIO:
        raise VQCodecError("this .vq file holds an image, not audio")


class ChunkTooLarge(VQCodecError):
    """A chunk whose codes would not fit in memory: refused, even where salvage passes over a chunk
    that does not decode (the chunk is not damaged)."""


def _check_fits_memory(size: int, held: str = "the codes take",
                       advice: str = "`vqcodec codes` writes them to a file a part at a time",
                       error: type[VQCodecError] = VQCodecError) -> None:
    """Refuse codes of `size` bytes that the memory this process may use (memory_bound) cannot hold,
    before they are allocated; `held` says what they are, `advice` what to do instead."""
    refuse_beyond(size, memory_bound(), held, advice, error)


def _integer_codes(codes) -> np.ndarray:
    """Codes given to the API as a NumPy array of an integer type, refused in one line otherwise: what is no array
    of numbers at all (a path, which np.asarray made a 0-d array of text, 'codes must be integers, not <U9'; None;
    a stream) is refused naming what it is and what reads a file of codes. An array of NumPy's object type is given
    back with its items unread, for _checked_codes to take as int64 once its shape and size are checked (a broadcast
    array of a few bytes can be billions of items to read)."""
    if codes is None or isinstance(codes, (str, bytes, bytearray, os.PathLike, dict)) or hasattr(codes, "read"):
        a_file = codes is not None and not isinstance(codes, dict)  # its path, bytes or stream
        raise VQCodecError(f"codes are an integer array (NumPy, a torch tensor or nested lists), not {type_of(codes)}"
                           + (": vqcodec.tokens.read_codes_npy(path, codec) reads a .npy file of codes, "
                              "codec.read_codes(path) a .vq file's" if a_file else ""))
    array = as_array(codes)
    return array if array.dtype == object else integer_codes(array)


def _object_codes_as_int64(array: np.ndarray) -> np.ndarray:
    """Codes of NumPy's object type as int64 where each is an int (np.array(codes, dtype=object) of Python ints), or
    refused naming the first item that is no integer, or no int64 (nested lists that NumPy made no array of numbers
    of, holding None or an int beyond int64), and where it is (as [0, 0, 1]). Where every item is an integer, they
    are taken at once (a million in 0.08 s here, where reading them one by one took 0.6 s); else, or where one is beyond
    int64, they are read one by one to name the first that is no code."""
    if all(_is_integer_type(kind) for kind in set(map(type, array.flat))):
        with contextlib.suppress(OverflowError):  # an int beyond int64, named below
            return array.astype(np.int64)
    for index, item in np.ndenumerate(array):
        place = list(index)
        if not _is_integer_type(type(item)):
            shown_item = "" if item is None else f"{shown_cut(item, 40)} "
            raise VQCodecError(f"codes must be integers, not {type_of(item)} ({shown_item}at {place})")
        if not -2 ** 63 <= item < 2 ** 63:
            raise VQCodecError(f"codes hold {shown_cut(item, 40)} (at {place}), which is no code")
    return array.astype(np.int64)


def _is_integer_type(kind: type) -> bool:
    """Whether an item of `kind` is an integer as codes are: an int or a NumPy integer, and no bool."""
    return issubclass(kind, (int, np.integer)) and not issubclass(kind, bool)


def _axis_noun(axis: str) -> str:
    """One index along an axis of codes as a layout names it ("channels", "quality", "rows"): "channel", "level"."""
    return "level" if axis == "quality" else axis.rstrip("s")


def _shape_fault(shape: tuple, layout: str, level_axis: int, most_levels: int) -> str:
    """What is wrong with codes of `shape` for a model whose codes are of `layout` (their axes' names) with the
    levels on `level_axis`, at most `most_levels`, given that something is: their dimensions, an empty axis, or
    too many levels (with how to move them where the last axis could be the levels, as a sequence model's
    (..., frames, levels) are)."""
    if len(shape) == 2:
        return f"2-D, as one {_axis_noun(layout.split(', ')[0])}'s codes are (codes[None] adds that axis)"
    if len(shape) == 4:
        return "4-D, as a batch of codes is (decode each: codes[i])"
    if len(shape) != 3:
        return f"{len(shape)}-D"
    for size, axis in zip(shape, layout.split(", ")):
        if size == 0:
            return f"it has no {_axis_noun(axis)}s"
    fault = f"it has {plural(shape[level_axis], 'level')}"
    if 1 <= shape[-1] <= most_levels:
        fault += (f" (where its last axis holds the levels, np.moveaxis(codes, -1, {level_axis}), or a tensor's "
                  f"movedim(-1, {level_axis}), puts them in place)")
    return fault


def _first_hole(codes: np.ndarray, level_axis: int, layout: str) -> str:
    """Where codes of `layout`, their levels on `level_axis`, first leave a level out (-1) below one they hold:
    the first such frame or cell in the array's order, and its levels, in words."""
    planes = np.moveaxis(codes, level_axis, 0)
    holes = (planes[:-1] == ABSENT) & (planes[1:] != ABSENT)
    cell = np.unravel_index(np.argmax(holes.any(axis=0)), holes.shape[1:])
    level = int(np.argmax(holes[(slice(None), *cell)]))
    axes = [axis for number, axis in enumerate(layout.split(", ")) if number != level_axis]
    place = ", ".join(f"{_axis_noun(axis)} {int(index)}" for axis, index in zip(axes, cell))
    return f"{place} leaves level {level} out (-1) and holds level {level + 1} ({int(planes[(level + 1, *cell)])})"


def _refuse_a_batch_of_media(media: list | tuple) -> None:
    """Refuse a list or tuple of files, streams or Pillow images given as one medium, which was taken for an
    array of samples ('audio given as an array needs its sample_rate', then 'not <U36')."""
    from PIL import Image

    first = media[0] if media else None
    if isinstance(first, (str, os.PathLike, bytes, bytearray, Image.Image)) or hasattr(first, "read"):
        raise VQCodecError(f"media is one file, stream, image or array, not {type_of(media)} of "
                           f"{plural(len(media), 'item')} (the first {type_of(first)}): code each in turn "
                           "(a folder: vqcodec.folders' encode_tree and codes_of_media_tree)")


def _refuse_codes_as_media(media) -> None:
    """Refuse codes that the codes methods gave (KindedCodes) where media is wanted: encoded, they were taken for
    3-D audio or an image of another type ('audio must be (channels, samples) or (samples,), not 3-D')."""
    made = kind_of(media)
    if made is not None:
        raise VQCodecError(f"these are codes (of {kind_held(made)}), not media: codes_to_file makes a .vq file of "
                           f"them, {decoder_of(made)} decodes them")


def _decode_with_maker(model_id: bytes | None) -> str:
    """What decodes codes that the model of `model_id` made: that model, named as it is installed where it is."""
    installed = None if model_id is None else decoder_advice(model_id.hex(), None)
    named = "" if installed is None else f", Codec.load({shown(installed)})"
    return f"decode them with the model that made them{named}"


def _same_channels(x: torch.Tensor, tolerance: float = SAME_CHANNEL_TOLERANCE) -> bool:
    """Whether every channel of (channels, 1, samples) is within `tolerance` of the first."""
    return x.shape[0] > 1 and bool((x - x[:1]).abs().max() <= tolerance)


def _codes_shared(codes: np.ndarray) -> bool:
    """Whether every channel of (channels, quality, frames) codes has the first one's codes."""
    return codes.shape[0] > 1 and bool((codes == codes[:1]).all())


def _one_at_a_time(method):
    """Run an encoding method under its codec's lock, counted as an encoding under way: a rate search keeps
    the encoder's latents and its trial depth weight on the codec, and an encoding leaves its input's level
    there, so two threads encoding with one Codec would get each other's (re-entrant: the methods call each
    other)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            self._encodings += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._encodings -= 1
    return locked


def _between_encodings(setter):
    """Run an encoder setting's setter under its codec's lock, so that it waits for an encoding another thread
    runs on the codec; one that this thread runs (its progress callback sets it) refuses it. Either would have
    changed the encoding half way."""
    @functools.wraps(setter)
    def locked(self, value) -> None:
        with self._lock:
            if self._encodings:
                raise VQCodecError(f"this codec is in the middle of an encoding; set its "
                                   f"{setter.__name__.replace('_', ' ')} before or after it, not from its progress "
                                   "callback")
            setter(self, value)
    return locked


class _RateSearch:
    """A rate search under way on a codec: the depth weight of its current try, and the encoder's latents of
    each block or tile, which every try codes again."""

    def __init__(self, weight: float):
        self.weight = weight
        self.latents: dict[tuple, torch.Tensor] = {}


@naming_its_file
def decode(data, device: str = "cpu"):
    """Decode `.vq` bytes (or a `.vq` file's path) with the installed model the file names:
    (audio, sample rate) or a Pillow image, as Codec.decode."""
    from .registry import model_for_file

    device = resolve_device(device)  # a misspelt device is named before the model is looked for
    data = vq_bytes(data)
    return Codec.load(model_for_file(data), device=device).decode(data)


# ---------------------------------------------------------------- the codec

CODINGS = ("auto", "prior", "fixed")


class Codec:
    """A trained model and its prior, with the encoder's settings: media <-> codes <-> `.vq` bytes.

    A rate search and the level warning keep state on the object, so the encoding methods hold a
    lock: threads sharing one Codec encode one at a time (a Codec each runs them in parallel). The
    encoder settings (beam, depth_weight, ...) are the object's, for every thread.

    What the model's codes are, as attributes: `kind`, "audio" or "image"; `name`; `model_id`, the 8 bytes a `.vq`
    header names it by; `num_codebooks`, the most levels its codes have (the highest quality); `codebook_size`,
    each code an index below it (or -1, a level left out); `hop`, the samples of a frame of audio at `sample_rate`
    (so `sample_rate / hop` frames a second), or the pixels of a side of an image's latent cell; `sample_rate`, 0
    for images; and `code_dtype`, the type of the codes it gives."""

    def __init__(self, model, meta: dict, tensors: dict, device: str = "cpu", coding: str = "auto",
                 beam: int | None = None):
        # held by the encoding methods and the settings' setters (_one_at_a_time, _between_encodings)
        self._lock = threading.RLock()
        self._encodings = 0  # the encoding methods under way, in the thread holding the lock
        self.meta = meta
        self.name = meta.get("name", "model")
        self.device = device
        self.model = model.to(device).eval()
        self.cfg = model.cfg
        self.kind = self.cfg.kind
        self.model_id = bytes.fromhex(meta["model_id"])
        # models whose files this one decodes too: it is a decoder-only fine-tune of them (same codes)
        self.decodes = {bytes.fromhex(model_id) for model_id in meta.get("decodes", [])}
        self._codes_id: bytes | None = None  # codes_id, hashed where first asked for
        self.hop = self.cfg.hop
        self.num_codebooks = self.cfg.num_codebooks
        self.codebook_size = self.cfg.codebook_size
        self.sample_rate = getattr(self.cfg, "sample_rate", 0)
        self.block_frames = AUDIO_BLOCK_FRAMES if self.kind == "audio" else IMAGE_TILE
        # The learned prior over the codes (model tensors "prior.*"), or None: see vqcodec/prior.py.
        self.prior = CodePrior.from_tensors(tensors)
        if self.prior is not None and (self.prior.codebook_size != self.codebook_size or self.prior.kind != self.kind
                                       or self.prior.num_levels < self.num_codebooks):
            raise VQCodecError(f"model {self.name}: its prior does not fit its codebooks")
        self.coding = coding
        self.beam = DEFAULT_BEAM[self.kind] if beam is None else beam
        self.refine = 0
        self._rate_weight = DEFAULT_RATE_WEIGHT[self.kind]
        self._depth_weight = DEFAULT_DEPTH_WEIGHT[self.kind]
        self._weights_set: set[str] = set()  # the weights given through their setters ("rate weight", ...)
        self._refine_loss = None
        self._rate_search: _RateSearch | None = None  # during a rate search
        self.progress = None
        self.input_peak = 0.0  # the largest absolute sample of the audio last encoded (see level_warning)
        self.input_gain = 1.0  # the level gain it was coded at

    def __getstate__(self) -> dict:
        """A copy (pickle, copy.deepcopy: a Codec sent to worker processes) gets a lock of its own. It is taken
        under the lock, so that another thread's rate search is not copied half way; a copy made by the
        searching thread itself, from its progress callback, leaves the search out: its latents, which the
        copy would take for those of every input it encoded, and its trial depth weight."""
        with self._lock:
            return {key: value for key, value in self.__dict__.items()
                    if key not in ("_lock", "_encodings")} | {"_rate_search": None}

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_progress", state.pop("progress", None))  # a Codec pickled before progress checked its value
        state.pop("_latent_memo", None)  # a Codec pickled before _rate_search held it
        state.setdefault("_rate_search", None)
        state.setdefault("_codes_id", None)  # a Codec pickled before codes_id
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._encodings = 0

    @classmethod
    def load(cls, name: str, device: str = "cpu", coding: str = "auto", beam: int | None = None) -> "Codec":
        """Load a model and return a Codec ready to encode and decode with it.

        `name`: an installed model's name (such as "speech16k" or "image"; searched in
        $VQCODEC_MODEL_PATH, then the shipped models, as `vqcodec models` lists them) or the path of
        its files, NAME.safetensors with NAME.json beside it (a str or Path; a folder holding one
        model is taken too). `device`: "cpu", "cuda" (the current GPU), "cuda:N" (GPU N), "auto" (cuda
        when there is one) or a torch.device. `coding`: how new files code their indices, "auto" (with
        the model's prior when it has one), "prior" or "fixed" (see the `coding` attribute). `beam`:
        the width of the encoder's code search (default 1 for audio, 4 for images).

        Returns a Codec for the model's media kind (`kind`: "audio" or "image"). Raises VQCodecError
        for an unknown name, missing or damaged model files, an unknown device or coding, "cuda"
        without a GPU or "cuda:N" beyond the GPUs there are, or "prior" for a model that has none."""
        if not isinstance(name, (str, Path)):
            raise VQCodecError(f"a model is named by a name or a path, not {type_of(name)}")
        device = resolve_device(device)
        meta, tensors = read_model_files(find_model(name))
        return cls(build_model(meta, tensors), meta, tensors, device, coding, beam)

    # ------------------------------------------------------------ one call for any media

    def default_quality(self, targeted: bool = False) -> int:
        """The quality `encode` uses when none is given: 8 codebooks (or all, if fewer), and all of them
        under a rate target, which then chooses."""
        return self.num_codebooks if targeted else min(DEFAULT_QUALITY, self.num_codebooks)

    def encode(self, media, quality: int | None = None, *, sample_rate: int | None = None,
               max_rate: float | None = None) -> bytes:
        """Encode media of this model's kind into `.vq` bytes, as `vqcodec encode` does.

        `media`: a file path, binary stream or file contents as bytes (any format soundfile or Pillow
        reads), a Pillow image, or an array (NumPy, a torch tensor, or lists): audio (channels,
        samples) or (samples,), float or 8- to 32-bit integer PCM, with `sample_rate`, or a uint8
        image (height, width), (height, width, 3) RGB or (height, width, 4) RGBA, but not a `.vq`
        file (`recode` recodes one). `quality`: the most codebooks used (default_quality).
        `max_rate`: the best file within that many kbps (audio) or bits per pixel (images). Audio coded
        above full scale (level_warning) gets a UserWarning, from a file as from an array."""
        return self._encode_media(media, quality, sample_rate, max_rate, warn=True)

    def _encode_media(self, media, quality: int | None, sample_rate: int | None, max_rate: float | None,
                      warn: bool) -> bytes:
        """encode; without `warn`, audio from a file coded above full scale gets no UserWarning (media_to_codes,
        whose callers name the file: folders.warn_of_level)."""
        from PIL import Image

        quality = self.default_quality(max_rate is not None) if quality is None else quality
        _refuse_codes_as_media(media)
        if isinstance(media, (list, tuple)):
            _refuse_a_batch_of_media(media)
            media = as_array(media)  # a list of ints is refused as encode_audio refuses it, not taken as float
        if isinstance(media, torch.Tensor):
            media = as_array(media)
        is_image = isinstance(media, Image.Image)
        if not isinstance(media, (np.ndarray, str, Path, bytes, bytearray, memoryview)) and not is_image \
                and not hasattr(media, "read"):
            raise VQCodecError(f"cannot encode {type_of(media)}: give a path, a binary stream, bytes, "
                               "a Pillow image or a NumPy array")
        if isinstance(media, str) and not media:  # Path("") is the current folder
            raise VQCodecError("the path of the media is empty")
        if isinstance(media, np.ndarray) and self.kind == "audio":
            if sample_rate is None:
                raise VQCodecError("audio given as an array needs its sample_rate")
            return self.encode_audio(media, sample_rate, quality, max_rate)
        if sample_rate is not None and self.kind == "image":  # the array may be audio, given to the wrong model
            raise VQCodecError(f"sample_rate is for audio given as an array, and model {self.name} codes images, "
                               "not audio")
        if sample_rate is not None:
            raise VQCodecError("sample_rate is for audio given as an array; a file or image carries its own")
        if isinstance(media, np.ndarray):
            return self.encode_image(image_of_array(media), quality, max_rate)
        if isinstance(media, (bytes, bytearray, memoryview)):
            if not memoryview(media).nbytes:  # soundfile said "Format not recognised"
                raise VQCodecError("the media is empty (0 bytes)")
            media = io.BytesIO(media)
        if hasattr(media, "read") and not is_seekable(media):  # copied, as encode_audio_file and open_image would,
            with spooled_stream(media) as copy:  # to be looked at first (_is_vq_file)
                return self._encode_media(copy, quality, sample_rate, max_rate, warn)
        if is_fifo(media):  # copied likewise, named by its path
            with spooled_fifo(media) as copy:
                return self._encode_media(copy, quality, sample_rate, max_rate, warn)
        if not is_image and _is_vq_file(media):  # "Format not recognised", said soundfile
            raise VQCodecError(f"{input_called(media)} is a .vq file, not media: "
                               "Codec.recode makes it smaller (as `vqcodec encode` of a .vq file does), read_codes "
                               "gives its codes")
        if self.kind == "audio":
            if is_image:
                raise VQCodecError(f"model {self.name} codes audio, not images")
            # the lock: the level warning reads what this encoding left on the codec
            with self._lock, self._refusing_the_other_kind(media):
                data = self.encode_audio_file(media, quality, max_rate)
                if warn:
                    self._warn_above_full_scale()
            return data
        if not is_image:
            with self._refusing_the_other_kind(media):
                return self.encode_image(open_image(media, fits=self.check_image_encode_fits), quality, max_rate,
                                         source=media)
        return self.encode_image(media, quality, max_rate)

    @contextlib.contextmanager
    def _refusing_the_other_kind(self, media):
        """Where reading media of the path or stream `media` fails, and it holds the other kind (an image given to
        an audio model), an error that says so, not the reader's ("Format not recognised")."""
        count = 16 if self.kind == "audio" else STREAMED_HEAD_BYTES
        start = None if isinstance(media, (str, Path)) else media.tell()  # a stream's, and its head, before it is read
        head = None if start is None else _first_bytes(media, count)
        try:
            yield
        except VQCodecError:
            if not _holds_the_other_kind(media, _first_bytes(media, count) if head is None else head, self.kind,
                                         start or 0):
                raise
            other = "image" if self.kind == "audio" else "audio"
            raise VQCodecError(f"model {self.name} codes {kind_coded(self.kind)}, not {kind_coded(other)}: "
                               f"{input_called(media)} is {kind_held(other)}") from None

    @naming_its_file
    def decode(self, data):
        """`.vq` bytes (or the path of a `.vq` file) -> (float32 audio (channels, samples), sample rate) for
        audio, or a Pillow image for images: the original rate, length, size and mode."""
        data = vq_bytes(data)
        header = vqformat.parse_header(data)
        self._check_file_model(header)  # its model and kind, as the decoding checks them; the decoding checks the rest
        return self.decode_audio(data) if header.kind == vqformat.KIND_AUDIO else self.decode_image(data)

    @property
    def progress(self) -> Callable[[str, int, int], None] | None:
        """Called as progress(stage, frames_done, frames_total) after each block of audio coded or
        decoded; the command line shows it on a terminal. None: not called."""
        return self._progress

    @progress.setter
    def progress(self, value: Callable[[str, int, int], None] | None) -> None:
        if value is not None and not callable(value):  # it was called, and failed, only once a block was coded
            raise VQCodecError(f"progress must be a function (stage, done, total) or None, not {shown_cut(value)}")
        self._progress = value

    @property
    def beam(self) -> int:
        """Beam width of the code search when encoding (1: greedy). Decoding does not depend on it."""
        return self._beam

    @beam.setter
    @_between_encodings
    def beam(self, value: int) -> None:
        self._beam = checked_setting("beam", value, 1, MAX_BEAM)

    @property
    def refine(self) -> int:
        """Steps of latent refinement when encoding (0: none; vqcodec/refine.py). Each step runs the
        decoder forwards and backwards, so encoding is slower; decoding is unaffected."""
        return self._refine

    @refine.setter
    @_between_encodings
    def refine(self, value: int) -> None:
        self._refine = checked_setting("refine", value, 0, MAX_REFINE)

    @property
    def rate_weight(self) -> float:
        """Rate-distortion-optimised quantisation of entropy-coded files (prior.RateCosts): codes are
        chosen by squared latent error plus this weight times the error the quality ladder trades
        for a bit (what one more codebook level would remove per bit it spends, measured on each
        window), times their bits under the prior. 0 picks the codes with the smallest error;
        decoding does not depend on it. Fixed-width files have no bits under a prior to weigh: left
        at its default the weight is ignored there, but a weight above 0 set here makes choosing
        their codes raise VQCodecError."""
        return self._rate_weight

    @rate_weight.setter
    @_between_encodings
    def rate_weight(self, value: float) -> None:
        self._rate_weight = checked_weight("rate weight", value, MAX_RATE_WEIGHT)
        self._weights_set.add("rate weight")

    @property
    def depth_weight(self) -> float:
        """Per-cell depth for entropy-coded files (CODING_PRIOR_DEPTH): each cell (audio frame, image
        latent cell) keeps the first d of the file's levels, d chosen to minimise its squared latent
        error plus this weight times the ladder's exchange rate (as for rate_weight) times the bits of
        its codes under the prior. 0: every cell uses every level. Decoding does not depend on it.
        Fixed-width files keep every level of every cell: left at its default the weight is ignored
        there, but a weight above 0 set here makes encoding them (or asking for variable_depth codes
        or a recoded file) raise VQCodecError."""
        return self._depth_weight

    @depth_weight.setter
    @_between_encodings
    def depth_weight(self, value: float) -> None:
        self._depth_weight = checked_weight("depth weight", value, MAX_DEPTH_WEIGHT)
        self._weights_set.add("depth weight")

    def check_weights(self, rate: bool = True, depth: bool = True) -> None:
        """Raise VQCodecError when this codec writes fixed-width files (coding "fixed", or a model
        without a prior), which have no bits under a prior to weigh, and a weight set above 0 would
        be used: the rate weight when codes are chosen (`rate`), the depth weight when cells get
        per-cell depth (`depth`). The defaults of a loaded codec pass. Encoding, recoding and the
        codes methods check this before they start."""
        rate, depth = checked_flag("rate", rate), checked_flag("depth", depth)
        cause = self.fixed_width_cause()
        if cause is None:
            return
        for name, value, used in (("rate weight", self._rate_weight, rate),
                                  ("depth weight", self._depth_weight, depth)):
            if used and value > 0 and name in self._weights_set:
                why = fixed_width_why(cause, self.name, "its coding is 'fixed'")
                raise VQCodecError(f"{name} {value:g} weighs bits under the model's prior, but this codec writes "
                                   f"fixed-width files ({why}): set the {name} to 0 for them")

    def fixed_width_cause(self) -> str | None:
        """Why this codec writes fixed-width files, which have no bits under a prior for a rate or
        depth weight to weigh: "fixed coding" (its coding is "fixed") or "no prior" (its model has
        none); None when it entropy-codes them."""
        return fixed_width_cause(self._coding, self.prior is not None)

    def _rate_costs(self, window: torch.Tensor, inner: tuple[slice, ...], quality: int) -> RateCosts | None:
        """The rate term for choosing the codes of a window's inner cells, or None when codes are
        chosen by error alone (no rate weight, or fixed-width coding)."""
        if not self.rate_weight or self._coding_id() != vqformat.CODING_PRIOR:
            return None
        rvq = self.model.quantizer
        # The nearest codes give the same-level neighbours' estimate and the ladder's exchange rate:
        # the error the next level up would remove per bit it spends (the last one at the top quality).
        ladder = min(quality + 1, self.num_codebooks)
        estimate = rvq.encode_cells(window, ladder)
        costs = RateCosts(self.prior, estimate.cpu().numpy(), inner, 1.0, ladder, self.device)
        index = (slice(None), slice(None)) + inner
        latents = window[index].movedim(1, -1).reshape(-1, window.shape[1])
        codes = estimate[index].reshape(ladder, -1)
        before = latents - rvq.decode(codes[:ladder - 1])
        after = before - rvq.layers[ladder - 1].decode(codes[ladder - 1])
        removed = before.pow(2).sum(1).mean() - after.pow(2).sum(1).mean()
        bits = costs.bits(ladder - 1, codes[ladder - 2] if ladder > 1 else None, codes[ladder - 1]).mean()
        scale = float(self.rate_weight * removed / bits) if bits > 0 else 0.0
        if not scale > 0:
            return None
        costs.scale(scale)
        return costs

    @property
    def chooses_depths(self) -> bool:
        """Whether files and codes made by this codec get per-cell depth: a depth weight, and a prior
        to code the depths under."""
        return self._depth_active(True)

    def _depth_active(self, variable_depth: bool) -> bool:
        return variable_depth and self._depth_weight_now() > 0 and self._coding_id() == vqformat.CODING_PRIOR

    def _depth_weight_now(self) -> float:
        """The depth weight the encoding under way uses: a rate search's current try's, else depth_weight."""
        return self._depth_weight if self._rate_search is None else self._rate_search.weight

    def _choose_depths(self, latents: torch.Tensor, codes: torch.Tensor,
                       depth_lambda: float | None = None) -> torch.Tensor:
        """Per-cell depth: codes (q, batch, *cells) of latents (batch, D, *cells), with each cell's levels
        from its depth d on set to ABSENT; d (0..q) minimises the cell's squared error after d levels plus
        lambda times the bits of its first d codes under the prior (with these codes as context).

        lambda is depth_weight times the quality ladder's exchange rate measured on these cells: the
        error one more level of nearest codes removes, summed, per bit it spends (at the top quality,
        the last level's own), unless `depth_lambda` gives it."""
        ladder, errors = self._depth_ladder(latents, codes)
        return self._cut_depths(codes.shape, ladder, errors, depth_lambda)

    def _depth_ladder(self, latents: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What _cut_depths needs of some cells: their codes (ladder, cells), one level more than `codes`
        (q, batch, *cells) below the top quality, and float64 errors (ladder + 1, cells) after 0..ladder
        levels. Each cell's on its own, so a tile's cells give what the whole image's would."""
        rvq = self.model.quantizer
        quality = codes.shape[0]
        vectors = latents.movedim(1, -1).reshape(-1, latents.shape[1])
        flat = codes.reshape(quality, -1)
        if quality < self.num_codebooks:
            flat = torch.cat([flat, rvq.layers[quality].encode(vectors - rvq.decode(flat))[None]])
        return flat, rvq.partial_errors(vectors, flat).double()

    def _cut_depths(self, shape: tuple, flat: torch.Tensor, errors: torch.Tensor,
                    depth_lambda: float | None = None) -> torch.Tensor:
        """_choose_depths for codes of `shape` (q, batch, *cells), given their _depth_ladder."""
        quality, ladder = shape[0], flat.shape[0]
        planes = flat.reshape(ladder, *shape[1:]).transpose(0, 1).cpu().numpy()  # (batch, ladder, *cells)
        bits = torch.from_numpy(np.stack([self.prior.code_bits(p[:, None] if p.ndim == 2 else p).reshape(ladder, -1)
                                          for p in planes], 1).reshape(ladder, -1)).to(errors.device)
        if depth_lambda is None:
            removed, spent = float((errors[ladder - 1] - errors[ladder]).sum()), float(bits[ladder - 1].sum())
            if not (removed > 0 and spent > 0):
                return flat[:quality].reshape(shape)
            depth_lambda = self._depth_weight_now() * removed / spent
        spent_by_depth = torch.cat([bits.new_zeros((1, bits.shape[1])), bits[:quality].cumsum(0)])
        depth = (errors[:quality + 1] + depth_lambda * spent_by_depth).argmin(0)
        absent = torch.arange(quality, device=flat.device)[:, None] >= depth[None]
        return flat[:quality].masked_fill(absent, ABSENT).reshape(shape)

    def _quantize(self, window: torch.Tensor, inner: tuple[slice, ...], quality: int,
                  variable_depth: bool = False) -> torch.Tensor:
        """Codes (quality, batch, *inner cells) of the inner cells of a window of latents (batch, D, *cells)."""
        cells, codes = self._search(window, inner, quality)
        return self._choose_depths(cells, codes) if self._depth_active(variable_depth) else codes

    def _search(self, window: torch.Tensor, inner: tuple[slice, ...],
                quality: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner cells of a window of latents, and their codes (quality, batch, *inner cells) at full depth."""
        cells = window[(slice(None), slice(None)) + inner]
        costs = self._rate_costs(window, inner, quality)
        return cells, self.model.quantizer.encode_cells(cells, quality, self.beam, costs)

    def _depth_finish(self, variable_depth: bool):
        """For refine_codes: what turns a step's codes into the file's codes (the depth choice, or nothing)."""
        return self._choose_depths if self._depth_active(variable_depth) else None

    # ------------------------------------------------------------ payload coding

    @property
    def coding(self) -> str:
        """How new files code their indices: "auto" (the prior when the model has one), "prior" or "fixed".
        Fixed-width files cannot use a rate or depth weight set above 0 (check_weights)."""
        return self._coding

    @coding.setter
    @_between_encodings
    def coding(self, value: str) -> None:
        if value not in CODINGS:
            raise VQCodecError(f"unknown coding {shown(value)} (use {', '.join(CODINGS)})")
        if value == "prior" and self.prior is None:
            raise VQCodecError(f"model {self.name} has no prior for entropy coding; run `vqcodec fit-prior` first")
        self._coding = value

    def _coding_id(self) -> int:
        """The coding of new files whose cells use every level: CODING_PRIOR or CODING_FIXED."""
        return vqformat.CODING_FIXED if self.fixed_width_cause() else vqformat.CODING_PRIOR

    def _file_coding(self, codes: np.ndarray) -> int:
        """The coding of a new file holding `codes`: CODING_PRIOR_DEPTH when some cell stops short."""
        coding = self._coding_id()
        if (codes < 0).any():
            if coding != vqformat.CODING_PRIOR:
                raise VQCodecError("some frames or cells stop short of the last codebook (per-cell depth, code -1), "
                                   f"which fixed-width coding cannot hold: {self._prior_advice()}")
            return vqformat.CODING_PRIOR_DEPTH
        return coding

    def _prior_advice(self) -> str:
        """What to do with codes that stop short, which this codec codes fixed-width."""
        return ("code them with the model's prior (" + setting("--coding auto", "coding='auto'") + ")"
                if self.fixed_width_cause() == "fixed coding" else
                f"model {self.name} has no prior to code them with (`vqcodec fit-prior` fits one)")

    def _fixed_width_quality(self, cuts: FileCuts, quality: int, searched: bool) -> int:
        """The quality a recode coded fixed-width, which holds every level of every cell, can have: `quality`, or
        with a rate `searched`, at most the depth of the file's shallowest cell; refused where that is 0, or
        below `quality` without a search (a per-cell-depth file's search was refused at its first try)."""
        shallowest = cuts.shallowest()
        if shallowest >= quality or searched and shallowest > 0:
            return min(quality, shallowest)
        if not shallowest:
            raise VQCodecError("some frames or cells of this file hold no codes (per-cell depth), which fixed-width "
                               f"coding cannot hold at any quality: {self._prior_advice()}")
        fewer = setting(f"-q {shallowest}", f"quality={shallowest}")
        raise VQCodecError(f"some frames or cells of this file stop at {plural(shallowest, 'codebook')} (per-cell "
                           f"depth), which fixed-width coding at {quality} cannot hold: recode to {fewer} or fewer, "
                           f"or {self._prior_advice()}")

    def _prior_id(self, coding: int) -> int:
        return self.prior.prior_id if coding in vqformat.PRIOR_CODINGS else 0

    def _encode_payload(self, coding: int, codes: np.ndarray) -> bytes:
        """One chunk's codes, audio (channels, q, frames) or image (q, rows, cols), as a payload."""
        if coding in vqformat.PRIOR_CODINGS:
            return self.prior.encode_chunk(codes, depths=coding == vqformat.CODING_PRIOR_DEPTH)
        return entropy.pack_fixed(codes, self.codebook_size)

    def _decode_payload(self, header: vqformat.Header, payload: bytes, shape: tuple[int, int, int],
                        depth_bits: list[float] | None = None) -> np.ndarray:
        """One chunk's codes of the given shape (every channel's, for audio), as _code_dtype (a payload
        can hold many codes in few bytes). `depth_bits`: as for CodePrior.decode_chunk, the ideal bits of
        the depth maps the chunk stores."""
        if header.kind == vqformat.KIND_AUDIO and header.flags & vqformat.FLAG_SHARED_CHANNELS:
            layout, payload = vqformat.channel_layout(payload)
            if layout == vqformat.LAYOUT_SHARED:  # every channel's codes, as a read-only view of the one set
                return np.broadcast_to(self._decode_body(header, payload, (1, *shape[1:]), depth_bits), shape)
        return self._decode_body(header, payload, shape, depth_bits)

    def _decode_body(self, header: vqformat.Header, payload: bytes, shape: tuple[int, int, int],
                     depth_bits: list[float] | None = None) -> np.ndarray:
        self._check_chunk_fits(header, shape)
        if header.coding in vqformat.PRIOR_CODINGS:
            return self.prior.decode_chunk(payload, shape, depths=header.coding == vqformat.CODING_PRIOR_DEPTH,
                                           dtype=self._code_dtype, depth_bits=depth_bits)
        return entropy.unpack_fixed(payload, math.prod(shape), self.codebook_size, self._code_dtype).reshape(shape)

    def _check_chunk_fits(self, header: vqformat.Header, shape: tuple[int, int, int]) -> None:
        """Refuse a chunk whose codes of `shape` would not fit in memory, before it is decoded: a 23 KB
        file can hold one entropy-coded chunk of 2^20 frames of 64 channels at q8, 1 GB of int16 codes.
        They are counted as _code_dtype, and, range-decoded a plane at a time (a channel's codes, or an
        image's), at RANGE_DECODE_BYTES a code of the plane (fixed width unpacks a block at a time)."""
        codes, work = math.prod(shape), 0
        if header.coding in vqformat.PRIOR_CODINGS:
            work = (codes // shape[0] if header.kind == vqformat.KIND_AUDIO else codes) * RANGE_DECODE_BYTES
        size = codes * np.dtype(self._code_dtype).itemsize + work
        if size > CHECKED_CHUNK_BYTES:
            _check_fits_memory(size, f"the {plural(codes, 'code')} of a chunk take", "this file cannot be decoded here",
                               ChunkTooLarge)

    @property
    def code_dtype(self):
        """The integer type of the codes read_codes, media_to_codes, audio_to_codes and image_to_codes
        give: int16, or int32 for a codebook of more than 32 768 codes."""
        return self._code_dtype

    @property
    def _code_dtype(self):
        """The smallest integer type that holds every code and ABSENT: a whole recording's codes are
        kept in memory while it is coded (an hour of speech16k at q8: 2.9 MB as int16)."""
        return np.int16 if self.codebook_size <= 1 << 15 else np.int32

    def check_quality(self, quality: int) -> int:
        """`quality` as an int, or a one-line error when this model has no such level."""
        highest = min(self.num_codebooks, vqformat.MAX_QUALITY)
        quality = scalar_of(quality)
        if not is_whole(quality) or not 1 <= quality <= highest:
            raise VQCodecError(f"{setting('-q', 'quality')} must be a whole number 1..{highest} for model {self.name}, "
                               f"got {shown(quality)}")
        return int(quality)

    def _checked_codes(self, codes, level_axis: int, layout: str) -> np.ndarray:
        """Codes given to codes_to_audio / codes_to_image as _code_dtype: 3-D, 1 to num_codebooks levels on
        `level_axis`, each an index below K or -1 (a level the cell leaves out, as files do: from
        some level up to the top)."""
        codes = self._code_array(codes, level_axis, layout)
        if codes.dtype == object:  # nested lists holding something that is no int64: named, not 'not object'
            codes = _object_codes_as_int64(codes)
        low, high = codes.min(), codes.max()
        if low < ABSENT or high >= self.codebook_size:
            bad = low if low < ABSENT else high
            where = np.unravel_index(np.argmax(codes == bad), codes.shape)  # its first place
            place = ", ".join(f"{_axis_noun(axis)} {int(index)}"
                              for axis, index in zip(layout.split(", "), where))
            raise VQCodecError(f"codes hold {int(bad)} ({place}), which is no code: codes are each an index below "
                               f"{self.codebook_size} or -1")
        if codes.min() == ABSENT:
            try:
                plane_depths(np.moveaxis(codes, level_axis, 0))
            except ValueError as exc:  # a level left out below one that is present: no file can hold it
                raise VQCodecError(f"{exc}: {_first_hole(codes, level_axis, layout)}") from None
        return codes.astype(self._code_dtype, copy=False)  # int64 only for the networks, a window at a time

    def _code_array(self, codes, level_axis: int, layout: str) -> np.ndarray:
        """_checked_codes' checks of shape and type alone, on the array as given: nothing is allocated or
        read, so that the size the shape makes is checked before the codes are scanned or copied (a
        broadcast array of a few bytes can be billions of codes): an array of NumPy's object type is given
        back as it is, its items unread."""
        self._refuse_other_models_codes(codes)
        codes = _integer_codes(codes)
        if codes.ndim != 3 or not 1 <= codes.shape[level_axis] <= self.num_codebooks or 0 in codes.shape:
            raise self._bad_codes(layout, codes, level_axis)
        return codes

    def _refuse_other_models_codes(self, codes) -> None:
        """Refuse codes that say they were made by a model of the other kind of media, or by a model that does
        not make this one's codes (codekind)."""
        made = kind_of(codes)
        maker, codes_id = maker_of(codes)
        if made is not None and made != self.kind:
            raise VQCodecError(f"these are the codes of {kind_held(made)}, made by a model that codes "
                               f"{kind_coded(made)}, but model {self.name} codes {kind_coded(self.kind)}: "
                               f"{_decode_with_maker(maker)}")
        if maker is None or self.makes_codes_of(maker, codes_id):
            return
        raise VQCodecError(not_its_codes(f"these codes were made by model {maker.hex()}", codes_id, self, "by",
                                         _decode_with_maker(maker)))

    @property
    def codes_id(self) -> bytes:
        """The 8 bytes of the model's "codes_id" (modelfile.compute_codes_id, as 16 hex digits): the hash of its
        encoder and codebooks, which the models that make the same codes share (a decoder-only fine-tune and the
        model it was made from). Hashed from the weights, once, where the model's files do not record it."""
        if self._codes_id is None:
            recorded = self.meta.get("codes_id")
            self._codes_id = bytes.fromhex(recorded if recorded is not None else
                                           compute_codes_id(config_to_dict(self.cfg), inference_state(self.model)))
        return self._codes_id

    def makes_codes_of(self, model_id: bytes, codes_id: bytes | None = None) -> bool:
        """Whether the model of `model_id` (8 bytes, as Codec.model_id and a `.vq` header give it) makes the codes
        this one does. Given the `codes_id` of that model (8 bytes, as Codec.codes_id and the codes methods'
        `codes.codes_id` give it), the answer is exact: the codes ids are equal (or the model is this one, or one
        whose files this one decodes). Without it (codes pickled by an earlier release, a codes.json's model_id),
        it is the model's lineage as this model's and the installed models' "decodes" list it: this model, or
        either is a decoder-only fine-tune of the other or of a model both were made from. Either id may also be
        given as its 16 hex digits, as codes.json and `vqcodec info` write it."""
        model_id = id_bytes("model_id", model_id)
        codes_id = None if codes_id is None else id_bytes("codes_id", codes_id)
        if self.decodes_files_of(model_id):
            return True
        if codes_id is not None:
            return codes_id == self.codes_id
        lineage = {self.model_id.hex(), *(other.hex() for other in self.decodes)}
        return any(lineage & {model_id.hex(), *model.get("decodes", ())}
                   for model in list_models(shadowed=True) if model["model_id"] == model_id.hex())

    def _bad_codes(self, layout: str, codes: np.ndarray, level_axis: int) -> VQCodecError:
        """The refusal of codes of a shape this model cannot take, naming their shape and what is wrong with it."""
        fault = _shape_fault(codes.shape, layout, level_axis, self.num_codebooks)
        dtype = np.dtype(np.int64) if codes.dtype == object else codes.dtype  # as _checked_codes takes its items
        return VQCodecError(f"codes must be a non-empty integer array ({layout}) of at most {self.num_codebooks} "
                            f"levels, each an index below {self.codebook_size} or -1, not {dtype} "
                            f"{tuple(codes.shape)}: {fault}")

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            raise VQCodecError(f"model {self.name} codes {kind_coded(self.kind)}, not {kind_coded(kind)}")

    def _encoder_latents(self, x: torch.Tensor, block: tuple) -> torch.Tensor:
        """The encoder's latents of one block or tile. During a rate search every try codes the same
        input, so each block's are computed once and kept (about 50 MB an hour of mono speech)."""
        if self._rate_search is None:
            return self._encoded(x)
        if block not in self._rate_search.latents:
            self._rate_search.latents[block] = self._encoded(x)
        return self._rate_search.latents[block]

    def _encoded(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's latents of `x`, refused where the squared length of one is NaN or infinite: the quantiser's
        distances then are too, and its nearest code is garbage (mostly code 0). Weights of absurd size (finite, such
        as 1e30, which loading takes) overflow so; audio beyond CODED_LEVEL_BOUND (which with sane weights overflows
        only at some 3e18) is refused before (_encode_frames), as it would decode to garbage."""
        latents = self.model.encoder(x)
        if torch.isfinite(latents.square().sum(1)).all():
            return latents
        raise VQCodecError(f"model {self.name} encodes to NaN or infinite values: its weights are damaged "
                           "(values far beyond those of a trained model)")

    # ------------------------------------------------------------ audio: codes

    def _encode_frames(self, samples: SampleWindow, total_frames: int, quality: int,
                       variable_depth: bool = False, gain: int = 0) -> np.ndarray:
        """(channels, quality, frames) codes of a sample stream at the model rate (ABSENT beyond each
        frame's depth with `variable_depth`); a stream coded at level `gain` has its channels compared
        at the input's level."""
        self.check_weights(rate=True, depth=variable_depth)
        ctx, hop = self.cfg.context_frames, self.hop
        # One array for the whole stream, filled block by block: no per-block pieces left between the
        # blocks' large temporaries on the heap, where they would keep it from being reused.
        out = np.empty((samples.buffer.shape[0], quality, total_frames), dtype=self._code_dtype)
        searching = self._rate_search is not None and self._rate_search.latents  # a rate search's later tries
        stage = "searching the rate" if searching else "encoding"
        tolerance = SAME_CHANNEL_TOLERANCE * vqformat.GAIN_ONE / gain if gain else SAME_CHANNEL_TOLERANCE
        for f0, f1 in _blocks(total_frames, self.block_frames):
            a, b = max(0, f0 - ctx), min(total_frames, f1 + ctx)
            x = torch.from_numpy(np.ascontiguousarray(samples.take(a * hop, b * hop)))[:, None].to(self.device)
            # coded once, codes copied to every channel
            if _same_channels(x[:, :, (f0 - a) * hop:(f1 - a) * hop], tolerance):
                x = x[:1]
            check_coded_level(x, gain)
            window = self._encoder_latents(x, ("audio", a, b))
            if self.refine:
                previous = out[:x.shape[0], :, a:f0].astype(np.int64)
                codes = self._refine_block(x, window, (slice(f0 - a, f1 - a),), previous, quality, variable_depth,
                                           samples.total - a * hop)
            else:
                codes = self._quantize(window, (slice(f0 - a, f1 - a),), quality, variable_depth)
            out[:, :, f0:f1] = codes.transpose(0, 1).cpu().numpy()
            self._report_encoding(stage, f1, total_frames)
        return out

    def _report_encoding(self, stage: str, done: int, total: int) -> None:
        """progress(stage, done, total) of an encoding: one that the callback runs on this codec is one of its
        own, which gets none of a rate search under way (its latents are another input's, its depth weight a
        try's). Under the encoding's lock: another thread's decoding calls progress too."""
        if self.progress:
            with self._search_set_aside():
                self.progress(stage, done, total)

    @contextlib.contextmanager
    def _search_set_aside(self):
        """Run the caller's code (a progress callback, a stream's read) with no rate search on the codec, so that
        an encoding it runs here is its own: it gets none of the search's latents or trial depth weight."""
        search, self._rate_search = self._rate_search, None
        try:
            yield
        finally:
            self._rate_search = search

    def _refine_block(self, x, window, inner, previous, quality, variable_depth, length) -> torch.Tensor:
        """Codes (quality, channels, frames) of one block's inner frames by latent refinement
        (vqcodec/refine.py) against the training loss, on the block's samples before `length` (the
        zeros padding the last frame are not the input's). The context before the block keeps the
        previous block's final codes, the context after it its unrefined codes."""
        hop = self.hop
        context = self.model.quantizer.encode_cells(window, quality, self.beam)
        if previous.shape[2]:
            context[:, :, :previous.shape[2]] = torch.from_numpy(previous).to(self.device).transpose(0, 1)
        samples = (slice(None), slice(None), slice(inner[0].start * hop, min(inner[0].stop * hop, length)))
        return self._refined(x, window, context, inner, samples, quality, variable_depth)

    def _refined(self, x, window, context, inner, span, quality, variable_depth) -> torch.Tensor:
        """refine_codes of a block's or tile's inner cells against `x[span]`, at this codec's settings."""
        rvq = self.model.quantizer
        return refine_codes(rvq, self.model.decoder, self._loss(), window, rvq.decode_cells(context), inner,
                            x[span], span, quality, self.beam, self.refine, REFINE_LEARNING_RATE[self.kind],
                            self._rate_costs(window, inner, quality), self._depth_finish(variable_depth))

    def _loss(self):
        """The refinement objective (estimate, target) -> scalar tensor: the training loss for audio,
        plain MSE for images (the training loss scales it by 1000, which Adam's epsilon would notice)."""
        if self.kind == "image":
            return torch.nn.functional.mse_loss
        if self._refine_loss is None:
            from .losses import ReconstructionLoss
            with torch.inference_mode(False):  # its buffers take part in autograd
                self._refine_loss = ReconstructionLoss(self.cfg).to(self.device)
        return lambda estimate, target: self._refine_loss(estimate, target)[0]

    def _decode_frames(self, codes: np.ndarray, first: int = 0, last: int | None = None,
                       reported: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Yield (channels, samples) float32 blocks at the model rate from (channels, q, frames) codes:
        the audio of frames first..last (default: all), each block decoded with its context frames.
        `reported`: the frames decoded before these and the frames of the whole decoding, for progress."""
        ctx, hop = self.cfg.context_frames, self.hop
        channels, quality, total_frames = codes.shape
        last = total_frames if last is None else last
        before, whole = reported or (0, last - first)
        for f0, f1 in _blocks(last - first, self.block_frames):
            f0, f1 = f0 + first, f1 + first
            a, b = max(0, f0 - ctx), min(total_frames, f1 + ctx)
            window = codes[:, :, a:b]
            shared = _codes_shared(window)  # one signal in every channel: decoded once, and copied
            window = torch.from_numpy(np.ascontiguousarray(window[:1] if shared else window, dtype=np.int64))
            latents = self.model.quantizer.decode_cells(window.to(self.device).transpose(0, 1))
            audio = self._decoded(latents)[:, 0, (f0 - a) * hop:(f1 - a) * hop].cpu().numpy().astype(np.float32)
            if self.progress:
                self.progress("decoding", before + f1 - first, whole)
            yield np.repeat(audio, codes.shape[0], axis=0) if shared else audio

    def _decoded(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's output for `latents`, refused where it holds NaN or infinite values, or values beyond
        DECODED_BOUND: weights of absurd size (finite, such as 1e30, which loading takes) overflow, or give values
        of that size, and the model, not the codes, is at fault."""
        output = self.model.decoder(latents)
        reach = largest_magnitude(output)
        if reach <= DECODED_BOUND:
            return output
        if not math.isfinite(reach):
            raise VQCodecError(f"model {self.name} decodes to NaN or infinite values: its weights are damaged "
                               "(values far beyond those of a trained model)")
        raise VQCodecError(f"model {self.name} decodes to values of {reach:.3g}, far beyond the {DECODED_BOUND:.0e} "
                           "that a working model stays well within: its weights are damaged")

    def _silent_frames(self, channels: int, frames: int, reported: tuple[int, int]) -> Iterator[np.ndarray]:
        """The blocks _decode_frames yields for `frames` frames, silent, without running the decoder:
        the frames of lost chunks (a header alone of 24 hours took the decoder hours to make silence)."""
        before, whole = reported
        for f0, f1 in _blocks(frames, self.block_frames):
            if self.progress:
                self.progress("decoding", before + f1, whole)
            yield np.zeros((channels, (f1 - f0) * self.hop), dtype=np.float32)

    @_one_at_a_time
    @torch.no_grad()  # not inference_mode: refinement needs gradients through the decoder
    def audio_to_codes(self, audio: np.ndarray, quality: int | None = None, variable_depth: bool = False, *,
                       channels: int | None = None) -> np.ndarray:
        """Codes of audio already at the model rate: (channels, samples), or (samples,) for mono, -> (channels,
        quality, frames) codes, frames = ceil(samples / hop), of code_dtype (int16, or int32 for a codebook of
        more than 32 768 codes), made in that type as they are found, with no int64 copy of the whole recording's.

        The samples are coded as given: unlike encoding and media_to_codes, no level gain is applied.
        With `variable_depth` (and a depth weight, for entropy coding) each frame keeps only the levels
        that pay for their bits, as in files: the rest of its codes are -1. `channels`, if given, must be
        the audio's: an array of more channels than samples is refused without it, as (samples, channels)."""
        self._require("audio")
        _refuse_codes_as_media(audio)
        variable_depth = checked_flag("variable_depth", variable_depth)
        audio = audio_array(audio, channels)  # converted to float32 a block at a time, as it is coded
        channels, samples = audio.shape
        check_audio_size(channels, self.sample_rate, samples)
        quality = self.check_quality(self.num_codebooks if quality is None else quality)
        frames = math.ceil(samples / self.hop)
        window = SampleWindow(checked_blocks(float_blocks(audio), None, channels), channels, samples)
        return kinded(self._encode_frames(window, frames, quality, variable_depth), "audio", self.model_id,
                      self.codes_id)

    @torch.inference_mode()
    def codes_to_audio(self, codes: np.ndarray) -> np.ndarray:
        """(channels, quality, frames) codes -> float32 (channels, frames * hop) at the model rate; a code of
        -1 leaves its level out of that frame, from some level up to the top.

        `codes`: of any integer type, a NumPy array, a torch tensor or nested lists, each an index below
        codebook_size or -1, of 1 to num_codebooks levels (fewer decode as a lower quality does)."""
        self._require("audio")
        codes = self._code_array(codes, 1, "channels, quality, frames")
        copy = 0 if codes.dtype == self._code_dtype else codes.size * np.dtype(self._code_dtype).itemsize
        if codes.dtype == object:  # its items are taken as int64 first, and that copy made of them
            copy += codes.size * np.dtype(np.int64).itemsize
        check_decoded_fits(codes.shape[0], codes.shape[2] * self.hop, copy)  # before the codes are copied
        codes = self._checked_codes(codes, 1, "channels, quality, frames")
        return joined_blocks(self._decode_frames(codes), codes.shape[0], codes.shape[2] * self.hop)

    # ------------------------------------------------------------ audio: files

    def _model_length(self, samples: int, rate: int) -> int:
        """Samples at the model rate for `samples` at `rate`: ceil(samples * model_rate / rate), exactly."""
        return -(-samples * self.sample_rate // rate)

    def _frames_of_samples(self, samples: int, rate: int) -> int:
        return -(-self._model_length(samples, rate) // self.hop)

    def _samples_of_frames(self, frames: int, rate: int) -> int:
        """The samples at `rate` that `frames` frames of codes decode to: frames x hop at the model
        rate, at `rate` (rounded down, the only count that can make `frames` frames). Refused when
        it makes another number of frames: then no count does (at a rate far below the model's)."""
        samples = frames * self.hop * rate // self.sample_rate
        if samples == 0 or self._frames_of_samples(samples, rate) != frames:
            raise VQCodecError(f"{plural(frames, 'frame')} of codes last {frames * self.hop / self.sample_rate:g} s, "
                               f"which no whole number of samples at {rate} Hz lasts ({plural(samples, 'sample')} "
                               f"{'makes' if samples == 1 else 'make'} "
                               f"{plural(self._frames_of_samples(samples, rate), 'frame')}, and "
                               f"{plural(samples + 1, 'sample')} {self._frames_of_samples(samples + 1, rate)})")
        return samples

    def _pack_audio(self, codes: np.ndarray, rate: int, samples: int, quality: int, gain: int = 0,
                    model_id: bytes | None = None) -> bytes:
        """A chunk whose channels all have the same codes (a mono recording in a stereo file, or a
        stretch of one) stores them once, behind a channel-layout byte (FLAG_SHARED_CHANNELS).
        A level gain (level_gain) goes in the header's `width` field (FLAG_LEVEL_GAIN). `model_id`:
        the model the header names (default this one's; a recoded file keeps its own)."""
        coding = self._file_coding(codes)
        parts = [codes[:, :, f0:f1] for f0, f1 in _blocks(codes.shape[2], AUDIO_CHUNK_FRAMES)]
        shared = [_codes_shared(part) for part in parts]
        header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=coding, quality=quality,
                                 model_id=model_id or self.model_id, prior_id=self._prior_id(coding), sample_rate=rate,
                                 length=samples, channels=codes.shape[0], chunk_frames=AUDIO_CHUNK_FRAMES,
                                 width=gain, flags=(vqformat.FLAG_SHARED_CHANNELS if any(shared) else 0)
                                 | (vqformat.FLAG_LEVEL_GAIN if gain else 0))
        if not any(shared):
            return vqformat.build_file(header, [self._encode_payload(coding, part) for part in parts])
        return vqformat.build_file(header, [
            bytes([vqformat.LAYOUT_SHARED]) + self._encode_payload(coding, part[:1]) if one else
            bytes([vqformat.LAYOUT_EVERY_CHANNEL]) + self._encode_payload(coding, part)
            for part, one in zip(parts, shared)])

    @_one_at_a_time  # the level warning reads what this encoding left on the codec
    def encode_audio_stream(self, blocks: Iterator[np.ndarray], sample_rate: int, channels: int, samples: int,
                            quality: int, peak: float | None = None) -> bytes:
        """Encode a stream of (channels, n) blocks (float, or integer PCM as encode_audio takes it)
        holding `samples` samples per channel in all (a stream that holds fewer or more is refused).
        With the stream's `peak` (largest absolute sample), known before it is read, audio outside
        LEVEL_RANGE is coded at a level gain; without it, at its own level. A peak that is not the
        stream's own, so that its gain is another than the stream's peak makes, is refused once the
        stream is read (a lower one clipped the stream's loud parts without a level warning). Audio
        coded above full scale (level_warning: a stream beyond +-1.0 whose peak is not given, or
        beyond 256) gets a UserWarning, as encode_audio gives it."""
        # the samples are coded as float32, and encode_audio measures their peak so: a float64 peak rounded
        # otherwise gave another gain now and then (one loud stream in a hundred), and was refused
        data = self._encode_stream(block_iterator(blocks, channels), sample_rate, channels, samples, quality,
                                   None if peak is None else float(np.float32(checked_peak(peak))))
        self._warn_above_full_scale()
        return data

    @_one_at_a_time
    @torch.no_grad()  # as audio_to_codes
    def _encode_stream(self, blocks: Iterator[np.ndarray], sample_rate: int, channels: int, samples: int,
                       quality: int, peak: float | None) -> bytes:
        """encode_audio_stream of a peak the codec measured, which may be NaN or infinite, for the blocks'
        own check to refuse."""
        self._require("audio")
        quality = self.check_quality(quality)
        sample_rate = checked_rate(sample_rate)
        channels, samples = checked_count("channels", channels), checked_count("samples", samples)
        check_audio_size(channels, sample_rate, samples)
        model_length = self._model_length(samples, sample_rate)
        gain = level_gain(peak) if peak is not None else 0
        seen = [0.0]  # a peak given is checked against the samples: a wrong one codes at a wrong level
        taken = [0]
        checked = checked_blocks(blocks, seen, channels, taken)
        stream = resampled_blocks(scaled_blocks(checked, gain), sample_rate, self.sample_rate, channels, model_length)
        window = SampleWindow(stream, channels, model_length)
        codes = self._encode_frames(window, math.ceil(model_length / self.hop), quality, variable_depth=True,
                                    gain=gain)
        next(checked, None)  # a block past the samples coded, if there is one: more than `samples`
        if taken[0] != samples:  # the file would have been cut, or padded with silence, to `samples`
            held = "more than" if taken[0] > samples else f"{taken[0]} of"
            raise VQCodecError(f"the stream held {held} the {plural(samples, 'sample')} per channel given")
        if peak is not None and level_gain(seen[0]) != gain:
            raise VQCodecError(f"the stream's largest absolute sample is {seen[0]:.9g}, not the peak given "
                               f"({peak:.9g}), which would code it at another level: give its peak, or none to code "
                               "it at its own")
        self.input_peak = seen[0]
        self.input_gain = gain / vqformat.GAIN_ONE if gain else 1.0
        return self._pack_audio(codes, sample_rate, samples, quality, gain)

    def level_warning(self, name) -> str | None:
        """A line for audio that its last encoding coded above full scale, or None: float audio beyond
        +-1.0 that no level gain brought within it (a stream of unknown peak, or one above 256).

        The networks are trained on audio within +-1.0 and decode within it, so the loud parts of such
        audio come out limited and distorted."""
        level = self.input_peak / self.input_gain
        if level <= 1.0:
            return None
        return (f"{name} is coded at {20 * math.log10(level):+.1f} dB above full scale (float samples up to "
                f"{self.input_peak:.3g}); the codec is made for audio within +-1.0 and decodes within it, so the "
                f"loud parts come out limited and distorted: scale it down first")

    @_one_at_a_time
    def encode_audio(self, audio: np.ndarray, sample_rate: int, quality: int, max_kbps: float | None = None, *,
                     channels: int | None = None) -> bytes:
        """Encode float audio (channels, samples) or (samples,) at any rate into `.vq` bytes. An array of
        more channels than samples is refused as (samples, channels) unless `channels` says it has that many.

        With `max_kbps`, the best file of at most that bitrate (whole file, header included), with
        `quality` the most codebooks it may use (vqcodec.ratecontrol). Audio that is coded above full
        scale (level_warning: float samples beyond 256, such as 16-bit values given as floats) gets
        a UserWarning, as the command line's warning line."""
        _refuse_codes_as_media(audio)
        audio = audio_array(audio, channels)  # converted to float32 a block at a time, as it is coded
        sample_rate = checked_rate(sample_rate)
        check_audio_size(audio.shape[0], sample_rate, audio.shape[1])  # "audio is empty", not "samples ... not 0"
        if max_kbps is not None:
            data = self._fit_audio(lambda q: self._encode_array(audio, sample_rate, q), quality, max_kbps,
                                   audio.shape[0], sample_rate, audio.shape[1])
        else:
            data = self._encode_array(audio, sample_rate, quality)
        self._warn_above_full_scale()
        return data

    def _warn_above_full_scale(self) -> None:
        """The UserWarning of level_warning for audio an API call has just coded."""
        import warnings

        warning = self.level_warning("the audio")
        if warning:
            warnings.warn(warning, stacklevel=caller_stacklevel())

    def _encode_array(self, audio: np.ndarray, sample_rate: int, quality: int) -> bytes:
        """Encode a pcm_array, read twice a block at a time (for its peak, then to code it): an array
        of another type than float32 is never held whole as float32."""
        peak = max((peak_of([block]) for block in float_blocks(audio)), default=0.0)
        check_read_peak(peak)
        return self._encode_stream(float_blocks(audio), sample_rate, audio.shape[0], audio.shape[1], quality, peak)

    @_one_at_a_time
    def encode_audio_file(self, source, quality: int, max_kbps: float | None = None) -> bytes:
        """Encode an audio file (path or binary stream) that soundfile reads, block by block. A stream
        that cannot seek (a pipe, a socket), which soundfile cannot read, is copied into a temporary
        file first.

        With `max_kbps`, the best file of at most that bitrate, as encode_audio."""
        check_source(source, "audio", bytes_hint="Codec.encode takes a file's bytes")
        if not isinstance(source, (str, Path)) and not is_seekable(source):
            with spooled_stream(source) as copy:
                return self.encode_audio_file(copy, quality, max_kbps)
        if is_fifo(source):
            with spooled_fifo(source) as copy:
                return self.encode_audio_file(copy, quality, max_kbps)
        if max_kbps is None:
            return self._encode_audio_source(source, quality)
        start = None if isinstance(source, (str, Path)) else source.tell()  # where each try reads the stream from
        with open_sound(source) as sound:
            self._check_file_rate(sound.samplerate, source)
            channels, sample_rate = sound.channels, sound.samplerate
            samples = sum(block.shape[1] for block in self._sound_blocks(sound, source))
        self._check_samples_read(samples, source)
        if start is not None:
            source = _AsideOfSearch(source, self)

        def encode_at(q: int) -> bytes:
            if start is not None:
                source.seek(start)
            return self._encode_audio_source(source, q)
        return self._fit_audio(encode_at, quality, max_kbps, channels, sample_rate, samples)

    def _fit_audio(self, encode_at: Callable[[int], bytes], quality: int, max_kbps: float, channels: int,
                   sample_rate: int, samples: int) -> bytes:
        max_kbps = checked_max_rate(max_kbps, audio=True)
        check_audio_size(channels, sample_rate, samples)
        return self._fit_rate(encode_at, quality, *ratecontrol.rate_target(max_kbps, True, samples / sample_rate))

    def _fit_rate(self, encode_at: Callable[[int], bytes], max_quality: int, limit_bytes: int, target: str,
                  describe: Callable[[int], str]) -> bytes:
        """The largest file of at most `limit_bytes` that `encode_at(quality)` makes, over qualities
        up to `max_quality` and, for entropy-coded files, depth weights (vqcodec.ratecontrol).
        This codec's depth weight is where the search starts."""
        search = _RateSearch(self._depth_weight)

        def encode(quality: int, weight: float) -> bytes:
            search.weight = weight
            return encode_at(quality)
        outer, self._rate_search = self._rate_search, search
        try:
            return ratecontrol.fit_size(encode, limit_bytes, self.check_quality(max_quality), self._depth_weight,
                                        MAX_DEPTH_WEIGHT, self._coding_id() == vqformat.CODING_PRIOR, target, describe)
        finally:
            self._rate_search = outer

    @staticmethod
    def _sound_blocks(sound: soundfile.SoundFile, source) -> Iterator[np.ndarray]:
        """(channels, n) float32 blocks of the samples the file really holds (soundio.sound_blocks); a read
        that fails is refused naming `source` and how far reading got."""
        return sound_blocks(sound, input_name(source), STREAM_BLOCK_SAMPLES)

    @staticmethod
    def _check_file_rate(sample_rate: int, source) -> None:
        """A file at a rate that a .vq file cannot hold is refused, naming it (the API's own check names none)."""
        if sample_rate > vqformat.MAX_SAMPLE_RATE:
            where = input_name(source)
            raise VQCodecError(f"audio {where if where is not None else 'from the stream'} is at {sample_rate} Hz, "
                               f"above the {vqformat.MAX_SAMPLE_RATE} Hz that a .vq file holds")

    @staticmethod
    def _check_samples_read(samples: int, source) -> None:
        """A file of no samples (a sound header and nothing after it) is refused, naming it."""
        if samples == 0:
            where = input_name(source)
            raise VQCodecError(f"audio {where if where is not None else 'from the stream'} holds no samples")

    def _encode_audio_source(self, source, quality: int) -> bytes:
        """The file's peak (for the level gain) and length, then its coding: a short file read once
        into memory, a longer one read twice, so that memory stays bounded. The length is what the
        reads return, which for a truncated file is less than its header declares."""
        with open_sound(source) as sound:
            self._check_file_rate(sound.samplerate, source)
            if sound.frames * sound.channels <= WHOLE_READ_SAMPLES:
                read = list(self._sound_blocks(sound, source))
                stream, peak = iter(read), peak_of(read)
                samples = sum(block.shape[1] for block in read)
            else:
                peak, samples = 0.0, 0
                for block in self._sound_blocks(sound, source):
                    peak, samples = max(peak, peak_of([block])), samples + block.shape[1]
                sound.seek(0)
                stream = self._sound_blocks(sound, source)
            self._check_samples_read(samples, source)
            check_read_peak(peak)
            return self._encode_stream(stream, sound.samplerate, sound.channels, samples, quality, peak)

    def _audio_parts(self, data: bytes, salvage: bool = False) -> tuple[vqformat.Header, list, int, int]:
        """The header, the chunk payloads, and the length in samples and frames at the model rate.
        With `salvage`, a damaged chunk is None instead of an error (the header must be intact)."""
        if salvage:
            header = vqformat.parse_header(data)
        else:
            header, chunks, _ = vqformat.parse_file(data)
        _check_audio_file(header)
        self._check_file_model(header)
        model_length = self._model_length(header.length, header.sample_rate)
        total_frames = math.ceil(model_length / self.hop)
        self._check_chunks(header, total_frames)
        if salvage:
            chunks = vqformat.salvage_chunks(data, header)[0]
        return header, chunks, model_length, total_frames

    def _decode_chunk(self, header: vqformat.Header, chunks: list, total_frames: int, index: int,
                      salvage: bool = False) -> tuple[np.ndarray, bool]:
        """The codes of chunk `index` (channels, quality, its frames), as _code_dtype (as in _encode_frames),
        and whether it is damaged: with `salvage`, a chunk that is missing (None) or does not decode has
        all codes ABSENT; without it, such a chunk is an error. Codes every channel shares (a shared
        chunk, a damaged one) are held once, as a read-only view: a chunk may hold 2^20 frames."""
        f0, f1 = index * header.chunk_frames, min(total_frames, (index + 1) * header.chunk_frames)
        damaged: list[int] = []
        codes = self._chunk_codes(header, chunks, index, (header.channels, header.quality, f1 - f0), salvage, damaged)
        if codes.strides[0] == 0:
            return np.broadcast_to(codes[:1].astype(self._code_dtype, copy=False), codes.shape), bool(damaged)
        return codes.astype(self._code_dtype, copy=False), bool(damaged)

    def _chunk_codes(self, header: vqformat.Header, chunks: list, index: int, shape: tuple, salvage: bool,
                     damaged: list[int]) -> np.ndarray:
        """Chunk `index`'s codes. With `salvage`, a chunk that is None or does not decode gives all
        ABSENT codes (a read-only view, allocating nothing: a damaged file may declare far more codes
        than it holds), and its index is added to `damaged`."""
        if chunks[index] is not None:
            try:
                return self._decode_payload(header, chunks[index], shape)
            except ChunkTooLarge:
                raise
            except VQCodecError:
                if not salvage:
                    raise
        damaged.append(index)
        return np.broadcast_to(np.array(ABSENT, dtype=self._code_dtype), shape)

    @naming_its_file
    def check_file(self, data: bytes) -> None:
        """Refuse a `.vq` file (bytes, a path or a binary stream) this model does not decode: another model's,
        another prior's, more codebooks, or another number of chunks than the model's frames or rows make
        (the checks of the header; its chunks are not decoded)."""
        header = vqformat.parse_header(vq_bytes(data))
        self._check_file_model(header)
        self._check_chunks(header, self._chunk_layout(header)[0])

    def _another_models_file(self, header: vqformat.Header) -> str:
        """Why this model refuses a file that another wrote, whose files it does not decode, and what decodes it."""
        wrote = f"file was written by model {header.model_id.hex()}, not {self.name} ({self.model_id.hex()})"
        retired = retired_model_hint(header.model_id.hex(), header.coded_prior_id)
        installed = decoder_advice(header.model_id.hex(), header.coded_prior_id)
        advice = setting("pass the matching --model", "decode it with a Codec of the model that wrote it"
                         if installed is None else f"Codec.load({shown(installed)}) decodes it")
        if retired or self.prior is None or header.coded_prior_id != self.prior.prior_id:
            return f"{wrote}; {advice}{retired}"
        # A decoder-only fine-tune keeps the prior of the model it was made from, and makes its codes, but its files
        # name its own id alone (a .vq header has no codes id): nothing in them tells the other model it may take them
        return (f"{wrote}, though with the prior of {self.name} ({self.prior.prior_id:08x}), which a decoder-only "
                "fine-tune shares with the model it was made from: the files of a fine-tune name it, not its codes id, "
                "and decode with it (or a fine-tune of it), not with the model it was made from; "
                + setting("pass the model that wrote it as --model", "decode it with a Codec of that model"))

    def decodes_files_of(self, model_id: bytes) -> bool:
        """Whether this model decodes the files of the model of `model_id` (a header's 8 bytes): its own, or those
        of a model it lists under "decodes" (it is a decoder-only fine-tune of that one); or their 16 hex digits."""
        model_id = id_bytes("model_id", model_id)
        return model_id == self.model_id or model_id in self.decodes

    def _check_file_model(self, header: vqformat.Header) -> None:
        if not self.decodes_files_of(header.model_id):
            raise VQCodecError(self._another_models_file(header))
        if vqformat.KIND_NAMES[header.kind] != self.kind:
            raise VQCodecError(f"this .vq file holds {kind_held(vqformat.KIND_NAMES[header.kind])}, but model "
                               f"{self.name} codes {kind_coded(self.kind)}")
        if header.quality > self.num_codebooks:
            raise VQCodecError(f"file uses {plural(header.quality, 'codebook')}; model {self.name} has "
                               f"{self.num_codebooks}")
        if header.coding in vqformat.PRIOR_CODINGS:
            if self.prior is None:
                raise VQCodecError(f"file is entropy coded with prior {header.prior_id:08x}, but model {self.name} "
                                   "has no prior; pass the model files that wrote it")
            if header.prior_id != self.prior.prior_id:
                raise VQCodecError(f"file is entropy coded with prior {header.prior_id:08x}, but model {self.name} "
                                   f"has prior {self.prior.prior_id:08x}; pass the model files that wrote it"
                                   + retired_model_hint(self.model_id.hex(), header.prior_id))
        elif header.coding != vqformat.CODING_FIXED:
            raise VQCodecError(f"payload coding {header.coding} is not supported by this model")

    @naming_its_file
    def read_codes(self, data: bytes) -> tuple[vqformat.Header, np.ndarray]:
        """The header and the integer codes of a `.vq` file written by this model, without running the networks:
        audio (channels, quality, frames), every channel's even where a chunk stores shared codes once;
        image (quality, rows, cols). As int16 (int32 for a codebook of more than 32 768 codes): a small
        file can hold many codes (a day of 64 channels sharing them: 4.4 GB as int16 at q8), and
        codes that would not fit in the memory this process may use (physical memory, or a
        container's, RLIMIT_AS or RLIMIT_DATA limit below it) are refused before they are allocated."""
        header, chunks, _ = self._parse_whole(vq_bytes(data))
        return header, kinded(self._file_codes(header, chunks), self.kind, header.model_id, self.codes_id)

    @naming_its_file
    def code_blocks(self, data: bytes, max_codes: int = CODE_BLOCK_CODES) -> tuple[vqformat.Header, tuple, Iterator]:
        """read_codes a block at a time, so that a file's codes can be written out without being held
        whole: the header, the shape read_codes gives, and (first, codes) pairs, each a whole number of
        chunks of at most `max_codes` codes (or one chunk) from frame or row `first` on. The file, its
        model and whether a block fits in memory are checked before this returns; a chunk that
        does not decode is found when its block is read, and named as the file is here (naming_its_file)."""
        max_codes = checked_count("max_codes", max_codes)
        header, chunks, _ = self._parse_whole(vq_bytes(data))
        total, shape_of = self._checked_layout(header)
        per_block = max(1, max_codes // math.prod(shape_of(header.chunk_frames))) * header.chunk_frames
        self._check_chunk_fits(header, shape_of(min(total, header.chunk_frames)))  # a chunk may be 2^20 frames
        blocks = self._blocks_of_codes(header, chunks, total, shape_of, per_block)
        return header, shape_of(total), naming_damage_in(blocks, file_name(data))

    def _parse_whole(self, data: bytes) -> tuple[vqformat.Header, list[bytes], bytes | None]:
        """parse_file, and for an image the colour mode and its alpha plane checked as decoding checks
        them, so that reading a file's codes refuses what decoding it would."""
        header, chunks, alpha_bytes = vqformat.parse_file(data)
        if header.kind == vqformat.KIND_IMAGE:
            alpha_plane(header, alpha_bytes)
        return header, chunks, alpha_bytes

    def _checked_layout(self, header: vqformat.Header) -> tuple[int, Callable[[int], tuple]]:
        """_chunk_layout of a parsed file, once its model and chunk count are checked."""
        self._check_file_model(header)
        total, shape_of = self._chunk_layout(header)
        self._check_chunks(header, total)
        return total, shape_of

    def _file_codes(self, header: vqformat.Header, chunks: list[bytes]) -> np.ndarray:
        """All the codes of a parsed file written by this model (read_codes)."""
        total, shape_of = self._checked_layout(header)
        _check_fits_memory(math.prod(shape_of(total)) * np.dtype(self._code_dtype).itemsize)
        codes = np.empty(shape_of(total), dtype=self._code_dtype)  # filled chunk by chunk: not held twice
        self._fill_codes(header, chunks, codes, 0, total, shape_of)
        return codes

    def _blocks_of_codes(self, header: vqformat.Header, chunks: list[bytes], total: int,
                         shape_of: Callable[[int], tuple], per_block: int) -> Iterator[tuple[int, np.ndarray]]:
        for first, last in _blocks(total, per_block):
            block = np.empty(shape_of(last - first), dtype=self._code_dtype)
            self._fill_codes(header, chunks, block, first, last, shape_of)
            yield first, kinded(block, self.kind, header.model_id, self.codes_id)

    def _fill_codes(self, header: vqformat.Header, chunks: list[bytes], out: np.ndarray, first: int, last: int,
                    shape_of: Callable[[int], tuple]) -> None:
        """Decode the chunks of frames or rows first..last (whole chunks) into `out`."""
        axis = 2 if header.kind == vqformat.KIND_AUDIO else 1
        for a, b in _blocks(last - first, header.chunk_frames):
            payload = chunks[(first + a) // header.chunk_frames]
            out[(slice(None),) * axis + (slice(a, b),)] = self._decode_payload(header, payload, shape_of(b - a))

    @naming_its_file
    @_one_at_a_time  # it reads the depth weight, which another thread's rate search sets while it runs
    def recode(self, data: bytes, quality: int | None = None, max_rate: float | None = None) -> bytes:
        """A `.vq` file written by this model at a lower quality or rate, made from the file alone:
        at most `quality` levels (default: the file's), each frame or cell cut where its levels are
        worth least at this codec's depth weight (vqcodec/recode.py); with `max_rate` (kbps for
        audio, bits per pixel for images), the best such file of at most that rate, searched as
        encoding searches (vqcodec.ratecontrol). The networks do not run. At the file's own quality
        and without a rate, the codes are kept as they are. The new file names the model the file
        names, which may be one this codec's model is a decoder-only fine-tune of."""
        data = vq_bytes(data)
        header, chunks, alpha_bytes = self._parse_whole(data)
        total, shape_of = self._checked_layout(header)
        audio = header.kind == vqformat.KIND_AUDIO
        stored = header.quality
        quality = stored if quality is None else scalar_of(quality)
        if not is_whole(quality):  # "quality 4 is not within the file's 1..8 codebooks" said the string "4"
            raise VQCodecError(f"{setting('-q', 'quality')} must be a whole number of codebooks, not {shown(quality)}")
        if not 1 <= quality <= stored:
            raise VQCodecError(f"{setting('-q', 'quality')} {quality} is not within the file's 1..{stored} codebooks: "
                               "a file can be recoded to fewer codebooks, not more")
        quality = int(quality)
        held = math.prod(shape_of(total)) * np.dtype(self._code_dtype).itemsize
        _check_fits_memory(held + held // stored * quality, "recoding holds the file's codes and a cut of them,",
                           "recode it on a machine with more memory")
        codes = self._file_codes(header, chunks)
        # cut in the chunks the new file is written in, whatever the file's: a chunk's costs are worked
        # out whole, and a chunk may hold 2^20 frames of 64 channels
        cuts = FileCuts(self, codes, AUDIO_CHUNK_FRAMES if audio else IMAGE_CHUNK_ROWS)

        def pack(levels: int, weight: float) -> bytes:
            # the file's own model id, which a decoder-only fine-tune recoding it shares the codes of: every
            # model that decodes the file decodes what it recodes to
            cut = cuts.cut(levels, weight)
            if audio:
                return self._pack_audio(cut, header.sample_rate, header.length, levels, header.gain_units,
                                        header.model_id)
            return self._pack_image(cut, header.width, header.height, header.mode, alpha_bytes, header.model_id)

        self.check_weights(rate=False, depth=quality < stored or max_rate is not None)
        variable_depth = self._coding_id() == vqformat.CODING_PRIOR
        weight = self.depth_weight if variable_depth else 0.0
        if not variable_depth and header.coding == vqformat.CODING_PRIOR_DEPTH:
            quality = self._fixed_width_quality(cuts, quality, max_rate is not None)
        if max_rate is None:
            return pack(quality, weight if quality < stored else 0.0)
        limit, target, describe = ratecontrol.rate_target(checked_max_rate(max_rate, audio), audio,
                                                          header.duration if audio else header.width * header.height)
        return ratecontrol.fit_size(pack, limit, quality, weight, MAX_DEPTH_WEIGHT, variable_depth, target, describe)

    def media_to_codes(self, source, quality: int | None = None, *,
                       sample_rate: int | None = None) -> tuple[np.ndarray, dict]:
        """The codes of media, anything `encode` takes (a path, binary stream, file contents as bytes,
        a Pillow image, or an array, with `sample_rate` for audio), as a `.vq` file of it made with
        this codec's settings holds them (all of the model's codebooks unless `quality` says), and
        what restores the media: {"sample_rate", "samples", "channels", "gain"} or {"width", "height"}.
        The codes are of code_dtype, audio's (channels, quality, frames), sample_rate / hop frames a second
        of the model's rate, an image's (quality, rows, cols), a latent cell of hop x hop pixels each; level
        0 is the coarsest, each next one codes what the levels below it leave.
        The codes of an image are of its colour, as RGB: an alpha channel, and a colour mode other than RGB
        (grey, a palette), are left out, with an ImageReadWarning.

        The codes follow this codec's depth settings, as the file's do: where it chooses depths (chooses_depths:
        a depth weight above 0 and a prior, as a loaded codec has), each frame or cell has its own depth and -1
        beyond it. Set `depth_weight = 0` for codes of every level, as `vqcodec codes` does unless --depth-weight.

        Audio is read, resampled and coded block by block, as `encode` does, so a long recording
        needs no more memory than its codes."""
        quality = self.num_codebooks if quality is None else quality
        header, codes = self.read_codes(self._encode_media(source, quality, sample_rate, None, warn=False))
        if self.kind == "audio":
            return codes, {"sample_rate": header.sample_rate, "samples": header.length, "channels": header.channels,
                           "gain": header.gain}
        warn_of_what_codes_leave_out(header, source)
        return codes, {"width": header.width, "height": header.height}

    @naming_its_file
    def code_report(self, data: bytes) -> dict:
        """Where the bits of a `.vq` file written by this model go, without running the networks.

        Per codebook level: the number of codes present, their fixed-width size and, when the model
        has a prior, their ideal code length under it (sum of -log2 p); for files with per-cell depth,
        also the ideal length of the depth maps (`depth_ideal_bits`, included in `ideal_bytes`). A
        range-coded stream cannot be split by level, so the actual size is given for the payloads as a
        whole (with the channel-layout bytes of files that share channels' codes, which the levels'
        counts leave out: they count the codes stored); `framing_bytes` is the header, the chunk
        heads and the alpha plane. Each level's `fixed_bits` counts the codes present only, while
        `fixed_width_bytes` is what a fixed-width file would take: all `quality` levels of every one of
        the `cells` (frames or latent cells, per channel stored), as fixed width has no absent levels.
        """
        data = vq_bytes(data)
        header, chunks, alpha = self._parse_whole(data)
        self._check_file_model(header)
        quality = header.quality
        total, shape_of = self._chunk_layout(header)
        level_axis = 1 if header.kind == vqformat.KIND_AUDIO else 0
        self._check_chunks(header, total)
        counts = np.zeros(quality, dtype=np.int64)
        ideal = np.zeros(quality) if self.prior is not None else None
        depth_bits = [0.0] if header.coding == vqformat.CODING_PRIOR_DEPTH else None  # added up as decoded
        cells = fixed_bytes = 0
        fixed_width = entropy.bits_per_index(self.codebook_size)
        for (a, b), payload in zip(_blocks(total, header.chunk_frames), chunks):
            codes = self._decode_payload(header, payload, shape_of(b - a), depth_bits)
            if vqformat.stores_one_channel(header, payload):
                codes = codes[:1]  # what the chunk stores
            # as decoded (the prior takes each plane to int64 in turn): a chunk may hold 2^20 frames of 64 channels
            fixed_bytes += math.ceil(codes.size * fixed_width / 8)
            counts += [np.count_nonzero(codes.take(level, axis=level_axis) >= 0) for level in range(quality)]
            cells += codes.size // quality
            if ideal is not None:
                ideal += self.prior.ideal_bits(codes)
        payload_bytes = sum(len(c) for c in chunks)
        depth_bits = depth_bits[0] if depth_bits is not None else None
        return {
            "coding": vqformat.CODING_NAMES[header.coding],
            "prior_id": None if header.coded_prior_id is None else f"{header.coded_prior_id:08x}",
            "chunks": len(chunks),
            "payload_bytes": payload_bytes,
            "framing_bytes": len(data) - payload_bytes,
            "fixed_width_bytes": fixed_bytes,
            "ideal_bytes": float((ideal.sum() + (depth_bits or 0.0)) / 8) if ideal is not None else None,
            "cells": cells,
            "depth_ideal_bits": round(depth_bits, 1) if depth_bits is not None else None,
            "levels": [{"level": level, "codes": int(counts[level]), "fixed_bits": int(counts[level] * fixed_width),
                        "ideal_bits": round(float(ideal[level]), 1) if ideal is not None else None}
                       for level in range(quality)],
        }

    @staticmethod
    def _check_chunks(header: vqformat.Header, total: int) -> None:
        """The header's chunk count against the frames or rows it describes (parse_file reads exactly
        that many chunks; salvage_chunks needs it checked before it allocates)."""
        expected = vqformat.expected_chunk_count(total, header.chunk_frames)
        if header.chunk_count != expected:
            raise vqformat.FormatError(f"corrupted .vq file: {plural(header.chunk_count, 'chunk')} where {expected} "
                                       f"{'was' if expected == 1 else 'were'} expected")

    def _chunk_layout(self, header: vqformat.Header) -> tuple[int, Callable[[int], tuple]]:
        """The frames (audio) or latent rows (images) a file's chunks divide, and the shape of the
        codes of n of them: (channels, quality, n) or (quality, n, cols)."""
        if header.kind == vqformat.KIND_AUDIO:
            total = math.ceil(self._model_length(header.length, header.sample_rate) / self.hop)
            return total, lambda n: (header.channels, header.quality, n)
        rows, cols = math.ceil(header.height / self.hop), math.ceil(header.width / self.hop)
        return rows, lambda n: (header.quality, n, cols)

    @naming_its_file
    def damaged_parts(self, data: bytes, start: float = 0.0, duration: float | None = None) -> list[dict]:
        """What a damaged `.vq` file has lost: each run of consecutive code chunks whose framing or CRC
        fails or that do not decode, as {"chunk": the first, "count", "from", "to"} in seconds (audio) or
        pixel rows (images), and
        {"chunk", "alpha": True} for a damaged alpha plane, and {"trailing_bytes"} for bytes after the
        last chunk (which salvage ignores), or for a stream that went on for more than TRAILING_STREAM_BYTES
        after its last chunk (or where its framing is lost), {"unread_after": TRAILING_STREAM_BYTES,
        "framing_lost"}: not read further (read_vq_stream), as salvage uses none of them. Empty for an intact
        file. The header must be intact: a file whose header is damaged raises, as in decoding. With `start`
        or `duration` (seconds, audio; refused for an image), only the runs that come within a millisecond of
        that part are sure to be listed (whole): the chunks far from it are not decoded."""
        data = vq_bytes(data, salvage=True)
        audio = vqformat.parse_header(data).kind == vqformat.KIND_AUDIO
        self._require("audio" if audio else "image")
        if not audio and (start != 0 or duration is not None):
            raise VQCodecError("start= and duration= are for audio; this .vq file holds an image")
        if audio:
            header, chunks, _, _ = self._audio_parts(data, salvage=True)
            alpha_bytes, scale, end = None, self.hop / self.sample_rate, header.length / header.sample_rate
        else:
            header, chunks, alpha_bytes, _, _ = self._image_parts(data, salvage=True)
            scale, end = self.hop, header.height
        total, shape_of = self._chunk_layout(header)
        framed = len(chunks.found)  # the chunks after these are lost with the framing, as one run
        found: dict[int, bool] = {}  # chunk index -> whether it is lost, for those decoded

        def lost(index: int) -> bool:
            if index >= framed:
                return True
            if index not in found:
                damaged: list[int] = []
                frames = min(total, (index + 1) * header.chunk_frames) - index * header.chunk_frames
                self._chunk_codes(header, chunks, index, shape_of(frames), True, damaged)
                found[index] = bool(damaged)
            return found[index]

        first, last = 0, header.chunk_count  # the chunks looked at: all, or those near the part and their runs
        sample, count = self._sample_range(data, start, duration) if audio else (0, None)
        if count is not None:  # checked as decoding checks it
            per_chunk = header.chunk_frames * scale  # seconds
            begin, finish = sample / header.sample_rate - 0.001, (sample + count) / header.sample_rate + 0.001
            first = min(framed, last, max(0, math.floor(begin / per_chunk)))
            last = max(first, min(last, math.ceil(finish / per_chunk)))
            while first > 0 and first < last and lost(first) and lost(first - 1):  # a run across an end, whole
                first -= 1
            while first < last < header.chunk_count and lost(last - 1) and lost(last):
                last = header.chunk_count if last >= framed else last + 1
        runs: list[list[int]] = []  # [first chunk, count] of each run of consecutive lost chunks
        for index in range(first, min(last, framed)):
            if lost(index) and runs and sum(runs[-1]) == index:
                runs[-1][1] += 1
            elif lost(index):
                runs.append([index, 1])
        tail = max(first, framed)
        if last > tail:
            if runs and sum(runs[-1]) == tail:
                runs[-1][1] += last - tail
            else:
                runs.append([tail, last - tail])

        def edge(position: float, outwards) -> float:  # to the millisecond, never hiding a short span
            return outwards(round(position * 1000, 6)) / 1000 if audio else position

        report = [{"chunk": first, "count": count,
                   "from": edge(min(end, first * header.chunk_frames * scale), math.floor),
                   "to": edge(min(end, (first + count) * header.chunk_frames * scale), math.ceil)}
                  for first, count in runs]
        if not audio:
            try:
                alpha_plane(header, alpha_bytes)
            except VQCodecError:
                report.append({"chunk": header.chunk_count, "alpha": True})
        trailing = vqformat.trailing_bytes(data, header)
        if isinstance(data, UnendedStream):  # its trailing bytes are those read of more
            report.append({"unread_after": TRAILING_STREAM_BYTES, "framing_lost": not trailing})
        elif trailing:
            report.append({"trailing_bytes": trailing})
        return report

    @naming_its_file
    @torch.inference_mode()
    def decode_audio_blocks(self, data: bytes, start: int = 0, count: int | None = None, salvage: bool = False,
                            rate: int | None = None) -> tuple[vqformat.Header, Iterator[np.ndarray]]:
        """Parse `.vq` bytes and return the header and a generator of (channels, n) blocks at the original rate,
        or at `rate` (Hz; the length then scales with it, rounded up).

        With `start` and `count` (samples at that rate), only those samples: the chunks and
        network blocks that cover them are decoded, and nothing else. They equal the same samples of
        the whole file's decoding up to float rounding (the blocks fall elsewhere); a file whose rate
        is not the model's is resampled from a point on the whole file's resampling grid, 20 ms (and
        at least RESAMPLE_MARGIN_SAMPLES at the output rate) before the range.

        With `salvage`, a file whose header is intact decodes even where chunks are damaged or
        missing (damaged_parts lists them): their frames come out silent."""
        salvage = checked_flag("salvage", salvage)
        data = vq_bytes(data, salvage)
        self._require("audio")
        header, chunks, model_length, total_frames = self._audio_parts(data, salvage)
        rate, length = self._output_timing(header, rate)
        start, count = scalar_of(start), scalar_of(count)
        for name, value in (("start", start), ("count", 0 if count is None else count)):
            if not is_whole(value):
                raise VQCodecError(f"the {name} must be a whole number of samples, not {shown(value)}")
        start = int(start)
        count = length - start if count is None else int(count)
        if count < 1:  # an empty or negative part, whatever the file holds
            raise VQCodecError(f"the count must be at least 1 sample, not {count}")
        if not (0 <= start < length and count <= length - start):
            raise VQCodecError(f"samples {start}..{start + count} are not within the file's {length} "
                               f"({length / rate:.3f} s)")
        low, high, lead = self._model_span(rate, length, start, count, model_length)
        ctx, hop = self.cfg.context_frames, self.hop
        first_frame, last_frame = low // hop, -(-high // hop)
        first_chunk = max(0, first_frame - ctx) // header.chunk_frames
        last_chunk = -(-min(total_frames, last_frame + ctx) // header.chunk_frames)
        codes_end = min(total_frames, last_chunk * header.chunk_frames)
        held = {}  # chunk index -> (its codes, whether it is damaged)
        if not salvage:  # a chunk that does not decode is refused before any audio, not hours into it
            held = self._checked_chunks(header, chunks, total_frames, first_chunk, last_chunk)

        def frame_blocks(held: dict):
            """(audio, its frames that damaged chunks held) a block at a time at the model rate, for frames
            first_frame..last_frame. The chunks are decoded for a group of blocks and their context at a
            time, each once, so that long audio of many channels never has all its codes in memory; each
            block sees the codes it would see among all of them. `held`: chunks decoded already."""
            for g0, g1 in _blocks(last_frame - first_frame, self.block_frames * DECODE_GROUP_BLOCKS):
                g0, g1 = g0 + first_frame, g1 + first_frame
                lo, hi = max(first_chunk * header.chunk_frames, g0 - ctx), min(codes_end, g1 + ctx)
                c0, c1 = lo // header.chunk_frames, -(-hi // header.chunk_frames)
                held = {index: held[index] for index in held if index >= c0}
                for index in range(c0, c1):
                    if index not in held:
                        held[index] = self._decode_chunk(header, chunks, total_frames, index, salvage)
                pieces = [(held[index][0][:, :, max(0, lo - at):hi - at], held[index][1])
                          for index, at in ((index, index * header.chunk_frames) for index in range(c0, c1))]
                codes = np.concatenate([piece for piece, _ in pieces], axis=2)  # frames lo..hi
                silent = np.concatenate([np.full(piece.shape[2], damaged) for piece, damaged in pieces])
                frame = g0 - lo
                reported = (g0 - first_frame, last_frame - first_frame)
                if silent[g0 - lo:g1 - lo].all():  # lost, so silent whatever the decoder makes of it
                    decoded = self._silent_frames(header.channels, g1 - g0, reported)
                else:
                    decoded = self._decode_frames(codes, g0 - lo, g1 - lo, reported)
                for block in decoded:
                    yield block, silent[frame:frame + block.shape[1] // hop]
                    frame += block.shape[1] // hop

        def model_rate_blocks(frames: Iterator):
            position = first_frame * hop  # the model sample the next block begins at
            while True:
                # Inference mode around each block's decoding, not across the yield: held there, it would be
                # on in the caller's code between blocks, and go off whenever the garbage collector closes
                # a generator left half-read (a write that failed), in the middle of loading a model.
                with torch.inference_mode():
                    item = next(frames, None)
                if item is None:
                    break
                block, silent = item
                if header.gain != 1.0:
                    block = block * np.float32(header.gain)
                if silent.any():
                    block[:, np.repeat(silent, hop)] = 0.0
                begin, end = max(position, low), min(position + block.shape[1], high)
                if end > begin:
                    yield block[:, begin - position:end - position]
                position += block.shape[1]

        # frame_blocks alone holds `held`, and drops each chunk once its blocks are decoded
        blocks = resampled_blocks(model_rate_blocks(frame_blocks(held)), self.sample_rate, rate, header.channels,
                                   lead + count)
        return header, dropped_samples(blocks, lead)

    def _checked_chunks(self, header: vqformat.Header, chunks: list, total_frames: int, first: int,
                        last: int) -> dict[int, tuple[np.ndarray, bool]]:
        """Decode chunks first..last (refusing one that does not decode) and keep the codes of the first
        of them, up to CODE_BLOCK_CODES stored codes (and the first chunk, whatever its size: the first
        blocks need it at once), for their audio: a range's chunks are decoded once, and only the chunks
        of long audio beyond those are decoded again when their blocks come."""
        kept, stored = {}, 0
        for index in range(first, last):
            codes, damaged = self._decode_chunk(header, chunks, total_frames, index)
            stored += (codes[:1].size if codes.strides[0] == 0 else codes.size) + HELD_CHUNK_CODES  # shared: one set
            if index == first or stored <= CODE_BLOCK_CODES:
                kept[index] = codes, damaged
        return kept

    @staticmethod
    def _output_timing(header: vqformat.Header, rate: int | None) -> tuple[int, int]:
        """The rate audio is decoded at (the file's, unless `rate` says) and its length in samples there."""
        if rate is None:
            return header.sample_rate, header.length
        rate = scalar_of(rate)
        if not (is_whole(rate) and 1 <= rate <= vqformat.MAX_SAMPLE_RATE):
            raise VQCodecError(f"the output sample rate must be a whole number of Hz from 1 to "
                               f"{vqformat.MAX_SAMPLE_RATE}, not {shown(rate)}")
        if rate == header.sample_rate:
            return header.sample_rate, header.length
        return int(rate), -(-header.length * int(rate) // header.sample_rate)

    def _model_span(self, rate: int, length: int, start: int, count: int, model_length: int) -> tuple[int, int, int]:
        """Model-rate samples low..high to decode for samples start..start + count of the output (at
        `rate`, `length` samples in all), and how many resampled samples come before `start` (`lead`)."""
        model_rate = self.sample_rate
        if start == 0 and count == length:
            return 0, model_length, 0
        if rate == model_rate:
            return start, start + count, 0
        common = math.gcd(rate, model_rate)
        step, out_step = model_rate // common, rate // common  # model sample n * out_step / step is file sample n
        margin = math.ceil(max(RESAMPLE_MARGIN_SECONDS, RESAMPLE_MARGIN_SAMPLES / rate) * model_rate)
        low = max(0, start * step // out_step - margin)
        low -= low % step  # on a file sample, so the resampled part falls on the whole file's grid
        high = min(model_length, -(-(start + count) * step // out_step) + margin)
        return low, high, start - low // step * out_step

    @naming_its_file
    def decode_audio(self, data: bytes, start: float = 0.0, duration: float | None = None,
                     salvage: bool = False, rate: int | None = None) -> tuple[np.ndarray, int]:
        """`.vq` bytes -> float32 (channels, samples) and their rate: the original sample rate and
        length, or `rate` (Hz) and the length at it.

        With `start` and `duration` (seconds), only that part (to the end if the duration runs past
        it), decoding only what covers it; `salvage` decodes around damaged chunks (decode_audio_blocks)."""
        salvage = checked_flag("salvage", salvage)
        data = vq_bytes(data, salvage)
        first, count = self._sample_range(data, start, duration, rate)
        header, blocks = self.decode_audio_blocks(data, first, count, salvage, rate)
        output_rate, length = self._output_timing(header, rate)
        return joined_blocks(blocks, header.channels, length if count is None else count), output_rate

    def _sample_range(self, data: bytes, start: float, duration: float | None,
                      rate: int | None = None) -> tuple[int, int | None]:
        """(first sample, count) at the output rate for a range in seconds; (0, None) for all of it."""
        if start == 0 and duration is None:
            return 0, None
        self._require("audio")
        header = vqformat.parse_header(data)
        _check_audio_file(header)  # an image's header has no rate to measure the range in
        rate, length = self._output_timing(header, rate)
        start = checked_amount("start", start, "seconds", allow_zero=True)
        if start * rate >= length:
            raise VQCodecError(f"{setting(f'--start {start} s', f'start={start}')} is not before the end of the audio "
                               f"({length / rate:.9g} s)")
        first = min(round(start * rate), length - 1)  # a start within the last half sample rounds to the end
        left = length - first
        if duration is None or duration == math.inf:
            return first, left
        return first, max(1, round(min(checked_amount("duration", duration, "seconds") * rate, left)))

    @naming_its_file
    def decode_audio_file(self, data: bytes, destination, format_hint: str | None = None, subtype: str | None = None,
                          start: float = 0.0, duration: float | None = None, salvage: bool = False,
                          rate: int | None = None) -> None:
        """Decode into a path or binary stream, block by block; the format follows the hint, or the name (a path's, an
        open file's); a hint that contradicts the name's extension is refused (FLAC under a .wav name).
        `start`, `duration` (seconds), `salvage` and `rate` (Hz) as for decode_audio. Audio coded at a
        level gain from above full scale is written as float where the format has it (WAV), so that
        its level comes back, as it is in formats whose codec codes float samples (Ogg Vorbis, MP3:
        FLOAT_CODEC_SUBTYPES); other formats (Opus too), and integer subtypes, are clipped to full
        scale, with a ClippingWarning where samples were clipped (audio coded within full scale is
        clipped without one: its decoding can overshoot +-1.0 by the codec's error). A path
        is written through a temporary file renamed into place (streams.write_file), so a failure leaves
        what was there before; a stream is flushed (not closed) once written, and one whose write or flush fails is
        refused naming it ('cannot write NAME: REASON', 'the stream' where it has none). A file damaged in its chunks
        alone is refused saying that salvage=True decodes what is intact, as `vqcodec decode` says --salvage."""
        from .folders import with_salvage_hint

        salvage = checked_flag("salvage", salvage)
        data = vq_bytes(data, salvage)
        try:
            self._decode_audio_file(data, destination, format_hint, subtype, start, duration, salvage, rate)
        except VQCodecError as exc:
            if salvage:
                raise
            raise with_salvage_hint(exc, self, data) from None

    def _decode_audio_file(self, data: bytes, destination, format_hint: str | None = None, subtype: str | None = None,
                           start: float = 0.0, duration: float | None = None, salvage: bool = False,
                           rate: int | None = None, own_temporary: bool = False) -> None:
        """decode_audio_file; with `own_temporary`, for a caller that decodes into a temporary file of its own (the
        command line's spool of stdout, streams.write_file's), a failed write into it (a full disk or $TMPDIR) is left
        as the OSError the caller words ('cannot write out.wav: ...', 'cannot write a temporary file in /tmp: ...'), not
        'cannot write NAME' naming the temporary file (write_file's has a name: '.out.wav.XXXXXXXX.part') or 'the
        stream', which is a stream of the user's; and the temporary's name is not checked against format_hint (which
        asked Pillow to load every image plugin, to learn that 'part' names no image format)."""
        salvage = checked_flag("salvage", salvage)
        data = vq_bytes(data, salvage)
        check_destination(destination, "audio")
        check_format_name("format_hint", format_hint, "WAV")
        check_format_name("subtype", subtype, "PCM_16")
        if format_hint:
            refuse_format_of_other_kind(format_hint, True, "format_hint", "decode_audio_file writes audio")
        name = output_name(destination)
        named = name is not None
        if format_hint and named and not own_temporary:  # its caller chose the format for the name it writes
            refuse_format_against_name(format_hint, name, "format_hint")
        format_hint = format_hint and (audio_format_named(format_hint) or format_hint)
        format_hint = format_hint or (audio_format_of(name) if named else None)
        if format_hint is None:  # for a stream, soundfile's own error named it by its repr
            raise VQCodecError("cannot tell an audio format from "
                               f"{f'the name {name}' if named else 'a stream without a name'}"
                               ": give a format_hint (WAV, FLAC, OGG, ...)")
        where = str(name) if named else None

        def decode_into(stream) -> None:
            self._decode_audio_into(data, stream, where, format_hint, subtype, start, duration, salvage, rate)
        if isinstance(destination, (str, Path)):
            write_file(destination, decode_into)
        elif not is_seekable(destination) or isinstance(destination, io.RawIOBase) or appends(destination):
            # a pipe or socket: soundfile seeks back to finish the header (a stream that appends writes that at its
            # end); a raw stream (open(..., buffering=0)) may take part of a write, which soundfile asserts it does not
            through_spool(destination, decode_into, where)
        else:
            try:
                decode_into(destination)
                flush_written(destination)
            except io.UnsupportedOperation as exc:
                raise unwritable_stream(exc, where) from None
            except OSError as exc:
                if own_temporary:
                    raise
                raise unwritable_stream(exc, where) from None

    def _decode_audio_into(self, data: bytes, destination, where: str | None, format_hint: str, subtype: str | None,
                           start: float, duration: float | None, salvage: bool, rate: int | None) -> None:
        """decode_audio_file into a binary stream that can seek; an output it cannot hold is refused naming
        `where` (the path or stream name given, None for a stream without one)."""
        header, blocks = self.decode_audio_blocks(data, *self._sample_range(data, start, duration, rate), salvage,
                                                  rate)
        output_rate = self._output_timing(header, rate)[0]
        format_hint, subtype = soundfile_format(format_hint, subtype)
        try:
            check_audio_output(format_hint, subtype, output_rate, header.channels)
        except VQCodecError as exc:
            raise VQCodecError(f"{where}: {exc}" if where else str(exc)) from None

        sink = SoundSink(destination)

        # soundfile calls the sink from inside libsndfile, where a stop (Ctrl-C, SIGTERM) raised in it
        # would be printed and lost, and soundfile then fail an assertion: stops wait for each call to end
        def open_output(subtype):
            with stops_held():
                return soundfile.SoundFile(sink, "w", samplerate=output_rate,
                                           channels=header.channels, format=format_hint, subtype=subtype)
        above_full_scale = header.gain * LEVEL_TARGET_PEAK > 1.0
        try:
            output = None
            if subtype is None and above_full_scale:  # input above full scale: float, if the format has it
                try:
                    output = open_output("FLOAT")
                except (ValueError, TypeError, RuntimeError):
                    pass
            output = output or open_output(subtype)
        except SOUNDFILE_ERRORS as exc:
            raise unwritable_audio(exc, where) from None
        # float files keep a level gain's peaks, and so do lossy codecs of float samples
        keeps_level = (output.subtype in ("FLOAT", "DOUBLE")
                       or (above_full_scale and output.subtype in FLOAT_CODEC_SUBTYPES))
        limit = np.inf if keeps_level else 1.0
        clipped = 0.0  # the peak of audio coded above full scale that the output clips
        try:
            for block in blocks:
                if above_full_scale and not keeps_level:
                    clipped = max(clipped, peak_of([block]))
                with stops_held():
                    output.write(np.clip(block, -limit, limit).T)
                sink.check()  # stop at a full disk, not at the end
        finally:
            with stops_held():
                output.close()
        with stops_held():
            sink.finish()
        sink.check()
        if clipped > 1.0:
            import warnings

            warnings.warn(ClippingWarning(
                f"decoded audio above full scale (peak {clipped:.3g}, {20 * math.log10(clipped):+.1f} dB) is "
                "clipped to "
                f"+-1.0, as {output.format} {output.subtype} holds no more: write .wav (float), .ogg or .mp3 to keep "
                "its level"), stacklevel=caller_stacklevel())

    # ------------------------------------------------------------ images

    def _tiles(self, rows: int, cols: int):
        for r0, r1 in _blocks(rows, IMAGE_TILE):
            for c0, c1 in _blocks(cols, IMAGE_TILE):
                yield r0, r1, c0, c1

    @_one_at_a_time
    @torch.no_grad()  # as audio_to_codes
    def image_to_codes(self, rgb: np.ndarray, quality: int | None = None, variable_depth: bool = False) -> np.ndarray:
        """uint8 RGB (h, w, 3) -> codes (quality, ceil(h/hop), ceil(w/hop)) of code_dtype, coded in tiles.

        With `variable_depth` (and a depth weight, for entropy coding) each latent cell keeps only the
        levels that pay for their bits, as in files: the rest of its codes are -1."""
        self._require("image")
        _refuse_codes_as_media(rgb)
        variable_depth = checked_flag("variable_depth", variable_depth)
        rgb = as_array(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            raise VQCodecError(f"an image's RGB is a uint8 array (height, width, 3), not {rgb.dtype} {rgb.shape}"
                               f"{image_array_fixes(rgb)}: encode() also takes uint8 grey (height, width) and RGBA "
                               "(height, width, 4) arrays, and Pillow images")
        check_image_size(rgb.shape[1], rgb.shape[0])
        quality = self.check_quality(self.num_codebooks if quality is None else quality)
        self.check_weights(rate=True, depth=variable_depth)
        hop, ctx = self.hop, self.cfg.context_frames
        h, w, _ = rgb.shape
        rows, cols = math.ceil(h / hop), math.ceil(w / hop)
        codes = np.zeros((quality, rows, cols), dtype=self._code_dtype)
        done = np.zeros((rows, cols), dtype=bool)
        # Without refinement, the depths are chosen once the whole image is searched, as if it were one
        # tile: one exchange rate for every cell, and each cell's bits with its neighbours across tiles as
        # context (tile by tile, a strip of a few cells at the right or bottom edge would get its own).
        whole_depth = self._depth_active(variable_depth) and not self.refine
        ladder = min(quality + 1, self.num_codebooks)
        if whole_depth:
            ladder_codes = torch.zeros((ladder, rows, cols), dtype=torch.int64)
            errors = torch.zeros((ladder + 1, rows, cols), dtype=torch.float64)
        for r0, r1, c0, c1 in self._tiles(rows, cols):
            a, b = max(0, r0 - ctx), min(rows, r1 + ctx)
            c, d = max(0, c0 - ctx), min(cols, c1 + ctx)
            tile = torch.from_numpy(edge_padded(rgb, a * hop, b * hop, c * hop, d * hop))
            x = tile.to(self.device).permute(2, 0, 1)[None].float() / 255.0
            window = self._encoder_latents(x, ("image", a, b, c, d))
            inner = (slice(r0 - a, r1 - a), slice(c0 - c, c1 - c))
            if self.refine:
                tile_codes = self._refine_tile(x, window, inner, codes[:, a:b, c:d], done[a:b, c:d], quality,
                                               variable_depth, (h - a * hop, w - c * hop))
            elif whole_depth:
                flat, tile_errors = self._depth_ladder(*self._search(window, inner, quality))
                ladder_codes[:, r0:r1, c0:c1] = flat.reshape(ladder, r1 - r0, c1 - c0).cpu()
                errors[:, r0:r1, c0:c1] = tile_errors.reshape(ladder + 1, r1 - r0, c1 - c0).cpu()
                continue
            else:
                tile_codes = self._quantize(window, inner, quality, variable_depth)
            codes[:, r0:r1, c0:c1] = tile_codes[:, 0].cpu().numpy()
            done[r0:r1, c0:c1] = True
        if whole_depth:
            codes = self._cut_depths((quality, 1, rows, cols), ladder_codes.reshape(ladder, -1),
                                     errors.reshape(ladder + 1, -1))[:, 0].numpy().astype(self._code_dtype)
        return kinded(codes, "image", self.model_id, self.codes_id)

    def _refine_tile(self, x, window, inner, window_codes, window_done, quality, variable_depth,
                     size) -> torch.Tensor:
        """Codes (quality, 1, rows, cols) of one tile's inner cells by latent refinement
        (vqcodec/refine.py), on the tile's pixels within `size` (height, width: not the edge padding).
        Context cells keep the final codes where an earlier tile chose them, else their unrefined codes."""
        hop = self.hop
        fresh = self.model.quantizer.encode_cells(window, quality, self.beam)
        done = torch.from_numpy(window_done).to(self.device)
        earlier = torch.from_numpy(window_codes.astype(np.int64)).to(self.device)[:, None]  # one tile's
        context = torch.where(done, earlier, fresh)
        pixels = (slice(None), slice(None), slice(inner[0].start * hop, min(inner[0].stop * hop, size[0])),
                  slice(inner[1].start * hop, min(inner[1].stop * hop, size[1])))
        return self._refined(x, window, context, inner, pixels, quality, variable_depth)

    @torch.inference_mode()
    def codes_to_image(self, codes: np.ndarray, height: int | None = None, width: int | None = None) -> np.ndarray:
        """(quality, rows, cols) codes -> uint8 RGB (height, width, 3), decoded in tiles; a code of -1
        leaves its level out of that cell, from some level up to the top.

        `codes`: as codes_to_audio takes them, of 1 to num_codebooks levels. `height` and `width` default to
        rows x hop and cols x hop; given, each is of the last row or column of cells: (rows - 1) x hop + 1 up
        to rows x hop."""
        self._require("image")
        hop = self.hop
        codes = self._code_array(codes, 0, "quality, rows, cols")
        quality, rows, cols = codes.shape
        height = rows * hop if height is None else checked_setting("height", height, (rows - 1) * hop + 1, rows * hop)
        width = cols * hop if width is None else checked_setting("width", width, (cols - 1) * hop + 1, cols * hop)
        check_image_size(width, height)  # before the codes are copied and the whole picture is allocated
        self._check_image_decode_fits(width, height, quality, None, "decode fewer rows of codes at a time")
        return self._pixels_of_codes(self._checked_codes(codes, 0, "quality, rows, cols"), height, width)

    def _check_image_decode_fits(self, width: int, height: int, quality: int, mode_code: int | None,
                                 advice: str) -> None:
        """Refuse to decode a `width` x `height` image whose codes (twice: the chunks' and the whole), decoded
        RGB (whole cells), decoder work on one tile's window and, given its `mode_code`, the image rebuilt in
        that mode (imageio.rebuilt_image_bytes) would not fit in the memory this process may use, before any of
        them is allocated: a 12 KB header of 89 Mpx of 16-bit grey went on towards 2.5 GB."""
        hop = self.hop
        rows, cols = math.ceil(height / hop), math.ceil(width / hop)
        size = 2 * quality * rows * cols * np.dtype(self._code_dtype).itemsize + 3 * rows * cols * hop * hop
        if torch.device(self.device).type == "cpu":
            size += math.ceil(self._window_pixels(rows, cols) * self._decoder_pixel_bytes())
        if mode_code is not None:
            size += rebuilt_image_bytes(mode_code, width, height)
        mode = "" if mode_code is None else f" {mode_shown(IMAGE_MODE_NAMES[mode_code])}"
        _check_fits_memory(size, f"decoding the {width}x{height}{mode} image takes", advice)

    def _window_pixels(self, rows: int, cols: int) -> int:
        """The pixels of the largest tile's window (context included) of an image of `rows` x `cols` cells."""
        span = IMAGE_TILE + 2 * self.cfg.context_frames
        return min(rows, span) * min(cols, span) * self.hop ** 2

    def _decoder_pixel_bytes(self, refining: bool = False) -> float:
        """What the decoder takes a pixel of a tile's window, on the CPU: decoding, or refinement's steps through it
        (with gradients)."""
        activations, other = ((REFINE_DECODER_ACTIVATIONS, REFINE_DECODER_PIXEL_BYTES) if refining else
                              (DECODER_ACTIVATIONS, DECODER_PIXEL_BYTES))
        return activations * self.cfg.decoder_widths[0] * 4 / self.cfg.patch ** 2 + other

    def check_image_encode_fits(self, width: int, height: int, mode: str) -> None:
        """Refuse (VQCodecError) to encode a `width` x `height` image that Pillow reads in `mode` where reading
        it, its planes and the encoder's work (and refinement's) would not fit in the memory this process may use:
        imageio.open_image's `fits`, so that it is refused from the file's header, before its pixels are read."""
        pixels = width * height
        size = pixels * READ_PIXEL_BYTES.get(mode, READ_PIXEL_BYTES_ELSE)
        if torch.device(self.device).type == "cpu":
            window = self._window_pixels(math.ceil(height / self.hop), math.ceil(width / self.hop))
            finest = self.cfg.channels[0] * 4 / self.cfg.patch ** 2
            work = ENCODER_ACTIVATIONS * finest + (self._decoder_pixel_bytes(refining=True) if self.refine else 0)
            size += math.ceil(window * work) + pixels * ENCODER_PIXEL_BYTES
        _check_fits_memory(size, f"encoding the {width}x{height} {mode_shown(mode)} image takes",
                           "crop or scale it to fewer pixels")

    def _pixels_of_codes(self, codes: np.ndarray, height: int, width: int,
                         lost_rows: np.ndarray | None = None) -> np.ndarray:
        """codes_to_image of checked codes; the tiles wholly in `lost_rows` (latent rows of lost chunks,
        made grey by the caller) are left black without running the decoder."""
        hop, ctx = self.hop, self.cfg.context_frames
        quality, rows, cols = codes.shape
        out = np.zeros((rows * hop, cols * hop, 3), dtype=np.uint8)
        for r0, r1, c0, c1 in self._tiles(rows, cols):
            if lost_rows is not None and lost_rows[r0:r1].all():
                continue
            a, b = max(0, r0 - ctx), min(rows, r1 + ctx)
            c, d = max(0, c0 - ctx), min(cols, c1 + ctx)
            window = torch.from_numpy(np.ascontiguousarray(codes[:, a:b, c:d], dtype=np.int64)).to(self.device)
            latents = self.model.quantizer.decode_cells(window[:, None])
            pixels = self._decoded(latents)[0, :, (r0 - a) * hop:(r1 - a) * hop, (c0 - c) * hop:(c1 - c) * hop]
            out[r0 * hop:r1 * hop, c0 * hop:c1 * hop] = (
                (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
        return out[:height, :width]

    # ------------------------------------------------------------ codes: files

    def codes_to_file(self, codes: np.ndarray, sample_rate: int | None = None, samples: int | None = None,
                      width: int | None = None, height: int | None = None, gain: float | None = None,
                      channels: int | None = None) -> bytes:
        """`.vq` bytes holding the given codes, entropy coded under the model's prior when it has one,
        to decode like any file: codes as audio_to_codes, image_to_codes or `vqcodec codes` give them,
        or made by another model. Audio (channels, quality, frames), decoded at `sample_rate` to
        `samples` per channel (default: the model's rate, frames x hop); images (quality, rows, cols),
        decoded as RGB of `width` x `height` (default: cols and rows x hop). -1 leaves a level out of
        a frame or cell, from some level up to the top. Audio `gain`: what the decoded audio is
        multiplied by (the "gain" media_to_codes reports; default 1); `channels`, if given, must be
        the codes' (so that codes_to_file(codes, **restore) takes what media_to_codes returns)."""
        array, pack = self._file_of_codes(codes, sample_rate, samples, width, height, gain, channels)
        array = self._checked_codes(array, *self._code_layout)
        try:
            return pack(array)
        except ValueError as exc:  # the prior's check: -1 only above a frame's or cell's last level
            raise VQCodecError(str(exc)) from None

    def check_codes_shape(self, shape: tuple, dtype, sample_rate: int | None = None, samples: int | None = None,
                          width: int | None = None, height: int | None = None, gain: float | None = None,
                          channels: int | None = None) -> None:
        """Refuse (VQCodecError) what codes_to_file refuses of codes of this `shape` and integer `dtype` whatever
        their values, given the same settings, before any of them is read: `vqcodec pack` checks a .npy
        file's header so, where the values of a header's shape of 40 levels, or of 100 hours, were read into
        memory (gigabytes of a sparse file) before they were refused. `dtype` may be a torch dtype, as a
        tensor of codes gives it (`codes.dtype`)."""
        if isinstance(dtype, torch.dtype):  # NumPy cannot interpret torch.int16
            if dtype.is_floating_point:  # bfloat16 has no NumPy type to be named by
                raise VQCodecError(f"codes must be integers, not {str(dtype).removeprefix('torch.')}")
            dtype = as_array(torch.empty((), dtype=dtype)).dtype
        if np.dtype(object) == dtype:  # of ints, each taken as an int64; nothing of the shape's size is read
            dtype = np.int64
        try:  # a view of one value: nothing of the shape's size is allocated
            stand_in = np.broadcast_to(np.zeros((), dtype), shape)
        except (TypeError, ValueError) as exc:
            raise VQCodecError(f"shape is a tuple of sizes (whole numbers from 0 up) and dtype an integer type, not "
                               f"{shown_cut(shape)} and {shown_cut(dtype, 40)} ({exc})") from None
        self._file_of_codes(stand_in, sample_rate, samples, width, height, gain, channels)

    @property
    def _code_layout(self) -> tuple[int, str]:
        """The axis of the levels in this model's codes, and their axes as messages name them."""
        return (1, "channels, quality, frames") if self.kind == "audio" else (0, "quality, rows, cols")

    def _file_of_codes(self, codes, sample_rate, samples, width, height, gain, channels
                       ) -> tuple[np.ndarray, Callable[[np.ndarray], bytes]]:
        """codes_to_file's checks of all but the values of the codes (of their type and shape as given,
        nothing read or copied): the codes as an array, and what packs them once their values are checked."""
        self._refuse_other_models_codes(codes)
        array = _integer_codes(codes)
        if (self.kind == "audio" and (width, height) != (None, None)) or \
                (self.kind == "image" and (sample_rate, samples, gain, channels) != (None, None, None, None)):
            raise VQCodecError(f"model {self.name} codes {kind_coded(self.kind)}: a width and height are for images, "
                               "a sample rate, sample count, gain and channel count for audio")
        stored_gain, gain = 0, scalar_of(gain)
        if gain is not None and not is_real(gain):
            raise VQCodecError(f"gain must be a number, not {shown(gain)}")
        if gain is not None and gain != 1.0:
            try:  # inf for a gain near the float limit (1e308), too large an int for a float
                scaled = float(gain) * vqformat.GAIN_ONE
            except OverflowError:
                scaled = math.inf
            stored_gain = round(scaled) if math.isfinite(scaled) else 0
            if stored_gain == vqformat.GAIN_ONE:  # a gain that rounds to 1 is none, as the encoder writes it
                stored_gain = 0
            elif not vqformat.MIN_GAIN <= stored_gain <= vqformat.MAX_GAIN:
                raise VQCodecError(f"gain {gain!s:.40} is out of range ({vqformat.MIN_GAIN / vqformat.GAIN_ONE:g}.."
                                   f"{vqformat.MAX_GAIN // vqformat.GAIN_ONE})")
        array = self._code_array(array, *self._code_layout)  # copied (as _code_dtype) once the size it makes passes
        if self.kind == "audio":
            if channels is not None and checked_count("channels", channels) != array.shape[0]:
                raise VQCodecError(f"the codes hold {plural(array.shape[0], 'channel')}, not {shown(channels)}")
            channels, quality, frames = array.shape
            rate = self.sample_rate if sample_rate is None else checked_rate(sample_rate)
            samples = self._samples_of_frames(frames, rate) if samples is None else checked_count("samples", samples)
            check_audio_size(channels, rate, samples)
            if self._frames_of_samples(samples, rate) != frames:
                raise VQCodecError(f"{plural(samples, 'sample')} at {rate} Hz {'makes' if samples == 1 else 'make'} "
                                   f"{plural(self._frames_of_samples(samples, rate), 'frame')}, not {frames}")
        else:
            quality, rows, cols = array.shape
            width = cols * self.hop if width is None else checked_count("width", width, "pixels")
            height = rows * self.hop if height is None else checked_count("height", height, "pixels")
            check_image_size(width, height)
            cells = (math.ceil(height / self.hop), math.ceil(width / self.hop))
            if cells != (rows, cols):
                raise VQCodecError(f"a {width}x{height} image has {cells[0]} x {cells[1]} latent cells, "
                                   f"not {rows} x {cols}")
        self.check_quality(quality)
        if self.kind == "audio":
            return array, lambda checked: self._pack_audio(checked, rate, samples, quality, stored_gain)
        return array, lambda checked: self._pack_image(checked, width, height, IMAGE_MODES["RGB"], None)

    @_one_at_a_time
    def encode_image(self, image, quality: int, max_bpp: float | None = None, *, source=None) -> bytes:
        """Encode a Pillow image of any supported mode; alpha is kept losslessly. Its EXIF orientation and
        ICC profile (info["icc_profile"]) are applied, as for a file (imageio.in_srgb); `image` is left as it is.

        With `max_bpp`, the best file of at most that many bits per pixel (whole file, header and
        alpha included), with `quality` the most codebooks it may use (vqcodec.ratecontrol). `source`, the path or
        stream the image was read from, is named where its size or values are refused or clipped (float grey of NaN),
        and in its warnings (frames left out, TIFF channels of unspecified meaning, EXIF data that cannot be read or
        an EXIF orientation out of range, an ICC profile that cannot be used, Pillow's own: corrupt EXIF data); by
        default, the file Image.open opened it from (its filename)."""
        from PIL import Image

        self._require("image")
        _refuse_codes_as_media(image)
        if isinstance(image, torch.Tensor):
            image = as_array(image)
        if isinstance(image, np.ndarray):
            image = image_of_array(image)
            self.check_image_encode_fits(image.width, image.height, image.mode)
        elif not isinstance(image, Image.Image):
            raise VQCodecError(f"encode_image takes a Pillow image or a uint8 array, not {type_of(image)}: "
                               "encode() also takes paths and bytes")
        else:
            source = _opened_from(image) if source is None else source
            with naming_the_image(source):
                check_image_size(image.width, image.height)
                self.check_image_encode_fits(image.width, image.height, image.mode)
            with warnings_recorded() as caught:
                warn_of_frames_left_out(image, source)
                with naming_the_image(source):
                    image = _pixels_read(image, source)
                exif = readable_exif(image, source)
                if exif is not None and exif.get(TIFF_ORIENTATION, 1) != 1:  # Image.open leaves it to the caller
                    image = as_displayed(image, source)
                image = in_srgb(image, source)
            warn_of_pillow_warnings(caught, source)
        if max_bpp is not None:
            max_bpp = checked_max_rate(max_bpp, audio=False)
        quality = self.check_quality(quality)
        rgb, mode, alpha_bytes = _coded_planes(image, source)
        if max_bpp is not None:  # each quality tried codes the same planes: their warnings were given once
            return self._fit_rate(lambda q: self._encode_planes(rgb, mode, alpha_bytes, q), quality,
                                  *ratecontrol.rate_target(max_bpp, False, image.width * image.height))
        return self._encode_planes(rgb, mode, alpha_bytes, quality)

    def _encode_planes(self, rgb: np.ndarray, mode: int, alpha_bytes: bytes | None, quality: int) -> bytes:
        """encode_image of an image's _coded_planes."""
        codes = np.asarray(self.image_to_codes(rgb, quality, variable_depth=True))
        return self._pack_image(codes, rgb.shape[1], rgb.shape[0], mode, alpha_bytes)

    def _pack_image(self, codes: np.ndarray, width: int, height: int, mode: int, alpha_bytes: bytes | None,
                    model_id: bytes | None = None) -> bytes:
        coding = self._file_coding(codes)
        header = vqformat.Header(kind=vqformat.KIND_IMAGE, coding=coding, quality=codes.shape[0],
                                 model_id=model_id or self.model_id, prior_id=self._prior_id(coding), width=width,
                                 height=height, channels=3, mode=mode, chunk_frames=IMAGE_CHUNK_ROWS)
        chunks = [self._encode_payload(coding, codes[:, r0:r1]) for r0, r1 in _blocks(codes.shape[1], IMAGE_CHUNK_ROWS)]
        return vqformat.build_file(header, chunks, alpha_bytes)

    @naming_its_file
    @torch.inference_mode()  # as codes_to_image: with gradients, each tile kept its activations for a backward pass
    def decode_image(self, data: bytes, salvage: bool = False):
        """`.vq` bytes -> Pillow image with the original size and mode.

        With `salvage`, a file whose header is intact decodes even where chunks are damaged or
        missing (damaged_parts lists them): their rows come out grey, and a damaged alpha plane
        opaque."""
        salvage = checked_flag("salvage", salvage)
        data = vq_bytes(data, salvage)
        self._require("image")
        header, chunks, alpha_bytes, rows, cols = self._image_parts(data, salvage)
        self._check_image_decode_fits(header.width, header.height, header.quality, header.mode,
                                      "this file cannot be decoded here")
        damaged: list[int] = []
        parts = [self._chunk_codes(header, chunks, index, (header.quality, r1 - r0, cols), salvage, damaged)
                 for index, (r0, r1) in enumerate(_blocks(rows, header.chunk_frames))]
        alpha = None
        needs_alpha = IMAGE_MODE_NAMES[header.mode] in ALPHA_MODES
        try:
            alpha = alpha_plane(header, alpha_bytes)
        except VQCodecError:
            if not salvage:
                raise
        if salvage and needs_alpha and alpha is None:
            alpha = np.full((header.height, header.width), 255, dtype=np.uint8)
        lost_rows = np.zeros(rows, dtype=bool)
        for index in damaged:
            lost_rows[index * header.chunk_frames:(index + 1) * header.chunk_frames] = True
        rgb = self._pixels_of_codes(np.concatenate(parts, axis=1, dtype=self._code_dtype), header.height, header.width,
                                   lost_rows)
        rgb[np.repeat(lost_rows, self.hop)[:header.height]] = 128
        return planes_to_image(rgb, header.mode, alpha)

    def _image_parts(self, data: bytes, salvage: bool = False):
        """The header, the chunk payloads (None where damaged, with `salvage`), the alpha section, and
        the latent rows and columns."""
        if salvage:
            header = vqformat.parse_header(data)
        else:
            header, chunks, alpha_bytes = vqformat.parse_file(data)
        if header.kind != vqformat.KIND_IMAGE:
            raise VQCodecError("this .vq file holds audio, not an image")
        self._check_file_model(header)
        colour_mode(header)
        rows, cols = math.ceil(header.height / self.hop), math.ceil(header.width / self.hop)
        self._check_chunks(header, rows)
        if salvage:
            chunks, alpha_bytes = vqformat.salvage_chunks(data, header)
        return header, chunks, alpha_bytes, rows, cols
