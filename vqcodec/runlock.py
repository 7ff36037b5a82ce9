"""One run at a time that writes in a folder: `vqcodec train` holds an exclusive flock on a lock file
in its --out folder while it runs, and `vqcodec fit-prior` (fit_prior_files, attach_prior) on the one
in the folder of the model files it writes. Two runs in one folder would overwrite each other's
checkpoint, log and model files (a --resume of a run still going, the same command started twice), and
two writes of one model could pair one's weights with the other's JSON (which names another prior).
`fit-prior` that writes its model elsewhere (--out) holds a shared flock in the folder it reads the model from, so
that no run replaces that model while it is read, between the fit and the copy's write.

The kernel releases a flock when its process ends, however it ends (kill -9 too), so a lock file a
killed run left behind locks nothing; a run that ends removes its own. Where the file system has no
flock (ENOLCK, EOPNOTSUPP: some network file systems), or the system none, the run goes on without
the lock."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from .errors import VQCodecError
from .wording import reason_of

try:
    import fcntl
except ImportError:  # not a POSIX system: no flock, and runs go on without the lock
    fcntl = None

LOCK_NAME = ".vqcodec-train.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: dict[str, int] = {}  # the folders this process holds, by real path: their lock files' descriptors
_read_held: dict[str, int] = {}  # those it holds a shared lock of, to read in them (folder_read_locked)


def lock_out(out: Path) -> None:
    """Take the lock of the folder `out` (which exists), or refuse with one line where another run
    holds it. Taking a lock this process holds already does nothing."""
    key = os.path.realpath(out)
    if key in _held or fcntl is None:
        return
    descriptor = _locked(out, fcntl.LOCK_EX)
    if descriptor is not None:
        _held[key] = descriptor


def _locked(out: Path, operation: int) -> int | None:
    """The descriptor of the lock file of the folder `out`, locked with `operation` (LOCK_EX to write in the folder,
    LOCK_SH to read in it), or a refusal in one line where another run holds a lock that conflicts; None where the
    file system has no flock or, to read, where the file cannot be made (a folder this user cannot write in, where
    no run of theirs writes either: the installed models')."""
    path = Path(os.path.realpath(out)) / LOCK_NAME
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if operation == fcntl.LOCK_SH:
                return None
            raise VQCodecError(f"cannot write {Path(out) / LOCK_NAME}: {reason_of(exc)}") from None
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise VQCodecError(f"{out} is in use by another run of vqcodec train or fit-prior") from None
        except OSError as exc:
            os.close(descriptor)
            if exc.errno in _UNSUPPORTED:
                return None
            raise VQCodecError(f"cannot lock {Path(out) / LOCK_NAME}: {reason_of(exc)}") from None
        if _names(path, descriptor):
            return descriptor
        os.close(descriptor)  # a run that ended removed the file between the open and the lock: again


def release_out(out: Path) -> None:
    """Remove the lock file of `out` and release its lock, where this process holds it."""
    descriptor = _held.pop(os.path.realpath(out), None)
    if descriptor is None:
        return
    try:  # removed while held, so that a run waiting on this file finds it gone (_names) and takes a new one
        (Path(os.path.realpath(out)) / LOCK_NAME).unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def folder_locked(folder: Path):
    """Hold the lock of `folder` (lock_out) while the block runs, and release it after, unless this process
    held it before: a training run's fit of its prior (fit_prior_files) leaves the run's lock held."""
    held_before = os.path.realpath(folder) in _held
    lock_out(folder)
    try:
        yield
    finally:
        if not held_before:
            release_out(folder)


@contextlib.contextmanager
def folder_read_locked(folder: Path):
    """Hold a shared lock of `folder` while the block reads files in it (fit-prior's model, written elsewhere), so that
    a run writing there (which holds its lock, lock_out) cannot replace them between its reads: one that does is
    refused in one line, as is such a run started meanwhile; readers share it. A folder this process holds a lock
    of already is read under that one."""
    key = os.path.realpath(folder)
    if key in _held or key in _read_held or fcntl is None:
        yield
        return
    descriptor = _locked(folder, fcntl.LOCK_SH)
    if descriptor is None:
        yield
        return
    _read_held[key] = descriptor
    try:
        yield
    finally:
        del _read_held[key]
        _let_go_of_shared(Path(key) / LOCK_NAME, descriptor)


def _let_go_of_shared(path: Path, descriptor: int) -> None:
    """Release a shared lock of the lock file at `path`, removing the file where no other process holds it (as a run
    that ends removes its own); one that opened it meanwhile finds it gone once it locks it (_names) and makes
    another."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _names(path, descriptor):
            path.unlink()
    except OSError:  # another reader holds it still, or the file is gone: it stays as it is
        pass
    finally:
        os.close(descriptor)


def _names(path: Path, descriptor: int) -> bool:
    """Whether `path` still names the file open at `descriptor`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
