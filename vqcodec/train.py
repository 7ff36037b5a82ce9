"""Training loop for both media kinds: data, losses, checkpoints and the final model files."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import math
import numbers
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr
import torch

from . import memory, parallel, progressline
from .config import (AudioConfig, ImageConfig, ModelConfig, config_from_dict, config_to_dict, load_config_file,
                     network_parameter_counts)
from .errors import Terminated, VQCodecError, is_out_of_memory
from .devices import resolve_device
from .data import (NOISE_SNR_DB, AudioCrops, Batches, ImageCrops, NoReadableMedia, decodes, default_batch_workers,
                   find_media, held_bytes, longest_length, read_media, readable_files, relative_name, say_passed_over,
                   split_as_before, split_files)
from .streams import checked_flag, open_regular_file, read_json_file
from .losses import ReconstructionLoss
from .adversarial import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from .models import VQVAE, encoder_unchanged, widen, widths_differ_only
from .modelfile import (CODE_TENSORS, attach_prior, build_model, compute_codes_id, inference_state, model_files_locked,
                        model_kind, read_model_files, read_safetensors, read_safetensors_metadata,
                        remove_leftover_model_temporaries, save_model, write_checkpoint_files, write_json)
from .prior import MAX_CODEBOOK
from .registry import find_model
from .runlock import lock_out, release_out
from .wording import one_line, plural, reason_of, setting, shell_word, shown


@dataclass
class TrainOptions:
    out: Path
    name: str
    device: str = "cpu"          # "cpu", "cuda", "cuda:N", "auto" (cuda when there is one) or a torch.device
    batch_size: int | None = None  # examples per step over all processes (None: DEFAULT_BATCH_AND_CROP's, times them;
                                   # resuming, the checkpoint's last part's, as for crop, lr, eval_every and precision)
    crop: int | None = None      # samples for audio, pixels (square side) for images (None: DEFAULT_BATCH_AND_CROP's)
    lr: float | None = None      # peak learning rate (None: DEFAULT_LR; resuming, that of the checkpoint's last part)
    max_minutes: float | None = None
    max_steps: int | None = None
    checkpoint_minutes: float = 5.0
    eval_every: int | None = None  # steps between validations (None: DEFAULT_EVAL_EVERY)
    threads: int | None = None   # torch's CPU threads while the run trains (the caller's count comes back after)
    seed: int = 0
    resume: bool = False
    replace: bool = False        # a new run over another in `out`: its files are removed once training starts
    quiet: bool = False
    fit_prior: bool = True       # fit the entropy-coding prior on the training codes at the end (decoder-only: keep the start's)
    adversarial: bool | None = None  # audio: add the STFT discriminator and feature-matching losses (None: off, or
                                     # resuming, as the checkpoint trained; False: off, its discriminator dropped)
    precision: str | None = None  # "bf16": the networks run under bfloat16 autocast; "auto" (None): see resolve_precision
    noise: float | None = None   # audio: share of training crops mixed with coloured noise (see add_background_noise;
                                 # None: none, or resuming, the checkpoint's last part's share)
    noise_snr_db: tuple[float, float] | None = None  # audio: the range the noise's SNR is drawn from (None:
                                                     # NOISE_SNR_DB, or resuming, the checkpoint's last part's)
    init: str | None = None      # a trained model (name or path) whose weights and codebooks a new run starts from
    stream_data: bool = False    # read every crop from its file, even when the folder would fit in memory
    data_workers: int | None = None  # threads making batches (default: data.default_batch_workers)
    decoder_only: bool | None = None  # train the decoder alone: encoder and codebooks frozen, so the codes do not
                                      # change (None: off, or resuming, as the checkpoint trained, which False refuses)
    weight_average: float | None = None  # decay of the moving average of the weights that validation and the model
                                         # file use; 0: off (None: off, or resuming, the checkpoint's decay)


# Batch size and crop (audio samples, image side) when none is given, by media kind and device. The
# shipped models' H100 run (batches of 64 and 32) and H200 run (128 and 48) made about as many steps a
# second: at these sizes a GPU mostly waits, so larger batches come nearly free there (docs/GPU.md).
DEFAULT_BATCH_AND_CROP = {("audio", "cpu"): (16, 8000), ("audio", "cuda"): (64, 8000),
                          ("image", "cpu"): (12, 128), ("image", "cuda"): (32, 256)}


COMMITMENT_WEIGHT = 0.25
ADVERSARIAL_WEIGHT = 0.1
FEATURE_MATCHING_WEIGHT = 0.2
VALIDATION_CROPS = 64  # crops of the held-out files each evaluation measures (at least one batch)
DEFAULT_LR = 1e-3
DEFAULT_EVAL_EVERY = 200
DEFAULT_PRECISION = "auto"
UNVALIDATED_RECORD = "unvalidated_record"  # checkpoint field: the log record of a step stopped during its validation
WARMUP_STEPS = 200  # linear learning-rate warm-up at the start of every run, resumed or not
MAX_LR = 1.0        # AdamW's steps are about lr in size: above this every weight is thrown far off at once
MAX_BATCH_SIZE = 1 << 16  # crops a step over all processes, each planned before it (the shipped models' runs: 128)
# Steps a run may count to (--max-steps, --eval-every): the learning-rate schedule's step / max_steps is a float64,
# exact for counts up to 2**53, as are the step counts of the checkpoint's and the log's JSON for readers that
# take JSON numbers as doubles (jq, JavaScript). No run comes near it: a million steps a second for 285 years.
MAX_STEPS = 1 << 53
# Bytes a CPU training step holds per byte of its float32 crops: the network's and the losses' activations and
# gradients. Measured as the growth of peak resident memory (ru_maxrss) from a batch of 2 crops to one of 8 to 16,
# over the growth of the crops' bytes, two train_step calls each, one thread, fp32 (bf16 in brackets): audio 136 (120)
# with base_channels 2 and strides (2,), 226 (162) with the tests' tiny config, 735 with the default speech config
# (crops of 8000); images 11 (12) with channels (2,), 14 with the tiny one, 67 with the default image config (crops
# of 128). The least of each kind, rounded down: a floor, so that a batch the smallest model could train is never
# refused.
STEP_BYTES_PER_CROP_BYTE = {"audio": 120, "image": 10}
# What --adversarial's discriminator (audio) adds to that: its STFTs' activations and gradients, in fp32 whatever the
# precision. Measured as above, with it: 1094 with base_channels 2 and strides (2,) and crops of 4000, 1155 with
# crops of 16000, 1238 with the tests' tiny config (crops of 8000); the least, less the step's 120, rounded down.
DISCRIMINATOR_BYTES_PER_CROP_BYTE = 950
# The VQVAE modules --decoder-only freezes (freeze_for_decoder_only): the optimiser gets the other modules' weights,
# and training_state_bytes counts their gradients and moments alone.
DECODER_ONLY_FROZEN = ("encoder", "quantizer")
CHECKPOINT_NAME = "checkpoint"  # checkpoint.safetensors + checkpoint.json in the output folder
LOG_NAME = "train_log.jsonl"


# The train command's options whose names are not those of the TrainOptions fields they set, with a dash
_COMMAND_OPTIONS = {"replace": "--force", "noise_snr_db": "--noise-snr"}
# The TrainOptions fields of the command's --X/--no-X options: None, not given, is off, or keeps a resumed run's setting
ON_OFF_OPTIONS = ("adversarial", "decoder_only")


def _option(field: str, value=None) -> str:
    """How a message names the TrainOptions field `field` (set to `value`, where given): as the train
    command's option while it runs (--max-steps 0, --resume), else as the field (max_steps=0, resume=True)."""
    flag = _COMMAND_OPTIONS.get(field, "--" + field.replace("_", "-"))
    if value is None:
        return setting(flag, field)
    on_off = {True: flag, False: "--no-" + flag[2:]}  # --adversarial/--no-adversarial
    return setting(on_off[value] if isinstance(value, bool) else f"{flag} {value}", f"{field}={value!r}")


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot name a model (its files NAME.safetensors and NAME.json), or None: a model name is
    a plain file name, not blank, hidden or the checkpoint's. train's --name and fit-prior's --out check it."""
    if not name.strip():
        return "is blank"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a byte of a file name that is not UTF-8, which Python keeps as a lone surrogate
        return "is not a plain file name (it is not UTF-8 text)"
    if not name.isprintable():
        return "is not a plain file name (it holds a control character)"
    if any(sep in name for sep in "/\\"):
        return "is not a plain file name (it holds a slash)"
    if name.startswith("."):
        return "is not a plain file name (it is a hidden one)"
    if name == CHECKPOINT_NAME:
        return "is the training checkpoint's"
    return None


def check_model_name(name: str) -> None:
    """A model name is a plain file name in the output folder, other than the checkpoint's."""
    problem = model_name_problem(name)
    if problem:
        raise VQCodecError(f"model name {shown(name)} {problem}: pass another {_option('name')}")


def run_files(out: Path, name: str) -> list[Path]:
    """The files of a training run named `name` in `out` that exist: checkpoint, log and model files."""
    paths = [out / f"{CHECKPOINT_NAME}.safetensors", out / f"{CHECKPOINT_NAME}.json", out / LOG_NAME,
             out / f"{name}.safetensors", out / f"{name}.json"]
    return [path for path in paths if path.exists()]


def refuse_existing_run(out: Path, name: str, replace: bool) -> None:
    """Refuse to start a new run over the files of another unless `replace` (--force). With it, training
    removes them once every option is checked, so a refused run leaves them as they are."""
    if out.exists() and not out.is_dir():
        raise VQCodecError(f"{_option('out')} {out} exists and is not a folder")
    nearest = next(path for path in (out, *out.absolute().parents) if os.path.lexists(path))
    if not nearest.exists():  # a link to nothing, which making the folder would fail on once the data is read
        raise VQCodecError(f"{_option('out')} {out} cannot be made: {nearest} is a link to {os.readlink(nearest)}, "
                           "which does not exist")
    if not nearest.is_dir():  # checked now, not once the data is read, where making the folder would fail
        raise VQCodecError(f"{_option('out')} {out} cannot be made: {nearest} is not a folder")
    earlier = run_files(out, name)
    if earlier and not replace:
        raise VQCodecError(f"{out} holds a training run ({earlier[0].name}): pass {_option('resume', True)} to continue "
                           f"it, {_option('replace', True)} to replace it, or another {_option('out')}")


