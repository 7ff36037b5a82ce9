"""A folder of media as a folder of integer codes, for models trained on the codes: one int32 .npy
array per file, at the file's relative path, and a JSON manifest (what `vqcodec codes FOLDER OUT`
writes)."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from . import format as vqformat, memory
from .errors import VQCodecError
from .folders import (FolderReport, HeaderBytes, check_callbacks, check_file_list, checked_folder_path, folder_of,
                      mirrored_paths, say_stopped, warn_of_level)
from .registry import is_model_id
from .streams import (JSONFileTooLarge, MAX_JSON_BYTES, checked_flag, input_called, is_regular_stream,
                      open_regular_file, read_json_file, read_up_to, write_file)
from .wording import (kind_coded, kind_held, name_fields, not_its_codes, plural, reason_of, setting, shown, shown_cut,
                      type_of, valid_text)

MANIFEST = "codes.json"
MAX_MANIFEST_BYTES = 1 << 30  # read by listing_manifest and a resume: about 380 bytes a file, 2.8 million files
CODE_TYPE = np.dtype("<i4")  # what the .npy files hold
CONTENT_HASH = "file_blake2b"  # the key of codes.json that records an input's bytes (input_stamp)
NPY_PIECE_BYTES = 1 << 24  # of a .npy file read at a time (read_codes_npy)
# np.load's bound (max_header_size), checked before the header is read: numpy reads all that the header's length
# field announces, up to 4 GiB, before it checks its length. A header of codes takes about 120 bytes.
MAX_NPY_HEADER_BYTES = 10_000


def file_codes_writer(codec, data: bytes):
    """A function that writes the codes of a `.vq` file (Codec.read_codes) into a seekable binary
    stream as the int32 .npy file np.save writes, a block of chunks at a time: never held whole (a
    day of 64 channels at q8 is 8.8 GB of int32, from a file of 43 MB). The file is checked here,
    before anything is written."""
    header, shape, blocks = codec.code_blocks(data)
    return lambda stream: save_code_blocks(stream, shape, 2 if header.kind == vqformat.KIND_AUDIO else 1, blocks)


def save_codes(stream, codes: np.ndarray) -> int:
    """Codes into a binary stream as the .npy file of CODE_TYPE, little-endian on every machine, as
    save_code_blocks writes the codes of a .vq file; the stream's position after them (the file's size, written
    from its start)."""
    np.save(stream, np.asarray(codes).astype(CODE_TYPE), allow_pickle=False)
    return stream.tell()


def save_code_blocks(stream, shape: tuple, axis: int, blocks) -> None:
    """An int32 .npy of `shape` into a seekable `stream` from (first, block) pairs that each cover
    indices first.. along `axis`, together all of it: each row of a block goes to its place."""
    npy.write_array_header_1_0(stream, {"descr": npy.dtype_to_descr(CODE_TYPE), "fortran_order": False,
                                        "shape": tuple(shape)})
    start = stream.tell()
    rows, run, inner = math.prod(shape[:axis]), math.prod(shape[axis:]), math.prod(shape[axis + 1:])
    for first, block in blocks:
        for row, values in enumerate(block.reshape(rows, -1)):
            stream.seek(start + (row * run + first * inner) * CODE_TYPE.itemsize)
            stream.write(values.astype(CODE_TYPE).tobytes())
    stream.seek(0, 2)


def npy_header(stream, size: int | None, name: str):
    """The shape, order and type a .npy file's header gives, checked against the `size` bytes of the
    file where it is known."""
    not_npy = VQCodecError(f"{name}: not a NumPy .npy file (version 1, 2 or 3)")
    try:
        version = npy.read_magic(stream)
        # Version 3 is version 2 with a UTF-8 header (for non-ASCII field names, which codes lack), which
        # numpy writes when latin-1 cannot hold it; an integer array's header is ASCII, read alike.
        read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0,
                       (3, 0): npy.read_array_header_2_0}[version]
        length_field = read_up_to(stream, 2 if version == (1, 0) else 4, name)
    except Exception:
        raise not_npy from None
    length = int.from_bytes(length_field, "little")
    if length > MAX_NPY_HEADER_BYTES:
        raise VQCodecError(f"{name}: announces a .npy header of {plural(length, 'byte')}, more than the "
                           f"{MAX_NPY_HEADER_BYTES} np.load takes (one of codes takes about 120)")
    try:
        shape, fortran_order, dtype = read_header(io.BytesIO(length_field + read_up_to(stream, length, name)))
    except Exception:  # numpy's header parser raises many kinds (ValueError, SyntaxError, TokenError...)
        raise not_npy from None
    if dtype.hasobject:
        raise VQCodecError(f"{name}: an array of Python objects (pickles are refused)")
    if dtype.kind not in "iu":
        raise VQCodecError(f"{name}: codes must be integers, not {dtype}")
    if any(side < 0 for side in shape):
        raise VQCodecError(f"{name}: its header announces a negative size {shape}")
    count = math.prod(shape)
    if count == 0:  # numpy cannot make every such shape ((2**63, 0) is too large a dimension)
        raise VQCodecError(f"{name}: holds no codes (shape {shape})")
    if size is not None and count * dtype.itemsize != size - stream.tell():
        raise VQCodecError(f"{name}: its header announces {plural(count, 'value')} of "
                           f"{plural(dtype.itemsize, 'byte')}, the file holds {plural(size - stream.tell(), 'byte')}")
    return shape, fortran_order, dtype


def read_codes_npy(source, codec, **restore) -> np.ndarray:
    """The codes of a .npy file, for `codec.codes_to_file(codes, **restore)` (`restore`: its sample_rate, samples,
    width, height and gain), as `vqcodec pack` reads them: `source` is the file's path (a regular file), its bytes,
    or a binary stream read from where it is (a pipe too). Nothing is allocated before the header is checked (a
    header may claim any shape): against the bytes the file holds where that is known, the memory this process may
    use, and codec.check_codes_shape(shape, dtype, **restore). Then the values are read a piece at a time into
    codec.code_dtype (int16 for most models: a quarter of int64 codes), each checked to fit it: the file is never
    held whole. Arrays of anything but integers (pickles too) are refused. np.load reads a trusted file as well."""
    check_codec(codec, "check_codes_shape")
    if not isinstance(source, (str, os.PathLike)):
        return _read_codes_npy(_checked_npy_source(source), input_called(source), codec, restore)
    if not os.fspath(source):  # opened as no file: ': cannot read (No such file or directory)'
        raise VQCodecError("the path of the .npy file is empty")
    try:
        with open_regular_file(source) as stream:
            return _read_codes_npy(stream, str(source), codec, restore)
    except OSError as exc:
        raise VQCodecError(f"{source}: cannot read ({reason_of(exc)})") from None


def check_codec(codec, method: str) -> None:
    """Refuse (VQCodecError) a `codec` that has no `method`, one of Codec's: a model's name given for a Codec raised
    an AttributeError, or was not looked at where nothing called the method."""
    if not callable(getattr(codec, method, None)):
        raise VQCodecError(f"codec is a vqcodec Codec (Codec.load), not {type_of(codec)}")


def _checked_npy_source(source):
    """What read_codes_npy reads other than a path: bytes (a bytearray or memoryview too) or a binary stream; a text
    stream, or anything else (codes already loaded, None), refused, where each was 'not a NumPy .npy file' (an int
    'stdin: ...')."""
    if isinstance(source, io.TextIOBase):
        raise VQCodecError("a .npy file is read from a binary stream, not a text one (open the file with 'rb')")
    if not isinstance(source, (bytes, bytearray, memoryview)) and not hasattr(source, "read"):
        raise VQCodecError(f"a .npy file is given as a path, bytes or a binary stream, not {type_of(source)}"
                           + (" (codec.codes_to_file takes codes in memory)" if isinstance(source, np.ndarray) else ""))
    return source


def _read_codes_npy(source, name: str, codec, restore: dict) -> np.ndarray:
    """read_codes_npy of its bytes or an open stream, named `name` in errors."""
    given_bytes = isinstance(source, (bytes, bytearray, memoryview))
    stream = io.BytesIO(source) if given_bytes else source
    size = memoryview(source).nbytes if given_bytes else _regular_file_size(stream)
    shape, fortran_order, dtype = npy_header(stream, size, name)
    # a sparse file's size costs no disk
    memory.refuse_beyond(math.prod(shape) * np.dtype(codec.code_dtype).itemsize, memory.memory_bound(),
                         f"{name}: its header announces codes of")
    codec.check_codes_shape(shape, dtype, **restore)
    array = _narrowed(stream, shape, fortran_order, dtype, codec.code_dtype, codec.codebook_size, name)
    if size is None and stream.read(1):
        raise VQCodecError(f"{name}: holds more bytes than its header announces "
                           f"({plural(math.prod(shape), 'value')} of {plural(dtype.itemsize, 'byte')})")
    return array


def _regular_file_size(stream) -> int | None:
    """The size of the regular file `stream` reads; None for a pipe, FIFO, device or a stream of no descriptor."""
    return os.fstat(stream.fileno()).st_size if is_regular_stream(stream) else None


def _narrowed(stream, shape: tuple, fortran_order: bool, dtype, into, codebook_size: int, name: str) -> np.ndarray:
    """The values of a .npy file after its header, read into an array of type `into` a piece at a time."""
    order = "F" if fortran_order else "C"
    array = np.empty(shape, dtype=into, order=order)
    flat, low, high = array.reshape(-1, order=order), np.iinfo(into).min, np.iinfo(into).max
    piece = max(1, NPY_PIECE_BYTES // dtype.itemsize)
    for start in range(0, flat.size, piece):
        wanted = min(piece, flat.size - start) * dtype.itemsize
        raw = read_up_to(stream, wanted, name)
        if len(raw) < wanted:  # only a stream of unknown size can end early: a file's size was checked
            raise VQCodecError(f"{name}: its header announces {plural(flat.size, 'value')} of "
                               f"{plural(dtype.itemsize, 'byte')}, the stream ends after "
                               f"{plural(start * dtype.itemsize + len(raw), 'byte')} of them")
        values = np.frombuffer(raw, dtype)
        if values.min() < low or values.max() > high:
            bad = values.min() if values.min() < low else values.max()
            raise VQCodecError(f"{name}: holds {bad}, which is no code: codes are each an index below "
                               f"{codebook_size} or -1")
        flat[start:start + values.size] = values
    return array


def code_paths(folder: Path, out: Path, files: list[Path]) -> list[Path]:
    """Where the codes of each file go: its path under `folder`, under `out`, ending .npy (refused
    where the manifest, out/codes.json, would have to be a folder)."""
    return mirrored_paths(folder, out, files, lambda path: ".npy", also=(Path(out) / MANIFEST,))


def code_folder(codec, folder: Path, out: Path, files: list[Path], quality: int | None = None, log=None,
                replace: bool = True, on_warning=None, resume: bool = False, stopped_run: dict | None = None,
                progress=None, report: FolderReport | None = None) -> dict:
    """Write the codes of `files` (media under `folder`) to `out`, and the manifest; return the manifest.

    Codes are as `codec.media_to_codes` gives them (all levels unless `quality`; per-cell depth as
    `codec.depth_weight` says). The manifest holds the model id and codes id, quality, codebook size, the frame
    rate (or the stride in pixels) and axis order, and for each file its array's shape and the sample
    rate, length and level gain (or the width and height) that restore it, and the file's size,
    modification time and the hash of its bytes (input_stamp, taken before it is read); "skipped" lists the files
    that could not be coded, and why, those whose size, time or inode change time changed while they were read too
    (check_unchanged_since). A weight the codec cannot use (Codec.check_weights) raises VQCodecError before any
    file. A run stopped part way (Ctrl-C,
    SIGTERM, or any error it raises, such as MemoryError or one that `log` or `on_warning` raises) writes the
    manifest of the files it finished, with "stopped": true, then raises; one that could code no file writes no
    manifest (nor makes `out`), and returns the one it would have written. With replace=False a manifest that exists is
    refused before any file, and an output that exists (another run's, written while this one ran) is kept,
    and that file skipped. With resume=True the stopped run whose manifest is in `out` (stopped_run_manifest:
    of the same model, kind, quality and depth weight, else VQCodecError; `stopped_run`, where the caller has
    read it so, is checked alike and not read again) goes on: the files it finished, of the size, time and content it
    lists, whose array is still there, with the shape it lists, are kept, the others (those it skipped too)
    coded (its arrays and manifest replaced, whatever `replace` says), and one manifest of them all written, as a
    run that was not stopped writes it; a finished run's
    manifest is returned as it is, and nothing done. `log(line)` is told, once, how many files a resume keeps and
    how many it codes (resumed_line); every 100 files, `progress` (else `log`) how many of those it codes are done
    (coded or skipped), "coded 100/N files"; stopped by Ctrl-C or SIGTERM, the files it skipped (and those `report`
    sets aside), one line each in the order of their paths, as the summary of `vqcodec codes FOLDER` lists them, then
    what it wrote and how many files it did not code, "coded 2 files, 48256 bytes before the stop; 1 of 3 files not
    coded" (the bytes of the arrays, the kept ones' too), as a folder's encode says it (folders.say_stopped).
    `report`, a new folders.FolderReport where given, is told the arrays the manifest lists (written) and their
    bytes, as they were when each was kept or written, whatever becomes of them since, and the files skipped; the
    files its `set_aside` holds (those the caller left out of `files`, with why) a stop's lines name and count too.
    It holds the codec's lock, as Codec's encoding methods do: another thread's rate search on the codec sets trial
    depth weights on it.
    A recording coded above full scale, beyond the level gain's reach, gets one warning naming it, given to
    `on_warning(line)`, else a UserWarning (its codes are of its loud parts limited, as encode's are)."""
    check_file_list(files, "media under the folder")
    check_callbacks(log=log, on_warning=on_warning, progress=progress)
    if report is not None and not isinstance(report, FolderReport):
        raise VQCodecError(f"report is a vqcodec.folders.FolderReport or None, not {shown_cut(report)}")
    checked_folder_path("folder", folder)
    checked_folder_path("out", out)
    replace, resume = checked_flag("replace", replace), checked_flag("resume", resume)
    if stopped_run is not None:
        if not resume:
            raise VQCodecError("stopped_run is the codes.json that resume=True goes on from: give resume=True with it")
        try:  # as it would be read: JSON data alone, which the manifest written holds again
            stopped_run = json.loads(json.dumps(stopped_run))
        except (TypeError, ValueError, RecursionError):
            raise VQCodecError(f"stopped_run is a codes.json as stopped_run_manifest reads it (JSON data), not "
                               f"{shown_cut(stopped_run)}") from None
    check_codec(codec, "media_to_codes")
    with codec._lock:
        return _code_folder(codec, Path(folder), Path(out), files, quality, log, replace, on_warning, resume,
                            stopped_run, progress or log, FolderReport(codec.kind) if report is None else report)


def _code_folder(codec, folder: Path, out: Path, files: list[Path], quality: int | None, log, replace: bool,
                 on_warning, resume: bool, stopped_run: dict | None, progress, report: FolderReport) -> dict:
    outputs = code_paths(folder, out, files)
    quality = _run_quality(codec, quality)
    codec.check_weights()  # a weight the codec cannot use would fail every file alike
    finished = {}
    if resume:
        if stopped_run is None:
            stopped_run = stopped_run_manifest(codec, out, files, quality)
        else:
            _checked_run(codec, out / MANIFEST, stopped_run, quality)
        if stopped_run.get("stopped") is not True:
            return stopped_run
        finished = _finished_entries(stopped_run, folder, out, files, outputs)
        report.bytes = sum(size for _, size in finished.values())  # as each array was when it was checked
        replace = True  # the stopped run's manifest and arrays are this run's to write again
        if log:
            log(resumed_line(len(finished), len(files) - len(finished)))
    elif not replace and os.path.lexists(out / MANIFEST):  # else every file is coded, then the manifest refused
        raise VQCodecError(setting(f"{out / MANIFEST} exists; pass --force to overwrite it",
                                   f"{out / MANIFEST} exists; pass replace=True to overwrite it"))
    entries, skipped = [], []
    done = 0  # of the files this run codes, those coded or skipped: the kept ones are not among them
    try:
        for path, output in zip(files, outputs):
            if _name_in(folder, path) in finished:  # by the stopped run that this one resumes
                entries.append(finished[_name_in(folder, path)][0])
                continue
            try:
                stamp, change_time_ns = stamp_before_reading(path)  # a change while it is coded is a change
                codes, restore = codec.media_to_codes(path, quality)
                check_unchanged_since(path, stamp, change_time_ns)
                warn_of_level(codec, path, on_warning)
                sizes = []
                with folder_of(output):
                    write_file(output, lambda stream: sizes.append(save_codes(stream, codes)), replace)
            except (VQCodecError, OSError) as exc:
                reason = str(exc) if isinstance(exc, VQCodecError) else f"cannot write {output} ({reason_of(exc)})"
                report.skipped.append((path, reason))
                skipped.append({**name_fields("file", Path(path).relative_to(folder)), **name_fields("reason", reason)})
            else:
                entries.append({**name_fields("file", Path(path).relative_to(folder)),
                                **name_fields("codes", output.relative_to(out)), "shape": list(codes.shape),
                                **restore, **stamp})
                report.bytes += sizes[0]
            done += 1
            if progress and done % 100 == 0:
                progress(f"coded {done}/{len(files) - len(finished)} files")
    except BaseException as stop:  # Ctrl-C, SIGTERM, out of memory, a callback's error: the arrays keep what
        # restores them
        if entries or skipped:
            _write_manifest(codec, out, quality, entries, skipped, replace, stopped=True)
        report.written = len(entries)
        if log and isinstance(stop, KeyboardInterrupt):  # as a folder's encode and decode say it (folders._each_file)
            say_stopped(log, report, "coded", len(files) - len(entries) - len(skipped), len(files), by_path=True)
        raise
    report.written = len(entries)
    return _write_manifest(codec, out, quality, entries, skipped, replace, written=bool(entries))


def _run_quality(codec, quality: int | None) -> int:
    return codec.check_quality(codec.num_codebooks if quality is None else quality)


def _manifest_head(codec, quality: int) -> dict:
    """What a folder of media's codes.json records of the run, before its files: the model, the options and the
    layout of the codes."""
    if codec.kind == "audio":
        layout = {"frames_per_second": codec.sample_rate / codec.hop, "sample_rate": codec.sample_rate,
                  "axes": ["channel", "level", "frame"]}
    else:
        layout = {"stride": codec.hop, "axes": ["level", "row", "col"]}
    return {"model": valid_text(codec.name), "model_id": codec.model_id.hex(), "codes_id": codec.codes_id.hex(),
            "kind": codec.kind, "quality": quality, "codebook_size": codec.codebook_size,
            "depth_weight": codec.depth_weight if codec.chooses_depths else 0.0, **layout}


def _write_manifest(codec, out: Path, quality: int, entries: list[dict], skipped: list[dict], replace: bool,
                    stopped: bool = False, written: bool = True) -> dict:
    manifest = {**_manifest_head(codec, quality), "files": entries, "skipped": skipped,
                **({"stopped": True} if stopped else {})}
    if written:
        out.mkdir(parents=True, exist_ok=True)
        write_file(out / MANIFEST, lambda stream: stream.write(json.dumps(manifest, indent=1).encode()), replace)
    return manifest


def stopped_run_manifest(codec, out: Path, files: list[Path], quality: int | None = None) -> dict:
    """The codes.json in `out` that code_folder(resume=True) goes on from, read no larger than a manifest of
    `files` can be: refused (VQCodecError) where there is none, where it cannot be read or is not a folder of
    media's, and where its run coded with another model (its id, and its codes id where it records one: the name may
    differ), kind, quality, depth weight or layout than `codec` and `quality`. That run was stopped where its
    "stopped" is true."""
    return _checked_run(codec, *_manifest_to_resume(out, files), quality)


def _checked_run(codec, path: Path, manifest, quality: int | None) -> dict:
    """`manifest`, the codes.json at `path`, refused as stopped_run_manifest refuses what it reads."""
    _check_manifest_of(path, manifest, "model_id", str, "a folder of media")
    start_again = setting("--force", "replace=True without resume")
    for key, value in _manifest_head(codec, _run_quality(codec, quality)).items():
        if key == "model" or (key == "codes_id" and key not in manifest):  # one written before codes_id: by model_id
            continue
        if type(manifest.get(key)) is not type(value) or manifest.get(key) != value:
            named = {"model_id": "model id", "codes_id": "codes id",
                     "depth_weight": setting("--depth-weight", "depth weight"),
                     "quality": setting("-q", "quality")}.get(key, key)
            model = manifest.get("model")
            of_model = f" (model {model})" if key == "model_id" and isinstance(model, str) else ""
            raise VQCodecError(f"cannot resume {path}: its run coded with {named} {shown_cut(manifest.get(key))}"
                               f"{of_model}, this one with {shown(value)}; give the same model and options, or start "
                               f"again with {start_again}")
    return manifest


def stopped_vq_run_entries(folder: Path, out: Path, files: list[Path], outputs: list[Path],
                           header_bytes: HeaderBytes) -> dict[Path, tuple[dict, int]] | None:
    """For `vqcodec codes FOLDER OUT --resume` of a folder of .vq files: the entries of the stopped run's
    codes.json in `out` that it keeps (the files of `files` it finished, of the size, time and content listed, whose
    array is still at their output of `outputs`, with the shape listed, and whose header still gives what the entry
    records of it), by the path of their file, with their file and array as paths, as vqcodec.folders.codes_folder
    gives them, each with the size of its array as it was checked; None where that run finished. Refused
    (VQCodecError) as stopped_run_manifest refuses, where it is not the codes.json of a folder of .vq files. The
    headers are read into `header_bytes`, or taken from it."""
    from .folders import header_entry, read_headers

    path, manifest = _manifest_to_resume(out, files)
    _check_manifest_of(path, manifest, "axes", dict, "a folder of .vq files")
    if manifest.get("stopped") is not True:
        return None
    finished = _finished_entries(manifest, folder, out, files, outputs)
    kept = {}
    for path, output in zip(files, outputs):
        if (found := finished.get(_name_in(folder, path))) is not None:
            entry, size = found
            kept[path] = ({**entry, "file": path, "codes": output}, size)
    # one that cannot be read now is coded again, and fails as it does
    headers, _ = read_headers(list(kept), header_bytes)
    return {path: (entry, size) for path, (entry, size) in kept.items()
            if path in headers and all(entry.get(key) == value for key, value in header_entry(headers[path]).items())}


def _manifest_to_resume(out: Path, files: list[Path]) -> tuple[Path, object]:
    """The path of the codes.json in `out` and what it holds, read no larger than a manifest of `files` can be."""
    path = Path(out) / MANIFEST
    if not os.path.lexists(path):
        raise VQCodecError(f"cannot resume: {path} does not exist (no stopped run of `vqcodec codes` there)")
    # Each file's entry names it and its array, and a skipped one gives why: no more than its paths many times over
    # and none larger than pack reads (listing_manifest): the one written again must stay readable
    limit = min(MAX_JSON_BYTES + sum(4096 + 36 * (len(str(file)) + len(str(out))) for file in files),
                MAX_MANIFEST_BYTES)
    try:
        manifest = read_json_file(path, limit, "the codes.json of these files")
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise VQCodecError(f"cannot resume {path}: cannot read it ({reason_of(exc)})") from None
    return path, manifest


def _check_manifest_of(path: Path, manifest, key: str, of_type: type, of: str) -> None:
    """Refuse the codes.json at `path` unless it is a dict whose "files" is a list and whose `key` is of `of_type`,
    as in the codes.json of `of`."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) \
            or not isinstance(manifest.get(key), of_type):
        raise VQCodecError(f"cannot resume {path}: it is not the codes.json of {of}")


def listed_file(entry) -> str | None:
    """The name (its path under the folder) of the file that an entry of a codes.json lists; None where it names
    none."""
    return listed_name(entry, "file") if isinstance(entry, dict) else None


def _name_in(folder: Path, path: Path) -> str:
    """The name codes.json lists a file of `folder` by, as listed_file reads it back."""
    return str(Path(path).relative_to(folder))


def resumed_line(kept: int, to_code: int) -> str:
    """The line that says what a resumed run of `vqcodec codes FOLDER OUT` goes on with."""
    return f"resumed: {plural(kept, 'file')} kept, {to_code} to code"


def _finished_entries(manifest: dict, folder: Path, out: Path, files: list[Path], outputs: list[Path]
                      ) -> dict[str, tuple[dict, int]]:
    """The entries of a stopped run's manifest of files still among `files`, unchanged since (input_stamp), whose
    array is still at their output, with the shape the entry gives, by the name of their file, each with the size
    of its array as it was checked: those a resume keeps."""
    paths_of = {_name_in(folder, path): (path, output) for path, output in zip(files, outputs)}
    finished = {}
    for entry in manifest["files"]:
        path, output = paths_of.get(listed_file(entry), (None, None))
        if output is None or listed_name(entry, "codes") != str(output.relative_to(out)) \
                or not _input_unchanged(entry, path):
            continue
        size = _size_of_codes_of_shape(output, entry.get("shape"))
        if size is not None:
            finished[listed_file(entry)] = entry, size
    return finished


def input_stamp(path) -> dict:
    """What codes.json records of an input file to tell on a resume that it changed since: its size in bytes and
    modification time in ns, as make and rsync tell it, and the BLAKE2b-256 of its bytes (CONTENT_HASH, what
    `b2sum -l 256` prints), which tells a file replaced by another of the same size whose time was set back; {}
    where it cannot be had (the entry of such a file is coded again by a resume)."""
    return stamp_before_reading(path)[0]


def stamp_before_reading(path) -> tuple[dict, int | None]:
    """The input_stamp of the file at `path`, and its inode change time in ns (None where the stamp cannot be had),
    which check_unchanged_since compares once the file is read. Every write to the file, and every setting of its
    time, sets its change time to now, and nothing sets it back; it is not recorded, as a copy elsewhere (cp -a)
    does not keep it, so a resume tells a file by the recorded stamp alone."""
    try:
        with open_regular_file(path) as stream:
            found = os.fstat(stream.fileno())
            return {**_size_and_time(found), CONTENT_HASH: _content_hash(stream)}, found.st_ctime_ns
    except OSError:
        return {}, None


def read_vq_file_stamped(path) -> tuple[bytes, dict, int | None]:
    """The bytes of the .vq file at `path`, as fileinfo.read_vq_file reads them, and its stamp_before_reading, taken
    from that one reading (not a reading of its own, which read the file whole a second time): its size and times
    from the file opened, before it is read, and its content hash of the bytes read (a regular file's, whole). A file
    that is not a regular one has no stamp, as stamp_before_reading gives it none."""
    from .fileinfo import read_vq_stream

    with open(path, "rb") as stream:
        found = os.fstat(stream.fileno())
        data = read_vq_stream(stream, name=path)
    if not stat.S_ISREG(found.st_mode):
        return data, {}, None
    return data, {**_size_and_time(found), CONTENT_HASH: _digest(data).hexdigest()}, found.st_ctime_ns


def check_unchanged_since(path, stamp: dict, change_time_ns: int | None) -> None:
    """Refuse the codes just made of the file at `path` where its size, modification time or inode change time is
    no longer what `stamp` and `change_time_ns` (stamp_before_reading, taken before it was read) record: it changed
    while it was coded, so its codes may be of bytes other than those hashed, or of no one version of it. Rereading
    it to hash it again would read it a third time; the change time tells a file rewritten with the same size and
    its modification time put back (cp -p over it, touch -d)."""
    if not stamp:  # none could be had: its entry records none, and a resume codes it again
        return
    try:
        found = os.stat(path)
    except OSError as exc:
        raise VQCodecError(f"{path}: changed while it was read ({reason_of(exc)}), so its codes were not "
                           "kept") from None
    if not _records(stamp, _size_and_time(found)) or found.st_ctime_ns != change_time_ns:
        raise VQCodecError(f"{path}: changed while it was read, so its codes were not kept")


def _size_and_time(found: os.stat_result) -> dict:
    return {"file_size": found.st_size, "file_mtime_ns": found.st_mtime_ns}


def _digest(data: bytes = b""):
    """The CONTENT_HASH of `data`, to be updated with the bytes that follow it."""
    return hashlib.blake2b(data, digest_size=32)


def _content_hash(stream) -> str:
    digest = _digest()
    for block in iter(lambda: stream.read(1 << 20), b""):  # hashlib.file_digest is of Python 3.11
        digest.update(block)
    return digest.hexdigest()


def _input_unchanged(entry: dict, path: Path) -> bool:
    """Whether the file at `path` is of the size, time and content an entry of codes.json records of it (input_stamp),
    its bytes read only where size and time match. An entry of an older codes.json that records no content hash
    is judged by size and time alone, as that vqcodec judged it; one that records neither is not unchanged."""
    try:
        size_and_time = _size_and_time(os.stat(path))
    except OSError:
        return False
    if not _records(entry, size_and_time):
        return False
    return CONTENT_HASH not in entry or _records(entry, input_stamp(path))


def _records(entry: dict, stamp: dict) -> bool:
    """Whether a codes.json entry records each value of `stamp` (not empty), of its type."""
    return bool(stamp) and all(type(entry.get(key)) is type(value) and entry[key] == value
                               for key, value in stamp.items())


def _size_of_codes_of_shape(path: Path, shape) -> int | None:
    """The size in bytes of the file at `path` where it is a whole .npy array of CODE_TYPE of `shape` (a list),
    from its header and size alone; None where it is not."""
    if not isinstance(shape, list) or not all(type(side) is int for side in shape):
        return None
    try:
        with open_regular_file(path) as stream:  # a FIFO is not waited on
            size = os.fstat(stream.fileno()).st_size
            found, fortran_order, dtype = npy_header(stream, size, str(path))
    except (OSError, VQCodecError):
        return None
    return size if found == tuple(shape) and not fortran_order and dtype == CODE_TYPE else None


def write_vq_manifest(folder: Path, out: Path, entries: list[dict], skipped: list[tuple[Path, str]],
                      stopped: bool = False, replace: bool = True) -> None:
    """codes.json of `vqcodec codes` on a folder of .vq files (vqcodec.folders.codes_folder): as a
    folder of media's, but each file names its own model, kind and quality (a folder may hold files
    of several models), and its axes follow from its kind."""
    files = [{**name_fields("file", Path(entry["file"]).relative_to(folder)),
              **name_fields("codes", Path(entry["codes"]).relative_to(out)),
              **{key: value for key, value in entry.items() if key not in ("file", "codes", "file_hex", "codes_hex")}}
             for entry in entries]
    manifest = {"axes": {"audio": ["channel", "level", "frame"], "image": ["level", "row", "col"]}, "files": files,
                "skipped": [{**name_fields("file", Path(path).relative_to(folder)), **name_fields("reason", reason)}
                            for path, reason in skipped],
                **({"stopped": True} if stopped else {})}
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / MANIFEST, lambda stream: stream.write(json.dumps(manifest, indent=1).encode()), replace)


def listed_name(entry: dict, key: str) -> str | None:
    """The text that name_fields wrote as KEY of a codes.json entry (a relative path, a skipped file's reason),
    exactly, as this process names files: a name without KEY_hex is UTF-8 on disk, which a process whose file
    system encoding is ASCII (the C locale without Python's UTF-8 mode) holds as lone surrogates, not as the
    characters JSON gives ("caf\\udcc3\\udca9.wav", not "café.wav": --resume coded the file again, and pack found
    no entry of its codes); None where the entry holds none that is one."""
    exact = entry.get(f"{key}_hex")
    if exact is None:
        text = entry.get(key)
        return _as_file_system_text(text) if isinstance(text, str) else None
    try:
        return os.fsdecode(bytes.fromhex(exact))
    except (TypeError, ValueError):
        return None


def _as_file_system_text(text: str) -> str:
    """`text` as a name of its UTF-8 bytes reads in this process (os.fsdecode); as it is where it holds a
    lone surrogate that stands for no byte."""
    try:
        return os.fsdecode(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return text


def manifests_above(path) -> list[Path]:
    """The codes.json files that listing_manifest reads for a .npy file: in its folder and each one above."""
    return [folder / MANIFEST for folder in Path(os.path.abspath(path)).parents]


def listing_manifest(path: Path) -> tuple[Path, dict, dict] | None:
    """The codes.json in the folder of a .npy file or one above it that lists it (as `vqcodec codes
    FOLDER OUT` writes them): its path, the manifest and the file's entry; None where none lists it (a
    manifest that cannot be read or is not one, JSON nested too deep, a FIFO or a device too, is passed
    over). One of more than MAX_MANIFEST_BYTES is refused (VQCodecError), unread: it may list the file."""
    path = Path(os.path.abspath(path))
    for candidate in manifests_above(path):
        folder = candidate.parent
        try:
            manifest = read_json_file(candidate, MAX_MANIFEST_BYTES, "the codes.json of a million files")
        except JSONFileTooLarge as exc:
            raise VQCodecError(f"cannot read {candidate}: {exc}") from None
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
            continue
        files = manifest.get("files") if isinstance(manifest, dict) else None
        for entry in files if isinstance(files, list) else []:
            if isinstance(entry, dict) and (name := listed_name(entry, "codes")) is not None and folder / name == path:
                return candidate, manifest, entry
    return None


def check_listed_codes(codec, path) -> None:
    """Refuse to pack the .npy file at `path` with `codec` where a codes.json lists it (listing_manifest) as
    the codes of another kind of media or of a model whose codes `codec` does not make (Codec.makes_codes_of, by the
    codes id it records, else by the model id alone, as one written before codes_id). The arrays cannot tell: both
    kinds are 3-D integer codes, and image codes (quality, rows, cols) of a few rows fit an audio model's (channels,
    quality, frames), as audio codes fit an image model's, which made them a file of the other kind."""
    check_codec(codec, "makes_codes_of")
    if not isinstance(path, (str, os.PathLike)):  # was a TypeError from Path()
        raise VQCodecError(f"path is the path of a .npy file of codes (a str or Path), not {shown_cut(path)}")
    listed = listing_manifest(Path(path))
    if listed is None:
        return
    manifest_path, manifest, entry = listed
    kind, model_id = entry.get("kind", manifest.get("kind")), _lowered(entry.get("model_id", manifest.get("model_id")))
    codes_id = _listed_codes_id(manifest_path, manifest, entry)
    named = manifest.get("model")
    of_model = f"model {named} ({model_id})" if isinstance(named, str) else f"model {model_id}"
    if kind in ("audio", "image") and kind != codec.kind:
        raise VQCodecError(f"{path} holds the codes of {kind_held(kind)}, of {of_model}, as {manifest_path} lists "
                           f"it, but model {codec.name} codes {kind_coded(codec.kind)}: pack it with the model that "
                           "made it")
    if not isinstance(model_id, str) or (is_model_id(model_id) and codec.makes_codes_of(bytes.fromhex(model_id),
                                                                                       codes_id)):
        return
    raise VQCodecError(not_its_codes(f"{path} holds the codes of {of_model}, as {manifest_path} lists it", codes_id,
                                     codec, "of", "pack it with the model that made it"))


def _listed_codes_id(manifest_path: Path, manifest: dict, entry: dict) -> bytes | None:
    """The codes id that a codes.json gives beside the model id of an entry (the entry's own, as a folder of .vq files
    records them, else the manifest's); None where it gives none, as one written before codes_id."""
    codes_id = _lowered(entry.get("codes_id") if "model_id" in entry else manifest.get("codes_id"))
    if codes_id is not None and not is_model_id(codes_id):
        raise VQCodecError(f"{manifest_path} gives a bad codes_id ({shown_cut(codes_id)}: not 16 hex digits) for the "
                           "codes it lists: write it again with `vqcodec codes`, or remove codes_id from it")
    return None if codes_id is None else bytes.fromhex(codes_id)


def _lowered(listed_id):
    """A model or codes id as codes.json gives it, its hex digits in lower case (as Codec.makes_codes_of takes them:
    one edited to upper case was another model's, or 'not 16 hex digits'); anything else as it is."""
    return listed_id.lower() if isinstance(listed_id, str) else listed_id
