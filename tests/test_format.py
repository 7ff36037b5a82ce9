"""The `.vq` container: exact layout, round trips, and rejection of every kind of damaged or hostile file."""
from __future__ import annotations

import dataclasses
import io
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vqcodec import VQCodecError
from vqcodec import entropy
from vqcodec import format as vqformat
from vqcodec.format import FormatError, Header

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MODEL_ID = bytes(range(1, 9))


def audio_header(**changes) -> Header:
    fields = dict(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_PRIOR, quality=5, model_id=MODEL_ID,
                  prior_id=0xDEADBEEF, sample_rate=44100, length=123_456_789, channels=2, flags=0,
                  chunk_frames=500, chunk_count=3)
    fields.update(changes)
    return Header(**fields)


def image_header(**changes) -> Header:
    fields = dict(kind=vqformat.KIND_IMAGE, coding=vqformat.CODING_FIXED, quality=8, model_id=MODEL_ID[::-1],
                  prior_id=0, width=4000, height=3000, channels=3, mode=2, flags=0, chunk_frames=16, chunk_count=0)
    fields.update(changes)
    return Header(**fields)


def small_image_file(alpha: bytes | None = b"alpha plane bytes") -> bytes:
    return vqformat.build_file(image_header(width=70, height=33), [b"\x01\x02\x03", b"", b"\xff" * 10], alpha)


# ---------------------------------------------------------------- round trips and layout

@pytest.mark.parametrize("make", [audio_header, image_header,
                                  lambda: audio_header(coding=vqformat.CODING_FIXED, prior_id=0, quality=64, length=1),
                                  lambda: image_header(coding=vqformat.CODING_PRIOR, prior_id=2**32 - 1, mode=14,
                                                       flags=vqformat.FLAG_ALPHA),
                                  lambda: audio_header(coding=vqformat.CODING_PRIOR_DEPTH, prior_id=7),
                                  lambda: audio_header(flags=vqformat.FLAG_LEVEL_GAIN | vqformat.FLAG_SHARED_CHANNELS,
                                                       width=3 * vqformat.GAIN_ONE)],
                         ids=["audio", "image", "audio-fixed", "image-prior", "audio-prior-depth", "audio-gain"])
def test_header_round_trip_keeps_every_field(make):
    header = make()
    packed = header.pack()
    assert len(packed) == vqformat.HEADER_SIZE == 56
    assert vqformat.parse_header(packed) == header


def test_header_byte_layout():
    header = audio_header(mode=9, flags=0, width=0, height=0)
    data = header.pack()
    assert data[0:4] == b"VQCD"
    assert data[4] == 1 == vqformat.VERSION
    assert (data[5], data[6], data[7]) == (vqformat.KIND_AUDIO, vqformat.CODING_PRIOR, 5)
    assert data[8:16] == MODEL_ID
    assert struct.unpack_from("<I", data, 16)[0] == 0xDEADBEEF
    assert struct.unpack_from("<I", data, 20)[0] == 44100
    assert struct.unpack_from("<Q", data, 24)[0] == 123_456_789
    assert struct.unpack_from("<II", data, 32) == (0, 0)
    assert struct.unpack_from("<H", data, 40)[0] == 2
    assert (data[42], data[43]) == (9, 0)
    assert struct.unpack_from("<II", data, 44) == (500, 3)
    assert struct.unpack_from("<I", data, 52)[0] == zlib.crc32(data[:52])


def test_image_header_byte_layout():
    data = image_header(width=4000, height=3000).pack()
    assert struct.unpack_from("<II", data, 32) == (4000, 3000)
    assert struct.unpack_from("<H", data, 40)[0] == 3
    assert data[42] == 2


def test_build_and_parse_file_round_trip_with_alpha():
    chunks = [b"\x01\x02\x03", b"", bytes(range(256))]
    header = image_header(width=70, height=33)
    data = vqformat.build_file(header, chunks, b"alpha!")
    parsed, got_chunks, alpha = vqformat.parse_file(data)
    assert got_chunks == chunks
    assert alpha == b"alpha!"
    assert parsed.chunk_count == 3 and parsed.flags & vqformat.FLAG_ALPHA
    assert (parsed.width, parsed.height, parsed.mode, parsed.quality) == (70, 33, 2, 8)
    # chunk layout: u32 length, u32 CRC-32 of the payload, payload; the alpha section is one more chunk
    offset = 56
    for payload in chunks + [b"alpha!"]:
        length, crc = struct.unpack_from("<II", data, offset)
        assert length == len(payload) and crc == zlib.crc32(payload)
        assert data[offset + 8:offset + 8 + length] == payload
        offset += 8 + length
    assert offset == len(data)


def test_build_file_without_alpha_clears_the_flag():
    header = audio_header(length=1000, flags=vqformat.FLAG_ALPHA, coding=vqformat.CODING_FIXED, prior_id=0)
    data = vqformat.build_file(header, [b"abc", b"defg"])
    parsed, chunks, alpha = vqformat.parse_file(data)
    assert alpha is None and not parsed.flags & vqformat.FLAG_ALPHA
    assert chunks == [b"abc", b"defg"] and parsed.chunk_count == 2
    assert len(data) == 56 + (8 + 3) + (8 + 4)


def test_worked_example_of_the_format_document(codec):
    """docs/FORMAT.md section 9: the tiny model (seed 0) codes 40 zero samples at 8 kHz, quality 2, into these 74 bytes."""
    expected = bytes.fromhex(
        "56514344 01000002 b1a2539d cea9cac6 00000000 401f0000 28000000 00000000"
        "00000000 00000000 01000000 f4010000 01000000 e497b1c4 0a000000 53101745"
        "a8888888 8a7ccccc ccf4".replace(" ", ""))
    assert len(expected) == 74
    assert codec.model_id.hex() == "b1a2539dcea9cac6"
    data = codec.encode_audio(np.zeros((1, 40), np.float32), 8000, 2)
    assert data == expected
    header, chunks, _ = vqformat.parse_file(data)
    codes = entropy.unpack_fixed(chunks[0], 20, 16).reshape(1, 2, 10)
    np.testing.assert_array_equal(codes[0, 0], [10, 8, 8, 8, 8, 8, 8, 8, 8, 10])
    np.testing.assert_array_equal(codes[0, 1], [7, 12, 12, 12, 12, 12, 12, 12, 15, 4])


