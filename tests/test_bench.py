"""The benchmark scripts in bench/: what their --help says they measure, and that it says what each option does."""
from __future__ import annotations

import argparse
import json
import re
import sys

import pytest

from conftest import REPO_ROOT, run_python

SCRIPTS = sorted(path.name for path in (REPO_ROOT / "bench").glob("*.py") if "ArgumentParser(" in path.read_text())

# Run in a fresh process with a script's path: runs the script as `python SCRIPT` would, but its parser's
# first parse prints the parser (description, and each option's strings and help) as JSON instead of
# parsing, and exits. Nothing the script does after parsing its options runs.
DUMP_PARSER = """
import argparse, json, os, runpy, sys
script = sys.argv[1]
sys.argv = [script]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))

def dump(parser, *args, **kwargs):
    print("PARSER " + json.dumps({
        "description": parser.description,
        "options": [{"strings": action.option_strings or [action.dest], "help": action.help}
                    for action in parser._actions]}))
    raise SystemExit(0)

argparse.ArgumentParser.parse_known_args = dump
runpy.run_path(script, run_name="__main__")
raise SystemExit("the script never parsed its options")
"""


def script_parser(script: str) -> dict:
    """The description and options of `script`'s parser, as DUMP_PARSER prints them."""
    result = run_python("-c", DUMP_PARSER, REPO_ROOT / "bench" / script, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("PARSER ")]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0][len("PARSER "):])


def undocumented(options: list[dict]) -> list[str]:
    """The options whose help is missing or blank; hidden ones (help=argparse.SUPPRESS) are documented
    on purpose as nothing."""
    return ["/".join(option["strings"]) for option in options
            if option["help"] != argparse.SUPPRESS and not (option["help"] or "").strip()]


