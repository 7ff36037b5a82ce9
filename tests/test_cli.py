"""The `vqcodec` command line, run as a subprocess (`python -m vqcodec`) with a tiny untrained model.

Every failure must be one line on stderr starting with "vqcodec: error:", a non-zero exit status,
no traceback, and no output file (not even a hidden temporary one) left behind.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import soundfile

from vqcodec import format as vqformat

from conftest import (GOLDEN, Terminal, _cli_server, make_tiny_model, on_terminal, run_cli, run_python,  # noqa: E402
                      cli_peak_rss, run_cli_on, shared_channel_file, start_cli, terminal_moments, terminal_screen)

COMMANDS = ["encode", "decode", "info", "codes", "pack", "models", "train", "eval", "fit-prior"]


def write_wav(path: Path, signal, channels=2, rate=22050, samples=11025, subtype="PCM_16"):
    soundfile.write(path, signal(channels, samples, rate).T, rate, subtype=subtype)
    return path


def assert_one_line_error(result):
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0, f"exit status 0; stderr: {stderr!r}"
    assert "Traceback" not in stderr and b"Traceback" not in result.stdout, stderr
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith("vqcodec: error:") and lines[0][len("vqcodec: error:"):].strip(), stderr
    assert result.stdout == b"", result.stdout[:200]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------- happy paths

def peak_rss(stdin_path: Path, stdout_path: Path, *args) -> int:
    """Peak resident memory, in bytes, of `vqcodec ARGS` reading stdin_path on stdin and writing stdout_path."""
    with open(stdin_path, "rb") as stdin, open(stdout_path, "wb") as stdout:
        code, peak = cli_peak_rss(*args, stdin=stdin, stdout=stdout)
    assert code == 0, f"vqcodec {' '.join(map(str, args))} exited with {code}"
    return peak


def test_stdin_and_stdout_are_spooled_to_disk_not_memory(tmp_path, bighop_model_path):
    """Forty minutes of audio through stdin and stdout need no more memory than one minute does."""
    rate, peaks = 8000, {}
    for minutes in (1, 40):
        samples = minutes * 60 * rate
        t = np.arange(samples) / rate
        wav = tmp_path / f"{minutes}.wav"
        soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, subtype="PCM_16")
        vq, decoded = tmp_path / f"{minutes}.vq", tmp_path / f"{minutes}.out.wav"
        peaks[minutes] = (peak_rss(wav, vq, "encode", "-", "-", "-m", bighop_model_path, "-q", "1"),
                          peak_rss(vq, decoded, "decode", "-", "-", "-m", bighop_model_path))
        assert soundfile.info(str(decoded)).frames == samples
    audio_bytes = 40 * 60 * rate * 2  # the 40-minute WAV: 38 MB
    for step, short, long in zip(("encode", "decode"), peaks[1], peaks[40]):
        assert long - short < audio_bytes / 4, (
            f"{step}: peak memory grew by {(long - short) / 1e6:.0f} MB for {audio_bytes / 1e6:.0f} MB more audio")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, signal, cli, tiny_model_path):
    """in.wav (stereo, 22.05 kHz, PCM_16) encoded through the CLI to out.vq."""
    folder = tmp_path_factory.mktemp("cli_roundtrip")
    source = write_wav(folder / "in.wav", signal)
    result = cli("encode", source, folder / "out.vq", "-m", tiny_model_path, "-q", "3")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"" and result.stderr == b""
    return folder


def test_audio_above_full_scale_is_coded_at_a_level_gain(tmp_path, signal, cli, tiny_model_path, codec):
    audio = signal(1, 8000, 8000)
    hot = tmp_path / "in" / "hot.wav"
    hot.parent.mkdir()
    soundfile.write(hot, (audio * 2.5 / np.abs(audio).max()).T, 8000, subtype="FLOAT")
    soundfile.write(tmp_path / "in" / "full.wav", (audio / np.abs(audio).max()).T, 8000, subtype="FLOAT")
    result = cli("encode", hot, tmp_path / "hot.vq", "-m", tiny_model_path, "-q", "2")
    assert result.returncode == 0 and result.stderr == b""
    header = vqformat.parse_header((tmp_path / "hot.vq").read_bytes())
    assert header.flags & vqformat.FLAG_LEVEL_GAIN and header.gain == pytest.approx(5.0, rel=1e-4)
    assert vqformat.parse_header(codec.recode((tmp_path / "hot.vq").read_bytes(), 1)).gain == header.gain
    info = cli("info", tmp_path / "hot.vq", "-m", tiny_model_path)
    assert "coded divided by 5, decoded multiplied by it" in info.stdout.decode()
    assert json.loads(cli("info", tmp_path / "hot.vq", "--json").stdout)["gain"] == pytest.approx(5.0, rel=1e-4)
    # WAV comes back as float, above full scale; FLAC has no float samples, so it is clipped to full scale
    assert cli("decode", tmp_path / "hot.vq", tmp_path / "hot.wav", "-m", tiny_model_path).returncode == 0
    assert soundfile.info(str(tmp_path / "hot.wav")).subtype == "FLOAT"
    assert np.abs(soundfile.read(tmp_path / "hot.wav")[0]).max() > 1.2
    result = cli("decode", tmp_path / "hot.vq", tmp_path / "hot.flac", "-m", tiny_model_path)
    assert result.returncode == 0 and np.abs(soundfile.read(tmp_path / "hot.flac")[0]).max() <= 1.0
    lines = result.stderr.decode().splitlines()  # with one warning line saying so
    assert len(lines) == 1 and lines[0].startswith(f"vqcodec: warning: {tmp_path / 'hot.flac'}: decoded audio above "
                                                   "full scale (peak ") and "clipped" in lines[0]
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "hot.vq").write_bytes((tmp_path / "hot.vq").read_bytes())
    result = cli("decode", tmp_path / "vq", tmp_path / "decoded", "-m", tiny_model_path, "--format", "flac")
    warnings = [line for line in result.stderr.decode().splitlines() if "warning" in line]
    assert result.returncode == 0 and len(warnings) == 1 and f"{tmp_path / 'decoded' / 'hot.flac'}: " in warnings[0]
    result = cli("encode", tmp_path / "in" / "full.wav", tmp_path / "full.vq", "-m", tiny_model_path, "-q", "2")
    assert result.returncode == 0 and result.stderr == b""  # a peak of exactly 1.0 is within full scale
    assert vqformat.parse_header((tmp_path / "full.vq").read_bytes()).gain == 2.0  # but louder than coded best
    soundfile.write(tmp_path / "usual.wav", (audio * 0.7 / np.abs(audio).max()).T, 8000, subtype="FLOAT")
    assert cli("encode", tmp_path / "usual.wav", tmp_path / "usual.vq", "-m", tiny_model_path).returncode == 0
    assert not vqformat.parse_header((tmp_path / "usual.vq").read_bytes()).flags & vqformat.FLAG_LEVEL_GAIN
    # beyond what the gain can bring down (256), a warning; folders warn per file
    soundfile.write(hot, (audio * 600 / np.abs(audio).max()).T, 8000, subtype="FLOAT")
    result = cli("encode", tmp_path / "in", tmp_path / "out", "-m", tiny_model_path, "-q", "2")
    assert result.returncode == 0
    warnings = [line for line in result.stderr.decode().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "hot.wav" in warnings[0] and "above full scale" in warnings[0]
    codec.encode_audio(audio * 0.5, 8000, 2)
    assert codec.level_warning("x") is None and codec.input_peak == pytest.approx(0.5 * np.abs(audio).max())


def test_encode_writes_a_valid_file(encoded, codec):
    data = (encoded / "out.vq").read_bytes()
    header, chunks, _ = vqformat.parse_file(data)
    assert (header.sample_rate, header.channels, header.length, header.quality) == (22050, 2, 11025, 3)
    assert header.model_id == codec.model_id
    assert data == codec.encode_audio_file(str(encoded / "in.wav"), 3)
    assert sorted(listing(encoded)) == ["in.wav", "out.vq"]  # no temporary file left


def test_decode_restores_rate_channels_and_length(encoded, cli, tiny_model_path):
    out = encoded / "decoded.wav"
    result = cli("decode", encoded / "out.vq", out, env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)})
    assert result.returncode == 0, result.stderr.decode()
    got, want = soundfile.info(str(out)), soundfile.info(str(encoded / "in.wav"))
    assert (got.samplerate, got.channels, got.frames) == (want.samplerate, want.channels, want.frames)
    assert got.format == "WAV"
    audio, _ = soundfile.read(str(out))
    assert np.isfinite(audio).all()
    out.unlink()


def test_a_shadowed_model_still_decodes_its_files(encoded, cli, tiny_model_path, tmp_path):
    """A model earlier in VQCODEC_MODEL_PATH with the same name hides the name, not the files' model."""
    make_tiny_model(tmp_path / "first", "tiny", seed=5)  # another model called tiny, found first
    env = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(tmp_path / "first"), str(tiny_model_path.parent)])}
    out = tmp_path / "decoded.wav"
    result = cli("decode", encoded / "out.vq", out, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert soundfile.info(str(out)).frames == 11025
    listed = json.loads(cli("models", "--json", env=env).stdout)
    tiny = [m for m in listed if m["name"] == "tiny"]
    assert [m["shadowed"] for m in tiny] == [False, True] and tiny[1]["path"] == str(tiny_model_path)
    info = json.loads(cli("info", encoded / "out.vq", "--json", env=env).stdout)
    assert info["model"] == str(tiny_model_path)  # the name would load the other one


def test_decode_with_model_path_and_other_format(encoded, cli, tiny_model_path):
    out = encoded / "decoded.flac"
    result = cli("decode", encoded / "out.vq", out, "-m", tiny_model_path)
    assert result.returncode == 0, result.stderr.decode()
    info = soundfile.info(str(out))
    assert (info.format, info.samplerate, info.channels, info.frames) == ("FLAC", 22050, 2, 11025)
    out.unlink()


def test_decode_refuses_a_format_that_contradicts_the_extension(encoded, cli, tiny_model_path, tmp_path):
    """--format flac wrote FLAC data under x.wav, and --format gif GIF under x.png (or under x.wav, for an
    image): refused in one line, before anything is written. A --format that the extension's container holds
    (Ogg Opus in .ogg), that says the same (JPEG for .jpg), or an extension that names no format is fine."""
    from PIL import Image

    from conftest import GOLDEN

    cases = [(encoded / "out.vq", tiny_model_path, "flac_named.wav", "flac", "WAV", "FLAC"),
             (GOLDEN / "golden_image_depth.vq", GOLDEN / "golden_image.safetensors", "gif_named.png", "gif", "PNG",
              "GIF"),
             (GOLDEN / "golden_image_depth.vq", GOLDEN / "golden_image.safetensors", "png_named.wav", "png", "WAV",
              "PNG")]
    for source, model, name, format_name, named, asked in cases:
        result = cli("decode", source, tmp_path / name, "-m", model, "--format", format_name)
        assert_one_line_error(result)
        assert result.stderr.decode() == (f"vqcodec: error: {tmp_path / name}: its extension names {named}, and "
                                          f"--format {format_name} asks for {asked}: leave --format out, or give the "
                                          "output a name of that format\n")
        assert not (tmp_path / name).exists()
    for source, model, name, format_name, kind in [
            (encoded / "out.vq", tiny_model_path, "opus.ogg", "opus", "OGG"),
            (encoded / "out.vq", tiny_model_path, "flac.data", "flac", "FLAC"),
            (GOLDEN / "golden_image_depth.vq", GOLDEN / "golden_image.safetensors", "same.jpg", "jpeg", "JPEG")]:
        rate = ["--rate", "16000"] if kind == "OGG" else []  # Opus holds no 22.05 kHz
        result = cli("decode", source, tmp_path / name, "-m", model, "--format", format_name, *rate)
        assert result.returncode == 0, result.stderr.decode()
        if kind == "JPEG":
            assert Image.open(tmp_path / name).format == kind
        else:
            assert soundfile.info(str(tmp_path / name)).format == kind
    shown = " ".join(cli("decode", "--help", text=True).stdout.split())
    assert "one that contradicts OUTPUT's extension is refused" in shown


def test_encode_and_codes_refuse_media_of_the_other_kind_in_plain_words(cli, tmp_path):
    """A photo given to an audio model, or audio to an image model, is refused saying what the model codes and
    what the input is ("codes images, but the input is audio"; it said "codes image")."""
    from conftest import GOLDEN

    data = Path(__file__).parent / "data"
    audio_model, image_model = GOLDEN / "golden_audio.safetensors", GOLDEN / "golden_image.safetensors"
    cases = [(data / "photo.png", audio_model, "model golden_audio codes audio, but the input is an image"),
             (data / "speech.flac", image_model, "model golden_image codes images, but the input is audio")]
    for media, model, message in cases:
        for command, output in (("encode", tmp_path / "out.vq"), ("codes", tmp_path / "out.npy")):
            result = cli(command, media, output, "-m", model)
            assert_one_line_error(result)
            assert result.stderr.decode() == f"vqcodec: error: {message}\n"
            assert not output.exists()


def test_decode_refuses_a_format_of_the_other_media_kind(cli, tmp_path):
    """--format png for an audio file, or --format wav for an image, is refused in one line before
    anything is decoded or written; for a folder, one whose .vq files are all of the other kind."""
    import shutil

    from conftest import GOLDEN

    cases = [("golden_audio_shared.vq", "golden_audio.safetensors", "png", "is an image format"),
             ("golden_audio_shared.vq", "golden_audio.safetensors", "jpg", "is an image format"),
             ("golden_image_depth.vq", "golden_image.safetensors", "wav", "is an audio format"),
             ("golden_image_depth.vq", "golden_image.safetensors", "FLAC", "is an audio format")]
    for name, model, format_name, message in cases:
        for output in (tmp_path / "out", "-"):
            result = cli("decode", GOLDEN / name, output, "-m", GOLDEN / model, "--format", format_name)
            assert_one_line_error(result)
            assert f"--format {format_name} {message}" in result.stderr.decode(), result.stderr
            assert not (tmp_path / "out").exists()
    # a folder whose files are all of the other kind: they were all written in their kind's default format
    for name, model, format_name, message in cases[1:3]:
        folder = tmp_path / name.split("_")[1]
        folder.mkdir()
        shutil.copy(GOLDEN / name, folder / name)
        result = cli("decode", folder, tmp_path / "out", "-m", GOLDEN / model, "--format", format_name)
        assert_one_line_error(result)
        assert f"--format {format_name} {message}, and the .vq files of {folder} hold " in result.stderr.decode()
        assert not (tmp_path / "out").exists()


def test_help_of_encode_kind_quality_force_and_info_verbose_says_what_they_do(cli):
    """encode --kind's help left out that for a folder of both kinds it picks the files to code (a
    folder of recordings and photos needs it), and info --verbose's claimed actual bits per codebook,
    which info gives for the whole payload only."""
    encode = " ".join(cli("encode", "--help", text=True).stdout.split())
    assert "Media kind, if the name does not tell (for a folder: which files to code)" in encode
    info = " ".join(cli("info", "--help", text=True).stdout.split())
    assert "ideal under the prior, actual." not in info and "the actual payload against their totals" in info
    # --force said only 'Overwrite OUTPUT', where binary output to a terminal is refused without it; -q's default
    # of 8 is all the codebooks of a model of fewer
    assert "Default: 8, or all of a model of fewer" in encode
    for command in ("encode", "decode", "codes", "pack"):
        assert "(or, for -, write to stdout that is a terminal)" in " ".join(
            cli(command, "--help", text=True).stdout.split()), command

def test_every_command_that_takes_force_takes_f_for_it(cli):
    """encode, decode, codes and pack took -f for --force, train and fit-prior --force alone: `train -f` was
    refused as no such option."""
    from vqcodec.cli import cli as group

    forcing = {name: param.opts for name, command in group.commands.items() for param in command.params
               if "--force" in param.opts}
    assert set(forcing) == {"encode", "decode", "codes", "pack", "train", "fit-prior"}
    assert all(opts == ["-f", "--force"] for opts in forcing.values()), forcing
    for command in ("train", "fit-prior"):
        assert "-f, --force" in cli(command, "--help", text=True).stdout, command


def test_info_text(encoded, cli, tiny_model_path, codec):
    result = cli("info", encoded / "out.vq", env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)})
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    size = (encoded / "out.vq").stat().st_size
    assert lines[:5] == ["kind:      audio", f"model:     tiny ({codec.model_id.hex()})",
                         "audio:     2 channels, 22050 Hz, 11025 samples (0.500 s)",
                         f"bitrate:   {size * 8 / 0.5 / 1000:.3f} kbps ({size} bytes)", "quality:   3 codebooks"]


WITHOUT_TORCH = """
import sys
from vqcodec.cli import cli
try:
    cli(sys.argv[1:])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
import vqcodec
assert vqcodec.read_info and vqcodec.list_models and vqcodec.VQCodecError
assert "torch" not in sys.modules, "torch was imported"
assert vqcodec.Codec and "torch" in sys.modules   # the codec, when it is wanted, brings it
"""


@pytest.mark.parametrize("args", [["--help"], ["models"], ["info", "FILE"], ["info", "FILE", "--json"]])
def test_commands_that_need_no_network_start_without_torch(encoded, tiny_model_path, args):
    args = [str(encoded / "out.vq") if a == "FILE" else a for a in args]
    result = run_python("-c", WITHOUT_TORCH, *args, env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)})
    assert result.returncode == 0, result.stderr.decode()


REFUSED_WITHOUT_TORCH = """
import sys
from vqcodec.cli import run
assert run(sys.argv[1:]) == 1
assert "torch" not in sys.modules, "torch was imported"
"""


@pytest.mark.parametrize("command", ["decode", "codes"])
def test_input_refused_from_its_first_bytes_is_refused_before_torch_is_imported(tmp_path, command):
    """`vqcodec decode - out.wav < /dev/zero` (and codes) imported torch, 4 s, before it refused the input from its
    first bytes, which info and encode refuse in half a second."""
    output = tmp_path / ("out.wav" if command == "decode" else "out.npy")
    result = run_python("-c", REFUSED_WITHOUT_TORCH, command, "-", output, input=bytes(1 << 16))
    result.stderr = result.stderr.decode()
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("vqcodec: error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert not output.exists()


def test_info_with_a_model_checks_that_it_decodes_the_file(encoded, cli, tiny_model_path, other_model_path):
    result = cli("info", encoded / "out.vq", "-m", tiny_model_path)
    assert result.returncode == 0, result.stderr.decode()
    assert f"model:     {tiny_model_path} (" in result.stdout.decode()
    result = cli("info", encoded / "out.vq", "-m", other_model_path, "--json")
    assert_one_line_error(result)
    assert "file was written by model" in result.stderr.decode() and not result.stdout


def test_messages_name_the_apis_arguments_from_python_and_the_options_on_the_command_line(encoded, tmp_path,
                                                                                       other_model_path, capsys):
    """The API's refusals told a Python caller to pass --force, --model, --rate or --start."""
    import vqcodec
    from vqcodec import Codec, VQCodecError
    from vqcodec.cli import run
    from vqcodec.streams import write_file

    from vqcodec.data import find_media

    data = (encoded / "out.vq").read_bytes()
    other = Codec.load(str(other_model_path))
    (tmp_path / "taken").write_bytes(b"")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "in.wav").write_bytes((encoded / "in.wav").read_bytes())
    (tmp_path / "mixed" / "in.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    calls = (
        (lambda: find_media(tmp_path / "mixed", None), "(audio, image); pass kind='audio' or kind='image'"),  # train's
        (lambda: write_file(tmp_path / "taken", lambda stream: stream.write(b"x"), replace=False),
         f"{tmp_path / 'taken'} exists; pass replace=True to overwrite it"),
        (lambda: vqcodec.decode(data), "; decode this file with a Codec of the model that wrote it (Codec.load of its path)"),
        (lambda: other.decode(data), "; decode it with a Codec of the model that wrote it"),
        (lambda: vqcodec.Codec.load(str(other_model_path), device="cuda:x"), "unknown device 'cuda:x'"),
        # the device first, as Codec.load has it: a misspelt one was hidden behind 'no installed model'
        (lambda: vqcodec.decode(data, device="gpu"), "unknown device 'gpu'"))
    for call, message in calls:
        with pytest.raises(VQCodecError) as refused:
            call()
        assert message in str(refused.value) and "--" not in str(refused.value), str(refused.value)
    assert run(["decode", str(encoded / "out.vq"), str(tmp_path / "out.wav"), "-m", str(other_model_path)]) == 1
    assert "; pass the matching --model" in capsys.readouterr().err
    with pytest.raises(VQCodecError, match="; decode it with a Codec of the model that wrote it"):
        other.decode(data)  # the command that ran in this process named its options while it ran alone


def test_a_thread_using_the_api_while_a_command_runs_keeps_the_apis_wording_and_the_commands_workers_do_not():
    """The wording was one flag for the process: a Python thread's refusal, raised while a command ran in
    another thread, named the command's options; the command's batch workers must still name them."""
    import threading

    from vqcodec.data import Batches, Crops
    from vqcodec.wording import command_line_wording, setting

    def words():
        return setting("--force", "replace=True")

    command_running, seen_outside = threading.Event(), []

    def python_caller():
        command_running.wait(10)
        seen_outside.append(words())

    class WordingCrops(Crops):  # the Crops Batches uses: its plans, and a crop made from one in a worker thread
        def plan(self, size, rng):
            return range(size)

        def make(self, plan):
            return np.array([words() == "--force"], dtype=np.float32)

    caller = threading.Thread(target=python_caller)
    caller.start()
    with command_line_wording():
        command_running.set()
        caller.join(10)
        batches = Batches(WordingCrops(), 3, np.random.default_rng(0), workers=2)
        try:
            made_in_workers = [batches.next().flatten().tolist() for _ in range(2)]
        finally:
            batches.close()
        assert words() == "--force"
    assert seen_outside == ["replace=True"]
    assert made_in_workers == [[1.0, 1.0, 1.0]] * 2
    assert words() == "replace=True"


def test_check_file_takes_a_file_as_decoding_does(encoded, tiny_model_path, other_model_path):
    from vqcodec import Codec, VQCodecError

    path = encoded / "out.vq"
    for source in (path.read_bytes(), path, str(path)):
        Codec.load(str(tiny_model_path)).check_file(source)
        with pytest.raises(VQCodecError, match="file was written by model"):
            Codec.load(str(other_model_path)).check_file(source)
    with path.open("rb") as stream:
        Codec.load(str(tiny_model_path)).check_file(stream)


def test_info_with_a_model_refuses_a_chunk_count_the_model_refuses(encoded, cli, tiny_model_path, tmp_path):
    """`info -m` checked the model's id, kind, codebooks and prior, but not the number of chunks the
    header announces against the model's frames: it said the model decodes a file it refuses."""
    header, chunks, _ = vqformat.parse_file((encoded / "out.vq").read_bytes())
    header.chunk_frames = 7
    source = tmp_path / "seven.vq"
    source.write_bytes(vqformat.build_file(header, chunks))
    frames = -(-header.length * 16000 // header.sample_rate // 8)
    expected = f"corrupted .vq file: {len(chunks)} chunk{'s' if len(chunks) > 1 else ''} where {-(-frames // 7)} were expected"
    result = cli("info", source, "-m", tiny_model_path, text=True)
    assert result.returncode == 1 and result.stderr == f"vqcodec: error: {source}: {expected}\n"
    assert cli("decode", source, tmp_path / "out.wav", "-m", tiny_model_path, text=True).stderr == \
        f"vqcodec: error: {source}: {expected}\n"
    assert cli("info", source, text=True).returncode == 0  # without a model, the header's own checks


def test_info_json(encoded, cli, tiny_model_path, codec):
    result = cli("info", encoded / "out.vq", "--json", env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)})
    assert result.returncode == 0, result.stderr.decode()
    record = json.loads(result.stdout)
    size = (encoded / "out.vq").stat().st_size
    assert record["kind"] == "audio"
    assert (record["sample_rate"], record["channels"], record["samples"], record["quality"]) == (22050, 2, 11025, 3)
    assert record["model_id"] == codec.model_id.hex() and record["model"] == "tiny"
    assert record["bitrate_bps"] == pytest.approx(size * 8 / (11025 / 22050), rel=1e-3)
    assert record["duration"] == pytest.approx(0.5)



def test_info_json_has_the_fields_the_readme_lists(cli):
    """The README's list of `info --json` fields, per kind, against what info prints."""
    from conftest import GOLDEN

    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    listed = readme[readme.index("`vqcodec info --json` gives"):readme.index("`--verbose` adds `payload`")]
    common = {"kind", "model_id", "model", "quality", "coding", "size_bytes", "chunks"}
    audio = {"sample_rate", "channels", "samples", "duration", "bitrate_bps", "gain", "shared_chunks"}
    image = {"width", "height", "mode", "has_alpha", "bits_per_pixel"}
    assert common | audio | image <= set(re.findall(r"`(\w+)`", listed))
    for name, fields in (("golden_audio_shared.vq", common | audio), ("golden_image_depth.vq", common | image)):
        assert json.loads(cli("info", GOLDEN / name, "--json", text=True).stdout).keys() == fields, name

def test_codes_json_has_the_keys_the_readme_names(tmp_path, signal, codec):
    """Each key that `vqcodec codes FOLDER OUT` writes in codes.json is named in the README's account of it: `model`,
    `kind`, `depth_weight`, `channels`, `skipped`... were told in words alone, or not at all."""
    from vqcodec import Codec
    from vqcodec.tokens import _manifest_head, code_folder

    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    told = readme[readme.index("writes `tokens/codes.json`"):readme.index("`vqcodec pack` takes one `.npy` file")]
    folder = tmp_path / "recordings"
    folder.mkdir()
    write_wav(folder / "a.wav", signal)
    (folder / "b.wav").write_bytes(b"not a recording")
    manifest = code_folder(codec, folder, tmp_path / "tokens", sorted(folder.iterdir()), log=lambda line: None)
    written = {*manifest, *manifest["files"][0], *manifest["skipped"][0], *_manifest_head(Codec.load("image"), 1),
               "stopped"}
    assert written - set(re.findall(r'`"?(\w+)', told)) == set()


DOCS = [Path(__file__).resolve().parent.parent / "README.md",
        *sorted((Path(__file__).resolve().parent.parent / "docs").glob("*.md"))]


def _code_in(text: str) -> list[str]:
    """The code of a markdown text: its fenced blocks, its `inline` spans and its indented command lines."""
    fenced = re.findall(r"```.*?\n(.*?)```", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"`([^`\n]+)`", text) + [line for line in text.splitlines()
                                                        if line.startswith("    ") and "vqcodec " in line]


def test_the_docs_name_only_commands_and_options_that_exist_and_the_readme_names_every_option():
    """Every `vqcodec COMMAND --option` in README.md and docs/ is one of that command's options, and every
    long option of every command is named in the README (--quality was only ever shown as -q)."""
    from vqcodec.cli import cli as group

    options = {name: {opt for param in command.params for opt in param.opts + param.secondary_opts} | {"-h", "--help"}
               for name, command in group.commands.items()}
    unknown, seen = [], 0
    for doc in DOCS:
        for code in _code_in(doc.read_text(encoding="utf-8")):
            for line in code.splitlines():
                for use in re.finditer(r"(?<![\w./-])(?<!this )vqcodec ([\w-]+)([^#|;>&`]*)", line):
                    command, rest = use.groups()
                    seen += 1
                    given = re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest)
                    unknown += [f"{doc.name}: vqcodec {command} {option}" for option in given
                                if option not in options.get(command, ())] if command in options else \
                               [f"{doc.name}: no command vqcodec {command}"]
    assert seen > 100 and not unknown
    readme = DOCS[0].read_text(encoding="utf-8")
    missing = [f"vqcodec {name} {opt}" for name, opts in options.items() for opt in sorted(opts)
               if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"(?![\w-])", readme)]
    assert not missing


def test_every_training_command_of_the_docs_gives_the_budget_train_needs():
    """`vqcodec train DIR` without --max-minutes or --max-steps is refused ('give a budget'): two of the
    README's commands (growing a model, widening a decoder) lacked one, so they failed as written."""
    commands = [line[use.start():] for doc in DOCS for code in _code_in(doc.read_text(encoding="utf-8"))
                for line in code.splitlines() for use in re.finditer(r"vqcodec train \S+ --out", line)]
    assert len(commands) >= 15
    assert [c for c in commands if "--max-minutes" not in c and "--max-steps" not in c] == []


def test_ci_runs_exactly_the_two_commands_of_the_readme_s_install_section():
    """README: "Two commands ... (CI runs exactly these, see `.ci/run`)"."""
    readme = DOCS[0].read_text(encoding="utf-8")
    section = readme[readme.index("## Install and try it"):readme.index("## Use")]
    commands = re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)
    ci = (DOCS[0].parent / ".ci" / "run").read_text(encoding="utf-8")
    variables = dict(re.findall(r'^(\w+)="([^"]*)"', ci, flags=re.M))
    run = [re.sub(r"\$\{(\w+)\}", lambda used: variables[used.group(1)], variables[command])
           for command in ("CMD_A", "CMD_B")]
    assert len(commands) == 2 and run == commands
    assert "tests/data/speech.flac" in commands[0] and (DOCS[0].parent / "tests" / "data" / "speech.flac").is_file()


README_PYTHON_SETUP = """
import numpy as np, PIL.Image, soundfile, vqcodec
audio, rate = soundfile.read("talk.flac", dtype="float32")
audio = audio.T
rgb_uint8 = np.asarray(PIL.Image.open("photo.png").convert("RGB"))
"""


def test_the_readme_s_python_api_and_tokens_examples_run_as_written(cli, tmp_path):
    """The README's first two Python blocks, run one after the other on a short recording and a small photo,
    their placeholders (`audio`, `rgb_uint8`, talk.vq, tokens/) made first. The only change: the hour-long
    file's start=3600.0 becomes start=0.25. (The third block trains for an hour, as it says.)"""
    from PIL import Image

    blocks = re.findall(r"```python\n(.*?)```", DOCS[0].read_text(encoding="utf-8"), flags=re.S)
    assert "codec.decode_audio(data, start=3600.0" in blocks[0] and "tokens/codes.json" in blocks[1]
    audio, rate = soundfile.read(str(Path(__file__).parent / "data" / "speech.flac"), frames=24000)
    soundfile.write(str(tmp_path / "talk.flac"), audio, rate)
    (tmp_path / "my_recordings").mkdir()
    soundfile.write(str(tmp_path / "my_recordings" / "a.flac"), audio[:8000], rate)
    Image.open(Path(__file__).parent / "data" / "photo.png").crop((0, 0, 96, 64)).save(tmp_path / "photo.png")
    for command in (("encode", "talk.flac", "talk.vq", "-q", "4"), ("codes", "my_recordings/", "tokens/")):
        assert cli(*command, cwd=tmp_path).returncode == 0
    script = README_PYTHON_SETUP + blocks[0].replace("start=3600.0", "start=0.25") + blocks[1]
    result = run_python("-c", script, cwd=tmp_path, text=True)
    assert result.returncode == 0, result.stderr