def check_options(options: TrainOptions, given: bool = True) -> None:
    """The checks of a run's options that need neither its data, a model nor its --out folder: a budget, a
    positive learning rate, counts (whole numbers) and shares within the command's bounds, a precision it
    takes, a seed, a plain model name, not both a model to start from and a run to resume, nor both a run
    to resume and one to replace, a model for --decoder-only to start from, and, of the options as `given` (not
    a run's recipe, _recipe_of, whose defaults and checkpoint's values fill in those not given), no noise range
    without noise to set it for. A run checks them before it locks or makes its --out folder."""
    if options.max_minutes is None and options.max_steps is None:
        raise VQCodecError(f"give a budget: {_option('max_minutes')} or {_option('max_steps')}")
    if not isinstance(options.out, (str, Path)) or not isinstance(options.name, str):
        raise VQCodecError(f"out is a folder's path and name a string, not {options.out!r} and {options.name!r}")
    # TrainOptions from Python are not typed by the command's parser: a float count or a string number
    # failed deep in the run (torch.set_num_threads, the crops' seed, a comparison)
    for field, whole in (("max_minutes", False), ("lr", False), ("max_steps", True), ("batch_size", True), ("crop", True),
                         ("eval_every", True), ("threads", True), ("data_workers", True), ("noise", False),
                         ("weight_average", False), ("seed", True), ("checkpoint_minutes", False)):
        value = getattr(options, field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real)):
            named = field if field in ("seed", "checkpoint_minutes") else _option(field)  # the command sets neither
            raise VQCodecError(f"{named} must be a {'whole number' if whole else 'number'}, not {shown(value)}")
    for field in ("resume", "replace", "quiet", "fit_prior", "adversarial", "stream_data", "decoder_only"):
        if field in ON_OFF_OPTIONS and getattr(options, field) is None:  # not given
            continue
        checked_flag(_option(field), getattr(options, field))  # resume="no" resumed
    if not 0 <= options.seed < 2 ** 63:
        raise VQCodecError(f"seed must be a whole number from 0 to 2**63 - 1, not {options.seed}")
    if not 0 <= options.checkpoint_minutes < math.inf:
        raise VQCodecError(f"checkpoint_minutes must be a number of minutes from 0 up, not {options.checkpoint_minutes}")
    if options.precision is not None and options.precision not in ("auto", "fp32", "bf16"):
        raise VQCodecError(f"{_option('precision')} must be auto, fp32 or bf16, not {shown(options.precision)}")
    for field in ("max_minutes", "lr"):
        value = getattr(options, field)
        if value is not None and not 0 < value < math.inf:
            raise VQCodecError(f"{_option(field)} must be a positive number, not {value}")
    if options.lr is not None and options.lr > MAX_LR:  # 1e308 overflowed float32 in the optimiser's step, a traceback
        raise VQCodecError(f"{_option('lr')} must be at most {MAX_LR:g}, not {options.lr:g}")
    for field, low, high in (("max_steps", 0, MAX_STEPS), ("batch_size", 1, MAX_BATCH_SIZE), ("crop", 1, None),
                             ("eval_every", 1, MAX_STEPS), ("threads", 1, 256), ("data_workers", 1, 256)):
        value = getattr(options, field)
        if value is not None and not low <= value <= (high or value):
            raise VQCodecError(f"{_option(field)} must be at least {low}{f' and at most {high}' if high else ''}, not {value}")
    if options.noise is not None and not 0.0 <= options.noise <= 1.0:
        raise VQCodecError(f"{_option('noise')} must be a share between 0 and 1, not {options.noise}")
    if options.weight_average is not None and not 0.0 <= options.weight_average < 1.0:
        raise VQCodecError(f"{_option('weight_average')} must be a decay between 0 and 1, such as 0.999, not "
                           f"{options.weight_average}")
    if options.noise_snr_db is not None:
        _check_noise_snr(options.noise_snr_db)
        if given and (options.noise == 0 or options.noise is None and not options.resume):  # a resumed run's share
            # may be some (_recipe_of); without one, the range was taken and ignored: no crop had noise to set it for
            _refuse_a_noise_range_without_noise()
    if options.max_minutes is not None and options.max_minutes * 60 == math.inf:  # finite minutes, but not in seconds
        raise VQCodecError(f"{_option('max_minutes', options.max_minutes)} is too large a budget: leave it out and give "
                           f"{_option('max_steps')}")
    if options.max_steps == 0 and not options.init and not options.resume:
        raise VQCodecError(f"{_option('max_steps', 0)} writes the starting model as it is: it needs "
                           + setting("--init MODEL", "init=MODEL"))
    check_model_name(options.name)
    if options.resume and options.replace:
        raise VQCodecError(f"{_option('resume', True)} continues the run in {_option('out')} and {_option('replace', True)} "
                           "replaces it: give only one")
    if options.init and options.resume:
        raise VQCodecError(f"{_option('init')} starts a new run from a model and {_option('resume', True)} continues one: "
                           "give only one")
    if options.decoder_only and not (options.init or options.resume):
        raise VQCodecError(f"{_option('decoder_only', True)} trains the decoder of a trained model: give "
                           + setting("--init MODEL", "init=MODEL"))


def read_config(path: str | Path) -> ModelConfig:
    """A model config from a JSON file of its fields (--config)."""
    try:
        return load_config_file(path)
    except OSError as exc:  # not a regular file (a FIFO, a device) too
        raise VQCodecError(f"cannot read the config {exc.filename or path}: {reason_of(exc)}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise VQCodecError(f"{path}: bad config ({exc})") from None


def training_config(data_dir: Path, options: TrainOptions, config_path: str | Path | None = None,
                    kind: str | None = None, num_codebooks: int | None = None, codebook_size: int | None = None,
                    sample_rate: int | None = None) -> tuple[ModelConfig | None, str]:
    """The config and media kind that `train` takes for a run on `data_dir`, from the train command's
    --config (a JSON file), --kind, --codebooks, --codebook-size and --sample-rate.

    A new run takes the config file's, or the media kind's default config, with the sizes given. A run
    from --init takes the config file's, which may only widen its model's, or None: the model's own. A
    resumed run takes None, the checkpoint's, which none of the values given may change."""
    if options.init:
        config = read_config(config_path) if config_path else None
        init_kind = model_kind(options.init)
        if kind and kind != init_kind:
            raise VQCodecError(f"--init {options.init} is an {init_kind} model, not {kind}")
        if config and config.kind != init_kind:
            raise VQCodecError(f"--init {options.init} is an {init_kind} model, not {config.kind} as --config {config_path}")
        kind, _ = find_media(data_dir, init_kind)
        return config, kind
    if options.resume:
        saved = checkpoint_config(Path(options.out))
        given = {"--config": read_config(config_path) if config_path else None, "--kind": kind,
                 "--codebooks": num_codebooks, "--codebook-size": codebook_size, "--sample-rate": sample_rate}
        held = {"--config": saved, "--kind": saved.kind, "--codebooks": saved.num_codebooks,
                "--codebook-size": saved.codebook_size, "--sample-rate": getattr(saved, "sample_rate", None)}
        differing = [option for option, value in given.items() if value is not None and value != held[option]]
        if differing:
            raise VQCodecError(f"--resume continues with the checkpoint's config, which {', '.join(differing)} "
                               "would change: leave it out, or start a new run")
        return None, saved.kind
    config = None
    if config_path:
        config = read_config(config_path)
        if kind and kind != config.kind:
            raise VQCodecError(f"--config {config_path} is an {config.kind} config, not {kind}")
        kind = config.kind
    kind, _ = find_media(data_dir, kind)
    config = config or (AudioConfig() if kind == "audio" else ImageConfig())
    overrides = {"num_codebooks": num_codebooks, "codebook_size": codebook_size}
    if kind == "audio":
        overrides["sample_rate"] = sample_rate
    elif sample_rate is not None:
        raise VQCodecError("--sample-rate is for audio models only")
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None}), kind


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
    written before the header copy have only the JSON file."""
    stored = read_safetensors_metadata(path).get("checkpoint")
    if stored is None:
        return read_json_file(path.with_suffix(".json"), what="a checkpoint's record")
    return json.loads(stored)


# ---------------------------------------------------------------- checkpoints

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


def diverged(what: str, checkpoint_path: Path) -> VQCodecError:
    """The error that stops a run whose numbers stopped being finite, before it writes a model."""
    kept = ", the last checkpoint is kept" if checkpoint_path.exists() else ""
    return VQCodecError(f"training diverged: {what} (lower {setting('the --lr', 'lr')}); no model written{kept}")


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
        if not 0 <= index < len(parameters) or any(v.dim() and v.shape != parameters[index].shape for v in entry.values()):
            raise ValueError(f"the optimiser state of parameter {index} does not fit the model's")
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def load_initial_model(reference: str) -> tuple[VQVAE, str, list[str], dict]:
    """A trained model's networks and codebooks, ready to train further, its model id, the ids of
    the models whose files it decodes besides its own (its "decodes" record), and the record of its
    training.

    Model files hold no EMA statistics, so each codebook restarts them at a count of 1 per code, where
    ema_sum / ema_count is the codebook itself; the counts adapt to the new data within a few hundred steps."""
    meta, tensors = read_model_files(find_model(reference))
    model = build_model(meta, tensors)
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.ema_count.fill_(1.0)
            layer.ema_sum.copy_(layer.codebook)
            layer.idle_steps.zero_()
    return model.train(), meta["model_id"], list(meta.get("decodes", [])), dict(meta.get("training") or {})


# ---------------------------------------------------------------- loop

class WeightAverage:
    """An exponential moving average of a model's trained parameters (Polyak averaging): validation and
    the model file use it instead of the last step's weights, which carry the noise of small batches.
    Buffers (the codebooks and their EMA statistics) are the live model's, copied in at each use."""

    def __init__(self, model: VQVAE, decay: float, updates: int = 0):
        self.decay, self.updates = decay, updates
        self.model = copy.deepcopy(model).requires_grad_(False)
        trained = [(average, live) for average, live in zip(self.model.parameters(), model.parameters())
                   if live.requires_grad]
        self._averaged, self._live = [average for average, _ in trained], [live for _, live in trained]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))  # the first steps count in full
        torch._foreach_lerp_(self._averaged, self._live, 1.0 - decay)

    @torch.no_grad()
    def synced(self, model: VQVAE) -> VQVAE:
        for average, live in zip(self.model.buffers(), model.buffers()):
            average.copy_(live)
        return self.model


class CodebookUsage:
    """Counts code use since the last report: perplexity and the share of codes in use, over every process."""

    def __init__(self, cfg: ModelConfig, device: str = "cpu"):
        self.counts = torch.zeros(cfg.num_codebooks, cfg.codebook_size, device=device)

    def add(self, codes: torch.Tensor) -> None:
        for level, indices in enumerate(codes):
            self.counts[level] += torch.bincount(indices, minlength=self.counts.shape[1]).float()

    def summary(self) -> tuple[float, float]:
        """Perplexity and share of codes in use. Every process must call it at the same step."""
        parallel.sum_(self.counts)
        p = self.counts / self.counts.sum(1, keepdim=True).clamp_min(1)
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(1)).mean()
        return float(perplexity), float((self.counts > 0).float().mean())


def resolve_precision(precision: str, device: str) -> str:
    """"auto" -> "bf16" where the hardware makes it pay, else "fp32".

    That is a CUDA GPU with bf16 support (Ampere and later; ROCm's), or a CPU with AMX tiles. A CPU
    with AVX512-BF16 but no AMX computes bf16 natively too, but there bench/train_speed.py measured no
    gain for speech and a 25 % loss for photos; elsewhere bf16 is emulated and slower still.
    """
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":  # that GPU's support, not the current one's, and not emulated
        return "bf16" if torch.version.hip or torch.cuda.get_device_properties(device).major >= 8 else "fp32"
    try:
        amx = torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a private helper: absent from some torch builds
        amx = False
    return "bf16" if amx else "fp32"


def freeze_for_decoder_only(model: VQVAE) -> None:
    """Freeze the encoder and the codebooks, so that the model makes the codes it made before."""
    for module in DECODER_ONLY_FROZEN:
        getattr(model, module).requires_grad_(False)


def set_training_mode(model: VQVAE, decoder_only: bool) -> None:
    """Training mode; with `decoder_only`, the codebooks stay in evaluation mode (no EMA updates, k-means
    or restarts) while the residual quantiser keeps its dropout, so the decoder still learns every level."""
    model.train()
    if decoder_only:
        model.encoder.eval()
        for layer in model.quantizer.layers:
            layer.eval()


