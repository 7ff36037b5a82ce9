"""Channels that carry one signal (a mono recording saved as stereo) are coded once: the encoder runs
on one of them, and a chunk whose channels all have the same codes stores them once, behind a
channel-layout byte (FLAG_SHARED_CHANNELS, docs/FORMAT.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

import vqcodec.codec as codec_module
from conftest import GOLDEN, make_signal
from make_golden import AUDIO_RATE, shared_golden_audio
from vqcodec import Codec
from vqcodec import format as vqformat
from vqcodec.codec import SAME_CHANNEL_TOLERANCE
from vqcodec.fileinfo import read_info

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEECH = REPO_ROOT / "tests" / "data" / "speech.flac"


@pytest.fixture(scope="module")
def speech_codec() -> Codec:
    return Codec.load("speech16k")


@pytest.fixture(scope="module")
def speech():
    audio, rate = soundfile.read(SPEECH, dtype="float32")
    return audio[: rate * 4], rate


class EncoderBatches:
    """Records how many channels each call of the encoder (or the decoder) network saw."""

    def __init__(self, codec: Codec, network: str = "encoder"):
        self.network, self.batches = getattr(codec.model, network), []

    def __enter__(self):
        self.hook = self.network.register_forward_pre_hook(
            lambda module, inputs: self.batches.append(inputs[0].shape[0]))
        return self.batches

    def __exit__(self, *exc):
        self.hook.remove()


def test_dual_mono_is_coded_once_and_decodes_as_the_mono_file(speech_codec, speech):
    audio, rate = speech
    mono = speech_codec.encode_audio(audio, rate, 6)
    with EncoderBatches(speech_codec) as batches:
        stereo = speech_codec.encode_audio(np.stack([audio, audio]), rate, 6)
    assert batches and set(batches) == {1}
    header, chunks, _ = vqformat.parse_file(stereo)
    assert header.channels == 2 and header.flags == vqformat.FLAG_SHARED_CHANNELS
    assert [chunk[0] for chunk in chunks] == [vqformat.LAYOUT_SHARED]  # one chunk of 4 s
    assert len(stereo) == len(mono) + 1  # the mono file and one layout byte
    assert chunks[0][1:] == vqformat.parse_file(mono)[1][0]
    with EncoderBatches(speech_codec, "decoder") as batches:
        decoded, decoded_rate = speech_codec.decode_audio(stereo)
    assert batches and set(batches) == {1}  # decoded once too
    reference, _ = speech_codec.decode_audio(mono)
    assert decoded_rate == rate and decoded.shape == (2, audio.size)
    np.testing.assert_array_equal(decoded[0], reference[0])
    np.testing.assert_array_equal(decoded[1], reference[0])
    assert (read_info(stereo).shared_chunks, read_info(mono).shared_chunks) == (1, 0)


def test_copies_within_the_tolerance_are_coded_once(codec):
    signal = make_signal(1, 6000, 16000)[0]
    rng = np.random.default_rng(1)
    for difference, shared in ((SAME_CHANNEL_TOLERANCE / 2, True), (2 * SAME_CHANNEL_TOLERANCE, False)):
        copy = signal + difference * rng.choice([-1.0, 1.0], signal.size).astype(np.float32)
        with EncoderBatches(codec) as batches:
            data = codec.encode_audio(np.stack([signal, copy, signal]), 16000, 3)
        assert set(batches) == ({1} if shared else {3}), difference
        header = vqformat.parse_header(data)
        assert header.channels == 3
        if shared:  # (channels coded apart may still come out with the same codes, and be stored once)
            assert header.flags == vqformat.FLAG_SHARED_CHANNELS
        decoded, _ = codec.decode_audio(data)
        assert decoded.shape == (3, signal.size) and np.isfinite(decoded).all()


@pytest.mark.parametrize("peak, difference, shared", [(0.02, SAME_CHANNEL_TOLERANCE / 2, True),
                                                       (0.95, 1.5 * SAME_CHANNEL_TOLERANCE, False)])
def test_channels_are_compared_at_the_input_level(codec, peak, difference, shared):
    """A recording coded at a level gain (peak outside 0.1-0.7) has its channels compared as they are
    in the input, not as the gain scales them: quiet copies within the tolerance are coded once."""
    signal = make_signal(1, 6000, 16000)[0]
    signal *= peak / np.abs(signal).max()
    copy = signal + difference * np.random.default_rng(1).choice([-1.0, 1.0], signal.size).astype(np.float32)
    with EncoderBatches(codec) as batches:
        data = codec.encode_audio(np.stack([signal, copy]), 16000, 3)
    assert read_info(data).gain != 1.0
    assert set(batches) == ({1} if shared else {2})


def test_distinct_channels_are_coded_apart(codec):
    stereo = make_signal(2, 6000, 16000)
    with EncoderBatches(codec) as batches:
        data = codec.encode_audio(stereo, 16000, 3)
    assert set(batches) == {2}
    header, codes = codec.read_codes(data)
    assert header.flags == 0 and not np.array_equal(codes[0], codes[1])


def test_partly_identical_channels_share_those_chunks(codec):
    """A stereo recording that is mono for a while (a mono talk after a stereo jingle, or the
    reverse) stores the codes of those chunks once."""
    signal = make_signal(2, 16000 * 2, 16000)  # hop 8: 4000 frames, blocks and chunks of 500
    signal[1, 8000:] = signal[0, 8000:]   # from frame 1000 on (block 2's context, from frame 984, differs)
    with EncoderBatches(codec) as batches:
        data = codec.encode_audio(signal, 16000, 3)
    assert batches == [2, 2, 1, 1, 1, 1, 1, 1]
    header, chunks, _ = vqformat.parse_file(data)
    assert header.flags == vqformat.FLAG_SHARED_CHANNELS
    assert [chunk[0] for chunk in chunks] == [0, 0, 1, 1, 1, 1, 1, 1]
    _, codes = codec.read_codes(data)
    assert codes.shape == (2, 3, 4000) and np.array_equal(codes[0, :, 1000:], codes[1, :, 1000:])
    assert not np.array_equal(codes[0, :, :1000], codes[1, :, :1000])
    decoded, _ = codec.decode_audio(data)
    assert decoded.shape == signal.shape and np.array_equal(decoded[0, 13000:], decoded[1, 13000:])

    apart = (codec_module._same_channels, codec_module._codes_shared)
    codec_module._same_channels = codec_module._codes_shared = lambda x, *tolerance: False
    try:
        unshared = codec.encode_audio(signal, 16000, 3)
    finally:
        codec_module._same_channels, codec_module._codes_shared = apart
    assert vqformat.parse_header(unshared).flags == 0
    assert len(data) < 0.75 * len(unshared)
    apart_decoded = codec.decode_audio(unshared)[0]
    np.testing.assert_allclose(apart_decoded[:, :8000], decoded[:, :8000], atol=1e-5)
    # from the border on, channel 1 is decoded from channel 0's codes: as close as the codec's error
    difference = np.abs(apart_decoded[1, 8000:] - decoded[1, 8000:]).max()
    assert difference < 0.1 * np.abs(signal[1, 8000:] - apart_decoded[1, 8000:]).max(), difference


def test_shared_file_codes_part_and_salvage(codec):
    signal = np.repeat(make_signal(1, 16000 * 3, 16000), 2, axis=0)  # 6000 frames: 12 chunks
    data = codec.encode_audio(signal, 16000, 4)
    header, codes = codec.read_codes(data)
    assert header.flags == vqformat.FLAG_SHARED_CHANNELS and codes.shape == (2, 4, 6000)
    assert codec.codes_to_file(codes, 16000, signal.shape[1]) == data  # pack finds the sharing again
    whole, _ = codec.decode_audio(data)
    part, _ = codec.decode_audio(data, start=1.0, duration=0.5)
    np.testing.assert_allclose(part, whole[:, 16000:24000], atol=1e-5)
    damaged = bytearray(data)
    damaged[-5] ^= 0xFF  # the last chunk
    salvaged, _ = codec.decode_audio(bytes(damaged), salvage=True)
    assert salvaged.shape == (2, signal.shape[1]) and np.array_equal(salvaged[0], salvaged[1])
    assert codec.damaged_parts(bytes(damaged)) == [{"chunk": 11, "count": 1, "from": 2.75, "to": 3.0}]


def test_golden_shared_channel_file():
    """A committed file whose first two chunks store shared codes decodes to its committed codes,
    and today's packer writes it byte for byte from them."""
    codec = Codec.load(str(GOLDEN / "golden_audio.safetensors"))
    data = (GOLDEN / "golden_audio_shared.vq").read_bytes()
    expected = np.load(GOLDEN / "golden_audio_shared_codes.npy", allow_pickle=False).astype(np.int64)
    header, chunks, _ = vqformat.parse_file(data)
    assert header.flags == vqformat.FLAG_SHARED_CHANNELS and header.channels == 2
    assert header.coding == vqformat.CODING_PRIOR_DEPTH and (expected < 0).any()
    assert [chunk[0] for chunk in chunks] == [1, 1, 0, 0]
    _, codes = codec.read_codes(data)
    np.testing.assert_array_equal(codes, expected)
    assert np.array_equal(codes[0, :, :1000], codes[1, :, :1000]) and not np.array_equal(codes[0], codes[1])
    assert codec.codes_to_file(codes, AUDIO_RATE, header.length) == data
    decoded, _ = codec.decode_audio(data)
    assert decoded.shape == shared_golden_audio().shape


