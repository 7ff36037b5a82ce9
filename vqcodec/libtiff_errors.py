"""libtiff's error lines, taken by the thread whose decoding raised them.

libtiff's own error handler writes each error straight to file descriptor 2, the whole process's, which
io can redirect in the main thread alone: a TIFF read by a training batch worker printed its line raw. Once
`caught` has been entered, a handler of ours (through ctypes, set with libtiff's TIFFSetErrorHandler, in the
libtiff that Pillow's _imaging is linked with) gives each line to the innermost `caught` block of the
thread it comes from, and writes it as libtiff did for a thread in none."""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

LINE_BYTES = 1024  # of a formatted message; libtiff's are one line of well under this

# The handler's arguments: module, printf format, va_list. A va_list is a pointer, or (x86-64, AArch64) an array or a
# struct of more than 16 bytes, which the C calling conventions pass by reference: a pointer either way.
_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
_blocks = threading.local()
_setting_up = threading.Lock()
_state: dict = {}  # "handler" (kept alive while libtiff holds it) and "format" (vsnprintf), once set up


def _line(module: bytes | None, format_: bytes, arguments) -> str:
    text = ctypes.create_string_buffer(LINE_BYTES)
    _state["format"](text, LINE_BYTES, format_, arguments)
    message = text.value.decode("utf-8", "replace")
    return f"{module.decode('utf-8', 'replace')}: {message}" if module else message


def _on_error(module, format_, arguments) -> None:
    line = _line(module, format_, arguments)
    blocks = getattr(_blocks, "lines", None)
    if blocks:
        blocks[-1].append(line)
    else:
        os.write(2, f"{line}.\n".encode())  # as libtiff's own handler writes it


def _set_up() -> bool:
    """Put our handler in libtiff's place, once; False where that cannot be done (no libtiff symbol found)."""
    with _setting_up:
        if not _state:
            _state["handler"] = None
            try:
                from PIL import _imaging

                libtiff, libc = ctypes.CDLL(_imaging.__file__), ctypes.CDLL(None)
                format_ = libc.vsnprintf
                format_.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
                set_handler = libtiff.TIFFSetErrorHandler
            except (OSError, AttributeError, ImportError, TypeError):  # no libtiff in Pillow, no C library (Windows)
                return False
            set_handler.restype, set_handler.argtypes = ctypes.c_void_p, [_HANDLER_TYPE]
            _state["format"], _state["handler"] = format_, _HANDLER_TYPE(_on_error)
            set_handler(_state["handler"])
        return _state["handler"] is not None


@contextlib.contextmanager
def caught(lines: list[str]):
    """Collect into `lines` the errors libtiff reports in this thread while the block runs, each as
    "module: message" (libtiff's line without its full stop); where libtiff's handler cannot be replaced, they
    go to file descriptor 2 as before."""
    _set_up()
    blocks = _blocks.__dict__.setdefault("lines", [])
    blocks.append(lines)
    try:
        yield lines
    finally:
        blocks.pop()