def train_step(model: VQVAE, optimizer: torch.optim.Optimizer, loss_fn: ReconstructionLoss, batch: torch.Tensor,
               autocast, disc: MultiScaleSTFTDiscriminator | None = None,
               disc_optimizer: torch.optim.Optimizer | None = None) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """One optimiser step on `batch`, this process's share of the step's examples.

    Returns the loss, its parts and the codes. Under data-parallel training the gradients are
    averaged over the processes before the step, so every process takes the step of the whole batch."""
    with autocast:
        estimate, codes, commitment = model(batch)
    estimate = estimate.float()  # losses and the discriminator stay in fp32
    reconstruction, parts = loss_fn(estimate, batch)
    loss = reconstruction + COMMITMENT_WEIGHT * commitment
    if disc is not None:
        disc.requires_grad_(True)
        disc_loss = discriminator_loss(disc, batch, estimate)
        disc_optimizer.zero_grad(set_to_none=True)
        disc_loss.backward()
        parallel.average_gradients(disc.parameters())
        disc_optimizer.step()
        disc.requires_grad_(False)  # the generator's step must not touch the discriminator
        fooling, matching = generator_losses(disc, batch, estimate)
        loss = loss + ADVERSARIAL_WEIGHT * fooling + FEATURE_MATCHING_WEIGHT * matching
        parts.update(adv=fooling.item(), fm=matching.item(), disc=disc_loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parallel.average_gradients(model.parameters())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss, parts, codes


@torch.no_grad()
def validate(model: VQVAE, loss_fn: ReconstructionLoss, crops: torch.Tensor, batch_size: int,
             device: str) -> tuple[float, dict]:
    """The reconstruction loss and its parts over `crops`, at full quality, in batches of `batch_size`."""
    model.eval()
    total, parts_total = 0.0, {}
    for begin in range(0, len(crops), batch_size):
        batch = crops[begin:begin + batch_size].to(device)
        estimate, _, _ = model(batch)
        loss, parts = loss_fn(estimate, batch)
        total += float(loss) * len(batch)
        for name, value in parts.items():
            parts_total[name] = parts_total.get(name, 0.0) + value * len(batch)
    return total / len(crops), {name: value / len(crops) for name, value in parts_total.items()}


def _step_line(step: int, loss: float, parts: dict, *shown: str) -> str:
    """The progress line of a step: its loss, then those of the last validation, code use and time left that
    there are (a resumed run has no validation or code use of its own until its first validating step)."""
    detail = " ".join(f"{k} {v:.3f}" for k, v in parts.items())
    return " | ".join([f"step {step}", f"loss {loss:.4f} ({detail})", *(text for text in shown if text)])


def _format_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(data_dir: Path, cfg: ModelConfig | None, options: TrainOptions, kind: str | None = None) -> Path:
    """Train a model on the media in `data_dir`; returns the path of the written model file.

    Launched by torchrun, each process trains on its share of every batch (vqcodec.parallel) and
    the first one writes the files; the others return the same path once training ends. A run that
    fails before writing anything to the --out folder it made leaves no folder behind."""
    check_options(options)
    options = dataclasses.replace(options, device=resolve_device(options.device))  # "auto"; cuda without a GPU refused
    if kind not in (None, "audio", "image"):  # "no video files found", it said
        raise VQCodecError(f"kind must be 'audio' or 'image' (or None: the folder's), not {kind!r}")
    if cfg is not None and not isinstance(cfg, (AudioConfig, ImageConfig)):
        raise VQCodecError(f"cfg must be an AudioConfig or ImageConfig (or None), not a {type(cfg).__name__}")
    with _out_locked(options):
        return _train_checked(data_dir, cfg, options, kind)


def train_command(data_dir: Path, options: TrainOptions, config_path: str | Path | None = None, kind: str | None = None,
                  num_codebooks: int | None = None, codebook_size: int | None = None,
                  sample_rate: int | None = None) -> Path:
    """`train` as the train command runs it: the options checked before the config and media kind are taken
    from its --config, --kind, --codebooks, --codebook-size and --sample-rate (training_config)."""
    check_options(options)
    options = dataclasses.replace(options, device=resolve_device(options.device))
    if options.init and (num_codebooks or codebook_size or sample_rate):
        raise VQCodecError("--init keeps the model's own config: leave out --codebooks, --codebook-size and "
                           "--sample-rate (--config may name the same config with wider networks)")
    with _out_locked(options):
        cfg, kind = training_config(data_dir, options, config_path, kind, num_codebooks, codebook_size, sample_rate)
        return _train_checked(data_dir, cfg, options, kind)


@contextlib.contextmanager
def _out_locked(options: TrainOptions):
    """Hold the lock of the --out folder (runlock) while the block runs: taken now where the folder exists,
    so that a second run in it is refused before it reads or checks anything there (refuse_existing_run
    first), else once the run makes it (_make_out). The first process of a torchrun launch takes it, once
    every process has joined, so that all of them stop with its refusal (parallel.together)."""
    out = Path(options.out)
    parallel.start(options.device)
    try:
        parallel.together(lambda: lock_out(out) if parallel.is_main() and out.is_dir() else None)
        if not options.resume:
            refuse_existing_run(out, options.name, options.replace)
        yield
    finally:
        release_out(out)
        parallel.leave()  # after an error: a run that ended has left the group (parallel.stop)


def _train_checked(data_dir: Path, cfg: ModelConfig | None, options: TrainOptions, kind: str | None) -> Path:
    """`train` with options check_options has passed."""
    out = Path(options.out)
    existed = out.exists()
    threads = torch.get_num_threads()  # --threads is the run's: the caller's process gets its own back
    try:
        # gradients, whatever the caller's torch.no_grad or torch.inference_mode turned off
        with _callers_random_state_kept(options.device), torch.inference_mode(False), torch.enable_grad():
            return _train(data_dir, cfg, options, kind)
    except BaseException:
        if not existed:
            release_out(out)  # its lock file, which this run made
            with contextlib.suppress(OSError):  # not empty (a log, a checkpoint), or another process's
                out.rmdir()
        raise
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _callers_random_state_kept(device: str):
    """Give torch's random state back to the caller once the block ends: a run seeds the generators of the
    CPU and of its GPU (seed_torch), which the caller's own draws go on from."""
    gpus = [torch.device(device).index if torch.device(device).index is not None else torch.cuda.current_device()] \
        if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=gpus, device_type="cuda"):
        yield


def seed_torch(seed: int, device: str) -> None:
    """Seed the generators of the CPU and of `device` alone: torch.manual_seed seeds every GPU, and where
    CUDA has not started yet it queues that for whenever the caller starts it, after the run."""
    torch.default_generator.manual_seed(int(seed))  # a NumPy integer too
    if torch.device(device).type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(int(seed))


@dataclass
class _Run:
    """What the steps of a run share: its options, the processes, the device and the checkpoint's path."""
    options: TrainOptions
    device: str
    processes: int
    main: bool               # the first process, which validates and writes the files
    quiet: bool
    precision: str | None    # "fp32" or "bf16"; None until _train resolves the option, which a --resume may keep
    checkpoint_path: Path
    local_processes: int = 1  # the processes on this machine (parallel.local_processes), which share its memory


@dataclass
class _Start:
    """Where a run starts from: nothing, a trained model (--init) or the checkpoint it resumes."""
    cfg: ModelConfig | None
    kind: str | None
    saved: dict = field(default_factory=dict)         # the checkpoint's tensors, by module, until restored
    checkpoint_bytes: int | None = None               # of those the run keeps; None for a new run
    meta: dict = field(default_factory=dict)          # the checkpoint's record
    step: int = 0
    trained_seconds: float = 0.0
    validated_seconds: float = 0.0                    # of trained_seconds, those spent validating
    model: VQVAE | None = None                        # --init's model, widened where the config widens it
    widened: dict = field(default_factory=dict)        # the starting model's widths that the config widened, by field
    init_id: str | None = None                        # a resumed fine-tune keeps its starting model's id
    init_decodes: list[str] = field(default_factory=list)
    init_path: str | None = None
    init_training: dict = field(default_factory=dict)  # the starting model's record, kept as the new one's "earlier"

    @property
    def resumed(self) -> bool:
        return self.checkpoint_bytes is not None


@dataclass
class _Data:
    """A run's training and held-out files, the crops it trains on and the fixed crops it validates on."""
    train_files: list[Path]
    val_files: list[Path]
    train: AudioCrops | ImageCrops
    val: AudioCrops | ImageCrops | None               # the first process's alone
    val_crops: torch.Tensor | None


@dataclass
class _Optimisation:
    """The modules and optimisers of a run, by the names a checkpoint saves them under, and the weight average."""
    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    average: WeightAverage | None = None

    @property
    def adversary(self) -> tuple:
        """The discriminator and its optimiser, as train_step takes them; none without --adversarial."""
        return (self.modules["disc"], self.optimizers["disc_optim"]) if "disc" in self.modules else ()


def _train(data_dir: Path, cfg: ModelConfig | None, options: TrainOptions, kind: str | None) -> Path:
    run = _start_processes(options)
    start = _starting_point(run, _checked_config(cfg), kind)
    given = options
    run.options = options = _recipe_of(options, start.meta)
    _let_go_of_dropped_state(start, options)
    run.precision = resolve_precision(options.precision, run.device)
    rng = np.random.default_rng((options.seed, start.step, parallel.rank()))  # a resumed run continues with fresh crops
    cfg, kind, files = _media_and_config(data_dir, start, options)
    weight_average = options.weight_average
    _warn_of_no_prior(run, cfg)
    crop_whose = "the default" if options.crop is None else "the run's"  # a crop not given: or one a --resume keeps
    run.options = options = _sized(run, kind, cfg, batch_kept=given.batch_size is None and options.batch_size is not None)
    files = readable_files(kind, files)
    run.options = options = _crop_within_files(run, kind, cfg, files, given.crop, crop_whose)
    state = training_state_bytes(cfg, options.decoder_only, weight_average, start.checkpoint_bytes,
                                 checkpoint_averaged="average" in start.saved)
    parallel.together(lambda: _refuse_a_batch_beyond_memory(run, kind, options.adversarial,
                                                            *_held_data_bytes(run, kind, cfg, data_dir, files,
                                                                              start.meta), state))
    model, codes_id = _build_model(run, start, cfg)
    # the held-out files, which the first process alone reads, may fail it alone
    data = parallel.together(lambda: _training_data(run, data_dir, kind, files, cfg, start.meta))
    training = _optimisation(run, model, start, weight_average)
    loss_fn = ReconstructionLoss(cfg).to(run.device)
    settings = _part_settings(run, weight_average, data_dir, data.train_files)
    parts = _earlier_parts(start, settings)
    if not run.quiet:
        _print_run(run, kind, model, data)
    parallel.together(lambda: _make_out(options, run.main))

    def checkpoint_meta(step: int, seconds: float, validated: float) -> dict:
        meta = {"step": step, "name": options.name, "trained_seconds": seconds, "validated_seconds": validated,
                "config": config_to_dict(cfg),
                "adversarial": options.adversarial, "decoder_only": options.decoder_only, "held_out": [relative_name(path, data_dir) for path in data.val_files],
                "settings": settings, **({"earlier_parts": parts} if parts else {}),
                "run_options": {"eval_every": options.eval_every, "precision": options.precision}}  # as given: _recipe_of
        if training.average is not None:
            meta.update(weight_average=weight_average, average_updates=training.average.updates)
        if options.decoder_only:
            meta.update(codes_id=codes_id, init_decodes=start.init_decodes, init_path=start.init_path)
        if start.widened:
            meta.update(init_widened=start.widened)
        return {**meta, "init": start.init_id, "init_training": start.init_training} if start.init_id else meta

    if start.step:  # fresh quantizer dropout too, not the draws the run's first part began with
        seed_torch(int(np.random.SeedSequence((options.seed, start.step, run.processes, parallel.rank()))
                       .generate_state(1, np.uint64)[0]) >> 1, run.device)
    step, trained_seconds, validated_seconds = _step_loop(run, cfg, model, training, loss_fn, data, rng, start,
                                                          checkpoint_meta)
    model_path = Path(options.out) / f"{options.name}.safetensors"

    def write() -> tuple[Path, VQCodecError | None]:
        """The model's files and the checkpoint's, written by the first process; the error of a checkpoint
        that could not be written, raised once the prior is added."""
        nonlocal settings, parts
        if step == 0 and not start.init_id:
            raise VQCodecError(f"no training step ended within {_option('max_minutes')}: no model written (give it more time)")
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise diverged(f"the weights are not finite after step {step}", run.checkpoint_path)
        if start.resumed and step == start.step and "settings" in start.meta:  # resumed to write the model: no part of its own
            settings, parts = start.meta["settings"], start.meta.get("earlier_parts", [])
        try:
            save_checkpoint(run.checkpoint_path, training.modules, training.optimizers,
                            checkpoint_meta(step, trained_seconds, validated_seconds))
            unsaved = None
        except VQCodecError as exc:  # a full disk: the model files, smaller, may still fit
            unsaved = exc
        try:
            written = _write_model(run, model if training.average is None else training.average.synced(model),
                                   model_path, start, codes_id, step, trained_seconds, settings, parts)
        except KeyboardInterrupt:
            if unsaved is None:
                _say(f"\ninterrupted before the model was written: the checkpoint in {Path(options.out)} holds its "
                     f"{plural(step, 'step')}; write it with `{_finishing_command(run, data_dir, step)}`")
            raise
        return written, unsaved

    # every process stops with the first one's error; the prior, which may take long, is fitted after the others end
    model_path, unsaved = parallel.together(lambda: write() if run.main else (model_path, None))
    parallel.stop()
    if not run.main:
        return model_path
    _add_prior(run, model_path, cfg, start, data.train.files(), data_dir, step)  # without the files skipped
    if unsaved is not None:
        earlier = (f"{_option('resume', True)} would go back to the checkpoint saved before it" if run.checkpoint_path.exists()
                   else f"there is no checkpoint to {setting('--resume', 'resume')}")
        raise VQCodecError(f"{model_path} is written, but not the checkpoint of its step {step} ({unsaved}): {earlier}")
    return model_path