def test_flag_and_layout_bytes_are_checked(craft):
    codec = Codec.load(str(GOLDEN / "golden_audio.safetensors"))
    data = (GOLDEN / "golden_audio_shared.vq").read_bytes()
    with pytest.raises(vqformat.FormatError, match="mono"):
        vqformat.parse_header(craft.with_header(data, channels=1))
    with pytest.raises(vqformat.FormatError):  # the layout bytes would be read as codes
        codec.decode_audio(craft.with_header(data, flags=0))
    header, chunks, _ = vqformat.parse_file(data)
    for layout in (b"\x02", b"\xff"):
        bad = vqformat.build_file(header, [layout + chunks[0][1:]] + chunks[1:])
        with pytest.raises(vqformat.FormatError, match="unknown channel layout"):
            codec.decode_audio(bad)
    with pytest.raises(vqformat.FormatError, match="no channel-layout byte"):
        codec.read_codes(vqformat.build_file(header, [b""] + chunks[1:]))



def test_info_says_the_channels_are_stored_once(cli, tmp_path, speech):
    audio, rate = speech
    source = tmp_path / "dual.wav"
    soundfile.write(source, np.stack([audio, audio]).T, rate, subtype="PCM_16")
    result = cli("encode", source, tmp_path / "dual.vq", "-q", "2")
    assert result.returncode == 0, result.stderr
    shown = cli("info", tmp_path / "dual.vq", text=True)
    assert "2 channels (one signal, stored once, in 1 of 1 chunk)" in shown.stdout
    record = json.loads(cli("info", tmp_path / "dual.vq", "--json", text=True).stdout)
    assert record["shared_chunks"] == record["chunks"] == 1 and record["channels"] == 2
    assert cli("decode", tmp_path / "dual.vq", tmp_path / "out.wav").returncode == 0
    decoded, decoded_rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert decoded.shape == (audio.size, 2) and decoded_rate == rate
    np.testing.assert_array_equal(decoded[:, 0], decoded[:, 1])
