"""Sound in and out through soundfile (libsndfile) and soxr: which formats a name asks for, opening a path or a
stream (one that cannot seek, one whose header gives no length), reading it whole or in blocks, and refusing
output that a format cannot hold before any of it is written."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from io import BytesIO
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
import soxr

from .errors import AudioReadWarning, VQCodecError, caller_stacklevel
from .oggpages import OggPages
from .streams import (PatchedStream, TemporaryFileFailed, TemporaryFileFull, check_source, from_where_it_is, input_name,
                      is_fifo, is_seekable, left_where_it_was, native_stderr_captured, refuse_closed_stream,
                      refuse_empty_media, spooled_fifo, spooled_stream)
from .wording import plural, reason_of, setting

# Suffixes that name one of soundfile's formats (which it knows by name: WAV, AIFF, ...) otherwise
AUDIO_SUFFIX_FORMATS = {".wave": "WAV", ".aif": "AIFF", ".aifc": "AIFF", ".snd": "AU", ".sph": "NIST", ".oga": "OGG"}
AUDIO_EXTENSIONS = ({"." + ext.lower() for ext in soundfile.available_formats()} | set(AUDIO_SUFFIX_FORMATS)
                    | {".opus"})
# Formats named by their codec, which soundfile writes as a subtype of a container format
AUDIO_CODEC_FORMATS = {"OPUS": ("OGG", "OPUS")} if "OPUS" in soundfile.available_subtypes("OGG") else {}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Subtypes of lossy codecs that code float samples, which keep samples beyond +-1.0 as float WAV does
# (a 1.9 peak comes back as 1.9, to the codec's error, at 16 and 48 kHz). Not Opus: libopus codes
# speech at 16 kHz and below in its SILK mode through 16-bit integers, clipped to +-1.0.
FLOAT_CODEC_SUBTYPES = {"VORBIS", "MPEG_LAYER_III"}  # MP3: the only MPEG layer libsndfile writes


def audio_format_of(path) -> str | None:
    """The soundfile format a file name asks for, or None."""
    return audio_format_named(Path(path).suffix.lstrip("."))


def audio_format_named(name: str) -> str | None:
    """The soundfile format of a format name or a file extension, with its dot or without (WAV, wave, aif,
    .flac), or None."""
    name = name.removeprefix(".")
    name = AUDIO_SUFFIX_FORMATS.get("." + name.lower(), name.upper())
    return name if name in soundfile.available_formats() or name in AUDIO_CODEC_FORMATS else None


def soundfile_format(format_name: str, subtype: str | None) -> tuple[str, str | None]:
    """The soundfile format and subtype that write `format_name` (OPUS: Ogg Opus)."""
    container, codec = AUDIO_CODEC_FORMATS.get(format_name.upper(), (format_name, None))
    return container, subtype or codec


ID3V2_HEADER_BYTES = 10


def id3v2_tag_bytes(head: bytes) -> int:
    """The length of the ID3v2 tag that `head` begins with, as libsndfile skips one before it recognises an MP3:
    its 10-byte header (versions 2 to 4) and the size that gives in 7-bit bytes, no footer; 0 where it begins with
    none."""
    if len(head) < ID3V2_HEADER_BYTES or head[:3] != b"ID3" or head[3] not in (2, 3, 4):
        return 0
    size = 0
    for byte in head[6:10]:
        size = size << 7 | byte & 0x7F
    return ID3V2_HEADER_BYTES + size


# libsndfile's reasons that say nothing to whoever reads them, and what they mean
SOUNDFILE_REASONS = {"SF_INFO struct incomplete.": "its header gives no valid sample rate"}


# What soundfile raises of audio it cannot open, read or write: LibsndfileError (a RuntimeError), ValueError and
# TypeError of what it is given, OSError of the file under it; any other error (a NameError, AttributeError) is a bug
SOUNDFILE_ERRORS = (OSError, RuntimeError, TypeError, ValueError)


def _soundfile_reason(exc: Exception) -> str:
    """soundfile's reason, without the "Error opening <name>: " it puts before it."""
    reason = str(exc).rsplit(": ", 1)[-1] if str(exc).startswith("Error opening") else str(exc)
    return SOUNDFILE_REASONS.get(reason, reason)