def test_real_file_layout(two_chunk_vq, codec):
    header, chunks, alpha = vqformat.parse_file(two_chunk_vq)
    assert alpha is None
    assert (header.sample_rate, header.channels, header.length, header.quality) == (16000, 2, 4800, 4)
    assert header.model_id == codec.model_id
    frames = math.ceil(4800 / codec.hop)
    assert header.chunk_count == len(chunks) == math.ceil(frames / header.chunk_frames) == 2
    bits = entropy.bits_per_index(codec.codebook_size)
    sizes = [min(header.chunk_frames, frames - i * header.chunk_frames) for i in range(len(chunks))]
    assert [len(c) for c in chunks] == [math.ceil(2 * 4 * n * bits / 8) for n in sizes]


# ---------------------------------------------------------------- fixed-width payloads

@pytest.mark.parametrize("size, bits", [(16, 4), (1000, 10), (1024, 10), (1025, 11), (2, 1)])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 1001])
@pytest.mark.parametrize("block", [1 << 16, 8, 24])
def test_pack_fixed_round_trip(size, bits, count, block, monkeypatch):
    monkeypatch.setattr(entropy, "UNPACK_BLOCK_CODES", block)  # blocks end within a code's bits, and on chunks' ends
    rng = np.random.default_rng(size * 7 + count)
    values = rng.integers(0, size, count)
    if count >= 2:
        values[0], values[-1] = 0, size - 1
    assert entropy.bits_per_index(size) == bits
    payload = entropy.pack_fixed(values, size)
    assert len(payload) == math.ceil(count * bits / 8)
    back = entropy.unpack_fixed(payload, count, size)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, values)


def test_unpack_fixed_holds_the_codes_and_a_block_of_bits_not_every_bit_as_int64():
    """A fixed-width payload was unpacked whole: a byte per bit, and those bits as int64, 9 bytes a
    bit besides the codes, so a chunk of 2^27 bytes (which the format allows) took 9.7 GB to read."""
    from conftest import traced_peak

    values = np.random.default_rng(0).integers(0, 1000, 1 << 20)
    payload = entropy.pack_fixed(values, 1000)
    back, peak = traced_peak(lambda: entropy.unpack_fixed(payload, values.size, 1000))
    np.testing.assert_array_equal(back, values)
    assert peak < values.size * 8 + 8_000_000, f"peak {peak / 1e6:.1f} MB"  # the codes, and a block's work


def test_unpack_fixed_gives_the_codes_as_the_type_asked_for_without_an_int64_copy():
    """Fixed-width chunks were unpacked as int64 (8 bytes a code), which the codec then copied to
    int16: 10 bytes a code held at once, 10 GB for a chunk of 2^30 one-bit codes."""
    from conftest import traced_peak

    values = np.random.default_rng(2).integers(0, 1000, 1 << 20)
    payload = entropy.pack_fixed(values, 1000)
    back, peak = traced_peak(lambda: entropy.unpack_fixed(payload, values.size, 1000, np.int16))
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, values)
    assert peak < values.size * 2 + 8_000_000, f"peak {peak / 1e6:.1f} MB"  # the codes, and a block's work
    assert entropy.unpack_fixed(entropy.pack_fixed([32767, 0], 32768), 2, 32768, np.int16).tolist() == [32767, 0]


def _whole_pack_fixed(indices: np.ndarray, codebook_size: int) -> bytes:
    """pack_fixed as it was before it packed a block at a time: the bytes it must still write."""
    bits = entropy.bits_per_index(codebook_size)
    values = np.ascontiguousarray(indices, dtype=np.int64).ravel()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()


