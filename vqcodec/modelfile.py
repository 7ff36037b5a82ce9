"""Model files: NAME.safetensors (weights) beside NAME.json (config, rates, id, training record).

The model id is a hash of the config and every weight, so a `.vq` file can name exactly the
model that wrote it. Nothing here uses pickle.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from .config import FORMAT_VERSION, config_from_dict, config_to_dict, parameter_count
from .errors import VQCodecError, is_out_of_memory
from .wording import json_names, plural, reason_of, shell_word
from .streams import (open_regular_file, remove_leftover_temporaries, write_by_path, write_file, write_files,
                      written_target)
from .memory import memory_bound, refuse_beyond
from .models import VQVAE
from .registry import find_model, meta_problem, read_model_json
from .runlock import folder_locked, folder_read_locked

# Training-only state that a shipped model does not need.
_TRAINING_BUFFERS = ("ema_count", "ema_sum", "idle_steps", "initialized")


def inference_state(model: VQVAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.endswith(_TRAINING_BUFFERS)}


FP16_MAX = 65504.0


def storage_form(tensor: torch.Tensor) -> torch.Tensor:
    """Float weights are stored as float16, which halves the file: the codecs' outputs do not change
    measurably (README, "Limits"). A tensor that float16 cannot hold stays float32."""
    if tensor.dtype != torch.float32 or tensor.numel() == 0 or not torch.isfinite(tensor).all() \
            or tensor.abs().max() > FP16_MAX:
        return tensor
    return tensor.half()


def _exact_storage_form(tensor: torch.Tensor) -> torch.Tensor:
    """The float16 storage form where it holds the values exactly (weights read from a float16 file), else as is."""
    stored = storage_form(tensor)
    return stored if torch.equal(stored.to(tensor.dtype), tensor) else tensor


def little_endian_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's values as the little-endian bytes safetensors stores, whatever the machine's own byte
    order: the ids hashed from them (model, codes and prior ids) are the same on every machine."""
    if not tensor.numel():
        return b""
    raw = tensor.contiguous().reshape(-1).view(torch.uint8)  # 0-d too
    if sys.byteorder == "big" and tensor.element_size() > 1:
        raw = raw.view(-1, tensor.element_size()).flip(1)
    return raw.numpy().tobytes()


def compute_model_id(config: dict, tensors: dict[str, torch.Tensor]) -> str:
    """The first 16 hex digits of a SHA-256 over the config and every tensor's name, shape and stored bytes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(little_endian_bytes(tensor))
    return digest.hexdigest()[:16]


CODE_TENSORS = ("encoder.", "quantizer.")  # what turns media into codes and codes into latents


def compute_codes_id(config: dict, tensors: dict[str, torch.Tensor]) -> str:
    """A hash of the config and of the encoder's and codebooks' values (as float32): two models with the
    same codes id make the same codes of any input and read codes as the same latents; only their
    decoders may differ (see `vqcodec train --decoder-only`), in weights and in width."""
    config = {key: value for key, value in config.items() if key != "decoder_channels"}
    return compute_model_id(config, {name: tensor.float() if tensor.is_floating_point() else tensor
                                     for name, tensor in tensors.items() if name.startswith(CODE_TENSORS)})


def save_model(model: VQVAE, path: Path, training: dict | None = None, extra: dict | None = None,
               exact: tuple[str, ...] = ()) -> Path:
    """Write the model files. Tensors whose names start with a prefix in `exact` keep their values to
    the bit (float16 only where it holds them exactly), so that a decoder-only fine-tune makes exactly
    the codes of its starting model."""
    path = Path(path).with_suffix(".safetensors")
    tensors = {name: _exact_storage_form(tensor) if exact and name.startswith(exact) else storage_form(tensor)
               for name, tensor in inference_state(model).items()}
    config = config_to_dict(model.cfg)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": path.stem,
        "kind": model.cfg.kind,
        "model_id": compute_model_id(config, tensors),
        "config": config,
        "codebook_sizes": [model.cfg.codebook_size] * model.cfg.num_codebooks,
        "training": training or {},
    }
    if model.cfg.kind == "audio":
        meta["sample_rate"] = model.cfg.sample_rate
    meta.update(extra or {})
    return write_model_files(path, meta, tensors)


def write_json(path: Path, value) -> None:
    """Write a JSON file through write_file (a temporary file beside it, renamed into place): a failure
    (a full disk, a read-only folder) is one VQCodecError, and leaves nothing behind."""
    write_file(path, _json_writer(value))


def _tensors_writer(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """A writer (streams.write_files) of the tensors' safetensors file into the temporary file named by its stream,
    tensor by tensor: safetensors' save_file writes the header and each tensor's bytes as they are, where its save built
    the whole file's bytes in memory first (twice: a run's peak, README Limits). The bytes are the same. save_file
    writes its own temporary file beside the path it is given, so it is given one in a private folder
    (streams.write_by_path)."""
    def write(stream) -> None:
        try:
            write_by_path(stream, lambda path: save_file(tensors, path, metadata=metadata))
        except SafetensorError as exc:
            raise _system_error_of(exc) from None
        except BaseException as exc:
            if not _out_of_memory_serialising(exc):
                raise
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)) from None  # a write failure, as a full disk's
    return write


def _system_error_of(exc: SafetensorError) -> Exception:
    """The OSError that safetensors' save_file met writing (a full disk: "I/O error: No space left on device
    (os error 28)"), or `exc` where it met none."""
    number = re.search(r"\(os error (\d+)\)", str(exc))
    return OSError(int(number[1]), os.strerror(int(number[1]))) if number else exc


