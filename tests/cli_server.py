"""Run `python -m vqcodec ARGS` in a fresh process without paying for `import torch` each time.

A command-line run spends about 1.7 s importing torch before it does anything, and the tests make
hundreds of them. This server imports vqcodec and its dependencies once, then forks one process per
run: the run gets its own pid, its own stdin/stdout/stderr (the caller's pipes, passed over a Unix
socket), environment, working folder and umask, and ends with the status and output that
`python -m vqcodec ARGS` would give. The caller (tests/conftest.py, `run_cli`) falls back to a plain
subprocess where that would not hold: an environment that changes what importing torch reads.

    python tests/cli_server.py SOCKET_PATH     # prints "ready" once it listens
"""
from __future__ import annotations

import atexit
import gc
import importlib
import io
import json
import os
import pkgutil
import signal
import socket
import struct
import sys

REQUEST_LENGTH = struct.Struct("<I")
NUMBER = struct.Struct("<q")


def preload() -> None:
    import numpy, PIL.Image, soundfile, soxr, torch  # noqa: E401,F401
    import vqcodec

    for module in pkgutil.iter_modules(vqcodec.__path__):
        if module.name != "__main__":
            importlib.import_module(f"vqcodec.{module.name}")


def receive_request(connection: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(connection, REQUEST_LENGTH.size, 3)
    (length,) = REQUEST_LENGTH.unpack(head)
    body = b""
    while len(body) < length:
        body += connection.recv(length - len(body))
    return json.loads(body), fds


def become_the_run(request: dict, fds: list[int]) -> None:
    """In the forked child: take the run's streams and surroundings, then run as `python -m vqcodec` does."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    # the encoding and errors a fresh interpreter gives its streams in this environment: the server's own
    # (surrogateescape for stdout in the C locale: strict, the default of open, stopped at a name's byte 0xff)
    sys.stdin = open(0, "r", closefd=False, encoding=sys.__stdin__.encoding, errors=sys.__stdin__.errors)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdout = standard_output(1, sys.__stdout__, unbuffered)
    sys.stderr = standard_output(2, sys.__stderr__, unbuffered)
    sys.argv = [str(os.path.join(os.path.dirname(sys.modules["vqcodec"].__file__), "__main__.py")), *request["args"]]

    from vqcodec.cli import main

    os._exit(exit_status(main))


def setup_failed(exc: BaseException) -> int:
    """The status of a run that could not take its streams or surroundings, with why on its stderr (the server's
    where the run's is not taken yet), rather than the error going on up into the server's loop."""
    try:
        os.write(2, could_not_start(exc).encode(errors="replace"))
    except OSError:
        pass
    return 1


def could_not_start(exc: BaseException) -> str:
    """The line a run that could not take its streams or surroundings writes on its stderr."""
    return f"cli_server: the run could not start: {type(exc).__name__}: {exc}\n"


def standard_output(fd: int, like, unbuffered: bool) -> io.TextIOWrapper:
    """Descriptor `fd`, 1 or 2, opened as a fresh interpreter opens stdout or stderr (`like`, the server's own,
    gives the encoding and errors): written through to the bare descriptor under PYTHONUNBUFFERED, else
    buffered, line by line on a terminal and for stderr always."""
    binary = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)
    return io.TextIOWrapper(binary, encoding=like.encoding, errors=like.errors, write_through=unbuffered,
                            line_buffering=not unbuffered and (fd == 2 or os.isatty(fd)))


def exit_status(main) -> int:
    """Run `main` and end as the interpreter would, short of tearing its modules down: that touches every
    object, which after a fork copies every page the server holds (about a second with torch)."""
    try:
        main()
        status = 0
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        if not isinstance(exit.code, (int, type(None))):
            print(exit.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a full disk: Python's flush at exit ends with 120
            status = 120
    return status


def handle(connection: socket.socket) -> None:
    """In a forked handler: fork the run, tell the caller its pid, wait for it and send its status and peak
    resident memory in bytes (which counts the pages it shares with this server)."""
    request, fds = receive_request(connection)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        connection.close()
        try:
            become_the_run(request, fds)
        except BaseException as exc:  # its surroundings could not be taken (a cwd that does not exist)
            os._exit(setup_failed(exc))
    for fd in fds:
        os.close(fd)
    connection.sendall(NUMBER.pack(pid))
    _, status, usage = os.wait4(pid, 0)
    try:
        connection.sendall(NUMBER.pack(os.waitstatus_to_exitcode(status)) + NUMBER.pack(usage.ru_maxrss * 1024))
    except OSError:  # a caller that timed the run out and killed it has gone: no one is left to tell
        pass
    os._exit(0)


def serve(path: str) -> None:
    preload()
    gc.freeze()  # the forked runs share the server's objects instead of copying them when they collect
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped without waiting for them
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(2)
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:  # ends with the test process that started it
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            continue
        connection.settimeout(None)
        if os.fork() == 0:
            listener.close()
            handle(connection)
        connection.close()


if __name__ == "__main__":
    serve(sys.argv[1])
