"""Audio as a stream of (channels, n) float32 blocks: arrays and streams given to the API taken as such blocks
(checked, converted, gathered), their peak and level gain, resampling, a sliding window over them for the encoder,
and decoded blocks joined into one array where it fits in memory."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import soxr
import torch

from . import format as vqformat
from .arguments import as_array, checked_count
from .errors import VQCodecError
from .memory import memory_bound
from .wording import plural, type_of

STREAM_BLOCK_SAMPLES = 1 << 16  # samples read or written per I/O call

# Input level: audio whose peak (largest absolute sample) lies outside LEVEL_RANGE is divided by a
# gain that brings its peak to LEVEL_TARGET_PEAK (the median peak of the speech training recordings)
# before coding, and the decoder multiplies by it (FLAG_LEVEL_GAIN). Audio above full scale is then
# not clipped, and quiet or loud recordings are coded as well as others: on 20 training recordings at
# q1 / q8, log-mel L1 0.226 / 0.151 at peak 0.5, 0.231 / 0.153 at 0.7 and 0.240 / 0.158 at 0.99
# (`python bench/robustness.py --data ../shared/data/speech/train --peaks 0.3,0.5,0.7,0.85,0.99`).
LEVEL_RANGE = (0.1, 0.7)
LEVEL_TARGET_PEAK = 0.5

# The most audio may reach as coded (after the level gain, which divides by at most 256), in units of full scale.
# The decoder gives at most about 1 (times the gain), so such audio decodes 60 dB or more too quiet, and distorted:
# on 6 speech files (tests/data, dev), coded at 1000 their log-mel L1 against the input was 1.5 to 2.3 at -q 1 and 8,
# what white noise at their level gives (1.1 to 1.8) or another recording (1.0 to 3.0); at 0.5 it is 0.14 to 0.41, at
# 4 0.22 to 0.54, and at 128 (16-bit values given as floats, which get the level warning) 1.0 to 1.5.
CODED_LEVEL_BOUND = 1e3


def pcm_array(audio, channels: int | None = None, whole: bool = False) -> np.ndarray:
    """Audio given to the API as a (channels, samples) array of its own type, checked but not
    converted: as_float32 converts it, a block at a time where it is long.

    Without `channels`, an array of more channels than samples is refused: that is how (samples,
    channels), as soundfile.read gives it, looks, and a 40-sample stereo clip was coded as 40 channels
    of 2 samples. Given `channels` (a stream's, for its blocks, or what the caller says of a whole
    array), an array that is (samples, channels) of that many is refused, and, where `whole`, one of
    another number of channels (a stream's blocks are checked for that as they come)."""
    array = as_array(audio)
    if array.dtype.kind in "iu" and array.dtype.itemsize > 4:
        # no PCM is 64-bit: such arrays (NumPy's and torch's default integers) hold 16- or 32-bit
        # samples, which scaled by 2**63 would be coded as silence
        raise VQCodecError(f"integer audio is PCM of 8, 16 or 32 bits, not {array.dtype}: "
                           "convert it to the type its samples are (np.int16, np.int32) or to float")
    if array.dtype.kind not in "iuf":
        raise VQCodecError(f"audio must be a float or integer PCM array, not {array.dtype}")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        batch = (" (one recording at a time, not a batch (batch, channels, samples): audio[i])"
                 if whole and array.ndim == 3 else "")  # a stream's block is no recording of a batch
        raise VQCodecError(f"audio must be (channels, samples) or (samples,), not {array.ndim}-D{batch}")
    rows, cols = array.shape
    if (rows > cols > 0) if channels is None else (rows != channels == cols):
        raise VQCodecError(f"audio is (channels, samples), and a {rows} x {cols} array looks like (samples, channels): "
                           "give its transpose (audio.T)" + ("; an array of more channels than samples is taken "
                                                             "given its channels= (encode_audio, audio_to_codes)"
                                                             if channels is None else ""))
    if whole and channels is not None and rows != channels:
        raise VQCodecError(f"the audio has {plural(rows, 'channel')}, not the {channels} given")
    return array


def audio_array(audio, channels) -> np.ndarray:
    """A whole recording given to encode_audio or audio_to_codes (pcm_array), with the channels= it
    takes, if any."""
    return pcm_array(audio, None if channels is None else checked_count("channels", channels), whole=True)


def as_float32(array: np.ndarray) -> np.ndarray:
    """Samples of a pcm_array as float32: float ones as they are (float32 itself without a copy),
    integer PCM scaled to +-1 as soundfile reads it (int16 by 2**15, uint8 around 128, ...)."""
    if array.dtype.kind in "iu":
        bits = array.dtype.itemsize * 8
        if array.dtype.kind == "u":  # flipping the top bit subtracts 2 ** (bits - 1), exactly
            array = (array ^ array.dtype.type(1 << (bits - 1))).view(f"i{array.dtype.itemsize}")
        array = array.astype(np.float32)  # rounded once, then scaled by a power of two: exact
        array *= np.float32(2.0 ** -(bits - 1))
    return np.asarray(array, dtype=np.float32)


def float_blocks(audio: np.ndarray) -> Iterator[np.ndarray]:
    """A pcm_array as float32 blocks of STREAM_BLOCK_SAMPLES, each converted only when it is taken,
    so that a long array of another type (int16, float64) is never copied whole. The conversion is
    the same sample by sample, so the blocks hold what as_float32 of the whole array would."""
    for start in range(0, audio.shape[1], STREAM_BLOCK_SAMPLES):
        yield as_float32(audio[:, start:start + STREAM_BLOCK_SAMPLES])


def block_iterator(blocks, channels) -> Iterator:
    """An iterator over a stream's blocks. An array of samples given whole, whose rows (or single samples)
    cannot be the blocks of `channels` channels, is refused saying how to give it."""
    if isinstance(blocks, (np.ndarray, torch.Tensor)) and (blocks.ndim < 2 or (blocks.ndim == 2 and channels != 1)):
        raise VQCodecError(f"a stream of audio is an iterable of (channels, n) blocks, not one array of shape "
                           f"{tuple(blocks.shape)}: give the array to encode_audio, or [array] as a stream of one "
                           "block")
    # text, bytes and a dict iterate as characters, small ints and keys, refused as blocks in words about those
    if not isinstance(blocks, (str, bytes, bytearray, memoryview, dict)):
        try:
            return iter(blocks)
        except TypeError:
            pass
    raise VQCodecError(f"a stream of audio is an iterable of (channels, n) blocks, not {type_of(blocks)}")


class SampleWindow:
    """Holds a sliding window over a stream of (channels, n) sample blocks."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int, total: int):
        self.blocks, self.total = blocks, total
        self.buffer = np.zeros((channels, 0), dtype=np.float32)
        self.start = 0   # stream position of buffer[:, 0]

    def take(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end) of the stream, zero beyond its total; forgets everything before `begin`."""
        while self.start + self.buffer.shape[1] < min(end, self.total):
            block = next(self.blocks, None)
            if block is None:
                break
            self.buffer = np.concatenate([self.buffer, block], axis=1)
        drop = begin - self.start
        if drop > 0:
            self.buffer = self.buffer[:, drop:]
            self.start = begin
        out = self.buffer[:, :end - begin]
        if out.shape[1] < end - begin:
            out = np.pad(out, ((0, 0), (0, end - begin - out.shape[1])))
        return out


def joined_blocks(blocks: Iterator[np.ndarray], channels: int, total: int) -> np.ndarray:
    """`total` samples of (channels, n) float32 blocks, copied into one array as they come rather than
    kept until the end and joined, which would hold the whole signal twice. An array too large for
    memory (a long file's length, as its header declares it) is refused before any decoding."""
    check_decoded_fits(channels, total)
    try:
        audio = np.empty((channels, total), dtype=np.float32)
    except MemoryError:  # within memory_bound, but not free
        raise decoded_too_large(channels, total) from None
    position = 0
    for block in blocks:
        audio[:, position:position + block.shape[1]] = block
        position += block.shape[1]
    return audio[:, :position]


def check_decoded_fits(channels: int, total: int, codes_copy: int = 0) -> None:
    """Refuse decoded audio larger than the memory this process may use before it is allocated: an
    allocation past it may raise no MemoryError (memory is given as it is touched) and the process
    is killed instead. `codes_copy`: the bytes of a copy of the codes held beside the audio."""
    memory = memory_bound()
    if memory is not None and channels * total * 4 + codes_copy > memory:
        raise decoded_too_large(channels, total, codes_copy)


def decoded_too_large(channels: int, total: int, codes_copy: int = 0) -> VQCodecError:
    copy = f", and {codes_copy / 2**30:.1f} GiB for a copy of the codes" if codes_copy else ""
    return VQCodecError(f"{plural(channels, 'channel')} of {plural(total, 'sample')} of decoded audio "
                        f"({channels * total * 4 / 2**30:.1f} GiB{copy}) do not fit in memory: decode to a file "
                        "(decode_audio_file, `vqcodec decode`) or a part at a time (start=, duration=)")


def resampled_blocks(blocks: Iterator[np.ndarray], source_rate: int, target_rate: int, channels: int,
                      total_out: int) -> Iterator[np.ndarray]:
    """Resample a stream of (channels, n) blocks with soxr, padded or trimmed to exactly `total_out`."""
    stream = (None if source_rate == target_rate
              else soxr.ResampleStream(source_rate, target_rate, channels, dtype="float32"))
    produced = 0

    def emit(block: np.ndarray):
        nonlocal produced
        block = block[:, :max(0, total_out - produced)]
        produced += block.shape[1]
        return block

    for block in blocks:
        if stream is not None:
            block = stream.resample_chunk(np.ascontiguousarray(block.T), last=False).T
        yield emit(block)
    if stream is not None:
        yield emit(stream.resample_chunk(np.zeros((0, channels), dtype=np.float32), last=True).T)
    if produced < total_out:
        yield np.zeros((channels, total_out - produced), dtype=np.float32)
        produced = total_out


def dropped_samples(blocks: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """The blocks without their first `count` samples."""
    for block in blocks:
        skip = min(count, block.shape[1])
        count -= skip
        if block.shape[1] > skip:
            yield block[:, skip:]


def check_audio_size(channels: int, sample_rate: int, samples: int) -> None:
    """The container's bounds on a new audio file, checked before anything is coded."""
    if not 1 <= channels <= vqformat.MAX_CHANNELS:
        raise VQCodecError(f"{channels} channels: between 1 and {vqformat.MAX_CHANNELS} are supported")
    if not 1 <= sample_rate <= vqformat.MAX_SAMPLE_RATE:
        raise VQCodecError(f"sample rate {sample_rate} Hz is out of range")
    if samples <= 0:
        raise VQCodecError("audio is empty")
    if samples > sample_rate * vqformat.MAX_AUDIO_SECONDS:
        raise VQCodecError(f"audio longer than {vqformat.MAX_AUDIO_SECONDS // 3600} hours is not supported")


def check_finite(audio: np.ndarray) -> None:
    if not np.isfinite(audio).all():
        raise VQCodecError("audio contains NaN or infinite samples (or samples beyond float32's range, 3.4e38)")


def checked_blocks(blocks: Iterator[np.ndarray], peak: list[float] | None, channels: int,
             count: list[int] | None = None) -> Iterator[np.ndarray]:
    """The blocks as float32 (channels, n), taken as pcm_array and as_float32 take arrays, refused if one has
    another number of channels or any sample is NaN or infinite; peak[0], if given, becomes the
    largest absolute sample, and count[0] the samples per channel taken. Short blocks are joined into
    blocks of STREAM_BLOCK_SAMPLES (gathered_blocks) before they are checked and coded, so that a stream of
    tiny blocks costs no more than one of large ones; the samples are the same, and so is the file."""
    for block in gathered_blocks(float32_blocks(blocks, channels), STREAM_BLOCK_SAMPLES):
        check_finite(block)
        if peak is not None:
            peak[0] = max(peak[0], peak_of([block]))
        if count is not None:
            count[0] += block.shape[1]
        yield block


def float32_blocks(blocks: Iterator[np.ndarray], channels: int) -> Iterator[np.ndarray]:
    """A stream's blocks as float32 (channels, n) (pcm_array, as_float32), refused if one has another
    number of channels."""
    for block in blocks:
        block = as_float32(pcm_array(block, channels))
        if block.shape[0] != channels:
            raise VQCodecError(f"a block of the stream has {plural(block.shape[0], 'channel')}, not {channels}")
        yield block


def gathered_blocks(blocks: Iterator[np.ndarray], samples: int) -> Iterator[np.ndarray]:
    """(channels, n) blocks joined until each holds at least `samples` (the last may hold fewer); a
    block that long by itself is passed on as it is, uncopied."""
    held, size = [], 0
    for block in blocks:
        if not held and block.shape[1] >= samples:
            yield block
            continue
        held.append(block)
        size += block.shape[1]
        if size >= samples:
            yield np.concatenate(held, axis=1)
            held, size = [], 0
    if held:
        yield held[0] if len(held) == 1 else np.concatenate(held, axis=1)


def peak_of(blocks) -> float:
    """The largest absolute sample of some (channels, n) blocks; 0 for none."""
    return max((max(float(block.max()), -float(block.min())) for block in blocks if block.size), default=0.0)


def largest_magnitude(values: torch.Tensor) -> float:
    """The largest absolute value of `values` in one pass; NaN where one is NaN."""
    low, high = torch.aminmax(values.detach())  # float() of a tensor that needs gradients warns
    return float(torch.maximum(-low, high))


def check_coded_level(samples: torch.Tensor, gain: int) -> None:
    """Refuse audio whose samples reach beyond CODED_LEVEL_BOUND as coded at level `gain` (0: none): it would decode
    to garbage. With a gain the refusal gives the samples at the level they were read at, which the caller knows."""
    reach = largest_magnitude(samples)
    if reach <= CODED_LEVEL_BOUND:
        return
    if gain:  # beyond though the peak read was not (check_read_peak): resampling overshot it, or a peak given is low
        raise too_loud(reach * gain / vqformat.GAIN_ONE, " at the model's sample rate")
    raise VQCodecError(f"the audio's samples reach {reach:.3g} as coded (no level gain is applied), over "
                       f"{CODED_LEVEL_BOUND:.0f} times the +-1.0 the codec is made for, and would decode to garbage: "
                       "scale it down")


def check_read_peak(peak: float) -> None:
    """Refuse audio whose peak, as read, even the largest level gain leaves beyond CODED_LEVEL_BOUND, before it is
    coded (check_coded_level refuses it too, but with the first such block's samples, not the audio's peak)."""
    gain = level_gain(peak)
    if gain and peak * vqformat.GAIN_ONE / gain > CODED_LEVEL_BOUND:
        raise too_loud(peak)


def too_loud(peak: float, where: str = "") -> VQCodecError:
    """The refusal of audio read at `peak` that even the largest level gain leaves beyond CODED_LEVEL_BOUND."""
    most = vqformat.MAX_GAIN // vqformat.GAIN_ONE
    return VQCodecError(f"the audio's samples reach {peak:.3g}{where}, over {CODED_LEVEL_BOUND * most:.0f} "
                        "(1000 times the "
                        f"+-1.0 the codec is made for, after the level gain, which divides by at most {most}), and "
                        "would decode to garbage: scale it down")


def level_gain(peak: float) -> int:
    """The level gain (in units of 1/GAIN_ONE) for audio of this peak: 0, no gain, within LEVEL_RANGE
    (and for silence)."""
    low, high = LEVEL_RANGE
    if not (0 < peak < math.inf) or low <= peak <= high:  # NaN and inf samples are refused when read
        return 0
    gain = round(peak / LEVEL_TARGET_PEAK * vqformat.GAIN_ONE)
    return min(max(gain, vqformat.MIN_GAIN), vqformat.MAX_GAIN)


def scaled_blocks(blocks: Iterator[np.ndarray], gain: int) -> Iterator[np.ndarray]:
    if not gain:
        yield from blocks
        return
    factor = np.float32(vqformat.GAIN_ONE / gain)
    for block in blocks:
        yield block * factor
