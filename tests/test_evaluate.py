"""`vqcodec eval`: real file rates and quality per level, measured as encode and decode make them."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from conftest import on_terminal, run_python, terminal_moments, terminal_screen
from test_cli import assert_one_line_error
from vqcodec import Codec, VQCodecError, metrics
from vqcodec.soundio import read_audio

DATA = Path(__file__).resolve().parent / "data"
GOLDEN_IMAGE = DATA / "golden" / "golden_image.safetensors"


def test_eval_measures_the_shipped_speech_model_at_each_level(cli, tmp_path):
    folder = tmp_path / "speech"
    folder.mkdir()
    (folder / "a.flac").write_bytes((DATA / "speech.flac").read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    result = cli("eval", "speech16k", folder, "-q", "1,8", "--json", "--threads", "1")
    assert result.returncode == 1, result.stderr.decode()  # a file was skipped
    report = json.loads(result.stdout)
    assert report["files"] == [str(folder / "a.flac")] and [entry["file"] for entry in report["skipped"]] == [str(folder / "broken.wav")]
    assert "skipping" in result.stderr.decode()
    low, high = report["rows"]
    assert (low["quality"], high["quality"]) == (1, 8)

    codec = Codec.load("speech16k")
    audio, rate = read_audio(folder / "a.flac", codec.sample_rate)
    for row in (low, high):
        data = codec.encode_audio(audio, rate, row["quality"])
        assert row["rate"] == 8 * len(data) / (audio.shape[1] / rate) / 1000  # real bytes, header included
        decoded, _ = codec.decode_audio(data)
        assert row["log_mel"] == pytest.approx(metrics.log_mel_l1(audio[0], decoded[0], rate), rel=1e-5)
        assert row["si_sdr"] == pytest.approx(metrics.si_sdr(audio[0], decoded[0]), rel=1e-5)
        assert row["encode_speed"] > 0 and row["decode_speed"] > 0
    assert high["rate"] > 3 * low["rate"] and high["log_mel"] < low["log_mel"] - 0.03


def test_eval_table_and_photos(cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (200, 180, 3), dtype=np.uint8)).save(folder / "b.png")
    result = cli("eval", GOLDEN_IMAGE, folder, "-q", "1,2", "--json")
    assert result.returncode == 0, result.stderr.decode()
    rows = json.loads(result.stdout)["rows"]
    codec = Codec.load(str(GOLDEN_IMAGE))
    pixels = 48 * 64 + 200 * 180
    assert [row["quality"] for row in rows] == [1, 2]  # one row a quality asked for, none left out
    for row in rows:
        size = sum(len(codec.encode_image(Image.open(folder / name), row["quality"])) for name in ("a.png", "b.png"))
        assert row["rate"] == 8 * size / pixels and np.isfinite(row["psnr"])
        assert 0 < row["ms_ssim"] <= 1  # from b.png alone: a.png is too small for five scales
    one = cli("eval", GOLDEN_IMAGE, folder / "b.png", "-q", "1,2", "--json")  # a single file
    assert one.returncode == 0, one.stderr.decode()
    report = json.loads(one.stdout)
    assert report["files"] == [str(folder / "b.png")]
    assert [row["quality"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["rate"] == 8 * len(codec.encode_image(Image.open(folder / "b.png"), row["quality"])) / (200 * 180)
    result = cli("eval", GOLDEN_IMAGE, folder, "-q", "2", "--files", "1")
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0 and lines[0].endswith(f"on 1 image of {folder}")
    assert lines[1].split() == ["|", "q", "|", "bpp", "|", "PSNR", "dB", "|", "encode", "img/s", "|", "decode", "img/s", "|"]


def test_eval_that_skips_a_file_prints_its_report_and_exits_1(cli, tiny_model_path, tmp_path, signal):
    """eval exited 0 after skipping an unreadable file, where the folder commands exit 1."""
    (tmp_path / "speech").mkdir()
    soundfile.write(tmp_path / "speech" / "a.wav", signal(1, 1600, 16000).T, 16000)
    (tmp_path / "speech" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    for extra in ([], ["--json"]):
        result = cli("eval", tiny_model_path, tmp_path / "speech", "-q", "2", *extra, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert lines[0].startswith(f"skipping {tmp_path / 'speech' / 'broken.wav'}: cannot read audio: ")
        assert lines[-1] == "vqcodec: error: 1 of 2 files could not be measured (listed above)"
        if extra:
            assert json.loads(result.stdout)["files"] == [str(tmp_path / "speech" / "a.wav")]
        else:
            assert result.stdout.startswith(f"tiny ") and "on 1 file of" in result.stdout and "| q |" in result.stdout
    result = cli("eval", tiny_model_path, tmp_path / "speech" / "a.wav", "-q", "2", text=True)
    assert result.returncode == 0, result.stderr
    # one file is named as itself, not as 'on 1 file of a.wav'
    assert result.stdout.splitlines()[0].endswith(f") on {tmp_path / 'speech' / 'a.wav'}")

def test_eval_of_a_recording_above_full_scale_warns_once_in_one_line_naming_it(cli, codec, tiny_model_path, tmp_path,
                                                                              signal):
    """eval showed encode_audio's warning as Python shows a UserWarning: two lines, 'click/core.py:911: UserWarning:
    the audio is coded at ...' and 'return callback(...)', naming neither the file nor vqcodec; encode's is one line
    that names the file."""
    soundfile.write(tmp_path / "loud.wav", signal(1, 1600, 16000).T * 2 ** 15, 16000, subtype="FLOAT")
    result = cli("eval", tiny_model_path, tmp_path / "loud.wav", "-q", "1,2", text=True)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(f"vqcodec: warning: {re.escape(str(tmp_path / 'loud.wav'))} is coded at \\+[0-9.]+ dB above "
                        "full scale \\(float samples up to [0-9.e+]+\\); the codec is made for audio within \\+-1.0 and "
                        "decodes within it, so the loud parts come out limited and distorted: scale it down first\n",
                        result.stderr), result.stderr
    from vqcodec.evaluate import evaluate

    with pytest.warns(UserWarning) as caught:
        evaluate(codec, [tmp_path / "loud.wav"], [1, 2])
    assert [str(item.message).split(" is coded at")[0] for item in caught] == [str(tmp_path / "loud.wav")]


def test_eval_of_a_folder_leaves_hidden_files_out_silently(cli, tiny_model_path, tmp_path, signal):
    """An AppleDouble ._a.wav (not audio) was a `skipping` line and made eval exit 1."""
    (tmp_path / "speech" / ".ipynb_checkpoints").mkdir(parents=True)
    soundfile.write(tmp_path / "speech" / "a.wav", signal(1, 1600, 16000).T, 16000)
    soundfile.write(tmp_path / "speech" / ".ipynb_checkpoints" / "a.wav", signal(1, 1600, 16000).T, 16000)
    (tmp_path / "speech" / "._a.wav").write_bytes(b"\x00\x05\x16\x07AppleDouble, not audio")
    result = cli("eval", tiny_model_path, tmp_path / "speech", "-q", "2", "--json", text=True)
    assert result.returncode == 0 and "skipping" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["files"] == [str(tmp_path / "speech" / "a.wav")]


def test_eval_refuses_bad_input_in_one_line(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("eval", GOLDEN_IMAGE, tmp_path / "empty"))
    assert_one_line_error(cli("eval", GOLDEN_IMAGE, tmp_path / "missing"))
    (tmp_path / "loop").symlink_to("loop")  # was 'no such file or directory'
    result = cli("eval", GOLDEN_IMAGE, tmp_path / "loop")
    assert result.stderr.decode() == f"vqcodec: error: {tmp_path / 'loop'}: Too many levels of symbolic links\n"
    result = cli("eval", GOLDEN_IMAGE, "/dev/null")  # was 'no such file or directory'
    assert_one_line_error(result)
    assert result.stderr.decode() == "vqcodec: error: /dev/null: not a regular file or a directory (eval reads no stdin, pipes or devices)\n"
    result = cli("eval", GOLDEN_IMAGE, "-")  # was '-: no such file or directory'
    assert_one_line_error(result)
    assert result.stderr.decode() == "vqcodec: error: -: not a regular file or a directory (eval reads no stdin, pipes or devices)\n"
    soundfile.write(tmp_path / "c.wav", np.zeros(100), 16000)
    result = cli("eval", GOLDEN_IMAGE, tmp_path / "c.wav")  # a file of the other kind
    assert_one_line_error(result)
    assert "not an image" in result.stderr.decode()
    (tmp_path / "one").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "one" / "a.png")
    assert_one_line_error(cli("eval", GOLDEN_IMAGE, tmp_path / "one", "-q", "99"))
    result = cli("eval", GOLDEN_IMAGE, tmp_path / "one", "-q", "two")  # named as the range check names it
    assert result.stderr.decode() == "vqcodec: error: -q takes comma-separated integers, not 'two'\n"
    result = cli("eval", GOLDEN_IMAGE, tmp_path / "one", "--rates", "0.5,inf")  # was 'must be positive, not ...'
    assert_one_line_error(result)
    assert result.stderr.decode() == "vqcodec: error: --rates must be positive numbers of bits per pixel (finite), not '0.5,inf'\n"
    soundfile.write(tmp_path / "one" / "b.wav", np.zeros(100), 16000)  # audio, ignored for an image model
    (tmp_path / "one" / "a.png").write_bytes(b"\x89PNG broken")
    assert_one_line_error(cli("eval", GOLDEN_IMAGE, tmp_path / "one" / "a.png"))  # no file could be read


def test_eval_of_a_folder_that_no_file_of_could_be_read_lists_each(cli, tiny_model_path, tmp_path):
    """eval said only why the first file of such a folder could not be read; it lists each, as encode does."""
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    result = cli("eval", tiny_model_path, tmp_path, "-q", "2", text=True)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == [f"skipping {tmp_path / name}"
                                                        for name in ("a.wav", "b.wav")]
    assert lines[2:] == ["vqcodec: error: 2 of 2 files could not be measured (listed above): nothing was measured"]


def test_stoi_of_too_little_speech_is_left_out_not_counted_as_zero(signal):
    pytest.importorskip("pystoi")
    from vqcodec import metrics

    short = signal(1, 3200, 16000)[0]  # 0.2 s: under pystoi's 30 frames
    assert metrics.stoi_score(short, short) is None
    long = signal(1, 32000, 16000)[0]
    assert metrics.stoi_score(long, long) > 0.99


def test_pesq_of_speech_at_another_rate_is_measured_at_16_khz_not_dropped():
    # pesq refuses wide band at any rate but 16 kHz, and pesq_wb took that refusal for "no utterance"
    pytest.importorskip("pesq")
    import soxr

    speech, rate = soundfile.read(DATA / "speech.flac", dtype="float32")
    assert rate == 16000
    noisy = speech + np.random.default_rng(0).normal(0, 0.01, speech.shape).astype(np.float32)
    at_16k = metrics.pesq_wb(speech, noisy, 16000)
    for other in (8000, 44100):
        score = metrics.pesq_wb(soxr.resample(speech, rate, other), soxr.resample(noisy, rate, other), other)
        assert score is not None and 1 < score < 4.7
    assert metrics.pesq_wb(soxr.resample(speech, rate, 48000), soxr.resample(noisy, rate, 48000), 48000) \
        == pytest.approx(at_16k, abs=0.05)


def test_pesq_of_a_long_signal_is_scored_in_pieces_not_crashing_the_process():
    # the pesq library writes past its 50-utterance tables on long signals and dies of a segmentation
    # fault (`vqcodec eval speech16k` on a 133 s song did): 60 s of 0.25 s bursts crashed it
    pytest.importorskip("pesq")

    script = """
