"""The `vqcodec` command line: a thin layer over vqcodec.Codec."""
from __future__ import annotations

import codecs
import contextlib
import functools
import io
import json
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

import click

from . import __version__, progressline
from . import format as vqformat
from .config import MAX_CODEBOOK_SIZE, MAX_CODEBOOKS, MAX_MODEL_RATE, MIN_MODEL_RATE
from .errors import Terminated, VQCodecError, is_out_of_memory
from .folders import coding_change, decoding_model, recoder, refuse_weights_when_fixed_width
from .io import SIGNATURE_BYTES, audio_for_want_of_an_image, media_kind
from .wording import (FILE_OR_FOLDER_MISSING, NAME_BYTES, WARNING_PREFIX, command_line_wording, decimals_for,
                      json_names, kind_coded, kind_held, one_line, plural, rate_unit, reason_of, skipping)

DEFAULT_MODELS = {"audio": "speech16k", "image": "image"}

# Pillow logs some refusals at ERROR level as well as raising them (a TIFF of 99 samples a pixel), which
# Python's last-resort handler printed as a line of its own above the error line
logging.getLogger("PIL").addHandler(logging.NullHandler())


# ---------------------------------------------------------------- helpers

def _stdin():
    """stdin's binary stream, refused when it is closed (`<&-`) or a terminal, where reading would wait,
    without a prompt, for media no one can type."""
    if sys.stdin is None:
        raise VQCodecError("stdin is closed: pipe or redirect the input into it")
    if sys.stdin.isatty():
        raise VQCodecError("stdin is a terminal: pipe or redirect the input into it")
    return _blocking(sys.stdin.buffer)


def _blocking(stream):
    """`stream`, its descriptor made blocking where another process left it non-blocking (O_NONBLOCK is shared by
    all that hold it): a read of a pipe with nothing in it yet gave None, taken for a text stream or the end,
    and writes to a full one spun."""
    with contextlib.suppress(OSError, ValueError):  # no descriptor (a stream put in place of sys.stdin)
        os.set_blocking(stream.fileno(), True)
    return stream


def _refuse_closed_stdin_named(path: str) -> None:
    """Refuse stdin's name (/dev/stdin, /dev/fd/0) as the input where stdin is closed (`<&-`), as "-" is refused:
    it named no file ('/dev/stdin: no such file'), or the file this process opened next, on descriptor 0."""
    from .streams import descriptor_named

    if sys.stdin is None and (path == "/dev/stdin" or descriptor_named(path) == 0):
        _stdin()


def _input_stream(path: str):
    """stdin's binary stream for "-" (_stdin), else the file at `path` opened for reading; a terminal named
    as a file (/dev/tty, or /dev/stdin on one) is refused as stdin on one is, where reading waited without a
    prompt."""
    if path == "-":
        return contextlib.nullcontext(_stdin())
    _refuse_closed_stdin_named(path)
    stream = open(path, "rb")
    if stream.isatty():
        stream.close()
        raise VQCodecError(f"{path} is a terminal: pipe or redirect the input into it")
    return stream


def _stdout(force: bool):
    """stdout's binary stream, refused when it is closed (`>&-`), or, without --force, a terminal (as gzip
    refuses), which binary output would garble."""
    _refuse_closed_stdout()
    if sys.stdout.isatty() and not force:
        raise VQCodecError("not writing binary output to a terminal: redirect or pipe it, or pass --force")
    return _blocking(sys.stdout.buffer)


def _refuse_closed_stdout() -> None:
    """Refuse a closed stdout (`>&-`): Python's sys.stdout is None, and what is printed goes nowhere; and one on a
    model's file (_refuse_stdout_on_a_model)."""
    if sys.stdout is None:
        raise VQCodecError("stdout is closed: redirect or pipe the output")
    _refuse_stdout_on_a_model()


@contextlib.contextmanager
def _writing_stdout():
    """Write stdout in the block, flushed at its end: a write that fails (a full disk: `> /dev/full`) is
    one error naming stdout. A pipe closed early (BrokenPipeError) still ends the command quietly, and
    a closed one (`>&-`) is refused before the block runs."""
    _refuse_closed_stdout()
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise VQCodecError(f"cannot write stdout: {reason_of(exc)}") from None


def _media_source(path: str, forced: str | None = None):
    """The input of encode and codes: a checked path, or for stdin and for a FIFO or device (a process
    substitution, <(...)), a copy in an anonymous temporary file (streams.spooled). Its first block decides,
    before the rest is copied (`cat /dev/zero` filled $TMPDIR): a .vq file is read as read_vq_stream reads
    one, into memory; media of no format that reads its kind are refused as reading them would refuse them.
    Media on stdin redirected from a regular file, from its start, are read there (_stdin_in_place), not copied."""
    from .streams import is_stream_file

    if path != "-" and not is_stream_file(path):
        return _checked_path(path, FILE_OR_FOLDER_MISSING)
    with _input_stream(path) as stream:
        try:
            return _media_of_stream(stream, path, forced)
        except OSError as exc:  # stdin opened for writing only (`0> file`): EBADF; a read failing midway: EIO
            raise _unreadable_input(path, exc) from None


def _media_of_stream(stream, path: str, forced: str | None):
    """_media_source's input from stdin or a FIFO (`path`), `stream`: a .vq file in memory, stdin's regular file in
    place, or a copy in a temporary file. What `stream`'s reads raise goes on."""
    from .streams import SPOOL_BLOCK_BYTES, spooled

    in_place = path == "-" and _at_start_of_regular_file(stream)
    head = stream.read(SPOOL_BLOCK_BYTES)
    if head.startswith(vqformat.MAGIC):
        from .fileinfo import read_vq_stream

        data = io.BytesIO(read_vq_stream(_Prepended(head, stream)))
        data.name = 0 if path == "-" else path  # as the spool's: warnings name stdin or the FIFO (streams.input_name)
        return data
    tags = 0
    if head and media_kind(_input_named(path), head[:SIGNATURE_BYTES], forced) == "audio":
        head, tags = _through_id3v2_tags(head, stream, "stdin" if path == "-" else path)
    _refuse_unrecognised_media(head, path, forced, tags)
    if in_place:
        return _stdin_in_place(stream)
    spool = spooled(stream, head, "stdin" if path == "-" else path, STDIO_THROUGH_SPOOL)
    if path != "-":  # errors and warnings name the FIFO or device (streams.input_name), not "stdin"
        spool.raw.name = path
    return spool


def _at_start_of_regular_file(stream) -> bool:
    """Whether `stream` reads a regular file (streams.is_regular_stream) from its first byte: soundfile and Pillow
    seek to the file's offsets, which a stream moved on (`(head -c 10; vqcodec encode - x.vq) < f`) does not
    start at."""
    from .streams import is_regular_stream

    try:
        return is_regular_stream(stream) and stream.seekable() and stream.tell() == 0
    except (OSError, ValueError):
        return False


def _stdin_in_place(stream):
    """stdin's regular file (_at_start_of_regular_file), read from its start through a stream of its own, which
    leaves the descriptor open and is named by it, as the spool is (streams.input_name: "from stdin")."""
    reader = open(stream.fileno(), "rb", closefd=False)
    reader.seek(0)
    return reader


class _Prepended:
    """A stream's bytes read so far (`head`), then the rest of the stream."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(size)
        if size < 0:
            piece, self.head = self.head + self.stream.read(), b""
            return piece
        piece, self.head = self.head[:size], self.head[size:]
        return piece


def _through_id3v2_tags(head: bytes, stream, name: str) -> tuple[bytes, int]:
    """`head` read on through the ID3v2 tags it begins with (an MP3's, which libsndfile skips: one holding a cover
    picture may fill the first block) to a block past them, and where they end (0: none). The tags are held in memory,
    which is checked before they are read."""
    from .soundio import ID3V2_HEADER_BYTES, id3v2_tag_bytes
    from .streams import SPOOL_BLOCK_BYTES, read_up_to
    from .memory import memory_bound, refuse_beyond

    end = 0
    while tag := id3v2_tag_bytes(head[end:end + ID3V2_HEADER_BYTES]):
        end += tag
        refuse_beyond(end + SPOOL_BLOCK_BYTES, memory_bound(), f"the ID3v2 tags that {name} begins with take",
                      "give the input as a file")
        head += read_up_to(stream, end + SPOOL_BLOCK_BYTES - len(head), name)
    return head, end


def _refuse_unrecognised_media(head: bytes, path: str, forced: str | None, tags: int = 0) -> None:
    """Refuse input whose first bytes are of no format that reads its kind (libsndfile's, Pillow's), from them;
    audio from those after the ID3v2 tags that end at `tags` (_through_id3v2_tags)."""
    from .imageio import unrecognised_image
    from .soundio import unrecognised_audio

    if not head:
        return
    kind, where = media_kind(_input_named(path), head[:SIGNATURE_BYTES], forced), "from stdin" if path == "-" else path
    refusal = unrecognised_audio(head[tags:], where) if kind == "audio" else unrecognised_image(head, where)
    if refusal is not None:
        with _audio_by_default(path, kind, forced):
            raise refusal


STDIO_THROUGH_SPOOL = "stdin and stdout go through one"  # a temporary file in $TMPDIR, as its errors say


def _naming_its_input(command):
    """A command whose INPUT (`input_path`) is a file, a .vq file maybe, with the FormatError it raises (its .vq
    input cut short or corrupted) naming the file, as a bad magic's does: "t.vq: truncated .vq file (incomplete
    header)". Stdin's, as a bad magic's, is not named, nor a folder run's, whose lines name each file."""
    @functools.wraps(command)
    def named(*args, input_path, **kwargs):
        from .fileinfo import naming_damage

        with naming_damage(None if input_path == "-" or os.path.isdir(input_path) else input_path):
            return command(*args, input_path=input_path, **kwargs)
    return named


