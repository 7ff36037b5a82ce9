"""Where models are: the shipped ones (installed with the package as `vqcodec.shipped`, or `models/`
in a checkout), the folders of $VQCODEC_MODEL_PATH before them, and which one wrote a `.vq` file."""
from __future__ import annotations

import importlib.util
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from . import format as vqformat
from .config import FORMAT_VERSION, config_from_dict
from .errors import VQCodecError
from .streams import checked_flag, open_regular_file, read_json_file, why_missing
from .wording import capped_list, plural, reason_of, setting, shown, shown_cut

RETIRED_MODELS = "retired.json"  # in the shipped models' folder: earlier releases' models and where they are
# what list_models marks a model with, from where it is on the search path: never taken from its NAME.json
LISTING_MARKS = ("shadowed", "shadowed_by_unlisted")
MAX_MODEL_JSON_BYTES = 1 << 24  # a NAME.json holds a config, ids and records: the shipped ones take 3 and 8 KB
# how many installed models an unknown name's error names, the others counted: enough to find a mistyped name
# among the usual few, not a line of thousands of characters where $VQCODEC_MODEL_PATH names a folder of runs
INSTALLED_NAMED = 10


def read_model_json(path: Path):
    """The JSON value of a model's NAME.json, read only from a regular file of at most MAX_MODEL_JSON_BYTES
    (OSError, ValueError otherwise)."""
    return read_json_file(path, MAX_MODEL_JSON_BYTES, "a model's JSON")


def shipped_models_dir() -> Path:
    spec = importlib.util.find_spec("vqcodec.shipped")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "models"


def _model_path_entries() -> list[Path]:
    # '~/m' quoted
    return [Path(p).expanduser() for p in os.environ.get("VQCODEC_MODEL_PATH", "").split(os.pathsep) if p]


def model_search_path() -> list[Path]:
    """$VQCODEC_MODEL_PATH's folders, then the shipped models', each once (a folder named twice listed
    its models twice, the second time as shadowed by themselves)."""
    folders = {}
    for folder in _model_path_entries() + [shipped_models_dir()]:
        if _unlistable(folder) is not None:  # model_path_problems says why
            continue
        folders.setdefault(os.path.realpath(folder), folder)  # Path.resolve raised for a link in a loop
    return list(folders.values())


def model_path_problems() -> list[str]:
    """What is wrong with the entries of $VQCODEC_MODEL_PATH that are no folder, or one that cannot be listed, where
    no model can be found: a name mistyped, a model's file named in place of its folder, a folder without
    permission to read it."""
    problems = []
    for entry in _model_path_entries():
        if (why := _unlistable(entry)) is not None:
            problems.append(f"VQCODEC_MODEL_PATH names {entry}: {why}")
        elif entry.is_file():
            problems.append(f"VQCODEC_MODEL_PATH names {entry}, a file, not a folder: name the folder that "
                            f"holds it, {entry.parent}")
        elif not entry.exists():
            why = why_missing(entry, "no such folder")  # or why it cannot be looked at: a link in a loop
            problems.append(f"VQCODEC_MODEL_PATH names {entry}: {why}"
                            + ("" if entry.is_absolute() or why != "no such folder" else f" in {Path.cwd()}"))
        elif not entry.is_dir():
            problems.append(f"VQCODEC_MODEL_PATH names {entry}, which is not a folder")
    return problems


def _unlistable(folder: Path) -> str | None:
    """Why the folder `folder` cannot be listed (no permission to read it, or a folder above it; a link in a
    loop); None where it can, or where there is no folder there, which model_path_problems names otherwise."""
    try:
        with os.scandir(folder):
            return None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return reason_of(exc)