def unreadable_audio(where, exc: Exception) -> VQCodecError:
    """The error for audio soundfile cannot open: `where` (a path, "from stdin", or None for a stream) and soundfile's
    reason."""
    where = where if where is not None else "from the stream"
    return VQCodecError(f"cannot read audio {where}: {_soundfile_reason(exc)}")


# libsndfile's reason for input whose first bytes are of no format it reads. They decide it, so a file's
# first MiB gives it as all of the file does.
UNRECOGNISED_AUDIO = "Format not recognised."


def unrecognised_audio(head: bytes, where) -> VQCodecError | None:
    """The error that reading audio which begins with `head` gives where libsndfile recognises no format in
    those bytes (`where` as for unreadable_audio); None where it opens them, or finds them cut short or
    damaged, which the rest of the input may not be."""
    try:
        with decoder_lines(None):
            soundfile.info(SoundStream(BytesIO(head)))
    except SOUNDFILE_ERRORS as exc:
        if _soundfile_reason(exc) == UNRECOGNISED_AUDIO:
            return unreadable_audio(where, exc)
    return None


class SoundStream:
    """A binary stream as soundfile reads it, whose seek to where the stream cannot go stays where it
    is: libsndfile skips a chunk by the size its header declares, and a size past what a file may
    hold (W64 and RF64 have 64-bit sizes), or one before byte 0 (of an AIFF cut short in its COMM
    chunk), would raise inside soundfile's callback, which prints a traceback (the samples are read all the
    same). A read that fails (EIO, a stream closed under it) reads nothing more, and is kept for failure() to give,
    where soundfile's callback printed a traceback and libsndfile took it for the end: the audio was cut short
    without a word."""

    def __init__(self, stream):
        self.stream = stream
        self.error: Exception | None = None

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self.stream.seek(offset, whence)
        except (OSError, ValueError, OverflowError):
            return self.stream.tell()

    def read(self, size: int = -1) -> bytes:
        return self._reading(lambda: self.stream.read(size), b"")

    def readinto(self, buffer) -> int:
        return self._reading(lambda: self.stream.readinto(buffer), 0)  # none (AttributeError): soundfile calls read

    def _reading(self, read: Callable, nothing):
        if self.error is not None:
            return nothing
        try:
            return read()
        except (OSError, ValueError) as exc:
            self.error = exc
            return nothing

    def failure(self) -> RuntimeError | None:
        """The first read that failed, as libsndfile's error of a read is (a RuntimeError); None where none did."""
        return StreamReadError(reason_of(self.error)) if self.error is not None else None

    def __getattr__(self, name):
        return getattr(self.stream, name)


class StreamReadError(RuntimeError):
    """A read of a stream under a SoundFile that failed (SoundStream.failure), raised as libsndfile's errors are."""


# How much of a file's start streamed_length_patches looks through for the chunk of its samples
STREAMED_HEAD_BYTES = 1 << 16
UINT32_MAX = 0xFFFFFFFF


def _chunk(head: bytes, offset: int, name: bytes, size_format: str, padded: bool) -> tuple[int, int] | None:
    """The offset and declared size of the first chunk called `name` in `head`, from `offset` on: chunks
    of a four-byte name and a size in struct's `size_format`, `padded` to an even length (RIFF's)."""
    import struct

    header = 4 + struct.calcsize(size_format)
    while offset + header <= len(head):
        size = struct.unpack_from(size_format, head, offset + 4)[0]
        if head[offset:offset + 4] == name:
            return offset, size
        if size < 0:
            return None
        offset += header + size + (size & 1 if padded else 0)
    return None


