"""Media in and out: audio through soundfile and soxr, images through Pillow."""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import numbers
import os
import re
import stat
import struct
import sys
import threading
import warnings
from io import BytesIO, RawIOBase, TextIOBase, UnsupportedOperation
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
import soxr

from .errors import AudioReadWarning, ImageReadWarning, VQCodecError, caller_stacklevel
from . import imagedata
from .format import MAX_IMAGE_SIDE
from .imagedata import BMP_BI_RGB, BMP_BITFIELDS, PILLOW_READ_ERRORS
from .wording import plural, reason_of, setting, shown_cut

# Suffixes that name one of soundfile's formats (which it knows by name: WAV, AIFF, ...) otherwise
AUDIO_SUFFIX_FORMATS = {".wave": "WAV", ".aif": "AIFF", ".aifc": "AIFF", ".snd": "AU", ".sph": "NIST", ".oga": "OGG"}
AUDIO_EXTENSIONS = ({"." + ext.lower() for ext in soundfile.available_formats()} | set(AUDIO_SUFFIX_FORMATS)
                    | {".opus"})
# Formats named by their codec, which soundfile writes as a subtype of a container format
AUDIO_CODEC_FORMATS = {"OPUS": ("OGG", "OPUS")} if "OPUS" in soundfile.available_subtypes("OGG") else {}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Subtypes of lossy codecs that code float samples, which keep samples beyond +-1.0 as float WAV does
# (a 1.9 peak comes back as 1.9, to the codec's error, at 16 and 48 kHz). Not Opus: libopus codes
# speech at 16 kHz and below in its SILK mode through 16-bit integers, clipped to +-1.0.
FLOAT_CODEC_SUBTYPES = {"VORBIS", "MPEG_LAYER_III"}  # MP3: the only MPEG layer libsndfile writes
# The Netpbm variants, whose extension says what they hold: PBM black and white, PGM grey, PPM colour,
# PNM any of these three, PFM float
NETPBM_VARIANTS = {"pbm", "pgm", "ppm", "pnm", "pfm"}
# Raster formats Pillow reads (soundfile claims none of these extensions)
IMAGE_EXTENSIONS = {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
                    ".gif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".qoi", ".jp2", ".j2k", ".jpx",
                    ".tga", ".spi", ".spider"}


def _umask() -> int:
    """The process's umask. os.umask reads it only by setting it, and while it is set to 0 a file that
    another thread creates is writable by everyone, so it is read from /proc where Linux gives it."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # the moment it is set, the strictest
    os.umask(umask)
    return umask


def move_into_place(finished, target, replace: bool = True) -> None:
    """Rename a finished temporary file onto `target`, with the permissions a plain open() would
    have given it: those of the file it replaces, else 0666 less the umask (mkstemp and
    safetensors create files only their owner can read). With replace=False a `target` that has
    appeared meanwhile (another run writing the same name) is kept, and VQCodecError raised."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    os.chmod(finished, mode)
    if not replace:
        try:
            os.link(finished, target)  # fails, atomically, where target exists
        except FileExistsError:
            taken = True
        except OSError:  # no hard links on this file system: check, then rename
            taken = os.path.lexists(target)
        else:
            os.unlink(finished)
            return
        if taken:
            raise VQCodecError(setting(f"{target} exists (written while this ran); pass --force to overwrite it",
                                       f"{target} exists; pass replace=True to overwrite it"))
    os.replace(finished, target)


def is_stream_file(path) -> bool:
    """Whether `path` is a FIFO or a character device (/dev/null, a terminal, /dev/stdout when that is
    a pipe): output is written into it, since renaming a file onto it would put a regular file in its
    place, and writing into it overwrites nothing."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _id_unless_stream(status: os.stat_result) -> tuple[int, int] | None:
    # a socket too: socat's EXEC, inetd and systemd's Accept=yes give one socket as both stdin and stdout
    if stat.S_ISFIFO(status.st_mode) or stat.S_ISCHR(status.st_mode) or stat.S_ISSOCK(status.st_mode):
        return None
    return status.st_dev, status.st_ino


def file_id(path) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`, links followed, which is the same for every name of it (a
    link, a hard link); None where nothing can be looked at there, and for a FIFO, character device or socket,
    which is never an input that writing into it would overwrite."""
    try:
        return _id_unless_stream(os.stat(path))
    except (OSError, ValueError):
        return None


def descriptor_file_id(descriptor: int) -> tuple[int, int] | None:
    """file_id of the file this process's `descriptor` is open on (1: stdout, where the shell's `> FILE` put
    it), from the descriptor itself: no name, and no /proc, is needed. None where it is not open."""
    try:
        return _id_unless_stream(os.fstat(descriptor))
    except OSError:
        return None


def descriptor_path(descriptor: int) -> Path | None:
    """The path of the file `descriptor` is open on, where Linux's /proc/self/fd/N says and it names that file
    still (not one deleted or renamed since); None elsewhere (no /proc). Only what needs the file's name, not
    just which file it is (descriptor_file_id), asks."""
    found = descriptor_file_id(descriptor)
    try:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
    except OSError:
        return None
    return path if found is not None and file_id(path) == found else None


def is_empty_file(path) -> bool:
    """Whether `path` is a regular file of no bytes (a FIFO's bytes are not looked at: they would be gone)."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size == 0


class EmptyInput(VQCodecError):
    """Media of no bytes (refuse_empty_media), whose error is its own words, not put in another reader's
    ("cannot read image X: ...")."""


def is_stdin_buffer(source) -> bool:
    """Whether `source` is a stream named as sys.stdin.buffer is, "<stdin>" (not a path of that name): errors call
    it stdin (empty_input, stream_name, input_name), as the command line does."""
    return standard_stream_name(source) == "stdin"


def standard_stream_name(source) -> str | None:
    """"stdin", "stdout" or "stderr" for a stream named as sys.stdin.buffer, sys.stdout.buffer or sys.stderr.buffer
    is ("<stdin>", ...; not a path of that name), as the command line calls them; None for any other."""
    name = None if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    return name[1:-1] if isinstance(name, str) and name in ("<stdin>", "<stdout>", "<stderr>") else None


def empty_input(source) -> EmptyInput:
    """The error for media of no bytes: `source` is a path, or a stream named by its path, as stdin (a descriptor, an
    int, as input_name takes it, or sys.stdin.buffer: is_stdin_buffer), or not at all. The command line words its own
    inputs so (cli._empty_input)."""
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    if isinstance(name, int) or is_stdin_buffer(source):
        return EmptyInput("stdin is empty")
    return EmptyInput(f"{name}: file is empty" if isinstance(name, (str, os.PathLike)) else "the stream is empty")


def _is_empty_stream(stream) -> bool:
    """Whether a stream that can seek holds no bytes at all (one read to its end is left to its reader, which says
    what it says of that); it is left where it was."""
    try:
        position = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(position)
    except (AttributeError, OSError, ValueError):
        return False
    return position == 0 and end == 0


def refuse_empty_media(source) -> None:
    """Refuse media of no bytes, a regular file's path or a stream that can seek, as empty_input says it ("PATH:
    file is empty"), where soundfile says "Format not recognised." of it and Pillow "not an image format", not why."""
    empty = is_empty_file(source) if isinstance(source, (str, os.PathLike)) else _is_empty_stream(source)
    if empty:
        raise empty_input(source)