def is_model_path(name: str) -> bool:
    """Whether a model reference is a path to a model's files (one with a folder in it, such as
    ./mine or runs/mine, a .safetensors or .json suffix, or . or ..) rather than a model name: a bare
    name is always searched for, even where a file or folder of that name is in the current folder."""
    name = str(name)
    return (any(sep in name for sep in {"/", os.sep}) or name in (".", "..")
            or Path(name).suffix in (".safetensors", ".json"))


def find_model(name: str, wrote: bytes | None = None, wrote_files: Iterable[vqformat.Header] = ()) -> Path:
    """A model name (searched in $VQCODEC_MODEL_PATH, then the shipped models) or a path to its files
    (is_model_path: one with a folder or a model file's suffix in it). A folder must hold one model;
    where it holds several, the error lists them, and, given `wrote` (the start of a `.vq` file, its
    header at least), names the one that decodes that file, or given `wrote_files` (the headers of a folder's
    `.vq` files, taken only there), the one that decodes most of them (folder_model_advice). Given `wrote`, a model
    of another id than the file's is refused where a model that decodes it is found (decoder_advice).
    A name the system cannot look up (too long a name or path) is one VQCodecError."""
    if not str(name).strip():
        raise VQCodecError("a model name or path cannot be empty")
    if "\0" in str(name):  # no file is named so: the error printed the NUL itself, within the path
        raise VQCodecError(f"a model name or path cannot hold a NUL character: {shown_cut(str(name))}")
    try:
        return _find_model(name, wrote, wrote_files)
    except OSError as exc:  # Path.exists and is_dir pass over a missing file, not ENAMETOOLONG
        raise VQCodecError(f"cannot look for the model {shown_cut(str(name))}: {reason_of(exc)}") from None


def _find_model(name: str, wrote: bytes | None, wrote_files: Iterable[vqformat.Header]) -> Path:
    candidate = Path(name)
    if is_model_path(name):
        if candidate.is_dir():
            found = folder_models(candidate)
            if not found:
                raise VQCodecError(_no_model_in(candidate))
            if len(found) > 1:
                raise VQCodecError(f"{candidate}: expected one model (NAME.safetensors + NAME.json) in the folder, "
                                   f"found {len(found)} ({capped_list(p.stem for p in found)}): "
                                   + folder_model_advice(found, wrote, wrote_files))
            path = found[0]
        else:
            path = _weights_path(candidate)
        if not path.exists():
            raise VQCodecError(_unreachable(path) or f"model file not found: {path}")
        return _decoding(name, path, wrote)
    half = None  # the first model of that name with one of its two files missing
    for folder in model_search_path():
        path = folder / f"{name}.safetensors"
        for file in (path, path.with_suffix(".json")):  # a link that is there but leads nowhere takes the name too
            if (problem := _unreachable(file)) is not None:
                raise VQCodecError(f"model {shown(name)}: {problem}")
        if path.exists() and path.with_suffix(".json").exists():
            return _decoding(name, path, wrote)
        half = half or next((p for p in (path, path.with_suffix(".json")) if p.exists()), None)
    if half is not None:
        missing = half.with_suffix(".json" if half.suffix == ".safetensors" else ".safetensors")
        raise VQCodecError(f"model {shown(name)}: {half} has no {missing.name} beside it")
    available = capped_list((m["name"] for m in list_models()), INSTALLED_NAMED) or "none"
    local = f"; for the model in {name}, give it as a path: ./{name}" if candidate.exists() else ""
    raise VQCodecError(f"unknown model {shown(name)} (installed: {available}){local}"
                       + "".join(f"; {problem}" for problem in model_path_problems()))


def _unreachable(path: Path) -> str | None:
    """Why a model's file that is there, as a link, cannot be reached (a link to itself, to a missing file), or
    None: it is reachable, or not there."""
    if not os.path.islink(path) or path.exists():
        return None
    return f"cannot read {path}: {why_missing(path, 'a link to a missing file')}"