def test_info_of_a_file_of_a_few_samples_shows_a_duration_that_is_not_zero(codec, tmp_path, capsys):
    """`info` of 7 samples at 16 kHz said '7 samples (0.000 s)', and --json gave 1 sample at 768 kHz a duration of
    1e-06 (1.30208e-06 s, to 6 decimals); the bitrate stays the whole file over that duration, finite."""
    from conftest import make_signal
    from vqcodec.cli import run

    def refuse(constant):
        raise AssertionError(f"--json wrote {constant}, which JSON has not")

    for samples, rate, shown in ((7, 16000, "7 samples (0.000438 s)"), (1, 768000, "1 sample (0.00000130 s)")):
        path = tmp_path / f"{rate}.vq"
        path.write_bytes(codec.encode_audio(make_signal(1, samples, rate), rate, 2))
        bits_per_second = path.stat().st_size * 8 / (samples / rate)
        assert run(["info", str(path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2].endswith(f", {rate} Hz, {shown}"), lines
        assert lines[3].startswith(f"bitrate:   {bits_per_second / 1000:.3f} kbps"), lines
        assert run(["info", str(path), "--json"]) == 0
        record = json.loads(capsys.readouterr().out, parse_constant=refuse)
        assert record["duration"] == float(f"{samples / rate:.6g}")
        assert record["bitrate_bps"] == round(bits_per_second, 2)


def test_info_json_verbose_of_a_damaged_file_has_a_null_payload(cli, tmp_path):
    """`info --json --verbose` of a file cut short printed its header's fields without "payload", a key that
    --verbose adds: a reader of the JSON met a missing key where the table could not be made."""
    from conftest import GOLDEN

    data = (GOLDEN / "golden_audio_shared.vq").read_bytes()
    source = tmp_path / "cut.vq"
    source.write_bytes(data[:-3])
    result = cli("info", source, "--json", "--verbose", text=True)
    assert result.returncode == 1 and result.stderr.startswith(f"vqcodec: error: {source}: truncated .vq file")
    record = json.loads(result.stdout)
    assert "payload" in record and record["payload"] is None
    assert record.keys() == json.loads(cli("info", GOLDEN / "golden_audio_shared.vq", "--json", text=True).stdout
                                       ).keys() | {"payload"}


def test_info_gives_the_bits_per_pixel_of_a_large_image_to_6_significant_digits(cli, tmp_path):
    """Rounded to 4 decimals, a large image at a low rate was "bits_per_pixel": 0.0 (and 0.0000 bpp)."""
    from conftest import GOLDEN

    data = (GOLDEN / "golden_image_depth.vq").read_bytes()
    header = vqformat.parse_header(data)
    header.width = header.height = 9000
    source = tmp_path / "large.vq"
    source.write_bytes(header.pack() + data[vqformat.HEADER_SIZE:])
    bpp = len(source.read_bytes()) * 8 / 9000 ** 2
    record = json.loads(cli("info", source, "--json", text=True).stdout)
    assert record["bits_per_pixel"] == pytest.approx(bpp, rel=1e-5) and record["bits_per_pixel"] == float(f"{bpp:.6g}")
    assert f"bitrate:   {bpp:#.4g} bpp ({len(data)} bytes)" in cli("info", source, text=True).stdout
    assert json.loads(cli("info", GOLDEN / "golden_image_depth.vq", "--json", text=True).stdout)["bits_per_pixel"] \
        == float(f"{len(data) * 8 / (60 * 96):.6g}")

def test_file_info_as_dict_is_the_record_info_json_prints(cli, tmp_path):
    """`info --json` rounded and chose its fields per kind in cli.py alone: FileInfo.as_dict() gives that record (all
    but the installed model it names), so that Python and the command agree, the rounding of a duration of a few
    samples (6 significant digits) and of the bits per pixel of a large image (6 significant) included."""
    from conftest import GOLDEN

    from vqcodec import read_info

    data = (GOLDEN / "golden_image_depth.vq").read_bytes()
    large = vqformat.parse_header(data)
    large.width = large.height = 9000
    (tmp_path / "large.vq").write_bytes(large.pack() + data[vqformat.HEADER_SIZE:])
    for path in (GOLDEN / "golden_audio_shared.vq", GOLDEN / "golden_image_depth.vq", tmp_path / "large.vq"):
        printed = json.loads(cli("info", path, "--json", text=True).stdout)
        del printed["model"]
        assert read_info(path).as_dict() == printed, path.name
    seven = read_info(GOLDEN / "golden_audio_shared.vq")
    seven.samples, seven.sample_rate = 7, 16000
    assert seven.as_dict()["duration"] == 0.0004375  # to 6 significant digits, where 6 decimals gave 0.000438
    assert "width" not in seven.as_dict() and "sample_rate" not in read_info(tmp_path / "large.vq").as_dict()


def test_counts_of_one_are_singular(cli, tmp_path, tiny_model_path, codec, signal):
    """Messages said "1 files", "1 codebooks", "1 channel(s)", "1 of 1 chunks are" and "1 unexpected bytes"."""
    from vqcodec.errors import VQCodecError
    from vqcodec.wording import plural

    assert (plural(0, "file"), plural(1, "file"), plural(2, "file")) == ("0 files", "1 file", "2 files")
    with pytest.raises(VQCodecError, match="the codes hold 1 channel, not 2"):
        codec.codes_to_file(np.zeros((1, 2, 10), np.int64), channels=2)
    env = {"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    folder = tmp_path / "in"
    folder.mkdir()
    data = codec.encode_audio(signal(1, 800, 16000), 16000, 1)
    (folder / "one.vq").write_bytes(data + b"x")
    shown = cli("info", folder / "one.vq", "--json", env=env, text=True)
    assert shown.stderr == f"vqcodec: error: {folder / 'one.vq'}: 1 unexpected byte after the last chunk; " \
                           "`vqcodec decode --salvage` decodes what is intact\n"
    (folder / "one.vq").write_bytes(data)
    text = cli("info", folder / "one.vq", env=env, text=True).stdout
    assert "audio:     1 channel, 16000 Hz, 800 samples" in text and "quality:   1 codebook\n" in text
    result = cli("decode", folder, tmp_path / "out", env=env, text=True)
    assert result.returncode == 0 and result.stderr.startswith("decoded 1 file, "), result.stderr
    (folder / "one.vq").write_bytes(data[:-2])
    result = cli("decode", folder, tmp_path / "out2", "--salvage", env=env, text=True)
    assert f"vqcodec: warning: {folder / 'one.vq'}: 1 of 1 chunk is damaged or missing" in result.stderr
    (folder / "one.vq").write_bytes(b"junk")
    result = cli("decode", folder, tmp_path / "out3", env=env, text=True)
    assert result.stderr.splitlines()[-1] == "vqcodec: error: 1 of 1 file could not be decoded (listed above): " \
                                             f"nothing was written to {tmp_path / 'out3'}"


def test_default_speech_encoding_is_the_top_quality_with_per_cell_depth(cli, tmp_path):
    """Without -q, speech16k codes every level it has (with depth weight 2 that is about the rate
    -q 6 gave at weight 1), with per-cell depth, under 3 kbps."""
    out = tmp_path / "speech.vq"
    result = cli("encode", Path("tests/data/speech.flac"), out)
    assert result.returncode == 0, result.stderr.decode()
    header, _, _ = vqformat.parse_file(out.read_bytes())
    assert (header.quality, header.coding) == (8, vqformat.CODING_PRIOR_DEPTH)
    record = json.loads(cli("info", out, "--json").stdout)
    assert 1500 < record["bitrate_bps"] < 3000


def test_models_lists_the_model_on_the_search_path(cli, tiny_model_path, codec):
    env = {"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    result = cli("models", env=env)
    assert result.returncode == 0, result.stderr.decode()
    line = next(line for line in result.stdout.decode().splitlines() if line.startswith("tiny "))
    assert codec.model_id.hex() in line and "16000 Hz" in line and "4 codebooks x 16" in line
    result = cli("models", "--json", env=env)
    assert result.returncode == 0, result.stderr.decode()
    entry = next(m for m in json.loads(result.stdout) if m["name"] == "tiny")
    assert entry["model_id"] == codec.model_id.hex() and entry["kind"] == "audio"
    assert entry["sample_rate"] == 16000  # as the text line and info --json give it, not only in the config
    assert "sample_rate" not in next(m for m in json.loads(result.stdout) if m["kind"] == "image")
    shipped = next(m for m in json.loads(result.stdout) if m["name"] == "speech16k")
    assert shipped["training"] == json.loads(Path(shipped["path"]).with_suffix(".json").read_text())["training"]
    assert shipped["training"]["earlier"]["init"] in shipped["decodes"]
    assert Path(entry["path"]) == tiny_model_path


def test_a_model_json_cannot_mark_its_model_shadowed(cli, tiny_model_path, tmp_path):
    """list_models marks a model shadowed from its place on the search path; a NAME.json holding "shadowed": true
    kept that mark: `models` listed the only model of its name as shadowed by an unusable one, and --json so."""
    shutil.copy(tiny_model_path, tmp_path / "mine.safetensors")
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    (tmp_path / "mine.json").write_text(json.dumps({**meta, "shadowed": True, "shadowed_by_unlisted": True}))
    env = {"VQCODEC_MODEL_PATH": str(tmp_path)}
    result = cli("models", env=env, text=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("mine "))
    assert result.returncode == 0 and "shadowed" not in line, line
    result = cli("models", "--json", env=env, text=True)
    assert next(m for m in json.loads(result.stdout) if m["name"] == "mine")["shadowed"] is False


def test_list_models_gives_what_models_lists_and_refuses_options_it_would_misread(tiny_model_path, tmp_path,
                                                                                  monkeypatch, capsys):
    """`vqcodec models --json` is list_models(shadowed=True); shadowed="no" listed the shadowed models (any value
    Python takes as true), and problems=() raised an AttributeError at the first model left out."""
    from vqcodec.cli import run
    from vqcodec.errors import VQCodecError
    from vqcodec.registry import list_models

    for suffix in (".safetensors", ".json"):  # shadows the shipped speech16k
        shutil.copy(tiny_model_path.with_suffix(suffix), (tmp_path / "speech16k").with_suffix(suffix))
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))
    assert run(["models", "--json"]) == 0
    listed = [(m["name"], m["path"], m["shadowed"]) for m in json.loads(capsys.readouterr().out)]
    assert listed == [(m["name"], m["path"], m.get("shadowed", False)) for m in list_models(shadowed=True)]
    assert ("speech16k", str(tmp_path / "speech16k.safetensors"), False) in listed and \
        [name for name, _, shadowed in listed if shadowed] == ["speech16k"]
    for options, message in ((dict(shadowed="no"), "shadowed must be True or False, not 'no'"),
                             (dict(problems=()), "problems is a list that why a model is left out is added to, or None, "
                                                 "not ()")):
        with pytest.raises(VQCodecError) as refused:
            list_models(**options)
        assert str(refused.value) == message


def test_a_model_json_of_utf_8_text_is_read_whatever_the_locale(tmp_path):
    """NAME.json is JSON, which is UTF-8; it was read in the locale's encoding, so a model whose JSON holds
    a character beyond ASCII as it is (as jq or json.dump(ensure_ascii=False) write it) failed to load
    and was left out of `models` in an ASCII locale ("'ascii' codec can't decode byte 0xc3")."""
    import shutil

    from conftest import GOLDEN

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(GOLDEN / "golden_audio.safetensors", folder / "accented.safetensors")
    meta = json.loads((GOLDEN / "golden_audio.json").read_bytes())
    meta["training"] = {**meta.get("training", {}), "data": "/data/enregistrements/café"}
    (folder / "accented.json").write_bytes(json.dumps(meta, ensure_ascii=False).encode())
    script = ("import vqcodec, vqcodec.registry as r; vqcodec.Codec.load('accented'); "
              "print([m['name'] for m in r.list_models()])")
    result = run_python("-c", script, env={"VQCODEC_MODEL_PATH": str(folder), "LC_ALL": "C", "LANG": "C",
                                           "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'accented'" in result.stdout


def test_models_lists_the_models_of_a_folder_named_twice_on_the_path_once(cli, tiny_model_path):
    """A folder named twice on VQCODEC_MODEL_PATH (or the shipped one named there) listed each of its models
    twice, the second time 'shadowed by the one above of that name': by itself."""
    from vqcodec.registry import shipped_models_dir

    folder = tiny_model_path.parent
    env = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(folder), f"{folder}{os.sep}.", str(shipped_models_dir())])}
    result = cli("models", "--json", env=env)
    assert result.returncode == 0, result.stderr.decode()
    listed = json.loads(result.stdout)
    assert [m["name"] for m in listed] == ["tiny", "image", "speech16k"]
    assert not any(m["shadowed"] for m in listed)


def test_models_warns_of_a_model_json_without_its_weights(cli, tiny_model_path, tmp_path):
    """A NAME.json of a model without NAME.safetensors beside it was left out of `models` without a word,
    where `-m NAME` names what is missing; it takes no name from a complete model further on."""
    import shutil

    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "speech16k.json")
    (tmp_path / "notes.json").write_text('{"not": "a model"}')
    result = cli("models", "--json", env={"VQCODEC_MODEL_PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode() == (f"vqcodec: warning: model {tmp_path / 'speech16k.json'} has no "
                                      "speech16k.safetensors beside it; not listed\n")
    assert [(m["name"], m["shadowed"]) for m in json.loads(result.stdout)] == [("image", False), ("speech16k", False)]


def test_a_model_path_entry_that_is_no_folder_is_named(cli, tiny_model_path, tmp_path):
    """An entry of VQCODEC_MODEL_PATH that is no folder (a typo, or the model's file in place of its folder)
    was passed over without a word: `models` listed the shipped ones alone and `-m tiny` was an unknown model."""
    missing, loop = tmp_path / "no_such_folder", tmp_path / "loop"
    loop.symlink_to(loop.name)  # a link to itself ended every command in a RuntimeError traceback (Path.resolve)
    env = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(missing), str(tiny_model_path), str(loop)])}
    result = cli("models", env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode().splitlines() == [
        f"vqcodec: warning: VQCODEC_MODEL_PATH names {missing}: no such folder; not searched",
        f"vqcodec: warning: VQCODEC_MODEL_PATH names {tiny_model_path}, a file, not a folder: name the folder "
        f"that holds it, {tiny_model_path.parent}; not searched",
        f"vqcodec: warning: VQCODEC_MODEL_PATH names {loop}: Too many levels of symbolic links; not searched"]
    soundfile.write(tmp_path / "in.wav", np.zeros(800, dtype=np.float32), 8000)
    result = cli("encode", tmp_path / "in.wav", tmp_path / "out.vq", "-m", "tiny", env=env)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("vqcodec: error: unknown model 'tiny'")
    assert f"{missing}: no such folder" in lines[0]
    assert f"name the folder that holds it, {tiny_model_path.parent}" in lines[0]


def test_a_model_path_folder_that_cannot_be_read_is_named_and_passed_over(tiny_model_path, tmp_path, monkeypatch,
                                                                           capsys):
    """A VQCODEC_MODEL_PATH folder without permission to read it (chmod 000; root reads any, so os.scandir is made
    to refuse it here) was passed over without a word by `models`, and made every lookup by name, of a shipped
    model too, 'cannot look for the model 'speech16k': Permission denied' (Path.exists raised for its files)."""
    from vqcodec import VQCodecError
    from vqcodec.cli import run
    from vqcodec.registry import find_model, shipped_models_dir

    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(tiny_model_path, locked / "tiny.safetensors")
    shutil.copy(tiny_model_path.with_suffix(".json"), locked / "tiny.json")
    real_scandir, real_stat = os.scandir, os.stat

    def refused(path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(str(locked))

    def scandir(path="."):
        if refused(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    def stat(path, *args, **kwargs):  # what is in a folder without x permission cannot be looked at either
        if refused(path) and os.fsdecode(path) != str(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(locked))
    assert find_model("speech16k") == shipped_models_dir() / "speech16k.safetensors"
    with pytest.raises(VQCodecError, match=re.escape("unknown model 'tiny' (installed: ") + ".*"
                       + re.escape(f"; VQCODEC_MODEL_PATH names {locked}: Permission denied")):
        find_model("tiny")
    capsys.readouterr()
    assert run(["models"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"vqcodec: warning: VQCODEC_MODEL_PATH names {locked}: Permission denied; not searched"]


def test_a_file_whose_model_is_not_found_names_a_model_path_entry_that_is_no_folder(cli, encoded, tmp_path):
    """Decoding a file of a model on a mistyped VQCODEC_MODEL_PATH said only that no installed model has
    its id."""
    missing = tmp_path / "no_such_folder"
    result = cli("decode", encoded / "out.vq", tmp_path / "out.wav", env={"VQCODEC_MODEL_PATH": str(missing)},
                 text=True)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("vqcodec: error: no installed model has id ")
    assert lines[0].endswith(f"; VQCODEC_MODEL_PATH names {missing}: no such folder")


def test_a_model_file_that_cannot_be_read_is_named_once_in_the_systems_words(tiny_model_path, tmp_path, monkeypatch):
    """A NAME.json or NAME.safetensors that the system would not read gave Python's form of the error, the file
    named again: 'an unreadable m.json ([Errno 21] Is a directory: '/models/m.json')'."""
    import shutil

    from vqcodec.registry import _weights_problem, list_models

    shutil.copy(tiny_model_path, tmp_path / "m.safetensors")
    (tmp_path / "m.json").mkdir()
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))
    problems = []
    list_models(problems=problems)
    assert f"model {tmp_path / 'm.safetensors'} has an unreadable m.json (Is a directory)" in problems, problems
    assert _weights_problem(tmp_path / "m.json") == "unreadable weights (Is a directory)"


@pytest.mark.parametrize("which", [".json", ".safetensors"])
@pytest.mark.parametrize("how", ["fifo", "device"])
def test_a_model_file_that_is_a_pipe_or_a_device_is_refused_not_read(cli, tiny_model_path, tmp_path, which, how):
    """A NAME.json or NAME.safetensors that is a FIFO (whose read waited for a writer for ever: `models`, `-m` and
    every command that looked through the path hung) or a device (a link to /dev/zero was read until memory ran
    out; /dev/null here, which ends) is one line saying that it is not a regular file, before it is opened."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_model_path.with_suffix(suffix), tmp_path / f"m{suffix}")
    odd = tmp_path / f"m{which}"
    odd.unlink()
    if how == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to(os.devnull)
    # forked from the server, as a fresh interpreter's start (importing torch) may take longer than a hang's timeout on
    # a busy machine; a forked run stuck in its open is killed at the timeout
    result = cli("info", GOLDEN / "golden_audio_fixed.vq", "-m", tmp_path / "m", timeout=120, text=True)
    refused = f"{odd}: not a regular file (a pipe or a device)"
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"vqcodec: error: cannot read model {tmp_path / 'm.safetensors'}: {refused}\n"
    if which == ".json":  # a FIFO or device as NAME.safetensors is no weights: the JSON's model is half a model
        result = cli("models", env={"VQCODEC_MODEL_PATH": str(tmp_path)}, timeout=120, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stderr == (f"vqcodec: warning: model {tmp_path / 'm.safetensors'} has an unreadable m.json "
                                 "(not a regular file (a pipe or a device)); not listed\n")


def test_a_model_file_is_checked_and_read_through_one_descriptor(tiny_model_path, tmp_path, monkeypatch):
    """A model file was checked to be a regular file by its path (os.stat) and then opened by its path again: what
    was put in its place between the two (a FIFO, which hung the read, a device) was read unchecked. The opened
    descriptor is now checked again (os.fstat) and read, so that a file replaced right after the path's check is
    refused unread, and one replaced right after the descriptor's reads as the file checked; the weights' header
    of `models` (registry._weights_problem), read with no check at all, opened a FIFO and waited for a writer."""
    import threading

    from vqcodec import VQCodecError
    from vqcodec.modelfile import read_model_files, read_safetensors, read_safetensors_metadata
    from vqcodec.registry import _weights_problem, read_model_json

    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_model_path.with_suffix(suffix), tmp_path / f"m{suffix}")
    model = tmp_path / "m.safetensors"
    meta, tensors = read_model_files(model)
    pending: list[tuple[Path, int]] = []

    def replacing(check):  # another process replaces the file with a device right after it is checked
        def checked(*args, **kwargs):
            result = check(*args, **kwargs)
            if pending and pending[0][1] == result.st_ino:
                os.symlink(os.devnull, tmp_path / "null")
                os.replace(tmp_path / "null", pending.pop()[0])
            return result
        return checked

    for check in ("stat", "fstat"):
        monkeypatch.setattr(os, check, replacing(getattr(os, check)))
        for path, read, expected in ((model.with_suffix(".json"), read_model_json, meta | {"name": "tiny"}),
                                     (model, lambda path: sorted(read_safetensors(path)), sorted(tensors)),
                                     (model, read_safetensors_metadata, {}),
                                     (model, lambda path: read_model_files(path)[0], meta)):
            pending.append((path, path.stat().st_ino))
            if check == "fstat":
                assert read(path) == expected
            else:
                with pytest.raises((OSError, VQCodecError), match=r"not a regular file \(a pipe or a device\)"):
                    read(path)
            assert not pending and path.is_symlink()  # it was replaced while read
            path.unlink()
            shutil.copy(tiny_model_path.with_suffix(path.suffix), path)
        monkeypatch.undo()
    model.unlink()
    os.mkfifo(model)
    writer = threading.Thread(target=lambda: os.close(os.open(model, os.O_WRONLY)), daemon=True)
    writer.start()  # a read waiting for a writer gets one that writes nothing, rather than hanging the suite
    assert _weights_problem(model) == "unreadable weights (not a regular file (a pipe or a device))"
    while writer.is_alive():  # the writer's wait for a reader ends
        os.close(os.open(model, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(0.01)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_path_that_is_not_a_regular_file_is_refused_without_being_opened(tiny_model_path, tmp_path, monkeypatch):
    """streams.open_regular_file opened the path first and checked the descriptor: a device given as a model path was
    opened (a tape rewinds, a watchdog starts) before it was refused, and a terminal was opened without O_NOCTTY
    (it could become the controlling terminal). The path is now checked first, and a regular file opened with
    O_NONBLOCK and O_NOCTTY."""
    from vqcodec.streams import open_regular_file

    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, flags, *args: opened.append((str(path), flags)) or
                        real_open(path, flags, *args))
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "device").symlink_to(os.devnull)
    for odd in (tmp_path / "fifo", tmp_path / "device"):
        with pytest.raises(OSError, match=r"not a regular file \(a pipe or a device\)"):
            open_regular_file(odd)
    with pytest.raises(IsADirectoryError):
        open_regular_file(tmp_path)
    assert opened == []
    with open_regular_file(tiny_model_path) as stream:
        assert stream.read(8) == tiny_model_path.read_bytes()[:8]
    assert [path for path, _ in opened] == [str(tiny_model_path)]
    assert opened[0][1] & os.O_NOCTTY and opened[0][1] & os.O_NONBLOCK


def test_a_model_json_larger_than_any_model_holds_is_not_read(tiny_model_path, tmp_path, monkeypatch):
    """A NAME.json of more than registry.MAX_MODEL_JSON_BYTES (16 MiB; 1 MiB here) is refused from its size, before
    it is read (it was read whole, however large)."""
    import vqcodec.registry
    from vqcodec import Codec, VQCodecError

    monkeypatch.setattr(vqcodec.registry, "MAX_MODEL_JSON_BYTES", 1 << 20)
    shutil.copy(tiny_model_path, tmp_path / "m.safetensors")
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "training": {"notes": "x" * (1 << 20)}}))
    with pytest.raises(VQCodecError, match=re.escape("m.json takes more than 1 MiB, far more than a model's JSON")):
        Codec.load(str(tmp_path / "m"))


def test_a_model_whose_weights_do_not_make_its_recorded_codes_id_is_refused(tiny_model_path, other_model_path,
                                                                             tmp_path):
    """A NAME.json's "decodes" (the models whose files it decodes, having their encoder and codebooks) was trusted as
    it stood: a model whose weights are not the encoder and codebooks its "codes_id" records (which the decoder-only
    run that wrote "decodes" checked them against) took those models' files and decoded them to noise."""
    from vqcodec import Codec, VQCodecError
    from vqcodec.modelfile import compute_codes_id, read_model_files

    meta, tensors = read_model_files(other_model_path)
    other_codes = compute_codes_id(meta["config"], tensors)
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    shutil.copy(tiny_model_path, tmp_path / "m.safetensors")
    lineage = {"decodes": [json.loads(other_model_path.with_suffix(".json").read_text())["model_id"]]}
    (tmp_path / "m.json").write_text(json.dumps({**meta, **lineage, "codes_id": other_codes}))
    with pytest.raises(VQCodecError) as refused:
        Codec.load(str(tmp_path / "m"))
    assert str(refused.value) == (f"model {tmp_path / 'm.safetensors'} does not match its recorded codes_id: its "
                                  "encoder and codebooks are not those of the models it says it decodes; the files are "
                                  "damaged or mismatched")
    own_codes = compute_codes_id(meta["config"], read_model_files(tiny_model_path)[1])
    (tmp_path / "m.json").write_text(json.dumps({**meta, **lineage, "codes_id": own_codes}))
    assert Codec.load(str(tmp_path / "m")).decodes == {bytes.fromhex(lineage["decodes"][0])}


def test_a_model_that_lists_models_it_decodes_without_a_codes_id_is_refused(cli, tiny_model_path, other_model_path,
                                                                              other_codec, signal, tmp_path):
    """A NAME.json with "decodes" but no "codes_id" (edited by hand, or written by train --max-steps 0 before it wrote
    one) was trusted as it stood: nothing checked that its encoder and codebooks are those of the models it lists, and
    it took their files and decoded them to noise. It is refused when loaded and left out of `models`, as any model
    whose record does not check out; an empty "decodes" claims nothing and loads."""
    from vqcodec import Codec, VQCodecError

    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    shutil.copy(tiny_model_path, tmp_path / "m.safetensors")
    other_id = json.loads(other_model_path.with_suffix(".json").read_text())["model_id"]
    (tmp_path / "m.json").write_text(json.dumps({**meta, "decodes": [other_id]}))
    problem = (f"model {tmp_path / 'm.safetensors'} has \"decodes\" without \"codes_id\", which checks its encoder and "
               "codebooks against the models it lists (edited by hand, or written by an older train --max-steps 0): "
               "remove \"decodes\" to decode its own files only, or make it again from the model it was made from")
    with pytest.raises(VQCodecError) as refused:
        Codec.load(str(tmp_path / "m"))
    assert str(refused.value) == problem
    (tmp_path / "other.vq").write_bytes(other_codec.encode_audio(signal(1, 1600, 16000), 16000, 2))
    result = cli("decode", tmp_path / "other.vq", tmp_path / "out.wav", "-m", tmp_path / "m.safetensors")
    assert (result.returncode, result.stderr.decode()) == (1, f"vqcodec: error: {problem}\n")
    assert not (tmp_path / "out.wav").exists()
    result = cli("models", env={"VQCODEC_MODEL_PATH": str(tmp_path)})
    assert (result.returncode, result.stderr.decode()) == (0, f"vqcodec: warning: {problem}; not listed\n")
    (tmp_path / "m.json").write_text(json.dumps({**meta, "decodes": []}))
    assert Codec.load(str(tmp_path / "m")).decodes == set()


def test_models_warns_of_a_broken_model_and_lists_the_others(cli, tiny_model_path, encoded, tmp_path, monkeypatch):
    """A model JSON that cannot be used (not JSON, a bad config, "decodes" or "training") is one warning line for
    `models` and one error line when loaded, never a traceback; the good models are still found."""
    import shutil

    broken = {"garbled": lambda meta: "{not json",
              "badconfig": lambda meta: json.dumps({**meta, "config": [1, 2]}),
              "baddecodes": lambda meta: json.dumps({**meta, "decodes": "a8f645bdaba073ee"}),
              "badcodesid": lambda meta: json.dumps({**meta, "codes_id": ["A8F645BDABA073EE"]}),  # a TypeError
              "badtraining": lambda meta: json.dumps({**meta, "training": "abc"}),  # --init had a traceback
              "deep": lambda meta: "[" * 100_000 + "]" * 100_000}  # RecursionError in json
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    for name, text in broken.items():
        shutil.copy(tiny_model_path, tmp_path / f"{name}.safetensors")
        (tmp_path / f"{name}.json").write_text(text(meta))
    env = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(tmp_path), str(tiny_model_path.parent)])}
    for args in (["models"], ["models", "--json"]):
        result = cli(*args, env=env)
        assert result.returncode == 0, result.stderr.decode()
        warnings = result.stderr.decode().splitlines()
        assert len(warnings) == len(broken) and all(line.startswith("vqcodec: warning: model ") for line in warnings)
        assert all(any(f"{name}.safetensors" in line for line in warnings) for name in broken)
        assert any("garbled.safetensors has an unreadable garbled.json (" in line for line in warnings)  # not NAME.json
        assert "tiny" in result.stdout.decode() and "garbled" not in result.stdout.decode()
    from vqcodec import Codec, VQCodecError
    from vqcodec.registry import model_for_file

    monkeypatch.setenv("VQCODEC_MODEL_PATH", env["VQCODEC_MODEL_PATH"])
    for name in broken:
        with pytest.raises(VQCodecError, match=f"{name}.safetensors"):
            Codec.load(name)
    assert model_for_file((encoded / "out.vq").read_bytes()) == str(tiny_model_path)  # by id, past the broken ones
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))  # only the broken ones
    with pytest.raises(VQCodecError, match="model files on the search path do not check out"):
        model_for_file((encoded / "out.vq").read_bytes())


def test_a_copy_of_a_model_cut_short_on_the_path_does_not_stand_in_for_the_whole_one(cli, encoded, tiny_model_path,
                                                                                    tmp_path):
    """A copy of a model whose weights were cut short (a copy or download under way) earlier on
    VQCODEC_MODEL_PATH was listed by `models` and taken for every file of its id, which then failed
    ("cannot read model ..."), though the whole model further on decodes them."""
    import shutil

    weights = tiny_model_path.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(weights[:len(weights) // 2])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("half", "empty"):
        shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / f"{name}.json")
    env = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(tmp_path), str(tiny_model_path.parent)])}
    result = cli("models", "--json", env=env, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"vqcodec: warning: model {tmp_path / 'empty.safetensors'} has weights cut short or in no safetensors file "
        "(0 bytes, too few for their header); not listed",
        f"vqcodec: warning: model {tmp_path / 'half.safetensors'} has weights cut short ({len(weights) // 2} bytes "
        f"of {len(weights)}); not listed"]
    assert [m["name"] for m in json.loads(result.stdout)] == ["tiny", "image", "speech16k"]
    out = tmp_path / "out.wav"
    result = cli("decode", encoded / "out.vq", out, env=env, text=True)
    assert result.returncode == 0 and out.exists(), result.stderr


@pytest.mark.parametrize("offset", ['"4"', "4.0", "true", "null"])
def test_weights_whose_data_offsets_are_not_whole_numbers_are_unreadable(tiny_model_path, tmp_path, monkeypatch,
                                                                         offset):
    """A safetensors header whose data_offsets end is not a whole number: `vqcodec models` ended in a TypeError
    traceback (adding it to the header's size), or said 'cut short (N bytes of 62.0)'."""
    from vqcodec.registry import list_models

    header = ('{"x": {"dtype": "F16", "shape": [2], "data_offsets": [0, %s]}}' % offset).encode()
    (tmp_path / "m.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "m.json")
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))
    problems = []
    assert "m" not in [model["name"] for model in list_models(problems=problems)]
    assert problems == [f"model {tmp_path / 'm.safetensors'} has unreadable weights (a tensor's data_offsets are not "
                        "whole numbers)"]


def test_models_names_an_unusable_model_as_what_shadows_the_next_of_its_name(cli, tiny_model_path, tmp_path):
    """A model left out for its problem still takes its name, and the next of that name was said to be
    'shadowed by the one above', which the listing did not hold."""
    import shutil

    (tmp_path / "tiny.safetensors").write_bytes(b"")
    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "tiny.json")
    env = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(tmp_path), str(tiny_model_path.parent)])}
    result = cli("models", env=env, text=True)
    assert result.returncode == 0, result.stderr
    tiny = [line for line in result.stdout.splitlines() if line.startswith("tiny ")]
    assert len(tiny) == 1 and tiny[0].endswith(
        "(shadowed by the unusable model of that name in the warning above; still decodes its files)"), tiny
    assert result.stderr.startswith(f"vqcodec: warning: model {tmp_path / 'tiny.safetensors'} has ")


@pytest.mark.parametrize("args", [["encode", "IN", "OUT", "-m", ""], ["codes", "IN", "OUT", "-m", " "],
                                  ["train", "DIR", "--out", "OUT", "--init", ""]])
def test_an_empty_model_name_is_refused_not_taken_for_the_default(cli, encoded, tmp_path, args):
    """`-m "$MODEL"` with the variable unset encoded with the default model, and `--init ""` trained from
    scratch, without a word."""
    args = [{"IN": encoded / "in.wav", "OUT": tmp_path / "out", "DIR": encoded}.get(a, a) for a in args]
    result = cli(*args)
    assert_one_line_error(result)
    assert "cannot be empty" in result.stderr.decode() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["encode", "", "out.vq", "-m", "MODEL"],  # coded the current folder (an empty path is ".")
    ["encode", "in.wav", "", "-m", "MODEL"],
    ["decode", "", "out.wav", "-m", "MODEL"],  # decoded the current folder's .vq files into a folder out.wav
    ["decode", "in.vq", "", "-m", "MODEL"],
    ["decode", "in.vq", "out.wav", "--format", "", "-m", "MODEL"],
    ["info", ""], ["codes", "", "out.npy", "-m", "MODEL"], ["pack", "", "out.vq", "-m", "MODEL"],
    ["eval", "MODEL", ""],
    ["eval", "MODEL", "in.wav", "-q", ""],  # measured the default levels
    ["eval", "MODEL", "in.wav", "--rates", ""],  # measured at qualities, not rates
    ["train", "", "--out", "run", "--max-steps", "1"],
    ["train", ".", "--out", "", "--max-steps", "1"],
    ["train", ".", "--out", "run", "--name", "", "--max-steps", "1"],
    ["train", ".", "--out", "run", "--config", "", "--max-steps", "1"],
    ["fit-prior", "MODEL", ""],
    ["fit-prior", "MODEL", ".", "--out", ""],  # replaced the model's prior in place, as without --out
])
def test_empty_arguments_and_options_are_refused(encoded, tiny_model_path, tmp_path, monkeypatch, capsys, args):
    """An empty argument or option (an unset shell variable, "$FILE") is refused in one line before
    anything is read or written, instead of standing for the current folder or for the default."""
    import shutil

    from vqcodec.cli import run

    model = tmp_path / "model" / "tiny.safetensors"
    model.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(Path(tiny_model_path).with_suffix(suffix), model.with_suffix(suffix))
    work = tmp_path / "work"
    work.mkdir()
    for name in ("in.wav", "out.vq"):
        shutil.copy(encoded / name, work / ("in.vq" if name == "out.vq" else name))
    monkeypatch.chdir(work)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = run([str(model) if a == "MODEL" else a for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vqcodec: error: Invalid value for ") and err.endswith(": cannot be empty\n"), err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in work.iterdir()) == ["in.vq", "in.wav"]


@pytest.mark.parametrize("args, why", [
    (["encode", "IN", "OUT", "-m", "TINY", "--depth-weight", "1"], "model tiny has no prior"),
    (["encode", "IN", "OUT", "-m", "TINY", "--rate-weight", "2", "--depth-weight", "0"], "model tiny has no prior"),
    (["encode", "IN", "OUT", "-m", "GOLDEN", "--coding", "fixed", "--rate-weight", "1"], "--coding fixed"),
    (["encode", "FOLDER", "OUT", "-m", "GOLDEN", "--coding", "fixed", "--depth-weight", "2"], "--coding fixed"),
    (["encode", "VQ", "OUT", "-m", "TINY", "-q", "2", "--depth-weight", "1"], "model tiny has no prior"),
    (["encode", "VQFOLDER", "OUT", "-m", "TINY", "-q", "2", "--depth-weight", "1"], "model tiny has no prior"),
    (["encode", "VQFOLDER", "OUT", "-q", "2", "--coding", "fixed", "--depth-weight", "1"], "--coding fixed"),
    (["encode", "VQFOLDER", "OUT", "-q", "2", "--depth-weight", "1"], "model tiny has no prior"),  # the files' model
    (["eval", "TINY", "IN", "-q", "1", "--depth-weight", "2"], "model tiny has no prior"),
    (["codes", "IN", "OUT", "-m", "TINY", "--depth-weight", "2"], "model tiny has no prior"),
    (["codes", "FOLDER", "OUT", "-m", "TINY", "--depth-weight", "0.5"], "model tiny has no prior"),
])
def test_weights_are_refused_for_fixed_width_files(encoded, tiny_model_path, tmp_path, capsys, monkeypatch, args, why):
    """--rate-weight and --depth-weight weigh bits under the model's prior; files coded fixed-width
    (a model without a prior, or --coding fixed) were written as if neither had been given."""
    from vqcodec.cli import run

    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tiny_model_path.parent))  # where the .vq files' model is found

    golden = Path(__file__).resolve().parent / "data" / "golden" / "golden_audio.safetensors"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.wav").write_bytes((encoded / "in.wav").read_bytes())
    vq_folder = tmp_path / "vqs"  # refused once, before any file is read: each file said it again
    vq_folder.mkdir()
    for name in ("a.vq", "b.vq"):
        (vq_folder / name).write_bytes((encoded / "out.vq").read_bytes())
    (vq_folder / "c.vq").write_bytes(b"not a .vq file")
    names = {"IN": encoded / "in.wav", "OUT": tmp_path / "out", "TINY": tiny_model_path, "GOLDEN": golden,
             "FOLDER": folder, "VQ": encoded / "out.vq", "VQFOLDER": vq_folder}
    code = run([str(names.get(a, a)) for a in args])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "bits under the model's prior" in err and why in err, err
    assert ("chosen without one" if args[0] == "codes" else "coded fixed-width") in err, err
    assert not (tmp_path / "out").exists()


def test_a_model_name_with_a_folder_in_it_is_a_path_not_searched_for(tiny_model_path, tmp_path, monkeypatch):
    import shutil

    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    (tmp_path / "search" / "models").mkdir(parents=True)
    shutil.copytree(tiny_model_path.parent, tmp_path / "search" / "other")
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path / "search" / "models"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VQCodecError, match="not found"):  # not search/models/../other/tiny
        find_model("../other/tiny")
    assert find_model("search/other/tiny") == Path("search/other/tiny.safetensors")
    with pytest.raises(VQCodecError, match="empty"):
        find_model("")


@pytest.mark.parametrize("name", ["x" * 300, "/tmp/" + "x" * 300 + ".safetensors", "x" * 5000])
def test_a_model_name_too_long_to_look_up_is_one_clear_error(name):
    """Codec.load raised a bare OSError ('File name too long') from Path.exists, with the whole name in it."""
    from vqcodec import Codec, VQCodecError

    with pytest.raises(VQCodecError,
                       match=r"^cannot look for the model '(/tmp/)?x+'\.\.\.: File name too long$") as error:
        Codec.load(name)
    assert len(str(error.value)) < 120


@pytest.mark.parametrize("name", ["a/b\0c", "speech\0", "/tmp/\0.safetensors"])
def test_a_model_name_with_a_nul_is_refused_with_the_nul_shown_escaped(name):
    """'model file not found: a/b<NUL>c.safetensors' held the NUL itself, which a terminal hides."""
    from vqcodec import Codec, VQCodecError

    with pytest.raises(VQCodecError, match=r"^a model name or path cannot hold a NUL character: '.*\\x00") as error:
        Codec.load(name)
    assert "\0" not in str(error.value)


def test_a_long_model_name_with_a_nul_is_cut_before_it_is_quoted():
    """The name was quoted and then cut at 60 characters, which left its quote open: 'xxx…x or $'\\xff…\\x."""
    from vqcodec import Codec, VQCodecError
    from vqcodec.wording import command_line_wording

    with pytest.raises(VQCodecError) as error:
        Codec.load("x" * 100 + "\0")
    assert str(error.value) == f"a model name or path cannot hold a NUL character: '{'x' * 60}'..."
    with command_line_wording(), pytest.raises(VQCodecError) as error:
        Codec.load("\udcff" * 100 + "\0")  # byte 0xff, shell-quoted on the command line
    assert str(error.value) == "a model name or path cannot hold a NUL character: $'" + "\\xff" * 60 + "'..."
    with pytest.raises(VQCodecError) as error:
        Codec.load("x" * 59 + "\0")
    assert str(error.value) == "a model name or path cannot hold a NUL character: '" + "x" * 59 + "\\x00'"


def test_a_long_value_a_message_quotes_is_cut_with_its_quote_closed_or_the_cut_told():
    """Messages cut a value's repr at 40 or 60 characters ({value!r:.60}): a text's quote was left open and another
    value's cut was not told. Text is now cut before it is quoted; another value's repr ends '...' where cut."""
    from vqcodec.errors import VQCodecError
    from vqcodec.streams import checked_flag
    from vqcodec.registry import meta_problem
    from vqcodec.wording import command_line_wording, shown_cut

    from conftest import REPO_ROOT

    meta = json.loads((REPO_ROOT / "models" / "speech16k.json").read_text())
    assert meta_problem(meta) is None
    assert meta_problem({**meta, "codes_id": "z" * 80}) == "a bad \"codes_id\" ('" + "z" * 60 + "'...: not 16 hex digits)"
    assert meta_problem({**meta, "model_id": "z" * 80}) == "a bad model_id ('" + "z" * 60 + "'...: not 16 hex digits)"
    assert meta_problem({**meta, "decodes": ["z" * 80]}) == "a bad \"decodes\" (['" + "z" * 58 + "...: not a list of model ids)"
    with command_line_wording():
        assert shown_cut("\udcff" * 70) == "$'" + "\\xff" * 60 + "'..."
    assert shown_cut(Path("a" * 70)) == "'" + "a" * 60 + "'..."
    assert shown_cut(list(range(5))) == "[0, 1, 2, 3, 4]"
    with pytest.raises(VQCodecError) as error:
        checked_flag("replace", list(range(100)))
    assert str(error.value) == "replace must be True or False, not " + repr(list(range(100)))[:40] + "..."


def test_a_model_path_without_its_suffix_keeps_a_dot_in_the_name(cli, tiny_model_path, tmp_path, signal):
    """-m runs/mine.v2 looked for runs/mine.safetensors (the .v2 taken for a suffix): 'model file not found'."""
    import shutil

    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_model_path.with_suffix(suffix), tmp_path / f"mine.v2{suffix}")
    soundfile.write(tmp_path / "a.wav", signal(1, 1600, 16000).T, 16000)
    result = cli("encode", tmp_path / "a.wav", tmp_path / "a.vq", "-m", tmp_path / "mine.v2", "-q", "2")
    assert result.returncode == 0, result.stderr.decode()
    result = cli("eval", tmp_path / "mine.v2", tmp_path / "a.wav", "-q", "2", text=True)
    assert result.returncode == 0 and result.stdout.startswith("mine.v2 "), result.stderr
    result = cli("eval", tmp_path / "a.wav", tmp_path / "a.wav")  # a path that names no model
    assert_one_line_error(result)
    assert f"model file not found: {tmp_path / 'a.wav.safetensors'}" in result.stderr.decode()


