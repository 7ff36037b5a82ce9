"""The `.vq` container: a fixed 56-byte header, then independently decodable chunks.

docs/FORMAT.md specifies every byte. All integers are little-endian. Every size read from a
file is checked against fixed bounds before anything is allocated, and every failure raises
FormatError, a VQCodecError.
"""
from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import VQCodecError
from .wording import plural

MAGIC = b"VQCD"
NPY_MAGIC = b"\x93NUMPY"  # a NumPy .npy file's first bytes: codes given where their .vq file is wanted
VERSION = 1
HEADER_SIZE = 56
_HEADER = struct.Struct("<4sBBBB8sIIQIIHBBII")  # everything before the header CRC
assert _HEADER.size + 4 == HEADER_SIZE
_CHUNK_HEAD = struct.Struct("<II")  # payload length, payload CRC32
CHUNK_HEAD_SIZE = _CHUNK_HEAD.size

KIND_AUDIO, KIND_IMAGE = 0, 1
KIND_NAMES = {KIND_AUDIO: "audio", KIND_IMAGE: "image"}
CODING_FIXED, CODING_PRIOR, CODING_PRIOR_DEPTH = 0, 1, 2
CODING_NAMES = {CODING_FIXED: "fixed-width", CODING_PRIOR: "prior range coding",
                CODING_PRIOR_DEPTH: "prior range coding, per-cell depth"}
PRIOR_CODINGS = (CODING_PRIOR, CODING_PRIOR_DEPTH)
FLAG_ALPHA = 1             # image: a lossless alpha plane follows the code chunks
FLAG_SHARED_CHANNELS = 2   # audio: each code chunk starts with a channel-layout byte
FLAG_LEVEL_GAIN = 4        # audio: `width` holds the gain the decoded audio is multiplied by (GAIN_ONE = 1.0)
GAIN_ONE = 1 << 16         # the level gain is stored in units of 1/65536
MIN_GAIN, MAX_GAIN = GAIN_ONE >> 10, GAIN_ONE << 8  # 1/1024 .. 256
LAYOUT_EVERY_CHANNEL, LAYOUT_SHARED = 0, 1  # the chunk holds every channel's codes / one set, every channel's

# Sanity bounds, checked before allocating anything.
MAX_SAMPLE_RATE = 768_000
MAX_AUDIO_SECONDS = 24 * 3600
MAX_CHANNELS = 64
MAX_IMAGE_SIDE = 65_535
MAX_IMAGE_PIXELS = 89_478_485   # Pillow's decompression-bomb threshold
MAX_CHUNK_BYTES = 1 << 27        # above the largest alpha plane, even incompressible
MAX_CHUNK_FRAMES = 1 << 20
MAX_QUALITY = 64


class FormatError(VQCodecError):
    pass


class NotVQFile(FormatError):
    """Bytes that do not begin as a .vq file does (its magic): another file given as one."""


@dataclass
class Header:
    kind: int
    coding: int
    quality: int
    model_id: bytes          # 8 bytes
    prior_id: int = 0
    sample_rate: int = 0     # audio: the input's original rate
    length: int = 0          # audio: samples per channel
    width: int = 0           # image
    height: int = 0          # image
    channels: int = 0        # audio: channel count; image: colour planes coded (3)
    mode: int = 0            # image: colour mode code (see imageio.IMAGE_MODES)
    flags: int = 0
    chunk_frames: int = 0    # frames (audio) or latent rows (image) per chunk
    chunk_count: int = 0

    def pack(self) -> bytes:
        body = _HEADER.pack(MAGIC, VERSION, self.kind, self.coding, self.quality, self.model_id,
                            self.prior_id, self.sample_rate, self.length, self.width, self.height,
                            self.channels, self.mode, self.flags, self.chunk_frames, self.chunk_count)
        return body + struct.pack("<I", zlib.crc32(body))

    @property
    def gain_units(self) -> int:
        """The stored level gain in units of 1/GAIN_ONE, or 0 for none (FLAG_LEVEL_GAIN)."""
        return self.width if self.kind == KIND_AUDIO and self.flags & FLAG_LEVEL_GAIN else 0

    @property
    def gain(self) -> float:
        """What the decoded audio is multiplied by: the encoder divided the input by it."""
        return self.gain_units / GAIN_ONE if self.gain_units else 1.0

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate if self.kind == KIND_AUDIO else 0.0

    @property
    def coded_prior_id(self) -> int | None:
        """The prior an entropy-coded file was coded with; None for a fixed-width file (whose prior_id is 0)."""
        return self.prior_id if self.coding in PRIOR_CODINGS else None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(message)


def _npy_advice(data: bytes) -> str:
    """What reads `data` where it is a NumPy .npy file (codes, as `vqcodec codes` writes them), in a message's words;
    "" for anything else."""
    if bytes(data[:len(NPY_MAGIC)]) != NPY_MAGIC:
        return ""
    return (" but a NumPy .npy file: vqcodec.tokens.read_codes_npy reads its codes, vqcodec pack makes a .vq file "
            "of them")