@pytest.mark.parametrize("size", [2, 5, 16, 1000, 1025, 1 << 15])
@pytest.mark.parametrize("count", [1, 9, 64, 1001])
@pytest.mark.parametrize("block", [1 << 16, 8, 24])
def test_pack_fixed_in_blocks_writes_the_bytes_it_wrote_whole(size, count, block, monkeypatch):
    monkeypatch.setattr(entropy, "UNPACK_BLOCK_CODES", block)
    codes = np.random.default_rng(size + count).integers(0, size, (2, 3, count)).astype(np.int16)
    codes[0, 0, 0], codes[-1, -1, -1] = 0, size - 1
    assert entropy.pack_fixed(codes, size) == _whole_pack_fixed(codes, size)
    shared = np.broadcast_to(codes[:1], codes.shape)  # a read-only view, as shared channels give it
    assert entropy.pack_fixed(shared, size) == _whole_pack_fixed(shared, size)
    codes = codes.astype(np.int32)  # that holds `size`, 32768, beyond int16
    for bad in (-1, size):
        codes[1, 2, count // 2] = bad
        with pytest.raises(ValueError, match="out of range"):
            entropy.pack_fixed(codes, size)


def test_pack_fixed_holds_a_block_of_bits_not_every_bit_as_int64():
    """pack_fixed copied all codes as int64 and their bits as int64: 103 MB for 2^20 codes of 10 bits."""
    from conftest import traced_peak

    codes = np.random.default_rng(1).integers(0, 1000, 1 << 20).astype(np.int16)
    payload, peak = traced_peak(lambda: entropy.pack_fixed(codes, 1000))
    assert payload == _whole_pack_fixed(codes, 1000)
    assert peak < 16_000_000, f"peak {peak / 1e6:.1f} MB"  # the payload twice, and a block's work


def test_pack_fixed_is_msb_first():
    assert entropy.pack_fixed(np.array([5, 3]), 16) == b"\x53"
    assert entropy.pack_fixed(np.array([1]), 1024) == b"\x00\x40"
    assert entropy.pack_fixed(np.array([1024]), 1025) == b"\x80\x00"
    assert entropy.pack_fixed(np.array([1, 2, 3]), 1024) == bytes.fromhex("0040200c")  # docs/FORMAT.md section 4
    assert entropy.pack_fixed(np.array([1, 2, 3]), 5) == bytes.fromhex("2980")


def test_unpack_fixed_rejects_wrong_length_and_out_of_range_values():
    payload = entropy.pack_fixed(np.arange(10), 16)
    with pytest.raises(FormatError, match="^chunk holds 6 bytes where 5 were expected$"):
        entropy.unpack_fixed(payload + b"\x00", 10, 16)
    with pytest.raises(FormatError, match="^chunk holds 4 bytes where 5 were expected$"):
        entropy.unpack_fixed(payload[:-1], 10, 16)
    # 10 bits can hold 1023, a codebook of 1000 cannot
    with pytest.raises(FormatError, match="code index beyond the codebook"):
        entropy.unpack_fixed(b"\xff\xc0", 1, 1000)
    np.testing.assert_array_equal(entropy.unpack_fixed(b"\x50", 1, 16), [5])
    with pytest.raises(FormatError, match="padding bits are not zero"):
        entropy.unpack_fixed(b"\x51", 1, 16)


# ---------------------------------------------------------------- rejection

def test_bad_magic(small_vq):
    with pytest.raises(FormatError, match="magic"):
        vqformat.parse_file(b"RIFF" + small_vq[4:])


def test_empty_input_and_a_cut_magic_are_named_so(small_vq, codec):
    """An empty stream, or the first bytes of a .vq file, were called 'not a .vq file (bad magic)'."""
    for empty in (b"", bytearray(), io.BytesIO(b"")):
        with pytest.raises(FormatError, match=r"^empty \.vq input \(no bytes\)$"):
            codec.decode_audio(empty)
    for length in (1, 2, 3):
        with pytest.raises(FormatError, match="^truncated .vq file"):
            codec.decode_audio(small_vq[:length])
    with pytest.raises(FormatError, match="bad magic"):
        vqformat.parse_header(b"VQX")


def test_a_npy_file_given_for_a_vq_file_is_named_with_what_reads_it(small_vq, codec, tmp_path):
    """Codes saved as .npy, given to read_codes or decode, were refused as any other file was: 'not a .vq file (bad
    magic)'."""
    codes = codec.read_codes(small_vq)[1]
    np.save(tmp_path / "codes.npy", np.asarray(codes))
    advice = (r"not a \.vq file \(bad magic\) but a NumPy \.npy file: vqcodec\.tokens\.read_codes_npy reads its codes, "
              r"vqcodec pack makes a \.vq file of them$")
    with pytest.raises(FormatError, match=rf"^{re.escape(str(tmp_path / 'codes.npy'))}: {advice}"):
        codec.read_codes(tmp_path / "codes.npy")
    with pytest.raises(FormatError, match=f"^{advice}"):
        codec.decode((tmp_path / "codes.npy").read_bytes())
    for other in (b"RIFF" + small_vq[4:], b"\x93NUMP"):  # not .npy: as before
        with pytest.raises(FormatError, match=r"^not a \.vq file \(bad magic\)$"):
            vqformat.parse_header(other)


def test_unknown_version_even_with_a_valid_crc(small_vq, craft):
    data = craft.with_header(small_vq, version=2)
    with pytest.raises(FormatError, match="version"):
        vqformat.parse_file(data)


def test_header_crc_mismatch(small_vq):
    data = bytearray(small_vq)
    data[52] ^= 0xFF
    with pytest.raises(FormatError, match="CRC"):
        vqformat.parse_file(bytes(data))
    data = bytearray(small_vq)
    data[21] ^= 0x01  # sample rate, CRC left as is
    with pytest.raises(FormatError, match="CRC"):
        vqformat.parse_file(bytes(data))


@pytest.mark.parametrize("which", ["audio", "image"])
def test_every_truncation_is_rejected(which, small_vq):
    data = small_vq if which == "audio" else small_image_file()
    vqformat.parse_file(data)  # the whole file is fine
    for length in range(len(data)):
        with pytest.raises(FormatError, match="truncated" if length else "empty"):  # the magic's first bytes too
            vqformat.parse_file(data[:length])


def test_every_truncation_is_rejected_by_the_codec(small_vq, codec):
    for length in range(len(small_vq)):
        with pytest.raises(VQCodecError):
            codec.decode_audio(small_vq[:length])


@pytest.mark.parametrize("which", ["audio", "image"])
def test_every_single_bit_flip_is_rejected(which, small_vq):
    data = small_vq if which == "audio" else small_image_file()
    for position in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            with pytest.raises(FormatError):
                vqformat.parse_file(bytes(damaged))


def test_trailing_garbage_is_rejected(small_vq):
    for tail in (b"\x00", b"garbage", small_vq):
        with pytest.raises(FormatError, match="unexpected bytes? after the last chunk"):
            vqformat.parse_file(small_vq + tail)


AUDIO_ABSURD = [
    (dict(length=10**15), "audio length"),
    (dict(length=16000 * 24 * 3600 + 1), "audio length"),
    (dict(channels=0), "channel count"),
    (dict(channels=1000), "channel count"),
    (dict(sample_rate=0), "sample rate"),
    (dict(sample_rate=10**7), "sample rate"),
    (dict(quality=0), "quality"),
    (dict(quality=200), "quality"),
    (dict(kind=7), "unknown media kind"),
    (dict(coding=9), "unknown payload coding"),
    (dict(coding=3), "unknown payload coding"),
    (dict(chunk_frames=0), "chunk size"),
    (dict(chunk_frames=2**32 - 1), "chunk size"),
    (dict(chunk_count=2**32 - 1), "header announces"),
    (dict(chunk_count=1000), "header announces"),
    (dict(length=0), "audio length"),
    (dict(flags=2), "shared-channel flag"),  # shared channels in a mono file
    (dict(flags=4), "level gain"),  # a level gain of 0
    (dict(flags=4, width=vqformat.MIN_GAIN - 1), "level gain"),
    (dict(flags=4, width=vqformat.MAX_GAIN + 1), "level gain"),
    (dict(flags=4, width=vqformat.GAIN_ONE, height=1), "image fields"),
    (dict(flags=8), "unknown flags"),
    (dict(flags=vqformat.FLAG_ALPHA), "unknown flags"),  # alpha in an audio file
    (dict(width=5), "image fields"),
    (dict(mode=1), "image fields"),
    (dict(prior_id=1), "names a prior"),  # fixed-width coding names a prior
]


def _absurd_ids(cases) -> list[str]:
    return [",".join(f"{k}={v}" for k, v in changes.items()) for changes, _ in cases]


@pytest.mark.parametrize("changes, message", AUDIO_ABSURD, ids=_absurd_ids(AUDIO_ABSURD))
def test_absurd_audio_header_fields_with_valid_crc(changes, message, small_vq, craft, codec):
    data = craft.with_header(small_vq, **changes)
    with pytest.raises(FormatError, match=message):
        vqformat.parse_file(data)
    with pytest.raises(VQCodecError):
        codec.decode_audio(data)


IMAGE_ABSURD = [
    (dict(width=0, height=5), "image size"),
    (dict(width=5, height=0), "image size"),
    (dict(width=70000, height=10), "image size"),
    (dict(width=10, height=70000), "image size"),
    (dict(width=20000, height=20000), "exceeds the limit"),
    (dict(width=65535, height=1366), "exceeds the limit"),  # over the pixel limit
    (dict(channels=1), "plane count"),
    (dict(channels=4), "plane count"),
    (dict(sample_rate=16000), "audio fields"),
    (dict(length=5), "audio fields"),
    (dict(flags=4), "unknown flags"),
    (dict(flags=2), "unknown flags"),  # shared channels in an image
]


@pytest.mark.parametrize("changes, message", IMAGE_ABSURD, ids=_absurd_ids(IMAGE_ABSURD))
def test_absurd_image_header_fields_with_valid_crc(changes, message, craft):
    data = craft.with_header(small_image_file(), **changes)
    with pytest.raises(FormatError, match=message):
        vqformat.parse_file(data)


def test_huge_chunk_length_is_rejected_before_reading(small_vq):
    for claimed in (2**31, 2**32 - 1, vqformat.MAX_CHUNK_BYTES + 1):
        data = bytearray(small_vq)
        struct.pack_into("<I", data, vqformat.HEADER_SIZE, claimed)
        with pytest.raises(FormatError, match=f"chunk 0 claims {claimed} bytes"):
            vqformat.parse_file(bytes(data))


def test_parse_file_holds_the_file_once():
    """parse_file copied every payload out of the file's bytes: a file held twice, 128 MiB more for a 128 MiB file."""
    from conftest import traced_peak

    payloads = [bytes([i]) * (1 << 20) for i in range(8)]
    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=1, model_id=bytes(8),
                             sample_rate=8000, length=8000, channels=1, chunk_frames=500)
    data = vqformat.build_file(header, payloads)
    (_, chunks, _), peak = traced_peak(lambda: vqformat.parse_file(data))
    assert chunks == payloads
    assert peak < len(data) // 8, f"parse_file of a {len(data)}-byte file allocated {peak} bytes"