def _part_settings(run: _Run, weight_average: float, data_dir: Path, train_files: list[Path]) -> dict:
    """The settings this part of a run trains with, as its training record gives them."""
    options = run.options
    return {"adversarial": options.adversarial, "precision": run.precision, "batch_size": options.batch_size,
            "crop": options.crop, "lr": options.lr, "noise": options.noise,
            **({"noise_snr_db": list(options.noise_snr_db)} if options.noise else {}),
            **({"weight_average": weight_average} if weight_average else {}),
            "data": str(Path(data_dir).resolve()), "files": len(train_files)}


def _earlier_parts(start: _Start, settings: dict) -> list[dict]:
    """The parts of a resumed run that trained with other settings than its last, oldest first, each with
    the steps and seconds it trained: the checkpoint's, and the part it ends where this one's `settings`
    differ. A checkpoint from before its settings were kept ends a part of steps and seconds alone."""
    if not start.resumed:
        return []
    parts = start.meta.get("earlier_parts", [])
    steps = start.step - sum(part["steps"] for part in parts)
    saved = start.meta.get("settings")
    if isinstance(saved, dict) and "data" in saved:  # a folder named relatively (before paths were resolved)
        saved = {**saved, "data": str(Path(saved["data"]).resolve())}
    if saved == settings or steps <= 0:
        return parts
    seconds = round(start.trained_seconds) - sum(part["seconds"] for part in parts)
    return [*parts, {"steps": steps, "seconds": seconds, **start.meta.get("settings", {})}]


