"""A training run for both media kinds, to be read top down: train (or train_command, the command's) checks the
options and locks the --out folder; _train sets the run up (where it starts, its data, model and optimisers),
_step_loop trains it, saving checkpoints, and the model files are written, with their entropy-coding prior, at
the end. Its options (trainoptions), checkpoint (checkpoint), starting point (runstart), memory estimates
(trainmemory) and the prior's fit (priorfit) are modules of their own."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from . import memory, parallel, progressline
from .adversarial import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from .checkpoint import UNVALIDATED_RECORD, restore_optimizer, restore_state, save_checkpoint
from .config import AudioConfig, ImageConfig, ModelConfig, config_to_dict
from .data import (AudioCrops, Batches, ImageCrops, NoReadableMedia, check_media_kind, decodes, default_batch_workers,
                   find_media, held_bytes, holds_content, longest_length, readable_files, relative_name,
                   say_passed_over, split_as_before, split_files)
from .devices import resolve_device
from .errors import Terminated, VQCodecError, is_out_of_memory
from .streams import open_regular_file, read_json_file
from .losses import ReconstructionLoss
from .modelfile import (CODE_TENSORS, attach_prior, compute_codes_id, inference_state, read_model_files,
                        read_safetensors_metadata, remove_leftover_model_temporaries, save_model, write_json)
from .models import VQVAE
from .prior import MAX_CODEBOOK, CodePrior
from .priorfit import fit_prior_files
from .registry import folder_models
from .runlock import lock_out, release_out
from .runstart import Run, Start, checked_config, let_go_of_dropped_state, starting_point, training_config
from .trainmemory import (DECODER_ONLY_FROZEN, DISCRIMINATOR_BYTES_PER_CROP_BYTE, STEP_BYTES_PER_CROP_BYTE,
                          training_state_bytes)
from .trainoptions import (CHECKPOINT_NAME, DEFAULT_BATCH_AND_CROP, LOG_NAME, TrainOptions, check_options, option_name,
                           recipe_of, refuse_existing_run, run_files, with_default_name)
from .wording import WARNING_PREFIX, capped_list, decimals_for, plural, reason_of, setting, shell_word, type_of


COMMITMENT_WEIGHT = 0.25
ADVERSARIAL_WEIGHT = 0.1
FEATURE_MATCHING_WEIGHT = 0.2
VALIDATION_CROPS = 64  # crops of the held-out files each evaluation measures (at least one batch)
WARMUP_STEPS = 200  # linear learning-rate warm-up at the start of every run, resumed or not


# ---------------------------------------------------------------- entry points

def train(data_dir: Path, cfg: ModelConfig | None, options: TrainOptions, kind: str | None = None) -> Path:
    """Train a model on the media in `data_dir`; returns the path of the written model file.

    Launched by torchrun, each process trains on its share of every batch (vqcodec.parallel) and
    the first one writes the files; the others return the same path once training ends. A run that
    fails before writing anything to the --out folder it made leaves no folder behind."""
    options = _checked_options(options)
    check_media_kind(kind)
    if cfg is not None and not isinstance(cfg, (AudioConfig, ImageConfig)):
        raise VQCodecError(f"cfg must be an AudioConfig or ImageConfig (or None), not {type_of(cfg)}")
    with _out_locked(options):
        return _train_checked(data_dir, cfg, options, kind)


def train_command(data_dir: Path, options: TrainOptions, config_path: str | Path | None = None, kind: str | None = None,
                  num_codebooks: int | None = None, codebook_size: int | None = None,
                  sample_rate: int | None = None) -> Path:
    """`train` as the train command runs it: the options checked before the config and media kind are taken
    from its --config, --kind, --codebooks, --codebook-size and --sample-rate (training_config)."""
    options = _checked_options(options)
    if options.init and (num_codebooks or codebook_size or sample_rate):
        raise VQCodecError("--init keeps the model's own config: leave out --codebooks, --codebook-size and "
                           "--sample-rate (--config may name the same config with wider networks)")
    with _out_locked(options):
        cfg, kind = training_config(data_dir, options, config_path, kind, num_codebooks, codebook_size, sample_rate)
        return _train_checked(data_dir, cfg, options, kind)


def _checked_options(options: TrainOptions) -> TrainOptions:
    """`options` with their default name, checked, on the device they resolve to ("auto"; cuda without a GPU
    refused)."""
    options = with_default_name(options)
    check_options(options)
    return dataclasses.replace(options, device=resolve_device(options.device))


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
    start = starting_point(run, checked_config(cfg), kind)
    if options.resume:  # their repairs, which open them, come once the run has begun (_make_out)
        parallel.together(lambda: _refuse_files_it_cannot_repair(Path(options.out)) if run.main else None)
    given = options
    run.options = options = recipe_of(options, start.meta)
    let_go_of_dropped_state(start, options)
    run.precision = resolve_precision(options.precision, run.device)
    rng = np.random.default_rng((options.seed, start.step, parallel.rank()))  # a resumed run continues with fresh crops
    say = _first_process_says(run)
    cfg, kind, files = _media_and_config(data_dir, start, options, say)
    weight_average = options.weight_average
    _warn_of_no_prior(run, cfg)
    crop_whose = "the default" if options.crop is None else "the run's"  # a crop not given: or one a --resume keeps
    run.options = options = _sized(run, kind, cfg,
                                   batch_kept=given.batch_size is None and options.batch_size is not None)
    files = readable_files(kind, files, say=say)
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
        _print_run(run, kind, model, data, start)
    parallel.together(lambda: _make_out(options, run.main))

    def checkpoint_meta(step: int, seconds: float, validated: float) -> dict:
        meta = {"step": step, "name": options.name, "trained_seconds": seconds, "validated_seconds": validated,
                "config": config_to_dict(cfg),
                "adversarial": options.adversarial, "decoder_only": options.decoder_only,
                "held_out": [relative_name(path, data_dir) for path in data.val_files],
                "settings": settings, **({"earlier_parts": parts} if parts else {}),
                # as given: recipe_of
                "run_options": {"eval_every": options.eval_every, "precision": options.precision}}
        if training.average is not None:
            meta.update(weight_average=weight_average, average_updates=training.average.updates)
        if options.decoder_only:
            meta.update(codes_id=codes_id, init_decodes=start.init_decodes, init_path=start.init_path)
        if start.widened:
            meta.update(init_widened=start.widened)
        return {**meta, "init": start.init_id, "init_name": start.init_name, "init_training": start.init_training} \
            if start.init_id else meta

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
            raise VQCodecError(f"no training step ended within {option_name('max_minutes')}: no model written "
                               "(give it more time)")
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise diverged(f"the weights are not finite after step {step}", run.checkpoint_path)
        # resumed to write the model: no part of its own
        if start.resumed and step == start.step and "settings" in start.meta:
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
    _say_how_to_use_the_model(run, model_path)
    if unsaved is not None:
        earlier = (f"{option_name('resume', True)} would go back to the checkpoint saved before it"
                   if run.checkpoint_path.exists() else f"there is no checkpoint to {setting('--resume', 'resume')}")
        raise VQCodecError(f"{model_path} is written, but not the checkpoint of its step {step} ({unsaved}): {earlier}")
    return model_path


# ---------------------------------------------------------------- setting a run up, in _train's order

def _start_processes(options: TrainOptions) -> Run:
    """Start this process's part of the run (vqcodec.parallel): threads, device and seed."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device = parallel.start(options.device)
    processes, rank, main = parallel.world_size(), parallel.rank(), parallel.is_main()
    seed_torch(options.seed + rank, device)  # the processes draw different quantizer dropout
    return Run(options, device, processes, main, options.quiet or not main, None,
                Path(options.out) / f"{CHECKPOINT_NAME}.safetensors", parallel.local_processes())


