"""One run at a time that writes in a folder: `vqcodec train` holds an exclusive flock on a lock file
in its --out folder while it runs, and `vqcodec fit-prior` (fit_prior_files, attach_prior) on the one
in the folder of the model files it writes. Two runs in one folder would overwrite each other's
checkpoint, log and model files (a --resume of a run still going, the same command started twice), and
two writes of one model could pair one's weights with the other's JSON (which names another prior).

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


def lock_out(out: Path) -> None:
    """Take the lock of the folder `out` (which exists), or refuse with one line where another run
    holds it. Taking a lock this process holds already does nothing."""
    key = os.path.realpath(out)
    if key in _held or fcntl is None:
        return
    path = Path(key) / LOCK_NAME
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise VQCodecError(f"cannot write {Path(out) / LOCK_NAME}: {reason_of(exc)}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise VQCodecError(f"{out} is in use by another run of vqcodec train or fit-prior") from None
        except OSError as exc:
            os.close(descriptor)
            if exc.errno in _UNSUPPORTED:
                return
            raise VQCodecError(f"cannot lock {Path(out) / LOCK_NAME}: {reason_of(exc)}") from None
        if _names(path, descriptor):
            _held[key] = descriptor
            return
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


def _names(path: Path, descriptor: int) -> bool:
    """Whether `path` still names the file open at `descriptor`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
