"""What a `.vq` file holds, from its header (and chunk table): no networks, so no torch."""
from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import format as vqformat
from . import memory
from .codekind import decoder_of, kind_of
from .errors import VQCodecError
from .imageio import ALPHA_MODES, IMAGE_MODE_NAMES
from .memory import refuse_beyond
from .streams import (cannot_read_stream, checked_flag, is_regular_stream, read_at_most, read_up_to,
                      refuse_closed_stream, stream_name)
from .wording import decimals_for, reason_of, shown_cut, type_of

TRAILING_STREAM_BYTES = 1 << 20  # read after the last chunk of a .vq stream that is no regular file, at most
WHOLE = "a .vq file is read into memory whole"
STREAM = "the stream"  # how a read's error names a .vq stream


class LostFraming(vqformat.FormatError):
    """A `.vq` stream whose chunk framing is lost with more than TRAILING_STREAM_BYTES after it: not read further
    (read_vq_stream); a stream to be salvaged is read no further either, and is salvaged (UnendedStream)."""


class UnendedStream(bytes):
    """The bytes of a `.vq` stream read to be salvaged: its chunks, as far as their framing goes, and the
    TRAILING_STREAM_BYTES after them, of a stream that went on past those, unread (salvage uses no byte after the
    framing ends: Codec.damaged_parts says it went on)."""


@dataclass
class FileInfo:
    """What a `.vq` file holds, as read_info returns it from the file's header (and chunk table):
    no networks run and no media are decoded.

    `kind`: "audio" or "image"; `model_id`: the id (16 hex digits) of the model that wrote it;
    `quality`: its codebooks; `coding`: how its indices are coded ("fixed-width", "prior range
    coding" or "prior range coding, per-cell depth"); `size_bytes`: the whole file's size;
    `chunks`: the chunks it is stored in. Audio: `sample_rate` (Hz), `channels`, `samples` (per
    channel), `shared_chunks` and `gain`; images: `width`, `height` (pixels), `mode` (the
    original colour mode, such as "RGB" or "L") and `has_alpha`. The other kind's fields keep
    their defaults. The `duration` (seconds, audio) and `bitrate` (bits per second for audio, bits
    per pixel for images, the whole file counted) properties are worked out from these."""

    kind: str
    model_id: str
    quality: int
    coding: str
    size_bytes: int
    sample_rate: int = 0
    channels: int = 0
    samples: int = 0
    width: int = 0
    height: int = 0
    mode: str = ""
    has_alpha: bool = False
    chunks: int = 0
    shared_chunks: int | None = 0   # audio: chunks whose channels share one set of codes, stored once
                                    # (None: unknown, as for a damaged file, whose chunks are not read)
    gain: float = 1.0        # audio: the level gain the decoder multiplies by

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def bitrate(self) -> float:
        """Bits per second for audio, bits per pixel for images; the whole file counted."""
        if self.kind == "audio":
            return self.size_bytes * 8 / self.duration if self.duration else 0.0
        return self.size_bytes * 8 / (self.width * self.height)

    def as_dict(self) -> dict:
        """The fields of this kind of file, as `vqcodec info --json` gives them but for the installed model it names:
        the header's, and for audio `duration` (seconds, to 6 decimals, or to 6 significant digits where fewer) and
        `bitrate_bps` (to 2 decimals), for images `bits_per_pixel` (to 6 significant digits, however low)."""
        audio = self.kind == "audio"
        other_kinds = IMAGE_FIELDS if audio else AUDIO_FIELDS
        record = {field.name: getattr(self, field.name) for field in fields(self) if field.name not in other_kinds}
        if audio:
            # 6 decimals, or 6 significant digits where fewer: 1 sample at 768 kHz was 1e-06 s
            record.update(duration=round(self.duration, decimals_for(self.duration, 6, 6)),
                          bitrate_bps=round(self.bitrate, 2))
        else:
            record.update(bits_per_pixel=float(f"{self.bitrate:.6g}"))
        return record


