"""Training on a tiny config: the files it writes, resuming, learning at all, and the `train` command."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from conftest import PanicException, Terminal, run_cli, start_cli, terminal_screen, terminal_shown
from test_cli import assert_one_line_error
from vqcodec import Codec, VQCodecError
from vqcodec import format as vqformat
from vqcodec.config import (MAX_PARAMETERS, AudioConfig, ImageConfig, config_from_dict, config_to_dict,
                            network_parameter_counts, parameter_count)
from vqcodec.modelfile import (compute_model_id, read_model_files, read_safetensors_metadata, storage_form,
                               write_model_files)
from vqcodec.models import VQVAE, widen, widths_differ_only
from vqcodec.registry import find_model
from vqcodec.data import NOISE_SNR_DB, AudioCrops, add_background_noise
from vqcodec.losses import ReconstructionLoss
from vqcodec.train import WARMUP_STEPS, WeightAverage, freeze_for_decoder_only, resolve_precision, train, validate
from vqcodec.trainmemory import training_state_bytes
from vqcodec.trainoptions import DEFAULT_LR, TrainOptions
from vqcodec.wording import names_of_json

CFG = AudioConfig(sample_rate=8000, base_channels=4, strides=(2, 4), res_blocks=1, latent_dim=8, num_codebooks=4,
                  codebook_size=16, context_frames=16)
# The multi-resolution mel loss uses STFTs of up to 2048 points, so crops are kept above 1024 samples.
CROP = 1280
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, signal) -> Path:
    """Three short sine-plus-noise WAVs: 22.05 kHz stereo, 16 kHz mono in a subfolder, 8 kHz mono."""
    folder = tmp_path_factory.mktemp("train_data")
    (folder / "nested" / "deeper").mkdir(parents=True)
    soundfile.write(folder / "a.wav", signal(2, 22050, 22050).T, 22050)
    soundfile.write(folder / "nested" / "deeper" / "b.wav", signal(1, 16000, 16000, seed=1).T, 16000)
    soundfile.write(folder / "c.wav", signal(1, 12000, 8000, seed=2).T, 8000, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio, not an image: ignored\n")
    return folder


def write_damaged_mp3(path: Path) -> Path:
    """An MP3 of 3 s, cut short and garbled in its middle, which the MP3 decoder reads past, saying so."""
    soundfile.write(path, 0.3 * np.sin(np.arange(48000) / 7), 16000)
    whole = path.read_bytes()
    middle = len(whole) // 2
    path.write_bytes(whole[:middle] + bytes(range(200, 256)) * 5 + whole[middle + 280:len(whole) * 3 // 4])
    return path


def options(out: Path, **changes) -> TrainOptions:
    values = dict(out=out, name="tiny", max_steps=12, batch_size=4, crop=CROP, eval_every=5, threads=1, quiet=True)
    values.update(changes)
    return TrainOptions(**values)


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def assert_no_pickles(folder: Path) -> None:
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        assert path.suffix not in PICKLE_SUFFIXES, f"{path.name} looks like a pickle"
        head = path.read_bytes()[:4]
        assert not head.startswith(b"\x80") and not head.startswith(b"PK"), f"{path.name} is a pickle or torch zip"
        if path.suffix == ".safetensors":
            assert load_file(str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("train_out") / "run"
    path = train(data_dir, CFG, options(out))
    assert path == out / "tiny.safetensors"
    return out


def test_training_writes_model_checkpoint_and_log(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"tiny.safetensors", "tiny.json", "checkpoint.safetensors", "checkpoint.json", "train_log.jsonl"} <= names
    assert not any(name.endswith((".tmp", ".part")) for name in names)


def test_model_json(trained):
    meta = json.loads((trained / "tiny.json").read_text())
    assert config_from_dict(meta["config"]) == CFG
    assert meta["kind"] == "audio" and meta["name"] == "tiny"
    assert meta["sample_rate"] == 8000 and meta["format_version"] == 1
    assert meta["codebook_sizes"] == [16] * 4
    assert meta["training"]["steps"] == 12
    assert len(meta["model_id"]) == 16
    read_meta, tensors = read_model_files(trained / "tiny.safetensors")  # verifies the id against the weights
    network = {k: v for k, v in tensors.items() if not k.startswith("prior.")}
    assert compute_model_id(meta["config"], network) == meta["model_id"]
    assert not any(k.endswith(("ema_count", "ema_sum", "idle_steps", "initialized")) for k in tensors)
    assert any(k.startswith("prior.") for k in tensors) and "prior" in meta  # fitted at the end by default


def test_checkpoint_json(trained):
    meta = json.loads((trained / "checkpoint.json").read_text())
    assert meta["step"] == 12
    assert meta["config"] == json.loads(json.dumps(config_to_dict(CFG)))
    assert meta["trained_seconds"] > 0
    tensors = load_file(str(trained / "checkpoint.safetensors"))
    assert any(k.startswith("model.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
    assert any(k.endswith("ema_count") for k in tensors)  # training state is kept for resuming


def test_training_log(trained):
    """Records at step 1, every --eval-every and the last step, whose weights the model holds: a run whose budget
    ended between two validations (any --max-minutes run) logged and showed none of them, the progress line
    repeating step 1's validation to the end of a short run."""
    log = read_log(trained)
    assert [r["step"] for r in log] == [1, 5, 10, 12]
    for record in log:
        assert 1 <= record["perplexity"] <= 16
        assert 0 < record["codes_in_use"] <= 1
        assert math.isfinite(record["loss"]) and math.isfinite(record["val"])
        assert {"mel", "l1", "val_mel", "lr", "seconds"} <= set(record)


def test_code_use_counts_every_step_since_the_last_report():
    from vqcodec.train import CodebookUsage

    usage = CodebookUsage(CFG)  # 4 levels of 16 codes
    usage.add(torch.zeros((4, 10), dtype=torch.long))
    usage.add(torch.ones((4, 10), dtype=torch.long))
    perplexity, in_use = usage.summary()
    assert perplexity == pytest.approx(2.0) and in_use == 2 / 16  # two codes, used equally


@pytest.mark.parametrize("coding", ["auto", "fixed"])
def test_trained_model_encodes_and_decodes(trained, signal, coding):
    codec = Codec.load(str(trained / "tiny.safetensors"), coding=coding)
    assert codec.sample_rate == 8000 and codec.num_codebooks == 4
    audio = signal(1, 4000, 16000)
    data = codec.encode_audio(audio, 16000, 3)
    decoded, rate = codec.decode_audio(data)
    assert rate == 16000 and decoded.shape == (1, 4000) and np.isfinite(decoded).all()
    assert np.abs(decoded).max() > 0


def test_no_pickles(trained):
    assert_no_pickles(trained)


def test_resume_continues_to_the_total_step_count(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    first_log = read_log(out)
    train(data_dir, None, options(out, max_steps=20, resume=True))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 20
    log = read_log(out)
    assert log[:len(first_log)] == first_log
    assert [r["step"] for r in log[len(first_log):]] == [15, 20]  # continues from 12, does not restart at 1
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["training"]["steps"] == 20 and config_from_dict(meta["config"]) == CFG
    assert "earlier_parts" not in meta["training"]  # resumed with the settings it started with
    tensors = load_file(str(out / "checkpoint.safetensors"))
    adam_steps = {float(v) for k, v in tensors.items() if k.endswith(".step")}
    assert adam_steps == {20.0}, "optimizer state was not restored"
    assert meta["model_id"] != json.loads((trained / "tiny.json").read_text())["model_id"]
    Codec.load(str(out / "tiny.safetensors"))
    assert_no_pickles(out)


def test_a_resumed_runs_step_line_before_it_validates_has_no_empty_fields(trained, data_dir, tmp_path, capsys):
    """A resumed run has no validation or code use of its own until its first validating step: its step
    lines showed their empty places, 'step 20 | loss 1.2345 (...) |  | '."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=20, eval_every=100, resume=True, quiet=False, fit_prior=False))
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and re.fullmatch(r"step 20 \| loss [0-9.]+ \((\w+ [0-9.]+ ?)+\)", steps[0]), steps
    # then the last step's validation, once its budget is spent
    assert re.fullmatch(r"step 20 \| loss [0-9.]+ \((\w+ [0-9.]+ ?)+\) \| val [0-9.]+ \| perplexity [0-9]+ \| "
                        r"codes in use [0-9]+%", steps[1]), steps


def test_the_first_line_gives_a_tiny_models_parameters_in_full(data_dir, tmp_path, capsys):
    """A model of under ten thousand parameters was '0.00M parameters'."""
    train(data_dir, CFG, options(tmp_path / "run", max_steps=1, quiet=False, fit_prior=False))
    first = capsys.readouterr().err.splitlines()[0]
    assert f"; {parameter_count(CFG):,} parameters; " in first and parameter_count(CFG) < 10_000, first


def test_the_first_line_gives_an_audio_models_sample_rate(data_dir, tmp_path, capsys):
    """'training music (audio) on 106 clips' said nothing of the rate the files are resampled to: music at 44.1 kHz
    trained a 16 kHz model (the default config's) without a word, and no later line says it either."""
    train(data_dir, CFG, options(tmp_path / "run", max_steps=1, quiet=False, fit_prior=False))
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("training tiny (audio at 8000 Hz) on "), first


def test_a_resumed_runs_first_line_gives_the_step_it_resumes_at(trained, data_dir, tmp_path, capsys):
    """A resumed run's first line was a new run's: nothing said it went on from its checkpoint's step 12."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=13, resume=True, quiet=False, fit_prior=False))
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("training tiny (audio at 8000 Hz), resuming at step 12, on "), first


def test_a_fine_tunes_first_line_names_the_model_it_started_from(trained, data_dir, tmp_path, capsys):
    """A run from --init, and its resume, said nothing of the model they started from."""
    out, source_id = tmp_path / "tuned", json.loads((trained / "tiny.json").read_text())["model_id"]
    train(data_dir, None, options(out, max_steps=1, init=str(trained), quiet=False, fit_prior=False))
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"training tiny (audio at 8000 Hz) from {trained} ({source_id[:8]}) on "), first
    train(data_dir, None, options(out, max_steps=2, resume=True, quiet=False, fit_prior=False))
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"training tiny (audio at 8000 Hz) from {trained} ({source_id[:8]}), resuming at step 1, "
                            "on "), first
    from vqcodec.runstart import Start
    from vqcodec.train import _starting_model
    # a checkpoint written before the name was kept gives the id alone
    assert _starting_model(Start(None, "audio", init_id=source_id)) == f" from model {source_id[:8]}"


def test_the_written_models_minutes_say_what_they_cover_and_why_they_pass_the_budget(data_dir, tmp_path, capsys):
    """'wrote ... (0.6 min)' after --max-minutes 0.5 read as a budget overrun: the minutes are training with its
    validation (a resumed run's over all its runs), and the last step and its validation finish after the budget."""
    train(data_dir, CFG, options(tmp_path / "run", max_steps=1, quiet=False, fit_prior=False))
    wrote = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wrote ")]
    assert re.fullmatch(r"wrote \S+ after 1 step \(\d+\.\d min of training and validation\)", wrote[0]), wrote
    from vqcodec.runstart import Run, Start
    from vqcodec.train import _time_trained

    def said(seconds: float, max_minutes: float | None = None, resumed_from: float | None = None) -> str:
        run = Run(options(tmp_path, max_minutes=max_minutes), "cpu", processes=1, main=True, quiet=False,
                  precision="fp32", checkpoint_path=tmp_path / "checkpoint.safetensors")
        start = Start(CFG, "audio")
        if resumed_from is not None:
            start.checkpoint_bytes, start.trained_seconds = 0, resumed_from
        return _time_trained(run, start, seconds)

    assert said(36, 0.5) == ("0.6 min of training and validation: max_minutes=0.5 ends the steps, the last one and "
                             "its validation finish after it")
    assert said(31, 0.5) == "0.5 min of training and validation"  # as the line shows it, within the budget
    assert said(96, 1, resumed_from=60) == "1.6 min of training and validation, 0.6 of them in this run"
    assert said(96, 0.5, resumed_from=60).endswith(", 0.6 of them in this run: max_minutes=0.5 ends the steps, the "
                                                   "last one and its validation finish after it")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_is_recorded_and_the_weights_stay_fp32(data_dir, tmp_path, precision):
    out = tmp_path / precision
    train(data_dir, CFG, options(out, max_steps=3, precision=precision, fit_prior=False, batch_size=None, lr=2e-4))
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["training"]["precision"] == precision
    assert (meta["training"]["batch_size"], meta["training"]["crop"], meta["training"]["lr"]) == (16, CROP, 2e-4)
    checkpoint = load_file(str(out / "checkpoint.safetensors"))
    assert {t.dtype for k, t in checkpoint.items() if k.startswith("model.") and t.is_floating_point()} == {torch.float32}
    tensors = load_file(str(out / "tiny.safetensors"))  # stored as float16 whatever the training precision
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    Codec.load(str(out / "tiny.safetensors")).audio_to_codes(np.zeros((1, 800), np.float32))


def test_quantiser_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = VQVAE(dataclasses.replace(CFG, codebook_size=256)).train()
    seen = []
    model.quantizer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0]), with_kwargs=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        estimate, codes, commitment = model(torch.randn(8, 1, CROP))
    assert estimate.dtype == torch.bfloat16  # the networks did run in bf16
    assert seen[0].dtype == commitment.dtype == torch.float32
    # the codes are the exact fp32 nearest neighbours of what the quantiser received
    assert torch.equal(codes[0], model.quantizer.layers[0].encode(seen[0]))


def test_auto_precision_is_fp32_or_bf16():
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"


def test_a_run_resumed_with_other_settings_records_each_part(trained, data_dir, tmp_path):
    """A run resumed with another --batch-size, --crop or --lr recorded only its last part's, as if all its
    steps had trained so; the earlier parts are now kept, each with its own steps, seconds and settings."""
    from vqcodec.registry import meta_problem

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    first = json.loads((trained / "tiny.json").read_text())["training"]
    part = {key: value for key, value in first.items() if key not in ("seconds", "earlier_parts")}
    train(data_dir, None, options(out, max_steps=14, resume=True, fit_prior=False, batch_size=2, lr=2e-3))
    meta = json.loads((out / "tiny.json").read_text())
    training = meta["training"]
    assert (training["steps"], training["batch_size"], training["lr"]) == (14, 2, 2e-3)
    assert [{k: v for k, v in p.items() if k != "seconds"} for p in training["earlier_parts"]] == [part]
    assert training["earlier_parts"][0]["seconds"] <= training["seconds"] and meta_problem(meta) is None
    train(data_dir, None, options(out, max_steps=15, resume=True, fit_prior=False, batch_size=2, lr=2e-3))
    assert json.loads((out / "tiny.json").read_text())["training"]["earlier_parts"] == training["earlier_parts"]
    train(data_dir, None, options(out, max_steps=16, resume=True, fit_prior=False, crop=2 * CROP))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert [(p["steps"], p["batch_size"], p["crop"], p["lr"]) for p in training["earlier_parts"]] == \
        [(12, 4, CROP, 1e-3), (3, 2, CROP, 2e-3)]
    assert (training["steps"], training["batch_size"], training["crop"], training["lr"]) == (16, 4, 2 * CROP, 2e-3)
    Codec.load(str(out / "tiny.safetensors"))
    # a checkpoint from before the settings were kept resumes, its steps a part of settings it did not record
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    meta = json.loads((old / "checkpoint.json").read_text())
    del meta["settings"]
    save_file(load_file(str(old / "checkpoint.safetensors")), str(old / "checkpoint.safetensors"))
    (old / "checkpoint.json").write_text(json.dumps(meta))
    train(data_dir, None, options(old, max_steps=13, resume=True, fit_prior=False))
    training = json.loads((old / "tiny.json").read_text())["training"]
    assert training["steps"] == 13 and training["earlier_parts"] == [{"steps": 12, "seconds": first["seconds"]}]


def test_a_resumed_run_keeps_its_learning_rate_and_noise_unless_given(data_dir, tmp_path):
    """`--resume` without --lr or --noise, as the line of a stopped run says to continue it, went on at the
    default rate (1e-3 for a fine-tune at 3e-4) and without the run's noise; it now takes its last part's."""
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=2, lr=3e-4, noise=0.5, noise_snr_db=(10.0, 60.0), fit_prior=False))
    train(data_dir, None, options(out, max_steps=3, resume=True, fit_prior=False, eval_every=1))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert (training["lr"], training["noise"], training["noise_snr_db"]) == (3e-4, 0.5, [10.0, 60.0])
    assert "earlier_parts" not in training
    assert read_log(out)[-1]["step"] == 3 and read_log(out)[-1]["lr"] < 3e-4 / WARMUP_STEPS * 1.01  # warmed up to 3e-4
    # noise_snr_db not given is the run's, with another noise too (it was NOISE_SNR_DB); given, it is taken, NOISE_SNR_DB
    # too (taken for not given, it kept the run's)
    train(data_dir, None, options(out, max_steps=4, resume=True, fit_prior=False, noise=0.25))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert (training["noise"], training["noise_snr_db"]) == (0.25, [10.0, 60.0])
    train(data_dir, None, options(out, max_steps=5, resume=True, fit_prior=False, noise_snr_db=NOISE_SNR_DB))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert (training["noise"], training["noise_snr_db"]) == (0.25, list(NOISE_SNR_DB))
    train(data_dir, None, options(out, max_steps=6, resume=True, fit_prior=False, lr=1e-3, noise=0.0))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert (training["lr"], training["noise"], "noise_snr_db" in training) == (1e-3, 0.0, False)
    assert [(p["steps"], p["lr"], p["noise"], p["noise_snr_db"]) for p in training["earlier_parts"]] == \
        [(3, 3e-4, 0.5, [10.0, 60.0]), (1, 3e-4, 0.25, [10.0, 60.0]), (1, 3e-4, 0.25, list(NOISE_SNR_DB))]


def test_a_resumed_run_keeps_its_batch_crop_eval_every_and_precision_unless_given(data_dir, tmp_path):
    """`--resume` without --batch-size, --crop, --eval-every or --precision went on with the defaults; it now
    takes the run's (its last part's), as for --lr, and those given override them."""
    out = tmp_path / "run"
    other = "bf16" if resolve_precision("auto", "cpu") == "fp32" else "fp32"
    train(data_dir, CFG, options(out, max_steps=1, batch_size=3, eval_every=3, precision=other, fit_prior=False))
    unset = dict(batch_size=None, crop=None, eval_every=None, precision=None)
    train(data_dir, None, options(out, max_steps=3, resume=True, fit_prior=False, **unset))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert (training["batch_size"], training["crop"], training["precision"]) == (3, CROP, other)
    assert "earlier_parts" not in training and [r["step"] for r in read_log(out)] == [1, 3]
    train(data_dir, None, options(out, max_steps=4, resume=True, fit_prior=False, batch_size=2, crop=CROP + 8,
                                  eval_every=4, precision="auto"))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert (training["batch_size"], training["crop"], training["precision"]) == (2, CROP + 8, resolve_precision("auto", "cpu"))
    assert [(p["steps"], p["batch_size"], p["crop"]) for p in training["earlier_parts"]] == [(3, 3, CROP)]
    assert [r["step"] for r in read_log(out)] == [1, 3, 4]


def test_a_checkpoint_without_its_settings_resumes_with_the_defaults(trained, data_dir, tmp_path):
    """A checkpoint written before a run's settings (batch, crop, ...) and options (eval_every, precision) were
    kept in it resumes with the defaults, as it did then."""
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    meta = json.loads((old / "checkpoint.json").read_text())
    del meta["settings"], meta["run_options"]
    save_file(load_file(str(old / "checkpoint.safetensors")), str(old / "checkpoint.safetensors"))  # no header copy
    (old / "checkpoint.json").write_text(json.dumps(meta))
    train(data_dir, None, options(old, max_steps=16, resume=True, fit_prior=False, batch_size=None, crop=None,
                                  eval_every=None))
    training = json.loads((old / "tiny.json").read_text())["training"]
    assert (training["steps"], training["batch_size"], training["crop"]) == (16, 16, 8000)  # longest file: 8000
    assert training["precision"] == resolve_precision("auto", "cpu")
    assert [r["step"] for r in read_log(old)] == [1, 5, 10, 12, 16]  # none at 15: every 200 steps; 16, the last


def test_a_run_resumed_on_its_folder_by_another_path_is_one_part(trained, data_dir, tmp_path, monkeypatch):
    """The data folder is recorded as its absolute path: resuming with `data/` for `/abs/data` (or the
    reverse) counted as other data, and split the run into parts of the same settings."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    monkeypatch.chdir(data_dir.parent)
    train(Path(data_dir.name), None, options(out, max_steps=13, resume=True, fit_prior=False))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert training["data"] == str(data_dir.resolve()) and "earlier_parts" not in training
    # a checkpoint that named its folder relatively resumes as one part with the absolute path
    meta = json.loads((out / "checkpoint.json").read_text())
    meta["settings"]["data"] = data_dir.name
    save_file(load_file(str(out / "checkpoint.safetensors")), str(out / "checkpoint.safetensors"))
    (out / "checkpoint.json").write_text(json.dumps(meta))
    train(data_dir, None, options(out, max_steps=14, resume=True, fit_prior=False))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert training["steps"] == 14 and "earlier_parts" not in training


def test_a_resumed_run_keeps_its_held_out_files_when_the_folder_changes(data_dir, tmp_path, signal, capsys):
    folder = tmp_path / "data"
    shutil.copytree(data_dir, folder)
    out = tmp_path / "run"
    train(folder, CFG, options(out, max_steps=1, fit_prior=False))
    assert json.loads((out / "checkpoint.json").read_text())["held_out"] == ["a.wav"]  # the first of three
    soundfile.write(folder / "0.wav", signal(1, 8000, 8000, seed=5).T, 8000)  # now the first file
    train(folder, None, options(out, max_steps=2, resume=True, fit_prior=False, quiet=False))
    assert json.loads((out / "checkpoint.json").read_text())["held_out"] == ["a.wav"]
    assert "training tiny (audio at 8000 Hz), resuming at step 1, on 3 clips" in capsys.readouterr().err  # 0, b, c
    (folder / "a.wav").unlink()
    train(folder, None, options(out, max_steps=3, resume=True, fit_prior=False, quiet=False))
    assert "none of the files the checkpoint held out for validation is left" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["held_out"] == ["0.wav"]


def test_a_silent_file_due_to_be_held_out_trains_and_the_run_validates_on_the_next_as_it_resumes(tmp_path, signal,
                                                                                                  capsys):
    """The silent first file was the validation set, its loss near 0 whatever the model; its line says it is
    passed over, and a resumed run validates on the same file, as does one whose checkpoint held out such a file."""
    folder = tmp_path / "data"
    folder.mkdir()
    soundfile.write(folder / "a.wav", np.zeros(8000), 8000)
    for seed, name in enumerate(("b.wav", "c.wav")):
        soundfile.write(folder / name, signal(1, 8000, 8000, seed=seed).T, 8000)
    out = tmp_path / "run"
    train(folder, CFG, options(out, max_steps=1, fit_prior=False, quiet=False))
    err = capsys.readouterr().err
    assert f"not holding {folder / 'a.wav'} out for validation: it is silent" in err
    assert "training tiny (audio at 8000 Hz) on 2 clips" in err  # a.wav and c.wav
    assert json.loads((out / "checkpoint.json").read_text())["held_out"] == ["b.wav"]
    train(folder, None, options(out, max_steps=2, resume=True, fit_prior=False, quiet=False))
    assert "not holding" not in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["held_out"] == ["b.wav"]


def test_each_file_due_to_be_held_out_is_decoded_once(tmp_path, signal, capsys, monkeypatch):
    """Each file due to be held out was decoded whole twice, once to see that it decodes and again to see that it
    is not silent; a silent one still trains, with its line, and the next is held out in its place."""
    import vqcodec.data

    folder = tmp_path / "data"
    folder.mkdir()
    soundfile.write(folder / "a.wav", np.zeros(8000), 8000)
    for seed, name in enumerate(("b.wav", "c.wav")):
        soundfile.write(folder / name, signal(1, 8000, 8000, seed=seed).T, 8000)
    decoded = []
    blocks = vqcodec.data.sound_blocks
    monkeypatch.setattr(vqcodec.data, "sound_blocks",
                        lambda sound, path, **kw: decoded.append(Path(path).name) or blocks(sound, path, **kw))
    with pytest.raises(VQCodecError, match="no training step ended"):  # no step: quick
        train(folder, CFG, options(tmp_path / "run", max_steps=None, max_minutes=1e-9, batch_size=2, quiet=False))
    assert sorted(decoded) == ["a.wav", "b.wav"]  # c.wav, which trains, is read whole as its crops are made
    assert f"not holding {folder / 'a.wav'} out for validation: it is silent" in capsys.readouterr().err


def test_the_first_process_alone_says_which_files_it_does_not_hold_out(tmp_path, signal, capsys, monkeypatch):
    """Under torchrun every process reads and splits the files alike, and each said why a file due to be held out is
    not (a recording of NaN samples alone, a silent one), and which names it passed over (a FIFO, a file that does not
    read): the first process alone says it, as it says the run's other lines."""
    import vqcodec.parallel

    folder = tmp_path / "data"
    folder.mkdir()
    soundfile.write(folder / "a.wav", np.full(8000, np.nan, dtype=np.float32), 8000, subtype="FLOAT")
    soundfile.write(folder / "b.wav", np.zeros(8000), 8000)
    for seed, name in enumerate(("c.wav", "d.wav")):  # c.wav is held out in place of the two before it
        soundfile.write(folder / name, signal(1, 8000, 8000, seed=seed).T, 8000)
    (folder / "e.wav").write_bytes(b"not a recording")
    os.mkfifo(folder / "f.wav")
    said = (f"skipping {folder / 'a.wav'}: samples that are not finite", f"not holding {folder / 'b.wav'} out",
            f"skipping {folder / 'e.wav'}: cannot read audio", f"skipping {folder / 'f.wav'}: not a regular file")
    for main in (True, False):  # the others: a process that is not the first, and writes nothing
        monkeypatch.setattr(vqcodec.parallel, "is_main", lambda: main)
        run = options(tmp_path / "run", max_steps=None, max_minutes=1e-9, batch_size=2)  # no step: quick
        with pytest.raises(VQCodecError, match="no training step ended") if main else contextlib.nullcontext():
            train(folder, CFG, run)
        err = capsys.readouterr().err
        assert all(line in err for line in said) if main else err == "", err


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
def test_the_first_process_alone_warns_of_what_the_mp3_decoder_says_of_a_training_file(tmp_path, signal, capsys,
                                                                                     monkeypatch):
    """Under torchrun every process reads the training files alike, and each warned of what the MP3 decoder said of
    a damaged one: the first alone warns, as it says the files' skipping lines. The others still note the file, whose
    crops read from disk they make in their main thread, where the decoder's own lines are caught."""
    import warnings

    import vqcodec.data
    import vqcodec.parallel
    from vqcodec.errors import AudioReadWarning

    folder = tmp_path / "data"
    folder.mkdir()
    write_damaged_mp3(folder / "b.mp3")
    for seed, name in enumerate(("a.wav", "c.wav")):
        soundfile.write(folder / name, signal(1, 8000, 8000, seed=seed).T, 8000)
    for main in (True, False):
        monkeypatch.setattr(vqcodec.parallel, "is_main", lambda: main)
        monkeypatch.setattr(vqcodec.data, "_WARNED_AUDIO", set())  # as a process of its own starts
        run = options(tmp_path / "run", max_steps=None, max_minutes=1e-9, batch_size=2)  # no step: quick
        with warnings.catch_warnings(record=True) as caught, \
                pytest.raises(VQCodecError, match="no training step ended") if main else contextlib.nullcontext():
            warnings.simplefilter("always")
            train(folder, CFG, run)
        said = [str(item.message) for item in caught if item.category is AudioReadWarning]
        assert said == ([f"{folder / 'b.mp3'}: the MP3 decoder says: Warning: Xing stream size off by more than 1%, "
                         "fuzzy seeking may be even more fuzzy than by design!; read past it"] if main else []), said
        assert vqcodec.data._WARNED_AUDIO == {str(folder / "b.mp3")}
        assert capsys.readouterr().err == ""