def seed_torch(seed: int, device: str) -> None:
    """Seed the generators of the CPU and of `device` alone: torch.manual_seed seeds every GPU, and where
    CUDA has not started yet it queues that for whenever the caller starts it, after the run."""
    torch.default_generator.manual_seed(int(seed))  # a NumPy integer too
    if torch.device(device).type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(int(seed))


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


def _first_process_says(run: Run):
    """What says the lines on the training files: progressline.say in the first process; nothing in the others,
    which read the same files alike."""
    return progressline.say if run.main else lambda line: None


def _media_and_config(data_dir: Path, start: Start, options: TrainOptions,
                      say=progressline.say) -> tuple[ModelConfig, str, list[Path]]:
    """The media kind and files of `data_dir`, and the config; refuses options that do not fit the media. The
    names passed over are said by `say`."""
    passed_over: list[tuple[Path, str]] = []
    kind, files = find_media(data_dir, start.kind or (start.cfg.kind if start.cfg else None), None, passed_over)
    say_passed_over(passed_over, say)
    cfg = start.cfg if start.cfg is not None else AudioConfig() if kind == "audio" else ImageConfig()
    if cfg.kind != kind:
        raise VQCodecError(f"config is for {cfg.kind} but {data_dir} holds {kind} files")
    if options.adversarial and kind != "audio":
        raise VQCodecError(f"{option_name('adversarial', True)} is for audio models only")
    if options.noise and kind != "audio":
        raise VQCodecError(f"{option_name('noise')} is for audio models only")
    return cfg, kind, files