def test_a_bare_model_name_is_the_installed_model_even_beside_a_local_one(tiny_model_path, tmp_path, monkeypatch):
    """A file or folder named like an installed model in the current folder took the name (`-m speech16k`
    loaded ./speech16k); a bare name now always means the installed model, and a local one takes a path."""
    import shutil

    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    shipped = find_model("speech16k")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_path.parent, tmp_path / "speech16k")  # a folder of that name, with a model in it
    (tmp_path / "image").write_text("not a model")                   # a file of that name
    assert find_model("speech16k") == shipped and find_model("image").parent == shipped.parent
    assert find_model("./speech16k") == Path("speech16k") / tiny_model_path.name
    assert find_model("speech16k/" + tiny_model_path.name) == Path("speech16k") / tiny_model_path.name
    shutil.copytree(tiny_model_path.parent, tmp_path / "mine")
    with pytest.raises(VQCodecError, match=r"unknown model 'mine' .*give it as a path: \./mine"):
        find_model("mine")


def test_a_model_name_with_one_of_its_files_missing_says_which(tiny_model_path, tmp_path, monkeypatch):
    """Weights copied without their NAME.json (or the reverse) were an 'unknown model'."""
    import shutil

    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))
    shutil.copy(tiny_model_path, tmp_path / "mine.safetensors")
    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "theirs.json")
    with pytest.raises(VQCodecError, match=r"mine.safetensors has no mine.json beside it"):
        find_model("mine")
    with pytest.raises(VQCodecError, match=r"theirs.json has no theirs.safetensors beside it"):
        find_model("theirs")
    with pytest.raises(VQCodecError, match="unknown model 'nobody'"):
        find_model("nobody")


@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_a_model_file_that_is_a_link_leading_nowhere_is_named_with_why(tiny_model_path, tmp_path, monkeypatch, link):
    """A model's file that is a link to itself (or in a loop) or to a missing file was taken for no file at all:
    'unknown model 'mine' (installed: ...)' by name, 'model file not found' by path, though the file is there."""
    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "mine.json")
    weights = tmp_path / "mine.safetensors"
    weights.symlink_to(weights.name if link == "loop" else "gone.safetensors")
    why = "Too many levels of symbolic links" if link == "loop" else "a link to a missing file"
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))
    with pytest.raises(VQCodecError, match=re.escape(f"model 'mine': cannot read {weights}: {why}")):
        find_model("mine")
    with pytest.raises(VQCodecError, match="^" + re.escape(f"cannot read {weights}: {why}") + "$"):
        find_model(str(tmp_path / "mine"))


def test_progress_is_shown_on_a_terminal_for_long_audio_only(tmp_path, cli, tiny_model_path, signal):
    from vqcodec.cli import PROGRESS_MIN_BLOCKS
    from vqcodec.codec import AUDIO_BLOCK_FRAMES

    long_samples = (PROGRESS_MIN_BLOCKS * AUDIO_BLOCK_FRAMES + 1) * 8   # the tiny model's hop is 8
    soundfile.write(tmp_path / "long.wav", signal(1, long_samples, 16000).T, 16000)
    soundfile.write(tmp_path / "short.wav", signal(1, long_samples // 2, 16000).T, 16000)
    model = ["--model", str(tiny_model_path)]
    for name, shown in (("long", True), ("short", False)):
        for stage, args in (("encoding", ("encode", tmp_path / f"{name}.wav", tmp_path / f"{name}.vq", "-q", "2")),
                            ("decoding", ("decode", tmp_path / f"{name}.vq", tmp_path / f"{name}_out.wav"))):
            code, terminal = on_terminal(*args, *model)
            assert code == 0, terminal
            percentages = [moment[0] for moment in terminal_moments(terminal)
                           if re.fullmatch(rf"{stage} \d+%", moment[0])]
            assert bool(percentages) == shown and percentages == sorted(percentages, key=lambda p: int(p[9:-1]))
            assert terminal_screen(terminal) == [""]  # cleared when done
    piped = cli("encode", tmp_path / "long.wav", tmp_path / "piped.vq", "-q", "2", *model)
    assert piped.returncode == 0 and piped.stderr == b""    # not a terminal: nothing shown


def test_a_warning_error_or_stop_during_a_percentage_clears_it_on_a_terminal(monkeypatch):
    """encode's and decode's percentage was not the progress line that warning and error lines clear first: a
    warning during a long encode (what the MP3 decoder said) or the error that ended it was written on after
    'encoding 40%', on its line."""
    import warnings

    from vqcodec import cli as cli_module
    from vqcodec.errors import AudioReadWarning, VQCodecError

    def progress_then(end, warn=False):
        def main(args, **options):
            progress = cli_module._terminal_progress()
            progress("encoding", 4000, 10000)
            if warn:
                warnings.warn("a.mp3: the MP3 decoder says: damage; read past it", AudioReadWarning)
            progress("encoding", 6000, 10000)
            raise end
        return main

    monkeypatch.setattr(cli_module.cli, "main", progress_then(VQCodecError("cannot read audio a.mp3"), warn=True))
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    assert cli_module.run([]) == 1
    assert stream.screen() == ["vqcodec: warning: a.mp3: the MP3 decoder says: damage; read past it",
                               "vqcodec: error: cannot read audio a.mp3", ""]
    monkeypatch.setattr(cli_module.cli, "main", progress_then(cli_module._Stopped(KeyboardInterrupt())))
    stream = Terminal()  # a ^C the terminal shows at the start of the percentage's line is cleared with it
    monkeypatch.setattr(sys, "stderr", stream)
    assert cli_module.run([]) == 130
    assert stream.screen() == ["vqcodec: interrupted", ""]


def test_stdin_stdout(encoded, cli, tiny_model_path):
    wav = (encoded / "in.wav").read_bytes()
    # -m also takes the folder that holds one model
    result = cli("encode", "-", "-", "-m", tiny_model_path.parent, "-q", "3", input=wav)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == (encoded / "out.vq").read_bytes()
    result = cli("decode", "-", "-", "--format", "wav", input=result.stdout,
                 env={"VQCODEC_MODEL_PATH": str(tiny_model_path.parent)})
    assert result.returncode == 0, result.stderr.decode()
    audio, rate = soundfile.read(io.BytesIO(result.stdout), always_2d=True)
    assert rate == 22050 and audio.shape == (11025, 2)
    assert sorted(listing(encoded)) == ["in.wav", "out.vq"]


@pytest.mark.parametrize("args", [("encode", "-", "-"), ("decode", "-", "-"), ("info", "-"), ("codes", "-", "-"),
                                  ("pack", "-", "-")])
def test_empty_stdin_is_said_to_be_stdin(cli, tiny_model_path, args):
    """Empty stdin was refused as "-: file is empty", naming a file called "-" (pack: "-: not a NumPy .npy
    file")."""
    result = cli(*args, "-m", tiny_model_path, input=b"", text=True)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "vqcodec: error: stdin is empty\n")


class ShortWrites(io.RawIOBase):
    """stdout as Python has it when unbuffered (PYTHONUNBUFFERED, python -u): a raw stream, whose write
    may take only part of what it is given, as a pipe or a filling disk does; `terminal` says isatty."""

    def __init__(self, terminal: bool = False):
        self.taken, self.terminal = bytearray(), terminal

    def writable(self):
        return True

    def isatty(self):
        return self.terminal

    def write(self, data):
        part = bytes(data[:1000])
        self.taken += part
        return len(part)


def test_stdout_gets_every_byte_when_unbuffered(encoded, tiny_model_path, monkeypatch):
    from vqcodec.cli import run

    stdout = ShortWrites()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout, write_through=True))
    assert run(["decode", str(encoded / "out.vq"), "-", "-m", str(tiny_model_path)]) == 0
    audio, rate = soundfile.read(io.BytesIO(bytes(stdout.taken)), always_2d=True)
    assert len(stdout.taken) > 1000 and rate == 22050 and audio.shape == (11025, 2)


def test_an_unbuffered_stdout_that_takes_no_bytes_is_refused(encoded, tiny_model_path, monkeypatch, capsys):
    """A raw stdout whose every write returns 0 was written to again for ever."""
    from vqcodec.cli import run

    from conftest import TakesNothing

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(TakesNothing("<stdout>"), write_through=True))
    assert run(["decode", str(encoded / "out.vq"), "-", "-m", str(tiny_model_path)]) == 1
    assert capsys.readouterr().err == ("vqcodec: error: cannot write stdout: it takes no bytes (8 writes in a row wrote "
                                       "none)\n")


def test_threads_reach_torch_in_encode_decode_and_codes(encoded, tiny_model_path, tmp_path, monkeypatch):
    """Only train, eval and fit-prior took --threads, and a .vq file is byte-identical between runs
    only at the same thread count: encode, decode and codes had no way to pin it."""
    import torch

    from vqcodec.cli import run

    source = tmp_path / "in"
    source.mkdir()
    (source / "a.vq").write_bytes((encoded / "out.vq").read_bytes())
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(ShortWrites(), write_through=True))
    model = ["-m", str(tiny_model_path)]
    try:
        for threads, args in ((2, ["encode", encoded / "in.wav", tmp_path / "a.vq", "-q", "1"]),
                              (3, ["decode", source / "a.vq", "-"]),
                              (2, ["decode", source, tmp_path / "decoded"]),
                              (3, ["codes", source / "a.vq", tmp_path / "a.npy"])):
            assert run([*map(str, args), *model, "--threads", str(threads)]) == 0, args
            assert torch.get_num_threads() == threads, args
    finally:
        torch.set_num_threads(1)


# Decoding that receives a signal half way through its output, then runs on as a long decode would.
SIGNAL_WHILE_WRITING = """
import os, signal, sys, time
from vqcodec.codec import Codec
from vqcodec.cli import run

def decode_audio_file(self, data, destination, *args, **kwargs):
    destination.write(b"RIFF half a file")
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(600)  # a signal that does not stop the run: the test's timeout ends it

Codec._decode_audio_file = decode_audio_file  # what the command line calls (decode_audio_file's body)
sys.exit(run(sys.argv[2:]))
"""


@pytest.mark.parametrize("name, status, folder", [("SIGTERM", 143, False), ("SIGHUP", 129, True)])
def test_sigterm_and_sighup_stop_like_ctrl_c_leaving_no_temporary_file(encoded, tiny_model_path, tmp_path, name,
                                                                       status, folder):
    """kill (SIGTERM) and a closed terminal (SIGHUP) ended the process where it stood, leaving the
    hidden .part file of the output half written. A folder's stop line left out, and did not name, the files set
    aside before the run (a name passed over, a header that cannot be read), which its summary names and counts."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.vq").write_bytes((encoded / "out.vq").read_bytes())
    set_aside = {"b.vq", "x.vq"} if folder else set()
    if folder:
        (source / "b.vq").write_bytes(b"not a .vq file")
        (source / "x.vq").symlink_to(tmp_path / "gone.vq")
    out = tmp_path / "out"
    out.mkdir()
    args = [source, out] if folder else [source / "a.vq", out / "a.wav"]
    result = run_python("-c", SIGNAL_WHILE_WRITING, name, "decode", *args, "-m", tiny_model_path, timeout=300)
    lines = result.stderr.decode().splitlines()  # no blank line first (click's, for a terminal's ^C) in a pipe
    summary = [f"skipping {source / 'x.vq'}: broken symbolic link (to {tmp_path / 'gone.vq'})",
               f"skipping {source / 'b.vq'}: not a .vq file (bad magic)",
               "decoded 0 files, 0 bytes before the stop; 1 of 3 files not decoded"] if folder else []
    assert result.returncode == status and lines == [*summary, f"vqcodec: stopped by {name}"], result.stderr.decode()
    assert listing(out) == set() and listing(source) == {"a.vq", *set_aside}


def test_a_stop_while_libsndfile_writes_stops_the_decoding(codec, small_vq, capfd):
    """Ctrl-C or SIGTERM arriving while libsndfile called back into Python to write was raised inside
    that callback, where cffi printed its traceback and dropped it; soundfile then failed an assertion
    on the short write (an AssertionError's traceback, not "vqcodec: interrupted")."""
    import signal

    class Stream(io.BytesIO):
        writes = 0

        def write(self, data):
            Stream.writes += 1
            if Stream.writes == 3:
                signal.raise_signal(signal.SIGINT)
            return super().write(data)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            codec.decode_audio_file(small_vq, Stream(), "WAV")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("output", ["out.wav", "-"])
def test_a_full_disk_under_audio_output_is_one_line(encoded, tiny_model_path, tmp_path, output):
    """A write that failed inside soundfile's callbacks (a full disk; here a file size limit) printed a
    traceback for each callback and libsndfile wrote on; to stdout, soundfile then failed an assertion. A path's
    error names it, as an image's does, not the hidden temporary file written in its place (.out.wav.XXXX.part)."""
    from conftest import run_cli_with_file_size_limit

    result = run_cli_with_file_size_limit(10000, "decode", encoded / "out.vq", output if output == "-" else
                                          tmp_path / output, "-m", tiny_model_path)
    assert_one_line_error(result)
    assert "File too large" in result.stderr.decode() and listing(tmp_path) == set()
    if output != "-":
        assert result.stderr.decode() == f"vqcodec: error: cannot write {tmp_path / output}: File too large\n"


def test_an_output_name_of_up_to_255_bytes_is_written_alone_and_in_a_folder(encoded, tiny_model_path, tmp_path):
    """The temporary file's name held the output's whole name and more: an output named with 240 to 255
    bytes, which the file system allows, failed with "File name too long"."""
    from vqcodec.cli import run

    name = "y" * 251  # .wav makes 255 bytes
    source = tmp_path / "in"
    source.mkdir()
    (source / f"{name}.vq").write_bytes((encoded / "out.vq").read_bytes())
    model = ["-m", str(tiny_model_path)]
    assert run(["decode", str(source / f"{name}.vq"), str(tmp_path / f"{name}.wav"), *model]) == 0
    assert run(["decode", str(source), str(tmp_path / "out"), *model]) == 0
    assert listing(tmp_path / "out") == {f"{name}.wav"}
    assert (tmp_path / "out" / f"{name}.wav").read_bytes() == (tmp_path / f"{name}.wav").read_bytes()


def test_a_line_break_in_a_file_name_keeps_errors_on_one_line(encoded, tiny_model_path, tmp_path, capsys):
    """A file name holding a line break split the one line of an error, and of a folder's "skipping" list."""
    from vqcodec.cli import run

    source = tmp_path / "in"
    source.mkdir()
    (source / "new\nline.vq").write_bytes(b"not a vq file")
    (tmp_path / "taken\r\n.wav").write_bytes(b"precious")
    model = ["-m", str(tiny_model_path)]
    assert run(["decode", str(encoded / "out.vq"), str(tmp_path / "taken\r\n.wav"), *model]) == 1
    assert capsys.readouterr().err == f"vqcodec: error: {tmp_path}/taken\\r\\n.wav exists; pass --force to overwrite it\n"
    assert run(["decode", str(source), str(tmp_path / "out"), *model]) == 1
    assert capsys.readouterr().err.splitlines()[0] == f"skipping {source}/new\\nline.vq: not a .vq file (bad magic)"


def test_stdins_name_as_the_input_while_stdin_is_closed_is_refused_as_dash_is(encoded, tiny_model_path, monkeypatch,
                                                                            capsys):
    """`info /dev/stdin <&-` said '/dev/stdin: no such file' (and read the file opened next, on descriptor 0)."""
    from vqcodec.cli import run

    vq, model = str(encoded / "out.vq"), ["-m", str(tiny_model_path)]
    monkeypatch.setattr(sys, "stdin", None)
    saved = os.dup(0)
    os.close(0)  # as `<&-` leaves it
    try:
        results = [(args, run([*args, *model]), capsys.readouterr().err)
                   for args in (["info", "/dev/stdin"], ["decode", "/dev/fd/0", "x.wav"],
                                ["encode", "/dev/stdin", "x.vq"], ["codes", "/proc/self/fd/0", "x.npy"])]
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    for args, code, err in results:
        assert code == 1 and err == "vqcodec: error: stdin is closed: pipe or redirect the input into it\n", (args, err)
    assert run(["info", vq]) == 0  # a file's name is read as before


def test_a_missing_input_is_named_as_what_the_command_takes(tmp_path, tiny_model_path, capsys):
    """encode, decode and codes take a file or a folder, as eval does, and name a missing input as eval names it:
    they said 'no such file' (codes of a missing folder too); info and pack take a file alone. The words are
    wording.FILE_OR_FOLDER_MISSING, which evaluate.files_of says too (a literal of its own, and of cli's)."""
    from vqcodec import Codec, VQCodecError
    from vqcodec.cli import run
    from vqcodec.evaluate import files_of
    from vqcodec.wording import FILE_OR_FOLDER_MISSING

    missing, model = str(tmp_path / "missing"), ["-m", str(tiny_model_path)]
    for args, said in ((["encode", missing, str(tmp_path / "x.vq")], "no such file or directory"),
                       (["decode", missing, str(tmp_path / "x.wav")], "no such file or directory"),
                       (["codes", missing, str(tmp_path / "x.npy")], "no such file or directory"),
                       (["eval", str(tiny_model_path), missing], "no such file or directory"),
                       (["info", missing], "no such file"),
                       (["pack", missing, str(tmp_path / "x.vq")], "no such file")):
        code = run([*args, *model]) if args[0] != "eval" else run(args)
        assert (code, capsys.readouterr().err) == (1, f"vqcodec: error: {missing}: {said}\n"), args
    assert sorted(tmp_path.iterdir()) == []
    assert FILE_OR_FOLDER_MISSING == "no such file or directory"
    with pytest.raises(VQCodecError) as refused:
        files_of(Codec.load(str(tiny_model_path)), missing)
    assert str(refused.value) == f"{missing}: {FILE_OR_FOLDER_MISSING}"


def test_a_missing_input_is_named_before_the_output_is_looked_at(tmp_path, tiny_model_path, capsys):
    """`encode in/ out/` of a folder not there said 'out/: no such directory (a single file's output is a file name)',
    and over an existing output 'out.vq exists; pass --force': the input decides whether the output is a file or a
    folder, so a missing one is what is said; a link to itself gets the system's reason, as eval gives it."""
    from vqcodec.cli import run

    (tmp_path / "taken.vq").write_bytes(b"kept")
    (tmp_path / "loop").symlink_to("loop")
    missing, model = str(tmp_path / "missing"), ["-m", str(tiny_model_path)]
    for command in ("encode", "decode", "codes"):
        for args, said in (([missing + "/", str(tmp_path / "out") + "/"], f"{missing}/: no such file or directory"),
                           ([missing, str(tmp_path / "taken.vq")], f"{missing}: no such file or directory"),
                           ([str(tmp_path / "loop"), str(tmp_path / "x.out")],
                            f"{tmp_path / 'loop'}: Too many levels of symbolic links")):
            assert (run([command, *args, *model]), capsys.readouterr().err) == (1, f"vqcodec: error: {said}\n"), \
                (command, args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop", "taken.vq"]


@pytest.mark.parametrize("stream, said", [
    ("stdin", "Fatal Python error: init_sys_streams: <stdin> is a directory, cannot continue\n"),
    ("stdout", "Fatal Python error: init_sys_streams: can't initialize sys standard streams\n"),
    ("stderr", None)])
def test_a_directory_as_a_standard_stream_stops_python_before_vqcodec_runs_and_writes_nothing(tmp_path, stream, said):
    """Python refuses a directory as descriptor 0, 1 or 2 while it starts (init_sys_streams), before any of vqcodec
    runs, so vqcodec cannot word it: README's Limits quote Python's line and status, which this checks."""
    import subprocess

    directory = os.open(tmp_path, os.O_RDONLY)
    streams = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | {stream: directory}
    try:
        result = subprocess.run([sys.executable, "-m", "vqcodec", "encode", "-", str(tmp_path / "out.vq")],
                                timeout=60, **streams)
    finally:
        os.close(directory)
    assert result.returncode == 1 and not result.stdout
    if said is not None:
        assert result.stderr.decode().startswith(said) and b"Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_stdin_open_for_writing_only_is_named_as_unreadable_by_every_command(encoded, tiny_model_path, tmp_path,
                                                                             monkeypatch, capsys):
    """`encode - x.vq 0> file` and `codes` said 'vqcodec: error: Bad file descriptor', naming nothing, where decode,
    info and pack said '-: cannot read (Bad file descriptor)'."""
    from vqcodec.cli import run

    monkeypatch.chdir(tmp_path)
    write_only = os.open("written", os.O_WRONLY | os.O_CREAT)
    try:
        for args in (["encode", "-", "x.vq"], ["codes", "-", "x.npy"], ["decode", "-", "x.wav"], ["info", "-"],
                     ["pack", "-", "x.vq"]):
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(open(write_only, "rb", closefd=False)))
            assert run([*args, "-m", str(tiny_model_path), "--force"] if args[0] != "info" else args) == 1
            assert capsys.readouterr().err == "vqcodec: error: -: cannot read (Bad file descriptor)\n", args
    finally:
        os.close(write_only)
    assert sorted(os.listdir(tmp_path)) == ["written"]


class _FailingMidway(io.RawIOBase):
    """A pipe whose read fails (EIO) once `fails_at` bytes are read: the reads before it stop there."""

    def __init__(self, data: bytes, fails_at: int):
        self.data, self.fails_at = io.BytesIO(data), fails_at

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.data.tell() >= self.fails_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self.data.readinto(memoryview(buffer)[:self.fails_at - self.data.tell()])


def test_stdin_whose_read_fails_midway_is_named_as_unreadable(encoded, tiny_model_path, tmp_path, monkeypatch,
                                                              capsys):
    """A read of stdin failing past its first block, as media are copied, as a .vq file is read on, as an MP3's ID3v2
    tags are, said 'vqcodec: error: Input/output error', naming nothing, where one failing in the first block says
    '-: cannot read (Input/output error)'."""
    from vqcodec.cli import run

    monkeypatch.chdir(tmp_path)
    wav, vq = (encoded / "in.wav").read_bytes(), (encoded / "out.vq").read_bytes()
    for data in (wav, vq, id3v2_tag(1000) + wav):
        for command in ("encode", "codes"):
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(_FailingMidway(data, fails_at=100)))
            assert run([command, "-", "out.x", "-m", str(tiny_model_path)]) == 1
            said = capsys.readouterr().err
            assert said == "vqcodec: error: -: cannot read (Input/output error)\n", (command, data[:4])
    assert os.listdir(tmp_path) == []


def test_closed_or_terminal_stdin_and_stdout_are_refused(encoded, tiny_model_path, monkeypatch, capsys):
    """Reading a terminal would wait, without a prompt, for media no one can type; binary output would
    garble it (written with --force, as gzip does); a closed stream (`<&-`, `>&-`) is None in Python."""
    from vqcodec.cli import run

    vq, model = str(encoded / "out.vq"), ["-m", str(tiny_model_path)]
    terminal = io.TextIOWrapper(ShortWrites(terminal=True), write_through=True)
    for stdin, stdout, args, error in (
            (None, None, ["info", "-"], "stdin is closed"),
            (None, None, ["encode", "-", "x.vq"], "stdin is closed"),
            (terminal, None, ["decode", "-", "x.wav"], "stdin is a terminal"),
            (terminal, None, ["codes", "-", "x.npy"], "stdin is a terminal"),
            (None, None, ["decode", vq, "-"], "stdout is closed"),
            (None, terminal, ["decode", vq, "-"], "not writing binary output to a terminal")):
        monkeypatch.setattr(sys, "stdin", stdin)
        monkeypatch.setattr(sys, "stdout", stdout)
        assert run([*args, *model]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"vqcodec: error: {error}") and err.count("\n") == 1, (args, err)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(written := ShortWrites(terminal=True), write_through=True))
    assert run(["decode", vq, "-", "--force", *model]) == 0 and written.taken[:4] == b"RIFF"


def test_a_terminal_named_as_the_input_is_refused_as_stdin_on_one_is(tiny_model_path, tmp_path, monkeypatch, capsys):
    """/dev/tty, or /dev/stdin on a terminal, named as the input was read: the command waited, without a prompt,
    for input no one can type, where `-` on a terminal is refused."""
    import signal

    from vqcodec.cli import run

    def waited(*args):
        raise TimeoutError("the command waited on the terminal")

    master, slave = os.openpty()
    monkeypatch.chdir(tmp_path)
    previous = signal.signal(signal.SIGALRM, waited)
    try:
        tty = os.ttyname(slave)
        for args in (["info", tty], ["decode", tty, "x.wav"], ["encode", tty, "x.vq"], ["codes", tty, "x.npy"],
                     ["pack", tty, "x.vq"]):
            signal.alarm(20)
            try:
                assert run([*args, "-m", str(tiny_model_path)] if args[0] != "info" else args) == 1
            finally:
                signal.alarm(0)
            assert capsys.readouterr().err == f"vqcodec: error: {tty} is a terminal: pipe or redirect the input " \
                                              "into it\n", args
    finally:
        signal.signal(signal.SIGALRM, previous)
        os.close(slave)
        os.close(master)
    assert listing(tmp_path) == set()


def test_text_commands_refuse_a_closed_stdout(encoded, tiny_model_path, monkeypatch, capsys):
    """info, models and eval printed into nothing (`>&-`) and exited 0: eval after all its work; and
    every command (--help and --version wrapped as printing) failed with a traceback since 9331fed."""
    from vqcodec.cli import run

    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tiny_model_path.parent))
    for args in (["info", str(encoded / "out.vq")], ["models"], ["eval", str(tiny_model_path), str(encoded / "in.wav")],
                 ["--version"], ["info", "--help"], []):
        assert run(args) == 1
        assert capsys.readouterr().err == "vqcodec: error: stdout is closed: redirect or pipe the output\n", args


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_stdout_is_one_error_line(encoded, tiny_model_path):
    """`> /dev/full`: the error named no stream ("No space left on device"), and for printed text
    Python's flush at exit added 'Exception ignored ... OSError' and exit status 120. --help and
    --version named no stream either."""
    vq, model = encoded / "out.vq", tiny_model_path
    commands = [["info", vq], ["info", vq, "--json"], ["models"], ["decode", vq, "-", "-m", model],
                ["eval", model, encoded / "in.wav", "--json"], ["--help"], ["--version"], ["encode", "-h"]]
    for args in commands:
        with open("/dev/full", "wb") as full:
            result = run_cli_on(*args, stdout=full, env={"PYTHONUNBUFFERED": "",
                                                         "VQCODEC_MODEL_PATH": str(tiny_model_path.parent)})
        assert (result.returncode, result.stderr.decode()) == (
            1, "vqcodec: error: cannot write stdout: No space left on device\n"), args


def test_stdin_redirected_from_a_regular_file_is_read_in_place_not_copied(tiny_model_path, tmp_path, monkeypatch,
                                                                          capsys):
    """`encode - x.vq < talk.flac` copied the file into $TMPDIR, which it can read where it is; stdin moved on from
    the file's start (`(head -c 10; encode - x.vq) < f`), whose offsets soundfile would misread, is still copied."""
    import vqcodec.streams
    from vqcodec.cli import run

    made, spooled = [], vqcodec.streams.spooled
    monkeypatch.setattr(vqcodec.streams, "spooled", lambda *a, **k: made.append(1) or spooled(*a, **k))
    model = ["-m", str(tiny_model_path)]
    speech = Path(__file__).parent / "data" / "speech.flac"
    assert run(["encode", str(speech), str(tmp_path / "named.vq"), *model]) == 0 and made == []
    (tmp_path / "after.bin").write_bytes(b"0123456789" + speech.read_bytes())
    for name, skipped, copies in (("speech.flac", 0, 0), ("after.bin", 10, 1)):
        with open(speech if skipped == 0 else tmp_path / name, "rb") as stream:
            stream.read(skipped)
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
            assert run(["encode", "-", str(tmp_path / f"{name}.vq"), *model]) == 0, capsys.readouterr().err
            assert stream.fileno() >= 0  # left open, as stdin is
        assert len(made) == copies and capsys.readouterr().err == "", name
        assert (tmp_path / f"{name}.vq").read_bytes() == (tmp_path / "named.vq").read_bytes()


def test_encode_from_stdin_closes_its_spool(tiny_model_path, tmp_path, monkeypatch, capsys):
    """stdin is copied into a temporary file (the spool) that was never closed: a ResourceWarning on every
    encode from stdin, and one more when stdin was closed and the spool made before that was found."""
    import gc
    import warnings

    from vqcodec.cli import run

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((Path(__file__).parent / "data" / "speech.flac").read_bytes())))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(["encode", "-", str(tmp_path / "speech.vq"), "-m", str(tiny_model_path)]) == 0
        monkeypatch.setattr(sys, "stdin", None)
        assert run(["encode", "-", str(tmp_path / "none.vq"), "-m", str(tiny_model_path)]) == 1
        gc.collect()
    assert capsys.readouterr().err == "vqcodec: error: stdin is closed: pipe or redirect the input into it\n"
    assert (tmp_path / "speech.vq").exists() and not (tmp_path / "none.vq").exists()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


class Recording(io.RawIOBase):
    """64 MiB of a WAV-like stream (or of another that begins with `head`), counting what is read of it."""

    def __init__(self, head: bytes = b"RIFF"):
        self.head, self.left, self.taken = head, 64 << 20, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self.left)
        buffer[:count] = self.head[self.taken:self.taken + count].ljust(count, b"\0")
        self.left, self.taken = self.left - count, self.taken + count
        return count


def test_decode_and_info_refuse_other_input_from_its_first_bytes(tiny_model_path, monkeypatch, capsys):
    """A recording given to decode or info is refused before it is read into memory."""
    from vqcodec.cli import run

    for args in (["info", "-"], ["decode", "-", "-", "-m", str(tiny_model_path)]):
        stdin = Recording()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(ShortWrites(), write_through=True))
        assert run(args) == 1 and capsys.readouterr().err == "vqcodec: error: not a .vq file (bad magic)\n"
        assert stdin.taken < 1 << 20, f"{args[0]} read {stdin.taken} bytes of a recording"


def test_info_and_decode_of_a_file_that_is_not_a_vq_file_name_it(tiny_model_path, tmp_path, capsys):
    """'not a .vq file (bad magic)' named no file, where the other refusals of an input file name it."""
    from vqcodec.cli import run

    path, out = tmp_path / "talk.wav", tmp_path / "out.wav"
    path.write_bytes(b"RIFF" + bytes(60))
    decode = ["decode", str(path), str(out), "-m", str(tiny_model_path)]
    for args in (["info", str(path)], decode, decode + ["--salvage"]):
        assert run(args) == 1
        assert capsys.readouterr().err == f"vqcodec: error: {path}: not a .vq file (bad magic)\n", args
        assert not out.exists()


def test_info_and_decode_of_a_damaged_file_name_it(tiny_model_path, small_vq, tmp_path, capsys):
    """A .vq file cut short or corrupted was refused without its name ('vqcodec: error: truncated .vq file (chunk 0
    cut short)'), where one that is not a .vq file is refused naming it."""
    from vqcodec.cli import run

    chunk_flipped, header_flipped = bytearray(small_vq), bytearray(small_vq)
    chunk_flipped[-3] ^= 0x10
    header_flipped[20] ^= 1  # under the header CRC
    damaged = {"cut.vq": (small_vq[:-1], "truncated .vq file (chunk 0 cut short)"),
               "head.vq": (small_vq[:30], "truncated .vq file (incomplete header)"),
               "flipped.vq": (chunk_flipped, "corrupted .vq file (chunk 0 CRC mismatch)"),
               "header.vq": (header_flipped, "corrupted .vq file (header CRC mismatch)")}
    out = tmp_path / "out.wav"
    for name, (data, message) in damaged.items():
        path = tmp_path / name
        path.write_bytes(data)
        for args in (["info", str(path)], ["decode", str(path), str(out), "-m", str(tiny_model_path)]):
            assert run(args) == 1
            error = capsys.readouterr().err
            assert error.startswith(f"vqcodec: error: {path}: {message}") and error.count(name) == 1, (args, error)
            assert not out.exists()


def test_decode_and_info_refuse_a_damaged_header_from_its_first_bytes(tiny_model_path, monkeypatch, capsys):
    """Input that began with the magic was read whole before its header was checked: 64 MiB behind a
    header whose CRC fails (a stream that does not end: until memory ran out) for one line of error."""
    from vqcodec.cli import run

    header = bytearray(vqformat.Header(kind=vqformat.KIND_AUDIO, coding=0, quality=1, model_id=bytes(8),
                                       sample_rate=8000, length=8000, channels=1, chunk_frames=500).pack())
    header[20] ^= 1  # the sample rate, under the header CRC
    for args in (["info", "-"], ["decode", "-", "-", "-m", str(tiny_model_path)]):
        stdin = Recording(bytes(header))
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(ShortWrites(), write_through=True))
        assert run(args) == 1 and capsys.readouterr().err == "vqcodec: error: corrupted .vq file (header CRC mismatch)\n"
        assert stdin.taken < 1 << 20, f"{args[0]} read {stdin.taken} bytes behind a damaged header"


def test_decode_and_info_read_a_stream_no_further_than_a_bound_past_its_last_chunk(encoded, tiny_model_path, craft,
                                                                                  monkeypatch, capsys):
    """`cat talk.vq /dev/zero | vqcodec info -` read stdin until memory ran out: a stream is read as far as
    its chunks go and at most 1 MiB beyond (which, under that bound, is the usual 'unexpected bytes')."""
    from vqcodec.cli import run

    data = (encoded / "out.vq").read_bytes()
    lost = bytearray(data)
    lost[vqformat.HEADER_SIZE:vqformat.HEADER_SIZE + 4] = (1 << 31).to_bytes(4, "little")  # chunk 0's length
    for args in (["info", "-"], ["decode", "-", "-", "-m", str(tiny_model_path)]):
        for head, error in ((data, "a .vq stream goes on past its last chunk: more than 1 MiB follows it"),
                            (bytes(lost), "corrupted .vq file (chunk 0 claims 2147483648 bytes), and more than 1 MiB "
                                          "follows it")):
            stdin = Recording(head)
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
            monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(ShortWrites(), write_through=True))
            assert run(args) == 1
            hint = "; --salvage decodes what is intact" if args[0] == "decode" and head != data else ""
            assert capsys.readouterr().err == f"vqcodec: error: {error}; not read further (is it one .vq file?){hint}\n"
            assert stdin.taken < 3 << 20, f"{args[0]} read {stdin.taken} bytes"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data + bytes(1 << 20)))))
    assert run(["info", "-"]) == 1
    assert capsys.readouterr().err.startswith(f"vqcodec: error: {1 << 20} unexpected bytes after the last chunk")
    # chunks of no bytes, which no file holds, framed all the same: ten million of them were read from zeros
    stdin = Recording(bytes(craft.with_header(data, chunk_count=10_000_000, chunk_frames=1)[:vqformat.HEADER_SIZE]))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
    assert run(["info", "-"]) == 1 and capsys.readouterr().err == (
        "vqcodec: error: corrupted .vq file (chunk 0 claims 0 bytes), and more than 1 MiB follows it; not read "
        "further (is it one .vq file?)\n")
    assert stdin.taken < 3 << 20, f"info read {stdin.taken} bytes"


def test_encode_and_codes_refuse_a_pipe_of_no_media_from_its_first_bytes_and_bound_the_copy(encoded, tiny_model_path,
                                                                                             monkeypatch, capsys):
    """`cat /dev/zero | vqcodec encode - out.vq` copied stdin into $TMPDIR until it was full: audio of no
    format libsndfile recognises is refused from its first MiB (as all of it would be), a .vq file is read
    no further than its chunks and 1 MiB past them, and media are copied up to MAX_SPOOL_BYTES."""
    import vqcodec.streams
    from conftest import GOLDEN
    from vqcodec.cli import run

    monkeypatch.setattr(vqcodec.streams, "MAX_SPOOL_BYTES", 8 << 20)
    wav, vq = (encoded / "in.wav").read_bytes(), (encoded / "out.vq").read_bytes()
    for command in ("encode", "codes"):
        args = [command, "-", "-", "-m", str(tiny_model_path)]
        for head, error in ((b"", "cannot read (audio from )?stdin: .*"),
                            (vq, re.escape("a .vq stream goes on past its last chunk: more than 1 MiB follows it; not "
                                           "read further (is it one .vq file?)")),
                            (wav[:44], re.escape("stdin goes on past 0.0078125 GiB, the most that is copied from a "
                                                 "pipe: give the input as a file"))):
            stdin = Recording(head)
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
            monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(ShortWrites(), write_through=True))
            assert run(args) == 1 and re.fullmatch(f"vqcodec: error: {error}\n", capsys.readouterr().err)
            assert stdin.taken < (10 << 20 if head == wav[:44] else 3 << 20), f"{command} read {stdin.taken} bytes"
        stdin = Recording(b"")  # taken for an image: was copied whole, then refused by Pillow
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin)))
        assert run([command, "-", "-", "--kind", "image", "-m", str(GOLDEN / "golden_image.safetensors")]) == 1
        refused = "cannot read image from stdin: not an image format Pillow reads"
        assert capsys.readouterr().err == f"vqcodec: error: {refused}\n"
        assert stdin.taken < 3 << 20, f"{command} read {stdin.taken} bytes"


