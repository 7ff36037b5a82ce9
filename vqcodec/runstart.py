"""Where a training run starts: the config and media kind the train command gives it, and the checkpoint it
resumes or the trained model (--init) it starts from, refused where they do not fit its options."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import checkpoint_config, load_checkpoint
from .config import AudioConfig, ImageConfig, ModelConfig, config_from_dict, config_to_dict, load_config_file
from .data import find_media
from .errors import VQCodecError
from .modelfile import build_model, model_kind, read_model_files
from .models import VQVAE, encoder_unchanged, widen, widths_differ_only
from .registry import find_model
from .trainoptions import TrainOptions, option_name
from .wording import plural, reason_of, setting, shell_word, shown


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
            raise VQCodecError(f"--init {options.init} is an {init_kind} model, not {config.kind} as "
                               f"--config {config_path}")
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


@dataclass
class Run:
    """What the steps of a run share: its options, the processes, the device and the checkpoint's path."""
    options: TrainOptions
    device: str
    processes: int
    main: bool               # the first process, which validates and writes the files
    quiet: bool
    precision: str | None    # "fp32" or "bf16"; None until train._train resolves the option (a --resume may keep it)
    checkpoint_path: Path
    local_processes: int = 1  # the processes on this machine (parallel.local_processes), which share its memory


@dataclass
class Start:
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
    init_name: str | None = None                      # and --init as given, which its first line names
    init_decodes: list[str] = field(default_factory=list)
    init_path: str | None = None
    init_training: dict = field(default_factory=dict)  # the starting model's record, kept as the new one's "earlier"

    @property
    def resumed(self) -> bool:
        return self.checkpoint_bytes is not None

    def count_checkpoint_bytes(self) -> None:
        """checkpoint_bytes: those of the checkpoint's tensors still held, every group's."""
        self.checkpoint_bytes = sum(tensor.nbytes for group in self.saved.values() for tensor in group.values())


def checked_config(cfg: ModelConfig | None) -> ModelConfig | None:
    """`cfg` as reading it from a model file would check it."""
    if cfg is None:
        return None
    try:
        return config_from_dict(config_to_dict(cfg))
    except ValueError as exc:
        raise VQCodecError(f"bad config ({exc})") from None


def starting_point(run: Run, cfg: ModelConfig | None, kind: str | None) -> Start:
    """The checkpoint a run resumes, or the model it starts from (grown to `cfg` where that widens it)."""
    options = run.options
    if options.resume and not run.checkpoint_path.exists():
        raise VQCodecError(f"{option_name('resume', True)}: no checkpoint in {Path(options.out)}")
    start = Start(cfg, kind)
    if options.resume:
        start.saved, start.meta = load_checkpoint(run.checkpoint_path, run.device)
        start.count_checkpoint_bytes()
        start.step, start.trained_seconds = start.meta["step"], start.meta["trained_seconds"]
        if options.max_steps is not None and options.max_steps < start.step:  # it would only write the model again
            raise VQCodecError(f"{option_name('max_steps')} is the run's total, and the checkpoint in "
                               f"{Path(options.out)} holds {plural(start.step, 'step')}: give "
                               f"{option_name('max_steps', start.step)} or more")
        start.validated_seconds = start.meta.get("validated_seconds", 0.0)
        start.cfg = config_from_dict(start.meta["config"])
        start.kind = start.cfg.kind
        _refuse_another_model(f"resume=True continues the {start.kind} model of the checkpoint in {Path(options.out)}",
                              start.cfg, cfg, kind)
        _refuse_another_part(options, start.meta.get("decoder_only", False), start.step)
    start.init_id = start.meta.get("init")
    start.init_name = start.meta.get("init_name") if isinstance(start.meta.get("init_name"), str) else None
    start.init_decodes, start.init_path = start.meta.get("init_decodes", []), start.meta.get("init_path")
    start.init_training, start.widened = start.meta.get("init_training", {}), start.meta.get("init_widened", {})
    if options.init and not start.resumed:
        model, start.init_id, start.init_decodes, start.init_training = load_initial_model(options.init)
        start.init_name = os.fspath(options.init)
        _refuse_another_model(f"init={shown(options.init)} is an {model.cfg.kind} model", model.cfg, cfg, kind,
                              compare_fields=False)
        start.init_path = str(find_model(options.init).resolve())
        if cfg is not None and widths_differ_only(model.cfg, cfg):
            start.widened = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(cfg)
                             if getattr(model.cfg, f.name) != getattr(cfg, f.name)}
            # a grown encoder makes the codes only to rounding
            if options.decoder_only and not encoder_unchanged(model.cfg, cfg):
                raise VQCodecError(f"{option_name('decoder_only', True)} keeps the model's encoder and codebooks as "
                                   f"they are: its {setting('--config', 'cfg')} may widen the decoder alone "
                                   "(decoder_channels)")
            model = widen(model, cfg, seed=options.seed)
        elif cfg is not None and cfg != model.cfg:
            raise VQCodecError(f"{option_name('init')} takes the model's own config, or the same config with wider "
                               "networks (base_channels or channels, decoder_channels)"
                               + setting("; leave out the other size flags", ": pass cfg=None for its own"))
        start.model, start.cfg, start.kind = model, model.cfg, model.cfg.kind
    return start


def let_go_of_dropped_state(start: Start, options: TrainOptions) -> None:
    """Let go of the resumed checkpoint's tensors that its run, with its options resolved (recipe_of), drops:
    the discriminator and its optimiser's moments without --adversarial, the weight average without
    --weight-average. They were held until the optimisers were made, through the model's building and the
    reading of the files, and counted in its training state (training_state_bytes)."""
    dropped = (*(() if options.adversarial else ("disc", "disc_optim")),
               *(() if options.weight_average else ("average",)))
    for group in dropped:
        start.saved.pop(group, None)
    if start.resumed:
        start.count_checkpoint_bytes()


def _refuse_another_part(options: TrainOptions, resumed_decoder_only: bool, step: int) -> None:
    """Refuse to resume a decoder-only checkpoint (of `step` steps) as a run of the whole model, or the other
    way round: its model decodes the files of the model it started from, and makes its codes, only while its
    encoder and codebooks stay as they were (a new run --init from its model file trains them)."""
    if options.decoder_only is True and not resumed_decoder_only:
        raise VQCodecError(f"{option_name('decoder_only', True)} cannot resume a checkpoint that trains the whole "
                           "model")
    if options.decoder_only is False and resumed_decoder_only:
        raise VQCodecError(f"{option_name('decoder_only', False)} cannot resume a decoder-only checkpoint: its model "
                           "decodes the files of the model it started from, and makes its codes, only while the "
                           "encoder and codebooks stay frozen; to train the whole model, "
                           f"{_a_new_run_from_its_model(options, step)}")


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
        raise VQCodecError(f"{model}, which cfg would change ({', '.join(differing)}): pass cfg=None, "
                           "or start a new run")