def test_a_vq_file_or_stream_beyond_the_memory_this_process_may_use_is_refused_before_it_is_read(tmp_path,
                                                                                                   monkeypatch):
    """A .vq file is read into memory whole: one larger than the memory this process may use was read until
    that ran out, or the system killed the process."""
    import vqcodec.memory
    from conftest import traced_peak
    from vqcodec.fileinfo import read_info

    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=1, model_id=bytes(8),
                             sample_rate=8000, length=8000, channels=1, chunk_frames=500)
    data = vqformat.build_file(header, [bytes(1 << 20)] * 4)
    (tmp_path / "big.vq").write_bytes(data)
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 2 << 20)
    for source, held in ((tmp_path / "big.vq", "the .vq file takes 0.0 GB"),
                         (io.BytesIO(data), "the .vq stream takes over 0.0 GB")):  # a pipe's, read a chunk at a time
        with pytest.raises(VQCodecError) as refused:
            read_info(source)
        assert str(refused.value) == (f"{held}, more than the memory this process may use (0.0 GB); a .vq file is "
                                      "read into memory whole")
    _, peak = traced_peak(lambda: pytest.raises(VQCodecError, read_info, tmp_path / "big.vq"))
    assert peak < 1 << 20, f"{peak} bytes allocated before the file was refused"


def test_read_chunks_names_the_chunk_each_error_is_in():
    """The messages are made only when one is raised (they cost as much as reading a small chunk)."""
    body = b"".join(vqformat.pack_chunk(bytes([i]) * 3) for i in range(3))
    data = bytes(vqformat.HEADER_SIZE) + body
    payloads, end = vqformat.read_chunks(data, 3, first_index=5)
    assert payloads == [b"\0" * 3, b"\1" * 3, b"\2" * 3] and end == len(data)
    second = vqformat.HEADER_SIZE + 11  # the second chunk's head
    for damaged, message in [(data[:second + 4], "truncated .vq file (chunk 6 missing)"),
                             (data[:-1], "truncated .vq file (chunk 7 cut short)"),
                             (data[:-1] + b"\3", "corrupted .vq file (chunk 7 CRC mismatch)"),
                             (data[:second] + struct.pack("<I", 1 << 30) + data[second + 4:],
                              "chunk 6 claims 1073741824 bytes")]:
        with pytest.raises(FormatError) as refused:
            vqformat.read_chunks(damaged, 3, first_index=5)
        assert str(refused.value) == message


def test_the_alpha_chunk_is_named_after_the_code_chunks_in_errors():
    """docs/FORMAT.md §2 and check 9: the alpha chunk is chunk number chunk_count in the messages."""
    data = small_image_file()  # three code chunks, then the alpha chunk
    header, chunks, alpha = vqformat.parse_file(data)
    assert header.chunk_count == 3 and alpha == b"alpha plane bytes"
    for damaged, message in [(data[:-1] + bytes([data[-1] ^ 1]), "corrupted .vq file (chunk 3 CRC mismatch)"),
                             (data[:-1], "truncated .vq file (chunk 3 cut short)"),
                             (data[:-len(alpha) - 4], "truncated .vq file (chunk 3 missing)")]:
        with pytest.raises(FormatError) as refused:
            vqformat.parse_file(damaged)
        assert str(refused.value) == message


def test_limits_are_inclusive(small_vq, craft):
    """The bounds themselves are allowed: 24 h of audio, 64 channels, 768 kHz, a 65535-pixel side, the pixel limit."""
    vqformat.parse_header(craft.with_header(small_vq, length=16000 * 24 * 3600))
    vqformat.parse_header(craft.with_header(small_vq, channels=64, sample_rate=768_000))
    for gain in (vqformat.MIN_GAIN, vqformat.MAX_GAIN):
        assert vqformat.parse_header(craft.with_header(small_vq, flags=vqformat.FLAG_LEVEL_GAIN, width=gain)).gain == \
            gain / vqformat.GAIN_ONE
    vqformat.parse_header(craft.with_header(small_image_file(), width=65535, height=1))
    vqformat.parse_header(craft.with_header(small_image_file(), width=65535, height=1365))
    vqformat.parse_header(craft.with_header(small_image_file(), width=1, height=65535))
    assert 16385 * 5461 == vqformat.MAX_IMAGE_PIXELS
    vqformat.parse_header(craft.with_header(small_image_file(), width=16385, height=5461))
    vqformat.parse_header(craft.with_header(small_vq, chunk_frames=2**20))


# ---------------------------------------------------------------- codec-level checks behind a valid CRC

def test_wrong_model_id(small_vq, craft, codec):
    with pytest.raises(VQCodecError, match="model"):
        codec.decode_audio(craft.with_header(small_vq, model_id=b"\x00" * 8))


