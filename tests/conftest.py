"""Shared fixtures: tiny untrained models, sample `.vq` files and helpers to craft and run things.

Every model here is tiny and untrained, built once per session, so the tests exercise the codec's
plumbing (container, blocks, resampling, CLI) in seconds. The quality of the shipped models is
tested separately (tests/test_audio.py, skipped while they are not there).
"""
from __future__ import annotations

import atexit
import errno
import io
import json
import os
import pty
import shutil
import signal as signals  # `signal` is a fixture's name here
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch

from vqcodec import Codec, entropy
from vqcodec import format as vqformat
from vqcodec.config import AudioConfig
from vqcodec.streams import EMPTY_WRITES_ALLOWED
from vqcodec.modelfile import compute_model_id, read_model_files, save_model, write_model_files
from vqcodec.models import VQVAE

from cli_server import could_not_start

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN = REPO_ROOT / "tests" / "data" / "golden"
K = 16  # codebook size of the synthetic codes and of the golden models

# Tiny models gain nothing from several threads, and on a busy machine OpenMP threads waiting on
# each other make them many times slower.
torch.set_num_threads(1)

TINY_AUDIO = dict(base_channels=4, strides=(2, 4), res_blocks=1, latent_dim=8, num_codebooks=4,
                  codebook_size=16, context_frames=16)


def traced_peak(call):
    """Run call() and return (its result, the peak bytes Python allocated meanwhile, by tracemalloc)."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def shared_channel_file(codec, channels: int, quality: int, frames: int, chunk_frames: int = 500) -> bytes:
    """A fixed-width file of `channels` channels that share all-zero codes: few bytes, many codes."""
    chunks = [bytes([vqformat.LAYOUT_SHARED]) + entropy.pack_fixed(np.zeros((1, quality, b - a), np.int64),
                                                                   codec.codebook_size)
              for a, b in ((a, min(frames, a + chunk_frames)) for a in range(0, frames, chunk_frames))]
    header = vqformat.Header(kind=vqformat.KIND_AUDIO, coding=vqformat.CODING_FIXED, quality=quality,
                             model_id=codec.model_id, prior_id=0, sample_rate=codec.sample_rate,
                             length=frames * codec.hop, channels=channels, chunk_frames=chunk_frames,
                             flags=vqformat.FLAG_SHARED_CHANNELS)
    return vqformat.build_file(header, chunks)


def make_tiny_model(folder: Path, name: str, seed: int, **overrides) -> Path:
    """Build an untrained tiny audio VQ-VAE with a fixed seed and save it as folder/name.safetensors."""
    torch.manual_seed(seed)
    cfg = AudioConfig(**{**TINY_AUDIO, **overrides})
    model = VQVAE(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(model, folder / f"{name}.safetensors")


def overflowing_model(source: Path, out: Path, network: str) -> Path:
    """A copy of the model at `source` at `out` whose `network` ("encoder" or "decoder") has weights of absurd size,
    finite (1e30, which loading takes), under its own id; without the source's prior, whose id names the source's."""
    return scaled_model(source, out, lambda name: name.startswith(f"{network}.") and name.endswith("weight"), 1e30)


def scaled_model(source: Path, out: Path, scaled: Callable[[str], bool], factor: float) -> Path:
    """A copy of the model at `source` at `out` whose tensors that `scaled` takes by name are multiplied by `factor`,
    under its own id; without the source's prior, whose id names the source's."""
    meta, tensors = read_model_files(source)
    tensors = {name: tensor.float() * factor if scaled(name) else tensor
               for name, tensor in tensors.items() if not name.startswith("prior.")}
    meta = {key: value for key, value in meta.items() if key != "prior"}
    return write_model_files(out, {**meta, "model_id": compute_model_id(meta["config"], tensors)}, tensors)


@pytest.fixture(scope="session", autouse=True)
def stops_not_ignored():
    """Ctrl-C and SIGHUP as a terminal's shell gives them to the suite and the processes it starts, where it
    was started with them ignored (a background job of a script ignores SIGINT, nohup SIGHUP): the tests of
    how a stop ends a command then failed ('DID NOT RAISE KeyboardInterrupt', a child that slept through
    SIGHUP), though the commands were right to keep the ignoring they inherited."""
    defaults = {signals.SIGINT: signals.default_int_handler, signals.SIGHUP: signals.SIG_DFL}
    ignored = [number for number in defaults if signals.getsignal(number) is signals.SIG_IGN]
    for number in ignored:
        signals.signal(number, defaults[number])
    yield
    for number in ignored:
        signals.signal(number, signals.SIG_IGN)


# ---------------------------------------------------------------- models

@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """Tiny audio model at 16 kHz, hop 8, 4 codebooks of 16, alone in its folder."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    """Same architecture as tiny, another seed: another model id."""
    return make_tiny_model(tmp_path_factory.mktemp("other_model"), "other", seed=1)


@pytest.fixture(scope="session")
def codec(tiny_model_path) -> Codec:
    return Codec.load(str(tiny_model_path))


@pytest.fixture(scope="session")
def other_codec(other_model_path) -> Codec:
    return Codec.load(str(other_model_path))


@pytest.fixture(scope="session")
def bighop_model_path(tmp_path_factory) -> Path:
    """Tiny model at 8 kHz with a hop of 32 samples: cheap on long audio."""
    return make_tiny_model(tmp_path_factory.mktemp("bighop_model"), "bighop", seed=2,
                           sample_rate=8000, strides=(4, 8), context_frames=8)


@pytest.fixture(scope="session")
def bighop_codec(bighop_model_path) -> Codec:
    return Codec.load(str(bighop_model_path))


# ---------------------------------------------------------------- media

def make_signal(channels: int, samples: int, rate: int, seed: int = 0) -> np.ndarray:
    """A sine chord plus a little noise, float32 (channels, samples), peak below 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    rows = []
    for c in range(channels):
        tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.1 * np.sin(2 * np.pi * 1234 * t)
        rows.append(tone + 0.02 * rng.standard_normal(samples))
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="session")
def signal():
    return make_signal