def streamed_length_patches(head: bytes, file_size: int) -> dict[int, bytes]:
    """What to put over a file's header ({offset: bytes}) for libsndfile to read its samples to the end
    of the file, where the writer (writing to a pipe) could not go back to set their length, and
    libsndfile would read none: a WAV data chunk of size 0 in a file whose RIFF size is not the
    file's (where it is, the data is empty), RF64 whose ds64 chunk gives sizes of 0, and CAF whose
    data chunk's size is -1 (unknown, as CAF allows; libsndfile refused the file as malformed)."""
    import struct

    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        data = _chunk(head, 12, b"data", "<I", padded=True)
        riff_size = struct.unpack_from("<I", head, 4)[0]
        if data is not None and data[1] == 0 and riff_size + 8 != file_size and file_size > data[0] + 8:
            return {4: struct.pack("<I", min(file_size - 8, UINT32_MAX)),
                    data[0] + 4: struct.pack("<I", min(file_size - data[0] - 8, UINT32_MAX))}
    elif head[:4] == b"RF64" and head[8:16] == b"WAVEds64" and len(head) >= 36:
        data = _chunk(head, 12, b"data", "<I", padded=True)
        riff_size, data_size = struct.unpack_from("<QQ", head, 20)
        if data is not None and data_size == 0 and riff_size + 8 != file_size and file_size > data[0] + 8:
            return {20: struct.pack("<QQ", file_size - 8, file_size - data[0] - 8)}
    elif head[:4] == b"caff":
        data = _chunk(head, 8, b"data", ">q", padded=False)
        if data is not None and data[1] == -1:
            return {data[0] + 4: struct.pack(">q", file_size - data[0] - 12)}
    return {}


def _head_of(stream) -> tuple[bytes, int]:
    """The first STREAMED_HEAD_BYTES of a stream that can seek, from where it is, and its size from there
    (b"" and 0 where it cannot be read so); it is left where it was."""
    try:
        with left_where_it_was(stream) as position:
            head = stream.read(STREAMED_HEAD_BYTES)
            size = stream.seek(0, os.SEEK_END) - position
    except (AttributeError, OSError, ValueError):
        return b"", 0
    return (head, size) if isinstance(head, bytes) else (b"", 0)


def _extended_float(raw: bytes) -> float:
    """An IEEE 754 80-bit extended float (AIFF's sample rate): sign and exponent in 16 bits, then a 64-bit
    mantissa with an explicit leading bit."""
    exponent, mantissa = int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:10], "big")
    try:
        value = math.ldexp(mantissa, (exponent & 0x7FFF) - 16383 - 63) if exponent & 0x7FFF else 0.0
    except OverflowError:  # beyond any 64-bit float
        value = math.inf
    return -value if exponent & 0x8000 else value


def declared_rate(head: bytes) -> float | None:
    """The sample rate a WAV, RF64, AIFF, CAF or AU header gives, or None for another file. libsndfile
    refuses a rate below 1 Hz or of 2**31 Hz or more in most of these as "SF_INFO struct incomplete",
    and reads AIFF's as 1 Hz and 800 MHz."""
    import struct

    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        fmt = _chunk(head, 12, b"fmt ", "<I", padded=True)
        return struct.unpack_from("<I", head, fmt[0] + 12)[0] if fmt and len(head) >= fmt[0] + 16 else None
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        comm = _chunk(head, 12, b"COMM", ">I", padded=True)
        return _extended_float(head[comm[0] + 16:comm[0] + 26]) if comm and len(head) >= comm[0] + 26 else None
    if head[:4] == b"caff":
        desc = _chunk(head, 8, b"desc", ">q", padded=False)
        return struct.unpack_from(">d", head, desc[0] + 12)[0] if desc and len(head) >= desc[0] + 20 else None
    if head[:4] == b".snd" and len(head) >= 20:
        return struct.unpack_from(">I", head, 16)[0]
    return None


def _check_declared_rate(head: bytes, where, read: int | None = None) -> None:
    """Refuse a file whose header gives a sample rate that no audio has (declared_rate), or, given the
    rate libsndfile `read` from it, one that it reads as another rate than a whole number of Hz within
    one of the header's (it reads AIFF's 2**30 Hz and up, to 2**31, as 800 MHz)."""
    rate = declared_rate(head)
    if rate is None:
        return
    misread = read is not None and not abs(read - rate) < 1
    if misread or not 1 <= rate < 2**31:
        shown = int(rate) if math.isfinite(rate) and float(rate).is_integer() else rate
        where = where if where is not None else "from the stream"
        raise VQCodecError(f"cannot read audio {where}: its header gives a sample rate of {shown} Hz"
                           + (f", which libsndfile reads as {read} Hz" if misread else ""))