def _read_vq_input(path: str, salvage: bool = False, missing: str = "no such file") -> bytes:
    """The bytes of a `.vq` input file or stdin (read_vq_stream, not refused for going on past its chunks with
    `salvage`). Input whose first bytes are not a header that parse_header accepts is refused from them, as parsing it
    would refuse it, before the rest (a recording given to decode, gigabytes maybe, or a stream that does not end) is
    read into memory. `missing` says what is not there: FILE_OR_FOLDER_MISSING for a command that takes a folder
    too."""
    from .fileinfo import read_vq_stream

    try:
        with _input_stream(path) as stream:
            data = read_vq_stream(stream, salvage, name=None if path == "-" else path)
        if not data:
            raise _empty_input(path)  # as encode says it
        return data
    except FileNotFoundError:
        raise VQCodecError(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise VQCodecError(f"{path}: is a directory") from None
    except OSError as exc:
        raise _unreadable_input(path, exc) from None


def _unreadable_input(path: str, exc: OSError) -> VQCodecError:
    """The error for an input (`-`: stdin) that the system would not read, in its words."""
    return VQCodecError(f"{path}: cannot read ({reason_of(exc)})")


def _empty_input(path: str) -> VQCodecError:
    """The error for an input of no bytes: an empty file, or stdin ("-") that ends at once (as streams.empty_input words
    media's)."""
    return VQCodecError("stdin is empty" if path == "-" else f"{path}: file is empty")


def _checked_path(path: str, missing: str = "no such file") -> Path:
    """An input path that exists, is a regular file and can be read (`missing`: what is not there)."""
    _refuse_closed_stdin_named(path)
    candidate = Path(path)
    if not candidate.exists():
        raise VQCodecError(f"{path}: {missing}")
    if candidate.is_dir():
        raise VQCodecError(f"{path}: is a directory")
    if not os.access(candidate, os.R_OK):
        raise VQCodecError(f"{path}: permission denied")
    return candidate


def _refuse_missing_input(path: str) -> None:
    """Refuse an input of encode, decode or codes that is not there (or cannot be looked at: a link to itself),
    as eval words it, before the output is looked at: the input says whether the output is a file or a folder."""
    if path == "-":
        return
    from .streams import why_missing

    _refuse_closed_stdin_named(path)
    why = why_missing(path, FILE_OR_FOLDER_MISSING)
    if why is not None:
        raise VQCodecError(f"{path}: {why}")


def _model_name(ctx, param, value):
    """A model option or argument: an empty one (an unset shell variable) is refused, not read as the default."""
    if value is not None and not value.strip():
        raise click.BadParameter("a model name or path cannot be empty", ctx=ctx, param=param)
    return value


def _output_name(ctx, param, value):
    """An OUTPUT argument, with "-" for a name of stdout (/dev/stdout, /dev/fd/1): written as "-" is."""
    from .streams import descriptor_named

    return "-" if descriptor_named(value) == 1 else value


def _refuse_existing_output(path: str, force: bool) -> None:
    """Refuse to overwrite an existing output without --force (commands check this before their
    work as well as when they write, so that a refusal costs nothing)."""
    from .streams import refuse_existing_output

    if path == "-":
        _stdout(force)
        return
    refuse_existing_output(path, force)


def _refuse_output_file(path: str, force: bool, input_path: str) -> None:
    """Refuse a single file's output before the work, as writing it would: the input file itself (even
    with --force, which replaced the file read with what was made of it; stdout or stdin on it too), an existing
    file without --force, or one in a folder that is not there or is a file (found after all the coding, before)."""
    _refuse_output_on_input(path, input_path)
    _refuse_existing_output(path, force)
    if path != "-":
        _refuse_missing_folder_of(path)


def _refuse_output_on_input(path: str, input_path: str) -> None:
    """Refuse an output (`-`: stdout, info's text too) that is the input file (`-`: stdin), by name, link or hard link,
    or by the shell's redirection."""
    from .streams import descriptor_file_id, file_id

    written = descriptor_file_id(1) if path == "-" else file_id(path)
    if written is not None and written == (descriptor_file_id(0) if input_path == "-" else file_id(input_path)):
        if path == "-":  # `< x.wav 1<> x.wav` wrote over the input's start, `>> x.wav` after its end
            raise VQCodecError(f"stdout is the input file{'' if input_path == '-' else ' ' + input_path}: redirect it "
                               "to another file")
        raise VQCodecError(f"{path} is the input file: give the output another name")


def _refuse_stdout_on_media_in(folder: str) -> None:
    """Refuse stdout on a media file under `folder` (a folder walk leaves it out, as the run's log, but what is
    printed goes into it: `eval MODEL dir/ >> dir/talk.wav` appended its table to a recording it measured)."""
    from .io import media_kind_of
    from .streams import descriptor_file_id, file_id

    written = descriptor_file_id(1)
    for root, _, names in os.walk(folder) if written is not None else ():
        for path in (Path(root) / name for name in names):
            if media_kind_of(path) and file_id(path) == written:
                raise VQCodecError(f"stdout is {path}, a file of the folder {folder}: redirect it to another file")


MODEL_FILE_PAIRS = {".json": ".safetensors", ".safetensors": ".json"}


def _refuse_stdout_on_a_model() -> None:
    """Refuse stdout on NAME.json or NAME.safetensors with the other beside it: what is written left the model
    unreadable (`encode x.wav - -m m.safetensors >> m.json`). It needs stdout's name, which only /proc gives:
    without /proc it is not made (stdout on an input file is still refused: _refuse_output_on_input)."""
    from .streams import descriptor_path

    target = descriptor_path(1)
    other = MODEL_FILE_PAIRS.get(target.suffix) if target else None
    if other and target.with_suffix(other).is_file():
        raise VQCodecError(f"stdout is {target}, a file of a model: redirect it to another file")


def _refuse_missing_folder_of(path: str) -> None:
    parent = Path(path).parent
    if not parent.is_dir():
        raise VQCodecError(f"{parent}: {'not a directory' if parent.exists() else 'no such directory'}")


def _write_output(path: str, write, force: bool) -> None:
    """Call write(stream) into a temporary file beside `path`, then rename it into place."""
    from .streams import TemporarySpool, copy_whole, write_file

    if path == "-":
        # Written in full to a temporary file first, so a failure writes nothing to stdout and long
        # output never sits in memory. Its own failures (room, EIO) are named as its (TemporarySpool).
        stdout = _stdout(force)
        with TemporarySpool(STDIO_THROUGH_SPOOL) as spool:
            write(spool)
            spool.seek(0)
            with _writing_stdout():
                copy_whole(spool, stdout)  # unbuffered (python -u), stdout is a raw stream
                stdout.flush()
        return
    _refuse_existing_output(path, force)
    _refuse_missing_folder_of(path)
    write_file(Path(path), write, replace=force)


def _device_name(ctx, param, value):
    """--device's form, checked before torch is imported; whether that GPU is there, by devices.resolve_device."""
    from .devices import device_form_problem

    problem = device_form_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


device_option = click.option("--device", default="auto", callback=_device_name, show_default=True, metavar="DEVICE",
                             help="Where the networks run: cpu, cuda (the current GPU), cuda:N (GPU N), or auto: "
                                  "cuda when there is one, else cpu.")
threads_option = click.option("--threads", type=click.IntRange(1, 256), default=None,
                              help="CPU threads for torch (at most 256).")


def _check_thread_environment() -> None:
    """OMP_NUM_THREADS as OpenMP reads it once torch loads, which printed a blank line and a warning of its
    own for a value that is not a list of thread counts (abc, 0, -1, set but empty) and ran on its
    default: set but empty is taken as unset, and another such value is refused."""
    import re

    value = os.environ.get("OMP_NUM_THREADS")
    if value is not None and not value.strip():
        del os.environ["OMP_NUM_THREADS"]
    elif value is not None and not re.fullmatch(r"(\s*0*[1-9][0-9]*\s*)(,\s*0*[1-9][0-9]*\s*)*", value):
        raise VQCodecError(f"the environment variable OMP_NUM_THREADS is {value!r}, not a number of threads of 1 "
                           "or more: unset it, or set it to one such as 4")


def _load_torch_outside_a_removed_working_folder() -> None:
    """Import torch, and the torch._dynamo config its optimisers import, from / where the working folder has been
    removed (`rmdir` of the folder a shell is in): MKL, which torch loads, asks for that folder's path and ends
    the process where there is none ('Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so', status 2),
    whatever the command, and the config asks for it too (a FileNotFoundError). The run then goes on in the
    removed folder, where absolute paths work and relative ones name nothing, as before."""
    if "torch._dynamo.config" in sys.modules or not _working_folder_removed():
        return
    try:
        folder = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        raise VQCodecError(WORKING_FOLDER_REMOVED) from None
    try:
        os.chdir("/")
        try:
            import torch._dynamo.config  # noqa: F401
        finally:
            os.fchdir(folder)
    finally:
        os.close(folder)


WORKING_FOLDER_REMOVED = "the current folder has been removed: cd to a folder that exists"


def _working_folder_removed() -> bool:
    try:
        os.getcwd()
        return False
    except FileNotFoundError:
        return True


def _use_threads(threads: int | None) -> None:
    """torch's CPU threads as --threads asks (without it, torch's default or OMP_NUM_THREADS)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _input_named(path: str) -> str | None:
    """INPUT's name as io.media_kind takes it: None for stdin ("-")."""
    return None if path == "-" else path


def _kind_refused(codec, kind: str, path: str | None, forced: str | None) -> VQCodecError:
    """The error for a model of another kind than the input's (`path`; None for a folder's)."""
    if codec.kind == "image" and path is not None and audio_for_want_of_an_image(_input_named(path), kind, forced):
        return VQCodecError(f"model {codec.name} codes images, but {'stdin' if path == '-' else path} is not named "
                            "or signed as an image: for an image of another format that Pillow reads, pass "
                            "--kind image")
    return VQCodecError(f"model {codec.name} codes {kind_coded(codec.kind)}, but the input is {kind_held(kind)}")


@contextlib.contextmanager
def _audio_by_default(path: str, kind: str, forced: str | None):
    """Where `path` was taken for audio only for want of an image's name or signature, soundfile's
    "Format not recognised" becomes an error that says so, not one about audio."""
    try:
        yield
    except VQCodecError as exc:
        if (audio_for_want_of_an_image(_input_named(path), kind, forced)
                and str(exc).endswith(": Format not recognised.")):
            raise VQCodecError(f"cannot read {'stdin' if path == '-' else path}: not audio that soundfile reads "
                               "(Format not recognised), nor an image by its name or signature: for an image of "
                               "another format that Pillow reads, pass --kind image") from None
        raise


def _audio_format(path: str, forced: str | None) -> str | None:
    if forced:
        return forced.upper()
    if path == "-":
        return "WAV"
    return None


# ---------------------------------------------------------------- commands

def _writing_stdout_in(callback):
    """An eager option's callback (--help, --version) whose text, if stdout cannot take it, is the one
    error 'cannot write stdout' that every command gives."""
    def printing(ctx, param, value):
        if not value:  # called for every command, and prints only when given
            return callback(ctx, param, value)
        with _writing_stdout():
            return callback(ctx, param, value)
    printing.writes_stdout = True
    return printing


class _HelpToStdout:
    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and not getattr(option.callback, "writes_stdout", False):
            option.callback = _writing_stdout_in(option.callback)
        return option


class _Command(_HelpToStdout, click.Command):
    """A command whose arguments and options may not be empty strings: `encode "" out.vq` coded the
    current folder (an empty path is "."), `fit-prior --out ""` replaced the model's prior in place as
    if --out were not given, and `eval -q ""` measured the default levels; an unset shell variable
    ("$FILE") is the usual cause."""

    def parse_args(self, ctx, args):
        rest = super().parse_args(ctx, args)
        for param in self.get_params(ctx):
            if ctx.params.get(param.name) == "":
                raise click.BadParameter("cannot be empty", ctx=ctx, param=param)
        return rest


class _Stopped(Exception):
    """Ctrl-C, SIGTERM or SIGHUP (`interrupt`) stopping a command, carried past click's main, which
    printed a blank line on stderr for it (to close a terminal's ^C) into logs and pipes too."""

    def __init__(self, interrupt: KeyboardInterrupt):
        super().__init__()
        self.interrupt = interrupt


class _Group(_HelpToStdout, click.Group):
    command_class = _Command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Stopped(exc) from None

    def main(self, *args, **kwargs):
        """The commands, with the messages that the API they call raises naming their options (wording.setting)."""
        with command_line_wording():
            return super().main(*args, **kwargs)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(version=__version__, prog_name="vqcodec")
@click.pass_context
def cli(ctx):
    """Neural codec for speech and images: media -> integer codes -> compact .vq files.

    \b
    Examples:
      vqcodec encode talk.wav talk.vq -q 6
      vqcodec decode talk.vq talk.wav
      vqcodec encode photo.png photo.vq -q 8
      vqcodec info talk.vq
      vqcodec train my_recordings/ --out runs/mine --max-minutes 60
    """
    if ctx.invoked_subcommand is None:  # bare `vqcodec`: the help, as --help gives it, not a usage error
        with _writing_stdout():
            click.echo(ctx.get_help())


for _version in (param for param in cli.params if "--version" in param.opts):
    _version.callback = _writing_stdout_in(_version.callback)


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT", callback=_output_name)
@click.option("-q", "--quality", default=None, type=int,
              help="Number of codebooks (1..max). Default: 8, or all of a model of fewer "
              "(speech16k: about 2.6 kbps).")
@click.option("-m", "--model", default=None, callback=_model_name,
              help="Model name or path (default: speech16k for audio, image for images).")
@click.option("--kind", type=click.Choice(["audio", "image"]), default=None,
              help="Media kind, if the name does not tell (for a folder: which files to code).")
@device_option
@threads_option
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists (or, for -, write to stdout that is a "
              "terminal).")
@click.option("--coding", type=click.Choice(["auto", "prior", "fixed"]), default="auto", show_default=True,
              help="Payload coding: range coding with the model's prior (auto: when it has one) or fixed-width "
                   "indices.")
@click.option("--beam", default=None, type=click.IntRange(1, 64),
              help="Beam width of the code search: wider lowers distortion at the same quality, for encoder time "
                   "(default: 4 for images, 1 for audio; decoding is unaffected).")
@click.option("--refine", default=0, type=click.IntRange(0, 1000), show_default=True,
              help="Steps of latent refinement through the decoder: a little better quality at the same rate "
                   "(photos: about +0.1 dB) for a much slower encode (10 steps: about 14x). "
                   "Decoding is unaffected.")
@click.option("--rate-weight", default=None, type=click.FloatRange(0, 100),
              help="Rate-distortion optimisation of entropy-coded files: codes are chosen by latent error plus "
                   "their bits under the prior, weighed at this multiple of the error one more codebook would buy "
                   "per bit. Higher: smaller files, a little worse. Default: 0 (the nearest codes). Decoding is "
                   "unaffected.")
@click.option("--depth-weight", default=None, type=click.FloatRange(0, 100),
              help="Per-cell depth for entropy-coded files: each audio frame or image cell keeps only the first "
                   "codebooks whose error reduction is worth their bits at this multiple of the same exchange rate; "
                   "-q is then the most any cell uses. Higher: smaller files, a little worse. 0: every cell uses "
                   "all -q codebooks. Default: 2 for audio, 1 for images.")
@click.option("--bitrate", "max_kbps", default=None, type=click.FloatRange(0, min_open=True), metavar="KBPS",
              help="Audio: the best file of at most this bitrate in kbps, header included, found by trying qualities "
                   "and depth weights (4-10 tries, the encoder network run once); -q is then the most codebooks it "
                   "may use (default: all).")
@click.option("--bpp", "max_bpp", default=None, type=click.FloatRange(0, min_open=True),
              help="Images: the best file of at most this many bits per pixel, as --bitrate does for audio.")
@_naming_its_input
def encode(input_path, output_path, quality, model, kind, device, threads, force, coding, beam, refine, rate_weight,
           depth_weight, max_kbps, max_bpp):
    """Encode an audio file or image into a .vq file. Use - for stdin or stdout.

    A .vq file as INPUT is recoded: a smaller file made from its codes alone, at a lower -q,
    --bitrate or --bpp, each frame or cell cut where its levels are worth least (--depth-weight);
    the networks do not run.

    For a folder (read recursively, .NAME files and folders left out), OUTPUT is a folder that gets
    one .vq file per audio file or image, at the same relative path, all coded with the same options
    and the networks loaded once; a folder of .vq files and no media is recoded file by file. A file
    that cannot be coded is reported and skipped, and the command then exits with status 1.

    \b
    Examples:
      vqcodec encode speech.flac speech.vq -q 6
      vqcodec encode photo.png photo.vq -q 8
      vqcodec encode photo.png photo.vq -q 8 --refine 10   # much slower encode, a little better
      vqcodec encode photo.png photo.vq -q 12 --rate-weight 3   # smaller file, a little worse
      vqcodec encode photo.png photo.vq -q 12 --depth-weight 0  # every cell uses all 12 codebooks
      vqcodec encode speech.flac speech.vq --bitrate 1.5   # the best file of at most 1.5 kbps
      vqcodec encode photo.png photo.vq --bpp 0.3          # the best file of at most 0.3 bits per pixel
      cat speech.wav | vqcodec encode - - > speech.vq
      vqcodec encode my_recordings/ my_recordings_vq/ -q 6   # a whole folder
      vqcodec encode talk.vq small.vq --bitrate 1   # a smaller file from a .vq file alone
    """
    from .fileinfo import vq_bytes
    from .imageio import open_image

    _use_threads(threads)
    _refuse_missing_input(input_path)
    if input_path != "-" and Path(input_path).is_dir():
        return _encode_folder(Path(input_path), output_path, quality, model, kind, device, force, coding, beam,
                              refine, rate_weight, depth_weight, max_kbps, max_bpp)
    _refuse_media_output_name(output_path)
    _refuse_output_file(output_path, force, input_path)
    # Files are streamed from disk, so long audio never sits in memory; stdin and FIFOs are spooled to disk first.
    source = _media_source(input_path, kind)
    if not isinstance(source, Path):
        click.get_current_context().with_resource(source)  # the spool is closed when the command ends
        head = source.read(16)
        source.seek(0)
    else:
        with source.open("rb") as stream:
            head = stream.read(16)
    if not head:
        raise _empty_input(input_path)
    if head[:4] == vqformat.MAGIC:
        _refuse_media_options(beam, refine, rate_weight, kind)
        data = vq_bytes(source) if isinstance(source, Path) else source.read()  # a stream's was read_vq_stream's
        encoded = recoder(data, model, device, coding, quality, depth_weight, max_kbps, max_bpp, {}).recode(
            data, quality, max_kbps if max_bpp is None else max_bpp)
        if max_kbps is None and max_bpp is None and quality is None:  # -q at its own quality asks for the file
            _say_codes_kept("stdin" if input_path == "-" else input_path, data, encoded, coding)
        return _write_output(output_path, lambda stream: stream.write(encoded), force)
    forced, kind = kind, media_kind(_input_named(input_path), head, kind)
    codec, quality = _encoder(kind, input_path, quality, model, device, coding, beam, refine, rate_weight,
                              depth_weight, max_kbps, max_bpp, forced)
    if kind == "audio":
        codec.progress = _terminal_progress()
        with _audio_by_default(input_path, kind, forced):
            encoded = codec.encode_audio_file(source, quality, max_kbps)
        warning = codec.level_warning("stdin" if input_path == "-" else input_path)
        if warning:
            click.echo(f"{WARNING_PREFIX}{warning}", err=True)
    else:
        encoded = codec.encode_image(open_image(source, fits=codec.check_image_encode_fits), quality, max_bpp,
                                     source=source)
    _write_output(output_path, lambda stream: stream.write(encoded), force)


def _say_codes_kept(name: str, data: bytes, encoded: bytes, coding: str) -> None:
    """A .vq file recoded without -q or a rate keeps its codes: a note says so where only their coding changed
    (folders.coding_change)."""
    how = coding_change(name, data, encoded, coding)
    if how is not None:
        click.echo(f"vqcodec: note: {name} is a .vq file: recoded at its own quality, its codes kept as they are and "
                   f"coded {how} ({len(data)} -> {len(encoded)} bytes); -q, --bitrate or --bpp make a smaller file",
                   err=True)


def _say_folder_codes_kept(changes: dict[Path, tuple[str, int, int]], skipped: list[tuple[Path, str]]) -> None:
    """The one note of a folder of .vq files recoded without -q or a rate, for the files written whose coding
    changed (`changes`: each file's folders.coding_change and its size before and after), as _say_codes_kept's
    for one."""
    from collections import Counter

    left_out = {path for path, _ in skipped}
    written = [change for path, change in changes.items() if path not in left_out]
    if not written:
        return
    counts = Counter(how for how, _, _ in written)
    hows = ", ".join(how if len(counts) == 1 else f"{how} ({plural(count, 'file')})" for how, count in counts.items())
    its = "its" if len(written) == 1 else "their"
    _progress(f"vqcodec: note: {plural(len(written), '.vq file')} recoded at {its} own quality, {its} codes kept as "
              f"they are and coded {hows} ({sum(b for _, b, _ in written)} -> {sum(a for _, _, a in written)} "
              f"bytes); -q, --bitrate or --bpp make {'a smaller file' if len(written) == 1 else 'smaller files'}")


# What the other outputs of vqcodec are named, and which command writes them
WRITTEN_SUFFIXES = {".vq": ("a .vq file", "encode and pack write .vq files"),
                    ".npy": ("a NumPy array", "codes writes .npy files")}


def _refuse_media_output_name(path: str, command: str = "encode", suffix: str = ".vq") -> None:
    """Refuse an output of `command`, which writes a `suffix` file, named as audio or an image (`encode
    photo.png photo.jpg`, `pack codes.npy talk.wav`), or as the other of .vq and .npy (`codes talk.vq
    talk.vq --force` replaced the .vq file with its codes): the file written under that name is no such
    file, and what reads it by its name fails."""
    from .io import media_kind_of

    if path == "-":
        return
    kind, named = media_kind_of(Path(path)), Path(path).suffix.lower()
    if kind is not None:
        what, writer = "audio" if kind == "audio" else "an image", f"decode writes {kind} files"
    elif named in WRITTEN_SUFFIXES and named != suffix:
        what, writer = WRITTEN_SUFFIXES[named]
    else:
        return
    raise VQCodecError(f"{path}: {command} writes a {suffix} file, which a name ending {Path(path).suffix} says "
                       f"is {what}: name it {suffix} ({writer})")


def _refuse_media_options(beam, refine, rate_weight, kind) -> None:
    if beam is not None or refine or rate_weight is not None or kind:
        raise VQCodecError("--beam, --refine, --rate-weight and --kind choose how media are coded; a .vq "
                           "file's codes are already chosen, and recoding only cuts levels")


def _encoder(kind, input_path, quality, model, device, coding, beam, refine, rate_weight, depth_weight, max_kbps,
             max_bpp, forced=None):
    """The codec `encode` codes `kind` with, set as the options say, and the quality to ask of it."""
    from .codec import Codec

    codec = Codec.load(model or DEFAULT_MODELS[kind], device=device, coding=coding, beam=beam)
    if codec.kind != kind:
        raise _kind_refused(codec, kind, input_path, forced)
    refuse_weights_when_fixed_width(codec, rate_weight, depth_weight)
    codec.refine = refine
    if rate_weight is not None:
        codec.rate_weight = rate_weight
    if depth_weight is not None:
        codec.depth_weight = depth_weight
    if kind == "audio" and max_bpp is not None:
        raise VQCodecError(f"--bpp is for images, and {input_path} is audio: use --bitrate (kbps)")
    if kind == "image" and max_kbps is not None:
        raise VQCodecError(f"--bitrate is for audio, and {input_path} is an image: use --bpp")
    if quality is None:
        quality = codec.default_quality(targeted=max_kbps is not None or max_bpp is not None)
    return codec, quality


def _encode_folder(folder: Path, output_path: str, quality, model, kind, device, force, coding, beam, refine,
                   rate_weight, depth_weight, max_kbps, max_bpp) -> None:
    """`vqcodec encode FOLDER OUT`: vqcodec.folders.encode_tree with the codec the options set up."""
    from .folders import encode_tree, holds_only_vq_files
    from .modelfile import model_kind

    out = _output_folder(output_path)
    if holds_only_vq_files(folder, out):
        _refuse_media_options(beam, refine, rate_weight, kind)
        return _recode_folder(folder, out, quality, model, device, force, coding, depth_weight, max_kbps, max_bpp)
    if kind is None and model is not None:
        kind = model_kind(model)

    def encoder(found: str):
        return _encoder(found, str(folder), quality, model, device, coding, beam, refine, rate_weight, depth_weight,
                        max_kbps, max_bpp)[0]
    report = encode_tree(encoder, folder, out, quality=quality,
                         max_rate=max_kbps if max_kbps is not None else max_bpp, kind=kind, replace=force,
                         log=_progress, progress=progressline.show, on_warning=_print_warning)
    _finish_tree(report, "encoded", out)


def _recode_folder(folder: Path, out: Path, quality, model, device, force, coding, depth_weight, max_kbps,
                   max_bpp) -> None:
    """`vqcodec encode FOLDER OUT` for a folder of .vq files: vqcodec.folders.recode_tree."""
    from .folders import recode_tree

    changes: dict[Path, tuple[str, int, int]] = {}
    report = recode_tree(folder, out, quality=quality, max_kbps=max_kbps, max_bpp=max_bpp, depth_weight=depth_weight,
                         model=model, device=device, coding=coding, replace=force,
                         on_coding_change=lambda path, how, before, after: changes.update({path: (how, before, after)}),
                         log=_progress, progress=progressline.show)
    _say_folder_codes_kept(changes, report.skipped)
    _finish_tree(report, "recoded", out)


def _output_folder(output_path: str) -> Path:
    from .folders import output_folder

    if output_path == "-":
        raise VQCodecError("a folder is coded into a folder, not to stdout")
    return output_folder(output_path)


PROGRESS_MIN_BLOCKS = 6  # audio of fewer blocks (a minute of speech) is coded before a percentage would help


def _terminal_progress():
    """Codec.progress for a long file: its percentage on a terminal (progressline.percentages)."""
    from .codec import AUDIO_BLOCK_FRAMES

    return progressline.percentages(PROGRESS_MIN_BLOCKS * AUDIO_BLOCK_FRAMES)


def _print_skipped(path, reason: str) -> None:
    """A folder command's line for a file it could not do (the rest go on)."""
    _progress(skipping(path, reason))


def _print_warning(line: str) -> None:
    """A warning line, below the progress shown in place on a terminal."""
    _progress(one_line(f"{WARNING_PREFIX}{line}"))


def _progress(line: str) -> None:
    """A line on stderr, below the progress shown in place on a terminal (progressline.say)."""
    progressline.say(line)


def _finish_tree(report, verb: str, out: Path, by_path: bool = False) -> None:
    """The folder commands' last lines, from the report of a folders.*_tree run (which went through all the files it
    did not set aside): the files skipped (those whose model is not installed, one line per model:
    folders.set_aside_missing_models; `by_path` as folders.skipping_lines takes it), what was written, and status 1
    if any was skipped; a run that wrote nothing says so in its error line instead of a summary of no files."""
    from .folders import skipping_lines

    for line in skipping_lines(report.set_aside, report.skipped, by_path):
        _progress(line)
    skipped = len(report.skipped) + _count(report.set_aside)
    total = report.written + skipped
    if not report.written:
        _fail_if_skipped(skipped, total, verb, f": nothing was written to {out}")
        raise VQCodecError(f"no file was {verb}: nothing was written to {out}")
    _say_written(report, verb, out)
    _fail_if_skipped(skipped, total, verb)


def _say_written(report, verb: str, out: Path) -> None:
    """A folder command's summary line, "coded 3 files, 13200 bytes into tokens"."""
    _progress(f"{verb} {report.summary()} into {out}")


def _count(missing: list[tuple[list[Path], str]]) -> int:
    return sum(len(paths) for paths, _ in missing)


def _fail_if_skipped(skipped: int, total: int, verb: str, then: str = "") -> None:
    """Status 1 for a run over several files that skipped some (each listed above by then)."""
    if skipped:
        raise VQCodecError(f"{skipped} of {plural(total, 'file')} could not be {verb} (listed above){then}")


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT", callback=_output_name)
@click.option("-m", "--model", default=None, callback=_model_name,
              help="Model name or path (default: the installed model the file names).")
@click.option("--format", "format_name", default=None,
              help="Output format (WAV, FLAC, PNG, ...): needed when OUTPUT has no telling extension (- is WAV or "
                   "PNG without it); one that contradicts OUTPUT's extension is refused. For a folder: the format of "
                   "its audio or of its images.")
@device_option
@threads_option
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists (or, for -, write to stdout that is a "
              "terminal).")
@click.option("--start", default=None, type=click.FloatRange(0), metavar="SECONDS",
              help="Audio: decode from this time on, decoding only the chunks that cover what is asked.")
@click.option("--duration", default=None, type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Audio: decode this long (to the end of the file at most).")
@click.option("--salvage", is_flag=True,
              help="Decode a damaged or cut-short file whose header is intact: the chunks that fail their "
                   "CRC or are missing come out as silence (audio) or grey rows (images), and a warning "
                   "says which.")
@click.option("--rate", "output_rate", default=None, type=click.IntRange(1, vqformat.MAX_SAMPLE_RATE), metavar="HZ",
              help="Audio: write at this sample rate instead of the original one (the length scales with it).")
@_naming_its_input
def decode(input_path, output_path, model, format_name, device, threads, force, start, duration, salvage,
           output_rate):
    """Decode a .vq file back to audio or an image, at its original rate, size, channels and mode.

    For a folder (read recursively, .NAME files and folders left out), OUTPUT is a folder that gets
    each .vq file decoded at the same relative path: audio as WAV and images as PNG, or in the
    format --format names for its kind. Each model is loaded once. A file that cannot be decoded is
    reported and skipped, and the command then exits with status 1.

    \b
    Examples:
      vqcodec decode speech.vq speech.wav
      vqcodec decode photo.vq photo.png
      vqcodec decode speech.vq - --format flac > speech.flac
      vqcodec decode talk.vq minute.wav --start 3600 --duration 60   # one minute, out of hours
      vqcodec decode damaged.vq talk.wav --salvage   # what is left of a damaged or cut-short file
      vqcodec decode talk.vq talk16k.wav --rate 16000   # at another sample rate
      vqcodec decode my_recordings_vq/ decoded/ --format flac   # a whole folder
    """
    from .fileinfo import LostFraming, with_advice

    _use_threads(threads)
    _refuse_missing_input(input_path)
    if input_path != "-" and Path(input_path).is_dir():
        if start is not None or duration is not None:
            raise VQCodecError("--start and --duration are for one file, not a folder")
        return _decode_folder(Path(input_path), output_path, model, format_name, device, force, salvage, output_rate)
    _refuse_output_file(output_path, force, input_path)
    try:
        data = _read_vq_input(input_path, salvage, FILE_OR_FOLDER_MISSING)
    except LostFraming as exc:  # its header is intact: salvage decodes the chunks before the framing was lost
        raise with_advice(exc, "--salvage decodes what is intact") from None
    header = vqformat.parse_header(data)
    if header.kind == vqformat.KIND_IMAGE and (start is not None or duration is not None or output_rate is not None):
        raise VQCodecError(f"--start, --duration and --rate are for audio; {input_path} holds an image")
    if format_name is not None:
        from .io import refuse_format_of_other_kind

        audio = header.kind == vqformat.KIND_AUDIO
        refuse_format_of_other_kind(format_name, audio, "--format",
                                    f"{input_path} holds {'audio' if audio else 'an image'}")
        if output_path != "-":
            from .io import refuse_format_against_name

            refuse_format_against_name(format_name, output_path, "--format")
    if header.kind == vqformat.KIND_AUDIO:
        audio_format = _audio_format(output_path, format_name) or _format_from_name(output_path)
    else:
        image_format = format_name or ("PNG" if output_path == "-" else _image_format_from_name(output_path))
    try:  # before the model loads and the file is decoded
        if header.kind == vqformat.KIND_AUDIO:
            from .soundio import audio_format_named, check_audio_output, soundfile_format

            check_audio_output(*soundfile_format(audio_format_named(audio_format) or audio_format, None),
                               output_rate or header.sample_rate, header.channels)
        else:
            from .folders import check_output_of

            check_output_of(image_format, header, data)
    except VQCodecError as exc:
        raise VQCodecError(f"{'stdout' if output_path == '-' else output_path}: {exc}") from None
    from .codec import Codec  # imports torch: after input refused from its header (`< /dev/zero`), without it

    codec = Codec.load(decoding_model(model, data), device=device)
    codec.progress = _terminal_progress()
    if salvage:
        _warn_damage(_damage_met(codec.damaged_parts(data, start or 0.0, duration), start, duration), header)
    try:
        if header.kind == vqformat.KIND_AUDIO:
            with _clipping_warnings("stdout" if output_path == "-" else output_path):
                _write_output(output_path, lambda stream: codec._decode_audio_file(
                    data, stream, format_hint=audio_format, start=start or 0.0, duration=duration, salvage=salvage,
                    rate=output_rate, own_temporary=True), force)
        else:
            from .imageio import save_image

            image = codec.decode_image(data, salvage=salvage)
            _write_output(output_path, lambda stream: save_image(image, stream, image_format), force)
    except VQCodecError as exc:
        from .folders import with_salvage_hint

        if salvage:
            raise
        raise with_salvage_hint(exc, codec, data) from None


def _decode_folder(folder: Path, output_path: str, model, format_name, device, force, salvage, rate) -> None:
    """`vqcodec decode FOLDER OUT`: vqcodec.folders.decode_tree."""
    from .folders import decode_tree

    out = _output_folder(output_path)
    report = decode_tree(folder, out, format=format_name, rate=rate, salvage=salvage, model=model, device=device,
                         replace=force,
                         on_damage=lambda path, damaged, header: _warn_damage(damaged, header, path),
                         on_warning=_print_warning, log=_progress, progress=progressline.show)
    _finish_tree(report, "decoded", out)


def _clipping_warnings(name):
    """Print each ClippingWarning that decoding into `name` issues as one warning line naming it (_print_warning;
    other warnings are shown as they would have been): folders.clipping_told."""
    from .folders import clipping_told

    return clipping_told(name, _print_warning)


def _damage_met(damaged: list[dict], start: float | None, duration: float | None) -> list[dict]:
    """What of a file's damage (damaged_parts) the part of its audio that --start and --duration ask for
    meets: the runs of lost chunks that overlap it, and the bytes after the last chunk."""
    if start is None and duration is None:
        return damaged
    begin = start or 0.0
    end = math.inf if duration is None else begin + duration
    return [part for part in damaged if "from" not in part or (part["from"] < end and part["to"] > begin)]


def _warn_damage(damaged: list[dict], header, path=None) -> None:
    """One warning line for what a salvaged decoding lost (naming its file, in a folder)."""
    from .imageio import ALPHA_MODES, IMAGE_MODE_NAMES, mode_shown

    if not damaged:
        return
    audio = header.kind == vqformat.KIND_AUDIO
    runs = [d for d in damaged if "from" in d]
    spans = [f"{d['from']:.3f}-{d['to']:.3f} s" if audio else f"{int(d['from'])}-{int(d['to'])} px rows"
             for d in runs]  # to the millisecond (as damaged_parts gives them), whole rows
    mode = IMAGE_MODE_NAMES.get(header.mode)
    has_alpha_mode = not audio and mode in ALPHA_MODES
    alpha_fate = "made opaque" if has_alpha_mode else f"ignored: {mode_shown(mode)} has no alpha"
    alpha = [f"the alpha plane ({alpha_fate})" for d in damaged if d.get("alpha")]
    count = sum(d["count"] for d in runs) + len(alpha)
    fill = "silence" if audio else "grey"
    total = header.chunk_count + (1 if header.flags & vqformat.FLAG_ALPHA or has_alpha_mode else 0)
    warnings = [f"{count} of {plural(total, 'chunk')} {'is' if count == 1 else 'are'} damaged or missing, "
                 f"decoded as {fill}: {', '.join(spans + alpha)}"] \
        if count else []
    warnings += [f"{plural(d['trailing_bytes'], 'unexpected byte')} after the last chunk, ignored"
                 for d in damaged if "trailing_bytes" in d]
    warnings += [f"the stream goes on for more than {d['unread_after'] >> 20} MiB past "
                 f"{'where its chunks lose their framing' if d['framing_lost'] else 'its last chunk'}, not read"
                 for d in damaged if "unread_after" in d]
    click.echo(f"{WARNING_PREFIX}{f'{path}: ' if path else ''}{'; '.join(warnings)}", err=True)


def _format_from_name(path: str) -> str:
    from .soundio import audio_format_of

    found = audio_format_of(path)
    if found is None:
        suffix = Path(path).suffix.lstrip(".").upper()
        raise VQCodecError(f"{path}: unknown audio format {suffix or '(no extension)'}; use .wav, .flac, .ogg, "
                           ".opus or .mp3, or --format")
    return found


def _image_format_from_name(path: str) -> str:
    from .io import NETPBM_VARIANTS, image_format_of_suffix

    suffix = Path(path).suffix.lower()
    if image_format_of_suffix(suffix) is None:
        raise VQCodecError(f"{path}: unknown image format {suffix or '(no extension)'}; use .png, .webp, ..., or "
                           "--format")
    # PPM's variants hold other modes
    return suffix[1:] if suffix[1:] in NETPBM_VARIANTS else image_format_of_suffix(suffix)


@cli.command()
@click.argument("input_path", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show where the bits go: per codebook the fixed-width and the ideal bits under the prior, "
                   "and the actual payload against their totals.")
@click.option("-m", "--model", "model_option", default=None, callback=_model_name,
              help="Model to check the file against, and to report with under --verbose (default: the installed "
                   "model the file names).")
@_naming_its_input
def info(input_path, as_json, verbose, model_option):
    """Show what a .vq file holds: model, duration or size, quality and real bitrate.

    With --verbose, also where the bits go: per codebook the fixed-width size and the ideal code
    length under the model's prior (sum of -log2 p), and the actual payload against the ideal.
    This decodes the codes (not the media), so it needs the model. With --model, info also checks
    that the model decodes the file, and names it.

    \b
    Examples:
      vqcodec info speech.vq --json
      vqcodec info speech.vq --verbose
      vqcodec info speech.vq -m runs/mine/mine.safetensors
    """
    from .fileinfo import read_info, with_advice
    from .registry import model_of_file, other_prior_model

    _refuse_output_on_input("-", input_path)  # `info - < x.vq >> x.vq` appended its text to the file
    data = _read_vq_input(input_path)
    _refuse_closed_stdout()
    with_payload = verbose and as_json  # "payload" is null where damage leaves no table
    try:
        file_info, damage = read_info(data), None
    except VQCodecError as exc:  # an intact header still says what the file holds
        file_info, damage = read_info(data, check_chunks=False), exc
        verbose = False
    match = model_of_file(data)
    other_prior = other_prior_model(data, match)
    if other_prior is not None:  # the model of that id installed has another prior: its copy that wrote the file is not
        match = None
    # a name would load another
    model = None if match is None else match["path"] if match.get("shadowed") else match["name"]
    decoder_id = None if match is None else match["model_id"]  # another than the file's: a fine-tune of its model
    report = None
    if verbose or model_option:
        from .codec import Codec
        from .folders import salvageable

        codec = Codec.load(decoding_model(model_option, data))
        codec.check_file(data)
        if model_option:
            model = model_option
            decoder_id = codec.model_id.hex()
        if verbose:
            try:
                report = codec.code_report(data)
            except VQCodecError as exc:  # a chunk that does not decode: the header is said, as for other damage
                if not salvageable(codec, data):
                    raise
                damage = exc
    record = _info_record(file_info, model)
    if with_payload:
        record["payload"] = report
    with _writing_stdout():
        if as_json:
            click.echo(json.dumps(json_names(record), indent=2))
        else:
            _print_info(file_info, model, report, other_prior, decoder_id)
    if damage is not None:
        raise with_advice(damage, "`vqcodec decode --salvage` decodes what is intact")


def _info_record(file_info, model: str | None) -> dict:
    """What `info --json` prints: FileInfo.as_dict() with the model named after the header's fields, before the
    duration and bitrate or bits per pixel, where the command has always put it."""
    fields = file_info.as_dict()
    measures = [key for key in ("duration", "bitrate_bps", "bits_per_pixel") if key in fields]
    return {**{key: value for key, value in fields.items() if key not in measures}, "model": model,
            **{key: fields[key] for key in measures}}


def _print_info(file_info, model: str | None, report: dict | None, other_prior: dict | None = None,
                decoder_id: str | None = None) -> None:
    """info's text; `decoder_id`: the id of `model`, which, where it is not the file's, decodes files of that id."""
    from .imageio import mode_shown

    click.echo(f"kind:      {file_info.kind}")
    if model and decoder_id and decoder_id != file_info.model_id:
        click.echo(f"model:     {model} ({decoder_id}, which decodes files of {file_info.model_id})")
    else:
        click.echo(f"model:     {model or 'not installed'} ({file_info.model_id}"
                   + (f"; the installed {other_prior['name']} of that id has another prior than the copy that wrote "
                      f"this file)" if other_prior and not model else ")"))
    if file_info.kind == "audio":
        seconds, kbps = file_info.duration, file_info.bitrate / 1000
        shared = f" (one signal, stored once, in {file_info.shared_chunks} of {plural(file_info.chunks, 'chunk')})" \
            if file_info.shared_chunks else " (stored once or per channel: unknown, chunks unread)" \
            if file_info.shared_chunks is None else ""
        click.echo(f"audio:     {plural(file_info.channels, 'channel')}{shared}, {file_info.sample_rate} Hz, "
                   f"{plural(file_info.samples, 'sample')} ({seconds:.{decimals_for(seconds, 3)}f} s)")
        click.echo(f"bitrate:   {kbps:.{decimals_for(kbps, 3)}f} kbps ({file_info.size_bytes} bytes)")
        if file_info.gain != 1.0:
            # 9 digits: enough for `pack --gain` to restore the stored gain (units of 1/65536) exactly
            click.echo(f"level:     coded divided by {file_info.gain:.9g}, decoded multiplied by it")
    else:
        click.echo(f"image:     {file_info.width}x{file_info.height} {mode_shown(file_info.mode)}"
                   + (" with alpha" if file_info.has_alpha else ""))
        click.echo(f"bitrate:   {file_info.bitrate:#.4g} bpp ({file_info.size_bytes} bytes)")
    click.echo(f"quality:   {plural(file_info.quality, 'codebook')}")
    click.echo(f"coding:    {file_info.coding}"
               + (f" (prior {report['prior_id']})" if report and report["prior_id"] else ""))
    if report:
        _print_code_report(report)


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT", callback=_output_name)
@click.option("-m", "--model", default=None, callback=_model_name,
              help="Model name or path (default: for a .vq file, the installed model it names; for media, "
                   "speech16k for audio and image for images).")
@click.option("-q", "--quality", default=None, type=int,
              help="Media input: codebooks to use (default: all of the model's).")
@click.option("--kind", type=click.Choice(["audio", "image"]), default=None,
              help="Media input: media kind, if the name does not tell (for a folder: which files to code).")
@click.option("--depth-weight", default=0.0, type=click.FloatRange(0, 100), show_default=True,
              help="Media input: per-cell depth as `encode` chooses it (under the model's prior: refused for a "
                   "model without one); 0 gives every frame or cell all -q levels.")
@device_option
@threads_option
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT (for a folder: the files in it) if it exists "
              "(or, for -, write to stdout that is a terminal).")
@click.option("--resume", is_flag=True, help="For a folder: go on with the stopped run whose codes.json is in "
              "OUTPUT, with the same model and options, coding only the files it did not finish or that changed "
              "since (their size, time or content).")
@_naming_its_input
def codes(input_path, output_path, model, quality, kind, depth_weight, device, threads, force, resume):
    """Write the integer codes of a .vq file, an audio file or image, or a whole folder of audio
    files or images, to NumPy .npy files.

    The arrays are int32: audio (channels, quality, frames) at the model's frame rate (50 a second
    for speech16k), images (quality, rows, cols) of latent cells (16 x 16 pixels for `image`). Where
    a frame or cell uses fewer levels (per-cell depth), its higher levels are -1. An image's codes are of
    its colour: an alpha channel is not in them (a warning line says so). Load them with
    numpy.load (no pickle); turn codes back into media with the Python API (Codec.codes_to_audio,
    codes_to_image), or into a .vq file with `vqcodec pack`.

    For a folder (read recursively, .NAME files and folders left out), OUTPUT is a folder that gets
    one .npy file per media file (.vq files in it are left out), at the same relative path, and
    codes.json: the model, quality and frame rate or stride, and for each file its codes' shape and
    the rate, length and level gain (`pack --rate --samples --gain`) or the size (`--width
    --height`) that restore it, and the file's size, time and content hash. A folder of .vq files and no media
    gets one .npy file per .vq file,
    and a codes.json in which each file names its own model id, kind and quality. A file that cannot
    be read is reported and skipped, and the command then exits with status 1. A run stopped part way
    writes codes.json of the files it finished ("stopped": true), from which --resume goes on.

    \b
    Examples:
      vqcodec codes speech.vq speech_codes.npy
      vqcodec codes speech.flac speech_codes.npy -q 8
      vqcodec codes my_recordings/ my_tokens/            # a dataset of speech tokens
      vqcodec codes my_recordings/ my_tokens/ --resume   # ... after a stop part way
      vqcodec codes my_vq_files/ my_tokens/              # the codes of every .vq file
      vqcodec codes my_photos/ photo_tokens/ -q 12 --force
    """
    from .devices import resolve_device
    from .fileinfo import read_vq_stream
    from .folders import refuse_replace_with_resume, warn_of_level
    from .imageio import warn_of_what_codes_leave_out
    from .tokens import file_codes_writer, save_codes

    _use_threads(threads)
    _refuse_missing_input(input_path)
    refuse_replace_with_resume(force, resume)
    if input_path != "-" and Path(input_path).is_dir():
        if _holds_only_vq_files(Path(input_path), output_path):
            _refuse_media_options_for_vq(quality, kind, depth_weight)
            _codes_of_vq_folder(Path(input_path), _output_folder(output_path), model, resolve_device(device), force,
                                resume)
        else:
            _codes_of_folder(Path(input_path), Path(output_path), model, quality, kind, depth_weight,
                             resolve_device(device), force, resume)
        return
    if resume:
        raise VQCodecError("--resume is for a folder (a stopped `vqcodec codes FOLDER OUT`), not one file")
    _refuse_media_output_name(output_path, "codes", ".npy")
    _refuse_output_file(output_path, force, input_path)
    source = _media_source(input_path, kind)
    with (open(source, "rb") if isinstance(source, Path) else source) as stream:
        head = stream.read(16)
        if not head:
            raise _empty_input(input_path)
        if head[:4] == vqformat.MAGIC:
            _refuse_media_options_for_vq(quality, kind, depth_weight)
            stream.seek(0)
            data = read_vq_stream(stream)
            from .codec import Codec  # imports torch: after input refused from its first bytes, without it

            codec = Codec.load(decoding_model(model, data), device=resolve_device(device))
            _write_output(output_path, file_codes_writer(codec, data), force)
            header = vqformat.parse_header(data)
            warn_of_what_codes_leave_out(header, source)
            if header.kind == vqformat.KIND_IMAGE:
                _note_image_size(header.width, header.height, codec.hop)
            return
        else:
            stream.seek(0)
            kind_of_media = media_kind(_input_named(input_path), head, kind)
            codec = _codes_codec(model, kind_of_media, depth_weight, resolve_device(device), input_path, kind)
            with _audio_by_default(input_path, kind_of_media, kind):
                array, restore = codec.media_to_codes(source if isinstance(source, Path) else stream, quality)
            warn_of_level(codec, "stdin" if input_path == "-" else input_path, _print_warning)
            # nothing else records it for a single file (a folder's codes.json does)
            if restore.get("gain", 1.0) != 1.0:
                click.echo(f"vqcodec: note: coded divided by a level gain of {restore['gain']:.9g}; "
                           f"`vqcodec pack --gain {restore['gain']:.9g}` restores the level", err=True)
    _write_output(output_path, lambda out: save_codes(out, array), force)
    if "width" in restore:
        _note_image_size(restore["width"], restore["height"], codec.hop)


def _note_image_size(width: int, height: int, hop: int) -> None:
    """A note of the size that `pack --width --height` restores, for a single image's codes whose cells decode to
    more pixels (nothing else records it: a folder's codes.json does), where pack's default, its cells, made a
    larger image of the codes of a 17x9 one, 32x16."""
    cells = (-(-width // hop) * hop, -(-height // hop) * hop)
    if (width, height) != cells:
        click.echo(f"vqcodec: note: the image is {width}x{height} pixels, and its codes' cells decode to "
                   f"{cells[0]}x{cells[1]}: `vqcodec pack --width {width} --height {height}` restores its size",
                   err=True)


def _refuse_media_options_for_vq(quality, kind, depth_weight) -> None:
    if quality is not None or depth_weight or kind:
        raise VQCodecError("-q, --kind and --depth-weight choose how media are coded; a .vq file's codes "
                           "are already chosen")


def _holds_only_vq_files(folder: Path, output_path: str) -> bool:
    """Whether a folder holds .vq files and no media (leaving out the output folder): folders.holds_only_vq_files."""
    from .folders import holds_only_vq_files

    return holds_only_vq_files(folder, Path(output_path) if output_path != "-" else None)


def _say_nothing_to_resume(out: Path) -> None:
    """What `codes FOLDER OUT --resume` says, exiting with status 0, where OUT's codes.json is of a finished run."""
    from .folders import nothing_to_resume_line

    _progress(nothing_to_resume_line(out))


def _codes_of_vq_folder(folder: Path, out: Path, model: str | None, device: str, force: bool,
                        resume: bool = False) -> None:
    """`vqcodec codes FOLDER OUT` of a folder of .vq files: vqcodec.folders.codes_of_vq_tree."""
    from .folders import codes_of_vq_tree

    report = codes_of_vq_tree(folder, out, model=model, device=device, replace=force, resume=resume, log=_progress,
                              progress=progressline.show)
    if report is not None:  # None: nothing to resume, said by its log line
        _finish_tree(report, "coded", out)


def _codes_codec(model: str | None, kind: str, depth_weight: float, device: str, input_path: str | None = None,
                 forced: str | None = None):
    """The codec that codes media for `vqcodec codes`: fixed-width coding, unless per-cell depth needs the prior."""
    from .codec import Codec

    codec = Codec.load(model or DEFAULT_MODELS[kind], device=device, coding="auto" if depth_weight else "fixed")
    if codec.kind != kind:
        raise _kind_refused(codec, kind, input_path, forced)
    refuse_weights_when_fixed_width(codec, None, depth_weight or None, "these codes would be chosen without one")
    codec.depth_weight = depth_weight
    return codec


def _codes_of_folder(folder: Path, out: Path, model: str | None, quality: int | None, kind: str | None,
                     depth_weight: float, device: str, force: bool, resume: bool = False) -> None:
    """`vqcodec codes FOLDER OUT`: vqcodec.folders.codes_of_media_tree, with the codec the options set up; with
    `resume`, going on with the stopped run in OUT, whose outputs it may replace."""
    from .folders import codes_of_media_tree
    from .modelfile import model_kind

    out = _output_folder(str(out))
    if kind is None and model is not None:
        kind = model_kind(model)
    report = codes_of_media_tree(lambda found: _codes_codec(model, found, depth_weight, device), folder, out,
                                 quality=quality, kind=kind, replace=force, resume=resume, log=_progress,
                                 progress=progressline.show, on_warning=_print_warning)
    if report is not None:  # None: nothing to resume, said by its log line
        _finish_tree(report, "coded", out, by_path=True)


@cli.command()
@click.argument("input_path", metavar="CODES")
@click.argument("output_path", metavar="OUTPUT", callback=_output_name)
@click.option("-m", "--model", required=True, callback=_model_name,
              help="Model name or path whose codebooks the codes index.")
@click.option("--rate", type=click.IntRange(1, vqformat.MAX_SAMPLE_RATE), default=None, metavar="HZ",
              help="Audio: the sample rate to decode to (default: the model's).")
@click.option("--samples", type=click.IntRange(1), default=None,
              help="Audio: samples per channel to decode to (default: frames x hop at --rate).")
@click.option("--width", type=click.IntRange(1), default=None,
              help="Image: width to decode to (default: cols x the model's stride).")
@click.option("--height", type=click.IntRange(1), default=None,
              help="Image: height to decode to (default: rows x the stride).")
@click.option("--gain", type=click.FloatRange(0, min_open=True), default=None,
              help="Audio: what the decoded audio is multiplied by (default 1; for recordings coded at a level "
                   "gain, `vqcodec info` shows a .vq file's, and `vqcodec codes` prints a recording's and lists a "
                   "folder's in codes.json).")
@click.option("--coding", type=click.Choice(["auto", "prior", "fixed"]), default="auto", show_default=True,
              help="Payload coding, as for `encode` (fixed: the same bytes again for a fixed-width file).")
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists (or, for -, write to stdout that is a "
              "terminal).")
def pack(input_path, output_path, model, rate, samples, width, height, gain, coding, force):
    """Pack integer codes from a NumPy .npy file into a .vq file, the inverse of `vqcodec codes`.

    CODES holds integers as `vqcodec codes` writes them: audio (channels, quality, frames), images
    (quality, rows, cols); -1 leaves a level out of a frame or cell, from some level up. They may
    come from a .vq file or from your own model of the codes. They are entropy coded under the
    model's prior (packed at fixed width if it has none, or with --coding fixed), and `vqcodec
    decode` turns the file into audio or an image. Codes that a codes.json in their folder or one
    above it lists (`vqcodec codes FOLDER OUT`) are refused with a model of another kind than it
    gives for them, or that does not make their codes (of another codes id; of a codes.json written
    before codes ids, another model id, unless an installed model says it makes the same codes).

    \b
    Examples:
      vqcodec codes speech.vq codes.npy && vqcodec pack codes.npy again.vq -m speech16k
      vqcodec pack generated.npy generated.vq -m speech16k && vqcodec decode generated.vq generated.wav
      vqcodec pack photo_codes.npy photo.vq -m image --width 768 --height 512
    """
    from .codec import Codec
    from .tokens import check_listed_codes, manifests_above

    _refuse_media_output_name(output_path, "pack")
    if input_path != "-" and os.path.isdir(input_path):  # as `codes FOLDER OUT` writes, unlike pack
        raise VQCodecError(f"{input_path}: is a directory; pack takes one .npy file (pack each file of a folder of "
                           "codes in turn)")
    _refuse_output_file(output_path, force, input_path)
    for manifest in manifests_above(input_path) if input_path != "-" else []:  # read by check_listed_codes
        _refuse_output_on_input(output_path, str(manifest))
    codec = Codec.load(model, coding=coding)
    if input_path != "-":
        check_listed_codes(codec, input_path)
    settings = dict(sample_rate=rate, samples=samples, width=width, height=height, gain=gain)
    array = _npy_codes(input_path, codec, **settings)
    encoded = codec.codes_to_file(array, **settings)
    _write_output(output_path, lambda stream: stream.write(encoded), force)


def _npy_codes(input_path: str, codec, **restore):
    """`pack`'s codes (tokens.read_codes_npy), read a piece at a time from a regular file, stdin, a FIFO or a
    device alike: never held whole."""
    from .tokens import read_codes_npy

    if input_path != "-":
        _checked_path(input_path)
    try:
        with _input_stream(input_path) as stream:
            if hasattr(stream, "peek") and not stream.peek(1):  # else "-: not a NumPy .npy file"
                raise _empty_input(input_path)
            return read_codes_npy(stream, codec, **restore)
    except OSError as exc:
        raise _unreadable_input(input_path, exc) from None


def _print_code_report(report: dict) -> None:
    has_ideal = report["ideal_bytes"] is not None
    click.echo(f"chunks:    {report['chunks']} ({report['framing_bytes']} bytes of header, chunk heads and alpha)")
    click.echo("")
    click.echo(" codebook       codes   fixed bits   ideal bits   ideal bits/code")
    for row in report["levels"]:
        ideal = f"{row['ideal_bits']:12.0f}   {row['ideal_bits'] / max(row['codes'], 1):15.3f}" if has_ideal \
            else f"{'-':>12}   {'-':>15}"
        click.echo(f" {row['level']:8d} {row['codes']:11d} {row['fixed_bits']:12d} {ideal}")
    if report["depth_ideal_bits"] is not None:
        click.echo(f" {'depths':>8} {report['cells']:11d} {'-':>12} {report['depth_ideal_bits']:12.0f}   "
                   f"{report['depth_ideal_bits'] / max(report['cells'], 1):15.3f}")
    fixed_bits = sum(r["fixed_bits"] for r in report["levels"])
    click.echo(f" {'total':>8} {sum(r['codes'] for r in report['levels']):11d} {fixed_bits:12d}"
               + (f" {report['ideal_bytes'] * 8:12.0f}" if has_ideal else ""))
    click.echo("")
    actual = report["payload_bytes"]
    codes = sum(r["codes"] for r in report["levels"])
    every = "" if codes == report["cells"] * len(report["levels"]) else \
        f" (all {len(report['levels'])} levels of every cell, not only the {plural(codes, 'code')} above)"
    click.echo(f"payload:   {plural(actual, 'byte')} actual ({report['coding']}); fixed width would take "
               f"{plural(report['fixed_width_bytes'], 'byte')}{every}")
    if has_ideal and report["prior_id"] is None:
        ideal = report["ideal_bytes"]
        click.echo(f"ideal:     {ideal:.1f} bytes under the model's prior: entropy coding (--coding prior) would save "
                   f"about {(1 - ideal / actual) * 100 if actual else 0:.1f}%")
    elif has_ideal:
        ideal = report["ideal_bytes"]
        click.echo(f"ideal:     {ideal:.1f} bytes under the model's prior; actual is "
                   f"{(actual / ideal - 1) * 100 if ideal else 0:+.2f}% of it")
    else:
        click.echo("ideal:     the model has no prior (vqcodec fit-prior adds one)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json):
    """List the installed models (shipped ones and those on $VQCODEC_MODEL_PATH).

    --json also gives each model's training record: the run that made it, and under "earlier" the
    record of the model it started from (--init). A model of the same name as one earlier in the
    path is shadowed: the name loads the first, but files that a shadowed model wrote still decode
    with it (they name their model by id).

    \b
    Example:
      VQCODEC_MODEL_PATH=runs/mine vqcodec models
    """
    from .registry import list_models, model_path_problems, model_search_path

    _refuse_closed_stdout()
    for folder in model_search_path():  # `models >> DIR/NAME.json` appended the listing to a model it read
        for read in (*folder.glob("*.json"), *folder.glob("*.safetensors")):
            _refuse_output_on_input("-", str(read))
    for problem in model_path_problems():
        click.echo(f"{WARNING_PREFIX}{problem}; not searched", err=True)
    problems = []
    found = list_models(shadowed=True, problems=problems)
    for problem in problems:
        click.echo(f"{WARNING_PREFIX}{problem}; not listed", err=True)
    with _writing_stdout():
        _print_models(found, as_json)


def _print_models(found: list[dict], as_json: bool) -> None:
    from .config import config_from_dict

    if as_json:
        click.echo(json.dumps(json_names([{**{k: m[k] for k in ("name", "kind", "sample_rate", "model_id", "path",
                                                               "config") if k in m},
                                            "shadowed": m.get("shadowed", False), "decodes": m.get("decodes", []),
                                            "training": m.get("training") or {}}
                                           for m in found]), indent=2))
        return
    if not found:
        click.echo("no models installed")
    for m in found:
        cfg = config_from_dict(m["config"])
        rate = f"{m['sample_rate']} Hz, " if m.get("sample_rate") else ""
        click.echo(f"{m['name']:<12} {m['kind']:<6} {rate}{plural(cfg.num_codebooks, 'codebook')} x "
                   f"{cfg.codebook_size}  "
                   f"id {m['model_id']}  {m['path']}"
                   + (f"  (shadowed by {_shadowing(m)}; still decodes its files)" if m.get("shadowed") else "")
                   + (f"  (also decodes files of {', '.join(m['decodes'])})" if m.get("decodes") else ""))


def _shadowing(model: dict) -> str:
    """What hides a shadowed model's name: a model listed above it, or one left out for the problem a warning gave."""
    return ("the unusable model of that name in the warning above" if model.get("shadowed_by_unlisted")
            else "the one above of that name")


def _check_folder(data_dir) -> None:
    """A training or fitting folder that is not one is refused, saying whether it is missing (or why it cannot
    be looked at: a link to itself). `-` is a folder of that name, where there is one: stdin is not read."""
    from .streams import why_missing

    if not Path(data_dir).is_dir():
        if data_dir == "-" and not os.path.lexists(data_dir):
            raise VQCodecError("-: no such directory (DIR is a folder: stdin is not read)")
        raise VQCodecError(f"{data_dir}: {why_missing(data_dir, 'no such directory') or 'not a directory'}")


def _refuse_stdout_as_out(out: str, what: str) -> None:
    """Refuse `--out -` where the output is `what` (files on disk), which stdout cannot take: it made a
    folder, or a model, named `-`; ./- still names one."""
    if out == "-":
        raise VQCodecError(f"--out -: {what}, not stdout: give a path (./- for one named -)")


@cli.command()
@click.argument("data_dir", metavar="DIR")
@click.option("--out", required=True,
              help="Folder the run writes to, made if missing: the model files, the checkpoint and the training log.")
@click.option("--name", default=None, help="Model name (default: the output folder's name; with --resume, the run's).")
@click.option("--kind", type=click.Choice(["audio", "image"]), default=None, help="Media kind (default: detected).")
@click.option("--config", "config_path", default=None, help="JSON file with model config fields (see docs).")
@click.option("--codebooks", type=click.IntRange(1, MAX_CODEBOOKS), default=None,
              help="Number of residual codebooks.")
@click.option("--codebook-size", type=click.IntRange(2, MAX_CODEBOOK_SIZE), default=None, help="Entries per codebook.")
@click.option("--sample-rate", type=click.IntRange(MIN_MODEL_RATE, MAX_MODEL_RATE), default=None,
              help="Audio model sample rate.")
@device_option
@click.option("--max-minutes", type=float, default=None,
              help="Training time budget in minutes (give it, --max-steps, or both: training stops at the first).")
@click.option("--max-steps", type=click.IntRange(0), default=None,
              help="Training step budget, at most 2**53 (0 with --init: write the starting model, grown by --config, "
                   "untrained).")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Examples per step, over all processes under torchrun (default 16 audio, 12 images on the CPU; "
                   "64 and 32 on a GPU; times the number of processes; with --resume, the run's; at most 65536).")
@click.option("--crop", type=click.IntRange(1), default=None,
              help="Crop length in samples (audio, default 8000) or side in pixels (images, 128; 256 on a GPU; with "
                   "--resume, the run's).")
@click.option("--lr", type=float, default=None,
              help="Peak learning rate: warmed up to over the first 200 steps, then down to a tenth of it along a "
                   "half cosine over the budget (lower for fine-tuning with --init, such as 3e-4).  [default: 0.001; "
                   "with --resume, the run's]")
@click.option("--eval-every", type=click.IntRange(1), default=None,
              help="Steps between validations (and training-log records), at most 2**53.  [default: 200; with "
                   "--resume, the run's]")
@threads_option
@click.option("--precision", default=None, type=click.Choice(["auto", "fp32", "bf16"]),
              help="bf16: run the networks under bfloat16 autocast (quantiser and losses stay fp32). "
                   "auto: bf16 on GPUs and on CPUs with AMX, else fp32.  [default: auto; with --resume, the run's]")
@click.option("--noise", type=float, default=None,
              help="Audio: share of training crops mixed with coloured noise (at --noise-snr), so that the codec "
                   "keeps background noise instead of gating it.  [default: 0.0; with --resume, the run's share "
                   "and --noise-snr]")
@click.option("--noise-snr", default=None, metavar="LOW,HIGH",
              help="Audio: the range of SNRs, in dB below the speech, that --noise draws its noise from (with "
                   "--noise, or --resume of a run that has noise).  [default: 10,40; with --resume, the run's]")
@click.option("--weight-average", type=float, default=None, metavar="DECAY",
              help="Validate and write a moving average of the weights, updated each step with this decay (such as "
                   "0.999: about the last 1000 steps), instead of the last step's weights; 0: off (the default). "
                   "Kept when resuming unless given again.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("-f", "--force", is_flag=True,
              help="Start a new run in an --out folder that holds one (its checkpoint, log and model files are "
                   "replaced).")
@click.option("--init", "init_model", default=None, metavar="MODEL", callback=_model_name,
              help="Start from a trained model's weights and codebooks (a name such as speech16k, or a path) "
                   "instead of from scratch: fine-tuning. The model's config is kept, unless --config names the "
                   "same config with wider networks: then the model is widened without changing its output "
                   "(Net2Net) and trained on from there.")
@click.option("--decoder-only/--no-decoder-only", default=None,
              help="With --init: train the decoder alone. The encoder and codebooks stay as they are, so the new "
                   "model makes exactly the codes of the one it starts from (the same tokens, and a prior fitted "
                   "to them still fits). --config may widen the decoder alone (decoder_channels). Kept on when "
                   "resuming such a checkpoint: --no-decoder-only there is refused (train the whole model in a new "
                   "run with --init from its model).")
@click.option("--stream-data", is_flag=True,
              help="Read each training crop from its file when it is needed instead of holding the decoded folder "
                   "in memory (automatic for folders of over 2 GiB decoded).")
@click.option("--data-workers", type=click.IntRange(1, 256), default=None,
              help="Threads that read and crop the next batch while a step runs (default: this process's share "
                   "of the CPU cores, at most 8).")
@click.option("--no-prior", is_flag=True,
              help="Skip fitting the entropy-coding prior at the end (vqcodec fit-prior can add it later). A "
                   "--decoder-only run keeps its starting model's prior all the same: its codes are that model's.")
@click.option("--adversarial/--no-adversarial", default=None,
              help="Audio: add a multi-scale STFT discriminator and feature matching (best resumed from a model "
                   "first trained without it). Kept on when resuming such a checkpoint, unless --no-adversarial: "
                   "then it trains on without the discriminator, which its checkpoints no longer hold.  "
                   "[default: off; with --resume, the run's]")
def train(data_dir, out, name, kind, config_path, codebooks, codebook_size, sample_rate, device, max_minutes,
          max_steps, batch_size, crop, lr, eval_every, threads, precision, noise, noise_snr, weight_average, resume,
          force, init_model, decoder_only, stream_data, data_workers, no_prior, adversarial):
    """Train a codec model (encoder, codebooks and decoder) on the audio files or images in DIR, then fit
    its entropy-coding prior to their codes (unless --no-prior).

    DIR is read recursively (.NAME files and folders left out) and holds files of one kind (or give
    --kind): audio in any format soundfile reads, each channel a training signal, resampled to the
    model's rate; or images (PNG, JPEG, WebP and the other formats Pillow reads). Every 20th file is
    held out to validate on. A budget is needed: --max-minutes, --max-steps, or both.

    Everything is written to the --out folder (made if missing): the model's files NAME.safetensors
    and NAME.json (NAME: --name, default the folder's name), a checkpoint that --resume continues
    from (checkpoint.safetensors and .json: every 5 minutes, on Ctrl-C and at the end) and the
    training log (train_log.jsonl). A folder that holds another run is refused without --resume or
    --force.

    \b
    Examples:
      vqcodec train my_recordings/ --out runs/mine --max-minutes 60
      vqcodec train my_photos/ --out runs/photos --kind image --device cuda --max-minutes 60
      vqcodec train my_recordings/ --out runs/mine --resume --max-minutes 30
      vqcodec train my_recordings/ --out runs/mine --resume --adversarial --max-minutes 120
      vqcodec train my_recordings/ --out runs/mine --noise 0.5 --max-minutes 60
      vqcodec train my_recordings/ --out runs/tuned --init speech16k --lr 3e-4 --max-minutes 30
      vqcodec train my_photos/ --out runs/dec --init image --decoder-only --lr 5e-5 --max-minutes 60
      torchrun --nproc_per_node 8 -m vqcodec train my_recordings/ --out runs/big --device cuda --max-minutes 60
    Then: VQCODEC_MODEL_PATH=runs/mine vqcodec encode in.wav out.vq -m mine
    Under torchrun each process (one per GPU) trains on its share of every batch.
    """
    from .devices import resolve_device
    from .train import train_command
    from .trainoptions import TrainOptions

    _check_folder(data_dir)
    _refuse_stdout_as_out(out, "train writes a folder")
    snr_range = None if noise_snr is None else _snr_range(noise_snr)
    options = TrainOptions(out=Path(out), name=name, device=resolve_device(device),
                           batch_size=batch_size, crop=crop, lr=lr, max_minutes=max_minutes, max_steps=max_steps,
                           eval_every=eval_every, threads=threads, resume=resume, replace=force, fit_prior=not no_prior,
                           adversarial=adversarial, precision=precision, noise=noise, noise_snr_db=snr_range,
                           weight_average=weight_average, init=init_model, decoder_only=decoder_only,
                           stream_data=stream_data, data_workers=data_workers)
    train_command(Path(data_dir), options, config_path, kind, num_codebooks=codebooks, codebook_size=codebook_size,
                  sample_rate=sample_rate)


def _snr_range(text: str) -> tuple[float, float]:
    """--noise-snr LOW,HIGH as its two numbers."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise VQCodecError(f"--noise-snr takes two numbers, LOW,HIGH in dB (such as 10,40), not {text!r}") from None
    return low, high


def _comma_separated(text: str, kind, option: str, what: str) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise VQCodecError(f"{option} takes comma-separated {what}, not {text!r}") from None


@cli.command("eval")
@click.argument("model", metavar="MODEL", callback=_model_name)
@click.argument("data_dir", metavar="DIR|FILE")
@click.option("-q", "--qualities", default=None, metavar="Q1,Q2,...",
              help="Quality levels to measure (default: 1, 2, 4, 8, ... and the model's highest).")
@click.option("--rates", default=None, metavar="R1,R2,...",
              help="Measure at these target rates instead (kbps for audio, bits per pixel for images), each file "
                   "coded as `encode --bitrate` / `--bpp` would; -q then gives the most codebooks (one level).")
@click.option("--files", type=click.IntRange(1), default=None, help="Measure the first N files only (sorted by path).")
@click.option("--depth-weight", default=None, type=click.FloatRange(0, 100),
              help="Encoder's per-cell depth weight, as for `encode` (default: the model kind's default).")
@device_option
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (rows, files, skipped files).")
def eval_command(model, data_dir, qualities, rates, files, depth_weight, device, threads, as_json):
    """Measure a model on the files of its kind (audio or images) in a folder, read recursively, or on
    one file: real bitrate and quality at each quality level, and speed. A folder's .NAME files and
    folders are left out.

    Every file is encoded to .vq bytes and decoded, as `encode` and `decode` would. Audio: kbps
    (file bytes x 8 / duration), SI-SDR, log-mel L1, and PESQ-WB and STOI where the bench extra
    is installed, compared at the model's sample rate; images: bpp, PSNR and MS-SSIM over RGB.
    Means over the files; encode and decode speed as multiples of real time (images a second).
    A file that cannot be read is reported and left out, and the command then exits with status 1,
    after the report of the others.

    \b
    Examples:
      vqcodec eval speech16k my_recordings/ -q 1,4,8
      vqcodec eval runs/mine/mine.safetensors held_out/ --files 20 --json
      vqcodec eval image my_photos/ -q 4,8,12,20
      vqcodec eval speech16k talk.flac -q 2,4,8        # one file
      vqcodec eval image my_photos/ --rates 0.2,0.3,0.5   # at equal rate: compare models directly
    """
    from .codec import Codec
    from .devices import resolve_device
    from .data import say_passed_over
    from .evaluate import files_of, table

    _refuse_closed_stdout()
    if data_dir != "-":  # `eval speech16k talk.wav >> talk.wav` appended its table to the recording
        _refuse_output_on_input("-", data_dir)
        _refuse_stdout_on_media_in(data_dir)
    _use_threads(threads)
    codec = Codec.load(model, device=resolve_device(device))
    refuse_weights_when_fixed_width(codec, None, depth_weight)
    if depth_weight is not None:
        codec.depth_weight = depth_weight
    targets = _comma_separated(rates, float, "--rates", "numbers") if rates else None
    if targets and not all(0 < t < math.inf for t in targets):
        raise VQCodecError(f"--rates must be positive numbers of {rate_unit(codec.kind)} (finite), not {rates!r}")
    levels = None  # evaluate's default_levels, or with --rates the highest
    if qualities:
        levels = list(dict.fromkeys(_comma_separated(qualities, int, "-q", "integers")))  # each once
        if targets and len(levels) != 1:
            raise VQCodecError("with --rates, -q takes one level: the most codebooks a file may use")
    passed_over: list[tuple[Path, str]] = []  # of a folder: names that are not regular files
    paths = files_of(codec, data_dir, passed_over)
    say_passed_over(passed_over)
    measured = paths[:files]
    report = _evaluate_listing_skipped(codec, measured, levels, targets, Path(data_dir).is_dir())
    with _writing_stdout():
        if as_json:
            click.echo(json.dumps(json_names(report), indent=1))
        else:
            unit = "file" if codec.kind == "audio" else "image"
            what = f"{plural(len(report['files']), unit)} of {data_dir}" if Path(data_dir).is_dir() else data_dir
            click.echo(f"{codec.name} ({codec.model_id.hex()}) on {what}"
                       + (f" ({len(report['skipped'])} skipped)" if report["skipped"] else ""))
            click.echo(table(report))
    _fail_if_skipped(len(report["skipped"]) + len(passed_over), len(measured) + len(passed_over), "measured")


def _evaluate_listing_skipped(codec, paths: list[Path], levels, targets, folder: bool) -> dict:
    """eval's report; a folder's files that could not be read each get a skipping line as they are
    skipped, and where none could, the error counts them, as the other folder commands' do (a single
    file's error gives its reason)."""
    from .evaluate import evaluate

    skipped = []

    def skip(path, reason):
        skipped.append(path)
        _print_skipped(path, reason)

    try:
        return evaluate(codec, paths, levels, log=progressline.show, targets=targets, on_skip=skip if folder else None,
                        on_warning=_print_warning)
    except VQCodecError:
        if skipped and len(skipped) == len(paths):
            _fail_if_skipped(len(skipped), len(paths), "measured", ": nothing was measured")
        raise
    finally:
        progressline.clear()


@cli.command("fit-prior")
@click.argument("model", metavar="MODEL", callback=_model_name)
@click.argument("data_dir", metavar="DIR")
@click.option("--out", default=None, metavar="PATH",
              help="Write a copy of the model with the new prior to this path (NAME or NAME.safetensors, with "
                   "NAME.json beside it, in a folder that exists) instead of replacing its prior in place.")
@device_option
@threads_option
@click.option("-f", "--force", is_flag=True,
              help="Overwrite the model files that --out names (MODEL's own too), or a shipped model's prior.")
def fit_prior(model, data_dir, out, device, threads, force):
    """Fit the entropy-coding prior of MODEL to the codes of the media in DIR, and store it in the model.

    DIR is read recursively, its .NAME files and folders left out. The prior gives the probability
    of each code index from its neighbours (coarser codebook, earlier frame or neighbouring cell);
    files are then range coded with it. When DIR holds fewer than 1000 files, the prior is also
    fitted to other views of each (photos turned and scaled down, recordings sped up and slowed
    down), which makes it fit new files better. The model id does not change, so existing .vq files
    keep decoding; files entropy coded with an earlier prior need that prior. A shipped model's
    prior is replaced only with --force (give --out for a copy), as is MODEL's own when --out names
    its files. Another fit-prior or a training run writing in the folder it writes in makes it stop
    at once. At the end it says, for each codebook level, the context it chose and the bits per
    code that gives.

    \b
    Examples:
      vqcodec fit-prior runs/mine/mine.safetensors my_recordings/
      vqcodec fit-prior speech16k more_speech/ --out models/speech16k_v2.safetensors
    """
    from .devices import resolve_device
    from .registry import find_model
    from .modelfile import model_files_locked, read_model_files
    from .data import find_media, readable_files, say_passed_over
    from .prior import check_codebook_size
    from .priorfit import fit_prior_files, model_copy_path, refuse_replacing_a_shipped_model

    _use_threads(threads)
    _check_folder(data_dir)
    if out is not None:
        _refuse_stdout_as_out(out, "fit-prior writes model files")
    path = find_model(model)
    meta, _ = read_model_files(path)
    check_codebook_size(meta["config"]["codebook_size"])  # before the folder is read
    target = model_copy_path(out) if out is not None else None

    def same(one: Path, other: Path) -> bool:  # not Path.resolve, which raises for a link in a loop
        return os.path.realpath(one) == os.path.realpath(other)

    refuse_replacing_a_shipped_model(target or path, target is not None, force)
    if target is not None and same(target, path) and not force:
        raise VQCodecError(f"--out {out} names {path.stem}'s own files, whose prior it would replace: leave --out "
                           f"out to replace it in place, give another --out for a copy, or pass --force")
    with model_files_locked(target or path):  # before the check of --out, which another run could write meanwhile
        if target is not None and not same(target, path):
            for existing in (target, target.with_suffix(".json")):
                _refuse_existing_output(str(existing), force)
        passed_over: list[tuple[Path, str]] = []
        kind, files = find_media(Path(data_dir), meta["config"]["kind"], None, passed_over)
        say_passed_over(passed_over)
        files = readable_files(kind, files, data_dir)  # one name per file: a second could be held out and fitted to
        fit_prior_files(path, files, out=target, device=resolve_device(device),
                        log=_progress, progress=progressline.show, replace_shipped=force)


def _terminate(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _stopping_like_ctrl_c():
    """SIGTERM (kill, a job scheduler) and SIGHUP (a closed terminal) stop the command as Ctrl-C does,
    instead of ending the process where it stands, which would leave a temporary output file behind and
    lose what a training run did since its last checkpoint. Signals set to be ignored (nohup) stay so."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _terminate)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted(exc: BaseException | None) -> int:
    """Say why the command stopped, and the exit status a shell gives a process stopped by that signal."""
    with contextlib.suppress(BrokenPipeError):  # no one to say it to
        click.echo(f"vqcodec: stopped by {signal.Signals(exc.signum).name}" if isinstance(exc, Terminated)
                   else "vqcodec: interrupted", err=True)
    return 128 + exc.signum if isinstance(exc, Terminated) else 130


@contextlib.contextmanager
def _names_written_as_their_bytes():
    """Every line written to stdout and stderr (errors, warnings, skipping lines, progress, tables) writes a file
    name that is not UTF-8 with its own bytes (wording.NAME_BYTES), not as "\\udcff" (stderr's backslashreplace),
    which names no file, nor stopped by a UnicodeEncodeError (stdout's strict errors outside the C locale).
    A stream in ASCII (the C locale without Python's UTF-8 mode, PYTHONUTF8=0, or PYTHONIOENCODING=ascii) writes
    UTF-8: click writes its lines in UTF-8 there anyway, through a stream of its own whose errors, "replace", wrote
    each byte of a name beyond ASCII as "?", where the progress and skipping lines wrote the byte itself."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # not a text file, or closed
            encoding, errors = stream.encoding, stream.errors
            stream.reconfigure(encoding=_beyond_ascii(encoding), errors=NAME_BYTES)
            changed.append((stream, encoding, errors))
    try:
        yield
    finally:
        for stream, encoding, errors in changed:
            with contextlib.suppress(OSError, ValueError):  # one that cannot be written keeps it (main tells)
                stream.reconfigure(encoding=encoding, errors=errors)


def _beyond_ascii(encoding: str) -> str:
    """`encoding`, or UTF-8 where it is ASCII (what click takes then)."""
    return "utf-8" if codecs.lookup(encoding).name == "ascii" else encoding


def run(args: list[str] | None = None) -> int:
    """Run the command line and turn every user error into one line on stderr and an exit code."""
    with _stopping_like_ctrl_c(), _names_written_as_their_bytes():
        return _run(args)


def _run(args: list[str] | None) -> int:
    import warnings

    from .errors import AudioReadWarning, ImageReadWarning

    show = warnings.showwarning

    def show_read_warning_in_one_line(message, category, *rest, **options):
        progressline.clear()  # a progress line (train's steps, eval's files, a percentage) shown in place
        if issubclass(category, (ImageReadWarning, AudioReadWarning)):
            click.echo(one_line(f"{WARNING_PREFIX}{message}"), err=True)
        else:
            show(message, category, *rest, **options)

    def error(line: str) -> None:
        progressline.clear()  # a progress line shown in place on a terminal
        click.echo(one_line(line), err=True)

    try:
        warnings.showwarning = show_read_warning_in_one_line
        _check_thread_environment()
        _load_torch_outside_a_removed_working_folder()
        result = cli.main(args=args, prog_name="vqcodec", standalone_mode=False)
        if isinstance(result, int):
            return result
    except VQCodecError as exc:
        error(f"vqcodec: error: {exc}")
        return 1
    except _Stopped as stop:
        if progressline.on_terminal() and not progressline.clear():  # a ^C over a progress line goes with it
            click.echo(err=True)  # after its ^C
        return _interrupted(stop.interrupt)
    except click.exceptions.Abort as exc:  # click's form of Ctrl-C (and of Terminated) while it reads the arguments
        return _interrupted(exc.__cause__)
    except click.ClickException as exc:
        error(f"vqcodec: error: {exc.format_message()}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except BrokenPipeError:
        return 1
    except MemoryError:
        error("vqcodec: error: out of memory")
        return 1
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        error("vqcodec: error: out of memory")
        return 1
    except OSError as exc:
        if exc.filename is None and _working_folder_removed():  # os.getcwd's, of a relative path (resolve, abspath)
            error(f"vqcodec: error: {WORKING_FOLDER_REMOVED}")
        else:
            error(f"vqcodec: error: {reason_of(exc)}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    finally:
        warnings.showwarning = show
    return 0


def _open_stderr() -> None:
    """With stderr closed (`2>&-`), what it is told goes nowhere: sys.stderr is None then, which
    stopped every command, and the first file opened would take its descriptor."""
    try:
        os.fstat(2)
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != 2:
            os.dup2(null, 2)
            os.close(null)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def _drop_unwritten_stdout(code: int) -> int:
    """The exit status, once what stdout holds unwritten is written or, where it cannot be (a full disk,
    reported already), dropped: Python's own flush at exit printed 'Exception ignored' and exited 120."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        return code
    except OSError as exc:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        if code == 0 and not isinstance(exc, BrokenPipeError):
            click.echo(f"vqcodec: error: cannot write stdout: {reason_of(exc)}", err=True)
        return code or 1


def main() -> None:
    _open_stderr()
    sys.exit(_drop_unwritten_stdout(run()))


if __name__ == "__main__":
    main()