def test_every_benchmark_script_is_checked():
    assert len(SCRIPTS) >= 20 and "speech.py" in SCRIPTS and "common.py" not in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_in_one_sentence_what_the_script_measures(script):
    """The descriptions were the docstrings' first lines, titles such as "Speech robustness benchmark:
    input level and background noise, where a codec trained on clean," (cut at the line's end), or
    whole docstrings that started with one."""
    result = run_python(REPO_ROOT / "bench" / script, "--help", text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    paragraphs = result.stdout.split("\n\n")
    description = " ".join(paragraphs[1].split())  # the one after the usage
    assert description.startswith("Measures ") and description.endswith("."), description
    assert not re.search(r"[.?!] +[A-Z]", description), f"more than one sentence: {description}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_of_every_script_has_help(script):
    """Most options of most scripts had none (memory.py's --runs, --model, --data and --out; every option
    of channels.py, folders.py, prior_headroom.py, recode.py, seek.py, weights_fp16.py and of
    common.add_model_options), so --help listed them with their metavar alone."""
    parser = script_parser(script)
    assert (parser["description"] or "").strip(), f"{script} has no description"
    assert len(parser["options"]) > 1, parser  # more than -h: the dump read the script's own parser
    assert not undocumented(parser["options"]), f"{script}: options without help: {undocumented(parser['options'])}"


def shared_model_options() -> list[dict]:
    """The options bench/common.py's add_model_options gives a parser, as DUMP_PARSER prints them (but -h)."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import common
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    parser = argparse.ArgumentParser(add_help=False)
    common.add_model_options(parser, "out.json")
    return [{"strings": action.option_strings, "help": action.help} for action in parser._actions]


def test_the_shared_model_options_have_help():
    options = shared_model_options()
    assert len(options) == 5 and not undocumented(options), options


# the scripts that measure the shipped speech and image models, with --skip-speech and --skip-images
BOTH_MODELS = [script for script in SCRIPTS if "args.skip_speech" in (REPO_ROOT / "bench" / script).read_text()]


@pytest.mark.parametrize("script", BOTH_MODELS)
def test_the_scripts_measuring_both_models_take_the_shared_options(script):
    """entropy.py and rdo.py declared their own copies, with other help (entropy.py's --out said
    "always written", where the shared one says '' writes none)."""
    assert len(BOTH_MODELS) >= 5 and "entropy.py" in BOTH_MODELS and "rdo.py" in BOTH_MODELS
    options = script_parser(script)["options"]
    for shared in shared_model_options():
        assert shared in options, f"{script}: {shared['strings']} is not common.add_model_options'"


def test_an_option_without_help_is_found():
    """The check itself: an option added without help=, or with a blank one, is reported; a hidden one is not."""
    parser = argparse.ArgumentParser(description="Measures nothing.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", help=" ")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", help="first N files")
    options = [{"strings": action.option_strings, "help": action.help} for action in parser._actions]
    assert undocumented(options) == ["--runs", "--out"]


# Runs a script as `python SCRIPT ARGS` would, with the packages named after "--" hidden (as where the bench
# extra is not installed), those named with a + there present (as empty modules), and no Opus or Codec 2
# tools on the PATH.
WITHOUT_PACKAGES = """
import importlib.machinery, os, runpy, sys, types
split = sys.argv.index("--")
script, args, packages = sys.argv[1], sys.argv[2:split], sys.argv[split + 1:]
for name in packages:
    if name.startswith("+"):
        sys.modules[name[1:]] = types.ModuleType(name[1:])
        sys.modules[name[1:]].__spec__ = importlib.machinery.ModuleSpec(name[1:], None)
    else:
        sys.modules[name] = None  # import fails, and importlib.util.find_spec finds nothing
os.environ["PATH"] = os.path.dirname(sys.executable)
sys.argv = [script, *args]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
"""
SPEECH_DATA = str(REPO_ROOT / "tests" / "data")
NEEDS = [  # script and the smallest arguments that reach a measure taken with a missing package or tool
    ("speech.py", ["--data", SPEECH_DATA, "--files", "1", "--qualities", "1", "--runs", "1", "--skip-baselines"],
     "missing Python packages: pesq pystoi"),
    ("speech.py", ["--data", SPEECH_DATA, "--files", "1", "--qualities", "1", "--runs", "1", "--plot", "x.png"],
     "missing Python packages: pesq pystoi matplotlib"),
    ("ceiling.py", ["--speech", "--data", SPEECH_DATA, "--files", "1", "--qualities", "1", "--out", ""],
     "missing Python packages: pesq pystoi"),
    ("channels.py", ["--data", SPEECH_DATA, "--music", SPEECH_DATA, "--files", "1", "--runs", "1", "--out", ""],
     "missing Python packages: pesq pystoi"),
    ("rate_control.py", ["--skip-images", "--speech", SPEECH_DATA, "--files", "1", "--kbps", "1", "--out", ""],
     "missing Python packages: pesq pystoi"),
    ("rdo.py", ["--skip-images", "--speech", SPEECH_DATA, "--files", "1", "--speech-qualities", "1",
                "--speech-weights", "0", "--out", ""], "missing Python packages: pesq pystoi"),
    ("recode.py", ["--speech", SPEECH_DATA, "--files", "1", "--kbps", "1", "--image-files", "0", "--minutes", "0",
                   "--out", ""], "missing Python packages: pesq pystoi"),
    ("weights_fp16.py", ["--files", "1", "--images", "1", "--speech-qualities", "1", "--image-qualities", "4"],
     "missing Python packages: pesq pystoi"),
    ("image.py", ["--data", SPEECH_DATA, "--qualities", "1", "--runs", "1", "--baselines", "", "--out", ""],
     "missing Python packages: matplotlib"),
    ("image.py", ["--data", SPEECH_DATA, "--qualities", "1", "--runs", "1", "--baselines", "PNG", "--out", "",
                  "--plot", ""], "unknown baseline(s) ['PNG']; choose from JPEG, WebP, AVIF"),
]


@pytest.mark.parametrize("script, args, line", NEEDS, ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(NEEDS)])
def test_a_missing_package_or_tool_is_one_line_before_any_work(script, args, line):
    """Without pesq and pystoi a speech benchmark coded its files and then stopped in a traceback where the
    first score was taken (image.py without matplotlib at the plot, after the whole run); speech.py found
    opusenc missing, and image.py an unknown --baselines name, only after measuring the codec."""
    result = run_python("-c", WITHOUT_PACKAGES, REPO_ROOT / "bench" / script, *args, "--", "pesq", "pystoi",
                        "matplotlib", text=True, timeout=300)
    if line.startswith("missing Python packages"):
        line += " (pip install '.[bench]' in the repository root)"
    assert result.returncode == 1 and result.stderr.splitlines() == [line], result.stderr[-2000:]
    assert result.stdout == ""  # before the header of a table, let alone its rows


def test_speech_baselines_without_their_tools_are_one_line_before_any_work():
    args = ["--data", SPEECH_DATA, "--files", "1", "--qualities", "1", "--runs", "1"]
    result = run_python("-c", WITHOUT_PACKAGES, REPO_ROOT / "bench" / "speech.py", *args, "--", "+pesq", "+pystoi",
                        text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert result.stderr.splitlines() == ["missing tools: opusenc opusdec c2enc c2dec (apt-get install -y opus-tools "
                                          "codec2)"], result.stderr[-2000:]


# the scripts that read the project's data folder otherwise than through common.list_files, which says it is missing
OTHER_READERS = ["prior_views.py", "prior_network.py", "prior_headroom.py", "train_speed.py", "train_data.py",
                 "train_parallel.py"]


@pytest.mark.parametrize("script", OTHER_READERS)
def test_a_missing_data_folder_is_one_line_before_any_work(script, tmp_path):
    """prior_views.py, prior_network.py, prior_headroom.py and the training benchmarks (train_speed.py,
    train_data.py, train_parallel.py, the last two from their worker processes) stopped in a traceback
    (VQCodecError: cannot read the folder ...) where the project's data folder is not there."""
    import shutil

    shutil.copytree(REPO_ROOT / "bench", tmp_path / "repo" / "bench")  # ../shared/data is then not there
    result = run_python(tmp_path / "repo" / "bench" / script, cwd=tmp_path / "repo", text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"data directory not found: {tmp_path / 'shared' / 'data' / 'speech' / 'train'}"], result.stderr[-2000:]


@pytest.mark.parametrize("script", ["train_speed.py", "train_data.py", "train_parallel.py"])
def test_a_kind_that_is_not_one_is_refused_before_any_run(script):
    """--kinds speech stopped in a traceback (KeyError: 'speech'), and one after a kind that is trained
    only after that kind's runs."""
    result = run_python(REPO_ROOT / "bench" / script, "--kinds", "speech,audio", text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "--kinds 'speech,audio': the kinds are audio and image, comma-separated"], result.stderr[-2000:]


@pytest.mark.parametrize("script, args, message", [
    ("train_speed.py", ["--runs", "0"], "argument --runs: not a whole number of at least 1: '0'"),
    ("train_data.py", ["--runs", "0"], "argument --runs: not a whole number of at least 1: '0'"),
    ("train_parallel.py", ["--runs", "0"], "argument --runs: not a whole number of at least 1: '0'"),
    ("startup.py", ["--runs", "0"], "argument --runs: not a whole number of at least 1: '0'"),
    ("startup.py", ["--cases", "encode"], "argument --cases: cases are import, load-speech, load-image, "
                                          "encode-speech, decode-speech, encode-image, decode-image, not 'encode'"),
    ("hot_paths.py", ["--cases", ","], "argument --cases: cases are depth, fit-audio, fit-image, fit-spread, beam-q4, "
                                       "beam-16, beam-1024, not ','"),
    ("train_parallel.py", ["--processes", "0,2"], "argument --processes: not a whole number of at least 1: '0'"),
    ("train_speed.py", ["--steps", "1", "--kinds", "image", "--runs", "1"],
     "argument --steps: not a whole number of at least 2: '1'"),
])
def test_counts_that_measure_nothing_are_refused_as_arguments(script, args, message):
    """--runs 0 stopped in a traceback (statistics.StatisticsError: no median for empty data), --steps 1
    after its training runs (ZeroDivisionError: a time per step over no steps), and --processes 0 in
    ZeroDivisionError (--threads modulo 0)."""
    result = run_python(REPO_ROOT / "bench" / script, *args, "--out", "", text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == f"{script}: error: {message}", \
        result.stderr[-2000:]


def test_folders_benchmark_codes_every_file_of_a_folder_read_recursively(tmp_path):
    """bench/folders.py copied the recordings it reads recursively into one folder by their names, so of
    sub/a.flac and other/a.flac one was coded (while the table counted both), and a.flac beside a.wav made
    the folder run refuse to write a.vq twice."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import folders
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    sources = [tmp_path / "sub" / "a.flac", tmp_path / "other" / "a.flac", tmp_path / "other" / "a.wav"]
    for number, path in enumerate(sources):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([number]))
    folders.copy_sources(sources, tmp_path / "in")
    copies = sorted((tmp_path / "in").iterdir())
    assert [copy.read_bytes() for copy in copies] == [b"\x00", b"\x01", b"\x02"]
    assert len({copy.stem for copy in copies}) == 3  # one .vq file each


@pytest.mark.parametrize("script, args", [
    ("speech.py", ["--files", "0", "--skip-baselines"]), ("entropy.py", ["--files", "0", "--skip-images"]),
    ("image.py", ["--images", "0", "--baselines", ""]), ("robustness.py", ["--files", "0"]),
    ("ceiling.py", ["--files", "0"]),
])
def test_a_count_of_no_files_is_refused_as_an_argument(script, args):
    """--files 0 said "no flac/wav files in FOLDER" of a folder that holds them, and --files -1 measured all
    the files but the last (the list's [:-1]); folders.py and recode.py take 0 for none, and refuse -1."""
    result = run_python(REPO_ROOT / "bench" / script, *args, "--out", "", text=True, timeout=300)
    option = {"image.py": "--images", "ceiling.py": "--images/--files"}.get(script, "--files")
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == \
        f"{script}: error: argument {option}: not a whole number of at least 1: '0'", result.stderr[-2000:]


# Parses each command given after the script (one JSON list of [script, args] per line on stdin) with its
# script's parser, in one process, stopping each script once its options are parsed; prints what each left
# unparsed or the error argparse gave.
PARSE_COMMANDS = """
import argparse, io, json, os, runpy, sys, contextlib

class Parsed(Exception):
    pass

def parse(self, args=None, namespace=None):
    namespace, extra = ORIGINAL(self, args, namespace)
    raise Parsed(extra)

ORIGINAL = argparse.ArgumentParser.parse_known_args
argparse.ArgumentParser.parse_known_args = parse
sys.path.insert(0, os.path.join(os.getcwd(), "bench"))
import common
common.vqcodec_checkout = str  # the other checkouts the commands compare with need not be here
for line in sys.stdin:
    script, args = json.loads(line)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error):
            runpy.run_path(script, run_name="__main__")
        outcome = "never parsed its options"
    except Parsed as parsed:
        outcome = f"left {parsed.args[0]} unparsed" if parsed.args[0] else "ok"
    except SystemExit:
        outcome = error.getvalue().strip().splitlines()[-1]
    except FileNotFoundError:
        outcome = "no such script"
    print(json.dumps(outcome))
"""


def documented_commands() -> list[tuple[str, str]]:
    """Each `python bench/SCRIPT ...` command that README.md and docs/ give (in backticks, or a line of its own),
    a placeholder such as <its file> given as a model name."""
    commands = []
    for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        found = (re.findall(r"`(python\s+bench/\w+\.py[^`]*)`", text)  # a backticked command may wrap a line
                 + re.findall(r"^(python bench/\w+\.py.*)$", text, re.M))
        commands += [(doc.name, " ".join(re.sub(r"<[^<>]+>", "speech16k", command).split())) for command in found]
    return list(dict.fromkeys(commands))


def test_every_documented_benchmark_command_parses_with_its_script():
    """The commands that reproduce the README's tables (and docs/') name scripts and options that exist."""
    import shlex

    commands = documented_commands()
    assert len(commands) >= 30 and ("README.md", "python bench/config_speed.py") in commands
    lines = "".join(json.dumps([str(REPO_ROOT / shlex.split(command)[1]), shlex.split(command)[2:]]) + "\n"
                    for _, command in commands)
    result = run_python("-c", PARSE_COMMANDS, input=lines, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outcomes) == len(commands), result.stdout
    assert [(doc, command, outcome) for (doc, command), outcome in zip(commands, outcomes) if outcome != "ok"] == []


@pytest.mark.parametrize("script, args", [
    ("speech.py", ["--data", SPEECH_DATA, "--files", "1", "--skip-baselines", "--model", "nosuch"]),
    ("image.py", ["--model", "nosuch", "--baselines", "", "--plot", "", "--out", ""]),
    ("robustness.py", ["--models", "nosuch", "--data", SPEECH_DATA, "--files", "1", "--out", ""]),
])
def test_a_model_that_is_not_there_is_one_line(script, args):
    """A model name that no model has stopped every benchmark in a traceback (vqcodec.errors.VQCodecError:
    unknown model 'nosuch' ...), where the vqcodec command says it in one line."""
    result = run_python("-c", WITHOUT_PACKAGES, REPO_ROOT / "bench" / script, *args, "--", "+pesq", "+pystoi",
                        "+matplotlib", text=True, timeout=300)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"{script}: error: unknown model 'nosuch' (installed: "), lines


@pytest.mark.parametrize("script, option, value", [
    ("entropy.py", "--speech-qualities", "1,two"), ("robustness.py", "--peaks", "0.5,"), ("rdo.py", "--image-weights", "q"),
    ("weights_fp16.py", "--image-qualities", "4,12.5"), ("image.py", "--qualities", ""),
])
def test_a_list_of_numbers_that_is_not_one_is_refused_as_an_argument(script, option, value):
    """A misspelt or missing value in a comma-separated list of qualities, weights or levels was met after
    the options were taken, often after a model was loaded and files read: a traceback (ValueError:
    invalid literal for int() with base 10)."""
    result = run_python(REPO_ROOT / "bench" / script, option, value, text=True, timeout=300)
    whole = "whole " if "qualities" in option else ""
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == \
        f"{script}: error: argument {option}: not a comma-separated list of {whole}numbers: {value!r}", \
        result.stderr[-2000:]


@pytest.mark.parametrize("value, message", [
    ("base_channels", "'base_channels': not field=value"),
    ("base_channels=24;res_blocks=x", "'res_blocks=x': res_blocks takes a whole number, not 'x'"),
    ("base_channel=24", "'base_channel=24': unknown field base_channel for an audio config (fields: "),
    ("base_channels=0", "'base_channels=0': base_channels must be a whole number from 2 to 4096, not 0"),
])
def test_a_config_that_is_not_one_is_refused_as_an_argument(value, message):
    """config_speed.py --configs with a value that is not 'field=number' or no AudioConfig field stopped in a
    traceback (ValueError, TypeError) after the shipped model had been timed."""
    result = run_python(REPO_ROOT / "bench" / "config_speed.py", "--configs", value, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith(
        f"config_speed.py: error: argument --configs: {message}"), result.stderr[-2000:]


@pytest.mark.parametrize("script", ["hot_paths.py", "memory.py", "startup.py"])
def test_a_source_that_is_not_a_checkout_is_refused_as_an_argument(script, tmp_path):
    """--source of a folder that is not there (the old checkout the README's commands compare with, not yet
    made) stopped in a traceback (FileNotFoundError) once its first process started, after memory.py had
    written its long recordings."""
    result = run_python(REPO_ROOT / "bench" / script, "--source", ".", "--source", tmp_path / "vqcodec-10cd7a3",
                        "--runs", "1", "--out", "", text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == (
        f"{script}: error: argument --source: {tmp_path / 'vqcodec-10cd7a3'} holds no vqcodec package: give the root "
        "of a checkout (git worktree add ../vqcodec-COMMIT COMMIT makes one)"), result.stderr[-2000:]


@pytest.mark.parametrize("script, option, value, bound", [
    ("seek.py", "--minutes", "-1", "above 0"), ("seek.py", "--minutes", "0", "above 0"),
    ("recode.py", "--minutes", "-1", "of at least 0"),
])
def test_a_length_of_no_audio_is_refused_as_an_argument(script, option, value, bound):
    """seek.py --minutes 0 (or below) stopped in a traceback (ValueError: need at least one array to
    concatenate) as it joined the recordings, and --seconds 0 only after the long file was encoded;
    recode.py takes 0 for no long recording."""
    result = run_python(REPO_ROOT / "bench" / script, option, value, "--out", "", text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == \
        f"{script}: error: argument {option}: not a number {bound}: {value!r}", result.stderr[-2000:]


@pytest.mark.parametrize("script, option, value, least", [
    ("speech.py", "--max-shift", "-1", 0), ("speech.py", "--refine", "-2", 0), ("image.py", "--refine", "-1", 0),
    ("prior_headroom.py", "--epochs", "0", 1),
])
def test_a_negative_count_is_refused_as_an_argument(script, option, value, least):
    """speech.py --max-shift -1 stopped in a traceback (ValueError: max() arg is an empty sequence) once the
    first row was coded; a negative --refine set a negative number of steps on the codec."""
    args = ["--data", SPEECH_DATA, "--files", "1", "--qualities", "1", "--runs", "1", "--skip-baselines"] \
        if script == "speech.py" else []
    result = run_python("-c", WITHOUT_PACKAGES, REPO_ROOT / "bench" / script, *args, option, value, "--out", "", "--",
                        "+pesq", "+pystoi", "+matplotlib", text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == \
        f"{script}: error: argument {option}: not a whole number of at least {least}: {value!r}", result.stderr[-2000:]


def test_list_files_leaves_out_hidden_files_as_the_folder_commands_do(tmp_path, monkeypatch):
    """common.list_files walked the data folder with rglob: a macOS ._a.flac (not audio) or a .git/ folder's
    files were benchmarked, where vqcodec's folder commands (folders.files_under) leave them out."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # common sets the benchmarks' own
    import common

    (tmp_path / "sub" / ".cache").mkdir(parents=True)
    for name in ("b.flac", "sub/a.FLAC", "._b.flac", "sub/.cache/c.flac", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert common.list_files(tmp_path, (".flac",)) == [tmp_path / "b.flac", tmp_path / "sub" / "a.FLAC"]


def test_list_files_and_find_media_say_the_names_they_pass_over_as_the_folder_commands_do(tmp_path, monkeypatch,
                                                                                         capsys):
    """folders.files_under leaves a link to nothing and a FIFO out of its list, for its caller to report: the folder
    commands say `skipping NAME: WHY` for each; the benchmarks' listings (common.list_files, and vqcodec.data's
    find_media in prior_*.py) left them out without a word."""
    import os

    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # common sets the benchmarks' own
    import common

    for name in ("a.flac", "c.flac", "e.flac"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "b.flac").symlink_to("gone.flac")
    os.mkfifo(tmp_path / "d.flac")
    (tmp_path / "x.txt").symlink_to("gone.txt")  # not of the suffixes asked for
    (tmp_path / ".h.flac").symlink_to("gone.flac")  # hidden: silent, as for the folder commands
    lines = [f"skipping {tmp_path / 'b.flac'}: broken symbolic link (to gone.flac)",
             f"skipping {tmp_path / 'd.flac'}: not a regular file (a pipe, a socket or a device)"]
    assert common.list_files(tmp_path, (".flac",)) == [tmp_path / n for n in ("a.flac", "c.flac", "e.flac")]
    assert capsys.readouterr().err.splitlines() == lines
    assert common.list_files(tmp_path, (".flac",), 2) == [tmp_path / "a.flac", tmp_path / "c.flac"]
    assert capsys.readouterr().err.splitlines() == lines[:1]  # d.flac sorts past the files taken
    assert common.find_media(tmp_path, "audio") == ("audio", [tmp_path / n for n in ("a.flac", "c.flac", "e.flac")])
    assert capsys.readouterr().err.splitlines() == lines
