"""Whole folders in one run (`vqcodec encode DIR OUT`, `vqcodec decode DIR OUT`, `encode` of a
folder of .vq files, which recodes them, and `codes` of one, which writes their codes): the
networks are loaded once instead of once per file, each output goes to the input's relative path
under OUT, and a file that cannot be coded is reported and skipped while the others go on.
encode_tree, decode_tree, recode_tree, codes_of_media_tree and codes_of_vq_tree are those commands in Python (walk,
refusals before any work, the run, its FolderReport), each named for the command and, for `codes`, for what the folder
holds; encode_folder, decode_folder, recode_folder and codes_folder their per-file loops."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import format as vqformat
from .errors import VQCodecError
from .wording import kind_coded, kind_held, plural, rate_unit, reason_of, setting, shown_cut, skipping

DEFAULT_EXTENSIONS = {"audio": ".wav", "image": ".png"}
# where Pillow's first-registered extension is unusual, or (SPIDER) registered only once a file is saved,
# as whatever name that file had
IMAGE_EXTENSIONS = {"JPEG": ".jpg", "TIFF": ".tiff", "SPIDER": ".spider"}


def _named_from_the_folder_note(folder: Path, path) -> str:
    """What to say of a relative path that names a file of `folder` from the folder itself, as os.listdir(folder)
    gives it: relative paths are the current folder's."""
    named = Path(folder) / path
    try:
        if Path(path).is_absolute() or not named.exists():
            return ""
    except OSError:  # a name too long to look up
        return ""
    return f" (a relative path is taken from the current folder: give {named})"


def mirrored_paths(folder: Path, out: Path, files: list[Path], suffix_of: Callable[[Path], str],
                   also: tuple[Path, ...] = ()) -> list[Path]:
    """Each file's path under `folder`, moved under `out`, with the suffix `suffix_of(file)` gives;
    refused when two files would write the same output (talk.wav and talk.flac), when an output is one
    of the files (OUT the folder itself, or a link to one), or when one would go where a folder of
    another, or of the run's other outputs `also` (a manifest), must go."""
    outputs, sources = [], {}
    for path in files:
        # vqcodec.tokens.code_folder's caller chose the files: the folder itself or a path through ".." is
        # not one in it (the folder was a ValueError of pathlib, "PosixPath('.') has an empty name")
        relative = Path(path).relative_to(folder) if Path(path).is_relative_to(folder) else None
        if relative is None or not relative.parts or ".." in relative.parts:
            raise VQCodecError(f"{path} is not in the folder {folder}{_named_from_the_folder_note(folder, path)}")
        output = out / relative.with_suffix(suffix_of(path))
        if output in sources:
            raise VQCodecError(f"{sources[output]} and {path} would both write {output}")
        sources[output] = path
        outputs.append(output)
    _refuse_outputs_that_are_inputs(files, outputs)
    _check_output_tree([*outputs, *also])
    return outputs


def check_file_list(files, of: str) -> None:
    """Refuse `files` (of the API's folder functions) unless it is a list or tuple of paths of `of`: a str or Path
    was iterated, as its characters or by a bare TypeError, and a generator used up by a first pass."""
    if not isinstance(files, (list, tuple)) or not all(isinstance(path, (str, os.PathLike)) for path in files):
        one = isinstance(files, (str, os.PathLike))
        raise VQCodecError(f"files is a list of paths (str or Path) of {of}, not {shown_cut(files)}"
                           + (": give [path] for one file" if one else ""))


def check_callbacks(**callbacks) -> None:
    """Refuse a callback of the API's folder functions (log=, on_skip=, on_warning=) that is neither a function nor
    None: it was called, and failed with a TypeError, only once files were done, leaving their outputs unlisted."""
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise VQCodecError(f"{name} must be a function or None, not {shown_cut(value)}")


def checked_folder_path(name: str, path, what: str = "a folder") -> Path:
    """A folder given to the API's folder functions (`folder`, `out`), or `what` else the path names
    (evaluate.files_of's "a file or folder"), as a Path: a str or Path, not empty ("" stood for the current folder,
    into which a run wrote its outputs), else refused naming the argument."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise VQCodecError(f"{name} is the path of {what} (a str or Path, not empty), not {shown_cut(path)}")
    return Path(path)


def _folder_and_out(folder, out) -> tuple[Path, Path]:
    """The folder a *_tree function reads and the one it writes into (output_folder), each checked_folder_path."""
    return checked_folder_path("folder", folder), output_folder(checked_folder_path("out", out))


def warn_of_level(codec, path, on_warning=None) -> None:
    """The warning of a recording that the codec's last encoding coded above full scale (Codec.level_warning),
    naming its file: given to `on_warning(line)`, else a UserWarning."""
    import warnings

    from .errors import caller_stacklevel

    warning = codec.level_warning(path) if codec.kind == "audio" else None
    if warning and on_warning:
        on_warning(warning)
    elif warning:
        warnings.warn(warning, stacklevel=caller_stacklevel())


def _refuse_outputs_that_are_inputs(files: list[Path], outputs: list[Path]) -> None:
    """Refuse, even with --force, an output that is one of the input files (by name, link or hard link),
    as one file's output is: recoding a folder into itself replaced each .vq file with its recoding."""
    from .streams import file_id

    inputs = {file_id(path): path for path in files}  # one that cannot be read is skipped when its turn comes
    inputs.pop(None, None)
    for output in outputs:
        source = inputs.get(file_id(output))
        if source is not None:
            named = "" if Path(source) == output else f" {source}"
            raise VQCodecError(f"{output} is the input file{named}: give the output folder another name")


def _check_output_tree(outputs: list[Path]) -> None:
    """Refuse, before anything is written, outputs whose folder cannot be made: a file, or a link to
    nothing, stands where it must go, or one output is the folder of another (x.vq for x.flac, and
    x.vq/ for x.vq/y.flac). Each folder is looked at once, for the first output in it."""
    taken, fit = set(outputs), set()  # fit: the folders already found fit to hold an output, and so the next ones
    for output in outputs:
        for parent in output.parents:
            if parent in fit:
                break
            if parent in taken:
                raise VQCodecError(f"{parent} would be both an output file and the folder of {output}")
            if parent.exists():
                if not parent.is_dir():
                    raise VQCodecError(f"{parent} is a file, where the folder of {output} must go")
                fit.add(parent)
                break
            if parent.is_symlink():
                raise VQCodecError(f"{parent} is a link to {os.readlink(parent)}, which is not there, where the "
                                   f"folder of {output} must go")
            fit.add(parent)