def _start_processes(options: TrainOptions) -> _Run:
    """Start this process's part of the run (vqcodec.parallel): threads, device and seed."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device = parallel.start(options.device)
    processes, rank, main = parallel.world_size(), parallel.rank(), parallel.is_main()
    seed_torch(options.seed + rank, device)  # the processes draw different quantizer dropout
    return _Run(options, device, processes, main, options.quiet or not main, None,
                Path(options.out) / f"{CHECKPOINT_NAME}.safetensors", parallel.local_processes())


def _refuse_a_noise_range_without_noise(resumed: bool = False) -> None:
    """Refuse a noise_snr_db (--noise-snr) given where no crop has noise: no share given, or 0, or none `resumed`
    from the run a --resume continues, whose crops the range would have been taken for and ignored."""
    because = ", and the resumed run trains without noise" if resumed else ""
    raise VQCodecError(f"{_option('noise_snr_db')} sets the SNR of the noise that {_option('noise')} mixes in{because}: "
                       f"give {setting('--noise SHARE', 'noise=SHARE')} (such as 0.5) too, or leave "
                       f"{_option('noise_snr_db')} out")


def _check_noise_snr(snr) -> None:
    if not (isinstance(snr, (tuple, list)) and len(snr) == 2 and all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                                                     for x in snr)):
        raise VQCodecError(f"{_option('noise_snr_db')} must be {setting('LOW,HIGH', '(LOW, HIGH)')} in dB, a pair of numbers, "
                           f"not {shown(snr)}")
    low_snr, high_snr = snr
    if not -20.0 <= low_snr <= high_snr <= 100.0:
        raise VQCodecError(f"{_option('noise_snr_db')} must be {setting('LOW,HIGH', '(LOW, HIGH)')} in dB with -20 <= LOW <= "
                           f"HIGH <= 100, not {low_snr},{high_snr}")


# The options a --resume keeps unless they are given again: the part of the checkpoint's record that holds each
# (None: its top level) and the default where it holds none (a checkpoint written before it was kept; None: _sized's).
KEPT_OPTIONS = {"lr": ("settings", DEFAULT_LR), "noise": ("settings", 0.0), "noise_snr_db": ("settings", NOISE_SNR_DB),
                "batch_size": ("settings", None), "crop": ("settings", None),
                "eval_every": ("run_options", DEFAULT_EVAL_EVERY), "precision": ("run_options", DEFAULT_PRECISION),
                "weight_average": (None, 0.0), "adversarial": (None, False), "decoder_only": (None, False)}


def _recipe_of(options: TrainOptions, meta: dict) -> TrainOptions:
    """The options with those that are not given taken from the last part of the run a --resume continues
    (`meta`, its checkpoint's record; a fresh run's is {}: the defaults): the learning rate, noise, batch and
    crop and noise range of its settings, the --eval-every and --precision of its run_options (its settings hold the
    precision resolved for the device it ran on), its weight average's decay, whether it trained with the
    discriminator of --adversarial and whether it trained the decoder alone (--decoder-only, which another value
    given does not change: _refuse_another_part), so that a resumed run goes on as it trained. A checkpoint
    written before a value was kept gives its default; values the checkpoint holds are checked as given ones are."""
    kept = {name: (meta if part is None else meta.get(part, {})).get(name, default)
            for name, (part, default) in KEPT_OPTIONS.items() if getattr(options, name) is None}
    recipe = dataclasses.replace(options, **kept)
    if options.noise_snr_db is not None and options.noise is None and not recipe.noise:  # the resumed run's share: 0
        _refuse_a_noise_range_without_noise(resumed=True)
    if isinstance(recipe.noise_snr_db, list):  # as JSON holds it, or as given
        recipe = dataclasses.replace(recipe, noise_snr_db=tuple(recipe.noise_snr_db))
    if recipe != options:
        check_options(recipe, given=False)
    return recipe


def _sized(run: _Run, kind: str, cfg: ModelConfig, batch_kept: bool = False) -> TrainOptions:
    """The run's options with the batch and crop of its media kind and device (DEFAULT_BATCH_AND_CROP; the
    batch for each process) where none is given or kept from the run a --resume continues (`batch_kept`: the
    batch is the checkpoint's), the crop cut down to a whole number of the model's strides: the crop it
    trains on, which its training record gives."""
    options = run.options
    default_batch, default_crop = DEFAULT_BATCH_AND_CROP[kind, "cpu" if run.device == "cpu" else "cuda"]
    batch_size = default_batch * run.processes if options.batch_size is None else options.batch_size
    if batch_size % run.processes and batch_kept:
        raise VQCodecError(f"the run's batch of {batch_size}, kept from its checkpoint, does not split evenly over "
                           f"{run.processes} processes: give {_option('batch_size')}")
    if batch_size % run.processes:
        raise VQCodecError(f"{_option('batch_size', batch_size)} does not split evenly over {run.processes} processes")
    crop = default_crop if options.crop is None else options.crop
    crop -= crop % cfg.hop
    if crop <= 0:
        raise VQCodecError(f"{_option('crop')} must be at least the model stride {cfg.hop}")
    return dataclasses.replace(options, batch_size=batch_size, crop=crop)


def _checked_config(cfg: ModelConfig | None) -> ModelConfig | None:
    """`cfg` as reading it from a model file would check it."""
    if cfg is None:
        return None
    try:
        return config_from_dict(config_to_dict(cfg))
    except ValueError as exc:
        raise VQCodecError(f"bad config ({exc})") from None


def _starting_point(run: _Run, cfg: ModelConfig | None, kind: str | None) -> _Start:
    """The checkpoint a run resumes, or the model it starts from (grown to `cfg` where that widens it)."""
    options = run.options
    if options.resume and not run.checkpoint_path.exists():
        raise VQCodecError(f"{_option('resume', True)}: no checkpoint in {Path(options.out)}")
    start = _Start(cfg, kind)
    if options.resume:
        start.saved, start.meta = load_checkpoint(run.checkpoint_path, run.device)
        start.checkpoint_bytes = sum(tensor.nbytes for group in start.saved.values() for tensor in group.values())
        start.step, start.trained_seconds = start.meta["step"], start.meta["trained_seconds"]
        if options.max_steps is not None and options.max_steps < start.step:  # it would only write the model again
            raise VQCodecError(f"{_option('max_steps')} is the run's total, and the checkpoint in {Path(options.out)} holds "
                               f"{plural(start.step, 'step')}: give {_option('max_steps', start.step)} or more")
        start.validated_seconds = start.meta.get("validated_seconds", 0.0)
        start.cfg = config_from_dict(start.meta["config"])
        start.kind = start.cfg.kind
        _refuse_another_model(f"resume=True continues the {start.kind} model of the checkpoint in {Path(options.out)}",
                              start.cfg, cfg, kind)
        _refuse_another_part(options, start.meta.get("decoder_only", False), start.step)
    start.init_id = start.meta.get("init")
    start.init_decodes, start.init_path = start.meta.get("init_decodes", []), start.meta.get("init_path")
    start.init_training, start.widened = start.meta.get("init_training", {}), start.meta.get("init_widened", {})
    if options.init and not start.resumed:
        model, start.init_id, start.init_decodes, start.init_training = load_initial_model(options.init)
        _refuse_another_model(f"init={shown(options.init)} is an {model.cfg.kind} model", model.cfg, cfg, kind,
                              compare_fields=False)
        start.init_path = str(find_model(options.init).resolve())
        if cfg is not None and widths_differ_only(model.cfg, cfg):
            start.widened = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(cfg)
                             if getattr(model.cfg, f.name) != getattr(cfg, f.name)}
            if options.decoder_only and not encoder_unchanged(model.cfg, cfg):  # a grown encoder makes the codes only to rounding
                raise VQCodecError(f"{_option('decoder_only', True)} keeps the model's encoder and codebooks as they are: "
                                   f"its {setting('--config', 'cfg')} may widen the decoder alone (decoder_channels)")
            model = widen(model, cfg, seed=options.seed)
        elif cfg is not None and cfg != model.cfg:
            raise VQCodecError(f"{_option('init')} takes the model's own config, or the same config with wider networks "
                               "(base_channels or channels, decoder_channels)"
                               + setting("; leave out the other size flags", ": pass cfg=None for its own"))
        start.model, start.cfg, start.kind = model, model.cfg, model.cfg.kind
    return start


def _let_go_of_dropped_state(start: _Start, options: TrainOptions) -> None:
    """Let go of the resumed checkpoint's tensors that its run, with its options resolved (_recipe_of), drops:
    the discriminator and its optimiser's moments without --adversarial, the weight average without
    --weight-average. They were held until the optimisers were made, through the model's building and the
    reading of the files, and counted in its training state (training_state_bytes)."""
    dropped = (*(() if options.adversarial else ("disc", "disc_optim")), *(() if options.weight_average else ("average",)))
    for group in dropped:
        start.saved.pop(group, None)
    if start.resumed:
        start.checkpoint_bytes = sum(tensor.nbytes for group in start.saved.values() for tensor in group.values())


def _refuse_another_part(options: TrainOptions, resumed_decoder_only: bool, step: int) -> None:
    """Refuse to resume a decoder-only checkpoint (of `step` steps) as a run of the whole model, or the other
    way round: its model decodes the files of the model it started from, and makes its codes, only while its
    encoder and codebooks stay as they were (a new run --init from its model file trains them)."""
    if options.decoder_only is True and not resumed_decoder_only:
        raise VQCodecError(f"{_option('decoder_only', True)} cannot resume a checkpoint that trains the whole model")
    if options.decoder_only is False and resumed_decoder_only:
        raise VQCodecError(f"{_option('decoder_only', False)} cannot resume a decoder-only checkpoint: its model decodes "
                           "the files of the model it started from, and makes its codes, only while the encoder and "
                           f"codebooks stay frozen; to train the whole model, {_a_new_run_from_its_model(options, step)}")


def _a_new_run_from_its_model(options: TrainOptions, step: int) -> str:
    """How to train the whole model of the decoder-only run in --out whose checkpoint holds `step` steps: a new
    run --init from its model file, which a --resume that trains no more writes first where the run has not
    (stopped before its end: Ctrl-C, kill)."""
    model_path = Path(options.out) / f"{options.name}.safetensors"
    init = setting(f"--init {shell_word(model_path)}", f"init={str(model_path)!r}")
    if model_path.is_file():
        return f"start a new run with {init}"
    finish = setting(f"--resume --max-steps {step}", f"resume=True, max_steps={step}")
    return f"write its model first ({finish} writes {model_path} from the checkpoint), then start a new run with {init}"


def _refuse_another_model(model: str, held: ModelConfig, cfg: ModelConfig | None, kind: str | None,
                          compare_fields: bool = True) -> None:
    """Refuse the `cfg` and `kind` given to train where they are not those of the model it continues
    (`held`: a checkpoint's or --init's config, `model` says which), as the command refuses its --config
    and --kind (training_config), rather than train on as if they were not given. `compare_fields`:
    whether a config of the same kind must be `held` too (--init's may widen it, checked later)."""
    if kind is not None and kind != held.kind:
        raise VQCodecError(f"{model}, not kind={kind!r}")
    if cfg is not None and cfg.kind != held.kind:
        raise VQCodecError(f"{model}, not the {cfg.kind} model of the {type(cfg).__name__} given")
    if compare_fields and cfg is not None and cfg != held:
        differing = [f.name for f in dataclasses.fields(held) if getattr(held, f.name) != getattr(cfg, f.name)]
        raise VQCodecError(f"{model}, which cfg would change ({', '.join(differing)}): pass cfg=None, or start a new run")


def _media_and_config(data_dir: Path, start: _Start, options: TrainOptions) -> tuple[ModelConfig, str, list[Path]]:
    """The media kind and files of `data_dir`, and the config; refuses options that do not fit the media."""
    passed_over: list[tuple[Path, str]] = []
    kind, files = find_media(data_dir, start.kind or (start.cfg.kind if start.cfg else None), None, passed_over)
    say_passed_over(passed_over)
    cfg = start.cfg if start.cfg is not None else AudioConfig() if kind == "audio" else ImageConfig()
    if cfg.kind != kind:
        raise VQCodecError(f"config is for {cfg.kind} but {data_dir} holds {kind} files")
    if options.adversarial and kind != "audio":
        raise VQCodecError(f"{_option('adversarial', True)} is for audio models only")
    if options.noise and kind != "audio":
        raise VQCodecError(f"{_option('noise')} is for audio models only")
    return cfg, kind, files


def _build_model(run: _Run, start: _Start, cfg: ModelConfig) -> tuple[VQVAE, str | None]:
    """The model to train, on the device and the same in every process, and, for --decoder-only, the id
    of the codes it makes (a resumed run: those it made in its first run), to check at the end."""
    model = (start.model or VQVAE(cfg)).to(run.device)
    if start.resumed:  # the checkpoint's weights, copied into the model, are let go
        restore_state(run.checkpoint_path, model.load_state_dict, start.saved.pop("model"))
    parallel.broadcast_module_(model)  # the processes start from the first one's weights
    if not run.options.decoder_only:
        return model, None
    freeze_for_decoder_only(model)
    return model, start.meta.get("codes_id") or compute_codes_id(config_to_dict(cfg), inference_state(model))


def _crop_within_files(run: _Run, kind: str, cfg: ModelConfig, files: list[Path],
                       given_crop: int | None, whose: str = "the default") -> TrainOptions:
    """The run's options (_sized) with a crop longer than every file (of readable_files) cut to the whole
    number of the model's strides that holds the longest, with a warning that names `given_crop` (--crop;
    None: `whose` crop, the default or the run's that a --resume keeps): every crop would be mostly padding,
    and training slow (--crop 10000000 on 2 s clips)."""
    options = run.options
    longest = longest_length(kind, files, getattr(cfg, "sample_rate", 0))
    crop = max(math.ceil(longest / cfg.hop), 1) * cfg.hop
    if crop >= options.crop:
        return options
    named = _option("crop", given_crop) if given_crop is not None else f"{whose} crop {options.crop}"
    if not run.quiet and kind == "audio":
        _progress(f"warning: {named} is longer than every training file (the longest holds {longest} samples, "
                  f"{longest / cfg.sample_rate:.2f} s): training on crops of {crop}")
    elif not run.quiet:
        _progress(f"warning: {named} is larger than every training photo (the longest side is {longest} pixels): "
                  f"training on crops of {crop}")
    return dataclasses.replace(options, crop=crop)


def _held_data_bytes(run: _Run, kind: str, cfg: ModelConfig, data_dir: Path, files: list[Path],
                     saved_meta: dict) -> tuple[int, int]:
    """The bytes of decoded files (data.held_bytes, as their headers give them) that every process holds in memory,
    the training files, and that the first one holds besides, the held-out files (each set held where it fits in
    data.IN_MEMORY_BYTES on its own, as the crops decide), split as _training_data will split `files`
    (readable_files') but without decoding them; (0, 0) for --stream-data."""
    if run.options.stream_data:
        return 0, 0
    train_files, val_files = _split(data_dir, files, saved_meta)[:2]
    sample_rate = getattr(cfg, "sample_rate", 0)
    return (held_bytes(kind, train_files, run.options.crop, sample_rate),
            held_bytes(kind, val_files, run.options.crop, sample_rate))


def _split(data_dir: Path, files: list[Path], saved_meta: dict, usable=lambda path: True) \
        -> tuple[list[Path], list[Path], bool]:
    """The training and held-out files of `files` (split_files'; a resumed run's as its first run split them,
    where any of the files its checkpoint held out is left and `usable`), and whether a resumed run's held-out
    files are all gone, so that they are split anew."""
    split = None
    if "held_out" in saved_meta:  # a resumed run validates on the files its first run held out
        split = split_as_before(files, data_dir, saved_meta["held_out"], usable)
    train_files, val_files = split or split_files(files, usable)
    return train_files, val_files, "held_out" in saved_meta and split is None


def training_state_bytes(cfg: ModelConfig, decoder_only: bool = False, weight_average: float = 0.0,
                         checkpoint_bytes: int | None = None, checkpoint_averaged: bool = False) -> int:
    """What a run's process on the CPU holds besides its batch and files (README, Limits): the model's float32
    weights and codebooks (with their running sums and counts), a weight average's copy of them, AdamW's two
    moments of each trained weight and its gradient. A resumed run holds as much as the tensors it keeps of its
    checkpoint (`checkpoint_bytes`; not a discriminator or weight average it drops, _let_go_of_dropped_state): it
    keeps their moments, and lets their weights go once copied into its networks; with `weight_average`, where
    they hold no average (`checkpoint_averaged`), the average's new copy too. Saving a checkpoint holds nothing more: it is written tensor by tensor (modelfile._tensors_writer). --decoder-only trains
    the decoder alone: the encoder's weights, frozen (DECODER_ONLY_FROZEN), have no gradients or moments. The
    discriminator of --adversarial (72 387 weights, 1.2 MB with its gradients and moments) is left out."""
    networks = network_parameter_counts(cfg)
    weights = sum(networks.values())
    trained = sum(count for module, count in networks.items() if not (decoder_only and module in DECODER_ONLY_FROZEN))
    codebooks = cfg.num_codebooks * cfg.codebook_size * (2 * cfg.latent_dim + 2)  # with their EMA sums and code counts
    model = 4 * (weights + codebooks)
    average = model if weight_average else 0
    if checkpoint_bytes is None:  # a new run's networks and moments, as it will save them
        checkpoint_bytes, checkpoint_averaged = model + average + 8 * trained, True
    return checkpoint_bytes + (0 if checkpoint_averaged else average) + 4 * trained


def _refuse_a_batch_beyond_memory(run: _Run, kind: str, adversarial: bool = False, held: int = 0,
                                  held_out: int = 0, state: int = 0) -> None:
    """On the CPU, refuse a batch whose step (STEP_BYTES_PER_CROP_BYTE, and DISCRIMINATOR_BYTES_PER_CROP_BYTE
    for an `adversarial` run), `held` bytes of decoded training files and `state` bytes of model, gradients,
    optimiser state and checkpoint (training_state_bytes), with the first process's validation
    crops (it keeps max(batch, VALIDATION_CROPS)) and `held_out` bytes of decoded held-out files
    (_held_data_bytes), take more than the memory this process may use, or whose steps, training files and states
    in all the processes of this machine (run.local_processes: each holds its own copy of the files), with the first
    one's validation data, take more than the memory they share: past it a process is killed without a line.
    Every process checks (parallel.together: all refuse alike). A GPU's bound is its own memory, which running
    out of ends the run with one line (_step_loop's out_of_memory)."""
    options = run.options
    if run.device != "cpu":
        return
    share = options.batch_size // run.processes
    crop_bytes = options.crop * 4 if kind == "audio" else options.crop ** 2 * 3 * 4
    per_crop_byte = STEP_BYTES_PER_CROP_BYTE[kind] + (DISCRIMINATOR_BYTES_PER_CROP_BYTE if adversarial else 0)
    step = crop_bytes * share * per_crop_byte
    validation = crop_bytes * max(options.batch_size, VALIDATION_CROPS) + held_out
    own_files = held + (held_out if run.main else 0)
    own = step + held + state + (validation if run.main else 0)
    crops = f"{options.crop} samples" if kind == "audio" else f"{options.crop}x{options.crop} pixels"
    each = " a process" if run.processes > 1 else ""
    with_data, advice = _files_named(own_files, own, "it holds", held_out if run.main else 0, state, options.resume)
    memory.refuse_beyond(own, memory.memory_bound(),
                         f"a batch of {plural(share, 'crop')}{each} of {crops}{with_data} takes", advice)
    if run.local_processes > 1:
        shared_files = held * run.local_processes + held_out
        shared = (step + held + state) * run.local_processes + validation
        with_data, advice = _files_named(shared_files, shared, "they hold", held_out, state * run.local_processes,
                                         options.resume)
        memory.refuse_beyond(shared, memory.shared_memory_bound(),
                             f"a batch of {plural(share, 'crop')} a process of {crops}, in {run.local_processes} "
                             f"processes on this machine{with_data}, takes", f"{advice}, or start fewer processes on it",
                             whose="the memory they share")


def _files_named(files: int, size: int, whose: str, held_out: int, state: int = 0,
                 resumed: bool = False) -> tuple[str, str]:
    """What a refusal of `size` bytes, `files` of them decoded files (`held_out` of those held-out files, the rest
    training files) and `state` of them the model's training state (training_state_bytes; of a `resumed` run),
    says of the files or the state (where they are the larger part) and what it advises."""
    if state >= size - state:
        advice = "resume it where the process may use more" if resumed else \
            "train where the process may use more, or a smaller model"
        return f" with the {state / 1e9:.1f} GB of model, gradients, optimiser state and checkpoints {whose}", advice
    if files < size - files:
        return "", f"lower {_option('batch_size')} or {_option('crop')}"
    held = "training and held-out files" if held_out else "training files"
    return (f" with the {files / 1e9:.1f} GB of {held} {whose} in memory",
            f"pass {_option('stream_data', True)}, or lower {_option('batch_size')} or {_option('crop')}")


def _training_data(run: _Run, data_dir: Path, kind: str, readable: list[Path], cfg: ModelConfig,
                   saved_meta: dict) -> _Data:
    """The files (readable_files') split into training and held-out ones (a resumed run: as its first run
    split them), and their crops."""
    options = run.options
    train_files, val_files, split_anew = _split(data_dir, readable, saved_meta, lambda path: decodes(kind, path))
    if split_anew and not run.quiet:
        _progress(f"none of the files the checkpoint held out for validation is left in {data_dir}: others are "
                  "held out, and validation losses do not compare with the log's earlier ones")
    crop = options.crop  # a whole number of strides (_sized)
    in_memory_bytes = 0 if options.stream_data else None

    def crops(files: list[Path], role: str = "training", noise: float = 0.0) -> AudioCrops | ImageCrops:
        if kind == "audio":
            return AudioCrops(files, cfg.sample_rate, crop, noise=noise, noise_snr_db=options.noise_snr_db,
                              in_memory_bytes=in_memory_bytes, role=role)
        return ImageCrops(files, crop, in_memory_bytes=in_memory_bytes, role=role)

    try:
        train_data = crops(train_files, noise=options.noise)
    except NoReadableMedia:
        if val_files == train_files:
            raise
        train_files = val_files  # the held-out files alone decode: they train and validate, as one file does
        train_data = crops(train_files, noise=options.noise)
    role = "training" if val_files == train_files else "held-out"  # one file trains and validates
    val_data = crops(val_files, role) if run.main else None
    # the same crops of the held-out files at every evaluation, so that validation losses compare
    val_crops = val_data.batch(max(options.batch_size, VALIDATION_CROPS), np.random.default_rng(1234), augment=False) \
        if run.main else None
    return _Data(train_files, val_files, train_data, val_data, val_crops)


def _optimisation(run: _Run, model: VQVAE, start: _Start, weight_average: float) -> _Optimisation:
    """The optimiser of the trained weights, the weight average and the discriminator with its optimiser,
    as the checkpoint left them where the run resumes one. The checkpoint's tensors are let go once restored:
    the optimisers keep those of their moments, the networks copies of their weights."""
    options, saved, checkpoint_path = run.options, start.saved, run.checkpoint_path
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr, betas=(0.8, 0.99), weight_decay=0.0)
    if start.resumed:
        restore_state(checkpoint_path, restore_optimizer, optimizer, saved.get("optim", {}))
    training = _Optimisation({"model": model}, {"optim": optimizer})
    if weight_average:
        training.average = WeightAverage(model, weight_average, start.meta.get("average_updates", 0))
        if "average" in saved:
            restore_state(checkpoint_path, training.average.model.load_state_dict, saved["average"])
        training.modules["average"] = training.average.model
    if options.adversarial:  # without it, a resumed checkpoint's discriminator is let go (_let_go_of_dropped_state)
        disc = MultiScaleSTFTDiscriminator().to(run.device)
        disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=options.lr, betas=(0.8, 0.99), weight_decay=0.0)
        if "disc" in saved:  # a checkpoint trained without --adversarial starts a fresh discriminator
            restore_state(checkpoint_path, disc.load_state_dict, saved["disc"])
            restore_state(checkpoint_path, restore_optimizer, disc_optimizer, saved.get("disc_optim", {}))
        parallel.broadcast_module_(disc)
        training.modules["disc"], training.optimizers["disc_optim"] = disc, disc_optimizer
    saved.clear()
    return training