def write_invalid_apng(path: Path) -> Path:
    """A PNG with an acTL chunk of 0 frames, which Pillow warns of at every Image.open ("Invalid APNG ...")."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    whole, after_ihdr = path.read_bytes(), 8 + 25
    body = b"acTL" + bytes(8)
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    path.write_bytes(whole[:after_ihdr] + chunk + whole[after_ihdr:])
    return path


def test_what_pillow_warns_of_a_training_photo_is_said_once_by_the_first_process_alone(tmp_path, capsys,
                                                                                       monkeypatch):
    """image_size passed on what Pillow warned of as it opened a photo (a raw UserWarning, not naming it) at each of
    its calls, 4 a photo in a run (readable_files, longest_length, held_bytes, ImageCrops), before reading it warned
    once: 5 lines of one thing. It is one ImageReadWarning naming the photo, from the first process alone (as of a
    damaged MP3), the others noting it as given."""
    import warnings

    import vqcodec.data
    import vqcodec.parallel

    folder = tmp_path / "data"
    folder.mkdir()
    write_invalid_apng(folder / "a.png")
    for seed, name in enumerate(("b.png", "c.png")):
        Image.fromarray(np.full((40, 40, 3), 60 * seed, dtype=np.uint8)).save(folder / name)
    cfg = ImageConfig(channels=(8,), latent_dim=4, num_codebooks=1, codebook_size=4)
    for main in (True, False):
        monkeypatch.setattr(vqcodec.parallel, "is_main", lambda: main)
        monkeypatch.setattr(vqcodec.data, "_WARNED_IMAGES", {})  # as a process of its own starts
        run = options(tmp_path / "run", max_steps=None, max_minutes=1e-9, batch_size=2, crop=16)  # no step: quick
        with warnings.catch_warnings(record=True) as caught, \
                pytest.raises(VQCodecError, match="no training step ended") if main else contextlib.nullcontext():
            warnings.simplefilter("always")
            train(folder, cfg, run)
        said = [f"{item.category.__name__}: {item.message}" for item in caught]
        assert said == ([f"ImageReadWarning: {folder / 'a.png'}: Invalid APNG, will use default PNG image if possible;"
                         " read past it"] if main else []), said
        assert list(vqcodec.data._WARNED_IMAGES) == [str(folder / "a.png")]
        assert capsys.readouterr().err == ""


def test_a_run_in_a_folder_whose_name_is_not_utf8_resumes_and_its_model_loads(trained, data_dir, tmp_path):
    out = tmp_path / os.fsdecode(b"run\xff")  # safetensors refuses such paths: the checkpoint was 'damaged'
    shutil.copytree(trained, out)
    path = train(data_dir, None, options(out, max_steps=13, resume=True, fit_prior=False))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 13
    assert Codec.load(str(path)).kind == "audio"


def strictly_valid_json(path: Path):
    """The JSON value of `path`, refused (UnicodeEncodeError) where it holds a lone surrogate ("\\udce9"), which
    strict JSON and UTF-8 readers refuse, and Python's json module reads."""
    value = json.loads(path.read_bytes().decode("utf-8"))
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def test_paths_that_are_not_utf8_are_valid_json_in_the_model_and_checkpoint_and_read_back(trained, data_dir, tmp_path):
    """A training folder named b'caf\\xe9' (and a held-out file of such a name) were written into NAME.json and
    checkpoint.json as lone surrogates, "caf\\udce9". Now as valid text with their bytes in hex beside them, which a
    --resume reads back: it validates on the same file, and its earlier part names the folder; and a decoder-only
    fine-tune of a model in such a folder keeps that model's prior, which it reads from the path in its checkpoint."""
    folder, start = tmp_path / os.fsdecode(b"caf\xe9"), tmp_path / os.fsdecode(b"mod\xe8le")
    try:
        folder.mkdir()
    except OSError as exc:  # a file system that takes only UTF-8 names (EILSEQ)
        pytest.skip(f"this file system refuses a name that is not UTF-8 ({exc})")
    shutil.copy(data_dir / "a.wav", folder / os.fsdecode(b"a\xe0.wav"))  # the first: held out
    shutil.copy(data_dir / "c.wav", folder / "b.wav")
    shutil.copytree(trained, start)
    out = tmp_path / "run"
    train(folder, None, options(out, max_steps=1, init=str(start / "tiny.safetensors"), decoder_only=True))
    data = str(folder.resolve())
    for name in ("checkpoint.json", "tiny.json"):
        training = strictly_valid_json(out / name)["settings" if name == "checkpoint.json" else "training"]
        assert training["data"] == data.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        assert training["data_hex"] == os.fsencode(data).hex()
    record = strictly_valid_json(out / "checkpoint.json")
    assert record["held_out"] == ["a\ufffd.wav"] and record["held_out_hex"] == ["61e02e776176"]
    assert record["init_path_hex"] == os.fsencode(str((start / "tiny.safetensors").resolve())).hex()
    shutil.copy(data_dir / "c.wav", folder / "0.wav")  # now the first, which a split anew would hold out
    train(folder, None, options(out, max_steps=2, resume=True))
    record = strictly_valid_json(out / "checkpoint.json")
    assert record["held_out"] == ["a\ufffd.wav"] and record["step"] == 2  # the same file, not split anew
    training = strictly_valid_json(out / "tiny.json")["training"]
    assert [part["data_hex"] for part in training["earlier_parts"]] == [os.fsencode(data).hex()]  # 2 files, now 3
    assert Codec.load(str(out / "tiny.safetensors")).prior.prior_id == Codec.load(str(start)).prior.prior_id
    # a checkpoint written before, its record in the JSON file alone, with lone surrogates: read as it was
    meta = names_of_json(json.loads((out / "checkpoint.json").read_text()))
    save_file(load_file(str(out / "checkpoint.safetensors")), str(out / "checkpoint.safetensors"))
    (out / "checkpoint.json").write_text(json.dumps(meta))
    assert "\\udce0" in (out / "checkpoint.json").read_text()
    train(folder, None, options(out, max_steps=3, resume=True))
    assert strictly_valid_json(out / "checkpoint.json")["held_out_hex"] == ["61e02e776176"]


def test_resumed_run_warms_its_learning_rate_up_again(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    first_log = read_log(out)
    train(data_dir, None, options(out, max_steps=14, resume=True, eval_every=1, fit_prior=False))
    resumed = read_log(out)[len(first_log):]
    assert [r["step"] for r in resumed] == [13, 14]
    lr = DEFAULT_LR
    # one step and two steps into the 200-step warm-up, not the full rate a restart at step 12 would jump to
    assert resumed[0]["lr"] < lr * 1.5 / WARMUP_STEPS
    assert resumed[1]["lr"] > resumed[0]["lr"]  # still rising, although the cosine decay is near its end


def test_the_logs_clock_leaves_out_validation_of_earlier_runs_too(data_dir, tmp_path, monkeypatch):
    """A resumed run's log counted the seconds its checkpoint had spent validating as training."""
    import vqcodec.train

    def slow_validate(*args):
        time.sleep(0.75)
        return validate(*args)

    monkeypatch.setattr(vqcodec.train, "validate", slow_validate)
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=2, eval_every=1, fit_prior=False))  # 1.5 s of validation
    train(data_dir, None, options(out, max_steps=3, eval_every=1, resume=True, fit_prior=False))
    seconds = [record["seconds"] for record in read_log(out)]
    assert seconds[2] - seconds[1] < 0.75, seconds  # one tiny step, not the first run's validation
    assert json.loads((out / "checkpoint.json").read_text())["validated_seconds"] >= 2.25


def test_a_resumed_run_draws_fresh_quantizer_dropout(trained, data_dir, tmp_path, monkeypatch):
    """A resumed run reseeded torch as a new one does, so its steps drew the quantizer dropout of the
    run's first steps again."""
    import vqcodec.train

    states = []

    def recording_step(*args):
        states.append(torch.get_rng_state())
        return train_step(*args)

    train_step = vqcodec.train.train_step
    monkeypatch.setattr(vqcodec.train, "train_step", recording_step)
    train(data_dir, CFG, options(tmp_path / "new", max_steps=1, fit_prior=False))
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=13, resume=True, fit_prior=False))
    assert len(states) == 2 and not torch.equal(states[0], states[1])


def test_resume_at_the_budget_trains_no_more(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=12, resume=True, fit_prior=False))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 12
    assert read_log(out) == read_log(trained)


def test_adversarial_fine_tuning_checkpoints_and_keeps_the_discriminator(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = load_file(str(out / "checkpoint.safetensors"))
    assert not any(k.startswith("disc") for k in before)
    train(data_dir, None, options(out, max_steps=16, resume=True, adversarial=True, fit_prior=False))
    tensors = load_file(str(out / "checkpoint.safetensors"))
    disc_steps = {float(v) for k, v in tensors.items() if k.startswith("disc_optim.") and k.endswith(".step")}
    assert disc_steps == {4.0}, "the discriminator must take one step per training step"
    assert json.loads((out / "checkpoint.json").read_text())["adversarial"] is True
    new_records = [r for r in read_log(out) if r["step"] > 12]
    assert new_records and all({"adv", "fm", "disc"} <= set(r) for r in new_records)
    _, weights = read_model_files(out / "tiny.safetensors")
    assert not any(k.startswith("disc") for k in weights), "the discriminator must not be shipped"

    first_disc = {k: v.clone() for k, v in tensors.items() if k.startswith("disc.")}
    train(data_dir, None, options(out, max_steps=18, resume=True, fit_prior=False))  # no flag: stays adversarial
    tensors = load_file(str(out / "checkpoint.safetensors"))
    assert {float(v) for k, v in tensors.items() if k.startswith("disc_optim.") and k.endswith(".step")} == {6.0}
    assert any(not (tensors[k] == v).all() for k, v in first_disc.items()), "the discriminator did not train"
    Codec.load(str(out / "tiny.safetensors"))
    assert_no_pickles(out)


def test_a_resume_with_adversarial_false_trains_on_without_the_discriminator(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=14, resume=True, adversarial=True, fit_prior=False))
    assert any(k.startswith("disc.") for k in load_file(str(out / "checkpoint.safetensors")))
    train(data_dir, None, options(out, max_steps=16, resume=True, adversarial=False, eval_every=1, fit_prior=False))
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["adversarial"] is False and meta["settings"]["adversarial"] is False
    assert [(part["steps"], part["adversarial"]) for part in meta["earlier_parts"]] == [(12, False), (2, True)]
    assert not any(k.startswith("disc") for k in load_file(str(out / "checkpoint.safetensors"))), "dropped"
    records = [r for r in read_log(out) if r["step"] > 14]
    assert [r["step"] for r in records] == [15, 16] and not any({"adv", "fm", "disc"} & set(r) for r in records)
    train(data_dir, None, options(out, max_steps=17, resume=True, fit_prior=False))  # not given: stays off
    assert json.loads((out / "checkpoint.json").read_text())["adversarial"] is False
    assert not any(k.startswith("disc") for k in load_file(str(out / "checkpoint.safetensors")))


def test_adversarial_is_refused_for_images(tmp_path):
    (tmp_path / "data").mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "data" / "a.png")
    with pytest.raises(VQCodecError, match="audio"):
        train(tmp_path / "data", None, options(tmp_path / "run", max_steps=1, crop=32, adversarial=True))


@pytest.mark.parametrize("snr_range", [NOISE_SNR_DB, (40.0, 60.0)])
def test_background_noise_is_added_at_an_snr_in_range(snr_range):
    rng = np.random.default_rng(0)
    clip = (0.3 * np.sin(np.arange(4000) * 0.05)).astype(np.float32)
    snrs = []
    for _ in range(200):
        noisy = add_background_noise(clip, rng, snr_range)
        assert noisy.dtype == clip.dtype and noisy.shape == clip.shape
        snrs.append(10 * math.log10(np.mean(clip.astype(np.float64) ** 2) / np.mean((noisy - clip).astype(np.float64) ** 2)))
    low, high = snr_range
    assert low - 0.01 <= min(snrs) and max(snrs) <= high + 0.01
    assert max(snrs) - min(snrs) > 0.8 * (high - low)  # the SNR is drawn over the whole range
    silence = np.zeros(100, np.float32)
    assert not add_background_noise(silence, rng).any()


def test_noise_augments_training_crops_but_never_validation(data_dir, tmp_path):
    files = sorted(data_dir.rglob("*.wav"))
    clean, noisy = AudioCrops(files, 8000, CROP), AudioCrops(files, 8000, CROP, noise=1.0)
    batch = lambda crops, augment: crops.batch(4, np.random.default_rng(5), augment=augment)  # noqa: E731
    assert torch.equal(batch(clean, False), batch(noisy, False))
    assert not torch.equal(batch(clean, True), batch(noisy, True))
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=2, noise=0.5, fit_prior=False))
    training = json.loads((out / "tiny.json").read_text())["training"]
    assert training["noise"] == 0.5 and training["noise_snr_db"] == list(NOISE_SNR_DB)
    with pytest.raises(VQCodecError, match="between 0 and 1"):
        train(data_dir, CFG, options(tmp_path / "bad", max_steps=1, noise=1.5))
    with pytest.raises(VQCodecError, match="noise_snr_db must be"):
        train(data_dir, CFG, options(tmp_path / "bad", max_steps=1, noise=0.5, noise_snr_db=(40.0, 10.0)))


def test_noise_snr_range_reaches_the_crops_and_the_model_record(data_dir, tmp_path, cli):
    files = sorted(data_dir.rglob("*.wav"))

    def crops_with_noise_at(snr_db: float) -> np.ndarray:  # the same crops, gains and noise shapes every time
        return AudioCrops(files, 8000, CROP, noise=1.0, noise_snr_db=(snr_db, snr_db)).batch(8, np.random.default_rng(3)).numpy()

    reference = crops_with_noise_at(100.0)
    quiet, loud = (np.mean((crops_with_noise_at(snr) - reference) ** 2) for snr in (60.0, 0.0))
    assert 0 < quiet < 1e-4 * loud  # 60 dB apart

    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    out = tmp_path / "cli"
    result = cli("train", data_dir, "--out", out, "--max-steps", "1", "--crop", str(CROP), "--batch-size", "2",
                 "--config", tmp_path / "cfg.json", "--noise", "0.5", "--noise-snr", "20,60", "--no-prior",
                 "--threads", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads((out / "cli.json").read_text())["training"]["noise_snr_db"] == [20.0, 60.0]
    for bad in ("20", "a,b", "60,20", "10,40,50"):
        assert_one_line_error(cli("train", data_dir, "--out", tmp_path / "bad", "--max-steps", "1", "--noise", "0.5",
                                  "--noise-snr", bad))


def test_noise_is_refused_for_images(tmp_path):
    (tmp_path / "data").mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "data" / "a.png")
    with pytest.raises(VQCodecError, match="audio"):
        train(tmp_path / "data", None, options(tmp_path / "run", max_steps=1, crop=32, noise=0.5))


def test_weight_average_follows_the_trained_parameters_only():
    model = VQVAE(CFG)
    model.encoder.requires_grad_(False)
    average = WeightAverage(model, decay=0.9)
    trained = next(model.decoder.parameters())
    frozen = next(model.encoder.parameters())
    start_trained, start_frozen = trained.detach().clone(), frozen.detach().clone()
    with torch.no_grad():
        trained.add_(1.0)
        frozen.add_(1.0)  # not trained: the average must not follow it
        model.quantizer.layers[0].codebook.add_(2.0)
    average.update()  # the first update's decay is min(0.9, 2 / 11)
    decay = 2 / 11
    averaged = dict(average.synced(model).named_parameters())
    name = next(n for n, p in model.named_parameters() if p is trained)
    frozen_name = next(n for n, p in model.named_parameters() if p is frozen)
    assert torch.allclose(averaged[name], decay * start_trained + (1 - decay) * (start_trained + 1.0))
    assert torch.equal(averaged[frozen_name], start_frozen)
    assert torch.equal(average.model.quantizer.layers[0].codebook, model.quantizer.layers[0].codebook)  # buffers: live
    for _ in range(200):
        average.update()
    assert torch.allclose(dict(average.model.named_parameters())[name], trained, atol=1e-6)  # converges to a fixed point


def test_weight_average_is_what_the_model_file_holds_and_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=6, lr=1.0, weight_average=0.9, fit_prior=False))  # big steps: the
    # weights move well beyond float16 rounding, so the file shows which of the two it holds
    meta, tensors = read_model_files(out / "tiny.safetensors")
    assert meta["training"]["weight_average"] == 0.9
    checkpoint = load_file(str(out / "checkpoint.safetensors"))
    name = "decoder.output.weight" if "decoder.output.weight" in tensors else next(
        k for k in tensors if k.startswith("decoder.") and k.endswith("weight"))
    assert (tensors[name].float() - checkpoint[f"average.{name}"]).abs().max() < 2e-4  # float16 storage
    assert (checkpoint[f"average.{name}"] - checkpoint[f"model.{name}"]).abs().max() > 2e-3
    assert json.loads((out / "checkpoint.json").read_text())["average_updates"] == 6
    train(data_dir, None, options(out, max_steps=9, resume=True, fit_prior=False))  # kept without the option
    assert json.loads((out / "checkpoint.json").read_text())["average_updates"] == 9
    assert read_model_files(out / "tiny.safetensors")[0]["training"]["weight_average"] == 0.9
    train(data_dir, None, options(out, max_steps=11, resume=True, weight_average=0.0, fit_prior=False))  # given: off
    assert "average_updates" not in json.loads((out / "checkpoint.json").read_text())
    meta, tensors = read_model_files(out / "tiny.safetensors")
    assert "weight_average" not in meta["training"]
    checkpoint = load_file(str(out / "checkpoint.safetensors"))
    assert f"average.{name}" not in checkpoint
    assert (tensors[name].float() - checkpoint[f"model.{name}"]).abs().max() < 2e-4  # the last step's weights
    for bad in (1.0, -0.5):
        with pytest.raises(VQCodecError, match="weight_average must be"):
            train(data_dir, CFG, options(tmp_path / "bad", max_steps=1, weight_average=bad))


def test_weight_average_option_of_the_train_command(data_dir, tmp_path, cli):
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    out = tmp_path / "cli"
    result = cli("train", data_dir, "--out", out, "--max-steps", "2", "--crop", str(CROP), "--batch-size", "2",
                 "--config", tmp_path / "cfg.json", "--weight-average", "0.99", "--no-prior", "--threads", "1",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads((out / "cli.json").read_text())["training"]["weight_average"] == 0.99
    assert_one_line_error(cli("train", data_dir, "--out", tmp_path / "bad", "--max-steps", "1", "--weight-average", "2"))


def test_validation_covers_every_crop_whatever_the_batch_size(trained, data_dir):
    model = Codec.load(str(trained / "tiny.safetensors")).model
    crops = AudioCrops(sorted(data_dir.rglob("*.wav")), 8000, CROP).batch(10, np.random.default_rng(0), augment=False)
    loss_fn = ReconstructionLoss(CFG)
    whole, whole_parts = validate(model, loss_fn, crops, 10, "cpu")
    batched, batched_parts = validate(model, loss_fn, crops, 4, "cpu")  # batches of 4, 4 and 2
    assert whole == pytest.approx(batched, rel=1e-5)
    assert whole_parts == pytest.approx(batched_parts, rel=1e-5)
    first, _ = validate(model, loss_fn, crops[:4], 4, "cpu")
    assert first != pytest.approx(whole, rel=1e-3)  # the other six crops count


def test_loss_decreases(data_dir, tmp_path, monkeypatch):
    import vqcodec.train as train_module

    # validated at every step: 16 held-out crops, not 64, which were three quarters of the test's time
    monkeypatch.setattr(train_module, "VALIDATION_CROPS", 16)
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=40, eval_every=1, lr=5e-3, fit_prior=False))
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 41))
    val = [r["val"] for r in log]
    loss = [r["loss"] for r in log]
    assert np.mean(val[-5:]) < 0.9 * np.mean(val[:5]), val
    assert np.mean(loss[-5:]) < np.mean(loss[:5]), loss


def test_small_crop_trains(data_dir, tmp_path):
    """--crop 256 (the stride allows it), shorter than the mel loss's longest STFT, trains: it crashed in torch.stft."""
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=2, crop=256, fit_prior=False))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2


def test_the_training_record_gives_the_crop_trained_on(data_dir, tmp_path):
    """A crop that is not a whole number of strides trains on the whole strides below it; the record gave
    the crop asked for, which the run never trained on."""
    out = tmp_path / "run"
    train(data_dir, CFG, options(out, max_steps=1, crop=CROP + CFG.hop - 1, fit_prior=False))
    assert json.loads((out / "tiny.json").read_text())["training"]["crop"] == CROP
    assert json.loads((out / "checkpoint.json").read_text())["settings"]["crop"] == CROP


def test_crop_below_the_stride_is_refused(data_dir, tmp_path):
    with pytest.raises(VQCodecError, match=f"^crop must be at least the model stride {CFG.hop}$"):
        train(data_dir, CFG, options(tmp_path / "run", max_steps=1, crop=CFG.hop - 1))


def test_folder_without_media_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "readme.txt").write_text("nothing here")
    with pytest.raises(VQCodecError, match="no audio files found"):
        train(tmp_path / "data", CFG, options(tmp_path / "run", max_steps=1))


@pytest.mark.parametrize("name", ["z_broken.wav", "0_broken.wav"])  # 0_ sorts first: the file validation would hold out
def test_unreadable_files_are_skipped(data_dir, tmp_path, capsys, name):
    folder = tmp_path / "data"
    shutil.copytree(data_dir, folder)
    (folder / name).write_text("this is text, not a WAV file\n")
    train(folder, CFG, options(tmp_path / "run", max_steps=1, fit_prior=False))
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 1
    assert [line for line in capsys.readouterr().err.splitlines() if name in line] == [
        f"skipping {folder / name}: cannot read audio: Format not recognised."]   # one line, the path once


def test_a_file_that_fails_to_decode_is_skipped_once_and_not_fitted_to(data_dir, tmp_path, capsys):
    # its header reads, its samples do not: training skipped it, then the prior's fit tried it again
    folder = tmp_path / "data"
    shutil.copytree(data_dir, folder)
    audio, rate = soundfile.read(folder / "a.wav", dtype="float32")
    soundfile.write(folder / "z.flac", audio, rate)
    whole = (folder / "z.flac").read_bytes()
    (folder / "z.flac").write_bytes(whole[:len(whole) // 2])
    train(folder, CFG, options(tmp_path / "run", max_steps=1, quiet=False))
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "z.flac" in line]) == 1, err
    assert "coded 2/2 files" in err  # b.wav and c.wav; a.wav is held out