def parse_header(data: bytes) -> Header:
    _check(len(data) > 0, "empty .vq input (no bytes)")
    if not (len(data) >= 4 and data[:4] == MAGIC or MAGIC.startswith(bytes(data[:4]))):
        raise NotVQFile(f"not a .vq file (bad magic){_npy_advice(data)}")
    _check(len(data) >= HEADER_SIZE, "truncated .vq file (incomplete header)")
    fields = _HEADER.unpack_from(data)
    _check(fields[1] == VERSION, f"unsupported .vq format version {fields[1]} (this vqcodec reads version {VERSION})")
    (crc,) = struct.unpack_from("<I", data, _HEADER.size)
    _check(zlib.crc32(data[:_HEADER.size]) == crc, "corrupted .vq file (header CRC mismatch)")
    header = Header(*fields[2:])
    _check(header.kind in KIND_NAMES, f"unknown media kind {header.kind}")
    _check(header.coding in CODING_NAMES, f"unknown payload coding {header.coding}")
    _check(1 <= header.quality <= MAX_QUALITY, f"quality {header.quality} out of range")
    _check(1 <= header.chunk_frames <= MAX_CHUNK_FRAMES, f"chunk size of {header.chunk_frames} frames out of range")
    known_flags = FLAG_SHARED_CHANNELS | FLAG_LEVEL_GAIN if header.kind == KIND_AUDIO else FLAG_ALPHA
    _check(header.flags & ~known_flags == 0, f"unknown flags {header.flags:#x}")
    _check(header.coding != CODING_FIXED or header.prior_id == 0, "fixed-width file names a prior")
    if header.kind == KIND_AUDIO:
        _check(1 <= header.sample_rate <= MAX_SAMPLE_RATE, f"sample rate {header.sample_rate} out of range")
        _check(1 <= header.channels <= MAX_CHANNELS, f"channel count {header.channels} out of range")
        _check(1 <= header.length <= header.sample_rate * MAX_AUDIO_SECONDS,
               f"audio length of {header.length} samples is zero or exceeds {MAX_AUDIO_SECONDS // 3600} hours")
        _check(header.height == header.mode == 0 and (header.width == 0 or header.flags & FLAG_LEVEL_GAIN),
               "image fields set in an audio file")
        _check(not header.flags & FLAG_LEVEL_GAIN or MIN_GAIN <= header.width <= MAX_GAIN,
               f"level gain {header.width}/{GAIN_ONE} out of range")
        _check(header.channels > 1 or not header.flags & FLAG_SHARED_CHANNELS, "shared-channel flag on mono audio")
    else:
        _check(1 <= header.width <= MAX_IMAGE_SIDE and 1 <= header.height <= MAX_IMAGE_SIDE,
               f"image size {header.width}x{header.height} out of range")
        _check(header.width * header.height <= MAX_IMAGE_PIXELS,
               f"image of {header.width * header.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
        _check(header.channels == 3, f"image plane count {header.channels} is not 3")
        _check(header.sample_rate == header.length == 0, "audio fields set in an image file")
    return header


def channel_layout(payload: bytes) -> tuple[int, bytes]:
    """The channel-layout byte of an audio chunk of a FLAG_SHARED_CHANNELS file, and the rest."""
    _check(len(payload) >= 1, "audio chunk has no channel-layout byte")
    _check(payload[0] in (LAYOUT_EVERY_CHANNEL, LAYOUT_SHARED), f"unknown channel layout {payload[0]}")
    return payload[0], payload[1:]


def stores_one_channel(header: Header, payload: bytes) -> bool:
    """Whether a code chunk of this file holds one set of codes for every channel (LAYOUT_SHARED)."""
    return bool(header.kind == KIND_AUDIO and header.flags & FLAG_SHARED_CHANNELS
                and payload[:1] == bytes([LAYOUT_SHARED]))


def expected_chunk_count(total_frames: int, chunk_frames: int) -> int:
    return math.ceil(total_frames / chunk_frames)


def pack_chunk(payload: bytes) -> bytes:
    return _CHUNK_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def chunk_length(chunk_head: bytes) -> int:
    """The payload length a chunk's head gives."""
    return _CHUNK_HEAD.unpack_from(chunk_head)[0]


def frames_a_chunk(length: int) -> bool:
    """Whether a chunk head's length can be a chunk's: none holds 0 bytes (check 15) or more than MAX_CHUNK_BYTES,
    so from such a head on the chunks' framing is lost."""
    return 0 < length <= MAX_CHUNK_BYTES


# A payload shorter than this is copied, not viewed: a memoryview object takes about 184 bytes itself, a
# bytes object 33 plus its length (views of a file of a million 5-byte chunks took 190 MB, copies 38 MB)
COPIED_PAYLOAD_BYTES = 128


def read_chunks(data: bytes, count: int, offset: int = HEADER_SIZE, first_index: int = 0
                ) -> tuple[list[memoryview | bytes], int]:
    """Read `count` chunks from `data` at `offset`; returns the payloads, read-only views of `data` (copies
    held the file's bytes a second time) or, under COPIED_PAYLOAD_BYTES, copies, and the offset after them."""
    view = memoryview(data if isinstance(data, bytes) else bytes(data)).toreadonly()
    payloads = []
    for index in range(first_index, first_index + count):  # messages made only when raised: a file may hold millions
        if offset + _CHUNK_HEAD.size > len(data):
            raise FormatError(f"truncated .vq file (chunk {index} missing)")
        length, crc = _CHUNK_HEAD.unpack_from(data, offset)
        offset += _CHUNK_HEAD.size
        if length > MAX_CHUNK_BYTES:
            raise FormatError(f"chunk {index} claims {length} bytes")
        if offset + length > len(data):
            raise FormatError(f"truncated .vq file (chunk {index} cut short)")
        payload = view[offset:offset + length]
        if zlib.crc32(payload) != crc:
            raise FormatError(f"corrupted .vq file (chunk {index} CRC mismatch)")
        payloads.append(payload if length >= COPIED_PAYLOAD_BYTES else bytes(payload))
        offset += length
    return payloads, offset


def parse_file(data: bytes) -> tuple[Header, list[memoryview | bytes], memoryview | bytes | None]:
    """Parse a whole file into its header, its code chunk payloads and its alpha section (or None), as
    read-only views of `data` (short ones as copies: read_chunks).

    Whether chunk_count fits the header's dimensions depends on the model's stride, so the codec
    checks that; here it is bounded by the bytes actually present.
    """
    header = parse_header(data)
    _check(header.chunk_count <= (len(data) - HEADER_SIZE) // _CHUNK_HEAD.size,
           f"truncated .vq file (header announces {plural(header.chunk_count, 'chunk')})")
    chunks, offset = read_chunks(data, header.chunk_count)
    alpha = None
    if header.flags & FLAG_ALPHA:
        (alpha,), offset = read_chunks(data, 1, offset, first_index=header.chunk_count)
    _check(offset == len(data), f"{plural(len(data) - offset, 'unexpected byte')} after the last chunk")
    return header, chunks, alpha


class SalvagedChunks:
    """The code chunk payloads of a damaged file, by index (salvage_chunks): those the walk over the
    chunks found (None for one whose CRC fails), then None for every chunk from the first whose
    framing is lost, without a list of them (a 56-byte header may declare 172 million chunks)."""

    def __init__(self, found: list[bytes | None], count: int):
        self.found, self.count = found, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> bytes | None:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.found[index] if index < len(self.found) else None


def salvage_chunks(data: bytes, header: Header) -> tuple[SalvagedChunks, bytes | None]:
    """The code chunk payloads and the alpha section of a damaged file whose header is intact (and
    whose chunk_count the caller has checked): None for each chunk whose CRC fails, and for every
    chunk from the first whose framing is cut short or out of bounds (frames_a_chunk) on (nothing
    after it can be found). Bytes after the last chunk are ignored."""
    total = _chunks_in(header)
    found = [bytes(data[body:end]) if zlib.crc32(data[body:end]) == crc else None
             for body, end, crc in _framed_chunks(data, total)]
    alpha = found.pop() if header.flags & FLAG_ALPHA and len(found) == total else None
    return SalvagedChunks(found[:header.chunk_count], header.chunk_count), alpha


def _chunks_in(header: Header) -> int:
    """The chunks of a file: its code chunks, and its alpha chunk."""
    return header.chunk_count + (1 if header.flags & FLAG_ALPHA else 0)


def _framed_chunks(data: bytes, total: int) -> Iterator[tuple[int, int, int]]:
    """(payload start, payload end, stored CRC) of the first `total` chunks, CRCs unchecked, up to the
    first whose head is missing or whose length frames no chunk (frames_a_chunk) or runs past the end."""
    offset = HEADER_SIZE
    for _ in range(total):
        if offset + _CHUNK_HEAD.size > len(data):
            return
        length, crc = _CHUNK_HEAD.unpack_from(data, offset)
        body = offset + _CHUNK_HEAD.size
        if not frames_a_chunk(length) or body + length > len(data):
            return
        offset = body + length
        yield body, offset, crc


def trailing_bytes(data: bytes, header: Header) -> int:
    """How many bytes follow the last chunk of a file whose chunks are all framed, whatever their CRCs
    (0 where one is not)."""
    framed, end = 0, HEADER_SIZE
    for _, end, _ in _framed_chunks(data, _chunks_in(header)):
        framed += 1
    return len(data) - end if framed == _chunks_in(header) else 0


def build_file(header: Header, chunks: list[bytes], alpha: bytes | None = None) -> bytes:
    header.chunk_count = len(chunks)
    header.flags = (header.flags & ~FLAG_ALPHA) | (FLAG_ALPHA if alpha is not None else 0)
    parts = [header.pack()] + [pack_chunk(c) for c in chunks]
    if alpha is not None:
        parts.append(pack_chunk(alpha))
    return b"".join(parts)
