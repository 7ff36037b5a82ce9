"""Rate control (`encode --bitrate` / `--bpp`, vqcodec.ratecontrol): the best file of at most a size.

The search itself on a synthetic encoder whose sizes are known, then the shipped models on the
committed samples (files within the budget, filling it, decoding, at least as good as the best
plain quality that fits), and the CLI.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from vqcodec import Codec, VQCodecError, read_info
from vqcodec.metrics import log_mel_l1, psnr
from vqcodec.ratecontrol import byte_limit, fit_size, rate_that_fits

DATA = Path(__file__).resolve().parent / "data"
MAX_WEIGHT = 100.0


def synthetic_encoder(header: int = 40, per_level: int = 1000):
    """encode(quality, weight) -> bytes whose length falls smoothly with the weight: at weight 1 a
    quality's file is one level larger than the quality below's, and it shrinks towards that as the
    weight grows. Records every call."""
    calls = []

    def encode(quality: int, weight: float) -> bytes:
        calls.append((quality, weight))
        size = header + per_level * (quality - 1 + 2 / (1 + weight))
        return bytes(int(size))

    return encode, calls


def describe(size: int) -> str:
    return f"{size} bytes"


@pytest.mark.parametrize("limit", [700, 1500, 4321, 9000, 15039])
def test_the_file_fits_and_fills_the_budget(limit):
    encode, calls = synthetic_encoder()
    data = fit_size(encode, limit, 16, 1.0, MAX_WEIGHT, True, "target", describe)
    assert len(data) <= limit
    assert len(data) >= 0.98 * limit  # the search lands within 2 % of the budget
    assert len(calls) <= 16           # about 10 encodes, not a sweep of every setting


def test_a_budget_above_the_top_quality_gets_it_at_full_depth():
    encode, _ = synthetic_encoder()
    top_at_full_depth = len(encode(16, 0.0))
    data = fit_size(encode, 10 ** 6, 16, 1.0, MAX_WEIGHT, True, "target", describe)
    assert len(data) == top_at_full_depth


def test_without_per_cell_depth_it_is_the_highest_quality_that_fits():
    encode, calls = synthetic_encoder()
    sizes = [len(encode(q, 1.0)) for q in range(1, 17)]
    calls.clear()
    for limit in [sizes[0], sizes[0] + 1, sizes[6] - 1, sizes[6], sizes[15] + 5]:
        data = fit_size(encode, limit, 16, 1.0, MAX_WEIGHT, False, "target", describe)
        assert len(data) == max(s for s in sizes if s <= limit)
        assert {w for _, w in calls} == {1.0}  # the depth weight is never touched


def test_below_the_lowest_quality_the_weight_rises_at_quality_1():
    encode, calls = synthetic_encoder()
    lowest = len(encode(1, 1.0))
    data = fit_size(encode, lowest - 100, 16, 1.0, MAX_WEIGHT, True, "target", describe)
    assert len(data) <= lowest - 100
    assert all(q == 1 for q, w in calls if w > 1.0)


def test_a_size_flat_over_low_weights_does_not_stall_the_search():
    """A photo's quality-1 file stays the same size up to a depth weight of about 20, then shrinks
    (kodim01: 1656 bytes, 364 at the largest weight). False position alone kept guessing next to
    the too-big end and ran out of steps: a budget of 1474 bytes got the 364-byte file, smaller
    than what a budget of 983 bytes got."""
    def encode(quality: int, weight: float) -> bytes:
        if quality > 1:
            return bytes(1656 * quality)
        shrink = min(max(math.log(weight / 20) / math.log(100 / 20), 0.0), 1.0)
        return bytes(round(1656 - shrink * (1656 - 364)))

    for limit in range(400, 1656, 25):
        data = fit_size(encode, limit, 20, 1.0, MAX_WEIGHT, True, "target", describe)
        assert 0.9 * limit <= len(data) <= limit, limit


def test_nothing_fits_is_one_clear_error():
    encode, _ = synthetic_encoder(header=500)
    with pytest.raises(VQCodecError, match=r"cannot fit the input in 0\.1 kbps: the smallest file .* is 5\d\d bytes"):
        fit_size(encode, 400, 16, 1.0, MAX_WEIGHT, True, "0.1 kbps", describe)


@pytest.mark.parametrize("size, bits_per_rate", [(140, 3000), (132, 2500), (84, 500), (120, 2000), (999, 8000),
                                                  (1, 3), (5000, 65536)])
def test_the_smallest_rate_quoted_is_one_whose_budget_holds_the_file(size, bits_per_rate):
    """The rate a refusal quotes as the smallest is rounded up to three significant digits, to the smallest such rate
    whose budget holds the file: 140 bytes over 3 s, 0.37333 kbps, was quoted as 0.373, which holds 139."""
    rate = rate_that_fits(size, bits_per_rate)
    assert byte_limit(rate * bits_per_rate) >= size
    assert float(f"{rate:.3g}") == rate and rate >= size * 8 / bits_per_rate
    below = rate - 10.0 ** (math.floor(math.log10(rate)) - 2)
    assert byte_limit(below * bits_per_rate) < size


# ---------------------------------------------------------------- the shipped models

@pytest.fixture(scope="module")
def speech():
    return Codec.load("speech16k")


@pytest.fixture(scope="module")
def photo_codec():
    return Codec.load("image")


@pytest.mark.parametrize("kbps", [0.8, 1.7])
def test_speech_at_a_bitrate(speech, kbps):
    path = DATA / "speech.flac"
    audio, rate = soundfile.read(str(path), dtype="float32")
    seconds = audio.size / rate
    data = speech.encode_audio_file(path, speech.num_codebooks, max_kbps=kbps)
    assert speech.depth_weight == 2.0  # the search restores the codec's own weight
    real = len(data) * 8 / seconds / 1000
    assert 0.95 * kbps <= real <= kbps
    decoded, decoded_rate = speech.decode_audio(data)
    assert decoded_rate == rate and decoded.shape == (1, audio.size)
    # at least as good as the best plain quality whose file fits
    plain = [speech.encode_audio_file(path, q) for q in range(1, speech.num_codebooks + 1)]
    best_fitting = max((d for d in plain if len(d) <= len(data)), key=len)
    distance = lambda d: log_mel_l1(audio, speech.decode_audio(d)[0][0])  # noqa: E731
    assert distance(data) <= distance(best_fitting) + 0.002


def test_a_stream_is_read_again_for_each_try(speech):
    path = DATA / "speech2.flac"
    with open(path, "rb") as stream:
        from_stream = speech.encode_audio_file(stream, 8, max_kbps=1.2)
    assert from_stream == speech.encode_audio_file(path, 8, max_kbps=1.2)


def test_quality_caps_the_search(speech):
    path = DATA / "speech.flac"
    capped = speech.encode_audio_file(path, 2, max_kbps=50)
    assert read_info(capped).quality == 2
    assert len(capped) == len(speech.encode_audio_file(path, 2, max_kbps=50))


def test_asking_for_the_smallest_rate_quoted_gives_a_file(speech):
    """Speech cut to 3 s: the smallest file is 140 bytes, 0.37333 kbps; the refusal said 'the smallest file this
    model makes of it is 0.373 kbps', and --bitrate 0.373 was refused with the same words."""
    audio, rate = soundfile.read(DATA / "speech.flac", dtype="float32", frames=48000)
    with pytest.raises(VQCodecError, match=r"the smallest file this model makes of it is ([\d.]+) kbps") as refused:
        speech.encode_audio(audio, rate, 8, max_kbps=0.01)
    smallest = re.search(r"is ([\d.]+) kbps \((\d+) bytes\)", str(refused.value))
    data = speech.encode_audio(audio, rate, 8, max_kbps=float(smallest.group(1)))
    assert len(data) == int(smallest.group(2))


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "2"])
def test_a_bad_rate_is_refused(speech, photo_codec, bad):
    with pytest.raises(VQCodecError, match="must be a positive number"):
        speech.encode_audio(np.zeros(16000, np.float32), 16000, 8, max_kbps=bad)
    with pytest.raises(VQCodecError, match="must be a positive number"):
        photo_codec.encode_image(Image.new("RGB", (16, 16)), 8, max_bpp=bad)