def test_a_folder_of_one_readable_file_trains_and_validates_on_it(data_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(data_dir / "a.wav", folder / "b.wav")
    (folder / "a.wav").write_bytes(b"RIFF\x00\x00 cut short")
    train(folder, CFG, options(tmp_path / "run", max_steps=2, eval_every=1, fit_prior=False))
    assert read_log(tmp_path / "run")[-1]["step"] == 2


def test_train_command(data_dir, tmp_path, cli):
    config = {**config_to_dict(CFG), "codebook_size": 8}
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    out = tmp_path / "mine"
    result = cli("train", data_dir, "--out", out, "--max-steps", "3", "--crop", str(CROP), "--batch-size", "2",
                 "--config", tmp_path / "cfg.json", "--threads", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    meta = json.loads((out / "mine.json").read_text())
    assert meta["name"] == "mine" and meta["training"]["steps"] == 3
    assert config_from_dict(meta["config"]) == AudioConfig(**{**config_to_dict(CFG), "codebook_size": 8})
    assert meta["codebook_sizes"] == [8] * 4
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 3
    assert_no_pickles(out)
    codec = Codec.load(str(out / "mine.safetensors"))
    assert codec.codebook_size == 8


def test_out_inside_a_file_is_refused_before_the_data_is_read(data_dir, tmp_path, cli):
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file" / "run", tmp_path / "file" / "deeper" / "run"):
        result = cli("train", data_dir, "--out", out, "--max-steps", "1", "--threads", "1", "--device", "cpu")
        assert_one_line_error(result)  # no line about the data it would train on first
        assert f"--out {out} cannot be made: {tmp_path / 'file'} is not a folder" in result.stderr.decode()
    assert (tmp_path / "file").read_text() == "not a folder"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")  # mkdir failed once the data was read: 'File exists'
    for out in (tmp_path / "dangling", tmp_path / "dangling" / "run"):
        result = cli("train", data_dir, "--out", out, "--max-steps", "1", "--threads", "1", "--device", "cpu")
        assert_one_line_error(result)
        assert (f"--out {out} cannot be made: {tmp_path / 'dangling'} is a link to {tmp_path / 'nowhere'}, which does "
                "not exist") in result.stderr.decode()
    assert not (tmp_path / "nowhere").exists()


def test_model_weights_are_stored_as_float16(trained):
    tensors = network_tensors(trained / "tiny.safetensors")
    floats = [name for name, t in tensors.items() if t.is_floating_point()]
    assert floats and all(tensors[name].dtype == torch.float16 for name in floats)
    checkpoint = load_file(str(trained / "checkpoint.safetensors"))  # training state keeps full precision
    assert checkpoint["model.quantizer.layers.0.codebook"].dtype == torch.float32
    codec = Codec.load(str(trained / "tiny.safetensors"))
    assert all(p.dtype == torch.float32 for p in codec.model.parameters())
    assert storage_form(torch.tensor([1.0, 7e4])).dtype == torch.float32  # beyond float16's range
    assert storage_form(torch.tensor([1.0, float("nan")])).dtype == torch.float32
    assert storage_form(torch.tensor([3, 4])).dtype == torch.int64
    assert storage_form(torch.zeros(0)).dtype == torch.float32


def network_tensors(model_file: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(model_file)).items() if not k.startswith("prior.")}


def test_zero_steps_from_a_shipped_model_write_that_model(data_dir, tmp_path):
    """speech16k's encoder is stored in float32 (its decoder-only fine-tune kept it to the bit): --max-steps 0
    stored it in float16 instead, a model of another id that decoded none of speech16k's files."""
    source = json.loads(Path(find_model("speech16k")).with_suffix(".json").read_text())
    out = tmp_path / "same"
    train(data_dir, None, options(out, max_steps=0, init="speech16k", fit_prior=False))
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["model_id"] == source["model_id"] and meta["decodes"] == source["decodes"]
    assert meta["codes_id"] == source["codes_id"]  # what loading checks "decodes" by: it was left out


def test_init_starts_a_new_run_from_the_models_weights(trained, data_dir, tmp_path):
    out = tmp_path / "tuned"
    source = json.loads((trained / "tiny.json").read_text())
    train(data_dir, None, options(out, max_steps=0, init=str(trained / "tiny.safetensors"), fit_prior=False))
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["training"]["init"] == source["model_id"] and meta["training"]["steps"] == 0
    assert config_from_dict(meta["config"]) == CFG
    before, after = network_tensors(trained / "tiny.safetensors"), network_tensors(out / "tiny.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert meta["model_id"] == source["model_id"]
    checkpoint = load_file(str(out / "checkpoint.safetensors"))
    for level in range(CFG.num_codebooks):
        prefix = f"model.quantizer.layers.{level}."
        # the EMA restarts from the model's codebook with a count of 1 per code
        assert torch.equal(checkpoint[prefix + "ema_sum"], checkpoint[prefix + "codebook"])
        assert torch.equal(checkpoint[prefix + "ema_count"], torch.ones(CFG.codebook_size))
        assert bool(checkpoint[prefix + "initialized"]), "k-means initialisation would overwrite the trained codebook"


def test_init_fine_tunes_and_resumes_as_one_run(trained, data_dir, tmp_path):
    out = tmp_path / "tuned"
    source_id = json.loads((trained / "tiny.json").read_text())["model_id"]
    train(data_dir, None, options(out, max_steps=3, init=str(trained), eval_every=1, fit_prior=False))
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3]  # a new run: its own step count, from 1
    before, after = network_tensors(trained / "tiny.safetensors"), network_tensors(out / "tiny.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before), "fine-tuning changed no weight"
    train(data_dir, None, options(out, max_steps=5, resume=True, fit_prior=False))
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["training"]["steps"] == 5 and meta["training"]["init"] == source_id
    assert "widened_from" not in meta["training"]
    assert json.loads((out / "checkpoint.json").read_text())["init"] == source_id
    Codec.load(str(out / "tiny.safetensors"))
    # the starting model's record is kept, through the resume, so the whole lineage stays in the file
    assert meta["training"]["earlier"] == json.loads((trained / "tiny.json").read_text())["training"]
    train(data_dir, None, options(tmp_path / "again", max_steps=2, init=str(out / "tiny.safetensors"), fit_prior=False))
    again = json.loads((tmp_path / "again" / "tiny.json").read_text())["training"]
    assert again["steps"] == 2 and again["earlier"] == meta["training"]
    assert again["earlier"]["earlier"]["steps"] == json.loads((trained / "tiny.json").read_text())["training"]["steps"]


def float32_copy(model_file: Path, out: Path) -> Path:
    """The model with float32 weights that float16 cannot hold (as the shipped models have)."""
    meta, tensors = read_model_files(model_file)
    generator = torch.Generator().manual_seed(0)
    tensors = {k: v.float() * (1 + 1e-3 * torch.randn(v.shape, generator=generator)) if v.is_floating_point() else v
               for k, v in tensors.items() if not k.startswith("prior.")}
    meta = {key: value for key, value in meta.items() if key not in ("prior", "decodes", "codes_id")}
    meta["model_id"] = compute_model_id(meta["config"], tensors)
    return write_model_files(out / "tiny.safetensors", meta, tensors)


def test_info_gives_the_id_of_a_fine_tune_that_decodes_the_file(trained, data_dir, tmp_path, cli, signal):
    """`info -m` of a decoder-only fine-tune gave the file's model id as if it were the fine-tune's: 'model: dec
    (id of the model the fine-tune was made from)'."""
    out = tmp_path / "dec"
    train(data_dir, None, options(out, name="dec", max_steps=1, init=str(trained / "tiny.safetensors"),
                                  decoder_only=True, fit_prior=False))
    (tmp_path / "a.vq").write_bytes(Codec.load(str(trained / "tiny.safetensors")).encode_audio(signal(1, 800, 8000),
                                                                                               8000, 2))
    tiny_id, dec_id = (json.loads(path.read_text())["model_id"] for path in (trained / "tiny.json", out / "dec.json"))
    result = cli("info", tmp_path / "a.vq", "-m", out / "dec.safetensors", text=True)
    assert result.returncode == 0, result.stderr
    assert f"model:     {out / 'dec.safetensors'} ({dec_id}, which decodes files of {tiny_id})" in result.stdout.splitlines()


def test_decoder_only_keeps_the_codes_and_trains_the_decoder(trained, data_dir, tmp_path, capsys):
    (tmp_path / "fp32").mkdir()
    start = float32_copy(trained / "tiny.safetensors", tmp_path / "fp32")
    out = tmp_path / "decoder"
    train(data_dir, None, options(out, max_steps=4, init=str(start), decoder_only=True, eval_every=1,
                                  fit_prior=False, lr=1e-2))
    before, after = network_tensors(start), network_tensors(out / "tiny.safetensors")
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert changed == {"decoder"}
    for name in before:  # stored to the bit: float16 rounding would move codes near a tie
        if not name.startswith("decoder."):
            assert after[name].dtype == before[name].dtype
    source, tuned = Codec.load(str(start)), Codec.load(str(out / "tiny.safetensors"))
    audio = np.asarray(soundfile.read(data_dir / "a.wav", dtype="float32")[0]).T
    codes = source.audio_to_codes(audio)
    np.testing.assert_array_equal(tuned.audio_to_codes(audio), codes)
    assert not np.allclose(tuned.codes_to_audio(codes), source.codes_to_audio(codes), atol=1e-4)
    # the run records the codes id the start, which records none, is hashed to: the start takes the tuned codes
    assert "codes_id" not in source.meta and tuned.codes_id == source.codes_id
    np.testing.assert_array_equal(source.codes_to_audio(tuned.audio_to_codes(audio)), source.codes_to_audio(codes))
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["training"]["decoder_only"] and bytes.fromhex(meta["model_id"]) != source.model_id
    assert meta["decodes"] == [source.model_id.hex()] and "prior" not in meta  # the start had no prior to keep
    # resuming keeps the encoder and codebooks frozen without the flag
    train(data_dir, None, options(out, max_steps=6, resume=True, fit_prior=False, lr=1e-2))
    np.testing.assert_array_equal(Codec.load(str(out / "tiny.safetensors")).audio_to_codes(audio), codes)
    assert json.loads((out / "tiny.json").read_text())["training"]["steps"] == 6
    whole = re.escape(f"decoder_only=False cannot resume a decoder-only checkpoint: its model decodes the files of the "
                      f"model it started from, and makes its codes, only while the encoder and codebooks stay frozen; "
                      f"to train the whole model, start a new run with init={str(out / 'tiny.safetensors')!r}")
    with pytest.raises(VQCodecError, match=f"^{whole}$"):
        train(data_dir, None, options(out, max_steps=7, resume=True, decoder_only=False))
    code, err = run_in_process(["train", data_dir, "--out", out, "--resume", "--no-decoder-only", "--max-steps", 7], capsys)
    assert code != 0 and err == (f"vqcodec: error: --no-decoder-only cannot resume a decoder-only checkpoint: its model "
                                 f"decodes the files of the model it started from, and makes its codes, only while the "
                                 f"encoder and codebooks stay frozen; to train the whole model, start a new run with "
                                 f"--init {out / 'tiny.safetensors'}\n")
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 6
    with pytest.raises(VQCodecError, match="give init=MODEL"):
        train(data_dir, CFG, options(tmp_path / "scratch", decoder_only=True))
    with pytest.raises(VQCodecError, match="decoder_channels"):  # growing the encoder would change the codes
        train(data_dir, dataclasses.replace(CFG, base_channels=6),
              options(tmp_path / "grown", init=str(trained), decoder_only=True))
    with pytest.raises(VQCodecError, match="whole model"):
        train(data_dir, None, options(tmp_path / "again", max_steps=1, init=str(trained), fit_prior=False))
        train(data_dir, None, options(tmp_path / "again", max_steps=2, resume=True, decoder_only=True))


def test_a_resume_keeps_decoder_only_as_it_keeps_the_other_options(tmp_path):
    """decoder_only not given is the resumed checkpoint's (off where it holds none, or for a new run), as the options
    of KEPT_OPTIONS are: it was resolved by hand beside them, into a field of the run's start, and the run's options
    kept None."""
    from vqcodec.trainoptions import recipe_of

    assert recipe_of(options(tmp_path, resume=True), {"decoder_only": True}).decoder_only is True
    assert recipe_of(options(tmp_path, resume=True), {}).decoder_only is False  # a checkpoint of the whole model
    assert recipe_of(options(tmp_path), {}).decoder_only is False


def test_a_refused_no_decoder_only_resume_names_the_model_file_only_where_there_is_one(trained, data_dir, tmp_path,
                                                                                      capsys):
    """--resume --no-decoder-only of a decoder-only run told to start a new run with --init OUT/NAME.safetensors,
    which a run stopped before its end (Ctrl-C, kill) has not written: it says how to write it first (a --resume
    that trains no more), and names the file alone once it is there."""
    out = tmp_path / "decoder"
    train(data_dir, None, options(out, max_steps=1, init=str(trained / "tiny.safetensors"), decoder_only=True,
                                  fit_prior=False))
    model_path = out / "tiny.safetensors"
    for path in (model_path, model_path.with_suffix(".json")):  # as a run stopped before its end leaves the folder
        path.unlink()
    refused = ["train", data_dir, "--out", out, "--resume", "--no-decoder-only", "--max-steps", 2]
    code, err = run_in_process(refused, capsys)
    assert code != 0 and err.endswith(f"stay frozen; to train the whole model, write its model first (--resume "
                                      f"--max-steps 1 writes {model_path} from the checkpoint), then start a new run "
                                      f"with --init {model_path}\n")
    train(data_dir, None, options(out, max_steps=1, resume=True))  # as it says
    assert model_path.is_file()
    code, err = run_in_process(refused, capsys)
    assert code != 0 and err.endswith(f"stay frozen; to train the whole model, start a new run with --init {model_path}\n")


def test_a_decoder_only_model_decodes_its_starting_models_files(trained, data_dir, tmp_path, monkeypatch):
    from vqcodec.registry import model_for_file

    start = Codec.load(str(trained / "tiny.safetensors"))
    audio = np.asarray(soundfile.read(data_dir / "a.wav", dtype="float32")[0]).T
    old_file = start.encode_audio(audio, 22050, 3)  # entropy coded with the starting model's prior
    assert vqformat.parse_header(old_file).coding in vqformat.PRIOR_CODINGS
    out = tmp_path / "tuned"
    train(data_dir, None, options(out, max_steps=3, init=str(trained), decoder_only=True, lr=1e-2))
    tuned = Codec.load(str(out / "tiny.safetensors"))
    assert tuned.prior.prior_id == start.prior.prior_id  # kept, not refitted: the codes are the same
    assert tuned.model_id != start.model_id and tuned.decodes == {start.model_id}
    decoded, rate = tuned.decode(old_file)
    assert rate == 22050 and decoded.shape == audio.shape
    np.testing.assert_array_equal(tuned.read_codes(old_file)[1], start.read_codes(old_file)[1])
    assert not np.allclose(decoded, start.decode(old_file)[0], atol=1e-4)  # the new decoder's output
    new_file = tuned.encode_audio(audio, 22050, 3)
    assert vqformat.parse_file(new_file)[1] == vqformat.parse_file(old_file)[1]  # the same payload chunks
    assert len(new_file) == len(old_file) and vqformat.parse_header(new_file).model_id == tuned.model_id
    with pytest.raises(VQCodecError, match="written by model"):
        start.decode(new_file)  # the starting model does not know its successor
    with pytest.raises(VQCodecError, match="written by model"):
        Codec.load(str(float32_copy(out / "tiny.safetensors", tmp_path))).decode(old_file)  # other decoders do not
    # by id: the model itself where it is installed, else its decoder-only successor
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(out))
    assert model_for_file(old_file) == str(out / "tiny.safetensors")
    monkeypatch.setenv("VQCODEC_MODEL_PATH", os.pathsep.join([str(out), str(trained)]))
    assert model_for_file(old_file) == str(trained / "tiny.safetensors")
    # a successor of the successor decodes both
    again = tmp_path / "again"
    train(data_dir, None, options(again, max_steps=1, init=str(out / "tiny.safetensors"), decoder_only=True))
    assert Codec.load(str(again / "tiny.safetensors")).decodes == {start.model_id, tuned.model_id}


def test_a_decoder_only_run_without_prior_fitting_keeps_the_starting_prior(trained, data_dir, tmp_path):
    """--decoder-only --no-prior ended with a model without a prior: the codes are the starting model's,
    so its prior is kept whether or not a prior is to be fitted."""
    out = tmp_path / "tuned"
    train(data_dir, None, options(out, max_steps=1, init=str(trained / "tiny.safetensors"), decoder_only=True,
                                  fit_prior=False))
    start, tuned = Codec.load(str(trained / "tiny.safetensors")), Codec.load(str(out / "tiny.safetensors"))
    assert start.prior is not None and tuned.prior is not None and tuned.prior.prior_id == start.prior.prior_id
    assert json.loads((out / "tiny.json").read_text())["prior"]["id"] == start.prior.prior_id


def test_a_decoder_only_run_whose_codes_changed_claims_no_files(trained, capsys):
    """The frozen encoder and codebooks are checked to the bit before the model says it decodes its
    starting model's files."""
    from vqcodec.modelfile import compute_codes_id, inference_state
    from vqcodec.train import _decodes_record

    model = Codec.load(str(trained / "tiny.safetensors")).model
    same = compute_codes_id(config_to_dict(model.cfg), inference_state(model))
    assert _decodes_record(model, same, "ab" * 8, ["cd" * 8]) == {"codes_id": same, "decodes": ["ab" * 8, "cd" * 8]}
    assert capsys.readouterr().err == ""
    assert _decodes_record(model, "0" * 16, "ab" * 8, []) == {}
    assert "the encoder or codebooks changed in a decoder-only run" in capsys.readouterr().err


def test_train_command_decoder_only_errors(trained, data_dir, tmp_path, cli):
    base = ("train", data_dir, "--out", tmp_path / "tuned", "--max-steps", "1", "--crop", str(CROP), "--device", "cpu",
            "--decoder-only")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(config_to_dict(dataclasses.replace(CFG, base_channels=6))))
    for args, message in [((), "--init"), (("--init", str(trained / "tiny.safetensors"), "--config", config), "--config")]:
        result = cli(*base, *args)
        assert_one_line_error(result)
        assert message in result.stderr.decode()
        assert not (tmp_path / "tuned" / "tuned.safetensors").exists()


def test_decoder_only_grows_a_wider_decoder_onto_the_same_codes(trained, data_dir, tmp_path, cli):
    start = Codec.load(str(trained / "tiny.safetensors"))
    audio = np.asarray(soundfile.read(data_dir / "a.wav", dtype="float32")[0]).T
    old_file = start.encode_audio(audio, 22050, 3)
    wider = dataclasses.replace(CFG, decoder_channels=7)
    config = tmp_path / "wider.json"
    config.write_text(json.dumps(config_to_dict(wider)))
    out = tmp_path / "grown"
    result = cli("train", data_dir, "--out", out, "--name", "tiny", "--init", trained / "tiny.safetensors",
                 "--decoder-only", "--config", config, "--max-steps", "2", "--lr", "1e-2", "--crop", str(CROP),
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr.decode()
    meta = json.loads((out / "tiny.json").read_text())
    assert config_from_dict(meta["config"]) == wider and meta["config"]["decoder_channels"] == 7
    grown = Codec.load(str(out / "tiny.safetensors"))
    assert grown.decodes == {start.model_id} and grown.prior.prior_id == start.prior.prior_id
    assert sum(p.numel() for p in grown.model.decoder.parameters()) > \
        1.5 * sum(p.numel() for p in start.model.decoder.parameters())
    np.testing.assert_array_equal(grown.audio_to_codes(audio), start.audio_to_codes(audio))
    assert vqformat.parse_file(grown.encode_audio(audio, 22050, 3))[1] == vqformat.parse_file(old_file)[1]
    decoded, rate = grown.decode(old_file)
    assert rate == 22050 and decoded.shape == audio.shape
    # a model without decoder_channels keeps its config, and so its id, as before the field
    assert "decoder_channels" not in json.loads((trained / "tiny.json").read_text())["config"]
    assert "decoder_channels" not in config_to_dict(CFG)


def test_widen_the_decoder_alone_keeps_the_encoder_to_the_bit():
    torch.manual_seed(0)
    narrow = VQVAE(CFG).eval()
    wide = widen(narrow, dataclasses.replace(CFG, decoder_channels=7)).eval()
    audio, latents = torch.randn(1, 1, 2000), torch.randn(1, CFG.latent_dim, 30)
    narrow_state = narrow.state_dict()
    assert all(torch.equal(tensor, narrow_state[name]) for name, tensor in wide.state_dict().items()
               if not name.startswith("decoder."))
    with torch.no_grad():
        assert torch.equal(wide.encoder(audio), narrow.encoder(audio))
        assert torch.allclose(wide.decoder(latents), narrow.decoder(latents), rtol=1e-4, atol=1e-6)
    image = ImageConfig(channels=(8, 12, 16), latent_dim=8, num_codebooks=2, codebook_size=16)
    narrow = VQVAE(image).eval()
    wide = widen(narrow, dataclasses.replace(image, decoder_channels=(12, 16, 16))).eval()
    latents = torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        assert torch.equal(wide.encoder(torch.ones(1, 3, 32, 32)), narrow.encoder(torch.ones(1, 3, 32, 32)))
        assert torch.allclose(wide.decoder(latents), narrow.decoder(latents), rtol=1e-4, atol=1e-5)


def test_widen_keeps_the_output_and_breaks_the_symmetry_of_the_copies():
    torch.manual_seed(0)
    narrow = VQVAE(CFG).eval()
    wide = widen(narrow, dataclasses.replace(CFG, base_channels=7)).eval()  # 4 -> 7 channels, 8 -> 14, ...
    assert wide.cfg.base_channels == 7
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in narrow.parameters())
    audio = torch.randn(1, 1, 2000)
    latents = torch.randn(1, CFG.latent_dim, 30)
    with torch.no_grad():
        assert torch.allclose(wide.encoder(audio), narrow.encoder(audio), rtol=1e-4, atol=1e-5)
        assert torch.allclose(wide.decoder(latents), narrow.decoder(latents), rtol=1e-4, atol=1e-6)
    assert torch.equal(wide.quantizer.layers[0].codebook, narrow.quantizer.layers[0].codebook)
    # the first convolution's channels 4..6 copy three of channels 0..3; a training step must move
    # each copy differently from its original, or the wider network would never be more than the narrow one
    first = wide.encoder.net[0].weight
    originals = [next(i for i in range(4) if torch.equal(first[i], first[c])) for c in range(4, 7)]
    wide.train()
    loss = wide.decoder(wide.encoder(audio)).pow(2).mean()
    loss.backward()
    gradient = wide.encoder.net[0].weight.grad
    for copy, original in zip(range(4, 7), originals):
        assert not torch.allclose(gradient[copy], gradient[original])


def test_widen_images():
    cfg = ImageConfig(channels=(8, 12, 16), latent_dim=8, num_codebooks=2, codebook_size=16)
    narrow = VQVAE(cfg).eval()
    wide = widen(narrow, dataclasses.replace(cfg, channels=(12, 12, 24))).eval()
    image, latents = torch.rand(1, 3, 48, 64), torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        assert torch.allclose(wide.encoder(image), narrow.encoder(image), rtol=1e-4, atol=1e-5)
        assert torch.allclose(wide.decoder(latents), narrow.decoder(latents), rtol=1e-4, atol=1e-5)


def test_widths_differ_only():
    assert widths_differ_only(CFG, dataclasses.replace(CFG, base_channels=6))
    assert not widths_differ_only(CFG, CFG)
    assert not widths_differ_only(CFG, dataclasses.replace(CFG, base_channels=3))  # narrower
    assert not widths_differ_only(CFG, dataclasses.replace(CFG, base_channels=6, num_codebooks=5))
    image = ImageConfig()
    assert widths_differ_only(image, dataclasses.replace(image, channels=(128, 160, 256)))
    assert not widths_differ_only(image, dataclasses.replace(image, channels=(128, 160)))
    assert not widths_differ_only(image, CFG)
    assert widths_differ_only(CFG, dataclasses.replace(CFG, decoder_channels=6))
    assert not widths_differ_only(CFG, dataclasses.replace(CFG, decoder_channels=3))  # narrower than base_channels 4
    assert not widths_differ_only(CFG, dataclasses.replace(CFG, decoder_channels=4))  # the same widths
    assert widths_differ_only(image, dataclasses.replace(image, decoder_channels=(96, 192, 224)))
    assert not widths_differ_only(image, dataclasses.replace(image, decoder_channels=(96, 160)))


def test_init_with_a_wider_config_grows_the_model(trained, data_dir, tmp_path, cli):
    wider = dataclasses.replace(CFG, base_channels=6)
    config = tmp_path / "wider.json"
    config.write_text(json.dumps(config_to_dict(wider)))
    out = tmp_path / "grown"
    result = cli("train", data_dir, "--out", out, "--name", "tiny", "--init", trained / "tiny.safetensors",
                 "--config", config, "--max-steps", "0", "--crop", str(CROP), "--device", "cpu", "--no-prior")
    assert result.returncode == 0, result.stderr.decode()
    meta = json.loads((out / "tiny.json").read_text())
    assert config_from_dict(meta["config"]) == wider
    assert meta["training"]["init"] == json.loads((trained / "tiny.json").read_text())["model_id"]
    assert meta["training"]["widened_from"] == {"base_channels": 4}  # the record said nothing of the growing
    source, grown = Codec.load(str(trained / "tiny.safetensors")), Codec.load(str(out / "tiny.safetensors"))
    audio = np.asarray(soundfile.read(data_dir / "c.wav", dtype="float32")[0])[None]
    codes = source.audio_to_codes(audio)
    # the grown weights are stored as float16 like any model's, so a few codes near a tie may differ
    assert (grown.audio_to_codes(audio)[:, 0] == codes[:, 0]).mean() > 0.98
    # the source's codes as a plain array: codes that name their model are refused by another (of another id)
    np.testing.assert_allclose(grown.codes_to_audio(np.asarray(codes)), source.codes_to_audio(codes), atol=1e-4)
    deeper = tmp_path / "deeper.json"
    deeper.write_text(json.dumps(config_to_dict(dataclasses.replace(CFG, base_channels=6, res_blocks=2))))
    result = cli("train", data_dir, "--out", tmp_path / "bad", "--init", trained / "tiny.safetensors",
                 "--config", deeper, "--max-steps", "0", "--crop", str(CROP), "--device", "cpu")
    assert_one_line_error(result)
    assert "wider networks" in result.stderr.decode()
    train(data_dir, None, options(out, max_steps=1, resume=True, fit_prior=False))  # a resumed run still says so
    assert json.loads((out / "tiny.json").read_text())["training"]["widened_from"] == {"base_channels": 4}


def test_train_command_init_errors(trained, data_dir, tmp_path, cli):
    model = str(trained / "tiny.safetensors")
    base = ("train", data_dir, "--out", tmp_path / "tuned", "--max-steps", "1", "--crop", str(CROP), "--device", "cpu")
    cases = {
        "--resume": (*base, "--init", model, "--resume"),
        "--codebooks": (*base, "--init", model, "--codebooks", "2"),
        "missing": (*base, "--init", str(tmp_path / "nothing.safetensors")),
        "--kind": (*base, "--init", model, "--kind", "image"),
    }
    for case, args in cases.items():
        result = cli(*args)
        assert_one_line_error(result)
        assert not (tmp_path / "tuned" / "tuned.safetensors").exists(), case
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (64, 64), (90, 120, 30)).save(images / "a.png")
    result = cli("train", images, "--out", tmp_path / "tuned", "--max-steps", "1", "--init", model)
    assert_one_line_error(result)
    assert "no audio files" in result.stderr.decode()


def test_the_python_api_refuses_a_config_or_kind_other_than_the_resumed_or_initial_models(trained, data_dir, tmp_path):
    # each trained on as if it were not given: resume=True with the checkpoint's config, init with the model's kind
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    model = str(trained / "tiny.safetensors")
    for cfg, kind, changes, message in (
            (dataclasses.replace(CFG, codebook_size=32), None, dict(resume=True),
             f"resume=True continues the audio model of the checkpoint in {out}, which cfg would change (codebook_size): "
             "pass cfg=None, or start a new run"),
            (ImageConfig(), None, dict(resume=True),
             f"resume=True continues the audio model of the checkpoint in {out}, not the image model of the ImageConfig given"),
            (None, "image", dict(resume=True), f"resume=True continues the audio model of the checkpoint in {out}, not kind='image'"),
            (None, "image", dict(init=model), f"init={model!r} is an audio model, not kind='image'"),
            (ImageConfig(), None, dict(init=model), f"init={model!r} is an audio model, not the image model of the ImageConfig given")):
        run_out = out if changes.get("resume") else tmp_path / "new"
        with pytest.raises(VQCodecError) as refused:
            train(data_dir, cfg, options(run_out, max_steps=13, **changes), kind=kind)
        assert str(refused.value) == message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and not (tmp_path / "new").exists()


def test_train_command_refuses_an_init_config_of_another_kind(trained, data_dir, tmp_path, cli):
    (tmp_path / "image.json").write_text(json.dumps(config_to_dict(ImageConfig())))
    model = str(trained / "tiny.safetensors")
    result = cli("train", data_dir, "--out", tmp_path / "tuned", "--max-steps", "1", "--init", model,
                 "--config", tmp_path / "image.json")
    assert_one_line_error(result)  # said the config was not the model's, as if the sizes differed
    assert f"--init {model} is an audio model, not image as --config {tmp_path / 'image.json'}" in result.stderr.decode()


@pytest.mark.parametrize("config, message", [
    ({**config_to_dict(CFG), "kind": []}, "has a bad config (unknown model kind []"),  # was "no [] files found"
    ({**config_to_dict(CFG), "kind": None}, "has a bad config (unknown model kind None"),
    (None, "has a bad config (a config is a JSON object of fields, not None)"),  # was "'NoneType' object is not ..."
    ({**config_to_dict(CFG), "res_blocks": True}, "has a bad config (res_blocks must be a whole number"),
])
def test_a_model_with_a_bad_config_is_refused_where_its_kind_is_read(trained, data_dir, tmp_path, capsys, config, message):
    """--init and the folder commands' --model read a model's kind before its weights: its NAME.json is
    checked there as loading it checks it."""
    model = tmp_path / "m.safetensors"
    shutil.copy(trained / "tiny.safetensors", model)
    meta = json.loads((trained / "tiny.json").read_text())
    model.with_suffix(".json").write_text(json.dumps({**meta, "config": config}))
    for command in (["train", data_dir, "--out", tmp_path / "run", "--max-steps", "1", "--init", model],
                    ["codes", data_dir, tmp_path / "codes", "-m", model],
                    ["encode", data_dir, tmp_path / "coded", "-m", model]):
        code, err = run_in_process(command, capsys)
        assert code == 1 and err.startswith(f"vqcodec: error: model {model} {message}") and len(err.splitlines()) == 1, err
    assert not any((tmp_path / name).exists() for name in ("run", "codes", "coded"))


@pytest.mark.parametrize("device, audio, image", [("cpu", (16, 8000), (12, 128)), ("cuda:0", (64, 8000), (32, 256))])
def test_runs_get_batches_and_crops_for_their_kind_and_device(tmp_path, device, audio, image):
    """Without a batch size and crop (--batch-size, --crop) a GPU gets larger batches (and photo crops) than
    the CPU, and each of several processes the batch of one; from Python as from the command line."""
    import dataclasses

    from vqcodec.runstart import Run
    from vqcodec.train import _sized

    run = Run(options(tmp_path, batch_size=None, crop=None), device, processes=1, main=True, quiet=True,
               precision="fp32", checkpoint_path=tmp_path / "checkpoint.safetensors")
    configs = {"audio": AudioConfig(), "image": ImageConfig()}
    for kind, sizes in (("audio", audio), ("image", image)):
        sized = _sized(run, kind, configs[kind])
        assert (sized.batch_size, sized.crop) == sizes
    two = dataclasses.replace(run, processes=2)
    assert _sized(two, "image", configs["image"]).batch_size == 2 * image[0]
    given = dataclasses.replace(two, options=options(tmp_path, batch_size=6, crop=64))
    assert (_sized(given, "image", configs["image"]).batch_size, _sized(given, "image", configs["image"]).crop) == (6, 64)
    with pytest.raises(VQCodecError, match="batch_size=5 does not split evenly over 2 processes"):
        _sized(dataclasses.replace(given, options=options(tmp_path, batch_size=5)), "audio", configs["audio"])