@pytest.fixture(scope="session")
def small_vq(codec) -> bytes:
    """A small valid file: 7 mono samples at 16 kHz, quality 2 (one chunk)."""
    return codec.encode_audio(make_signal(1, 7, 16000), 16000, 2)


@pytest.fixture(scope="session")
def two_chunk_vq(codec) -> bytes:
    """A valid file of two chunks: 0.3 s stereo at 16 kHz (600 frames at hop 8), quality 4."""
    return codec.encode_audio(make_signal(2, 4800, 16000), 16000, 4)


# ---------------------------------------------------------------- crafting files

def header_fields(data: bytes) -> dict:
    """The header fields of `data` without any validation (CRC, bounds)."""
    fields = vqformat._HEADER.unpack_from(data)
    names = ["magic", "version", "kind", "coding", "quality", "model_id", "prior_id", "sample_rate", "length",
             "width", "height", "channels", "mode", "flags", "chunk_frames", "chunk_count"]
    return dict(zip(names, fields))


def with_header(data: bytes, **changes) -> bytes:
    """`data` with header fields changed and the header CRC recomputed, so only the field checks can reject it."""
    fields = header_fields(data)
    unknown = set(changes) - set(fields)
    assert not unknown, unknown
    fields.update(changes)
    body = vqformat._HEADER.pack(*fields.values())
    return body + struct.pack("<I", zlib.crc32(body)) + data[vqformat.HEADER_SIZE:]


def fix_header_crc(data: bytes) -> bytes:
    """Recompute the header CRC of arbitrary (possibly edited) bytes."""
    data = bytes(data)
    body = data[:vqformat.HEADER_SIZE - 4]
    return body + struct.pack("<I", zlib.crc32(body)) + data[vqformat.HEADER_SIZE:]


@pytest.fixture(scope="session")
def craft():
    return SimpleNamespace(header_fields=header_fields, with_header=with_header, fix_header_crc=fix_header_crc)


# ---------------------------------------------------------------- running the CLI