def id3v2_tag(size: int) -> bytes:
    """An ID3v2.4 tag of `size` bytes after its header: padding alone, as a tag that leaves room for more has."""
    return b"ID3\x04\x00\x00" + bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0)) + bytes(size)


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile writes no MP3")
def test_an_mp3_on_stdin_whose_id3v2_tag_fills_the_first_mib_is_recognised(tiny_model_path, tmp_path, monkeypatch,
                                                                           capsys):
    """Stdin's audio is recognised from its first MiB, which an MP3's ID3v2 tag (a cover picture) may fill: such an
    MP3 was refused, 'Format not recognised', where its path was coded. The tags are read through, into memory,
    checked against the memory the process may use first."""
    import vqcodec.memory
    from vqcodec.cli import run

    buffer = io.BytesIO()
    soundfile.write(buffer, np.sin(np.arange(8000) * 0.05).astype(np.float32) * 0.3, 16000, format="MP3")
    tagged = tmp_path / "tagged.mp3"
    tagged.write_bytes(id3v2_tag(2 << 20) + id3v2_tag(100) + buffer.getvalue())
    model = ["-m", str(tiny_model_path), "-q", "3"]
    assert run(["encode", str(tagged), str(tmp_path / "by_path.vq"), *model]) == 0, capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(tagged.read_bytes()))))
    assert run(["encode", "-", str(tmp_path / "piped.vq"), *model]) == 0, capsys.readouterr().err
    assert (tmp_path / "piped.vq").read_bytes() == (tmp_path / "by_path.vq").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(tagged.read_bytes()))))
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 2 << 20)
    assert run(["encode", "-", str(tmp_path / "bounded.vq"), *model]) == 1
    assert capsys.readouterr().err == ("vqcodec: error: the ID3v2 tags that stdin begins with take 0.0 GB, more than "
                                       "the memory this process may use (0.0 GB); give the input as a file\n")
    assert not (tmp_path / "bounded.vq").exists()


def test_stdin_redirected_from_a_regular_file_is_copied_whatever_its_size(encoded, tiny_model_path, tmp_path,
                                                                          monkeypatch, capsys):
    """The bound on what is copied from a pipe (MAX_SPOOL_BYTES) refused a file redirected into stdin, which ends."""
    import vqcodec.streams
    from vqcodec.cli import run

    monkeypatch.setattr(vqcodec.streams, "MAX_SPOOL_BYTES", 16 << 10)
    wav = (encoded / "in.wav").read_bytes()  # 44 KB
    args = ["encode", "-", str(tmp_path / "out.vq"), "-m", str(tiny_model_path), "-q", "3"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(wav))))
    assert run(args) == 1 and "stdin goes on past" in capsys.readouterr().err
    with open(encoded / "in.wav", "rb") as regular:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(regular))
        assert run(args) == 0, capsys.readouterr().err
    assert (tmp_path / "out.vq").read_bytes() == (encoded / "out.vq").read_bytes()


SLOW_NON_BLOCKING_STDIN = """
import os, sys, threading, time
data = open(sys.argv[1], "rb").read()
read_end, write_end = os.pipe()
os.dup2(read_end, 0)
os.set_blocking(0, False)  # as another process that held stdin may leave it

def feed():
    time.sleep(0.5)
    os.write(write_end, data)
    os.close(write_end)

threading.Thread(target=feed).start()
from vqcodec.cli import run
sys.exit(run(sys.argv[2:]))
"""


def test_stdin_left_non_blocking_is_waited_for(encoded, tiny_model_path, tmp_path):
    """A pipe of stdin that another process left non-blocking, read before its input came, gave None: info
    and decode said 'a .vq file is read from a binary stream, not a text one', and encode 'stdin is empty'."""
    for source, args in ((encoded / "out.vq", ["info", "-"]),
                         (encoded / "in.wav", ["encode", "-", tmp_path / "out.vq", "-m", tiny_model_path, "-q", "3"])):
        result = run_python("-c", SLOW_NON_BLOCKING_STDIN, source, *args, timeout=120)
        assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    assert (tmp_path / "out.vq").read_bytes() == (encoded / "out.vq").read_bytes()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_fifos_and_devices_are_read_and_written_through(encoded, cli, tiny_model_path, tmp_path):
    """A FIFO (a named pipe, <(...) or >(...)) is read as stdin is (soundfile must seek; a first read of
    its head took bytes the decoder needed), and written into, as /dev/null is, without --force, since
    nothing is overwritten (renaming a file onto it put a regular file in its place)."""
    fifo, model = tmp_path / "pipe.wav", ["-m", str(tiny_model_path)]
    os.mkfifo(fifo)
    wav = (encoded / "in.wav").read_bytes()
    with ThreadPoolExecutor(1) as pool:
        feeding = pool.submit(lambda: fifo.write_bytes(wav))
        try:
            result = cli("encode", fifo, tmp_path / "out.vq", "-q", "3", *model, timeout=60)
        finally:
            if not feeding.done():  # let a writer still waiting for a reader go
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "out.vq").read_bytes() == (encoded / "out.vq").read_bytes()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(fifo.read_bytes)
        try:
            result = cli("decode", encoded / "out.vq", fifo, *model, timeout=60)
        finally:
            if not reading.done():  # let a reader still waiting for a writer go
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        decoded = reading.result(timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    audio, rate = soundfile.read(io.BytesIO(decoded), always_2d=True)
    assert rate == 22050 and audio.shape == (11025, 2) and fifo.is_fifo()
    result = cli("decode", encoded / "out.vq", os.devnull, "--format", "wav", *model)
    assert result.returncode == 0 and result.stderr == b"" and Path(os.devnull).is_char_device()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_an_unreadable_fifo_is_named_not_called_stdin(cli, tiny_model_path, tmp_path):
    """A FIFO (or <(...), /dev/fd/63) is read through a copy, which errors named "from stdin"."""
    fifo = tmp_path / "pipe.flac"
    os.mkfifo(fifo)
    with ThreadPoolExecutor(1) as pool:
        feeding = pool.submit(lambda: fifo.write_bytes(Path("tests/data/speech.flac").read_bytes()[:30]))
        try:
            result = cli("encode", fifo, tmp_path / "out.vq", "-m", tiny_model_path, timeout=60)
        finally:
            if not feeding.done():  # let a writer still waiting for a reader go
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert_one_line_error(result)
    assert result.stderr.decode().startswith(f"vqcodec: error: cannot read audio {fifo}: ")
    assert not (tmp_path / "out.vq").exists()


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="no /dev/fd")
def test_a_pipes_dev_fd_name_is_written_into(encoded, tiny_model_path):
    """>(...) names a pipe /dev/fd/N, a link to no file ('pipe:[...]'): written through the name, not the
    link's target, which could not be opened."""
    from vqcodec.cli import run

    read_end, write_end = os.pipe()
    with ThreadPoolExecutor(1) as pool, open(read_end, "rb") as reader:
        reading = pool.submit(reader.read)
        try:
            code = run(["decode", str(encoded / "out.vq"), f"/dev/fd/{write_end}", "--format", "wav",
                        "-m", str(tiny_model_path)])
        finally:
            os.close(write_end)
        decoded = reading.result(timeout=60)
    assert code == 0
    audio, rate = soundfile.read(io.BytesIO(decoded), always_2d=True)
    assert rate == 22050 and audio.shape == (11025, 2)


def test_dev_stdout_is_written_as_dash_is(encoded, tiny_model_path, monkeypatch):
    """/dev/stdout was a file name: refused for want of an audio extension, and with stdout on a file,
    as that existing file (with --force, a new file was renamed onto the name instead)."""
    from vqcodec.cli import run

    for name in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        stdout = ShortWrites()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout, write_through=True))
        assert run(["decode", str(encoded / "out.vq"), name, "-m", str(tiny_model_path)]) == 0
        audio, rate = soundfile.read(io.BytesIO(bytes(stdout.taken)), always_2d=True)
        assert rate == 22050 and audio.shape == (11025, 2)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc/self/fd")
def test_a_descriptors_name_is_written_into_the_descriptor(encoded, tiny_model_path, tmp_path, capsys):
    """`3>> log.wav` names /dev/fd/3, open on a file: it was refused as an existing file, and with --force a
    new file was renamed onto the file's name, not written where the descriptor stands."""
    from vqcodec.cli import run

    for name in ("/dev/fd/{}", "/proc/self/fd/{}"):
        out = tmp_path / "out.wav"
        out.write_bytes(b"kept")
        descriptor = os.open(out, os.O_WRONLY | os.O_APPEND)
        try:
            code = run(["decode", str(encoded / "out.vq"), name.format(descriptor), "--format", "wav",
                        "-m", str(tiny_model_path)])
        finally:
            os.close(descriptor)
        assert code == 0, capsys.readouterr().err
        assert out.read_bytes()[:8] == b"keptRIFF" and list(tmp_path.iterdir()) == [out]
        out.unlink()
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    assert run(["decode", str(encoded / "out.vq"), f"/dev/fd/{closed}", "--format", "wav",
                "-m", str(tiny_model_path)]) == 1
    assert capsys.readouterr().err == f"vqcodec: error: /dev/fd/{closed}: file descriptor {closed} is not open\n"


def test_an_output_in_a_missing_folder_or_under_a_file_is_refused_before_the_work(encoded, tmp_path, capsys):
    """It was refused only once the file had been coded or decoded, when it was written: here the
    model named, which is not there, was looked for first."""
    from vqcodec.cli import run

    (tmp_path / "file").write_bytes(b"")
    vq, wav = str(encoded / "out.vq"), str(encoded / "in.wav")
    for folder, error in (("missing", "no such directory"), ("file", "not a directory")):
        for args in (["decode", vq, f"{tmp_path}/{folder}/out.wav"], ["encode", wav, f"{tmp_path}/{folder}/out.vq"],
                     ["codes", vq, f"{tmp_path}/{folder}/out.npy"], ["pack", "nosuch.npy", f"{tmp_path}/{folder}/out.vq"]):
            assert run([*args, "-m", str(tmp_path / "nosuch.safetensors")]) == 1
            assert capsys.readouterr().err == f"vqcodec: error: {tmp_path}/{folder}: {error}\n", args


def test_an_audio_format_that_cannot_hold_the_file_is_refused_by_its_output_name_before_the_model_loads(
        encoded, tmp_path, capsys):
    """The refusal came once the model was loaded, just before decoding, and did not name the output."""
    from vqcodec.cli import run

    vq, model = str(encoded / "out.vq"), ["-m", str(tmp_path / "nosuch.safetensors")]
    for output, options, error in (
            (f"{tmp_path}/out.wve", [], "WVE cannot hold a rate of 22050 Hz"),
            (f"{tmp_path}/out.opus", [], "Opus holds 8000, 12000, 16000, 24000 or 48000 Hz audio, not 22050 Hz"),
            ("-", ["--format", "raw"], "RAW is bare samples"),
            # what this libsndfile's encoders refuse, found by writing into memory (FLAC: at most 65535 Hz or
            # multiples of 10 to 655350 Hz; MP3: the MPEG rates): refused once the file was decoded
            (f"{tmp_path}/out.flac", ["--rate", "700000"], "FLAC PCM_16 cannot hold 2 channels at 700000 Hz here "
                                                           "(libsndfile says: flac does not support this sample rate)"),
            (f"{tmp_path}/out.flac", ["--rate", "100001"], "FLAC PCM_16 cannot hold 2 channels at 100001 Hz here"),
            ("-", ["--format", "mp3", "--rate", "17000"], "MP3 MPEG_LAYER_III cannot hold 2 channels at 17000 Hz here "
                                                          "(libsndfile says: MPEG-1/2/2.5 only supports sample rates")):
        assert run(["decode", vq, output, *options, *model]) == 1
        shown = "stdout" if output == "-" else output
        assert capsys.readouterr().err.startswith(f"vqcodec: error: {shown}: {error}")
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_output_is_written_through(encoded, cli, tiny_model_path, tmp_path):
    """With --force, the file a link names gets the output and the link stays (renaming onto the
    link replaced it by a regular file; for /dev/stdout, as root, the device's link itself)."""
    real, link = tmp_path / "real.wav", tmp_path / "link.wav"
    real.write_bytes(b"old")
    link.symlink_to(real)
    result = cli("decode", encoded / "out.vq", link, "-m", tiny_model_path)
    assert result.returncode == 1 and real.read_bytes() == b"old"  # an existing file, through a link too
    result = cli("decode", encoded / "out.vq", link, "-m", tiny_model_path, "--force")
    assert result.returncode == 0, result.stderr.decode()
    assert link.is_symlink() and soundfile.info(str(real)).frames == 11025
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.wav", "real.wav"]


def test_codes_writes_the_integer_codes_as_npy(encoded, cli, tiny_model_path, codec):
    out = encoded / "codes.npy"
    result = cli("codes", encoded / "out.vq", out, "-m", tiny_model_path)
    assert result.returncode == 0, result.stderr.decode()
    array = np.load(out, allow_pickle=False)
    _, expected = codec.read_codes((encoded / "out.vq").read_bytes())
    assert array.dtype == np.int32 and array.shape == (2, 3, expected.shape[2])
    assert np.array_equal(array, expected)
    result = cli("codes", encoded / "out.vq", "-", "-m", tiny_model_path)
    assert result.returncode == 0 and np.array_equal(np.load(io.BytesIO(result.stdout)), expected)
    result = cli("codes", encoded / "out.vq", out, "-m", tiny_model_path)
    assert_one_line_error(result)  # exists, no --force
    out.unlink()


def test_codes_of_a_vq_file_are_written_a_block_at_a_time(tmp_path, codec, tiny_model_path):
    """A file of 64 channels sharing their codes took 3x its codes' int32 size at its peak (read as
    int64, then copied to int32): 1.3 GB for these 51 M codes, 27 GB for a day of them at q8."""
    small, large = tmp_path / "small.vq", tmp_path / "large.vq"
    small.write_bytes(shared_channel_file(codec, 64, 4, 500))
    large.write_bytes(shared_channel_file(codec, 64, 4, 200_000))
    peaks = [peak_rss(path, tmp_path / "out.npy", "codes", "-", "-", "-m", tiny_model_path) for path in (small, large)]
    codes = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert codes.shape == (64, 4, 200_000) and codes.dtype == np.int32 and not codes[:, :, ::9973].any()
    grown = peaks[1] - peaks[0]
    assert grown < codes.nbytes / 4, f"{grown / 1e6:.0f} MB more for {codes.nbytes / 1e6:.0f} MB of codes"


def test_codes_of_a_media_file_are_the_codes_of_its_vq_file(encoded, cli, tiny_model_path, codec, tmp_path):
    result = cli("codes", encoded / "in.wav", tmp_path / "media.npy", "-m", tiny_model_path, "-q", "3")
    assert result.returncode == 0, result.stderr.decode()
    _, expected = codec.read_codes((encoded / "out.vq").read_bytes())
    assert np.array_equal(np.load(tmp_path / "media.npy"), expected)
    result = cli("codes", encoded / "in.wav", tmp_path / "all.npy", "-m", tiny_model_path)  # all 4 levels
    assert result.returncode == 0 and np.array_equal(np.load(tmp_path / "all.npy")[:, :3], expected)
    wav = (encoded / "in.wav").read_bytes()
    result = cli("codes", "-", "-", "-m", tiny_model_path, "-q", "3", input=wav)
    assert result.returncode == 0 and np.array_equal(np.load(io.BytesIO(result.stdout)), expected)
    assert_one_line_error(cli("codes", encoded / "out.vq", tmp_path / "q.npy", "-m", tiny_model_path, "-q", "2"))
    assert_one_line_error(cli("codes", encoded / "in.wav", tmp_path / "q.npy", "-m", tiny_model_path, "-q", "9"))
    assert not (tmp_path / "q.npy").exists()


def test_codes_of_media_are_little_endian_npy_files_on_every_machine(encoded, tiny_model_path, codec, tmp_path,
                                                                    monkeypatch):
    """`codes` of a media file, and of a folder of them, wrote the codes as NumPy's native int32, which on a
    big-endian machine is '>i4': other bytes there than here, and than the codes of a .vq file ('<i4').
    Simulated: np.int32 made big-endian."""
    from vqcodec.cli import run
    from vqcodec.tokens import code_folder

    expected = codec.media_to_codes(encoded / "in.wav")[0]
    little = io.BytesIO()
    np.save(little, expected.astype("<i4"), allow_pickle=False)
    monkeypatch.setattr(np, "int32", np.dtype(">i4"))
    assert run(["codes", str(encoded / "in.wav"), str(tmp_path / "one.npy"), "-m", str(tiny_model_path)]) == 0
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(encoded / "in.wav", folder / "in.wav")
    code_folder(codec, folder, tmp_path / "tokens", [folder / "in.wav"])
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "tokens" / "in.npy").read_bytes() == little.getvalue()


def test_codes_of_a_folder(cli, tmp_path, signal, tiny_model_path, codec):
    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    (folder / "sub").mkdir(parents=True)
    write_wav(folder / "in.wav", signal)
    soundfile.write(folder / "sub" / "x.flac", signal(1, 3000, 8000).T, 8000)
    (folder / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    (folder / "notes.txt").write_text("not media: ignored")

    result = cli("codes", folder, out, "-m", tiny_model_path)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr.decode()
    assert lines[0].startswith(f"skipping {folder / 'bad.wav'}: cannot read audio: ") and lines[-1].startswith("vqcodec: error: 1 of 3 files")
    manifest = json.loads((out / "codes.json").read_text())
    assert (manifest["model_id"], manifest["kind"], manifest["quality"]) == (codec.model_id.hex(), "audio", 4)
    assert manifest["frames_per_second"] == 16000 / 8 and manifest["axes"] == ["channel", "level", "frame"]
    assert manifest["depth_weight"] == 0.0
    assert [entry["file"] for entry in manifest["files"]] == ["in.wav", "sub/x.flac"]
    assert [entry["file"] for entry in manifest["skipped"]] == ["bad.wav"] and manifest["skipped"][0]["reason"]
    for entry in manifest["files"]:
        array = np.load(out / entry["codes"], allow_pickle=False)
        expected, restore = codec.media_to_codes(folder / entry["file"])
        assert array.dtype == np.int32 and list(array.shape) == entry["shape"] and np.array_equal(array, expected)
        assert {k: entry[k] for k in restore} == restore
    x = (folder / "sub" / "x.flac").stat()
    assert manifest["files"][1] | {"shape": None} == {"file": "sub/x.flac", "codes": "sub/x.npy", "shape": None,
                                                      "sample_rate": 8000, "samples": 3000, "channels": 1,
                                                      "gain": 1.0, "file_size": x.st_size,
                                                      "file_mtime_ns": x.st_mtime_ns,
                                                      "file_blake2b": _b2sum_256(folder / "sub" / "x.flac")}
    audio = codec.codes_to_audio(np.load(out / "sub" / "x.npy"))
    assert audio.shape == (1, manifest["files"][1]["shape"][2] * 8)

    before = (out / "in.npy").stat().st_mtime_ns
    assert_one_line_error(cli("codes", folder, out, "-m", tiny_model_path))  # exists, no --force: nothing done
    assert (out / "in.npy").stat().st_mtime_ns == before
    (folder / "bad.wav").unlink()
    result = cli("codes", folder, out, "-m", tiny_model_path, "-q", "2", "--force")
    assert result.returncode == 0, result.stderr.decode()
    assert np.load(out / "in.npy").shape[1] == 2 and json.loads((out / "codes.json").read_text())["quality"] == 2
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result = cli("codes", folder, out, "-m", tiny_model_path, "--depth-weight", "2", "--force")
    assert_one_line_error(result)  # no prior to weigh depths under: it was taken and ignored
    assert "--depth-weight weighs bits under the model's prior" in result.stderr.decode()
    assert before == {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result = cli("codes", folder, out, "-m", tiny_model_path, "--depth-weight", "0", "--force")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads((out / "codes.json").read_text())["depth_weight"] == 0.0 and (np.load(out / "in.npy") >= 0).all()


def test_codes_of_a_folder_stopped_part_way_keeps_a_manifest_of_what_it_wrote(tmp_path, signal, codec, monkeypatch):
    """A stopped run left the arrays it had written but no codes.json: nothing said which sample rate,
    length and gain restore them."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        write_wav(folder / name, signal)
    _stopped_codes_run(codec, folder, out, "b.wav", monkeypatch)
    manifest = json.loads((out / "codes.json").read_text())
    assert manifest["stopped"] is True and [entry["file"] for entry in manifest["files"]] == ["a.wav"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "codes.json"]
    assert "stopped" not in code_folder(codec, folder, tmp_path / "again", sorted(folder.iterdir()))


def test_codes_of_a_folder_stopped_part_way_tells_log_what_it_skipped_and_wrote(tmp_path, signal, codec, monkeypatch):
    """A stop told `log` 'wrote the codes of 1 file before the stop (1 skipped); ...', not which file was skipped
    nor the bytes written: it tells them as a folder's encode does (folders.say_stopped)."""
    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    write_wav(folder / "a.wav", signal)
    (folder / "b.wav").write_bytes(b"not a recording")
    write_wav(folder / "c.wav", signal)
    said = []
    _stopped_codes_run(codec, folder, out, "c.wav", monkeypatch, log=said.append)
    assert len(said) == 2 and said[0].startswith("skipping ") and str(folder / "b.wav") in said[0]
    assert said[1] == f"coded 1 file, {(out / 'a.npy').stat().st_size} bytes before the stop; 1 of 3 files not coded"


@pytest.mark.parametrize("error", [MemoryError, RuntimeError, "on_warning"])
def test_codes_of_a_folder_that_fails_part_way_keeps_a_manifest_of_what_it_wrote(tmp_path, signal, codec, monkeypatch,
                                                                                 error):
    """Only Ctrl-C and SIGTERM wrote the manifest of the files finished: any other error mid-run (out of memory,
    an on_warning that raises, a bug) left their arrays with no codes.json saying what restores them."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    write_wav(folder / "a.wav", signal)
    write_wav(folder / "b.wav", signal)
    soundfile.write(folder / "c.wav", signal(1, 1600, 16000).T * 2 ** 15, 16000, subtype="FLOAT")  # on_warning's
    write_wav(folder / "d.wav", signal)
    real = codec.media_to_codes

    def failing_at_the_third_file(path, quality):
        if Path(path).name == "c.wav":
            raise error
        return real(path, quality)

    def on_warning(line):
        raise ValueError(line)

    if error != "on_warning":
        monkeypatch.setattr(codec, "media_to_codes", failing_at_the_third_file)
    with pytest.raises(ValueError if error == "on_warning" else error):
        code_folder(codec, folder, out, sorted(folder.iterdir()), on_warning=on_warning)
    manifest = json.loads((out / "codes.json").read_text())
    assert manifest["stopped"] is True and [entry["file"] for entry in manifest["files"]] == ["a.wav", "b.wav"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy", "codes.json"]

def _rewritten_of_another_size(path: Path, signal) -> None:
    write_wav(path, signal, samples=8000)


def _rewritten_of_the_same_size_its_time_put_back(path: Path, signal) -> None:
    """As cp -p or touch -d over it leaves it: only its inode change time tells it was written."""
    before = path.stat()
    write_wav(path, lambda *shape: -signal(*shape))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("rewrite", [_rewritten_of_another_size, _rewritten_of_the_same_size_its_time_put_back])
def test_codes_of_a_folder_keep_no_codes_of_a_file_changed_while_it_was_read(tmp_path, signal, codec, monkeypatch,
                                                                             rewrite):
    """The size, time and hash codes.json records of a file are taken before it is coded, in a read of their own:
    a file rewritten between them was listed with the hash of bytes other than those coded (of no one version of
    it, where it was rewritten while being read). Its size, time or inode change time tells it changed (the last
    alone where its size is the same and its time put back): it is skipped, its codes not written, as a file that
    cannot be read is (a stopped run's resume codes it again)."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    write_wav(folder / "a.wav", signal)
    write_wav(folder / "b.wav", signal)
    real = codec.media_to_codes

    def rewritten_as_it_is_read(path, quality):
        if Path(path).name == "b.wav":
            rewrite(Path(path), signal)
        return real(path, quality)

    monkeypatch.setattr(codec, "media_to_codes", rewritten_as_it_is_read)
    manifest = code_folder(codec, folder, out, sorted(folder.iterdir()))
    assert [entry["file"] for entry in manifest["files"]] == ["a.wav"]
    assert manifest["skipped"] == [{"file": "b.wav", "reason": f"{folder / 'b.wav'}: changed while it was read, so "
                                                               "its codes were not kept"}]
    assert sorted(path.name for path in out.iterdir()) == ["a.npy", "codes.json"]


def test_codes_of_a_folder_of_vq_files_keep_no_codes_of_a_file_changed_while_it_was_read(small_vq, tmp_path, codec,
                                                                                         signal, monkeypatch):
    """As of a folder of media: a .vq file written again as it is read (once opened, its size and times taken) is
    skipped."""
    import vqcodec.fileinfo
    from vqcodec.folders import codes_folder

    (tmp_path / "vq").mkdir()
    source = tmp_path / "vq" / "a.vq"
    source.write_bytes(small_vq)
    real, another = vqcodec.fileinfo.read_vq_stream, codec.encode_audio(signal(1, 1600, 16000), 16000, 2)

    def rewritten_as_it_is_read(stream, salvage=False, name=None):
        Path(name).write_bytes(another)
        return real(stream, salvage, name)

    def write(path, write_stream):
        with open(path, "wb") as stream:
            write_stream(stream)
    monkeypatch.setattr(vqcodec.fileinfo, "read_vq_stream", rewritten_as_it_is_read)
    report, entries = codes_folder([source], [tmp_path / "a.npy"], lambda data: codec, write)
    assert entries == [] and report.skipped == [(source, f"{source}: changed while it was read, so its codes were "
                                                         "not kept")]
    assert not (tmp_path / "a.npy").exists()


def _stopped_codes_run(codec, folder: Path, out: Path, stop_at: str, monkeypatch, **options):
    """Run code_folder over `folder` until it comes to the file `stop_at`, where Ctrl-C stops it."""
    from vqcodec.tokens import code_folder

    real = codec.media_to_codes

    def stopped_at(path, quality):
        if Path(path).name == stop_at:
            raise KeyboardInterrupt
        return real(path, quality)

    monkeypatch.setattr(codec, "media_to_codes", stopped_at)
    with pytest.raises(KeyboardInterrupt):
        code_folder(codec, folder, out, sorted(folder.iterdir()), **options)
    monkeypatch.setattr(codec, "media_to_codes", real)


def _b2sum_256(path: Path) -> str:
    """What `b2sum -l 256 PATH` prints of a file: the "file_blake2b" codes.json records of it."""
    import hashlib

    return hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest()


def _arrays_and_manifest(out: Path) -> dict:
    return {str(path.relative_to(out)): path.read_bytes() for path in out.rglob("*") if path.is_file()}


def test_codes_of_a_folder_resumed_after_a_stop_equal_an_uninterrupted_run(tmp_path, signal, codec, monkeypatch):
    """A stopped run could only be started again (replace=True, --force), coding every file again. resume=True
    keeps the files it finished whose array is still whole and of the shape listed, codes the rest (the files
    it skipped too), and writes one manifest: the arrays and codes.json of a run that was not stopped."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "c.wav", "d.wav", "e.wav"):
        write_wav(folder / name, signal)
    (folder / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")  # skipped, then mended
    _stopped_codes_run(codec, folder, out, "e.wav", monkeypatch)
    stopped = json.loads((out / "codes.json").read_text())
    assert stopped["stopped"] is True and [entry["file"] for entry in stopped["files"]] == ["a.wav", "c.wav", "d.wav"]
    assert [entry["file"] for entry in stopped["skipped"]] == ["b.wav"]
    write_wav(folder / "b.wav", signal)
    np.save(out / "c.npy", np.load(out / "c.npy")[:, :, :2])  # not the shape listed: coded again
    (out / "d.npy").write_bytes((out / "d.npy").read_bytes()[:-4])  # cut short: coded again
    a_written = (out / "a.npy").stat().st_mtime_ns
    _stopped_codes_run(codec, folder, out, "d.wav", monkeypatch, resume=True)  # stopped again: resumed in turn
    stopped = json.loads((out / "codes.json").read_text())
    assert stopped["stopped"] is True and [entry["file"] for entry in stopped["files"]] == ["a.wav", "b.wav", "c.wav"]
    assert stopped["skipped"] == [] and list(np.load(out / "c.npy").shape) == stopped["files"][2]["shape"]
    real, coded = codec.media_to_codes, []
    monkeypatch.setattr(codec, "media_to_codes", lambda path, quality: coded.append(Path(path).name)
                        or real(path, quality))
    said = []
    resumed = code_folder(codec, folder, out, sorted(folder.iterdir()), resume=True, log=said.append)
    assert coded == ["d.wav", "e.wav"] and (out / "a.npy").stat().st_mtime_ns == a_written
    assert said == ["resumed: 3 files kept, 2 to code"]
    whole = code_folder(codec, folder, tmp_path / "whole", sorted(folder.iterdir()))
    assert resumed == whole == json.loads((out / "codes.json").read_text())
    assert _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")


def test_codes_resume_codes_again_a_file_changed_since_the_stopped_run(tmp_path, signal, codec, monkeypatch):
    """codes.json recorded nothing of the inputs: a recording rewritten since the stopped run (of the same size
    here, or another size at the time recorded) kept the codes of what it was. Each entry records the file's size
    and time (input_stamp); one that no longer matches, and one of an older codes.json that records neither, is
    coded again."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav"):
        write_wav(folder / name, signal)
    _stopped_codes_run(codec, folder, out, "e.wav", monkeypatch)
    stopped = json.loads((out / "codes.json").read_text())
    a_entry = stopped["files"][0]
    assert (a_entry["file_size"], a_entry["file_mtime_ns"]) == ((folder / "a.wav").stat().st_size,
                                                                (folder / "a.wav").stat().st_mtime_ns)
    write_wav(folder / "a.wav", lambda *shape: -signal(*shape))  # same size, another time
    os.utime(folder / "a.wav", ns=(a_entry["file_mtime_ns"] + 10**9,) * 2)
    write_wav(folder / "b.wav", signal, samples=9000)  # another size, at the time recorded
    os.utime(folder / "b.wav", ns=(stopped["files"][1]["file_mtime_ns"],) * 2)
    for key in ("file_size", "file_mtime_ns"):  # as an older codes.json lists c.wav
        del stopped["files"][2][key]
    (out / "codes.json").write_text(json.dumps(stopped))
    real, coded = codec.media_to_codes, []
    monkeypatch.setattr(codec, "media_to_codes", lambda path, quality: coded.append(Path(path).name)
                        or real(path, quality))
    resumed = code_folder(codec, folder, out, sorted(folder.iterdir()), resume=True)
    assert coded == ["a.wav", "b.wav", "c.wav", "e.wav"]
    whole = code_folder(codec, folder, tmp_path / "whole", sorted(folder.iterdir()))
    assert resumed == whole and _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")


def test_codes_resume_codes_again_a_file_replaced_by_one_of_the_same_size_and_time(tmp_path, signal, codec,
                                                                                    monkeypatch):
    """A recording replaced since the stopped run by another of the same size, its time set back to the one
    recorded (cp -p, rsync -t, touch -r), kept the codes of what it was. codes.json records the BLAKE2b of each
    file's bytes, and one whose bytes differ is coded again; an entry of an older codes.json, which records no
    hash, is judged by size and time alone, as it was."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        write_wav(folder / name, signal)
    _stopped_codes_run(codec, folder, out, "c.wav", monkeypatch)
    stopped = json.loads((out / "codes.json").read_text())
    assert [entry["file_blake2b"] for entry in stopped["files"]] == [_b2sum_256(folder / "a.wav"),
                                                                     _b2sum_256(folder / "b.wav")]
    for entry in stopped["files"]:
        size = (folder / entry["file"]).stat().st_size
        write_wav(folder / entry["file"], lambda *shape: -signal(*shape))
        assert (folder / entry["file"]).stat().st_size == size
        os.utime(folder / entry["file"], ns=(entry["file_mtime_ns"],) * 2)
    del stopped["files"][1]["file_blake2b"]  # as an older codes.json lists b.wav
    (out / "codes.json").write_text(json.dumps(stopped))
    b_codes = (out / "b.npy").read_bytes()
    real, coded = codec.media_to_codes, []
    monkeypatch.setattr(codec, "media_to_codes", lambda path, quality: coded.append(Path(path).name)
                        or real(path, quality))
    resumed = code_folder(codec, folder, out, sorted(folder.iterdir()), resume=True)
    assert coded == ["a.wav", "c.wav"] and (out / "b.npy").read_bytes() == b_codes
    assert np.array_equal(np.load(out / "a.npy"), real(folder / "a.wav", None)[0])
    assert resumed["files"][0]["file_blake2b"] == _b2sum_256(folder / "a.wav")
    assert "file_blake2b" not in resumed["files"][1]  # kept as listed: a hash of the file now need not be of its codes


def test_codes_resume_without_replace_codes_again_a_changed_file_over_its_stopped_runs_array(tmp_path, signal, codec,
                                                                                             monkeypatch):
    """resume=True with replace=False wrote the manifest over the stopped run's, but not a changed file's array
    over the one that run wrote: that file was skipped, 'exists', and its stale codes left. A resume replaces the
    stopped run's outputs whatever replace says."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, signal)
    _stopped_codes_run(codec, folder, out, "b.wav", monkeypatch)
    write_wav(folder / "a.wav", signal, samples=9000)
    resumed = code_folder(codec, folder, out, sorted(folder.iterdir()), resume=True, replace=False)
    whole = code_folder(codec, folder, tmp_path / "whole", sorted(folder.iterdir()))
    assert resumed == whole and _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")


def test_codes_of_a_folder_tell_progress_the_files_done_and_log_what_a_resume_keeps(tmp_path, codec, monkeypatch):
    """code_folder told `log` the files done, which the command showed in place on a terminal: a line said
    through it once, such as what a resume keeps, would be cleared by the next. `progress` (else `log`) is told
    the files done, `log` the lines. The count was the file's place in the folder: a resume that kept the first
    file said "coded 100/101 files" when 99 were, and a 100th file skipped said nothing. It counts the files this
    run codes, coded or skipped, of those it has to code."""
    from vqcodec.errors import VQCodecError
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    files = [folder / f"{number:03}.wav" for number in range(101)]
    for path in files:
        path.write_bytes(b"")

    def media_to_codes(path, quality):
        if Path(path).name == "099.wav":
            raise VQCodecError("cannot read audio")
        return np.zeros((1, quality, 2), np.int32), {}

    monkeypatch.setattr(codec, "media_to_codes", media_to_codes)
    said, shown = [], []
    code_folder(codec, folder, out, files[:100], log=said.append)
    assert said == ["coded 100/100 files"]
    manifest = json.loads((out / "codes.json").read_text())
    (out / "codes.json").write_text(json.dumps(manifest | {"files": manifest["files"][:1], "stopped": True}))
    said.clear()
    code_folder(codec, folder, out, files, log=said.append, progress=shown.append, resume=True)
    assert said == ["resumed: 1 file kept, 100 to code"] and shown == ["coded 100/100 files"]


def test_codes_resume_keeps_a_finished_file_whose_name_is_not_utf8(tmp_path, signal, codec, monkeypatch):
    """codes.json names a file whose name is not UTF-8 by "file_hex" and "codes_hex" (its "file" shows U+FFFD):
    resume=True read "file" alone, so it found no such file finished and coded it again."""
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    write_wav(folder / "b.wav", signal)
    shutil.copy(folder / "b.wav", folder / os.fsdecode(b"a\xff.wav"))  # soundfile takes no such name
    _stopped_codes_run(codec, folder, out, "b.wav", monkeypatch)
    stopped = json.loads((out / "codes.json").read_text())
    assert [entry["file"] for entry in stopped["files"]] == ["a\ufffd.wav"] and stopped["stopped"] is True
    real, coded = codec.media_to_codes, []
    monkeypatch.setattr(codec, "media_to_codes", lambda path, quality: coded.append(Path(path).name)
                        or real(path, quality))
    resumed = code_folder(codec, folder, out, sorted(folder.iterdir()), resume=True)
    assert coded == ["b.wav"]
    assert [entry.get("file_hex") for entry in resumed["files"]] == [b"a\xff.wav".hex(), None]


def test_a_name_codes_json_gives_as_text_is_read_as_the_file_system_names_it_in_an_ascii_locale(tmp_path):
    """codes.json gives a UTF-8 name as its characters ("café.wav", no file_hex); a process whose file system
    encoding is ASCII (LC_ALL=C PYTHONUTF8=0) holds that file's name as lone surrogates, so --resume found it
    unfinished and coded it again, and pack found no entry of its codes (nor refused a model of another kind)."""
    (tmp_path / "café.wav").write_bytes(b"")
    script = ("import os, sys; from vqcodec.tokens import listed_name; "
              "print([listed_name({'file': 'caf\\u00e9.wav'}, 'file') in os.listdir(sys.argv[1]), "
              "listed_name({'file': 'b\\ufffd.wav', 'file_hex': '62ff2e776176'}, 'file') == os.fsdecode(b'b\\xff.wav')])")
    result = run_python("-c", script, tmp_path, env={"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0",
                                                      "PYTHONUTF8": "0"}, text=True)
    assert result.returncode == 0 and result.stdout == "[True, True]\n", result.stderr[-2000:]


def test_codes_of_a_folder_resumed_only_from_a_stopped_run_of_the_same_model_and_options(tmp_path, signal, codec,
                                                                                         monkeypatch):
    """resume=True reads the manifest no larger than one of these files can be, and refuses, before any file,
    one of another quality (or model, codes id, kind, depth weight), one that is not a folder of media's, and none; a
    finished run's manifest is returned as it is, with nothing coded or written."""
    from vqcodec import VQCodecError
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, signal)
    files = sorted(folder.iterdir())
    with pytest.raises(VQCodecError, match="^cannot resume: .*codes.json does not exist"):
        code_folder(codec, folder, out, files, resume=True)
    _stopped_codes_run(codec, folder, out, "b.wav", monkeypatch, quality=3)

    def not_coded(path, quality):
        raise AssertionError(f"{path} coded")

    monkeypatch.setattr(codec, "media_to_codes", not_coded)
    with pytest.raises(VQCodecError, match="^cannot resume .*codes.json: its run coded with quality 3, this one "
                                           "with 4; give the same model and options, or start again with "
                                           "replace=True without resume$"):
        code_folder(codec, folder, out, files, resume=True)
    stopped = json.loads((out / "codes.json").read_text())
    other_model = re.escape(f"model id '{'00' * 16}' (model mine), this one with '{codec.model_id.hex()}'")
    for changed, shown in ((stopped | {"model_id": "00" * 16, "model": "mine"}, other_model),
                           (stopped | {"codes_id": "00" * 8}, f"codes id '{'00' * 8}', this one with "
                                                               f"'{codec.codes_id.hex()}'"),
                           (stopped | {"kind": "image"}, "kind 'image', this one with 'audio'"),
                           (stopped | {"depth_weight": 1.0}, "depth weight 1.0")):
        (out / "codes.json").write_text(json.dumps(changed))
        with pytest.raises(VQCodecError, match=f"its run coded with {shown}"):
            code_folder(codec, folder, out, files, quality=3, resume=True)
    (out / "codes.json").write_text(json.dumps({"axes": {}, "files": [], "skipped": [], "stopped": True}))
    with pytest.raises(VQCodecError, match="it is not the codes.json of a folder of media$"):
        code_folder(codec, folder, out, files, quality=3, resume=True)
    with open(out / "codes.json", "wb") as stream:
        stream.truncate(1 << 30)  # sparse: no disk
    with pytest.raises(VQCodecError, match=r"cannot read it \(codes.json takes more than 16 MiB"):
        code_folder(codec, folder, out, files, quality=3, resume=True)
    finished = stopped.copy()
    del finished["stopped"]
    (out / "codes.json").write_text(json.dumps(finished))
    before = _arrays_and_manifest(out)
    assert code_folder(codec, folder, out, files, quality=3, resume=True) == finished
    assert _arrays_and_manifest(out) == before
    del finished["codes_id"]  # as written before codes_id: its model id says the model
    (out / "codes.json").write_text(json.dumps(finished))
    assert code_folder(codec, folder, out, files, quality=3, resume=True) == finished


def test_codes_resume_reads_no_manifest_larger_than_pack_reads(tmp_path, signal, codec, monkeypatch):
    """resume=True bounded codes.json by the folder's files alone (16 MiB and 4 KiB a file), which for a large
    folder passed tokens.MAX_MANIFEST_BYTES: it read, and wrote again, a manifest that pack refuses."""
    from vqcodec import VQCodecError, tokens

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    write_wav(folder / "a.wav", signal)
    out.mkdir()
    with open(out / "codes.json", "wb") as manifest:
        manifest.truncate(2 << 20)  # sparse: no disk
    monkeypatch.setattr(tokens, "MAX_MANIFEST_BYTES", 1 << 20)
    with pytest.raises(VQCodecError, match=r"^cannot resume .*: cannot read it \(codes.json takes more than 1 MiB"):
        tokens.code_folder(codec, folder, out, [folder / "a.wav"], resume=True)


def _codes_stop_at(name: str, monkeypatch):
    """Make Codec.media_to_codes stop (Ctrl-C) when it reaches the file called `name`, as the user stops `codes
    FOLDER OUT`; return the real one, to put back."""
    from vqcodec.codec import Codec

    real = Codec.media_to_codes

    def stopped_at(self, path, quality=None):
        if Path(path).name == name:
            raise KeyboardInterrupt
        return real(self, path, quality)

    monkeypatch.setattr(Codec, "media_to_codes", stopped_at)
    return real


def test_codes_resume_of_a_folder_stopped_part_way(tmp_path, signal, cli, tiny_model_path, monkeypatch, capsys):
    """`vqcodec codes FOLDER OUT --resume` goes on with a stopped run: only the files it did not finish are
    coded, into the arrays and codes.json of a run that was not stopped. Refused in one line with --force,
    for one file, with other options; a finished run is nothing to resume (status 0)."""
    from vqcodec.cli import run
    from vqcodec.codec import Codec

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        write_wav(folder / name, signal)
    real = _codes_stop_at("c.wav", monkeypatch)
    (folder / "x.wav").symlink_to(tmp_path / "gone.wav")  # passed over: named and counted, as the summary does
    (folder / "bad.wav").write_bytes(b"not a recording")  # skipped
    assert run(["codes", str(folder), str(out), "-m", str(tiny_model_path), "-q", "3"]) != 0
    # what it wrote, as encode and decode of a folder say it (it said only 'vqcodec: interrupted', then 'wrote the
    # codes of 2 files before the stop; ...'; then '1 of 3 files', leaving out x.wav, which the summary counts); the
    # files skipped and passed over in the order of their paths, as the summary lists them (it gave x.wav first)
    coded_two = sum((out / name).stat().st_size for name in ("a.npy", "b.npy"))
    said_stop = [f"skipping {folder / 'bad.wav'}: cannot read audio: Format not recognised.",
                 f"skipping {folder / 'x.wav'}: broken symbolic link (to {tmp_path / 'gone.wav'})",
                 f"coded 2 files, {coded_two} bytes before the stop; 1 of 5 files not coded", "vqcodec: interrupted"]
    assert capsys.readouterr().err.splitlines()[-4:] == said_stop
    # a resume stopped again counts the arrays it kept, as its summary does
    assert run(["codes", str(folder), str(out), "-m", str(tiny_model_path), "-q", "3", "--resume"]) != 0
    assert capsys.readouterr().err.splitlines()[-4:] == said_stop
    (folder / "x.wav").unlink()
    (folder / "bad.wav").unlink()
    monkeypatch.setattr(Codec, "media_to_codes", real)
    assert json.loads((out / "codes.json").read_text())["stopped"] is True
    stopped = _arrays_and_manifest(out)
    for options in (["--force"], ["-q", "2"]):
        assert_one_line_error(cli("codes", folder, out, "-m", tiny_model_path, "-q", "3", "--resume", *options))
    assert_one_line_error(cli("codes", folder / "a.wav", tmp_path / "a.npy", "-m", tiny_model_path, "--resume"))
    assert _arrays_and_manifest(out) == stopped and not (tmp_path / "a.npy").exists()
    a_written = (out / "a.npy").stat().st_mtime_ns
    result = cli("codes", folder, out, "-m", tiny_model_path, "-q", "3", "--resume")
    assert result.returncode == 0, result.stderr.decode()
    # the summary of a folder of .vq files (test_codes_of_a_folder_of_vq_files), where it said 'wrote the codes of
    # 3 files to OUT'
    arrays = sum((out / name).stat().st_size for name in ("a.npy", "b.npy", "c.npy"))
    summary = f"coded 3 files, {arrays} bytes into "
    assert result.stderr.decode() == f"resumed: 2 files kept, 1 to code\n{summary}{out}\n"
    assert (out / "a.npy").stat().st_mtime_ns == a_written
    whole = cli("codes", folder, tmp_path / "whole", "-m", tiny_model_path, "-q", "3")
    assert whole.returncode == 0 and whole.stderr.decode() == f"{summary}{tmp_path / 'whole'}\n"
    assert _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")
    result = cli("codes", folder, out, "-m", tiny_model_path, "-q", "3", "--resume")
    assert result.returncode == 0 and result.stderr.decode() == \
        f"nothing to resume: {out / 'codes.json'} is of a run that finished; --force codes the folder again\n"
    assert _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")


@pytest.mark.parametrize("gone", ["removed", "a folder"])
def test_codes_resume_of_a_folder_says_its_summary_when_a_kept_array_goes_meanwhile(tmp_path, signal, tiny_model_path,
                                                                                   monkeypatch, capsys, gone):
    """The summary's bytes were read from each array listed once code_folder had written codes.json: a kept array
    removed meanwhile was a traceback (FileNotFoundError), one replaced by a folder counted the folder's size. It
    counts the bytes each array had when it was kept or written."""
    from vqcodec.cli import run
    from vqcodec.codec import Codec

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, signal)
    real = Codec.media_to_codes

    def stopped_at_b(self, path, quality=None):
        if Path(path).name == "b.wav":
            raise KeyboardInterrupt
        return real(self, path, quality)

    monkeypatch.setattr(Codec, "media_to_codes", stopped_at_b)
    assert run(["codes", str(folder), str(out), "-m", str(tiny_model_path)]) != 0
    kept_bytes = (out / "a.npy").stat().st_size

    def removing_the_kept_array(self, path, quality=None):
        (out / "a.npy").unlink()
        if gone == "a folder":
            (out / "a.npy").mkdir()
        return real(self, path, quality)

    monkeypatch.setattr(Codec, "media_to_codes", removing_the_kept_array)
    capsys.readouterr()
    assert run(["codes", str(folder), str(out), "-m", str(tiny_model_path), "--resume"]) == 0
    arrays = kept_bytes + (out / "b.npy").stat().st_size
    assert capsys.readouterr().err.splitlines() == ["resumed: 1 file kept, 1 to code",
                                                    f"coded 2 files, {arrays} bytes into {out}"]
    assert "stopped" not in json.loads((out / "codes.json").read_text())


