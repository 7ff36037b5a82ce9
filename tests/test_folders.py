"""`vqcodec encode DIR OUT` and `vqcodec decode DIR OUT`: whole folders in one run."""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from vqcodec import Codec
from vqcodec import format as vqformat
from vqcodec.errors import VQCodecError
from vqcodec.folders import mirrored_paths, output_formats
from vqcodec.wording import skipping

DATA = Path(__file__).resolve().parent / "data"
GOLDEN_IMAGE = DATA / "golden" / "golden_image.safetensors"


def stderr_lines(result) -> list[str]:
    text = result.stderr.decode()
    assert "Traceback" not in text
    return text.splitlines()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """Two speech recordings (one in a subfolder, one at 8 kHz stereo), a broken one and a text file."""
    folder = tmp_path_factory.mktemp("folders") / "recordings"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(DATA / "speech.flac", folder / "a.flac")
    audio, rate = soundfile.read(DATA / "speech2.flac", dtype="float32")
    soundfile.write(folder / "sub" / "b.wav", np.stack([audio[::2], audio[1::2]]).T, rate // 2)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    (folder / "empty").mkdir()
    (folder / "empty" / "silent.wav").write_bytes(b"")
    (folder / "notes.txt").write_text("not media: ignored")
    return folder


@pytest.fixture(scope="module")
def encoded_folder(recordings, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("encoded") / "vq"
    result = cli("encode", recordings, out, "-q", "4")
    return out, result


def test_encode_folder_mirrors_the_tree_and_skips_what_it_cannot_read(recordings, encoded_folder):
    out, result = encoded_folder
    lines = stderr_lines(result)
    assert result.returncode == 1
    # the path once, first: the reason names it
    assert lines[0].startswith(f"skipping {recordings / 'broken.wav'}: cannot read audio: ")
    assert lines[1] == f"skipping {recordings / 'empty' / 'silent.wav'}: file is empty"  # as encoding it says
    assert lines[2].startswith("encoded 2 files, ") and lines[2].endswith(f"kbps over 7.5 s into {out}")
    assert lines[-1] == "vqcodec: error: 2 of 4 files could not be encoded (listed above)"
    assert not (out / "empty").exists()  # no folder is made for what could not be coded
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a.vq", "sub/b.vq"]
    codec = Codec.load("speech16k")
    for name, source in (("a.vq", "a.flac"), ("sub/b.vq", "sub/b.wav")):  # as the one-file command writes them
        assert (out / name).read_bytes() == codec.encode_audio_file(recordings / source, 4)
    header = vqformat.parse_header((out / "sub" / "b.vq").read_bytes())
    assert (header.sample_rate, header.channels, header.quality) == (8000, 2, 4)


def test_every_folder_command_names_a_file_it_skips_first_then_why(tiny_model_path, small_vq, tmp_path, capsys):
    """encode's and codes' line for a recording that cannot be read began with the reason, which names the file
    ("skipping cannot read audio x.wav: Format not recognised."), where decode's and the others' read "skipping
    PATH: WHY"."""
    recordings, vq_files = tmp_path / "in", tmp_path / "vq"
    recordings.mkdir(), vq_files.mkdir()
    soundfile.write(recordings / "a.wav", np.zeros(800, np.float32), 16000)
    (recordings / "bad.wav").write_bytes(b"not a recording")
    (vq_files / "a.vq").write_bytes(small_vq)
    (vq_files / "bad.vq").write_bytes(b"not a .vq file")
    unreadable = f"skipping {recordings / 'bad.wav'}: cannot read audio: Format not recognised."
    for args, line in ((["encode", recordings, tmp_path / "vq_out", "-q", "1"], unreadable),
                       (["codes", recordings, tmp_path / "codes_out", "-q", "1"], unreadable),
                       (["decode", vq_files, tmp_path / "decoded"],
                        f"skipping {vq_files / 'bad.vq'}: not a .vq file (bad magic)")):
        code, err = _run([*args, "-m", tiny_model_path], capsys)
        assert code == 1 and err.splitlines()[0] == line, err
    # a file that cannot be read or written (an OSError naming it) too
    assert (skipping(Path("x.wav"), "cannot read or write x.wav (Permission denied)")
            == "skipping x.wav: cannot read or write (Permission denied)")


def test_decode_folder_at_another_rate(encoded_folder, tmp_path, capsys):
    vq = encoded_folder[0]
    out = tmp_path / "at11k"
    code, err = _run(["decode", vq, out, "--rate", "11025"], capsys)
    assert code == 0, err
    for name in ("a", "sub/b"):  # at 16 and 8 kHz
        header = vqformat.parse_header((vq / f"{name}.vq").read_bytes())
        info = soundfile.info(out / f"{name}.wav")
        assert (info.samplerate, info.frames) == (11025, -(-header.length * 11025 // header.sample_rate)), name
    written = sum(path.stat().st_size for path in out.rglob("*.wav"))
    assert err.splitlines()[-1] == f"decoded 2 files, {written} bytes into {out}"


def test_decode_folder_of_audio_and_images(encoded_folder, tmp_path, cli):
    source = tmp_path / "mixed"
    shutil.copytree(encoded_folder[0], source)
    photo = Image.open(DATA / "photo.png").crop((0, 0, 200, 120))
    (source / "photo.vq").write_bytes(Codec.load("image").encode_image(photo, 4))
    (source / "sub" / "cut.vq").write_bytes((source / "a.vq").read_bytes()[:-3])
    (source / "sub" / "junk.vq").write_bytes(b"not a vq file at all, not at all")
    out = tmp_path / "decoded"

    result = cli("decode", source, out, "--format", "flac")
    lines = stderr_lines(result)
    assert result.returncode == 1
    assert any(line.startswith(f"skipping {source / 'sub' / 'junk.vq'}: not a .vq file") for line in lines)
    assert any(line.startswith(f"skipping {source / 'sub' / 'cut.vq'}: truncated .vq file") for line in lines)
    assert lines[-1] == "vqcodec: error: 2 of 5 files could not be decoded (listed above)"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["a.flac", "photo.png", "sub/b.flac"]
    speech = Codec.load("speech16k")
    for name in ("a", "sub/b"):
        decoded, rate = soundfile.read(out / f"{name}.flac", dtype="float32", always_2d=True)
        expected, expected_rate = speech.decode_audio((source / f"{name}.vq").read_bytes())
        assert rate == expected_rate and decoded.shape == expected.T.shape
        np.testing.assert_allclose(decoded, np.clip(expected.T, -1, 1), atol=1.5 / 32768)  # 16-bit FLAC
    assert Image.open(out / "photo.png").size == (200, 120)

    result = cli("decode", source, out, "--salvage", "--format", "flac")  # all outputs exist
    assert result.returncode == 1 and "--force" in stderr_lines(result)[-1]
    result = cli("decode", source, out, "--salvage", "--format", "flac", "--force")
    lines = stderr_lines(result)
    assert any(line.startswith(f"vqcodec: warning: {source / 'sub' / 'cut.vq'}: 1 of 1 chunk is") for line in lines)
    assert lines[-1] == "vqcodec: error: 1 of 5 files could not be decoded (listed above)"  # junk.vq only
    assert soundfile.info(out / "sub" / "cut.flac").frames == soundfile.info(out / "a.flac").frames


def test_encode_folder_of_photos_at_a_rate(tmp_path, cli):
    folder, out = tmp_path / "photos", tmp_path / "vq"
    folder.mkdir()
    for index, name in enumerate(("photo.png", "photo2.png")):
        Image.open(DATA / name).crop((0, 0, 256, 192)).save(folder / f"{index}.png")
    result = cli("encode", folder, out, "--bpp", "0.3")
    assert result.returncode == 0, result.stderr.decode()
    assert stderr_lines(result)[-1].endswith(f"bpp over {2 * 256 * 192} pixels into {out}")
    for index in range(2):
        assert 0.27 * 256 * 192 <= (out / f"{index}.vq").stat().st_size * 8 <= 0.3 * 256 * 192
    result = cli("decode", out, tmp_path / "jpegs", "--format", "jpeg")
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "jpegs").iterdir()) == ["0.jpg", "1.jpg"]


def test_folder_refusals_leave_everything_as_it_was(recordings, encoded_folder, tmp_path, cli):
    out = encoded_folder[0]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = cli("encode", recordings, out, "-q", "4")  # the outputs exist: refused before any work
    assert result.returncode == 1 and stderr_lines(result) == [f"vqcodec: error: {out / 'a.vq'} exists; "
                                                               "pass --force to overwrite it"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(DATA / "speech.flac", clash / "talk.flac")
    soundfile.write(clash / "talk.wav", np.zeros(1600, np.float32), 16000)
    for args in (("encode", clash, tmp_path / "clash_vq"),                 # talk.flac and talk.wav -> talk.vq
                 ("encode", clash, "-"),                                    # a folder to stdout
                 ("encode", clash, clash / "talk.flac"),                     # into a file
                 ("encode", clash, tmp_path / "x", "--bpp", "0.2"),          # a rate of the other kind
                 ("encode", clash, tmp_path / "x", "-m", GOLDEN_IMAGE),      # no images in the folder
                 ("decode", out, tmp_path / "y", "--start", "1"),
                 ("decode", out, tmp_path / "y", "--format", "xyz"),
                 ("decode", clash, tmp_path / "y")):                         # no .vq files
        result = cli(*args)
        assert result.returncode != 0 and len(stderr_lines(result)) == 1, args
        assert stderr_lines(result)[0].startswith("vqcodec: error: "), args
    assert not (tmp_path / "clash_vq").exists() and not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _counted_stats(monkeypatch, names: tuple[str, ...] = ("stat",)) -> Counter:
    """The paths that os.stat (and the other os functions `names`) are called on from now, counted."""
    stats = Counter()
    for name in names:
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path, *args, real=real, **kwargs: stats.update([Path(path)])
                            or real(path, *args, **kwargs))
    return stats


def test_mirrored_paths_looks_at_each_output_folder_once(tmp_path, monkeypatch):
    """The folders an output goes in (to refuse a file or a link to nothing where one must be made) were looked at
    again for every output in them: three stats a file of a folder of 20 000, 1.3 s of a second. Each folder is
    looked at once now, however many files go in it."""
    def stats_for(count: int) -> Counter:
        folder, out = tmp_path / f"in{count}", tmp_path / f"out{count}"
        files = [folder / "sub" / f"{number}.wav" for number in range(count)]
        stats = _counted_stats(monkeypatch, ("stat", "lstat"))
        mirrored_paths(folder, out, files, lambda path: ".vq")
        monkeypatch.undo()
        return Counter({path.relative_to(out).parts: number for path, number in stats.items()
                        if path.is_relative_to(out) and path.suffix != ".vq"})  # not the outputs themselves

    assert stats_for(50) == stats_for(1) == {(): 2, ("sub",): 2}  # exists() and is_symlink() of each


def test_folder_of_looks_no_higher_than_the_first_folder_there(tmp_path, monkeypatch):
    """folder_of, around each output a folder run writes, looked at every folder above the output, up to the root, to
    know those it makes: a stat of each for every file. It stops at the first that is there now, above which all
    are, and still removes the folders it made where the block fails."""
    from vqcodec.folders import folder_of

    stats = _counted_stats(monkeypatch)
    with pytest.raises(KeyboardInterrupt), folder_of(tmp_path / "new" / "deeper" / "x.vq"):
        assert (tmp_path / "new" / "deeper").is_dir()
        raise KeyboardInterrupt
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    assert tmp_path in stats and not any(path in stats for path in tmp_path.parents)


def test_mirrored_paths_and_output_formats(tmp_path):
    files = [tmp_path / "a.wav", tmp_path / "d" / "b.flac"]
    assert mirrored_paths(tmp_path, tmp_path / "o", files, lambda p: ".vq") == \
        [tmp_path / "o" / "a.vq", tmp_path / "o" / "d" / "b.vq"]
    with pytest.raises(VQCodecError, match="would both write"):
        mirrored_paths(tmp_path, tmp_path / "o", [tmp_path / "a.wav", tmp_path / "a.flac"], lambda p: ".vq")
    with pytest.raises(VQCodecError, match="is not in the folder"):  # as tokens.code_folder may be given
        mirrored_paths(tmp_path / "d", tmp_path / "o", files, lambda p: ".vq")
    # the folder itself (a pathlib ValueError, "PosixPath('.') has an empty name"), and paths out of it through ..
    for folder, given in ((tmp_path / "a.wav", tmp_path / "a.wav"), (tmp_path / "d", tmp_path / "d" / ".."),
                          (tmp_path / "d", tmp_path / "d" / ".." / "a.wav")):
        with pytest.raises(VQCodecError, match="is not in the folder"):
            mirrored_paths(folder, tmp_path / "o", [given], lambda p: ".vq")
    assert output_formats(None) == ({"audio": "WAV", "image": "PNG"}, {"audio": ".wav", "image": ".png"})
    assert output_formats("flac") == ({"audio": "FLAC", "image": "PNG"}, {"audio": ".flac", "image": ".png"})
    assert output_formats("JPEG") == ({"audio": "WAV", "image": "JPEG"}, {"audio": ".wav", "image": ".jpg"})
    assert output_formats("webp")[1]["image"] == ".webp"
    assert output_formats("aif") == ({"audio": "AIFF", "image": "PNG"}, {"audio": ".aiff", "image": ".png"})
    assert output_formats("wave")[0]["audio"] == "WAV"
    assert output_formats("opus") == ({"audio": "OPUS", "image": "PNG"}, {"audio": ".opus", "image": ".png"})
    # as decoding one file takes them: a format named by its extension, and one Pillow gives none
    assert output_formats("jpg") == ({"audio": "WAV", "image": "JPEG"}, {"audio": ".wav", "image": ".jpg"})
    assert output_formats("tif") == ({"audio": "WAV", "image": "TIFF"}, {"audio": ".wav", "image": ".tif"})
    assert output_formats("spider") == ({"audio": "WAV", "image": "SPIDER"}, {"audio": ".wav", "image": ".spider"})


def test_a_folder_run_that_writes_nothing_says_so(tmp_path, cli):
    """Encoding, recoding, decoding or coding a folder in which every file is skipped printed a summary of
    "0 files, 0 bytes into OUT" as if a run had been done; the error line now says nothing was written."""
    audio, archive = tmp_path / "audio", tmp_path / "archive"
    audio.mkdir()
    archive.mkdir()
    (audio / "broken.wav").write_bytes(b"not audio")
    (archive / "junk.vq").write_bytes(b"junk")
    for command, folder, verb in (("encode", audio, "encoded"), ("encode", archive, "recoded"),
                                  ("decode", archive, "decoded"), ("codes", audio, "coded"),
                                  ("codes", archive, "coded")):  # codes of media wrote a codes.json of no files
        out = tmp_path / f"{command}_{folder.name}"
        result = cli(command, folder, out)
        lines = stderr_lines(result)
        assert result.returncode == 1 and result.stdout == b""
        assert len(lines) == 2 and lines[0].startswith("skipping "), lines
        assert lines[1] == f"vqcodec: error: 1 of 1 file could not be {verb} (listed above): nothing was written " \
                           f"to {out}", lines
        assert not out.exists()


def test_encode_of_a_folder_of_vq_files_recodes_them(encoded_folder, tmp_path, cli):
    source = tmp_path / "archive"
    shutil.copytree(encoded_folder[0], source)
    photo = Image.open(DATA / "photo.png").crop((0, 0, 128, 96))
    (source / "photo.vq").write_bytes(Codec.load("image").encode_image(photo, 8))
    out = tmp_path / "small"

    result = cli("encode", source, out, "--bitrate", "0.8")
    lines = stderr_lines(result)
    assert result.returncode == 1
    assert lines[0] == f"skipping {source / 'photo.vq'}: --bitrate is for audio, and this .vq file holds an " \
                       "image: use --bpp"
    assert lines[-1] == "vqcodec: error: 1 of 3 files could not be recoded (listed above)"
    speech = Codec.load("speech16k")
    for name in ("a.vq", "sub/b.vq"):
        data = (out / name).read_bytes()
        assert data == speech.recode((source / name).read_bytes(), max_rate=0.8)
        header = vqformat.parse_header(data)
        assert len(data) * 8 / (header.length / header.sample_rate) <= 800
    assert not (out / "photo.vq").exists()

    result = cli("encode", source, tmp_path / "both", "--bitrate", "0.8", "--bpp", "0.2")  # each file its own
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "both" / "a.vq").read_bytes() == (out / "a.vq").read_bytes()
    assert (tmp_path / "both" / "photo.vq").read_bytes() == \
        Codec.load("image").recode((source / "photo.vq").read_bytes(), max_rate=0.2)
    result = cli("encode", source / "a.vq", tmp_path / "one.vq", "--bitrate", "0.8", "--bpp", "0.2")
    assert result.returncode == 1 and "--bpp is for images" in stderr_lines(result)[-1]  # one file: one target

    for args in (("encode", source, tmp_path / "none", "-q", "2"), ("decode", source, tmp_path / "none")):
        result = cli(*args, "-m", "nosuch")  # refused once, before any file
        lines = stderr_lines(result)
        assert result.returncode == 1 and len(lines) == 1, args
        assert lines[0].startswith("vqcodec: error: unknown model 'nosuch' (installed: "), args
        assert not (tmp_path / "none").exists()

    result = cli("encode", source, tmp_path / "q2", "-q", "2")
    assert result.returncode == 0, result.stderr.decode()
    assert {vqformat.parse_header(p.read_bytes()).quality for p in (tmp_path / "q2").rglob("*.vq")} == {2}
    result = cli("encode", tmp_path / "q2", tmp_path / "q2c", "-q", "6")  # files of fewer keep their own: 1 skipped them
    assert result.returncode == 0, result.stderr.decode()
    for path in (tmp_path / "q2").rglob("*.vq"):
        assert (tmp_path / "q2c" / path.relative_to(tmp_path / "q2")).read_bytes() == path.read_bytes()
    result = cli("encode", source, tmp_path / "q2b", "--beam", "2")
    assert result.returncode == 1 and "recoding only cuts levels" in stderr_lines(result)[-1]


def _run(args, capsys) -> tuple[int, str]:
    from vqcodec.cli import run

    code = run([str(arg) for arg in args])
    return code, capsys.readouterr().err


@pytest.fixture
def two_recordings(tmp_path) -> Path:
    folder = tmp_path / "rec"
    (folder / "sub").mkdir(parents=True)
    audio, rate = soundfile.read(DATA / "speech.flac", dtype="float32")
    soundfile.write(folder / "a.flac", audio[:rate], rate)
    soundfile.write(folder / "sub" / "b.wav", audio[rate:2 * rate], rate)
    return folder


def test_a_file_that_fails_as_it_is_written_leaves_no_empty_folder(tiny_model_path, small_vq, tmp_path, capsys):
    """The folder of each output was made before its file was decoded (or its codes read), and stayed,
    empty, when that failed: a chunk that does not decode, behind a valid CRC, left out/bad/ behind, and
    a run that wrote nothing left the output folder it said nothing was written to."""
    source = tmp_path / "vq"
    (source / "bad" / "deeper").mkdir(parents=True)
    (source / "good.vq").write_bytes(small_vq)
    header = vqformat.parse_header(small_vq)
    (source / "bad" / "deeper" / "x.vq").write_bytes(vqformat.build_file(header, [b"\xff" * 7]))
    for command in ("decode", "codes"):
        out = tmp_path / command
        code, err = _run([command, source, out, "-m", tiny_model_path], capsys)
        assert code == 1 and "skipping" in err, err
        assert not (out / "bad").exists() and (out / ("good.wav" if command == "decode" else "good.npy")).exists()
    (source / "good.vq").unlink()
    code, err = _run(["decode", source, tmp_path / "none", "-m", tiny_model_path], capsys)
    assert code == 1 and err.endswith(f"nothing was written to {tmp_path / 'none'}\n") and not (tmp_path / "none").exists()


def test_an_output_folder_inside_the_input_is_not_read_as_input(two_recordings, capsys):
    small = two_recordings / "vq"
    assert _run(["encode", two_recordings, small, "-q", "2"], capsys)[0] == 0
    for _ in range(2):  # recoding in a folder under the input: its own outputs are not inputs
        code, err = _run(["encode", small, small / "smaller", "-q", "1", "--force"], capsys)
        assert code == 0 and "recoded 2 files" in err, err
    assert sorted(p.relative_to(small).as_posix() for p in small.rglob("*.vq")) == [
        "a.vq", "smaller/a.vq", "smaller/sub/b.vq", "sub/b.vq"]


def test_an_output_that_cannot_be_made_is_refused_before_any_work(two_recordings, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the folder of an output must go")
    code, err = _run(["encode", two_recordings, out, "-q", "2"], capsys)
    assert code == 1 and "is a file, where the folder of" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["sub"]
    clash = tmp_path / "clash"
    (clash / "x.vq").mkdir(parents=True)
    shutil.copy(DATA / "speech.flac", clash / "x.flac")
    shutil.copy(DATA / "speech.flac", clash / "x.vq" / "y.flac")
    code, err = _run(["encode", clash, tmp_path / "clash_out", "-q", "2"], capsys)
    assert code == 1 and "would be both an output file and the folder of" in err, err
    assert not (tmp_path / "clash_out").exists()
    code, err = _run(["codes", two_recordings, "-"], capsys)
    assert code == 1 and "not to stdout" in err and not Path("-").exists()


def test_a_folder_is_not_coded_into_a_file(two_recordings, tmp_path, capsys):
    taken = tmp_path / "out.vq"
    taken.write_bytes(b"precious")
    code, err = _run(["encode", two_recordings, taken, "-q", "2", "--force"], capsys)
    assert code == 1 and err == f"vqcodec: error: {taken} exists and is not a folder\n", err
    assert taken.read_bytes() == b"precious"


def test_a_file_name_that_is_not_utf8_is_coded(tmp_path, capsys):
    name = os.fsdecode(b"bad\xff name.flac")
    try:
        shutil.copy(DATA / "speech.flac", tmp_path / name)
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system takes UTF-8 names only")
    code, err = _run(["encode", tmp_path, tmp_path / "out", "-q", "2"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / os.fsdecode(b"bad\xff name.vq")).exists()


def test_a_folder_that_cannot_be_read_is_an_error_not_a_gap(two_recordings, capsys, monkeypatch):
    from vqcodec.folders import files_under

    with pytest.raises(VQCodecError, match="cannot read the folder"):
        files_under(two_recordings / "missing")
    locked = two_recordings / "sub"
    if os.geteuid() == 0:  # root reads a folder whatever its mode: refuse it as the mode would
        scandir = os.scandir

        def refusing_scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return scandir(path)

        monkeypatch.setattr(os, "scandir", refusing_scandir)
    locked.chmod(0)
    try:
        code, err = _run(["encode", two_recordings, two_recordings.parent / "out", "-q", "2"], capsys)
    finally:
        locked.chmod(0o755)
    assert code == 1 and f"cannot read the folder {locked}" in err, err


def test_a_folder_error_that_names_no_folder_names_the_one_walked(two_recordings, monkeypatch):
    """An OSError of the walk that names no file read "cannot read the folder None (Input/output error)"."""
    from vqcodec.folders import files_under

    scandir = os.scandir
    failing = two_recordings

    def scandir_failing_without_a_name(path="."):
        if Path(path) == failing:
            raise OSError(5, "Input/output error")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_failing_without_a_name)
    with pytest.raises(VQCodecError, match=f"^cannot read the folder {re.escape(str(two_recordings))} "
                                           r"\(Input/output error\)$"):
        files_under(two_recordings)
    failing = two_recordings / "sub"
    with pytest.raises(VQCodecError, match=f"^cannot read a folder under {re.escape(str(two_recordings))} "
                                           r"\(Input/output error\)$"):
        files_under(two_recordings)


def test_an_output_folder_that_cannot_be_made_is_named(two_recordings, tmp_path, capsys, monkeypatch):
    """A folder for one file's output that could not be made (a read-only or full place) was reported as
    "cannot read or write (Permission denied)", naming neither it nor anything, beside the input."""
    out = tmp_path / "out"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == out / "sub":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = _run(["encode", two_recordings, out, "-q", "1"], capsys)
    assert code == 1 and f"skipping {two_recordings / 'sub' / 'b.wav'}: cannot read or write {out / 'sub'} " \
                          "(Permission denied)" in err, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.vq"]


def test_tokens_helpers_are_reached_from_a_plain_import():
    import subprocess
    import sys

    # as the README calls it: vqcodec.tokens.code_folder after `import vqcodec` alone
    result = subprocess.run([sys.executable, "-c", "import vqcodec; print(vqcodec.tokens.code_folder.__name__)"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "code_folder"


def _stop_encoding_at(name: str, monkeypatch) -> None:
    """Make Codec.encode_audio_file stop (Ctrl-C) when it reaches the file called `name`, as a user stops a folder."""
    real_encode = Codec.encode_audio_file

    def encode(self, path, *args, **kwargs):
        if Path(path).name == name:
            raise KeyboardInterrupt
        return real_encode(self, path, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode_audio_file", encode)


def test_a_stopped_folder_run_says_what_it_wrote(two_recordings, tmp_path, capsys, monkeypatch):
    """Ctrl-C part way through a folder said only "interrupted": not which files were done and kept. Nor did it
    name or count a name passed over (a link to nothing), which the summary of a run not stopped names and counts:
    it said '1 of 2 files', where that summary counts 3; recoding the .vq files said '1 of 1 file'."""
    out = tmp_path / "out"
    (two_recordings / "x.wav").symlink_to(tmp_path / "gone.wav")
    _stop_encoding_at("b.wav", monkeypatch)
    code, err = _run(["encode", two_recordings, out, "-q", "1"], capsys)
    assert code == 130 and sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.vq"]
    passed_over, summary, last = [line for line in err.splitlines() if line][-3:]
    assert passed_over == f"skipping {two_recordings / 'x.wav'}: broken symbolic link (to {tmp_path / 'gone.wav'})"
    assert summary.startswith("encoded 1 file, ") and summary.endswith(" before the stop; 1 of 3 files not encoded"), err
    assert last == "vqcodec: interrupted"

    def recode(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(Codec, "recode", recode)
    (out / "x.vq").symlink_to(tmp_path / "gone.vq")
    code, err = _run(["encode", out, tmp_path / "smaller", "-q", "1"], capsys)
    assert code == 130 and err.splitlines()[-3:] == [
        f"skipping {out / 'x.vq'}: broken symbolic link (to {tmp_path / 'gone.vq'})",
        "recoded 0 files, 0 bytes before the stop; 1 of 2 files not recoded", "vqcodec: interrupted"], err


def test_a_stopped_folder_run_names_a_file_whose_name_holds_a_line_break_in_one_line(two_recordings, tmp_path, capsys,
                                                                                    monkeypatch):
    """A stop's skipping lines were not made one line, as the summary's are: a name holding a line break (a file
    skipped, a name passed over) split its line in two."""
    (two_recordings / "x\ny.wav").symlink_to(tmp_path / "gone.wav")
    (two_recordings / "bad\nname.wav").write_bytes(b"not a recording")
    _stop_encoding_at("b.wav", monkeypatch)
    code, err = _run(["encode", two_recordings, tmp_path / "out", "-q", "1"], capsys)
    passed_over, skipped, summary, last = err.splitlines()[-4:]
    assert code == 130 and last == "vqcodec: interrupted", err
    assert passed_over == f"skipping {two_recordings}/x\\ny.wav: broken symbolic link (to {tmp_path / 'gone.wav'})", err
    assert skipped == f"skipping {two_recordings}/bad\\nname.wav: cannot read audio: Format not recognised.", err
    assert summary.startswith("encoded 1 file, ") and summary.endswith(" before the stop; 1 of 4 files not encoded"), err


@pytest.mark.parametrize("command", ["decode", "encode", "codes"])
def test_files_of_a_model_not_installed_are_one_line_and_the_others_are_done(tiny_model_path, tmp_path, capsys,
                                                                             command):
    """Each file of a model not installed said 'no installed model has id X' again; decode, recode
    (encode of .vq files) and codes go on with the files of installed models, and say the missing
    one once, with how many files name it."""
    from vqcodec.cli import run

    tiny, speech = Codec.load(str(tiny_model_path)), Codec.load("speech16k")
    folder = tmp_path / "vq"
    folder.mkdir()
    for name in ("t1.vq", "t2.vq", "t3.vq"):
        (folder / name).write_bytes(tiny.codes_to_file(np.zeros((1, 4, 20), np.int64), sample_rate=16000,
                                                       samples=160))
    (folder / "s.vq").write_bytes(speech.codes_to_file(np.zeros((1, 3, 20), np.int64), sample_rate=16000,
                                                       samples=6400))
    extra = ["-q", "2"] if command == "encode" else []
    verbs = {"decode": "decoded", "encode": "recoded", "codes": "coded"}
    code = run([command, str(folder), str(tmp_path / "out"), *extra])
    lines = capsys.readouterr().err.splitlines()
    tiny_id = tiny.model_id.hex()
    assert code == 1 and lines[0] == f"skipping 3 files: no installed model has id {tiny_id}; pass --model with " \
                                      "the model that wrote them", lines
    assert sum("no installed model" in line for line in lines) == 1, lines
    assert lines[-1] == f"vqcodec: error: 3 of 4 files could not be {verbs[command]} " \
                        "(listed above)", lines
    assert [p.stem for p in (tmp_path / "out").rglob("*") if p.suffix != ".json"] == ["s"]

    (folder / "s.vq").unlink()
    shutil.rmtree(tmp_path / "out")
    code = run([command, str(folder), str(tmp_path / "out"), *extra])  # the model of every file: refused up front
    assert code == 1 and capsys.readouterr().err.splitlines() == [
        f"vqcodec: error: 3 .vq files of {folder}: no installed model has id {tiny_id}; pass --model with the model "
        "that wrote them"]
    assert not (tmp_path / "out").exists()


def test_an_output_format_a_folders_files_cannot_have_is_found_before_any_model_loads(tiny_model_path, tmp_path,
                                                                                     capsys, monkeypatch):
    """decode of a folder checked each file's output format (writing two frames of it) after its model had
    loaded and its chunks were decoded: an --format or --rate none of the files could be written in failed
    file by file. The check is now made once for each rate and channel count, from the headers alone."""
    import io

    import soundfile as soundfile_module

    from vqcodec import soundio
    from vqcodec.cli import run

    tiny = Codec.load(str(tiny_model_path))
    folder = tmp_path / "vq"
    folder.mkdir()
    for name, rate in (("a.vq", 16000), ("b.vq", 16000), ("c.vq", 16000), ("d.vq", 44100)):
        (folder / name).write_bytes(tiny.codes_to_file(np.zeros((1, 4, 20), np.int16), sample_rate=rate,
                                                       samples=rate // 100))
    probes, loads, load = [], [], Codec.load.__func__
    real_sound_file = soundfile_module.SoundFile

    def sound_file(file, *args, **options):
        if isinstance(file, io.BytesIO):
            probes.append(options.get("samplerate"))
        return real_sound_file(file, *args, **options)
    monkeypatch.setattr(soundio.soundfile, "SoundFile", sound_file)
    monkeypatch.setattr(Codec, "load", classmethod(lambda cls, *args, **kw: loads.append(args) or load(cls, *args, **kw)))
    soundio._audio_write_refused.cache_clear()
    code = run(["decode", str(folder), str(tmp_path / "out"), "--format", "opus", "--rate", "44100",
                "-m", str(tiny_model_path)])
    assert (code, loads, probes) == (1, [], [])  # refused as Opus at 44.1 kHz without a probe
    assert capsys.readouterr().err.splitlines() == [
        f"vqcodec: error: 4 .vq files of {folder}: Opus holds 8000, 12000, 16000, 24000 or 48000 Hz audio, not 44100 "
        "Hz: pass --rate 48000, or write another format (.wav, .flac)"]
    assert not (tmp_path / "out").exists()

    code = run(["decode", str(folder), str(tmp_path / "out"), "--format", "mp3", "--rate", "12345",
                "-m", str(tiny_model_path)])
    assert (code, loads, probes) == (1, [], [12345])  # one probe for the four files, and no model
    assert capsys.readouterr().err.startswith(f"vqcodec: error: 4 .vq files of {folder}: MP3 MPEG_LAYER_III cannot ")

    code = run(["decode", str(folder), str(tmp_path / "out"), "--format", "opus", "-m", str(tiny_model_path)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and lines[0] == (f"skipping {folder / 'd.vq'}: Opus holds 8000, 12000, 16000, 24000 or 48000 "
                                      "Hz audio, not 44100 Hz: pass --rate 48000, or write another format (.wav, "
                                      ".flac)"), lines
    assert lines[-1] == "vqcodec: error: 1 of 4 files could not be decoded (listed above)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.opus", "b.opus", "c.opus"]


def test_a_folder_runs_count_of_files_done_is_shown_in_place_on_a_terminal(tiny_model_path, tmp_path, cli):
    """'decoded 100/100 files' (every 100 files of encode, decode and codes) was a line of its own on a terminal
    too, where train's steps and eval's files are shown in place; in a log it still is one."""
    from conftest import on_terminal, terminal_moments, terminal_screen

    tiny = Codec.load(str(tiny_model_path))
    folder = tmp_path / "vq"
    folder.mkdir()
    data = tiny.codes_to_file(np.zeros((1, 4, 20), np.int16), sample_rate=16000, samples=160)
    for number in range(100):
        (folder / f"{number:03}.vq").write_bytes(data)
    code, terminal = on_terminal("decode", folder, tmp_path / "shown", "-m", tiny_model_path)
    assert code == 0, terminal
    assert ["decoded 100/100 files"] in terminal_moments(terminal)
    summary = f"decoded 100 files, {100 * 364} bytes into "
    assert terminal_screen(terminal) == [summary + str(tmp_path / "shown"), ""]  # in its place
    logged = cli("decode", folder, tmp_path / "logged", "-m", tiny_model_path)
    assert logged.returncode == 0 and stderr_lines(logged) == ["decoded 100/100 files",
                                                                summary + str(tmp_path / "logged")]


def test_a_clipping_warning_clears_the_progress_line_and_stays_one_line(codec, tiny_model_path, signal, tmp_path,
                                                                       monkeypatch):
    """decode's warning that a file's audio is clipped was echoed past the progress line: a folder's count of files
    done, shown in place on a terminal, was not cleared first, as it is for encode's and codes' warnings; and a line
    break in the output's name split the warning in two lines, where the others show it as \\n."""
    import sys

    from conftest import Terminal
    from vqcodec import progressline
    from vqcodec.cli import run

    audio = signal(1, 8000, 8000)
    soundfile.write(tmp_path / "hot.wav", (audio * 2.5 / np.abs(audio).max()).T, 8000, subtype="FLOAT")
    folder = tmp_path / "vq"
    folder.mkdir()
    (folder / "two\nlines.vq").write_bytes(codec.encode_audio_file(tmp_path / "hot.wav", 2))
    clipped = "decoded audio above full scale (peak "
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    progressline.show("decoded 100/200 files")  # as a run shows it before its 101st file, which clips
    assert run(["decode", str(folder), str(tmp_path / "out"), "-m", str(tiny_model_path), "--format", "flac"]) == 0
    warning = f"vqcodec: warning: {tmp_path / 'out'}/two\\nlines.flac: {clipped}"
    assert stream.getvalue().startswith("decoded 100/200 files\r" + " " * 21 + "\r" + warning), stream.getvalue()
    screen = stream.screen()
    assert len(screen) == 3 and screen[0].startswith(warning) and screen[1].startswith("decoded 1 file, ")
    stream = Terminal()  # one file's decode alike
    monkeypatch.setattr(sys, "stderr", stream)
    assert run(["decode", str(folder / "two\nlines.vq"), str(tmp_path / "one\nfile.flac"),
                "-m", str(tiny_model_path)]) == 0
    screen = stream.screen()
    assert len(screen) == 2 and screen[0].startswith(f"vqcodec: warning: {tmp_path}/one\\nfile.flac: {clipped}")


def test_a_folder_runs_count_of_files_done_counts_the_files_skipped(tmp_path):
    """The count of files done was told only where the file at a hundredth place was written: a 100th file
    skipped said nothing, and the count jumped from none to 200/250. A file skipped is done too."""
    from vqcodec.folders import recode_folder
    from vqcodec.errors import VQCodecError

    files = [tmp_path / f"{number:03}.vq" for number in range(100)]
    for path in files:
        path.write_bytes(b"")  # read_vq_file gives what is there; the stand-in recode below judges it

    def recode(path, data):
        if path.name == "099.vq":
            raise VQCodecError("not a .vq file")
        return b"recoded"

    shown = []
    report = recode_folder(files, [tmp_path / "out" / path.name for path in files], recode, lambda path, data: None,
                           progress=shown.append)
    assert (report.written, len(report.skipped)) == (99, 1) and shown == ["recoded 100/100 files"]


def test_a_folder_run_whose_output_is_one_of_its_inputs_is_refused_even_with_force(two_recordings, tmp_path,
                                                                                   capsys):
    """`encode my_vq/ my_vq/ -q 1 --force` recoded each .vq file in place, replacing what it read with its
    recoding, where one file's output that is its input is refused even with --force."""
    vq = tmp_path / "vq"
    assert _run(["encode", two_recordings, vq, "-q", "2"], capsys)[0] == 0
    before = {p: p.read_bytes() for p in vq.rglob("*.vq")}
    code, err = _run(["encode", vq, vq, "-q", "1", "--force"], capsys)
    assert code == 1 and err == f"vqcodec: error: {vq / 'a.vq'} is the input file: give the output folder " \
                                "another name\n", err
    linked = tmp_path / "linked"
    (linked / "sub").mkdir(parents=True)
    (linked / "a.vq").symlink_to(vq / "a.vq")  # an output that is a link to an input replaces what it names
    os.link(vq / "sub" / "b.vq", linked / "sub" / "b.vq")
    code, err = _run(["encode", vq, linked, "-q", "1", "--force"], capsys)
    assert code == 1 and err == f"vqcodec: error: {linked / 'a.vq'} is the input file {vq / 'a.vq'}: give the " \
                                "output folder another name\n", err
    code, err = _run(["encode", vq / "sub", linked / "sub", "-q", "1", "--force"], capsys)
    assert code == 1 and err.endswith(f"{linked / 'sub' / 'b.vq'} is the input file {vq / 'sub' / 'b.vq'}: give "
                                      "the output folder another name\n"), err
    assert {p: p.read_bytes() for p in vq.rglob("*.vq")} == before


@pytest.mark.parametrize("force", [False, True])
def test_codes_of_a_folder_keep_an_array_another_run_wrote_meanwhile_without_force(two_recordings, tmp_path, capsys,
                                                                                 monkeypatch, force):
    """`vqcodec codes DIR OUT` replaced an array that another run wrote while it coded, without --force
    (encode and decode of a folder keep it, as one file's output is kept)."""
    import json

    out = tmp_path / "tokens"
    real = Codec.media_to_codes

    def media_to_codes(self, path, *args, **kwargs):
        codes = real(self, path, *args, **kwargs)
        if Path(path).name == "a.flac":
            out.mkdir()
            (out / "a.npy").write_bytes(b"the other run's")
        return codes

    monkeypatch.setattr(Codec, "media_to_codes", media_to_codes)
    code, err = _run(["codes", two_recordings, out, "-q", "1", *(["--force"] if force else [])], capsys)
    files = [entry["file"] for entry in json.loads((out / "codes.json").read_text())["files"]]
    if force:
        assert code == 0 and files == ["a.flac", "sub/b.wav"], err
        assert np.load(out / "a.npy").shape[1] == 1
    else:
        assert code == 1 and f"skipping {two_recordings / 'a.flac'}: {out / 'a.npy'} exists (written while this " \
                             "ran); pass --force to overwrite it" in err, err
        assert (out / "a.npy").read_bytes() == b"the other run's" and files == ["sub/b.wav"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "codes.json", "sub"]


def test_a_rate_for_a_folder_of_images_only_is_refused(tmp_path, capsys):
    """decode FOLDER OUT --rate 8000 of a folder of image .vq files decoded them and ignored the rate, where
    one image file is refused it (and a folder, an audio --format); encode FOLDER OUT --bitrate 1 skipped each file
    for it, in a line of its own, and wrote nothing."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "p.vq").write_bytes(Codec.load(str(GOLDEN_IMAGE)).encode_image(
        Image.open(DATA / "photo.png").crop((0, 0, 64, 48)), 2))
    code, err = _run(["decode", folder, tmp_path / "out", "--rate", "8000"], capsys)
    assert code == 1 and err == f"vqcodec: error: --rate is for audio, and the .vq files of {folder} hold images " \
                                "only\n", err
    code, err = _run(["encode", folder, tmp_path / "out", "--bitrate", "1", "-m", GOLDEN_IMAGE], capsys)
    assert code == 1 and err == f"vqcodec: error: --bitrate is for audio, and the .vq files of {folder} hold " \
                                "images only: use --bpp\n", err
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_a_link_to_nothing_is_refused_before_any_work(two_recordings, tmp_path, capsys):
    """An output folder (or a subfolder of it) that is a link to nothing was found only as each file was
    written, after its coding: one 'cannot read or write OUT (File exists)' line per file."""
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    code, err = _run(["encode", two_recordings, out, "-q", "1"], capsys)
    assert code == 1 and err == f"vqcodec: error: {out} is a link to {tmp_path / 'gone'}, which is not there, where " \
                                f"the folder of {out / 'a.vq'} must go\n", err
    out.unlink()
    out.mkdir()
    (out / "sub").symlink_to("gone")
    code, err = _run(["encode", two_recordings, out, "-q", "1"], capsys)
    assert code == 1 and err.endswith(f"{out / 'sub'} is a link to gone, which is not there, where the folder of "
                                      f"{out / 'sub' / 'b.vq'} must go\n"), err
    assert sorted(p.name for p in out.iterdir()) == ["sub"]


def test_codes_of_a_file_that_fails_as_it_is_written_leave_no_empty_folder(two_recordings, tmp_path, capsys,
                                                                           monkeypatch):
    """`vqcodec codes` of a folder of media made each array's folder before writing it, and left it, empty,
    when the write failed (encode, decode and codes of .vq files remove it)."""
    import vqcodec.tokens

    real_write = vqcodec.tokens.write_file

    def write_file(path, *args, **kwargs):
        if Path(path).name == "b.npy":
            raise VQCodecError(f"cannot write {path}: No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(vqcodec.tokens, "write_file", write_file)
    out = tmp_path / "tokens"
    code, err = _run(["codes", two_recordings, out, "-q", "1"], capsys)
    assert code == 1 and f"skipping {two_recordings / 'sub' / 'b.wav'}: cannot write {out / 'sub' / 'b.npy'}: " \
                         "No space left on device" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "codes.json"]


def test_codes_of_a_vq_folder_keep_a_manifest_another_run_wrote_meanwhile_without_force(tiny_model_path, small_vq,
                                                                                       tmp_path, capsys,
                                                                                       monkeypatch):
    """The codes.json of `vqcodec codes` on a folder of .vq files replaced one that another run wrote while
    this one coded, without --force (the test of c79d68d, which passes --force to it)."""
    source, out = tmp_path / "vq", tmp_path / "tokens"
    source.mkdir()
    (source / "a.vq").write_bytes(small_vq)
    real = Codec.code_blocks

    def code_blocks(self, data):
        out.mkdir(exist_ok=True)
        (out / "codes.json").write_text("the other run's")
        return real(self, data)

    monkeypatch.setattr(Codec, "code_blocks", code_blocks)
    code, err = _run(["codes", source, out, "-m", tiny_model_path], capsys)
    assert code == 1 and err == f"vqcodec: error: {out / 'codes.json'} exists (written while this ran); pass --force " \
                                "to overwrite it\n", err
    assert (out / "codes.json").read_text() == "the other run's"
    code, err = _run(["codes", source, out, "-m", tiny_model_path, "--force"], capsys)
    assert code == 0 and (out / "codes.json").read_text().startswith("{"), err


def test_a_folder_decode_names_spider_outputs_alike_after_a_spider_file_was_saved(tmp_path):
    """Pillow's SPIDER writer registers the extension of the name it saves to, so a folder's SPIDER outputs were
    named .spider, or .spi once the process had saved a .spi file."""
    from PIL import Image

    Image.new("F", (2, 2)).save(tmp_path / "x.spi", format="SPIDER")
    assert output_formats("spider")[1]["image"] == ".spider"


def _with_hidden_files(folder: Path) -> None:
    """macOS's AppleDouble ._NAME (not audio), .DS_Store and hidden folders holding media or .vq files."""
    (folder / "._a.flac").write_bytes(b"\x00\x05\x16\x07AppleDouble, not audio")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for hidden in (".git", ".ipynb_checkpoints", "sub/.cache"):
        (folder / hidden).mkdir(parents=True, exist_ok=True)
        (folder / hidden / "c.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
        (folder / hidden / "c.vq").write_bytes(b"not a vq file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_folder_walk_lists_no_pipe_or_device_for_the_checks_that_tell_files_by_io_file_id(two_recordings, tmp_path):
    """data.one_name_each and folders._refuse_outputs_that_are_inputs tell files apart by streams.file_id, which gives
    None for a FIFO or character device (as for a file it cannot look at, which they keep and pass over): they
    told a pipe's names apart by os.stat. The walk their files come from lists regular files only, so none
    reaches them: a FIFO, a link to it and a link to a device are left out."""
    from vqcodec.data import one_name_each
    from vqcodec.folders import _refuse_outputs_that_are_inputs, files_under

    os.mkfifo(two_recordings / "pipe.wav")
    (two_recordings / "pipe link.wav").symlink_to(two_recordings / "pipe.wav")
    (two_recordings / "null.wav").symlink_to(os.devnull)
    (two_recordings / "twice.flac").symlink_to(two_recordings / "a.flac")
    files = files_under(two_recordings)
    assert files == [two_recordings / "a.flac", two_recordings / "sub" / "b.wav", two_recordings / "twice.flac"]
    assert one_name_each(files) == files[:2]
    with pytest.raises(VQCodecError, match="is the input file"):
        _refuse_outputs_that_are_inputs(files, [tmp_path / "out.vq", two_recordings / "twice.flac"])
    _refuse_outputs_that_are_inputs(files, [two_recordings / "pipe.wav", two_recordings / "null.wav"])


def test_a_folder_walk_leaves_out_hidden_files_and_folders_unless_the_folder_itself_is_hidden(two_recordings,
                                                                                               tmp_path):
    from vqcodec.folders import files_under

    _with_hidden_files(two_recordings)
    expected = [two_recordings / "a.flac", two_recordings / "sub" / "b.wav"]
    assert files_under(two_recordings) == expected
    named = tmp_path / ".hidden_data"  # a hidden folder named on the command line is walked
    shutil.copytree(two_recordings, named)
    assert files_under(named) == [named / "a.flac", named / "sub" / "b.wav"]
    assert files_under(named / ".git") == [named / ".git" / "c.vq", named / ".git" / "c.wav"]


def test_encode_decode_and_codes_of_a_folder_leave_hidden_files_out_silently(two_recordings, tmp_path, capsys):
    """An AppleDouble ._a.flac was a `skipping` line that made the encode exit 1, and .git/ was walked."""
    def written(out: str) -> list[str]:
        return sorted(p.relative_to(tmp_path / out).as_posix() for p in (tmp_path / out).rglob("*") if p.is_file())

    _with_hidden_files(two_recordings)
    code, err = _run(["encode", two_recordings, tmp_path / "vq", "-q", "2"], capsys)
    assert code == 0 and "skipping" not in err and "encoded 2 files" in err, err
    assert written("vq") == ["a.vq", "sub/b.vq"]
    _with_hidden_files(tmp_path / "vq")
    code, err = _run(["decode", tmp_path / "vq", tmp_path / "wav"], capsys)
    assert code == 0 and "skipping" not in err and written("wav") == ["a.wav", "sub/b.wav"], err
    for source, out in ((tmp_path / "vq", "codes"), (two_recordings, "media_codes")):
        code, err = _run(["codes", source, tmp_path / out], capsys)
        assert code == 0 and "skipping" not in err and not [name for name in written(out) if "c." in name], err


def test_a_folder_of_hidden_files_alone_says_they_are_left_out(tmp_path, capsys):
    """A folder whose media were all hidden (._NAME, .git/) said only 'no audio or image files found', as if empty."""
    folder = tmp_path / "in"
    folder.mkdir()
    _with_hidden_files(folder)
    for args, found in ((["encode", folder, tmp_path / "vq"], "no audio or image files found"),
                        (["decode", folder, tmp_path / "wav"], "no .vq files found"),
                        (["train", folder, "--out", tmp_path / "run", "--kind", "audio", "--max-steps", "1"], "no audio files found")):
        code, err = _run(args, capsys)
        assert code == 1 and err == f"vqcodec: error: {folder}: {found} (5 files and folders whose names begin " \
                                    "with '.' are left out)\n", err
    (folder / ".DS_Store").unlink()
    shutil.rmtree(folder / ".git")
    shutil.rmtree(folder / ".ipynb_checkpoints")
    code, err = _run(["encode", folder, tmp_path / "vq"], capsys)  # sub/.cache is under a folder that is not hidden
    assert err.endswith("(2 files and folders whose names begin with '.' are left out)\n"), err
    (folder / "._a.flac").unlink()
    code, err = _run(["encode", folder, tmp_path / "vq"], capsys)
    assert err == f"vqcodec: error: {folder}: no audio or image files found (1 file or folder whose name begins " \
                  "with '.' is left out)\n", err
    shutil.rmtree(folder / "sub")
    code, err = _run(["encode", folder, tmp_path / "vq"], capsys)
    assert err == f"vqcodec: error: {folder}: no audio or image files found\n", err


def test_a_folder_of_vq_files_without_q_or_a_rate_skips_copies_and_notes_a_change_of_coding(tmp_path, capsys):
    """`encode VQ_FOLDER OUT` without -q, --bitrate or --bpp wrote each file again without a word, copies
    among them, which one file's `encode` refuses."""
    golden = DATA / "golden"
    folder = tmp_path / "vq"
    folder.mkdir()
    shutil.copy(golden / "golden_audio_prior.vq", folder / "prior.vq")
    shutil.copy(golden / "golden_audio_fixed.vq", folder / "fixed.vq")
    model = ["-m", golden / "golden_audio.safetensors"]
    code, err = _run(["encode", folder, tmp_path / "out", *model], capsys)
    fixed, written = folder / "fixed.vq", tmp_path / "out" / "fixed.vq"
    assert code == 1 and err.splitlines() == [
        "vqcodec: note: 1 .vq file recoded at its own quality, its codes kept as they are and coded from fixed-width "
        f"to prior range coding ({fixed.stat().st_size} -> {written.stat().st_size} bytes); -q, --bitrate or --bpp "
        "make a smaller file",
        f"skipping {folder / 'prior.vq'}: its codes would be kept and coded as they are, and the output be a copy: "
        "encode recodes a .vq file to a lower -q, --bitrate or --bpp",
        f"recoded 1 file, {written.stat().st_size} bytes into {tmp_path / 'out'}",
        "vqcodec: error: 1 of 2 files could not be recoded (listed above)"], err
    assert written.read_bytes() == (golden / "golden_audio_prior.vq").read_bytes()
    assert not (tmp_path / "out" / "prior.vq").exists()

    code, err = _run(["encode", folder, tmp_path / "q", *model, "-q", "4"], capsys)  # asked for: copies, no word
    assert code == 0 and "note" not in err and "skipping" not in err, err


def test_a_vq_file_beyond_the_memory_this_process_may_use_is_skipped_by_the_folder_commands(tmp_path, monkeypatch,
                                                                                           capsys):
    """Each .vq file of a folder was read whole (Path.read_bytes) without the check of read_vq_stream: one larger
    than the memory this process may use was read until that ran out."""
    import vqcodec.memory

    golden = DATA / "golden"
    folder = tmp_path / "vq"
    folder.mkdir()
    shutil.copy(golden / "golden_audio_fixed.vq", folder / "small.vq")
    header = vqformat.parse_header((folder / "small.vq").read_bytes())
    (folder / "big.vq").write_bytes(vqformat.build_file(header, [bytes(1 << 20)] * header.chunk_count))
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 2 << 20)
    refused = (f"skipping {folder / 'big.vq'}: the .vq file takes 0.0 GB, more than the memory this process may use "
               "(0.0 GB); a .vq file is read into memory whole")
    for command, options in (("encode", ["-q", "1"]), ("decode", []), ("codes", [])):
        out = tmp_path / command
        code, err = _run([command, folder, out, "-m", golden / "golden_audio.safetensors", *options], capsys)
        assert code == 1 and refused in err.splitlines(), (command, err)
        assert not any(path.stem == "big" for path in out.rglob("*")), command


def test_a_folder_of_vq_files_whose_coding_changes_says_so_in_one_note(tmp_path, capsys):
    """`encode VQ_FOLDER OUT` without -q, --bitrate or --bpp printed one note per file whose coding changed:
    hundreds of lines for a folder of hundreds of files."""
    golden = DATA / "golden"
    folder = tmp_path / "vq"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.vq", "b.vq", "sub/c.vq"):
        shutil.copy(golden / "golden_audio_fixed.vq", folder / name)
    shutil.copy(golden / "golden_audio_prior.vq", folder / "copy.vq")  # skipped, so not counted
    code, err = _run(["encode", folder, tmp_path / "out", "-m", golden / "golden_audio.safetensors"], capsys)
    size, written = (golden / "golden_audio_fixed.vq").stat().st_size, (tmp_path / "out" / "a.vq").stat().st_size
    assert code == 1 and err.splitlines()[:2] == [
        "vqcodec: note: 3 .vq files recoded at their own quality, their codes kept as they are and coded from "
        f"fixed-width to prior range coding ({3 * size} -> {3 * written} bytes); -q, --bitrate or --bpp make smaller "
        "files", f"skipping {folder / 'copy.vq'}: its codes would be kept and coded as they are, and the output be a "
        "copy: encode recodes a .vq file to a lower -q, --bitrate or --bpp"], err


def test_the_folder_note_of_changed_codings_counts_each_change_and_only_the_files_written(capsys):
    from vqcodec.cli import _say_folder_codes_kept

    changes = {Path("a.vq"): ("from fixed-width to prior range coding", 100, 10),
               Path("b.vq"): ("in prior range coding again, under this model's prior", 50, 40),
               Path("c.vq"): ("from fixed-width to prior range coding", 100, 10),
               Path("d.vq"): ("from fixed-width to prior range coding", 100, 10)}
    _say_folder_codes_kept(changes, [(Path("d.vq"), "cannot read or write out/d.vq (No space left on device)")])
    assert capsys.readouterr().err == (
        "vqcodec: note: 3 .vq files recoded at their own quality, their codes kept as they are and coded from "
        "fixed-width to prior range coding (2 files), in prior range coding again, under this model's prior (1 file) "
        "(250 -> 60 bytes); -q, --bitrate or --bpp make smaller files\n")
    _say_folder_codes_kept(changes, [(Path(name), "") for name in ("a.vq", "b.vq", "c.vq", "d.vq")])
    assert capsys.readouterr().err == ""


def test_a_system_error_without_an_errno_is_named_by_its_words_not_none(tmp_path, capsys, monkeypatch):
    """An OSError raised without an errno (OSError("custom"), as a file system library or a wrapper may raise one)
    has no strerror: the messages that gave only its strerror said '(None)'."""
    from vqcodec import cli as cli_module
    from vqcodec import fileinfo, folders
    from vqcodec.fileinfo import read_info

    def refuse(*args, **kwargs):
        raise OSError("custom")

    source = tmp_path / "a.vq"
    source.write_bytes(b"x")
    monkeypatch.setattr(cli_module, "_input_stream", refuse)
    assert _run(["info", source], capsys) == (1, f"vqcodec: error: {source}: cannot read (custom)\n")
    monkeypatch.setattr(fileinfo, "read_vq_file", refuse)
    with pytest.raises(VQCodecError) as raised:
        read_info(source)
    assert str(raised.value) == f"cannot read {source}: custom"
    monkeypatch.setattr(folders, "open", refuse, raising=False)
    assert folders.read_headers([source], folders.HeaderBytes()) == ({}, [(source, "cannot read (custom)")])


def test_a_folder_run_leaves_out_the_files_its_stdout_and_stderr_go_to(two_recordings, tiny_model_path, tmp_path):
    """`encode rec/ out/ > rec/log.wav 2> rec/errors.wav`: the shell makes both files before the run, which took
    them for recordings of the folder (each skipped as empty, the run's status 1, its own log read as media):
    the files a run's stdout and stderr go to are its output, not its input, and are left out of the walk."""
    import subprocess

    from conftest import start_cli

    out = tmp_path / "out"
    with open(two_recordings / "log.wav", "wb") as log, open(two_recordings / "errors.wav", "wb") as errors:
        code = start_cli("encode", two_recordings, out, "-q", "1", "-m", tiny_model_path, stdin=subprocess.DEVNULL,
                         stdout=log, stderr=errors).wait(timeout=300)
    said = (two_recordings / "errors.wav").read_text()
    assert code == 0 and "encoded 2 files" in said and "Traceback" not in said, said
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.vq")) == ["a.vq", "sub/b.vq"]


def test_a_link_to_nothing_and_a_fifo_are_skipped_with_a_line(two_recordings, tmp_path, capsys):
    """A folder run left out a symbolic link to nothing (its data moved away) and a FIFO without a word, and
    exited 0; each is now skipped with why, the other files coded, and the run exits with status 1. A hidden
    one stays left out silently, and a name of another kind (notes.txt) too."""
    moved = tmp_path / "moved" / "x.wav"
    (two_recordings / "x.wav").symlink_to(moved)
    os.mkfifo(two_recordings / "sub" / "y.flac")
    (two_recordings / ".hidden.wav").symlink_to(moved)
    (two_recordings / "notes.txt").symlink_to(moved)
    skipped = [f"skipping {two_recordings / 'sub' / 'y.flac'}: not a regular file (a pipe, a socket or a device)",
               f"skipping {two_recordings / 'x.wav'}: broken symbolic link (to {moved})"]
    for command, suffix, verb in (("encode", ".vq", "encoded"), ("codes", ".npy", "coded")):
        out = tmp_path / command
        code, err = _run([command, two_recordings, out], capsys)
        lines = err.splitlines()
        assert code == 1, err
        assert [line for line in lines if line.startswith("skipping")] == skipped, command
        assert lines[-1] == f"vqcodec: error: 2 of 4 files could not be {verb} (listed above)"
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob(f"*{suffix}")) == [f"a{suffix}",
                                                                                         f"sub/b{suffix}"]
    vq = tmp_path / "encode"
    (vq / "z.vq").symlink_to(tmp_path / "moved" / "z.vq")
    os.mkfifo(vq / "sub" / "w.vq")
    code, err = _run(["decode", vq, tmp_path / "decoded"], capsys)
    assert code == 1, err
    assert [line for line in err.splitlines() if line.startswith("skipping")] == [
        f"skipping {vq / 'sub' / 'w.vq'}: not a regular file (a pipe, a socket or a device)",
        f"skipping {vq / 'z.vq'}: broken symbolic link (to {tmp_path / 'moved' / 'z.vq'})"]
    assert sorted(p.name for p in (tmp_path / "decoded").rglob("*.wav")) == ["a.wav", "b.wav"]


def test_a_folder_of_links_to_nothing_alone_says_so(tmp_path, capsys):
    """A folder whose media were all links to nothing (its data moved away) or FIFOs said only 'no audio or image
    files found', as if it were empty; the error now names the first with why, and how many more there are, beside
    what is hidden."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    moved = tmp_path / "moved"
    (folder / "x.wav").symlink_to(moved / "x.wav")
    os.mkfifo(folder / "sub" / "y.flac")
    (folder / "notes.txt").symlink_to(moved / "notes.txt")  # not a name of the kind sought: not counted
    (folder / ".hidden.wav").symlink_to(moved / "x.wav")
    first = f"{folder / 'sub' / 'y.flac'}: not a regular file (a pipe, a socket or a device)"
    hidden = "1 file or folder whose name begins with '.' is left out"
    for args, found in ((["encode", folder, tmp_path / "vq"], "no audio or image files found"),
                        (["train", folder, "--out", tmp_path / "run", "--kind", "audio", "--max-steps", "1"],
                         "no audio files found")):
        code, err = _run(args, capsys)
        assert (code, err) == (1, f"vqcodec: error: {folder}: {found} ({first}, and 1 other name that is not a "
                                  f"regular file; {hidden})\n")
    (folder / "z.vq").symlink_to(moved / "z.vq")
    code, err = _run(["decode", folder, tmp_path / "wav"], capsys)
    assert (code, err) == (1, f"vqcodec: error: {folder}: no .vq files found ({folder / 'z.vq'}: broken symbolic "
                              f"link (to {moved / 'z.vq'}); {hidden})\n")
    os.mkfifo(folder / "sub" / "z.flac")  # two others: the plural, as README quotes it
    code, err = _run(["encode", folder, tmp_path / "vq"], capsys)
    assert (code, err) == (1, f"vqcodec: error: {folder}: no audio or image files found ({first}, and 2 other names "
                              f"that are not regular files; {hidden})\n")
    assert not (tmp_path / "vq").exists() and not (tmp_path / "wav").exists() and not (tmp_path / "run").exists()


def test_encode_tree_encodes_a_folder_as_the_command_does(codec, tiny_model_path, two_recordings, tmp_path):
    """vqcodec.folders.encode_tree is `vqcodec encode FOLDER OUT` in Python: the walk, the mirrored .vq names and the
    report, each file coded as the one-file encode codes it; a model's path is loaded as Codec.load loads it."""
    from vqcodec.folders import encode_tree

    (two_recordings / ".hidden.wav").write_bytes(b"left out")
    report = encode_tree(codec, two_recordings, tmp_path / "out", quality=2)
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert written == ["a.vq", "sub", "sub/b.vq"]
    for name, source in (("a.vq", "a.flac"), ("sub/b.vq", "sub/b.wav")):
        assert (tmp_path / "out" / name).read_bytes() == codec.encode_audio_file(two_recordings / source, 2)
    assert (report.kind, report.written, report.skipped, report.set_aside) == ("audio", 2, [], [])
    assert report.bytes == sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.vq"))
    assert report.seconds == pytest.approx(2.0)
    by_path = encode_tree(str(tiny_model_path), two_recordings, tmp_path / "again", quality=2)
    assert by_path.written == 2 and (tmp_path / "again" / "a.vq").read_bytes() == (tmp_path / "out" / "a.vq").read_bytes()


def _loader_that_records(codec):
    """A codec loader for the *_tree functions that gives `codec` and records each kind it is asked for."""
    asked = []

    def load(kind):
        asked.append(kind)
        return codec
    return load, asked


def test_encode_tree_refuses_existing_outputs_before_any_model_loads(codec, two_recordings, tmp_path):
    """An output that exists was refused before any work by the command alone (--force); encode_tree refuses it
    as the command does, before it asks for the codec, and replaces it with replace=True."""
    from vqcodec.folders import encode_tree

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "b.vq").write_bytes(b"kept")
    load, asked = _loader_that_records(codec)
    with pytest.raises(VQCodecError, match=re.escape(f"{out / 'sub' / 'b.vq'} exists; pass replace=True to "
                                                     "overwrite it")):
        encode_tree(load, two_recordings, out, quality=1)
    assert asked == [] and not (out / "a.vq").exists() and (out / "sub" / "b.vq").read_bytes() == b"kept"
    report = encode_tree(load, two_recordings, out, quality=1, replace=True)
    assert asked == ["audio"] and report.written == 2 and (out / "sub" / "b.vq").read_bytes() != b"kept"


def test_encode_tree_refuses_a_codec_of_another_kind_a_file_as_out_and_a_level_or_rate_no_file_takes(codec, two_recordings, tmp_path):
    """The refusals of `vqcodec encode FOLDER OUT`, worded alike, before anything is written."""
    from vqcodec.folders import encode_tree

    with pytest.raises(VQCodecError, match=r"^model tiny codes audio, but the input is an image$"):
        encode_tree(lambda kind: codec, DATA, tmp_path / "out", kind="image")  # the photos of tests/data
    with pytest.raises(VQCodecError, match=re.escape(f"{two_recordings}: no image files found (only audio files)")):
        encode_tree(codec, two_recordings, tmp_path / "out", kind="image")
    with pytest.raises(VQCodecError, match=re.escape("kind must be 'audio' or 'image' (or None: the folder's), not "
                                                     "'video'")):
        encode_tree(codec, two_recordings, tmp_path / "out", kind="video")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(VQCodecError, match=re.escape(f"{tmp_path / 'file'} exists and is not a folder")):
        encode_tree(codec, two_recordings, tmp_path / "file")
    # a level or rate no file can take was refused by each file in turn: every file skipped, an empty report
    with pytest.raises(VQCodecError, match=r"^quality must be a whole number 1\.\.\d+ for model tiny, got 99$"):
        encode_tree(codec, two_recordings, tmp_path / "out", quality=99)
    with pytest.raises(VQCodecError, match=r"^the max_rate must be a positive number of kbps, not -1$"):
        encode_tree(codec, two_recordings, tmp_path / "out", max_rate=-1)  # "the bitrate" named no argument
    with pytest.raises(VQCodecError, match=r"^the max_rate must be a positive number of bits per pixel, not 0$"):
        encode_tree(str(GOLDEN_IMAGE), DATA, tmp_path / "out", max_rate=0)
    assert not (tmp_path / "out").exists()


def test_encode_tree_warns_of_a_recording_above_full_scale_as_code_folder_does(codec, signal, tiny_model_path,
                                                                             tmp_path, capsys):
    """encode_tree gives a recording's level warning to `on_warning(line)`, else issues it as a UserWarning, as
    code_folder, codes_of_media_tree and decode_tree give theirs; it took no on_warning, and gave the warning to
    `log` as the command's line. The command's line is as it was."""
    from vqcodec.folders import encode_tree

    folder = tmp_path / "recordings"
    folder.mkdir()
    soundfile.write(folder / "loud.wav", signal(1, 1600, 16000).T * 2 ** 15, 16000, subtype="FLOAT")
    soundfile.write(folder / "quiet.wav", signal(1, 1600, 16000).T, 16000, subtype="FLOAT")
    logged = []
    with pytest.warns(UserWarning) as caught:
        encode_tree(codec, folder, tmp_path / "warned", quality=1, log=logged.append)
    assert [str(item.message).split(" is coded at")[0] for item in caught] == [str(folder / "loud.wav")]
    assert logged == []
    told = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # told, not also issued
        encode_tree(codec, folder, tmp_path / "told", quality=1, log=logged.append, on_warning=told.append)
    assert len(told) == 1 and told[0].startswith(f"{folder / 'loud.wav'} is coded at") and logged == []
    with pytest.raises(VQCodecError, match="^on_warning must be a function or None, not 'no'$"):
        encode_tree(codec, folder, tmp_path / "refused", on_warning="no")
    assert not (tmp_path / "refused").exists()
    code, err = _run(["encode", folder, tmp_path / "cli", "-m", tiny_model_path, "-q", "1"], capsys)
    assert code == 0 and err.splitlines()[:-1] == [f"vqcodec: warning: {told[0]}"], err


def test_decode_tree_decodes_a_folder_as_the_command_does(codec, tiny_model_path, two_recordings, tmp_path):
    """vqcodec.folders.decode_tree is `vqcodec decode FOLDER OUT` in Python: the .vq files walked, each decoded at
    its relative path in the format asked for, as the one-file decode writes it."""
    from vqcodec.folders import decode_tree, encode_tree

    encode_tree(codec, two_recordings, tmp_path / "vq", quality=2)
    report = decode_tree(tmp_path / "vq", tmp_path / "out", format="flac", model=tiny_model_path)
    assert (report.written, report.skipped, report.set_aside) == (2, [], [])
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")) == [
        "a.flac", "sub/b.flac"]
    codec.decode_audio_file((tmp_path / "vq" / "sub" / "b.vq").read_bytes(), tmp_path / "one.flac")
    assert (tmp_path / "out" / "sub" / "b.flac").read_bytes() == (tmp_path / "one.flac").read_bytes()
    assert report.bytes == sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.flac"))


def test_decode_tree_refuses_before_any_work_as_the_command_does(codec, tiny_model_path, two_recordings, tmp_path):
    """A format of another kind than the folder's files, and existing outputs, are refused before any model loads,
    worded with the Python arguments."""
    from vqcodec.folders import decode_tree, encode_tree

    encode_tree(codec, two_recordings, tmp_path / "vq", quality=1)
    with pytest.raises(VQCodecError, match=re.escape(f"format webp is an image format, and the .vq files of "
                                                     f"{tmp_path / 'vq'} hold audio only")):
        decode_tree(tmp_path / "vq", tmp_path / "out", format="webp", model=tiny_model_path)
    (tmp_path / "photos").mkdir()
    shutil.copy(DATA / "golden" / "golden_image_fixed.vq", tmp_path / "photos")
    with pytest.raises(VQCodecError, match=re.escape(f"rate is for audio, and the .vq files of {tmp_path / 'photos'} "
                                                     "hold images only")):
        decode_tree(tmp_path / "photos", tmp_path / "out", rate=8000)
    with pytest.raises(VQCodecError, match=r"^the sample rate must be a whole number of Hz from 1 to \d+, not -5$"):
        decode_tree(tmp_path / "vq", tmp_path / "out", rate=-5, model=tiny_model_path)
    with pytest.raises(VQCodecError, match=r"^format is a name such as FLAC \(a str\), not 5$"):  # an AttributeError
        decode_tree(tmp_path / "vq", tmp_path / "out", format=5, model=tiny_model_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.wav").write_bytes(b"kept")
    with pytest.raises(VQCodecError, match=re.escape(f"{tmp_path / 'out' / 'a.wav'} exists; pass replace=True")):
        decode_tree(tmp_path / "vq", tmp_path / "out", model="not a model")  # before the model is looked for
    assert sorted(os.listdir(tmp_path / "out")) == ["a.wav"]


def test_decode_tree_sets_aside_files_whose_model_is_not_installed(codec, two_recordings, tmp_path):
    """Without model=, the files whose model is not installed were set aside, one group per model, by the command
    alone: decode_tree does it, and refuses a folder all of whose files name one such model."""
    from vqcodec.folders import decode_tree, encode_tree

    encode_tree(codec, two_recordings, tmp_path / "vq", quality=1)
    with pytest.raises(VQCodecError, match=re.escape(f"2 .vq files of {tmp_path / 'vq'}: no installed model has id "
                                                     f"{codec.model_id.hex()}")):
        decode_tree(tmp_path / "vq", tmp_path / "out")
    (tmp_path / "vq" / "broken.vq").write_bytes(b"not a .vq file")
    report = decode_tree(tmp_path / "vq", tmp_path / "out")
    assert report.written == 0 and not (tmp_path / "out").exists()
    assert [sorted(p.name for p in paths) for paths, _ in report.set_aside] == [["a.vq", "b.vq"], ["broken.vq"]]
    assert report.set_aside[0][1].startswith(f"no installed model has id {codec.model_id.hex()}")


def test_each_folder_command_of_vq_files_reads_each_header_once(codec, tiny_model_path, other_model_path,
                                                                two_recordings, tmp_path, monkeypatch):
    """decode_tree, recode_tree and codes_of_vq_tree read the header of each .vq file two or three times before their
    run (for the kinds and formats, the models set aside, a rate's kind, a depth weight's codecs, the advice of a model
    folder, the files a resume keeps): once now, whatever they go on to do."""
    from collections import Counter

    from vqcodec import folders

    vq = tmp_path / "vq"
    folders.encode_tree(codec, two_recordings, vq, quality=2)
    (vq / "broken.vq").write_bytes(b"not a .vq file")
    files = sorted(vq.rglob("*.vq"))
    models = tmp_path / "models"  # a folder of two models, refused naming the one that wrote the files
    models.mkdir()
    for path in (tiny_model_path, other_model_path):
        for suffix in (".safetensors", ".json"):
            shutil.copy(path.with_suffix(suffix), models)
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tiny_model_path.parent))
    reads = Counter()
    read = folders._header_bytes
    monkeypatch.setattr(folders, "_header_bytes", lambda path: reads.update([path]) or read(path))
    done = {"decode": lambda: folders.decode_tree(vq, tmp_path / "decoded"),
            "recode at a rate": lambda: folders.recode_tree(vq, tmp_path / "recoded", max_kbps=12.0),
            "codes": lambda: folders.codes_of_vq_tree(vq, tmp_path / "codes")}
    refused = {"decode -m FOLDER": lambda: folders.decode_tree(vq, tmp_path / "refused", model=models),
               "recode with a depth weight": lambda: folders.recode_tree(vq, tmp_path / "refused", max_kbps=12.0,
                                                                          depth_weight=1.0)}  # tiny has no prior
    for name, run in done.items():
        reads.clear()
        report = run()
        left = [path for path, _ in report.skipped] + [path for paths, _ in report.set_aside for path in paths]
        assert (report.written, left) == (2, [vq / "broken.vq"]), name
        assert reads == Counter(files), name
    manifest = json.loads((tmp_path / "codes" / "codes.json").read_text())  # as a run stopped after a.vq leaves it
    (tmp_path / "codes" / "codes.json").write_text(json.dumps({**manifest, "files": manifest["files"][:1],
                                                               "stopped": True}))
    reads.clear()
    said = []
    report = folders.codes_of_vq_tree(vq, tmp_path / "codes", resume=True, log=said.append)
    assert said == ["resumed: 1 file kept, 2 to code"] and report.written == 2  # broken.vq again
    assert reads == Counter(files), "codes --resume"
    for name, run in refused.items():
        reads.clear()
        with pytest.raises(VQCodecError):
            run()
        assert reads == Counter(files), name
    assert not (tmp_path / "refused").exists()


def test_each_folder_command_of_vq_files_looks_up_the_installed_model_once_for_its_files(codec, tiny_model_path,
                                                                                        two_recordings, tmp_path,
                                                                                        monkeypatch):
    """Without a model given, the model that reads each .vq file was looked up for every file in the run
    (registry.model_for_file, which lists the installed models: their NAME.json and weights' header read again), after
    the lookup that sets aside the files of models not installed: once for the files of each model id and prior now,
    for both."""
    from vqcodec import folders, registry

    vq = tmp_path / "vq"
    folders.encode_tree(codec, two_recordings, vq, quality=2)
    shutil.copy(vq / "a.vq", vq / "c.vq")
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(tiny_model_path.parent))
    listings = []
    listed = registry.list_models
    monkeypatch.setattr(registry, "list_models", lambda *args, **kwargs: listings.append(1) or listed(*args, **kwargs))
    for name, run in {"decode": lambda: folders.decode_tree(vq, tmp_path / "decoded"),
                      "recode": lambda: folders.recode_tree(vq, tmp_path / "recoded", quality=1),
                      "codes": lambda: folders.codes_of_vq_tree(vq, tmp_path / "codes")}.items():
        listings.clear()
        assert run().written == 3, name
        assert len(listings) == 1, name  # the files' one model


def test_codes_resume_of_vq_files_counts_the_kept_arrays_as_it_checked_them(codec, tiny_model_path, two_recordings,
                                                                             tmp_path, monkeypatch):
    """A resume of codes_of_vq_tree checked each kept array (its header and size), then took its size again (stat):
    an array removed in between stopped the run with a FileNotFoundError. Its size as checked is counted now, as a
    resume of a folder of media counts it."""
    from vqcodec import folders, tokens

    vq, out = tmp_path / "vq", tmp_path / "codes"
    folders.encode_tree(codec, two_recordings, vq, quality=2)
    folders.codes_of_vq_tree(vq, out, model=tiny_model_path)
    kept_bytes = (out / "a.npy").stat().st_size
    manifest = json.loads((out / "codes.json").read_text())  # as a run stopped after a.vq leaves it
    (out / "codes.json").write_text(json.dumps({**manifest, "files": manifest["files"][:1], "stopped": True}))
    checked = tokens.stopped_vq_run_entries

    def removed_once_checked(*args, **kwargs):
        entries = checked(*args, **kwargs)
        (out / "a.npy").unlink()
        return entries
    monkeypatch.setattr(tokens, "stopped_vq_run_entries", removed_once_checked)
    report = folders.codes_of_vq_tree(vq, out, model=tiny_model_path, resume=True)
    assert report.written == 2 and report.bytes == kept_bytes + (out / "sub" / "b.npy").stat().st_size


def _opens_counted(monkeypatch) -> Counter:
    """A Counter of the files opened from now on (by builtins.open and os.open), by path."""
    import builtins

    opens = Counter()
    for module, real in ((builtins, builtins.open), (os, os.open)):
        def counted(path, *args, real=real, **kwargs):
            if isinstance(path, (str, os.PathLike)):
                opens.update([Path(os.fsdecode(path))])
            return real(path, *args, **kwargs)
        monkeypatch.setattr(module, "open", counted)
    return opens


def test_codes_of_vq_tree_opens_each_file_once_as_it_codes_it(codec, tiny_model_path, two_recordings, tmp_path,
                                                                monkeypatch):
    """codes_folder opened each .vq file twice, reading it whole both times: to hash it for codes.json
    (tokens.stamp_before_reading), then to code it. It reads it once now, the hash of the bytes it codes; codes.json
    records the same stamp of each file, and a resume keeps them."""
    from vqcodec import folders
    from vqcodec.tokens import input_stamp

    vq = tmp_path / "vq"
    folders.encode_tree(codec, two_recordings, vq, quality=2)
    files = sorted(vq.rglob("*.vq"))
    opens = _opens_counted(monkeypatch)
    report = folders.codes_of_vq_tree(vq, tmp_path / "codes", model=tiny_model_path)  # no header read before the run
    monkeypatch.undo()
    assert report.written == 2 and {path: opens[path] for path in files} == dict.fromkeys(files, 1)
    entries = json.loads((tmp_path / "codes" / "codes.json").read_text())["files"]
    stamps = [{key: entry[key] for key in ("file_size", "file_mtime_ns", "file_blake2b")} for entry in entries]
    assert stamps == [input_stamp(path) for path in files]


def test_recode_tree_recodes_a_folder_of_vq_files_as_the_command_does(codec, tiny_model_path, two_recordings,
                                                                      tmp_path):
    """vqcodec.folders.recode_tree is `vqcodec encode FOLDER OUT` of a folder of .vq files in Python: quality is the
    most codebooks a file keeps (one of fewer keeps its own, a rule of the command alone before), each file recoded as
    Codec.recode recodes it."""
    from vqcodec.folders import recode_tree

    (tmp_path / "vq" / "sub").mkdir(parents=True)
    (tmp_path / "vq" / "a.vq").write_bytes(codec.encode_audio_file(two_recordings / "a.flac", 3))
    (tmp_path / "vq" / "sub" / "b.vq").write_bytes(codec.encode_audio_file(two_recordings / "sub" / "b.wav", 1))
    report = recode_tree(tmp_path / "vq", tmp_path / "out", quality=2, model=tiny_model_path)
    assert (report.written, report.skipped, report.set_aside) == (2, [], [])
    assert (tmp_path / "out" / "a.vq").read_bytes() == codec.recode((tmp_path / "vq" / "a.vq").read_bytes(), 2)
    assert vqformat.parse_header((tmp_path / "out" / "sub" / "b.vq").read_bytes()).quality == 1
    assert report.bytes == sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.vq"))


def test_recode_tree_refuses_what_the_command_refuses(codec, tiny_model_path, two_recordings, tmp_path):
    """A depth weight that fixed-width coding cannot use is refused before any file, worded with the Python
    arguments; without a quality or a rate a recoding that would be a copy is skipped, saying what makes one."""
    from vqcodec.folders import recode_tree

    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "a.vq").write_bytes(codec.encode_audio_file(two_recordings / "a.flac", 2))
    with pytest.raises(VQCodecError, match=re.escape("depth_weight weighs bits under the model's prior, for "
                                                     "entropy-coded files, but these files are coded fixed-width: "
                                                     "coding='fixed'")):
        recode_tree(tmp_path / "vq", tmp_path / "out", quality=1, depth_weight=1.0, model=tiny_model_path,
                    coding="fixed")
    assert not (tmp_path / "out").exists()
    for setting, value, said in (("quality", 0, "quality must be a whole number from 1 up, not 0"),
                                 ("max_kbps", -1, "the max_kbps must be a positive number of kbps, not -1"),
                                 ("max_bpp", float("nan"), "the max_bpp must be a positive number of bits per pixel"),
                                 ("depth_weight", -1, "depth_weight must be a number from 0 to 100, not -1"),
                                 ("max_bpp", 1.0, f"max_bpp is for images, and the .vq files of {tmp_path / 'vq'} "
                                                  "hold audio only: use max_kbps")):
        with pytest.raises(VQCodecError, match="^" + re.escape(said)):  # once, not every file skipped for it
            recode_tree(tmp_path / "vq", tmp_path / "out", model=tiny_model_path, **{setting: value})
    assert not (tmp_path / "out").exists()
    report = recode_tree(tmp_path / "vq", tmp_path / "out", model=tiny_model_path)
    assert report.written == 0 and report.skipped == [(tmp_path / "vq" / "a.vq", (
        "its codes would be kept and coded as they are, and the output be a copy: recode_tree recodes a .vq file to a "
        "lower quality, max_kbps or max_bpp"))]


def test_codes_of_vq_tree_writes_the_codes_of_a_folder_of_vq_files_as_the_command_does(codec, tiny_model_path,
                                                                                       two_recordings, tmp_path):
    """vqcodec.folders.codes_of_vq_tree is `vqcodec codes FOLDER OUT` of a folder of .vq files in Python: an array
    per file at its relative path, the codes Codec.read_codes reads, and codes.json; a resume of a run that finished, a
    rule of the command alone before, does nothing and says so."""
    import json

    from vqcodec.folders import codes_of_vq_tree, encode_tree

    encode_tree(codec, two_recordings, tmp_path / "vq", quality=2)
    report = codes_of_vq_tree(tmp_path / "vq", tmp_path / "tokens", model=tiny_model_path)
    assert (report.written, report.skipped, report.set_aside) == (2, [], [])
    _, codes = codec.read_codes((tmp_path / "vq" / "sub" / "b.vq").read_bytes())
    assert np.array_equal(np.load(tmp_path / "tokens" / "sub" / "b.npy"), codes)
    manifest = json.loads((tmp_path / "tokens" / "codes.json").read_text())
    assert [entry["file"] for entry in manifest["files"]] == ["a.vq", "sub/b.vq"] and manifest["skipped"] == []
    said = []
    assert codes_of_vq_tree(tmp_path / "vq", tmp_path / "tokens", model=tiny_model_path, resume=True,
                            log=said.append) is None
    assert said == [f"nothing to resume: {tmp_path / 'tokens' / 'codes.json'} is of a run that finished; replace=True "
                    "codes the folder again"]


def test_codes_of_vq_tree_refuses_an_existing_codes_json_before_any_model_loads(codec, two_recordings, tmp_path):
    from vqcodec.folders import codes_of_vq_tree, encode_tree

    encode_tree(codec, two_recordings, tmp_path / "vq", quality=1)
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "codes.json").write_text("{}")
    with pytest.raises(VQCodecError, match=re.escape(f"{tmp_path / 'tokens' / 'codes.json'} exists; pass "
                                                     "replace=True to overwrite it")):
        codes_of_vq_tree(tmp_path / "vq", tmp_path / "tokens", model="not a model")
    with pytest.raises(VQCodecError, match="^resume=True goes on with a stopped run, replace=True starts again"):
        codes_of_vq_tree(tmp_path / "vq", tmp_path / "tokens", replace=True, resume=True)
    assert sorted(os.listdir(tmp_path / "tokens")) == ["codes.json"]


def test_the_folder_functions_are_named_for_their_command_and_what_the_folder_holds():
    """One *_tree function per folder command, `codes` split by what the folder holds, media or .vq files; the names
    codes_tree and code_media_tree, which said neither (and differed by one letter), are gone."""
    import vqcodec.folders as folders

    named = {"encode_tree", "decode_tree", "recode_tree", "codes_of_media_tree", "codes_of_vq_tree"}
    assert {name for name in dir(folders) if name.endswith("_tree") and not name.startswith("_")} == named


def test_the_folder_functions_take_all_but_codec_folder_and_out_by_name():
    """A setting given by position (decode_tree(folder, out, "flac", 8000, True): which is the salvage?) is refused:
    the *_tree functions take the codec, where they code media, the folder and `out` by position, the rest by name,
    the callbacks last, in one order: the function's own (on_damage, on_coding_change), on_warning, log, progress
    (encode_tree and codes_of_media_tree had on_warning after progress)."""
    import inspect

    import vqcodec.folders as folders

    for name, positional in (("encode_tree", ["codec", "folder", "out"]), ("decode_tree", ["folder", "out"]),
                             ("recode_tree", ["folder", "out"]), ("codes_of_vq_tree", ["folder", "out"]),
                             ("codes_of_media_tree", ["codec", "folder", "out"])):
        parameters = inspect.signature(getattr(folders, name)).parameters.values()
        assert [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY] == positional, name
        names = [p.name for p in parameters]
        callbacks = names[min(i for i, each in enumerate(names) if each.startswith("on_") or each == "log"):]
        assert callbacks[-2:] == ["log", "progress"] and all(each.startswith("on_") for each in callbacks[:-2]), name
        assert callbacks[:-2] == sorted(callbacks[:-2], key=lambda each: each == "on_warning"), name
    with pytest.raises(TypeError, match="positional"):
        folders.decode_tree("in", "out", "flac")


def test_holds_only_vq_files_leaves_out_the_output_folder(tmp_path):
    """The rule by which encode and codes tell a folder of .vq files (recoded, or their codes read) from one of media,
    written twice in cli.py before, is folders.holds_only_vq_files."""
    from vqcodec.folders import holds_only_vq_files

    (tmp_path / "in" / "out").mkdir(parents=True)
    (tmp_path / "in" / "a.vq").write_bytes(b"")
    (tmp_path / "in" / "notes.txt").write_text("not media")
    (tmp_path / "in" / "out" / "a.wav").write_bytes(b"")
    assert holds_only_vq_files(tmp_path / "in", tmp_path / "in" / "out")
    assert not holds_only_vq_files(tmp_path / "in")
    assert not holds_only_vq_files(tmp_path / "in" / "out")


def test_codes_of_media_tree_writes_the_codes_of_a_folder_of_media_as_the_command_does(codec, two_recordings,
                                                                                      tmp_path):
    """vqcodec.folders.codes_of_media_tree is `vqcodec codes FOLDER OUT` of media in Python: the walk and the kind
    (the codec's), the arrays as codec.media_to_codes gives them and codes.json (tokens.code_folder); an array that exists
    is refused before the codec is asked for, and a resume of a run that finished does nothing and says so."""
    from vqcodec.folders import codes_of_media_tree

    (tmp_path / "tokens" / "sub").mkdir(parents=True)
    (tmp_path / "tokens" / "sub" / "b.npy").write_bytes(b"kept")
    load, asked = _loader_that_records(codec)
    with pytest.raises(VQCodecError, match=re.escape(f"{tmp_path / 'tokens' / 'sub' / 'b.npy'} exists; pass "
                                                     "replace=True to overwrite it")):
        codes_of_media_tree(load, two_recordings, tmp_path / "tokens", quality=2)
    assert asked == [] and (tmp_path / "tokens" / "sub" / "b.npy").read_bytes() == b"kept"
    report = codes_of_media_tree(load, two_recordings, tmp_path / "tokens", quality=2, replace=True)
    assert asked == ["audio"] and report.written == 2
    codes, _ = codec.media_to_codes(two_recordings / "sub" / "b.wav", 2)
    assert np.array_equal(np.load(tmp_path / "tokens" / "sub" / "b.npy"), codes)
    said = []
    assert codes_of_media_tree(codec, two_recordings, tmp_path / "tokens", quality=2, resume=True,
                               log=said.append) is None
    assert said == [f"nothing to resume: {tmp_path / 'tokens' / 'codes.json'} is of a run that finished; replace=True "
                    "codes the folder again"]
    with pytest.raises(VQCodecError, match="^resume=True goes on with a stopped run, replace=True starts again"):
        codes_of_media_tree(codec, two_recordings, tmp_path / "tokens", quality=2, replace=True, resume=True)


def test_the_codes_trees_return_a_folder_report_as_the_other_trees_do(codec, tiny_model_path, two_recordings,
                                                                       tmp_path):
    """codes_of_media_tree returned (report, manifest) and codes_of_vq_tree the report alone: both return the
    FolderReport, written, bytes and skipped alike, its arrays' entries in codes.json."""
    import json

    from vqcodec.folders import FolderReport, codes_of_media_tree, codes_of_vq_tree, encode_tree

    encode_tree(codec, two_recordings, tmp_path / "vq", quality=2)
    (two_recordings / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    (tmp_path / "vq" / "broken.vq").write_bytes(b"not a .vq file")
    of_media = codes_of_media_tree(codec, two_recordings, tmp_path / "of_media", quality=2)
    of_vq = codes_of_vq_tree(tmp_path / "vq", tmp_path / "of_vq", model=tiny_model_path)
    for report, folder, out in ((of_media, two_recordings, tmp_path / "of_media"), (of_vq, tmp_path / "vq",
                                                                                   tmp_path / "of_vq")):
        assert isinstance(report, FolderReport), report
        manifest = json.loads((out / "codes.json").read_text())
        assert report.written == len(manifest["files"]) == 2 and report.set_aside == []
        assert report.bytes == sum(path.stat().st_size for path in out.rglob("*.npy"))
        assert report.summary() == f"2 files, {report.bytes} bytes"
        assert len(report.skipped) == 1 and report.skipped[0][0].stem == "broken"
        assert report.skipped == [(folder / entry["file"], entry["reason"]) for entry in manifest["skipped"]]


def test_the_folder_functions_refuse_a_folder_or_out_that_is_no_path_or_empty(codec, two_recordings, tmp_path,
                                                                                monkeypatch):
    """folder=None or out=5 raised a bare TypeError from pathlib, and "" stood for the current folder: out="" wrote
    the outputs there, folder="" coded whatever it held. Each *_tree refuses them, as code_folder does, naming the
    argument, before anything is read or written."""
    import vqcodec.folders as folders

    monkeypatch.chdir(two_recordings)  # a folder of media and of .vq files alike: "" would find files here
    shutil.copy(DATA / "golden" / "golden_audio_fixed.vq", two_recordings / "sub" / "c.vq")
    before = sorted(two_recordings.rglob("*"))
    calls = {"encode_tree": lambda folder, out: folders.encode_tree(codec, folder, out),
             "codes_of_media_tree": lambda folder, out: folders.codes_of_media_tree(codec, folder, out),
             "decode_tree": folders.decode_tree, "recode_tree": folders.recode_tree,
             "codes_of_vq_tree": folders.codes_of_vq_tree}
    wrong = [(None, tmp_path / "out", "folder", "None"), ("", tmp_path / "out", "folder", "''"),
             (two_recordings, 5, "out", "5"), (two_recordings, "", "out", "''")]
    for call in calls.values():
        for folder, out, named, shown in wrong:
            with pytest.raises(VQCodecError, match=re.escape(f"{named} is the path of a folder (a str or Path, not "
                                                             f"empty), not {shown}")):
                call(folder, out)
    assert sorted(two_recordings.rglob("*")) == before and not (tmp_path / "out").exists()

