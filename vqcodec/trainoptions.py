"""A training run's options (TrainOptions): their defaults and bounds, the checks made before anything is read
or made, how messages name them (the train command's flag or the field), the names of a run's files in its --out
folder, and the recipe a --resume goes on with."""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from .data import NOISE_SNR_DB
from .errors import VQCodecError
from .streams import checked_flag
from .wording import setting, shown


@dataclass
class TrainOptions:
    out: Path
    name: str | None = None      # the model's, NAME.safetensors (None: resuming, the run's; else `out`'s folder name;
                                 # with_default_name sets it)
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
    fit_prior: bool = True       # fit the entropy-coding prior on the training codes at the end (decoder-only:
                                 # keep the start's)
    adversarial: bool | None = None  # audio: add the STFT discriminator and feature-matching losses (None: off, or
                                     # resuming, as the checkpoint trained; False: off, its discriminator dropped)
    precision: str | None = None  # "bf16": the networks run under bfloat16 autocast; "auto" (None): see
                                  # resolve_precision
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


# Batch size and crop (audio samples, image side) when none is given, by media kind and device. The
# shipped models' H100 run (batches of 64 and 32) and H200 run (128 and 48) made about as many steps a
# second: at these sizes a GPU mostly waits, so larger batches come nearly free there (docs/GPU.md).
DEFAULT_BATCH_AND_CROP = {("audio", "cpu"): (16, 8000), ("audio", "cuda"): (64, 8000),
                          ("image", "cpu"): (12, 128), ("image", "cuda"): (32, 256)}


DEFAULT_LR = 1e-3
DEFAULT_EVAL_EVERY = 200
DEFAULT_PRECISION = "auto"
MAX_LR = 1.0        # AdamW's steps are about lr in size: above this every weight is thrown far off at once
MAX_BATCH_SIZE = 1 << 16  # crops a step over all processes, each planned before it (the shipped models' runs: 128)
# Steps a run may count to (--max-steps, --eval-every): the learning-rate schedule's step / max_steps is a float64,
# exact for counts up to 2**53, as are the step counts of the checkpoint's and the log's JSON for readers that
# take JSON numbers as doubles (jq, JavaScript). No run comes near it: a million steps a second for 285 years.
MAX_STEPS = 1 << 53

CHECKPOINT_NAME = "checkpoint"  # checkpoint.safetensors + checkpoint.json in the output folder
LOG_NAME = "train_log.jsonl"


# The train command's options whose names are not those of the TrainOptions fields they set, with a dash
_COMMAND_OPTIONS = {"replace": "--force", "noise_snr_db": "--noise-snr"}
# The TrainOptions fields of the command's --X/--no-X options: None, not given, is off, or keeps a resumed run's setting
ON_OFF_OPTIONS = ("adversarial", "decoder_only")


def option_name(field: str, value=None) -> str:
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
        raise VQCodecError(f"model name {shown(name)} {problem}: pass another {option_name('name')}")


def run_files(out: Path, name: str) -> list[Path]:
    """The files of a training run named `name` in `out` that exist: checkpoint, log and model files."""
    paths = [out / f"{CHECKPOINT_NAME}.safetensors", out / f"{CHECKPOINT_NAME}.json", out / LOG_NAME,
             out / f"{name}.safetensors", out / f"{name}.json"]
    return [path for path in paths if path.exists()]


def refuse_existing_run(out: Path, name: str, replace: bool) -> None:
    """Refuse to start a new run over the files of another unless `replace` (--force). With it, training
    removes them once every option is checked, so a refused run leaves them as they are."""
    if out.exists() and not out.is_dir():
        raise VQCodecError(f"{option_name('out')} {out} exists and is not a folder")
    nearest = next(path for path in (out, *out.absolute().parents) if os.path.lexists(path))
    if not nearest.exists():  # a link to nothing, which making the folder would fail on once the data is read
        raise VQCodecError(f"{option_name('out')} {out} cannot be made: {nearest} is a link to {os.readlink(nearest)}, "
                           "which does not exist")
    if not nearest.is_dir():  # checked now, not once the data is read, where making the folder would fail
        raise VQCodecError(f"{option_name('out')} {out} cannot be made: {nearest} is not a folder")
    earlier = run_files(out, name)
    if earlier and not replace:
        raise VQCodecError(f"{out} holds a training run ({earlier[0].name}): pass {option_name('resume', True)} to "
                           f"continue it, {option_name('replace', True)} to replace it, "
                           f"or another {option_name('out')}")


