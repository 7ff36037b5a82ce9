"""Files and streams, whatever media they hold: checks of the arguments that name them, how errors name them,
refusing what cannot be read or written (empty input, a closed or text stream, a folder, a FIFO or device where a
regular file is read), spooling a pipe into a temporary file, writing a file whole through a temporary one renamed into
place, and what C libraries write to stderr while they decode, caught."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import numbers
import os
import re
import stat
import sys
import threading
from io import RawIOBase, TextIOBase, UnsupportedOperation
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import VQCodecError
from .wording import plural, reason_of, setting, shown_cut, type_of

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
        with left_where_it_was(stream) as position:
            end = stream.seek(0, os.SEEK_END)
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


def appends(stream) -> bool:
    """Whether every write to a stream lands at its end (opened with 'a', or its descriptor O_APPEND), whatever
    it seeks to: a writer that seeks back to finish what it wrote (soundfile's WAV, FLAC and MP3 headers, the Ogg
    serials of SoundSink) would add those bytes at the end instead."""
    if "a" in str(getattr(stream, "mode", "")):
        return True
    try:
        return bool(fcntl.fcntl(stream.fileno(), fcntl.F_GETFL) & os.O_APPEND)
    except (AttributeError, OSError, ValueError):  # no descriptor: BytesIO and the like write where they seek
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


def is_fifo(path) -> bool:
    """Whether `path` is the path of a FIFO, links followed: a named pipe, or a pipe's /dev/fd/N (what <(...) gives);
    False for a stream."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def spooled_fifo(path):
    """What the FIFO at `path` (is_fifo) holds, read once into an anonymous temporary file as spooled_stream copies
    a stream that cannot seek, and named by `path` in its errors and warnings (input_name): libsndfile read a FLAC
    through a FIFO's path as 'flac decoder lost sync.', and a reader that opens its input again (a rate search) found
    it drained. Opening it waits for a writer, as reading it through its path did; one it cannot open is refused
    naming it (cannot_read_stream)."""
    try:
        pipe = open(path, "rb")
    except OSError as exc:
        raise cannot_read_stream(path, reason_of(exc)) from None
    with pipe:
        spool = spooled_stream(pipe)
    spool.raw.name = path
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
        raise cannot_read_stream(name, f"its read gives {type_of(block)}, not bytes (a binary stream's, opened "
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
            raise OSError(errno.EIO, f"its write returned {shown_cut(written, 40)} for {plural(len(view), 'byte')}, "
                                     "not a count of bytes taken")
        return written
    if isinstance(stream, RawIOBase):
        raise BlockingIOError(errno.EAGAIN, "it would block (a non-blocking stream)")
    return len(view)


def check_destination(destination, what: str) -> None:
    """Refuse where `what` ("audio", "an image") cannot be written: anything but a path or a binary stream (a
    text stream, a closed one), an empty path (Path("") is the current folder), and a folder's path (an existing
    folder, as the command line says it, or a name ending in /: refuse_folder_name), which decode_audio_file
    refused as a name of no audio format ('give a format_hint'), and given one, as it could not write it."""
    if isinstance(destination, TextIOBase):
        raise VQCodecError(f"{what} is written to a binary stream, not a text one (open the file with 'wb')")
    if not isinstance(destination, (str, Path)) and not callable(getattr(destination, "write", None)):
        raise VQCodecError(f"{what} is written to a path or a binary stream, not {type_of(destination)}")
    if getattr(destination, "closed", False) is True:  # write_image's write raised ValueError, 'write to closed file'
        raise cannot_write_stream(output_name(destination), "it is closed")
    if isinstance(destination, str) and not destination:
        raise VQCodecError("the path of the output is empty")
    refuse_a_folder(destination)


def check_source(source, what: str, paths: tuple = (str, Path),
                 bytes_hint: str = "io.BytesIO(data) is a stream of a file's bytes") -> None:
    """Refuse what `what` ("audio", "an image") cannot be read from: anything but a path (one of `paths`) or a binary
    stream, such as bytes (told `bytes_hint`), None or an int, whose read was a bare AttributeError, and a text
    stream (refuse_text_stream)."""
    refuse_text_stream(source)
    if not isinstance(source, paths) and not callable(getattr(source, "read", None)):
        hint = f" ({bytes_hint})" if isinstance(source, (bytes, bytearray)) else ""
        raise VQCodecError(f"{what} is read from a path or a binary stream, not {type_of(source)}{hint}")


def check_format_name(name: str, value, example: str) -> None:
    """Refuse a format or subtype name (format_hint=, subtype=) that is not a str, such as `example`."""
    if value is not None and not isinstance(value, str):  # were AttributeErrors and TypeErrors
        raise VQCodecError(f"{name} is a name such as {example} (a str), not {shown_cut(value, 40)}")


def refuse_a_folder(path) -> None:
    """Refuse a single file's output that is a folder, or whose name is a folder's (refuse_folder_name)."""
    if isinstance(path, (str, Path)) and Path(path).is_dir():
        raise VQCodecError(f"{path}: is a directory")
    refuse_folder_name(path)


def refuse_folder_name(path) -> None:
    """Refuse a single file's output whose name ends in / (a folder's), which Path() drops: "out.wav/" wrote
    a file "out.wav"."""
    if isinstance(path, str) and path.endswith(("/", os.sep)):
        raise VQCodecError(f"{path}: {'not a directory' if Path(path).exists() else 'no such directory'} "
                           "(a single file's output is a file name)")


def refuse_existing_output(path, replace: bool) -> None:
    """Refuse an output file that exists unless `replace` (a FIFO or device excepted: it is written into), a folder
    where it must go, or a single file's name that ends in / (refuse_folder_name): checked before the work that
    makes it, as well as when it is written, so that a refusal costs nothing. A descriptor's name (/dev/fd/N) must
    be of an open descriptor."""
    descriptor = descriptor_named(path)
    if descriptor is not None:  # written into, where the shell's redirection chose to write
        try:
            os.fstat(descriptor)
        except OSError:
            raise VQCodecError(f"{path}: file descriptor {descriptor} is not open") from None
        return
    refuse_a_folder(path)
    if os.path.lexists(path) and not replace and not is_stream_file(path):  # a dangling link too
        raise VQCodecError(setting(f"{path} exists; pass --force to overwrite it",
                                   f"{path} exists; pass replace=True to overwrite it"))


def write_file(path, write, replace: bool = True) -> None:
    """Call write(stream) into a temporary file beside `path`, then rename it onto `path`: a failure
    leaves nothing behind, and readers never see half a file. A FIFO or device (is_stream_file), and
    a descriptor's name (descriptor_named), get the finished output written into them instead. A
    symbolic link to a file is written through: the file it names is replaced, and the link stays.
    With replace=False a file at `path` is never replaced, even one that another process wrote while
    this one ran (move_into_place)."""
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


@contextlib.contextmanager
def left_where_it_was(stream):
    """Where `stream` (one that can seek) is, yielded; the block may read it and seek it anywhere, and it is put back
    there after, whether the block ends or raises. Its tell's error is the caller's, as is its seek's back."""
    position = stream.tell()
    try:
        yield position
    finally:
        stream.seek(position)


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
        with left_where_it_was(self.stream):
            return self.stream.seek(0, os.SEEK_END)


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


# The name Pillow gives libtiff for every file, which libtiff's messages begin with, or give after the name of the
# function that raised them ("_TIFFVSetField: tempfile.tif: Bad value 3 for ..."): no file of the user's
LIBTIFF_STAND_IN_NAME = re.compile(r"(^|: )tempfile\.tif: ")


def _native_line(line: str) -> str:
    return LIBTIFF_STAND_IN_NAME.sub(r"\1", " ".join(line.split()).rstrip("."), count=1)


@contextlib.contextmanager
def native_stderr_captured():
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


def through_spool(stream, write: Callable, where: str | None = None) -> None:
    """Call write(spool) into an anonymous temporary file, then copy what it wrote into a stream that
    cannot seek, or a raw one: a failure writes nothing to the stream, and long output never sits in memory.
    `where`: the stream's name for its errors, if it has one. The spool's own failures (room, EIO) are named as its,
    with its folder (TemporarySpool)."""
    with TemporarySpool("a stream that cannot seek, or a raw one, is written through one") as spool:
        write(spool)
        spool.seek(0)
        try:
            copy_whole(spool, stream)
            flush_written(stream)
        except (OSError, ValueError) as exc:
            raise unwritable_stream(exc, where) from None