def test_codes_resume_reads_the_stopped_runs_manifest_once(tmp_path, signal, tiny_model_path, monkeypatch, capsys):
    """`codes FOLDER OUT --resume` read codes.json twice: to tell whether there was a run to resume, and again in
    code_folder. It reads it once, and gives it to code_folder(stopped_run=), which checks what it is given as it
    checks what it reads."""
    from vqcodec import VQCodecError, tokens
    from vqcodec.cli import run
    from vqcodec.codec import Codec

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, signal)
    real = _codes_stop_at("b.wav", monkeypatch)
    assert run(["codes", str(folder), str(out), "-m", str(tiny_model_path)]) != 0
    monkeypatch.setattr(Codec, "media_to_codes", real)
    read, real_read = [], tokens.read_json_file
    monkeypatch.setattr(tokens, "read_json_file", lambda path, *args: read.append(path) or real_read(path, *args))
    for _ in ("stopped", "finished"):
        read.clear()
        assert run(["codes", str(folder), str(out), "-m", str(tiny_model_path), "--resume"]) == 0
        assert read == [out / "codes.json"]
    capsys.readouterr()
    codec = Codec.load(str(tiny_model_path), coding="fixed")
    codec.depth_weight = 0.0
    files, manifest = sorted(folder.iterdir()), json.loads((out / "codes.json").read_text())
    read.clear()
    assert tokens.code_folder(codec, folder, out, files, resume=True, stopped_run=manifest) == manifest and read == []
    for stopped_run, options, message in ((manifest, {}, "give resume=True with it$"),
                                          ({"files": [Path("a")]}, {"resume": True}, "JSON data"),
                                          ([], {"resume": True}, "not the codes.json of a folder of media$"),
                                          (manifest, {"resume": True, "quality": 2}, "coded with quality 4")):
        with pytest.raises(VQCodecError, match=message):
            tokens.code_folder(codec, folder, out, files, stopped_run=stopped_run, **options)


def test_codes_of_a_folder_without_replacing_refuse_an_existing_manifest_before_any_file(tmp_path, signal, codec):
    """code_folder(replace=False) into a folder whose codes.json exists (a stopped run's) coded every file, wrote
    their arrays, and then failed on the manifest: the new arrays were left behind with no manifest that lists
    them. The command without --force refuses it before any work, as replace=False now does."""
    from vqcodec import VQCodecError
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, signal)
    code_folder(codec, folder, out, [folder / "a.wav"])
    before = {path: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(VQCodecError, match=f"^{re.escape(str(out / 'codes.json'))} exists; pass replace=True to "
                                           "overwrite it$"):
        code_folder(codec, folder, out, sorted(folder.iterdir()), replace=False)
    assert {path: path.read_bytes() for path in out.iterdir()} == before


def test_codes_of_a_recording_above_full_scale_warn_naming_it_as_encode_does(cli, tmp_path, signal, codec,
                                                                            tiny_model_path):
    """encode of float audio beyond the level gain's reach says in a warning line that its loud parts come out limited;
    codes of it, of one file or in a folder, said nothing (the README says their codes are those of the recording at
    a usual level)."""
    from vqcodec.tokens import code_folder

    folder = tmp_path / "recordings"
    folder.mkdir()
    soundfile.write(folder / "loud.wav", signal(1, 1600, 16000).T * 2 ** 15, 16000, subtype="FLOAT")
    write_wav(folder / "quiet.wav", signal)
    line = f"vqcodec: warning: {folder / 'loud.wav'} is coded at \\+[0-9.]+ dB above full scale .* scale it down first"
    result = cli("codes", folder / "loud.wav", tmp_path / "loud.npy", "-m", tiny_model_path, text=True)
    assert result.returncode == 0 and re.search(f"^{line}$", result.stderr, re.M), result.stderr
    result = cli("codes", folder, tmp_path / "tokens", "-m", tiny_model_path, text=True)
    assert result.returncode == 0, result.stderr
    assert [bool(re.fullmatch(line, each)) for each in result.stderr.splitlines()] == [True, False], result.stderr
    with pytest.warns(UserWarning) as caught:
        code_folder(codec, folder, tmp_path / "again", sorted(folder.iterdir()))
    assert [str(item.message).split(" is coded at")[0] for item in caught] == [str(folder / "loud.wav")]
    said = []
    code_folder(codec, folder, tmp_path / "told", sorted(folder.iterdir()), on_warning=said.append)
    assert len(said) == 1 and said[0].startswith(f"{folder / 'loud.wav'} is coded at")


def test_codes_of_a_folder_take_a_list_of_files_and_refuse_one_path_or_a_generator(tmp_path, signal, codec):
    """files=Path raised a bare TypeError ('PosixPath' object is not iterable), files=str was read as its
    characters ('/ is not in the folder'), and a generator was used up by the check of the outputs' paths,
    so that no file was coded and nothing said why."""
    from vqcodec import VQCodecError
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    write_wav(folder / "a.wav", signal)
    for files, told in ((folder / "a.wav", ": give [path] for one file"),
                        (str(folder / "a.wav"), ": give [path] for one file"),
                        (folder.glob("*.wav"), ""), ([folder / "a.wav", 3], ""), (None, "")):
        with pytest.raises(VQCodecError, match=r"^files is a list of paths \(str or Path\) of media under the folder, "
                                               rf"not .*{re.escape(told)}$"):
            code_folder(codec, folder, out, files)
    with pytest.raises(VQCodecError, match=r"a\.wav is not in the folder .*a\.wav$"):  # was pathlib's ValueError
        code_folder(codec, folder / "a.wav", out, [folder / "a.wav"])
    # a name as os.listdir(folder) gives it was said not to be in the folder, and no more
    with pytest.raises(VQCodecError, match=r"^a\.wav is not in the folder .*recordings \(a relative path is taken from "
                                           rf"the current folder: give {re.escape(str(folder / 'a.wav'))}\)$"):
        code_folder(codec, folder, out, ["a.wav"])
    with pytest.raises(VQCodecError, match=r"^x+ is not in the folder .*recordings$"):  # its lookup's OSError
        code_folder(codec, folder, out, ["x" * 5000])
    assert not out.exists()
    assert [entry["file"] for entry in code_folder(codec, folder, out, (folder / "a.wav",))["files"]] == ["a.wav"]


@pytest.mark.parametrize("path", [None, 5, b"codes.npy"])
def test_check_listed_codes_refuses_what_is_no_path_in_one_line(codec, path):
    """tokens.check_listed_codes(codec, None) raised a bare TypeError from Path()."""
    from vqcodec import VQCodecError
    from vqcodec.tokens import check_listed_codes

    with pytest.raises(VQCodecError, match=r"^path is the path of a \.npy file of codes \(a str or Path\), not "):
        check_listed_codes(codec, path)


def test_check_listed_codes_passes_over_a_manifest_nested_too_deep(codec, tmp_path):
    """A codes.json above the codes that nests its lists too deep for Python's JSON parser (hand-made or damaged)
    is passed over as one that is not JSON is: a RecursionError reached the command line as a traceback."""
    from vqcodec.tokens import check_listed_codes

    (tmp_path / "codes.json").write_text("[" * 100_000)
    np.save(tmp_path / "in.npy", np.zeros((1, 2, 3), np.int32))
    check_listed_codes(codec, tmp_path / "in.npy")


def test_check_listed_codes_refuses_a_manifest_too_large_to_read(codec, tmp_path, monkeypatch):
    """A codes.json above the codes was read whole, whatever its size (a file of 10 GB until memory ran out); one
    of more than tokens.MAX_MANIFEST_BYTES is refused from its size, unread, in one line (it may list the codes,
    so it is not passed over), while a FIFO there is passed over, unopened, as before."""
    from vqcodec import VQCodecError, tokens

    monkeypatch.setattr(tokens, "MAX_MANIFEST_BYTES", 1 << 20)
    np.save(tmp_path / "in.npy", np.zeros((1, 2, 3), np.int32))
    os.mkfifo(tmp_path / "codes.json")
    tokens.check_listed_codes(codec, tmp_path / "in.npy")
    (tmp_path / "codes.json").unlink()
    with open(tmp_path / "codes.json", "wb") as manifest:
        manifest.truncate((1 << 20) + 1)  # sparse: no disk
    with pytest.raises(VQCodecError, match=f"^cannot read {re.escape(str(tmp_path / 'codes.json'))}: codes.json takes "
                                           r"more than 1 MiB, far more than the codes.json of a million files holds$"):
        tokens.check_listed_codes(codec, tmp_path / "in.npy")


@pytest.mark.parametrize("arguments, told", [
    (dict(folder=None), "folder is the path of a folder (a str or Path, not empty), not None"),  # were TypeErrors
    (dict(out=None), "out is the path of a folder (a str or Path, not empty), not None"),
    (dict(folder=""), "folder is the path of a folder (a str or Path, not empty), not ''"),  # the current folder
    (dict(replace="no"), "replace must be True or False, not 'no'"),  # taken as True
    (dict(codec=None), "codec is a vqcodec Codec (Codec.load), not None"),  # an AttributeError
    (dict(log="coded.txt"), "log must be a function or None, not 'coded.txt'"),  # called at the 100th file, and
    (dict(on_warning=5), "on_warning must be a function or None, not 5"),  # failed: the manifest was not written
    (dict(report={}), "report is a vqcodec.folders.FolderReport or None, not {}")])
def test_codes_of_a_folder_refuse_odd_arguments_in_one_line(tmp_path, codec, arguments, told):
    from vqcodec import VQCodecError
    from vqcodec.tokens import code_folder

    given = dict(codec=codec, folder=tmp_path, out=tmp_path / "tokens", files=[]) | arguments
    with pytest.raises(VQCodecError, match=f"^{re.escape(told)}$"):
        code_folder(**given)


def test_codes_of_a_folder_with_a_weight_the_codec_cannot_use_stops_before_the_first_file(tmp_path, signal,
                                                                                       tiny_model_path):
    """A depth weight set on a codec that codes fixed-width failed every file alike: each was skipped
    with the same reason, and a manifest of none was written."""
    from vqcodec import Codec, VQCodecError
    from vqcodec.tokens import code_folder

    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, signal)
    codec = Codec.load(tiny_model_path)
    codec.depth_weight = 1.0
    with pytest.raises(VQCodecError, match=r"^depth weight 1 weighs .* \(model tiny has no prior\)"):
        code_folder(codec, folder, out, sorted(folder.iterdir()))
    assert not out.exists()


def test_codes_of_a_folder_wait_for_another_threads_rate_search_on_a_shared_codec(tmp_path, monkeypatch):
    """code_folder did not hold the codec's lock, as Codec's entry points do: its manifest took the
    depth weight of a try of a rate search that another thread was running on the codec."""
    import threading

    from vqcodec import Codec, ratecontrol
    from vqcodec.tokens import code_folder

    codec = Codec.load("speech16k")  # its own: progress is set on it
    configured = codec.depth_weight
    audio, rate = soundfile.read(Path(__file__).parent / "data" / "speech.flac", dtype="float32")
    out = {}
    other = threading.Thread(target=lambda: out.setdefault("manifest", code_folder(codec, tmp_path, tmp_path, [])))
    weights = []  # of the search's tries (its progress callback is shown the codec's own)
    fit_size = ratecontrol.fit_size
    monkeypatch.setattr(ratecontrol, "fit_size", lambda encode, *rest: fit_size(
        lambda quality, weight: weights.append(weight) or encode(quality, weight), *rest))

    def during_the_search(stage, done, total):  # the search tries other depth weights on the codec
        if weights[-1] != configured and not other.is_alive() and "manifest" not in out:
            other.start()
            other.join(0.5)
    codec.progress = during_the_search
    codec.encode_audio(audio, rate, 8, max_kbps=1.0)
    assert other.ident is not None  # it ran during a try at another weight
    other.join()
    assert out["manifest"]["depth_weight"] == configured


def test_codes_of_a_folder_refuses_a_subfolder_where_the_manifest_goes(cli, tmp_path, signal, tiny_model_path):
    folder, out = tmp_path / "recordings", tmp_path / "tokens"
    (folder / "codes.json").mkdir(parents=True)
    write_wav(folder / "codes.json" / "x.wav", signal)
    write_wav(folder / "y.wav", signal)
    result = cli("codes", folder, out, "-m", tiny_model_path)
    assert_one_line_error(result)
    assert "would be both an output file and the folder of" in result.stderr.decode()
    assert not out.exists()  # refused before any work


@pytest.fixture(scope="module")
def vq_folder(tmp_path_factory):
    """A folder of .vq files of both shipped models: a.vq (speech), sub/b.vq (a photo), bad.vq (cut short)."""
    from vqcodec import Codec

    folder = tmp_path_factory.mktemp("vq") / "files"
    (folder / "sub").mkdir(parents=True)
    speech = Codec.load("speech16k").codes_to_file(np.random.default_rng(0).integers(0, 1024, (2, 3, 120)),
                                                     sample_rate=8000, samples=19_200)
    (folder / "a.vq").write_bytes(speech)
    photo = Codec.load("image").codes_to_file(np.ones((2, 3, 4), np.int64), width=60, height=40)
    (folder / "sub" / "b.vq").write_bytes(photo)
    (folder / "bad.vq").write_bytes(speech[:-3])
    (folder / "notes.txt").write_text("not a .vq file: ignored")
    return folder