def _weights_path(path: Path) -> Path:
    """The NAME.safetensors of a model path given as NAME, NAME.safetensors or NAME.json (NAME may hold
    a dot: runs/mine.v2 is runs/mine.v2.safetensors, not runs/mine.safetensors)."""
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")


def folder_model_advice(paths: list[Path], wrote: bytes | None,
                        wrote_files: Iterable[vqformat.Header] = ()) -> str:
    """Which of the models at `paths` (one folder's) to give: with `wrote`, a `.vq` file's header, the --model that
    decodes that file (its own id, or one that lists the id under "decodes"; of those, the one with the file's
    prior first), else one of its id but another prior, or that none of them does; with `wrote_files`, the headers
    of a folder's `.vq` files, the one that decodes most of them alike; without either, any one by its path, the
    folder's last training run's where it has one (for whichever option named the folder: -m, --init, fit-prior's
    MODEL). Named as the option or argument (setting)."""
    if wrote is not None:
        return _advice_for_files(paths, [vqformat.parse_header(wrote)], one_file=True)
    headers = list(wrote_files)
    if headers:
        return _advice_for_files(paths, headers)
    last = _last_runs_model(paths)
    return (f"give one of them by its path, such as {last}, the model of the folder's last training run (its "
            "checkpoint's)" if last else f"give one of them by its path, such as {paths[0]}")


def _advice_for_files(paths: list[Path], headers: list[vqformat.Header], one_file: bool = False) -> str:
    """The model among `paths` that decodes the most of the `.vq` files of `headers` (that of one file, `one_file`),
    by model id and prior, named as the option or argument (setting); else one with the id of the model that wrote
    the most of them but another prior, or that none of them wrote the files."""
    writers = Counter((header.model_id.hex(), header.coded_prior_id) for header in headers)
    models = _models_at(paths)
    decoders = {writer: _decoders_of(models, writer[0]) for writer in writers}
    them = "it" if one_file else "them"

    def files_of(count: int) -> str:
        if one_file:
            return "this file"
        return "the files" if count == len(headers) else f"{count} of the {len(headers)} files"

    for (wanted, prior_id), count in writers.most_common():
        chosen = _with_prior(decoders[wanted, prior_id], prior_id)
        if chosen is not None:
            path = str(chosen["path"])
            named = setting(f"--model {path}", f"model={shown(path)}")
            return f"pass {named}, the one that wrote {files_of(count)} (model {wanted})"
    for (wanted, prior_id), count in writers.most_common():
        if decoders[wanted, prior_id]:
            return (f"{decoders[wanted, prior_id][0]['path']} has the id of the model that wrote {files_of(count)} "
                    f"({wanted}) but another prior: pass the model files that wrote {them}")
    ids = list(dict.fromkeys(wanted for (wanted, _), _ in writers.most_common()))
    return (f"none of them wrote {files_of(len(headers))} ({'model' if len(ids) == 1 else 'models'} "
            f"{capped_list(ids)}); " + setting("pass --model with the one that did", "pass the one that did as model"))


def folder_models(folder: Path) -> list[Path]:
    """The models in `folder`: its NAME.safetensors files with NAME.json beside them, but a checkpoint."""
    return [p for p in sorted(folder.glob("*.safetensors"))
            if p.with_suffix(".json").exists() and p.stem != "checkpoint"]


def _last_runs_model(paths: list[Path]) -> Path | None:
    """Of the models at `paths` (one folder's), the one the training run whose checkpoint is in that folder wrote
    (a run over another's, with --force and another --name, leaves the earlier models there), or None."""
    try:
        record = read_model_json(paths[0].parent / "checkpoint.json")
    except (OSError, ValueError, RecursionError):
        return None
    name = record.get("name") if isinstance(record, dict) else None
    return next((path for path in paths if isinstance(name, str) and path.stem == name), None)