def is_regular_stream(stream) -> bool:
    """Whether a stream reads a regular file (which ends, and can seek), not a pipe, FIFO or device."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # no descriptor (BytesIO: io.UnsupportedOperation)
        return False


MAX_SPOOL_BYTES = 32 << 30  # copied from a pipe (stdin, a socket), at most: a day of 48 kHz stereo float samples
SPOOL_BLOCK_BYTES = 1 << 20  # read at a time from a stream (stdin, a pipe) into a temporary file or memory, or written


def spooled(stream, head: bytes = b"", name: str = "the stream",
            what_goes_through: str = "a stream that cannot seek is read through one"):
    """`head` (what was read of `stream` already), then the rest of `stream`, copied into an anonymous temporary
    file, rewound: soundfile and Pillow need to seek, and on disk long audio stays out of memory. Refused past
    MAX_SPOOL_BYTES unless `stream` reads a regular file, which ends (a pipe may not: `cat /dev/zero` filled
    $TMPDIR), and where it is non-blocking and has no bytes ready (that read's None was taken for the end). The
    temporary file's failures are its own (temporary_file_error, with `what_goes_through`); what comes out of
    `stream`'s read (an OSError, a ValueError) is left to the caller to name as the stream's."""
    limit = math.inf if is_regular_stream(stream) else MAX_SPOOL_BYTES

    def copy(spool: TemporarySpool) -> None:
        block, copied = head or read_ready(stream, SPOOL_BLOCK_BYTES, name), 0
        while block:
            copied += len(block)
            if copied > limit:
                raise UnreadableStream(f"{name} goes on past {MAX_SPOOL_BYTES / (1 << 30):g} GiB, the most that "
                                       "is copied from a pipe: give the input as a file")
            spool.write(block)
            block = read_ready(stream, SPOOL_BLOCK_BYTES, name)
    return _written_into_spool(copy, what_goes_through).file


class TemporaryFileFull(VQCodecError):
    """A temporary file in $TMPDIR that cannot grow (temporary_file_error): its own words, not put in another reader's
    ("cannot read image NAME: ..."), as EmptyInput's are."""


class TemporaryFileFailed(VQCodecError):
    """A temporary file in $TMPDIR that failed otherwise (EIO: temporary_file_error), in its own words as
    TemporaryFileFull's are."""


NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full or small folder, a file size limit


def temporary_file_error(exc: OSError, what_goes_through: str) -> VQCodecError:
    """A temporary file in $TMPDIR that failed, named with its folder and `what_goes_through` one there ("stdin and
    stdout go through one"): TemporaryFileFull where it cannot grow, else TemporaryFileFailed."""
    import tempfile

    failed = f"cannot write a temporary file in {tempfile.gettempdir()}: {reason_of(exc)} ({what_goes_through} there"
    if exc.errno in NO_ROOM_ERRNOS:
        return TemporaryFileFull(f"{failed}: set TMPDIR to a folder with room)")
    return TemporaryFileFailed(f"{failed})")


@contextlib.contextmanager
def temporary_file_failures(what_goes_through: str):
    """Every OSError of a block that uses a temporary file alone named as the temporary file's (temporary_file_error):
    one of EIO was taken for the input's read failing."""
    try:
        yield
    except OSError as exc:
        raise temporary_file_error(exc, what_goes_through) from None


class TemporarySpool:
    """An anonymous temporary file in $TMPDIR that output is written into before it is copied on (into a pipe, stdout,
    a FIFO), whose own failures (creating it, its write, flush, seek, read, close: no room, EIO) are named as its,
    temporary_file_error with `what_goes_through`: one of EIO was the bare OSError, or taken for the output's. What
    writes into it (which may read the input) and the stream it is copied into fail in their own words."""

    def __init__(self, what_goes_through: str):
        import tempfile

        self.what_goes_through = what_goes_through
        with temporary_file_failures(what_goes_through):
            self.file = tempfile.TemporaryFile()

    def _its_own(self, method, *args):
        with temporary_file_failures(self.what_goes_through):
            return method(*args)

    def write(self, data) -> int:
        return self._its_own(self.file.write, data)

    def flush(self) -> None:
        self._its_own(self.file.flush)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._its_own(self.file.seek, offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._its_own(self.file.read, size)

    def close(self) -> None:
        self._its_own(self.file.close)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if exc is None:
            self.close()
        else:
            self.discard()

    def discard(self) -> None:
        """Close it after a failure: its buffer's write failing again is not said, as the first error says why."""
        with contextlib.suppress(OSError):
            self.file.close()


def is_seekable(stream) -> bool:
    """Whether a binary stream can seek (soundfile and Pillow need to; a pipe, socket or HTTP
    response cannot). A text stream is refused (refuse_text_stream)."""
    refuse_text_stream(stream)
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def refuse_text_stream(stream) -> None:
    """Refuse a text stream as media, whose read gives str."""
    if isinstance(stream, TextIOBase):
        raise VQCodecError("media is read from a binary stream, not a text one (open the file with 'rb')")


def spooled_stream(stream):
    """What is left of a stream that cannot seek (media), copied into an anonymous temporary file (spooled), named
    as a stream: its descriptor, an int, named it stdin (input_name). Nothing left is refused as the stream's
    empty_input (a pipe as stdin: "stdin is empty"); a temporary file that fails, by temporary_file_error. A
    stream that cannot be read (closed, failing, non-blocking with no bytes ready) or goes on past MAX_SPOOL_BYTES is
    refused by its name (cannot_read_stream, spooled)."""
    refuse_closed_stream(stream)
    try:
        spool = spooled(stream, name=str(stream_name(stream) or "the stream"))
    except (OSError, ValueError, TypeError) as exc:
        raise cannot_read_stream(stream_name(stream), reason_of(exc)) from None
    if not spool.seek(0, os.SEEK_END):
        spool.close()
        raise empty_input(stream)
    spool.seek(0)
    spool.raw.name = None
    return spool


def read_ready(stream, size: int, name: str) -> bytes:
    """What `stream.read(size)` gives; refused where that is None, a raw stream that is non-blocking before its bytes
    come (taken for the end, it cut the input short). `name`: the stream, as the error names it."""
    block = stream.read(size)
    if block is None:
        raise cannot_read_stream(name, "it is non-blocking, and had no bytes ready")
    return block


def read_at_most(stream, size: int, name: str) -> bytes:
    """read_ready's `size` bytes or fewer (all, for -1), as bytes (a bytearray or memoryview given is copied), refused
    where the stream gives more (what follows them would be read from the wrong place: a .vq stream's chunks) or
    something that is not bytes."""
    block = read_ready(stream, size, name)
    if isinstance(block, (bytearray, memoryview)):
        block = bytes(block)
    if not isinstance(block, bytes):
        raise cannot_read_stream(name, f"its read gives {type(block).__name__}, not bytes (a binary stream's, opened "
                                       "with 'rb')")
    if 0 <= size < len(block):
        raise cannot_read_stream(name, f"its read({size}) gave {len(block)} bytes, more than asked for")
    return block


def read_up_to(stream, size: int, name: str) -> bytes:
    """`size` bytes of a stream, fewer only where it ends, read a block at a time (a header may claim hundreds of
    MiB that never come); `name` as for read_ready."""
    pieces, got = [], 0
    while got < size and (piece := read_at_most(stream, min(size - got, SPOOL_BLOCK_BYTES), name)):
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def descriptor_named(path) -> int | None:
    """The file descriptor of this process that `path` names: N for /dev/fd/N and /proc/self/fd/N,
    1 for /dev/stdout; None for any other path. Output to such a name is written into the
    descriptor, where the shell's redirection put it (`3>> log`, `> out.wav`), not renamed onto the
    file it is open on."""
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if name == "/dev/stdout":
        return 1
    found = re.fullmatch(r"/(?:dev/fd|proc/self/fd)/([0-9]+)", name) if isinstance(name, str) else None
    return int(found.group(1)) if found else None


TEMPORARY_NAME_CHARS = 40  # of the output's name in its temporary file's: at most 160 bytes in UTF-8


def scalar_of(value):
    """The Python number (or flag) a 0-d NumPy array or torch tensor holds, as a DataLoader's batch gives a
    sample rate (torch.tensor(16000)); any other value as it is, for the check it is given to."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor)):
        try:
            return value.item() if value.ndim == 0 else value
        except (RuntimeError, ValueError):  # a tensor with no data (on the meta device): refused as it is
            return value
    return value


def is_whole(value) -> bool:
    """An int or NumPy integer, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def checked_flag(name: str, value) -> bool:
    """A yes-or-no option given to the Python API (salvage=, variable_depth=, TrainOptions' resume, ...):
    True or False (a NumPy bool too), not any value Python takes as true ("no", 2, a list)."""
    if not isinstance(value, (bool, np.bool_)):
        raise VQCodecError(f"{name} must be True or False, not {shown_cut(value, 40)}")
    return bool(value)


EMPTY_WRITES_ALLOWED = 8  # in a row, before copy_whole gives up on a stream that takes no bytes


def copy_whole(source, stream, block_bytes: int = SPOOL_BLOCK_BYTES) -> None:
    """Copy what is left of `source` into `stream`, every byte: a raw stream (unbuffered stdout, an OS
    pipe) may take only part of a block at each write (a pipe closed early, a full disk)."""
    while block := source.read(block_bytes):
        _write_every_byte(stream, memoryview(block))


def flush_written(stream) -> None:
    """Flush a caller's stream after writing into it, not closing it: a buffered one (open(path, "wb")) holds what
    fits its buffer, whose failed write (a full disk) was only the caller's flush or close's. Its OSError is the
    caller's to word as the write's. An object without a flush (one with a write alone) has nothing to flush."""
    flush = getattr(stream, "flush", None)
    if callable(flush):
        flush()


def _write_every_byte(stream, view) -> None:
    """Write all of `view` into `stream`, however little each write takes. A stream whose writes take no bytes,
    EMPTY_WRITES_ALLOWED in a row (a raw wrapper that takes nothing), is given up on with an OSError the caller
    words naming the stream, where copy_whole wrote again for ever; CPython's BufferedWriter still does (3.11),
    so it has no bound to follow."""
    empty_writes = 0
    while view:
        written = _bytes_written(stream, view)
        empty_writes = empty_writes + 1 if written == 0 else 0
        if empty_writes == EMPTY_WRITES_ALLOWED:
            raise OSError(errno.EIO, f"it takes no bytes ({EMPTY_WRITES_ALLOWED} writes in a row wrote none)")
        view = view[written:]


def _bytes_written(stream, view) -> int:
    """What stream.write(view) took. Its None is, from a raw stream (io.RawIOBase), that it is non-blocking and
    would block, where copy_whole spun for ever: raised as the BlockingIOError the caller words naming the stream;
    from another object (a write that returns nothing), all of it, as soundfile takes it. A count below 0, or
    no whole number (True, 2.5), is refused as CPython's BufferedWriter refuses it, where copy_whole wrote again
    for ever, or wrote bytes twice; a count above the bytes given is taken as all of them, as it was."""
    written = stream.write(view)
    if written is not None:
        if not is_whole(written) or written < 0:
            raise OSError(errno.EIO, f"its write returned {shown_cut(written, 40)} for {len(view)} bytes, not a "
                                     "count of bytes taken")
        return written
    if isinstance(stream, RawIOBase):
        raise BlockingIOError(errno.EAGAIN, "it would block (a non-blocking stream)")
    return len(view)


def check_destination(destination, what: str) -> None:
    """Refuse where `what` ("audio", "an image") cannot be written: anything but a path or a binary stream (a
    text stream, a closed one), and an empty path (Path("") is the current folder)."""
    if isinstance(destination, TextIOBase):
        raise VQCodecError(f"{what} is written to a binary stream, not a text one (open the file with 'wb')")
    if not isinstance(destination, (str, Path)) and not callable(getattr(destination, "write", None)):
        raise VQCodecError(f"{what} is written to a path or a binary stream, not a {type(destination).__name__}")
    if getattr(destination, "closed", False) is True:  # write_image's write raised ValueError, 'write to closed file'
        raise cannot_write_stream(output_name(destination), "it is closed")
    if isinstance(destination, str) and not destination:
        raise VQCodecError("the path of the output is empty")


def check_source(source, what: str, paths: tuple = (str, Path),
                 bytes_hint: str = "io.BytesIO(data) is a stream of a file's bytes") -> None:
    """Refuse what `what` ("audio", "an image") cannot be read from: anything but a path (one of `paths`) or a binary
    stream, such as bytes (told `bytes_hint`), None or an int, whose read was a bare AttributeError, and a text
    stream (refuse_text_stream)."""
    refuse_text_stream(source)
    if not isinstance(source, paths) and not callable(getattr(source, "read", None)):
        hint = f" ({bytes_hint})" if isinstance(source, (bytes, bytearray)) else ""
        raise VQCodecError(f"{what} is read from a path or a binary stream, not a {type(source).__name__}{hint}")


def check_format_name(name: str, value, example: str) -> None:
    """Refuse a format or subtype name (format_hint=, subtype=) that is not a str, such as `example`."""
    if value is not None and not isinstance(value, str):  # were AttributeErrors and TypeErrors
        raise VQCodecError(f"{name} is a name such as {example} (a str), not {shown_cut(value, 40)}")


def refuse_folder_name(path) -> None:
    """Refuse a single file's output whose name ends in / (a folder's), which Path() drops: "out.wav/" wrote
    a file "out.wav"."""
    if isinstance(path, str) and path.endswith(("/", os.sep)):
        raise VQCodecError(f"{path}: {'not a directory' if Path(path).exists() else 'no such directory'} "
                           "(a single file's output is a file name)")


def write_file(path, write, replace: bool = True) -> None:
    """Call write(stream) into a temporary file beside `path`, then rename it onto `path`: a failure
    leaves nothing behind, and readers never see half a file. A FIFO or device (is_stream_file), and
    a descriptor's name (descriptor_named), get the finished output written into them instead. A symbolic link to a file is written through: the
    file it names is replaced, and the link stays. With replace=False a file at `path` is never
    replaced, even one that another process wrote while this one ran (move_into_place)."""
    import shutil

    refuse_folder_name(path)
    descriptor = descriptor_named(path)
    if descriptor is not None or is_stream_file(path):  # a pipe's link (/dev/fd/N) resolves to no file
        target = Path(path)
        try:
            with _written_into_spool(write) as spool:
                if descriptor is None:
                    with open(target, "wb") as stream:
                        shutil.copyfileobj(spool, stream)
                else:
                    _flush_python_streams_on(descriptor)
                    with open(descriptor, "wb", closefd=False) as stream:
                        shutil.copyfileobj(spool, stream)
        except OSError as exc:
            raise VQCodecError(f"cannot write {target}: {reason_of(exc)}") from None
        return
    target = written_target(path)
    temporary = _write_temporary(target, write)
    try:
        move_into_place(temporary, target, replace)
    except OSError as exc:  # named by the output, not the temporary file
        Path(temporary).unlink(missing_ok=True)
        raise VQCodecError(f"cannot write {target}: {reason_of(exc)}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _written_into_spool(write, what_goes_through: str = "output to a FIFO, a device, /dev/stdout or /dev/fd/N is "
                                                        "written through one") -> TemporarySpool:
    """An anonymous temporary file in $TMPDIR that write(stream) wrote, rewound; its own failures (room, EIO) are
    named as its (TemporarySpool, with `what_goes_through`), not as the output or input it is for."""
    spool = TemporarySpool(what_goes_through)
    try:
        write(spool)
        spool.seek(0)  # writes what its buffer holds
    except BaseException:
        spool.discard()
        raise
    return spool


def _flush_python_streams_on(descriptor: int) -> None:
    """Flush sys.stdout and sys.stderr where they write to `descriptor`, so that what was printed
    before comes before what is written into it."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.fileno() == descriptor:
                stream.flush()
        except (OSError, ValueError):  # a stream without a descriptor (replaced, closed)
            pass


def write_files(writes: list) -> None:
    """write_file for files that must change together, each (path, write): a model's weights and the
    JSON that describes them, which must name the same prior. Each is written to its temporary file
    first, so that a failure or a stop (a full disk, Ctrl-C) before the last is whole changes none
    of them; then all are renamed into place, with Ctrl-C and SIGTERM held until the last one is."""
    finished = []
    try:
        for path, write in writes:
            target = written_target(path)
            finished.append((_write_temporary(target, write), target))
        with stops_held():
            for temporary, target in finished:
                try:
                    move_into_place(temporary, target)
                except OSError as exc:
                    raise VQCodecError(f"cannot write {target}: {reason_of(exc)}") from None
    finally:
        for temporary, _ in finished:
            Path(temporary).unlink(missing_ok=True)


def written_target(path) -> Path:
    """The file that writing `path` replaces: the one a symbolic link names, else `path`."""
    target = Path(path)
    return Path(os.path.realpath(target)) if target.is_symlink() and target.exists() else target


def _write_temporary(target: Path, write) -> str:
    """Call write(stream) into a new temporary file beside `target`, and return its path; a failure
    removes it and is one VQCodecError naming `target`. The stream's name is the temporary file's path,
    which a writer that writes by path (safetensors' save_file) writes to instead."""
    import tempfile

    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=_temporary_prefix(target), suffix=".part")
    except OSError as exc:
        raise VQCodecError(f"cannot write {target}: {reason_of(exc)}") from None
    try:
        with open(temporary, "wb", opener=lambda path, flags: fd) as stream:
            write(stream)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise VQCodecError(f"cannot write {target}: {reason_of(exc)}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


PRIVATE_FOLDER_FILE = "written"  # the file a writer by path writes in its private folder (write_by_path)


def write_by_path(stream, write_path) -> None:
    """Call write_path(path) for a writer that writes by path and leaves its own temporary files beside that path
    (safetensors' save_file: a hidden .tmpXXXXXX, renamed onto the path when whole), then move what it wrote onto
    the temporary file of `stream` (_write_temporary's, by its name). The path is in a private folder beside that
    file, named as write_file's temporary files are, so that what a killed write (kill -9) leaves is removed by
    remove_leftover_temporaries, as theirs is; on the same file system, so the move is a rename."""
    import tempfile

    temporary = Path(stream.name)
    prefix = temporary.name[:temporary.name.removesuffix(".part").rindex(".") + 1]  # _temporary_prefix's
    folder = Path(tempfile.mkdtemp(dir=temporary.parent, prefix=prefix, suffix=".part"))
    try:
        write_path(str(folder / PRIVATE_FOLDER_FILE))
        os.replace(folder / PRIVATE_FOLDER_FILE, temporary)
    finally:
        _remove_private_folder(folder)


def _remove_private_folder(folder: Path) -> None:
    """Remove a private folder of write_by_path with what its writer left in it (its file, safetensors' .tmpXXXXXX);
    a folder holding anything else is not one, and is left."""
    for entry in folder.iterdir():
        if entry.name == PRIVATE_FOLDER_FILE or entry.name.startswith(".tmp"):
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: not ours
        folder.rmdir()


@contextlib.contextmanager
def stops_held():
    """Hold Ctrl-C, SIGTERM and SIGHUP back until the block ends, then deliver them: Python handles
    signals in the main thread, so elsewhere nothing is held."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {number: signal.signal(number, lambda received, frame: caught.append(received))
                for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in caught:
            signal.raise_signal(number)


def _temporary_prefix(target: Path) -> str:
    """The start of the name of write_file's temporary files for `target`: the start of its name only,
    since a name near the 255-byte limit, with more around it, would be too long."""
    return f".{target.name[:TEMPORARY_NAME_CHARS]}."


def remove_leftover_temporaries(path) -> None:
    """Remove the temporary files of writes of `path` (write_file), and the private folders of writers by path
    (write_by_path), that a killed process (kill -9, a power cut) left half written beside it; call it only where
    no other process writes `path`; for a symbolic link, beside the file it names, which the writes replace."""
    import glob

    target = written_target(path)
    prefix = _temporary_prefix(target)
    for leftover in target.parent.glob(f"{glob.escape(prefix)}*.part"):
        if "." in leftover.name[len(prefix):-len(".part")]:  # the temporary of a longer name
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            _remove_private_folder(leftover)
        else:
            leftover.unlink(missing_ok=True)


def audio_format_of(path) -> str | None:
    """The soundfile format a file name asks for, or None."""
    return audio_format_named(Path(path).suffix.lstrip("."))


def audio_format_named(name: str) -> str | None:
    """The soundfile format of a format name or a file extension, with its dot or without (WAV, wave, aif,
    .flac), or None."""
    name = name.removeprefix(".")
    name = AUDIO_SUFFIX_FORMATS.get("." + name.lower(), name.upper())
    return name if name in soundfile.available_formats() or name in AUDIO_CODEC_FORMATS else None


def soundfile_format(format_name: str, subtype: str | None) -> tuple[str, str | None]:
    """The soundfile format and subtype that write `format_name` (OPUS: Ogg Opus)."""
    container, codec = AUDIO_CODEC_FORMATS.get(format_name.upper(), (format_name, None))
    return container, subtype or codec


def format_kind(format_name: str) -> str | None:
    """"audio" or "image": the media kind a format name writes; None for a name neither knows."""
    from PIL import Image

    if audio_format_named(format_name) is not None:
        return "audio"
    Image.init()
    if format_name.upper() in Image.SAVE or image_format_of_suffix("." + format_name.lower()) in Image.SAVE:
        return "image"
    return None


def refuse_format_of_other_kind(format_name: str, audio: bool, given: str, holds: str) -> None:
    """Refuse a format (given as `given`: --format, format_hint) of the other media kind than what is written,
    audio or not (an image format for audio, or an audio format for an image), before anything is decoded;
    `holds` says what is written ("talk.vq holds audio")."""
    kind = format_kind(format_name)
    if audio and kind == "image":
        raise VQCodecError(f"{given} {format_name} is an image format, and {holds}: "
                           "use an audio format (WAV, FLAC, OGG, OPUS, MP3)")
    if not audio and kind == "audio":
        raise VQCodecError(f"{given} {format_name} is an audio format, and {holds}: "
                           "use an image format (PNG, WEBP, JPEG, ...)")


# Extensions that name a container more than one format writes into: Ogg Opus in .ogg, any Netpbm in .pnm
FORMATS_OF_EXTENSION = {"OGG": {"OPUS"}, "PNM": {"PBM", "PGM", "PPM"}}


def _written_format(name: str) -> str | None:
    """The format that a format name or an extension (without its dot) writes: soundfile's (OPUS for Ogg
    Opus), a Netpbm variant's or Pillow's; None for a name of neither."""
    if name.lower() in NETPBM_VARIANTS:
        return name.upper()
    if format_kind(name) == "image":
        return image_format_of_suffix("." + name.lower()) or name.upper()
    return audio_format_named(name)


def refuse_format_against_name(format_name: str, output_path, given: str) -> None:
    """Refuse a format (given as `given`: --format, format_hint) other than the one the output's extension
    names (GIF data under a .png name), before anything is decoded; an extension that names no format is
    left to the format given."""
    named, asked = _written_format(Path(output_path).suffix.lstrip(".")), _written_format(format_name)
    if named is not None and asked is not None and asked != named and asked not in FORMATS_OF_EXTENSION.get(named, ()):
        raise VQCodecError(f"{output_path}: its extension names {named}, and {given} {format_name} asks for {asked}: "
                           f"leave {given} out, or give the output a name of that format")


def media_kind_of(path: Path) -> str | None:
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


def is_image_signature(head: bytes) -> bool:
    """Whether a file's first 16 bytes are those of an image format of IMAGE_EXTENSIONS (all but TGA and
    SPIDER, which have none): how input without a known extension, such as stdin, is told apart."""
    return (head[:4] in (b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"qoif") or head[:2] in (b"\xff\xd8", b"BM")
            or head[8:12] == b"WEBP" or head[4:12] in (b"ftypavif", b"ftypavis")
            or head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51"
            or (head[:1] == b"P" and head[1:2] in b"1234567fF" and head[2:3] in (b" ", b"\t", b"\n", b"\r")))


def named_as_an_image(name) -> bool:
    """Whether a file name (a str or Path; anything else is none) ends in the extension of an image format Pillow reads
    the pixels of: one of IMAGE_EXTENSIONS, or another of Pillow's registry (ICO, PCX, PSD; HEIC where a plugin adds
    it) that soundfile claims none of, but not MPEG's (a video, of which Pillow reads the size) nor a stub's (BUFR,
    GRIB, HDF5, WMF off Windows, which read nothing without a handler a program installs)."""
    from PIL import Image, ImageFile

    suffix = Path(name).suffix.lower() if isinstance(name, (str, Path)) else ""
    if suffix in IMAGE_EXTENSIONS or suffix in AUDIO_EXTENSIONS or not suffix:
        return suffix in IMAGE_EXTENSIONS
    named = image_format_of_suffix(suffix)  # which loads Pillow's registry
    reader = Image.OPEN.get(named)
    return reader is not None and named != "MPEG" and not (
        isinstance(reader[0], type) and issubclass(reader[0], ImageFile.StubImageFile))


def image_by_its_name(source, start: int = 0) -> bool:
    """Whether media given as a path or a stream that can seek (read from `start`, and left where it was) is an image
    by its name: named_as_an_image, and neither empty nor audio that soundfile opens (a file soundfile reads is audio
    whatever its name). A FIFO is not read: its bytes would be gone."""
    if not named_as_an_image(input_name(source)):
        return False
    if isinstance(source, (str, Path)):
        return os.path.isfile(source) and os.path.getsize(source) > 0 and not _opens_as_audio(source)
    if not is_seekable(source):
        return False
    try:
        was = source.tell()
        try:
            source.seek(start)
            if not source.read(1):
                return False
            source.seek(start)
            return not _opens_as_audio(source)
        finally:
            source.seek(was)
    except (OSError, ValueError):  # closed, or no longer readable: the reading's error stands
        return False


def _opens_as_audio(source) -> bool:
    """Whether open_sound opens `source` (a path, or a stream from where it is); what the MP3 decoder says of it is
    dropped."""
    try:
        open_sound(source, said=[]).close()
    except VQCodecError:
        return False
    return True


def input_name(source) -> str | Path | None:
    """How an error names an input: its path or name, "from stdin" for the command line's stdin (a file
    descriptor) and sys.stdin.buffer (is_stdin_buffer), or None for another stream."""
    if is_stdin_buffer(source):
        return "from stdin"
    name = source if isinstance(source, Path) else getattr(source, "name", source)  # a Path's .name is its last part
    return name if isinstance(name, (str, Path)) else "from stdin" if isinstance(name, int) else None


def input_called(source) -> str:
    """How an error names an input as what its sentence is about: its path or name (input_name), "stdin" where
    input_name says "from stdin", or "the input"."""
    name = input_name(source)
    return "the input" if name is None else "stdin" if name == "from stdin" else str(name)


def output_name(destination) -> str | Path | None:
    """How an error names an output: its path, or an open file's name, "stdout" for sys.stdout.buffer
    (stream_name)."""
    return destination if isinstance(destination, (str, Path)) else stream_name(destination)


def stream_name(stream) -> str | Path | None:
    """How an error names a binary stream: an open file's name, "stdin", "stdout" or "stderr" for sys.stdin.buffer and
    the others (standard_stream_name), as empty_input and the command line say; None for a stream without one (a
    BytesIO, a file opened on a descriptor)."""
    if standard := standard_stream_name(stream):
        return standard
    name = getattr(stream, "name", None)
    return name if isinstance(name, (str, Path)) else None


def cannot_write_stream(name: str | Path | None, reason: str) -> VQCodecError:
    """'cannot write NAME: REASON', naming a stream by `name` (stream_name's), "the stream" where it has none (or an
    empty one)."""
    return VQCodecError(f"cannot write {name or 'the stream'}: {reason}")


class UnreadableStream(VQCodecError):
    """A stream that cannot be read, or is read no further (spooled's bound), refused by its name (cannot_read_stream):
    its own words, not put in another reader's ("cannot read image NAME: ..."), as EmptyInput's are."""


def cannot_read_stream(name: str | Path | None, reason: str) -> UnreadableStream:
    """'cannot read NAME: REASON', naming a stream as cannot_write_stream does."""
    return UnreadableStream(f"cannot read {name or 'the stream'}: {reason}")


def refuse_closed_stream(source) -> None:
    """Refuse a closed stream by its name (cannot_read_stream), where its read's ValueError said Python's 'read of
    closed file' ('I/O operation on closed file.' of a BytesIO); a path, or a stream that is open, passes."""
    if getattr(source, "closed", False) is True:
        raise cannot_read_stream(stream_name(source), "it is closed")


def unwritable_stream(exc: Exception, name: str | Path | None) -> VQCodecError:
    """The error for a write into a stream that failed, named as cannot_write_stream names it; a stream open for
    reading only is 'not open for writing', where its error's words were 'write'."""
    reason = "it is not open for writing" if isinstance(exc, UnsupportedOperation) else reason_of(exc)
    return cannot_write_stream(name, reason)


ID3V2_HEADER_BYTES = 10


def id3v2_tag_bytes(head: bytes) -> int:
    """The length of the ID3v2 tag that `head` begins with, as libsndfile skips one before it recognises an MP3:
    its 10-byte header (versions 2 to 4) and the size that gives in 7-bit bytes, no footer; 0 where it begins with
    none."""
    if len(head) < ID3V2_HEADER_BYTES or head[:3] != b"ID3" or head[3] not in (2, 3, 4):
        return 0
    size = 0
    for byte in head[6:10]:
        size = size << 7 | byte & 0x7F
    return ID3V2_HEADER_BYTES + size


# libsndfile's reasons that say nothing to whoever reads them, and what they mean
SOUNDFILE_REASONS = {"SF_INFO struct incomplete.": "its header gives no valid sample rate"}


# What soundfile raises of audio it cannot open, read or write: LibsndfileError (a RuntimeError), ValueError and
# TypeError of what it is given, OSError of the file under it; any other error (a NameError, AttributeError) is a bug
SOUNDFILE_ERRORS = (OSError, RuntimeError, TypeError, ValueError)


def _soundfile_reason(exc: Exception) -> str:
    """soundfile's reason, without the "Error opening <name>: " it puts before it."""
    reason = str(exc).rsplit(": ", 1)[-1] if str(exc).startswith("Error opening") else str(exc)
    return SOUNDFILE_REASONS.get(reason, reason)


def unreadable_audio(where, exc: Exception) -> VQCodecError:
    """The error for audio soundfile cannot open: `where` (a path, "from stdin", or None for a stream) and soundfile's
    reason."""
    where = where if where is not None else "from the stream"
    return VQCodecError(f"cannot read audio {where}: {_soundfile_reason(exc)}")


# libsndfile's reason for input whose first bytes are of no format it reads. They decide it, so a file's
# first MiB gives it as all of the file does.
UNRECOGNISED_AUDIO = "Format not recognised."


def unrecognised_audio(head: bytes, where) -> VQCodecError | None:
    """The error that reading audio which begins with `head` gives where libsndfile recognises no format in
    those bytes (`where` as for unreadable_audio); None where it opens them, or finds them cut short or
    damaged, which the rest of the input may not be."""
    try:
        with decoder_lines(None):
            soundfile.info(SoundStream(BytesIO(head)))
    except SOUNDFILE_ERRORS as exc:
        if _soundfile_reason(exc) == UNRECOGNISED_AUDIO:
            return unreadable_audio(where, exc)
    return None


def unrecognised_image(head: bytes, where) -> VQCodecError | None:
    """The error that reading an image which begins with `head` gives where no format Pillow reads recognises those
    bytes, which bear no signature is_image_signature knows (those that do are left to the reading: the first bytes
    of a TIFF may not hold its directory); None otherwise. `where`: as for unreadable_audio."""
    from PIL import Image, UnidentifiedImageError

    if is_image_signature(head[:16]):
        return None
    logged: list[str] = []
    try:
        with warnings.catch_warnings(), pillow_log_caught(logged):
            warnings.simplefilter("ignore")
            Image.open(BytesIO(head)).close()
    except UnidentifiedImageError as exc:
        return unreadable_image(where, pillow_refusal(BytesIO(head), exc, logged))
    # recognised, and cut short or damaged: the whole input may not be. What Pillow's readers raise of
    # such a header (a DDS of a pixel format it does not read: NotImplementedError, an AVIF of brand mif1, whose
    # signature is_image_signature does not know, libavif's RuntimeError); no other error.
    except (*PILLOW_READ_ERRORS, Image.DecompressionBombError):
        pass
    return None


class SoundStream:
    """A binary stream as soundfile reads it, whose seek to where the stream cannot go stays where it
    is: libsndfile skips a chunk by the size its header declares, and a size past what a file may
    hold (W64 and RF64 have 64-bit sizes), or one before byte 0 (of an AIFF cut short in its COMM
    chunk), would raise inside soundfile's callback, which prints a traceback (the samples are read all the
    same). A read that fails (EIO, a stream closed under it) reads nothing more, and is kept for failure() to give,
    where soundfile's callback printed a traceback and libsndfile took it for the end: the audio was cut short
    without a word."""

    def __init__(self, stream):
        self.stream = stream
        self.error: Exception | None = None

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self.stream.seek(offset, whence)
        except (OSError, ValueError, OverflowError):
            return self.stream.tell()

    def read(self, size: int = -1) -> bytes:
        return self._reading(lambda: self.stream.read(size), b"")

    def readinto(self, buffer) -> int:
        return self._reading(lambda: self.stream.readinto(buffer), 0)  # none (AttributeError): soundfile calls read

    def _reading(self, read: Callable, nothing):
        if self.error is not None:
            return nothing
        try:
            return read()
        except (OSError, ValueError) as exc:
            self.error = exc
            return nothing

    def failure(self) -> RuntimeError | None:
        """The first read that failed, as libsndfile's error of a read is (a RuntimeError); None where none did."""
        return StreamReadError(reason_of(self.error)) if self.error is not None else None

    def __getattr__(self, name):
        return getattr(self.stream, name)


class StreamReadError(RuntimeError):
    """A read of a stream under a SoundFile that failed (SoundStream.failure), raised as libsndfile's errors are."""


# How much of a file's start streamed_length_patches looks through for the chunk of its samples
STREAMED_HEAD_BYTES = 1 << 16
UINT32_MAX = 0xFFFFFFFF


def _chunk(head: bytes, offset: int, name: bytes, size_format: str, padded: bool) -> tuple[int, int] | None:
    """The offset and declared size of the first chunk called `name` in `head`, from `offset` on: chunks
    of a four-byte name and a size in struct's `size_format`, `padded` to an even length (RIFF's)."""
    import struct

    header = 4 + struct.calcsize(size_format)
    while offset + header <= len(head):
        size = struct.unpack_from(size_format, head, offset + 4)[0]
        if head[offset:offset + 4] == name:
            return offset, size
        if size < 0:
            return None
        offset += header + size + (size & 1 if padded else 0)
    return None


def streamed_length_patches(head: bytes, file_size: int) -> dict[int, bytes]:
    """What to put over a file's header ({offset: bytes}) for libsndfile to read its samples to the end
    of the file, where the writer (writing to a pipe) could not go back to set their length, and
    libsndfile would read none: a WAV data chunk of size 0 in a file whose RIFF size is not the
    file's (where it is, the data is empty), RF64 whose ds64 chunk gives sizes of 0, and CAF whose
    data chunk's size is -1 (unknown, as CAF allows; libsndfile refused the file as malformed)."""
    import struct

    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        data = _chunk(head, 12, b"data", "<I", padded=True)
        riff_size = struct.unpack_from("<I", head, 4)[0]
        if data is not None and data[1] == 0 and riff_size + 8 != file_size and file_size > data[0] + 8:
            return {4: struct.pack("<I", min(file_size - 8, UINT32_MAX)),
                    data[0] + 4: struct.pack("<I", min(file_size - data[0] - 8, UINT32_MAX))}
    elif head[:4] == b"RF64" and head[8:16] == b"WAVEds64" and len(head) >= 36:
        data = _chunk(head, 12, b"data", "<I", padded=True)
        riff_size, data_size = struct.unpack_from("<QQ", head, 20)
        if data is not None and data_size == 0 and riff_size + 8 != file_size and file_size > data[0] + 8:
            return {20: struct.pack("<QQ", file_size - 8, file_size - data[0] - 8)}
    elif head[:4] == b"caff":
        data = _chunk(head, 8, b"data", ">q", padded=False)
        if data is not None and data[1] == -1:
            return {data[0] + 4: struct.pack(">q", file_size - data[0] - 12)}
    return {}


def _head_of(stream) -> tuple[bytes, int]:
    """The first STREAMED_HEAD_BYTES of a stream that can seek, from where it is, and its size from there
    (b"" and 0 where it cannot be read so); it is left where it was."""
    try:
        position = stream.tell()
        head = stream.read(STREAMED_HEAD_BYTES)
        size = stream.seek(0, os.SEEK_END) - position
        stream.seek(position)
    except (AttributeError, OSError, ValueError):
        return b"", 0
    return (head, size) if isinstance(head, bytes) else (b"", 0)


def _extended_float(raw: bytes) -> float:
    """An IEEE 754 80-bit extended float (AIFF's sample rate): sign and exponent in 16 bits, then a 64-bit
    mantissa with an explicit leading bit."""
    exponent, mantissa = int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:10], "big")
    try:
        value = math.ldexp(mantissa, (exponent & 0x7FFF) - 16383 - 63) if exponent & 0x7FFF else 0.0
    except OverflowError:  # beyond any 64-bit float
        value = math.inf
    return -value if exponent & 0x8000 else value