def test_a_batch_or_crop_kept_by_a_resume_is_named_as_the_runs(data_dir, tmp_path, capsys):
    """A batch or crop that a --resume keeps from its checkpoint is not the user's --batch-size or --crop:
    a refusal or warning of it says it is the run's."""
    from vqcodec.runstart import Run
    from vqcodec.train import _crop_within_files, _sized

    run = Run(options(tmp_path, batch_size=5, crop=10 ** 7, quiet=False), "cpu", processes=2, main=True, quiet=False,
               precision="fp32", checkpoint_path=tmp_path / "checkpoint.safetensors")
    with pytest.raises(VQCodecError, match=r"^the run's batch of 5, kept from its checkpoint, does not split evenly over "
                                           r"2 processes: give batch_size$"):
        _sized(run, "audio", CFG, batch_kept=True)
    assert _crop_within_files(run, "audio", CFG, sorted(data_dir.rglob("*.wav")), None, "the run's").crop == 12000
    assert capsys.readouterr().err.splitlines() == [
        "vqcodec: warning: the run's crop 10000000 is longer than every training file (the longest holds 12000 samples, "
        "1.50 s): training on crops of 12000"]


def test_a_crop_beyond_a_training_file_of_one_sample_or_pixel_says_it_in_the_singular(tmp_path, capsys):
    """The warning of a crop longer than every training file said 'the longest holds 1 samples' and 'the longest
    side is 1 pixels', and gave a recording of 1 sample as 0.00 s."""
    from vqcodec.runstart import Run
    from vqcodec.train import _crop_within_files

    soundfile.write(tmp_path / "one.wav", np.full(1, 0.25, dtype=np.float32), 8000)
    Image.new("RGB", (1, 1), (200, 30, 90)).save(tmp_path / "dot.png")
    run = Run(options(tmp_path, crop=64, quiet=False), "cpu", processes=1, main=True, quiet=False, precision="fp32",
              checkpoint_path=tmp_path / "checkpoint.safetensors")
    image_cfg = ImageConfig(channels=(4,), patch=2, latent_dim=4, num_codebooks=1, codebook_size=4)
    assert _crop_within_files(run, "audio", CFG, [tmp_path / "one.wav"], 64).crop == CFG.hop
    assert _crop_within_files(run, "image", image_cfg, [tmp_path / "dot.png"], 64).crop == 2
    assert capsys.readouterr().err.splitlines() == [
        "vqcodec: warning: crop=64 is longer than every training file (the longest holds 1 sample, 0.000125 s): "
        f"training on crops of {CFG.hop}",
        "vqcodec: warning: crop=64 is larger than every training photo (the longest side is 1 pixel): training on "
        "crops of 2"]


def test_cli_hands_the_batch_and_crop_given_to_training(data_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import vqcodec.train
    from vqcodec.cli import cli

    chosen = []
    monkeypatch.setattr(vqcodec.train, "_train_checked", lambda folder, config, options, kind: chosen.append(
        (options.batch_size, options.crop, options.eval_every, options.precision, options.weight_average,
         options.adversarial, options.decoder_only)))
    for extra in ([], ["--batch-size", "5", "--crop", "64", "--eval-every", "7", "--precision", "auto",
                       "--weight-average", "0", "--no-adversarial", "--no-decoder-only"]):
        result = CliRunner().invoke(cli, ["train", str(data_dir), "--out", str(tmp_path / "run"), "--max-steps", "1",
                                          *extra])
        assert result.exit_code == 0, result.output
    # None: the default, or with --resume the run's
    assert chosen == [(None, None, None, None, None, None, None), (5, 64, 7, "auto", 0.0, False, False)]


def run_in_process(args: list, capsys) -> tuple[int, str]:
    from vqcodec.cli import run

    code = run([str(arg) for arg in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("cfg", [
    AudioConfig(), ImageConfig(), AudioConfig(base_channels=24), ImageConfig(channels=(128, 224, 320)),
    AudioConfig(base_channels=3, strides=(2, 3, 5), decoder_channels=5, res_blocks=3, latent_dim=7),
    AudioConfig(strides=(7,), res_blocks=0),
    ImageConfig(channels=(5, 7, 9), decoder_channels=(11, 3, 6), patch=3, res_blocks=2, latent_dim=5),
    ImageConfig(channels=(8,), res_blocks=0, latent_dim=48)])
def test_parameter_count_is_that_of_the_networks(cfg):
    model = VQVAE(cfg)
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters()) <= MAX_PARAMETERS
    assert network_parameter_counts(cfg) == {network: sum(p.numel() for p in getattr(model, network).parameters())
                                             for network in ("encoder", "decoder")}


@pytest.mark.parametrize("cfg", [CFG, ImageConfig(channels=(8, 12), res_blocks=1, latent_dim=4)])
def test_decoder_only_training_state_counts_the_gradients_and_moments_of_the_decoder_alone(cfg):
    model = VQVAE(cfg)
    freeze_for_decoder_only(model)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)  # what the optimiser gets (_optimisation)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert trained == parameter_count(cfg) - encoder > 0
    # a float32 gradient and two AdamW moments of each weight fewer
    assert training_state_bytes(cfg, decoder_only=True) == training_state_bytes(cfg) - 12 * encoder
    assert training_state_bytes(cfg, decoder_only=True, checkpoint_bytes=1000) == 1000 + 4 * trained  # resumed


@pytest.mark.parametrize("name", ["speech16k", "image"])
def test_the_shipped_configs_are_within_the_parameter_bound(name):
    config = config_from_dict(json.loads((Path(__file__).parent.parent / "models" / f"{name}.json").read_text())["config"])
    assert 1e6 < parameter_count(config) < MAX_PARAMETERS / 10


@pytest.mark.parametrize("extra, message", [
    (["--max-minutes", "nan"], "--max-minutes must be a positive number"),
    (["--max-minutes", "0"], "--max-minutes must be a positive number"),
    (["--max-minutes", "-1"], "--max-minutes must be a positive number"),
    (["--max-minutes", "1e308"], "--max-minutes 1e+308 is too large a budget"),  # an OverflowError mid-run
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--lr", "1e308"], "--lr must be at most 1, not 1e+308"),  # a traceback: it overflowed float32 in the step
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range"),
    # a list of that many crop plans was drawn before the first step: an OverflowError traceback, or a hang
    (["--batch-size", "99999999999999999999999"], "--batch-size must be at least 1 and at most 65536, not 9999"),
    (["--batch-size", str(2 ** 64)], "--batch-size must be at least 1 and at most 65536, not 18446744073709551616"),
    (["--crop", "0"], "'--crop': 0 is not in the range"),
    (["--threads", "-1"], "'--threads': -1 is not in the range"),
    (["--codebook-size", "0"], "'--codebook-size': 0 is not in the range"),
    (["--max-steps", "-5"], "'--max-steps': -5 is not in the range"),
    (["--max-steps", "0"], "--max-steps 0 writes the starting model as it is: it needs --init"),
    # past 2**53 the schedule's step / max_steps and the JSON records' counts are no longer exact
    (["--max-steps", str(2 ** 53 + 1), "--max-minutes", "0.01"],
     "--max-steps must be at least 0 and at most 9007199254740992, not 9007199254740993"),
    (["--max-steps", "9" * 400, "--max-minutes", "0.01"], "--max-steps must be at least 0 and at most 9007199254740992, not 99"),
    (["--eval-every", str(2 ** 64)],
     "--eval-every must be at least 1 and at most 9007199254740992, not 18446744073709551616"),
    (["--threads", "100000"], "'--threads': 100000 is not in the range 1<=x<=256"),  # torch crashed (SIGSEGV)
    (["--name", "checkpoint"], "is the training checkpoint's"),
    (["--name", "sub/x"], "model name 'sub/x' is not a plain file name (it holds a slash): pass another --name"),
    (["--name", ".."], "is not a plain file name (it is a hidden one)"),
    (["--name", " "], "model name ' ' is blank: pass another --name"),  # wrote ' .safetensors'
    # the model is named after the --out folder, where '.' and '/' have no name: 'model name '' is blank'
    (["--out", "/"], "--out / has no folder name to name the model after: pass --name"),
    (["--name", "\t "], "model name '\\t ' is blank"),
    (["--name", "a\nb"], "model name 'a\\nb' is not a plain file name (it holds a control character)"),
    # quoted as a shell takes it back (Python's repr, 'a\\udcffb', names no file there)
    (["--name", os.fsdecode(b"a\xffb")], "model name $'a\\xffb' is not a plain file name (it is not UTF-8 text)"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"foo\": 1}"], "unknown field foo"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"num_codebooks\": \"4\"}"], "num_codebooks must be a whole number"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"codebook_size\": 0}"], "codebook_size must be a whole number"),
    (["--config", "CONFIG:[1, 2]"], "a config is a JSON object"),
    (["--config", "CONFIG:{\"num_codebooks\": 4}"], "bad config (a config names its media kind: \"kind\": \"audio\" or"),
    (["--config", "CONFIG:{\"kind\": [\"audio\"]}"], "bad config (unknown model kind ['audio'] (\"audio\" or \"image\"))"),
    (["--config", "CONFIG:" + "[" * 100_000 + "]" * 100_000], "bad config (maximum recursion depth"),
    # in bounds field by field, but 317 GB of weights: a RuntimeError traceback (or the OOM killer) when built
    (["--config", "CONFIG:{\"kind\": \"audio\", \"base_channels\": 4096}"], "makes layers 65536 wide"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"decoder_channels\": 300}"], "decoder_channels 300 doubled"),
    # a width of 1: its residual blocks' convolutions had no channels, a RuntimeError traceback at the first step
    (["--config", "CONFIG:{\"kind\": \"audio\", \"base_channels\": 1}"], "base_channels must be a whole number from 2"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"decoder_channels\": 1}"], "decoder_channels must be 0 (base_"),
    (["--config", "CONFIG:{\"kind\": \"image\", \"channels\": [8, 1]}"], "each of channels must be a whole number from 2"),
    # an empty list, which the message showed as the tuple it is read into: 'a list of whole numbers, not ()'
    (["--config", "CONFIG:{\"kind\": \"image\", \"channels\": []}"], "bad config (channels must be a list of at least one "
     "whole number, not an empty one)"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"strides\": []}"], "bad config (strides must be a list of at least one "
     "whole number, not an empty one)"),
    (["--config", "CONFIG:{\"kind\": \"image\", \"decoder_channels\": [8, 8, 1]}"], "each of decoder_channels must"),
    # the encoder's frames outnumbered the decoder's input by one: a RuntimeError traceback at the first step
    (["--config", "CONFIG:{\"kind\": \"audio\", \"strides\": [4, 1]}"], "each of strides must be a whole number from 2"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"num_codebooks\": 64, \"codebook_size\": 65536, "
      "\"latent_dim\": 4096}"], "num_codebooks x codebook_size x latent_dim is 17179869184"),  # 64 GiB
    # each flag in its range, but 1 GiB of codebooks with the default latent_dim: the product was checked only in a --config
    (["--codebooks", "64", "--codebook-size", "65536"], "num_codebooks x codebook_size x latent_dim is 268435456"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"latent_dim\": 128}", "--codebooks", "64", "--codebook-size", "32768"],
     "num_codebooks x codebook_size x latent_dim is 268435456"),
    (["--config", "CONFIG:{\"kind\": \"image\", \"channels\": [8, 8, 8, 8, 8, 8, 8, 8, 8]}"], "at most 8 levels"),
    # each width and the depth in bounds, but 4 746 M parameters (17.7 GiB of weights)
    (["--config", "CONFIG:{\"kind\": \"image\", \"channels\": [4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096]}"],
     "the networks would have 4,746 M parameters (17.7 GiB"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"base_channels\": 256, \"res_blocks\": 64}"],
     "the networks would have 1,694 M parameters"),
    # each stride in bounds, but one code of 6.9e10 samples: 1 s of audio was padded out to that, out of memory
    (["--config", "CONFIG:{\"kind\": \"audio\", \"strides\": [64, 64, 64, 64, 64, 64]}"],
     "the strides make one code of 68719476736 samples, more than 16384"),
    (["--config", "CONFIG:{\"kind\": \"audio\", \"strides\": [64, 64, 4], \"context_frames\": 1024}"],
     "context_frames 1024 of 16384 samples each span 16777216 samples, more than 1048576"),
    (["--config", "CONFIG:{\"kind\": \"image\", \"patch\": 16, \"context_frames\": 100}"],
     "context_frames 100 of 64 pixels each span 6400 pixels, more than 1024"),
    # a 64 x 64 photo took 29 s and 3.7 GB to encode with such a model
    (["--config", "CONFIG:{\"kind\": \"image\", \"patch\": 64, \"channels\": [8, 8, 8, 8, 8, 8, 8, 8]}"],
     "the strides make one code of 8192 pixels, more than 256"),
    (["--resume"], "--resume: no checkpoint in"),
    # the SNR range was taken and ignored: no crop had noise to set it for
    (["--noise-snr", "0,20"], "--noise-snr sets the SNR of the noise that --noise mixes in: give --noise SHARE"),
    (["--noise-snr", "10,40"], "--noise-snr sets the SNR"),  # the default's value, given
    (["--noise", "0", "--noise-snr", "0,20"], "--noise-snr sets the SNR"),
])
def test_train_refuses_bad_options_before_it_makes_anything(data_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    args = []
    for arg in extra:
        if arg.startswith("CONFIG:"):
            (tmp_path / "cfg.json").write_text(arg[len("CONFIG:"):])
            arg = tmp_path / "cfg.json"
        args.append(arg)
    budget = [] if "--max-steps" in extra or "--max-minutes" in extra else ["--max-steps", "1"]
    code, err = run_in_process(["train", data_dir, "--out", out, *budget, "--device", "cpu", *args], capsys)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("noise", [None, 0.0])
def test_train_options_refuse_a_noise_snr_without_noise(data_dir, tmp_path, noise):
    """TrainOptions(noise_snr_db=...) without a share of noise (or with none) was taken and ignored, as --noise-snr
    was before it was refused (test above); a resumed run's own share may have some (test_a_resumed_run_keeps_its_learning_rate_and_noise_unless_given)."""
    out = tmp_path / "run"
    with pytest.raises(VQCodecError, match=r"^noise_snr_db sets the SNR of the noise that noise mixes in: give "
                                           r"noise=SHARE \(such as 0.5\) too, or leave noise_snr_db out$"):
        train(data_dir, CFG, options(out, noise=noise, noise_snr_db=(0.0, 20.0)))
    assert not out.exists()


def test_resume_with_a_noise_snr_alone_takes_it_for_a_run_with_noise_and_refuses_it_for_one_without(data_dir, tmp_path,
                                                                                                     capsys):
    """`train --resume --noise-snr` without --noise was refused by the command, where TrainOptions took it (the
    resumed run's kept share draws from the new range). The command takes it now too; and where the resumed run
    trains without noise, both refuse it in one line, before the run changes, where Python took it and ignored it."""
    noisy, quiet = tmp_path / "noisy", tmp_path / "quiet"
    train(data_dir, CFG, options(noisy, max_steps=1, noise=0.5, fit_prior=False))
    train(data_dir, CFG, options(quiet, max_steps=1, fit_prior=False))
    resume = ["--resume", "--max-steps", "2", "--noise-snr", "20,60", "--no-prior", "--threads", "1", "--device", "cpu"]
    code, err = run_in_process(["train", data_dir, "--out", noisy, *resume], capsys)
    training = json.loads((noisy / "tiny.json").read_text())["training"]
    assert code == 0 and (training["steps"], training["noise"], training["noise_snr_db"]) == (2, 0.5, [20.0, 60.0]), err
    before = {path: path.read_bytes() for path in quiet.iterdir()}
    code, err = run_in_process(["train", data_dir, "--out", quiet, *resume], capsys)
    assert code == 1 and err == ("vqcodec: error: --noise-snr sets the SNR of the noise that --noise mixes in, and the "
                                 "resumed run trains without noise: give --noise SHARE (such as 0.5) too, or leave "
                                 "--noise-snr out\n"), err
    with pytest.raises(VQCodecError, match=r"^noise_snr_db sets the SNR of the noise that noise mixes in, and the "
                                           r"resumed run trains without noise: give noise=SHARE \(such as 0.5\) too"):
        train(data_dir, None, options(quiet, max_steps=2, resume=True, noise_snr_db=(20.0, 60.0), fit_prior=False))
    assert {path: path.read_bytes() for path in quiet.iterdir()} == before


def test_train_checks_a_config_built_in_python(data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(VQCodecError, match="bad config \\(num_codebooks must be a whole number from 1 to 64, not 65\\)"):
        train(data_dir, dataclasses.replace(CFG, num_codebooks=65), options(out))
    assert not out.exists()
    # lists where the fields are tuples, as config_from_dict makes them: the same config
    path = train(data_dir, dataclasses.replace(CFG, strides=[2, 4]), options(out, max_steps=1, fit_prior=False))
    assert config_from_dict(json.loads(path.with_suffix(".json").read_text())["config"]) == CFG


def test_a_folder_of_one_file_says_it_validates_on_it(data_dir, tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(sorted(data_dir.glob("*.wav"))[0], folder / "only.wav")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(config_to_dict(CFG)))
    code, err = run_in_process(["train", folder, "--out", tmp_path / "run", "--config", config, "--max-steps", "1",
                                "--crop", CROP, "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-prior"],
                               capsys)
    assert code == 0, err
    assert "validation on the training file (none held out from one)" in err


@pytest.mark.parametrize("kind, config, extra", [
    ("audio", ImageConfig(), ["--sample-rate", "8000"]),  # was a TypeError traceback (ImageConfig has no sample_rate)
    ("audio", ImageConfig(), []),
    ("image", CFG, []),
])
def test_a_kind_that_is_not_the_configs_is_refused(data_dir, tmp_path, capsys, kind, config, extra):
    folder = tmp_path / "mixed"
    shutil.copytree(data_dir, folder)
    Image.new("RGB", (32, 32), (90, 120, 30)).save(folder / "a.png")
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config_to_dict(config)))
    code, err = run_in_process(["train", folder, "--out", tmp_path / "run", "--max-steps", "1", "--kind", kind,
                                "--config", path, *extra, "--device", "cpu"], capsys)
    assert code == 1 and err == f"vqcodec: error: --config {path} is an {config.kind} config, not {kind}\n", err
    assert not (tmp_path / "run").exists()


def test_sample_rate_is_refused_for_an_image_model(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), (90, 120, 30)).save(photos / "a.png")
    code, err = run_in_process(["train", photos, "--out", tmp_path / "run", "--max-steps", "1", "--sample-rate", "8000",
                                "--device", "cpu"], capsys)
    assert code == 1 and err == "vqcodec: error: --sample-rate is for audio models only\n", err  # was ignored
    assert not (tmp_path / "run").exists()


def test_a_training_folder_that_is_missing_or_a_file_is_named_so(data_dir, tmp_path, capsys):
    (tmp_path / "loop").symlink_to("loop")  # was 'no such directory'
    for folder, problem in ((tmp_path / "missing", "no such directory"), (data_dir / "a.wav", "not a directory"),
                            (tmp_path / "loop", "Too many levels of symbolic links")):
        for command in (["train", folder, "--out", tmp_path / "run", "--max-steps", "1"], ["fit-prior", "image", folder]):
            code, err = run_in_process(command, capsys)
            assert code == 1 and err == f"vqcodec: error: {folder}: {problem}\n", err