import numpy as np
from vqcodec import metrics
t = np.arange(60 * 16000) / 16000
rng = np.random.default_rng(0)
ref = (0.1 * rng.standard_normal(t.size) * (t % 0.5 < 0.25)).astype(np.float32)
deg = ref + rng.normal(0, 0.01, t.size).astype(np.float32)
pieces = [metrics.pesq_wb(ref[k:k + 320000], deg[k:k + 320000]) for k in range(0, t.size, 320000)]
print(metrics.pesq_wb(ref, deg), np.mean(pieces))
"""
    result = run_python("-c", script, timeout=120, text=True)
    assert result.returncode == 0, result.stderr
    whole, pieces = map(float, result.stdout.split())
    assert 1 < whole < 4.7 and whole == pytest.approx(pieces)  # three 20 s pieces of equal weight


def test_pesq_of_a_short_signal_is_scored_whole_as_before():
    pytest.importorskip("pesq")
    from pesq import pesq

    speech, rate = soundfile.read(DATA / "speech.flac", dtype="float32")
    noisy = speech + np.random.default_rng(0).normal(0, 0.01, speech.shape).astype(np.float32)
    assert metrics.pesq_wb(speech, noisy, rate) == pesq(rate, speech.astype(np.float64), noisy.astype(np.float64), "wb")
    twenty = np.tile(speech, -(-20 * rate // speech.size))[:20 * rate]  # the longest scored at once
    noisy = twenty + np.random.default_rng(1).normal(0, 0.01, twenty.shape).astype(np.float32)
    assert metrics.pesq_wb(twenty, noisy, rate) == pesq(rate, twenty.astype(np.float64), noisy.astype(np.float64), "wb")


def test_eval_of_a_clip_too_short_for_the_metrics_windows_gives_a_table(cli, tiny_model_path, tmp_path, signal):
    # under half an STFT window (log-mel) and under one pystoi frame: both used to raise a traceback
    assert metrics.log_mel_l1(signal(1, 10, 16000)[0], signal(1, 10, 16000, seed=1)[0]) > 0
    assert metrics.log_mel_l1(signal(1, 10, 16000)[0], signal(1, 10, 16000)[0]) == 0
    if importlib.util.find_spec("pystoi"):
        assert metrics.stoi_score(signal(1, 10, 16000)[0], signal(1, 10, 16000)[0]) is None
    folder = tmp_path / "short"
    folder.mkdir()
    soundfile.write(folder / "a.wav", signal(1, 10, 16000)[0], 16000)
    result = cli("eval", tiny_model_path, folder, "-q", "4", "--json")
    assert result.returncode == 0, result.stderr.decode()
    row, = json.loads(result.stdout)["rows"]
    assert np.isfinite(row["log_mel"]) and row.get("stoi") is None


def test_a_silent_recording_is_left_out_of_the_stoi_and_si_sdr_means(cli, tiny_model_path, tmp_path, signal):
    # pystoi scores digital silence 0 without a warning, and SI-SDR against silence is eps over the
    # noise (about -70 dB): either pulled the folder's mean far down
    speech = signal(1, 32000, 16000)[0]
    assert metrics.si_sdr(np.zeros(32000), speech) != metrics.si_sdr(np.zeros(32000), speech)  # nan
    if importlib.util.find_spec("pystoi"):
        assert metrics.stoi_score(np.zeros(32000), speech) is None
    folder = tmp_path / "with_silence"
    folder.mkdir()
    soundfile.write(folder / "a.wav", speech, 16000)
    result = cli("eval", tiny_model_path, folder / "a.wav", "-q", "4", "--json")
    alone, = json.loads(result.stdout)["rows"]
    soundfile.write(folder / "b.wav", np.zeros(32000), 16000)
    result = cli("eval", tiny_model_path, folder, "-q", "4", "--json")
    assert result.returncode == 0, result.stderr.decode()
    row, = json.loads(result.stdout)["rows"]
    assert row["si_sdr"] == pytest.approx(alone["si_sdr"])
    assert row.get("stoi") == pytest.approx(alone.get("stoi"))


def test_eval_table_shows_each_target_rate_as_given(cli, tiny_model_path, tmp_path, signal):
    soundfile.write(tmp_path / "a.wav", signal(1, 8000, 16000)[0], 16000)
    result = cli("eval", tiny_model_path, tmp_path / "a.wav", "--rates", "0.075,0.085,1000")
    assert result.returncode == 0, result.stderr.decode()
    targets = [line.split("|")[1].strip() for line in result.stdout.decode().splitlines()[3:]]
    assert targets == ["0.075", "0.085", "1000"]  # not 0.07 / 0.09 / 1000.00: rounding hid which row is which


def test_eval_table_shows_a_speed_below_one_image_a_second():
    """A rate search on a large photo encodes well under one image a second: one decimal showed it as 0.0."""
    from vqcodec.evaluate import table

    row = {"quality": 20, "rate": 0.3, "psnr": 30.0, "encode_speed": 0.043, "decode_speed": 2.04}
    speeds = [cell.strip() for cell in table({"kind": "image", "rows": [row]}).splitlines()[2].split("|")[-3:-1]]
    assert speeds == ["0.043", "2.0"]


def test_eval_codes_each_image_in_its_own_mode_as_encode_does(cli, tmp_path):
    # eval used to code every image converted to RGB: an RGBA photo's alpha was left out of the rate,
    # and 16-bit grey was clipped to white by Pillow's conversion before coding and measuring
    from vqcodec.imageio import image_to_planes

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (40, 1))).save(tmp_path / "grey16.png")
    codec = Codec.load(str(GOLDEN_IMAGE))
    for name in ("rgba.png", "grey16.png"):
        result = cli("eval", GOLDEN_IMAGE, tmp_path / name, "-q", "2", "--json")
        assert result.returncode == 0, result.stderr.decode()
        row, = json.loads(result.stdout)["rows"]
        with Image.open(tmp_path / name) as image:
            data = codec.encode_image(image, 2)
            reference = image_to_planes(image)[0]
        assert row["rate"] == 8 * len(data) / (40 * 48)
        assert row["psnr"] == pytest.approx(metrics.psnr(reference, image_to_planes(codec.decode_image(data))[0]))


def test_eval_measures_every_channel_of_a_recording(codec, tmp_path, signal):
    from vqcodec.evaluate import evaluate

    stereo = signal(2, 4000, 16000)
    stereo[1] *= 0.3  # the channels differ in level and pitch, so their measures differ
    soundfile.write(tmp_path / "a.wav", stereo.T, 16000, subtype="FLOAT")
    row, = evaluate(codec, [tmp_path / "a.wav"], [4])["rows"]
    audio, _ = read_audio(tmp_path / "a.wav", codec.sample_rate)
    decoded, _ = codec.decode_audio(codec.encode_audio(audio, codec.sample_rate, 4))
    per_channel = [metrics.log_mel_l1(a, d, codec.sample_rate) for a, d in zip(audio, decoded)]
    assert abs(per_channel[0] - per_channel[1]) > 0.01
    assert row["log_mel"] == pytest.approx(np.mean(per_channel), rel=1e-5)
    assert row["si_sdr"] == pytest.approx(np.mean([metrics.si_sdr(a, d) for a, d in zip(audio, decoded)]), rel=1e-5)


def test_eval_measures_a_recording_of_more_channels_than_samples(codec, tmp_path, signal):
    """A file's audio is (channels, samples) whatever its shape: one of 4 channels of 2 samples was skipped as if it
    were an array given as (samples, channels)."""
    from vqcodec.evaluate import evaluate

    soundfile.write(tmp_path / "a.wav", signal(4, 2, 16000).T, 16000, subtype="FLOAT")
    report = evaluate(codec, [tmp_path / "a.wav"], [4])
    assert not report.get("skipped") and np.isfinite(report["rows"][0]["log_mel"]), report


def test_evaluate_refuses_no_qualities_and_targets_that_are_not_positive(codec, tmp_path, signal):
    """... and several qualities with targets, of which it used the first alone, as `eval --rates` refuses them;
    no targets (or a generator, which the check used up) measured quality levels, where `--rates ""` is refused."""
    from vqcodec import VQCodecError
    from vqcodec.evaluate import evaluate

    soundfile.write(tmp_path / "a.wav", signal(1, 4000, 16000).T, 16000, subtype="FLOAT")
    no_target = "targets must hold at least one rate (kbps); None measures quality levels instead"
    for qualities, targets, message in (([], None, "qualities must hold at least one quality level"),  # an IndexError
                                        (None, [], no_target), ([2], (), no_target),
                                        ([2], [0.0], "targets must be positive numbers of kbps, not [0.0]"),  # each file
                                        ([2], [8, -3], "targets must be positive numbers of kbps, not [8, -3]"),  # skipped
                                        ([2], ["8"], "targets must be positive numbers of kbps, not ['8']"),
                                        # measured at 2 codebooks at most, 4 left out without a word (eval refuses it)
                                        ([2, 4], [1.0], "with targets, qualities takes one level: the most codebooks "
                                                        "a file may use, not [2, 4]")):
        with pytest.raises(VQCodecError) as refused:
            evaluate(codec, [tmp_path / "a.wav"], qualities, targets=targets)
        assert str(refused.value) == message
    rows = evaluate(codec, [tmp_path / "a.wav"], [2], targets=(t for t in [1000.0]))["rows"]
    assert [(row["quality"], row["target"]) for row in rows] == [(2, 1000.0)]


def test_evaluate_without_qualities_measures_the_levels_eval_measures_without_q(codec, tiny_model_path, tmp_path,
                                                                               signal, capsys):
    """eval's default levels (1, 2, 4, ... and the highest; with --rates, the highest) were the command's alone:
    evaluate required its qualities."""
    from types import SimpleNamespace

    from vqcodec.cli import run
    from vqcodec.evaluate import default_levels, evaluate

    assert [default_levels(SimpleNamespace(num_codebooks=n)) for n in (1, 2, 6, 16)] == [[1], [1, 2], [1, 2, 4, 6],
                                                                                        [1, 2, 4, 8, 16]]
    soundfile.write(tmp_path / "a.wav", signal(1, 4000, 16000).T, 16000, subtype="FLOAT")
    assert [row["quality"] for row in evaluate(codec, [tmp_path / "a.wav"])["rows"]] == default_levels(codec) == [1, 2, 4]
    assert [row["quality"] for row in evaluate(codec, [tmp_path / "a.wav"], targets=[1000.0])["rows"]] == [4]
    for rates, levels in (([], [1, 2, 4]), (["--rates", "1000"], [4])):
        assert run(["eval", str(tiny_model_path), str(tmp_path / "a.wav"), "--json", *rates]) == 0
        assert [row["quality"] for row in json.loads(capsys.readouterr().out)["rows"]] == levels


def test_evaluate_refuses_one_path_or_number_where_it_takes_a_list_in_one_line(codec, tmp_path, signal):
    """files="a.wav" was read as its characters, each skipped ('cannot read audio a: No such file or
    directory'), and qualities=2 or targets=1.5 raised a bare TypeError ('int' object is not iterable)."""
    from vqcodec import VQCodecError
    from vqcodec.evaluate import evaluate

    soundfile.write(tmp_path / "a.wav", signal(1, 4000, 16000).T, 16000, subtype="FLOAT")
    for files, qualities, targets, message in (
            (str(tmp_path / "a.wav"), [2], None, r"^files is a list of paths \(str or Path\) of media, not '/.*: "
                                                 r"give \[path\] for one file$"),
            (tmp_path / "a.wav", [2], None, "give \\[path\\] for one file$"),
            ((p for p in [tmp_path / "a.wav"]), [2], None, "^files is a list of paths"),
            ([tmp_path / "a.wav"], 2, None, r"^qualities is a list of numbers, not 2: give \[2\] for one$"),
            ([tmp_path / "a.wav"], [2], 1.5, r"^targets is a list of numbers, not 1.5: give \[1.5\] for one$")):
        with pytest.raises(VQCodecError, match=message):
            evaluate(codec, files, qualities, targets=targets)
    for callback in ("log", "on_skip", "on_warning"):  # called at the 10th file, a skipped one or a loud one
        with pytest.raises(VQCodecError, match=f"^{callback} must be a function or None, not 'x'$"):
            evaluate(codec, [tmp_path / "a.wav"], [2], **{callback: "x"})
    assert evaluate(codec, (tmp_path / "a.wav",), (2,), targets=(4.0,))["files"] == [str(tmp_path / "a.wav")]
    assert [row["quality"] for row in evaluate(codec, [tmp_path / "a.wav"], range(1, 3))["rows"]] == [1, 2]
    assert [row["quality"] for row in evaluate(codec, [tmp_path / "a.wav"], np.array([2, 3]))["rows"]] == [2, 3]
    with pytest.raises(VQCodecError, match=r"^qualities is a list of numbers, not array\(2\)"):
        evaluate(codec, [tmp_path / "a.wav"], np.array(2))


def test_a_row_that_no_file_reached_holds_the_measures_as_null(codec, tmp_path, signal):
    """Where no file reached any target, the rows left the measures out, where the README has them null."""
    from vqcodec.evaluate import evaluate

    soundfile.write(tmp_path / "a.wav", signal(1, 4000, 16000).T, 16000, subtype="FLOAT")
    reached, = evaluate(codec, [tmp_path / "a.wav"], [2], targets=[1000.0])["rows"]
    unreached, = evaluate(codec, [tmp_path / "a.wav"], [2], targets=[0.001])["rows"]
    assert unreached["unreached"] == 1 and {"si_sdr", "log_mel"} <= set(reached)
    assert list(unreached) == list(reached)
    assert all(unreached[key] is None for key in reached if key not in ("quality", "target", "unreached"))


def test_a_repeated_target_or_level_is_one_row_that_counts_each_file_once(cli, codec, tiny_model_path, tmp_path, signal):
    """--rates 0.001,0.001 gave two rows, each with 2 files unreached of the 1 measured."""
    from vqcodec.evaluate import evaluate

    soundfile.write(tmp_path / "a.wav", signal(1, 4000, 16000).T, 16000, subtype="FLOAT")
    rows = evaluate(codec, [tmp_path / "a.wav"], [2, 2], targets=[0.001, 0.001, 1000, 1000.0])["rows"]
    assert [(row["target"], row["unreached"]) for row in rows] == [(0.001, 1), (1000.0, 0)]
    assert [row["quality"] for row in evaluate(codec, [tmp_path / "a.wav"], [2, 1, 2])["rows"]] == [2, 1]
    result = cli("eval", tiny_model_path, tmp_path / "a.wav", "--rates", "0.001,0.001", "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert [row["unreached"] for row in json.loads(result.stdout)["rows"]] == [1]


def test_eval_of_one_file_without_a_media_extension_reads_it_as_encode_does(cli, tiny_model_path, tmp_path, signal):
    """eval refused 'talk' or 'talk.take' as 'not an audio file by its extension', which encode codes."""
    soundfile.write(tmp_path / "talk.take", signal(1, 1600, 16000).T, 16000, format="WAV")
    result = cli("eval", tiny_model_path, tmp_path / "talk.take", "-q", "2", "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["files"] == [str(tmp_path / "talk.take")]
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    result = cli("eval", tiny_model_path, tmp_path / "a.png")  # named as the other kind: still refused
    assert_one_line_error(result)
    assert "a.png: not an audio file (model tiny codes audio) by its extension" in result.stderr.decode()
    (tmp_path / "talk.vq").write_bytes(b"VQ")  # no media extension either, but not to be read as audio
    result = cli("eval", tiny_model_path, tmp_path / "talk.vq")
    assert_one_line_error(result)
    assert "talk.vq: a .vq file; eval measures a model on the original media" in result.stderr.decode()


def test_evaluate_names_a_vq_file_as_one_as_eval_does(codec, tmp_path, signal):
    """evaluate skipped a .vq file as 'cannot read audio talk.vq: Format not recognised.', where eval says what it
    is (test above); it says so too, of each such file it skips."""
    from vqcodec.evaluate import evaluate

    soundfile.write(tmp_path / "a.wav", signal(1, 4000, 16000).T, 16000, subtype="FLOAT")
    (tmp_path / "talk.vq").write_bytes(codec.encode(tmp_path / "a.wav", 2))
    said = f"{tmp_path / 'talk.vq'}: a .vq file; evaluate measures a model on the original media, which it codes"
    skipped = []
    report = evaluate(codec, [tmp_path / "a.wav", tmp_path / "talk.vq"], [2], on_skip=lambda *skip: skipped.append(skip))
    assert report["skipped"] == [{"file": str(tmp_path / "talk.vq"), "reason": said}]
    assert skipped == [(tmp_path / "talk.vq", said)]
    with pytest.raises(VQCodecError, match=f"^no file could be measured \\({re.escape(said)}\\)$"):
        evaluate(codec, [tmp_path / "talk.vq"], [2])


def test_files_of_gives_what_eval_measures_of_a_file_or_folder_and_refuses_what_it_refuses(codec, tmp_path, signal,
                                                                                            capsys):
    """eval's walk (one file or a folder, a .vq file or a file of the other kind refused, a second name of a file
    left out) was the command's alone: evaluate took a list of files, and skipped a .vq file or a photo in it."""
    from vqcodec.evaluate import evaluate, files_of

    folder = tmp_path / "speech"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.wav", "sub/a.wav"):
        soundfile.write(folder / name, signal(1, 1600, 16000).T, 16000)
    (folder / "c.wav").symlink_to("b.wav")
    (folder / "gone.wav").symlink_to("nowhere.wav")
    (folder / ".hidden.wav").write_bytes((folder / "b.wav").read_bytes())
    Image.new("RGB", (20, 20)).save(folder / "photo.png")
    passed_over = []
    assert files_of(codec, folder, passed_over) == [folder / "b.wav", folder / "sub" / "a.wav"]
    assert capsys.readouterr().err == f"skipping {folder / 'c.wav'}: the same file as {folder / 'b.wav'}\n"
    assert [path for path, _ in passed_over] == [folder / "gone.wav"]
    assert files_of(codec, str(folder / "b.wav")) == [folder / "b.wav"]
    assert evaluate(codec, files_of(codec, folder), [2])["files"] == [str(folder / "b.wav"), str(folder / "sub" / "a.wav")]

    (tmp_path / "talk.vq").write_bytes(b"VQ")
    (tmp_path / "only").mkdir()
    for path, said in ((tmp_path / "talk.vq", "a .vq file; evaluate measures a model on the original media"),
                       (folder / "photo.png", "not an audio file (model tiny codes audio) by its extension"),
                       (tmp_path / "only", "no audio files found"),
                       (tmp_path / "missing", "no such file or directory"),
                       ("/dev/null", "not a regular file or a directory (evaluate reads no stdin, pipes or devices)")):
        with pytest.raises(VQCodecError, match=f"^{re.escape(f'{path}: {said}')}"):
            files_of(codec, path)
    for path in ("", None, 5):  # "" measured the current folder, the others were a bare TypeError
        with pytest.raises(VQCodecError, match=r"^path is the path of a file or folder \(a str or Path, not empty\), "
                                               f"not {re.escape(repr(path))}$"):
            files_of(codec, path)


def test_eval_measures_a_file_of_two_names_in_a_folder_once(cli, tiny_model_path, tmp_path, signal):
    """A link to a file of the folder (symbolic or hard) was measured again, weighing that file twice; left
    out, it gets the `skipping` line that train gives it (data.one_name_each), where eval said nothing."""
    import os

    (tmp_path / "speech").mkdir()
    soundfile.write(tmp_path / "speech" / "a.wav", signal(1, 1600, 16000).T, 16000)
    soundfile.write(tmp_path / "speech" / "b.wav", signal(1, 3200, 16000).T, 16000)
    (tmp_path / "speech" / "c.wav").symlink_to("a.wav")
    os.link(tmp_path / "speech" / "b.wav", tmp_path / "speech" / "d.wav")
    result = cli("eval", tiny_model_path, tmp_path / "speech", "-q", "2", "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["files"] == [str(tmp_path / "speech" / name) for name in ("a.wav", "b.wav")]
    folder = tmp_path / "speech"
    assert result.stderr.decode().splitlines()[:2] == [f"skipping {folder / 'c.wav'}: the same file as {folder / 'a.wav'}",
                                                       f"skipping {folder / 'd.wav'}: the same file as {folder / 'b.wav'}"]
    assert json.loads(result.stdout)["skipped"] == []  # not a file that could not be measured: the status stays 0


def test_eval_shows_its_progress_as_train_does_in_place_on_a_terminal_only(cli, tiny_model_path, tmp_path, signal):
    """eval wrote 'measured 10/N files' as a line of its own on a terminal too, where train rewrites its step line
    in place; to a file or a CI log both write a line each."""
    folder = tmp_path / "speech"
    folder.mkdir()
    for number in range(10):
        soundfile.write(folder / f"{number}.wav", signal(1, 800, 16000).T, 16000)
    code, terminal = on_terminal("eval", tiny_model_path, folder, "-q", "1", "--json")
    assert code == 0, terminal
    assert ["measured 10/10 files"] in terminal_moments(terminal)  # shown in place: no line of its own
    assert terminal_screen(terminal) == [""]  # and cleared at the end
    logged = cli("eval", tiny_model_path, folder, "-q", "1", "--json")
    assert logged.returncode == 0 and logged.stderr == b"measured 10/10 files\n", logged.stderr


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
def test_a_warning_naming_a_file_with_a_line_break_is_one_line(cli, tiny_model_path, tmp_path, signal):
    """The 'vqcodec: warning:' line (what the MP3 decoder said of a file) printed a line break of the file's
    name as it is, splitting the line, where the error and skipping lines show it as \\n."""
    folder = tmp_path / "speech"
    folder.mkdir()
    path = folder / "da\nmaged.mp3"
    soundfile.write(path, signal(1, 16000, 16000).T, 16000)
    path.write_bytes(path.read_bytes()[:-600])  # cut: its header still gives the whole length
    result = cli("eval", tiny_model_path, folder, "-q", "1", "--json")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vqcodec: warning: {folder}/da\\nmaged.mp3: the MP3 decoder says: ")


def test_eval_refuses_an_image_whose_encoding_would_not_fit_in_memory_from_its_header(tmp_path, monkeypatch):
    """eval opened images without encoding's memory check: a header declaring a large image had its pixels read
    before encode_image refused it. It is skipped from its header, as encode refuses it; what fits is measured."""
    from test_image import png_claiming
    from vqcodec import codec as codec_module
    from vqcodec import imageio
    from vqcodec.evaluate import evaluate

    (tmp_path / "large.png").write_bytes(png_claiming(3000, 3000))
    Image.new("RGB", (48, 40), "olive").save(tmp_path / "small.png")
    codec = Codec.load(str(GOLDEN_IMAGE))
    monkeypatch.setattr(codec_module, "memory_bound", lambda: 100_000_000)  # the large one takes 0.2 GB
    read = imageio.load_pixels
    read_sizes = []
    monkeypatch.setattr(imageio, "load_pixels", lambda image, *rest: read_sizes.append(image.size) or read(image, *rest))
    report = evaluate(codec, [tmp_path / "large.png", tmp_path / "small.png"], [2])
    assert report["files"] == [str(tmp_path / "small.png")] and read_sizes == [(48, 40)]
    reason, = [entry["reason"] for entry in report["skipped"]]
    assert re.fullmatch(re.escape(f"cannot read image {tmp_path / 'large.png'}: ") +
                        r"encoding the 3000x3000 1-bit image takes 0\.\d GB, more than the memory this process may use "
                        r"\(0\.1 GB\); crop or scale it to fewer pixels", reason), reason


def test_eval_skips_an_empty_file_as_encoding_refuses_it(codec, tmp_path):
    """eval skipped an empty file with the reader's words, 'cannot read audio X: Format not recognised.' ('cannot read
    image X: not an image format Pillow reads'), where encoding it says 'X: file is empty'."""
    from vqcodec.evaluate import evaluate

    for model, name in ((codec, "empty.wav"), (Codec.load(str(GOLDEN_IMAGE)), "empty.png")):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(VQCodecError, match=f"^no file could be measured \\({re.escape(str(tmp_path / name))}: "
                                               "file is empty\\)$"):
            evaluate(model, [tmp_path / name], [2])