def _no_model_in(folder: Path) -> str:
    """The refusal of a folder that holds no model; of a training run's folder stopped before it wrote its model,
    with what writes it, as its checkpoint given as a model says (modelfile.checkpoint_kind)."""
    checkpoint = folder / "checkpoint.safetensors"
    try:
        record = read_model_json(checkpoint.with_suffix(".json")) if checkpoint.exists() else None
    except (OSError, ValueError, RecursionError):  # not a checkpoint's record: the folder holds no model
        record = None
    if isinstance(record, dict) and "step" in record:
        from .modelfile import checkpoint_kind  # modelfile imports this module
        return f"{folder} holds no model but {checkpoint}, {checkpoint_kind(checkpoint, record)}"
    return f"{folder}: expected one model (NAME.safetensors + NAME.json) in the folder"


def _decoding(name: str, path: Path, wrote: bytes | None) -> Path:
    """`path`, the model `name` names, unless `wrote` (a `.vq` file's header) is of another model id and
    decoder_advice finds the model that decodes it: then the error names that one."""
    if wrote is None:
        return path
    meta = _valid_meta(path)
    header = vqformat.parse_header(wrote)
    wanted = header.model_id.hex()
    if meta is None or _decoders_of([meta], wanted):
        return path
    advice = decoder_advice(wanted, header.coded_prior_id, path.parent if is_model_path(name) else None)
    if advice is None:
        return path
    raise VQCodecError(f"file was written by model {wanted}, not {name} ({meta['model_id']}); pass "
                       f"{setting(f'--model {advice}', f'model={shown(advice)}')}, which decodes it")


def decoder_advice(model_id: str, prior_id: int | None, folder: Path | None = None) -> str | None:
    """How to name the model that decodes files of `model_id` (and `prior_id`, for an entropy-coded one), for
    --model: the path of one in `folder` (that of the model given), else an installed one's name (its path
    where another of that name hides it); None where there is none."""
    if folder is not None:
        chosen = _with_prior(_decoders_of(_models_at(folder_models(folder)), model_id), prior_id)
        if chosen is not None:
            return str(chosen["path"])
    installed = _with_prior(_decoders_of(list_models(shadowed=True), model_id), prior_id)
    if installed is None:
        return None
    return installed["path"] if installed.get("shadowed") else installed["name"]


def is_model_id(value) -> bool:
    return isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def meta_problem(meta: dict) -> str | None:
    """What makes a model's NAME.json (a dict with "model_id" and "config") unusable, or None."""
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or version != FORMAT_VERSION:
        return f"format_version {version!r} (this vqcodec reads model files of version {FORMAT_VERSION})"
    if not is_model_id(meta["model_id"]):
        return f"a bad model_id ({shown_cut(meta['model_id'])}: not 16 hex digits)"
    try:
        config_from_dict(meta["config"])
    except (ValueError, TypeError) as exc:
        return f"a bad config ({exc})"
    decodes = meta.get("decodes", [])
    if not isinstance(decodes, list) or not all(is_model_id(item) for item in decodes):
        return f"a bad \"decodes\" ({shown_cut(decodes)}: not a list of model ids)"
    if "codes_id" in meta and not is_model_id(meta["codes_id"]):
        return f"a bad \"codes_id\" ({shown_cut(meta['codes_id'])}: not 16 hex digits)"
    if decodes and "codes_id" not in meta:  # nothing would check "decodes" against the weights (read_model_files)
        return ("\"decodes\" without \"codes_id\", which checks its encoder and codebooks against the models it lists "
                "(edited by hand, or written by an older train --max-steps 0): remove \"decodes\" to decode its own "
                "files only, or make it again from the model it was made from")
    training = meta.get("training", {})
    if training is not None and not isinstance(training, dict):
        return f"a bad \"training\" ({shown_cut(training)}: not a record)"
    return None