def test_model_ids_hash_the_stored_little_endian_bytes_on_a_big_endian_machine_too(monkeypatch):
    """A big-endian machine holds a tensor's values byte-swapped against the safetensors file it read them
    from; the model id hashed those native bytes, so there every model read failed its recorded id ('does
    not match its recorded id') and no file named it. Simulated: each tensor's bytes swapped, and
    sys.byteorder 'big'."""
    import sys

    import torch

    from vqcodec.modelfile import compute_codes_id, compute_model_id

    config = {"kind": "audio", "sample_rate": 16000}
    tensors = {"decoder.w": torch.tensor([[1.5, -2.25], [3e-3, 7.0]], dtype=torch.float16),
               "quantizer.n": torch.tensor([7, -9, 1 << 20], dtype=torch.int32), "encoder.s": torch.tensor(0.5),
               "encoder.flag": torch.tensor([True, False]), "decoder.empty": torch.zeros(0, 3)}  # codes id: float32
    ids = compute_model_id(config, tensors), compute_codes_id(config, tensors)
    swapped = {name: torch.from_numpy(tensor.numpy().byteswap()) for name, tensor in tensors.items()}
    monkeypatch.setattr(sys, "byteorder", "big")
    assert (compute_model_id(config, swapped), compute_codes_id(config, swapped)) == ids


def test_file_from_another_model(small_vq, other_codec):
    with pytest.raises(VQCodecError, match="model"):
        other_codec.decode_audio(small_vq)


@pytest.mark.parametrize("changes, message", [
    (dict(quality=1), "chunk holds 2000 bytes where 500 were expected"),
    (dict(quality=3), "chunk holds 2000 bytes where 1500 were expected"),
    (dict(channels=1), "chunk holds 2000 bytes where 1000 were expected"),
    (dict(channels=3), "chunk holds 2000 bytes where 3000 were expected"),
    (dict(chunk_frames=1), "2 chunks where 600 were expected")])
def test_payload_length_that_does_not_fit_the_header(changes, message, two_chunk_vq, craft, codec):
    data = craft.with_header(two_chunk_vq, **changes)
    vqformat.parse_file(data)  # the container itself is intact
    with pytest.raises(VQCodecError, match=message):
        codec.decode_audio(data)


def test_chunk_count_that_does_not_fit_the_length(two_chunk_vq, small_vq, craft, codec):
    # two chunks in the file, but a length that needs one
    with pytest.raises(VQCodecError, match="chunks"):
        codec.decode_audio(craft.with_header(two_chunk_vq, length=100))
    # one chunk in the file, but a length that needs two
    with pytest.raises(VQCodecError, match="chunks? where"):
        codec.decode_audio(craft.with_header(small_vq, length=16000))


def test_image_file_given_to_audio_decoder(craft, codec):
    data = vqformat.build_file(image_header(width=8, height=8, model_id=codec.model_id), [b"\x00"])
    with pytest.raises(VQCodecError, match="^this .vq file holds an image, not audio$"):
        codec.decode_audio(data)


def test_an_image_file_naming_an_audio_model_is_refused_by_every_reader(codec):
    """Decoding refused it, but reading its codes (`vqcodec codes`), `info --verbose`, `info -m` and
    recoding it (`encode x.vq`) took the image's rows and columns for the audio model's frames.
    (Codec.decode refused it in words of its own: "the file holds image, and model tiny codes audio".)"""
    data = vqformat.build_file(image_header(width=1, height=1, mode=0, model_id=codec.model_id, quality=2),
                               [entropy.pack_fixed(np.array([1, 2]), codec.codebook_size)])
    for read in (codec.read_codes, codec.code_report, codec.recode, codec.check_file, codec.decode,
                 lambda data: list(codec.code_blocks(data)[2])):
        with pytest.raises(VQCodecError, match="^this .vq file holds an image, but model tiny codes audio$"):
            read(data)


@pytest.mark.parametrize("coding", [vqformat.CODING_PRIOR, vqformat.CODING_PRIOR_DEPTH])
def test_prior_coding_is_refused_by_a_model_without_prior(small_vq, craft, codec, coding):
    with pytest.raises(VQCodecError, match="no prior"):
        codec.decode_audio(craft.with_header(small_vq, coding=coding, prior_id=5))


def test_zero_length_audio_file(craft, codec):
    """A header of 0 samples with no chunks, consistent as it is, is refused by the length check."""
    for rate in (16000, 44100):
        data = vqformat.build_file(Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=2,
                                          model_id=codec.model_id, sample_rate=rate, length=0, channels=1,
                                          chunk_frames=500), [])
        with pytest.raises(FormatError, match="audio length of 0 samples is zero"):
            codec.decode_audio(data)


def test_length_and_rate_changed_consistently_still_decodes(small_vq, craft, codec):
    """A valid CRC and consistent fields: decoding follows the header (7 samples at 16 kHz -> 20 at 44.1 kHz)."""
    data = craft.with_header(small_vq, sample_rate=44100, length=20)
    audio, rate = codec.decode_audio(data)
    assert rate == 44100 and audio.shape == (1, 20) and np.isfinite(audio).all()


# ---------------------------------------------------------------- fuzzing