def check_options(options: TrainOptions, given: bool = True) -> None:
    """The checks of a run's options that need neither its data, a model nor its --out folder: a budget, a
    positive learning rate, counts (whole numbers) and shares within the command's bounds, a precision it
    takes, a seed, a plain model name, not both a model to start from and a run to resume, nor both a run
    to resume and one to replace, a model for --decoder-only to start from, and, of the options as `given` (not
    a run's recipe, recipe_of, whose defaults and checkpoint's values fill in those not given), no noise range
    without noise to set it for. A run checks them before it locks or makes its --out folder, once
    with_default_name has named it (a name of None is not checked here). `options` are left as they are."""
    _check_out_and_name(options)
    if options.max_minutes is None and options.max_steps is None:
        raise VQCodecError(f"give a budget: {option_name('max_minutes')} or {option_name('max_steps')}")
    # TrainOptions from Python are not typed by the command's parser: a float count or a string number
    # failed deep in the run (torch.set_num_threads, the crops' seed, a comparison)
    for field, whole in (("max_minutes", False), ("lr", False), ("max_steps", True), ("batch_size", True),
                         ("crop", True), ("eval_every", True), ("threads", True), ("data_workers", True),
                         ("noise", False), ("weight_average", False), ("seed", True), ("checkpoint_minutes", False)):
        value = getattr(options, field)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Integral if whole else numbers.Real)):
            named = field if field in ("seed", "checkpoint_minutes") else option_name(field)  # the command sets neither
            raise VQCodecError(f"{named} must be a {'whole number' if whole else 'number'}, not {shown(value)}")
    for field in ("resume", "replace", "quiet", "fit_prior", "adversarial", "stream_data", "decoder_only"):
        if field in ON_OFF_OPTIONS and getattr(options, field) is None:  # not given
            continue
        checked_flag(option_name(field), getattr(options, field))  # resume="no" resumed
    if not 0 <= options.seed < 2 ** 63:
        raise VQCodecError(f"seed must be a whole number from 0 to 2**63 - 1, not {options.seed}")
    if not 0 <= options.checkpoint_minutes < math.inf:
        raise VQCodecError(f"checkpoint_minutes must be a number of minutes from 0 up, "
                           f"not {options.checkpoint_minutes}")
    if options.precision is not None and options.precision not in ("auto", "fp32", "bf16"):
        raise VQCodecError(f"{option_name('precision')} must be auto, fp32 or bf16, not {shown(options.precision)}")
    for field in ("max_minutes", "lr"):
        value = getattr(options, field)
        if value is not None and not 0 < value < math.inf:
            raise VQCodecError(f"{option_name(field)} must be a positive number, not {value}")
    if options.lr is not None and options.lr > MAX_LR:  # 1e308 overflowed float32 in the optimiser's step, a traceback
        raise VQCodecError(f"{option_name('lr')} must be at most {MAX_LR:g}, not {options.lr:g}")
    for field, low, high in (("max_steps", 0, MAX_STEPS), ("batch_size", 1, MAX_BATCH_SIZE), ("crop", 1, None),
                             ("eval_every", 1, MAX_STEPS), ("threads", 1, 256), ("data_workers", 1, 256)):
        value = getattr(options, field)
        if value is not None and not low <= value <= (high or value):
            raise VQCodecError(f"{option_name(field)} must be at least {low}"
                               f"{f' and at most {high}' if high else ''}, not {value}")
    if options.noise is not None and not 0.0 <= options.noise <= 1.0:
        raise VQCodecError(f"{option_name('noise')} must be a share between 0 and 1, not {options.noise}")
    if options.weight_average is not None and not 0.0 <= options.weight_average < 1.0:
        raise VQCodecError(f"{option_name('weight_average')} must be a decay between 0 and 1, such as 0.999, not "
                           f"{options.weight_average}")
    if options.noise_snr_db is not None:
        _check_noise_snr(options.noise_snr_db)
        if given and (options.noise == 0 or options.noise is None and not options.resume):  # a resumed run's share
            # may be some (recipe_of); without one, the range was taken and ignored: no crop had noise to set it for
            _refuse_a_noise_range_without_noise()
    if options.max_minutes is not None and options.max_minutes * 60 == math.inf:  # finite minutes, but not in seconds
        raise VQCodecError(f"{option_name('max_minutes', options.max_minutes)} is too large a budget: leave it out "
                           f"and give {option_name('max_steps')}")
    if options.max_steps == 0 and not options.init and not options.resume:
        raise VQCodecError(f"{option_name('max_steps', 0)} writes the starting model as it is: it needs "
                           + setting("--init MODEL", "init=MODEL"))
    if options.name is not None:
        check_model_name(options.name)
    if options.resume and options.replace:
        raise VQCodecError(f"{option_name('resume', True)} continues the run in {option_name('out')} and "
                           f"{option_name('replace', True)} replaces it: give only one")
    if options.init and options.resume:
        raise VQCodecError(f"{option_name('init')} starts a new run from a model and {option_name('resume', True)} "
                           "continues one: give only one")
    if options.decoder_only and not (options.init or options.resume):
        raise VQCodecError(f"{option_name('decoder_only', True)} trains the decoder of a trained model: give "
                           + setting("--init MODEL", "init=MODEL"))