def _make_out(options: TrainOptions, main: bool) -> None:
    """The output folder, made only once every option is checked, so that a run refused before leaves
    nothing behind, and locked (runlock); with `replace`, the files of the run this one replaces are
    removed only now too."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if main:  # held already where the folder was there when the run began (_out_locked)
        lock_out(out)
    if options.replace and not options.resume and main:
        # neither its checkpoint (for a later --resume) nor its log may be mistaken for this run's
        for path in run_files(out, options.name):
            path.unlink()
    if main:  # a run killed while saving (kill -9) left its half-written files beside the whole ones
        for name in (CHECKPOINT_NAME, options.name):
            remove_leftover_model_temporaries(out / f"{name}.safetensors")
    if main and options.resume:
        _rewrite_stale_checkpoint_json(out / f"{CHECKPOINT_NAME}.safetensors")
        _repair_log(out / LOG_NAME)


def _rewrite_stale_checkpoint_json(path: Path) -> None:
    """Rewrite the checkpoint's JSON file from the record in its weights' header where the two differ, with
    a warning: kill -9 or a power cut between the renames of a save (write_checkpoint_files) left the JSON
    of the save before, or none, beside the new weights. --resume reads the header's record (checkpoint_record),
    but the JSON file, the one people read, said another step until the run saved again."""
    try:
        stored = read_safetensors_metadata(path).get("checkpoint")
    except (OSError, ValueError):
        return
    if stored is None:  # written before the header held the record: the JSON file is the record
        return
    record = json.loads(stored)  # checked by load_checkpoint
    json_path = path.with_suffix(".json")
    try:
        copy = read_json_file(json_path, what="a checkpoint's record")
    except FileNotFoundError:
        copy = None
    except OSError as exc:  # a FIFO or a device, which the rewrite would write into (write_file): it waited for ever
        raise VQCodecError(f"cannot read {json_path}: {reason_of(exc)}") from None
    except (ValueError, RecursionError):
        copy = {}
    if copy == record:
        return
    write_json(json_path, record)
    found = "missing" if copy is None else \
        f"left from an earlier save (step {copy['step']})" if isinstance(copy, dict) and "step" in copy else "damaged"
    _progress(f"warning: {json_path} was {found}, as a run stopped between the two files of a save leaves it: "
              f"rewritten from the record in the weights (step {record['step']})")


def _repair_log(path: Path) -> None:
    """Remove, with a one-line warning, what a run stopped while writing the log (a power cut) left at
    its end, which the records a resumed run appends would run into or follow: the start of a record
    after its last whole line, and the whole lines before that which are not JSON records (a file
    system that kept the log's new length but not its bytes reads back zeros). It is truncated through the
    descriptor it was read from, so that a file put in its place meanwhile is left as it is."""
    denied = None
    try:
        try:  # a FIFO's read waited for ever, a device's (/dev/zero) never ended
            stream = open_regular_file(path, writable=True)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            denied, stream = exc, open_regular_file(path)  # a log it may not write needs no repair to resume
    except FileNotFoundError:
        return
    except OSError as exc:
        raise VQCodecError(f"cannot repair {path}: {reason_of(exc)}") from None
    with stream:
        text = stream.read()
        kept, whole, lines = _log_kept(text)
        if kept == len(text):
            return
        try:
            if denied:
                raise denied
            os.ftruncate(stream.fileno(), kept)
        except OSError as exc:
            raise VQCodecError(f"cannot repair {path}: {reason_of(exc)}") from None
    partial = plural(len(text) - whole, "byte")
    if not lines:
        _progress(f"warning: {path} ended in a partial record ({partial}, written as a run stopped): removed")
        return
    bad = f"{plural(lines, 'line')} that {'is not a JSON record' if lines == 1 else 'are not JSON records'}"
    _progress(f"warning: {path} ended in {bad}{f' and a partial record ({partial})' if whole < len(text) else ''}, "
              "written as a run stopped: removed")


def _log_kept(text: bytes) -> tuple[int, int, int]:
    """How many bytes of the log `text` to keep, up to its last whole line that is a record; the length of its
    whole lines; and how many whole lines after the kept ones are not records."""
    whole = kept = text.rfind(b"\n") + 1
    lines = 0
    while kept:  # back over the whole lines at the end that are not records
        start = text.rfind(b"\n", 0, kept - 1) + 1
        if _is_log_record(text[start:kept - 1]):
            break
        kept, lines = start, lines + 1
    return kept, whole, lines


def _is_log_record(line: bytes) -> bool:
    """Whether a line of the log is a record: a JSON object."""
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):  # UnicodeDecodeError too
        return False


def _warn_of_no_prior(run: _Run, cfg: ModelConfig) -> None:
    """Say before training, and not only once it is done, that no prior will be fitted to codebooks larger
    than a prior covers (prior.MAX_CODEBOOK): the run's files will be coded at fixed width."""
    if run.main and run.options.fit_prior and cfg.codebook_size > MAX_CODEBOOK:
        _progress(f"warning: no entropy-coding prior will be added: a prior covers codebooks of at most {MAX_CODEBOOK} "
                  f"entries, not {cfg.codebook_size}; files will use fixed-width coding ({setting('--no-prior', 'fit_prior=False')} "
                  f"says so)")


def _parameter_count(count: int) -> str:
    """In millions, '1.38M', but for a model too small for that to say anything ('1,412', not '0.00M')."""
    return f"{count / 1e6:.2f}M" if count >= 10_000 else f"{count:,}"


def _print_run(run: _Run, kind: str, model: VQVAE, data: _Data) -> None:
    options = run.options
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    share = options.batch_size // run.processes
    spread = f"{run.processes} processes ({share} examples each)" if run.processes > 1 else f"device {run.device}"
    validation = data.val.describe() if data.val_files != data.train_files else "on the training file (none held out from one)"
    _progress(f"training {options.name} ({kind}) on {data.train.describe()}; validation {validation}; "
              f"{_parameter_count(sum(p.numel() for p in model.parameters()))} parameters"
              f"{f' ({_parameter_count(trained)} trained: the decoder)' if options.decoder_only else ''}; batch {options.batch_size}; "
              f"{spread}, {run.precision}")


def _step_loop(run: _Run, cfg: ModelConfig, model: VQVAE, training: _Optimisation, loss_fn: ReconstructionLoss,
               data: _Data, rng: np.random.Generator, start: _Start, checkpoint_meta) -> tuple[int, float, float]:
    """Train until the budget is spent: the learning-rate schedule, the steps, the log's records of
    validation and code use, the progress lines and the checkpoints. Returns the step count, the
    seconds trained and the seconds of those spent validating, over all the runs of the checkpoint's."""
    options, device, main, checkpoint_path = run.options, run.device, run.main, run.checkpoint_path
    average, step, trained_seconds = training.average, start.step, start.trained_seconds
    log_path = Path(options.out) / LOG_NAME
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=run.precision == "bf16")
    budget = options.max_minutes * 60 if options.max_minutes else None
    first_step = step  # a resumed run warms its learning rate up again
    began_run = time.monotonic()
    last_checkpoint = began_run
    validating = start.validated_seconds  # seconds spent validating, which the log's clock leaves out
    val_text, usage_text = "", ""
    usage = CodebookUsage(cfg, device)
    batches = Batches(data.train, options.batch_size // run.processes, rng,
                      options.data_workers or default_batch_workers(run.processes))

    def keep() -> bool:
        """Save what this run trained, for --resume; False where it trained nothing. A stop while the step's
        log record waits for its validation saves the record, which the resumed run completes."""
        if not (main and (step > first_step or completed_stopped_record)):  # the latter: not to log it twice
            return False
        seconds = trained_seconds + time.monotonic() - began_run
        meta = checkpoint_meta(step, seconds, validating)
        save_checkpoint(checkpoint_path, training.modules, training.optimizers,
                        {**meta, UNVALIDATED_RECORD: unvalidated} if unvalidated else meta)
        return True

    def out_of_memory(exc: RuntimeError) -> VQCodecError:
        if not is_out_of_memory(exc):
            raise exc
        kept = f"; checkpoint of step {step} saved: {_option('resume', True)} with a smaller one continues" if keep() else ""
        return VQCodecError(f"out of memory for batches of {plural(options.batch_size, 'crop')} of {options.crop}: lower "
                            f"{_option('batch_size')} or {_option('crop')}{kept}")

    def validated(record: dict) -> None:
        """Validate the weights of `record`'s step and append it to the log, with the validation and its
        `seconds`: the training time up to the step, validation left out."""
        nonlocal validating, val_text, unvalidated
        began = time.monotonic()
        val_loss, val_parts = validate(average.synced(model) if average is not None else model, loss_fn,
                                       data.val_crops, options.batch_size, device)
        validating += time.monotonic() - began
        val_text = f"val {val_loss:.4f}"
        record = {"step": record["step"], "loss": record["loss"], "val": val_loss,
                  **{k: v for k, v in record.items() if k not in ("step", "loss")},
                  **{f"val_{k}": v for k, v in val_parts.items()}}
        _or_warn(lambda: _append_log(log_path, record), record["step"])
        unvalidated = None

    def report(lr: float, elapsed: float, loss_value: float, parts: dict, usage_summary: tuple | None) -> None:
        """After a step: the progress line, the first process's checkpoint and, with the step's `usage_summary`
        (perplexity, codes in use) where it is one the log records, its validation and log record."""
        nonlocal usage_text, last_checkpoint, unvalidated
        if main and usage_summary is not None:
            perplexity, in_use = usage_summary
            usage_text = f"perplexity {perplexity:.0f} | codes in use {in_use:.0%}"
            unvalidated = {"step": step, "loss": loss_value, "perplexity": perplexity, "codes_in_use": in_use, "lr": lr,
                           "seconds": trained_seconds + time.monotonic() - began_run - validating, **parts}
            validated(unvalidated)
        if not run.quiet and (step % 10 == 0 or step == 1):
            left = f"{_format_time(budget - elapsed)} left" if budget else ""
            _progress(_step_line(step, loss_value, parts, val_text, usage_text, left), in_place=True)
        if main and time.monotonic() - last_checkpoint >= options.checkpoint_minutes * 60:
            seconds = trained_seconds + time.monotonic() - began_run
            _or_warn(lambda: save_checkpoint(checkpoint_path, training.modules, training.optimizers,
                                             checkpoint_meta(step, seconds, validating)), step)
            last_checkpoint = time.monotonic()

    failure = parallel.Failure()  # this process's own, raised in all of them at the start of the next step
    unvalidated = None  # the log record of a step whose validation is under way
    completed_stopped_record = False
    try:
        if main and start.meta.get(UNVALIDATED_RECORD):  # the stopped run's last record: its step's weights are these
            validated(start.meta[UNVALIDATED_RECORD])
            completed_stopped_record = True
        while True:
            done_by_steps = options.max_steps is not None and step >= options.max_steps
            if not done_by_steps:
                with failure.held():
                    batch = batches.next()
            elapsed = parallel.first_process_value(time.monotonic() - began_run, device, failure)
            done_by_time = budget is not None and elapsed >= budget
            if done_by_time or done_by_steps or (budget is None and options.max_steps is None):
                break
            lr = _learning_rate(options, step, first_step, elapsed, budget)
            for opt in training.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = lr

            set_training_mode(model, options.decoder_only)
            loss, parts, codes = train_step(model, training.optimizers["optim"], loss_fn, batch.to(device), autocast,
                                            *training.adversary)
            step += 1
            if average is not None:
                average.update()
            usage.add(codes)
            loss_value = loss.item()
            if parallel.any_process(not math.isfinite(loss_value), device):  # every process stops at this step
                raise diverged(f"the loss is not finite at step {step}", checkpoint_path)

            usage_summary = None
            if step % options.eval_every == 0 or step == 1:
                usage_summary = usage.summary()
                usage = CodebookUsage(cfg, device)
                losses = torch.tensor([loss_value, *parts.values()], dtype=torch.float64, device=device)
                parallel.sum_(losses)  # the log gives the whole batch's loss, a mean over the processes' shares
                losses = (losses / run.processes).tolist()
                loss_value, parts = losses[0], dict(zip(parts, losses[1:]))
            with failure.held():  # raised in every process as the next step starts
                try:
                    report(lr, elapsed, loss_value, parts, usage_summary)
                except RuntimeError as exc:
                    raise out_of_memory(exc) from None
    except KeyboardInterrupt:
        if keep():
            _say(f"\ninterrupted at step {step}: checkpoint saved in {Path(options.out)}; continue with {_option('resume', True)}")
        raise
    except RuntimeError as exc:
        raise out_of_memory(exc) from None
    finally:
        batches.close()
    return step, trained_seconds + time.monotonic() - began_run, validating


