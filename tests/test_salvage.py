"""Damaged and cut-short files (`decode --salvage`, Codec.damaged_parts).

Without --salvage a damaged file is refused (tests/test_format.py and the fuzzing); with it, a file
whose header is intact decodes around the chunks that fail: those come out silent (audio) or grey
(images), the rest as the intact file decodes. Tiny models only.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vqcodec import VQCodecError
from vqcodec import format as vqformat

from conftest import traced_peak

CHUNK_HEAD = struct.Struct("<II")


def chunk_offsets(data: bytes) -> list[tuple[int, int]]:
    """(payload offset, payload length) of every chunk of an intact file."""
    header = vqformat.parse_header(data)
    offsets, offset = [], vqformat.HEADER_SIZE
    for _ in range(header.chunk_count + (1 if header.flags & vqformat.FLAG_ALPHA else 0)):
        length, _ = CHUNK_HEAD.unpack_from(data, offset)
        offsets.append((offset + CHUNK_HEAD.size, length))
        offset += CHUNK_HEAD.size + length
    return offsets


def flip_byte_in_chunk(data: bytes, index: int) -> bytes:
    offset, length = chunk_offsets(data)[index]
    damaged = bytearray(data)
    damaged[offset + length // 2] ^= 0x5A
    return bytes(damaged)


def with_framing_lost(data: bytes, index: int, trailing: int) -> bytes:
    """`data` with chunk `index` claiming no bytes, which ends its framing, and `trailing` zero bytes after it."""
    offset, _ = chunk_offsets(data)[index]
    damaged = bytearray(data + bytes(trailing))
    damaged[offset - CHUNK_HEAD.size:offset - CHUNK_HEAD.size + 4] = bytes(4)
    return bytes(damaged)


@pytest.fixture(scope="module")
def audio_file(codec, signal):
    """2 s of stereo at 44.1 kHz (8 chunks of 0.25 s with the tiny model), and its decoding."""
    data = codec.encode_audio(signal(2, 88200, 44100), 44100, 3)
    assert vqformat.parse_header(data).chunk_count == 8
    return data, codec.decode_audio(data)[0]


def test_a_damaged_chunk_is_refused_without_salvage(codec, audio_file):
    damaged = flip_byte_in_chunk(audio_file[0], 3)
    with pytest.raises(VQCodecError, match="chunk 3 CRC mismatch"):
        codec.decode_audio(damaged)


def test_a_damaged_chunk_comes_out_silent_and_the_rest_intact(codec, audio_file):
    data, whole = audio_file
    damaged = flip_byte_in_chunk(data, 3)
    assert codec.damaged_parts(damaged) == [{"chunk": 3, "count": 1, "from": 0.75, "to": 1.0}]
    assert codec.damaged_parts(data) == []
    out, rate = codec.decode_audio(damaged, salvage=True)
    assert rate == 44100 and out.shape == whole.shape
    second = 44100
    inside = slice(int(0.76 * second), int(0.99 * second))
    assert np.abs(out[:, inside]).max() < 1e-6
    # away from the damaged chunk's context (16 frames of 8 samples at 16 kHz, and the resampler)
    for part in (slice(0, int(0.7 * second)), slice(int(1.05 * second), whole.shape[1])):
        np.testing.assert_allclose(out[:, part], whole[:, part], atol=1e-5)


def test_a_lost_last_chunk_of_one_sample_is_a_span_of_a_millisecond(codec, signal):
    data = codec.encode_audio(signal(1, 16001, 16000), 16000, 3)  # 1 s in 0.25 s chunks, and one sample
    last = vqformat.parse_header(data).chunk_count - 1
    assert codec.damaged_parts(flip_byte_in_chunk(data, last)) == [{"chunk": last, "count": 1, "from": 1.0, "to": 1.001}]


def test_a_chunk_that_does_not_decode_is_damaged_too(codec, audio_file):
    """A chunk whose CRC holds but whose payload does not decode (a byte short here) is salvaged as one whose CRC fails."""
    data, whole = audio_file
    header, chunks, _ = vqformat.parse_file(data)
    chunks[3] = chunks[3][:-1]
    damaged = vqformat.build_file(header, chunks)
    with pytest.raises(VQCodecError, match="chunk holds"):
        codec.decode_audio(damaged)
    assert codec.damaged_parts(damaged) == [{"chunk": 3, "count": 1, "from": 0.75, "to": 1.0}]
    out, _ = codec.decode_audio(damaged, salvage=True)
    assert np.abs(out[:, int(0.76 * 44100):int(0.99 * 44100)]).max() < 1e-6
    np.testing.assert_allclose(out[:, :int(0.7 * 44100)], whole[:, :int(0.7 * 44100)], atol=1e-5)


def test_a_lost_chunk_that_starts_within_a_millisecond_is_a_span_from_that_millisecond(codec, signal, monkeypatch):
    from vqcodec import codec as codec_module

    monkeypatch.setattr(codec_module, "AUDIO_CHUNK_FRAMES", 3)  # 1.5 ms chunks at hop 8
    data = codec.encode_audio(signal(1, 400, 16000), 16000, 2)
    assert codec.damaged_parts(flip_byte_in_chunk(data, 1)) == [{"chunk": 1, "count": 1, "from": 0.001, "to": 0.003}]


def test_a_cut_short_file_decodes_what_it_holds(codec, audio_file):
    data, whole = audio_file
    offset, length = chunk_offsets(data)[5]
    cut = data[:offset + length // 2]
    with pytest.raises(VQCodecError, match="truncated"):
        codec.decode_audio(cut)
    assert [(d["chunk"], d["count"]) for d in codec.damaged_parts(cut)] == [(5, 3)]
    out, _ = codec.decode_audio(cut, salvage=True)
    assert out.shape == whole.shape
    np.testing.assert_allclose(out[:, :int(1.2 * 44100)], whole[:, :int(1.2 * 44100)], atol=1e-5)
    assert np.abs(out[:, int(1.26 * 44100):]).max() < 1e-3  # silence, but for the resampler's ringing


def test_salvage_needs_an_intact_header(codec, audio_file):
    damaged = bytearray(audio_file[0])
    damaged[20] ^= 1
    for call in (lambda: codec.damaged_parts(bytes(damaged)), lambda: codec.decode_audio(bytes(damaged), salvage=True)):
        with pytest.raises(VQCodecError, match="header"):
            call()


def test_a_part_of_a_salvaged_file(codec, audio_file):
    data, whole = audio_file
    damaged = flip_byte_in_chunk(data, 6)
    part, _ = codec.decode_audio(damaged, start=0.2, duration=0.3, salvage=True)  # far from chunk 6
    first = round(0.2 * 44100)
    np.testing.assert_allclose(part, whole[:, first:first + part.shape[1]], atol=1e-5)


@pytest.fixture(scope="module")
def image_file(golden_image_codec):
    """An RGBA image three chunks tall (16 latent rows of 4 pixels each), and its decoding."""
    rng = np.random.default_rng(5)
    rgba = np.concatenate([rng.integers(0, 256, (150, 40, 3)), np.full((150, 40, 1), 200)], axis=2)
    image = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    data = golden_image_codec.encode_image(image, 3)
    assert vqformat.parse_header(data).chunk_count == 3
    return data, np.asarray(golden_image_codec.decode_image(data))


def test_a_damaged_image_chunk_comes_out_grey(golden_image_codec, image_file):
    data, whole = image_file
    damaged = flip_byte_in_chunk(data, 1)
    assert golden_image_codec.damaged_parts(damaged) == [{"chunk": 1, "count": 1, "from": 64, "to": 128}]
    with pytest.raises(VQCodecError, match=r"^corrupted \.vq file \(chunk 1 CRC mismatch\)$"):
        golden_image_codec.decode_image(damaged)
    out = np.asarray(golden_image_codec.decode_image(damaged, salvage=True))
    assert out.shape == whole.shape
    assert (out[64:128, :, :3] == 128).all()
    np.testing.assert_array_equal(out[:, :, 3], whole[:, :, 3])
    context = 6 * golden_image_codec.hop
    np.testing.assert_array_equal(out[:64 - context], whole[:64 - context])
    np.testing.assert_array_equal(out[128 + context:], whole[128 + context:])


def test_a_part_of_an_image_is_refused_by_damaged_parts(golden_image_codec, image_file):
    """start= and duration= are seconds of audio: for an image they were ignored, and every damaged
    chunk listed as if no part had been asked for (the command line refuses --start for an image)."""
    damaged = flip_byte_in_chunk(image_file[0], 1)
    for part in ({"start": 1.0}, {"duration": 0.5}, {"start": 0.0, "duration": 10.0}):
        with pytest.raises(VQCodecError, match="^start= and duration= are for audio; this .vq file holds an image$"):
            golden_image_codec.damaged_parts(damaged, **part)
    assert golden_image_codec.damaged_parts(damaged, start=0.0) == [{"chunk": 1, "count": 1, "from": 64, "to": 128}]


def test_a_damaged_alpha_plane_comes_out_opaque(golden_image_codec, image_file):
    data, whole = image_file
    damaged = flip_byte_in_chunk(data, 3)  # the alpha section follows the 3 code chunks
    assert golden_image_codec.damaged_parts(damaged) == [{"chunk": 3, "alpha": True}]
    out = np.asarray(golden_image_codec.decode_image(damaged, salvage=True))
    assert (out[:, :, 3] == 255).all()
    np.testing.assert_array_equal(out[:, :, :3], whole[:, :, :3])


def test_salvage_warning_counts_and_names_the_alpha_plane(capsys, golden_image_codec, image_file):
    from vqcodec.cli import _warn_damage

    damaged = flip_byte_in_chunk(flip_byte_in_chunk(image_file[0], 1), 3)
    _warn_damage(golden_image_codec.damaged_parts(damaged), vqformat.parse_header(damaged))
    assert capsys.readouterr().err == ("vqcodec: warning: 2 of 4 chunks are damaged or missing, decoded as grey: "
                                       "64-128 px rows, the alpha plane (made opaque)\n")


def test_salvage_warning_gives_each_run_of_lost_chunks_as_one_span(capsys, codec, audio_file):
    """Each lost chunk was a span of its own: a 56-byte header of 24 hours in chunks of one frame made a
    warning line of 4 million spans (88 MB)."""
    from vqcodec.cli import _warn_damage

    damaged = flip_byte_in_chunk(flip_byte_in_chunk(flip_byte_in_chunk(audio_file[0], 1), 2), 5)
    _warn_damage(codec.damaged_parts(damaged), vqformat.parse_header(damaged))
    assert capsys.readouterr().err == ("vqcodec: warning: 3 of 8 chunks are damaged or missing, decoded as silence: "
                                       "0.250-0.750 s, 1.250-1.500 s\n")
    header = vqformat.parse_header(audio_file[0])
    header.chunk_frames = 1
    header.chunk_count = -(-header.length * codec.sample_rate // header.sample_rate // codec.hop)
    _warn_damage(codec.damaged_parts(header.pack()), header)
    assert capsys.readouterr().err == (f"vqcodec: warning: {header.chunk_count} of {header.chunk_count} chunks are "
                                       "damaged or missing, decoded as silence: 0.000-2.000 s\n")


def test_cli_salvage(cli, codec, audio_file, tiny_model_path, tmp_path):
    data, _ = audio_file
    source = tmp_path / "damaged.vq"
    source.write_bytes(flip_byte_in_chunk(data, 2))
    env = {"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    refused = cli("decode", source, tmp_path / "refused.wav", env=env, text=True)
    assert refused.returncode == 1 and "--salvage decodes what is intact" in refused.stderr
    assert not (tmp_path / "refused.wav").exists()
    out = tmp_path / "salvaged.wav"
    result = cli("decode", source, out, "--salvage", env=env, text=True)
    assert result.returncode == 0 and out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 of 8 chunks is damaged or missing, decoded as silence: 0.500-0.750 s" in lines[0]


class EndlessStream(io.RawIOBase):
    """`data`, then zeros without end, counting the bytes read."""

    def __init__(self, data: bytes):
        self.data, self.read_bytes = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = len(buffer)
        piece = self.data[self.read_bytes:self.read_bytes + size]
        buffer[:size] = piece + bytes(size - len(piece))
        self.read_bytes += size
        return size


def test_salvage_of_a_stream_that_does_not_end_reads_1_mib_past_its_chunks(cli, codec, audio_file, tiny_model_path,
                                                                             tmp_path):
    """A stream to salvage was read whole, up to the memory the process may use (`cat damaged.vq /dev/zero` filled
    gigabytes before it was refused), though salvage uses no byte after the chunks' framing ends: it is read up to 1 MiB
    past that, then no further, and salvaged as the same bytes are by path; damaged_parts and the warning say that
    the stream went on, unread."""
    from vqcodec.fileinfo import TRAILING_STREAM_BYTES
    from vqcodec.streams import SPOOL_BLOCK_BYTES

    data, whole = audio_file
    framed = with_framing_lost(data, 5, 0)
    lost_at = chunk_offsets(data)[5][0]  # after the head of chunk 5, which claims no bytes
    source = tmp_path / "damaged.vq"
    source.write_bytes(framed + bytes(3 << 20))
    for stream, path, read_at_most, framing_lost in ((EndlessStream(framed), source, lost_at, True),
                                                     (EndlessStream(data), None, len(data), False)):
        parts = codec.damaged_parts(io.BufferedReader(stream))
        assert stream.read_bytes <= read_at_most + TRAILING_STREAM_BYTES + SPOOL_BLOCK_BYTES, stream.read_bytes
        unread = {"unread_after": TRAILING_STREAM_BYTES, "framing_lost": framing_lost}
        assert parts == (codec.damaged_parts(path) if path else []) + [unread]
        out = codec.decode_audio(EndlessStream(stream.data), salvage=True)[0]
        np.testing.assert_array_equal(out, codec.decode_audio(path, salvage=True)[0] if path else whole)
    env = {"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    by_path = cli("decode", source, tmp_path / "by_path.wav", "--salvage", env=env, text=True)
    assert by_path.returncode == 0, by_path.stderr
    assert by_path.stderr == ("vqcodec: warning: 3 of 8 chunks are damaged or missing, decoded as silence: "
                              "1.250-2.000 s\n")
    piped = cli("decode", "-", "-", "--salvage", "--format", "wav", input=framed + bytes(2 << 20), env=env)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == (tmp_path / "by_path.wav").read_bytes()
    assert piped.stderr.decode() == (by_path.stderr[:-1] + "; the stream goes on for more than 1 MiB past where its "
                                     "chunks lose their framing, not read\n")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_fifo_path_to_salvage_is_read_as_a_stream_to_salvage_is(codec, audio_file, tmp_path):
    """The path of a FIFO (or /dev/stdin) given with salvage=True was read as one not to be salvaged: with its framing
    lost and more than 1 MiB after that, it was refused, 'corrupted .vq file (chunk 5 claims 0 bytes), and more than
    1 MiB follows it', where the same bytes from a stream were salvaged."""
    import threading

    data, _ = audio_file
    damaged = with_framing_lost(data, 5, 2 << 20)
    fifo = tmp_path / "damaged.vq"
    os.mkfifo(fifo)

    def feed():
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as writer:
            writer.write(damaged)  # the reader stops 1 MiB past the lost framing

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    out = codec.decode_audio(fifo, salvage=True)[0]
    feeder.join(timeout=30)
    np.testing.assert_array_equal(out, codec.decode_audio(damaged, salvage=True)[0])