def test_a_rate_beyond_any_file_gives_the_top_quality(speech, photo_codec):
    """A rate whose budget in bits overflows a float (1e308 kbps over a second, 1e308 bpp over 256
    pixels) is a budget every file fits, not an OverflowError: encoding and recoding give the file
    of the top quality."""
    audio = np.zeros((1, 16000), np.float32)
    audio[0, ::40] = 0.3
    data = speech.encode_audio(audio, 16000, 3, max_kbps=1e308)
    assert read_info(data).quality == 3
    assert read_info(speech.recode(data, max_rate=1e308)).quality == 3
    image = Image.fromarray(np.arange(256 * 3, dtype=np.uint8).reshape(16, 16, 3))
    data = photo_codec.encode_image(image, 3, max_bpp=1e308)
    assert read_info(data).quality == 3
    assert read_info(photo_codec.recode(data, max_rate=1e308)).quality == 3


@pytest.fixture(scope="module")
def photo_and_plain_files(photo_codec):
    """The committed photo and its plain file at each quality, 1 to the top: 20 encodes, made once for
    every target."""
    image = Image.open(DATA / "photo.png")
    image.load()
    return image, [photo_codec.encode_image(image, q) for q in range(1, photo_codec.num_codebooks + 1)]


@pytest.mark.parametrize("bpp", [0.1, 0.3])
def test_a_photo_at_bits_per_pixel(photo_codec, photo_and_plain_files, bpp):
    image, plain = photo_and_plain_files
    pixels = image.width * image.height
    data = photo_codec.encode_image(image, photo_codec.num_codebooks, max_bpp=bpp)
    assert photo_codec.depth_weight == 1.0
    assert 0.97 * bpp <= len(data) * 8 / pixels <= bpp
    decoded = photo_codec.decode_image(data)
    assert decoded.size == image.size and decoded.mode == image.mode
    rgb = np.asarray(image.convert("RGB"))
    best_fitting = max((d for d in plain if len(d) <= len(data)), key=len)
    quality = lambda d: psnr(rgb, np.asarray(photo_codec.decode_image(d).convert("RGB")))  # noqa: E731
    assert quality(data) >= quality(best_fitting) - 0.02