def terminal_screen(shown: str) -> list[str]:
    """The lines a terminal (of lines wide enough) shows once `shown` is written to it: a '\\r' goes back to
    the start of the line, and what follows writes over what is there."""
    lines = []
    for line in shown.split("\n"):
        screen = ""
        for part in line.split("\r"):
            screen = part + screen[len(part):]
        lines.append(screen.rstrip())
    return lines


def terminal_moments(shown: str) -> list[list[str]]:
    """terminal_screen at each moment a line has been written in place (after each '\\r' that ends a line)."""
    return [terminal_screen(shown[:end + 1]) for end, char in enumerate(shown) if char == "\r"]


class PanicException(BaseException):
    """What pyo3 (safetensors' Rust code) raises where a Python object it makes cannot be allocated (named as pyo3's,
    which vqcodec tells by its name)."""


class Terminal(io.StringIO):
    """stderr as a terminal shows it: isatty, and `screen` what it shows (terminal_screen)."""

    def isatty(self):
        return True

    def screen(self) -> list[str]:
        return terminal_screen(self.getvalue())


def on_terminal(*args) -> tuple[int, str]:
    """Run `python -m vqcodec ARGS` (as start_cli) with stderr a terminal (a pty) and stdout /dev/null; its exit
    status and what it wrote to the terminal (terminal_shown)."""
    main, terminal = pty.openpty()
    try:
        code = start_cli(*args, stdout=subprocess.DEVNULL, stderr=terminal).wait(timeout=900)
    finally:
        os.close(terminal)
    return code, terminal_shown(main)


def terminal_shown(main: int) -> str:
    """What was written to a pty whose terminal side is closed, read from its `main` side to the end (one read may
    give part of it), which is then closed; the terminal's line ends, '\\r\\n', as '\\n' ('\\r' alone kept)."""
    shown = b""
    try:
        while piece := os.read(main, 4096):
            shown += piece
    except OSError:  # EIO: nothing more, the terminal side closed
        pass
    finally:
        os.close(main)
    return shown.decode().replace("\r\n", "\n")


def run_python(*args, input: bytes | None = None, env: dict | None = None, cwd=None, timeout: float = 900,
               text: bool = False):
    """Run `python ARGS` in a subprocess from the repository root, with this checkout importable, no
    VQCODEC_MODEL_PATH and one OpenMP thread; returns CompletedProcess (bytes, or str with `text`)."""
    environment = _base_environment() | (env or {})
    return subprocess.run([sys.executable, *map(str, args)], input=input, capture_output=True,
                          cwd=cwd or REPO_ROOT, env=environment, timeout=timeout, text=text)


def run_cli(*args, input: bytes | None = None, env: dict | None = None, cwd=None, timeout: float = 900,
            text: bool = False):
    """Run `python -m vqcodec ARGS` the way run_python runs Python: in a process forked from a server that
    has imported torch already (tests/cli_server.py), or in a plain subprocess where the environment
    changes what that import reads."""
    environment = _base_environment() | (env or {})
    server = _server_for(environment)
    if server is None:
        try:
            result = run_python("-m", "vqcodec", *args, input=input, env=env, cwd=cwd and str(cwd), timeout=timeout)
        except OSError as exc:  # named by its str, as the server's run names it
            if not _is_the_working_folder(exc, cwd):
                raise
            result = subprocess.CompletedProcess([sys.executable, "-m", "vqcodec", *map(str, args)], 1, b"",
                                                 could_not_start(exc).encode(errors="replace"))
    else:
        result = server.run([str(a) for a in args], input, environment, str(cwd or REPO_ROOT), timeout)
    if text:
        result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def start_cli(*args, stdin=None, stdout=None, stderr=None, env=None, cwd=None):
    """Start `python -m vqcodec ARGS` as run_cli runs it, its streams those given (files, descriptors or
    subprocess.DEVNULL; None: this process's own), and return it unwaited: `.wait(timeout)` gives its status,
    as subprocess.Popen's does (a Popen where run_cli would take a plain subprocess)."""
    environment = _base_environment() | (env or {})
    server = _server_for(environment)
    if server is None:
        try:
            return subprocess.Popen([sys.executable, "-m", "vqcodec", *map(str, args)], stdin=stdin, stdout=stdout,
                                    stderr=stderr, cwd=str(cwd or REPO_ROOT), env=environment)
        except OSError as exc:
            if not _is_the_working_folder(exc, cwd):
                raise
            return subprocess.Popen([sys.executable, "-c", SAYING_IT_COULD_NOT_START, could_not_start(exc)],
                                    stdin=stdin, stdout=stdout, stderr=stderr, cwd=REPO_ROOT, env=environment)
    fds = [_descriptor(given, default) for given, default in ((stdin, 0), (stdout, 1), (stderr, 2))]
    try:
        return server.start([str(a) for a in args], fds, environment, str(cwd or REPO_ROOT))
    finally:
        for fd in fds:
            os.close(fd)