def declared_rate(head: bytes) -> float | None:
    """The sample rate a WAV, RF64, AIFF, CAF or AU header gives, or None for another file. libsndfile
    refuses a rate below 1 Hz or of 2**31 Hz or more in most of these as "SF_INFO struct incomplete",
    and reads AIFF's as 1 Hz and 800 MHz."""
    import struct

    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        fmt = _chunk(head, 12, b"fmt ", "<I", padded=True)
        return struct.unpack_from("<I", head, fmt[0] + 12)[0] if fmt and len(head) >= fmt[0] + 16 else None
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        comm = _chunk(head, 12, b"COMM", ">I", padded=True)
        return _extended_float(head[comm[0] + 16:comm[0] + 26]) if comm and len(head) >= comm[0] + 26 else None
    if head[:4] == b"caff":
        desc = _chunk(head, 8, b"desc", ">q", padded=False)
        return struct.unpack_from(">d", head, desc[0] + 12)[0] if desc and len(head) >= desc[0] + 20 else None
    if head[:4] == b".snd" and len(head) >= 20:
        return struct.unpack_from(">I", head, 16)[0]
    return None


def _check_declared_rate(head: bytes, where, read: int | None = None) -> None:
    """Refuse a file whose header gives a sample rate that no audio has (declared_rate), or, given the
    rate libsndfile `read` from it, one that it reads as another rate than a whole number of Hz within
    one of the header's (it reads AIFF's 2**30 Hz and up, to 2**31, as 800 MHz)."""
    rate = declared_rate(head)
    if rate is None:
        return
    misread = read is not None and not abs(read - rate) < 1
    if misread or not 1 <= rate < 2**31:
        shown = int(rate) if math.isfinite(rate) and float(rate).is_integer() else rate
        where = where if where is not None else "from the stream"
        raise VQCodecError(f"cannot read audio {where}: its header gives a sample rate of {shown} Hz"
                           + (f", which libsndfile reads as {read} Hz" if misread else ""))


class PatchedStream:
    """A binary stream that can seek, read with `patches` ({offset from where it was: bytes}) put over
    what it holds."""

    def __init__(self, stream, patches: dict[int, bytes]):
        self.stream = stream
        start = stream.tell()
        self.patches = {start + offset: replacement for offset, replacement in patches.items()}

    def read(self, size: int = -1) -> bytes:
        position = self.stream.tell()
        return bytes(self._patched(position, bytearray(self.stream.read(size))))

    def readinto(self, buffer) -> int:
        position = self.stream.tell()
        count = self.stream.readinto(buffer)
        self._patched(position, memoryview(buffer).cast("B")[:count or 0])
        return count

    def _patched(self, position: int, data):
        for offset, replacement in self.patches.items():
            low, high = max(offset, position), min(offset + len(replacement), position + len(data))
            if low < high:
                data[low - position:high - position] = replacement[low - offset:high - offset]
        return data

    def __getattr__(self, name):
        return getattr(self.stream, name)


MAX_STREAM_POSITION = 2**63 - 1  # the furthest a file's or a BytesIO's seek goes


class StreamFromHere(RawIOBase):
    """A binary stream that can seek, read as a file that begins where the stream is: its seek and tell count from
    there, and a seek before there is refused as one before a BytesIO's start is (Image.open, and libsndfile's FLAC
    and CAF readers, read a stream from its byte 0). A seek to where the stream cannot go (its start and the offset
    past 2**63 - 1, which a damaged header's offset short of 2**63 is) is taken, as a BytesIO's is, and reads nothing
    there, where the stream raised an OverflowError. It gives no descriptor nor a BytesIO's getvalue, through which
    Pillow's libtiff reader would read the stream from its byte 0 (it reads the rest of this one into memory
    instead); closing it leaves the stream open."""

    def __init__(self, stream):
        super().__init__()
        self.stream, self.start = stream, stream.tell()
        self.beyond: int | None = None  # where it was seeked to past where the stream can go, if it was
        if hasattr(stream, "name"):
            self.name = stream.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return b"" if self.beyond is not None else self.stream.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.beyond if self.beyond is not None else self.stream.tell() - self.start

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self.tell() + offset
        elif whence == os.SEEK_END:
            position = self._end() - self.start + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise ValueError(f"negative seek value {position}")
        self.beyond = position if self.start + position > MAX_STREAM_POSITION else None
        return position if self.beyond is not None else self.stream.seek(self.start + position) - self.start

    def _end(self) -> int:
        position = self.stream.tell()
        try:
            return self.stream.seek(0, os.SEEK_END)
        finally:
            self.stream.seek(position)


def from_where_it_is(source):
    """`source` as a reader of a file from its byte 0 (Image.open, libsndfile) reads it from where it is: a stream past
    its byte 0 as a StreamFromHere; a path, a stream at its byte 0, and one that cannot tell where it is (closed: its
    reader says so), as they are."""
    if isinstance(source, (str, os.PathLike)):
        return source
    try:
        return StreamFromHere(source) if source.tell() else source
    except (AttributeError, OSError, ValueError):
        return source


class _StreamSoundFile(soundfile.SoundFile):
    """A SoundFile that reads `readable`, a stream read through `reader` (its SoundStream), whose failed read is
    raised by the read that met it (SoundStream.failure), and closes `owned` (the file under it), where there is one,
    when it is closed."""

    def __init__(self, readable, reader: SoundStream, owned=None):
        self._reader, self._owned = reader, owned
        super().__init__(readable)

    def read(self, *args, **kwargs):
        try:
            data = super().read(*args, **kwargs)
        except SOUNDFILE_ERRORS:  # FLAC's reader says 'Internal psf_fseek() failed' of the failed read it met
            if (failure := self._reader.failure()) is None:
                raise
            raise failure from None
        if (failure := self._reader.failure()) is not None:
            raise failure
        return data

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._owned is not None:
                self._owned.close()


def open_sound(source, said: list[str] | None = None) -> soundfile.SoundFile:
    """Open audio for reading: a path, or a binary stream that can seek, from where it is (from_where_it_is:
    libsndfile reads FLAC and CAF from the stream's byte 0), read through in blocks. A file whose
    writer could not set its length is read to its end (streamed_length_patches). What the MP3 decoder
    says on opening it is one warning (warn_decoder_lines), or goes into `said` where that is given;
    input that cannot be opened is one VQCodecError naming it, which says why (for a path: no such
    file, a folder, not readable); a closed stream, by its name (refuse_closed_stream), and what is neither a path
    nor a stream by check_source."""
    check_source(source, "audio")
    refuse_closed_stream(source)
    refuse_empty_media(source)
    path = source if isinstance(source, (str, Path)) else None
    owned = reader = None
    try:
        if path is not None and os.path.isfile(path):  # not a FIFO, whose head libsndfile must read
            owned = open(path, "rb")
        stream = source if path is None else owned
        head, size = _head_of(stream) if stream is not None else (b"", 0)
        _check_declared_rate(head, input_name(source))
        patches = streamed_length_patches(head, size)
        reader = SoundStream(from_where_it_is(source) if path is None else owned)
        with decoder_lines(None) as lines:
            if path is None:
                sound = _StreamSoundFile(PatchedStream(reader, patches), reader)
            elif patches:
                sound = _StreamSoundFile(PatchedStream(reader, patches), reader, owned)
            else:
                sound = soundfile.SoundFile(os.fsencode(path))
    except VQCodecError:
        if owned is not None:
            owned.close()
        raise
    except SOUNDFILE_ERRORS as exc:
        if owned is not None:
            owned.close()
        raise _unopenable_audio(source, (reader.failure() if reader is not None else None) or exc) from None
    if owned is not None and not patches:
        owned.close()
    try:
        if (failure := reader.failure()) is not None:  # a read of its header, which libsndfile read past
            raise unreadable_audio(input_name(source), failure)
        _check_declared_rate(head, input_name(source), sound.samplerate)
    except VQCodecError:
        sound.close()
        raise
    if said is None:
        warn_decoder_lines(lines, input_name(source))
    else:
        said += lines
    return sound


def _unopenable_audio(source, exc: Exception) -> VQCodecError:
    """The error for audio that open_sound cannot open: for a path, why the system cannot open it, where
    it cannot (libsndfile says only "System error." of a missing file, and "Format not recognised." of
    a folder)."""
    if isinstance(source, (str, Path)):
        try:
            open(source, "rb").close()
        except (OSError, ValueError) as error:
            return VQCodecError(f"cannot read audio {source}: {reason_of(error)}")
    return unreadable_audio(input_name(source), exc)


class SoundSink:
    """A binary stream as soundfile writes it: an OSError (a full disk), or a TemporarySpool's own error, inside
    soundfile's callbacks would be printed as a traceback and lost while libsndfile wrote on, or soundfile would fail
    an assertion on the short write. The first one is kept for check() to raise; nothing more is written after it,
    though libsndfile, which cannot be told why, is told that all of it was."""

    def __init__(self, stream):
        self.stream, self.error = stream, None

    def write(self, data) -> int:
        if self.error is None:
            try:
                return self.stream.write(data)
            except (OSError, TemporaryFileFull, TemporaryFileFailed) as exc:
                self.error = exc
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.error is None:
            try:
                return self.stream.seek(offset, whence)
            except (OSError, TemporaryFileFull, TemporaryFileFailed) as exc:  # a buffered one writes what it holds
                self.error = exc
        return self.stream.tell()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def __getattr__(self, name):
        return getattr(self.stream, name)


# Limits of libsndfile's encoders that it does not report clearly: above 200 kHz libvorbis crashes
# the process, and too many channels for FLAC, MP3 and others come back as "Format not recognised".
VORBIS_MAX_RATE = 200_000
FORMAT_MAX_CHANNELS = {"FLAC": 8, "MP3": 2, "AVR": 2, "MPC2K": 2, "VOC": 2, "HTK": 1, "SDS": 1, "SVX": 1, "WVE": 1,
                       "XI": 1}