def with_default_name(options: TrainOptions) -> TrainOptions:
    """`options`, or where their name is None a copy of them named as the run is (default_name); their out and
    name are checked first, as check_options checks them."""
    _check_out_and_name(options)
    if options.name is not None:
        return options
    resume = checked_flag(option_name("resume"), options.resume)
    return dataclasses.replace(options, name=default_name(Path(options.out), resume))


def _check_out_and_name(options: TrainOptions) -> None:
    if not isinstance(options.out, (str, Path)) or not isinstance(options.name, (str, type(None))):
        raise VQCodecError(f"out is a folder's path and name a string (or None), not {options.out!r} and "
                           f"{options.name!r}")


def default_name(out: Path, resume: bool) -> str:
    """The model name of a run given none: the name of the run a resume continues (its checkpoint's, where it has
    one), else the --out folder's; refused where that folder has no name ('.' or '/')."""
    from .checkpoint import checkpoint_name

    name = checkpoint_name(out) if resume else None
    if name is None and not out.name.strip():  # its name would be '': "model name '' is blank"
        raise VQCodecError(f"{option_name('out')} {out} has no folder name to name the model after: pass "
                           f"{option_name('name')}")
    return out.name if name is None else name


def _refuse_a_noise_range_without_noise(resumed: bool = False) -> None:
    """Refuse a noise_snr_db (--noise-snr) given where no crop has noise: no share given, or 0, or none `resumed`
    from the run a --resume continues, whose crops the range would have been taken for and ignored."""
    because = ", and the resumed run trains without noise" if resumed else ""
    raise VQCodecError(f"{option_name('noise_snr_db')} sets the SNR of the noise that {option_name('noise')} mixes in"
                       f"{because}: give {setting('--noise SHARE', 'noise=SHARE')} (such as 0.5) too, or leave "
                       f"{option_name('noise_snr_db')} out")


def _check_noise_snr(snr) -> None:
    if not (isinstance(snr, (tuple, list)) and len(snr) == 2
            and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in snr)):
        raise VQCodecError(f"{option_name('noise_snr_db')} must be {setting('LOW,HIGH', '(LOW, HIGH)')} in dB, a pair "
                           f"of numbers, not {shown(snr)}")
    low_snr, high_snr = snr
    if not -20.0 <= low_snr <= high_snr <= 100.0:
        raise VQCodecError(f"{option_name('noise_snr_db')} must be {setting('LOW,HIGH', '(LOW, HIGH)')} in dB with "
                           f"-20 <= LOW <= HIGH <= 100, not {low_snr},{high_snr}")


# The options a --resume keeps unless they are given again: the part of the checkpoint's record that holds each
# (None: its top level) and the default where it holds none (a checkpoint written before it was kept; None:
# train._sized's).
KEPT_OPTIONS = {"lr": ("settings", DEFAULT_LR), "noise": ("settings", 0.0), "noise_snr_db": ("settings", NOISE_SNR_DB),
                "batch_size": ("settings", None), "crop": ("settings", None),
                "eval_every": ("run_options", DEFAULT_EVAL_EVERY), "precision": ("run_options", DEFAULT_PRECISION),
                "weight_average": (None, 0.0), "adversarial": (None, False), "decoder_only": (None, False)}


def recipe_of(options: TrainOptions, meta: dict) -> TrainOptions:
    """The options with those that are not given taken from the last part of the run a --resume continues
    (`meta`, its checkpoint's record; a fresh run's is {}: the defaults): the learning rate, noise, batch and
    crop and noise range of its settings, the --eval-every and --precision of its run_options (its settings hold the
    precision resolved for the device it ran on), its weight average's decay, whether it trained with the
    discriminator of --adversarial and whether it trained the decoder alone (--decoder-only, which another value
    given does not change: runstart._refuse_another_part), so that a resumed run goes on as it trained. A checkpoint
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