def _append_log(path: Path, record: dict) -> None:
    """Append `record` to the log as a line; one that cannot be written whole (a full disk) is taken back
    out, so that the records appended after it stay lines of their own."""
    line = (json.dumps(record) + "\n").encode()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(descriptor).st_size
            try:
                if os.write(descriptor, line) < len(line):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                os.ftruncate(descriptor, size)
                raise
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise VQCodecError(f"cannot write {path}: {reason_of(exc)}") from None


def _or_warn(save, step: int) -> None:
    """Call `save`, which writes a checkpoint or a log record during training; one that fails (a full
    disk) is a warning, and training goes on: stopping would lose every step since the last checkpoint."""
    try:
        save()
    except VQCodecError as exc:
        _progress(f"warning: {exc} (step {step}); training goes on")


def _say(line: str, in_place: bool = False) -> bool:
    """Print `line` on stderr, as the step line (`in_place`: progressline.show) or a line that clears it
    first (progressline.say; one that begins with a newline keeps it above); False where its pipe has
    closed (`2>&1 | head`), after which what is left to say goes nowhere."""
    try:
        if in_place:
            progressline.show(line)
        elif line.startswith("\n"):
            progressline.keep()
            print(line, file=sys.stderr, flush=True)
        else:
            progressline.say(line)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
        return False
    return True


def _progress(line: str, in_place: bool = False) -> None:
    """Say `line` (_say) before or during training, where a closed pipe (`2>&1 | head`) stops the run
    as SIGPIPE would, but with what it trained saved in the checkpoint (Terminated)."""
    if not _say(line, in_place):
        raise Terminated(signal.SIGPIPE)


def _learning_rate(options: TrainOptions, step: int, first_step: int, elapsed: float, budget: float | None) -> float:
    """The learning rate of the step after `step`: a linear warm-up over the first WARMUP_STEPS steps of this
    run, times a half cosine from --lr down to a tenth of it over the budget (time or steps, whichever is further)."""
    progress = max(elapsed / budget if budget else 0.0, step / options.max_steps if options.max_steps else 0.0)
    return options.lr * min(1.0, (step - first_step + 1) / WARMUP_STEPS) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _write_model(run: _Run, model: VQVAE, model_path: Path, start: _Start, codes_id: str | None, step: int,
                 trained_seconds: float, settings: dict, parts: list[dict]) -> Path:
    """Write the trained model's files, with the record of its training (the settings of its last part, and
    its earlier parts where a resumed run changed them) and of the models whose files it decodes."""
    decoder_only = run.options.decoder_only
    unchanged = step == 0 and start.model is not None and not start.widened  # --max-steps 0: the model, kept to the bit
    if decoder_only:
        lineage = _decodes_record(model, codes_id, start.init_id, start.init_decodes)
    else:
        lineage = {"codes_id": compute_codes_id(config_to_dict(model.cfg), inference_state(model)),
                   "decodes": start.init_decodes} if unchanged and start.init_decodes else None
    model_path = save_model(model.cpu(), model_path,
                            training={"steps": step, "seconds": round(trained_seconds),
                                      **({"decoder_only": True} if decoder_only else {}), **settings,
                                      **({"earlier_parts": parts} if parts else {}),
                                      **({"init": start.init_id} if start.init_id else {}),
                                      **({"widened_from": start.widened} if start.widened else {}),
                                      **({"earlier": start.init_training} if start.init_training else {})},
                            extra=lineage, exact=CODE_TENSORS if decoder_only else ("",) if unchanged else ())
    if not run.quiet:
        _say(f"\nwrote {model_path} after {plural(step, 'step')} ({trained_seconds / 60:.1f} min)")
    return model_path


def _add_prior(run: _Run, model_path: Path, cfg: ModelConfig, start: _Start, train_files: list[Path], data_dir: Path,
               step: int) -> None:
    """Add the entropy-coding prior to the written model (_attach_or_fit_prior); stopped meanwhile (Ctrl-C,
    SIGTERM), say the command that adds it, to the model already written."""
    try:
        _attach_or_fit_prior(run, model_path, cfg, start, train_files)
    except KeyboardInterrupt:
        if run.options.decoder_only:  # the starting model's prior, which a fit would not give back
            finish = _finishing_command(run, data_dir, step)
        else:
            finish = f"vqcodec fit-prior {shell_word(model_path)} {shell_word(data_dir)}"
        _say(f"\ninterrupted before the prior was added: {model_path} is written without one (its files would be "
             f"fixed-width); add it with `{finish}`")
        raise


def _finishing_command(run: _Run, data_dir: Path, step: int) -> str:
    """The command that writes the model of a run whose checkpoint holds all its `step` steps, and adds its
    prior: a --resume that trains no more (and keeps the checkpoint's training record)."""
    options = run.options
    return (f"vqcodec train {shell_word(data_dir)} --out {shell_word(options.out)} --name "
            f"{shell_word(options.name)} --resume --max-steps {step}{'' if options.fit_prior else ' --no-prior'}")


def _attach_or_fit_prior(run: _Run, model_path: Path, cfg: ModelConfig, start: _Start, train_files: list[Path]) -> None:
    """Add the entropy-coding prior to the written model: a decoder-only run keeps its starting model's
    (with fit_prior off too: the codes are the same, and the prior is part of the model it continues),
    another fits one to the training files (a failed fit leaves the model without one, with a warning)."""
    options, quiet = run.options, run.quiet
    kept_prior = _initial_prior(start.init_path) if options.decoder_only else None
    if kept_prior is not None:
        attach_prior(model_path, kept_prior)
        if not quiet:
            _say(f"kept the starting model's prior {kept_prior.prior_id:08x}: the codes are its codes, and its "
                 f"entropy-coded files decode with this model (`vqcodec fit-prior {shell_word(model_path)} DIR` "
                 "fits one to a folder instead)")
    elif options.fit_prior and cfg.codebook_size <= MAX_CODEBOOK:  # a larger one was warned of before training
        try:
            _fit_prior_in_memory(model_path, train_files, run.device, None if quiet else _say,
                                 None if quiet else lambda line: _say(line, in_place=True))
        except VQCodecError as exc:  # the trained model is already written; a prior can be added later
            _say(f"warning: no entropy-coding prior added ({exc}); files will use fixed-width coding until "
                 f"`vqcodec fit-prior {shell_word(model_path)} DIR` adds one")