AUDIO_FIELDS = ("sample_rate", "channels", "samples", "shared_chunks", "gain")  # FileInfo's fields of audio alone
IMAGE_FIELDS = ("width", "height", "mode", "has_alpha")  # and of images alone


def _codes_advice(data) -> str:
    """What takes `data` where it may be codes (an array or a tensor, as the codes methods give them), in a
    message's closing words; "" for anything else."""
    made = kind_of(data)
    if made is not None:
        decoder = decoder_of(made)
    elif hasattr(data, "shape") and hasattr(data, "dtype"):
        decoder = "codes_to_audio or codes_to_image"
    else:
        return ""
    return f" (codes: {decoder} decodes them, codes_to_file makes a .vq file of them)"


def vq_bytes(data, salvage: bool = False) -> bytes:
    """`.vq` file contents from bytes, a path or a binary stream (read_vq_stream, which does not refuse a stream to
    be salvaged for going on past its chunks: other input is refused from its first bytes). A stream that cannot be
    read (closed, open for writing only, failing) is refused by its name, 'the stream' where it has none."""
    if isinstance(data, UnendedStream):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        if isinstance(data, io.TextIOBase):  # read, its bytes would be decoded as text (UnicodeDecodeError)
            raise VQCodecError("a .vq file is read from a binary stream, not a text one (open the file with 'rb')")
        refuse_closed_stream(data)
        try:
            return read_vq_stream(data, salvage)
        except io.UnsupportedOperation:  # its read's words: 'read'
            raise cannot_read_stream(stream_name(data), "it is not open for reading") from None
        except OSError as exc:  # a read that fails midway (EIO)
            raise cannot_read_stream(stream_name(data), reason_of(exc)) from None
    if not isinstance(data, (str, Path)):
        raise VQCodecError(f"a .vq file is given as bytes, a path or a binary stream, not {type_of(data)}"
                           f"{_codes_advice(data)}")
    if data == "":  # Path("") is the current folder
        raise VQCodecError("the path of the .vq file is empty")
    try:
        return read_vq_file(data, salvage)
    except IsADirectoryError:
        raise VQCodecError(f"{data}: is a directory") from None
    except OSError as exc:
        raise VQCodecError(f"cannot read {data}: {reason_of(exc)}") from None
    except ValueError as exc:  # a path with a NUL byte (the file's contents decoded to str by mistake)
        raise VQCodecError(f"cannot read {shown_cut(data)}: {exc}") from None


def file_name(data) -> str | None:
    """The name an error gives the `.vq` file `data` (as vq_bytes takes it): its path, where it is given one; None
    for bytes or a stream."""
    return str(data) if isinstance(data, (str, Path)) and data != "" else None


@contextlib.contextmanager
def naming_damage(name: str | None):
    """A FormatError raised in the block (a `.vq` file cut short, corrupted, or of no format this vqcodec reads)
    names the file, `name`, as a bad magic's does (read_vq_stream): "t.vq: truncated .vq file (incomplete header)".
    With None (stdin, bytes or a stream), and where the message names it already, it is raised as it is."""
    try:
        yield
    except vqformat.FormatError as exc:
        if name is None or str(exc).startswith(f"{name}: "):
            raise
        raise type(exc)(f"{name}: {exc}") from None


def naming_damage_in(items: Iterator, name: str | None) -> Iterator:
    """`items`, with a FormatError raised while the caller reads them (damage a generator finds only when it decodes
    that part of the file) naming the file, `name`, as naming_damage does."""
    with naming_damage(name):
        yield from items


def naming_its_file(function):
    """`function`, of a `.vq` file given as its argument `data`, with the FormatError it raises naming the file
    where `data` is a path (naming_damage)."""
    position = list(inspect.signature(function).parameters).index("data")

    @functools.wraps(function)
    def named(*args, **kwargs):
        data = args[position] if position < len(args) else kwargs.get("data")
        with naming_damage(file_name(data)):
            return function(*args, **kwargs)
    return named