# A run in a plain subprocess whose working folder cannot be entered (one that does not exist): subprocess raised
# for it where the server's run fails in one line (cli_server.setup_failed); this stands in for it, failing so.
SAYING_IT_COULD_NOT_START = "import sys; sys.stderr.write(sys.argv[1]); sys.exit(1)"


def _is_the_working_folder(exc: OSError, cwd) -> bool:
    """Whether subprocess raised `exc` for the working folder `cwd` it was given."""
    return bool(cwd) and exc.filename == str(cwd)


def run_cli_on(*args, stdin=None, stdout=None, env=None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `python -m vqcodec ARGS` as start_cli does, on the stdin and stdout given (files, descriptors or
    subprocess.DEVNULL), with its stderr captured (bytes; stdout None)."""
    reader, writer = os.pipe()
    try:
        started = start_cli(*args, stdin=stdin, stdout=stdout, stderr=writer, env=env)
    finally:
        os.close(writer)
    errors = []
    collector = threading.Thread(target=lambda: errors.append(_read_all(reader)))
    collector.start()
    try:
        code = started.wait(timeout=timeout)
    finally:
        collector.join()
    return subprocess.CompletedProcess(["vqcodec", *map(str, args)], code, None, errors[0])


def cli_peak_rss(*args, stdin, stdout, timeout: float = 900) -> tuple[int, int]:
    """The exit status and peak resident memory, in bytes, of `python -m vqcodec ARGS` started as start_cli starts
    it. A run forked from the server counts the pages it shares with the server (torch's, as a fresh interpreter
    counts its own): compare such peaks with one another."""
    started = start_cli(*args, stdin=stdin, stdout=stdout)
    if isinstance(started, ForkedRun):
        return started.wait(timeout), started.peak_rss
    _, status, usage = os.wait4(started.pid, 0)
    started.returncode = os.waitstatus_to_exitcode(status)
    return started.returncode, usage.ru_maxrss * 1024


def _descriptor(given, default: int) -> int:
    """A descriptor of its own for a stream start_cli was given, which it closes once the run has it."""
    if given == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR)
    if given is None and default == 0:
        return _inherited_stdin()
    return os.dup(default if given is None else given.fileno() if hasattr(given, "fileno") else given)


def _server_for(environment: dict) -> CliServer | None:
    """The command-line server, where a run in `environment` may be forked from it: torch was imported there
    under the same environment (but for what torch sets itself, what vqcodec reads at run time and what the
    run takes up itself: TAKEN_BY_THE_RUN)."""
    server = _cli_server()
    if server is None or any(environment.get(k) != server.environment.get(k) for k in set(environment) | set(server.environment)
                             if not k.startswith(("VQCODEC_", "PYTEST_")) and k not in SET_BY_TORCH | TAKEN_BY_THE_RUN):
        return None
    return server


# Set in the test process by torch itself, to what a fresh interpreter would set it to: torch._dynamo, which
# the first optimiser imports, sets its cache folder. Every run after a test that trained went to a fresh
# interpreter, paying for importing torch again.
SET_BY_TORCH = {"TORCHINDUCTOR_CACHE_DIR"}
# Read by each run forked from the server as a fresh interpreter reads it (cli_server.standard_output).
TAKEN_BY_THE_RUN = {"PYTHONUNBUFFERED"}


def _base_environment() -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "VQCODEC_MODEL_PATH"}
    environment["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    environment["OMP_NUM_THREADS"] = "1"
    return environment


class CliServer:
    """Client of tests/cli_server.py: one server per test process, started on first use."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="vqcodec-cli-")
        self.socket_path = os.path.join(self.folder, "socket")
        self.environment = _base_environment()
        self.runs = 0
        # in the repository root: in a removed working folder, MKL, which importing torch loads, ends the process
        self.process = subprocess.Popen([sys.executable, str(REPO_ROOT / "tests" / "cli_server.py"), self.socket_path],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=self.environment,
                                        cwd=REPO_ROOT)
        if self.process.stdout.readline() != b"ready\n":
            raise RuntimeError("the command-line server did not start")
        atexit.register(self.stop)

    def stop(self):
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, args: list[str], input: bytes | None, environment: dict, cwd: str, timeout: float):
        deadline = time.monotonic() + timeout
        stdin_read, stdin_write = os.pipe() if input is not None else (_inherited_stdin(), None)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            forked = self.start(args, [stdin_read, out_write, err_write], environment, cwd, timeout)
        finally:
            for fd in (stdin_read, out_write, err_write):
                os.close(fd)
        outputs = {}
        readers = [threading.Thread(target=lambda fd=fd: outputs.__setitem__(fd, _read_all(fd))) for fd in (out_read, err_read)]
        if stdin_write is not None:
            readers.append(threading.Thread(target=_write_all, args=(stdin_write, input)))
        for reader in readers:
            reader.start()
        try:
            code = forked.wait(max(deadline - time.monotonic(), 0.001))
        finally:
            for reader in readers:
                reader.join()
        return subprocess.CompletedProcess([sys.executable, "-m", "vqcodec", *args], code, outputs[out_read], outputs[err_read])

    def start(self, args: list[str], fds: list[int], environment: dict, cwd: str, timeout: float = 60) -> ForkedRun:
        """Fork a run whose stdin, stdout and stderr are `fds` (the caller's still, to close)."""
        self.runs += 1
        request = json.dumps(dict(args=args, env=environment, cwd=cwd, umask=_current_umask())).encode()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(self.socket_path)
            socket.send_fds(connection, [struct.pack("<I", len(request))], fds)
            connection.sendall(request)
            connection.settimeout(timeout)
            pid = struct.unpack("<q", _receive(connection, 8))[0]
        except BaseException:
            connection.close()
            raise
        return ForkedRun(connection, pid, ["vqcodec", *args])