def test_codes_of_a_folder_of_vq_files(cli, vq_folder, tmp_path):
    """A folder of .vq files was refused ('no audio or image files found'): each had to be given alone."""
    from vqcodec import Codec

    out = tmp_path / "tokens"
    result = cli("codes", vq_folder, out)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr.decode()
    assert lines == [f"skipping {vq_folder / 'bad.vq'}: truncated .vq file (chunk 0 cut short)",
                     f"coded 2 files, {(out / 'a.npy').stat().st_size + (out / 'sub' / 'b.npy').stat().st_size} "
                     f"bytes into {out}",
                     "vqcodec: error: 1 of 3 files could not be coded (listed above)"]
    assert sorted(listing(out)) == ["a.npy", "codes.json", "sub", "sub/b.npy"]
    manifest = json.loads((out / "codes.json").read_text())
    for entry, model in zip(manifest["files"], ("speech16k", "image")):
        codec = Codec.load(model)
        header, expected = codec.read_codes(vq_folder / entry["file"])
        array = np.load(out / entry["codes"], allow_pickle=False)
        assert array.dtype == np.int32 and np.array_equal(array, expected) and entry["shape"] == list(array.shape)
        assert (entry["model_id"], entry["codes_id"], entry["quality"]) == (codec.model_id.hex(),
                                                                            codec.codes_id.hex(), header.quality)
    assert manifest["files"][0] | {"model_id": None, "codes_id": None} == {
        "file": "a.vq", "codes": "a.npy", "shape": [2, 3, 120], "model_id": None, "codes_id": None, "kind": "audio",
        "quality": 3,
        "sample_rate": 8000, "samples": 19_200, "channels": 2, "gain": 1.0,
        "file_size": (vq_folder / "a.vq").stat().st_size, "file_mtime_ns": (vq_folder / "a.vq").stat().st_mtime_ns,
        "file_blake2b": _b2sum_256(vq_folder / "a.vq")}
    assert {k: manifest["files"][1][k] for k in ("file", "kind", "width", "height")} == \
        {"file": "sub/b.vq", "kind": "image", "width": 60, "height": 40}
    assert manifest["skipped"] == [{"file": "bad.vq", "reason": "truncated .vq file (chunk 0 cut short)"}]
    assert manifest["axes"] == {"audio": ["channel", "level", "frame"], "image": ["level", "row", "col"]}

    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    assert_one_line_error(cli("codes", vq_folder, out))  # exists, no --force: nothing done
    assert_one_line_error(cli("codes", vq_folder, tmp_path / "q", "-q", "2"))  # a .vq file's codes are chosen
    assert before == {path: path.stat().st_mtime_ns for path in out.rglob("*")} and not (tmp_path / "q").exists()
    (out / "a.npy").write_bytes(b"stale")
    result = cli("codes", vq_folder, out, "-m", "speech16k", "--force")  # -m: the photo is another model's
    assert result.returncode == 1 and "2 of 3 files could not be coded" in result.stderr.decode()
    assert np.array_equal(np.load(out / "a.npy"), Codec.load("speech16k").read_codes(vq_folder / "a.vq")[1])
    assert [entry["file"] for entry in json.loads((out / "codes.json").read_text())["files"]] == ["a.vq"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_codes_of_a_folder_of_vq_files_stopped_part_way_keeps_a_manifest_of_what_it_wrote(vq_folder, tmp_path, error):
    """Only Ctrl-C and SIGTERM wrote the manifest of the files finished, not an error such as MemoryError."""
    from vqcodec import Codec
    from vqcodec.folders import codes_folder
    from vqcodec.tokens import write_vq_manifest

    files, out = [vq_folder / "a.vq", vq_folder / "sub" / "b.vq"], tmp_path / "tokens"
    speech, calls = Codec.load("speech16k"), []

    def codec_for(data):
        calls.append(data)
        if len(calls) == 2:
            raise error  # the second file stops the run, as Ctrl-C or running out of memory would
        return speech

    def write(path, write_stream):
        with open(path, "wb") as stream:
            write_stream(stream)
    with pytest.raises(error):
        codes_folder(files, [out / "a.npy", out / "sub" / "b.npy"], codec_for, write,
                     stopped=lambda report, entries: write_vq_manifest(vq_folder, out, entries, report.skipped,
                                                                       stopped=True))
    manifest = json.loads((out / "codes.json").read_text())
    assert manifest["stopped"] is True and [entry["file"] for entry in manifest["files"]] == ["a.vq"]


def _codes_stopped_at_the_photo(folder, out, monkeypatch, *options):
    """`codes FOLDER OUT` of a folder of .vq files (with `options`, --resume say) stopped (Ctrl-C) when it reaches the
    image's file, as a run the user stopped leaves OUT; Codec.code_blocks is as it was afterwards."""
    from vqcodec.cli import run
    from vqcodec.codec import Codec

    real = Codec.code_blocks

    def stopped_at_the_photo(self, data):
        if vqformat.parse_header(data).kind == vqformat.KIND_IMAGE:
            raise KeyboardInterrupt
        return real(self, data)

    monkeypatch.setattr(Codec, "code_blocks", stopped_at_the_photo)
    assert run(["codes", str(folder), str(out), *options]) != 0
    monkeypatch.setattr(Codec, "code_blocks", real)


def test_codes_resume_of_a_folder_of_vq_files_stopped_part_way(cli, vq_folder, tmp_path, monkeypatch):
    """--resume of a folder of .vq files was refused: its stopped run could only be coded again whole. It codes
    the files that run did not finish (bad.vq, which it skipped, too), into the arrays, codes.json and summary
    of a run that was not stopped."""
    out, whole = tmp_path / "tokens", tmp_path / "whole"
    _codes_stopped_at_the_photo(vq_folder, out, monkeypatch)
    stopped = json.loads((out / "codes.json").read_text())
    assert stopped["stopped"] is True and [entry["file"] for entry in stopped["files"]] == ["a.vq"]
    assert_one_line_error(cli("codes", vq_folder, out, "--resume", "--force"))
    a_written = (out / "a.npy").stat().st_mtime_ns
    resumed = cli("codes", vq_folder, out, "--resume")
    assert (out / "a.npy").stat().st_mtime_ns == a_written
    uninterrupted = cli("codes", vq_folder, whole)
    assert resumed.returncode == uninterrupted.returncode == 1
    assert resumed.stderr.decode().replace(str(out), str(whole)) == \
        "resumed: 1 file kept, 2 to code\n" + uninterrupted.stderr.decode()
    assert _arrays_and_manifest(out) == _arrays_and_manifest(whole)
    result = cli("codes", vq_folder, out, "--resume")
    assert result.returncode == 0 and result.stderr.decode() == \
        f"nothing to resume: {out / 'codes.json'} is of a run that finished; --force codes the folder again\n"
    (whole / "codes.json").write_text(json.dumps({"model_id": "00" * 16, "files": [], "stopped": True}))
    result = cli("codes", vq_folder, whole, "--resume")  # a folder of media's
    assert_one_line_error(result)
    assert result.stderr.decode().endswith("it is not the codes.json of a folder of .vq files\n")


def test_codes_resume_of_a_folder_of_vq_files_stopped_again_counts_the_arrays_it_kept(vq_folder, tmp_path,
                                                                                      monkeypatch, capsys):
    """A resume of a folder of .vq files stopped again said only what it coded itself, 'coded 0 files, 0 bytes before
    the stop; 1 of 2 files not coded', leaving out the array it kept, where a folder of media's counts it. A stop
    neither named nor counted a name passed over (a link to nothing), which the summary names and counts."""
    folder, out = tmp_path / "files", tmp_path / "tokens"
    shutil.copytree(vq_folder, folder)
    (folder / "x.vq").symlink_to(tmp_path / "gone.vq")
    capsys.readouterr()
    _codes_stopped_at_the_photo(folder, out, monkeypatch)
    kept_bytes = (out / "a.npy").stat().st_size
    said_stop = [f"skipping {folder / 'x.vq'}: broken symbolic link (to {tmp_path / 'gone.vq'})",
                 f"skipping {folder / 'bad.vq'}: truncated .vq file (chunk 0 cut short)",
                 f"coded 1 file, {kept_bytes} bytes before the stop; 1 of 4 files not coded", "vqcodec: interrupted"]
    assert capsys.readouterr().err.splitlines()[-4:] == said_stop
    _codes_stopped_at_the_photo(folder, out, monkeypatch, "--resume")  # stopped again where it stopped before
    assert capsys.readouterr().err.splitlines()[-4:] == said_stop


def test_codes_resume_of_a_folder_of_vq_files_gives_its_kept_entries_the_codes_id(vq_folder, tmp_path, monkeypatch):
    """A resume of a codes.json written before codes ids kept its entries without one, so pack checked those arrays
    by model id alone. An entry it keeps gets the codes id of the model of the id it names, as a new run records it."""
    from vqcodec.cli import run

    out = tmp_path / "tokens"
    _codes_stopped_at_the_photo(vq_folder, out, monkeypatch)
    stopped = json.loads((out / "codes.json").read_text())
    written = stopped["files"][0]
    (out / "codes.json").write_text(json.dumps(stopped | {"files": [{key: value for key, value in written.items()
                                                                       if key != "codes_id"}]}))
    assert run(["codes", str(vq_folder), str(out), "--resume"]) == 1  # bad.vq
    kept, coded = json.loads((out / "codes.json").read_text())["files"]
    assert list(kept.items()) == list(written.items()) and "codes_id" in coded  # in its place, as a new run's


def test_codes_resume_of_a_folder_of_vq_files_leaves_a_kept_entry_without_codes_id_read_by_another_model(vq_folder):
    """With -m of another model id (a fine-tune that decodes the file's model's files, which may make other codes),
    a kept entry written before codes ids stays without one: pack checks it by its model id, as before."""
    from types import SimpleNamespace

    from vqcodec.folders import HeaderBytes, with_codes_id

    fine_tune = SimpleNamespace(model_id=bytes(8), codes_id=bytes(range(8)), decodes_files_of=lambda model_id: True)
    model_id = vqformat.parse_header((vq_folder / "a.vq").read_bytes()).model_id.hex()
    entry = {"file": vq_folder / "a.vq", "model_id": model_id, "kind": "audio"}
    assert with_codes_id(entry, "fine-tune", "cpu", {"fine-tune": fine_tune}, HeaderBytes()) == entry


def test_codes_resume_of_a_folder_of_vq_files_writes_its_manifest_when_a_kept_array_goes_meanwhile(vq_folder, tmp_path,
                                                                                                  monkeypatch, capsys):
    """The summary's bytes of the files a resume kept were read from their arrays after the others were coded: one
    removed meanwhile stopped the run there, 'No such file or directory', with the files it coded left unlisted."""
    from vqcodec.cli import run
    from vqcodec.codec import Codec

    out = tmp_path / "tokens"
    real = Codec.code_blocks

    _codes_stopped_at_the_photo(vq_folder, out, monkeypatch)

    def removing_the_kept_array(self, data):
        (out / "a.npy").unlink(missing_ok=True)
        return real(self, data)

    monkeypatch.setattr(Codec, "code_blocks", removing_the_kept_array)
    capsys.readouterr()
    assert run(["codes", str(vq_folder), str(out), "--resume"]) == 1  # bad.vq
    assert "No such file" not in capsys.readouterr().err
    manifest = json.loads((out / "codes.json").read_text())
    assert "stopped" not in manifest and [entry["file"] for entry in manifest["files"]] == ["a.vq", "sub/b.vq"]


def test_codes_resume_of_a_folder_of_vq_files_codes_again_a_file_whose_header_changed(cli, vq_folder, tmp_path,
                                                                                     monkeypatch):
    """A .vq file replaced since the stopped run by another (here of fewer levels and frames) is coded again,
    as its header no longer gives what codes.json records of it."""
    from vqcodec.codec import Codec

    folder, out = tmp_path / "files", tmp_path / "tokens"
    shutil.copytree(vq_folder, folder)
    _codes_stopped_at_the_photo(folder, out, monkeypatch)
    speech = Codec.load("speech16k")
    (folder / "a.vq").write_bytes(speech.codes_to_file(np.zeros((1, 2, 40), np.int64), sample_rate=8000))
    assert cli("codes", folder, out, "--resume").returncode == 1  # bad.vq
    assert np.array_equal(np.load(out / "a.npy"), speech.read_codes(folder / "a.vq")[1])
    assert cli("codes", folder, tmp_path / "whole").returncode == 1
    assert _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")


def test_codes_resume_of_a_folder_of_vq_files_codes_again_a_file_changed_with_the_same_header(cli, vq_folder,
                                                                                              tmp_path, monkeypatch):
    """A .vq file replaced since the stopped run by one of the same header (other codes) kept the codes of what it
    was: codes.json now records its size and time, and it is coded again."""
    from vqcodec.codec import Codec

    folder, out = tmp_path / "files", tmp_path / "tokens"
    shutil.copytree(vq_folder, folder)
    _codes_stopped_at_the_photo(folder, out, monkeypatch)
    entry = json.loads((out / "codes.json").read_text())["files"][0]
    assert (entry["file"], entry["file_size"], entry["file_mtime_ns"]) == \
        ("a.vq", (folder / "a.vq").stat().st_size, (folder / "a.vq").stat().st_mtime_ns)
    speech = Codec.load("speech16k")
    (folder / "a.vq").write_bytes(speech.codes_to_file(np.zeros((2, 3, 120), np.int64), sample_rate=8000,
                                                       samples=19_200))
    os.utime(folder / "a.vq", ns=(entry["file_mtime_ns"] + 10**9,) * 2)
    assert cli("codes", folder, out, "--resume").returncode == 1  # bad.vq
    assert np.array_equal(np.load(out / "a.npy"), np.zeros((2, 3, 120)))
    assert cli("codes", folder, tmp_path / "whole").returncode == 1
    assert _arrays_and_manifest(out) == _arrays_and_manifest(tmp_path / "whole")
    shown = " ".join(cli("codes", "--help").stdout.decode().split())
    assert "that restore it, and the file's size, time and content hash." in shown
    assert "coding only the files it did not finish or that changed since (their size, time or content)." in shown


def test_codes_resume_of_a_folder_of_vq_files_codes_again_a_file_replaced_with_its_size_time_and_header(
        vq_folder, tmp_path, monkeypatch):
    """A .vq file replaced since the stopped run by one of the same size and header, its time set back to the one
    recorded (cp -p), kept the codes of what it was: its content hash tells it, and it is coded again."""
    from vqcodec.cli import run
    from vqcodec.codec import Codec

    folder, out = tmp_path / "files", tmp_path / "tokens"
    shutil.copytree(vq_folder, folder)
    _codes_stopped_at_the_photo(folder, out, monkeypatch)
    entry = json.loads((out / "codes.json").read_text())["files"][0]
    speech = Codec.load("speech16k")
    swapped = speech.read_codes(folder / "a.vq")[1][::-1]  # its two channels swapped: the same size
    (folder / "a.vq").write_bytes(speech.codes_to_file(swapped.copy(), sample_rate=8000, samples=19_200))
    os.utime(folder / "a.vq", ns=(entry["file_mtime_ns"],) * 2)
    assert (entry["file"], entry["file_size"]) == ("a.vq", (folder / "a.vq").stat().st_size)
    assert run(["codes", str(folder), str(out), "--resume"]) == 1  # bad.vq
    assert np.array_equal(np.load(out / "a.npy"), swapped)


def test_codes_of_a_folder_of_photos(cli, tmp_path):
    from PIL import Image

    golden = Path(__file__).resolve().parent / "data" / "golden" / "golden_image.safetensors"
    folder, out = tmp_path / "photos", tmp_path / "tokens"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (17, 9), dtype=np.uint8)).save(folder / "b.png")
    result = cli("codes", folder, out, "-m", golden, "-q", "2")
    assert result.returncode == 0, result.stderr.decode()
    manifest = json.loads((out / "codes.json").read_text())
    stride = manifest["stride"]
    assert manifest["kind"] == "image" and manifest["axes"] == ["level", "row", "col"]
    for entry, (h, w) in zip(manifest["files"], [(40, 56), (17, 9)]):
        assert (entry["width"], entry["height"]) == (w, h)
        assert np.load(out / entry["codes"]).shape == (2, -(-h // stride), -(-w // stride))


@pytest.mark.parametrize("option, heavy", [("--rate-weight", "50"), ("--depth-weight", "6")])
def test_weight_options_make_smaller_entropy_coded_files(cli, tmp_path, option, heavy):
    from PIL import Image

    golden = Path(__file__).resolve().parent / "data" / "golden" / "golden_image.safetensors"
    rng = np.random.default_rng(3)
    picture = np.clip(rng.normal(0, 30, (64, 80, 3)).cumsum(1) / 6 + 128, 0, 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    sizes = {}
    for weight in ("0", heavy):
        out = tmp_path / f"w{weight}.vq"
        result = cli("encode", tmp_path / "in.png", out, "-m", golden, "-q", "3", option, weight)
        assert result.returncode == 0, result.stderr.decode()
        sizes[weight] = out.stat().st_size
        decoded = tmp_path / f"w{weight}.png"
        assert cli("decode", out, decoded, "-m", golden).returncode == 0
        with Image.open(decoded) as image:
            assert image.size == (80, 64)
    assert sizes[heavy] < sizes["0"]
    if option == "--depth-weight":   # per-cell depth shows in the report and as -1 codes
        result = cli("info", tmp_path / f"w{heavy}.vq", "--verbose", "-m", golden)
        assert result.returncode == 0, result.stderr.decode()
        assert "per-cell depth" in result.stdout.decode() and "depths" in result.stdout.decode()
        assert cli("codes", tmp_path / f"w{heavy}.vq", tmp_path / "codes.npy", "-m", golden).returncode == 0
        array = np.load(tmp_path / "codes.npy", allow_pickle=False)
        assert array.dtype == np.int32 and (array == -1).any() and (array >= 0).any()


def test_pack_reads_npy_versions_1_2_and_3_alike(cli, tmp_path):
    """A version 3 .npy file (numpy.lib.format, version=(3, 0)) was refused as 'not a NumPy .npy file'."""
    from PIL import Image

    from make_golden import golden_image

    model = Path(__file__).resolve().parent / "data" / "golden" / "golden_image.safetensors"
    Image.fromarray(golden_image(42, 40, 48)).save(tmp_path / "in.png")
    assert cli("encode", tmp_path / "in.png", tmp_path / "a.vq", "-m", model, "-q", "3").returncode == 0
    assert cli("codes", tmp_path / "a.vq", tmp_path / "a.npy", "-m", model).returncode == 0
    codes = np.load(tmp_path / "a.npy")
    for version in ((1, 0), (2, 0), (3, 0)):
        source = tmp_path / f"v{version[0]}.npy"
        with open(source, "wb") as stream:
            np.lib.format.write_array(stream, codes, version=version)
        assert source.read_bytes()[6:8] == bytes(version)
        result = cli("pack", source, tmp_path / f"v{version[0]}.vq", "-m", model, "--width", "48", "--height", "40")
        assert result.returncode == 0, result.stderr.decode()
        assert (tmp_path / f"v{version[0]}.vq").read_bytes() == (tmp_path / "a.vq").read_bytes(), version


def test_pack_inverts_codes_byte_for_byte(cli, tmp_path):
    """`codes` then `pack` gives back the same file, per-cell depth (-1 codes) included."""
    from PIL import Image

    from make_golden import golden_audio, golden_image

    golden = Path(__file__).resolve().parent / "data" / "golden"
    signal = golden_audio(41, seconds=1.3)
    soundfile.write(tmp_path / "in.wav", signal.T, 22050)  # not the model's rate
    Image.fromarray(golden_image(42, 70, 90)).save(tmp_path / "in.png")
    for source, model, extra in (("in.wav", "golden_audio", ["--rate", "22050", "--samples", str(signal.shape[1])]),
                                 ("in.png", "golden_image", ["--width", "90", "--height", "70"])):
        model = golden / f"{model}.safetensors"
        assert cli("encode", tmp_path / source, tmp_path / "a.vq", "-m", model, "-q", "3",
                   "--depth-weight", "3", "--force").returncode == 0
        assert cli("codes", tmp_path / "a.vq", tmp_path / "a.npy", "-m", model, "--force").returncode == 0
        assert (np.load(tmp_path / "a.npy") == -1).any()
        result = cli("pack", tmp_path / "a.npy", tmp_path / "b.vq", "-m", model, *extra, "--force")
        assert result.returncode == 0, result.stderr.decode()
        assert (tmp_path / "b.vq").read_bytes() == (tmp_path / "a.vq").read_bytes(), source
        # without the sizes: the model's rate and whole frames or cells, decoded like any file
        assert cli("pack", tmp_path / "a.npy", tmp_path / "c.vq", "-m", model, "--force").returncode == 0
        decoded = tmp_path / ("c.wav" if source == "in.wav" else "c.png")
        assert cli("decode", tmp_path / "c.vq", decoded, "-m", model, "--force").returncode == 0
        if source == "in.wav":
            info = soundfile.info(decoded)
            frames = np.load(tmp_path / "a.npy").shape[2]
            assert (info.samplerate, info.channels, info.frames) == (16000, 2, frames * 8)  # hop 8
        else:
            _, rows, cols = np.load(tmp_path / "a.npy").shape
            with Image.open(decoded) as image:
                assert image.size == (cols * 4, rows * 4) == (92, 72)  # hop 4
    # a fixed-width file comes back with --coding fixed (by default its codes are entropy coded)
    model = golden / "golden_audio.safetensors"
    extra = ["--rate", "22050", "--samples", str(signal.shape[1]), "--force"]
    assert cli("encode", tmp_path / "in.wav", tmp_path / "fixed.vq", "-m", model, "-q", "3", "--coding", "fixed",
               "--force").returncode == 0
    assert cli("codes", tmp_path / "fixed.vq", tmp_path / "fixed.npy", "-m", model).returncode == 0
    assert cli("pack", tmp_path / "fixed.npy", tmp_path / "d.vq", "-m", model, *extra, "--coding", "fixed").returncode == 0
    assert (tmp_path / "d.vq").read_bytes() == (tmp_path / "fixed.vq").read_bytes()
    assert cli("pack", tmp_path / "fixed.npy", tmp_path / "d.vq", "-m", model, *extra).returncode == 0
    assert len((tmp_path / "d.vq").read_bytes()) < len((tmp_path / "fixed.vq").read_bytes())
    # audio coded at a level gain: `codes` of a folder lists it, and `pack --gain` puts it back
    (tmp_path / "loud").mkdir()
    soundfile.write(tmp_path / "loud" / "in.wav", (signal * 61.2345678 / np.abs(signal).max()).T, 22050,
                    subtype="FLOAT")
    assert cli("encode", tmp_path / "loud" / "in.wav", tmp_path / "loud.vq", "-m", model, "-q", "3").returncode == 0
    gain = vqformat.parse_header((tmp_path / "loud.vq").read_bytes()).gain
    assert gain == pytest.approx(122.469, rel=1e-4)
    assert cli("codes", tmp_path / "loud", tmp_path / "loud_codes", "-m", model, "-q", "3",
               "--depth-weight", "2").returncode == 0
    assert json.loads((tmp_path / "loud_codes" / "codes.json").read_text())["files"][0]["gain"] == gain
    # codes of the one recording say the gain, which nothing else records for them
    result = cli("codes", tmp_path / "loud" / "in.wav", tmp_path / "one.npy", "-m", model, "-q", "3",
                 "--depth-weight", "2")
    note = re.search(r"pack --gain (\S+)`", result.stderr.decode())
    assert result.returncode == 0 and note, result.stderr.decode()
    assert cli("pack", tmp_path / "one.npy", tmp_path / "one.vq", "-m", model, "--rate", "22050", "--samples",
               str(signal.shape[1]), "--gain", note[1]).returncode == 0
    assert (tmp_path / "one.vq").read_bytes() == (tmp_path / "loud.vq").read_bytes()
    assert cli("codes", tmp_path / "loud.vq", tmp_path / "loud.npy", "-m", model).returncode == 0
    # the gain as `vqcodec info` prints it is enough to restore it exactly
    shown = re.search(r"coded divided by (\S+),", cli("info", tmp_path / "loud.vq", "-m", model).stdout.decode())[1]
    assert cli("pack", tmp_path / "loud.npy", tmp_path / "loud2.vq", "-m", model, "--rate", "22050", "--samples",
               str(signal.shape[1]), "--gain", shown).returncode == 0
    assert (tmp_path / "loud2.vq").read_bytes() == (tmp_path / "loud.vq").read_bytes()


def test_codes_json_names_a_file_whose_name_is_not_utf8_in_valid_unicode_and_its_bytes_exactly(cli, encoded,
                                                                                                tiny_model_path,
                                                                                                tmp_path):
    """codes.json wrote a name holding byte 0xff (Linux takes any bytes but / and NUL) as the lone surrogate "\\udcff",
    which JSON readers other than Python's refuse as invalid Unicode: "file" and "codes" now show such a byte as
    U+FFFD, and "file_hex" and "codes_hex" give the name's bytes exactly, which pack reads back to find the entry
    that lists the codes; a skipped file's name and reason alike ("reason_hex"), of media and of .vq files."""
    from vqcodec.tokens import listing_manifest

    golden = Path(__file__).resolve().parent / "data" / "golden"
    (tmp_path / "sound").mkdir()
    (tmp_path / "vqs").mkdir()
    shutil.copy(encoded / "in.wav", tmp_path / "sound" / os.fsdecode(b"\xfftalk.wav"))
    (tmp_path / "sound" / os.fsdecode(b"bad\xff.wav")).write_bytes(b"not audio")
    shutil.copy(encoded / "out.vq", tmp_path / "vqs" / os.fsdecode(b"\xfftalk.vq"))
    (tmp_path / "vqs" / os.fsdecode(b"bad\xff.vq")).write_bytes(b"not a .vq file")
    for folder, tokens, options in (("sound", "tokens", ["-q", "1"]), ("vqs", "vq_tokens", [])):
        assert cli("codes", tmp_path / folder, tmp_path / tokens, "-m", tiny_model_path, *options).returncode == 1
        text = (tmp_path / tokens / "codes.json").read_bytes().decode("utf-8")
        assert "\\ud" not in text.lower(), text  # no surrogate, escaped or not
        manifest = json.loads(text)
        (entry,), (skipped,) = manifest["files"], manifest["skipped"]
        suffix = ".wav" if folder == "sound" else ".vq"
        for listed, key, name in ((entry, "file", "\xfftalk" + suffix), (entry, "codes", "\xfftalk.npy"),
                                  (skipped, "file", "bad\xff" + suffix)):
            shown, exact = name.replace("\xff", "\ufffd"), name.encode("latin-1")
            assert (listed[key], bytes.fromhex(listed[key + "_hex"])) == (shown, exact), (folder, key)
        assert "bad\ufffd" in skipped["reason"] or folder == "vqs"  # a .vq file's reason does not name it
        # the reason given exactly too, as eval --json gives it (it was given with U+FFFD alone)
        assert folder == "vqs" or b"bad\xff" in bytes.fromhex(skipped["reason_hex"])
        codes = tmp_path / tokens / os.fsdecode(b"\xfftalk.npy")
        assert listing_manifest(codes) == (tmp_path / tokens / "codes.json", manifest, entry)
        result = cli("pack", codes, tmp_path / "out.vq", "-m", golden / "golden_image.safetensors")
        assert_one_line_error(result)
        assert "holds the codes of audio, of model " in result.stderr.decode("utf-8", "surrogateescape"), result.stderr


def test_a_file_name_that_is_not_utf8_is_written_to_stderr_with_its_own_bytes(cli, tiny_model_path, tmp_path):
    """A name holding byte 0xff (Linux takes any bytes but / and NUL; Python holds the byte as the lone surrogate
    U+DCFF) was written to stderr as the six characters \\udcff (Python's backslashreplace), a name no shell finds:
    an error line, a skipping line (codes': not U+FFFD, as its codes.json shows the name) and a folder's error line
    now write the byte itself, as ls writes it to a pipe, and a run forked from the tests' server writes what a
    fresh `python -m vqcodec` writes."""
    missing = tmp_path / os.fsdecode(b"no\xffsuch.wav")
    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / os.fsdecode(b"bad\xff.wav")
    bad.write_bytes(b"not audio")
    out = tmp_path / os.fsdecode(b"out\xff")
    # codes of a folder printed its skipping lines from its codes.json, whose names hold U+FFFD for the byte
    for args, names in ((["codes", tmp_path / "in", tmp_path / "tokens", "-m", tiny_model_path, "-q", "1"], [bad]),
                        (["encode", missing, tmp_path / "out.vq", "-m", tiny_model_path], [missing]),
                        (["encode", tmp_path / "in", out, "-m", tiny_model_path, "-q", "1"], [bad, out])):
        result = cli(*args)
        assert result.returncode == 1 and not result.stdout
        assert b"\\u" not in result.stderr.lower() and all(os.fsencode(name) in result.stderr for name in names), \
            result.stderr
        assert "\ufffd".encode() not in result.stderr, result.stderr
    assert result.stderr.decode("utf-8", "surrogateescape").splitlines() == [
        f"skipping {bad}: cannot read audio: Format not recognised.",
        f"vqcodec: error: 1 of 1 file could not be encoded (listed above): nothing was written to {out}"]
    assert run_python("-m", "vqcodec", *args).stderr == result.stderr


def test_a_file_name_beyond_ascii_is_written_with_its_own_bytes_to_streams_in_ascii(monkeypatch, tmp_path):
    """With stdout and stderr in ASCII (the C locale without Python's UTF-8 mode: LC_ALL=C PYTHONUTF8=0, or
    PYTHONIOENCODING=ascii), click wrote its lines through a stream of its own in UTF-8 with errors "replace": each
    byte of a name beyond ASCII came out as "?" in error lines and tables (caf??.wav, b?d.wav), where the skipping and
    progress lines wrote the byte itself. Both now write the name's own bytes, and the streams are left as found."""
    from vqcodec.cli import run

    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=errors, write_through=True)
               for name, errors in (("stdout", "strict"), ("stderr", "backslashreplace"))}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    for raw in ("café.wav".encode(), b"b\xffd.wav"):
        missing = tmp_path / os.fsdecode(raw)
        assert run(["encode", str(missing), str(tmp_path / "out.vq")]) == 1
        assert os.fsencode(missing) + b": no such file" in streams["stderr"].buffer.getvalue()
    assert b"?" not in streams["stderr"].buffer.getvalue() and not streams["stdout"].buffer.getvalue()
    assert [(s.encoding, s.errors) for s in streams.values()] == [("ascii", "strict"), ("ascii", "backslashreplace")]


def test_models_lists_a_path_that_is_not_utf8_with_its_own_bytes(cli, tiny_model_path, tmp_path):
    """stdout's errors are strict in a UTF-8 locale other than C (here PYTHONIOENCODING): `models` stopped with a
    traceback (UnicodeEncodeError) at a model folder whose name holds byte 0xff; it lists the path's own bytes."""
    folder = tmp_path / os.fsdecode(b"mine\xff")
    folder.mkdir()
    for part in tiny_model_path.parent.iterdir():
        shutil.copy(part, folder / part.name)
    result = cli("models", env={"VQCODEC_MODEL_PATH": str(folder), "PYTHONIOENCODING": "utf-8:strict"})
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert os.fsencode(folder / tiny_model_path.name) in result.stdout, result.stdout


def test_json_output_names_a_file_whose_name_is_not_utf8_in_valid_unicode_and_its_bytes_exactly(cli, encoded,
                                                                                                  tiny_model_path,
                                                                                                  tmp_path):
    """models --json, info --json and eval --json wrote a name holding byte 0xff as the lone surrogate "\\udcff", which
    JSON readers other than Python's refuse: they now follow codes.json's rule, the name with U+FFFD for the byte and
    KEY_hex its bytes exactly (a list of names, eval's "files", gets a list, null for a UTF-8 name)."""
    folder = tmp_path / os.fsdecode(b"mine\xff")
    folder.mkdir()
    for part in tiny_model_path.parent.iterdir():
        shutil.copy(part, folder / part.name.replace("tiny", os.fsdecode(b"t\xff")))
    model = folder / os.fsdecode(b"t\xff.safetensors")
    (tmp_path / "sound").mkdir()
    shutil.copy(encoded / "in.wav", tmp_path / "sound" / os.fsdecode(b"\xfftalk.wav"))
    shutil.copy(encoded / "in.wav", tmp_path / "sound" / "plain.wav")
    (tmp_path / "sound" / os.fsdecode(b"bad\xff.wav")).write_bytes(b"not audio")
    outputs = {}
    for command in (["models", "--json"], ["info", encoded / "out.vq", "-m", model, "--json"],
                    ["eval", model, tmp_path / "sound", "-q", "1", "--json"]):
        result = cli(*command, env={"VQCODEC_MODEL_PATH": str(folder)})
        assert result.returncode == (1 if command[0] == "eval" else 0), result.stderr
        text = result.stdout.decode("utf-8")
        assert "\\ud" not in text.lower(), text  # no surrogate, escaped or not
        outputs[command[0]] = json.loads(text)
    (listed,) = [m for m in outputs["models"] if "path_hex" in m]  # the shipped models are listed after it
    exact = {"name": b"t\xff", "path": os.fsencode(model)}
    for key, name in exact.items():
        assert (listed[key], bytes.fromhex(listed[key + "_hex"])) == (name.decode("latin-1").replace("\xff", "\ufffd"),
                                                                       name), key
    info = outputs["info"]
    assert (info["model"].replace("\ufffd", "\xff").encode("latin-1"), bytes.fromhex(info["model_hex"])) == (
        os.fsencode(model), os.fsencode(model))
    report = outputs["eval"]
    assert bytes.fromhex(report["model_hex"]) == b"t\xff" and report["model"] == "t\ufffd"
    files = [os.fsencode(tmp_path / "sound" / os.fsdecode(b"\xfftalk.wav")), os.fsencode(tmp_path / "sound/plain.wav")]
    assert sorted(zip(report["files"], report["files_hex"])) == sorted(
        [(os.fsdecode(files[0]).replace("\udcff", "\ufffd"), files[0].hex()), (os.fsdecode(files[1]), None)])
    (skipped,) = report["skipped"]
    assert bytes.fromhex(skipped["file_hex"]) == os.fsencode(tmp_path / "sound" / os.fsdecode(b"bad\xff.wav"))
    assert "bad\ufffd.wav" in skipped["reason"] and "reason_hex" in skipped


def test_json_names_gives_the_bytes_of_names_in_nested_lists_and_tuples():
    """wording.json_names gave KEY_hex for a list of names under KEY only: a tuple of them, or a list of lists, was
    shown with U+FFFD alone, the name's bytes lost."""
    from vqcodec.wording import json_names

    bad = os.fsdecode(b"a\xffb")
    assert json_names({"files": [[bad, "ok"], "x", {"file": bad}], "pair": (bad, "ok"), "plain": [["ok"], "x"]}) == {
        "files": [["a\ufffdb", "ok"], "x", {"file": "a\ufffdb", "file_hex": "61ff62"}],
        "files_hex": [["61ff62", None], None, None],
        "pair": ["a\ufffdb", "ok"], "pair_hex": ["61ff62", None], "plain": [["ok"], "x"]}
    assert json_names({"files": [bad, 3]}) == {"files": ["a\ufffdb", 3], "files_hex": ["61ff62", None]}


def test_a_quoted_name_that_is_not_utf8_is_shown_as_a_shell_takes_it_back(cli, tiny_model_path, tmp_path):
    """A message quoting a name holding byte 0xff showed Python's repr, 'a\\udcffb', which names no file in a shell:
    the command line now quotes it $'a\\xffb' (bash, zsh and ksh read back the name's bytes), while the Python API's
    message keeps the repr."""
    import subprocess

    from vqcodec.errors import VQCodecError
    from vqcodec.trainoptions import check_model_name
    from vqcodec.wording import command_line_wording, shown

    result = cli("fit-prior", tiny_model_path, tmp_path, "--out", tmp_path / os.fsdecode(b"a\xffb"))
    assert_one_line_error(result)
    assert b"the model name $'a\\xffb' is not a plain file name" in result.stderr, result.stderr
    with pytest.raises(VQCodecError, match=re.escape("model name 'a\\udcffb' is not a plain file name")):
        check_model_name(os.fsdecode(b"a\xffb"))
    # a character beyond ASCII that cannot be printed (U+00A0, U+0085, U+00AD) was escaped \xa0, which bash reads
    # as byte 0xa0, not as the character's UTF-8 bytes
    for name in (os.fsdecode(b"it's \\ \xff\n\x01"), "a\u00a0b\u0085\u00ad\u200b" + os.fsdecode(b"\xfe")):
        with command_line_wording():
            quoted = shown(name)
        assert shown(name) == repr(name)
        echoed = subprocess.run(["bash", "-c", f"printf %s {quoted}"], stdout=subprocess.PIPE, check=True).stdout
        assert echoed == os.fsencode(name), quoted


def test_pack_refuses_stdout_on_the_codes_json_it_reads(cli, encoded, tiny_model_path, tmp_path):
    """`pack tokens/in.npy - -m MODEL >> tokens/codes.json` appended the .vq file to the manifest it checked the codes
    against, status 0: that codes.json is one of pack's inputs."""
    import subprocess

    (tmp_path / "sound").mkdir()
    shutil.copy(encoded / "in.wav", tmp_path / "sound" / "in.wav")
    assert cli("codes", tmp_path / "sound", tmp_path / "tokens", "-m", tiny_model_path, "-q", "1").returncode == 0
    manifest = tmp_path / "tokens" / "codes.json"
    before = manifest.read_bytes()
    with open(manifest, "ab") as taken:
        result = run_cli_on("pack", tmp_path / "tokens" / "in.npy", "-", "-m", tiny_model_path,
                            stdin=subprocess.DEVNULL, stdout=taken, timeout=300)
    assert result.returncode == 1 and result.stderr.decode() == (
        f"vqcodec: error: stdout is the input file {manifest}: redirect it to another file\n")
    assert manifest.read_bytes() == before


def test_pack_refuses_codes_a_manifest_lists_as_another_kinds_or_models(cli, tmp_path, tiny_model_path):
    """Audio codes (1, 3, frames) fit an image model as 1 level of 3 rows, and image codes of few rows an audio
    model: pack made a file of the other kind of them, or of another model's codebooks. The arrays cannot tell,
    but the codes.json of `vqcodec codes FOLDER OUT` that lists them does."""
    from PIL import Image

    from make_golden import golden_audio, golden_image

    golden = Path(__file__).resolve().parent / "data" / "golden"
    audio_model, image_model = golden / "golden_audio.safetensors", golden / "golden_image.safetensors"
    (tmp_path / "sound").mkdir()
    soundfile.write(tmp_path / "sound" / "in.wav", golden_audio(41, seconds=0.5).T[:, :1], 16000)
    (tmp_path / "photos").mkdir()
    Image.fromarray(golden_image(42, 8, 40)).save(tmp_path / "photos" / "in.png")
    assert cli("encode", tmp_path / "photos" / "in.png", tmp_path / "photos" / "in.vq", "-m", image_model,
               "-q", "2").returncode == 0
    (tmp_path / "photos" / "in.png").unlink()  # a folder of .vq files: each entry names its kind and model
    assert cli("codes", tmp_path / "sound", tmp_path / "tokens", "-m", audio_model, "-q", "3").returncode == 0
    assert cli("codes", tmp_path / "photos", tmp_path / "image_tokens", "-m", image_model).returncode == 0
    listed = tmp_path / "tokens" / "in.npy"
    for codes, model, says in (
            (listed, image_model, f"{listed} holds the codes of audio, of model golden_audio \\([0-9a-f]+\\), as "
                                  f"{tmp_path / 'tokens' / 'codes.json'} lists it, but model golden_image codes images: "
                                  "pack it with the model that made it"),
            (listed, tiny_model_path, f"{listed} holds the codes of model golden_audio \\([0-9a-f]+\\), as .* lists "
                                      "it, whose encoder and codebooks \\(codes id [0-9a-f]{16}\\) are not those of "
                                      "model tiny \\([0-9a-f]+, codes id [0-9a-f]{16}\\): pack it"),
            (tmp_path / "image_tokens" / "in.npy", audio_model, "holds the codes of an image, of model [0-9a-f]+, as "
                                                                ".* lists it, but model golden_audio codes audio")):
        result = cli("pack", codes, tmp_path / "out.vq", "-m", model)
        assert_one_line_error(result)
        assert re.search(says, result.stderr.decode()), result.stderr.decode()
        assert not (tmp_path / "out.vq").exists()
    assert cli("pack", listed, tmp_path / "out.vq", "-m", audio_model).returncode == 0
    shutil.copy(listed, tmp_path / "unlisted.npy")  # no manifest says what it holds: packed as it is
    assert cli("pack", tmp_path / "unlisted.npy", tmp_path / "other.vq", "-m", image_model).returncode == 0


def test_check_listed_codes_takes_the_ids_of_a_manifest_in_upper_case(codec, tmp_path):
    """A codes.json whose ids are in upper case hex (edited, or written by another tool) gave the codes of 'model
    320BC802BEF6511A, ... not of model speech16k (320bc802bef6511a)', and its codes id was 'not 16 hex digits', where
    Codec.makes_codes_of takes either case."""
    from vqcodec.errors import VQCodecError
    from vqcodec.tokens import check_listed_codes

    listed = {"kind": codec.kind, "files": [{"codes": "a.npy"}]}
    for ids in ({"model_id": codec.model_id.hex().upper()},
                {"model_id": "ff" * 8, "codes_id": codec.codes_id.hex().upper()}):
        (tmp_path / "codes.json").write_text(json.dumps({**listed, **ids}))
        check_listed_codes(codec, tmp_path / "a.npy")
    (tmp_path / "codes.json").write_text(json.dumps({**listed, "model_id": "FF" * 8}))
    with pytest.raises(VQCodecError, match="holds the codes of model ffffffffffffffff, as"):
        check_listed_codes(codec, tmp_path / "a.npy")


def test_pack_of_a_folder_says_it_takes_one_file(cli, tmp_path, tiny_model_path):
    """`codes FOLDER OUT` writes a folder of codes, which pack refused as '{folder}: is a directory' alone, after
    loading the model, not saying that it packs one file."""
    (tmp_path / "tokens").mkdir()
    np.save(tmp_path / "tokens" / "a.npy", np.zeros((1, 2, 3), np.int32))
    for out in ("out.vq", "out"):
        result = cli("pack", tmp_path / "tokens", tmp_path / out, "-m", tiny_model_path)
        assert_one_line_error(result)
        assert result.stderr.decode().endswith("tokens: is a directory; pack takes one .npy file (pack each file of "
                                               "a folder of codes in turn)\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tokens"]


def test_pack_takes_codes_a_manifest_lists_with_a_model_of_the_same_codes(cli, tmp_path, tiny_model_path):
    """A decoder-only fine-tune makes its starting model's codes: codes.json's model and the one given to pack may
    be either. codes.json said only the model id, and the starting model refused the codes of a fine-tune loaded by
    its path (nothing installed said what its codes are); it records the codes id now, of a folder of media and of
    each file of a folder of .vq files. One written before codes_id is checked by model id, as it was."""
    import copy

    import torch
    from vqcodec.codec import Codec
    from vqcodec.modelfile import CODE_TENSORS, compute_codes_id, read_model_files, save_model

    from make_golden import golden_audio

    start = Path(__file__).resolve().parent / "data" / "golden" / "golden_audio.safetensors"
    codec = Codec.load(str(start))
    model = copy.deepcopy(codec.model)
    with torch.no_grad():
        next(model.decoder.parameters()).add_(0.5)  # another decoder: another model id, the same codes
    (tmp_path / "models").mkdir()
    codes_id = compute_codes_id(codec.meta["config"], read_model_files(start)[1])  # the same encoder and codebooks
    tuned = save_model(model, tmp_path / "models" / "tuned.safetensors",
                       extra={"codes_id": codes_id, "decodes": [codec.model_id.hex()]}, exact=CODE_TENSORS)
    (tmp_path / "sound").mkdir()
    soundfile.write(tmp_path / "sound" / "in.wav", golden_audio(41, seconds=0.5).T[:, :1], 16000)
    for model_path, out in ((start, "tokens"), (tuned, "tuned_tokens")):
        assert cli("codes", tmp_path / "sound", tmp_path / out, "-m", model_path, "-q", "3").returncode == 0
    manifest_path = tmp_path / "tuned_tokens" / "codes.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["codes_id"] == codes_id and manifest["model_id"] != codec.model_id.hex()
    tuned_codes = tmp_path / "tuned_tokens" / "in.npy"
    assert cli("pack", tmp_path / "tokens" / "in.npy", tmp_path / "a.vq", "-m", tuned).returncode == 0
    result = cli("pack", tuned_codes, tmp_path / "b.vq", "-m", start)
    assert result.returncode == 0, result.stderr.decode()
    result = cli("pack", tuned_codes, tmp_path / "c.vq", "-m", tiny_model_path)
    assert_one_line_error(result)
    assert f"holds the codes of model tuned ({manifest['model_id']}), as {manifest_path} lists it, whose encoder and " \
           f"codebooks (codes id {codes_id}) are not those of model tiny" in result.stderr.decode()
    assert not (tmp_path / "c.vq").exists()
    (tmp_path / "vq").mkdir()  # a folder of .vq files: each entry records the codes id of its file's model
    assert cli("encode", tmp_path / "sound" / "in.wav", tmp_path / "vq" / "in.vq", "-m", tuned, "-q", "3"
               ).returncode == 0
    assert cli("codes", tmp_path / "vq", tmp_path / "vq_tokens", "-m", tuned).returncode == 0
    assert json.loads((tmp_path / "vq_tokens" / "codes.json").read_text())["files"][0]["codes_id"] == codes_id
    result = cli("pack", tmp_path / "vq_tokens" / "in.npy", tmp_path / "d.vq", "-m", start)
    assert result.returncode == 0, result.stderr.decode()
    manifest_path.write_text(json.dumps({**manifest, "codes_id": "tuned"}))
    result = cli("pack", tuned_codes, tmp_path / "e.vq", "-m", start)
    assert_one_line_error(result)
    assert f"{manifest_path} gives a bad codes_id ('tuned': not 16 hex digits)" in result.stderr.decode()
    del manifest["codes_id"]  # as written before codes_id
    manifest_path.write_text(json.dumps(manifest))
    result = cli("pack", tuned_codes, tmp_path / "e.vq", "-m", start)
    assert_one_line_error(result)  # nothing installed says what the tuned model's codes are
    assert f"holds the codes of model tuned ({manifest['model_id']}), as {manifest_path} lists it, not of model " \
           f"golden_audio ({codec.model_id.hex()}) nor of a model it knows to make the same codes: pack it with the " \
           "model that made it (or a decoder-only fine-tune of it)" in result.stderr.decode()
    result = cli("pack", tuned_codes, tmp_path / "e.vq", "-m", start, env={"VQCODEC_MODEL_PATH": str(tmp_path / "models")})
    assert result.returncode == 0, result.stderr.decode()


def test_pack_takes_codes_in_any_integer_layout_and_byte_order(cli, tmp_path, tiny_model_path, codec):
    codes = np.random.default_rng(0).integers(0, 16, (2, 3, 700))
    plain = codec.codes_to_file(codes)
    for name, array in {"fortran": np.asfortranarray(codes), "big-endian": codes.astype(">i4"),
                        "uint8": codes.astype(np.uint8), "int64": codes}.items():
        np.save(tmp_path / f"{name}.npy", array)
        result = cli("pack", tmp_path / f"{name}.npy", tmp_path / f"{name}.vq", "-m", tiny_model_path)
        assert result.returncode == 0, result.stderr.decode()
        assert (tmp_path / f"{name}.vq").read_bytes() == plain, name
    np.save(tmp_path / "wide.npy", np.where(codes == 5, 2 ** 40, codes))  # wraps to 0 as int16
    result = cli("pack", tmp_path / "wide.npy", tmp_path / "wide.vq", "-m", tiny_model_path)
    assert_one_line_error(result)
    assert "holds 1099511627776, which is no code: codes are each an index below 16 or -1" in result.stderr.decode()


def test_pack_reads_codes_a_piece_at_a_time(tmp_path, codec, tiny_model_path):
    """pack held the .npy file's bytes and an int64 copy of its codes: 3x the int32 codes at its peak
    (1.5 GB for the 737 MB of two hours of 64 channels at q8)."""
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    np.save(small, np.zeros((64, 4, 500), np.int32))
    np.save(large, np.zeros((64, 4, 200_000), np.int32))
    peaks = [peak_rss(path, tmp_path / "out.vq", "pack", path, "-", "-m", tiny_model_path) for path in (small, large)]
    assert codec.read_codes(tmp_path / "out.vq")[1].shape == (64, 4, 200_000)
    grown, size = peaks[1] - peaks[0], large.stat().st_size
    assert grown < size, f"{grown / 1e6:.0f} MB more for {size / 1e6:.0f} MB of codes"


def test_pack_reads_a_pipe_a_piece_at_a_time(tmp_path, codec, tiny_model_path):
    """From stdin or a FIFO, pack held the .npy file's bytes whole and then the codes: 339 MB more for
    205 MB of int32 codes than for a few, now 153 MB (the int16 codes and a piece being read)."""
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    np.save(small, np.zeros((64, 4, 500), np.int32))
    np.save(large, np.arange(64 * 4 * 200_000, dtype=np.int32).reshape(64, 4, 200_000) % 16)
    peaks = []
    for path in (small, large):
        with open(path, "rb") as source, open(tmp_path / "piped.vq", "wb") as stdout:
            with subprocess.Popen(["cat"], stdin=source, stdout=subprocess.PIPE) as feeder:
                code, peak = cli_peak_rss("pack", "-", "-", "-m", tiny_model_path, stdin=feeder.stdout, stdout=stdout)
        assert code == 0
        peaks.append(peak)
    assert run_cli("pack", large, tmp_path / "file.vq", "-m", tiny_model_path).returncode == 0
    assert (tmp_path / "piped.vq").read_bytes() == (tmp_path / "file.vq").read_bytes()
    grown, size = peaks[1] - peaks[0], large.stat().st_size
    assert grown < size, f"{grown / 1e6:.0f} MB more for {size / 1e6:.0f} MB of codes"


def _npy_header_of(descr: str, shape: tuple) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": descr, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def test_pack_refuses_a_stream_shorter_or_longer_than_its_header_says(cli, tiny_model_path):
    data = _valid_npy(np.zeros((1, 3, 20), dtype=np.int32))
    for stream, message in ((data[:-5], "announces 60 values of 4 bytes, the stream ends after 235 bytes of them"),
                            (data + b"x", "holds more bytes than its header announces (60 values of 4 bytes)"),
                            (_npy_header_of("<i4", (1, 8, 10 ** 12)) + bytes(100),  # 16 TB as int16: not allocated
                             "its header announces codes of 16000.0 GB, more than the memory this process may use")):
        result = cli("pack", "-", "-", "-m", tiny_model_path, input=stream)
        assert_one_line_error(result)
        assert result.stderr.decode().startswith("vqcodec: error: stdin: ") and message in result.stderr.decode()
    assert cli("pack", "-", "-", "-m", tiny_model_path, input=data).returncode == 0
    one = _valid_npy(np.zeros((1, 1, 1), dtype=np.int8))  # was '1 values of 1 bytes'
    result = cli("pack", "-", "-", "-m", tiny_model_path, input=one + b"x")
    assert "holds more bytes than its header announces (1 value of 1 byte)" in result.stderr.decode()


def test_pack_refuses_bad_codes(cli, tmp_path, tiny_model_path):
    golden = Path(__file__).resolve().parent / "data" / "golden" / "golden_audio.safetensors"
    good = np.zeros((1, 3, 20), dtype=np.int32)
    broken = good.copy()
    broken[0, 1, 4] = -1   # a level left out below one that is present
    arrays = {"float": good.astype(np.float32), "two-d": good[0], "range": good + 10 ** 6, "broken": broken,
              "absent": np.where(np.arange(20) < 5, -1, good), "good": good}
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    np.save(tmp_path / "pickled.npy", np.array([{"codes": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not numpy")
    with open(tmp_path / "huge.npy", "wb") as stream:   # a header that claims 3 TB
        np.lib.format.write_array_header_1_0(stream, {"descr": "<i4", "fortran_order": False, "shape": (1, 8, 10 ** 11)})
        stream.write(bytes(100))
    for name, descr, shape, size in (("negative", "<i4", (-1, -1), 4), ("empty-type", "|V0", (10 ** 12,), 0),
                                     ("no-codes", "<i4", (2 ** 62, 2 ** 62, 0), 0), ("too-wide", "<i4", (0, 2 ** 63), 0)):
        with open(tmp_path / f"{name}.npy", "wb") as stream:  # reshape or frombuffer would raise
            np.lib.format.write_array_header_1_0(stream, {"descr": descr, "fortran_order": False, "shape": shape})
            stream.write(bytes(size))
    cases = [("float", golden, [], "integers"), ("two-d", golden, [], "integer array (channels, quality, frames)"),
             ("range", golden, [], "each an index below"), ("broken", golden, [], "present from the first level"),
             ("absent", tiny_model_path, [], "fixed-width coding cannot hold"),   # a model without a prior
             ("pickled", golden, [], "pickles are refused"), ("text", golden, [], "not a NumPy"),
             ("huge", golden, [], "header announces 800000000000 values"),
             ("negative", golden, [], "negative size (-1, -1)"), ("empty-type", golden, [], "integers, not |V0"),
             ("no-codes", golden, [], "holds no codes (shape (4611686018427387904, 4611686018427387904, 0))"),
             ("too-wide", golden, [], "holds no codes (shape (0, 9223372036854775808))"),
             ("good", golden, ["--samples", "3"], "3 samples at 16000 Hz make 1 frame, not 20"),
             ("good", golden, ["--width", "64"], "width and height are for images"),
             ("good", golden, ["--gain", "1e9"], "gain 1000000000.0 is out of range"),
             ("good", golden, ["--gain", "nan"], "out of range")]
    for name, model, extra, message in cases:
        result = cli("pack", tmp_path / f"{name}.npy", tmp_path / "out.vq", "-m", model, *extra)
        assert_one_line_error(result)
        assert message in result.stderr.decode(), (name, result.stderr)
        assert not (tmp_path / "out.vq").exists(), name


def test_audio_of_no_samples_is_named_and_called_so(cli, tmp_path, tiny_model_path, codec):
    """A WAV file with a header and no samples said only 'samples must be a whole number from 1 up,
    not 0' (encode, codes, media_to_codes), without the file."""
    from vqcodec import VQCodecError

    soundfile.write(tmp_path / "silence.wav", np.zeros((0, 1), np.float32), 16000)
    for args in (["codes", "silence.wav", "out.npy"], ["encode", "silence.wav", "out.vq"],
                 ["encode", "silence.wav", "out.vq", "--bitrate", "1"]):
        result = cli(*args, "-m", tiny_model_path, cwd=tmp_path)
        assert_one_line_error(result)
        assert "audio silence.wav holds no samples" in result.stderr.decode(), result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["silence.wav"]
    with pytest.raises(VQCodecError, match="^audio from the stream holds no samples$"):
        codec.media_to_codes(io.BytesIO((tmp_path / "silence.wav").read_bytes()))


def test_pack_refuses_negative_sizes(cli, tmp_path):
    """A negative --samples said "audio is empty" and a negative --width that the image was empty; each
    is now refused as the value it is, in one line."""
    golden = Path(__file__).resolve().parent / "data" / "golden" / "golden_audio.safetensors"
    np.save(tmp_path / "codes.npy", np.zeros((1, 3, 20), dtype=np.int32))
    for option, value in [("--samples", "-1"), ("--rate", "-16000"), ("--samples", "0"), ("--width", "-64"),
                          ("--height", "-1"), ("--gain", "-2")]:
        result = cli("pack", tmp_path / "codes.npy", tmp_path / "out.vq", "-m", golden, option, value)
        assert_one_line_error(result)
        assert f"{option}" in result.stderr.decode() and value in result.stderr.decode(), result.stderr
        assert "empty" not in result.stderr.decode(), result.stderr
        assert not (tmp_path / "out.vq").exists()
    # a rate above any a file holds is a bad argument, status 2, as decode's --rate is (it was status 1)
    result = cli("pack", tmp_path / "codes.npy", tmp_path / "out.vq", "-m", golden, "--rate", "1000000", text=True)
    assert (result.returncode, result.stderr) == (2, "vqcodec: error: Invalid value for '--rate': 1000000 is not in "
                                                     "the range 1<=x<=768000.\n")


def _valid_npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def test_pack_checks_a_headers_shape_against_the_model_and_memory_before_reading_its_values(cli, tmp_path,
                                                                                            monkeypatch, capsys):
    """pack read every value a .npy header announces before it refused their shape: 40 levels for a model of 4,
    or frames beyond 24 hours, were refused only once gigabytes had been read (a sparse file of 4 GB: 42 s and
    8 GB of memory), and stdin's said that it ended early. Nor was a regular file's codes checked against the
    memory this process may use (its size seemed bound enough, but a sparse file takes no disk)."""
    import vqcodec.memory
    from vqcodec.cli import run

    golden = Path(__file__).resolve().parent / "data" / "golden" / "golden_audio.safetensors"  # 4 levels, hop 8
    for shape, message in (((1, 40, 10 ** 6), "of at most 4 levels"),
                           ((1, 1, 2 * 10 ** 8), "audio longer than 24 hours is not supported")):
        result = cli("pack", "-", tmp_path / "out.vq", "-m", golden, input=_npy_header_of("|i1", shape) + bytes(100))
        assert_one_line_error(result)
        assert message in result.stderr.decode(), result.stderr
    result = cli("pack", "-", tmp_path / "out.vq", "-m", golden, "--samples", "5",
                 input=_npy_header_of("|i1", (1, 4, 10 ** 6)) + bytes(100))
    assert "5 samples at 16000 Hz make 1 frame, not 1000000" in result.stderr.decode(), result.stderr
    with open(tmp_path / "wide.npy", "wb") as stream:  # 2 MB of int8 codes are 4 MB as the model's int16
        stream.write(_npy_header_of("|i1", (1, 4, 2 ** 19)) + bytes(2 ** 21))
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 3 << 20)
    assert run(["pack", str(tmp_path / "wide.npy"), str(tmp_path / "out.vq"), "-m", str(golden)]) == 1
    assert capsys.readouterr().err == (f"vqcodec: error: {tmp_path / 'wide.npy'}: its header announces codes of 0.0 GB, "
                                       "more than the memory this process may use (0.0 GB)\n")
    assert not (tmp_path / "out.vq").exists()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tail=st.binary(max_size=300), position=st.integers(0, 200), byte=st.integers(0, 255))
def test_fuzz_pack_input(golden_audio_codec, tail, position, byte):
    """Random or mutated .npy bytes: reading and packing raise only our own error, or work."""
    from vqcodec.errors import VQCodecError
    from vqcodec.tokens import read_codes_npy

    valid = bytearray(_valid_npy(np.zeros((1, 3, 20), dtype=np.int16)))
    mutated = bytes(valid[:position % len(valid)]) + bytes([byte]) + bytes(valid[position % len(valid) + 1:])
    for data in (b"\x93NUMPY\x01\x00" + tail, mutated, valid[:position] + tail):
        try:
            codes = read_codes_npy(bytes(data), golden_audio_codec)
            golden_audio_codec.codes_to_file(codes)
        except VQCodecError:
            pass


def test_read_codes_npy_reads_codes_as_pack_does_from_python(codec, tmp_path, monkeypatch):
    """pack's bounded, piecewise .npy reader is tokens.read_codes_npy, for Python (np.load of an untrusted file
    allocates whatever its header says): codes from a path, bytes or a stream, as the codec's code type, the header
    checked against the settings codes_to_file takes and the memory before a value is read."""
    import vqcodec.memory
    from vqcodec.errors import VQCodecError
    from vqcodec.tokens import read_codes_npy

    codes = np.arange(1 * 3 * 5).reshape(1, 3, 5) % codec.codebook_size  # int64, read as int16
    path = tmp_path / "c.npy"
    np.save(path, codes)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        read = read_codes_npy(source, codec)
        assert read.dtype == codec.code_dtype and np.array_equal(read, codes)
    assert codec.read_codes(codec.codes_to_file(read_codes_npy(path, codec, samples=40), samples=40))[0].length == 40
    np.save(tmp_path / "wide.npy", np.full((1, 3, 5), 40000, np.int32))
    np.save(tmp_path / "float.npy", codes.astype(np.float32))
    os.mkfifo(tmp_path / "fifo.npy")  # refused unread: no writer to wait for
    for source, message in (((path, dict(samples=5)), "5 samples at 16000 Hz make 1 frame, not 5"),
                            ((tmp_path / "wide.npy", {}), f"{tmp_path / 'wide.npy'}: holds 40000, which is no code"),
                            ((tmp_path / "float.npy", {}), "float.npy: codes must be integers, not float32"),
                            ((tmp_path / "fifo.npy", {}), "fifo.npy: cannot read (not a regular file (a pipe or a device))"),
                            ((tmp_path / "none.npy", {}), "none.npy: cannot read (No such file or directory)"),
                            ((b"\x93NUMPY", {}), "^the input: not a NumPy .npy file")):
        with pytest.raises(VQCodecError, match=message if message.startswith("^") else re.escape(message)):
            read_codes_npy(source[0], codec, **source[1])
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 8)
    with pytest.raises(VQCodecError, match="its header announces codes of 0.0 GB, more than the memory this process"):
        read_codes_npy(path, codec)


@pytest.mark.parametrize("version, length_field", [(1, b"\xff\xff"), (2, b"\xff\xff\xff\x7f"),
                                                   (3, b"\xff\xff\xff\xff")])
def test_read_codes_npy_reads_no_header_longer_than_np_load_takes(codec, version, length_field):
    """numpy reads all the header a .npy file's length field announces (4 GiB at most) before it checks it against
    its bound: 2 GiB of a stream's zeros after such a field took 4.4 GB of memory to be refused. The field is checked
    first now, and the header not read."""
    from vqcodec.errors import VQCodecError
    from vqcodec.tokens import read_codes_npy

    class Zeros(io.RawIOBase):
        """A .npy magic and header length field, then zeros, up to 1 MiB in all; counts what it gives."""
        def __init__(self):
            self.given = 0

        def read(self, size=-1):
            start = b"\x93NUMPY" + bytes([version, 0]) + length_field
            piece = (start + bytes(1 << 16))[self.given:self.given + min(size, 1 << 16)] if self.given < len(start) \
                else bytes(max(0, min(size, 1 << 16, (1 << 20) - self.given)))
            self.given += len(piece)
            return piece

    stream, length = Zeros(), int.from_bytes(length_field, "little")
    with pytest.raises(VQCodecError, match=f"^the input: announces a .npy header of {length} bytes, more than the "
                                           "10000 np.load takes"):
        read_codes_npy(stream, codec)
    assert stream.given <= 12


def test_read_codes_npy_reads_a_header_that_comes_a_few_bytes_at_a_time(codec):
    """A raw stream (a pipe read unbuffered) may give fewer bytes than a read asks for: the header's length field and
    the header, each read with one read() since the header length check, were cut short, and the file refused as
    'not a NumPy .npy file', where numpy's reader had read on until it had them."""
    from vqcodec.tokens import read_codes_npy

    codes = np.arange(1 * 3 * 5).reshape(1, 3, 5) % codec.codebook_size
    saved = io.BytesIO()
    np.save(saved, codes)

    class Trickle(io.RawIOBase):
        """The file three bytes at most a read, as a pipe whose writer sends it in pieces."""
        def __init__(self, data: bytes):
            self.data = data

        def readable(self):
            return True

        def readinto(self, buffer):
            piece, self.data = self.data[:min(3, len(buffer))], self.data[min(3, len(buffer)):]
            buffer[:len(piece)] = piece
            return len(piece)

    assert np.array_equal(read_codes_npy(Trickle(saved.getvalue()), codec), codes)


def test_read_codes_npy_takes_what_read_codes_takes_and_refuses_the_rest_in_one_line(codec, tiny_model_path, tmp_path):
    """A memoryview was 'not a NumPy .npy file' where read_info and read_codes take one; a text stream, codes already
    loaded or None were 'not a NumPy .npy file' too (an int 'stdin: ...'), an empty path ': cannot read (No such file
    or directory)', and a model's name given for the codec an AttributeError (check_listed_codes took it silently
    where no codes.json lists the file)."""
    from vqcodec.errors import VQCodecError
    from vqcodec.tokens import check_listed_codes, read_codes_npy

    codes = np.arange(1 * 3 * 5).reshape(1, 3, 5) % codec.codebook_size
    path = tmp_path / "c.npy"
    np.save(path, codes)
    assert np.array_equal(read_codes_npy(memoryview(path.read_bytes()), codec), codes)
    with open(path) as text:
        for source, message in ((text, "a .npy file is read from a binary stream, not a text one (open the file with "
                                       "'rb')"),
                                (codes, "a .npy file is given as a path, bytes or a binary stream, not an ndarray "
                                        "(codec.codes_to_file takes codes in memory)"),
                                (None, "a .npy file is given as a path, bytes or a binary stream, not None"),
                                (0, "a .npy file is given as a path, bytes or a binary stream, not an int"),
                                ("", "the path of the .npy file is empty")):
            with pytest.raises(VQCodecError) as refused:
                read_codes_npy(source, codec)
            assert str(refused.value) == message
    for call in (lambda: read_codes_npy(path, str(tiny_model_path)), lambda: check_listed_codes("tiny", path)):
        with pytest.raises(VQCodecError, match=r"^codec is a vqcodec Codec \(Codec.load\), not a str$"):
            call()


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


def test_outputs_get_the_permissions_of_the_umask(encoded, cli, tiny_model_path, tmp_path, umask_027):
    """Not the owner-only 0600 that temporary files are created with."""
    assert cli("encode", encoded / "in.wav", tmp_path / "out.vq", "-m", tiny_model_path).returncode == 0
    assert cli("decode", tmp_path / "out.vq", tmp_path / "out.wav", "-m", tiny_model_path).returncode == 0
    model = make_tiny_model(tmp_path / "trained", "mine", seed=0)
    for path in (tmp_path / "out.vq", tmp_path / "out.wav", model, model.with_suffix(".json")):
        assert stat.S_IMODE(path.stat().st_mode) == umask_027, path.name
    # a file overwritten with --force keeps its own permissions
    os.chmod(tmp_path / "out.wav", 0o604)
    assert cli("decode", tmp_path / "out.vq", tmp_path / "out.wav", "-m", tiny_model_path, "--force").returncode == 0
    assert stat.S_IMODE((tmp_path / "out.wav").stat().st_mode) == 0o604


@pytest.mark.parametrize("name, kind", [("out.jpg", "an image"), ("out.PNG", "an image"), ("out.flac", "audio")])
def test_encode_refuses_an_output_named_as_media(encoded, cli, tiny_model_path, name, kind):
    """`encode in.wav out.flac` wrote a .vq file named out.flac, which nothing that reads FLAC opens."""
    before = listing(encoded)
    result = cli("encode", encoded / "in.wav", encoded / name, "-m", tiny_model_path)
    assert_one_line_error(result)
    assert result.stderr.decode() == (f"vqcodec: error: {encoded / name}: encode writes a .vq file, which a name ending "
                                      f"{Path(name).suffix} says is {kind}: name it .vq (decode writes "
                                      f"{'audio' if kind == 'audio' else 'image'} files)\n")
    assert listing(encoded) == before


@pytest.mark.parametrize("command, suffix, name, kind", [("pack", ".vq", "out.wav", "audio"),
                                                         ("codes", ".npy", "out.png", "an image")])
def test_pack_and_codes_refuse_an_output_named_as_media_as_encode_does(encoded, cli, tiny_model_path, tmp_path,
                                                                      command, suffix, name, kind):
    """`pack codes.npy out.wav` wrote a .vq file named out.wav, and `codes talk.vq out.png` a NumPy file."""
    codes = tmp_path / "codes.npy"
    assert cli("codes", encoded / "out.vq", codes, "-m", tiny_model_path).returncode == 0
    source = codes if command == "pack" else encoded / "out.vq"
    result = cli(command, source, tmp_path / name, "-m", tiny_model_path)
    assert_one_line_error(result)
    assert result.stderr.decode() == (f"vqcodec: error: {tmp_path / name}: {command} writes a {suffix} file, which a "
                                      f"name ending {Path(name).suffix} says is {kind}: name it {suffix} (decode "
                                      f"writes {'audio' if kind == 'audio' else 'image'} files)\n")
    assert listing(tmp_path) == {"codes.npy"}


@pytest.mark.parametrize("command, suffix, name, what, writer", [
    ("codes", ".npy", "out.vq", "a .vq file", "encode and pack write .vq files"),
    ("pack", ".vq", "out.npy", "a NumPy array", "codes writes .npy files")])
def test_pack_and_codes_refuse_an_output_named_as_the_others_output(encoded, cli, tiny_model_path, tmp_path,
                                                                   command, suffix, name, what, writer):
    """`codes talk.vq talk.vq --force` replaced the .vq file with a NumPy array of its codes."""
    source = tmp_path / ("codes.npy" if command == "pack" else "out.vq")
    if command == "pack":
        assert cli("codes", encoded / "out.vq", source, "-m", tiny_model_path).returncode == 0
    else:
        source.write_bytes((encoded / "out.vq").read_bytes())
    before = listing(tmp_path), source.read_bytes()
    result = cli(command, source, tmp_path / name, "-m", tiny_model_path, "--force")
    assert_one_line_error(result)
    assert result.stderr.decode() == (f"vqcodec: error: {tmp_path / name}: {command} writes a {suffix} file, which a "
                                      f"name ending {Path(name).suffix} says is {what}: name it {suffix} ({writer})\n")
    assert (listing(tmp_path), source.read_bytes()) == before


def test_a_dangling_link_as_output_is_refused_without_force_before_the_work(encoded, cli, tiny_model_path, tmp_path):
    """A symbolic link to nothing passed the check made before decoding (Path.exists follows links), and
    was refused only when the output was moved into place, as a file "written while this ran"."""
    link = tmp_path / "out.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    result = cli("decode", encoded / "out.vq", link, "-m", tiny_model_path)
    assert_one_line_error(result)
    assert result.stderr.decode() == f"vqcodec: error: {link} exists; pass --force to overwrite it\n"
    assert listing(tmp_path) == {"out.wav"} and link.is_symlink()


def test_stdout_on_the_input_file_is_refused_as_an_output_named_as_the_input_is(encoded, tiny_model_path, tmp_path):
    """`encode - - < x.wav 1<> x.wav` wrote the .vq file over the start of its own input (exit status 0, a file of
    neither kind left), and `decode x.vq - >> x.vq` after its end: stdout on the input file is refused as an output
    that names it is."""
    source, audio = tmp_path / "talk.vq", tmp_path / "talk.wav"
    source.write_bytes((encoded / "out.vq").read_bytes())
    audio.write_bytes((encoded / "in.wav").read_bytes())
    for args, stdin, stdout_mode in ((["encode", "-", "-"], audio, "r+b"),
                                     (["decode", "-", "-", "--format", "wav"], source, "r+b"),
                                     (["decode", str(source), "-", "--format", "wav"], None, "ab")):
        target = stdin or source
        before = target.read_bytes()
        with open(stdin or os.devnull, "rb") as given, open(target, stdout_mode) as taken:
            result = run_cli_on(*args, "-m", tiny_model_path, stdin=given, stdout=taken, timeout=300)
        named = "" if stdin else f" {source}"
        assert result.returncode == 1 and result.stderr.decode() == (
            f"vqcodec: error: stdout is the input file{named}: redirect it to another file\n"), args
        assert target.read_bytes() == before, args


def test_info_reads_and_writes_one_socket_given_as_stdin_and_stdout(encoded):
    """socat's EXEC (inetd, systemd's Accept=yes) gives one socket as both stdin and stdout: `info -` refused it,
    'stdout is the input file', as a file it would write over."""
    import socket
    import subprocess

    ours, theirs = socket.socketpair()
    with ours, theirs:
        process = subprocess.Popen([sys.executable, "-m", "vqcodec", "info", "-"], stdin=theirs, stdout=theirs,
                                   stderr=subprocess.PIPE)
        theirs.close()
        try:
            ours.sendall((encoded / "out.vq").read_bytes())
            ours.shutdown(socket.SHUT_WR)
            told = b"".join(iter(lambda: ours.recv(1 << 16), b""))
        except ConnectionResetError:  # it exited refusing them, before reading all
            told = b""
        error = process.stderr.read().decode()
        assert process.wait(timeout=300) == 0 and error == "" and b"audio" in told, error


def test_eval_refuses_stdout_on_its_input_file(encoded, tiny_model_path, tmp_path):
    """`eval MODEL talk.wav >> talk.wav` appended its table to the recording it measured, status 0."""
    import subprocess

    audio = tmp_path / "talk.wav"
    audio.write_bytes((encoded / "in.wav").read_bytes())
    with open(audio, "ab") as taken:
        result = run_cli_on("eval", tiny_model_path, audio, "-q", "1", stdin=subprocess.DEVNULL, stdout=taken,
                            timeout=300)
    assert result.returncode == 1 and result.stderr.decode() == (
        f"vqcodec: error: stdout is the input file {audio}: redirect it to another file\n")
    assert audio.read_bytes() == (encoded / "in.wav").read_bytes()


def test_eval_of_a_folder_refuses_stdout_on_a_media_file_in_it(encoded, tiny_model_path, tmp_path):
    """`eval MODEL dir/ >> dir/talk.wav` appended its table to a recording of the folder it measured, status 0; a
    text file there (`> dir/results.txt`) still takes the table."""
    import subprocess

    folder = tmp_path / "dir"
    folder.mkdir()
    for name in ("talk.wav", "other.wav"):
        (folder / name).write_bytes((encoded / "in.wav").read_bytes())
    for name, mode, status in (("talk.wav", "ab", 1), ("results.txt", "wb", 0)):
        target = folder / name
        before = target.read_bytes() if target.exists() else b""
        with open(target, mode) as taken:
            result = run_cli_on("eval", tiny_model_path, folder, "-q", "1", stdin=subprocess.DEVNULL, stdout=taken,
                                timeout=300)
        assert result.returncode == status, result.stderr
        if status:
            assert result.stderr.decode() == (f"vqcodec: error: stdout is {target}, a file of the folder {folder}: "
                                              "redirect it to another file\n")
            assert target.read_bytes() == before
        else:
            assert b"on 2 files of" in target.read_bytes()


@contextlib.contextmanager
def stdout_into(path: Path):
    """This process's descriptor 1 open on `path` for appending, as `>> PATH` leaves it, in the block."""
    saved, taken = os.dup(1), os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(taken, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(taken)


def test_stdout_on_an_input_is_refused_without_proc(encoded, tiny_model_path, tmp_path, monkeypatch, capsys):
    """stdout's file was found by reading the link /proc/self/fd/1: where that cannot be read (no /proc mounted, a
    system without it), `eval MODEL dir/ >> dir/talk.wav` appended its table to a recording it measured, status 0.
    It is told by os.fstat(1)'s device and inode, which the inputs' are compared with; only the check of stdout on
    a model's file that no command reads, which needs stdout's name, is not made without /proc."""
    from vqcodec.cli import run
    from vqcodec.folders import files_under
    from vqcodec.streams import descriptor_path

    folder = tmp_path / "dir"
    folder.mkdir()
    audio, source = folder / "talk.wav", tmp_path / "talk.vq"
    audio.write_bytes((encoded / "in.wav").read_bytes())
    source.write_bytes((encoded / "out.vq").read_bytes())

    def without_proc(path, *args, **options):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)

    with stdout_into(audio):
        assert descriptor_path(1) == audio
        monkeypatch.setattr(os, "readlink", without_proc)
        assert descriptor_path(1) is None and files_under(folder) == []  # the run's log is left out
        code = run(["eval", str(tiny_model_path), str(folder), "-q", "1"])
    assert (code, capsys.readouterr().err) == (1, f"vqcodec: error: stdout is {audio}, a file of the folder {folder}: "
                                                  "redirect it to another file\n")
    with stdout_into(source):
        code = run(["info", str(source)])
    assert (code, capsys.readouterr().err) == (1, f"vqcodec: error: stdout is the input file {source}: redirect it to "
                                                  "another file\n")
    assert audio.read_bytes() == (encoded / "in.wav").read_bytes()
    assert source.read_bytes() == (encoded / "out.vq").read_bytes()


def test_stdout_on_a_models_file_is_refused(encoded, tiny_model_path, tmp_path):
    """`encode x.wav - -m m.safetensors >> m.json` appended the .vq file to the model's JSON, status 0, and the model
    no longer loaded ('cannot read model m.safetensors: 'utf-8' codec can't decode byte'); `info x.vq >>
    m.safetensors` alike: stdout on NAME.json or NAME.safetensors, the other beside it, is refused."""
    import subprocess

    shutil.copy(tiny_model_path, tmp_path / "m.safetensors")
    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "m.json")
    for args, name in ((["encode", str(encoded / "in.wav"), "-", "-q", "1", "-m", str(tmp_path / "m.safetensors")],
                        "m.json"), (["info", str(encoded / "out.vq")], "m.safetensors")):
        target = tmp_path / name
        before = target.read_bytes()
        with open(target, "ab") as taken:
            result = run_cli_on(*args, stdin=subprocess.DEVNULL, stdout=taken, timeout=300)
        assert result.returncode == 1 and result.stderr.decode() == (
            f"vqcodec: error: stdout is {target}, a file of a model: redirect it to another file\n"), args
        assert target.read_bytes() == before, args


def test_info_refuses_stdout_on_its_input_file(encoded, tmp_path):
    """`info - < x.vq >> x.vq` (and `info x.vq >> x.vq`) appended its text to the .vq file it read, status 0: the
    check of an output on the input covered the commands writing files only."""
    source = tmp_path / "talk.vq"
    source.write_bytes((encoded / "out.vq").read_bytes())
    for args, stdin in ((["info", "-"], source), (["info", str(source), "--json"], None)):
        with open(stdin or os.devnull, "rb") as given, open(source, "ab") as taken:
            result = run_cli_on(*args, stdin=given, stdout=taken, timeout=300)
        named = "" if stdin else f" {source}"
        assert result.returncode == 1 and result.stderr.decode() == (
            f"vqcodec: error: stdout is the input file{named}: redirect it to another file\n"), args
        assert source.read_bytes() == (encoded / "out.vq").read_bytes(), args


def test_models_refuses_stdout_on_a_file_of_the_model_search(tiny_model_path, tmp_path):
    """`models >> DIR/mine.json` appended its listing to the model's JSON (status 0, the model unusable from then on),
    and `models --json > DIR/list.json` made an empty .json file in the search path, which it then warned of as a
    broken model: stdout on a .json or .safetensors file of a search folder is refused, as on an input file."""
    import subprocess

    shutil.copy(tiny_model_path, tmp_path / "mine.safetensors")
    shutil.copy(tiny_model_path.with_suffix(".json"), tmp_path / "mine.json")
    env = {"VQCODEC_MODEL_PATH": str(tmp_path)}
    for name, mode in (("mine.json", "ab"), ("mine.safetensors", "ab"), ("list.json", "wb")):
        target = tmp_path / name
        before = target.read_bytes() if target.exists() else b""
        with open(target, mode) as taken:
            result = run_cli_on("models", "--json", stdin=subprocess.DEVNULL, stdout=taken, env=env, timeout=300)
        why = "the input file " + str(target) if name == "list.json" else f"{target}, a file of a model"
        assert result.returncode == 1 and result.stderr.decode() == (
            f"vqcodec: error: stdout is {why}: redirect it to another file\n"), name
        assert target.read_bytes() == before, name
        if name == "list.json":
            target.unlink()


def test_an_output_that_is_the_input_file_is_refused_even_with_force(encoded, cli, tiny_model_path, tmp_path):
    """`decode x.vq x.vq --force --format wav` replaced the .vq file with its own decoding, and through a
    link or a second hard link the same; encode, codes and pack alike."""
    source = tmp_path / "talk.vq"
    source.write_bytes((encoded / "out.vq").read_bytes())
    (tmp_path / "link.vq").symlink_to(source)
    os.link(source, tmp_path / "hard.vq")
    for output in (source, tmp_path / "link.vq", tmp_path / "hard.vq", tmp_path / "." / "talk.vq"):
        result = cli("decode", source, output, "-m", tiny_model_path, "--format", "wav", "--force")
        assert_one_line_error(result)
        assert result.stderr.decode() == f"vqcodec: error: {output} is the input file: give the output another name\n"
    assert source.read_bytes() == (encoded / "out.vq").read_bytes()
    audio = tmp_path / "recording"  # no extension, so that no name rule refuses it first
    audio.write_bytes((encoded / "in.wav").read_bytes())
    for command in ("encode", "codes"):
        result = cli(command, audio, audio, "-m", tiny_model_path, "--kind", "audio", "--force")
        assert_one_line_error(result)
        assert result.stderr.decode() == f"vqcodec: error: {audio} is the input file: give the output another name\n"
    codes = tmp_path / "codes"
    assert cli("codes", audio, codes, "-m", tiny_model_path, "--kind", "audio").returncode == 0
    result = cli("pack", codes, codes, "-m", tiny_model_path, "--force")
    assert_one_line_error(result)
    assert audio.read_bytes() == (encoded / "in.wav").read_bytes() and codes.read_bytes()[:6] == b"\x93NUMPY"
    assert cli("decode", source, tmp_path / "other.wav", "-m", tiny_model_path).returncode == 0  # another name is fine


def test_refuses_to_overwrite_without_force(encoded, cli, tiny_model_path):
    target = encoded / "existing.vq"
    target.write_bytes(b"precious")
    before = listing(encoded)
    refusal = f"vqcodec: error: {target} exists; pass --force to overwrite it\n"  # before the work, not after it
    result = cli("encode", encoded / "in.wav", target, "-m", tiny_model_path)
    assert_one_line_error(result)
    assert result.stderr.decode() == refusal
    assert target.read_bytes() == b"precious" and listing(encoded) == before
    result = cli("decode", encoded / "out.vq", target, "-m", tiny_model_path, "--format", "wav")
    assert_one_line_error(result)
    assert result.stderr.decode() == refusal
    assert target.read_bytes() == b"precious" and listing(encoded) == before
    result = cli("encode", encoded / "in.wav", target, "-m", tiny_model_path, "-q", "3", "--force")
    assert result.returncode == 0, result.stderr.decode()
    assert target.read_bytes() == (encoded / "out.vq").read_bytes()
    assert listing(encoded) == before
    target.unlink()


@pytest.mark.parametrize("force", [False, True])
def test_an_output_written_by_another_run_meanwhile_is_kept_without_force(tmp_path, force):
    """Two runs writing one new name: the check before the work passes for both, and the rename at the
    end replaced whatever the other had written, without --force."""
    from vqcodec.cli import _write_output
    from vqcodec.errors import VQCodecError
    from vqcodec.wording import command_line_wording

    target = tmp_path / "out.vq"

    def write(stream):
        target.write_bytes(b"the other run's file")  # finished while this one was still writing
        stream.write(b"this run's file")

    if force:
        _write_output(str(target), write, force=True)
        assert target.read_bytes() == b"this run's file"
    else:
        with command_line_wording(), pytest.raises(VQCodecError, match=r"exists \(written while this ran\); pass --force"):
            _write_output(str(target), write, force=False)
        assert target.read_bytes() == b"the other run's file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.vq"]  # no temporary file left


