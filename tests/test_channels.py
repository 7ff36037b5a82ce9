"""Channels that carry one signal (a mono recording saved as stereo) are coded once: the encoder runs
on one of them, and a file whose channels all have the same codes stores them once
(FLAG_SHARED_CHANNELS, docs/FORMAT.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import GOLDEN, make_signal
from make_golden import AUDIO_RATE, golden_audio
from vqcodec import Codec
from vqcodec import format as vqformat
from vqcodec.codec import SAME_CHANNEL_TOLERANCE, read_info

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
    """Records how many channels each call of the encoder network saw."""

    def __init__(self, codec: Codec):
        self.codec, self.batches = codec, []

    def __enter__(self):
        self.hook = self.codec.model.encoder.register_forward_pre_hook(
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
    header = vqformat.parse_header(stereo)
    assert header.channels == 2 and header.coded_channels == 1 and header.flags == vqformat.FLAG_SHARED_CHANNELS
    assert len(stereo) == len(mono)  # the header differs only in its channel count and flags
    assert stereo[vqformat.HEADER_SIZE:] == mono[vqformat.HEADER_SIZE:]
    decoded, decoded_rate = speech_codec.decode_audio(stereo)
    reference, _ = speech_codec.decode_audio(mono)
    assert decoded_rate == rate and decoded.shape == (2, audio.size)
    np.testing.assert_array_equal(decoded[0], reference[0])
    np.testing.assert_array_equal(decoded[1], reference[0])
    assert read_info(stereo).shared_channels and not read_info(mono).shared_channels


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


def test_distinct_channels_are_coded_apart(codec):
    stereo = make_signal(2, 6000, 16000)
    with EncoderBatches(codec) as batches:
        data = codec.encode_audio(stereo, 16000, 3)
    assert set(batches) == {2}
    header, codes = codec.read_codes(data)
    assert header.flags == 0 and header.coded_channels == 2 and not np.array_equal(codes[0], codes[1])


def test_partly_identical_channels_share_only_those_blocks(codec):
    """Blocks where the channels agree are coded once; the file keeps both channels' codes, since
    they differ elsewhere."""
    signal = make_signal(2, 16000 * 2, 16000)  # hop 8: 4000 frames, blocks of 500
    signal[1, :8000] = signal[0, :8000]   # the first 1000 frames
    with EncoderBatches(codec) as batches:
        data = codec.encode_audio(signal, 16000, 3)
    assert 1 in batches and 2 in batches
    header, codes = codec.read_codes(data)
    assert header.coded_channels == 2
    assert np.array_equal(codes[0, :, :400], codes[1, :, :400])  # a block and its context agree there
    assert not np.array_equal(codes[0, :, 2000:], codes[1, :, 2000:])


def test_shared_file_codes_part_and_salvage(codec):
    signal = np.repeat(make_signal(1, 16000 * 3, 16000), 2, axis=0)  # 6000 frames: 12 chunks
    data = codec.encode_audio(signal, 16000, 4)
    header, codes = codec.read_codes(data)
    assert header.coded_channels == 1 and codes.shape == (2, 4, 6000)
    assert codec.codes_to_file(codes, 16000, signal.shape[1]) == data  # pack finds the sharing again
    whole, _ = codec.decode_audio(data)
    part, _ = codec.decode_audio(data, start=1.0, duration=0.5)
    np.testing.assert_allclose(part, whole[:, 16000:24000], atol=1e-5)
    damaged = bytearray(data)
    damaged[-5] ^= 0xFF  # the last chunk
    salvaged, _ = codec.decode_audio(bytes(damaged), salvage=True)
    assert salvaged.shape == (2, signal.shape[1]) and np.array_equal(salvaged[0], salvaged[1])
    assert codec.damaged_parts(bytes(damaged)) == [{"chunk": 11, "from": 2.75, "to": 3.0}]


def test_golden_shared_channel_file():
    """A committed shared-channel file decodes to its committed codes in both channels, and today's
    packer writes it byte for byte from them."""
    codec = Codec.load(str(GOLDEN / "golden_audio.safetensors"))
    data = (GOLDEN / "golden_audio_shared.vq").read_bytes()
    stored = np.load(GOLDEN / "golden_audio_shared_codes.npy", allow_pickle=False).astype(np.int64)
    header, codes = codec.read_codes(data)
    assert header.flags == vqformat.FLAG_SHARED_CHANNELS and header.channels == 2
    assert header.coding == vqformat.CODING_PRIOR_DEPTH and (stored < 0).any()
    np.testing.assert_array_equal(codes, np.repeat(stored, 2, axis=0))
    assert codec.codes_to_file(codes, AUDIO_RATE, header.length) == data
    decoded, _ = codec.decode_audio(data)
    assert decoded.shape == (2, golden_audio(3, seconds=0.9, channels=1).shape[1])
    np.testing.assert_array_equal(decoded[0], decoded[1])


def test_flag_is_refused_where_it_means_nothing(craft):
    codec = Codec.load(str(GOLDEN / "golden_audio.safetensors"))
    data = (GOLDEN / "golden_audio_shared.vq").read_bytes()
    with pytest.raises(vqformat.FormatError, match="mono"):
        vqformat.parse_header(craft.with_header(data, channels=1))
    with pytest.raises(vqformat.FormatError):  # the chunks hold one channel, not two
        codec.decode_audio(craft.with_header(data, flags=0))


def test_info_says_the_channels_are_stored_once(cli, tmp_path, speech):
    audio, rate = speech
    source = tmp_path / "dual.wav"
    soundfile.write(source, np.stack([audio, audio]).T, rate, subtype="PCM_16")
    result = cli("encode", source, tmp_path / "dual.vq", "-q", "2")
    assert result.returncode == 0, result.stderr
    shown = cli("info", tmp_path / "dual.vq", text=True)
    assert "2 channel(s) (the same codes, stored once)" in shown.stdout
    record = json.loads(cli("info", tmp_path / "dual.vq", "--json", text=True).stdout)
    assert record["shared_channels"] is True and record["channels"] == 2
    assert cli("decode", tmp_path / "dual.vq", tmp_path / "out.wav").returncode == 0
    decoded, decoded_rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert decoded.shape == (audio.size, 2) and decoded_rate == rate
    np.testing.assert_array_equal(decoded[:, 0], decoded[:, 1])