class ForkedRun:
    """A run forked by the command-line server, waited for as a subprocess.Popen is; once it ended, `peak_rss`
    is its peak resident memory in bytes."""

    def __init__(self, connection: socket.socket, pid: int, args: list[str]):
        self.connection, self.pid, self.args, self.returncode, self.peak_rss = connection, pid, args, None, None

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; past `timeout` it is killed and subprocess.TimeoutExpired raised."""
        if self.returncode is None:
            try:
                self.connection.settimeout(timeout)
                self.returncode, self.peak_rss = struct.unpack("<qq", _receive(self.connection, 16))
            except (socket.timeout, ConnectionError):
                os.kill(self.pid, signals.SIGKILL)
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            finally:
                self.connection.close()
        return self.returncode


def _inherited_stdin() -> int:
    try:
        return os.dup(0)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = connection.recv(size - len(data))
        if not part:
            raise ConnectionError("the command-line server hung up")
        data += part
    return data


def _read_all(fd: int) -> bytes:
    with open(fd, "rb") as stream:
        return stream.read()


def _write_all(fd: int, data: bytes) -> None:
    with open(fd, "wb") as stream:
        try:
            stream.write(data)
        except BrokenPipeError:
            pass


_SERVER: list = []


def _cli_server() -> CliServer | None:
    if _SERVER and _SERVER[0] is not None and _SERVER[0].process.poll() is not None:
        _SERVER[0].stop()
        _SERVER.clear()
    if not _SERVER:
        try:
            _SERVER.append(CliServer())
        except (OSError, RuntimeError):
            _SERVER.append(None)
    return _SERVER[0]


FILE_SIZE_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from vqcodec.cli import run
sys.exit(run(sys.argv[2:]))
"""