def _warn_of_no_prior(run: Run, cfg: ModelConfig) -> None:
    """Say before training, and not only once it is done, that no prior will be fitted to codebooks larger
    than a prior covers (prior.MAX_CODEBOOK): the run's files will be coded at fixed width."""
    if run.main and run.options.fit_prior and cfg.codebook_size > MAX_CODEBOOK:
        _progress(f"{WARNING_PREFIX}no entropy-coding prior will be added: a prior covers codebooks of at most "
                  f"{MAX_CODEBOOK} entries, not {cfg.codebook_size}; files will use fixed-width coding "
                  f"({setting('--no-prior', 'fit_prior=False')} says so)")


def _sized(run: Run, kind: str, cfg: ModelConfig, batch_kept: bool = False) -> TrainOptions:
    """The run's options with the batch and crop of its media kind and device (DEFAULT_BATCH_AND_CROP; the
    batch for each process) where none is given or kept from the run a --resume continues (`batch_kept`: the
    batch is the checkpoint's), the crop cut down to a whole number of the model's strides: the crop it
    trains on, which its training record gives."""
    options = run.options
    default_batch, default_crop = DEFAULT_BATCH_AND_CROP[kind, "cpu" if run.device == "cpu" else "cuda"]
    batch_size = default_batch * run.processes if options.batch_size is None else options.batch_size
    if batch_size % run.processes and batch_kept:
        raise VQCodecError(f"the run's batch of {batch_size}, kept from its checkpoint, does not split evenly over "
                           f"{run.processes} processes: give {option_name('batch_size')}")
    if batch_size % run.processes:
        raise VQCodecError(f"{option_name('batch_size', batch_size)} does not split evenly over "
                           f"{run.processes} processes")
    crop = default_crop if options.crop is None else options.crop
    crop -= crop % cfg.hop
    if crop <= 0:
        raise VQCodecError(f"{option_name('crop')} must be at least the model stride {cfg.hop}")
    return dataclasses.replace(options, batch_size=batch_size, crop=crop)