def test_a_stream_refused_where_its_framing_is_lost_gives_the_salvage_hint(cli, audio_file, tiny_model_path):
    """Refused from a pipe past 1 MiB after its lost framing, such a file was not said to be salvageable (its path
    was, and salvage reads the pipe whole)."""
    data, _ = audio_file
    damaged = with_framing_lost(data, 5, 2 << 20)
    refused = cli("decode", "-", "-", "--format", "wav", input=damaged,
                  env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}, text=True)
    assert refused.returncode == 1 and not refused.stdout
    assert refused.stderr == ("vqcodec: error: corrupted .vq file (chunk 5 claims 0 bytes), and more than 1 MiB follows "
                              "it; not read further (is it one .vq file?); --salvage decodes what is intact\n")


def test_a_chunk_head_claiming_no_bytes_loses_the_framing(codec, audio_file):
    """Salvage walked on past a chunk head claiming 0 bytes, 8 bytes a chunk: a stretch of zeros in place of chunk 2
    was taken for chunks 2 and 3 of no bytes, and the real chunks 3 to 6 after it for chunks 4 to 7, decoded where
    they do not belong. No chunk holds 0 bytes: the framing is lost there, as past a stream's reading."""
    data, whole = audio_file
    (start, _), (third, _) = chunk_offsets(data)[2:4]
    damaged = data[:start - CHUNK_HEAD.size] + bytes(2 * CHUNK_HEAD.size) + data[third - CHUNK_HEAD.size:]
    assert codec.damaged_parts(damaged) == [{"chunk": 2, "count": 6, "from": 0.5, "to": 2.0}]
    out = codec.decode_audio(damaged, salvage=True)[0]
    assert not out[:, int(0.6 * 44100):].any()
    np.testing.assert_allclose(out[:, :int(0.4 * 44100)], whole[:, :int(0.4 * 44100)], atol=1e-5)


