"""A training run's checkpoint: its record, and the networks' and optimisers' tensors saved for --resume, read
back (checked) and restored."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .config import ModelConfig, config_from_dict
from .errors import VQCodecError, is_out_of_memory
from .streams import read_json_file
from .modelfile import read_safetensors, read_safetensors_metadata, write_checkpoint_files
from .trainmemory import training_state_bytes
from .trainoptions import CHECKPOINT_NAME, MAX_STEPS
from .wording import names_of_json, reason_of


UNVALIDATED_RECORD = "unvalidated_record"  # checkpoint field: the log record of a step stopped during its validation


def checkpoint_config(out: Path) -> ModelConfig:
    """The config of the checkpoint in `out`, which --resume continues; refused if it is missing or damaged."""
    path = out / f"{CHECKPOINT_NAME}.safetensors"
    if not path.exists():
        raise VQCodecError(f"--resume: no checkpoint in {out}")
    try:
        return config_from_dict(checkpoint_record(path)["config"])
    except OSError as exc:  # not a regular file (a FIFO, a device) too
        raise VQCodecError(f"--resume: cannot read the checkpoint in {out}: {exc.filename or path}: "
                           f"{reason_of(exc)}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise VQCodecError(f"--resume: the checkpoint in {out} is damaged ({exc})") from None


def checkpoint_name(out: Path) -> str | None:
    """The model name of the run whose checkpoint is in `out`, which a --resume without --name keeps; None
    where there is no checkpoint, it cannot be read, or it was saved before checkpoints held the name."""
    try:
        record = checkpoint_record(out / f"{CHECKPOINT_NAME}.safetensors")
    except (OSError, ValueError, TypeError, RecursionError):  # no checkpoint or a damaged one: the resumed run says so
        return None
    name = record.get("name") if isinstance(record, dict) else None
    return name if isinstance(name, str) else None


def checkpoint_record(path: Path) -> dict:
    """A checkpoint's record (step, clock, config, held-out files, ...): the copy in its weights file's
    header, written with them. The JSON file beside it is a readable copy, renamed into place after the
    weights, so a run stopped between the two renames leaves it one save behind, or missing; checkpoints
    written before the header copy have only the JSON file. Paths that are not UTF-8 are as this process
    names them, not as the record holds them (names_of_json)."""
    stored = read_safetensors_metadata(path).get("checkpoint")
    if stored is None:
        return names_of_json(read_json_file(path.with_suffix(".json"), what="a checkpoint's record"))
    return names_of_json(json.loads(stored))


def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            tensors[f"{prefix}.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    meta: dict) -> None:
    """Networks under `NAME.param`, optimiser state under `NAME.index.field`, in one safetensors file,
    with `meta` in its header (checkpoint_record) and in a JSON file beside it, written as a pair
    (write_checkpoint_files)."""
    tensors = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        tensors.update({k: v.detach().cpu().contiguous() for k, v in _optimizer_tensors(optimizer, name).items()})
    write_checkpoint_files(path, tensors, meta)


def load_checkpoint(path: Path, device: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The checkpoint's tensors grouped by name ("model", "optim", "disc", "disc_optim"), and its record; refused
    before they are read where the run that resumes them on the CPU cannot hold them with its model
    (training_state_bytes)."""
    try:
        meta = checkpoint_record(path)
        cfg = config_from_dict(meta["config"])
        for field in ("step", "average_updates"):  # counts, which seed the crops and the average's warm-up
            value = meta.get(field, 0) if field == "average_updates" else meta[field]
            if type(value) is not int or value < 0:
                raise ValueError(f"{field} is not a count: {value!r}"[:200])
            if value > MAX_STEPS:  # no --max-steps could then go on from it
                raise ValueError(f"{field} is more than {MAX_STEPS}, the most steps a run takes: {value}"[:200])
        for field in ("trained_seconds", "validated_seconds", "weight_average"):
            value = meta[field] if field == "trained_seconds" else meta.get(field, 0.0)
            if type(value) not in (int, float) or not 0 <= value < math.inf:
                raise ValueError(f"{field} is not a number of at least 0: {value!r}"[:200])
        for field in ("adversarial", "decoder_only"):  # a string such as "no" would read as true
            if type(meta.get(field, False)) is not bool:
                raise ValueError(f"{field} is not true or false: {meta[field]!r}"[:200])
        held_out = meta.get("held_out", [])
        if not isinstance(held_out, list) or not all(isinstance(name, str) for name in held_out):
            raise ValueError(f"held_out is not a list of file names: {held_out!r}"[:200])
        for field in ("init_training", "init_widened", "settings", "run_options", UNVALIDATED_RECORD):
            if not isinstance(meta.get(field, {}), dict):
                raise ValueError(f"{field} is not a record: {meta[field]!r}"[:200])
        record = meta.get(UNVALIDATED_RECORD, {})
        if record and not (record.get("step") == meta["step"] and isinstance(record.get("loss"), (int, float))):
            raise ValueError(f"{UNVALIDATED_RECORD} is not a log record of the checkpoint's step: {record!r}"[:200])
        parts = meta.get("earlier_parts", [])
        if not isinstance(parts, list) or not all(isinstance(part, dict) and all(type(part.get(count)) is int
                                                                                 for count in ("steps", "seconds"))
                                                  for part in parts):
            raise ValueError(f"earlier_parts is not a list of records of steps and seconds: {parts!r}"[:200])
        needed = _resumed_bytes(cfg, meta) if device == "cpu" else None  # on a GPU, the reading alone
        tensors = read_safetensors(path, device, f"resuming the checkpoint {path} takes",
                                   "resume it where the process may use more", needed)
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            name, rest = key.split(".", 1)
            groups.setdefault(name, {})[rest] = value
        if "model" not in groups:
            raise ValueError("it holds no model weights")
    except (VQCodecError, MemoryError):  # more than the memory this process may use, or than is free: not damaged
        raise
    except Exception as exc:  # JSON, safetensors and missing fields raise many types
        if is_out_of_memory(exc):  # torch's, making the tensors on a GPU (OutOfMemoryError) or on the CPU
            raise
        raise VQCodecError(f"the checkpoint {path} is damaged ({type(exc).__name__}: {exc})") from None
    return groups, meta


def _resumed_bytes(cfg: ModelConfig, meta: dict):
    """read_safetensors' `needed` of a checkpoint resumed on the CPU (its `meta`, its config `cfg`): what the run
    holds with its tensors, the file's size of them (training_state_bytes)."""
    return lambda size: training_state_bytes(cfg, meta.get("decoder_only", False), meta.get("weight_average", 0.0),
                                             size, checkpoint_averaged=True)


def restore_state(path: Path, load, *args) -> None:
    """Call `load(*args)`, a load_state_dict or restore_optimizer with the tensors of the checkpoint at
    `path`: tensors that do not fit the networks (missing, extra or of other shapes) make it damaged."""
    try:
        load(*args)
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:200]  # load_state_dict lists every key, over many lines
        raise VQCodecError(f"the checkpoint {path} is damaged ({type(exc).__name__}: {detail})") from None


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, field = key.split(".", 1)
        state.setdefault(int(index), {})[field] = value
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entry in state.items():  # optimizer.load_state_dict checks none of this, and the step fails
        if not 0 <= index < len(parameters) \
                or any(v.dim() and v.shape != parameters[index].shape for v in entry.values()):
            raise ValueError(f"the optimiser state of parameter {index} does not fit the model's")
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)