def with_advice(error: VQCodecError, advice: str) -> VQCodecError:
    """`error` with `advice` after it ("; --salvage decodes what is intact"), still a FormatError where it was one,
    so that naming_damage names the file."""
    kind = vqformat.FormatError if isinstance(error, vqformat.FormatError) else VQCodecError
    return kind(f"{error}; {advice}")


def read_vq_file(path: str | Path, salvage: bool = False) -> bytes:
    """The bytes of the `.vq` file at `path` (a FIFO's too), as read_vq_stream reads them; an OSError is the caller's
    to word."""
    with open(path, "rb") as stream:
        return read_vq_stream(stream, salvage, name=path)


def read_vq_stream(stream, salvage: bool = False, name=None) -> bytes:
    """All the bytes of a binary stream that holds a `.vq` file. A first HEADER_SIZE bytes that
    parse_header refuses are refused before the rest (a recording given by mistake, gigabytes maybe,
    or a stream that does not end) is read into memory. A regular file is read whole; any other
    stream (a pipe) as far as its header's chunks go, then at most TRAILING_STREAM_BYTES more, past
    which it is refused (`cat talk.vq /dev/zero` was read until memory ran out), or, to be salvaged
    (`salvage`), not read further (an UnendedStream). A file that is not a .vq file is refused naming its path,
    `name`, where one is given: "talk.wav: not a .vq file (bad magic)". A read that fails is refused naming the
    stream by its own name (stream_name), 'the stream' where it has none."""
    reading = str(stream_name(stream) or STREAM)
    head = b""
    while len(head) < vqformat.HEADER_SIZE and (piece := read_at_most(stream, vqformat.HEADER_SIZE - len(head),
                                                                      reading)):
        head += piece
    if head and (not head.startswith(vqformat.MAGIC) or len(head) == vqformat.HEADER_SIZE):
        header = _header_of(head, name)
    if len(head) < vqformat.HEADER_SIZE:
        return head  # the stream ended
    if is_regular_stream(stream):  # read again from its start, in one piece: not held twice, as head + rest was
        stream.seek(-len(head), os.SEEK_CUR)
        refuse_beyond(os.fstat(stream.fileno()).st_size - stream.tell(), memory.memory_bound(), "the .vq file takes",
                      WHOLE)
        return read_at_most(stream, -1, reading)
    return _read_framed(stream, header, head, salvage, reading)


def _header_of(head: bytes, name) -> vqformat.Header:
    """parse_header of a file's first bytes; where they are not a .vq file's, the refusal names the file, `name`."""
    try:
        return vqformat.parse_header(head)
    except vqformat.NotVQFile as exc:
        if name is None:
            raise
        raise vqformat.NotVQFile(f"{name}: {exc}") from None


def _read_framed(stream, header: vqformat.Header, head: bytes, salvage: bool, reading: str) -> bytes:
    """The rest of a `.vq` stream after its header: its chunks, read by their framing, and what follows them up
    to TRAILING_STREAM_BYTES (which parse_file refuses, and salvage ignores); more is refused, or with `salvage`
    left unread (an UnendedStream). A chunk of no bytes, which no file holds, ends the framing as one of too many
    does (frames_a_chunk): a header announcing millions of chunks, then zeros (`cat /dev/zero`), was read 8 bytes
    a chunk. `reading`: the stream, as a read's error names it."""
    data, bound = bytearray(head), memory.memory_bound()
    lost = None  # the chunk whose framing is lost, and its length, where one is
    for index in range(header.chunk_count + (1 if header.flags & vqformat.FLAG_ALPHA else 0)):
        chunk_head = read_up_to(stream, vqformat.CHUNK_HEAD_SIZE, reading)
        data += chunk_head
        if len(chunk_head) < vqformat.CHUNK_HEAD_SIZE:
            return bytes(data)
        length = vqformat.chunk_length(chunk_head)
        if not vqformat.frames_a_chunk(length):
            lost = index, length
            break
        payload = read_up_to(stream, length, reading)
        data += payload
        if len(payload) < length:
            return bytes(data)
        refuse_beyond(len(data), bound, "the .vq stream takes over", WHOLE)
    rest = read_up_to(stream, TRAILING_STREAM_BYTES + 1, reading)
    if len(rest) > TRAILING_STREAM_BYTES and salvage:
        return UnendedStream(data + rest[:TRAILING_STREAM_BYTES])
    if len(rest) > TRAILING_STREAM_BYTES:
        found = (f"corrupted .vq file (chunk {lost[0]} claims {lost[1]} bytes), and" if lost else
                 "a .vq stream goes on past its last chunk:")
        refused = LostFraming if lost else vqformat.FormatError
        raise refused(f"{found} more than {TRAILING_STREAM_BYTES >> 20} MiB follows it; not read further "
                      "(is it one .vq file?)")
    data += rest
    return bytes(data)