def _mutations():
    op = st.sampled_from(["overwrite", "insert", "delete", "truncate"])
    return st.lists(st.tuples(op, st.integers(0, 10**6), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def _mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for op, position, blob in mutations:
        position %= len(data) + 1
        if op == "overwrite":
            data[position:position + len(blob)] = blob
        elif op == "insert":
            data[position:position] = blob
        elif op == "delete":
            del data[position:position + len(blob)]
        else:
            del data[position:]
    return bytes(data)


def _decode_must_fail_cleanly_or_work(codec, data: bytes) -> None:
    try:
        audio, rate = codec.decode_audio(data)
    except VQCodecError:
        return
    header = vqformat.parse_header(data)
    assert rate == header.sample_rate
    assert audio.shape == (header.channels, header.length) and audio.dtype == np.float32
    assert np.isfinite(audio).all()


def _parse_and_decode_fail_cleanly_or_work(codec, data: bytes) -> None:
    """Parsing may raise only our own error; then decoding must fail cleanly or work."""
    try:
        vqformat.parse_file(data)
    except VQCodecError:
        pass
    _decode_must_fail_cleanly_or_work(codec, data)


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(data, codec):
    _parse_and_decode_fail_cleanly_or_work(codec, data)


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes_after_a_valid_magic(data, codec):
    data = b"VQCD\x01" + data
    _parse_and_decode_fail_cleanly_or_work(codec, data)


@FUZZ
@given(mutations=_mutations())
def test_fuzz_mutated_valid_file(mutations, two_chunk_vq, codec):
    data = _mutate(two_chunk_vq, mutations)
    assume(data != two_chunk_vq)
    with pytest.raises(VQCodecError):  # header and chunks are CRC-protected: every change is caught
        vqformat.parse_file(data)
    with pytest.raises(VQCodecError):
        codec.decode_audio(data)


@FUZZ
@given(mutations=_mutations())
def test_fuzz_mutated_valid_file_with_fixed_header_crc(mutations, small_vq, codec, craft):
    """Mutations confined to the header, CRC recomputed: the field and codec checks must catch them."""
    header = _mutate(small_vq[:52], mutations)[:52].ljust(52, b"\x00")
    data = craft.fix_header_crc(header + small_vq[52:])
    _parse_and_decode_fail_cleanly_or_work(codec, data)


@FUZZ
@given(
    kind=st.sampled_from([0, 0, 0, 1, 2]),
    coding=st.sampled_from([0, 0, 0, 1, 2, 5]),
    quality=st.integers(0, 6),
    right_model=st.booleans(),
    sample_rate=st.sampled_from([0, 1, 7, 8000, 16000, 16000, 44100, 768_000, 768_001]),
    length=st.one_of(st.integers(0, 40), st.integers(0, 5000), st.just(10**12)),
    channels=st.integers(0, 3),
    chunk_frames=st.sampled_from([0, 1, 2, 3, 500, 2**20, 2**32 - 1]),
    payloads=st.lists(st.binary(max_size=24), max_size=4),
    alpha=st.sampled_from([None, None, None, b"", b"x\x9c"]),
)
def test_fuzz_headers_with_valid_crc(kind, coding, quality, right_model, sample_rate, length, channels, chunk_frames,
                                     payloads, alpha, codec):
    audio = kind != vqformat.KIND_IMAGE
    header = Header(kind=kind, coding=coding, quality=quality,
                    model_id=codec.model_id if right_model else b"\x00" * 8,
                    sample_rate=sample_rate if audio else 0, length=length if audio else 0, channels=channels,
                    width=0 if audio else 3, height=0 if audio else 3, chunk_frames=chunk_frames)
    data = vqformat.build_file(header, payloads, alpha)
    _parse_and_decode_fail_cleanly_or_work(codec, data)


def test_the_api_s_codec_load_and_file_info_say_what_they_take_and_give():
    """Codec.load had no docstring, and FileInfo only the one dataclass makes up (its signature)."""
    import dataclasses

    import vqcodec

    load = vqcodec.Codec.load.__doc__ or ""
    assert all(word in load for word in ("`name`", "`device`", "`coding`", "`beam`", "Returns", "VQCodecError"))
    info = vqcodec.FileInfo.__doc__ or ""
    assert "read_info" in info and all(f"`{field.name}`" in info for field in dataclasses.fields(vqcodec.FileInfo))


def test_format_md_header_table_matches_the_code():
    """docs/FORMAT.md §1: the struct layout, each row's offset, size and type, and the bounds the
    table names are those of vqcodec/format.py (an independent reader is written from that table)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    layout = re.search(r'Python `struct` layout `"([^"]+)"`', doc).group(1)
    assert layout == vqformat._HEADER.format
    section = doc[doc.index("## 1. Header"):doc.index("## 2. Chunk framing")]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\w+) \| `(\w+)` \|", section, flags=re.M)
    assert [name for *_, name in rows][-1] == "header_crc"
    counts = re.findall(r"(\d*)([a-zA-Z])", layout[1:])
    expected, offset = [], 0
    for count, code in counts + [("", "I")]:  # the header CRC follows the struct
        size = struct.calcsize("<" + count + code)
        kind = "bytes" if code == "s" else {"B": "u8", "H": "u16", "I": "u32", "Q": "u64"}[code]
        expected.append((offset, size, kind))
        offset += size
    assert [(int(o), int(s), t) for o, s, t, _ in rows] == expected
    assert offset == vqformat.HEADER_SIZE == int(re.search(r"## 1\. Header \((\d+) bytes\)", doc).group(1))

    def number(text: str) -> int:
        text = text.replace(" ", "").replace("\u202f", "")
        return 2 ** int(text[2:]) if text.startswith("2^") else int(text)

    for name in ("MAX_QUALITY", "MAX_SAMPLE_RATE", "MAX_IMAGE_SIDE", "MAX_CHANNELS", "MAX_IMAGE_PIXELS",
                 "MAX_CHUNK_FRAMES", "MAX_CHUNK_BYTES"):
        found = re.findall(rf"`{name}` = (2\^\d+|[0-9][0-9 ]*[0-9]|[0-9])", doc)
        assert found, name
        assert {number(f) for f in found} == {getattr(vqformat, name)}, name
    gains = re.search(r"audio with bit 2: ([0-9 ]+)\.\.([0-9 ]+) \(`MIN_GAIN`\.\.`MAX_GAIN`", section)
    assert (number(gains.group(1)), number(gains.group(2))) == (vqformat.MIN_GAIN, vqformat.MAX_GAIN)
    seconds = re.search(r"MAX_AUDIO_SECONDS` \(([0-9 ]+) s\)", section)
    assert number(seconds.group(1)) == vqformat.MAX_AUDIO_SECONDS
    from vqcodec import codec as codec_module, prior

    writers = re.search(r"Writers use (\d+) \(`AUDIO_CHUNK_FRAMES`\) or (\d+) \(`IMAGE_CHUNK_ROWS`\)", section)
    assert tuple(map(int, writers.groups())) == (codec_module.AUDIO_CHUNK_FRAMES, codec_module.IMAGE_CHUNK_ROWS)
    sizes = re.search(r"with 2 ≤ K ≤ (2\^\d+) and 1 ≤ levels ≤ (\d+)", doc)
    assert number(sizes.group(1)) == prior.MAX_CODEBOOK and int(sizes.group(2)) == 256
    assert number(re.search(r"a table of more than (2\^\d+) bytes", doc).group(1)) == prior.MAX_TABLE_BYTES
    from vqcodec.imageio import ALPHA_MODES, IMAGE_MODES

    codes = re.search(r"^\| code \|(.*)\|$", doc, flags=re.M).group(1).split("|")
    modes = re.search(r"^\| mode \|(.*)\|$", doc, flags=re.M).group(1).split("|")
    assert {mode.strip(): int(code) for code, mode in zip(codes, modes)} == IMAGE_MODES
    alpha = re.search(r"P;transparency \(codes ([\d, and]+)\)", doc).group(1)
    assert sorted(map(int, re.findall(r"\d+", alpha))) == sorted(IMAGE_MODES[mode] for mode in ALPHA_MODES)



def test_chunks_that_change_places_decode_in_their_new_places(codec, signal):
    """The documented limit of version 1 (docs/FORMAT.md §2, README Limits): nothing in a chunk names
    its place, so two chunks of the same frame count swapped, each with its CRC, are read as they now
    stand. A change that detects this is a new format version, and this test and the docs go with it."""
    data = codec.encode_audio(signal(2, 9600, 16000), 16000, 4)  # chunks of 500, 500 and 200 frames
    header, chunks, _ = vqformat.parse_file(data)
    assert len(chunks) == 3 and chunks[0] != chunks[1]
    swapped = vqformat.build_file(header, [chunks[1], chunks[0], chunks[2]])
    whole, read = codec.read_codes(data)[1], codec.read_codes(swapped)[1]
    assert np.array_equal(read[:, :, :500], whole[:, :, 500:1000])
    assert np.array_equal(read[:, :, 500:1000], whole[:, :, :500])
    assert np.array_equal(read[:, :, 1000:], whole[:, :, 1000:])


def test_dir_of_the_package_lists_what_it_gives_on_first_use():
    """Codec, decode and tokens, which the package imports when first asked for, were missing from
    dir(vqcodec), so a shell's completion did not offer them."""
    import vqcodec

    assert {"Codec", "decode", "tokens", "read_info", "VQCodecError"} <= set(dir(vqcodec))
    assert set(vqcodec.__all__) <= set(dir(vqcodec))


# ---------------------------------------------------------------- a reader written from docs/FORMAT.md alone

def _doc_header(data: bytes) -> dict:
    """§1, field by field at the offsets of the table (not through vqcodec's struct)."""
    assert data[0:4] == b"VQCD" and data[4] == 1
    def u(offset: int, size: int) -> int:
        return int.from_bytes(data[offset:offset + size], "little")

    assert u(52, 4) == zlib.crc32(data[0:52])
    return dict(kind=u(5, 1), coding=u(6, 1), quality=u(7, 1), model_id=data[8:16], prior_id=u(16, 4),
                sample_rate=u(20, 4), length=u(24, 8), width=u(32, 4), height=u(36, 4), channels=u(40, 2),
                mode=u(42, 1), flags=u(43, 1), chunk_frames=u(44, 4), chunk_count=u(48, 4))


def _doc_chunks(data: bytes, header: dict) -> tuple[list[bytes], bytes | None]:
    """§2: u32 length, u32 CRC of the payload, payload; an alpha chunk after them with flag bit 0; nothing after."""
    payloads, offset = [], 56
    for _ in range(header["chunk_count"] + (header["flags"] & 1)):
        length = int.from_bytes(data[offset:offset + 4], "little")
        crc = int.from_bytes(data[offset + 4:offset + 8], "little")
        payload = data[offset + 8:offset + 8 + length]
        assert len(payload) == length and zlib.crc32(payload) == crc
        payloads.append(payload)
        offset += 8 + length
    assert offset == len(data)
    alpha = None
    if header["flags"] & 1:
        stream = zlib.decompressobj()
        alpha = stream.decompress(payloads.pop(), header["width"] * header["height"] + 1)
        assert len(alpha) == header["width"] * header["height"] and stream.eof and not stream.unused_data
    return payloads, alpha


def _doc_unpack_fixed(payload: bytes, count: int, k: int) -> np.ndarray:
    """§4: b = max(1, ceil(log2 K)) bits an index, most significant bit first, zero padding to a byte."""
    b = max(1, math.ceil(math.log2(k)))
    assert len(payload) == math.ceil(count * b / 8)
    value = int.from_bytes(payload, "big")
    padding = len(payload) * 8 - count * b
    assert value & ((1 << padding) - 1) == 0
    value >>= padding
    codes = [(value >> (b * (count - 1 - i))) & ((1 << b) - 1) for i in range(count)]
    assert all(c < k for c in codes)
    return np.array(codes, dtype=np.int64)


def _doc_prior(model_file) -> tuple[int, list[dict]]:
    """§5: prior.version, per level prior.i.table (or table_z, two byte planes, zlib) and prior.i.map.SOURCE."""
    from safetensors.numpy import load_file

    tensors = load_file(str(model_file))
    version, k, levels, _ = (int(v) for v in tensors["prior.version"])
    assert version == 1
    prior = []
    for i in range(levels):
        if f"prior.{i}.table" in tensors:
            table = tensors[f"prior.{i}.table"].view(np.uint16).astype(np.int64)
        else:
            planes = zlib.decompress(tensors[f"prior.{i}.table_z"].tobytes())
            half = len(planes) // 2
            table = (np.frombuffer(planes[:half], np.uint8).astype(np.int64)
                     | np.frombuffer(planes[half:], np.uint8).astype(np.int64) << 8).reshape(-1, k)
        assert (table.sum(axis=1) == 1 << 16).all()
        maps = {s: tensors[f"prior.{i}.map.{s}"].astype(np.int64) for s in ("up", "left", "above")
                if f"prior.{i}.map.{s}" in tensors}
        prior.append(dict(table=table, maps=maps))
    return k, prior


def _doc_categorical(row) -> "constriction.stream.model.Categorical":
    import constriction

    return constriction.stream.model.Categorical(256.0 * np.asarray(row, dtype=np.float64) - 1, perfect=False)


def _doc_depth_row(counts: list[int]) -> list[int]:
    """§5a, prior.DepthModel's row: q[i] = 1 + count[i] * (65536 - n) // S, the remainder to the first largest."""
    n, total = len(counts), sum(counts)
    row = [1 + c * (65536 - n) // total for c in counts]
    row[counts.index(max(counts))] += 65536 - sum(row)
    return row


def _doc_decode_plane(decoder, prior: list[dict], k: int, quality: int, rows: int, cols: int,
                      depth: bool) -> np.ndarray:
    """§5 and §5a: one plane (rows x cols cells) of a chunk, levels 0..Q-1, -1 for an absent code."""
    depths = np.full((rows, cols), quality, dtype=np.int64)
    if depth:  # the depth map first, raster order, an adaptive model per context
        counts: dict[int, list[int]] = {}
        for r in range(rows):
            for c in range(cols):
                left = depths[r, c - 1] if c > 0 else None
                above = depths[r - 1, c] if r > 0 else None
                context = (quality if left is None and above is None else left if above is None
                           else above if left is None else (left + above + 1) // 2)
                count = counts.setdefault(int(context), [1] * (quality + 1))
                value = int(decoder.decode(_doc_categorical(_doc_depth_row(count))))
                depths[r, c] = value
                count[value] += 16
                if sum(count) > 8192:
                    count[:] = [(x + 1) // 2 for x in count]
    codes = np.full((quality, rows, cols), -1, dtype=np.int64)
    for q in range(quality):
        level = prior[q]
        sources = [s for s in ("up", "left", "above") if s in level["maps"]]

        def context(r: int, c: int) -> int:
            number = 0
            for s in sources:
                if s == "up":
                    value = codes[q - 1, r, c]
                elif s == "left":
                    value = codes[q, r, c - 1] if c > 0 else -1
                else:
                    value = codes[q, r - 1, c] if r > 0 else -1
                table = level["maps"][s]
                number = number * (int(table.max()) + 1) + int(table[k if value < 0 else value])
            return number

        cells = [(r, c) for r in range(rows) for c in range(cols) if depths[r, c] > q]
        if not {"left", "above"} & set(sources):
            cells.sort(key=lambda cell: context(*cell))  # a stable sort: raster order within a context
        for r, c in cells:
            codes[q, r, c] = int(decoder.decode(_doc_categorical(level["table"][context(r, c)])))
    return codes


def doc_read(data: bytes, model_file) -> tuple[dict, np.ndarray, bytes | None]:
    """Header, codes ((channels, Q, T) for audio, (Q, rows, cols) for an image) and alpha plane of a
    .vq file, read with what docs/FORMAT.md says and the model's NAME.json and prior tensors."""
    import json

    import constriction

    header = _doc_header(data)
    payloads, alpha = _doc_chunks(data, header)
    config = json.loads(Path(model_file).with_suffix(".json").read_text())["config"]
    k, quality, frames = config["codebook_size"], header["quality"], header["chunk_frames"]
    audio = header["kind"] == 0
    if audio:
        hop = math.prod(config["strides"])
        total = -(-(-(-header["length"] * config["sample_rate"] // header["sample_rate"])) // hop)
        cols, planes = 1, header["channels"]
    else:
        hop = config["patch"] * 2 ** (len(config["channels"]) - 1)
        total, cols, planes = -(-header["height"] // hop), -(-header["width"] // hop), 1
    assert header["chunk_count"] == len(payloads) == -(-total // frames)
    parts = []
    for i, payload in enumerate(payloads):
        n = min(total, (i + 1) * frames) - i * frames
        stored = planes
        if audio and header["flags"] & 2:
            assert payload[0] in (0, 1)
            stored, payload = (1 if payload[0] == 1 else planes), payload[1:]
        rows, width = (1, n) if audio else (n, cols)
        if header["coding"] == 0:
            flat = _doc_unpack_fixed(payload, stored * quality * n * cols, k)
            part = flat.reshape(stored, quality, n) if audio else flat.reshape(quality, n, cols)
        else:
            _, prior = _doc_prior(model_file)
            assert len(payload) % 4 == 0
            decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
            decoded = [_doc_decode_plane(decoder, prior, k, quality, rows, width, header["coding"] == 2)
                       for _ in range(stored)]
            assert decoder.maybe_exhausted()
            part = np.stack([p[:, 0, :] for p in decoded]) if audio else decoded[0]
        if audio and stored == 1:
            part = np.repeat(part, planes, axis=0)
        parts.append(part)
    return header, np.concatenate(parts, axis=2 if audio else 1), alpha


GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
GOLDEN_FILES = [("audio", "fixed"), ("audio", "prior"), ("audio", "depth"), ("audio", "shared"),
                ("image", "fixed"), ("image", "prior"), ("image", "depth")]


def _same_as_vqcodec(data: bytes, model_file, codec) -> tuple[dict, bytes | None]:
    header, codes, alpha = doc_read(data, model_file)
    assert header == dataclasses.asdict(vqformat.parse_header(data))
    read_header, read = codec.read_codes(data)
    assert np.array_equal(codes, read)
    stored = vqformat.parse_file(data)[2]
    assert (alpha is None) == (stored is None) and (stored is None or zlib.decompress(stored) == alpha)
    return header, alpha


@pytest.mark.parametrize("kind, name", GOLDEN_FILES, ids=[f"{k}-{n}" for k, n in GOLDEN_FILES])
def test_a_reader_written_from_format_md_reads_the_golden_files_as_vqcodec_does(kind, name, golden_audio_codec,
                                                                                 golden_image_codec):
    """docs/FORMAT.md alone (§1-§5a: offsets, widths, CRCs, flags, fixed-width bits, the prior's contexts,
    cell orders and the depth model) is enough to read every coding's codes: doc_read above."""
    codec = golden_audio_codec if kind == "audio" else golden_image_codec
    header, _ = _same_as_vqcodec((GOLDEN / f"golden_{kind}_{name}.vq").read_bytes(),
                                 GOLDEN / f"golden_{kind}.safetensors", codec)
    assert header["coding"] == {"fixed": 0, "prior": 1, "depth": 2, "shared": 2}[name]
    assert bool(header["flags"] & vqformat.FLAG_SHARED_CHANNELS) == (name == "shared")


def test_a_reader_written_from_format_md_reads_an_alpha_plane(golden_image_codec):
    from PIL import Image

    rgba = np.random.default_rng(3).integers(0, 256, (12, 20, 4), dtype=np.uint8)
    data = golden_image_codec.encode_image(Image.fromarray(rgba, "RGBA"), 2)
    header, alpha = _same_as_vqcodec(data, GOLDEN / "golden_image.safetensors", golden_image_codec)
    assert header["flags"] == vqformat.FLAG_ALPHA and header["mode"] == 2  # RGBA
    assert alpha == rgba[..., 3].tobytes()


def test_a_reader_written_from_format_md_reads_a_shipped_model_s_file_with_a_level_gain():
    """speech16k stores its prior tables as table_z (§5), and quiet audio is coded with a level gain (§3a)."""
    import soundfile

    from vqcodec import Codec
    from vqcodec.registry import find_model

    speech = Codec.load("speech16k")
    audio, rate = soundfile.read(str(GOLDEN.parent / "speech.flac"), dtype="float32", frames=8000, always_2d=True)
    data = speech.encode_audio(audio.T * 0.05, rate, 3)
    header, _ = _same_as_vqcodec(data, find_model("speech16k"), speech)
    assert header["flags"] & vqformat.FLAG_LEVEL_GAIN and header["coding"] in vqformat.PRIOR_CODINGS
    assert header["width"] / vqformat.GAIN_ONE == vqformat.parse_header(data).gain != 1.0


def test_the_too_short_message_format_md_quotes_is_the_one_raised(golden_audio_codec):
    """docs/FORMAT.md §5 "Too short" quoted it as `payload too short for its N codes`, which no error says."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    quoted = re.search(r"\(`CodePrior\.min_bits`, `([^`]+)`\)", doc).group(1)
    pattern = re.escape(quoted).replace("N", r"\d+").replace("M", r"\d+")
    header = vqformat.parse_header((GOLDEN / "golden_audio_prior.vq").read_bytes())
    header.length, header.chunk_frames = header.sample_rate * 300, 1 << 20  # 600 000 frames in one chunk
    with pytest.raises(FormatError) as refused:
        golden_audio_codec.read_codes(vqformat.build_file(header, [b""]))
    assert re.search(pattern, str(refused.value)), str(refused.value)