class _StreamSoundFile(soundfile.SoundFile):
    """A SoundFile that reads `readable`, a stream read through `reader` (its SoundStream), whose failed read is
    raised by the read that met it (SoundStream.failure), and closes `owned` (the file under it), where there is one,
    when it is closed."""

    def __init__(self, readable, reader: SoundStream, owned=None):
        self._reader, self._owned = reader, owned
        super().__init__(readable)

    def read(self, *args, **kwargs):
        try:
            data = super().read(*args, **kwargs)
        except SOUNDFILE_ERRORS:  # FLAC's reader says 'Internal psf_fseek() failed' of the failed read it met
            if (failure := self._reader.failure()) is None:
                raise
            raise failure from None
        if (failure := self._reader.failure()) is not None:
            raise failure
        return data

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._owned is not None:
                self._owned.close()

    def closing_too(self, owned) -> _StreamSoundFile:
        """This, closing `owned` (the file under its stream) when it is closed; it owns none yet."""
        self._owned = owned
        return self


def open_sound(source, said: list[str] | None = None) -> soundfile.SoundFile:
    """Open audio for reading: a path, or a binary stream that can seek, from where it is (from_where_it_is:
    libsndfile reads FLAC and CAF from the stream's byte 0), read through in blocks. A file whose
    writer could not set its length is read to its end (streamed_length_patches). What the MP3 decoder
    says on opening it is one warning (warn_decoder_lines), or goes into `said` where that is given;
    input that cannot be opened is one VQCodecError naming it, which says why (for a path: no such
    file, a folder, not readable); a closed stream, by its name (refuse_closed_stream), and what is neither a path
    nor a stream by check_source. The path of a FIFO is read once into a temporary file, which is read instead
    (spooled_fifo): libsndfile waited for ever on a FLAC read through the FIFO's path."""
    check_source(source, "audio")
    if is_fifo(source):
        spool = spooled_fifo(source)
        try:
            return open_sound(spool, said).closing_too(spool)
        except BaseException:
            spool.close()
            raise
    refuse_closed_stream(source)
    refuse_empty_media(source)
    path = source if isinstance(source, (str, Path)) else None
    owned = reader = None
    try:
        if path is not None and os.path.isfile(path):  # not a FIFO, whose head libsndfile must read
            owned = open(path, "rb")
        stream = source if path is None else owned
        head, size = _head_of(stream) if stream is not None else (b"", 0)
        _check_declared_rate(head, input_name(source))
        patches = streamed_length_patches(head, size)
        reader = SoundStream(from_where_it_is(source) if path is None else owned)
        with decoder_lines(None) as lines:
            if path is None:
                sound = _StreamSoundFile(PatchedStream(reader, patches), reader)
            elif patches:
                sound = _StreamSoundFile(PatchedStream(reader, patches), reader, owned)
            else:
                sound = soundfile.SoundFile(os.fsencode(path))
    except VQCodecError:
        if owned is not None:
            owned.close()
        raise
    except SOUNDFILE_ERRORS as exc:
        if owned is not None:
            owned.close()
        raise _unopenable_audio(source, (reader.failure() if reader is not None else None) or exc) from None
    if owned is not None and not patches:
        owned.close()
    try:
        if (failure := reader.failure()) is not None:  # a read of its header, which libsndfile read past
            raise unreadable_audio(input_name(source), failure)
        _check_declared_rate(head, input_name(source), sound.samplerate)
    except VQCodecError:
        sound.close()
        raise
    if said is None:
        warn_decoder_lines(lines, input_name(source))
    else:
        said += lines
    return sound


def _unopenable_audio(source, exc: Exception) -> VQCodecError:
    """The error for audio that open_sound cannot open: for a path, why the system cannot open it, where
    it cannot (libsndfile says only "System error." of a missing file, and "Format not recognised." of
    a folder)."""
    if isinstance(source, (str, Path)):
        try:
            open(source, "rb").close()
        except (OSError, ValueError) as error:
            return VQCodecError(f"cannot read audio {source}: {reason_of(error)}")
    return unreadable_audio(input_name(source), exc)