def test_stdin_as_the_folder_and_stdout_as_out_are_refused_for_train_and_fit_prior(data_dir, tmp_path, capsys,
                                                                                   monkeypatch):
    """`train -` and `fit-prior MODEL -` said only "-: no such directory"; `train DIR --out -` trained into a
    folder named - (a model named -), and `fit-prior --out -` wrote -.safetensors in the current folder."""
    monkeypatch.chdir(tmp_path)
    for command in (["train", "-", "--out", "run", "--max-steps", "1"], ["fit-prior", "image", "-"]):
        code, err = run_in_process(command, capsys)
        assert code == 1 and err == "vqcodec: error: -: no such directory (DIR is a folder: stdin is not read)\n", err
    for command, what in ((["train", data_dir, "--out", "-", "--max-steps", "1"], "train writes a folder"),
                          (["fit-prior", "image", data_dir, "--out", "-"], "fit-prior writes model files")):
        code, err = run_in_process(command, capsys)
        assert code == 1 and err == f"vqcodec: error: --out -: {what}, not stdout: give a path (./- for one named -)\n", err
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_is_not_started_over_another_without_force(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    base = ["train", data_dir, "--out", out, "--name", "tiny", "--max-steps", "2", "--crop", CROP, "--batch-size", "2",
            "--device", "cpu", "--threads", "1", "--no-prior", "--eval-every", "1"]
    code, err = run_in_process(base, capsys)
    assert code == 1 and "holds a training run" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(config_to_dict(CFG)))
    # --force replaces the run only once the new one starts: a run refused for its options deleted it first
    for refused in (["--crop", "3"], ["--noise-snr", "x"], ["--batch-size", "0"]):
        code, err = run_in_process([*base, "--config", config, "--force", *refused], capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1, err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before, refused
    code, err = run_in_process([*base, "--config", config, "--force"], capsys)
    assert code == 0, err
    assert [record["step"] for record in read_log(out)] == [1, 2]  # the old run's log is not appended to
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2


def test_the_python_api_checks_the_options_as_the_command_does(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for changes, message in (
            (dict(max_steps=None), "give a budget: max_minutes or max_steps"),
            (dict(lr=-1.0), "lr must be a positive number, not -1.0"),
            (dict(lr=2.0), "lr must be at most 1, not 2"),
            (dict(eval_every=0), "eval_every must be at least 1 and at most 9007199254740992, not 0"),
            (dict(batch_size=0), "batch_size must be at least 1 and at most 65536, not 0"),
            (dict(batch_size=10 ** 9), "batch_size must be at least 1 and at most 65536, not 1000000000"),
            (dict(crop=-5), "crop must be at least 1, not -5"),
            (dict(max_steps=-1), "max_steps must be at least 0 and at most 9007199254740992, not -1"),
            (dict(max_steps=2 ** 63), "max_steps must be at least 0 and at most 9007199254740992, not "
                                      "9223372036854775808"),
            (dict(eval_every=2 ** 53 + 1), "eval_every must be at least 1 and at most 9007199254740992, not "
                                           "9007199254740993"),
            (dict(threads=0), "threads must be at least 1 and at most 256, not 0"),
            (dict(data_workers=300), "data_workers must be at least 1 and at most 256, not 300"),
            (dict(max_steps=0), "max_steps=0 writes the starting model as it is: it needs init=MODEL"),
            (dict(resume=True, replace=True), "resume=True continues the run in out and replace=True replaces it: give "
                                              "only one"),
            (dict(resume=True, init=str(trained)), "init starts a new run from a model and resume=True continues one: give "
                                                   "only one"),
            (dict(), f"{out} holds a training run (checkpoint.safetensors): pass resume=True to continue it, replace=True "
                     "to replace it, or another out"),
            (dict(decoder_only=True, replace=True), "decoder_only=True trains the decoder of a trained model: give "
                                                    "init=MODEL")):
        with pytest.raises(VQCodecError) as refused:
            train(data_dir, CFG, options(out, **changes))
        assert str(refused.value) == message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_python_api_refuses_options_of_the_wrong_type_as_the_command_would(data_dir, tmp_path):
    # each failed deep in the run (torch.set_num_threads, the crops' seed, a comparison) or trained silently
    # in fp32 while the model's record said fp16
    for changes, message in ((dict(threads=2.5), "threads must be a whole number, not 2.5"),
                             (dict(max_steps=True), "max_steps must be a whole number, not True"),
                             (dict(lr="0.001"), "lr must be a number, not '0.001'"),
                             (dict(seed=-1), "seed must be a whole number from 0 to 2**63 - 1, not -1"),
                             (dict(seed=1.5), "seed must be a whole number, not 1.5"),
                             (dict(checkpoint_minutes=math.nan), "checkpoint_minutes must be a number of minutes from 0 up, "
                                                                  "not nan"),
                             (dict(precision="fp16"), "precision must be auto, fp32 or bf16, not 'fp16'"),
                             (dict(noise_snr_db=(10.0,)), "noise_snr_db must be (LOW, HIGH) in dB, a pair of numbers, not "
                                                          "(10.0,)"),
                             # each was taken as Python's truth takes it: resume="no" resumed, fit_prior=None fitted none
                             (dict(resume="no"), "resume must be True or False, not 'no'"),
                             (dict(fit_prior=None), "fit_prior must be True or False, not None"),
                             (dict(decoder_only=1), "decoder_only must be True or False, not 1"),
                             (dict(quiet=[]), "quiet must be True or False, not []")):
        with pytest.raises(VQCodecError) as refused:
            train(data_dir, CFG, options(tmp_path / "run", **changes))
        assert str(refused.value) == message
    for call, message in ((lambda: train(data_dir, CFG, options(tmp_path / "run", name=5)),
                           f"out is a folder's path and name a string (or None), not {tmp_path / 'run'!r} and 5"),
                          (lambda: train(data_dir, CFG, options(None)), "out is a folder's path and name a string (or "
                                                                         "None), not None and 'tiny'"),
                          (lambda: train(data_dir, None, options(tmp_path / "run"), kind="video"),
                           "kind must be 'audio' or 'image' (or None: the folder's), not 'video'"),  # "no video files found"
                          (lambda: train(data_dir, {"kind": "audio"}, options(tmp_path / "run")),
                           "cfg must be an AudioConfig or ImageConfig (or None), not a dict")):
        with pytest.raises(VQCodecError) as refused:
            call()
        assert str(refused.value) == message
    assert not (tmp_path / "run").exists()
    assert train(data_dir, CFG, options(tmp_path / "run", max_steps=np.int64(1), seed=np.int64(3), fit_prior=False)).exists()


def test_the_threads_a_run_trains_with_are_the_runs_alone(data_dir, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(data_dir, CFG, options(tmp_path / "run", threads=1, max_steps=1, fit_prior=False))
        assert torch.get_num_threads() == 2  # was left at the run's 1 for the rest of the caller's process
        (tmp_path / "empty").mkdir()
        with pytest.raises(VQCodecError, match="no .* files"):  # and after a run that fails once it has set them
            train(tmp_path / "empty", CFG, options(tmp_path / "other", threads=1, max_steps=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_run_gives_the_callers_random_state_back(data_dir, tmp_path, monkeypatch):
    seeded_gpus = []  # torch.manual_seed queued this for the caller's first use of CUDA, after the run
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded_gpus.append)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    train(data_dir, CFG, options(tmp_path / "run", max_steps=1, fit_prior=False))  # was left seeded with the run's seed
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(1234)
    with pytest.raises(VQCodecError, match="no .* files"):  # and after a run that fails once it has seeded them
        (tmp_path / "empty").mkdir()
        train(tmp_path / "empty", CFG, options(tmp_path / "other", max_steps=1))
    assert torch.equal(torch.rand(3), expected)
    assert seeded_gpus == [1234] * 3  # the test's own torch.manual_seed calls alone


@pytest.mark.parametrize("no_gradients", [torch.no_grad, torch.inference_mode])
def test_a_run_trains_inside_the_callers_no_grad_or_inference_mode(data_dir, tmp_path, no_gradients):
    with no_gradients():  # the first backward pass failed: "element 0 of tensors does not require grad"
        path = train(data_dir, CFG, options(tmp_path / "run", max_steps=1, fit_prior=False))
        assert not torch.is_grad_enabled()
    assert json.loads(path.with_suffix(".json").read_text())["training"]["steps"] == 1


def test_the_python_api_takes_the_devices_the_command_does(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("cuda", "device='cuda' asked for, but no CUDA device is available"),
                            ("cuda:1", "device='cuda:1' asked for, but no CUDA device is available"),
                            ("mps", "unknown device 'mps' (use auto, cpu, cuda or cuda:N)")):  # were torch's own errors
        with pytest.raises(VQCodecError) as refused:
            train(data_dir, CFG, options(tmp_path / device, device=device))
        assert str(refused.value) == message and not (tmp_path / device).exists()
    path = train(data_dir, CFG, options(tmp_path / "auto", device="auto", max_steps=1, fit_prior=False))
    assert json.loads(path.with_suffix(".json").read_text())["training"]["steps"] == 1
    path = train(data_dir, CFG, options(tmp_path / "cpu", device=torch.device("cpu"), max_steps=1, fit_prior=False))
    assert json.loads(path.with_suffix(".json").read_text())["training"]["steps"] == 1


def fake_gpus(monkeypatch, count: int, capabilities: tuple = ()) -> None:
    """torch as it is where `count` CUDA GPUs are there, GPU i of compute capability (capabilities[i], 0)."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(major=capabilities[torch.device(device).index or 0]))


def test_a_gpu_is_named_by_its_index_and_one_that_is_not_there_is_refused(monkeypatch, capsys, tmp_path):
    from conftest import GOLDEN
    from vqcodec.devices import resolve_device

    fake_gpus(monkeypatch, 2)
    assert [resolve_device(device) for device in ("cuda:1", torch.device("cuda", 1), torch.device("cuda"), "auto")] == \
        ["cuda:1", "cuda:1", "cuda", "cuda"]
    for device, message in (("cuda:2", "device='cuda:2' asked for, but there are 2 CUDA devices (cuda:0 to cuda:1)"),
                            (torch.device("cuda", 7), "device='cuda:7' asked for, but there are 2 CUDA devices "
                                                      "(cuda:0 to cuda:1)"),
                            ("cuda:01", "unknown device 'cuda:01' (use auto, cpu, cuda or cuda:N)"),
                            (0, "unknown device 0 (use auto, cpu, cuda or cuda:N)")):
        with pytest.raises(VQCodecError) as refused:
            Codec.load(str(GOLDEN / "golden_audio.safetensors"), device=device)
        assert str(refused.value) == message
    fake_gpus(monkeypatch, 1)
    with pytest.raises(VQCodecError, match=r"^device='cuda:1' asked for, but there is 1 CUDA device \(cuda:0\)$"):
        resolve_device("cuda:1")
    # the command line names its option, and takes cuda:N where it took cuda alone
    for args, message in ((["--device", "cuda:1"], "--device cuda:1 asked for, but there is 1 CUDA device (cuda:0)"),
                          (["--device", "gpu"], "Invalid value for '--device': unknown device 'gpu' (use auto, cpu, "
                                                "cuda or cuda:N)")):
        code, err = run_in_process(["eval", GOLDEN / "golden_audio.safetensors", tmp_path, *args], capsys)
        assert code != 0 and err == f"vqcodec: error: {message}\n"


def test_auto_precision_asks_the_gpu_trained_on_not_the_current_one(monkeypatch):
    fake_gpus(monkeypatch, 2, capabilities=(7, 8))  # the current GPU 0 a V100, GPU 1 an A100
    assert [resolve_precision("auto", device) for device in ("cuda:1", "cuda:0", "cuda")] == ["bf16", "fp32", "fp32"]


@pytest.mark.parametrize("header, problem", [
    (b"[]", "its header is not a JSON object"),
    (b'{"__metadata__": "x"}', "its __metadata__ is not a JSON object"),
    (b'{"__metadata__": ["checkpoint"]}', "its __metadata__ is not a JSON object")])
def test_a_checkpoint_whose_header_is_no_record_is_refused_as_damaged(tmp_path, header, problem):
    """read_safetensors_metadata called .get on the header's JSON, whatever it held: --resume of a checkpoint whose
    header was a list or whose __metadata__ was a string ended in an AttributeError traceback."""
    from vqcodec.checkpoint import checkpoint_config

    (tmp_path / "checkpoint.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ValueError, match=f"^{problem}$"):
        read_safetensors_metadata(tmp_path / "checkpoint.safetensors")
    with pytest.raises(VQCodecError, match=re.escape(f"--resume: the checkpoint in {tmp_path} is damaged ({problem})")):
        checkpoint_config(tmp_path)


def test_checkpoint_name_passes_over_a_damaged_checkpoint_and_lets_a_bug_of_its_own_out(monkeypatch, tmp_path):
    """checkpoint_name caught every Exception as a missing or damaged checkpoint, so a bug of vqcodec's own (a
    NameError) silently lost the name a --resume keeps."""
    import vqcodec.checkpoint as checkpoint_module

    assert checkpoint_module.checkpoint_name(tmp_path) is None  # none there
    for header in (b"{not json", b'{"__metadata__": {"checkpoint": "[1]"}}', b'{"__metadata__": {"checkpoint": 5}}',
                   b'{"__metadata__": {"checkpoint": "{\\"name\\": \\"tiny\\"}"}}'):
        (tmp_path / "checkpoint.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
        assert checkpoint_module.checkpoint_name(tmp_path) == ("tiny" if b"name" in header else None), header

    def broken(path):
        raise NameError("name '_read_record' is not defined")

    monkeypatch.setattr(checkpoint_module, "checkpoint_record", broken)
    with pytest.raises(NameError, match="_read_record"):
        checkpoint_module.checkpoint_name(tmp_path)


def test_a_damaged_or_half_checkpoint_is_refused_on_resume(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    weights = str(out / "checkpoint.safetensors")
    tensors = load_file(weights)
    base = ["train", data_dir, "--out", out, "--name", "tiny", "--resume", "--max-steps", "20", "--device", "cpu"]
    save_file(tensors, weights, metadata={"checkpoint": "{not json"})  # the record in the weights' header
    code, err = run_in_process(base, capsys)
    assert code == 1 and "checkpoint in" in err and "is damaged" in err, err
    save_file(tensors, weights)  # as written before the header held the record: the JSON file is read
    code, err = run_in_process([*base, "--codebooks", "2"], capsys)  # what the checkpoint's config is not
    assert code == 1 and "which --codebooks would change" in err, err
    meta = json.loads((out / "checkpoint.json").read_text())
    (out / "checkpoint.json").write_text(json.dumps({**meta, "held_out": 5}))
    code, err = run_in_process(base, capsys)
    assert code == 1 and "is damaged (ValueError: held_out is not a list of file names: 5)" in err, err
    # each was a traceback: from the crops' seed, the log's clock, load_state_dict or the first optimiser step
    for changes, problem in (({"step": -3}, "ValueError: step is not a count: -3"),
                             ({"step": "2"}, "ValueError: step is not a count: '2'"),
                             # '--max-steps is the run's total ...: give --max-steps 9007199254740993 or more', refused
                             ({"step": 2 ** 53 + 1}, "ValueError: step is more than 9007199254740992, the most steps"),
                             ({"trained_seconds": math.nan}, "trained_seconds is not a number of at least 0: nan"),
                             ({"validated_seconds": -1.0}, "validated_seconds is not a number of at least 0: -1.0"),
                             ({"adversarial": "no"}, "ValueError: adversarial is not true or false: 'no'"),
                             ({"decoder_only": 1}, "ValueError: decoder_only is not true or false: 1"),
                             ({"init_training": [1]}, "ValueError: init_training is not a record: [1]"),
                             ({"init_widened": 6}, "ValueError: init_widened is not a record: 6"),
                             ({"settings": []}, "ValueError: settings is not a record: []"),
                             ({"earlier_parts": [{"steps": 2}]}, "ValueError: earlier_parts is not a list of records"),
                             ({"config": {**meta["config"], "num_codebooks": 2}}, "RuntimeError: Error(s) in loading"),
                             ({"decoder_only": True}, "the optimiser state of parameter 0 does not fit the model's")):
        (out / "checkpoint.json").write_text(json.dumps({**meta, **changes}))
        code, err = run_in_process(base, capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "is damaged" in err and problem in err, err
    tensors = load_file(str(out / "checkpoint.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("model.")}, str(out / "checkpoint.safetensors"))
    (out / "checkpoint.json").write_text(json.dumps(meta))
    code, err = run_in_process(base, capsys)
    assert code == 1 and "is damaged (ValueError: it holds no model weights)" in err, err
    (out / "checkpoint.json").write_text("{not json")
    code, err = run_in_process(base, capsys)
    assert code == 1 and "checkpoint in" in err and "is damaged" in err, err
    (out / "checkpoint.safetensors").unlink()
    code, err = run_in_process(base, capsys)
    assert code == 1 and "--resume: no checkpoint in" in err, err


def test_a_config_or_checkpoint_record_larger_than_any_holds_is_not_read(trained, tmp_path, monkeypatch):
    """A --config file or a checkpoint's JSON record of more than streams.MAX_JSON_BYTES (16 MiB; 1 MiB here) is refused
    from its size, before it is read (it was read whole, however large)."""
    import vqcodec.streams
    from vqcodec.checkpoint import checkpoint_record
    from vqcodec.runstart import read_config

    monkeypatch.setattr(vqcodec.streams, "MAX_JSON_BYTES", 1 << 20)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({**config_to_dict(CFG), "notes": "x" * (1 << 20)}))
    with pytest.raises(VQCodecError, match=re.escape("cfg.json takes more than 1 MiB, far more than a config holds")):
        read_config(config)
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    save_file(load_file(str(out / "checkpoint.safetensors")), str(out / "checkpoint.safetensors"))  # no header record
    meta = json.loads((out / "checkpoint.json").read_text())
    (out / "checkpoint.json").write_text(json.dumps({**meta, "notes": "x" * (1 << 20)}))
    with pytest.raises(ValueError, match="checkpoint.json takes more than 1 MiB, far more than a checkpoint's record"):
        checkpoint_record(out / "checkpoint.safetensors")


@pytest.mark.parametrize("odd, how", [("checkpoint.safetensors", "fifo"), ("checkpoint.json", "fifo"),
                                      ("checkpoint.json", "fifo beside a record"),
                                      ("checkpoint.json", "device"), ("train_log.jsonl", "fifo"),
                                      ("train_log.jsonl", "device"), ("cfg.json", "fifo"), ("cfg.json", "device")])
def test_a_run_file_that_is_a_pipe_or_a_device_is_refused_not_read(trained, data_dir, tmp_path, odd, how):
    """A checkpoint's weights or record, its log or a --config that is a FIFO (whose read waited for a writer for
    ever: `train --resume` hung) or a link to /dev/zero (read until memory ran out) is one line saying that it is
    not a regular file, before it is opened. The checkpoint's JSON is its record where the weights' header holds
    none, as before the header held it; beside a header's record, it is the copy that --resume rewrote (into the
    FIFO, where it waited for a reader for ever)."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    args = ["--resume"]
    if odd == "checkpoint.json" and how == "fifo":
        save_file(load_file(str(out / "checkpoint.safetensors")), str(out / "checkpoint.safetensors"))
    if odd == "cfg.json":
        out, args = tmp_path / "new", ["--config", tmp_path / odd]
    path = tmp_path / odd if odd == "cfg.json" else out / odd
    path.unlink(missing_ok=True)
    if how.startswith("fifo"):
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    # a process of its own, which the timeout ends where its open or read never returns
    result = run_cli("train", data_dir, "--out", out, "--name", "tiny", "--max-steps", "20", "--device", "cpu",
                     "--threads", "1", *args, timeout=60, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    # before the run starts: the log and the copy of a header's record too, which their repairs opened after its line
    [error] = result.stderr.splitlines()
    assert error.startswith("vqcodec: error: ") and error.endswith(f"{path}: not a regular file (a pipe or a device)")


def test_a_checkpoint_left_half_written_resumes_from_its_weights_own_record(trained, data_dir, tmp_path,
                                                                             monkeypatch):
    # a kill between the two renames of a save left the new weights with the old JSON (step 12), or
    # none, and --resume went on silently with the wrong step count, schedule and clock
    import vqcodec.train as train_module

    later, out = tmp_path / "later", tmp_path / "run"
    shutil.copytree(trained, later)
    train(data_dir, None, options(later, max_steps=14, resume=True, fit_prior=False))
    steps = []
    real_step = train_module.train_step
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    for json_left in (True, False):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(trained, out)
        shutil.copy(later / "checkpoint.safetensors", out / "checkpoint.safetensors")
        if not json_left:  # the first save of a run, stopped between its renames
            (out / "checkpoint.json").unlink()
        steps.clear()
        train(data_dir, None, options(out, max_steps=16, resume=True, fit_prior=False))
        assert len(steps) == 2  # from the weights' step 14, not the JSON's 12
        assert json.loads((out / "checkpoint.json").read_text())["step"] == 16
    # a checkpoint written before the record was in the weights' header still resumes from its JSON file
    meta = json.loads((trained / "checkpoint.json").read_text())
    save_file(load_file(str(trained / "checkpoint.safetensors")), str(out / "checkpoint.safetensors"))
    (out / "checkpoint.json").write_text(json.dumps(meta))
    train(data_dir, None, options(out, max_steps=14, resume=True, fit_prior=False))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 14


def test_the_half_written_files_of_a_killed_save_are_removed_by_the_next_run(trained, data_dir, tmp_path):
    # kill -9 during a save left `.checkpoint.safetensors.XXXXXXXX.part` (a whole checkpoint's size, for a
    # real model) beside the checkpoint, and every later kill one more: no run ever removed them
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    half = (out / "checkpoint.safetensors").read_bytes()
    leftovers = [out / ".checkpoint.safetensors.rk8wwrir.part", out / ".checkpoint.json.q0_3zx9a.part",
                 out / ".tiny.safetensors.abcd1234.part", out / ".tiny.json.abcd1234.part"]
    others = [out / ".checkpoint.safetensors.bak.abcd1234.part", out / ".notes.txt.abcd1234.part"]
    for path in leftovers + others:
        path.write_bytes(half[:len(half) // 2])
    # killed while safetensors wrote the weights: its own .tmpXXXXXX, in the private folder the save gave it
    killed_in_safetensors = out / ".checkpoint.safetensors.k1lled9x.part"
    killed_in_safetensors.mkdir()
    (killed_in_safetensors / ".tmpAb3xYz").write_bytes(half[:len(half) // 2])
    users_folder = out / ".tiny.safetensors.u5erd1r0.part"  # named as one, but holding what no save writes
    users_folder.mkdir()
    (users_folder / "notes.txt").write_text("mine")
    train(data_dir, None, options(out, max_steps=14, resume=True, fit_prior=False))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 14
    assert read_safetensors_metadata(out / "checkpoint.safetensors")  # whole, and its own
    assert [path for path in leftovers if path.exists()] == []
    assert not killed_in_safetensors.exists()
    assert all(path.exists() for path in others)  # the temporaries of other files' writes are not this run's
    assert (users_folder / "notes.txt").read_text() == "mine"


def test_a_checkpoint_given_as_a_model_is_named_so(trained):
    with pytest.raises(VQCodecError, match="is a training checkpoint"):
        Codec.load(str(trained / "checkpoint.safetensors"))


def _refusal_of_a_stopped_runs_checkpoint_as_a_model(trained: Path, out: Path) -> str:
    """Copies a run's checkpoint, without its model files, into a new folder `out` and gives it to Codec.load."""
    out.mkdir()
    for name in ("checkpoint.safetensors", "checkpoint.json"):
        shutil.copy(trained / name, out / name)
    with pytest.raises(VQCodecError) as caught:
        Codec.load(str(out / "checkpoint.safetensors"))
    return str(caught.value)


def test_a_run_over_another_of_another_name_says_that_its_folder_holds_that_model_too(trained, data_dir, tmp_path,
                                                                                      capsys):
    """--force removes the files of the run's own name alone: the earlier run's model stays, and the folder given
    as the model was refused as holding two, its advice naming the first by name (the earlier one), without a word
    from the run that left it so."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, CFG, options(out, name="v2", max_steps=1, replace=True, fit_prior=False, quiet=False))
    assert (out / "tiny.safetensors").exists() and (out / "tiny.json").exists()  # not the run's to remove
    assert capsys.readouterr().err.endswith(f"{out} holds 1 other model too, of earlier runs (tiny): give this one by "
                                            f"its path, Codec.load({str(out / 'v2.safetensors')!r})\n")
    with pytest.raises(VQCodecError) as refused:
        find_model(str(out))
    assert str(refused.value).endswith(f"found 2 (tiny, v2): give one of them by its path, such as "
                                       f"{out / 'v2.safetensors'}, the model of the folder's last training run (its "
                                       "checkpoint's)")
    train(data_dir, None, options(out, name="v2", max_steps=1, resume=True, fit_prior=False, quiet=False))
    assert "holds 1 other model too" in capsys.readouterr().err  # every run that writes its model says so


def test_a_runs_last_line_says_how_to_use_its_model(data_dir, tmp_path, capsys):
    """A run ended at 'wrote OUT/NAME.safetensors' (or its prior's line) without a word of how to use the model:
    its folder, given to -m (or Codec.load), takes the one model in it."""
    out = tmp_path / "my run"
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    code, err = run_in_process(["train", data_dir, "--out", out, "--config", tmp_path / "cfg.json", "--max-steps", "1",
                                "--batch-size", "4", "--crop", CROP, "--threads", "1", "--no-prior"], capsys)
    assert code == 0 and err.splitlines()[-1] == f"use it: vqcodec encode IN OUT.vq -m '{out}'", err
    train(data_dir, None, options(out, name=None, max_steps=2, resume=True, fit_prior=False, quiet=False))
    assert capsys.readouterr().err.splitlines()[-1] == f"use it: Codec.load({str(out)!r})"
    assert Codec.load(str(out)).kind == "audio"


def test_a_run_beside_many_other_models_names_a_few_and_counts_the_others(tmp_path, capsys):
    """A run's folder holding 40 models of earlier runs listed every one of their names in "holds 40 other models
    too (...)": it names the first three and counts the others, as -m FOLDER's "found N (...)" does."""
    from types import SimpleNamespace
    from vqcodec.train import _say_how_to_use_the_model

    for number in range(40):  # found by their names alone: nothing in them is read
        for suffix in (".safetensors", ".json"):
            (tmp_path / f"run{number:02d}{suffix}").write_bytes(b"")
    _say_how_to_use_the_model(SimpleNamespace(quiet=False), tmp_path / "run00.safetensors")
    assert capsys.readouterr().err == (f"{tmp_path} holds 39 other models too, of earlier runs (run01, run02, run03 "
                                       f"and 36 more): give this one by its path, "
                                       f"Codec.load({str(tmp_path / 'run00.safetensors')!r})\n")


def test_the_checkpoint_of_a_run_that_wrote_no_model_says_what_writes_it(trained, data_dir, tmp_path):
    """A stopped run's checkpoint given as a model (-m, --init) said its model files were beside it, where
    there were none: it now gives the --resume that writes them. So does the run's folder given as the model
    (-m runs/mine), which said 'expected one model (NAME.safetensors + NAME.json) in the folder' alone."""
    out = tmp_path / "stopped"
    refusal = _refusal_of_a_stopped_runs_checkpoint_as_a_model(trained, out)
    advice = (f"a training checkpoint of step 12, of a run that has written no model yet: "
              f"`vqcodec train DIR --out {out} --resume --max-steps 12` writes it without training more")
    assert refusal.endswith(f"is {advice}")
    with pytest.raises(VQCodecError) as caught:
        Codec.load(str(out))
    assert str(caught.value) == f"{out} holds no model but {out / 'checkpoint.safetensors'}, {advice}"
    (out / "checkpoint.json").write_text("[")  # not a checkpoint's record: a folder without a model, as before
    with pytest.raises(VQCodecError, match=r"stopped: expected one model \(NAME.safetensors \+ NAME.json\) in the "
                                           r"folder$"):
        Codec.load(str(out))
    shutil.copy(trained / "checkpoint.json", out / "checkpoint.json")
    train(data_dir, None, options(out, resume=True, max_steps=12, fit_prior=False))
    with pytest.raises(VQCodecError) as caught:  # the model's files named, where it said 'NAME.safetensors'
        Codec.load(str(out / "checkpoint.safetensors"))
    assert str(caught.value).endswith(f"is a training checkpoint, not a model: give the model beside it, "
                                      f"{out / 'tiny.safetensors'}")


def test_the_command_a_checkpoint_gives_names_a_folder_that_is_not_utf8_as_the_shell_reads_it(trained, tmp_path):
    """shlex.quote wrote a folder name holding byte 0xff as its lone surrogate, which the shell cannot read back
    as that folder: it is now in ANSI-C quotes, $'stopped\\xff'."""
    out = tmp_path / "stopped\udcff"
    refusal = _refusal_of_a_stopped_runs_checkpoint_as_a_model(trained, out)
    word = refusal.split("--out ")[1].split(" --resume")[0]
    assert word.endswith("stopped\\xff'")
    read_back = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert read_back == os.fsencode(out)


def test_an_interrupted_run_saves_a_checkpoint_to_resume(trained, data_dir, tmp_path, monkeypatch, capsys):
    import vqcodec.train as train_module

    steps = []
    real_step = train_module.train_step

    def interrupted_step(*args, **kwargs):
        if len(steps) == 3:
            raise KeyboardInterrupt
        steps.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", interrupted_step)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, CFG, options(out, quiet=False))
    assert "interrupted at step 3: checkpoint saved" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 3
    monkeypatch.setattr(train_module, "train_step", real_step)
    train(data_dir, None, options(out, resume=True, max_steps=5))
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 5


def test_a_run_stopped_while_it_validates_logs_that_steps_record_when_resumed(data_dir, tmp_path, monkeypatch):
    """Ctrl-C during a step's validation (most of a small model's time at each --eval-every) saved the
    checkpoint of that step without its log record, which no run wrote: the resumed run's log skipped it.
    The checkpoint now keeps the record, and the resumed run validates that step's weights and logs it
    as the run would have, once (not again if it is stopped before a step of its own)."""
    import vqcodec.train as train_module

    whole = tmp_path / "whole"
    train(data_dir, CFG, options(whole, max_steps=6, eval_every=5, fit_prior=False))
    real_validate, calls = train_module.validate, []

    def stopped_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after step 1's, step 5's
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "validate", stopped_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, CFG, options(out, max_steps=6, eval_every=5, fit_prior=False))
    assert [r["step"] for r in read_log(out)] == [1]
    monkeypatch.setattr(train_module, "validate", real_validate)
    with monkeypatch.context() as patched:
        patched.setattr(train_module, "train_step", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):  # stopped again before a step of its own: the record is logged once
            train(data_dir, None, options(out, max_steps=6, resume=True, fit_prior=False))
    train(data_dir, None, options(out, max_steps=6, resume=True, fit_prior=False))
    logged, expected = read_log(out), read_log(whole)
    assert [r["step"] for r in logged] == [1, 5, 6]  # 6: the last step
    for key in ("loss", "val", "perplexity", "codes_in_use", "lr"):
        assert logged[1][key] == pytest.approx(expected[1][key], rel=1e-6), key
    assert list(logged[1]) == list(expected[1])


def interrupted_then_finish(base: list, capsys, monkeypatch, stop_in: str) -> tuple[str, str]:
    """Run `vqcodec train` (`base`) with a Ctrl-C in the train module's `stop_in`, then the command its
    message gives; return both runs' stderr."""
    import shlex

    import vqcodec.train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(train_module, stop_in, interrupted)
        code, stopped = run_in_process(base, capsys)
    assert code == 130, stopped
    assert stopped.splitlines()[-1] == "vqcodec: interrupted"
    finish = stopped.split("`")[1]
    assert finish.startswith("vqcodec ")
    code, finished = run_in_process(shlex.split(finish)[1:], capsys)
    assert code == 0, finished
    return stopped, finished


def two_step_tiny_run(data_dir, out, tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    return ["train", data_dir, "--out", out, "--name", "tiny", "--config", tmp_path / "cfg.json", "--max-steps", "2",
            "--batch-size", "4", "--crop", CROP, "--threads", "1"]


def test_ctrl_c_while_fitting_the_prior_says_how_to_fit_it_to_the_model_written(data_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    # it said "vqcodec: interrupted" alone, over a model written without its prior
    out = tmp_path / "my run"
    stopped, _ = interrupted_then_finish(two_step_tiny_run(data_dir, out, tmp_path), capsys, monkeypatch,
                                         "fit_prior_files")
    assert f"interrupted before the prior was added: {out / 'tiny.safetensors'} is written without one" in stopped
    assert "vqcodec fit-prior" in stopped
    assert Codec.load(str(out / "tiny.safetensors")).prior is not None
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2


def test_ctrl_c_while_the_model_is_written_says_how_to_write_it_from_the_checkpoint(data_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    out = tmp_path / "run"
    stopped, _ = interrupted_then_finish(two_step_tiny_run(data_dir, out, tmp_path), capsys, monkeypatch, "save_model")
    assert f"interrupted before the model was written: the checkpoint in {out} holds its 2 steps" in stopped
    record = json.loads((out / "tiny.json").read_text())["training"]
    assert record["steps"] == 2 and record["batch_size"] == 4 and "earlier_parts" not in record
    assert Codec.load(str(out / "tiny.safetensors")).prior is not None


def test_ctrl_c_while_a_decoder_only_run_keeps_its_prior_says_how_to_keep_it(trained, data_dir, tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "dec"
    stopped, _ = interrupted_then_finish(
        ["train", data_dir, "--out", out, "--name", "tiny", "--init", trained / "tiny.safetensors", "--decoder-only",
         "--max-steps", "2", "--batch-size", "4", "--crop", CROP, "--threads", "1"], capsys, monkeypatch,
        "attach_prior")
    assert "--resume --max-steps 2`" in stopped
    start, tuned = Codec.load(str(trained / "tiny.safetensors")), Codec.load(str(out / "tiny.safetensors"))
    assert tuned.prior is not None and tuned.prior.prior_id == start.prior.prior_id
    record = json.loads((out / "tiny.json").read_text())["training"]
    assert record["steps"] == 2 and record["batch_size"] == 4 and "earlier_parts" not in record  # as trained


def test_a_run_whose_progress_pipe_closes_stops_with_a_checkpoint(data_dir, tmp_path):
    """`vqcodec train ... 2>&1 | head`: the run stopped at its next progress line with status 1 and no
    checkpoint, losing what it had trained. It now stops as SIGPIPE would, with the checkpoint saved."""
    import subprocess

    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    out = tmp_path / "run"
    reader, writer = os.pipe()
    try:
        process = start_cli("train", data_dir, "--out", out, "--config", tmp_path / "cfg.json", "--no-prior", "--threads",
                            "1", "--batch-size", "2", "--crop", CROP, "--max-steps", "100000", "--eval-every", "1000",
                            stderr=writer, stdout=subprocess.DEVNULL)
    finally:
        os.close(writer)
    with open(reader, "rb") as stderr:
        assert stderr.readline().startswith(b"training run (audio at 8000 Hz)")
    assert process.wait(timeout=120) == 128 + 13
    assert json.loads((out / "checkpoint.json").read_text())["step"] >= 1
    assert not (out / "tiny.safetensors").exists() and not (out / "run.safetensors").exists()


def test_a_run_whose_progress_pipe_is_closed_before_training_stops_as_sigpipe_would(trained, data_dir, tmp_path):
    """`vqcodec train ... 2>&1 | true`: the first line, before any step, met the closed pipe and the run
    stopped with status 1, not the 141 of a pipe closing during training; a --force run had removed the
    run it replaces first. It now stops with 141, and leaves the folder as it was."""
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    base = ["train", data_dir, "--config", tmp_path / "cfg.json", "--no-prior", "--threads", "1", "--batch-size", "2",
            "--crop", CROP, "--max-steps", "2", "--name", "tiny"]
    replaced = tmp_path / "replaced"
    shutil.copytree(trained, replaced)
    before = {p.name: p.read_bytes() for p in replaced.iterdir()}
    for out, extra in ((tmp_path / "new", []), (replaced, ["--force"])):
        reader, writer = os.pipe()
        os.close(reader)
        with open(tmp_path / "stdout", "wb") as stdout:
            try:
                code = start_cli(*base, "--out", out, *extra, stderr=writer, stdout=stdout.fileno()).wait(timeout=120)
            finally:
                os.close(writer)
        assert code == 128 + 13 and not (tmp_path / "stdout").read_bytes()
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in replaced.iterdir()} == before


def test_a_run_whose_progress_pipe_closes_after_training_still_fits_its_prior(data_dir, tmp_path):
    """The pipe closing after the last progress line stopped the run at "wrote ..." with status 1: the
    model was written without the prior that follows it. What is left to say now goes nowhere."""
    import subprocess

    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    out = tmp_path / "run"
    reader, writer = os.pipe()
    try:
        process = start_cli("train", data_dir, "--out", out, "--config", tmp_path / "cfg.json", "--threads", "1",
                            "--batch-size", "2", "--crop", CROP, "--max-steps", "2", "--eval-every", "1000", "--name",
                            "tiny", stderr=writer, stdout=subprocess.DEVNULL)
    finally:
        os.close(writer)
    with open(reader, "rb") as stderr:
        assert stderr.readline().startswith(b"training tiny (audio at 8000 Hz)")
        assert stderr.readline().startswith(b"step 1 |")
        assert stderr.readline().startswith(b"step 2 |")  # the last step's validation: training's last line
    assert process.wait(timeout=120) == 0
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["training"]["steps"] == 2 and "prior" in meta
    Codec.load(str(out / "tiny.safetensors"))


def test_a_run_whose_loss_stops_being_finite_stops_without_writing_a_model(data_dir, tmp_path, monkeypatch):
    """A diverged run (too high a --lr) trained on to its budget and wrote a model of NaN weights, which
    nothing could load, with exit status 0."""
    import vqcodec.train as train_module

    steps = []
    real_step = train_module.train_step

    def diverging_step(*args, **kwargs):
        steps.append(1)
        loss, parts, codes = real_step(*args, **kwargs)
        return (loss * math.nan if len(steps) == 3 else loss), parts, codes

    monkeypatch.setattr(train_module, "train_step", diverging_step)
    out = tmp_path / "run"
    with pytest.raises(VQCodecError, match="training diverged: the loss is not finite at step 3"):
        train(data_dir, CFG, options(out))
    assert len(steps) == 3 and not (out / "tiny.safetensors").exists() and not (out / "checkpoint.json").exists()


def test_weights_that_stop_being_finite_at_the_last_step_write_no_model(data_dir, tmp_path, monkeypatch):
    """The loss check cannot see a last step whose loss was finite but whose update made the weights NaN."""
    import vqcodec.train as train_module

    real_step = train_module.train_step
    steps = []

    def last_step_spoils_the_weights(model, *args, **kwargs):
        result = real_step(model, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)
        return result

    monkeypatch.setattr(train_module, "train_step", last_step_spoils_the_weights)
    out = tmp_path / "run"
    with pytest.raises(VQCodecError, match="the weights are not finite after step 2"):
        train(data_dir, CFG, options(out, max_steps=2))
    assert not (out / "tiny.safetensors").exists() and not (out / "checkpoint.json").exists()


def test_a_budget_too_short_for_one_step_writes_no_untrained_model(data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(VQCodecError, match="no training step ended within max_minutes"):
        train(data_dir, CFG, options(out, max_steps=None, max_minutes=1e-9))
    assert not out.exists()  # nor the empty folder it made
    out.mkdir()
    with pytest.raises(VQCodecError, match="no training step ended within max_minutes"):
        train(data_dir, CFG, options(out, max_steps=None, max_minutes=1e-9))
    assert out.is_dir()  # a folder the user made stays


def test_a_run_that_diverges_at_its_first_step_leaves_no_empty_folder(data_dir, tmp_path, monkeypatch):
    import vqcodec.train as train_module

    real_step = train_module.train_step
    monkeypatch.setattr(train_module, "train_step",
                        lambda *args, **kwargs: (lambda loss, *rest: (loss * math.nan, *rest))(*real_step(*args, **kwargs)))
    out = tmp_path / "run"
    with pytest.raises(VQCodecError, match="training diverged: the loss is not finite at step 1"):
        train(data_dir, CFG, options(out))
    assert not out.exists()


@pytest.mark.parametrize("failure", [MemoryError, lambda: PanicException("PyObject pointer is null")],
                         ids=["MemoryError", "PanicException"])
def test_a_checkpoint_save_out_of_memory_is_a_write_failure_and_the_model_is_still_written(data_dir, tmp_path,
                                                                                          monkeypatch, failure):
    """A run's peak is the saving of a checkpoint, whose bytes safetensors holds twice: past RLIMIT_DATA there
    its save panicked (pyo3's PanicException, a BaseException) with a Rust backtrace, and the model went unwritten.
    It fails as a full disk does: the model, smaller, is written, and the run ends in one line that says why."""
    import vqcodec.modelfile
    from safetensors.torch import save_file

    def out_of_memory_for_checkpoints(tensors, path, metadata=None):
        if metadata and "checkpoint" in metadata:
            raise failure()
        return save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(vqcodec.modelfile, "save_file", out_of_memory_for_checkpoints)
    out = tmp_path / "run"
    with pytest.raises(VQCodecError) as failed:
        train(data_dir, CFG, options(out, max_steps=2, fit_prior=False))
    assert str(failed.value) == (f"{out / 'tiny.safetensors'} is written, but not the checkpoint of its step 2 (cannot "
                                 f"write {out / 'checkpoint.safetensors'}: Cannot allocate memory): there is no "
                                 "checkpoint to resume")
    assert read_model_files(out / "tiny.safetensors")[0]["training"]["steps"] == 2
    assert sorted(path.name for path in out.iterdir()) == ["tiny.json", "tiny.safetensors", "train_log.jsonl"]


def test_a_full_disk_during_training_loses_no_steps_and_the_model_is_still_written(data_dir, tmp_path, monkeypatch,
                                                                                      capsys):
    # a checkpoint or log record that could not be written stopped the run there, with no model: every step
    # since the last checkpoint was lost, and at the end the model, smaller than the checkpoint, went unwritten
    import vqcodec.checkpoint as checkpoint_module
    import vqcodec.train as train_module

    def full_disk(path, *args, **kwargs):
        raise VQCodecError(f"cannot write {path}: No space left on device")

    real_os_write, log_writes = os.write, []

    def write_half_of_every_other_log_record(descriptor, data):  # as a write that fills the disk part way does
        if not os.readlink(f"/proc/self/fd/{descriptor}").endswith("train_log.jsonl"):
            return real_os_write(descriptor, data)
        log_writes.append(1)
        if len(log_writes) % 2:
            return real_os_write(descriptor, data)
        return real_os_write(descriptor, data[:len(data) // 2])

    monkeypatch.setattr(checkpoint_module, "write_checkpoint_files", full_disk)
    monkeypatch.setattr(train_module.os, "write", write_half_of_every_other_log_record)
    out = tmp_path / "run"
    with pytest.raises(VQCodecError) as failed:
        train(data_dir, CFG, options(out, max_steps=4, eval_every=1, checkpoint_minutes=0.0, quiet=False,
                                     fit_prior=False))
    assert str(failed.value) == (f"{out / 'tiny.safetensors'} is written, but not the checkpoint of its step 4 (cannot "
                                 f"write {out / 'checkpoint.safetensors'}: No space left on device): there is no "
                                 "checkpoint to resume")
    err = capsys.readouterr().err
    assert err.count("vqcodec: warning: cannot write") == 6 and "(step 4); training goes on" in err, err
    assert json.loads((out / "tiny.json").read_text())["training"]["steps"] == 4
    assert not (out / "checkpoint.safetensors").exists()
    assert [record["step"] for record in read_log(out)] == [1, 3]  # whole lines: the half records taken back out


CPU_OUT_OF_MEMORY = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                     "tried to allocate 409600000 bytes. Error code 12 (Cannot allocate memory)")


def test_running_out_of_memory_is_one_line_and_keeps_the_steps_trained(data_dir, tmp_path, monkeypatch, capsys):
    # torch's allocator raised a RuntimeError, a traceback that lost every step since the last checkpoint
    # (measured: --batch-size 40000 under `ulimit -v 5000000`)
    import vqcodec.train as train_module

    steps = []
    real_step = train_module.train_step

    def step_until_memory_runs_out(*args, **kwargs):
        if len(steps) == 2:
            raise RuntimeError(CPU_OUT_OF_MEMORY)
        steps.append(1)
        return real_step(*args, **kwargs)

    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    out = tmp_path / "run"
    base = ["train", data_dir, "--out", out, "--name", "tiny", "--config", tmp_path / "cfg.json", "--batch-size", "4",
            "--crop", CROP, "--threads", "1", "--no-prior"]
    with monkeypatch.context() as patched:
        patched.setattr(train_module, "train_step", step_until_memory_runs_out)
        code, err = run_in_process([*base, "--max-steps", "5"], capsys)
    assert code == 1 and err.splitlines()[-1] == (
        "vqcodec: error: out of memory for batches of 4 crops of 1280: lower --batch-size or --crop; checkpoint of "
        "step 2 saved: --resume with a smaller one continues"), err
    assert "Traceback" not in err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2
    code, err = run_in_process([*base[:6], "--resume", "--max-steps", "3", "--batch-size", "2", "--crop", CROP,
                                "--no-prior"], capsys)
    assert code == 0, err
    assert json.loads((out / "tiny.json").read_text())["training"]["steps"] == 3
    monkeypatch.setattr(train_module, "fit_prior_files", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(CPU_OUT_OF_MEMORY)))
    code, err = run_in_process([*base[:-1], "--out", tmp_path / "prior", "--max-steps", "1"], capsys)
    assert code == 0 and err.splitlines()[-2] == (  # the model is written; its prior, like any failed fit, is for later
        f"vqcodec: warning: no entropy-coding prior added (out of memory); files will use fixed-width coding until `vqcodec "
        f"fit-prior {tmp_path / 'prior' / 'tiny.safetensors'} DIR` adds one"), err
    monkeypatch.setattr(train_module, "validate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(CPU_OUT_OF_MEMORY)))
    code, err = run_in_process([*base, "--out", tmp_path / "other", "--max-steps", "1"], capsys)  # validating step 1
    assert code == 1 and err.splitlines()[-1].startswith("vqcodec: error: out of memory for batches of 4"), err
    assert "checkpoint of step 1 saved" in err
    monkeypatch.setattr(train_module, "_training_data", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(CPU_OUT_OF_MEMORY)))
    code, err = run_in_process([*base, "--out", tmp_path / "third", "--max-steps", "1"], capsys)
    assert (code, err.splitlines()[-1]) == (1, "vqcodec: error: out of memory"), err
    assert not (tmp_path / "third").exists()


def test_fit_prior_does_not_overwrite_another_model_without_force(trained, data_dir, tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"precious")
    code, err = run_in_process(["fit-prior", trained / "tiny.safetensors", data_dir, "--out", other], capsys)
    assert code == 1 and "exists; pass --force" in err
    assert other.read_bytes() == b"precious"


def test_fit_prior_out_naming_the_model_itself_needs_force(data_dir, tmp_path, capsys):
    """--out asks for a copy; naming the model's own files (as its .json, or another path to them) replaced
    its prior in place without --force, and the files entropy coded with the old prior stopped decoding."""
    from conftest import GOLDEN

    model = tmp_path / "model" / "golden_audio.safetensors"
    model.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(GOLDEN / f"golden_audio{suffix}", model.with_suffix(suffix))
    (tmp_path / "link").symlink_to(model.parent)
    before = model.read_bytes()
    for out in (model, model.with_suffix(".json"), model.with_suffix(""), tmp_path / "link" / "golden_audio"):
        code, err = run_in_process(["fit-prior", model, data_dir, "--out", out], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"--out {out} names golden_audio's own files" in err and "pass --force" in err, err
    assert model.read_bytes() == before
    code, err = run_in_process(["fit-prior", model, data_dir, "--out", model, "--force", "--threads", "1"], capsys)
    assert code == 0, err
    assert model.read_bytes() != before and sorted(p.name for p in model.parent.iterdir()) == \
        ["golden_audio.json", "golden_audio.safetensors"]


def test_model_files_that_cannot_be_written_are_one_line_and_leave_nothing(trained, data_dir, tmp_path):
    """A full disk or a read-only folder under safetensors' writer (model files, checkpoints) ended in a
    SafetensorError traceback, after the whole fit."""
    from conftest import run_cli_with_file_size_limit

    out = tmp_path / "out"
    out.mkdir()
    limit = (trained / "tiny.safetensors").stat().st_size // 2
    result = run_cli_with_file_size_limit(limit, "fit-prior", trained / "tiny.safetensors", data_dir,
                                          "--out", out / "copy.safetensors")
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1] == f"vqcodec: error: cannot write {out / 'copy.safetensors'}: File too large", err
    assert list(out.iterdir()) == []


def test_fit_prior_does_not_replace_the_prior_of_a_shipped_model(data_dir, tmp_path, capsys, monkeypatch):
    """Every file entropy coded with a shipped model needs its prior: refitting one in place (forgetting
    --out, or --out naming it) rewrote the installed package's model, without --force, and those files
    stopped decoding. --force replaces it. The refusal is priorfit.refuse_replacing_a_shipped_model's, worded
    for the command line: --out naming the files was told to give --out."""
    from conftest import GOLDEN
    from vqcodec import registry

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(GOLDEN / f"golden_audio{suffix}", shipped / f"golden_audio{suffix}")
    before = (shipped / "golden_audio.safetensors").read_bytes()
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: shipped)
    copy = shipped / "golden_audio.safetensors"
    for extra, message in (([], "golden_audio is a shipped model, and every file entropy coded with it needs its "
                                "prior: give --out for a copy with the new prior, or --force to replace it"),
                           (["--out", copy], f"--out {copy} names the files of golden_audio, a shipped model, and "
                                             "every file entropy coded with it needs its prior: give another one, or "
                                             "--force to replace them")):
        code, err = run_in_process(["fit-prior", "golden_audio", data_dir, *extra], capsys)
        assert code == 1 and err == f"vqcodec: error: {message}\n", err
    assert (shipped / "golden_audio.safetensors").read_bytes() == before
    code, err = run_in_process(["fit-prior", "golden_audio", data_dir, "--force", "--threads", "1"], capsys)
    assert code == 0 and (shipped / "golden_audio.safetensors").read_bytes() != before, err  # --force replaces it


def test_fit_prior_files_does_not_replace_the_prior_of_a_shipped_model(data_dir, tmp_path, monkeypatch):
    """fit_prior_files, the Python API under fit-prior, rewrote a shipped model in place (or where `out` named its
    files) without a word, where the command refuses it without --force (test above): it does so too, before any
    file is coded, unless replace_shipped=True, which the command's --force passes on."""
    from conftest import GOLDEN
    from vqcodec import registry
    from vqcodec.priorfit import fit_prior_files

    shipped, mine = tmp_path / "shipped", tmp_path / "mine"
    for folder in (shipped, mine):
        folder.mkdir()
        for suffix in (".safetensors", ".json"):
            shutil.copy(GOLDEN / f"golden_audio{suffix}", folder / f"golden_audio{suffix}")
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: shipped)
    files = sorted(data_dir.rglob("*.wav"))
    before = {path: path.read_bytes() for path in shipped.iterdir()}
    with pytest.raises(VQCodecError, match="^golden_audio is a shipped model, and every file entropy coded with it "
                                           "needs its prior: give out= for a copy with the new prior, or "
                                           "replace_shipped=True to replace it$"):
        fit_prior_files("golden_audio", files)
    with pytest.raises(VQCodecError, match="names the files of golden_audio, a shipped model"):
        fit_prior_files(mine / "golden_audio.safetensors", files, out=shipped / "golden_audio")
    with pytest.raises(VQCodecError, match="^replace_shipped must be True or False, not 'yes'$"):
        fit_prior_files("golden_audio", files, replace_shipped="yes")
    assert {path: path.read_bytes() for path in shipped.iterdir()} == before
    assert fit_prior_files("golden_audio", files[:1], replace_shipped=True) == shipped / "golden_audio.safetensors"
    assert (shipped / "golden_audio.json").read_bytes() != before[shipped / "golden_audio.json"]  # the new prior's


def test_a_codebook_too_large_for_a_prior_is_trained_without_one(data_dir, tmp_path, capsys):
    """A prior covers codebooks of at most prior.MAX_CODEBOOK entries: training a larger one says so once
    (before training), in a warning that does not send the user to `vqcodec fit-prior`, which refuses it too."""
    from vqcodec.prior import MAX_CODEBOOK

    big = dataclasses.replace(CFG, codebook_size=MAX_CODEBOOK + 1, num_codebooks=1)
    path = train(data_dir, big, options(tmp_path / "big", max_steps=1, eval_every=1))
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vqcodec: warning: no entropy")]
    assert len(warning) == 1 and f"at most {MAX_CODEBOOK} entries" in warning[0] and "fit-prior" not in warning[0]
    codec = Codec.load(str(path))
    assert codec.prior is None and codec.codebook_size == MAX_CODEBOOK + 1


def test_a_decoder_only_model_keeps_its_starting_priors_record(trained, data_dir, tmp_path):
    """The kept prior was read back from tensors alone, so the new NAME.json lost the fit's record
    (held-out bits per candidate, the choice, the network fit): it is now carried over too."""
    from conftest import markov_plane
    from vqcodec.modelfile import attach_prior
    from vqcodec.prior import CodePrior

    start = tmp_path / "start" / "tiny.safetensors"
    start.parent.mkdir()
    meta, tensors = read_model_files(trained / "tiny.safetensors")
    write_model_files(start, meta, tensors)
    prior = CodePrior.fit([markov_plane(4, 1, 60, seed)[:, 0] for seed in range(12)], 16, "audio", chunk=500)
    attach_prior(start, prior)
    summary = json.loads(start.with_suffix(".json").read_text())["prior"]
    assert all("heldout_bits" in context for context in summary["contexts"])
    out = tmp_path / "tuned"
    train(data_dir, None, options(out, max_steps=1, init=str(start), decoder_only=True))
    assert json.loads((out / "tiny.json").read_text())["prior"] == summary


@pytest.mark.parametrize("record", ["x", [1], {"id": 1066241440, "contexts": "abc"},
                                    {"id": 1066241440, "contexts": [{"level": 0, "note": 1}, None, 3]}])
def test_a_starting_models_prior_record_not_of_the_form_written_is_left_out(tmp_path, record):
    """A decoder-only run keeps its starting model's prior and the record of its fit in NAME.json; a record of
    another form (a string, contexts that are not objects) was read all the same: an AttributeError traceback."""
    from conftest import GOLDEN
    from vqcodec.train import _initial_prior

    for suffix in (".safetensors", ".json"):
        shutil.copy(GOLDEN / f"golden_audio{suffix}", tmp_path / f"m{suffix}")
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "prior": record}))
    prior = _initial_prior(str(tmp_path / "m.safetensors"))
    assert prior.prior_id == meta["prior"]["id"] == 1066241440
    assert [level.info for level in prior.levels[:1]] == ([{"note": 1}] if isinstance(record, dict)
                                                          and isinstance(record["contexts"], list) else [{}])


def failing_json_writer(failure, only_with: str | None = None):
    """A stand-in for modelfile._json_writer whose writes of a JSON (that holds `only_with`) fail with `failure`:
    the weights' file is written, the JSON's is not."""
    import vqcodec.modelfile as modelfile

    real = modelfile._json_writer

    def writer(value):
        if only_with is not None and only_with not in value:
            return real(value)

        def write(stream):
            raise failure
        return write
    return writer


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_fit_prior_stopped_between_the_weights_and_the_json_changes_neither(trained, data_dir, tmp_path, capsys,
                                                                             monkeypatch, failure):
    """The weights were written, then the JSON: stopped between the two (Ctrl-C, a full disk), the
    weights held the new prior and the JSON did not describe it (no prior, or the old one)."""
    import vqcodec.modelfile as modelfile

    meta, tensors = read_model_files(trained / "tiny.safetensors")
    meta.pop("prior", None)
    model = write_model_files(tmp_path / "bare.safetensors", meta,
                              {k: v for k, v in tensors.items() if not k.startswith("prior.")})
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    monkeypatch.setattr(modelfile, "_json_writer", failing_json_writer(failure))
    code, err = run_in_process(["fit-prior", model, data_dir], capsys)
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 1), err
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no .part file left either
    assert Codec.load(str(model)).prior is None


def test_a_prior_that_cannot_be_written_at_the_end_of_training_is_said_so_and_not_half_added(data_dir, tmp_path,
                                                                                            capsys, monkeypatch):
    import vqcodec.modelfile as modelfile

    monkeypatch.setattr(modelfile, "_json_writer", failing_json_writer(OSError(28, "No space left on device"),
                                                                       only_with="prior"))
    out = tmp_path / "run"
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    code, err = run_in_process(["train", data_dir, "--out", out, "--name", "tiny", "--config", tmp_path / "cfg.json",
                                "--max-steps", "1", "--batch-size", "4", "--crop", CROP, "--threads", "1"], capsys)
    assert code == 0 and err.splitlines()[-2] == (  # before how to use the model
        f"vqcodec: warning: no entropy-coding prior added (cannot write {out / 'tiny.json'}: No space left on device); files "
        f"will use fixed-width coding until `vqcodec fit-prior {out / 'tiny.safetensors'} DIR` adds one"), err
    assert Codec.load(str(out / "tiny.safetensors")).prior is None
    assert "prior" not in json.loads((out / "tiny.json").read_text())


def ctrl_c_after_the_first_rename(monkeypatch):
    """Make streams.move_into_place raise Ctrl-C (SIGINT) right after the first file it renames into place;
    returns the names it renames, as it renames them, and the real move_into_place."""
    import signal

    from vqcodec import streams

    real_move, moved = streams.move_into_place, []

    def move_then_ctrl_c(finished, target, replace=True):
        real_move(finished, target, replace)
        moved.append(Path(target).name)
        if len(moved) == 1:
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(streams, "move_into_place", move_then_ctrl_c)
    return moved, real_move


def test_ctrl_c_between_the_renames_of_a_models_files_comes_after_both(tmp_path, monkeypatch):
    """The weights and the JSON are renamed into place one after the other: a Ctrl-C that came between
    the two left the new weights beside the old JSON."""
    moved, _ = ctrl_c_after_the_first_rename(monkeypatch)
    meta = {"model_id": "x", "config": config_to_dict(CFG)}
    with pytest.raises(KeyboardInterrupt):
        write_model_files(tmp_path / "m.safetensors", meta, {"w": torch.zeros(3)})
    assert moved == ["m.safetensors", "m.json"] and sorted(p.name for p in tmp_path.iterdir()) == moved[::-1]


def test_a_crop_longer_than_every_file_is_cut_to_the_longest_with_a_warning(data_dir, tmp_path, capsys):
    """--crop 10000000 on clips of 1.5 s at most was taken as given: every crop was mostly silence,
    and a step took seconds; photos smaller than a huge crop the same."""
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    base = ["--config", tmp_path / "cfg.json", "--name", "tiny", "--max-steps", "1", "--batch-size", "2", "--threads", "1",
            "--no-prior"]
    began = time.monotonic()
    code, err = run_in_process(["train", data_dir, "--out", tmp_path / "audio", *base, "--crop", "10000000"], capsys)
    assert code == 0, err
    assert "vqcodec: warning: --crop 10000000 is longer than every training file (the longest holds 12000 samples, 1.50 s): " \
           "training on crops of 12000" in err.splitlines()
    assert json.loads((tmp_path / "audio" / "tiny.json").read_text())["training"]["crop"] == 12000
    assert time.monotonic() - began < 30

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in {"a.png": (40, 52), "b.png": (60, 30)}.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos / name)
    image = ImageConfig(channels=(8, 12, 16), latent_dim=8, num_codebooks=2, codebook_size=16)
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(image)))
    code, err = run_in_process(["train", photos, "--out", tmp_path / "image", *base, "--crop", "5000"], capsys)
    assert code == 0, err
    assert "vqcodec: warning: --crop 5000 is larger than every training photo (the longest side is 60 pixels): training on " \
           f"crops of {-(-60 // image.hop) * image.hop}" in err.splitlines()
    assert json.loads((tmp_path / "image" / "tiny.json").read_text())["training"]["crop"] == -(-60 // image.hop) * image.hop


def test_a_batch_beyond_memory_is_refused_before_the_model_is_built(data_dir, tmp_path, monkeypatch, capsys):
    """--batch-size 65536 with a long --crop needs hundreds of GB a step on the CPU: the process was killed
    without a line as its first batch was drawn. The estimate takes the crop as cut to the files."""
    import vqcodec.memory
    from vqcodec import train as train_module

    built = []
    monkeypatch.setattr(train_module, "VQVAE", lambda *args: built.append(args))
    monkeypatch.setattr(train_module, "train_step", lambda *args: built.append(args))
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 8 * 10 ** 9)
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    base = ["--config", tmp_path / "cfg.json", "--name", "tiny", "--max-steps", "1", "--threads", "1", "--no-prior"]
    code, err = run_in_process(["train", data_dir, "--out", tmp_path / "audio", *base, "--batch-size", "4096",
                                "--crop", "10000000"], capsys)
    # 12000 samples x 4 bytes x (4096 crops x 120 + 4096 validation crops)
    assert code == 1 and err.splitlines() == [
        "vqcodec: warning: --crop 10000000 is longer than every training file (the longest holds 12000 samples, 1.50 s): "
        "training on crops of 12000",
        "vqcodec: error: a batch of 4096 crops of 12000 samples takes 23.8 GB, more than the memory this process may "
        "use (8.0 GB); lower --batch-size or --crop"]
    with pytest.raises(VQCodecError, match=r"^a batch of 4096 crops of 12000 samples takes 23.8 GB, more than the "
                                           r"memory this process may use \(8.0 GB\); lower batch_size or crop$"):
        train(data_dir, CFG, options(tmp_path / "api", batch_size=4096, crop=10 ** 7))

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "photo.png", photos)
    image = ImageConfig(channels=(8, 12, 16), latent_dim=8, num_codebooks=2, codebook_size=16)
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(image)))
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 10 ** 9)
    code, err = run_in_process(["train", photos, "--out", tmp_path / "image", *base, "--batch-size", "64", "--crop", "512"],
                               capsys)
    # 512 x 512 pixels x 3 x 4 bytes x (64 crops x 10 + 64 validation crops)
    assert (code, err) == (1, "vqcodec: error: a batch of 64 crops of 512x512 pixels takes 2.2 GB, more than the "
                              "memory this process may use (1.0 GB); lower --batch-size or --crop\n")
    assert built == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "photos"]