def _crop_within_files(run: Run, kind: str, cfg: ModelConfig, files: list[Path],
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
    named = option_name("crop", given_crop) if given_crop is not None else f"{whose} crop {options.crop}"
    if not run.quiet and kind == "audio":
        seconds = longest / cfg.sample_rate
        _progress(f"{WARNING_PREFIX}{named} is longer than every training file (the longest holds "
                  f"{plural(longest, 'sample')}, {seconds:.{decimals_for(seconds, 2)}f} s): "
                  f"training on crops of {crop}")
    elif not run.quiet:
        _progress(f"{WARNING_PREFIX}{named} is larger than every training photo (the longest side is "
                  f"{plural(longest, 'pixel')}): training on crops of {crop}")
    return dataclasses.replace(options, crop=crop)


def _refuse_a_batch_beyond_memory(run: Run, kind: str, adversarial: bool = False, held: int = 0,
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
                             f"processes on this machine{with_data}, takes",
                             f"{advice}, or start fewer processes on it",
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
        return "", f"lower {option_name('batch_size')} or {option_name('crop')}"
    held = "training and held-out files" if held_out else "training files"
    return (f" with the {files / 1e9:.1f} GB of {held} {whose} in memory",
            f"pass {option_name('stream_data', True)}, or lower {option_name('batch_size')} or {option_name('crop')}")


def _held_data_bytes(run: Run, kind: str, cfg: ModelConfig, data_dir: Path, files: list[Path],
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


def _split(data_dir: Path, files: list[Path], saved_meta: dict, usable=lambda path: True,
           validates=lambda path: True, say=progressline.say) -> tuple[list[Path], list[Path], bool]:
    """The training and held-out files of `files` (split_files', which `say`s a file held out all the same; a
    resumed run's as its first run split them, where any of the files its checkpoint held out is left and
    `usable`), and whether a resumed run's held-out files are all gone, so that they are split anew."""
    split = None
    if "held_out" in saved_meta:  # a resumed run validates on the files its first run held out
        split = split_as_before(files, data_dir, saved_meta["held_out"], usable)
    train_files, val_files = split or split_files(files, usable, validates, say)
    return train_files, val_files, "held_out" in saved_meta and split is None


def _build_model(run: Run, start: Start, cfg: ModelConfig) -> tuple[VQVAE, str | None]:
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


def freeze_for_decoder_only(model: VQVAE) -> None:
    """Freeze the encoder and the codebooks, so that the model makes the codes it made before."""
    for module in DECODER_ONLY_FROZEN:
        getattr(model, module).requires_grad_(False)


def _training_data(run: Run, data_dir: Path, kind: str, readable: list[Path], cfg: ModelConfig,
                   saved_meta: dict) -> _Data:
    """The files (readable_files') split into training and held-out ones (a resumed run: as its first run
    split them), and their crops."""
    options = run.options
    say = _first_process_says(run)  # every process splits alike
    decoded: dict[Path, str | None] = {}  # what decodes found of a file due to be held out, for holds_content
    train_files, val_files, split_anew = _split(data_dir, readable, saved_meta,
                                                lambda path: decodes(kind, path, say, decoded),
                                                lambda path: holds_content(kind, path, say, decoded), say)
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


def _optimisation(run: Run, model: VQVAE, start: Start, weight_average: float) -> _Optimisation:
    """The optimiser of the trained weights, the weight average and the discriminator with its optimiser,
    as the checkpoint left them where the run resumes one. The checkpoint's tensors are let go once restored:
    the optimisers keep those of their moments, the networks copies of their weights."""
    options, saved, checkpoint_path = run.options, start.saved, run.checkpoint_path
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr,
                                  betas=(0.8, 0.99), weight_decay=0.0)
    if start.resumed:
        restore_state(checkpoint_path, restore_optimizer, optimizer, saved.get("optim", {}))
    training = _Optimisation({"model": model}, {"optim": optimizer})
    if weight_average:
        training.average = WeightAverage(model, weight_average, start.meta.get("average_updates", 0))
        if "average" in saved:
            restore_state(checkpoint_path, training.average.model.load_state_dict, saved["average"])
        training.modules["average"] = training.average.model
    if options.adversarial:  # without it, a resumed checkpoint's discriminator is let go (let_go_of_dropped_state)
        disc = MultiScaleSTFTDiscriminator().to(run.device)
        disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=options.lr, betas=(0.8, 0.99), weight_decay=0.0)
        if "disc" in saved:  # a checkpoint trained without --adversarial starts a fresh discriminator
            restore_state(checkpoint_path, disc.load_state_dict, saved["disc"])
            restore_state(checkpoint_path, restore_optimizer, disc_optimizer, saved.get("disc_optim", {}))
        parallel.broadcast_module_(disc)
        training.modules["disc"], training.optimizers["disc_optim"] = disc, disc_optimizer
    saved.clear()
    return training


def _part_settings(run: Run, weight_average: float, data_dir: Path, train_files: list[Path]) -> dict:
    """The settings this part of a run trains with, as its training record gives them."""
    options = run.options
    return {"adversarial": options.adversarial, "precision": run.precision, "batch_size": options.batch_size,
            "crop": options.crop, "lr": options.lr, "noise": options.noise,
            **({"noise_snr_db": list(options.noise_snr_db)} if options.noise else {}),
            **({"weight_average": weight_average} if weight_average else {}),
            "data": str(Path(data_dir).resolve()), "files": len(train_files)}


def _earlier_parts(start: Start, settings: dict) -> list[dict]:
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


def _print_run(run: Run, kind: str, model: VQVAE, data: _Data, start: Start) -> None:
    options = run.options
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    share = options.batch_size // run.processes
    spread = f"{run.processes} processes ({share} examples each)" if run.processes > 1 else f"device {run.device}"
    validation = data.val.describe() if data.val_files != data.train_files \
        else "on the training file (none held out from one)"
    media = f"audio at {model.cfg.sample_rate} Hz" if kind == "audio" else kind  # files at other rates: resampled
    resuming = f", resuming at step {start.step}," if start.resumed else ""
    _progress(f"training {options.name} ({media}){_starting_model(start)}{resuming} on {data.train.describe()}; validation {validation}; "
              f"{_parameter_count(sum(p.numel() for p in model.parameters()))} parameters"
              f"{f' ({_parameter_count(trained)} trained: the decoder)' if options.decoder_only else ''}; "
              f"batch {options.batch_size}; {spread}, {run.precision}")


def _starting_model(start: Start) -> str:
    """' from speech16k (320bc802)': the model a fine-tune (--init, or a resumed one) started from, for its first
    line; its id alone where a checkpoint written before the name was kept gives none."""
    if not start.init_id:
        return ""
    short_id = str(start.init_id)[:8]
    return f" from {shell_word(start.init_name)} ({short_id})" if start.init_name else f" from model {short_id}"


def _parameter_count(count: int) -> str:
    """In millions, '1.38M', but for a model too small for that to say anything ('1,412', not '0.00M')."""
    return f"{count / 1e6:.2f}M" if count >= 10_000 else f"{count:,}"


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
    _progress(f"{WARNING_PREFIX}{json_path} was {found}, as a run stopped between the two files of a save leaves it: "
              f"rewritten from the record in the weights (step {record['step']})")


def _refuse_files_it_cannot_repair(out: Path) -> None:
    """Refuse, before the run starts, the files that a --resume would fail to open for their repairs once it has
    begun (_make_out): a FIFO or a device in place of the log (_repair_log) or of the checkpoint's JSON copy of its
    record (_rewrite_stale_checkpoint_json), a log it may not read."""
    stream, _ = _opened_log(out / LOG_NAME)
    if stream is not None:
        stream.close()
    json_path = out / f"{CHECKPOINT_NAME}.json"
    try:
        open_regular_file(json_path).close()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise VQCodecError(f"cannot read {json_path}: {reason_of(exc)}") from None


def _opened_log(path: Path) -> tuple[BinaryIO | None, OSError | None]:
    """The log, opened to be repaired, and the error that denied writing it, where it can be read alone (a log
    it may not write needs no repair to resume); no stream where there is no log."""
    try:
        try:  # a FIFO's read waited for ever, a device's (/dev/zero) never ended
            return open_regular_file(path, writable=True), None
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            return open_regular_file(path), exc
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise VQCodecError(f"cannot repair {path}: {reason_of(exc)}") from None


def _repair_log(path: Path) -> None:
    """Remove, with a one-line warning, what a run stopped while writing the log (a power cut) left at
    its end, which the records a resumed run appends would run into or follow: the start of a record
    after its last whole line, and the whole lines before that which are not JSON records (a file
    system that kept the log's new length but not its bytes reads back zeros). It is truncated through the
    descriptor it was read from, so that a file put in its place meanwhile is left as it is."""
    stream, denied = _opened_log(path)
    if stream is None:
        return
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
        _progress(f"{WARNING_PREFIX}{path} ended in a partial record ({partial}, written as a run stopped): removed")
        return
    bad = f"{plural(lines, 'line')} that {'is not a JSON record' if lines == 1 else 'are not JSON records'}"
    partly = f" and a partial record ({partial})" if whole < len(text) else ""
    _progress(f"{WARNING_PREFIX}{path} ended in {bad}{partly}, "
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


# ---------------------------------------------------------------- training

def _step_loop(run: Run, cfg: ModelConfig, model: VQVAE, training: _Optimisation, loss_fn: ReconstructionLoss,
               data: _Data, rng: np.random.Generator, start: Start, checkpoint_meta) -> tuple[int, float, float]:
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

    def seconds_trained() -> float:
        """The seconds trained up to now, over all the runs of the checkpoint's, validation included."""
        return trained_seconds + time.monotonic() - began_run

    def keep() -> bool:
        """Save what this run trained, for --resume; False where it trained nothing. A stop while the step's
        log record waits for its validation saves the record, which the resumed run completes."""
        if not (main and (step > first_step or completed_stopped_record)):  # the latter: not to log it twice
            return False
        meta = checkpoint_meta(step, seconds_trained(), validating)
        save_checkpoint(checkpoint_path, training.modules, training.optimizers,
                        {**meta, UNVALIDATED_RECORD: unvalidated} if unvalidated else meta)
        return True

    def out_of_memory(exc: RuntimeError) -> VQCodecError:
        if not is_out_of_memory(exc):
            raise exc
        kept = f"; checkpoint of step {step} saved: {option_name('resume', True)} with a smaller one continues" \
            if keep() else ""
        return VQCodecError(f"out of memory for batches of {plural(options.batch_size, 'crop')} of {options.crop}: "
                            f"lower {option_name('batch_size')} or {option_name('crop')}{kept}")

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

    def report(lr: float, elapsed: float, loss_value: float, parts: dict, usage_summary: tuple | None,
               last: bool = False) -> None:
        """After a step: the progress line, the first process's checkpoint and, with the step's `usage_summary`
        (perplexity, codes in use) where it is one the log records, its validation and log record. The `last`
        step's line is shown whatever its number, without a time left, and its checkpoint is the run's end's."""
        nonlocal usage_text, last_checkpoint, unvalidated
        if main and usage_summary is not None:
            perplexity, in_use = usage_summary
            usage_text = f"perplexity {perplexity:.0f} | codes in use {in_use:.0%}"
            unvalidated = {"step": step, "loss": loss_value, "perplexity": perplexity, "codes_in_use": in_use, "lr": lr,
                           "seconds": seconds_trained() - validating, **parts}
            validated(unvalidated)
        if not run.quiet and (step % 10 == 0 or step == 1 or last):
            left = f"{_format_time(budget - elapsed)} left" if budget and not last else ""
            _progress(_step_line(step, loss_value, parts, val_text, usage_text, left), in_place=True)
        if last:
            return
        if main and time.monotonic() - last_checkpoint >= options.checkpoint_minutes * 60:
            seconds = seconds_trained()
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
            _set_learning_rate(training.optimizers, lr)

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
            if _validated_at(step, options.eval_every):
                usage_summary = usage.summary()
                usage = CodebookUsage(cfg, device)
                loss_value, parts = _whole_batch_losses(loss_value, parts, run.processes, device)
            with failure.held():  # raised in every process as the next step starts
                try:
                    report(lr, elapsed, loss_value, parts, usage_summary)
                except RuntimeError as exc:
                    raise out_of_memory(exc) from None
        if step > first_step and not _validated_at(step, options.eval_every):  # the weights the run writes
            loss_value, parts = _whole_batch_losses(loss_value, parts, run.processes, device)
            usage_summary = usage.summary()
            parallel.together(lambda: report(lr, elapsed, loss_value, parts, usage_summary, last=True))
    except KeyboardInterrupt:
        if keep():
            _say(f"\ninterrupted at step {step}: checkpoint saved in {Path(options.out)}; "
                 f"continue with {option_name('resume', True)}")
        raise
    except RuntimeError as exc:
        raise out_of_memory(exc) from None
    finally:
        batches.close()
    return step, seconds_trained(), validating


def _validated_at(step: int, eval_every: int) -> bool:
    """Whether the run validates and logs `step` as it trains: the first and every `eval_every`th (the last step,
    which a run validates all the same, comes once its budget is spent)."""
    return step % eval_every == 0 or step == 1


def _whole_batch_losses(loss_value: float, parts: dict, processes: int, device: str) -> tuple[float, dict]:
    """The step's loss and its parts as the log gives them: the whole batch's, a mean over the processes' shares."""
    losses = torch.tensor([loss_value, *parts.values()], dtype=torch.float64, device=device)
    parallel.sum_(losses)
    losses = (losses / processes).tolist()
    return losses[0], dict(zip(parts, losses[1:]))


def _set_learning_rate(optimizers: dict[str, torch.optim.Optimizer], lr: float) -> None:
    """Give every parameter group of every optimiser the learning rate `lr`."""
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = lr


def _learning_rate(options: TrainOptions, step: int, first_step: int, elapsed: float, budget: float | None) -> float:
    """The learning rate of the step after `step`: a linear warm-up over the first WARMUP_STEPS steps of this
    run, times a half cosine from --lr down to a tenth of it over the budget (time or steps, whichever is further)."""
    progress = max(elapsed / budget if budget else 0.0, step / options.max_steps if options.max_steps else 0.0)
    return options.lr * min(1.0, (step - first_step + 1) / WARMUP_STEPS) \
        * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


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


def diverged(what: str, checkpoint_path: Path) -> VQCodecError:
    """The error that stops a run whose numbers stopped being finite, before it writes a model."""
    kept = ", the last checkpoint is kept" if checkpoint_path.exists() else ""
    return VQCodecError(f"training diverged: {what} (lower {setting('the --lr', 'lr')}); no model written{kept}")


def _step_line(step: int, loss: float, parts: dict, *shown: str) -> str:
    """The progress line of a step: its loss, then those of the last validation, code use and time left that
    there are (a resumed run has no validation or code use of its own until its first validating step)."""
    detail = " ".join(f"{k} {v:.3f}" for k, v in parts.items())
    return " | ".join([f"step {step}", f"loss {loss:.4f} ({detail})", *(text for text in shown if text)])


def _format_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
        _progress(f"{WARNING_PREFIX}{exc} (step {step}); training goes on")


# ---------------------------------------------------------------- the model's files and prior

def _write_model(run: Run, model: VQVAE, model_path: Path, start: Start, codes_id: str | None, step: int,
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
        _say(f"\nwrote {model_path} after {plural(step, 'step')} ({_time_trained(run, start, trained_seconds)})")
    return model_path


def _time_trained(run: Run, start: Start, trained_seconds: float) -> str:
    """What the written model's minutes cover, for its line: the run's training with its validation (this run's
    too, where it resumed a checkpoint), and why they may be more than --max-minutes, this run's budget."""
    minutes = trained_seconds / 60
    this_run = (trained_seconds - start.trained_seconds) / 60
    said = f"{minutes:.1f} min of training and validation"
    if start.resumed:
        said += f", {this_run:.1f} of them in this run"
    budget = run.options.max_minutes
    if budget and round(this_run, 1) > budget:  # as the line shows them
        said += (f": {option_name('max_minutes', budget)} ends the steps, the last one and its validation "
                 "finish after it")
    return said


def _say_how_to_use_the_model(run: Run, model_path: Path) -> None:
    """The run's last line, how to use its model: by its folder, or where the folder holds other models than its
    own, from earlier runs of other names (--force removes the files of its own name alone), by its path, saying
    so: given as the model, the folder is refused as holding several."""
    if run.quiet:
        return
    others = [path.stem for path in folder_models(model_path.parent) if path.stem != model_path.stem]
    if not others:
        folder = model_path.parent
        _say("use it: " + setting(f"vqcodec encode IN OUT.vq -m {shell_word(folder)}", f"Codec.load({str(folder)!r})"))
        return
    model = setting(f"-m {shell_word(model_path)}", f"Codec.load({str(model_path)!r})")
    _say(f"{model_path.parent} holds {plural(len(others), 'other model')} too, of earlier runs "
         f"({capped_list(others)}): give this one by its path, {model}")


def _decodes_record(model: VQVAE, codes_id: str, initial_id: str | None, initial_decodes: list[str]) -> dict:
    """For a decoder-only run: the models whose files the new model decodes (its starting model and those
    that one decodes), once the frozen encoder and codebooks are checked to be, to the bit, what they were."""
    if compute_codes_id(config_to_dict(model.cfg), inference_state(model)) != codes_id:
        _say(f"{WARNING_PREFIX}the encoder or codebooks changed in a decoder-only run; the model will not decode its "
             "starting model's files")
        return {}
    return {"codes_id": codes_id, **({"decodes": [initial_id, *initial_decodes]} if initial_id else {})}


def _finishing_command(run: Run, data_dir: Path, step: int) -> str:
    """The command that writes the model of a run whose checkpoint holds all its `step` steps, and adds its
    prior: a --resume that trains no more (and keeps the checkpoint's training record)."""
    options = run.options
    return (f"vqcodec train {shell_word(data_dir)} --out {shell_word(options.out)} --name "
            f"{shell_word(options.name)} --resume --max-steps {step}{'' if options.fit_prior else ' --no-prior'}")


def _add_prior(run: Run, model_path: Path, cfg: ModelConfig, start: Start, train_files: list[Path], data_dir: Path,
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


def _attach_or_fit_prior(run: Run, model_path: Path, cfg: ModelConfig, start: Start, train_files: list[Path]) -> None:
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
            _say(f"{WARNING_PREFIX}no entropy-coding prior added ({exc}); files will use fixed-width coding until "
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


# ---------------------------------------------------------------- what a run says

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