class SoundSink:
    """A binary stream as soundfile writes it: an OSError (a full disk), or a TemporarySpool's own error, inside
    soundfile's callbacks would be printed as a traceback and lost while libsndfile wrote on, or soundfile would fail
    an assertion on the short write. The first one is kept for check() to raise; nothing more is written after it,
    though libsndfile, which cannot be told why, is told that all of it was. Ogg pages get a serial derived from their
    content at finish() (oggpages), not libsndfile's random one, for the same audio to be the same bytes; left as
    libsndfile wrote them where it wrote or sought anywhere after the last page."""

    def __init__(self, stream):
        self.stream, self.error = stream, None
        self.pages: OggPages | None = None

    def write(self, data) -> int:
        if self.error is None:
            try:
                if self.pages is None:
                    self.pages = OggPages(self.stream.tell())
                written = self.stream.write(data)
                if not self.pages.given_up:  # a WAV's or FLAC's blocks are not copied to be followed
                    self.pages.wrote(bytes(data))
                return written
            except (OSError, TemporaryFileFull, TemporaryFileFailed) as exc:
                self.error = exc
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.error is None:
            try:
                position = self.stream.seek(offset, whence)
                if self.pages is not None:
                    self.pages.moved_to(position)
                return position
            except (OSError, TemporaryFileFull, TemporaryFileFailed) as exc:  # a buffered one writes what it holds
                self.error = exc
        return self.stream.tell()

    def finish(self) -> None:
        """Once soundfile has closed its output: set the Ogg pages' serial where the last page ended what was written;
        the stream is left where it was."""
        if self.error is not None or self.pages is None or not self.pages.finished or self.pages.given_up:
            return
        try:
            position = self.stream.tell()
            for offset, patch in self.pages.patches():
                self.stream.seek(offset)
                self.stream.write(patch)
            self.stream.seek(position)
        except (OSError, TemporaryFileFull, TemporaryFileFailed) as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def __getattr__(self, name):
        return getattr(self.stream, name)


# Limits of libsndfile's encoders that it does not report clearly: above 200 kHz libvorbis crashes
# the process, and too many channels for FLAC, MP3 and others come back as "Format not recognised".
VORBIS_MAX_RATE = 200_000
FORMAT_MAX_CHANNELS = {"FLAC": 8, "MP3": 2, "AVR": 2, "MPC2K": 2, "VOC": 2, "HTK": 1, "SDS": 1, "SVX": 1, "WVE": 1,
                       "XI": 1}