def _run_of_16_crops(tmp_path, **given):
    """A one-process CPU run of batches of 16 crops of 12000 samples, as the memory checks are shown."""
    from vqcodec.runstart import Run

    return Run(options(tmp_path, batch_size=16, crop=12000, **given), "cpu", processes=1, main=True, quiet=True,
                precision="fp32", checkpoint_path=tmp_path / "checkpoint.safetensors")


def _bound_memory_to_a_step_and(monkeypatch, held: int) -> None:
    """The memory this process may use: that of a step and validation of _run_of_16_crops and `held` bytes, less
    a byte."""
    import vqcodec.memory

    step_and_validation = 16 * 48000 * 120 + 64 * 48000
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: step_and_validation + held - 1)


def _refused_at_a_step_and_a_gigabyte(run, monkeypatch, held_as: str, refusal: str) -> None:
    """With the memory of a step and validation of _run_of_16_crops and 1 GB (less a byte) to use, `run` holding
    1 GB more, given to _refuse_a_batch_beyond_memory as `held_as` (held= or state=), is refused, `refusal`, and
    one byte less passes."""
    from vqcodec.train import _refuse_a_batch_beyond_memory

    _bound_memory_to_a_step_and(monkeypatch, 10 ** 9)
    with pytest.raises(VQCodecError) as refused:
        _refuse_a_batch_beyond_memory(run, "audio", **{held_as: 10 ** 9})
    assert str(refused.value) == refusal
    _refuse_a_batch_beyond_memory(run, "audio", **{held_as: 10 ** 9 - 1})