# ---------------------------------------------------------------- CLI

def test_cli_bitrate_and_bpp(cli, tmp_path):
    out = tmp_path / "talk.vq"
    result = cli("encode", DATA / "speech3.flac", out, "--bitrate", "1.0")
    assert result.returncode == 0, result.stderr
    info = soundfile.info(str(DATA / "speech3.flac"))
    assert out.stat().st_size * 8 / (info.frames / info.samplerate) / 1000 <= 1.0

    photo = tmp_path / "photo.vq"
    assert cli("encode", DATA / "photo2.png", photo, "--bpp", "0.15").returncode == 0
    with Image.open(DATA / "photo2.png") as image:
        assert photo.stat().st_size * 8 / (image.width * image.height) <= 0.15


@pytest.mark.parametrize("args, message", [
    (("speech.flac", "--bpp", "0.2"), "--bpp is for images"),
    (("photo.png", "--bitrate", "2"), "--bitrate is for audio"),
    (("speech.flac", "--bitrate", "0.05"), "cannot fit the input in 0.05 kbps"),
])
def test_cli_rate_errors_are_one_line_and_leave_nothing(cli, tmp_path, args, message):
    out = tmp_path / "out.vq"
    result = cli("encode", DATA / args[0], out, *args[1:], text=True)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not out.exists()


# ---------------------------------------------------------------- the encoder runs once per block

@pytest.mark.parametrize("kind", ["audio", "image"])
def test_a_rate_search_runs_the_encoder_once_per_block_and_writes_the_same_file(kind, golden_audio_codec,
                                                                                   golden_image_codec, monkeypatch):
    """Every try codes the same input, so the encoder's latents of each block or tile are kept; the
    file must be the one the search would write if each try ran the encoder again."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_golden import AUDIO_RATE, golden_audio, golden_image

    codec = golden_audio_codec if kind == "audio" else golden_image_codec
    if kind == "audio":  # several blocks of 500 frames, two channels
        audio = golden_audio(3, seconds=3 * 500 * codec.hop / AUDIO_RATE, channels=2)
        encode = lambda: codec.encode_audio(audio, AUDIO_RATE, codec.num_codebooks, max_kbps=3.0)  # noqa: E731
        blocks = 3
    else:                # several tiles of 64 x 64 cells
        image = Image.fromarray(golden_image(3, height=130 * codec.hop, width=70 * codec.hop))
        encode = lambda: codec.encode_image(image, codec.num_codebooks, max_bpp=0.5)  # noqa: E731
        blocks = 3 * 2
    calls = []
    hook = codec.model.encoder.register_forward_hook(lambda module, inputs, output: calls.append(1))
    try:
        kept = encode()
        assert len(calls) == blocks
        monkeypatch.setattr(type(codec), "_encoder_latents", lambda self, x, block: self.model.encoder(x))
        calls.clear()
        assert encode() == kept
        assert len(calls) > 2 * blocks  # the search did try several settings
    finally:
        hook.remove()
    assert codec._rate_search is None


# ---------------------------------------------------------------- vqcodec eval --rates

def test_eval_at_target_rates(cli, tmp_path):
    import json
    import shutil
    for name in ("speech.flac", "speech2.flac"):
        shutil.copy(DATA / name, tmp_path / name)
    result = cli("eval", "speech16k", tmp_path, "--rates", "0.05,1.2", "--json", text=True)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [r["target"] for r in rows] == [0.05, 1.2]
    assert rows[0]["unreached"] == 2 and rows[0]["rate"] is None  # no file fits in 0.05 kbps
    assert rows[0].keys() == rows[1].keys() and set(rows[0].values()) == {0.05, 2, 8, None}  # null, not left out
    assert rows[1]["unreached"] == 0 and 1.1 <= rows[1]["rate"] <= 1.2 and rows[1]["quality"] == 8
    assert rows[1]["log_mel"] < 0.3
    bad = cli("eval", "speech16k", tmp_path, "--rates", "1,2", "-q", "4,8", text=True)
    assert bad.returncode == 1 and "-q takes one level" in bad.stderr