def test_a_folder_decode_gives_the_salvage_hint_for_a_damaged_file_only(cli, codec, audio_file, tiny_model_path,
                                                                         tmp_path):
    """A folder's skip line for a damaged file lacked the '--salvage decodes what is intact' of a single
    file's error; a file that salvage cannot help (its header gone) gets no hint."""
    from vqcodec.folders import decode_folder

    data, _ = audio_file
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "damaged.vq").write_bytes(flip_byte_in_chunk(data, 2))
    (folder / "junk.vq").write_bytes(b"VQC" + bytes(60))
    (folder / "whole.vq").write_bytes(data)
    result = cli("decode", folder, tmp_path / "out", "-m", tiny_model_path, text=True)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"skipping {folder / 'damaged.vq'}: corrupted .vq file (chunk 2 CRC mismatch); --salvage decodes what is intact" in lines, "\n".join(lines)
    junk = [line for line in lines if "junk.vq" in line]
    assert len(junk) == 1 and "--salvage" not in junk[0], lines
    assert (tmp_path / "out" / "whole.wav").exists() and not (tmp_path / "out" / "damaged.wav").exists()
    def write(path, write_stream):
        with path.open("wb") as stream:
            write_stream(stream)

    report = decode_folder([folder / "damaged.vq"], [tmp_path / "api.wav"], {"audio": "WAV", "image": "PNG"},
                           lambda data: codec, write)
    assert [reason for _, reason in report.skipped] == ["corrupted .vq file (chunk 2 CRC mismatch); salvage=True decodes what is intact"]