def list_models(shadowed: bool = False, problems: list[str] | None = None) -> list[dict]:
    """The installed models, in search order. A name found again later in the search path is hidden by
    the first (which `Codec.load(name)` takes); with `shadowed`, those are listed too, marked "shadowed".
    A model whose NAME.json cannot be read or is not valid is left out, and why is added to `problems`.
    "kind" and "sample_rate" are the config's. `vqcodec models --json` lists them so, with shadowed=True."""
    shadowed = checked_flag("shadowed", shadowed)  # "no" listed the shadowed ones
    if problems is not None and not isinstance(problems, list):  # a tuple raised an AttributeError at a problem
        raise VQCodecError(f"problems is a list that why a model is left out is added to, or None, not "
                           f"{shown_cut(problems)}")
    models, seen, listed = [], set(), set()
    for folder in model_search_path():
        for meta_path in sorted(folder.glob("*.json")):
            if meta_path.stem in seen and not shadowed:
                continue
            weights = meta_path.with_suffix(".safetensors").is_file()
            try:
                meta = read_model_json(meta_path)
            except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
                if not weights:
                    continue  # not a model's
                meta, problem = None, f"an unreadable {meta_path.name} ({reason_of(exc)})"
            else:
                if not isinstance(meta, dict) or "model_id" not in meta or "config" not in meta:
                    continue  # another JSON file beside weights: a training checkpoint's
                if not weights:  # half a model, which find_model passes over for the next of its name
                    if problems is not None:
                        problems.append(f"model {meta_path} has no {meta_path.stem}.safetensors beside it")
                    continue
                problem = meta_problem(meta) or _weights_problem(meta_path.with_suffix(".safetensors"))
            if problem is None:
                config = config_from_dict(meta["config"])
                record = {key: value for key, value in meta.items() if key not in LISTING_MARKS}
                models.append({**record, "name": meta_path.stem, "path": str(meta_path.with_suffix(".safetensors")),
                               "kind": config.kind,
                               **({"sample_rate": config.sample_rate} if config.kind == "audio" else {}),
                               **({"shadowed": True} if meta_path.stem in seen else {}),
                               # the first of its name was left out (problems says why), and still takes the name
                               **({"shadowed_by_unlisted": True} if meta_path.stem in seen - listed else {})})
                listed.add(meta_path.stem)
            elif problems is not None:
                problems.append(f"model {meta_path.with_suffix('.safetensors')} has {problem}")
            seen.add(meta_path.stem)  # a broken model still takes its name: find_model finds it first
    return models