# Sound Designer II keeps its rate and channels in a resource fork, which libsndfile writes only beside a
# path it opens itself (as ._NAME), never beside a stream: output would be bare samples (and an empty
# "._" file in the current folder).
RESOURCE_FORK_FORMATS = {"SD2"}
# Rates that some formats' headers cannot say, which libsndfile writes as another rate without a word:
# a rate of their own, a 16-bit field, or the sample period in whole units (HTK 100 ns; SDS 1 ns, in 21 bits).
FORMAT_HOLDS_RATE = {"WVE": lambda rate: rate == 8000, "XI": lambda rate: rate == 44100,
                     "SVX": lambda rate: rate < 2**16, "MPC2K": lambda rate: rate < 2**16,
                     "HTK": lambda rate: 10**7 // (10**7 // rate) == rate,
                     "SDS": lambda rate: 10**9 // rate < 2**21 and 10**9 // (10**9 // rate) == rate}


def check_audio_output(format_name: str, subtype: str | None, sample_rate: int, channels: int) -> None:
    """Refuse, before anything is written, audio that soundfile's `format_name` (with `subtype`, as
    soundfile_format gives them) cannot hold."""
    format_name = format_name.upper()
    if format_name not in soundfile.available_formats():
        return  # soundfile says why when it opens the output
    if format_name in RESOURCE_FORK_FORMATS:
        raise VQCodecError(f"{format_name} keeps its rate and channels in a resource fork, which cannot be written "
                           "here: write another format (.wav, .aiff, .flac)")
    if not subtype and soundfile.default_subtype(format_name) is None:  # RAW: soundfile said "No default subtype"
        raise VQCodecError(f"{format_name} is bare samples, which keep neither the rate nor the channels, of a type it "
                           "must be told: write another format (.wav, .aiff, .flac)")
    subtype = (subtype or soundfile.default_subtype(format_name) or "").upper()
    subtypes = soundfile.available_subtypes(format_name)
    if subtype not in subtypes:  # libsndfile's refusal was worded as one of the rate and channels
        raise VQCodecError(f"{format_name} has no subtype {subtype}: it takes {', '.join(subtypes)}")
    if format_name == "OGG" and subtype == "VORBIS" and sample_rate > VORBIS_MAX_RATE:
        raise VQCodecError(f"Ogg Vorbis holds at most {VORBIS_MAX_RATE} Hz, not {sample_rate}: "
                           f"write another format (.wav, .flac) or {setting('pass --rate', 'pass rate=N')}")
    if format_name == "OGG" and subtype == "OPUS" and sample_rate not in OPUS_RATES:
        opus_rate = min(r for r in OPUS_RATES if r >= min(sample_rate, 48000))
        raise VQCodecError(f"Opus holds {', '.join(map(str, OPUS_RATES[:-1]))} or {OPUS_RATES[-1]} Hz audio, not "
                           f"{sample_rate} Hz: {setting(f'pass --rate {opus_rate}', f'pass rate={opus_rate}')}, "
                           "or write another format (.wav, .flac)")
    if not FORMAT_HOLDS_RATE.get(format_name, lambda rate: True)(sample_rate):
        raise VQCodecError(f"{format_name} cannot hold a rate of {sample_rate} Hz (it would say another): "
                           f"write another format (.wav, .flac) or {setting('pass --rate', 'pass rate=N')}")
    limit = FORMAT_MAX_CHANNELS.get(format_name)
    if limit is not None and channels > limit:
        raise VQCodecError(f"{format_name} holds at most {plural(limit, 'channel')}, not {channels}: "
                           "write .wav or .ogg")
    reason = _audio_write_refused(format_name, subtype, sample_rate, channels)
    if reason is not None:
        raise VQCodecError(f"{format_name} {subtype} cannot hold {plural(channels, 'channel')} at {sample_rate} Hz "
                           f"here (libsndfile says: {reason}): write another format or subtype (.wav), or "
                           f"{setting('pass --rate', 'pass rate=N')}")


@functools.lru_cache(maxsize=256)  # a folder's files share a few rates and channel counts
def _audio_write_refused(format_name: str, subtype: str, sample_rate: int, channels: int) -> str | None:
    """libsndfile's reason for refusing to write two frames of such audio into memory, or None: the limits
    of its encoders depend on how it was built (FLAC's rates, MP3's MPEG rates, a subtype left out), and
    some fail only at the first frame (FLAC above 65535 Hz where the rate is not a multiple of 10). Two,
    as VOX ADPCM writes frames in pairs."""
    try:
        with soundfile.SoundFile(BytesIO(), "w", samplerate=sample_rate, channels=channels, format=format_name,
                                 subtype=subtype or None) as sound:
            sound.write(np.zeros((2, channels), np.float32))
    except (RuntimeError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        return _soundfile_reason(exc).removeprefix("Error : ").rstrip(".") or "no reason given"
    return None


def unwritable_audio(exc: Exception, where: str | None = None) -> VQCodecError:
    """The error for audio soundfile cannot write (into `where`, a path or stream name), with its reason."""
    return VQCodecError(f"cannot write {where or 'audio'}: {_soundfile_reason(exc)}")


UNKNOWN_FRAMES = 2**62  # libsndfile's frame count of a file whose header gives no length (SF_COUNT_MAX, 2**63 - 1)
READ_BLOCK_FRAMES = 1 << 16
# read_audio takes at most this many frames a byte of the file on trust from its header (FLAC of
# silence holds a few hundred, low-rate Opus about 64): a header that declares more is read block by block
TRUSTED_FRAMES_PER_BYTE = 256


def sound_read_error(where, frames_read: int, declared: int, exc: Exception) -> VQCodecError:
    """The error for a read that failed partway (libsndfile fails one that runs past the end of a
    FLAC file whose header declares more samples than it holds, or no length at all), with how far
    reading got and what the header declares."""
    where = where if where is not None else "from the stream"
    declared_text = ("its header gives no length" if declared >= UNKNOWN_FRAMES
                     else f"its header declares {declared}")
    return VQCodecError(f"cannot read audio {where}: {_soundfile_reason(exc).rstrip('.')} after "
                        f"{plural(frames_read, 'sample')} ({declared_text})")


def decoder_lines(sound_format: str | None):
    """A context that catches, into the list it yields, what libmpg123 (libsndfile's MP3 decoder) writes
    straight to stderr about a damaged or cut-short file, for MP3 and for a file whose format is not
    known yet (while soundfile opens it); for other formats, nothing (an empty list)."""
    return native_stderr_captured() if sound_format in (None, "MP3") else contextlib.nullcontext([])


def warn_decoder_lines(lines: list[str], where) -> None:
    """One warning naming `where` (a path, "from stdin", or None) for what the MP3 decoder said and read past."""
    if lines:
        called = "the audio" if where is None else f"the audio {where}" if where == "from stdin" else str(where)
        said = lines[0].split("] ", 1)[-1] if lines[0].startswith("[") else lines[0]  # [src/libmpg123/...:line]
        warnings.warn(AudioReadWarning(f"{called}: the MP3 decoder says: {said}; read past it"),
                      stacklevel=caller_stacklevel())


def sound_blocks(sound: soundfile.SoundFile, where, block_frames: int = READ_BLOCK_FRAMES,
                 said: list[str] | None = None):
    """(channels, n) float32 blocks of the samples an open file really holds: the count each read
    returns is what counts, never the length its header declares (SoundFile.blocks() yields its
    whole buffer, uninitialised past the end, when a damaged file ends before it). A failed read is
    one VQCodecError naming `where` (sound_read_error); what the MP3 decoder says of damage it reads
    past is one warning (warn_decoder_lines), the first time only, or goes into `said` where that is
    given."""
    frames_read, warned = 0, False
    try:
        while True:
            with decoder_lines(sound.format) as lines:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
            if said is not None:
                said += lines
            elif lines and not warned:
                warn_decoder_lines(lines, where)
                warned = True
            if not len(block):
                break
            frames_read += len(block)
            yield block.T
    except RuntimeError as exc:  # soundfile's LibsndfileError
        raise sound_read_error(where, frames_read, sound.frames, exc) from None


def read_audio(path, sample_rate: int | None = None, said: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Read a whole audio file (a path, or a binary stream, from where it is, as open_sound reads one; a stream that
    cannot seek is spooled first) as float32 (channels, samples), resampled to `sample_rate` if given.
    What the MP3 decoder says of damage that it reads past, opening and reading the file, is one
    warning naming it (warn_decoder_lines), or goes into `said` where that is given.

    The samples are those the file really holds: its header's length is taken on trust only up to
    TRUSTED_FRAMES_PER_BYTE frames a byte of the file (a header that declares 2**36 samples had them
    allocated, 256 GiB); past that, the rest is read a block at a time. (libsndfile stops at the
    length a FLAC file's header declares, so one that declares too few is read that long.)"""
    check_source(path, "audio")
    if not isinstance(path, (str, Path)) and not is_seekable(path):
        with spooled_stream(path) as copy:
            return read_audio(copy, sample_rate, said)
    if is_fifo(path):
        with spooled_fifo(path) as copy:
            return read_audio(copy, sample_rate, said)
    lines_said: list[str] = []
    size, where = _bytes_from_here(path), input_name(path)
    with open_sound(path, lines_said) as sound:
        rate, channels = sound.samplerate, sound.channels
        trusted = min(max(sound.frames, 0), max(READ_BLOCK_FRAMES, size * TRUSTED_FRAMES_PER_BYTE // channels))
        buffer = np.empty((trusted, channels), dtype=np.float32)
        frames_read = 0
        try:
            with decoder_lines(sound.format) as lines:
                while frames_read < trusted:
                    got = len(sound.read(out=buffer[frames_read:frames_read + READ_BLOCK_FRAMES]))
                    if not got:
                        break
                    frames_read += got
        except RuntimeError as exc:
            raise sound_read_error(where, frames_read, sound.frames, exc) from None
        lines_said += lines
        # beyond what the header was trusted for
        rest = [block.T for block in sound_blocks(sound, where, said=lines_said)]
    if said is None:
        warn_decoder_lines(lines_said, where)
    else:
        said += lines_said
    data = (np.concatenate([buffer[:frames_read], *rest]) if rest else buffer[:frames_read]).T
    if sample_rate is not None and rate != sample_rate and data.shape[1] > 0:
        data = np.stack([soxr.resample(channel, rate, sample_rate) for channel in data]).astype(np.float32)
        rate = sample_rate
    return data, rate


def _bytes_from_here(source) -> int:
    """The size of a path's file, or of a stream from where it is (it is left there); 0 where it cannot be told."""
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.stat(source).st_size
        with left_where_it_was(source) as position:
            return source.seek(0, os.SEEK_END) - position
    except (AttributeError, OSError, ValueError):
        return 0