def test_decode_audio_file_of_a_damaged_file_gives_the_salvage_hint_as_decode_does(codec, audio_file, tmp_path):
    """decode_audio_file of a file damaged in its chunks said 'corrupted .vq file (chunk 2 CRC mismatch)' alone,
    where `vqcodec decode` adds that --salvage decodes what is intact; one salvage cannot help gets no hint."""
    damaged = tmp_path / "damaged.vq"
    damaged.write_bytes(flip_byte_in_chunk(audio_file[0], 2))
    hint = "corrupted .vq file (chunk 2 CRC mismatch); salvage=True decodes what is intact"
    for data, said in ((damaged.read_bytes(), hint), (damaged, f"{damaged}: {hint}"),
                       (b"VQC" + bytes(60), None)):
        with pytest.raises(VQCodecError) as refused:
            codec.decode_audio_file(data, tmp_path / "out.wav")
        assert str(refused.value) == said if said else "salvage" not in str(refused.value), refused.value
    codec.decode_audio_file(damaged, tmp_path / "out.wav", salvage=True)
    assert sorted(os.listdir(tmp_path)) == ["damaged.vq", "out.wav"]


def test_cli_salvage_of_a_part_names_the_lost_chunks_it_meets(cli, codec, audio_file, tiny_model_path, tmp_path):
    """The warning named every lost span of the file, as decoded as silence, whatever part was decoded:
    --start 0 --duration 0.4 said 0.500-0.750 s came out silent."""
    source = tmp_path / "damaged.vq"
    source.write_bytes(flip_byte_in_chunk(flip_byte_in_chunk(audio_file[0], 2), 6))  # 0.5-0.75 s, 1.5-1.75 s
    for part, warning in ((["--duration", "0.4"], ""),
                          (["--start", "0.6", "--duration", "0.5"], "1 of 8 chunks is damaged or missing, decoded as "
                                                                    "silence: 0.500-0.750 s"),
                          (["--start", "1.6"], "1 of 8 chunks is damaged or missing, decoded as silence: 1.500-1.750 s"),
                          (["--start", "0.75", "--duration", "0.75"], "")):
        result = cli("decode", source, tmp_path / "part.wav", "--salvage", "--force", "-m", tiny_model_path, *part,
                     text=True)
        assert result.returncode == 0 and result.stderr == (f"vqcodec: warning: {warning}\n" if warning else ""), \
            (part, result.stderr)