def _fit_prior_in_memory(model_path: Path, files: list[Path], device: str, log, progress=None) -> None:
    """fit_prior_files, where running out of memory is a VQCodecError too."""
    try:
        fit_prior_files(model_path, files, device=device, log=log, progress=progress)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        raise VQCodecError("out of memory") from None


def _initial_prior(path: str | None):
    """The prior of the model a decoder-only run started from (its files at `path`), or None."""
    from .prior import CodePrior

    if path is None or not Path(path).exists():
        return None
    meta, tensors = read_model_files(Path(path))
    prior = CodePrior.from_tensors(tensors)
    summary = meta.get("prior")  # a record only: one that is not of the form written is left out, not read
    contexts = summary.get("contexts") if isinstance(summary, dict) else None
    if prior is not None and isinstance(contexts, list) and summary.get("id") == prior.prior_id:
        for level, described in zip(prior.levels, contexts):  # keep the fit's record (held-out bits, ...)
            if isinstance(described, dict):
                level.info = {k: v for k, v in described.items()
                              if k not in ("level", "sources", "classes", "table_rows")}
    return prior


def _decodes_record(model: VQVAE, codes_id: str, initial_id: str | None, initial_decodes: list[str]) -> dict:
    """For a decoder-only run: the models whose files the new model decodes (its starting model and those
    that one decodes), once the frozen encoder and codebooks are checked to be, to the bit, what they were."""
    if compute_codes_id(config_to_dict(model.cfg), inference_state(model)) != codes_id:
        _say("warning: the encoder or codebooks changed in a decoder-only run; the model will not decode its "
             "starting model's files")
        return {}
    return {"codes_id": codes_id, **({"decodes": [initial_id, *initial_decodes]} if initial_id else {})}


# ---------------------------------------------------------------- entropy-coding prior

# Training folders are small: the tens of photos or the hour of speech that train a codec give too
# few codes for the context tables, and the codes of files the network has trained on come out more
# predictable than those of new files. So, for folders of fewer than PRIOR_VIEWS_MAX_FILES files,
# the prior is also fitted to the codes of other views of each file: a photo turned a quarter turn
# and scaled down, a recording played faster and slower (see docs/ENTROPY.md for what this saves).
PRIOR_VIEWS_MAX_FILES = 1000
PRIOR_VIEW_SCALES = (0.71, 0.5)      # photos
PRIOR_VIEW_SPEEDS = (1.1, 0.9)       # recordings: tempo and pitch together, as in speed perturbation


def prior_views(media: np.ndarray, kind: str, sample_rate: int = 0) -> list[np.ndarray]:
    """A file's media and the other views of it the prior is fitted to: a photo (uint8 RGB, height x
    width x 3), a quarter turn of it and its PRIOR_VIEW_SCALES; a recording (float32 channels x
    samples at `sample_rate`) and its PRIOR_VIEW_SPEEDS."""
    if kind == "audio":
        return [media] + [np.ascontiguousarray(soxr.resample(media.T, sample_rate * speed, sample_rate).T)
                          for speed in PRIOR_VIEW_SPEEDS]
    from PIL import Image

    photo = Image.fromarray(media)
    views = [media, np.ascontiguousarray(np.rot90(media))]
    for scale in PRIOR_VIEW_SCALES:
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        views.append(np.asarray(photo.resize(size, Image.LANCZOS)))
    return views


def collect_codes(codec, files: list[Path], log=None, views: bool = False,
                  progress=None) -> tuple[list[np.ndarray], list[int]]:
    """Code planes of every file at full quality, and the index of the file each plane comes from.

    Planes are (levels, frames) per audio channel and (levels, rows, cols) per image; with `views`,
    each file also gives the planes of its prior_views."""
    planes, groups = [], []
    progress = progress or log
    start = time.monotonic()
    for number, path in enumerate(files, 1):
        try:
            media = read_media(codec.kind, path, codec.sample_rate)  # what a training run has said of it, not again
            coded = []
            for view in prior_views(media, codec.kind, codec.sample_rate) if views else [media]:
                if codec.kind == "audio":
                    coded.extend(np.asarray(codec.audio_to_codes(view, codec.num_codebooks, channels=view.shape[0])))
                else:
                    coded.append(np.asarray(codec.image_to_codes(view, codec.num_codebooks)))
        except VQCodecError as exc:
            if log:
                log(one_line(f"skipping {exc}"))
        else:
            planes.extend(coded)
            groups.extend([number - 1] * len(coded))
        if progress and (number % 25 == 0 or number == len(files)):
            progress(f"coded {number}/{len(files)} files ({time.monotonic() - start:.0f} s)")
    return planes, groups


def fit_prior_files(model_path: Path, files: list[Path], out: Path | None = None, device: str = "cpu", log=None,
                    progress=None, replace_shipped: bool = False) -> Path:
    """Fit a CodePrior to the codes the model gives `files` and store it in the model files (or in a copy at `out`,
    model_copy_path); `log` is told what is done, and `progress` (else `log`) how many files are coded, every 25.
    A shipped model's files are written only with `replace_shipped` (refuse_replacing_a_shipped_model). The lock of
    the folder written in (model_files_locked) is held from the start, so that another run writing there is refused
    before the fit, and the model cannot change between the fit and the write."""
    model_path = find_model(str(model_path))
    out = None if out is None else model_copy_path(out)  # before the files are coded, which takes minutes
    refuse_replacing_a_shipped_model(out or model_path, out is not None, replace_shipped)
    with model_files_locked(out if out is not None else model_path):
        return _fit_and_attach_prior(model_path, files, out, device, log, progress)


def _fit_and_attach_prior(model_path: Path, files: list[Path], out: Path | None, device: str, log, progress) -> Path:
    """fit_prior_files, once the model is found and the folder locked."""
    from .codec import AUDIO_CHUNK_FRAMES, IMAGE_CHUNK_ROWS, Codec
    from .prior import CodePrior, check_codebook_size

    codec = Codec.load(str(model_path), device=device, coding="fixed")
    check_codebook_size(codec.codebook_size)  # before coding the folder
    views = len(files) < PRIOR_VIEWS_MAX_FILES
    if views and log:
        if codec.kind == "audio":
            speeds = " and ".join(f"{speed:g}x" for speed in PRIOR_VIEW_SPEEDS)
            log(f"fitting the prior to each recording and to it played at {speeds} speed")
        else:
            scales = " and ".join(f"{scale:.0%}" for scale in PRIOR_VIEW_SCALES)
            log(f"fitting the prior to each photo, a quarter turn of it, and it scaled to {scales}")
    planes, groups = collect_codes(codec, files, log, views=views, progress=progress)
    if not planes:
        raise VQCodecError("no readable media to fit the prior to")
    start = time.monotonic()
    chunk = AUDIO_CHUNK_FRAMES if codec.kind == "audio" else IMAGE_CHUNK_ROWS
    prior = CodePrior.fit(planes, codec.codebook_size, codec.kind, chunk, log=log, groups=groups)
    codebooks = [layer.codebook.detach().float().cpu().numpy() for layer in codec.model.quantizer.layers]
    prior = prior.with_network_tables(planes, groups, codebooks, chunk, log=log)
    path = attach_prior(model_path, prior, out)
    if log:
        codes = sum(p.size for p in planes)
        per_level = sum(prior.ideal_bits(p[None] if codec.kind == "audio" else p) for p in planes)
        for line in prior_summary(prior, per_level / sum(p[0].size for p in planes)):
            log(line)
        log(f"prior {prior.prior_id:08x} fitted in {time.monotonic() - start:.0f} s: {per_level.sum() / codes:.3f} bits "
            f"per code on the fitting data (fixed width: {np.ceil(np.log2(codec.codebook_size)):.0f}); wrote {path}")
    return path


def model_copy_path(out: str | Path) -> Path:
    """The NAME.safetensors that fit_prior_files writes a model's copy to, given `out`: NAME, NAME.safetensors or
    NAME.json in a folder that exists. A folder, another suffix (runs/v1.2 wrote runs/v1.safetensors, and a folder
    wrote a model beside it) or a name no model can have (model_name_problem: runs/checkpoint replaced a training
    run's checkpoint with a model) is refused; `vqcodec fit-prior --out` is checked by it."""
    if not isinstance(out, (str, Path)):
        raise VQCodecError(f"out is the path of the model to write, not {shown(out)}")
    given, candidate = setting(f"--out {out}", f"out={shown(str(out))}"), Path(out)
    if candidate.is_dir() or str(out).endswith(("/", os.sep)):
        raise VQCodecError(f"{given} names a folder: give the path of the model to write, such as "
                           f"{candidate / 'NAME'}.safetensors")
    if candidate.suffix not in ("", ".safetensors", ".json"):
        raise VQCodecError(f"{given} is not a model path (NAME or NAME.safetensors): give {out}.safetensors")
    name = candidate.stem if candidate.suffix else candidate.name
    problem = model_name_problem(name)
    if problem:
        raise VQCodecError(f"{given} is not a model path: the model name {shown(name)} {problem}")
    target = candidate.with_suffix(".safetensors")
    if not target.parent.is_dir():
        raise VQCodecError(f"{given}: {target.parent} is not a folder" if target.parent.exists()
                           else f"{target.parent}: no such directory")
    return target


def refuse_replacing_a_shipped_model(written: Path, copy: bool, replace_shipped: bool) -> None:
    """Refuse to write the files of a shipped model (`written`: the model refitted in place, or the `copy` that
    fit_prior_files' out names) without `replace_shipped` (fit-prior's --force): every file entropy coded with it
    needs its prior, and those files stopped decoding; `vqcodec fit-prior` is checked by it (--force)."""
    from .registry import shipped_models_dir

    shipped = shipped_models_dir() / written.name
    if checked_flag("replace_shipped", replace_shipped) or not shipped.exists() \
            or os.path.realpath(written) != os.path.realpath(shipped):  # not Path.resolve: it raises for a link loop
        return
    force = setting("--force", "replace_shipped=True")
    if copy:
        raise VQCodecError(f"{setting('--out', 'out=')} {written} names the files of {written.stem}, a shipped model, "
                           f"and every file entropy coded with it needs its prior: give another one, or {force} to "
                           "replace them")
    raise VQCodecError(f"{written.stem} is a shipped model, and every file entropy coded with it needs its prior: give "
                       f"{setting('--out', 'out=')} for a copy with the new prior, or {force} to replace it")


def prior_summary(prior, fitting_bits) -> list[str]:
    """One line per codebook level of a fitted prior: the context it chose (the neighbours it predicts
    each code from, and whether from counts or a network-fitted table), the bits per code that choice
    gave the held-out codes, and `fitting_bits`, the bits per code of that level on the fitting data."""
    lines = []
    for index, (level, bits) in enumerate(zip(prior.levels, fitting_bits)):
        chosen = level.info.get("chosen")
        network = (chosen or "").endswith("/network")
        sources = "+".join(level.sources) or "none (unigram)"
        held = level.info["network"]["heldout_bits"] if network else level.info.get("heldout_bits", {}).get(chosen)
        lines.append(f"level {index}: chose context {sources}, {'a network-fitted table' if network else 'counts'}: "
                     + (f"{held:.3f} bits per held-out code, " if held is not None else "(too few codes to hold some "
                        "out), ")
                     + f"{float(bits):.3f} bits per code on the fitting data")
    return lines
