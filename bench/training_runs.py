"""Short training runs of the shipped models' configs, shared by the training benchmarks
(train_speed, train_parallel, train_data): every run starts from fresh weights on the project's
training folder, with the default CPU batch and crop, and fits no prior."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import common

DATA = common.REPO_ROOT.parent / "shared" / "data"
SETUPS = {  # kind: (shipped model, training folder, batch over all processes, crop)
    "audio": ("speech16k", DATA / "speech" / "train", 16, 8000),
    "image": ("image", DATA / "images" / "train", 12, 128),
}


def kinds_named(text: str) -> list[str]:
    """The kinds that --kinds names ("audio,image"), each with its training folder there; stops with one
    line, before any run, at a kind that is not one or a folder that is missing."""
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in SETUPS]
    if unknown or not kinds:
        raise SystemExit(f"--kinds {text!r}: the kinds are {' and '.join(sorted(SETUPS))}, comma-separated")
    common.require_folders(*(SETUPS[kind][1] for kind in kinds))
    return kinds


def train_briefly(kind: str, out: Path, steps: int, threads: int, **options) -> None:
    """`steps` training steps of `kind`'s shipped config into `out`; `options` are further TrainOptions."""
    from vqcodec.registry import find_model
    from vqcodec.config import config_from_dict
    from vqcodec.train import train
    from vqcodec.trainoptions import TrainOptions

    model, data, batch, crop = SETUPS[kind]
    meta = json.loads(find_model(model).with_suffix(".json").read_text())
    train(data, config_from_dict(meta["config"]),
          TrainOptions(out=Path(out), name="bench", batch_size=batch, crop=crop, max_steps=steps, eval_every=steps,
                       threads=threads, quiet=True, fit_prior=False, **options))


def seconds_per_step(out: Path) -> float:
    """(time at the last logged step - time at step 1) / (steps between them), from a run's training log."""
    log = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    return (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])


def batch_shape(kind: str) -> str:
    _, _, batch, crop = SETUPS[kind]
    return f"{batch} x {crop}" if kind == "audio" else f"{batch} x {crop}x{crop}"


def alternating_runs(kind: str, settings: Sequence, runs: int, measure: Callable) -> dict:
    """measure(setting) for every setting, `runs` times: in the settings' order on even runs and in
    reverse on odd ones, so that a machine's drift does not favour one. Each result is printed as it
    comes; returns {setting: [results]}."""
    results = {setting: [] for setting in settings}
    for run in range(runs):
        for setting in settings if run % 2 == 0 else settings[::-1]:
            results[setting].append(measure(setting))
            print(f"{kind} run {run + 1} {setting}: {results[setting][-1]}", file=sys.stderr, flush=True)
    return results