def test_bytes_after_the_last_chunk_are_named_and_salvage_says_it_ignores_them(cli, codec, audio_file,
                                                                              tiny_model_path, tmp_path):
    """Plain decode refused such a file without the --salvage hint, and --salvage decoded it silently."""
    data, whole = audio_file
    source = tmp_path / "junk.vq"
    source.write_bytes(data + b"junkjunk")
    assert codec.damaged_parts(source.read_bytes()) == [{"trailing_bytes": 8}]
    env = {"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    refused = cli("decode", source, tmp_path / "refused.wav", env=env, text=True)
    assert refused.returncode == 1 and refused.stderr == \
        f"vqcodec: error: {source}: 8 unexpected bytes after the last chunk; --salvage decodes what is intact\n"
    result = cli("decode", source, tmp_path / "out.wav", "--salvage", env=env, text=True)
    assert result.returncode == 0
    assert result.stderr == "vqcodec: warning: 8 unexpected bytes after the last chunk, ignored\n"
    np.testing.assert_array_equal(codec.decode_audio(source.read_bytes(), salvage=True)[0], whole)


def test_bytes_after_the_last_chunk_are_named_where_a_chunk_fails_its_crc_too(codec, audio_file):
    """The bytes after the last chunk were counted only where every chunk passed its CRC: a file with
    a damaged chunk and bytes after its last one was said to have lost the chunk alone, though salvage
    ignored those bytes too. Only a chunk whose framing is lost hides where the last chunk ends."""
    damaged = flip_byte_in_chunk(audio_file[0], 2) + b"junk"
    assert codec.damaged_parts(damaged) == [{"chunk": 2, "count": 1, "from": 0.5, "to": 0.75}, {"trailing_bytes": 4}]
    offset, length = chunk_offsets(audio_file[0])[7]
    cut = audio_file[0][:offset + length - 1]  # the last chunk runs past the end: no end to count from
    assert codec.damaged_parts(cut) == [{"chunk": 7, "count": 1, "from": 1.75, "to": 2.0}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), min_size=1, max_size=6),
       st.integers(0, 10 ** 6))
def test_any_damage_after_an_intact_header_salvages(codec, two_chunk_vq, flips, cut):
    """Random bytes flipped and a random cut after the header: salvaging always gives the whole
    length, and damaged_parts names the chunks it could not use."""
    data = bytearray(two_chunk_vq)
    body = len(data) - vqformat.HEADER_SIZE
    for where, mask in flips:
        data[vqformat.HEADER_SIZE + where % body] ^= mask
    data = bytes(data[:vqformat.HEADER_SIZE + cut % (body + 1)])
    header = vqformat.parse_header(data)
    parts = codec.damaged_parts(data)
    assert {p["chunk"] for p in parts if "chunk" in p} <= set(range(header.chunk_count))
    out, _ = codec.decode_audio(data, salvage=True)
    assert out.shape == (header.channels, header.length) and np.isfinite(out).all()