def _weights_problem(path: Path) -> str | None:
    """What makes a model's NAME.safetensors unreadable, from its header alone (a copy cut short, a file of
    something else), or None: such a model is left out where a whole one of the same id could decode."""
    try:
        with open_regular_file(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            header_size = int.from_bytes(stream.read(8), "little")
            if header_size > size - 8:
                return f"weights cut short or in no safetensors file ({plural(size, 'byte')}, too few for their header)"
            header = json.loads(stream.read(header_size))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        return f"unreadable weights ({reason_of(exc)})"
    if not all(isinstance(end, int) and not isinstance(end, bool) for end in ends):
        return "unreadable weights (a tensor's data_offsets are not whole numbers)"
    end = max(ends, default=0)
    if 8 + header_size + end > size:
        return f"weights cut short ({size} bytes of {8 + header_size + end})"
    return None


def _prior_id(model: dict) -> int | None:
    prior = model.get("prior")
    return prior.get("id") if isinstance(prior, dict) else None


def model_decoding(model_id: str, prior_id: int | None = None) -> dict | None:
    """The installed model that decodes files of `model_id`: the one of that id, else one that lists it
    under "decodes" (a decoder-only fine-tune of it, which reads the same codes); None if there is none.
    A file names its model by id, so shadowed models (list_models) count too. For an entropy-coded file,
    `prior_id` is the prior it names: a model that has it comes first (refitted copies share the id)."""
    found = _decoders_of(list_models(shadowed=True), model_id)
    return _with_prior(found, prior_id) or (found[0] if found else None)


def _decoders_of(models: list[dict], model_id: str) -> list[dict]:
    """The models of `models` that decode files of `model_id`: those of that id, then those that list it
    under "decodes" (decoder-only fine-tunes of it, which read the same codes)."""
    return [m for m in models if m["model_id"] == model_id] + [m for m in models if model_id in m.get("decodes", ())]


def _models_at(paths: list[Path]) -> list[dict]:
    """The NAME.json records of the models at `paths` whose NAME.json is valid, each with its "path"."""
    return [{**meta, "path": path} for path in paths if (meta := _valid_meta(path)) is not None]


def _with_prior(models: list[dict], prior_id: int | None) -> dict | None:
    """The first of `models` that has the prior `prior_id` (any, for None): refitted copies share an id."""
    return next((m for m in models if prior_id is None or _prior_id(m) == prior_id), None)


def _valid_meta(path: Path) -> dict | None:
    """The NAME.json record of the model at `path`, where it is readable and valid (meta_problem); else None."""
    try:
        meta = read_model_json(path.with_suffix(".json"))
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(meta, dict) and "model_id" in meta and "config" in meta and meta_problem(meta) is None:
        return meta
    return None


def model_of_file(data: bytes) -> dict | None:
    """model_decoding of the model and prior a `.vq` file's header names."""
    header = vqformat.parse_header(data)
    return model_decoding(header.model_id.hex(), header.coded_prior_id)


def other_prior_model(data: bytes, found: dict | None) -> dict | None:
    """`found`, the installed model that model_of_file gives a `.vq` file, when that model cannot decode
    it: the file is entropy coded with a prior that no installed model of its id has (one fitted to a
    copy of the model by `vqcodec fit-prior --out`, a copy that is not installed). None otherwise."""
    prior_id = vqformat.parse_header(data).coded_prior_id
    return found if found is not None and prior_id is not None and _prior_id(found) != prior_id else None


def model_for_file(data: bytes, lookup: Callable[[bytes], dict | None] = model_of_file) -> str:
    """Path of the installed model that decodes a `.vq` file, as `lookup` finds it (model_of_file)."""
    found = lookup(data)
    if found is not None:
        return found["path"]
    raise VQCodecError(no_model_message(data))


def no_model_message(data: bytes, files: int = 1) -> str:
    """Why no installed model decodes the `.vq` file whose header `data` begins (model_of_file is None),
    said of `files` files that name the same model."""
    header = vqformat.parse_header(data)
    wanted = header.model_id.hex()
    problems: list[str] = []
    list_models(shadowed=True, problems=problems)
    broken = " (some model files on the search path do not check out: `vqcodec models` says which)" if problems else ""
    wrote = "this file" if files == 1 else "them"
    advice = setting(f"pass --model with the model that wrote {wrote}",
                     f"decode {wrote} with a Codec of the model that wrote {'it' if files == 1 else 'them'} "
                     "(Codec.load of its path)")
    return (f"no installed model has id {wanted}{broken}; {advice}"
            + retired_model_hint(wanted, header.coded_prior_id)
            + "".join(f"; {problem}" for problem in model_path_problems()))


def retired_model_hint(model_id: str, prior_id: int | None = None) -> str:
    """Where an earlier release's model (with that prior) can be found, for error messages: models/retired.json
    lists the shipped models later releases replaced. Empty when it is not one of them."""
    try:
        entries = json.loads((shipped_models_dir() / RETIRED_MODELS).read_bytes())["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    for entry in entries:
        if entry.get("model_id") == model_id and (prior_id is None or entry.get("prior_id") == f"{prior_id:08x}"):
            name, commit = entry.get("name"), entry.get("commit")
            return (f" (it is {name} as shipped in vqcodec commit {commit}: "
                    f"`git show {commit}:models/{name}.safetensors`"
                    f" and the same for .json give its files)")
    return ""