def test_the_batch_memory_check_counts_the_discriminator_and_the_training_files_held(data_dir, tmp_path, monkeypatch,
                                                                                    capsys):
    """The check left out --adversarial's discriminator, which needs about nine times the step's memory, and the
    decoded training files held in memory (up to 2 GiB)."""
    import vqcodec.memory
    from vqcodec import train as train_module
    from vqcodec.train import _refuse_a_batch_beyond_memory

    class Built(Exception):
        pass

    built = []

    def build(*args):
        built.append(args)
        raise Built

    monkeypatch.setattr(train_module, "VQVAE", build)
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 5 * 10 ** 8)
    (tmp_path / "cfg.json").write_text(json.dumps(config_to_dict(CFG)))
    base = ["--config", tmp_path / "cfg.json", "--name", "tiny", "--max-steps", "1", "--threads", "1", "--no-prior",
            "--batch-size", "16", "--crop", "12000"]
    code, err = run_in_process(["train", data_dir, "--out", tmp_path / "run", *base, "--adversarial"], capsys)
    # 16 crops of 12000 samples x 4 bytes x (120 + 950), 64 validation crops and 4 channels of 12000 samples held
    assert (code, err) == (1, "vqcodec: error: a batch of 16 crops of 12000 samples takes 0.8 GB, more than the memory "
                              "this process may use (0.5 GB); lower --batch-size or --crop\n")
    assert built == [] and not (tmp_path / "run").exists()

    run = _run_of_16_crops(tmp_path)
    _refuse_a_batch_beyond_memory(run, "audio", adversarial=False, held=10 ** 8)  # 92 + 3 + 100 MB
    _refused_at_a_step_and_a_gigabyte(run, monkeypatch, "held", (
        "a batch of 16 crops of 12000 samples with the 1.0 GB of training files it holds in memory takes 1.1 GB, more "
        "than the memory this process may use (1.1 GB); pass stream_data=True, or lower batch_size or crop"))

    # through the command: the files held, a few bytes over, refuse what --stream-data trains (with the model's
    # training state, which both hold)
    held = 4 * 12000 * 4
    state = training_state_bytes(CFG)
    _bound_memory_to_a_step_and(monkeypatch, state + held)
    code, err = run_in_process(["train", data_dir, "--out", tmp_path / "run", *base], capsys)
    assert code == 1 and "more than the memory this process may use" in err and built == []
    with pytest.raises(Built):  # past the check
        run_in_process(["train", data_dir, "--out", tmp_path / "run", *base, "--stream-data"], capsys)
    assert len(built) == 1


def test_a_batch_is_checked_against_the_memory_the_processes_of_one_machine_share(tmp_path, monkeypatch):
    """Under torchrun each process checked its own share of the batch against the whole machine's memory, which
    all the processes on it share: four of 4 GB on an 8 GB machine each passed. The limits each process has of
    its own (ulimit -v) still bound its share alone."""
    import dataclasses

    import vqcodec.memory
    from vqcodec.runstart import Run
    from vqcodec.train import _refuse_a_batch_beyond_memory

    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 8 * 10 ** 9)
    monkeypatch.setattr(vqcodec.memory, "shared_memory_bound", lambda: 8 * 10 ** 9)
    # 1024 crops a process of 8000 samples x 4 bytes x 120 (3.93 GB a process), and the first process's 4096
    # validation crops (0.13 GB)
    run = Run(options(tmp_path, batch_size=4096, crop=8000), "cpu", processes=4, main=True, quiet=True,
               precision="fp32", checkpoint_path=tmp_path / "checkpoint.safetensors", local_processes=4)
    with pytest.raises(VQCodecError) as refused:
        _refuse_a_batch_beyond_memory(run, "audio")
    assert str(refused.value) == ("a batch of 1024 crops a process of 8000 samples, in 4 processes on this machine, "
                                  "takes 15.9 GB, more than the memory they share (8.0 GB); lower batch_size or crop, "
                                  "or start fewer processes on it")
    for fits in (dataclasses.replace(run, local_processes=2), dataclasses.replace(run, local_processes=1),
                 dataclasses.replace(run, local_processes=4, main=False, processes=8)):
        _refuse_a_batch_beyond_memory(fits, "audio")  # 8.0 GB; 4.1 GB; 512 crops a process without validation
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 3 * 10 ** 9)  # an RLIMIT_AS of each process's
    with pytest.raises(VQCodecError, match=r"^a batch of 1024 crops a process of 8000 samples takes 4.1 GB, more "
                                           r"than the memory this process may use \(3.0 GB\)"):
        _refuse_a_batch_beyond_memory(dataclasses.replace(run, local_processes=1), "audio")


def test_every_process_on_a_machine_is_counted_with_its_own_copy_of_the_training_files(data_dir, tmp_path,
                                                                                          monkeypatch):
    """Every process holds all the training files (the crops are not split by rank), the first one the held-out
    files besides; the check counted the files only in the first process, and only once on the machine: four
    processes each holding 1 GB of files passed against 2 GB of shared memory."""
    import vqcodec.memory
    from vqcodec.data import held_bytes
    from vqcodec.runstart import Run
    from vqcodec.train import _held_data_bytes, _refuse_a_batch_beyond_memory

    cfg = CFG
    run = Run(options(tmp_path, crop=12000), "cpu", processes=4, main=False, quiet=True, precision="fp32",
               checkpoint_path=tmp_path / "checkpoint.safetensors", local_processes=4)
    files = sorted(path for path in data_dir.rglob("*.wav"))  # every 20th file held out: a.wav
    trained = held_bytes("audio", [path for path in files if path.name != "a.wav"], 12000, cfg.sample_rate)
    held_out = held_bytes("audio", [data_dir / "a.wav"], 12000, cfg.sample_rate)
    assert trained > 0 and held_out > 0
    assert _held_data_bytes(run, "audio", cfg, data_dir, files, {}) == (trained, held_out)  # it was 0 but in the first
    assert _held_data_bytes(run, "audio", cfg, data_dir, files, {"held_out": ["c.wav"]}) == \
        (held_bytes("audio", [path for path in files if path.name != "c.wav"], 12000, cfg.sample_rate),
         held_bytes("audio", [data_dir / "c.wav"], 12000, cfg.sample_rate))  # as the resumed run splits them
    assert _held_data_bytes(dataclasses.replace(run, options=options(tmp_path, crop=12000, stream_data=True)),
                            "audio", cfg, data_dir, files, {}) == (0, 0)

    # 1 crop a process of 8000 samples x 4 bytes x 120 (3.84 MB), 64 validation crops (2.05 MB)
    run = Run(options(tmp_path, batch_size=4, crop=8000), "cpu", processes=4, main=True, quiet=True,
               precision="fp32", checkpoint_path=tmp_path / "checkpoint.safetensors", local_processes=4)
    step, validation = 8000 * 4 * 120, 64 * 8000 * 4
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: 10 ** 12)
    monkeypatch.setattr(vqcodec.memory, "shared_memory_bound",
                        lambda: 4 * (step + 10 ** 9) + validation + 10 ** 8 - 1)
    with pytest.raises(VQCodecError) as refused:
        _refuse_a_batch_beyond_memory(run, "audio", held=10 ** 9, held_out=10 ** 8)
    assert str(refused.value) == ("a batch of 1 crop a process of 8000 samples, in 4 processes on this machine with "
                                  "the 4.1 GB of training and held-out files they hold in memory, takes 4.1 GB, more "
                                  "than the "
                                  "memory they share (4.1 GB); pass stream_data=True, or lower batch_size or crop, "
                                  "or start fewer processes on it")
    _refuse_a_batch_beyond_memory(run, "audio", held=10 ** 9, held_out=10 ** 8 - 1)
    # each process's own limit: its training files, and the first one's held-out files and validation crops
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: step + 10 ** 9 + validation + 10 ** 8 - 1)
    with pytest.raises(VQCodecError, match=r"^a batch of 1 crop a process of 8000 samples with the 1.1 GB of "
                                           r"training and held-out files it holds in memory takes 1.1 GB, more than "
                                           r"the memory "
                                           r"this process may use \(1.1 GB\)"):
        _refuse_a_batch_beyond_memory(dataclasses.replace(run, local_processes=1), "audio", held=10 ** 9,
                                      held_out=10 ** 8)
    _refuse_a_batch_beyond_memory(dataclasses.replace(run, local_processes=1, main=False), "audio", held=10 ** 9,
                                  held_out=10 ** 8)
    monkeypatch.setattr(vqcodec.memory, "memory_bound", lambda: step + 10 ** 9 - 1)
    with pytest.raises(VQCodecError, match="with the 1.0 GB of training files it holds in memory takes 1.0 GB, more "
                                           "than the memory this process may use"):  # the held-out files not its
        _refuse_a_batch_beyond_memory(dataclasses.replace(run, local_processes=1, main=False), "audio", held=10 ** 9,
                                      held_out=10 ** 8)


def test_resume_drops_a_partial_log_record_with_a_warning(trained, data_dir, tmp_path, capsys):
    """A run stopped while writing a log record (a power cut) left the start of it, and a --resume
    appended its records after it: the log no longer parsed as JSON lines."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    whole = (out / "train_log.jsonl").read_bytes()
    (out / "train_log.jsonl").write_bytes(whole + b'{"step": 13, "val_lo')
    train(data_dir, None, options(out, resume=True, max_steps=15))
    assert f"vqcodec: warning: {out / 'train_log.jsonl'} ended in a partial record (20 bytes, written as a run stopped): " \
           "removed" in capsys.readouterr().err.splitlines()
    records = read_log(out)
    assert (out / "train_log.jsonl").read_bytes().startswith(whole) and records[-1]["step"] == 15
    assert [record["step"] for record in records][:len(whole.splitlines())] == \
        [json.loads(line)["step"] for line in whole.splitlines()]


def test_a_checkpoint_larger_than_the_memory_the_process_may_use_is_refused_before_it_is_read(trained, data_dir,
                                                                                             tmp_path, monkeypatch):
    """--resume read the whole checkpoint (its bytes held twice while its tensors were made of them) whatever the
    memory this process may use (past a cgroup's limit, the process was killed), where loading a model checks it
    first: what the resumed run holds is checked against memory.memory_bound before it is read, in one line. It
    was counted as twice the checkpoint's size, the reading alone: the run then holds as much as its tensors (their
    moments, and its model in place of their weights) and its gradients (training_state_bytes), or the reading where
    that is more."""
    import vqcodec.modelfile
    from vqcodec.checkpoint import load_checkpoint

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    checkpoint = out / "checkpoint.safetensors"
    before = checkpoint.read_bytes()
    resumed = training_state_bytes(CFG, checkpoint_bytes=len(before))
    assert resumed == len(before) + 4 * parameter_count(CFG)
    needed = max(resumed, 2 * len(before))  # the reading holds the file's bytes twice
    monkeypatch.setattr(vqcodec.modelfile, "memory_bound", lambda: needed)
    assert "model" in load_checkpoint(checkpoint, "cpu")[0]
    monkeypatch.setattr(vqcodec.modelfile, "memory_bound", lambda: needed - 1)
    monkeypatch.setattr(vqcodec.modelfile, "_tensors_read", lambda *args: pytest.fail("the checkpoint was read"))
    refused = re.escape(f"resuming the checkpoint {checkpoint} takes 0.0 GB, more than the memory this process may "
                        "use (0.0 GB); resume it where the process may use more")
    with pytest.raises(VQCodecError, match=f"^{refused}$"):
        train(data_dir, None, options(out, resume=True, max_steps=15))
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("failure", [MemoryError, lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to "
                                                                                   "allocate 2.00 GiB")],
                         ids=["MemoryError", "torch.OutOfMemoryError"])
def test_a_checkpoint_whose_reading_runs_out_of_memory_is_not_called_damaged(trained, monkeypatch, failure):
    """Memory running out while a checkpoint's tensors were made (within the bound, but not free: under `ulimit -v`;
    a GPU's, torch's OutOfMemoryError) was 'the checkpoint PATH is damaged (MemoryError: )' ('(OutOfMemoryError: CUDA
    out of memory. ...)'): the error goes on, and the command says 'out of memory'."""
    import vqcodec.modelfile
    from vqcodec.checkpoint import load_checkpoint

    def out_of_memory(data):
        raise failure()

    monkeypatch.setattr(vqcodec.modelfile, "load", out_of_memory)
    with pytest.raises((MemoryError, torch.OutOfMemoryError)):
        load_checkpoint(trained / "checkpoint.safetensors", "cpu")


def test_a_resumed_run_lets_the_checkpoints_weights_go_once_restored(trained, data_dir, tmp_path, monkeypatch):
    """A resumed run held the checkpoint's tensors as read all through its run: its weights, copied into the
    model, were held twice (80 MB more for base_channels 64, README Limits). Once restored, only the AdamW moments
    stay, held by the optimiser."""
    import gc
    import weakref

    import vqcodec.runstart as runstart_module
    import vqcodec.train as train_module

    real_load, real_step, read, alive_at_steps = runstart_module.load_checkpoint, train_module.train_step, {}, []

    def load_checkpoint(*args, **kwargs):
        groups, meta = real_load(*args, **kwargs)
        read.update({group: [weakref.ref(tensor) for tensor in tensors.values()] for group, tensors in groups.items()})
        return groups, meta

    def train_step(*args, **kwargs):
        gc.collect()
        alive_at_steps.append({group: sum(ref() is not None for ref in refs) for group, refs in read.items()})
        return real_step(*args, **kwargs)

    monkeypatch.setattr(runstart_module, "load_checkpoint", load_checkpoint)
    monkeypatch.setattr(train_module, "train_step", train_step)
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, resume=True, max_steps=13, fit_prior=False))
    assert sorted(read) == ["model", "optim"] and len(read["model"]) > 0
    assert alive_at_steps == [{"model": 0, "optim": len(read["optim"])}]
    assert training_state_bytes(CFG, checkpoint_bytes=1000) == 1000 + 4 * parameter_count(CFG)


def test_the_training_state_counted_is_what_a_run_holds_and_names_itself_where_it_is_most_of_a_refusal(
        trained, tmp_path, monkeypatch):
    """The memory check of a training run counted its batch and files alone: not the model, its gradients and
    AdamW's moments, nor the checkpoint a resumed run holds (README, Limits).
    training_state_bytes is checked against the tensors a run of the tests' config holds, and a refusal where they
    are most of the count says so, with what to do."""
    from vqcodec.checkpoint import load_checkpoint
    from vqcodec.train import _refuse_a_batch_beyond_memory

    saved = load_checkpoint(trained / "checkpoint.safetensors", "cpu")[0]
    checkpoint = sum(tensor.nbytes for group in saved.values() for tensor in group.values())
    model = VQVAE(CFG)
    weights = sum(tensor.nbytes for tensor in model.state_dict().values())
    gradients = sum(parameter.nbytes for parameter in model.parameters())
    moments = sum(tensor.nbytes for name, tensor in saved["optim"].items() if name.endswith(("exp_avg", "exp_avg_sq")))
    assert moments == 2 * gradients
    # within the few bytes of the codebooks' use counts and step counters, which the config's count leaves out
    assert training_state_bytes(CFG) == pytest.approx(weights + gradients + moments, rel=0.01)
    assert training_state_bytes(CFG, checkpoint_bytes=checkpoint) == pytest.approx(gradients + checkpoint, rel=0.01)

    run = _run_of_16_crops(tmp_path, resume=True)
    _refused_at_a_step_and_a_gigabyte(run, monkeypatch, "state", (
        "a batch of 16 crops of 12000 samples with the 1.0 GB of model, gradients, optimiser state and checkpoints it "
        "holds takes 1.1 GB, more than the memory this process may use (1.1 GB); resume it where the process may use "
        "more"))
    with pytest.raises(VQCodecError, match=r"; train where the process may use more, or a smaller model$"):
        _refuse_a_batch_beyond_memory(dataclasses.replace(run, options=options(tmp_path, batch_size=16, crop=12000)),
                                      "audio", state=10 ** 9)


class _StoppedAtTheMemoryCheck(Exception):
    pass


@pytest.mark.parametrize("given, kept", [({}, {"model", "optim", "disc", "disc_optim", "average"}),
                                         ({"adversarial": False, "weight_average": 0.0}, {"model", "optim"})],
                         ids=["kept", "dropped"])
def test_a_resume_that_drops_the_discriminator_or_average_lets_them_go_and_counts_them_no_more(
        trained, data_dir, tmp_path, monkeypatch, given, kept):
    """A resume with --no-adversarial (--weight-average 0) held the checkpoint's discriminator and its moments (its
    average) until the optimisers were made, and its memory check counted them (training_state_bytes of the whole
    checkpoint): for the tests' config, 0.95 MB where the run keeps 61 kB. They are let go as soon as the run's
    options are known, and the check counts the tensors the run keeps."""
    import gc
    import weakref

    import vqcodec.runstart as runstart_module
    import vqcodec.train as train_module

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=13, resume=True, adversarial=True, weight_average=0.9,
                                  fit_prior=False))
    real_load, read, checked = runstart_module.load_checkpoint, {}, []

    def load_checkpoint(*args, **kwargs):
        groups, meta = real_load(*args, **kwargs)
        read.update({group: [weakref.ref(tensor) for tensor in tensors.values()] for group, tensors in groups.items()})
        return groups, meta

    def refuse_a_batch_beyond_memory(run, kind, adversarial=False, held=0, held_out=0, state=0):
        gc.collect()
        checked.append((state, {group for group, refs in read.items() if any(ref() is not None for ref in refs)}))
        raise _StoppedAtTheMemoryCheck

    monkeypatch.setattr(runstart_module, "load_checkpoint", load_checkpoint)
    monkeypatch.setattr(train_module, "_refuse_a_batch_beyond_memory", refuse_a_batch_beyond_memory)
    with pytest.raises(_StoppedAtTheMemoryCheck):
        train(data_dir, None, options(out, max_steps=14, resume=True, **given))
    groups = {}
    for name, tensor in load_file(str(out / "checkpoint.safetensors")).items():
        groups[name.split(".")[0]] = groups.get(name.split(".")[0], 0) + tensor.nbytes
    assert set(groups) == set(read) == {"model", "optim", "disc", "disc_optim", "average"}
    kept_bytes = sum(size for group, size in groups.items() if group in kept)
    assert checked == [(training_state_bytes(CFG, checkpoint_bytes=kept_bytes), kept)]


def test_a_resume_that_starts_averaging_counts_the_average_it_makes(trained, data_dir, tmp_path, monkeypatch):
    """A --resume --weight-average of a checkpoint that held no average makes one, a copy of the model, which its
    memory check left out: it counted the checkpoint's tensors and the gradients alone."""
    import vqcodec.train as train_module

    checked = []

    def refuse_a_batch_beyond_memory(run, kind, adversarial=False, held=0, held_out=0, state=0):
        checked.append(state)
        raise _StoppedAtTheMemoryCheck

    monkeypatch.setattr(train_module, "_refuse_a_batch_beyond_memory", refuse_a_batch_beyond_memory)
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    with pytest.raises(_StoppedAtTheMemoryCheck):
        train(data_dir, None, options(out, max_steps=13, resume=True, weight_average=0.9))
    checkpoint = sum(tensor.nbytes for tensor in load_file(str(out / "checkpoint.safetensors")).values())
    model = VQVAE(CFG)
    average = sum(tensor.nbytes for tensor in model.state_dict().values())  # WeightAverage's copy of the model
    gradients = sum(parameter.nbytes for parameter in model.parameters())
    # within the few bytes of the codebooks' use counts, which the config's count leaves out
    assert checked == [pytest.approx(checkpoint + average + gradients, rel=0.01)]


def test_a_log_is_repaired_through_the_descriptor_it_was_read_from(tmp_path, monkeypatch, capsys):
    """train._repair_log read the log through a checked descriptor but truncated it by its path: a file put in
    the log's place between the two (another run's log) was cut at the length worked out for the one read. The
    log read is the one truncated, and a file put in its place is left as it is."""
    import vqcodec.train as train_module

    log = tmp_path / "train_log.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2, "lo')
    os.link(log, tmp_path / "read.jsonl")  # the file read, wherever its name goes
    replacement = b'{"step": 7}\n{"step": 8}\n'
    checked = train_module._is_log_record

    def replaced_while_checked(line):
        if not (tmp_path / "other.jsonl").exists():
            (tmp_path / "other.jsonl").write_bytes(replacement)
            os.replace(tmp_path / "other.jsonl", log)
        return checked(line)

    monkeypatch.setattr(train_module, "_is_log_record", replaced_while_checked)
    train_module._repair_log(log)
    assert log.read_bytes() == replacement
    assert (tmp_path / "read.jsonl").read_bytes() == b'{"step": 1}\n'
    assert "ended in a partial record (15 bytes" in capsys.readouterr().err


def _log_not_writable(monkeypatch, log: Path, error: int) -> None:
    """Opening `log` to write it fails with errno `error`, as a read-only file system (EROFS) or a log the user
    may not write (EACCES; root may, so it is simulated) fail it; reading it does not."""
    real_open = os.open

    def refused(path, flags, *args):
        if os.fspath(path) == os.fspath(log) and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(error, os.strerror(error), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refused)


@pytest.mark.parametrize("error", [errno.EACCES, errno.EPERM, errno.EROFS], ids=errno.errorcode.get)
def test_a_log_that_may_not_be_written_resumes_unless_it_needs_a_repair(tmp_path, monkeypatch, capsys, error):
    """A log opened to be read and truncated is read alone where it may not be written (a run's records it cannot
    write are warnings): refused only where it needs a repair, with why."""
    import vqcodec.train as train_module

    log = tmp_path / "train_log.jsonl"
    _log_not_writable(monkeypatch, log, error)
    log.write_bytes(b'{"step": 1}\n')
    train_module._repair_log(log)
    assert log.read_bytes() == b'{"step": 1}\n' and capsys.readouterr().err == ""
    log.write_bytes(b'{"step": 1}\n{"step": 2, "lo')
    with pytest.raises(VQCodecError, match=f"^cannot repair {re.escape(str(log))}: {os.strerror(error)}$"):
        train_module._repair_log(log)
    assert log.read_bytes() == b'{"step": 1}\n{"step": 2, "lo'


def test_a_log_whose_truncation_fails_is_refused_with_why_and_left_as_it_was(tmp_path, monkeypatch):
    """A log opened to be written whose truncation fails (a file system gone read-only between the two) is one
    line too, not an OSError."""
    import vqcodec.train as train_module

    def read_only(descriptor, length):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    log = tmp_path / "train_log.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2, "lo')
    monkeypatch.setattr(os, "ftruncate", read_only)
    with pytest.raises(VQCodecError, match=f"^cannot repair {re.escape(str(log))}: Read-only file system$"):
        train_module._repair_log(log)
    assert log.read_bytes() == b'{"step": 1}\n{"step": 2, "lo'


def test_a_run_whose_log_may_not_be_written_resumes_and_warns_of_each_record_it_cannot_write(trained, data_dir,
                                                                                            tmp_path, monkeypatch,
                                                                                            capsys):
    """The fallback through a whole --resume: a log the user may not write, but which needs no repair, is read and
    left as it is; the run trains on, each record it cannot append a warning, and writes its checkpoint and model."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    log = out / "train_log.jsonl"
    before = log.read_bytes()
    _log_not_writable(monkeypatch, log, errno.EACCES)
    assert train(data_dir, None, options(out, resume=True, max_steps=15)) == out / "tiny.safetensors"
    assert log.read_bytes() == before
    assert _checkpoint_pair(out / "checkpoint.safetensors")[0]["step"] == 15
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vqcodec: warning: ")]
    assert warnings and all(line.startswith(f"vqcodec: warning: cannot write {log}: Permission denied (step ")
                            for line in warnings)


def _checkpoint_pair(path: Path) -> tuple[dict, dict | None]:
    """The record in a checkpoint's weights' header, and its JSON file's (None: none)."""
    json_path = path.with_suffix(".json")
    return (json.loads(read_safetensors_metadata(path)["checkpoint"]),
            json.loads(json_path.read_text()) if json_path.exists() else None)


def _checkpoint_tensors() -> dict[str, torch.Tensor]:
    """A checkpoint's tensors as save_checkpoint gives them: a model's, with an optimiser's moments and step."""
    tensors = {f"model.{name}": value for name, value in VQVAE(CFG).state_dict().items()}
    tensors.update({"optim.0.exp_avg": torch.randn(256, 2000), "optim.0.exp_avg_sq": torch.rand(256, 2000),
                    "optim.0.step": torch.tensor(3.0)})
    return tensors


def test_a_checkpoint_is_written_tensor_by_tensor_as_the_bytes_safetensors_would_build(tmp_path):
    """Saving built the whole file's bytes in memory (safetensors.torch.save), the peak of a training run: twice
    the checkpoint's size (489 MB for one of 244 MB), and past the memory the process may use an abort
    (status 134) that lost every step since the last checkpoint. save_file writes the same bytes."""
    import tracemalloc

    from safetensors.torch import save

    from vqcodec.modelfile import write_checkpoint_files

    tensors, record = _checkpoint_tensors(), {"step": 3, "name": "tiny"}
    path = tmp_path / "checkpoint.safetensors"
    write_checkpoint_files(path, tensors, {"step": 2})  # what the first save imports is not counted
    tracemalloc.start()
    try:
        write_checkpoint_files(path, tensors, record)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size / 8, (peak, path.stat().st_size)  # no Python object of the file's bytes
    assert path.read_bytes() == save(tensors, metadata={"checkpoint": json.dumps(record)})
    model = write_model_files(tmp_path / "model.safetensors", {"model_id": "0" * 16}, tensors)
    assert model.read_bytes() == save(tensors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors", "model.json",
                                                          "model.safetensors"]


def test_safetensors_writes_its_temporary_file_in_a_private_folder_that_the_save_removes(tmp_path, monkeypatch):
    """save_file writes a hidden .tmpXXXXXX beside the path it is given and renames it onto that path: given our
    temporary file, it wrote it in the user's folder, where a kill -9 left it and no run removed it. It is given a
    path in a private folder named as our temporary files are (removed by the next run: test_the_half_written_...),
    and a save leaves nothing beside the files it writes."""
    import vqcodec.modelfile as modelfile
    from vqcodec.modelfile import write_checkpoint_files

    folders = []

    def save_file_seen(tensors, filename, metadata=None):
        folders.append(Path(filename).parent)
        save_file(tensors, filename, metadata=metadata)
    monkeypatch.setattr(modelfile, "save_file", save_file_seen)
    path, tensors = tmp_path / "checkpoint.safetensors", {"weight": torch.randn(8, 8)}
    write_checkpoint_files(path, tensors, {"step": 1})
    [folder] = folders
    assert folder.parent == tmp_path and re.fullmatch(r"\.checkpoint\.safetensors\.[^.]+\.part", folder.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]
    assert torch.equal(load_file(str(path))["weight"], tensors["weight"])


@pytest.mark.parametrize("failure", [SafetensorError("Error while serializing: I/O error: No space left on device "
                                                     "(os error 28)"), KeyboardInterrupt()], ids=["full_disk", "ctrl_c"])
