import os
import sys

class VQCodecError(Exception):
    """An error caused by the user's input: reported as one line, without a traceback."""


class ClippingWarning(UserWarning):
    """Decoded audio above full scale clipped to +-1.0 by an output format that holds no more: the
    command line prints it as one warning line."""


class ImageReadWarning(UserWarning):
    """What reading an image file passed over: a fault that Pillow read past (corrupt EXIF data), the
    frames after the first of an animation, or an alpha channel that the image's codes leave out. The
    command line prints it as one warning line."""


class AudioReadWarning(UserWarning):
    """What reading an audio file passed over: damage that libmpg123, the MP3 decoder, reported and read
    past. The command line prints it as one warning line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C's KeyboardInterrupt is, so that the same
    clean-up runs (temporary files removed, a training run's checkpoint saved); SIGPIPE where training
    finds its progress display's pipe closed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch failing to allocate memory: its OutOfMemoryError on a GPU, a RuntimeError
    from its CPU allocator (told by name and message, so that this module needs no torch)."""
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """warnings.warn's stacklevel for the first caller outside vqcodec, called where warn is: a warning
    names the user's line that called the API, however many of the package's functions (and their
    lock) lie between; the outermost frame where the package itself runs (the command line)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