def run_cli_with_file_size_limit(max_bytes: int, *args, **options):
    """Run the command line as run_cli does, in a process that may write no file larger than `max_bytes`
    (RLIMIT_FSIZE): a write past that fails (EFBIG, "File too large") as one on a full disk does, and
    as root too, who may write to a read-only folder. (Python ignores the SIGXFSZ that comes with it.)"""
    return run_python("-c", FILE_SIZE_LIMITED, max_bytes, *args, **options)


@pytest.fixture(scope="session")
def cli():
    return run_cli


# ---------------------------------------------------------------- priors and models with a prior

def markov_plane(levels: int, rows: int, cols: int, seed: int, k: int = K) -> np.ndarray:
    """Codes with structure a prior can learn: each level follows its left neighbour and the coarser level."""
    rng = np.random.default_rng(seed)
    plane = np.zeros((levels, rows, cols), dtype=np.int64)
    for level in range(levels):
        for r in range(rows):
            for c in range(cols):
                if rng.random() < 0.6 and c > 0:
                    value = plane[level, r, c - 1]
                elif level > 0 and rng.random() < 0.6:
                    value = (plane[level - 1, r, c] * 3 + 1) % k
                else:
                    value = min(int(rng.geometric(0.3)) - 1, k - 1)
                plane[level, r, c] = value
    return plane


@pytest.fixture(scope="session")
def audio_prior():
    from vqcodec.prior import CodePrior

    planes = [markov_plane(4, 1, 300, seed)[:, 0] for seed in range(12)]
    return CodePrior.fit(planes, K, "audio", chunk=500)


@pytest.fixture(scope="session")
def image_prior():
    from vqcodec.prior import CodePrior

    planes = [markov_plane(3, 12, 10, seed) for seed in range(12)]
    return CodePrior.fit(planes, K, "image", chunk=16)


@pytest.fixture(scope="session")
def golden_audio_codec() -> Codec:
    """The committed tiny audio model with a prior (tests/make_golden.py). Tests that change its
    settings put them back."""
    return Codec.load(str(GOLDEN / "golden_audio.safetensors"))


@pytest.fixture(scope="session")
def golden_image_codec() -> Codec:
    return Codec.load(str(GOLDEN / "golden_image.safetensors"))


class WouldBlock(io.RawIOBase):
    """A non-blocking raw output stream whose every write would block (returns None); it fails the test, not hangs,
    where a writer keeps trying."""
    taken = None  # what each write returns

    def __init__(self, name: str | None):
        super().__init__()
        self.name, self.calls = name, 0

    def writable(self):
        return True

    def write(self, data):
        self.calls += 1
        assert self.calls < 100, f"copy_whole spun on writes that returned {self.taken}"
        return self.taken


class TakesNothing(WouldBlock):
    """A raw output stream whose every write takes no bytes (returns 0), as a user's raw wrapper might."""
    taken = 0


class Disk(io.RawIOBase):
    """A raw output stream onto a disk, named `name`, that can seek or not; `full`, every write fails as a full disk's
    (ENOSPC). Wrapped in io.BufferedWriter, as open(path, "wb") gives, what fits the buffer reaches it on a flush."""

    def __init__(self, name: str, seekable: bool, full: bool = False):
        super().__init__()
        self.name, self.can_seek, self.full, self.got = name, seekable, full, io.BytesIO()

    def writable(self):
        return True

    def seekable(self):
        return self.can_seek

    def seek(self, offset, whence=0):
        if not self.can_seek:
            raise io.UnsupportedOperation("seek")
        return self.got.seek(offset, whence)

    def tell(self):
        return self.got.tell()

    def write(self, data):
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.got.write(bytes(data))


class Stalling(io.RawIOBase):
    """A raw output stream that takes no bytes EMPTY_WRITES_ALLOWED - 1 writes in a row, then up to 100 bytes."""

    def __init__(self):
        super().__init__()
        self.got, self.calls = io.BytesIO(), 0

    def writable(self):
        return True

    def write(self, data):
        self.calls += 1
        if self.calls % EMPTY_WRITES_ALLOWED:
            return 0
        return self.got.write(bytes(data[:100]))