# Sound Designer II keeps its rate and channels in a resource fork, which libsndfile writes only beside a
# path it opens itself (as ._NAME), never beside a stream: output would be bare samples (and an empty
# "._" file in the current folder).
RESOURCE_FORK_FORMATS = {"SD2"}
# Rates that some formats' headers cannot say, which libsndfile writes as another rate without a word:
# a rate of their own, a 16-bit field, or the sample period in whole units (HTK 100 ns; SDS 1 ns, in 21 bits).
FORMAT_HOLDS_RATE = {"WVE": lambda rate: rate == 8000, "XI": lambda rate: rate == 44100,
                     "SVX": lambda rate: rate < 2**16, "MPC2K": lambda rate: rate < 2**16,
                     "HTK": lambda rate: 10**7 // (10**7 // rate) == rate,
                     "SDS": lambda rate: 10**9 // rate < 2**21 and 10**9 // (10**9 // rate) == rate}


def check_audio_output(format_name: str, subtype: str | None, sample_rate: int, channels: int) -> None:
    """Refuse, before anything is written, audio that soundfile's `format_name` (with `subtype`, as
    soundfile_format gives them) cannot hold."""
    format_name = format_name.upper()
    if format_name not in soundfile.available_formats():
        return  # soundfile says why when it opens the output
    if format_name in RESOURCE_FORK_FORMATS:
        raise VQCodecError(f"{format_name} keeps its rate and channels in a resource fork, which cannot be written "
                           "here: write another format (.wav, .aiff, .flac)")
    if not subtype and soundfile.default_subtype(format_name) is None:  # RAW: soundfile said "No default subtype"
        raise VQCodecError(f"{format_name} is bare samples, which keep neither the rate nor the channels, of a type it "
                           "must be told: write another format (.wav, .aiff, .flac)")
    subtype = (subtype or soundfile.default_subtype(format_name) or "").upper()
    subtypes = soundfile.available_subtypes(format_name)
    if subtype not in subtypes:  # libsndfile's refusal was worded as one of the rate and channels
        raise VQCodecError(f"{format_name} has no subtype {subtype}: it takes {', '.join(subtypes)}")
    if format_name == "OGG" and subtype == "VORBIS" and sample_rate > VORBIS_MAX_RATE:
        raise VQCodecError(f"Ogg Vorbis holds at most {VORBIS_MAX_RATE} Hz, not {sample_rate}: "
                           f"write another format (.wav, .flac) or {setting('pass --rate', 'pass rate=N')}")
    if format_name == "OGG" and subtype == "OPUS" and sample_rate not in OPUS_RATES:
        opus_rate = min(r for r in OPUS_RATES if r >= min(sample_rate, 48000))
        raise VQCodecError(f"Opus holds {', '.join(map(str, OPUS_RATES[:-1]))} or {OPUS_RATES[-1]} Hz audio, not "
                           f"{sample_rate} Hz: {setting(f'pass --rate {opus_rate}', f'pass rate={opus_rate}')}, "
                           "or write another format (.wav, .flac)")
    if not FORMAT_HOLDS_RATE.get(format_name, lambda rate: True)(sample_rate):
        raise VQCodecError(f"{format_name} cannot hold a rate of {sample_rate} Hz (it would say another): "
                           f"write another format (.wav, .flac) or {setting('pass --rate', 'pass rate=N')}")
    limit = FORMAT_MAX_CHANNELS.get(format_name)
    if limit is not None and channels > limit:
        raise VQCodecError(f"{format_name} holds at most {plural(limit, 'channel')}, not {channels}: write .wav or .ogg")
    reason = _audio_write_refused(format_name, subtype, sample_rate, channels)
    if reason is not None:
        raise VQCodecError(f"{format_name} {subtype} cannot hold {plural(channels, 'channel')} at {sample_rate} Hz "
                           f"here (libsndfile says: {reason}): write another format or subtype (.wav), or "
                           f"{setting('pass --rate', 'pass rate=N')}")


@functools.lru_cache(maxsize=256)  # a folder's files share a few rates and channel counts
def _audio_write_refused(format_name: str, subtype: str, sample_rate: int, channels: int) -> str | None:
    """libsndfile's reason for refusing to write two frames of such audio into memory, or None: the limits
    of its encoders depend on how it was built (FLAC's rates, MP3's MPEG rates, a subtype left out), and
    some fail only at the first frame (FLAC above 65535 Hz where the rate is not a multiple of 10). Two,
    as VOX ADPCM writes frames in pairs."""
    try:
        with soundfile.SoundFile(BytesIO(), "w", samplerate=sample_rate, channels=channels, format=format_name,
                                 subtype=subtype or None) as sound:
            sound.write(np.zeros((2, channels), np.float32))
    except (RuntimeError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        return _soundfile_reason(exc).removeprefix("Error : ").rstrip(".") or "no reason given"
    return None


def unwritable_audio(exc: Exception, where: str | None = None) -> VQCodecError:
    """The error for audio soundfile cannot write (into `where`, a path or stream name), with its reason."""
    return VQCodecError(f"cannot write {where or 'audio'}: {_soundfile_reason(exc)}")


UNKNOWN_FRAMES = 2**62  # libsndfile's frame count of a file whose header gives no length (SF_COUNT_MAX, 2**63 - 1)
READ_BLOCK_FRAMES = 1 << 16
# read_audio takes at most this many frames a byte of the file on trust from its header (FLAC of
# silence holds a few hundred, low-rate Opus about 64): a header that declares more is read block by block
TRUSTED_FRAMES_PER_BYTE = 256


def sound_read_error(where, frames_read: int, declared: int, exc: Exception) -> VQCodecError:
    """The error for a read that failed partway (libsndfile fails one that runs past the end of a
    FLAC file whose header declares more samples than it holds, or no length at all), with how far
    reading got and what the header declares."""
    where = where if where is not None else "from the stream"
    declared_text = ("its header gives no length" if declared >= UNKNOWN_FRAMES
                     else f"its header declares {declared}")
    return VQCodecError(f"cannot read audio {where}: {_soundfile_reason(exc).rstrip('.')} after {plural(frames_read, 'sample')} "
                        f"({declared_text})")


def decoder_lines(sound_format: str | None):
    """A context that catches, into the list it yields, what libmpg123 (libsndfile's MP3 decoder) writes
    straight to stderr about a damaged or cut-short file, for MP3 and for a file whose format is not
    known yet (while soundfile opens it); for other formats, nothing (an empty list)."""
    return _native_stderr_captured() if sound_format in (None, "MP3") else contextlib.nullcontext([])


def warn_decoder_lines(lines: list[str], where) -> None:
    """One warning naming `where` (a path, "from stdin", or None) for what the MP3 decoder said and read past."""
    if lines:
        called = "the audio" if where is None else f"the audio {where}" if where == "from stdin" else str(where)
        said = lines[0].split("] ", 1)[-1] if lines[0].startswith("[") else lines[0]  # [src/libmpg123/...:line]
        warnings.warn(AudioReadWarning(f"{called}: the MP3 decoder says: {said}; read past it"),
                      stacklevel=caller_stacklevel())


def sound_blocks(sound: soundfile.SoundFile, where, block_frames: int = READ_BLOCK_FRAMES,
                 said: list[str] | None = None):
    """(channels, n) float32 blocks of the samples an open file really holds: the count each read
    returns is what counts, never the length its header declares (SoundFile.blocks() yields its
    whole buffer, uninitialised past the end, when a damaged file ends before it). A failed read is
    one VQCodecError naming `where` (sound_read_error); what the MP3 decoder says of damage it reads
    past is one warning (warn_decoder_lines), the first time only, or goes into `said` where that is
    given."""
    frames_read, warned = 0, False
    try:
        while True:
            with decoder_lines(sound.format) as lines:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
            if said is not None:
                said += lines
            elif lines and not warned:
                warn_decoder_lines(lines, where)
                warned = True
            if not len(block):
                break
            frames_read += len(block)
            yield block.T
    except RuntimeError as exc:  # soundfile's LibsndfileError
        raise sound_read_error(where, frames_read, sound.frames, exc) from None


def read_audio(path, sample_rate: int | None = None, said: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Read a whole audio file (a path, or a binary stream, from where it is, as open_sound reads one; a stream that
    cannot seek is spooled first) as float32 (channels, samples), resampled to `sample_rate` if given.
    What the MP3 decoder says of damage that it reads past, opening and reading the file, is one
    warning naming it (warn_decoder_lines), or goes into `said` where that is given.

    The samples are those the file really holds: its header's length is taken on trust only up to
    TRUSTED_FRAMES_PER_BYTE frames a byte of the file (a header that declares 2**36 samples had them
    allocated, 256 GiB); past that, the rest is read a block at a time. (libsndfile stops at the
    length a FLAC file's header declares, so one that declares too few is read that long.)"""
    check_source(path, "audio")
    if not isinstance(path, (str, Path)) and not is_seekable(path):
        with spooled_stream(path) as copy:
            return read_audio(copy, sample_rate, said)
    lines_said: list[str] = []
    size, where = _bytes_from_here(path), input_name(path)
    with open_sound(path, lines_said) as sound:
        rate, channels = sound.samplerate, sound.channels
        trusted = min(max(sound.frames, 0), max(READ_BLOCK_FRAMES, size * TRUSTED_FRAMES_PER_BYTE // channels))
        buffer = np.empty((trusted, channels), dtype=np.float32)
        frames_read = 0
        try:
            with decoder_lines(sound.format) as lines:
                while frames_read < trusted:
                    got = len(sound.read(out=buffer[frames_read:frames_read + READ_BLOCK_FRAMES]))
                    if not got:
                        break
                    frames_read += got
        except RuntimeError as exc:
            raise sound_read_error(where, frames_read, sound.frames, exc) from None
        lines_said += lines
        rest = [block.T for block in sound_blocks(sound, where, said=lines_said)]  # beyond what the header was trusted for
    if said is None:
        warn_decoder_lines(lines_said, where)
    else:
        said += lines_said
    data = (np.concatenate([buffer[:frames_read], *rest]) if rest else buffer[:frames_read]).T
    if sample_rate is not None and rate != sample_rate and data.shape[1] > 0:
        data = np.stack([soxr.resample(channel, rate, sample_rate) for channel in data]).astype(np.float32)
        rate = sample_rate
    return data, rate


def _bytes_from_here(source) -> int:
    """The size of a path's file, or of a stream from where it is (it is left there); 0 where it cannot be told."""
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.stat(source).st_size
        position = source.tell()
        size = source.seek(0, os.SEEK_END) - position
        source.seek(position)
        return size
    except (AttributeError, OSError, ValueError):
        return 0


def read_image_rgb(path) -> np.ndarray:
    """Read an image as the uint8 RGB (height, width, 3) that encoding it codes (open_image and
    image_to_planes: EXIF orientation and an ICC profile applied, 16-bit and float grey scaled to 8 bits, not clipped)."""
    check_source(path, "an image", paths=(str, os.PathLike))  # outside the try: not put into "cannot read image"
    try:
        return image_to_planes(open_image(path, max_side=None))[0]  # training crops what encoding refuses
    except (EmptyInput, UnreadableStream, TemporaryFileFull, TemporaryFileFailed):  # naming the stream, or the folder
        raise
    except VQCodecError as exc:
        if str(exc).startswith(str(unreadable_image(path, ""))):  # open_image's, which names the input
            raise
        raise unreadable_image(path, exc) from None


# ---------------------------------------------------------------- images

# Held wherever io has Pillow set up a TIFF's tiles (opening, seeking a page, _planes_through_libtiff, which sets
# TiffImagePlugin.READ_LIBTIFF, a global, for that while): no reading of another thread (training's batch workers)
# sees it set, and two threads' settings cannot leave it set. Pillow is used elsewhere in the process unguarded.
TIFF_SETUP_LOCK = threading.RLock()

# Colour modes we restore exactly, with their code in the .vq header.
IMAGE_MODES = {"RGB": 0, "L": 1, "RGBA": 2, "LA": 3, "P": 4, "PA": 5, "I;16": 6, "I": 7,
               "CMYK": 8, "1": 9, "YCbCr": 10, "F": 11, "RGBX": 12, "I;16B": 13, "I;16L": 14,
               "P;transparency": 15}  # a P image with a transparent palette entry
ALPHA_MODES = {"RGBA", "LA", "PA", "P;transparency"}
IMAGE_MODE_NAMES = {code: name for name, code in IMAGE_MODES.items()}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I", "F"}
DEEP_STRIP_PIXELS = 1 << 20  # deep grey is scaled to 8 bits in strips of about this many pixels
GREY_MODES = {"1", "L", "LA", "La", *_SIXTEEN_BIT}
_FULL_SCALE = {"F": 1.0, "I": 65535.0}  # the deep modes whose values may lie beyond what is read as white
MAX_CLIPPED_SHARE = 0.5  # of a float or 32-bit image's pixels, clipped to black or white (a warning): more are refused
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold
# The most pixels a side these formats hold (images go to 65 535): MPO and PDF code through libjpeg,
# libavif, which Pillow reads AVIF with, refuses a side over 32 768, and ICNS holds 1024x1024 alone.
_MAX_SIDE = {"JPEG": 65_500, "MPO": 65_500, "PDF": 65_500, "WEBP": 16_383, "AVIF": 32_768, "ICO": 256,
             "ICNS": 1024}


def check_pixel_count(width: int, height: int) -> None:
    """Refuse an image over MAX_PIXELS (Pillow's decompression-bomb threshold), from its header's size."""
    if width * height > MAX_PIXELS:
        raise VQCodecError(f"image of {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")


LOW_GREY_RAWMODES = {"L;2": 2, "L;4": 4}  # grey of 2 and 4 bits a pixel (PNG), read as 8-bit levels


def low_grey_key_bits(image) -> int | None:
    """Of an image not yet loaded: the bits a pixel of 2- or 4-bit grey with a transparent level (PNG
    tRNS) has, which Pillow reads as 8-bit levels but whose transparent level it leaves in those bits
    (a 4-bit white key, 15, matched no pixel: white is read as 255); None for any other image."""
    if image.mode != "L" or "transparency" not in image.info:
        return None
    return next((LOW_GREY_RAWMODES[tile.args] for tile in getattr(image, "tile", ())
                 if isinstance(getattr(tile, "args", None), str) and tile.args in LOW_GREY_RAWMODES), None)


def with_grey_key_in_8_bits(image, bits: int | None):
    """`image`, or where `bits` (low_grey_key_bits) is given a copy whose transparent level is scaled to 8 bits."""
    if bits is None:
        return image
    scaled = image.copy()
    scaled.info["transparency"] = image.info["transparency"] * 255 // (2 ** bits - 1)
    return scaled


def _check_side(width: int, height: int, max_side: int | None) -> None:
    if max_side is not None and max(width, height) > max_side:
        raise VQCodecError(f"image {width}x{height} exceeds the size limit of {max_side} pixels a side and "
                           f"{MAX_PIXELS} pixels")


def open_image(source, max_side: int | None = MAX_IMAGE_SIDE, fits: Callable[[int, int, str], None] | None = None):
    """Open an image file (path, or binary stream from where it is: from_where_it_is), apply EXIF orientation and an ICC
    profile (to sRGB), and refuse bombs and, unless `max_side` is None, an image with a side longer than that (what a
    .vq file holds), from its header: a PNG of 89 000 000 x 1 pixels took 1.2 GB and 6 s to be refused once read.
    `fits`, given, is called with the width, height and Pillow mode the header gives, before the pixels are read, to
    refuse (VQCodecError) an image that the work to come would not have the memory for. A stream that cannot seek (a
    pipe, a socket), which Pillow reads whole into memory, is copied into a temporary file first."""
    from PIL import Image

    check_source(source, "an image", paths=(str, os.PathLike))
    if not isinstance(source, (str, os.PathLike)) and not is_seekable(source):
        with spooled_stream(source) as copy:
            return open_image(copy, max_side, fits)
    refuse_empty_media(source)
    readable = from_where_it_is(source)
    logged: list[str] = []
    try:
        # a bomb: check_pixel_count says it
        with warnings_recorded(ignore=(Image.DecompressionBombWarning,)) as caught, pillow_log_caught(logged), \
                contextlib.ExitStack() as held:
            with TIFF_SETUP_LOCK:
                opened, cut_short = image_opened(readable, held)
            with opened as image:
                check_pixel_count(image.width, image.height)
                _check_side(image.width, image.height, max_side)
                if fits is not None:
                    fits(image.width, image.height, image.mode)
                opened_at = image.tell()
                unit = "pages" if image.format == "TIFF" else "frames"
                with TIFF_SETUP_LOCK:
                    frames, rest_unreadable = _frame_count(image) if cut_short is None else (1, cut_short)
                    _back_to_frame(image, opened_at)
                # only libtiff writes to stderr itself; fd 2 is the whole process's, so only around it
                native_capture = _native_stderr_captured() if image.format == "TIFF" else contextlib.nullcontext([])
                try:
                    with native_capture as native:
                        image = load_pixels(image, source)
                except OSError as exc:
                    if native:  # libtiff's own message, which says more than "decoder error -2"
                        raise unreadable_image(source, native[-1]) from exc
                    raise
                for line in dict.fromkeys(native):
                    warnings.warn(ImageReadWarning(f"{_image_called(source)}: {line}; read past it"),
                                  stacklevel=caller_stacklevel())
                transposed = as_displayed(image, source)  # a copy, so closing the file is safe
            transposed.info.pop("exif", None)  # applied, else kept no more: not parsed again (warning again)
        _warn_once_each(caught, _image_called(source))
        for line in dict.fromkeys(logged):
            warnings.warn(ImageReadWarning(f"{_image_called(source)}: {line}; read past it"),
                          stacklevel=caller_stacklevel())
        transposed = in_srgb(transposed, source)
        transposed.info.pop("icc_profile", None)  # applied, left alone as sRGB, or said to be unusable
        if frames > 1:
            warnings.warn(ImageReadWarning(f"{_image_called(source)} holds {frames} {unit}: only the first is coded"),
                          stacklevel=caller_stacklevel())
        if rest_unreadable is not None:
            why = f": {rest_unreadable}" if rest_unreadable else ""
            warnings.warn(ImageReadWarning(f"{_image_called(source)}: the {unit} after the first cannot be read "
                                           f"(damaged or cut short{why}): only the first is coded"),
                          stacklevel=caller_stacklevel())
        return transposed
    except VQCodecError:
        raise
    except Image.DecompressionBombError as exc:  # a refusal of its size, which names no file (check_pixel_count's)
        raise VQCodecError(pillow_refusal(readable, exc, logged)) from None
    except PILLOW_READ_ERRORS as exc:
        raise unreadable_image(source, pillow_refusal(readable, exc, logged)) from None


# What Pillow's errors that say nothing to the reader of an image mean: a broken TIFF tile, of which libtiff
# says nothing, a WebP file that libwebp cannot read, as one cut short, a reader's read of what its header gives
# past the file's end (ImageFile._safe_read), a reader that found no size (a JPEG that ends before its frame
# header, a PNG 0 pixels wide), one that found no image data (a JPEG that ends before its scan), and a decoder of
# Python's that ran out of data (a QOI or plain PPM cut short, a BMP whose run-length data ends early), and Pillow's
# decoders' words for data they cannot decode (a PNG's damaged zlib stream, a TGA's run longer than its image), and
# a TIFF whose directory's offset is 2**63 or more (a BigTIFF's)
PILLOW_REASONS = {"decoder error -2": "its data cannot be decoded (damaged or cut short)",
                  "could not create decoder object": "its data cannot be decoded (damaged or cut short)",
                  "image file is truncated": "its data ends early (cut short)",
                  "Truncated File Read": "it ends before the data its header gives: cut short or damaged",
                  "not identified by this driver": "its header gives no image size, or a side of 0 pixels: "
                                                   "cut short or damaged",
                  "cannot load this image": "no image data is found in it: cut short or damaged",
                  "not enough image data": "its data ends before its last pixel: cut short or damaged",
                  "broken data stream when reading image file": "its data cannot be decoded (damaged or cut short)",
                  "buffer overrun when reading image file": "its data cannot be decoded (damaged or cut short)",
                  "Unable to seek to frame": "its header places its directory past any file's end: damaged"}
TRUNCATED = re.compile(r"^image file is truncated \(\d+ bytes not processed\)$")  # Pillow's count of what it read past


# Of a reader's seek before the file's start: a stream's ValueError, a file's OSError EINVAL ("Invalid argument")
SEEK_BEFORE_START = "its header places its data before the file's start: damaged"


# Pillow's errors in Python's words, or of bytes (b'...'), of a Netpbm file (PPM, PGM, PBM) whose header gives no
# number for its size or levels, or whose plain (text) pixel values are no numbers, and of a reader's seek to a
# place its damaged header gives before the start (an ICO's)
PILLOW_REASON_PATTERNS = (
    (re.compile(r"^(invalid literal for int\(\) with base 10: |b'Token too long in file header: )"),
     "its header gives no number where its size or levels belong: damaged"),
    (re.compile(r"^b'(Invalid token for this mode|Token too long found in data): "),
     "its pixel values are not all numbers: damaged"),
    (re.compile(r"^negative seek value -\d+$"), SEEK_BEFORE_START))


def pillow_reason(exc: Exception) -> str:
    """What Pillow's error `exc` on reading an image means to its reader (PILLOW_REASONS, PILLOW_REASON_PATTERNS),
    or its own words (wording.reason_of: a missing file's, "No such file or directory")."""
    if isinstance(exc, OSError) and exc.errno == errno.EINVAL:  # a file's seek before its start
        return SEEK_BEFORE_START
    said = TRUNCATED.sub("image file is truncated", str(exc))
    for pattern, reason in PILLOW_REASON_PATTERNS:
        if pattern.match(said):
            return reason
    return PILLOW_REASONS.get(said, reason_of(exc))


def pillow_refusal(source, exc: Exception, logged: list[str]) -> str:
    """Why the image `source` (a path or seekable stream) cannot be read, Pillow having raised `exc` and logged
    `logged` (pillow_log_caught) as it refused it: the last line it logged, which says more than its error, what
    its error means (pillow_reason), or for a file no reader identified, why the reader of its format refuses it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, Image.DecompressionBombError):  # over twice the limit: Pillow refuses before giving the size
        return f"image exceeds the limit of {MAX_PIXELS} pixels"
    if logged:
        return logged[-1]
    if isinstance(exc, UnidentifiedImageError):
        return _refusal_of_its_format(source) or "not an image format Pillow reads"
    return pillow_reason(exc)


def _refusal_of_its_format(source) -> str | None:
    """Why the Pillow reader of the format whose signature `source` (a path or seekable stream) begins with
    refuses it, where one does: Image.open says only that it cannot identify the file, and a TIFF of CMYK and
    alpha was called no image format Pillow reads. A format without a signature (TGA, SPIDER) is tried first where
    the file's name names it: a TGA cut short was called a CUR file, whose signature it begins with."""
    from PIL import Image

    try:
        with (open(source, "rb") if isinstance(source, (str, Path)) else contextlib.nullcontext(source)) as stream:
            stream.seek(0)
            prefix = stream.read(16)
            Image.init()
            named = image_format_of_suffix(Path(str(input_name(source) or "")).suffix.lower())
            readers = sorted(Image.OPEN.items(), key=lambda reader: reader[0] != named)
            for name, (factory, accept) in readers:
                if not (name == named and accept is None or _begins_with_signature(prefix, accept)):
                    continue
                stream.seek(0)
                try:
                    with warnings_recorded() as caught:  # of a file refused for the reason it raises: said there
                        factory(stream, "")
                # What Image.open passes over of a reader: having identified no file, it had each reader these
                # bytes begin with the signature of raise one of them (ImageFile turns an IndexError, TypeError,
                # KeyError, EOFError or struct.error of a reader's _open into SyntaxError); any other is a bug.
                except (SyntaxError, IndexError, TypeError, struct.error) as exc:
                    article = "an" if name[:1] in "AEIOU" else "a"  # an AVIF, an ICNS file
                    return f"{article} {name} file that Pillow does not read ({_reader_reason(exc, caught)})"
    except (OSError, ValueError, AttributeError):  # unreadable again, or a stream that cannot seek
        return None
    return None


# What Pillow warns of, reading a header past the file's end, where it reads on without what it lacks: a TIFF
# directory (IFD) beyond the file's end or cut short, after which the reader refuses it for the tags it lacks
HEADER_READ_PAST_END = re.compile(r"^(Truncated File Read|Corrupt EXIF data\.\s+Expecting to read \d+ bytes but only "
                                  r"got \d+)")


def _reader_reason(exc: Exception, warned: list = ()) -> str:
    """Why a reader refused a file, from the error it raised and what it `warned` of: a struct.error, EOFError or
    IndexError of reading its header past what the file holds (which ImageFile turns into a SyntaxError of the same
    words), or a warning that it did so (HEADER_READ_PAST_END), is said as such, not in Python's words
    ('unpack_from requires a buffer of at least 2 bytes for unpacking 2 bytes at offset 0 ...', 'index out of
    range') nor as what it then lacked ('Missing dimensions', 'unknown data organization': a TIFF cut short). A
    TypeError (Python's words of a value of the wrong type, a TIFF's SamplesPerPixel as text, or the reader's own)
    is said as damage, in its words; so is a KeyError's bare key."""
    if (isinstance(exc, struct.error) or isinstance(exc.__cause__, (struct.error, EOFError, IndexError))
            or any(HEADER_READ_PAST_END.match(str(item.message)) for item in warned)):
        return "its header is cut short or damaged"
    if isinstance(exc.__cause__, KeyError) and str(exc) == str(exc.__cause__):  # the bare key: a value, a tag's number
        return (f"its header lacks an entry Pillow needs, or holds a value it does not know ({exc.__cause__}): "
                "damaged, or a variant it does not read")
    said = " ".join(str(exc).split()).rstrip(".")
    if isinstance(exc.__cause__, TypeError):  # Python's words of a value of the wrong type, or the reader's own
        return f"its header is damaged, or of a variant Pillow does not read ({said})"
    return PILLOW_REASONS.get(said, said)


class _PillowLogRouter(logging.Handler):
    """The one handler that pillow_log_caught puts on Pillow's logger while any thread catches its lines: a
    record goes to the list of its thread's innermost catching block, and a record of a thread in none where it
    went without this handler (Python's last resort, on stderr, where the program has no handler that takes it).
    A handler of each block dropped the lines of the threads in none: being a handler, it kept the last resort
    from them. Put on by the first block to begin and taken off by the last to end."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.guard, self.local, self.blocks = threading.Lock(), threading.local(), 0

    def enter(self, lines: list[str]) -> None:
        self.local.__dict__.setdefault("lines", []).append(lines)
        with self.guard:
            if not self.blocks:
                logging.getLogger("PIL").addHandler(self)
            self.blocks += 1

    def leave(self) -> None:
        self.local.lines.pop()
        with self.guard:
            self.blocks -= 1
            if not self.blocks:
                logging.getLogger("PIL").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        caught = getattr(self.local, "lines", None)
        if caught:
            caught[-1].append(" ".join(record.getMessage().split()).rstrip("."))
        elif not self._another_takes(record) and logging.lastResort is not None:
            if record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)

    def _another_takes(self, record: logging.LogRecord) -> bool:
        """Whether a handler besides this one is found for `record`, as Logger.callHandlers looks for them."""
        logger = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return True
            logger = logger.parent if logger.propagate else None
        return False


_PILLOW_LOG_ROUTER = _PillowLogRouter()


@contextlib.contextmanager
def pillow_log_caught(lines: list[str]):
    """Collect into `lines` what Pillow logs at WARNING and above in this thread while an image is read ("More
    samples per pixel than can be decoded: 99", before it refuses a TIFF), for open_image to say in its own error
    or warning. Without a handler of its own, Python's last resort printed it on stderr, a line beside
    vqcodec's; a handler on Pillow's logger for this while stops that alone: records still reach the
    handlers the program has set up, and its logging settings are left as they were."""
    _PILLOW_LOG_ROUTER.enter(lines)
    try:
        yield lines
    finally:
        _PILLOW_LOG_ROUTER.leave()


TIFF_ORIENTATION = 274  # the TIFF (and EXIF) tag of how the stored image is turned for display
SIDE_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # turned by a quarter: width and height trade places
ORIENTATIONS = range(1, 9)  # EXIF's: 1 as stored, 2 to 8 flipped or turned


def as_displayed(image, source=None):
    """A copy of `image` (loaded) turned as its EXIF orientation says it is displayed (ImageOps.exif_transpose).
    An orientation that is none of EXIF's eight (damaged), which Pillow passes over without a word, leaves it as
    stored, with an ImageReadWarning naming `source` (open_image's, or None for a Pillow image) that says so."""
    from PIL import ImageOps

    orientation = image.getexif().get(TIFF_ORIENTATION, 1)
    if orientation not in ORIENTATIONS:
        shown = orientation if isinstance(orientation, int) else repr(orientation)
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: its EXIF orientation, {shown}, is none of 1 to 8 "
                                       "(damaged): read as stored, not turned"), stacklevel=caller_stacklevel())
    return ImageOps.exif_transpose(image)


def load_pixels(image, source=None):
    """image.load() of an image Image.open gave, not yet read, and the image to code: Pillow's reading, but
    where that loses or misreads what the file holds, a copy as the file has it (`image` itself is loaded
    and left as Pillow reads it):

    - 16-bit grey with alpha (PNG), which Pillow reads as RGBA, is LA: grey, and grey it comes back;
    - 16-bit RGB (PNG), which Pillow reads as 8 bits (the high bytes), has its transparent colour (tRNS)
      in 8 bits too: Pillow matched its 16 bits against the pixels, and other pixels became transparent;
    - 2- and 4-bit grey with a transparent level has it in 8 bits (with_grey_key_in_8_bits);
    - a BMP whose alpha Pillow does not read has it (_bmp_with_alpha);
    - a TIFF of separate planes is read by libtiff (_planes_through_libtiff);
    - a TIFF channel of unspecified meaning after the colour is alpha, and others are said to be left out
      (_unspecified_channel_as_alpha), in a warning naming `source` (open_image's).

    A TIFF turned by a quarter (orientation 5 to 8) is read rather than memory-mapped: Pillow maps the
    stored pixels at the size they are displayed at, so an uncompressed grey, palette, RGBA, CMYK or
    16-bit TIFF opened from a path came out garbled (from a stream it was right)."""
    imagedata.check_tiff_numbers(image)
    rawmodes = {getattr(tile, "args", None) for tile in getattr(image, "tile", ())}
    grey_with_alpha = image.mode == "RGBA" and "LA;16B" in rawmodes
    deep_colour_key = image.mode == "RGB" and "transparency" in image.info and "RGB;16B" in rawmodes
    grey_key_bits = low_grey_key_bits(image)
    with_alpha = _bmp_with_alpha(image)
    _planes_through_libtiff(image)
    extra_as_alpha, extra_left_out = _unspecified_channel_as_alpha(image)  # before image.load() may close its file
    imagedata.check_png_data(image)
    imagedata.check_jpeg_data(image)
    name = getattr(image, "filename", None)
    if image.format == "TIFF" and image.tag_v2.get(TIFF_ORIENTATION) in SIDE_SWAPPING_ORIENTATIONS:
        image.filename = ""  # ImageFile.load maps a file only when it has a file name
    palette_read = image.mode == "P" and (image.format in imagedata.PALETTE_CHECKED_FORMATS and bool(image.tile)
                                          or image.format == "ICO")  # read as it opens: a palette PNG of its own
    try:
        image.load()
    finally:
        if name is not None:
            image.filename = name
    if palette_read:
        imagedata.check_palette_indices(image)
    imagedata.check_ico_entry(image)
    read = with_alpha or image
    if extra_as_alpha is not None:
        read = _warn_of_extra_alpha(extra_as_alpha, source)
    if extra_left_out:
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: {plural(extra_left_out, 'channel')} of unspecified "
                                       "meaning (TIFF ExtraSamples 0) left out"), stacklevel=caller_stacklevel())
    if grey_with_alpha:
        read = image.convert("LA")
    if deep_colour_key:
        read = image.copy()
        read.info["transparency"] = tuple(value >> 8 for value in image.info["transparency"])
    return with_grey_key_in_8_bits(read, grey_key_bits)


BMP_ALPHA_MASK_AT = 52  # from the start of a BMP's info header (of 56 bytes or more): its alpha mask
BMP_A1R5G5B5 = 0x8000  # the alpha mask of 16-bit pixels of 5 bits each of R, G and B, and 1 of alpha


def _bmp_with_alpha(image):
    """Of a BMP not yet read whose alpha Pillow does not read, the RGBA image it is, read from its file; else
    None. That alpha is in the fourth bytes of 32-bit pixels without bit fields (BI_RGB), which the format leaves
    unused and writers fill with alpha (Pillow's own RGBA BMPs), or in the top bit of 16-bit bit fields whose
    alpha mask names it (A1R5G5B5, as GIMP writes it): Pillow reads both as RGB, and the alpha was dropped.
    Alpha all 0 (the unused bytes, as the format has them) or all 255 is none: None."""
    from PIL import Image

    if image.format not in ("BMP", "DIB") or image.mode != "RGB":
        return None
    try:  # Pillow's reader's own attributes: no public call gives a BMP's bytes of pixels
        tile = image.tile[0] if len(image.tile) == 1 else None
        if tile is None or tile[0] != "raw" or image.fp is None:  # no fp: closed, which load() says
            return None
        (rawmode, stride, direction), offset = tile[3], tile[2]
    except (AttributeError, TypeError, ValueError, IndexError):
        raise _without_pillow_internals("a BMP's alpha", "BmpImageFile.tile and .fp", "PNG") from None
    compression = image.info.get("compression")
    if compression == BMP_BI_RGB and rawmode == "BGRX":
        rawmode = "BGRA"
    elif compression == BMP_BITFIELDS and rawmode == "BGR;15" and _bmp_alpha_mask(image) == BMP_A1R5G5B5:
        rawmode = "BGRA;15"
    else:
        return None
    image.fp.seek(offset)
    data = image.fp.read(stride * image.height)
    if len(data) < stride * image.height:
        return None  # cut short: image.load() says so
    rgba = Image.frombytes("RGBA", image.size, data, "raw", rawmode, stride, direction)
    if rgba.getchannel("A").getextrema() in ((0, 0), (255, 255)):
        return None
    rgba.info = dict(image.info)
    return rgba


def _without_pillow_internals(what: str, internals: str, instead: str) -> ValueError:
    """The error for an image of which reading `what` needs `internals` of Pillow's (attributes of its readers,
    as no public call does it), which this Pillow lacks or has changed: refused, where it would be read wrong."""
    import PIL

    return ValueError(f"reading {what} needs Pillow's {internals}, which Pillow {PIL.__version__} does not have as "
                      f"vqcodec knows them: save it as {instead}")


def _bmp_alpha_mask(image) -> int | None:
    """The alpha mask of a BMP (or DIB, without the file header) image not yet read, None where its info
    header is too short to hold one."""
    header_at = 14 if image.format == "BMP" else 0
    image.fp.seek(header_at)
    header = image.fp.read(BMP_ALPHA_MASK_AT + 4)
    if len(header) < BMP_ALPHA_MASK_AT + 4 or int.from_bytes(header[:4], "little") < BMP_ALPHA_MASK_AT + 4:
        return None
    return int.from_bytes(header[BMP_ALPHA_MASK_AT:], "little")


def _begins_with_signature(prefix: bytes, accept) -> bool:
    """Whether a Pillow format's signature check `accept` (None: the format has none) finds its signature in
    `prefix`; a prefix of a few bytes is too short for some checks (struct.error), and has none."""
    import struct

    try:
        return accept is not None and accept(prefix) is True
    except (IndexError, TypeError, ValueError, struct.error):
        return False


def _frame_count(image) -> tuple[int, str | None]:
    """How many frames (pages) an image opened at its first holds, and why those after the first cannot be read
    ("" where the reader says it in Python's words, 'index out of range' of a GIF's next frame's header cut
    short), or None: a multi-page TIFF cut short points to a page past its end, and counting it failed the whole
    file ("Missing dimensions"), whose first page was intact. A later TIFF page of a compression Pillow does not
    know, or a palette one without its ColorMap, raises the bare KeyError of Pillow's lookup (a traceback). MPO
    (a camera's previews) and PSD (the layers of the composite image read) count as one."""
    import struct

    if image.format in ("MPO", "PSD"):
        return 1, None
    try:
        with warnings_recorded() as caught:  # of the later pages: dropped where they fail
            frames = getattr(image, "n_frames", 1)
    except (IndexError, struct.error):
        return 1, ""
    except KeyError as exc:
        return 1, f"a later page's header lacks an entry Pillow needs, or holds a value it does not know ({exc})"
    except (EOFError, OSError, SyntaxError, TypeError, ValueError) as exc:
        return 1, " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    for item in caught:
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if image.format == "PNG" and frames > 1:
        missing = _apng_frames_missing(image.fp, frames)
        if missing:
            return 1, missing
    if image.format == "GIF" and frames > 1:
        cut_within = _gif_frame_cut_within(image.fp)
        if cut_within:
            return 1, f"it ends within its frame {cut_within}"
    return frames, None


def _gif_frame_cut_within(stream) -> int | None:
    """The number of the frame within which a GIF in `stream` ends, read from its blocks' headers: Pillow counts a
    frame from its image descriptor alone, so a GIF cut short within its third frame's data held 3 frames; else
    None (whole, or cut short between frames, or of blocks Pillow itself refuses)."""
    walked = _gif_blocks_walked(stream)
    return walked[0] if walked is not None and walked[1] else None


def _gif_blocks_walked(stream) -> tuple[int, bool] | None:
    """How many frames a GIF that begins `stream` holds, read from its blocks' headers (the stream is left where
    it was), and whether it ends within the last one's data; None where it cannot be read so."""
    start = stream.tell()
    try:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        if stream.read(4) != b"GIF8":
            return None
        stream.seek(GIF_SCREEN_DESCRIPTOR_END)
        stream.seek(_gif_colour_table_bytes(stream.read(1)) + 2, os.SEEK_CUR)  # the background colour, aspect ratio
        frame = 0
        while (kind := stream.read(1)) in (b"!", b","):
            if kind == b",":
                frame += 1
                descriptor = stream.read(GIF_IMAGE_DESCRIPTOR_BYTES)
                stream.seek(_gif_colour_table_bytes(descriptor[-1:]) + 1, os.SEEK_CUR)  # and the LZW code size
            else:
                stream.seek(1, os.SEEK_CUR)  # the extension's label
            while (length := stream.read(1)) not in (b"", b"\0"):  # its data sub-blocks, to the empty one
                stream.seek(length[0], os.SEEK_CUR)
            if stream.tell() > size or not length:
                return frame, kind == b","
    except (OSError, ValueError):
        return None  # unreadable here: Pillow says what is wrong
    finally:
        stream.seek(start)
    return frame, False


def warn_of_frames_left_out(image) -> None:
    """Warn, as open_image does of a file, that a Pillow image given to be coded holds more frames (pages) than the
    one coded, its current one, where their count is cheap to know and leaves the image as it is (frames_known)."""
    frames = frames_known(image)
    if frames > 1:
        unit = "pages" if image.format == "TIFF" else "frames"
        coded = "the first" if image.tell() == 0 else f"{unit[:-1]} {image.tell() + 1}, the current one,"
        warnings.warn(ImageReadWarning(f"the image holds {frames} {unit}: only {coded} is coded"),
                      stacklevel=caller_stacklevel())


def frames_known(image) -> int:
    """How many frames (pages) a Pillow image holds where that is known without seeking it: Pillow's count from
    the file's header (APNG, WebP, ...) or one it has made already (a TIFF's n_frames asked), a GIF's from its
    blocks' headers and a TIFF's from its directories' (Pillow's own count seeks it to each frame); 1 otherwise, and
    for MPO and PSD, which _frame_count counts as one."""
    if image.format in ("MPO", "PSD"):
        return 1
    held = vars(image)
    known = held.get("n_frames", held.get("_n_frames"))
    if known is None and getattr(image, "fp", None) is not None:
        known = _frames_walked(image.format, image.fp)
    return known if isinstance(known, int) else 1


def _frames_walked(image_format: str, stream) -> int | None:
    """How many frames a GIF, or pages a TIFF, that begins `stream` holds, read from the headers of its blocks or
    directories (the stream left where it was); None for another format, or where they cannot be read so (a file
    closed under the image, `with open(path, "rb") as f: image = Image.open(f)`: reading its pixels says so)."""
    try:
        stream.tell()
    except (OSError, ValueError):
        return None
    if image_format == "GIF":
        walked = _gif_blocks_walked(stream)
        return walked[0] if walked is not None else None
    return _tiff_pages_walked(stream) if image_format == "TIFF" else None


# A TIFF's layout by the number its header gives after the byte order (42 classic, 43 BigTIFF): the format of a
# directory's count of entries, the bytes of an entry, the format of an offset, and where the header gives the first
# directory's
TIFF_LAYOUTS = {42: ("H", 12, "I", 4), 43: ("Q", 20, "Q", 8)}
MAX_TIFF_PAGES_COUNTED = 1 << 16  # a bound on the directories read to count them: each may be as small as 6 bytes


def _tiff_pages_walked(stream) -> int | None:
    """How many pages a TIFF that begins `stream` holds, as Pillow counts them: the directories along the chain of
    next-directory offsets, to an offset of 0 or of one already read, each read from its count of entries and its
    next offset (the stream left where it was); None where the chain cannot be read so (an offset past the end, a
    directory cut short, more than MAX_TIFF_PAGES_COUNTED directories)."""
    start = stream.tell()
    try:
        stream.seek(0)
        header = stream.read(16)
        order = {b"II": "<", b"MM": ">"}.get(header[:2])
        layout = TIFF_LAYOUTS.get(struct.unpack(order + "H", header[2:4])[0]) if order and len(header) >= 4 else None
        if layout is None:
            return None
        count_format, entry_bytes, offset_format, first_at = layout
        count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
        size = stream.seek(0, os.SEEK_END)
        offset, read = struct.unpack_from(order + offset_format, header, first_at)[0], set()
        while offset and offset not in read:
            if len(read) == MAX_TIFF_PAGES_COUNTED or offset + count_size > size:
                return None
            read.add(offset)
            stream.seek(offset)
            entries = struct.unpack(order + count_format, stream.read(count_size))[0]
            next_at = offset + count_size + entries * entry_bytes
            if next_at + offset_size > size:  # a BigTIFF's count may be 2**64 - 1: seeking there overflowed
                return None
            stream.seek(next_at)
            offset = struct.unpack(order + offset_format, stream.read(offset_size))[0]
        return len(read)
    except (OSError, ValueError, struct.error):
        return None  # unreadable here: the coding of the page given says what is wrong
    finally:
        stream.seek(start)


GIF_SCREEN_DESCRIPTOR_END = 10  # the signature, version and logical screen size: the flags byte follows
GIF_IMAGE_DESCRIPTOR_BYTES = 9  # position, size and flags, after its separator (",")


def _gif_colour_table_bytes(flags: bytes) -> int:
    """The bytes of the colour table that a GIF's screen or image descriptor's flags byte says follows it."""
    if not flags or not flags[0] & 0x80:
        return 0
    return 3 << ((flags[0] & 7) + 1)


def _apng_frames_missing(stream, frames: int) -> str | None:
    """Why an APNG whose header (acTL) gives `frames` frames lacks some of them, read from its chunks' headers in
    `stream`: a file cut short after its first frame, which Pillow counts from its header alone; else None.
    The default image (IDAT) is a frame of its own where no frame control chunk (fcTL) comes before it."""
    start = stream.tell()
    try:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(8)
        found = 0
        while len(head := stream.read(8)) == 8 and head[4:] != b"IEND":
            length, kind = struct.unpack(">I4s", head)
            found += kind == b"fcTL" or (kind == b"IDAT" and not found)
            stream.seek(length + 4, os.SEEK_CUR)  # its data and CRC: past the end where it is cut short
        cut_short = stream.tell() > size
    except (OSError, ValueError):
        return None  # unreadable here: Pillow says what is wrong
    finally:
        stream.seek(start)
    if cut_short or (found < frames and len(head) < 8):  # a chunk cut short, or no IEND chunk
        return f"it ends before the last of its {frames} frames"
    if found < frames:
        return f"it holds {found} of the {frames} frames its header gives"
    return None


def image_opened(source, held: contextlib.ExitStack):
    """Image.open(source) (a path or a stream that can seek, not empty: refuse_empty_media), and None; or where that
    fails for an animated WebP cut short after its first frame, of which libwebp reads no frame ("could not create
    decoder object"), the frames before the cut, opened with its RIFF size set to where they end (the file held open in
    `held`), and why those after the first cannot be read, as _frame_count says it of a GIF or an APNG so cut."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(source), None
    except OSError as exc:
        refused = exc
    if isinstance(refused, UnidentifiedImageError) and _first_tiff_directory_of_planes(source) \
            and (planes := _planes_opened_through_libtiff(source)) is not None:
        return planes, None
    path = source if isinstance(source, (str, os.PathLike)) else None
    if path is not None and not os.path.isfile(path):  # a FIFO's bytes are gone: it is not read twice
        raise refused
    try:
        stream = held.enter_context(open(path, "rb")) if path is not None else source
        cut = _webp_frames_cut(stream)
    except OSError:
        raise refused from None
    if cut is None:
        raise refused
    frames_end, why = cut
    stream.seek(0)
    return Image.open(PatchedStream(stream, {4: struct.pack("<I", frames_end - 8)}), formats=["WEBP"]), why


TIFF_ORDERS = {b"II*\0": "<", b"MM\0*": ">"}  # a classic TIFF's first 4 bytes: its byte order
TIFF_ENTRY_TYPES = {3: "H", 4: "I"}  # SHORT, LONG: the types of a whole number a directory entry holds itself
MAX_TIFF_ENTRIES_LOOKED_AT = 1024


def _first_tiff_directory_of_planes(source) -> bool:
    """Whether `source` (a path or a stream that can seek) is a classic TIFF whose first directory gives
    PlanarConfiguration 2 (each channel a plane of its own), from its header; where it is not, or that cannot be
    read, False. A stream is left where it was."""
    try:
        with (open(source, "rb") if isinstance(source, (str, os.PathLike)) else contextlib.nullcontext(source)) \
                as stream:
            start = stream.tell()
            try:
                stream.seek(0)
                head = stream.read(8)
                if (order := TIFF_ORDERS.get(head[:4])) is None:
                    return False
                stream.seek(struct.unpack(order + "I", head[4:])[0])
                count = struct.unpack(order + "H", stream.read(2))[0]
                entries = stream.read(12 * min(count, MAX_TIFF_ENTRIES_LOOKED_AT))
            finally:
                stream.seek(start)
    except (OSError, ValueError, struct.error):
        return False
    for at in range(0, len(entries) - 11, 12):
        tag, kind = struct.unpack_from(order + "HH", entries, at)
        if tag == PLANAR_CONFIGURATION and kind in TIFF_ENTRY_TYPES:
            return struct.unpack_from(order + TIFF_ENTRY_TYPES[kind], entries, at + 8)[0] == 2
    return False


def _planes_opened_through_libtiff(source):
    """A TIFF whose channels are stored as planes that Pillow's own reader refuses, opened to be read by libtiff
    (as _planes_through_libtiff has it read them), or None: one of 8 bits a sample with a channel of unspecified
    meaning (ExtraSamples 0) after its colour, whose planes that reader sets up one past its colour's (an
    IndexError), was refused as a TIFF Pillow does not read ('its header is cut short or damaged')."""
    from PIL import Image, TiffImagePlugin

    if not hasattr(TiffImagePlugin, "READ_LIBTIFF"):
        return None
    with TIFF_SETUP_LOCK:
        saved, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
        try:
            image = Image.open(source, formats=["TIFF"])
        except PILLOW_READ_ERRORS:
            return None
        finally:
            TiffImagePlugin.READ_LIBTIFF = saved
    if image.tag_v2.get(PLANAR_CONFIGURATION) == 2:
        return image
    if isinstance(source, (str, os.PathLike)):
        image.close()  # the file it opened; a stream given is the caller's, and stays open
    return None


WEBP_FRAME = b"ANMF"  # the chunk of one frame of an animated WebP


def _webp_frames_cut(stream) -> tuple[int, str] | None:
    """Of an animated WebP in `stream` that ends before the end its RIFF header gives, after one of its frames
    (ANMF chunks) or more: where its whole chunks end, and where it ends ('it ends within its frame 3', 'it ends
    after its frame 2'), read from its chunks' headers; else None (whole, not an animated WebP, cut short within
    its first frame)."""
    start = stream.tell()
    try:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        head = stream.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return None
        at, frames = 12, 0
        while len(chunk := stream.read(8)) == 8:
            kind, length = struct.unpack("<4sI", chunk)
            end = at + 8 + length + (length & 1)  # padded to an even length
            if end > size:
                break
            frames += kind == WEBP_FRAME
            at = stream.seek(end)
    finally:
        stream.seek(start)
    if not frames or (at == size and struct.unpack("<I", head[4:8])[0] + 8 <= size):
        return None
    within = at + 8 <= size and chunk[:4] == WEBP_FRAME
    return at, f"it ends within its frame {frames + 1}" if within else f"it ends after its frame {frames}"


def _back_to_frame(image, frame: int) -> None:
    """Seek an image back to the frame Image.open gave, where counting its frames left it elsewhere.
    That frame is the image (Pillow numbers a PSD's composite frame 1, and refused a seek to frame 0:
    "attempt to seek outside sequence"), and a seek where none is needed can fail (SPIDER's refuses a
    file that is not a stack, even to frame 0)."""
    if image.tell() != frame:
        image.seek(frame)


def unreadable_image(source, reason) -> VQCodecError:
    """The error for an image (path or stream) that cannot be read, and why."""
    return VQCodecError(f"cannot read image {input_name(source) or 'from the stream'}: {reason}")


PLANAR_CONFIGURATION = 284  # the TIFF tag; 2: each channel stored as a plane of its own
EXTRA_SAMPLES = 338  # the TIFF tag of what each channel after the colour holds: 0 unspecified, 2 alpha (unassociated)
UNSPECIFIED_SAMPLE, UNASSOCIATED_ALPHA = 0, 2


def _unspecified_channel_as_alpha(image) -> tuple[object, int]:
    """Of a TIFF not yet read that has channels of unspecified meaning (ExtraSamples 0) after its colour, which
    Pillow reads past and drops: the one such channel of grey, palette or RGB (interleaved) read as alpha,
    unassociated (its values and the colour's as stored: nothing is lost, where writers that leave it unspecified
    mean alpha), in an image read from another opening of the file (`image` is left as Pillow reads it), or None;
    and how many such channels are left out otherwise (none: 0)."""
    from PIL import Image

    if image.format != "TIFF" or UNSPECIFIED_SAMPLE not in (extra := tuple(image.tag_v2.get(EXTRA_SAMPLES, ()))):
        return None, 0
    if extra == (UNSPECIFIED_SAMPLE,) and image.tag_v2.get(PLANAR_CONFIGURATION) != 2 and hasattr(image, "_setup") \
            and getattr(image, "fp", None) is not None:  # Pillow's reader's own: no public call reads it so
        image.fp.seek(0)
        with TIFF_SETUP_LOCK:
            twin = Image.open(BytesIO(image.fp.read()))  # not closed: that would drop its pixels
            twin.seek(image.tell())
            twin.tag_v2[EXTRA_SAMPLES] = (UNASSOCIATED_ALPHA,)
            try:
                twin._setup()  # the tile again, from the tags
            except SyntaxError:  # no mode of Pillow's holds it with alpha (16-bit grey, CMYK): left out
                return None, 1
        twin.load()
        return twin, 0
    return None, extra.count(UNSPECIFIED_SAMPLE)


def _warn_of_extra_alpha(image, source):
    """`image`, read with its channel of unspecified meaning as alpha (_unspecified_channel_as_alpha), with a
    warning that says so; where that channel is all 0 or all 255, without it and the warning (no alpha, as BMP's)."""
    if image.getchannel("A").getextrema() in ((0, 0), (255, 255)):
        return image.convert(image.mode[:-1])
    warnings.warn(ImageReadWarning(f"{_image_called(source)}: its last channel, of unspecified meaning (TIFF "
                                   "ExtraSamples 0), is read as alpha"), stacklevel=caller_stacklevel())
    return image


def _planes_through_libtiff(image) -> None:
    """Have libtiff read a TIFF whose channels are stored as separate planes: Pillow's own reader of
    uncompressed ones takes one byte a sample (16-bit RGB came out garbled) and knows no planar YCbCr.
    Grey and alpha planes are refused (ValueError, the reason): Pillow's libtiff reader leaves their alpha 0,
    all transparent."""
    from PIL import TiffImagePlugin

    if image.format != "TIFF" or image.tag_v2.get(PLANAR_CONFIGURATION) != 2:
        return
    if image.mode == "LA":
        raise ValueError("a TIFF of grey and alpha stored as separate planes, whose alpha Pillow does not read: "
                         "save it with the channels interleaved (contiguous)")
    if not all(hasattr(owner, name) for owner, name in ((image, "use_load_libtiff"), (image, "_setup"),
                                                        (TiffImagePlugin, "READ_LIBTIFF"))):
        raise _without_pillow_internals("a TIFF stored as separate planes", "TiffImageFile._setup and "
                                        ".use_load_libtiff and TiffImagePlugin.READ_LIBTIFF",
                                        "a TIFF of interleaved (contiguous) channels")
    if image.use_load_libtiff:
        return
    with TIFF_SETUP_LOCK:
        saved, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
        try:
            image._setup()  # the tile again, for libtiff
        finally:
            TiffImagePlugin.READ_LIBTIFF = saved


ICC_PROBE_LEVELS = 18  # a side of the grid of colours (18^3 = 5832) that tells an sRGB-like profile
LCMS_NO_OPTIMIZE = 0x0100  # cmsFLAGS_NOOPTIMIZE, ImageCms.Flags.NOOPTIMIZE from Pillow 10.3
# The modes whose ICC profile is applied, and the colour spaces of the profiles each takes: grey may
# carry an RGB profile (as R = G = B), 16-bit, 32-bit and float grey a GRAY one only (8-bit grey held
# as 32 bits or floats is L, as image_to_planes reads it)
_PROFILE_SPACES = {"RGB": ("RGB",), "RGBA": ("RGB",), "P": ("RGB",), "PA": ("RGB",), "CMYK": ("CMYK",),
                   "L": ("GRAY", "RGB"), "LA": ("GRAY", "RGB"), "I;16": ("GRAY",), "I;16B": ("GRAY",),
                   "I;16L": ("GRAY",), "I": ("GRAY",), "F": ("GRAY",)}


def in_srgb(image, source=None):
    """An image with an embedded ICC profile, converted to sRGB (relative colorimetric), the colours
    the codec and every viewer without colour management take its pixels for; an Adobe RGB photo
    read as sRGB came out dull. Grey stays grey, in the levels of sRGB's grey; a palette image has
    its palette converted; CMYK is converted to sRGB and kept as the CMYK that Pillow's plain
    formula turns into those sRGB colours. A profile that moves no colour of a small grid (grey: no
    level) by more than a level (sRGB under another name) is left alone: a 3-megapixel conversion
    takes about 0.1 s, the check a few ms. An unusable profile is said in one warning naming
    `source` (open_image's), and the pixels are read as sRGB. `image` itself is never changed; the
    result keeps the profile only where it was left alone or unusable."""
    image = with_standard_sixteen_bit(image)
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in _PROFILE_SPACES:
        return image
    from PIL import ImageCms

    if image.mode in _FULL_SCALE and _holds_eight_bits(image):
        image = image.convert("L")
    image = _transparent_colour_as_alpha(image)  # converted, the colour would no longer be its pixels'
    try:
        profile = ImageCms.ImageCmsProfile(BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if space not in _PROFILE_SPACES[image.mode]:
            raise ValueError(f"it describes {space} pixels, and the image is {image.mode}")
        in_mode = image.mode if image.mode in ("CMYK", "RGB") else "RGB" if space == "RGB" else \
            "L" if image.mode in ("L", "LA") else "I;16"
        # A ramp of levels or a palette is few colours: converted exactly, where lcms's optimised 8-bit
        # transform put linear grey's level 5 at 31, not 38
        few = image.mode not in ("RGB", "RGBA", "CMYK")
        transform = ImageCms.buildTransform(profile, _srgb_profile(), in_mode, "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                            flags=LCMS_NO_OPTIMIZE if few else 0)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: its ICC profile cannot be used ({reason}); "
                                       "read as sRGB"), stacklevel=caller_stacklevel())
        return image
    if image.mode in GREY_MODES:
        converted = _grey_in_srgb(image, transform, in_mode)
    elif image.mode == "CMYK":  # no CMYK profile is Pillow's formula: no check
        converted = ImageCms.applyTransform(image, transform).convert("CMYK")
    elif not _moves_colours(transform):
        return image
    elif image.mode in ("P", "PA"):
        converted = _palette_in_srgb(image, transform)
    else:
        converted = ImageCms.applyTransform(image.convert("RGB") if image.mode == "RGBA" else image, transform)
        if image.mode == "RGBA":
            converted.putalpha(image.getchannel("A"))
    if converted is None:
        return image
    converted.info = {key: value for key, value in image.info.items() if key != "icc_profile"}
    return converted


def _moves_colours(transform) -> bool:
    """Whether an RGB-to-sRGB transform moves a colour of _icc_probe's grid by more than a level."""
    from PIL import ImageCms

    probe = _icc_probe()
    moved = np.abs(np.asarray(ImageCms.applyTransform(probe, transform), dtype=np.int16)
                   - np.asarray(probe, dtype=np.int16))
    return bool(moved.max() > 1)


def _palette_in_srgb(image, transform):
    """A palette image with its palette's colours converted (its alpha values kept)."""
    from PIL import Image, ImageCms

    rawmode = image.palette.mode
    entries = np.asarray(image.getpalette(rawmode), dtype=np.uint8).reshape(-1, len(rawmode)).copy()
    colours = Image.fromarray(np.ascontiguousarray(entries[None, :, :3]), "RGB")
    entries[:, :3] = np.asarray(ImageCms.applyTransform(colours, transform))[0]
    converted = image.copy()
    converted.putpalette(entries.tobytes(), rawmode)
    return converted


def _grey_in_srgb(image, transform, in_mode: str):
    """A grey image (L, LA, 16-bit, 32-bit or float) with each level replaced by the sRGB grey its
    profile makes of it (the mean of the three channels, which the profile keeps equal to a level), or
    None where no level moves by more than one of 8 bits. Deeper grey is taken as 16-bit levels and
    gets 8-bit sRGB levels (the codec keeps 8 bits), scaled back to its own; it is converted a strip
    at a time."""
    from PIL import Image, ImageCms

    levels = np.arange(65536 if in_mode == "I;16" else 256)
    ramp = (Image.frombytes("I;16", (len(levels), 1), levels.astype("<u2").tobytes()) if in_mode == "I;16"
            else Image.fromarray(levels.astype(np.uint8)[None], "L").convert(in_mode))
    srgb = np.round(np.asarray(ImageCms.applyTransform(ramp, transform), dtype=np.float64)[0].mean(axis=1))
    if np.abs(srgb - np.round(levels * 255 / levels[-1])).max() <= 1:
        return None
    if in_mode != "I;16":
        table = [int(level) for level in srgb]
        return image.point(table + list(range(256)) if image.mode == "LA" else table)
    if image.mode in _FULL_SCALE:
        return _full_scale_in_srgb(image, srgb)
    table = (srgb * 257).astype(np.uint16)
    order = ">u2" if image.mode == "I;16B" else "<u2"
    converted = Image.new(image.mode, image.size)
    rows = max(1, DEEP_STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        strip = np.asarray(image.crop((0, top, image.width, min(image.height, top + rows))))
        converted.paste(Image.frombytes(image.mode, strip.shape[::-1], table[strip].astype(order).tobytes()), (0, top))
    return converted


def _full_scale_in_srgb(image, srgb: np.ndarray):
    """A 32-bit or float grey image whose values within 0 to _FULL_SCALE, as 16-bit levels, are replaced
    by their `srgb` levels (of 0-255, one for each 16-bit level) at that scale; values beyond it (and
    NaN) are left to be clipped, or refused, as they were (_check_deep_range)."""
    from PIL import Image

    full_scale = _FULL_SCALE[image.mode]
    table = np.round(srgb * 257) if image.mode == "I" else srgb / 255
    converted = np.empty((image.height, image.width), dtype=np.int32 if image.mode == "I" else np.float32)
    for top, values in _deep_grey_values(image):
        within = np.isfinite(values) & ~_beyond_full_scale(values, full_scale)
        level = np.round(np.clip(np.where(within, values, 0), 0, full_scale) / full_scale * 65535).astype(np.int64)
        converted[top:top + len(values)] = np.where(within, table[level], values)
    return Image.fromarray(converted, image.mode)


@functools.cache
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.createProfile("sRGB")


@functools.cache
def _icc_probe():
    """An RGB image of ICC_PROBE_LEVELS^3 colours, every level of 0-255 in even steps in each channel."""
    from PIL import Image

    levels = np.round(np.linspace(0, 255, ICC_PROBE_LEVELS)).astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    return Image.fromarray(grid, "RGB")


def _image_called(source) -> str:
    """How a warning names an image: its path, "the image from stdin" or "the image"."""
    name = input_name(source)
    return "the image" if name is None else f"the image {name}" if name == "from stdin" else str(name)


_COLOUR_OF_ALPHA_MODE = {"RGBA": "RGB", "LA": "L", "PA": "P", "P;transparency": "P"}


def warn_of_what_codes_leave_out(header, source) -> None:
    """Where a .vq image's `header` gives it an alpha plane or a colour mode other than RGB (grey, a palette,
    CMYK, 16 bits), an ImageReadWarning that the codes of its image (`source`: the image, or that file) leave
    them out, as `vqcodec pack` of them makes an RGB image (`vqcodec codes`, Codec.media_to_codes)."""
    from .format import FLAG_ALPHA, KIND_IMAGE

    if header.kind != KIND_IMAGE or header.mode not in IMAGE_MODE_NAMES:
        return  # audio, or a mode decoding refuses
    mode = IMAGE_MODE_NAMES[header.mode]
    colour, alpha = _COLOUR_OF_ALPHA_MODE.get(mode, mode), header.flags & FLAG_ALPHA
    if colour == "RGB" and not alpha:
        return
    if colour == "RGB":
        said = "its alpha channel is not in its codes, which hold its colour alone"
    elif alpha:
        said = f"its alpha channel and its colour mode ({colour}) are not in its codes, which hold its colour " \
               "alone, as RGB"
    else:
        said = f"its colour mode ({colour}) is not in its codes, which hold its colour as RGB"
    said += f" (`vqcodec pack` makes an {'opaque ' if alpha else ''}RGB image of them)"
    warnings.warn(ImageReadWarning(f"{_image_called(source)}: {said}"), stacklevel=caller_stacklevel())


# The name Pillow gives libtiff for every file, which libtiff's messages begin with, or give after the name of the
# function that raised them ("_TIFFVSetField: tempfile.tif: Bad value 3 for ..."): no file of the user's
LIBTIFF_STAND_IN_NAME = re.compile(r"(^|: )tempfile\.tif: ")


def _native_line(line: str) -> str:
    return LIBTIFF_STAND_IN_NAME.sub(r"\1", " ".join(line.split()).rstrip("."), count=1)


@contextlib.contextmanager
def _native_stderr_captured():
    """Collect the lines that C libraries (libtiff, libmpg123) write straight to file descriptor 2 while
    decoding, into the list this yields, instead of letting them reach stderr beside vqcodec's own line.

    In the main thread only: file descriptor 2 is the whole process's, and two threads redirecting it
    at once (training's batch workers reading TIFFs) could leave it pointing at a deleted file."""
    import sys
    import tempfile

    lines: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lines
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield lines
        return
    with tempfile.TemporaryFile() as capture:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += [_native_line(line) for line in
                      capture.read(1 << 16).decode("utf-8", "replace").splitlines() if line.strip()]


class _WarningRouter:
    """The one change to the process's warnings that warnings_recorded makes while any thread records: every
    warning shown ("always"), to the list of its thread's innermost recording block, or to the showwarning there
    was before for a thread in none. Made by the first block to begin and undone by the last to end."""

    def __init__(self):
        self.lock, self.local, self.blocks, self.saved = threading.Lock(), threading.local(), 0, None

    def enter(self, caught: list, ignore: tuple) -> None:
        with self.lock:
            if not self.blocks:
                self.saved = warnings.showwarning, warnings.filters[:]
                warnings.simplefilter("always")
                warnings.showwarning = self.show
            self.blocks += 1
        self.local.__dict__.setdefault("blocks", []).append((caught, ignore))

    def leave(self) -> None:
        self.local.blocks.pop()
        with self.lock:
            self.blocks -= 1
            if not self.blocks:
                show, filters = self.saved
                if warnings.showwarning == self.show:  # else another has replaced it since: theirs stays
                    warnings.showwarning = show
                warnings.resetwarnings()  # and the registries of warnings shown once go stale, as catch_warnings leaves them
                warnings.filters.extend(filters)

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        blocks = getattr(self.local, "blocks", None)
        if not blocks:
            self.saved[0](message, category, filename, lineno, file, line)
        elif not issubclass(category, blocks[-1][1]):
            blocks[-1][0].append(warnings.WarningMessage(message, category, filename, lineno, file, line))


_WARNING_ROUTER = _WarningRouter()


@contextlib.contextmanager
def warnings_recorded(ignore: tuple = ()):
    """The warnings this thread raises while the block runs (each one, as it comes; none of the categories in
    `ignore`), in the list this yields, where warnings.catch_warnings(record=True) gave every thread's. That
    swaps the process's filters and showwarning for the block's and back, so that two threads at once
    (training's batch workers reading photos) put back what the other had swapped in: a warning printed raw,
    the filters left changed, or every later warning sent to a list no one read."""
    caught: list = []
    _WARNING_ROUTER.enter(caught, ignore)
    try:
        yield caught
    finally:
        _WARNING_ROUTER.leave()


# What Pillow's warnings that say nothing to the reader of an image mean: a directory of EXIF data (or of a TIFF's
# tags) whose entry gives data past the end of what holds it, which Pillow leaves out
PILLOW_WARNING_REASONS = {"Truncated File Read": "its metadata (EXIF or TIFF tags) is cut short or damaged"}


def _warn_once_each(caught: list, where: str) -> None:
    """Issue Pillow's warnings on reading an image (the same one comes from opening and transposing it)
    as one ImageReadWarning each, naming the image, and any others as they were."""
    said = set()
    for item in caught:
        if item.category is not UserWarning:  # Pillow's are plain UserWarnings
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
        elif str(item.message) not in said:
            said.add(str(item.message))
            reason = " ".join(str(item.message).split()).rstrip(".")
            reason = PILLOW_WARNING_REASONS.get(reason, reason)
            warnings.warn(ImageReadWarning(f"{where}: {reason}; read past it"), stacklevel=caller_stacklevel())


def image_to_planes(image) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Split a Pillow image into uint8 RGB (h, w, 3), its mode code and a uint8 alpha plane or None."""
    image = with_standard_sixteen_bit(image)
    _check_transparency(image)
    if image.mode in ("La", "RGBa"):  # premultiplied alpha, which only images made in memory have
        image = image.convert(image.mode.upper())
    if image.mode in _FULL_SCALE and _holds_eight_bits(image):
        image = image.convert("L")  # 0-255 values are 8-bit grey: scaled from 65535 (or 1.0), white was level 1
    if image.mode in _FULL_SCALE:
        _check_deep_range(image)
    mode = image.mode
    if mode == "P" and (with_alpha := _palette_alpha(image)) is not None:
        mode, image = "P;transparency", with_alpha
    elif mode == "PA":
        image = image.convert("RGBA")
    else:
        image = _transparent_colour_as_alpha(image)
        mode = image.mode
    if mode not in IMAGE_MODES:
        raise VQCodecError(f"unsupported image mode {mode}")
    if image.width < 1 or image.height < 1:
        raise VQCodecError("image has zero width or height")
    alpha = None
    if mode in ALPHA_MODES:
        alpha = np.asarray(image.getchannel("A"))
    if mode in _SIXTEEN_BIT:
        rgb = np.empty((image.height, image.width, 3), dtype=np.uint8)
        for top, grey in _deep_grey_strips(image):
            rgb[top:top + grey.shape[0]] = grey[:, :, None]
    elif mode in ("L", "1", "LA"):
        rgb = np.repeat(np.asarray(image.convert("L"))[:, :, None], 3, axis=2)
    else:
        rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb), IMAGE_MODES[mode], alpha


def _palette_alpha(image):
    """A palette image with alpha as RGBA, or None where it has none: alpha from a transparent entry or
    entries (info["transparency"], as files give it), or from a palette of RGBA entries some pixels' alpha
    is below 255 in (what Image.quantize of RGBA and putpalette(..., "RGBA") make; it was dropped)."""
    if "transparency" not in image.info and getattr(image.palette, "mode", None) != "RGBA":
        return None
    rgba = image.convert("RGBA")
    return rgba if "transparency" in image.info or rgba.getchannel("A").getextrema()[0] < 255 else None


def with_standard_sixteen_bit(image):
    """`image`, or where it is 16-bit grey in the machine's byte order (I;16N, which Image.frombytes and
    Image.new make, and no file format holds) an I;16 image of the same values, its info kept: Pillow
    converts I;16N to other modes by clipping at 255, and a byte order is not a mode to restore elsewhere."""
    from PIL import Image

    if image.mode != "I;16N":
        return image
    standard = Image.frombytes("I;16", image.size, np.asarray(image).astype("<u2").tobytes())
    standard.info = dict(image.info)
    return standard


# Bytes a pixel that planes_to_image takes beside the decoded RGB, by mode: peak resident memory measured on
# 9 Mpx of noise with Pillow 13, rounded up. Palette modes are quantised (Pillow's median cut: 40 bytes a pixel).
REBUILT_PIXEL_BYTES = {"RGB": 5, "L": 6, "1": 7, "RGBA": 9, "LA": 10, "CMYK": 9, "YCbCr": 9, "RGBX": 9, "I;16": 9,
                       "I;16B": 9, "I;16L": 9, "I": 11, "F": 11, "P": 41, "PA": 41, "P;transparency": 31}
ALPHA_PIXEL_BYTES = 2  # an alpha plane, as inflated and as a Pillow band


def mode_shown(mode: str) -> str:
    """A Pillow mode as messages name it: '1' is '1-bit' ('the 9x9 1 image' reads as a count)."""
    return "1-bit" if mode == "1" else mode


def rebuilt_image_bytes(mode_code: int, width: int, height: int) -> int:
    """The memory planes_to_image takes for a `width` x `height` image of mode `mode_code` beside its decoded
    RGB, its alpha plane included."""
    mode = IMAGE_MODE_NAMES[mode_code]
    return width * height * (REBUILT_PIXEL_BYTES[mode] + (ALPHA_PIXEL_BYTES if mode in ALPHA_MODES else 0))


def planes_to_image(rgb: np.ndarray, mode_code: int, alpha: np.ndarray | None):
    """Rebuild a Pillow image of the original mode from decoded RGB and the lossless alpha plane."""
    from PIL import Image

    mode = IMAGE_MODE_NAMES[mode_code]
    if mode in _SIXTEEN_BIT:
        return _deep_grey_image(rgb, mode)
    image = Image.fromarray(rgb, "RGB")
    if mode == "1":  # the nearest of black and white, not a dither of the decoded grey (which turned 4 in 10 wrong)
        return image.convert("L").convert("1", dither=Image.Dither.NONE)
    if mode == "L":
        return image.convert(mode)
    if mode == "P;transparency":
        return _palette_with_exact_alpha(rgb, alpha)
    if mode == "PA":
        result = image.quantize(256, method=Image.Quantize.MEDIANCUT).convert("PA")
        result.putalpha(Image.fromarray(alpha, "L"))
        return result
    if mode in ALPHA_MODES:
        result = image.convert("L") if mode == "LA" else image.copy()
        result.putalpha(Image.fromarray(alpha, "L"))
        return result
    if mode == "P":
        return image.quantize(256, method=Image.Quantize.MEDIANCUT)
    return image.convert(mode) if mode != "RGB" else image


# The type a deep grey mode's values are built in (planes_to_image)
_DEEP_VALUE_TYPES = {"F": np.float32, "I": np.int32, "I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2"}


def _deep_grey_image(rgb: np.ndarray, mode: str):
    """The 16-bit, 32-bit or float grey image (`mode`) of decoded RGB: its grey scaled from 255 to 65535
    (F: 1.0), a strip of about DEEP_STRIP_PIXELS at a time, where the whole image's float64 grey took
    28 bytes a pixel (2.5 GB for the largest image) beside the RGB."""
    from PIL import Image

    height, width = rgb.shape[:2]
    values = np.empty((height, width), dtype=_DEEP_VALUE_TYPES[mode])
    rows = max(1, DEEP_STRIP_PIXELS // width)
    for top in range(0, height, rows):
        grey = np.asarray(Image.fromarray(rgb[top:top + rows], "RGB").convert("L"), dtype=np.float64) / 255.0
        values[top:top + rows] = grey if mode == "F" else np.round(grey * 65535.0)
    if mode in ("F", "I"):
        return Image.fromarray(values, mode)
    return Image.frombytes(mode, (width, height), values.tobytes())


def _holds_eight_bits(image) -> bool:
    """Whether a 32-bit grey (I) image's values all lie in 0-255, or a float (F) image's are all whole
    numbers in 0-255, some above 1: 8-bit grey held as 32 bits or as floats (Image.fromarray of int32
    or of float32 levels, convert("I"), a 32-bit TIFF of 8-bit levels), read as the L it is."""
    low, high = image.getextrema()
    if not (0 <= low and high <= 255):
        return False
    return image.mode == "I" or (high > 1 and all(np.array_equal(values, np.round(values))
                                                  for _, values in _deep_grey_values(image)))


def _check_transparency(image) -> None:
    """Refuse an image whose info["transparency"] is not what Pillow's files give its mode (set by hand,
    or copied from an image of another mode): Pillow's conversions raised bare errors on it."""
    if "transparency" not in image.info or image.mode not in {"P", "L", "1", "RGB"} | _SIXTEEN_BIT:
        return
    value = image.info["transparency"]
    if image.mode == "P":
        fits, wanted = (isinstance(value, (bytes, bytearray)) and len(value) <= 256) or (
            is_whole(value) and 0 <= value < 256), "a palette index 0-255 or bytes of alpha per palette entry"
    elif image.mode == "RGB":  # levels above 255 matched no pixel: a 16-bit PNG's colour, read as 8 bits once loaded
        fits, wanted = (isinstance(value, tuple) and len(value) == 3 and all(is_whole(v) and 0 <= v < 256 for v in value),
                        "an (r, g, b) tuple of levels 0-255 (a 16-bit PNG's, which Pillow reads as 8 bits: give "
                        "encode the file, or Image.open's image before it is loaded)")
    elif image.mode == "F":
        fits, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif image.mode in ("L", "1"):
        fits, wanted = is_whole(value) and 0 <= value < 256, "a level 0-255"
    else:
        fits, wanted = is_whole(value), "an int"
    if not fits:
        raise VQCodecError(f"the {mode_shown(image.mode)} image's transparency, {shown_cut(value, 40)}, is not {wanted}: "
                           "set image.info['transparency'] to one, or remove it")


def _transparent_colour_as_alpha(image):
    """A 1-bit, grey or RGB image with a transparent colour or grey value (PNG tRNS) as LA or RGBA,
    that colour's pixels transparent; other images as they are. 16-bit, 32-bit and float grey become
    8-bit LA (the codec keeps 8 bits of grey in any case)."""
    if "transparency" not in image.info:
        return image
    _check_transparency(image)
    if image.mode in ("L", "1", "RGB"):
        return image.convert("RGBA" if image.mode == "RGB" else "LA")
    if image.mode in _SIXTEEN_BIT:
        return _grey_with_transparent_value(image)
    return image


def _grey_with_transparent_value(image):
    """An LA image of 16-bit, 32-bit or float grey whose pixels of the transparent value are transparent."""
    from PIL import Image

    grey = np.empty((image.height, image.width), dtype=np.uint8)
    alpha = np.empty_like(grey)
    for top, strip in _deep_grey_strips(image, alpha):
        grey[top:top + strip.shape[0]] = strip
    return Image.merge("LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))


def _check_deep_range(image) -> None:
    """Refuse a float or 32-bit grey image of which over MAX_CLIPPED_SHARE of the pixels lie beyond
    its full scale (below 0, above 1.0 or 65535, where scaling to 8 bits would clip them), or any NaN
    or infinity: a float image of 0-255 values would be coded almost white. Fewer pixels beyond (the
    highlights of an HDR image) are clipped, with a warning that says how many."""
    full_scale = _FULL_SCALE[image.mode]
    low, high, beyond, nan = math.inf, -math.inf, 0, False
    for _, values in _deep_grey_values(image):
        nan = nan or bool(np.isnan(values).any())
        low, high = min(low, float(np.nanmin(values, initial=math.inf))), max(high, float(np.nanmax(values, initial=-math.inf)))
        beyond += int(np.count_nonzero(_beyond_full_scale(values, full_scale)))
    kind = "float" if image.mode == "F" else "32-bit"
    if nan:
        raise VQCodecError(f"{kind} image holds NaN (not a number) values, which are no grey level")
    if math.isinf(low) or math.isinf(high):
        raise VQCodecError(f"{kind} image holds infinite values, which are no grey level")
    pixels = image.width * image.height
    if beyond > MAX_CLIPPED_SHARE * pixels:
        raise VQCodecError(f"{kind} image values span {low:.6g} to {high:.6g}, and {beyond / pixels:.0%}"
                           f" of its pixels lie beyond 0 to {full_scale:g}, the range read as black to white: "
                           f"scale it to that range, or save it as 8 or 16 bits")
    if beyond:
        warnings.warn(ImageReadWarning(f"{kind} image values span {low:.6g} to {high:.6g}: {beyond} of its {pixels} "
                                       f"pixels lie beyond 0 to {full_scale:g}, the range read as black to white, "
                                       f"and are clipped to it"), stacklevel=caller_stacklevel())


def _beyond_full_scale(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Which values lie beyond 0 to `full_scale` by more than half an 8-bit level (NaN does not)."""
    return (values < -0.5 / 255 * full_scale) | (values > 255.5 / 255 * full_scale)


def _deep_grey_values(image):
    """(top row, float64 values) for strips of a 16-bit, 32-bit or float grey image of about
    DEEP_STRIP_PIXELS each: a strip's values are taken as float64 one strip at a time, never the whole image's."""
    rows = max(1, DEEP_STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        yield top, np.asarray(image.crop((0, top, image.width, min(image.height, top + rows))), dtype=np.float64)


def _deep_grey_strips(image, alpha: np.ndarray | None = None):
    """(top row, uint8 grey) for strips of a 16-bit, 32-bit or float grey image of about
    DEEP_STRIP_PIXELS each (_deep_grey_values), scaled to 8 bits (65535 or, for F, 1.0 to 255). With
    `alpha` (uint8 (height, width)), its rows are filled too: 0 where a pixel has the image's
    transparent value, else 255."""
    scale = 1.0 if image.mode == "F" else 65535.0
    for top, values in _deep_grey_values(image):
        if alpha is not None:
            alpha[top:top + len(values)] = np.where(values == image.info["transparency"], 0, 255)
        yield top, np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)


def _palette_with_exact_alpha(rgb: np.ndarray, alpha: np.ndarray):
    """A palette image of these colours whose palette holds every alpha value exactly (one coded
    from a palette image has at most 256): each alpha value gets its own palette entries, one for
    fully transparent pixels and for the others a share of the 256 in proportion to their pixels."""
    from PIL import Image

    levels, level_of, counts = np.unique(alpha.ravel(), return_inverse=True, return_counts=True)
    if len(levels) > 256:
        raise VQCodecError("a palette image's alpha plane holds more than 256 values")
    visible = counts * (levels > 0)
    spare = 256 - len(levels)
    shares = 1 + (visible * spare // max(1, visible.sum())) * (levels > 0)
    colours = rgb.reshape(-1, 3)
    indices = np.zeros(len(colours), dtype=np.uint8)
    palette = []
    for level, (value, share) in enumerate(zip(levels, shares)):
        where = np.flatnonzero(level_of == level)
        part = Image.fromarray(colours[where][None], "RGB").quantize(int(share), method=Image.Quantize.MEDIANCUT)
        part_indices = np.asarray(part)[0]
        entries = np.asarray(part.getpalette()[:3 * (int(part_indices.max()) + 1)], dtype=np.uint8).reshape(-1, 3)
        indices[where] = part_indices + len(palette)
        palette += [(*colour, value) for colour in entries]
    result = Image.fromarray(indices.reshape(alpha.shape), "P")
    result.putpalette(bytes(np.asarray(palette, dtype=np.uint8).ravel()), rawmode="RGBA")
    return result


def write_image(image, destination, format_hint: str | None = None) -> None:
    """Save a Pillow image to a path or binary stream; the format follows the file name or the hint (a hint
    that contradicts the name's extension is refused: GIF under a .png name).

    When the format cannot hold the image's mode (CMYK or float as PNG, 16-bit as JPEG, ...), the
    nearest mode it can hold is written instead: RGBA, RGB, I;16 or L, deep values scaled to it.
    Alpha is never dropped: a format that cannot hold it is refused. A path is written through a temporary
    file renamed into place (write_file); a stream is flushed (not closed) once written, and its write or flush
    that fails is refused naming it, as decode_audio_file names it (the command line's own streams are left to it:
    save_image).
    """
    try:
        save_image(image, destination, format_hint)
    except OSError as exc:  # of a stream: a path's is worded by write_file
        raise unwritable_stream(exc, output_name(destination)) from None


def save_image(image, destination, format_hint: str | None = None) -> None:
    """write_image, whose stream's errors are the caller's to word."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise VQCodecError(f"image is a Pillow image, not a {type(image).__name__}")
    check_destination(destination, "an image")
    check_format_name("format_hint", format_hint, "PNG")
    if format_hint:
        refuse_format_of_other_kind(format_hint, False, "format_hint", "write_image writes an image")
    refuse_folder_name(destination)
    named = output_name(destination)
    if format_hint and named is not None:
        refuse_format_against_name(format_hint, named, "format_hint")
    name = format_hint or (Path(named).suffix.lstrip(".") if named is not None else None)
    if not name:
        raise VQCodecError("cannot write image: no format given, and no file name with an extension to take it from")
    if name.lower() in NETPBM_VARIANTS:
        image = _as_netpbm_variant(image, name.lower())
    elif _format_name(name) == "SPIDER":
        image = _as_float_grey(image, name)
    if _format_name(name) == "GIF":
        image = _with_gif_alpha(image)
    data = _saved(image, _format_name(name), name.upper() if name.lower() in NETPBM_VARIANTS else None)
    if hasattr(destination, "write"):
        copy_whole(BytesIO(data), destination)  # a raw stream may take part of a write
        flush_written(destination)
    else:
        write_file(destination, lambda stream: stream.write(data))


TRIAL_SIDE = 16  # of the image check_image_output writes: room for each of the 256 alpha levels


def check_image_output(name: str, mode: str, width: int, height: int, alpha: np.ndarray | None = None) -> None:
    """Refuse, before an image is decoded, output that write_image would refuse whatever its colours: a
    format `name` (a Pillow format or an extension) that Pillow cannot write, or not in `mode` nor any
    mode it falls back to (XBM, Palm: black and white only), a side over what the format holds, colour
    in a grey Netpbm variant, or `alpha` (the image's alpha plane, which a .vq file holds losslessly)
    that the format cannot hold. `mode`: the image's mode, as IMAGE_MODES names it."""
    import io as _io

    _refuse_colour_in_grey_format(name, mode)
    _check_sides(_format_name(name), width, height)
    # What the format makes of alpha depends on its values alone: each of them, at least once.
    levels = np.unique(alpha) if alpha is not None else np.array([255], dtype=np.uint8)
    size = (height, width) if _format_name(name) == "ICNS" else (TRIAL_SIDE, TRIAL_SIDE)  # ICNS: 1024x1024 alone
    grey = np.full((*size, 3), 128, dtype=np.uint8)
    write_image(planes_to_image(grey, IMAGE_MODES[mode], np.resize(levels, size)), _io.BytesIO(), name)


# What the formats that hold grey alone hold: Netpbm variants, by their names, and SPIDER (electron microscopy)
GREY_ONLY_FORMATS = {"pbm": "black and white", "pgm": "grey", "pfm": "float grey", "spider": "float grey"}


def _refuse_colour_in_grey_format(name: str, mode: str) -> None:
    """Refuse colour (`mode`) in a format (or Netpbm variant) `name` that holds grey alone."""
    key = name.lower() if name.lower() in NETPBM_VARIANTS else (_format_name(name) or "").lower()
    if key in GREY_ONLY_FORMATS and mode not in GREY_MODES:
        instead = ".ppm, .pnm or .png" if key in NETPBM_VARIANTS else ".png or .tif"
        raise VQCodecError(f"{key.upper()} holds {GREY_ONLY_FORMATS[key]} only, and the image is in colour ({mode}): "
                           f"write {instead}")


def _as_float_grey(image, name: str):
    """`image` as float grey, 0.0 to 1.0, for a format `name` that holds nothing else (PFM, SPIDER): colour is
    refused, and visible alpha left for _saved to refuse."""
    _refuse_colour_in_grey_format(name, image.mode)
    return image if _has_visible_alpha(image) else _converted(image, "F")


def _check_sides(format_name: str | None, width: int, height: int) -> None:
    limit = _MAX_SIDE.get(format_name)
    if limit and max(width, height) > limit:  # refused before libjpeg prints its own line on stderr
        raise VQCodecError(f"{format_name} holds at most {limit} pixels a side, and the image is "
                           f"{width}x{height}: write .png or .tif")


def _as_netpbm_variant(image, variant: str):
    """`image` in the mode its Netpbm variant holds (Pillow writes the variant of the image's mode,
    whatever the name: a colour P6 file named .pgm). Grey levels may be reduced, as in GIF and JPEG:
    grey becomes black and white in PBM (the nearest of each, not dithered), 16-bit grey 8-bit in
    PPM. Channels are never dropped: a colour image is refused as PBM, PGM or PFM (Pillow writes
    PFM grey only), and visible alpha is left for _saved to refuse (grey with alpha included)."""
    from PIL import Image

    _refuse_colour_in_grey_format(variant, image.mode)
    if variant == "pfm":
        return _as_float_grey(image, variant)
    if _has_visible_alpha(image) or (variant == "pbm" and image.mode == "1"):
        return image
    if variant in ("ppm", "pnm"):  # PNM is PBM, PGM or PPM (Pillow would write float as PFM)
        return _converted(image, "RGB") if variant == "ppm" else _converted(image, "I;16") if image.mode == "F" else image
    if variant == "pbm":
        return _converted(image, "L").convert("1", dither=Image.Dither.NONE)
    return _converted(image, "I;16" if image.mode in _SIXTEEN_BIT else "L")


def _with_gif_alpha(image):
    """`image` with the alpha GIF holds, one transparent colour: alpha below 128 transparent, 128 and up
    opaque (Pillow's writer makes alpha 0 alone transparent, the rest opaque, and an image with no
    alpha 0 was refused). An image none of whose alpha is below 128 is opaque, in RGB (or L for grey)."""
    from PIL import Image

    if not _has_visible_alpha(image):
        return image
    grey = image.mode in ("LA", "La")
    rgba = image.convert("RGBA")
    opaque = np.asarray(rgba.getchannel("A")) >= 128
    if opaque.all():
        return rgba.convert("L" if grey else "RGB")
    rgba.putalpha(Image.fromarray(np.where(opaque, 255, 0).astype(np.uint8), "L"))
    return rgba


# Why a format that holds alpha cannot hold it as Pillow writes it (read back, the image has none)
_BMP_ALPHA_UNSEEN = (" as Pillow writes it (in the bytes of 32-bit pixels that the format leaves unused, where "
                     "readers, Pillow's among them, see none)")
_ALPHA_UNSEEN = {"BMP": _BMP_ALPHA_UNSEEN, "DIB": _BMP_ALPHA_UNSEEN}


def _saved(image, format_name: str | None, shown_as: str | None = None) -> bytes:
    """The bytes of `image` in `format_name` (named `shown_as` in errors, if given), in the first of its
    mode and the fallback modes that the format really holds: Pillow converts some modes on its own
    (16-bit to 8-bit by clipping, alpha dropped), so each try is read back and checked."""
    import io as _io

    from PIL import Image

    _check_sides(format_name, image.width, image.height)
    wants_alpha, deep = _has_visible_alpha(image), image.mode in _SIXTEEN_BIT
    options = {"sizes": [image.size]} if format_name == "ICO" else {}  # else Pillow writes 16x16..256x256 icons
    error = None
    for mode in dict.fromkeys([image.mode, *_fallback_modes(image, wants_alpha)]):
        candidate = image if mode == image.mode else _converted(image, mode)
        buffer = _io.BytesIO()
        try:
            candidate.save(buffer, format=format_name, **options)
        except (OSError, ValueError) as exc:  # written to memory: the format refused the mode
            # or writes nothing: a stub of Pillow's (HDF5, GRIB, BUFR, WMF), which said alpha was what it could not hold
            if "unknown file extension" in str(exc) or "save handler not installed" in str(exc):
                raise VQCodecError(f"cannot write image: {exc}") from None
            error = error or exc  # the image's own mode's: "cannot write mode LA as MSP", not the last fallback's
            continue
        except KeyError as exc:
            raise VQCodecError(f"cannot write image: unknown format {exc}") from None
        except OverflowError:  # a size field of the format's header (PCX: 16-bit bytes per line)
            raise VQCodecError(f"{format_name} cannot hold a {image.width}x{image.height} image: "
                               "write .png or .tif") from None
        buffer.seek(0)
        try:
            written = Image.open(buffer)
        # a format Pillow writes but cannot read back (PDF, Palm): nothing to check, but
        except (Image.DecompressionBombError, *PILLOW_READ_ERRORS):
            if wants_alpha and candidate.mode == "P" and "transparency" not in candidate.info:
                continue  # alpha in a palette's entries alone, which their writers left out: as a band (RGBA)
            return buffer.getvalue()
        with written:
            if written.size != image.size:  # ICO and ICNS scale to the sizes they hold
                raise VQCodecError(f"{format_name} cannot hold a {image.width}x{image.height} image at its size: "
                                   "write .png or .tif")
            if wants_alpha and not written.has_transparency_data:
                continue
            if deep and candidate.mode in _SIXTEEN_BIT and written.mode not in _SIXTEEN_BIT:
                continue
        return buffer.getvalue()
    if wants_alpha:
        how = _ALPHA_UNSEEN.get(format_name, "")
        raise VQCodecError(f"{shown_as or format_name or 'this format'} cannot hold the image's alpha channel{how}: "
                           f"write .png, .webp or .tif")
    raise VQCodecError(f"cannot write image: {error}")


def _converted(image, mode: str):
    """`image` in `mode`; 16-bit, 32-bit and float grey are scaled to its range, not clipped, and
    grey to float (F) as 0.0 to 1.0."""
    from PIL import Image

    if mode == "F" and image.mode in GREY_MODES:
        return Image.fromarray(_unit_grey(image).astype(np.float32), "F")
    if image.mode not in _SIXTEEN_BIT or mode not in ("L", "I;16", "RGB"):
        return image.convert(mode)
    values = _unit_grey(image)
    if mode in ("L", "RGB"):
        return Image.fromarray(np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8), "L").convert(mode)
    return Image.frombytes("I;16", image.size, np.clip(np.round(values * 65535.0), 0, 65535).astype("<u2").tobytes())


def _unit_grey(image) -> np.ndarray:
    """A grey image's values as float64, 0.0 black to 1.0 white (as planes_to_image scales them)."""
    if image.mode not in _SIXTEEN_BIT:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    return np.asarray(image, dtype=np.float64) / (1.0 if image.mode == "F" else 65535.0)


def _format_name(name: str | None) -> str | None:
    if name is None:
        return None
    return image_format_of_suffix("." + name.lower()) or name.upper()


# Suffixes of a format Pillow writes but knows no extension of (SPIDER's writer registers the one of the
# name it saves to, as it saves)
IMAGE_SUFFIX_FORMATS = {".spi": "SPIDER", ".spider": "SPIDER"}


def image_format_of_suffix(suffix: str) -> str | None:
    """The Pillow format a file name's suffix (".png", lower case) names, or None."""
    from PIL import Image

    Image.init()
    return Image.EXTENSION.get(suffix) or IMAGE_SUFFIX_FORMATS.get(suffix)


def _has_visible_alpha(image) -> bool:
    """Whether any pixel of the image is not fully opaque."""
    if not image.has_transparency_data:
        return False
    alpha = image.getchannel("A") if "A" in image.getbands() else image.convert("RGBA").getchannel("A")
    return alpha.getextrema()[0] < 255


def _fallback_modes(image, keep_alpha: bool) -> list[str]:
    """Modes to try after the image's own, nearest first. Alpha is never dropped, so images with
    visible alpha only try RGBA; fully opaque alpha may go."""
    if keep_alpha:
        return ["RGBA"]
    if image.mode in ("L", "1", "LA"):
        return ["L", "RGB"]  # RGB for formats without grey (QOI)
    if image.mode in _SIXTEEN_BIT:
        return ["I;16", "L", "RGB"]
    return ["RGB"]


def why_missing(path, missing: str) -> str | None:
    """Why `path` cannot be looked at: `missing` where there is nothing there, the system's reason where there is
    something it cannot reach (a link to itself: 'Too many levels of symbolic links'); None where it can."""
    try:
        os.stat(path)
    except OSError as exc:
        return missing if exc.errno == errno.ENOENT else exc.strerror
    return None


MAX_JSON_BYTES = 1 << 24  # a model's, a checkpoint's or a config's JSON file: records of a few KB


def open_regular_file(path, writable: bool = False):
    """A binary stream reading the file at `path` (and writing it too where `writable`: O_RDWR, "r+b"), a link
    followed, which must be a regular file: OSError for a
    FIFO, whose read waits for a writer that may never come, or a device (/dev/zero), whose read never ends. The
    path is checked before it is opened, so that a device is not opened (a tape rewinds, a watchdog starts), and
    the opened descriptor again (a FIFO or device put in the file's place between the two is refused unread); it
    is opened without waiting for a FIFO's writer or taking a terminal as the controlling one."""
    _refuse_other_than_regular(os.stat(path).st_mode, path)
    access = os.O_RDWR if writable else os.O_RDONLY
    descriptor = os.open(path, access | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        _refuse_other_than_regular(os.fstat(descriptor).st_mode, path)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "r+b" if writable else "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _refuse_other_than_regular(mode: int, path) -> None:
    """OSError for a file of `mode` that is not a regular file: IsADirectoryError for a folder."""
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe or a device)", str(path))


class JSONFileTooLarge(ValueError):
    """What read_json_file raises of a file for its size alone, before reading it."""


def read_json_file(path, limit: int | None = None, what: str = "a JSON file of its kind"):
    """The JSON value of the file at `path`, read only from a regular file of at most `limit` bytes (MAX_JSON_BYTES
    where None; OSError, ValueError otherwise, JSONFileTooLarge for the size; RecursionError for JSON nested too
    deep)."""
    limit = MAX_JSON_BYTES if limit is None else limit
    with open_regular_file(path) as stream:
        if os.fstat(stream.fileno()).st_size > limit:
            raise JSONFileTooLarge(f"{Path(path).name} takes more than {limit >> 20} MiB, far more than {what} holds")
        return json.loads(stream.read(limit + 1))