# ---------------------------------------------------------------- many independent runs, run two at a time

def _case_setup(name: str, folder: Path, ctx) -> tuple[list, dict]:
    """Prepare files for one failing invocation in `folder`; returns its arguments and extra environment."""
    model = ["-m", str(ctx.model)]
    wav = lambda: write_wav(folder / "in.wav", ctx.signal, channels=1, rate=16000, samples=800)  # noqa: E731
    vq = ctx.valid_vq

    def vq_file(data: bytes) -> Path:
        (folder / "in.vq").write_bytes(data)
        return folder / "in.vq"

    out_vq, out_wav = folder / "out.vq", folder / "out.wav"
    if name == "encode-missing-file":
        return ["encode", folder / "nosuch.wav", out_vq, *model], {}
    if name == "encode-directory":
        (folder / "adir.wav").mkdir()
        return ["encode", folder / "adir.wav", out_vq, *model], {}
    if name == "encode-empty-file":
        (folder / "empty.wav").write_bytes(b"")
        return ["encode", folder / "empty.wav", out_vq, *model], {}
    if name == "encode-text-file":
        (folder / "x.wav").write_text("this is not audio\n" * 20)
        return ["encode", folder / "x.wav", out_vq, *model], {}
    if name == "encode-nan-wav":
        audio = np.full((800, 1), np.nan, dtype=np.float32)
        soundfile.write(folder / "nan.wav", audio, 16000, subtype="FLOAT")
        return ["encode", folder / "nan.wav", out_vq, *model], {}
    if name == "encode-inf-wav-late":
        audio = np.zeros((200_000, 2), dtype=np.float32)
        audio[150_000, 1] = np.inf
        soundfile.write(folder / "inf.wav", audio, 44100, subtype="FLOAT")
        return ["encode", folder / "inf.wav", out_vq, *model], {}
    if name == "encode-unknown-model":
        return ["encode", wav(), out_vq, "-m", "nosuch"], {}
    if name == "encode-quality-0":
        return ["encode", wav(), out_vq, *model, "-q", "0"], {}
    if name == "encode-threads-0":
        return ["encode", wav(), out_vq, *model, "--threads", "0"], {}
    if name == "encode-quality-99":
        return ["encode", wav(), out_vq, *model, "-q", "99"], {}
    if name == "encode-quality-not-a-number":
        return ["encode", wav(), out_vq, *model, "-q", "six"], {}
    if name == "encode-negative-rate-weight":
        return ["encode", wav(), out_vq, *model, "--rate-weight", "-1"], {}
    if name == "encode-huge-depth-weight":
        return ["encode", wav(), out_vq, *model, "--depth-weight", "1e9"], {}
    if name == "encode-output-dir-missing":
        return ["encode", wav(), "/nonexistent/dir/out.vq", *model], {}
    if name == "encode-output-is-a-directory":
        (folder / "outdir").mkdir()
        return ["encode", wav(), folder / "outdir", *model, "--force"], {}
    if name == "encode-output-is-a-directory-no-force":
        (folder / "outdir").mkdir()
        return ["encode", wav(), folder / "outdir", *model], {}
    if name == "encode-output-ends-in-slash":  # was written as a file named vqs
        return ["encode", wav(), f"{folder / 'vqs'}/", *model], {}
    if name == "decode-output-ends-in-slash-over-a-file":  # replaced the file out.wav
        out_wav.write_bytes(b"kept")
        return ["decode", vq_file(vq), f"{out_wav}/", *model, "--force"], {}
    if name == "decode-truncated":
        return ["decode", vq_file(vq[:-1]), out_wav, *model], {}
    if name == "decode-truncated-header":
        return ["decode", vq_file(vq[:30]), out_wav, *model], {}
    if name == "decode-bit-flipped":
        data = bytearray(vq)
        data[len(data) - 3] ^= 0x10
        return ["decode", vq_file(bytes(data)), out_wav, *model], {}
    if name == "decode-unknown-version":
        return ["decode", vq_file(ctx.craft.with_header(vq, version=9)), out_wav, *model], {}
    if name == "decode-random-bytes":
        return ["decode", vq_file(random.Random(5).randbytes(300)), out_wav, *model], {}
    if name == "decode-empty-file":
        return ["decode", vq_file(b""), out_wav, *model], {}
    if name == "decode-10e15-samples":
        return ["decode", vq_file(ctx.craft.with_header(vq, length=10**15)), out_wav, *model], {}
    if name == "decode-wrong-model":
        return ["decode", vq_file(vq), out_wav, "-m", str(ctx.other_model)], {}
    if name == "decode-no-installed-model":
        return ["decode", vq_file(vq), out_wav], {"VQCODEC_MODEL_PATH": str(ctx.other_model.parent)}
    if name == "decode-retired-model":   # a file from an earlier release's speech16k
        return ["decode", vq_file(ctx.craft.with_header(vq, model_id=bytes.fromhex(RETIRED_SPEECH_ID))), out_wav], {}
    if name == "decode-unknown-output-format":
        return ["decode", vq_file(vq), folder / "out.xyz", *model], {}
    if name == "decode-output-dir-missing":
        return ["decode", vq_file(vq), "/nonexistent/dir/out.wav", *model], {}
    if name == "info-random-bytes":
        return ["info", vq_file(random.Random(6).randbytes(100))], {}
    if name == "info-missing-file":
        return ["info", folder / "nosuch.vq"], {}
    if name == "codes-truncated":
        return ["codes", vq_file(vq[:-1]), folder / "codes.npy", *model], {}
    if name == "codes-wrong-model":
        return ["codes", vq_file(vq), folder / "codes.npy", "-m", str(ctx.other_model)], {}
    if name == "train-no-budget":
        wav()
        return ["train", folder, "--out", folder / "run"], {}
    raise KeyError(name)