def files_under(folder: Path, leave_out: Path | None = None,
                passed_over: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every file under `folder`, recursively and sorted, without following links to folders and
    without what is under `leave_out` (an output folder inside the input one, so that a second run
    does not take the first one's outputs for inputs). Files and folders whose name begins with "."
    are left out silently (.DS_Store, macOS's ._NAME, .git, .ipynb_checkpoints), as dataset tools
    leave them out; `folder` itself may be hidden. A name that is not a regular file (a link to
    nothing, a FIFO, a socket or a device) is left out of the list, and added to `passed_over`, where
    given, with why (not_a_file_reason), sorted, for the caller to report. A subfolder that cannot be read
    is an error, not a silent gap."""
    from .streams import descriptor_file_id, file_id

    walked = False  # whether `folder` itself was read: an error naming no folder is then of one under it

    def refuse(error: OSError):
        if error.filename is not None:
            where = f"the folder {error.filename}"
        else:
            where = f"a folder under {folder}" if walked else f"the folder {folder}"
        raise VQCodecError(f"cannot read {where} ({reason_of(error)})")

    skipped = Path(leave_out).resolve() if leave_out is not None else None
    logs = {descriptor_file_id(1), descriptor_file_id(2)} - {None}  # a run's own log: `> DIR/log.wav`
    found, others = [], []
    for root, folders, names in os.walk(folder, onerror=refuse):
        walked = True
        folders[:] = [name for name in folders if not is_hidden(name)
                      and (skipped is None or (Path(root) / name).resolve() != skipped)]
        paths = [Path(root) / name for name in names if not is_hidden(name)]
        found += [path for path in paths if path.is_file() and not (logs and file_id(path) in logs)]
        others += [path for path in paths if not path.is_file()]
    if passed_over is not None:
        passed_over += [(path, not_a_file_reason(path)) for path in sorted(others)]
    return sorted(found)


def not_a_file_reason(path: Path) -> str:
    """Why files_under passes over `path`, which is not a regular file: a symbolic link to nothing (a user's
    data moved away), or a FIFO, socket or device, which a folder run would wait on or read for ever."""
    if path.is_symlink() and not path.exists():  # or a link in a loop
        return f"broken symbolic link (to {os.readlink(path)})"
    if not os.path.lexists(path):
        return "no longer there"
    return "not a regular file (a pipe, a socket or a device)"


def passed_over_of(passed_over: list[tuple[Path, str]]) -> list[tuple[list[Path], str]]:
    """The names files_under passed over, each as a group of one with why, as a folder command's files set
    aside before any is coded are given to its last lines (and its codes.json)."""
    return [([path], reason) for path, reason in passed_over]


def is_hidden(name: str) -> bool:
    """Whether a folder walk leaves out a file or folder of this name (files_under)."""
    return name.startswith(".")


def left_out_note(folder: Path, passed_over: list[tuple[Path, str]] = ()) -> str:
    """For a folder in which nothing was found: what files_under left out, said in the error, or "" where nothing
    was: the names sought that are not regular files (`passed_over`, the first with why: " (x.wav: broken symbolic
    link (to /gone/x.wav), and 2 other names that are not regular files)"), and what it left out as hidden
    (" (2 files and folders whose names begin with '.' are left out)")."""
    notes = []
    if passed_over:
        (first, reason), others = passed_over[0], len(passed_over) - 1
        notes.append(f"{first}: {reason}" + (f", and {plural(others, 'other name')} that "
                                             f"{'is not a regular file' if others == 1 else 'are not regular files'}"
                                             if others else ""))
    count = 0
    for _, folders, names in os.walk(folder):
        count += sum(is_hidden(name) for name in folders + names)
        folders[:] = [name for name in folders if not is_hidden(name)]
    if count == 1:
        notes.append("1 file or folder whose name begins with '.' is left out")
    elif count:
        notes.append(f"{count} files and folders whose names begin with '.' are left out")
    return f" ({'; '.join(notes)})" if notes else ""


def holds_only_vq_files(folder: Path, leave_out: Path | None = None) -> bool:
    """Whether `folder` holds .vq files and no media (files_under, without what is under `leave_out`), as the folder
    commands tell a folder of .vq files (recoded, or their codes read) from one of media."""
    from .io import media_kind_of

    everything = files_under(folder, leave_out)
    return not any(media_kind_of(path) for path in everything) and any(path.suffix.lower() == ".vq"
                                                                       for path in everything)


def find_vq_files(folder: Path, leave_out: Path | None = None,
                  passed_over: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The .vq files under `folder` (files_under); the names of .vq files that are not regular files are added
    to `passed_over`, where given, with why."""
    others: list[tuple[Path, str]] = []
    files = [p for p in files_under(folder, leave_out, others) if p.suffix.lower() == ".vq"]
    others = [(path, reason) for path, reason in others if path.suffix.lower() == ".vq"]
    if not files:
        raise VQCodecError(f"{folder}: no .vq files found{left_out_note(folder, others)}")
    if passed_over is not None:
        passed_over += others
    return files


@dataclass
class FolderReport:
    """What a folder run did: the files written, their total size and the duration (seconds of
    audio) or pixels they hold, and the files skipped, with why; `set_aside`, the folder's files that the caller
    left out of the run before it began (names passed over as not regular files, files of a model not installed,
    .vq headers that cannot be read), in groups with why as its summary names them, which a stop's lines name and
    count too (say_stopped)."""
    kind: str
    written: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pixels: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    set_aside: list[tuple[list[Path], str]] = field(default_factory=list)

    def summary(self) -> str:
        if self.kind == "audio" and self.seconds:
            return (f"{plural(self.written, 'file')}, {self.bytes} bytes, "
                    f"{self.bytes * 8 / self.seconds / 1000:.3f} kbps over {self.seconds:.1f} s")
        if self.kind == "image" and self.pixels:
            return f"{plural(self.written, 'file')}, {self.bytes} bytes, {self.bytes * 8 / self.pixels:.4f} bpp " \
                   f"over {plural(self.pixels, 'pixel')}"
        return f"{plural(self.written, 'file')}, {self.bytes} bytes"


@contextlib.contextmanager
def folder_of(output: Path):
    """Make the folder `output` goes in for the block; when the block fails, remove the folders it made
    that are still empty, so that a file that could not be written leaves no empty folder behind."""
    made = []  # deepest first
    for folder in output.parents:
        if folder.exists():  # and so are all above it
            break
        made.append(folder)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:
            with contextlib.suppress(OSError):  # not empty: another file's output is in it
                folder.rmdir()
        raise


def _each_file(files: list[Path], outputs: list[Path], make: Callable[[Path, Path], int], report: FolderReport,
               verb: str, log: Callable[[str], None] | None,
               progress: Callable[[str], None] | None = None) -> FolderReport:
    """Call make(input, output), which writes the output (its folder made once there is something to
    write) and returns its size, for every file; a file that fails (VQCodecError, or an OSError) is
    added to report.skipped. Every 100 files, `progress` (else `log`) is told how many are done (written or
    skipped). When the run is stopped (Ctrl-C, SIGTERM), `log` is given the files skipped and what was written
    before the stop: `report` may start with files done before this run (those a resume keeps), which that line
    counts among the folder's."""
    progress = progress or log
    kept = report.written
    for number, (path, output) in enumerate(zip(files, outputs), 1):
        try:
            report.bytes += make(path, output)
            report.written += 1
        except KeyboardInterrupt:
            if log:
                say_stopped(log, report, verb, len(files) - number + 1, kept + len(files))
            raise
        except VQCodecError as exc:
            report.skipped.append((path, str(exc)))
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""  # a folder that cannot be made is not the input
            report.skipped.append((path, f"cannot read or write{where} ({reason_of(exc)})"))
        if progress and number % 100 == 0:  # a file skipped is done too
            progress(f"{verb} {number}/{len(files)} files")
    return report


def skipping_lines(set_aside: list[tuple[list[Path], str]], skipped: list[tuple[Path, str]],
                   by_path: bool = False) -> list[str]:
    """A folder command's skipping lines, its summary's and a stop's alike: a line for each group of files set aside
    before the run began ("skipping 3 files: ..." for more than one), then one for each file skipped, in the order
    it met them; `by_path`, all of them in the order of their (first) paths, as `codes` of a folder of media lists
    them."""
    groups = [*set_aside, *(([path], reason) for path, reason in skipped)]
    if by_path:
        groups.sort(key=lambda group: group[0][0])
    return [skipping(paths[0] if len(paths) == 1 else plural(len(paths), "file"), reason) for paths, reason in groups]


def say_stopped(log: Callable[[str], None], report: FolderReport, verb: str, not_done: int, total: int,
                by_path: bool = False) -> None:
    """Tell `log` what a folder run stopped by Ctrl-C or SIGTERM did: the skipping lines of the files set aside
    before it began and of those it skipped, as its summary gives them (skipping_lines, `by_path` as there), then
    "coded 2 files, 48256 bytes before the stop; 1 of 3 files not coded": `not_done` the files of the run it did not
    reach, of the `total` it was given and those set aside, as its summary would count them had it finished."""
    for line in skipping_lines(report.set_aside, report.skipped, by_path):
        log(line)
    total += sum(len(paths) for paths, _ in report.set_aside)
    log(f"{verb} {report.summary()} before the stop; {not_done} of {plural(total, 'file')} not {verb}")


def encode_folder(codec, files: list[Path], outputs: list[Path], quality: int, max_rate: float | None,
                  write: Callable[[Path, bytes], None], log: Callable[[str], None] | None = None,
                  progress: Callable[[str], None] | None = None,
                  set_aside: list[tuple[list[Path], str]] = (),
                  on_warning: Callable[[str], None] | None = None) -> FolderReport:
    """Encode `files` (media of codec.kind) into `outputs` with one codec; `max_rate` is --bitrate
    (kbps) for audio or --bpp for images. `write(path, data)` writes one output; `log` and `progress`
    as for _each_file; a recording's level warning is given to `on_warning(line)`, else a UserWarning
    (warn_of_level); `set_aside` the report's (FolderReport)."""
    from .fileinfo import read_info
    from .imageio import open_image

    report = FolderReport(codec.kind, set_aside=list(set_aside))

    def make(path: Path, output: Path) -> int:
        if codec.kind == "audio":
            data = codec.encode_audio_file(path, quality, max_rate)
            warn_of_level(codec, path, on_warning)
        else:
            data = codec.encode_image(open_image(path, fits=codec.check_image_encode_fits), quality, max_rate,
                                      source=path)
        with folder_of(output):
            write(output, data)
        info = read_info(data)
        report.seconds += info.duration
        report.pixels += info.width * info.height
        return len(data)
    return _each_file(files, outputs, make, report, "encoded", log, progress)


def encode_tree(codec, folder, out, *, quality: int | None = None, max_rate: float | None = None,
                kind: str | None = None, replace: bool = False, on_warning: Callable[[str], None] | None = None,
                log: Callable[[str], None] | None = None, progress: Callable[[str], None] | None = None
                ) -> FolderReport:
    """Encode the audio files or images under `folder` into .vq files under `out`, each at its relative path
    (a/b.flac -> OUT/a/b.vq), with one codec, and return the FolderReport: `vqcodec encode FOLDER OUT` of a folder of
    media.

    The folder is read as files_under reads it (recursively; names beginning with "." and what is under `out` left
    out). `codec` is a Codec, a model name or path, or a function that, given the kind of the files, returns the Codec
    (as the command sets one up from its options); a name or function is loaded only once the folder is walked and
    the outputs checked. The files coded are those of `kind` ("audio" or "image"): by default the codec's (a name's,
    read from its JSON), or, given a function, the one kind the folder holds. `quality` defaults to
    codec.default_quality(targeted=max_rate is not None); `max_rate` is kbps for audio and bits per pixel for images.

    Refused by VQCodecError before any file is coded (nothing written): `out` a file, no file of the kind (or of two
    kinds and no kind chosen), two files that would write one output (a.wav and a.flac), an output that is an input
    or would have to be a folder, a codec of another kind, a `quality` the codec has not or a `max_rate` that is no
    positive number (each file refused them in turn: an empty report), and, unless `replace`, an output that exists. A
    file that cannot be coded is skipped and listed in the report's `skipped`, and names that are not regular files (a
    link to nothing) in its `set_aside`, and the others go on. A recording's level warning, naming its file, is given
    to `on_warning(line)`, where given, else issued as a UserWarning, as code_folder gives it; `log(line)` is told a
    stop's lines (Ctrl-C), `progress(line)` (else `log`) how many files are done every 100 files."""
    from .arguments import checked_amount
    from .data import find_media
    from .streams import checked_flag

    check_callbacks(on_warning=on_warning, log=log, progress=progress)
    replace = checked_flag("replace", replace)
    folder, out = _folder_and_out(folder, out)
    passed_over: list[tuple[Path, str]] = []
    kind, files = find_media(folder, _kind_of(codec, kind), out, passed_over)
    outputs = mirrored_paths(folder, out, files, lambda path: ".vq")
    refuse_existing_outputs(outputs, replace)
    codec = _codec_for_kind(codec, kind)
    quality = codec.default_quality(targeted=max_rate is not None) if quality is None else codec.check_quality(quality)
    if max_rate is not None:  # named as the argument, as recode_tree's max_kbps and max_bpp are
        checked_amount("max_rate", max_rate, rate_unit(codec.kind))
    return encode_folder(codec, files, outputs, quality, max_rate,
                         lambda path, data: write_new_file(path, lambda stream: stream.write(data), replace),
                         log=log, progress=progress, set_aside=passed_over_of(passed_over), on_warning=on_warning)


def codes_of_media_tree(codec, folder, out, *, quality: int | None = None, kind: str | None = None,
                        replace: bool = False, resume: bool = False, on_warning: Callable[[str], None] | None = None,
                        log: Callable[[str], None] | None = None, progress: Callable[[str], None] | None = None
                        ) -> FolderReport | None:
    """Write the codes of the audio files or images under `folder` to .npy files under `out`, and codes.json
    (tokens.code_folder), and return the FolderReport, as codes_of_vq_tree does (the arrays' shapes and what restores
    them are in codes.json): `vqcodec codes FOLDER OUT` of a folder of media. The folder is walked and the kind chosen
    as encode_tree does, `codec` given alike (a Codec, a model name or path, or a function of the kind, as the command
    sets up one of fixed-width codes unless a depth weight is given); its codes are as codec.media_to_codes gives
    them. Refused by VQCodecError before any file is coded (nothing written), besides encode_tree's refusals: unless
    `replace` (or `resume`), an array or codes.json that exists. With `resume`, the stopped run in `out` goes on
    (code_folder; `replace` with it refused); where that run finished, nothing is done, `log` is told so, and None
    returned. `on_warning`, `log` and `progress` are code_folder's."""
    from .data import find_media
    from .streams import checked_flag
    from .tokens import MANIFEST, code_folder, code_paths, stopped_run_manifest

    check_callbacks(on_warning=on_warning, log=log, progress=progress)
    replace, resume = checked_flag("replace", replace), checked_flag("resume", resume)
    refuse_replace_with_resume(replace, resume)
    folder, out = _folder_and_out(folder, out)
    passed_over: list[tuple[Path, str]] = []
    kind, files = find_media(folder, _kind_of(codec, kind), out, passed_over)
    if not resume:
        refuse_existing_outputs([*code_paths(folder, out, files), out / MANIFEST], replace)
    codec = _codec_for_kind(codec, kind)
    stopped_run = stopped_run_manifest(codec, out, files, quality) if resume else None
    if stopped_run is not None and stopped_run.get("stopped") is not True:
        if log:
            log(nothing_to_resume_line(out))
        return None
    # the arrays as code_folder kept or wrote them (one removed since is not read again); those passed over, which a
    # stop's lines name and count as the summary does
    report = FolderReport(kind, set_aside=passed_over_of(passed_over))
    code_folder(codec, folder, out, files, quality, log=log, progress=progress, replace=replace or resume,
                on_warning=on_warning, resume=resume, stopped_run=stopped_run, report=report)
    return report


def _kind_of(codec, kind: str | None) -> str | None:
    """The kind of media a folder run codes: `kind`, else a model name's or a Codec's (None: the folder's own)."""
    from .codec import Codec
    from .modelfile import model_kind

    if kind is None and isinstance(codec, (str, os.PathLike)):
        return model_kind(os.fspath(codec))
    if kind is None and isinstance(codec, Codec):
        return codec.kind
    return kind


def _codec_for_kind(codec, kind: str):
    """The Codec that encode_tree codes `kind` with: `codec` itself, loaded (a model name or path) or made (a
    function of the kind); one of another kind refused."""
    from .codec import Codec

    if isinstance(codec, (str, os.PathLike)):
        codec = Codec.load(os.fspath(codec))
    elif not isinstance(codec, Codec) and callable(codec):
        codec = codec(kind)
    if not isinstance(codec, Codec):
        raise VQCodecError(f"codec is a vqcodec Codec, a model name or path, or a function of the kind that returns a "
                           f"Codec, not {shown_cut(codec)}")
    if codec.kind != kind:
        raise VQCodecError(f"model {codec.name} codes {kind_coded(codec.kind)}, but the input is {kind_held(kind)}")
    return codec


def output_folder(out) -> Path:
    """The output folder of a folder run, `out` as a Path: one that exists and is not a folder refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VQCodecError(f"{out} exists and is not a folder")
    return out


def refuse_existing_outputs(outputs: list[Path], replace: bool) -> None:
    """Refuse, before any file is coded, the outputs of a folder run that exist, unless `replace`, or are folders
    (streams.refuse_existing_output)."""
    from .streams import refuse_existing_output

    for output in outputs:
        refuse_existing_output(str(output), replace)


def write_new_file(path: Path, write: Callable, replace: bool) -> None:
    """streams.write_file of one output of a folder run, refused as refuse_existing_outputs refuses it (a file that
    another process wrote since the run began, unless `replace`)."""
    from .streams import refuse_existing_output, write_file

    refuse_existing_output(str(path), replace)
    write_file(path, write, replace=replace)


def recode_folder(files: list[Path], outputs: list[Path], recode: Callable[[Path, bytes], bytes],
                  write: Callable[[Path, bytes], None], log: Callable[[str], None] | None = None,
                  progress: Callable[[str], None] | None = None,
                  set_aside: list[tuple[list[Path], str]] = ()) -> FolderReport:
    """Recode `.vq` files (`recode(path, data)` gives the smaller file) into `outputs`; `set_aside` the report's
    (FolderReport)."""
    from .fileinfo import read_vq_file

    def make(path: Path, output: Path) -> int:
        data = recode(path, read_vq_file(path))
        with folder_of(output):
            write(output, data)
        return len(data)
    return _each_file(files, outputs, make, FolderReport("mixed", set_aside=list(set_aside)), "recoded", log,
                      progress)


def recode_tree(folder, out, *, quality: int | None = None, max_kbps: float | None = None,
                max_bpp: float | None = None, depth_weight: float | None = None, model=None, device: str = "cpu",
                coding: str = "auto", replace: bool = False,
                on_coding_change: Callable[[Path, str, int, int], None] | None = None,
                log: Callable[[str], None] | None = None, progress: Callable[[str], None] | None = None
                ) -> FolderReport:
    """Recode the .vq files under `folder` from their codes alone (Codec.recode) into .vq files under `out`, each at
    its relative path, and return the FolderReport: `vqcodec encode FOLDER OUT` of a folder of .vq files and no media.

    Each file is recoded by the installed model it names, loaded once for all the files that name it, or by `model`
    (a model name or path), loaded before any file, with `coding` ("auto", "prior", "fixed") and, where given,
    `depth_weight`. `quality` is the most codebooks a file keeps (a file of fewer keeps its own); `max_kbps` is the
    audio files' rate and `max_bpp` the images'. Without any of the three a file's codes are kept, and a recoding that
    would be a copy of the file is skipped; one whose coding changes is told to `on_coding_change(path, how,
    bytes_before, bytes_after)` ("from fixed-width to prior range coding").

    Refused by VQCodecError before any file is recoded (nothing written): a `quality` below 1, a `max_kbps` or
    `max_bpp` that is not a positive number, a `max_kbps` alone where every file holds an image or a `max_bpp` alone
    where every file holds audio, a `depth_weight` that is no number from 0 to 100 or that the files' coding cannot
    use (fixed-width), `out` a file, no .vq file, every file naming one model not installed, two files that would
    write one output, an output that is an input, and, unless `replace`, an output that exists. Files whose model is
    not installed are set aside (the report's `set_aside`, one group per model), as are names that are not regular
    files; a file that cannot be recoded is skipped (`skipped`) and the others go on. `log(line)` is told a stop's
    lines (Ctrl-C), `progress(line)` (else `log`) how many files are done every 100 files."""
    from .streams import checked_flag

    check_callbacks(on_coding_change=on_coding_change, log=log, progress=progress)
    replace = checked_flag("replace", replace)
    quality, max_kbps, max_bpp, depth_weight = _checked_recode_targets(quality, max_kbps, max_bpp, depth_weight)
    folder, out = _folder_and_out(folder, out)
    passed_over: list[tuple[Path, str]] = []
    header_bytes, codecs = HeaderBytes(), {}
    files, missing = set_aside_missing_models(folder, find_vq_files(folder, out, passed_over), model, header_bytes,
                                              codecs)
    set_aside = passed_over_of(passed_over) + missing
    _refuse_a_rate_of_no_files_kind(folder, files, max_kbps, max_bpp, header_bytes)
    outputs = mirrored_paths(folder, out, files, lambda path: ".vq")
    refuse_existing_outputs(outputs, replace)
    load_given_model(model, device, files, header_bytes, codecs, coding)
    _refuse_folder_depth_weight(codecs, files, model, device, coding, depth_weight, header_bytes)

    def recode(path: Path, data: bytes) -> bytes:
        header = vqformat.parse_header(data)
        kbps, bpp = max_kbps, max_bpp
        if kbps is not None and bpp is not None:  # a folder of audio and images: each file takes its own
            kbps, bpp = (kbps, None) if header.kind == vqformat.KIND_AUDIO else (None, bpp)
        most = quality if quality is None else min(quality, header.quality)  # a file of fewer keeps its own
        codec = recoder(data, model, device, coding, quality, depth_weight, kbps, bpp, codecs)
        encoded = codec.recode(data, most, kbps if bpp is None else bpp)
        if quality is None and kbps is None and bpp is None:  # as one file's (encode): a copy refused, a change told
            how = coding_change(None, data, encoded, coding)
            if how is not None and on_coding_change:
                on_coding_change(path, how, len(data), len(encoded))
        return encoded
    return recode_folder(files, outputs, recode,
                         lambda path, data: write_new_file(path, lambda stream: stream.write(data), replace),
                         log=log, progress=progress, set_aside=set_aside)


def _checked_recode_targets(quality, max_kbps, max_bpp, depth_weight) -> tuple:
    """recode_tree's quality, rates and depth weight, each refused once, before any file, where it is no quality, rate
    or weight (rather than every file skipped for it)."""
    from .arguments import checked_amount, checked_count, checked_weight
    from .codec import MAX_DEPTH_WEIGHT

    return (None if quality is None else checked_count(setting("-q", "quality"), quality),
            None if max_kbps is None else checked_amount("max_kbps", max_kbps, "kbps"),
            None if max_bpp is None else checked_amount("max_bpp", max_bpp, "bits per pixel"),
            None if depth_weight is None else checked_weight(setting("--depth-weight", "depth_weight"), depth_weight,
                                                             MAX_DEPTH_WEIGHT))


def _refuse_a_rate_of_no_files_kind(folder: Path, files: list[Path], max_kbps, max_bpp, header_bytes: HeaderBytes
                                     ) -> None:
    """A rate given alone for a kind none of a folder's .vq files holds (max_kbps for images only), refused once
    before any file is recoded, as decode_tree refuses `rate` for images only, where each file was skipped for it
    (recoder); files whose header cannot be read are left to fail on their own."""
    if (max_kbps is None) == (max_bpp is None):
        return
    kinds = {vqformat.KIND_NAMES[header.kind] for header in read_headers(files, header_bytes)[0].values()}
    if len(kinds) == 1:
        (kind,) = kinds
        _refuse_the_other_kinds_rate(kind == "audio", max_kbps, max_bpp,
                                     f"the .vq files of {folder} hold {kind_coded(kind)} only")


def _refuse_the_other_kinds_rate(audio: bool, max_kbps, max_bpp, holding: str) -> None:
    """A rate for the other kind of media than the .vq file or files hold (`audio` or not; `holding` says so: "this
    .vq file holds an image"), refused, naming the rate for their kind."""
    if audio and max_bpp is not None:
        raise VQCodecError(f"{setting('--bpp', 'max_bpp')} is for images, and {holding}: use "
                           f"{setting('--bitrate (kbps)', 'max_kbps')}")
    if not audio and max_kbps is not None:
        raise VQCodecError(f"{setting('--bitrate', 'max_kbps')} is for audio, and {holding}: use "
                           f"{setting('--bpp', 'max_bpp')}")


def coding_change(name: str | None, data: bytes, encoded: bytes, coding: str) -> str | None:
    """How the coding of a .vq file recoded without a quality or a rate changed ("from fixed-width to prior range
    coding"), its codes kept; None where `coding` asked for one. A copy of the file is refused (encode a.vq b.vq
    wrote one without a word), in a folder (`name` None) as the file's reason to be skipped, which its line names."""
    if encoded == data:
        raise VQCodecError(("its codes would be kept and coded as they are, and the output be a copy: " +
                            setting("encode recodes a .vq file to a lower -q, --bitrate or --bpp",
                                    "recode_tree recodes a .vq file to a lower quality, max_kbps or max_bpp"))
                           if name is None else
                           (f"{name} is a .vq file, which encode recodes to a lower -q, --bitrate or --bpp: without "
                            "one its codes are kept as they are, coded as they are, and the output would be a copy"))
    if coding != "auto":
        return None
    before, after = (vqformat.CODING_NAMES[vqformat.parse_header(d).coding] for d in (data, encoded))
    return f"from {before} to {after}" if before != after else f"in {after} again, under this model's prior"


def recoder(data: bytes, model, device, coding, quality, depth_weight, max_kbps, max_bpp, codecs: dict):
    """The codec that recodes a .vq file (`encode FILE.vq`, recode_tree), set as the settings say; `codecs` keeps
    the codecs loaded so far, by model (file_codec). A rate of the other kind than the file's is refused, and a
    depth weight where its codes are kept (at its own quality and no rate)."""
    header = vqformat.parse_header(data)
    kind = vqformat.KIND_NAMES[header.kind]
    _refuse_the_other_kinds_rate(kind == "audio", max_kbps, max_bpp, f"this .vq file holds {kind_held(kind)}")
    if depth_weight is not None and max_kbps is None and max_bpp is None and quality in (None, header.quality):
        raise VQCodecError(f"{setting('--depth-weight', 'depth_weight')} cuts a .vq file's levels only with a "
                           f"{setting('-q', 'quality')} below its {plural(header.quality, 'codebook')} or a "
                           f"{setting('--bitrate / --bpp', 'max_kbps / max_bpp')}: at its own quality its codes are "
                           "kept as they are")
    codec = file_codec(data, model, device, codecs, coding)
    refuse_weights_when_fixed_width(codec, None, depth_weight)
    if depth_weight is not None:
        codec.depth_weight = depth_weight
    return codec


def refuse_weights_when_fixed_width(codec, rate_weight, depth_weight,
                                    coded: str = "these files are coded fixed-width") -> None:
    """A rate weight and a depth weight weigh codes' bits under the model's prior: files coded fixed-width (fixed
    coding, or a model without a prior) have no such bits, and the weights were taken and ignored (by encode, eval
    and codes)."""
    refuse_weights(codec.fixed_width_cause(), codec.name, rate_weight, depth_weight, coded)


def refuse_weights(cause: str | None, model: str | None, rate_weight, depth_weight,
                   coded: str = "these files are coded fixed-width") -> None:
    """refuse_weights_when_fixed_width for a codec's fixed_width_cause (None: nothing refused)."""
    from .codec import fixed_width_why

    given = [option for option, value in ((setting("--rate-weight", "rate_weight"), rate_weight),
                                          (setting("--depth-weight", "depth_weight"), depth_weight))
             if value is not None]
    if given and cause:
        why = fixed_width_why(cause, model, setting("--coding fixed", "coding='fixed'"), fit_prior_hint=True)
        raise VQCodecError(f"{' and '.join(given)} {'weigh' if len(given) > 1 else 'weighs'} bits under the model's "
                           f"prior, for entropy-coded files, but {coded}: {why}")


def _refuse_folder_depth_weight(codecs: dict, files: list[Path], model, device, coding: str, depth_weight,
                                header_bytes: HeaderBytes) -> None:
    """A depth weight that the files of a .vq folder would refuse, refused once before any is recoded:
    `model` decides, or without it fixed coding, whatever model each file names, or else the models
    the files name, where one has no prior."""
    from .codec import fixed_width_cause

    if model is not None:
        refuse_weights_when_fixed_width(codecs[model], None, depth_weight)
        return
    refuse_weights(fixed_width_cause(coding, has_prior=True), None, None, depth_weight)
    if depth_weight is not None:
        for codec in _codecs_the_files_name(files, device, coding, codecs, header_bytes):
            refuse_weights_when_fixed_width(codec, None, depth_weight)


def _codecs_the_files_name(files: list[Path], device, coding: str, codecs: dict, header_bytes: HeaderBytes) -> list:
    """The codecs of the models that the headers of .vq files name, each loaded once into `codecs`
    (file_codec); a file whose header or model cannot be read is left to fail on its own."""
    found = []
    for path in files:
        try:
            codec = file_codec(header_bytes.of(path), None, device, codecs, coding)
        except (OSError, VQCodecError):
            continue
        if codec not in found:
            found.append(codec)
    return found


def decode_folder(files: list[Path], outputs: list[Path], formats: dict[str, str],
                  codec_for: Callable[[bytes], object], write: Callable[[Path, Callable], None],
                  salvage: bool = False, warn: Callable[[Path, list, vqformat.Header], None] | None = None,
                  log: Callable[[str], None] | None = None, rate: int | None = None,
                  progress: Callable[[str], None] | None = None,
                  set_aside: list[tuple[list[Path], str]] = ()) -> FolderReport:
    """Decode `.vq` files into `outputs`, audio in the soundfile format formats["audio"] (at `rate`
    Hz, if given) and images in the Pillow format formats["image"]. `codec_for(data)` gives the
    codec of a file (reusing codecs across files); `write(path, write_stream)` writes one output (the stream is
    its own, as an image's is: a failed write into it stays the OSError, which `write` words, streams.write_file naming
    the output, or else the file's skip line);
    with `salvage`, `warn(path, damaged_parts, header)` reports what a damaged file lost; `set_aside` the report's
    (FolderReport)."""
    from .fileinfo import read_vq_file
    from .imageio import save_image

    def make(path: Path, output: Path) -> int:
        data = read_vq_file(path)
        codec = codec_for(data)
        try:
            return decode(path, output, data, codec)
        except VQCodecError as exc:
            if salvage:
                raise
            raise with_salvage_hint(exc, codec, data) from None

    def decode(path: Path, output: Path, data: bytes, codec) -> int:
        header = vqformat.parse_header(data)
        if salvage and warn:
            warn(path, codec.damaged_parts(data), header)
        if header.kind == vqformat.KIND_AUDIO:
            with folder_of(output):
                write(output, lambda stream: codec._decode_audio_file(data, stream, format_hint=formats["audio"],
                                                                      salvage=salvage, rate=rate, own_temporary=True))
        else:
            check_output_of(formats["image"], header, data)
            image = codec.decode_image(data, salvage=salvage)
            with folder_of(output):
                write(output, lambda stream: save_image(image, stream, formats["image"]))
        return output.stat().st_size
    return _each_file(files, outputs, make, FolderReport("mixed", set_aside=list(set_aside)), "decoded", log,
                      progress)


def decode_tree(folder, out, *, format: str | None = None, rate: int | None = None, salvage: bool = False,
                model=None, device: str = "cpu", replace: bool = False,
                on_damage: Callable[[Path, list, vqformat.Header], None] | None = None,
                on_warning: Callable[[str], None] | None = None, log: Callable[[str], None] | None = None,
                progress: Callable[[str], None] | None = None) -> FolderReport:
    """Decode the .vq files under `folder` into files under `out`, each at its relative path, audio as WAV and
    images as PNG unless `format` names a format of their kind (output_formats: "flac", "webp", ...), and return the
    FolderReport: `vqcodec decode FOLDER OUT`.

    The folder is read as files_under reads it. Each file is decoded by the installed model it names, loaded once
    for all the files that name it, or by `model` (a model name or path, or a folder that holds one model: one of
    several is refused, naming the one among them that wrote the most files, else one of their model's id but another
    prior, or that none did), loaded before any file; audio at `rate` Hz where given; with `salvage`, what is intact
    of a damaged file, `on_damage(path, damaged_parts, header)` told what it lost (Codec.damaged_parts).

    Refused by VQCodecError before any file is decoded (nothing written): a `rate` that is no sample rate (as
    Codec.decode's sample_rate), `out` a file, no .vq file, a `format` of
    a kind none of the files holds, a `rate` for images only, outputs that `format` cannot hold for every file (a
    mono format for stereo, at the rate), every file naming one model not installed, two files that would write one
    output, an output that is an input, and, unless `replace`, an output that exists. Set aside before the run, in
    the report's `set_aside` with why (grouped as the command's lines say it): names that are not regular files,
    files whose output `format` cannot hold, files whose model is not installed and files whose header cannot be
    read. A file that fails to decode is skipped, in `skipped`, and the others go on. A ClippingWarning of a file's
    output is given to `on_warning("PATH: warning")`, where given, else issued; `log(line)` is told a stop's lines
    (Ctrl-C), `progress(line)` (else `log`) how many files are done every 100 files."""
    from .arguments import checked_rate
    from .streams import check_format_name, checked_flag

    check_callbacks(on_damage=on_damage, on_warning=on_warning, log=log, progress=progress)
    salvage, replace = checked_flag("salvage", salvage), checked_flag("replace", replace)
    check_format_name("format", format, "FLAC")
    rate = None if rate is None else checked_rate(rate)  # not "WAV cannot hold 1 channel at -5 Hz" per file
    folder, out = _folder_and_out(folder, out)
    formats, extensions = output_formats(format)
    passed_over: list[tuple[Path, str]] = []
    files = find_vq_files(folder, out, passed_over)
    header_bytes, codecs = HeaderBytes(), {}
    headers, unreadable = read_headers(files, header_bytes)
    kinds = {path: vqformat.KIND_NAMES[header.kind] for path, header in headers.items()}
    if format is not None and kinds:
        check_format_kind_in_folder(format, set(kinds.values()), folder)
    if rate is not None and kinds and "audio" not in kinds.values():  # as for one image file
        raise VQCodecError(f"{setting('--rate', 'rate')} is for audio, and the .vq files of {folder} hold images only")
    refused = audio_outputs_refused(headers, formats["audio"], rate)  # before any model loads: one line per reason
    if len(refused) == 1 and len(refused[0][0]) == len(files):
        raise VQCodecError(f"{plural(len(files), '.vq file')} of {folder}: {refused[0][1]}")
    refused_paths = {path for paths, _ in refused for path in paths}
    readable, missing = set_aside_missing_models(folder, [path for path in kinds if path not in refused_paths],
                                                 model, header_bytes, codecs, refuse_all=not (unreadable or refused))
    set_aside = passed_over_of(passed_over) + refused + missing + [([path], reason) for path, reason in unreadable]
    outputs = mirrored_paths(folder, out, readable, lambda path: extensions[kinds[path]])
    refuse_existing_outputs(outputs, replace)
    load_given_model(model, device, files, header_bytes, codecs)

    def write(path: Path, write_stream: Callable) -> None:
        with clipping_told(path, on_warning):
            write_new_file(path, write_stream, replace)
    return decode_folder(readable, outputs, formats, lambda data: file_codec(data, model, device, codecs), write,
                         salvage, on_damage, log, rate, progress=progress, set_aside=set_aside)


def check_format_kind_in_folder(format_name: str, kinds: set[str], folder: Path) -> None:
    """Refuse an output format for a folder none of whose .vq files it applies to (an audio format for a folder
    of images, or the reverse), which would have written them all in the default format of their kind."""
    from .io import format_kind

    kind = format_kind(format_name) or "image"
    if kind not in kinds:
        (held,) = kinds  # the other kind alone
        raise VQCodecError(f"{setting('--format', 'format')} {format_name} is "
                           f"{'an audio' if kind == 'audio' else 'an image'} format, and the .vq files of {folder} "
                           f"hold {kind_coded(held)} only")


@contextlib.contextmanager
def clipping_told(name, on_warning: Callable[[str], None] | None):
    """Give each ClippingWarning that decoding into `name` issues in the block to `on_warning("NAME: warning")`
    (other warnings are shown as they would have been); with `on_warning` None, leave them to be issued."""
    import warnings

    from .errors import ClippingWarning

    if on_warning is None:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ClippingWarning)
        yield
    for item in caught:
        if issubclass(item.category, ClippingWarning):
            on_warning(f"{name}: {item.message}")
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)


def set_aside_missing_models(folder: Path, files: list[Path], model, header_bytes: HeaderBytes, codecs: dict,
                             refuse_all: bool = True) -> tuple[list[Path], list[tuple[list[Path], str]]]:
    """Without `model`, the .vq files whose model is installed (and those whose header cannot be read, left
    to fail on their own), and the others grouped by the model id they name, each group with the line
    that says no installed model has it: one line per model, not one per file. Where every file names
    the same missing model (and `refuse_all`), that line is the error, before anything is done. The headers are
    read into `header_bytes`, or taken from it, and the installed models looked up kept in `codecs`, file_codec's
    (installed_model_of)."""
    from .registry import no_model_message

    if model is not None:
        return files, []
    kept, missing = [], {}
    for path in files:
        try:
            header = header_bytes.of(path)
            parsed = vqformat.parse_header(header)
        except (OSError, VQCodecError):
            kept.append(path)
            continue
        if installed_model_of(header, codecs) is not None:
            kept.append(path)
        else:
            missing.setdefault(parsed.model_id, (header, []))[1].append(path)
    groups = [(paths, no_model_message(header, len(paths))) for header, paths in missing.values()]
    if refuse_all and not kept and len(groups) == 1:
        raise VQCodecError(f"{plural(len(files), '.vq file')} of {folder}: {groups[0][1]}")
    return kept, groups


def decoding_model(model, data: bytes) -> str:
    """The model that decodes the `.vq` file `data`: `model`'s, or the installed one the file names. A folder given
    as `model` that holds several models is refused with the one among them that wrote the file, and a model of
    another id with the one beside it or installed that decodes the file (registry.find_model)."""
    from .registry import find_model, model_for_file

    if model is None:
        return model_for_file(data)
    return str(find_model(model, wrote=data))


def load_given_model(model, device, files: list[Path], header_bytes: HeaderBytes, codecs: dict,
                     coding: str = "auto") -> None:
    """Load `model`, where given, into `codecs`, the codecs of a folder's files as file_codec keeps them (and the
    models set_aside_missing_models looked up), before any file, so that a model that cannot be loaded is one error
    and not one per file. A folder of several models given as `model` is refused naming the one among them that wrote
    the most of the .vq `files` (registry.find_model), whose headers are read into `header_bytes`, or taken from it."""
    from .codec import Codec
    from .registry import find_model

    if model is None:
        return
    if isinstance(model, (str, Path)):  # else Codec.load's refusal of the type
        find_model(model, wrote_files=_readable_headers(files, header_bytes))
    codecs[model] = Codec.load(model, device=device, coding=coding)


def _readable_headers(files: list[Path], header_bytes: HeaderBytes) -> Iterator[vqformat.Header]:
    """The headers of the .vq `files` that can be read, read (into `header_bytes`) only once asked for."""
    yield from read_headers(files, header_bytes)[0].values()


def file_codec(data: bytes, model, device, codecs: dict, coding: str = "auto"):
    """The codec of the model a .vq file names (or `model`), kept in `codecs` by model for the next file."""
    from .codec import Codec
    from .registry import model_for_file

    name = model or model_for_file(data, lambda header: installed_model_of(header, codecs))
    if name not in codecs:  # with a model, a single file's (a folder's was loaded first: load_given_model)
        codecs[name] = Codec.load(name if model is None else decoding_model(model, data), device=device, coding=coding)
    elif model is not None:
        refuse_another_models_file(codecs[name], model, data, codecs)
    return codecs[name]


def installed_model_of(data: bytes, codecs: dict) -> dict | None:
    """registry.model_of_file of a .vq file (`data`, its header at least), looked up once for each model id and prior
    among a folder's files, for the models set aside and the run alike, and kept in `codecs` (file_codec's): each
    lookup lists the installed models, reading their NAME.json and weights' header."""
    from .registry import model_of_file

    header = vqformat.parse_header(data)
    key = ("installed", header.model_id, header.coded_prior_id)
    if key not in codecs:
        codecs[key] = model_of_file(data)
    return codecs[key]


def refuse_another_models_file(codec, model: str, data: bytes, codecs: dict) -> None:
    """With a model, a folder's file that it does not decode is refused as one file is (decoding_model):
    with the model that decodes it named, looked up once for each model id and prior among the files."""
    try:
        header = vqformat.parse_header(data)
    except VQCodecError:
        return  # the codec refuses it
    if codec.decodes_files_of(header.model_id):
        return
    key = ("refusal", header.model_id, header.coded_prior_id)
    if key not in codecs:
        try:
            decoding_model(model, data)
            codecs[key] = None  # no model found that decodes it: the codec's own refusal
        except VQCodecError as exc:
            codecs[key] = str(exc)
    if codecs[key] is not None:
        raise VQCodecError(codecs[key])


def salvageable(codec, data: bytes) -> bool:
    """Whether a file that failed to decode is damaged in its chunks only (so salvage can help)."""
    try:
        return bool(codec.damaged_parts(data))
    except VQCodecError:
        return False


def with_salvage_hint(error: VQCodecError, codec, data: bytes) -> VQCodecError:
    """The error of a file that failed to decode without salvage, saying that salvage decodes what is
    intact where it can (salvageable)."""
    from .fileinfo import with_advice

    if not salvageable(codec, data):
        return error
    return with_advice(error, f"{setting('--salvage', 'salvage=True')} decodes what is intact")


def codes_folder(files: list[Path], outputs: list[Path], codec_for: Callable[[bytes], object],
                 write: Callable[[Path, Callable], None], log: Callable[[str], None] | None = None,
                 stopped: Callable[[FolderReport, list[dict]], None] | None = None,
                 progress: Callable[[str], None] | None = None,
                 kept: FolderReport | None = None,
                 set_aside: list[tuple[list[Path], str]] = ()) -> tuple[FolderReport, list[dict]]:
    """Write the codes of `.vq` files into `outputs` as int32 .npy files (Codec.code_blocks, a block
    at a time), and return the report and, for each file written, its codes' shape and what restores
    it (the model id and codes id, kind and quality, and the rate, length, channels and gain, or the size), and the
    .vq file's size, time and content hash (tokens.input_stamp, of the bytes coded: tokens.read_vq_file_stamped reads
    the file once); a file whose size, time or inode change time changed while it was read is skipped
    (tokens.check_unchanged_since).
    `codec_for(data)` gives the codec of a file; `write(path, write_stream)` writes one output;
    `stopped(report, entries)` is called with what was done when the run is stopped (Ctrl-C, SIGTERM, or
    any error raised, MemoryError say), before that is raised again. `kept` counts the arrays a resume keeps (files
    and bytes), which the report, and the line a stop by Ctrl-C or SIGTERM gives `log`, count too; `set_aside` is the
    report's (FolderReport)."""
    from .imageio import warn_of_what_codes_leave_out
    from .tokens import check_unchanged_since, read_vq_file_stamped, save_code_blocks

    entries = []

    def make(path: Path, output: Path) -> int:
        data, stamp, change_time_ns = read_vq_file_stamped(path)
        check_unchanged_since(path, stamp, change_time_ns)  # a change while it was read is a change
        codec = codec_for(data)
        header, shape, blocks = codec.code_blocks(data)
        audio = header.kind == vqformat.KIND_AUDIO
        with folder_of(output):
            write(output, lambda stream: save_code_blocks(stream, shape, 2 if audio else 1, blocks))
        warn_of_what_codes_leave_out(header, path)
        entries.append({"file": path, "codes": output, "shape": list(shape), **header_entry(header, codec.codes_id),
                        **stamp})
        return output.stat().st_size
    report = FolderReport("mixed", kept.written if kept else 0, kept.bytes if kept else 0, set_aside=list(set_aside))
    try:
        return _each_file(files, outputs, make, report, "coded", log, progress), entries
    except BaseException:  # the arrays written keep the manifest that restores them
        if stopped:
            stopped(report, entries)
        raise


def codes_of_vq_tree(folder, out, *, model=None, device: str = "cpu", replace: bool = False, resume: bool = False,
                     log: Callable[[str], None] | None = None, progress: Callable[[str], None] | None = None
                     ) -> FolderReport | None:
    """Write the codes of the .vq files under `folder` to .npy files under `out`, each at its relative path, and
    codes.json, in which each file names its own model id, codes id, kind and quality and what restores its codes
    (codes_folder), and return the FolderReport: `vqcodec codes FOLDER OUT` of a folder of .vq files and no media.

    Each file is read by the installed model it names, loaded once for all the files that name it, or by `model`.
    Refused by VQCodecError before any file is read (nothing written): `out` a file, no .vq file, every file naming
    one model not installed, two files that would write one output, an output that is an input, and, unless
    `replace`, an output or codes.json that exists. Files whose model is not installed are set aside (the report's
    `set_aside`, and codes.json's "skipped"); a file that cannot be read is skipped and the others go on. A run stopped
    part way (Ctrl-C, or any error) writes the codes.json of the files it finished, with "stopped": true; with
    `resume`, the stopped run in `out` goes on (tokens.stopped_vq_run_entries: the files it finished, unchanged since,
    are kept, the others coded, its outputs replaced), and where `out`'s codes.json is of a run that finished nothing
    is done, `log` is told so, and None returned. `log(line)` is told what a resume keeps and codes, and a stop's
    lines; `progress(line)` (else `log`) how many files are done every 100 files."""
    from .streams import checked_flag
    from .tokens import MANIFEST, resumed_line, stopped_vq_run_entries, write_vq_manifest

    check_callbacks(log=log, progress=progress)
    replace, resume = checked_flag("replace", replace), checked_flag("resume", resume)
    refuse_replace_with_resume(replace, resume)
    folder, out = _folder_and_out(folder, out)
    passed_over: list[tuple[Path, str]] = []
    header_bytes, codecs = HeaderBytes(), {}
    files, missing = set_aside_missing_models(folder, find_vq_files(folder, out, passed_over), model, header_bytes,
                                              codecs)
    missing = passed_over_of(passed_over) + missing
    outputs = mirrored_paths(folder, out, files, lambda path: ".npy", also=(out / MANIFEST,))
    stopped_run = stopped_vq_run_entries(folder, out, files, outputs, header_bytes) if resume else {}
    if stopped_run is None:
        if log:
            log(nothing_to_resume_line(out))
        return None
    finished = {path: entry for path, (entry, _) in stopped_run.items()}
    if not resume:
        refuse_existing_outputs([*outputs, out / MANIFEST], replace)
    order = {path: number for number, path in enumerate(files)}

    def with_finished(entries: list[dict]) -> list[dict]:
        return sorted([*finished.values(), *entries], key=lambda entry: order[entry["file"]])
    to_do = [(path, output) for path, output in zip(files, outputs) if path not in finished]
    if resume and log:
        log(resumed_line(len(finished), len(to_do)))
    # each array as it was checked: one removed since is not read again
    kept = FolderReport("mixed", len(finished), sum(size for _, size in stopped_run.values()))
    load_given_model(model, device, files, header_bytes, codecs)
    finished = {path: with_codes_id(entry, model, device, codecs, header_bytes) for path, entry in finished.items()}
    replace = replace or resume
    report, entries = codes_folder(
        [path for path, _ in to_do], [output for _, output in to_do],
        lambda data: file_codec(data, model, device, codecs),
        lambda path, write: write_new_file(path, write, replace), log,
        stopped=lambda report, entries: write_vq_manifest(folder, out, with_finished(entries),
                                                          _each_skipped(report, missing), stopped=True,
                                                          replace=replace),
        progress=progress, kept=kept, set_aside=missing)  # counted in the summary and a stop's lines alike
    if report.written:
        write_vq_manifest(folder, out, with_finished(entries), _each_skipped(report, missing), replace=replace)
    return report


def refuse_replace_with_resume(replace: bool, resume: bool) -> None:
    """A codes run told both to go on with a stopped run and to start again, refused."""
    if replace and resume:
        raise VQCodecError(setting("--resume goes on with a stopped run, --force starts again: give one of them",
                                   "resume=True goes on with a stopped run, replace=True starts again: give one of "
                                   "them"))


def nothing_to_resume_line(out: Path) -> str:
    """What a resume says where `out`'s codes.json is of a run that finished."""
    from .tokens import MANIFEST

    return (f"nothing to resume: {Path(out) / MANIFEST} is of a run that finished; "
            f"{setting('--force', 'replace=True')} codes the folder again")


def _each_skipped(report: FolderReport, missing: list[tuple[list[Path], str]]) -> list[tuple[Path, str]]:
    """The files a folder run skipped, with why, one by one (for a manifest), those of missing models too."""
    return [(path, reason) for paths, reason in missing for path in paths] + report.skipped


def with_codes_id(entry: dict, model, device: str, codecs: dict, header_bytes: HeaderBytes) -> dict:
    """An entry that a resumed codes_of_vq_tree keeps from a codes.json written before codes ids, given the codes
    id a new run records (after its model id), where the codec that reads its file (file_codec) is of the model id
    it names; as it is where it has one, or where that codec is another model's (a fine-tune given as `model`, which
    may make other codes) or cannot be had: pack then checks it by its model id, as before. Its file's header is
    read into `header_bytes`, or taken from it."""
    if "codes_id" in entry:
        return entry
    try:
        codec = file_codec(header_bytes.of(entry["file"]), model, device, codecs)
    except (VQCodecError, OSError):
        return entry
    if codec.model_id.hex() != entry.get("model_id"):
        return entry
    with_id = {}
    for key, value in entry.items():
        with_id[key] = value
        if key == "model_id":
            with_id["codes_id"] = codec.codes_id.hex()
    return with_id


def header_entry(header: vqformat.Header, codes_id: bytes | None = None) -> dict:
    """What the codes.json of a folder of .vq files records of a file from its header: the model id, kind and
    quality, and the rate, length, channels and gain, or the size, that restore its codes; and, where given, the codes
    id of the model that read them (the same as that of the model that made them, which the header does not tell)."""
    restore = {"sample_rate": header.sample_rate, "samples": header.length, "channels": header.channels,
               "gain": header.gain} if header.kind == vqformat.KIND_AUDIO else {"width": header.width,
                                                                               "height": header.height}
    return {"model_id": header.model_id.hex(), **({"codes_id": codes_id.hex()} if codes_id is not None else {}),
            "kind": vqformat.KIND_NAMES[header.kind], "quality": header.quality, **restore}


def check_output_of(image_format: str, header: vqformat.Header, data: bytes) -> None:
    """Refuse, before it is decoded, an image file's output that imageio.check_image_output shows cannot be
    written in `image_format`, from the file's header and alpha plane."""
    from .fileinfo import alpha_plane
    from .imageio import IMAGE_MODE_NAMES, check_image_output

    if header.mode not in IMAGE_MODE_NAMES:
        return  # decoding says the mode is unknown
    try:
        alpha = alpha_plane(header, vqformat.parse_file(data)[2])
    except VQCodecError:
        alpha = None  # damaged: decoding says how, or salvages it
    check_image_output(image_format, IMAGE_MODE_NAMES[header.mode], header.width, header.height, alpha)


def read_headers(files: list[Path], header_bytes: HeaderBytes
                 ) -> tuple[dict[Path, vqformat.Header], list[tuple[Path, str]]]:
    """The header of each `.vq` file, read alone (into `header_bytes`, or taken from it), and the files whose header
    cannot be read or is not valid, with why."""
    headers, unreadable = {}, []
    for path in files:
        try:
            headers[path] = vqformat.parse_header(header_bytes.of(path))
        except VQCodecError as exc:
            unreadable.append((path, str(exc)))
        except OSError as exc:
            unreadable.append((path, f"cannot read ({reason_of(exc)})"))
    return headers, unreadable


def _header_bytes(path: Path) -> bytes:
    """The first vqformat.HEADER_SIZE bytes of the file at `path`, a .vq file's header where it is one."""
    with open(path, "rb") as stream:
        return stream.read(vqformat.HEADER_SIZE)


class HeaderBytes(dict):
    """The headers of a folder's .vq files (_header_bytes) by path, each file read once, when first asked for, for
    all the steps of a folder command before its run (the refusals, the models set aside, the codecs loaded), or the
    OSError that reading it raised."""

    def __missing__(self, path: Path) -> bytes | OSError:
        try:
            self[path] = _header_bytes(path)
        except OSError as exc:
            self[path] = exc
        return self[path]

    def of(self, path: Path) -> bytes:
        """The header bytes of `path`, read where they were not yet; the OSError of reading them raised again."""
        read = self[path]
        if isinstance(read, OSError):
            raise read
        return read


def audio_outputs_refused(headers: dict[Path, vqformat.Header], audio_format: str, rate: int | None
                          ) -> list[tuple[list[Path], str]]:
    """The audio files of `headers` whose output `audio_format` cannot hold (at `rate` Hz, else at the
    file's own rate, with its channels), grouped by why: soundio.check_audio_output, once for each rate and
    channel count, from the headers alone, before any model is loaded or any file decoded."""
    from .soundio import check_audio_output, soundfile_format

    container, subtype = soundfile_format(audio_format, None)
    reasons, refused = {}, {}
    for path, header in headers.items():
        if header.kind != vqformat.KIND_AUDIO:
            continue
        output = (rate or header.sample_rate, header.channels)
        if output not in reasons:
            try:
                check_audio_output(container, subtype, *output)
                reasons[output] = None
            except VQCodecError as exc:
                reasons[output] = str(exc)
        if reasons[output]:
            refused.setdefault(reasons[output], []).append(path)
    return [(paths, reason) for reason, paths in refused.items()]


def output_formats(format_name: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The output format and file extension for each kind: WAV and PNG, except the kind whose
    format --format names (an audio format soundfile writes, or an image format Pillow writes)."""
    from PIL import Image

    from .io import NETPBM_VARIANTS, image_format_of_suffix
    from .soundio import audio_format_named

    formats, extensions = {"audio": "WAV", "image": "PNG"}, dict(DEFAULT_EXTENSIONS)
    if format_name is None:
        return formats, extensions
    name, suffix, audio = format_name.upper(), "." + format_name.lower(), audio_format_named(format_name)
    Image.init()
    if audio:
        formats["audio"], extensions["audio"] = audio, "." + audio.lower()
    elif name in Image.SAVE:
        formats["image"] = name
        extensions["image"] = IMAGE_EXTENSIONS.get(name) or next(
            (ext for ext, owner in Image.EXTENSION.items() if owner == name), suffix)
    elif image_format_of_suffix(suffix) in Image.SAVE:  # named by its extension (jpg, tif), as one file's --format
        # (a Netpbm variant stays named: each holds other modes)
        formats["image"] = suffix[1:] if suffix[1:] in NETPBM_VARIANTS else image_format_of_suffix(suffix)
        extensions["image"] = suffix
    else:
        raise VQCodecError(f"unknown output format {format_name}: an audio format soundfile writes (WAV, FLAC, "
                           "OGG, ...) or an image format Pillow writes (PNG, WEBP, ...)")
    return formats, extensions
