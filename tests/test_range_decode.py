"""Decoding part of an audio file (`decode --start --duration`, Codec.decode_audio(start=, duration=)).

The part must be the same samples as the whole file's decoding, at every file rate, while only the
chunks that cover it are entropy-decoded. Tiny untrained model (hop 8: a chunk of 500 frames is
4000 samples at 16 kHz).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

from vqcodec import VQCodecError
from vqcodec import codec as codec_module


@pytest.fixture(scope="module")
def long_files(codec, signal):
    """rate -> (.vq bytes of 2 s of stereo at that rate, its whole decoding): 8 chunks each."""
    files = {}
    for rate in (16000, 44100, 8000):
        data = codec.encode_audio(signal(2, 2 * rate, rate), rate, 3)
        files[rate] = data, codec.decode_audio(data)[0]
    return files


@pytest.mark.parametrize("rate", [16000, 44100, 8000])
@pytest.mark.parametrize("start, duration", [(0.0, 0.1), (0.7371, 0.25), (0.75, 0.248), (1.2, 5.0), (1.99, 0.001),
                                             (0.5, None)])
def test_a_part_is_the_same_samples_as_the_whole(codec, long_files, monkeypatch, rate, start, duration):
    data, whole = long_files[rate]
    monkeypatch.setattr(codec, "block_frames", 37)  # the part's blocks fall elsewhere than the whole's
    part, part_rate = codec.decode_audio(data, start=start, duration=duration)
    first = round(start * rate)
    count = whole.shape[1] - first if duration is None else min(round(duration * rate), whole.shape[1] - first)
    assert part_rate == rate and part.shape == (2, count)
    np.testing.assert_allclose(part, whole[:, first:first + count], atol=1e-5)


def test_all_of_it_is_the_whole_decoding_exactly(codec, long_files):
    data, whole = long_files[44100]
    assert np.array_equal(codec.decode_audio(data, start=0.0, duration=10.0)[0], whole)


def test_only_the_chunks_that_cover_the_part_are_decoded_each_once(codec, long_files, monkeypatch):
    """Each chunk was decoded twice: once to refuse a damaged one before any audio, and again for its
    audio. The codes of the first check are now kept for the audio (up to CODE_BLOCK_CODES of them)."""
    data, whole = long_files[16000]
    decoded = []
    original = codec._decode_payload
    monkeypatch.setattr(codec, "_decode_payload", lambda header, payload, shape: decoded.append(payload) or
                        original(header, payload, shape))
    assert np.array_equal(codec.decode_audio(data)[0], whole)
    assert len(set(decoded)) == 8 and len(decoded) == 8
    decoded.clear()
    codec.decode_audio(data, start=0.9, duration=0.05)  # inside the fourth chunk, away from its edges
    assert len(decoded) == 1
    decoded.clear()
    codec.decode_audio(data, start=0.999, duration=0.002)  # across a chunk boundary (4000 samples = 0.25 s)
    assert len(set(decoded)) == 2 and len(decoded) == 2
    decoded.clear()
    # beyond CODE_BLOCK_CODES codes, the chunks are checked and dropped, and decoded again for their audio
    monkeypatch.setattr(codec_module, "CODE_BLOCK_CODES", 2 * (3 * 1000 + 256))  # the first 2 chunks
    assert np.array_equal(codec.decode_audio(data)[0], whole)
    assert len(set(decoded)) == 8 and len(decoded) == 14
    decoded.clear()
    monkeypatch.setattr(codec_module, "CODE_BLOCK_CODES", 1)  # the first chunk is kept whatever its size
    part = codec.decode_audio(data, start=0.9, duration=0.05)[0]
    np.testing.assert_allclose(part, whole[:, 14400:15200], atol=1e-5)
    assert len(decoded) == 1


def test_the_chunks_kept_from_the_check_count_their_arrays_too(codec, monkeypatch):
    """The chunks decoded to be checked were kept for their audio up to CODE_BLOCK_CODES codes: in
    chunks of one frame, a million of them, whose arrays took 300 bytes each besides their 4 codes
    (1.3 GB at q1). Each chunk now counts HELD_CHUNK_CODES codes more."""
    import tracemalloc

    from vqcodec import entropy
    from vqcodec import format as vqformat

    frames = 6000
    monkeypatch.setattr(codec_module, "CODE_BLOCK_CODES", frames * 4)  # every chunk's codes, but not their arrays
    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=4, model_id=codec.model_id,
                             sample_rate=codec.sample_rate, length=frames * codec.hop, channels=1, chunk_frames=1)
    data = vqformat.build_file(header, [entropy.pack_fixed(np.zeros(4, np.int64), codec.codebook_size)] * frames)
    tracemalloc.start()
    try:
        _, blocks = codec.decode_audio_blocks(data)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 300_000, f"{held / 1e6:.2f} MB held"  # 6000 chunks' arrays: 2 MB
    assert next(blocks).shape == (1, codec.block_frames * codec.hop)


@pytest.mark.parametrize("start, duration, message", [
    (2.0, None, "not before the end"), (5.0, 1.0, "not before the end"), (-0.1, None, "non-negative"),
    (math.nan, None, "non-negative"), (0.0, 0.0, "positive"), (0.1, math.nan, "positive"), (0.1, -1.0, "positive"),
    (1e308, None, "not before the end"), (math.inf, 1.0, "non-negative"),
])
def test_a_range_outside_the_file_is_refused(codec, long_files, start, duration, message):
    data, _ = long_files[16000]
    with pytest.raises(VQCodecError, match=message):
        codec.decode_audio(data, start=start, duration=duration)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_a_start_in_the_last_half_sample_decodes_the_last_sample(codec, long_files, rate):
    """A start before the end that rounds to it was refused as 'not before the end'."""
    data, whole = long_files[rate]
    part, _ = codec.decode_audio(data, start=(whole.shape[1] - 0.3) / rate)
    np.testing.assert_allclose(part, whole[:, -1:], atol=1e-5)
    with pytest.raises(VQCodecError, match=r"^start=2.0 is not before the end of the audio \(2 s\)$"):
        codec.decode_audio(data, start=whole.shape[1] / rate)


def test_decode_audio_blocks_refuses_a_range_not_in_whole_samples(codec, long_files):
    data, whole = long_files[16000]
    for start, count in ((1.5, 10), (100, 10.0), ("1", 2), (None, 2)):
        with pytest.raises(VQCodecError, match="must be a whole number of samples"):
            codec.decode_audio_blocks(data, start, count)
    _, blocks = codec.decode_audio_blocks(data, np.int64(100), np.int32(10))
    np.testing.assert_allclose(np.concatenate(list(blocks), axis=1), whole[:, 100:110], atol=1e-5)


def test_decode_audio_blocks_refuses_a_range_past_the_end(codec, long_files):
    data, whole = long_files[16000]
    for start, count in ((100, whole.shape[1] - 99), (whole.shape[1], 1), (-1, 5)):
        with pytest.raises(VQCodecError, match=f"^samples {start}..{start + count} are not within the file's 32000 "):
            codec.decode_audio_blocks(data, start, count)
    for count in (0, -3):  # 'samples 0..0 are not within the file's 32000', as if the file were too short
        with pytest.raises(VQCodecError, match=f"^the count must be at least 1 sample, not {count}$"):
            codec.decode_audio_blocks(data, 0, count)


@pytest.mark.parametrize("duration", [math.inf, 1e308, 1.5])
def test_a_duration_past_the_end_stops_at_the_end(codec, long_files, duration):
    data, whole = long_files[16000]
    part, _ = codec.decode_audio(data, start=0.5, duration=duration)
    assert part.shape == (2, whole.shape[1] - 8000)


def test_a_duration_under_half_a_sample_is_one_sample(codec, long_files):
    data, whole = long_files[16000]
    part, _ = codec.decode_audio(data, start=0.5, duration=1e-6)
    np.testing.assert_allclose(part, whole[:, 8000:8001], atol=1e-5)


def test_cli_start_and_duration(cli, codec, long_files, tiny_model_path, tmp_path):
    data, whole = long_files[44100]
    source = tmp_path / "long.vq"
    source.write_bytes(data)
    env = {"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    out = tmp_path / "part.wav"
    result = cli("decode", source, out, "--start", "0.5", "--duration", "0.25", env=env)
    assert result.returncode == 0, result.stderr
    part, rate = soundfile.read(str(out), dtype="float32", always_2d=True)
    assert rate == 44100 and part.shape == (round(0.25 * 44100), 2)
    first = round(0.5 * 44100)
    np.testing.assert_allclose(part.T, np.clip(whole[:, first:first + part.shape[0]], -1, 1), atol=1e-4)  # 16-bit WAV

    late = cli("decode", source, tmp_path / "late.wav", "--start", "3", env=env, text=True)
    assert late.returncode == 1 and "not before the end" in late.stderr
    assert len(late.stderr.strip().splitlines()) == 1 and not (tmp_path / "late.wav").exists()
    for start in ("1e308", "2.0000001"):  # the message gives the start as typed, not rounded to 6 digits
        late = cli("decode", source, tmp_path / "late.wav", "--start", start, env=env, text=True)
        assert late.returncode == 1 and f"--start {float(start)} s is not before the end" in late.stderr, late.stderr
        assert len(late.stderr.strip().splitlines()) == 1 and not (tmp_path / "late.wav").exists()
    result = cli("decode", source, out, "--start", "1.5", "--duration", "inf", "--force", env=env)
    assert result.returncode == 0, result.stderr
    assert soundfile.info(str(out)).frames == 2 * 44100 - round(1.5 * 44100)


# ---------------------------------------------------------------- decoding at another rate (--rate)

@pytest.mark.parametrize("file_rate, rate", [(44100, 16000), (44100, 22050), (8000, 48000), (16000, 11025)])
def test_decoding_at_another_rate(codec, long_files, file_rate, rate):
    """The whole file at `rate`: its length scaled (rounded up), the model-rate decoding resampled
    once; a part at that rate is the same samples as the whole decoding at it."""
    import soxr

    data, whole_native = long_files[file_rate]
    whole, got_rate = codec.decode_audio(data, rate=rate)
    length = -(-whole_native.shape[1] * rate // file_rate)
    assert got_rate == rate and whole.shape == (2, length)
    _, codes = codec.read_codes(data)
    model_rate = codec.codes_to_audio(codes)[:, :-(-whole_native.shape[1] * 16000 // file_rate)]
    expected = model_rate if rate == 16000 else soxr.resample(model_rate.T, 16000, rate).T
    n = min(length, expected.shape[1]) - 64   # soxr's one-shot and streamed ends may differ at the very end
    np.testing.assert_allclose(whole[:, :n], expected[:, :n], atol=2e-4)
    part, _ = codec.decode_audio(data, start=0.61, duration=0.3, rate=rate)
    first = round(0.61 * rate)
    np.testing.assert_allclose(part, whole[:, first:first + round(0.3 * rate)], atol=1e-5)


@pytest.mark.parametrize("rate", [1000, 2000])
def test_a_part_at_a_low_rate_is_the_same_samples_as_the_whole(codec, long_files, rate):
    """20 ms before the part is 20 to 40 samples at these rates, less than the resampling filter needs:
    the part differed from the whole decoding by up to 5e-4."""
    data, _ = long_files[44100]
    whole, _ = codec.decode_audio(data, rate=rate)
    for start, duration in ((0.61, 0.3), (1.2, None)):
        part, _ = codec.decode_audio(data, start=start, duration=duration, rate=rate)
        first = round(start * rate)
        np.testing.assert_allclose(part, whole[:, first:first + part.shape[1]], rtol=0, atol=1e-6)


def test_rate_is_checked_and_written(codec, long_files, signal, tmp_path, cli, tiny_model_path):
    odd = codec.encode_audio(signal(1, 1001, 8000), 8000, 2)
    assert codec.decode_audio(odd, rate=22050)[0].shape == (1, 2760)  # 1001 * 22050 / 8000 = 2759.06, rounded up
    data, _ = long_files[44100]
    for bad in (0, -5, 10**7, 16000.5):
        with pytest.raises(VQCodecError, match="output sample rate"):
            codec.decode_audio(data, rate=bad)
    (tmp_path / "a.vq").write_bytes(data)
    result = cli("decode", tmp_path / "a.vq", tmp_path / "a.wav", "--rate", "16000", "-m", tiny_model_path)
    assert result.returncode == 0, result.stderr.decode()
    info = soundfile.info(tmp_path / "a.wav")
    assert (info.samplerate, info.frames, info.channels) == (16000, 32000, 2)
    result = cli("decode", tmp_path / "a.vq", tmp_path / "b.wav", "--rate", "0", "-m", tiny_model_path)
    assert result.returncode != 0 and not (tmp_path / "b.wav").exists()


def test_a_chunk_whose_codes_would_not_fit_in_memory_is_refused_before_it_is_decoded(golden_audio_codec,
                                                                                   monkeypatch):
    """A file of a few kilobytes can hold one depth-coded chunk of 2^20 frames of 64 channels: 0.5 GB of
    int16 codes at q4 (1 GB at q8), which every per-chunk decoding allocated and decoded without a
    check, so a small machine killed the process instead of giving one line."""
    from conftest import GOLDEN
    from vqcodec import format as vqformat

    codec = golden_audio_codec
    header = vqformat.parse_header((GOLDEN / "golden_audio_depth.vq").read_bytes())
    header.channels, header.chunk_frames, header.length = 64, 1 << 20, (1 << 20) * codec.hop
    cells = header.channels * header.chunk_frames
    words = math.ceil(codec.prior.min_bits(header.quality, cells, True, header.channels) / 64)  # not too short
    data = vqformat.build_file(header, [bytes(4 * words)])
    assert len(data) < 100_000

    def decoded(*args, **kwargs):
        raise AssertionError("the chunk was decoded")

    monkeypatch.setattr(codec.prior, "decode_chunk", decoded)
    monkeypatch.setattr(codec_module, "memory_bound", lambda: 400_000_000)
    message = "the 268435456 codes of a chunk take 0.7 GB, more than the memory this process may use (0.4 GB)"
    for read in (lambda: codec.decode_audio(data, start=1.0, duration=0.01),
                 lambda: codec.decode_audio(data, start=1.0, duration=0.01, salvage=True),
                 lambda: codec.code_report(data), lambda: codec.damaged_parts(data),
                 lambda: codec.code_blocks(data)):  # before it returns its blocks
        with pytest.raises(VQCodecError) as refused:
            read()
        assert str(refused.value).startswith(message), str(refused.value)
    with pytest.raises(VQCodecError, match="^the codes take 0.5 GB, more than the memory"):  # the whole file's check
        codec.read_codes(data)


def test_the_chunks_the_encoder_writes_are_decoded_without_a_memory_check(codec, monkeypatch):
    """The largest chunk encoding writes (500 frames of 64 channels at q64) needs less than
    CHECKED_CHUNK_BYTES, so no machine refuses it."""
    from vqcodec import format as vqformat

    monkeypatch.setattr(codec_module, "memory_bound", lambda: 0)
    for coding in (vqformat.CODING_FIXED, vqformat.CODING_PRIOR):
        header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=coding, quality=64, model_id=codec.model_id)
        codec._check_chunk_fits(header, (64, 64, codec_module.AUDIO_CHUNK_FRAMES))
        with pytest.raises(VQCodecError, match="more than the memory"):
            codec._check_chunk_fits(header, (64, 64, 32 * codec_module.AUDIO_CHUNK_FRAMES))


def test_the_widest_chunk_of_the_shipped_image_model_is_decoded_without_a_memory_check(monkeypatch):
    """README Limits: the largest chunk the shipped models write, a band of IMAGE_CHUNK_ROWS rows of cells of an
    image 65 535 pixels wide at the top quality, range decoded as one plane, needs 55 MB, under CHECKED_CHUNK_BYTES:
    no machine refuses it (the README said 6 MB, audio's alone)."""
    from vqcodec import format as vqformat

    photos = codec_module.Codec.load("image")
    quality, cols = photos.cfg.num_codebooks, math.ceil(vqformat.MAX_IMAGE_SIDE / photos.hop)
    monkeypatch.setattr(codec_module, "memory_bound", lambda: 0)
    header = vqformat.Header(kind=vqformat.KIND_IMAGE, coding=vqformat.CODING_PRIOR_DEPTH, quality=quality,
                             model_id=photos.model_id)
    photos._check_chunk_fits(header, (quality, codec_module.IMAGE_CHUNK_ROWS, cols))
    with pytest.raises(VQCodecError, match=r"^the 2621440 codes of a chunk take 0\.1 GB, more than the memory"):
        photos._check_chunk_fits(header, (quality, 2 * codec_module.IMAGE_CHUNK_ROWS, cols))


def test_code_blocks_of_many_chunks_are_not_refused_for_the_work_of_decoding_one(codec, monkeypatch):
    """Blocks of many chunks were counted as if each code were decoded as int64 at once (10 bytes a
    code at fixed width), so that max_codes of a block that fits in memory five times over was refused."""
    from conftest import shared_channel_file

    data = shared_channel_file(codec, 64, 1, 640_000)  # 41 million int16 codes: 82 MB
    monkeypatch.setattr(codec_module, "memory_bound", lambda: 200_000_000)
    header, shape, blocks = codec.code_blocks(data, max_codes=10**9)
    assert shape == (64, 1, 640_000)
    monkeypatch.setattr(codec_module, "memory_bound", lambda: 50_000_000)  # the check of read_codes
    with pytest.raises(VQCodecError, match="^the codes take 0.1 GB, more than the memory"):
        codec.read_codes(data)