RETIRED_SPEECH_ID = "64bef28acfd5aa33"  # in models/retired.json
BAD_CASES = {  # name: what its error says
    "encode-missing-file": "nosuch.wav: no such file or directory",
    "encode-directory": "adir.wav: no audio files found",
    "encode-empty-file": "empty.wav: file is empty",
    "encode-text-file": "cannot read audio",
    "encode-nan-wav": "NaN or infinite",
    "encode-inf-wav-late": "NaN or infinite",
    "encode-unknown-model": "unknown model 'nosuch'",
    "encode-quality-0": "-q must be a whole number 1..4",  # named as the option it is (it said 'quality')
    "encode-threads-0": "'--threads': 0 is not in the range",
    "encode-quality-99": "-q must be a whole number 1..4",
    "encode-quality-not-a-number": "'six' is not a valid integer",
    "encode-negative-rate-weight": "'--rate-weight': -1.0 is not in the range",
    "encode-huge-depth-weight": "'--depth-weight': 1000000000.0 is not in the range",
    "encode-output-dir-missing": "/nonexistent/dir: no such directory",
    "encode-output-is-a-directory": "outdir: is a directory",
    "encode-output-is-a-directory-no-force": "outdir: is a directory",
    "encode-output-ends-in-slash": "vqs/: no such directory (a single file's output is a file name)",
    "decode-output-ends-in-slash-over-a-file": "out.wav/: not a directory",
    "decode-truncated": "in.vq: truncated .vq file (chunk 0 cut short)",
    "decode-truncated-header": "in.vq: truncated .vq file (incomplete header)",
    "decode-bit-flipped": "in.vq: corrupted .vq file (chunk 0 CRC mismatch)",
    "decode-unknown-version": "in.vq: unsupported .vq format version 9",
    "decode-random-bytes": "bad magic",
    "decode-empty-file": "in.vq: file is empty",
    "decode-10e15-samples": "audio length of 1000000000000000 samples",
    "decode-wrong-model": "pass the matching --model",
    "decode-no-installed-model": "no installed model has id",
    "decode-retired-model": "no installed model has id",
    "decode-unknown-output-format": "unknown audio format XYZ",
    "decode-output-dir-missing": "/nonexistent/dir: no such directory",
    "info-random-bytes": "bad magic",
    "info-missing-file": "nosuch.vq: no such file",
    "codes-truncated": "in.vq: truncated .vq file (chunk 0 cut short)",
    "codes-wrong-model": "pass the matching --model",
    "train-no-budget": "give a budget",
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, cli, signal, small_vq, craft, tiny_model_path, other_model_path):
    """Run every independent invocation (failures and --help) up front, two at a time; results by name."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(model=tiny_model_path, other_model=other_model_path, signal=signal, craft=craft,
                          valid_vq=small_vq)
    root = tmp_path_factory.mktemp("cli_batch")
    jobs = {}
    for name in BAD_CASES:
        folder = root / name
        folder.mkdir()
        args, env = _case_setup(name, folder, ctx)
        jobs[name] = (args, env, folder, listing(folder))
    for command in [None] + COMMANDS:
        jobs[f"help-{command}"] = ([command, "--help"] if command else ["--help"], {}, None, None)

    def run(name):
        args, env, folder, before = jobs[name]
        result = cli(*args, env=env)
        after = listing(folder) if folder else None
        return name, SimpleNamespace(result=result, before=before, after=after, folder=folder)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, jobs))


def test_retired_model_is_named_with_where_to_find_it(batch):
    message = batch["decode-retired-model"].result.stderr.decode()
    assert f"no installed model has id {RETIRED_SPEECH_ID}" in message
    assert "speech16k as shipped in vqcodec commit 6c862ba" in message
    assert "git show 6c862ba:models/speech16k.safetensors" in message
    assert "(it is" not in batch["decode-no-installed-model"].result.stderr.decode()  # not for unknown ids


def test_an_output_that_is_a_directory_is_named_so_with_or_without_force(batch):
    for name in ("encode-output-is-a-directory", "encode-output-is-a-directory-no-force"):
        assert batch[name].result.stderr.decode().rstrip().endswith("outdir: is a directory")


def test_an_output_ending_in_a_slash_is_no_file(batch):
    """`encode talk.wav vqs/` wrote a file named vqs, and `decode x.vq out.wav/ --force` replaced out.wav."""
    assert batch["encode-output-ends-in-slash"].after == {"in.wav"}
    assert (batch["decode-output-ends-in-slash-over-a-file"].folder / "out.wav").read_bytes() == b"kept"


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_fails_cleanly(batch, name):
    outcome = batch[name]
    assert_one_line_error(outcome.result)
    assert BAD_CASES[name] in outcome.result.stderr.decode()
    assert outcome.after == outcome.before, f"files left behind: {sorted(outcome.after - outcome.before)}"
    assert not Path("/nonexistent").exists()


def test_empty_input_is_called_empty_by_every_command(batch):
    for name in ("encode-empty-file", "decode-empty-file"):
        assert "file is empty" in batch[name].result.stderr.decode(), name


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help(batch, command):
    result = batch[f"help-{command}"].result
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert "Example" in text and "Usage:" in text
    if command:
        assert f"vqcodec {command}" in text


def test_runs_forked_from_the_command_line_server_end_as_plain_processes_do(tmp_path, signal, tiny_model_path):
    """`run_cli` forks most runs from a server that has imported torch (tests/cli_server.py); their
    status, output and files must be those of `python -m vqcodec` started afresh."""
    source = write_wav(tmp_path / "in.wav", signal)
    for args, stdin in ((["encode", source, "-", "-m", tiny_model_path], None),
                        (["decode", "-", "-", "-m", tiny_model_path, "--format", "wav"], "encoded"),
                        (["decode", "-", tmp_path / "out.wav", "-m", tiny_model_path], b"not a vq file"),
                        (["encode", tmp_path / "nosuch.wav", "-", "-m", tiny_model_path], None)):
        stdin = forked.stdout if stdin == "encoded" else stdin
        forked, plain = run_cli(*args, input=stdin), run_python("-m", "vqcodec", *args, input=stdin)
        assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout, plain.stderr), args
    assert forked.returncode == 1 and not (tmp_path / "out.wav").exists()
    for args in (["encode", source, "-", "-m", tiny_model_path], ["encode", tmp_path / "nosuch.wav", "-", "-m", tiny_model_path]):
        ended = []  # start_cli: its streams the caller's descriptors, a file and a pipe
        for env in (None, {"A_FRESH_INTERPRETER": "1"}):  # an environment the server was not started in: a plain subprocess
            with open(tmp_path / "stdout", "w+b") as out:
                reader, writer = os.pipe()
                started = start_cli(*args, stdout=out.fileno(), stderr=writer, env=env)
                os.close(writer)
                with open(reader, "rb") as err:
                    errors = err.read()
                code = started.wait(timeout=300)
                out.seek(0)
                ended.append((isinstance(started, subprocess.Popen), code, out.read(), errors))
        assert [plain for plain, *_ in ended] == [False, True]
        assert ended[0][1:] == ended[1][1:], args


def test_a_forked_run_that_cannot_take_its_working_folder_fails_in_one_line_and_the_server_serves_on(tmp_path):
    """The setup of a forked run (its streams, working folder, umask, environment) was outside the run's own error
    handling: a working folder that does not exist sent its FileNotFoundError up through the server's code, out of
    the forked child with the server's traceback as the run's stderr (after a second of tearing the server's modules
    down). The run fails with status 1 and the error in one line, and the server serves the next run."""
    server = _cli_server()
    if server is None:
        pytest.skip("the command-line server could not start here")
    missing = tmp_path / "missing"
    runs = server.runs
    failed = run_cli("--version", cwd=missing, timeout=60)
    assert server.runs == runs + 1  # forked, not a plain subprocess (whose Popen raises for such a cwd)
    assert (failed.returncode, failed.stdout, failed.stderr.decode()) == (
        1, b"", f"cli_server: the run could not start: FileNotFoundError: [Errno 2] No such file or directory: "
                f"{str(missing)!r}\n")
    assert run_cli("--version", cwd=tmp_path, timeout=60).stdout.startswith(b"vqcodec") and server.runs == runs + 2


def test_a_plain_run_that_cannot_take_its_working_folder_fails_in_one_line_as_a_forked_one_does(tmp_path):
    """run_cli and start_cli fall back to a plain subprocess in an environment the server was not started in,
    and there a working folder that does not exist was subprocess's FileNotFoundError, raised into the test,
    where a forked run fails with status 1 and one line (the test above)."""
    missing = tmp_path / "missing"
    line = f"cli_server: the run could not start: FileNotFoundError: [Errno 2] No such file or directory: {str(missing)!r}\n"
    fresh = {"A_FRESH_INTERPRETER": "1"}  # an environment the server was not started in: a plain subprocess
    failed = run_cli("--version", cwd=missing, env=fresh, timeout=60)
    assert (failed.returncode, failed.stdout, failed.stderr.decode()) == (1, b"", line)
    reader, writer = os.pipe()
    started = start_cli("--version", stdout=subprocess.DEVNULL, stderr=writer, cwd=missing, env=fresh)
    os.close(writer)
    with open(reader, "rb") as err:
        assert err.read().decode() == line
    assert isinstance(started, subprocess.Popen) and started.wait(timeout=60) == 1


IN_A_REMOVED_FOLDER = """
import json, os, sys
os.rmdir(os.getcwd())
from vqcodec.cli import run
print(json.dumps([run(args) for args in json.loads(sys.argv[1])]))
"""


def test_commands_in_a_removed_working_folder_work_on_absolute_paths_and_fail_in_one_line_on_relative_ones(tmp_path):
    """With the folder a shell is in removed (`rmdir`), every command that loads torch ended with MKL's 'Intel oneMKL
    FATAL ERROR: Cannot load .../libtorch_cpu.so' and status 2, absolute paths or not; and a relative path that
    is resolved gave 'vqcodec: error: No such file or directory' naming nothing (os.getcwd's error). A fresh
    process: the server's runs have torch loaded already."""
    gone = tmp_path / "gone"
    gone.mkdir()
    model, source, encoded = GOLDEN / "golden_audio.safetensors", GOLDEN.parent / "speech.flac", tmp_path / "out.vq"
    runs = [["encode", str(source), str(encoded), "-m", str(model)], ["info", str(encoded)],
            ["fit-prior", str(model), str(GOLDEN.parent), "--out", "copy"]]
    result = run_python("-c", IN_A_REMOVED_FOLDER, json.dumps(runs), cwd=gone, timeout=300, text=True)
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[-1]) == [0, 0, 1], result.stderr
    assert "audio:     1 channel, 16000 Hz" in result.stdout and encoded.exists()  # info's
    assert result.stderr == "vqcodec: error: the current folder has been removed: cd to a folder that exists\n"


STREAMS_BUFFERING = """
import sys
print(sys.stdout.write_through, sys.stdout.line_buffering, sys.stderr.write_through, sys.stderr.line_buffering)
"""


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_run_forked_from_the_server_buffers_stdout_and_stderr_as_pythonunbuffered_says(unbuffered):
    """A fresh interpreter writes its stdout and stderr through at once under PYTHONUNBUFFERED (set on some
    machines) and buffers them otherwise; the server's runs buffered them whatever it said, so a run that had it
    cleared (a full stdout's error, met at the flush at exit) went to a fresh interpreter."""
    from cli_server import standard_output

    fresh = run_python("-c", STREAMS_BUFFERING, env={"PYTHONUNBUFFERED": unbuffered}, text=True)
    stdout, stderr = (standard_output(fd, like, bool(unbuffered)) for fd, like in ((1, sys.stdout), (2, sys.stderr)))
    forked = [stdout.write_through, stdout.line_buffering, stderr.write_through, stderr.line_buffering]
    assert fresh.stdout.split() == [str(value) for value in forked]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_forked_run_whose_stdout_or_stderr_cannot_be_written_at_its_end_ends_with_120_as_python_does(monkeypatch,
                                                                                                       stream):
    """The server's end of a run caught a closed pipe alone at the last flush of stdout: a full disk's error went
    on up through the forked child into the server's loop, which it then ran; stderr's last flush (a progress
    line, which ends in no newline, still in its buffer) was not caught at all."""
    import cli_server

    quiet = "stderr" if stream == "stdout" else "stdout"
    with open("/dev/full", "wb") as full:
        fresh = subprocess.run([sys.executable, "-c", f"import sys; sys.{stream}.write('x')"],
                               **{stream: full, quiet: subprocess.DEVNULL},
                               env={**os.environ, "PYTHONUNBUFFERED": ""})  # buffered: written at the end
    monkeypatch.setattr(cli_server.atexit, "_run_exitfuncs", lambda: None)  # this process's own, pytest's
    written = open("/dev/full", "w")
    monkeypatch.setattr(sys, stream, written)
    try:
        assert cli_server.exit_status(lambda: written.write("x")) == fresh.returncode == 120
    finally:
        try:
            written.close()
        except OSError:
            pass


def test_a_run_after_torch_set_its_cache_folder_in_the_test_process_is_forked_from_the_server(monkeypatch):
    """torch._dynamo, imported by the first optimiser of a test that trains, sets TORCHINDUCTOR_CACHE_DIR in
    the test process: every run_cli after it, whatever the test, went to a fresh interpreter."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    server = _cli_server()
    if server is None:
        pytest.skip("the command-line server could not start here")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # unset, where it was set before the server started
    if "TORCHINDUCTOR_CACHE_DIR" not in server.environment:
        cache_dir()  # sets it, as importing torch._dynamo does
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") != server.environment.get("TORCHINDUCTOR_CACHE_DIR")
    runs = server.runs
    assert run_cli("info", "--help").returncode == 0
    assert server.runs == runs + 1


def test_every_command_and_option_has_help():
    """--device (six commands) and train's --lr showed no help at all in --help, and fit-prior was
    missing from COMMANDS, whose --help test_help checks."""
    import click

    from vqcodec.cli import cli as group

    assert sorted(COMMANDS) == sorted(group.commands)
    context = click.Context(group)
    missing = [f"{name} {'/'.join(param.opts)}" for name, command in sorted(group.commands.items())
               for param in command.get_params(context)
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    missing += ["/".join(p.opts) for p in group.get_params(context) if isinstance(p, click.Option) and not p.help]
    assert not missing, f"options without help: {missing}"
    assert all(command.help and command.help.strip() for command in group.commands.values())


def test_every_train_example_has_a_time_budget(cli):
    """A training run needs a budget; one example in `train --help` had none, and copied as it was it
    stopped with "give a budget"."""
    text = cli("train", "--help", text=True).stdout
    examples = [line for line in text.splitlines() if "vqcodec train " in line and not line.startswith("Usage:")]
    assert len(examples) >= 5 and all("--max-minutes" in line for line in examples), examples


def test_train_help_says_what_it_does_with_which_data_and_where_it_writes(cli):
    """`train --help` said only "Train a codec on a folder of audio or images (read recursively)":
    not what is trained, which files are taken or held out, nor what lands in --out."""
    text = " ".join(cli("train", "--help", text=True).stdout.split())
    for words in ("encoder, codebooks and decoder", "entropy-coding prior", "files of one kind",
                  "Every 20th file is held out", "--out folder", "NAME.safetensors and NAME.json",
                  "checkpoint.safetensors", "train_log.jsonl", "--max-minutes, --max-steps, or both"):
        assert words in text, words


def test_bare_vqcodec_shows_its_help(cli):
    """`vqcodec` alone gave click's usage error, the whole help squeezed onto one "error:" line with
    status 2; it now prints the help that --help prints, with status 0."""
    result = cli()
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    assert result.stdout == cli("--help").stdout and b"Commands:" in result.stdout


def test_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout.decode()


def test_a_closed_stderr_stops_no_command(encoded, tiny_model_path, tmp_path):
    """`vqcodec decode ... 2>&-`: with stderr closed, sys.stderr is None, and every command stopped at its
    first look at it with status 1 and nothing said (a training run lost all it trained); what a
    command says there now goes nowhere."""
    import subprocess

    from conftest import REPO_ROOT, _base_environment

    def run_without_stderr(*args):
        return subprocess.run([sys.executable, "-m", "vqcodec", *map(str, args)], stdout=subprocess.PIPE,
                              preexec_fn=lambda: os.close(2), cwd=REPO_ROOT, env=_base_environment(), timeout=300)

    out = tmp_path / "out.wav"
    result = run_without_stderr("decode", encoded / "out.vq", out, "-m", tiny_model_path)
    assert result.returncode == 0 and result.stdout == b"" and soundfile.info(out).frames > 0
    result = run_without_stderr("decode", tmp_path / "missing.vq", tmp_path / "missing.wav", "-m", tiny_model_path)
    assert result.returncode == 1 and result.stdout == b"" and not (tmp_path / "missing.wav").exists()


def models_in_one_folder(folder: Path, *models: Path) -> Path:
    """`folder`, made, holding copies of the files of `models` (NAME.safetensors paths)."""
    import shutil

    folder.mkdir()
    for path in models:
        for suffix in (".safetensors", ".json"):
            shutil.copy(path.with_suffix(suffix), folder / path.with_suffix(suffix).name)
    return folder


def test_a_model_folder_of_many_models_names_a_few_and_counts_the_others(tmp_path):
    """-m FOLDER of 500 models listed every one of their names in "found 500 (...)", one line of thousands of
    characters: it names the first three and counts the others, as the list of the ids that wrote a folder's files."""
    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    folder = tmp_path / "runs"
    folder.mkdir()
    for number in range(500):  # found by their names alone: nothing in them is read
        for suffix in (".safetensors", ".json"):
            (folder / f"run{number:03d}{suffix}").write_bytes(b"")
    with pytest.raises(VQCodecError) as refused:
        find_model(str(folder))
    assert str(refused.value) == (f"{folder}: expected one model (NAME.safetensors + NAME.json) in the folder, found "
                                  "500 (run000, run001, run002 and 497 more): give one of them by its path, such as "
                                  f"{folder / 'run000.safetensors'}")


def test_an_unknown_models_error_names_ten_installed_models_and_counts_the_others(tiny_model_path, tmp_path,
                                                                                   monkeypatch):
    """An unknown model's name listed every installed model, however many $VQCODEC_MODEL_PATH's folders hold (a
    folder of training runs): it names the first ten, enough to find a mistyped name among the usual few."""
    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    for number in range(12):
        for suffix in (".safetensors", ".json"):
            shutil.copy(tiny_model_path.with_suffix(suffix), tmp_path / f"run{number:02d}{suffix}")
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tmp_path))
    with pytest.raises(VQCodecError) as refused:
        find_model("nosuch")
    names = ", ".join(f"run{number:02d}" for number in range(10))
    assert str(refused.value) == f"unknown model 'nosuch' (installed: {names} and 4 more)"  # and the 2 shipped


def test_a_model_folder_of_several_models_names_the_one_that_wrote_the_file(tiny_model_path, other_model_path,
                                                                            other_codec, signal, tmp_path):
    """-m FOLDER where the folder holds models of different ids (a run's model beside a fine-tune of it
    written with another --name) said only "expected one model in the folder": now the error lists them,
    and where a .vq file is known, names the one that wrote it."""
    from vqcodec import VQCodecError
    from vqcodec.registry import find_model

    folder = models_in_one_folder(tmp_path / "runs", tiny_model_path, other_model_path)
    (folder / "checkpoint.json").write_text("{}")
    (folder / "checkpoint.safetensors").write_bytes(b"")  # a run's checkpoint is no model
    vq = tmp_path / "by_other.vq"
    vq.write_bytes(other_codec.encode_audio(signal(1, 1600, 16000), 16000, 2))
    with pytest.raises(VQCodecError) as refused:
        find_model(str(folder))
    assert str(refused.value) == (f"{folder}: expected one model (NAME.safetensors + NAME.json) in the folder, found 2 "
                                  f"(other, tiny): give one of them by its path, such as {folder / 'other.safetensors'}")
    result = run_cli("train", tmp_path, "--out", tmp_path / "run", "--init", folder, "--max-steps", "1")
    assert_one_line_error(result)  # an --init folder: no --model to pass
    assert result.stderr.decode().rstrip("\n").endswith(f"found 2 (other, tiny): give one of them by its path, such as "
                                                         f"{folder / 'other.safetensors'}"), result.stderr
    advice = f"pass --model {folder / 'other.safetensors'}, the one that wrote this file (model {other_codec.model_id.hex()})"
    for args in (["decode", vq, tmp_path / "out.wav"], ["info", vq], ["codes", vq, tmp_path / "out.npy"]):
        result = run_cli(*args, "-m", folder)
        assert_one_line_error(result)
        assert result.stderr.decode().rstrip("\n").endswith(f"found 2 (other, tiny): {advice}"), result.stderr
        assert not (tmp_path / "out.wav").exists() and not (tmp_path / "out.npy").exists()
    assert run_cli("decode", vq, tmp_path / "out.wav", "-m", folder / "other.safetensors").returncode == 0
    (folder / "other.json").unlink()  # the folder's one model did not write it: the file's own check says so
    (folder / "third.safetensors").write_bytes((folder / "tiny.safetensors").read_bytes())
    (folder / "third.json").write_bytes((folder / "tiny.json").read_bytes())
    result = run_cli("decode", vq, tmp_path / "out2.wav", "-m", folder)
    assert_one_line_error(result)
    assert result.stderr.decode().rstrip("\n").endswith(
        f"found 2 (third, tiny): none of them wrote this file (model {other_codec.model_id.hex()}); pass --model "
        "with the one that did"), result.stderr


def test_a_model_of_another_id_names_the_model_beside_it_or_installed_that_decodes_the_file(
        tiny_model_path, other_model_path, codec, other_codec, signal, tmp_path):
    """-m naming one model that did not write the file said only "pass the matching --model", where -m of
    their folder names the one that did: now so does -m of one of them, and of a model beside none."""
    folder = models_in_one_folder(tmp_path / "runs", tiny_model_path, other_model_path)
    vq = tmp_path / "by_other.vq"
    vq.write_bytes(other_codec.encode_audio(signal(1, 1600, 16000), 16000, 2))
    wrote, tiny_id = other_codec.model_id.hex(), codec.model_id.hex()
    tiny = folder / "tiny.safetensors"
    for args in (["decode", vq, tmp_path / "out.wav"], ["info", vq], ["codes", vq, tmp_path / "out.npy"],
                 ["encode", vq, tmp_path / "out.vq", "-q", "1"]):
        result = run_cli(*args, "-m", tiny)
        assert_one_line_error(result)
        assert result.stderr.decode() == (f"vqcodec: error: file was written by model {wrote}, not {tiny} ({tiny_id}); "
                                          f"pass --model {folder / 'other.safetensors'}, which decodes it\n")
        assert not any((tmp_path / name).exists() for name in ("out.wav", "out.npy", "out.vq"))
    installed = {"VQCODEC_MODEL_PATH": os.pathsep.join([str(tiny_model_path.parent), str(other_model_path.parent)])}
    for model in (str(tiny_model_path), "tiny"):  # alone in its folder; by its installed name
        result = run_cli("decode", vq, tmp_path / "out.wav", "-m", model, env=installed)
        assert_one_line_error(result)
        assert result.stderr.decode() == (f"vqcodec: error: file was written by model {wrote}, not {model} ({tiny_id}); "
                                          "pass --model other, which decodes it\n")
    result = run_cli("decode", vq, tmp_path / "out.wav", "-m", tiny_model_path)  # none installed does
    assert_one_line_error(result)
    assert "pass the matching --model" in result.stderr.decode()
    assert run_cli("decode", vq, tmp_path / "out.wav", "-m", "other", env=installed).returncode == 0


def test_a_folder_of_another_models_files_names_the_model_that_decodes_each(
        tiny_model_path, other_model_path, codec, other_codec, signal, tmp_path):
    """decode, encode and codes of a folder of .vq files with -m of a model that did not write some of them said only
    "pass the matching --model" for each: each now names the model that decodes it, as for one file."""
    models = models_in_one_folder(tmp_path / "runs", tiny_model_path, other_model_path)
    folder = tmp_path / "coded"
    folder.mkdir()
    for name, model in (("a", other_codec), ("b", codec), ("c", other_codec)):
        (folder / f"{name}.vq").write_bytes(model.encode_audio(signal(1, 1600, 16000), 16000, 2))
    wrote, tiny_id, tiny = other_codec.model_id.hex(), codec.model_id.hex(), models / "tiny.safetensors"
    refusal = (f"file was written by model {wrote}, not {tiny} ({tiny_id}); pass --model "
               f"{models / 'other.safetensors'}, which decodes it")
    for args in (["decode", folder, tmp_path / "decoded"], ["encode", folder, tmp_path / "recoded", "-q", "1"],
                 ["codes", folder, tmp_path / "codes"]):
        result = run_cli(*args, "-m", tiny)
        stderr = result.stderr.decode()
        assert result.returncode != 0 and "Traceback" not in stderr, stderr
        assert "matching --model" not in stderr, stderr
        for name in ("a", "c"):
            assert f"skipping {folder / name}.vq: {refusal}\n" in stderr, stderr
    assert all((tmp_path / path).exists() for path in ("decoded/b.wav", "recoded/b.vq", "codes/b.npy"))
    advice = f"pass --model {models / 'other.safetensors'}, the one that wrote 2 of the 3 files (model {wrote})"
    for args in (["decode", folder, tmp_path / "decoded2"], ["encode", folder, tmp_path / "recoded2", "-q", "1"],
                 ["codes", folder, tmp_path / "codes2"]):  # -m of their folder, refused before any file
        result = run_cli(*args, "-m", models)
        assert_one_line_error(result)
        assert result.stderr.decode().rstrip("\n").endswith(f"found 2 (other, tiny): {advice}"), result.stderr
        assert not (tmp_path / args[2]).exists()


def test_the_folder_functions_name_the_model_that_decodes_a_file_as_their_argument(
        tiny_model_path, other_model_path, codec, other_codec, signal, tmp_path):
    """decode_tree, recode_tree and codes_of_vq_tree with model= of a model that did not write a file skipped it saying
    "pass --model X", the command's option: they name their argument, as the command names its option (above)."""
    from vqcodec.errors import VQCodecError
    from vqcodec.folders import codes_of_vq_tree, decode_tree, recode_tree

    models = models_in_one_folder(tmp_path / "runs", tiny_model_path, other_model_path)
    folder = tmp_path / "coded"
    folder.mkdir()
    (folder / "a.vq").write_bytes(other_codec.encode_audio(signal(1, 1600, 16000), 16000, 2))
    tiny = models / "tiny.safetensors"
    reason = (f"file was written by model {other_codec.model_id.hex()}, not {tiny} ({codec.model_id.hex()}); pass "
              f"model={str(models / 'other.safetensors')!r}, which decodes it")
    for run in (lambda out: decode_tree(folder, out, model=tiny),
                lambda out: recode_tree(folder, out, quality=1, model=tiny),
                lambda out: codes_of_vq_tree(folder, out, model=tiny)):
        report = run(tmp_path / "out")
        assert report.written == 0 and report.skipped == [(folder / "a.vq", reason)]
        assert not (tmp_path / "out").exists()
    for name in ("b", "c"):  # the folder's second model wrote most of them: named, not its first
        (folder / f"{name}.vq").write_bytes(codec.encode_audio(signal(1, 1600, 16000), 16000, 2))
    several = f"{models}: expected one model (NAME.safetensors + NAME.json) in the folder, found 2 (other, tiny): "
    for run in (lambda out, model: decode_tree(folder, out, model=model),
                lambda out, model: recode_tree(folder, out, quality=1, model=model),
                lambda out, model: codes_of_vq_tree(folder, out, model=model)):
        with pytest.raises(VQCodecError) as refused:
            run(tmp_path / "out", models)  # before any file, as decode_tree's docstring says
        assert str(refused.value) == (several + f"pass model={str(tiny)!r}, the one that wrote 2 of the 3 files "
                                      f"(model {codec.model_id.hex()})")
        assert not (tmp_path / "out").exists()
    for suffix in (".json", ".safetensors"):  # neither wrote a.vq, the other's file
        (models / f"other{suffix}").unlink()
        (models / f"third{suffix}").write_bytes((models / f"tiny{suffix}").read_bytes())
    (folder / "b.vq").unlink()
    (folder / "c.vq").unlink()
    with pytest.raises(VQCodecError) as refused:
        decode_tree(folder, tmp_path / "out", model=models)
    assert str(refused.value).endswith(f"found 2 (third, tiny): none of them wrote the files (model "
                                       f"{other_codec.model_id.hex()}); pass the one that did as model")
    assert not (tmp_path / "out").exists()


def test_none_of_a_folders_models_wrote_its_files_names_the_first_few_model_ids(tiny_model_path, other_model_path,
                                                                                small_vq, craft, tmp_path):
    """-m FOLDER of several models, none of which wrote a folder's .vq files, listed the id of every model that wrote
    one, however many: the line names the three that wrote the most and counts the others."""
    from vqcodec import VQCodecError, format as vqformat
    from vqcodec.registry import find_model

    models = models_in_one_folder(tmp_path / "runs", tiny_model_path, other_model_path)
    ids = [bytes([n]) * 8 for n in range(1, 8)]
    headers = [vqformat.parse_header(craft.with_header(small_vq, model_id=model_id))
               for count, model_id in enumerate(ids) for _ in range(len(ids) - count)]  # the first id wrote the most
    with pytest.raises(VQCodecError) as refused:
        find_model(str(models), wrote_files=headers)
    assert str(refused.value).endswith(f"found 2 (other, tiny): none of them wrote the files (models "
                                       f"{ids[0].hex()}, {ids[1].hex()}, {ids[2].hex()} and 4 more); pass the one that "
                                       "did as model")


def test_a_folders_model_of_its_files_id_but_another_prior_is_named_as_for_one_file(
        tiny_model_path, other_model_path, codec, small_vq, craft, tmp_path):
    """-m FOLDER of several models, one of them of the id of the model that wrote a folder's .vq files but not of their
    prior (a fit-prior --out copy wrote them), said that none of them wrote the files: it is named as the one-file
    decode names it."""
    from vqcodec import VQCodecError, format as vqformat
    from vqcodec.folders import decode_tree
    from vqcodec.registry import find_model

    models = models_in_one_folder(tmp_path / "runs", tiny_model_path, other_model_path)
    folder = tmp_path / "coded"
    folder.mkdir()
    another_prior = craft.with_header(small_vq, coding=vqformat.CODING_PRIOR, prior_id=77)  # tiny has no prior
    another_model = craft.with_header(small_vq, model_id=b"9" * 8)
    for name, data in (("a", another_prior), ("b", another_prior), ("c", another_model)):
        (folder / f"{name}.vq").write_bytes(data)
    with pytest.raises(VQCodecError) as refused:
        decode_tree(folder, tmp_path / "out", model=models)
    assert str(refused.value).endswith(
        f"found 2 (other, tiny): {models / 'tiny.safetensors'} has the id of the model that wrote 2 of the 3 files "
        f"({codec.model_id.hex()}) but another prior: pass the model files that wrote them")
    assert not (tmp_path / "out").exists()
    with pytest.raises(VQCodecError) as refused:  # one such file, as decode, info and codes of it look for its model
        find_model(str(models), wrote=another_prior)
    assert str(refused.value).endswith(
        f"found 2 (other, tiny): {models / 'tiny.safetensors'} has the id of the model that wrote this file "
        f"({codec.model_id.hex()}) but another prior: pass the model files that wrote it")
    with pytest.raises(VQCodecError) as refused:  # from Python, named as the argument, as for the folder's files
        find_model(str(models), wrote=small_vq)
    assert str(refused.value).endswith(f"pass model={str(models / 'tiny.safetensors')!r}, the one that wrote this file "
                                       f"(model {codec.model_id.hex()})")


def test_a_folder_run_asks_the_codec_whether_its_model_decodes_a_file(tiny_model_path, codec, other_codec, signal,
                                                                       monkeypatch):
    """With -m, a folder's file of another model was told by the command line's own copy of Codec._check_file_model's
    model-id test: it now asks the codec (Codec.decodes_files_of), the one place of the rule that refuses the file."""
    from vqcodec.codec import Codec
    from vqcodec.folders import refuse_another_models_file

    assert codec.decodes_files_of(codec.model_id) and not codec.decodes_files_of(other_codec.model_id)
    tuned = Codec(codec.model, {**codec.meta, "decodes": [other_codec.model_id.hex()]}, {})
    assert tuned.decodes_files_of(other_codec.model_id)
    data = codec.encode_audio(signal(1, 1600, 16000), 16000, 2)
    for decodes, looked_up in ((True, False), (False, True)):
        monkeypatch.setattr(Codec, "decodes_files_of", lambda self, model_id: decodes)
        codecs = {}
        refuse_another_models_file(codec, str(tiny_model_path), data, codecs)
        assert any(key[0] == "refusal" for key in codecs) == looked_up  # the model that decodes it was looked for


@pytest.mark.parametrize("value, refused", [("abc", True), ("0", True), ("-1", True), ("", False), ("4,2", False)])
def test_omp_num_threads_that_names_no_thread_count_is_refused_or_empty_taken_as_unset(encoded, tiny_model_path,
                                                                                       tmp_path, value, refused):
    """OpenMP printed a blank line and 'libgomp: Invalid value for environment variable OMP_NUM_THREADS' on
    stderr when torch loaded, and the command ran on (set but empty: the same lines)."""
    out = tmp_path / "out.wav"
    result = run_cli("decode", encoded / "out.vq", out, "-m", tiny_model_path, env={"OMP_NUM_THREADS": value})
    if refused:
        assert result.returncode == 1 and result.stderr.decode() == (
            f"vqcodec: error: the environment variable OMP_NUM_THREADS is {value!r}, not a number of threads of 1 "
            "or more: unset it, or set it to one such as 4\n")
        assert not out.exists()
    else:
        assert result.returncode == 0 and result.stderr == b"" and out.exists(), result.stderr.decode()


@pytest.mark.parametrize("command, source, stdin, max_bytes", [
    ("encode", "in.wav", True, 1000),  # stdin's
    ("encode", "in.wav", False, 1000),  # stdout's, 3 kB: all in the spool's buffer until its rewind
    ("decode", "out.vq", False, io.DEFAULT_BUFFER_SIZE)])  # stdout's, 44 kB: the spool's close failed again
def test_a_temporary_file_of_stdin_or_stdout_that_cannot_grow_is_named_with_its_folder(encoded, tiny_model_path,
                                                                                      command, source, stdin,
                                                                                      max_bytes):
    """stdin and stdout go through a temporary file in $TMPDIR; one that could not grow (a full or small
    /tmp; here a file size limit) was reported as 'vqcodec: error: File too large' alone, naming nothing.
    Where the write of stdout's left bytes in its buffer, its close failed again with those words, which stood."""
    import tempfile

    from conftest import run_cli_with_file_size_limit

    source = encoded / source
    result = run_cli_with_file_size_limit(max_bytes, command, "-" if stdin else source, "-", "-m", tiny_model_path,
                                          input=source.read_bytes() if stdin else None)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode() == (f"vqcodec: error: cannot write a temporary file in {tempfile.gettempdir()}: File "
                                      "too large (stdin and stdout go through one there: set TMPDIR to a folder with "
                                      "room)\n")


def test_a_vq_file_by_path_beyond_the_memory_this_process_may_use_is_refused_by_encode_and_codes(tmp_path,
                                                                                                  monkeypatch, capsys):
    """`encode X.vq OUT.vq` and `codes X.vq OUT.npy` read the file whole (Path.read_bytes, stream.read) without the
    check of read_vq_stream: one larger than the memory this process may use was read until that ran out."""
    import vqcodec.memory
    from vqcodec.cli import run

    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=1, model_id=bytes(8),
                             sample_rate=8000, length=8000, channels=1, chunk_frames=500)
    big = tmp_path / "big.vq"
    big.write_bytes(vqformat.build_file(header, [bytes(1 << 20)] * 4))
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 2 << 20)
    for command, output, *options in (("encode", tmp_path / "out.vq", "--bitrate", "1"),
                                      ("codes", tmp_path / "out.npy")):
        code, err = run([command, str(big), str(output), *options]), capsys.readouterr().err
        assert code == 1 and err == ("vqcodec: error: the .vq file takes 0.0 GB, more than the memory this process "
                                     "may use (0.0 GB); a .vq file is read into memory whole\n"), (command, err)
        assert not output.exists()


def test_a_count_of_one_is_said_in_the_singular(cli, codec, tiny_model_path, signal, tmp_path):
    """Messages that put a count before a fixed plural said '1 sample at 16000 Hz make 1 frame', 'payload: 1 bytes
    actual', 'over 1 pixels', 'below its 1 codebooks', 'covers 1 codebooks' and '(1 bytes, too few ...)'."""
    from PIL import Image
    from vqcodec.errors import VQCodecError
    from vqcodec.prior import CodePrior, LevelPrior, quantize_rows
    from vqcodec.registry import _weights_problem

    with pytest.raises(VQCodecError, match="^1 sample at 16000 Hz makes 1 frame, not 2$"):
        codec.check_codes_shape((1, 4, 2), np.int16, samples=1)
    one_byte = tmp_path / "one.vq"  # 1 frame of 1 level of 4 bits
    one_byte.write_bytes(codec.encode_audio(signal(1, 7, 16000), 16000, 1))
    result = cli("info", one_byte, "-v", "-m", tiny_model_path, text=True)
    assert "payload:   1 byte actual (fixed-width); fixed width would take 1 byte\n" in result.stdout, result.stdout
    result = cli("encode", one_byte, tmp_path / "recoded.vq", "--depth-weight", "1", "-m", tiny_model_path, text=True)
    assert "a -q below its 1 codebook or a --bitrate" in result.stderr, result.stderr
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (1, 1), (200, 30, 90)).save(tmp_path / "photos" / "dot.png")
    result = cli("encode", tmp_path / "photos", tmp_path / "dots", "-m", GOLDEN / "golden_image.safetensors",
                 "-q", "1", text=True)
    assert result.returncode == 0 and result.stderr.rstrip().endswith(" over 1 pixel into " + str(tmp_path / "dots"))
    one_level = CodePrior([LevelPrior((), {}, quantize_rows(np.ones((1, 16))))], 16, "audio")
    with pytest.raises(VQCodecError, match="^the model's prior covers 1 codebook of 16, not 2 of 16$"):
        one_level.check_shape(2, 16)
    (tmp_path / "cut.safetensors").write_bytes(b"\x00")
    assert _weights_problem(tmp_path / "cut.safetensors") == \
        "weights cut short or in no safetensors file (1 byte, too few for their header)"