def colour_mode(header: vqformat.Header) -> str:
    """The colour mode an image header names (docs/FORMAT.md §7, check 13)."""
    if header.mode not in IMAGE_MODE_NAMES:
        raise vqformat.FormatError(f"corrupted .vq file: unknown colour mode {header.mode}")
    return IMAGE_MODE_NAMES[header.mode]


def alpha_plane(header: vqformat.Header, alpha_bytes: bytes | None) -> np.ndarray | None:
    """The uint8 (height, width) alpha plane of an image file's alpha section, or None for a colour mode
    without alpha; refused where the section is damaged, or present or missing against the mode."""
    import zlib

    alpha = None
    if alpha_bytes is not None:
        inflate = zlib.decompressobj()
        try:
            raw = inflate.decompress(alpha_bytes, header.width * header.height + 1)
        except zlib.error:
            raise vqformat.FormatError("corrupted .vq file: alpha plane does not decompress") from None
        if len(raw) != header.width * header.height:
            raise vqformat.FormatError("corrupted .vq file: alpha plane has the wrong size")
        if not inflate.eof or inflate.unused_data:  # cut before its checksum, or bytes after it
            raise vqformat.FormatError("corrupted .vq file: alpha plane is not one whole zlib stream")
        alpha = np.frombuffer(raw, dtype=np.uint8).reshape(header.height, header.width)
    if (alpha is not None) != (colour_mode(header) in ALPHA_MODES):
        raise vqformat.FormatError("corrupted .vq file: alpha plane present or missing against the colour mode")
    return alpha


@naming_its_file
def read_info(data: bytes, check_chunks: bool = True) -> FileInfo:
    """What a `.vq` file's header says (`data`: its bytes, path or a binary stream), once the whole
    file checks out (or the header alone, with check_chunks=False: for a damaged file; shared_chunks
    is then None where the header allows shared chunks, as the chunks are not read)."""
    data = vq_bytes(data)
    check_chunks = checked_flag("check_chunks", check_chunks)
    header, chunks, alpha_bytes = vqformat.parse_file(data) if check_chunks else (vqformat.parse_header(data), [], None)
    info = FileInfo(kind=vqformat.KIND_NAMES[header.kind], model_id=header.model_id.hex(), quality=header.quality,
                    coding=vqformat.CODING_NAMES[header.coding], size_bytes=len(data), chunks=header.chunk_count)
    if header.kind == vqformat.KIND_AUDIO:
        info.sample_rate, info.channels, info.samples = header.sample_rate, header.channels, header.length
        info.shared_chunks = sum(vqformat.stores_one_channel(header, chunk) for chunk in chunks) \
            if check_chunks or not header.flags & vqformat.FLAG_SHARED_CHANNELS else None  # not read: unknown
        info.gain = header.gain
    else:
        info.width, info.height = header.width, header.height
        info.mode = colour_mode(header)
        if check_chunks:
            alpha_plane(header, alpha_bytes)
        info.has_alpha = bool(header.flags & vqformat.FLAG_ALPHA)
    return info