def test_info_on_a_damaged_file_says_what_the_header_holds(cli, audio_file, tiny_model_path, tmp_path):
    source = tmp_path / "damaged.vq"
    source.write_bytes(flip_byte_in_chunk(audio_file[0], 4))
    result = cli("info", source, "--json", env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"vqcodec: error: {source}: corrupted .vq file (chunk 4 CRC mismatch); "
                                     "`vqcodec decode --salvage` decodes what is intact")
    record = json.loads(result.stdout)
    assert record["samples"] == 88200 and record["sample_rate"] == 44100 and record["channels"] == 2


def test_info_verbose_on_a_chunk_that_does_not_decode_says_what_the_header_holds(cli, codec, audio_file,
                                                                                tiny_model_path, tmp_path):
    """A chunk whose CRC holds but whose codes do not decode made `info --verbose` print nothing but the
    error, and that without the --salvage hint that other damage gets."""
    header, chunks, _ = vqformat.parse_file(audio_file[0])
    source = tmp_path / "short.vq"
    source.write_bytes(vqformat.build_file(header, chunks[:3] + [chunks[3][:-1]] + chunks[4:]))
    for options in ([], ["--json"]):
        result = cli("info", source, "-v", "-m", tiny_model_path, *options, text=True)
        assert result.returncode == 1 and result.stderr == (
            f"vqcodec: error: {source}: chunk holds {len(chunks[3]) - 1} bytes where {len(chunks[3])} were expected; "
            "`vqcodec decode --salvage` decodes what is intact\n")
        assert "88200" in result.stdout
        if options:  # the key --verbose adds, null where no table can be made
            assert json.loads(result.stdout)["payload"] is None
        else:
            assert "payload" not in result.stdout