def test_a_checkpoint_write_that_fails_midway_leaves_the_checkpoint_before_it(tmp_path, monkeypatch, failure):
    """A save that fails (a full disk) or is stopped (Ctrl-C) halfway through the file safetensors writes leaves
    no part of it: the checkpoint saved before, and nothing beside it."""
    import vqcodec.modelfile as modelfile
    from vqcodec.modelfile import write_checkpoint_files

    path, tensors = tmp_path / "checkpoint.safetensors", _checkpoint_tensors()
    write_checkpoint_files(path, tensors, {"step": 1})
    before = {name.name: name.read_bytes() for name in tmp_path.iterdir()}

    def half_then_failure(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as written:
            written.truncate(os.path.getsize(filename) // 2)
        raise failure
    monkeypatch.setattr(modelfile, "save_file", half_then_failure)
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else VQCodecError) as failed:
        write_checkpoint_files(path, tensors, {"step": 2})
    if not isinstance(failure, KeyboardInterrupt):
        assert str(failed.value) == f"cannot write {path}: No space left on device"
    assert {name.name: name.read_bytes() for name in tmp_path.iterdir()} == before


def test_a_checkpoint_save_stopped_or_failing_between_its_two_files_changes_neither(tmp_path, monkeypatch):
    """The weights and checkpoint.json were two separate writes: a Ctrl-C between their renames (in the
    final save, which nothing saves again) left the new weights beside the old JSON, and a full disk at the
    JSON left the new weights beside the old JSON too."""
    from vqcodec import streams
    from vqcodec.checkpoint import save_checkpoint

    path, modules = tmp_path / "checkpoint.safetensors", {"model": VQVAE(CFG)}
    save_checkpoint(path, modules, {}, {"step": 1})
    moved, real_move = ctrl_c_after_the_first_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, modules, {}, {"step": 2})
    assert moved == ["checkpoint.safetensors", "checkpoint.json"]
    assert _checkpoint_pair(path) == ({"step": 2}, {"step": 2})
    monkeypatch.setattr(streams, "move_into_place", real_move)

    real_temporary = streams._write_temporary

    def full_disk_at_the_json(target, write):
        if target.suffix == ".json":
            raise VQCodecError(f"cannot write {target}: No space left on device")
        return real_temporary(target, write)
    monkeypatch.setattr(streams, "_write_temporary", full_disk_at_the_json)
    with pytest.raises(VQCodecError, match="No space left"):
        save_checkpoint(path, modules, {}, {"step": 3})
    assert _checkpoint_pair(path) == ({"step": 2}, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]


def test_resume_rewrites_a_checkpoint_json_that_a_kill_between_the_renames_left_behind(trained, data_dir, tmp_path,
                                                                                      monkeypatch, capsys):
    """kill -9 between the two renames of a save left the new weights (step 14) beside the JSON of the save
    before (step 12), or none: --resume went on from the weights' record, but checkpoint.json kept saying
    step 12 until the resumed run saved, and a run that failed first never did."""
    import vqcodec.train as train_module

    later = tmp_path / "later"
    shutil.copytree(trained, later)
    train(data_dir, None, options(later, max_steps=14, resume=True, fit_prior=False))

    def stop(*args, **kwargs):
        raise VQCodecError("stopped before the first step")
    monkeypatch.setattr(train_module, "train_step", stop)
    for left, found in (("old", "left from an earlier save (step 12)"), ("none", "missing"),
                        ("damaged", "damaged")):
        out = tmp_path / left
        shutil.copytree(trained, out)
        shutil.copy(later / "checkpoint.safetensors", out / "checkpoint.safetensors")
        if left == "none":
            (out / "checkpoint.json").unlink()
        elif left == "damaged":
            (out / "checkpoint.json").write_text('{"step": 1')
        capsys.readouterr()
        with pytest.raises(VQCodecError, match="stopped before the first step"):
            train(data_dir, None, options(out, max_steps=16, resume=True, fit_prior=False))
        header, copy = _checkpoint_pair(out / "checkpoint.safetensors")
        assert header["step"] == 14 and copy == header
        assert f"vqcodec: warning: {out / 'checkpoint.json'} was {found}, as a run stopped between the two files of a save " \
               "leaves it: rewritten from the record in the weights (step 14)" in capsys.readouterr().err.splitlines()
    capsys.readouterr()
    with pytest.raises(VQCodecError, match="stopped before the first step"):  # a whole pair: no warning
        train(data_dir, None, options(later, max_steps=16, resume=True, fit_prior=False))
    assert "warning" not in capsys.readouterr().err


class _Killed(BaseException):
    """A kill -9, simulated: nothing after it runs but what Python's own unwinding runs."""


def test_a_save_killed_between_its_renames_resumes_from_the_new_weights_and_rewrites_their_json(trained, data_dir,
                                                                                               tmp_path, monkeypatch,
                                                                                               capsys):
    """The save sequence itself, stopped where a kill between its renames stops it (the weights renamed into place,
    the JSON not): the resumed run takes the step of the weights on disk, never the stale JSON's."""
    import vqcodec.streams as streams_module
    import vqcodec.train as train_module

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    real_move = streams_module.move_into_place

    def killed_before_the_json(temporary, target, *args):
        if Path(target).name == "checkpoint.json":
            raise _Killed
        real_move(temporary, target, *args)
    monkeypatch.setattr(streams_module, "move_into_place", killed_before_the_json)
    with pytest.raises(_Killed):
        train(data_dir, None, options(out, max_steps=13, resume=True, fit_prior=False))
    assert [record["step"] for record in _checkpoint_pair(out / "checkpoint.safetensors")] == [13, 12]
    monkeypatch.setattr(streams_module, "move_into_place", real_move)
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: (_ for _ in ()).throw(_Killed()))
    capsys.readouterr()
    with pytest.raises(_Killed):  # the resumed run's first step: its start is what is checked
        train(data_dir, None, options(out, max_steps=14, resume=True, fit_prior=False))
    assert [record["step"] for record in _checkpoint_pair(out / "checkpoint.safetensors")] == [13, 13]
    assert f"{out / 'checkpoint.json'} was left from an earlier save (step 12)" in capsys.readouterr().err


def _lock_is_free(folder: Path) -> bool:
    """Whether a flock on the folder's run lock file can be taken now (through a file description of its own,
    so a lock this process holds counts as taken). Makes no lock file where there is none."""
    import fcntl

    from vqcodec.runlock import LOCK_NAME

    try:
        descriptor = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)


def test_a_run_holds_its_out_folders_lock_while_it_trains_and_removes_it_at_the_end(trained, data_dir, tmp_path,
                                                                                      monkeypatch):
    import vqcodec.train as train_module
    from vqcodec.runlock import LOCK_NAME

    free_during_steps = []
    real_step = train_module.train_step

    def step_and_look(*args, **kwargs):
        free_during_steps.append(_lock_is_free(out))
        return real_step(*args, **kwargs)
    monkeypatch.setattr(train_module, "train_step", step_and_look)
    out = tmp_path / "new"  # made by the run: locked once made
    train(data_dir, CFG, options(out, max_steps=2, fit_prior=False))
    out = tmp_path / "resumed"  # there already: locked from the start
    shutil.copytree(trained, out)
    train(data_dir, None, options(out, max_steps=14, resume=True, fit_prior=False))
    assert free_during_steps == [False] * 4
    assert not (tmp_path / "new" / LOCK_NAME).exists() and not (out / LOCK_NAME).exists()

    def fail(*args, **kwargs):
        assert not _lock_is_free(tmp_path / "failed")
        raise VQCodecError("failed at the first step")
    monkeypatch.setattr(train_module, "train_step", fail)
    with pytest.raises(VQCodecError, match="failed at the first step"):  # a new folder of a failed run is removed
        train(data_dir, CFG, options(tmp_path / "failed", max_steps=2))
    assert not (tmp_path / "failed").exists()


def _folder_state(folder: Path) -> tuple:
    """The folder's modification time and each file's name, bytes and modification time."""
    return folder.stat().st_mtime_ns, {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir()}


@pytest.mark.parametrize("extra, message", [
    (["--resume", "--force"], "--resume continues the run in --out and --force replaces it: give only one"),
    (["--max-steps", "0"], "--max-steps 0 writes the starting model as it is: it needs --init MODEL"),
    (["--decoder-only"], "--decoder-only trains the decoder of a trained model: give --init MODEL"),
    (["--weight-average", "1.5"], "--weight-average must be a decay between 0 and 1, such as 0.999, not 1.5"),
    (["--noise", "2"], "--noise must be a share between 0 and 1, not 2.0"),
    (["--noise", "0.5", "--noise-snr", "40,10"], "--noise-snr must be LOW,HIGH in dB with -20 <= LOW <= HIGH <= 100"),
    (["--init", "MODEL", "--codebooks", "2"], "--init keeps the model's own config: leave out --codebooks"),
])
def test_a_run_with_options_that_do_not_go_together_leaves_the_out_folder_untouched(trained, data_dir, tmp_path, capsys,
                                                                                   extra, message):
    """Each was checked once the run had locked an --out folder there already: the lock file made and removed
    again, a killed run's left lock file removed. A run refused on its options must not touch the folder."""
    from vqcodec.runlock import LOCK_NAME

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / LOCK_NAME).write_bytes(b"")  # as a run killed with kill -9 leaves it
    before = _folder_state(out)
    extra = [str(trained / "tiny.safetensors") if arg == "MODEL" else arg for arg in extra]
    for folder in (out, tmp_path / "new"):
        code, err = run_in_process(["train", data_dir, "--out", folder, "--name", "tiny", "--max-steps", "2",
                                    "--threads", "1", *extra], capsys)
        assert code == 1 and len(err.splitlines()) == 1 and message in err, err
    assert _folder_state(out) == before
    assert not (tmp_path / "new").exists()


def lock_holder(out: Path):
    """A process that holds the lock of the folder `out` (runlock) once this returns, until it is killed."""
    import subprocess
    import sys

    from conftest import REPO_ROOT, _base_environment

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom vqcodec.runlock import lock_out\n"
                               "lock_out(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(600)", str(out)],
                              stdout=subprocess.PIPE, cwd=REPO_ROOT, env=_base_environment())
    assert holder.stdout.readline() == b"locked\n"
    return holder


def test_a_second_run_in_a_folder_in_use_is_refused_until_the_first_is_killed(trained, data_dir, tmp_path, cli):
    """Two runs in one --out folder (a --resume of a run still going, the same command started twice)
    overwrote each other's checkpoint, log and model files. A run killed with kill -9 holds it no more."""
    import signal

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    holder = lock_holder(out)
    try:
        held = _folder_state(out)
        for extra in (["--resume"], ["--force"], []):
            result = cli("train", data_dir, "--out", out, "--name", "tiny", "--max-steps", "14", "--threads", "1",
                         *extra)
            assert_one_line_error(result)
            assert result.stderr.decode() == \
                f"vqcodec: error: {out} is in use by another run of vqcodec train or fit-prior\n"
        assert _folder_state(out) == held and not _lock_is_free(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    train(data_dir, None, options(out, max_steps=13, resume=True, fit_prior=False))  # its lock file left, unlocked
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 13


def test_fit_prior_is_refused_where_another_run_writes_and_holds_the_lock_while_it_fits(data_dir, tmp_path, cli,
                                                                                        monkeypatch):
    """Two fit-prior runs writing one model (or one while `train` wrote it) raced: each removed the other's
    half-written files as a killed write's (`cannot write mine.json: No such file or directory`, its weights
    already renamed into place), and their renames could pair one run's weights with the other's JSON, which
    names another prior. fit-prior now takes the run lock of the folder it writes in, as train does."""
    import signal

    import vqcodec.priorfit as priorfit_module
    from conftest import GOLDEN
    from vqcodec.runlock import LOCK_NAME, lock_out, release_out

    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    for folder in (models, elsewhere):
        folder.mkdir()
        for suffix in (".safetensors", ".json"):
            shutil.copy(GOLDEN / f"golden_audio{suffix}", folder / f"mine{suffix}")
    (elsewhere / "linked.safetensors").symlink_to(models / "mine.safetensors")
    (elsewhere / "linked.json").symlink_to(models / "mine.json")
    holder = lock_holder(models)
    try:
        held, untouched = _folder_state(models), _folder_state(elsewhere)
        for args in ([models / "mine.safetensors", data_dir], [elsewhere / "linked.safetensors", data_dir],
                     [elsewhere / "mine.safetensors", data_dir, "--out", models / "copy"],
                     [elsewhere / "mine.safetensors", data_dir, "--out", models / "mine", "--force"]):
            result = cli("fit-prior", *args)
            assert_one_line_error(result)
            assert result.stderr.decode() == \
                f"vqcodec: error: {models} is in use by another run of vqcodec train or fit-prior\n"
        assert _folder_state(models) == held and _folder_state(elsewhere) == untouched and not _lock_is_free(models)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()

    free_while_coding = []

    def look_and_find_nothing(*args, **kwargs):
        free_while_coding.append(_lock_is_free(models))
        return [], []
    monkeypatch.setattr(priorfit_module, "collect_codes", look_and_find_nothing)
    with pytest.raises(VQCodecError, match="no readable media"):
        priorfit_module.fit_prior_files(models / "mine.safetensors", [])
    assert free_while_coding == [False] and not (models / LOCK_NAME).exists()
    lock_out(models)  # as a training run holds it when it fits its prior: left held
    try:
        with pytest.raises(VQCodecError, match="no readable media"):
            priorfit_module.fit_prior_files(models / "mine.safetensors", [])
        assert free_while_coding == [False, False] and not _lock_is_free(models)
    finally:
        release_out(models)


def test_fit_prior_into_another_folder_holds_a_shared_lock_of_the_folder_it_reads_the_model_from(data_dir, tmp_path,
                                                                                                   cli, monkeypatch):
    """With --out elsewhere, the model was read without a lock, at the start (the codes it was fitted to) and again at
    the end (the weights copied with the prior): a training run that wrote it meanwhile gave a copy whose prior was
    fitted to other weights. Now a run writing there refuses the fit-prior, and a run started meanwhile is refused;
    other readers share the lock, and the lock file is removed after."""
    import signal
    import subprocess
    import sys

    import vqcodec.priorfit as priorfit_module
    from conftest import GOLDEN, REPO_ROOT, _base_environment
    from vqcodec.runlock import LOCK_NAME

    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    for folder in (models, elsewhere):
        folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(GOLDEN / f"golden_audio{suffix}", models / f"mine{suffix}")
    holder = lock_holder(models)
    try:
        held = _folder_state(models)
        result = cli("fit-prior", models / "mine.safetensors", data_dir, "--out", elsewhere / "copy")
        assert_one_line_error(result)
        assert result.stderr.decode() == f"vqcodec: error: {models} is in use by another run of vqcodec train or fit-prior\n"
        assert _folder_state(models) == held and not any(elsewhere.iterdir())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()

    others = ("import sys\nfrom vqcodec.runlock import folder_read_locked, lock_out\nfrom vqcodec.errors import VQCodecError\n"
              "with folder_read_locked(sys.argv[1]):\n    print('read')\n"
              "try:\n    lock_out(sys.argv[1])\nexcept VQCodecError as exc:\n    print(exc)\n")
    seen = []

    def others_while_coding(*args, **kwargs):
        seen.append(subprocess.run([sys.executable, "-c", others, str(models)], capture_output=True, cwd=REPO_ROOT,
                                   env=_base_environment()).stdout.decode())
        return [], []
    monkeypatch.setattr(priorfit_module, "collect_codes", others_while_coding)
    with pytest.raises(VQCodecError, match="no readable media"):
        priorfit_module.fit_prior_files(models / "mine.safetensors", [], out=elsewhere / "copy")
    assert seen == [f"read\n{models} is in use by another run of vqcodec train or fit-prior\n"]
    assert not (models / LOCK_NAME).exists() and _lock_is_free(models)


@pytest.mark.parametrize("tail, warning", [
    (b"\0\0\0\0\0\0\n", "1 line that is not a JSON record"),
    (b'{"step": 13, "val_lo\n\0\0\0\0\n', "2 lines that are not JSON records"),
    (b'{"step": 13, "val_lo\n[13]\n{"step": 14, "lo', "2 lines that are not JSON records and a partial record (16 bytes)"),
    (b"\n", "1 line that is not a JSON record"),
])
def test_resume_drops_whole_lines_at_the_logs_end_that_are_not_records_with_a_warning(trained, data_dir, tmp_path,
                                                                                      capsys, tail, warning):
    """A run stopped while writing the log can leave whole lines that are not JSON records at its end (a
    file system that kept the new length but not the bytes reads back zeros, ended by a later line's
    newline): the partial-record repair kept them, and the resumed log no longer parsed as JSON lines."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    whole = (out / "train_log.jsonl").read_bytes()
    (out / "train_log.jsonl").write_bytes(whole + tail)
    capsys.readouterr()
    train(data_dir, None, options(out, resume=True, max_steps=15, fit_prior=False))
    err = capsys.readouterr().err.splitlines()
    assert f"vqcodec: warning: {out / 'train_log.jsonl'} ended in {warning}, written as a run stopped: removed" in err, err
    assert len([line for line in err if "train_log.jsonl" in line]) == 1
    records = read_log(out)  # parses
    assert (out / "train_log.jsonl").read_bytes().startswith(whole) and records[-1]["step"] == 15
    assert [record["step"] for record in records] == [1, 5, 10, 12, 15]


def test_prior_fitting_codes_a_recording_of_more_channels_than_samples(codec, tmp_path, signal):
    """A file's audio is (channels, samples) whatever its shape: one of 4 channels of 2 samples was skipped as if it
    were an array given as (samples, channels)."""
    from vqcodec.priorfit import collect_codes

    soundfile.write(tmp_path / "a.wav", signal(4, 2, 16000).T, 16000, subtype="FLOAT")
    said = []
    planes, groups = collect_codes(codec, [tmp_path / "a.wav"], log=said.append)
    assert len(planes) == 4 and groups == [0] * 4 and not [line for line in said if "skipping" in line], said


def test_resuming_with_fewer_steps_than_the_checkpoint_holds_is_refused(trained, data_dir, tmp_path, cli):
    """--max-steps is the run's total: a --resume with fewer than the checkpoint's steps trained none and wrote the
    model again, 'after 12 steps', without a word (--max-steps 0 said it needed --init)."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    model = (out / "tiny.safetensors").read_bytes()
    with pytest.raises(VQCodecError, match=f"^max_steps is the run's total, and the checkpoint in {out} holds 12 steps: "
                                           "give max_steps=12 or more$"):
        train(data_dir, None, options(out, max_steps=5, resume=True))
    for steps in ("5", "0"):
        result = cli("train", data_dir, "--out", out, "--name", "tiny", "--resume", "--max-steps", steps)
        assert_one_line_error(result)
        assert "--max-steps is the run's total, and the checkpoint" in result.stderr.decode()
        assert "give --max-steps 12 or more" in result.stderr.decode()
    assert (out / "tiny.safetensors").read_bytes() == model


def test_fitting_a_prior_to_too_few_codes_to_hold_some_out_logs_no_empty_comparison():
    """With too few codes to hold any out, each level logged 'level 0: unigram ' (a comparison of no contexts,
    ending in a space) above the summary's '(too few codes to hold some out)'."""
    from vqcodec.prior import CodePrior

    said = []
    prior = CodePrior.fit([np.arange(8).reshape(2, 4) % 4], 4, "audio", chunk=500, log=said.append)
    assert said == [] and len(prior.levels) == 2


def test_training_files_none_of_which_decodes_leave_the_held_out_ones_to_train_on(tmp_path, signal, capsys):
    """Of a.wav and a damaged b.flac (whose header reads), a.wav was held out and b.flac alone left to train on:
    'no readable audio in the training folder', of a folder with a readable file."""
    folder = tmp_path / "data"
    folder.mkdir()
    soundfile.write(folder / "a.wav", signal(1, 8000, 8000).T, 8000)
    soundfile.write(folder / "b.flac", signal(1, 80000, 8000, seed=1).T, 8000)
    (folder / "b.flac").write_bytes((folder / "b.flac").read_bytes()[:30000])
    path = train(folder, CFG, options(tmp_path / "run", max_steps=2, fit_prior=False, quiet=False))
    assert json.loads(path.with_suffix(".json").read_text())["training"]["files"] == 1
    err = capsys.readouterr().err
    assert f"skipping {folder / 'b.flac'}: cannot read audio" in err
    assert "training tiny (audio at 8000 Hz) on 1 clip, 0.0 min; validation on the training file" in err


def test_fit_prior_refuses_a_codebook_too_large_for_a_prior_before_it_reads_the_folder(trained, tmp_path, capsys,
                                                                                       monkeypatch):
    """fit-prior read every file's header first (a skipping line for each it could not read), then refused."""
    from vqcodec import prior

    monkeypatch.setattr(prior, "MAX_CODEBOOK", 8)  # the tiny model's 16 entries: too many
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"not audio")
    code, err = run_in_process(["fit-prior", trained / "tiny.safetensors", folder, "--out", tmp_path / "copy"], capsys)
    assert code == 1 and err == ("vqcodec: error: a prior covers codebooks of at most 8 entries, not 16: this model's "
                                 "files can only be coded at fixed width\n"), err


def test_a_resumed_run_keeps_its_model_name_without_name(trained, data_dir, tmp_path, cli):
    """A --resume without --name named the model after the --out folder: a run started with --name tiny wrote
    run.safetensors beside tiny.safetensors, and -m of the folder then found two models."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    result = cli("train", data_dir, "--out", out, "--resume", "--max-steps", "13", "--no-prior", "--threads", "1",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["checkpoint.safetensors", "tiny.safetensors"]
    assert json.loads((out / "tiny.json").read_text())["training"]["steps"] == 13
    assert json.loads((out / "checkpoint.json").read_text())["name"] == "tiny"


def test_options_without_a_name_take_the_resumed_runs_else_the_out_folders_as_the_command_does(tmp_path,
                                                                                               monkeypatch):
    """The name of a run given none (the resumed run's, else --out's folder name; '.' and '/' refused) was the
    command's alone: TrainOptions required one. with_default_name sets it in a copy; check_options, which set it in
    the options it checked, leaves them as they are."""
    from vqcodec.trainoptions import check_options, with_default_name

    def named(given: TrainOptions) -> str:
        before = dataclasses.replace(given)
        check_options(given)
        name = with_default_name(given).name
        assert given == before
        return name

    out = tmp_path / "mine"
    out.mkdir()
    header = b'{"__metadata__": {"checkpoint": "{\\"name\\": \\"tiny\\"}"}}'  # the run's record names it
    (out / "checkpoint.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    for folder, resume, name, expected in ((out, True, None, "tiny"), (out, False, None, "mine"), (out, True, "x", "x"),
                                           (tmp_path / "new", True, None, "new")):  # no checkpoint: --resume says so
        assert named(TrainOptions(out=folder, name=name, max_steps=1, resume=resume)) == expected
    for folder in (Path("."), Path("/")):
        with pytest.raises(VQCodecError, match=f"^out {re.escape(str(folder))} has no folder name to name the model "
                                               f"after: pass name$"):
            named(TrainOptions(out=folder, max_minutes=1))
    monkeypatch.chdir(out)
    assert named(TrainOptions(out=Path("."), max_steps=1, resume=True)) == "tiny"  # the run in '.' names its model


def test_train_names_its_run_without_setting_the_name_of_the_options_it_is_given(tmp_path):
    """check_options set a None name in the options it checked: train and train_command set it in the caller's, so
    the same TrainOptions given again for another --out (or replaced with another out) named that model after the
    first folder."""
    from vqcodec.train import train_command

    given = TrainOptions(out=tmp_path / "first", max_steps=1)
    for run in (lambda: train(tmp_path / "no data", None, given), lambda: train_command(tmp_path / "no data", given)):
        with pytest.raises(VQCodecError, match="no data"):
            run()
        assert given.name is None


def test_a_skipping_or_warning_line_during_training_clears_the_step_line_on_a_terminal(monkeypatch):
    """A skipping line (the threads that make batches), a failed checkpoint's warning or a read warning
    started over the step line, and the end of the longer step line stayed visible after it."""
    import sys
    import warnings

    from vqcodec import cli as cli_module
    from vqcodec import data as data_module
    from vqcodec import train as train_module
    from vqcodec.errors import AudioReadWarning

    def fail():
        raise VQCodecError("cannot write run/checkpoint.json: No space left on device")

    def main(args, **options):
        train_module._progress("step 30 | loss 0.1234 (l1 0.100 mel 0.023) | val 0.2000 | perplexity 8", in_place=True)
        warnings.warn("a.mp3: the MP3 decoder passed over damage", AudioReadWarning)
        return 0

    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    step = "step 10 | loss 0.1234 (l1 0.100 mel 0.023) | val 0.2000 | perplexity 8 | codes in use 50%"
    train_module._progress(step, in_place=True)
    data_module._skip("a.wav", "gone")
    train_module._progress(step.replace("10", "20"), in_place=True)
    train_module._or_warn(fail, 20)
    monkeypatch.setattr(cli_module.cli, "main", main)
    assert cli_module.run([]) == 0
    train_module._progress("step 40", in_place=True)
    train_module._say("\nwrote run/run.safetensors")  # the last step line stays above the run's last lines
    assert stream.screen() == ["skipping a.wav: gone",
                               "vqcodec: warning: cannot write run/checkpoint.json: No space left on device (step 20); "
                               "training goes on",
                               "vqcodec: warning: a.mp3: the MP3 decoder passed over damage",
                               "step 40", "wrote run/run.safetensors", ""]


def test_a_codebook_too_large_for_a_prior_is_warned_of_before_training(data_dir, tmp_path, capsys):
    """The missing prior of codebooks over prior.MAX_CODEBOOK was said only once the run was over."""
    from vqcodec.prior import MAX_CODEBOOK

    cfg = dataclasses.replace(CFG, codebook_size=MAX_CODEBOOK + 1, num_codebooks=1)
    train(data_dir, cfg, options(tmp_path / "run", max_steps=1, quiet=False))
    lines = capsys.readouterr().err.splitlines()
    warning = (f"vqcodec: warning: no entropy-coding prior will be added: a prior covers codebooks of at most {MAX_CODEBOOK} "
               f"entries, not {MAX_CODEBOOK + 1}; files will use fixed-width coding (fit_prior=False says so)")
    assert warning in lines and lines.index(warning) < [line.startswith("training ") for line in lines].index(True)
    train(data_dir, cfg, options(tmp_path / "quiet", max_steps=1, quiet=False, fit_prior=False))
    assert "no entropy-coding prior" not in capsys.readouterr().err


def test_the_step_line_is_cut_to_the_terminals_width(monkeypatch):
    """A step line wider than the terminal (about 100 characters, on 80 columns) wrapped, and the carriage return
    that rewrites it goes back to the start of its last row only: each step left a row of the one before behind."""
    import fcntl
    import io
    import pty
    import struct
    import sys
    import termios

    from vqcodec import train as train_module

    step = "step 10 | loss 0.1234 (l1 0.100 mel 0.023) | val 0.2000 | perplexity 8 | codes in use 50% | 59m 30s left"
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    with open(terminal, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        train_module._progress(step, in_place=True)
        train_module._progress(step.replace("10", "20"), in_place=True)
        train_module._say("\nwrote run/run.safetensors")
    shown = terminal_shown(main)
    assert terminal_screen(shown) == [step.replace("10", "20")[:59], "wrote run/run.safetensors", ""]
    assert max(len(part) for line in shown.split("\n") for part in line.split("\r")) < 60
    logged = io.StringIO()  # a log keeps the whole line
    monkeypatch.setattr(sys, "stderr", logged)
    train_module._progress(step, in_place=True)
    assert logged.getvalue() == step + "\n"


def test_an_error_that_ends_training_clears_the_step_line_on_a_terminal(monkeypatch):
    """The error line (out of memory at a step, say) was written over the step line, whose end stayed visible."""
    import sys

    from vqcodec import cli as cli_module
    from vqcodec import train as train_module

    def main(args, **options):
        train_module._progress("step 10 | loss 0.1234 (l1 0.100 mel 0.023) | val 0.2000 | perplexity 8", in_place=True)
        raise VQCodecError("out of memory for batches of 64 crops")

    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(cli_module.cli, "main", main)
    assert cli_module.run([]) == 1
    assert stream.screen() == ["vqcodec: error: out of memory for batches of 64 crops", ""]