def _out_of_memory_serialising(exc: BaseException) -> bool:
    """Whether safetensors' save ran out of memory: a MemoryError, or the panic its Rust code makes of one (seen when
    it built the whole file's bytes, in a training run past its RLIMIT_DATA as it saved its last checkpoint)."""
    return isinstance(exc, MemoryError) or _is_allocation_panic(exc)


def _is_allocation_panic(exc: BaseException) -> bool:
    """Whether `exc` is the panic of safetensors' Rust code where a Python object it makes cannot be allocated: pyo3's
    PanicException (a BaseException, which pyo3 exports nowhere to import), "PyObject pointer is null", raised in
    place of the MemoryError met (which pyo3 prints first, and its panic hook the panic's text)."""
    return type(exc).__name__ == "PanicException" and str(exc) == "PyObject pointer is null"


def _json_writer(value):
    """A writer of `value` as JSON that strict readers take: a path that is not UTF-8 (a training folder's) is given
    as valid text and exactly in hex beside it (json_names), where it was lone surrogates ("caf\\udce9")."""
    return lambda stream: stream.write((json.dumps(json_names(value), indent=2) + "\n").encode())


def write_model_files(path: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write NAME.safetensors and NAME.json together (streams.write_files): a failure or a stop while they are
    written leaves both as they were, so that the JSON always describes the weights (their prior)."""
    path = Path(path).with_suffix(".safetensors")
    meta = {**meta, "name": path.stem}
    write_files([(path, _tensors_writer({k: v.contiguous() for k, v in tensors.items()})),
                 (path.with_suffix(".json"), _json_writer(meta))])
    return path


def write_checkpoint_files(path: Path, tensors: dict[str, torch.Tensor], record: dict) -> Path:
    """Write a training checkpoint: NAME.safetensors, with `record` (its step, clock, config, ...) in its
    header, and NAME.json, a readable copy of the record, together (streams.write_files): a failure or a stop
    (Ctrl-C, SIGTERM) while they are written leaves both as they were. Only kill -9 or a power cut between
    the two renames can leave the new weights beside the JSON of the save before (or none): the header's
    copy is the record that --resume reads, and it rewrites such a JSON file."""
    path = Path(path).with_suffix(".safetensors")
    write_files([(path, _tensors_writer(tensors, {"checkpoint": json.dumps(json_names(record))})),
                 (path.with_suffix(".json"), _json_writer(record))])
    return path


def remove_leftover_model_temporaries(path) -> None:
    """Remove what writes of the model files at `path` (NAME.safetensors and NAME.json: write_model_files,
    write_checkpoint_files) that were killed (kill -9, a power cut) left half written beside them
    (streams.remove_leftover_temporaries); call it only where no other process writes them."""
    path = Path(path).with_suffix(".safetensors")
    for written in (path, path.with_suffix(".json")):
        remove_leftover_temporaries(written)


def attach_prior(path: Path, prior, out: Path | None = None) -> Path:
    """Store a CodePrior in the model files at `path` (or in a copy at `out`), replacing any prior there.

    Prior tensors are left out of the model id, so the id, and every `.vq` file that names it, stays valid.
    What a write of those files that was killed (kill -9) left half written beside them is removed first,
    under the lock of their folder (model_files_locked): another run writing there is refused in one line.
    """
    written = Path(out) if out is not None else Path(path)
    with model_files_locked(written), model_files_read_locked(path):
        meta, tensors = read_model_files(path)
        network = {k: v for k, v in tensors.items() if not k.startswith("prior.")}
        network.update(prior.to_tensors())
        meta["prior"] = prior.describe()
        remove_leftover_model_temporaries(written)
        return write_model_files(written, meta, network)


def model_files_locked(path):
    """Hold the run lock (runlock) of the folder that the model files at `path` are written in (that of the
    file a link names) while the block runs, so that one process at a time writes them: fit-prior's or a
    training run's. A folder that is not there yet is not locked (the write names it as missing)."""
    folder = written_target(Path(path).with_suffix(".safetensors")).parent
    return folder_locked(folder) if folder.is_dir() else contextlib.nullcontext()


def model_files_read_locked(path):
    """Hold a shared lock (runlock.folder_read_locked) of the folder that the model files at `path` are written in
    (model_files_locked's) while the block reads them, so that no run writes them meanwhile; under the lock of that
    folder, where this process holds it (a fit-prior that writes them), or where there is no such folder, nothing
    more is taken."""
    folder = written_target(Path(path).with_suffix(".safetensors")).parent
    return folder_read_locked(folder) if folder.is_dir() else contextlib.nullcontext()


def read_safetensors(path: Path, device: str = "cpu", held: str | None = None,
                     advice: str = "read it where the process may use more", needed=None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file. Anything but a regular file (a FIFO, a device) is an OSError, before
    it is read (streams.open_regular_file); a file whose reading, which holds its bytes twice (_tensors_read), needs
    more than the memory this process may use is a VQCodecError, before it is read: `held` says what it is
    ("the checkpoint PATH takes"), `advice` what to do (memory.refuse_beyond). `needed`, given the file's size,
    counts what the caller will hold with its tensors instead, where that is more (a resumed run's training)."""
    with open_regular_file(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        refuse_beyond(max(2 * size, needed(size) if needed else 0), memory_bound(), held or f"{path} takes", advice)
        return _tensors_read(stream, device)


def _tensors_read(stream, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of the .safetensors file `stream` reads, by name in sorted order (as safetensors' load_file
    gives them; its load gives them in no fixed order), read through its bytes (held while the tensors are made
    of them: twice the file's size, less than building the networks from them takes, _refuse_beyond_memory).
    Memory running out is a MemoryError, as where safetensors' Rust code panicked at it (under `ulimit -v`)."""
    try:
        tensors = load(stream.read())
    except BaseException as exc:
        if not _is_allocation_panic(exc):
            raise
        raise MemoryError from None
    return {name: tensors[name].to(device) for name in sorted(tensors)}


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata in a .safetensors file's header (empty if it has none); its size is checked against
    the file's before it is read. Anything but a regular file (a FIFO, a device) is an OSError, before it is read."""
    with open_regular_file(path) as stream:
        size = int.from_bytes(stream.read(8), "little")
        if size > os.fstat(stream.fileno()).st_size - 8:
            raise ValueError(f"its header size ({plural(size, 'byte')}) is more than the file holds")
        header = json.loads(stream.read(size))
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("its __metadata__ is not a JSON object")
    return metadata


def _read_model_file(path: Path, read):
    """read(), a missing or unreadable file of the model at `path` made one VQCodecError (memory running out left
    as it is: a MemoryError, or torch's error of it)."""
    try:
        return read()
    except MemoryError:  # not the file's fault: the command says "out of memory"
        raise
    except FileNotFoundError as exc:
        raise VQCodecError(f"model file missing: {exc.filename}") from None
    except OSError as exc:
        raise VQCodecError(f"cannot read model {path}: {exc.filename or path}: {reason_of(exc)}") from None
    except Exception as exc:
        if is_out_of_memory(exc):  # torch's, making the tensors on a GPU (OutOfMemoryError) or on the CPU
            raise
        raise VQCodecError(f"cannot read model {path}: {exc}") from None


def checkpoint_kind(path: Path, meta: dict) -> str:
    """What a training checkpoint given as a model is, and where its run's model is: beside it, or, where its
    run has written none (stopped before its end), what writes it."""
    models = sorted(other.with_suffix(".safetensors") for other in path.parent.iterdir()
                    if other.suffix == ".json" and other.stem != path.stem
                    and other.with_suffix(".safetensors").exists())
    if models:
        return f"a training checkpoint, not a model: give the model beside it, {' or '.join(map(shell_word, models))}"
    return (f"a training checkpoint of step {meta['step']}, of a run that has written no model yet: `vqcodec train DIR "
            f"--out {shell_word(path.parent)} --resume --max-steps {meta['step']}` writes it without training more")


def read_model_meta(path: Path) -> dict:
    """The NAME.json of the model whose weights are at `path`, checked (meta_problem), without its weights."""
    path = Path(path).with_suffix(".safetensors")
    meta = _read_model_file(path, lambda: read_model_json(path.with_suffix(".json")))
    if not isinstance(meta, dict) or "model_id" not in meta or "config" not in meta:
        kind = checkpoint_kind(path, meta) if isinstance(meta, dict) and "step" in meta else "not a model's files"
        raise VQCodecError(f"{path} is {kind}")
    problem = meta_problem(meta)
    if problem is not None:
        raise VQCodecError(f"model {path} has {problem}")
    return meta


def model_kind(reference: str) -> str:
    """The media kind of a model (an installed name or a path), from its checked JSON, without its weights."""
    return read_model_meta(find_model(reference))["config"]["kind"]


def read_model_files(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read NAME.json and NAME.safetensors and check that the weights match the recorded id."""
    path = Path(path).with_suffix(".safetensors")
    meta = read_model_meta(path)
    with _read_model_file(path, lambda: open_regular_file(path)) as stream:
        _refuse_beyond_memory(path, meta, os.fstat(stream.fileno()).st_size)
        tensors = _read_model_file(path, lambda: _tensors_read(stream))
    network = {k: v for k, v in tensors.items() if not k.startswith("prior.")}
    if compute_model_id(meta["config"], network) != meta.get("model_id"):
        raise VQCodecError(f"model {path} does not match its recorded id: the files are damaged or mismatched")
    # "decodes" is trusted for the encoder and codebooks "codes_id" records, which the run that wrote it checked
    if "codes_id" in meta and compute_codes_id(meta["config"], network) != meta["codes_id"]:
        raise VQCodecError(f"model {path} does not match its recorded codes_id: its encoder and codebooks are not "
                           "those of the models it says it decodes; the files are damaged or mismatched")
    meta["name"] = path.stem  # what finds it (a renamed copy's JSON still holds the old name)
    return meta, tensors


def _refuse_beyond_memory(path: Path, meta: dict, file_size: int) -> None:
    """Refuse a model whose loading needs more than the memory this process may use, before anything is allocated.
    Its peak comes while the networks are built (the weights read, the float32 networks and codebooks, and what
    building holds meanwhile), counted as twice the file's size and the float32 networks and codebooks: within about
    5 % of it for the shipped models, 13 % above for one of 266 MB of float16 weights (README, Limits). Reading, which
    holds the file's bytes twice (_tensors_read), takes less."""
    config = config_from_dict(meta["config"])
    built = parameter_count(config) + config.num_codebooks * config.codebook_size * config.latent_dim
    size = 2 * file_size + 4 * built
    refuse_beyond(size, memory_bound(), f"model {path} takes", "load it where the process may use more")


def _tensor_form(tensor: torch.Tensor) -> str:
    """What a weight must match: its shape, and being floating point (any float dtype loads)."""
    return f"{'floating-point' if tensor.is_floating_point() else str(tensor.dtype)[6:]} {list(tensor.shape)}"


def _float_array(tensor: torch.Tensor) -> np.ndarray:
    """A floating-point weight as a NumPy array (bfloat16, which NumPy lacks, as float32), for build_model's checks:
    NumPy's run on one thread, where each of torch's small operations waited on its thread pool, which took seconds
    on a busy machine (bench/startup.py)."""
    tensor = tensor.detach().cpu()
    return (tensor if tensor.dtype in (torch.float16, torch.float32, torch.float64) else tensor.float()).numpy()


def _squared_lengths_finite(codebook: torch.Tensor) -> bool:
    """Whether each code's squared length is finite in float32, as the quantiser's distances add it."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing is what is asked about, not a warning
        return bool(np.isfinite(np.square(_float_array(codebook), dtype=np.float32).sum(1)).all())


def build_model(meta: dict, tensors: dict[str, torch.Tensor]) -> VQVAE:
    config = config_from_dict(meta["config"])
    network = {k: v for k, v in tensors.items() if not k.startswith("prior.")}
    needed = parameter_count(config) + config.num_codebooks * config.codebook_size * config.latent_dim
    stored = sum(tensor.numel() for tensor in network.values())
    if needed > 2 * stored + (1 << 20):  # checked before building: such a config would allocate it all first
        raise VQCodecError(f"model weights do not fit its config (it needs {needed} values, the file holds {stored})")
    model = VQVAE(config)
    expected = model.state_dict()
    for name, tensor in network.items():
        want = expected.get(name)
        if want is not None and (tensor.shape != want.shape or tensor.is_floating_point() != want.is_floating_point()):
            raise VQCodecError(f"model weights do not fit its config ({name} is {_tensor_form(tensor)}, "
                               f"not {_tensor_form(want)})")
        if tensor.is_floating_point() and not np.isfinite(_float_array(tensor)).all():
            raise VQCodecError(f"model weights are damaged: {name} holds NaN or infinite values")
        # the quantiser's distances add each code's squared length: one that overflows makes every distance infinite
        if name.endswith(".codebook") and not _squared_lengths_finite(tensor):
            raise VQCodecError(f"model weights are damaged: {name} holds codes whose squared length is infinite in "
                               "float32 (values far beyond those of a trained model)")
    missing = [k for k in expected if k not in network and not k.endswith(_TRAINING_BUFFERS)]
    unexpected = [k for k in network if k not in expected]
    if missing or unexpected:
        raise VQCodecError(f"model weights do not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(network, strict=False)
    for layer in model.quantizer.layers:
        layer.initialized.fill_(True)
    return model.eval()
