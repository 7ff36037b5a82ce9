"""Recoding: a `.vq` file at a lower quality or rate, made from the file alone (Codec.recode,
`vqcodec encode FILE.vq`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from vqcodec import Codec
from vqcodec import format as vqformat
from vqcodec.errors import VQCodecError
from vqcodec.metrics import log_mel_l1, psnr
from vqcodec.ratecontrol import RateUnreachable
from vqcodec.recode import FileCuts

from conftest import run_python, shared_channel_file, traced_peak

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def speech_codec() -> Codec:
    return Codec.load("speech16k")


@pytest.fixture(scope="module")
def image_codec() -> Codec:
    return Codec.load("image")


@pytest.fixture(scope="module")
def recordings(speech_codec):
    """(audio, rate, the default -q 8 file) of the committed speech samples."""
    out = []
    for name in ("speech", "speech2", "speech3"):
        audio, rate = soundfile.read(DATA / f"{name}.flac", dtype="float32")
        out.append((audio, rate, speech_codec.encode_audio(audio, rate, 8)))
    return out


def depths(codes: np.ndarray, level_axis: int) -> np.ndarray:
    return (codes >= 0).sum(level_axis)


class NetworkCalls:
    def __init__(self, codec):
        self.codec, self.calls = codec, []

    def __enter__(self):
        model = self.codec.model
        self.hooks = [m.register_forward_pre_hook(lambda *_: self.calls.append(1)) for m in (model.encoder, model.decoder)]
        return self.calls

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


def test_recode_keeps_a_file_at_its_own_quality(speech_codec, recordings):
    top = recordings[0][2]
    assert speech_codec.recode(top) == top
    assert speech_codec.recode(top, 8) == top


def test_fewer_levels_are_a_prefix_of_the_file_codes(speech_codec, recordings):
    audio, rate, top = recordings[0]
    _, stored = speech_codec.read_codes(top)
    with NetworkCalls(speech_codec) as calls:
        smaller = speech_codec.recode(top, 4)
    assert not calls  # neither network runs
    header, codes = speech_codec.read_codes(smaller)
    assert header.quality == 4 and (header.sample_rate, header.length) == (rate, audio.size)
    present = codes >= 0
    assert np.array_equal(codes[present], stored[:, :4][present])  # the same codes where kept ...
    assert (depths(codes, 1) <= np.minimum(depths(stored, 1), 4)).all()  # ... cut, never deepened
    assert (depths(codes, 1) < np.minimum(depths(stored, 1), 4)).any()   # the depth weight cuts some frames
    assert len(smaller) < len(top)
    decoded, decoded_rate = speech_codec.decode_audio(smaller)
    assert decoded.shape == (1, audio.size) and decoded_rate == rate

    weight = speech_codec.depth_weight
    speech_codec.depth_weight = 0.0  # depth weight 0: each frame keeps its levels, up to 4
    try:
        _, plain = speech_codec.read_codes(speech_codec.recode(top, 4))
    finally:
        speech_codec.depth_weight = weight
    np.testing.assert_array_equal(depths(plain, 1), np.minimum(depths(stored, 1), 4))


def test_recode_to_a_rate_fits_and_is_as_good_as_encoding_again(speech_codec, recordings):
    for target in (1.0, 2.0):
        recoded_distance, encoded_distance = [], []
        for audio, rate, top in recordings:
            recoded = speech_codec.recode(top, max_rate=target)
            encoded = speech_codec.encode_audio(audio, rate, 8, max_kbps=target)
            seconds = audio.size / rate
            assert 0.93 * target <= len(recoded) * 8 / seconds / 1000 <= target
            recoded_distance.append(log_mel_l1(audio, speech_codec.decode_audio(recoded)[0][0]))
            encoded_distance.append(log_mel_l1(audio, speech_codec.decode_audio(encoded)[0][0]))
        assert np.mean(recoded_distance) <= np.mean(encoded_distance) + 0.01, (target, recoded_distance,
                                                                               encoded_distance)


def test_recoding_a_recoded_file_is_about_as_good_as_recoding_once(speech_codec, recordings):
    once_distance, twice_distance = [], []
    for audio, rate, top in recordings:
        middle = speech_codec.recode(top, max_rate=2.0)
        twice = speech_codec.recode(middle, max_rate=1.0)
        once = speech_codec.recode(top, max_rate=1.0)
        seconds = audio.size / rate
        assert 0.93 <= len(twice) * 8 / seconds / 1000 <= 1.0
        _, middle_codes = speech_codec.read_codes(middle)
        _, twice_codes = speech_codec.read_codes(twice)
        assert (depths(twice_codes, 1) <= depths(middle_codes, 1)).all()  # cut from what the file held
        once_distance.append(log_mel_l1(audio, speech_codec.decode_audio(once)[0][0]))
        twice_distance.append(log_mel_l1(audio, speech_codec.decode_audio(twice)[0][0]))
    assert np.mean(twice_distance) <= np.mean(once_distance) + 0.005, (once_distance, twice_distance)


def test_recode_photo_keeps_mode_and_alpha(image_codec):
    photo = Image.open(DATA / "photo.png").crop((0, 0, 320, 256)).convert("RGBA")
    alpha = np.tile(np.arange(320, dtype=np.uint8), (256, 1))
    photo.putalpha(Image.fromarray(alpha))
    top = image_codec.encode_image(photo, 20)
    recoded = image_codec.recode(top, max_rate=0.3)
    header = vqformat.parse_header(recoded)
    assert (header.width, header.height, header.flags) == (320, 256, vqformat.FLAG_ALPHA)
    assert 0.27 <= len(recoded) * 8 / (320 * 256) <= 0.3
    decoded = image_codec.decode_image(recoded)
    assert decoded.mode == "RGBA" and np.array_equal(np.asarray(decoded)[..., 3], alpha)
    encoded = image_codec.decode_image(image_codec.encode_image(photo, 20, max_bpp=0.3))
    original = np.asarray(photo)[..., :3]
    assert psnr(original, np.asarray(decoded)[..., :3]) >= psnr(original, np.asarray(encoded)[..., :3]) - 0.3


def test_shared_channels_stay_shared(speech_codec, recordings):
    audio, rate, _ = recordings[1]
    top = speech_codec.encode_audio(np.stack([audio, audio]), rate, 8)
    recoded = speech_codec.recode(top, 3)
    header = vqformat.parse_header(recoded)
    assert header.channels == 2 and header.flags == vqformat.FLAG_SHARED_CHANNELS
    mono = speech_codec.recode(speech_codec.encode_audio(audio, rate, 8), 3)
    assert [chunk[1:] for chunk in vqformat.parse_file(recoded)[1]] == vqformat.parse_file(mono)[1]


def test_cuts_never_deepen_and_cuts_more_at_higher_weights(speech_codec, recordings):
    _, stored = speech_codec.read_codes(recordings[2][2])
    chunk = stored  # 159 frames: one chunk
    previous = None
    for weight in (0.0, 0.5, 2.0, 8.0, 50.0):
        cut = FileCuts(speech_codec, chunk, chunk.shape[2]).cut(6, weight)
        assert cut.shape == (1, 6, chunk.shape[2])
        assert (depths(cut, 1) <= np.minimum(depths(chunk, 1), 6)).all()
        present = cut >= 0
        assert np.array_equal(cut[present], chunk[:, :6][present])
        # -1 only above a frame's last level
        assert ((cut[:, 1:] >= 0) <= (cut[:, :-1] >= 0)).all()
        if previous is not None:
            assert depths(cut, 1).sum() <= previous
        previous = depths(cut, 1).sum()
    assert previous < depths(chunk[:, :6], 1).sum() / 2


def test_recoding_a_long_file_holds_its_codes_once_and_compactly(speech_codec, recordings):
    """Five minutes of speech (one recording's codes, repeated) recoded: the codes are held as int16,
    with the cut codes beside them, in less memory than one int64 copy of the file's codes."""
    _, stored = speech_codec.read_codes(recordings[0][2])
    codes = np.tile(stored, (1, 1, -(-5 * 60 * 50 // stored.shape[2]))).astype(np.int16)
    data = speech_codec._pack_audio(codes, 16000, codes.shape[2] * speech_codec.hop, 8)
    recoded, peak = traced_peak(lambda: speech_codec.recode(data, 4))
    assert vqformat.parse_header(recoded).quality == 4
    assert peak < 4 * codes.nbytes, f"peak {peak / 1e6:.2f} MB for {codes.nbytes / 1e6:.2f} MB of codes"


WIDE_CHUNK_ERRORS = """
import resource, torch
from vqcodec.recode import _errors_by_depth
codebooks = torch.cat([torch.randn(20, 1024, 64), torch.zeros(20, 1, 64)], dim=1)
flat = torch.randint(-1, 1024, (20, 65536))  # one chunk of a 65 520-pixel-wide image at q20
_errors_by_depth(codebooks, flat[:, :100])  # torch's own start-up allocations, not counted
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
errors = _errors_by_depth(codebooks, flat)
assert errors.shape == (21, 65536)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_wide_images_chunk_is_cut_without_holding_all_its_codebook_vectors():
    """A chunk of a wide image (16 latent rows of 4095 cells) took each of its codes' codebook vectors at
    once, as float32 and float64 (1.4 GB more peak memory for one chunk at q20, 1.7 GB in all where the
    file's codes took 0.3); now a few thousand cells at a time."""
    result = run_python("-c", WIDE_CHUNK_ERRORS)
    assert result.returncode == 0, result.stderr.decode()
    assert int(result.stdout) < 400, f"{int(result.stdout)} MB more peak memory"


def test_recoding_refuses_codes_and_a_cut_that_would_not_fit_in_memory(speech_codec, monkeypatch):
    """Reading a file's codes refused codes the process could not hold, but recoding then took a cut of
    them beside the codes unchecked: a day of 64 channels sharing their codes (a 43 MB file, 4.4 GB of
    codes) went on to allocate 4.4 GB more, until the machine ran out of memory."""
    import vqcodec.codec

    data = shared_channel_file(speech_codec, 64, 4, 20_000)  # 5.1 M codes: 10.2 MB as int16
    monkeypatch.setattr(vqcodec.codec, "memory_bound", lambda: 15_000_000)  # the codes fit, with a q2 cut not
    with pytest.raises(VQCodecError, match=r"^recoding holds the file's codes and a cut of them, 0\.0 GB, more "
                                           r"than the memory this process may use \(0\.0 GB\)"):
        speech_codec.recode(data, 2)
    monkeypatch.setattr(vqcodec.codec, "memory_bound", lambda: 16_000_000)
    assert vqformat.parse_header(speech_codec.recode(data, 2)).quality == 2


def test_a_file_in_one_long_chunk_is_cut_in_the_chunks_it_is_written_in(speech_codec, recordings, monkeypatch):
    """Recoding worked out each chunk's costs whole, in the file's own chunks: a chunk of 2^20 frames of
    64 channels (a 23 KB file of silence at q8) took the quantizer's vectors of every code at once,
    hundreds of GB. It now cuts in the chunks the new file is written in, as for every file vqcodec
    writes: the same file as from those chunks."""
    _, stored = speech_codec.read_codes(recordings[0][2])
    codes = np.tile(stored, (1, 1, 8))[:, :, :1200]  # 24 s: chunks of 500, 500 and 200 frames
    data = speech_codec._pack_audio(codes, 16000, codes.shape[2] * speech_codec.hop, 8)
    header = vqformat.parse_header(data)
    header.chunk_frames, header.chunk_count = codes.shape[2], 1
    one_chunk = vqformat.build_file(header, [speech_codec.prior.encode_chunk(codes, depths=True)])
    assert np.array_equal(speech_codec.read_codes(one_chunk)[1], codes)
    spans = []
    original = FileCuts.__init__
    monkeypatch.setattr(FileCuts, "__init__", lambda self, *args: original(self, *args) or spans.append(self.spans))
    assert speech_codec.recode(one_chunk, 4) == speech_codec.recode(data, 4)
    assert max(b - a for a, b in spans[0]) == 500 < codes.shape[2]


def test_a_file_of_a_model_a_fine_tune_decodes_keeps_its_model_id(speech_codec, recordings):
    """speech16k is a decoder-only fine-tune of a8f645bd and recodes its files: the recoded file named
    speech16k's id, which a8f645bd (or another fine-tune of it) does not decode, and a file kept at its
    own quality came back changed."""
    assert speech_codec.decodes
    earlier = sorted(speech_codec.decodes)[0]
    header, chunks, _ = vqformat.parse_file(recordings[0][2])
    header.model_id = earlier
    old = vqformat.build_file(header, chunks)
    assert speech_codec.recode(old) == old
    for options in ({"quality": 4}, {"max_rate": 1}):
        recoded = speech_codec.recode(old, **options)
        assert vqformat.parse_header(recoded).model_id == earlier
        # the same codes as the file of speech16k's own id recodes to
        assert np.array_equal(speech_codec.read_codes(recoded)[1],
                              speech_codec.read_codes(speech_codec.recode(recordings[0][2], **options))[1])


def test_recode_refusals(speech_codec, image_codec, recordings):
    top = recordings[0][2]
    with pytest.raises(VQCodecError, match="fewer codebooks, not more"):
        speech_codec.recode(top, 9)
    for quality in ("4", 4.0, True):  # were "quality 4 is not within the file's 1..8 codebooks" (and 4.0, True)
        with pytest.raises(VQCodecError, match=f"^quality must be a whole number of codebooks, not {quality!r}$"):
            speech_codec.recode(top, quality)
    with pytest.raises(RateUnreachable, match="smallest file"):
        speech_codec.recode(top, max_rate=0.05)
    with pytest.raises(VQCodecError, match=r"^truncated \.vq file \(chunk 0 cut short\)$"):
        speech_codec.recode(top[:-2], 4)  # cut short
    with pytest.raises(VQCodecError, match="file was written by model"):
        image_codec.recode(top, 4)
    fixed = Codec.load("speech16k", coding="fixed")
    with pytest.raises(VQCodecError, match="per-cell depth.*fixed-width coding at 3 cannot hold: recode to quality=1"):
        fixed.recode(top, 3)  # the file's frames stop at several depths


def test_codes_that_stop_short_refused_for_fixed_width_coding_say_what_to_do(cli, tmp_path, recordings, codec):
    """Recoding a per-cell-depth file with --coding fixed said "(coding auto or prior)", the Python API's
    words, on the command line, and a model without a prior was told to use "the model's prior"."""
    (tmp_path / "talk.vq").write_bytes(recordings[0][2])
    result = cli("encode", tmp_path / "talk.vq", tmp_path / "small.vq", "-q", "3", "--coding", "fixed", text=True)
    assert result.returncode == 1 and result.stderr.endswith(
        "which fixed-width coding at 3 cannot hold: recode to -q 1 or fewer, or code them with the model's prior "
        "(--coding auto)\n"), result.stderr
    with pytest.raises(VQCodecError, match=r"cannot hold: recode to quality=1 or fewer, or code them with the model's "
                                           r"prior \(coding='auto'\)$"):
        Codec.load("speech16k", coding="fixed").recode(recordings[0][2], 3)
    codes = np.zeros((1, codec.num_codebooks, 10), dtype=np.int64)
    codes[:, 1:, 5:] = -1
    assert codec.prior is None
    with pytest.raises(VQCodecError, match="cannot hold: model tiny has no prior to code them with "
                                           r"\(`vqcodec fit-prior` fits one\)$"):
        codec.codes_to_file(codes)


def test_a_per_cell_depth_file_is_recoded_fixed_width_up_to_its_shallowest_cell(cli, tmp_path):
    """A rate search coded fixed-width on a per-cell-depth file was refused at its first try, at the file's own
    quality, where some cells stop short: it searches the qualities every cell holds, and what cannot be
    done says why."""
    golden = DATA / "golden"
    image, audio = (golden / "golden_image_depth.vq").read_bytes(), (golden / "golden_audio_depth.vq").read_bytes()
    fixed = Codec.load(str(golden / "golden_image.safetensors"), coding="fixed")
    recoded = fixed.recode(image, max_rate=30)
    header = vqformat.parse_header(recoded)
    assert header.coding == vqformat.CODING_FIXED and header.quality == 1  # its shallowest cells hold 1 of 3
    assert np.array_equal(fixed.read_codes(recoded)[1], fixed.read_codes(image)[1][:1])
    assert fixed.recode(image, 1) == recoded
    with pytest.raises(VQCodecError, match=r"^some frames or cells of this file stop at 1 codebook \(per-cell "
                                           r"depth\), which fixed-width coding at 3 cannot hold: recode to "
                                           r"quality=1 or fewer, or code them with the model's prior "
                                           r"\(coding='auto'\)$"):
        fixed.recode(image)
    with pytest.raises(VQCodecError, match=r"^some frames or cells of this file hold no codes \(per-cell depth\), "
                                           r"which fixed-width coding cannot hold at any quality: code them"):
        Codec.load(str(golden / "golden_audio.safetensors"), coding="fixed").recode(audio, max_rate=100)
    result = cli("encode", golden / "golden_image_depth.vq", tmp_path / "fixed.vq", "--coding", "fixed", "--bpp", "30",
                 "-m", golden / "golden_image.safetensors")
    assert result.returncode == 0 and (tmp_path / "fixed.vq").read_bytes() == recoded, result.stderr


def test_encode_of_a_vq_file_at_its_own_quality_says_its_codes_are_kept_and_refuses_a_copy(cli, tmp_path):
    """`encode a.vq b.vq` without -q, --bitrate or --bpp wrote the file again without a word: a copy of it, or
    its codes coded another way."""
    golden = DATA / "golden"
    model = ["-m", golden / "golden_audio.safetensors"]
    for name in ("golden_audio_depth.vq", "golden_audio_prior.vq"):
        for options in ([], ["--coding", "prior"]):
            result = cli("encode", golden / name, tmp_path / "copy.vq", *model, *options, text=True)
            assert result.returncode == 1 and result.stderr == (
                f"vqcodec: error: {golden / name} is a .vq file, which encode recodes to a lower -q, --bitrate or "
                "--bpp: without one its codes are kept as they are, coded as they are, and the output would be a "
                "copy\n")
            assert not (tmp_path / "copy.vq").exists()
        result = cli("encode", golden / name, tmp_path / "copy.vq", *model, "-q", "4", "--force")  # asked for: a copy
        assert result.returncode == 0 and result.stderr == b"" and (tmp_path / "copy.vq").read_bytes() == \
            (golden / name).read_bytes()
        (tmp_path / "copy.vq").unlink()
    fixed = (golden / "golden_audio_fixed.vq").read_bytes()
    result = cli("encode", "-", tmp_path / "prior.vq", *model, input=fixed)
    assert result.returncode == 0 and result.stderr.decode() == (
        f"vqcodec: note: stdin is a .vq file: recoded at its own quality, its codes kept as they are and coded from "
        f"fixed-width to prior range coding ({len(fixed)} -> {(tmp_path / 'prior.vq').stat().st_size} bytes); -q, "
        "--bitrate or --bpp make a smaller file\n")
    assert (tmp_path / "prior.vq").read_bytes() == (golden / "golden_audio_prior.vq").read_bytes()
    result = cli("encode", golden / "golden_audio_prior.vq", tmp_path / "fixed.vq", *model, "--coding", "fixed")
    assert result.returncode == 0 and result.stderr == b"" and (tmp_path / "fixed.vq").read_bytes() == fixed


def test_cli_recode(cli, tmp_path, recordings):
    audio, rate, top = recordings[0]
    (tmp_path / "talk.vq").write_bytes(top)
    result = cli("encode", tmp_path / "talk.vq", tmp_path / "small.vq", "--bitrate", "1")
    assert result.returncode == 0, result.stderr.decode()
    assert len((tmp_path / "small.vq").read_bytes()) * 8 / (audio.size / rate) <= 1000
    assert cli("encode", tmp_path / "talk.vq", tmp_path / "q2.vq", "-q", "2").returncode == 0
    assert vqformat.parse_header((tmp_path / "q2.vq").read_bytes()).quality == 2
    piped = cli("encode", "-", "-", "-q", "2", input=top)
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "q2.vq").read_bytes()
    for options in (["--bpp", "0.1"], ["--beam", "2"], ["--refine", "3"], ["-q", "9"], ["--bitrate", "0.01"],
                    ["--depth-weight", "20"], ["--depth-weight", "20", "-q", "8"]):  # at its own quality: a no-op
        result = cli("encode", tmp_path / "talk.vq", tmp_path / "bad.vq", *options)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("vqcodec: error: "), options
        if options == ["-q", "9"]:  # named as the option (it said 'quality 9', the Python argument's name)
            assert lines[0] == "vqcodec: error: -q 9 is not within the file's 1..8 codebooks: a file can be recoded " \
                               "to fewer codebooks, not more"
    assert not (tmp_path / "bad.vq").exists()


def test_a_recode_waits_for_another_threads_rate_search_on_a_shared_codec(recordings, monkeypatch):
    import threading

    from vqcodec import ratecontrol

    codec = Codec.load("speech16k")  # its own: progress is set on it
    audio, rate, data = recordings[0]
    expected = codec.recode(data, quality=4)
    out = {}
    other = threading.Thread(target=lambda: out.setdefault("recoded", codec.recode(data, quality=4)))
    weights = []  # of the search's tries (its progress callback is shown the codec's own)
    fit_size = ratecontrol.fit_size
    monkeypatch.setattr(ratecontrol, "fit_size", lambda encode, *rest: fit_size(
        lambda quality, weight: weights.append(weight) or encode(quality, weight), *rest))

    def during_the_search(stage, done, total):  # the search tries other depth weights on the codec
        if weights[-1] != 2.0 and not other.is_alive() and "recoded" not in out:
            other.start()
            other.join(0.5)  # held up by the lock, it recodes at the codec's own weight after the search
    codec.progress = during_the_search
    codec.encode_audio(audio, rate, 8, max_kbps=1.0)
    other.join()
    assert out["recoded"] == expected