def test_a_header_alone_costs_no_memory_for_its_lost_chunks(golden_audio_codec):
    """A 56-byte file whose header declares an hour of 8 channels in chunks of 2**20 frames has
    every chunk lost: listing them, or salvaging a few milliseconds, used to fill an array of
    every lost chunk's codes (64 MB a chunk here, gigabytes with a real model and 64 channels)."""

    from conftest import GOLDEN

    header = vqformat.parse_header((GOLDEN / "golden_audio_prior.vq").read_bytes())
    header.length, header.channels, header.chunk_frames = 16000 * 3600, 8, 1 << 20
    frames = -(-header.length // golden_audio_codec.hop)
    header.chunk_count = -(-frames // header.chunk_frames)
    data = header.pack()
    result, peak = traced_peak(lambda: golden_audio_codec.damaged_parts(data))
    assert [(part["chunk"], part["count"]) for part in result] == [(0, header.chunk_count)]
    assert peak < 1 << 20


def test_lost_chunks_are_listed_as_runs(codec, audio_file):
    """Each lost chunk was an entry of its own: a header alone of 24 hours in chunks of one frame
    listed 4 million of them (about 35 MB); now a run of consecutive lost chunks is one entry."""
    damaged = flip_byte_in_chunk(flip_byte_in_chunk(flip_byte_in_chunk(audio_file[0], 1), 2), 5)
    assert codec.damaged_parts(damaged) == [{"chunk": 1, "count": 2, "from": 0.25, "to": 0.75},
                                            {"chunk": 5, "count": 1, "from": 1.25, "to": 1.5}]
    header = vqformat.parse_header(audio_file[0])
    header.chunk_frames = 1
    header.chunk_count = -(-header.length * codec.sample_rate // header.sample_rate // codec.hop)
    assert codec.damaged_parts(header.pack()) == [{"chunk": 0, "count": header.chunk_count, "from": 0.0, "to": 2.0}]


@pytest.mark.parametrize("start, duration, chunks, runs", [
    (0.6, 0.1, {0, 1, 2, 3, 4, 5}, [{"chunk": 1, "count": 4, "from": 0.25, "to": 1.25}]),  # a run met, whole
    (1.7, 0.1, {5, 6, 7}, [{"chunk": 6, "count": 1, "from": 1.5, "to": 1.75}]),
    (1.5, None, {5, 6, 7}, [{"chunk": 6, "count": 1, "from": 1.5, "to": 1.75}]),  # from 1 ms before it on
    (1.3, 0.1, {5}, []),
    (0.0, None, set(range(8)), None)])
def test_the_damage_of_a_part_decodes_only_the_chunks_near_it(codec, audio_file, monkeypatch, start, duration,
                                                             chunks, runs):
    """`decode --salvage --start --duration` listed the damage of the whole file before decoding the
    part, decoding every chunk of it: of a day's file, thousands of chunks for a second of audio.
    damaged_parts(data, start, duration) decodes the chunks within a millisecond of the part, and
    those on to each end of a lost run they meet; what the part meets is what it was."""
    damaged = audio_file[0]
    for index in (1, 2, 3, 4, 6):
        damaged = flip_byte_in_chunk(damaged, index)
    whole = codec.damaged_parts(damaged)
    decoded = []
    original = codec._chunk_codes
    monkeypatch.setattr(codec, "_chunk_codes", lambda header, found, index, *rest: decoded.append(index) or
                        original(header, found, index, *rest))
    parts = codec.damaged_parts(damaged, start, duration)
    assert sorted(decoded) == sorted(chunks)  # each once
    end = np.inf if duration is None else start + duration
    assert [p for p in parts if p["from"] < end and p["to"] > start] == \
        [p for p in whole if p["from"] < end and p["to"] > start] == (whole if runs is None else runs)


def test_salvaging_many_lost_chunks_takes_time_in_proportion_to_them(bighop_codec):
    """Each decoded block went through the whole list of lost chunks to silence its part of them, so a
    header alone with chunks of one frame took time in the square of its length: 5 minutes, 30 s (and
    24 hours, days) where the same length lost as one chunk took 0.6 s. (Lost audio no longer goes
    through the decoder, so that one chunk is no yardstick: twice the length takes about twice the time.)"""
    import time

    def header_alone(seconds: int) -> bytes:
        header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=1,
                                 model_id=bighop_codec.model_id, sample_rate=8000, length=8000 * seconds, channels=1,
                                 chunk_frames=1)
        header.chunk_count = -(-header.length // bighop_codec.hop)
        return header.pack()

    def fastest_of_two(seconds: int) -> float:
        taken = []
        for _ in range(2):
            began = time.perf_counter()
            audio, _ = bighop_codec.decode_audio(header_alone(seconds), salvage=True)
            taken.append(time.perf_counter() - began)
            assert audio.shape == (1, 8000 * seconds) and not audio.any()
        return min(taken)

    # 8 times the length: about 8 times the time in proportion, 64 times in its square; the wide margin
    # between them keeps a busy machine's noise from deciding
    short, long = fastest_of_two(50), fastest_of_two(400)
    assert long < 24 * short, (short, long)


@pytest.mark.parametrize("kind, parts, spans", [
    (vqformat.KIND_AUDIO, [{"chunk": 361, "count": 1, "from": 3617.554, "to": 3627.554}], "3617.554-3627.554 s"),
    (vqformat.KIND_IMAGE, [{"chunk": 3906, "count": 1, "from": 999936, "to": 1000192}], "999936-1000192 px rows")])
def test_salvage_warning_gives_spans_to_the_millisecond_and_the_row(capsys, kind, parts, spans):
    """Spans were printed with 6 significant digits: 3617.55 s for 3617.554, 1e+06 for row 1000000."""
    from vqcodec.cli import _warn_damage

    header = vqformat.Header(kind=kind, coding=0, quality=1, model_id=bytes(8), chunk_frames=1, chunk_count=4000)
    _warn_damage(parts, header)
    assert capsys.readouterr().err.endswith(f" chunks is damaged or missing, decoded as "
                                            f"{'silence' if kind == vqformat.KIND_AUDIO else 'grey'}: {spans}\n")


def test_info_on_a_damaged_file_does_not_say_how_many_chunks_it_shares(cli, tmp_path):
    """With its chunks unread, info --json said "shared_chunks": 0 for a file that stores channels once."""

    from conftest import GOLDEN

    source = tmp_path / "damaged.vq"
    source.write_bytes(flip_byte_in_chunk((GOLDEN / "golden_audio_shared.vq").read_bytes(), 0))
    record = json.loads(cli("info", source, "--json", text=True).stdout)
    assert record["shared_chunks"] is None and record["channels"] == 2
    shown = cli("info", source, text=True)
    assert shown.returncode == 1
    assert "2 channels (stored once or per channel: unknown, chunks unread), 16000 Hz" in shown.stdout
    intact = json.loads(cli("info", GOLDEN / "golden_audio_depth.vq", "--json", text=True).stdout)
    damaged = tmp_path / "damaged_unshared.vq"
    damaged.write_bytes(flip_byte_in_chunk((GOLDEN / "golden_audio_depth.vq").read_bytes(), 0))
    assert intact["shared_chunks"] == json.loads(cli("info", damaged, "--json", text=True).stdout)["shared_chunks"] == 0


def test_salvaging_more_audio_than_memory_holds_is_refused_in_one_line(bighop_codec):
    """A 56-byte header of 24 hours at 768 kHz with every chunk lost: decode_audio's output array
    (265 GB of float32) cannot be allocated, which raised numpy's MemoryError instead of a one-line error."""
    import resource

    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=1,
                             model_id=bighop_codec.model_id, sample_rate=768_000, length=768_000 * 86_400,
                             channels=1, chunk_frames=1 << 20)
    frames = -(-header.length * bighop_codec.sample_rate // header.sample_rate // bighop_codec.hop)
    header.chunk_count = -(-frames // header.chunk_frames)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:  # what the process maps now, so that the limit leaves 2 GiB
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (2 << 30), hard))
    try:
        with pytest.raises(VQCodecError, match="do not fit in memory"):
            bighop_codec.decode_audio(header.pack(), salvage=True)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_chunks_lost_with_the_framing_are_not_listed_one_by_one(codec):
    """salvage_chunks gave a None for each chunk after the framing was lost, and damaged_parts went
    through them one by one: a 56-byte header of 24 hours in chunks of one frame took 1.6 GB and
    minutes with the tiny model (hop 8) before any audio, for a part of a second as for all of it."""
    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=1,
                             model_id=codec.model_id, sample_rate=codec.sample_rate, length=codec.sample_rate * 600,
                             channels=1, chunk_frames=1)
    header.chunk_count = header.length // codec.hop
    data = header.pack()
    parts, peak = traced_peak(lambda: codec.damaged_parts(data))
    assert parts == [{"chunk": 0, "count": header.chunk_count, "from": 0.0, "to": 600.0}] and peak < 1 << 20, peak
    part, peak = traced_peak(lambda: codec.decode_audio(data, start=300.0, duration=0.5, salvage=True)[0])
    assert part.shape == (1, codec.sample_rate // 2) and not part.any() and peak < 4 << 20, peak


def test_lost_audio_comes_out_silent_without_running_the_decoder(codec, audio_file, monkeypatch):
    """The frames of lost chunks went through the decoder to be silenced after it: a 56-byte header of
    an hour of speech16k took 245 s to salvage, all of it silence (and 24 hours took hours)."""
    header = vqformat.parse_header(audio_file[0])
    decoded = []
    decode_frames = codec._decode_frames
    monkeypatch.setattr(codec, "_decode_frames", lambda *args: decoded.append(args) or decode_frames(*args))
    audio, _ = codec.decode_audio(header.pack(), salvage=True)
    assert audio.shape == (2, 88200) and not audio.any() and decoded == []
    cut = audio_file[0][:chunk_offsets(audio_file[0])[1][0]]  # the first chunk, then nothing
    audio, _ = codec.decode_audio(cut, salvage=True)
    assert len(decoded) == 1 and not audio[:, 22050:].any()  # lost from 0.25 s, and the resampler's tail
    np.testing.assert_allclose(audio[:, :10000], audio_file[1][:, :10000], atol=1e-6)


def test_lost_image_rows_come_out_grey_without_running_the_decoder(golden_image_codec, image_file):
    """As for audio: the tiles of lost rows went through the decoder to be painted grey after it, and a
    56-byte header of 81 megapixels (the `image` model: 10 s for 4) took minutes to salvage."""
    header = vqformat.parse_header(image_file[0])
    calls = []
    hook = golden_image_codec.model.decoder.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        out = np.asarray(golden_image_codec.decode_image(header.pack(), salvage=True))
        assert calls == [] and (out[:, :, :3] == 128).all() and (out[:, :, 3] == 255).all()
        cut = image_file[0][:chunk_offsets(image_file[0])[1][0]]  # the first chunk, then nothing
        out = np.asarray(golden_image_codec.decode_image(cut, salvage=True))
        assert calls and (out[64:, :, :3] == 128).all()
        np.testing.assert_array_equal(out[:64 - 6 * golden_image_codec.hop, :, :3],
                                      image_file[1][:64 - 6 * golden_image_codec.hop, :, :3])
    finally:
        hook.remove()


@pytest.mark.parametrize("value", ["no", 2, [], None, np.array([True])])
def test_salvage_must_be_true_or_false(codec, golden_image_codec, audio_file, tmp_path, value):
    """Any value Python takes as true ("no", 2) salvaged, and one it takes as false refused a damaged file."""
    damaged = flip_byte_in_chunk(audio_file[0], 3)
    message = r"^salvage must be True or False, not "
    for call in (lambda: codec.decode_audio(damaged, salvage=value),
                 lambda: codec.decode_audio_blocks(damaged, salvage=value),
                 lambda: codec.decode_audio_file(damaged, tmp_path / "out.wav", salvage=value),
                 lambda: golden_image_codec.decode_image(b"", salvage=value)):
        with pytest.raises(VQCodecError, match=message):
            call()
    assert not (tmp_path / "out.wav").exists()
    assert codec.decode_audio(damaged, salvage=np.bool_(True))[0].shape == audio_file[1].shape


@pytest.mark.parametrize("value", ["no", 0, None, []])
def test_read_info_check_chunks_must_be_true_or_false(value):
    """check_chunks="no" (true to Python) read the chunks of a damaged file and failed there, and 0 or None
    skipped them: any value was taken as yes or no."""
    from vqcodec import read_info

    from conftest import GOLDEN

    with pytest.raises(VQCodecError, match=r"^check_chunks must be True or False, not "):
        read_info((GOLDEN / "golden_audio_shared.vq").read_bytes(), check_chunks=value)
    assert read_info((GOLDEN / "golden_audio_shared.vq").read_bytes(), check_chunks=np.False_).shared_chunks is None
