"""Data-parallel training with torchrun on the CPU (Gloo): two processes, each with half of every batch,
must take the steps one process takes on the whole batches, and must stay identical to each other."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import pytest

import parallel_steps
from test_train import CFG, CROP, _folder_state, data_dir, lock_holder, run_in_process, trained  # noqa: F401  (fixtures)
from vqcodec import Codec

TESTS = Path(__file__).resolve().parent


def torchrun(*args: str, cwd: Path | None = None, launcher: tuple[str, ...] = (), timeout: float = 300
             ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *launcher, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def steps_together(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """tests/parallel_steps.py under torchrun, once for the tests of its steps and of its process group."""
    together = tmp_path_factory.mktemp("together")
    return together, torchrun(str(TESTS / "parallel_steps.py"), str(together))


def test_two_processes_take_the_steps_of_one_process_on_the_whole_batch(steps_together, tmp_path):
    together, result = steps_together
    alone = tmp_path / "alone"
    alone.mkdir()
    with torch.random.fork_rng():  # one process, this one: the script seeds torch's generator
        parallel_steps.main(alone)
    assert result.returncode == 0, result.stderr[-3000:]

    for stage in ("sgd", "adam", "adversarial"):
        first, second = (load_file(str(together / f"rank{r}_{stage}.safetensors")) for r in (0, 1))
        for name in first:  # weights, codebooks, EMA statistics, idle counts, the discriminator
            assert torch.equal(first[name], second[name]), f"{stage}: the processes' {name} differ"
    one = load_file(str(alone / "rank0_sgd.safetensors"))
    two = load_file(str(together / "rank0_sgd.safetensors"))
    assert one.keys() == two.keys()
    for name in one:
        if one[name].is_floating_point():
            assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-5), name
        else:
            assert torch.equal(one[name], two[name]), name
    # the steps did something: the codebooks moved from their k-means start and the weights trained
    adam = load_file(str(together / "rank0_adam.safetensors"))
    assert not torch.equal(adam["model.quantizer.layers.0.codebook"], two["model.quantizer.layers.0.codebook"])
    assert not torch.equal(adam["model.decoder.net.0.weight"], two["model.decoder.net.0.weight"])
    assert any(name.startswith("disc.") for name in load_file(str(together / "rank0_adversarial.safetensors")))


def test_train_command_under_torchrun_writes_one_model_that_resumes_in_one_process(data_dir, tmp_path, capsys):  # noqa: F811
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**CFG.__dict__, "strides": list(CFG.strides)}))
    out = tmp_path / "run"
    common = ["--out", str(out), "--config", str(config), "--crop", str(CROP), "--device", "cpu", "--no-prior"]
    result = torchrun("-m", "vqcodec", "train", str(data_dir), "--max-steps", "4", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch 32; 2 processes (16 examples each)" in result.stderr  # the CPU default of 16 per process
    assert result.stderr.count("wrote ") == 1  # only the first process writes
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 4
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 4]  # 4: the last step
    assert all(0 < record["codes_in_use"] <= 1 and np.isfinite(record["loss"]) for record in log)

    codec = Codec.load(str(out / "run.safetensors"))
    audio = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    decoded, rate = codec.decode_audio(codec.encode_audio(audio, 8000, 2))
    assert rate == 8000 and decoded.shape[-1] == 4000

    code, err = run_in_process(["train", str(data_dir), "--resume", "--max-steps", "6", *common], capsys)
    assert code == 0, err[-3000:]
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 6


def test_stop_frees_the_process_group_made_before_the_first_optimiser(steps_together):
    """torch._dynamo, which the first optimiser imports, imports torch.distributed.nn.functional, whose
    functions hold `group.WORLD` as a default argument: imported after the group was made, they kept it (and
    Gloo's worker threads) past destroy_process_group into the interpreter's exit, where a worker dropping
    its last collective's tensor took the GIL of an interpreter being finalised and the process aborted
    ("terminate called without an active exception", now and then on a busy machine). Each process of
    parallel_steps.py makes its optimisers after parallel.start and records whether the group outlived stop."""
    together, result = steps_together
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        record = json.loads((together / f"rank{rank}_group.json").read_text())
        assert record == {"dynamo_imported_after_the_group": True, "group_outlived_stop": False}, (rank, record)


def test_a_batch_that_does_not_split_over_the_processes_is_refused(data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    result = torchrun("-m", "vqcodec", "train", str(data_dir), "--out", str(out), "--batch-size", "3",
                      "--max-steps", "2", "--device", "cpu", "--no-prior")
    assert result.returncode != 0
    assert "--batch-size 3 does not split evenly over 2 processes" in result.stderr
    assert not (out / "checkpoint.safetensors").exists()


def test_every_process_stops_with_the_first_ones_refusal_of_an_out_folder_in_use(trained, data_dir, tmp_path):  # noqa: F811
    """Only the first process takes the --out folder's lock: where another run held it, the first one stopped
    before joining the others, which waited for it in torch.distributed's rendezvous until torchrun killed
    them (or for good, where no torchrun watches them), without a word."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    holder = lock_holder(out)
    try:
        held = _folder_state(out)
        result, errors = torchrun_apart(tmp_path / "logs", "-m", "vqcodec", "train", str(data_dir), "--out", str(out),
                                        "--name", "tiny", "--resume", "--max-steps", "14", "--device", "cpu", "--no-prior")
        assert _folder_state(out) == held
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    refusal = f"vqcodec: error: {out} is in use by another run of vqcodec train or fit-prior\n"
    assert errors == {rank: refusal for rank in (0, 1)}, errors
    assert_all_stopped(result)


def torchrun_apart(logs: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    """torchrun, with each process's stderr in a file of its own (returned by rank); torchrun stops the others
    5 s after one fails, so that one left waiting is killed rather than waited for."""
    result = torchrun(*args, launcher=("--log-dir", str(logs), "--redirects", "3", "--monitor-interval", "5"), timeout=120)
    return result, {int(path.parent.name): path.read_text() for path in logs.rglob("stderr.log")}


def assert_all_stopped(result: subprocess.CompletedProcess) -> None:
    """Every process ended with status 1, none killed by torchrun."""
    assert result.returncode != 0
    assert "exitcode: 1" in result.stderr and "exitcode: -" not in result.stderr, result.stderr[-3000:]


def assert_ends_in(errors: dict[int, str], line: str) -> None:
    """Each process's stderr ends in `line`, after progress and `skipping` lines alone."""
    assert errors.keys() == {0, 1}, errors
    for text in errors.values():
        *earlier, last = text.splitlines(keepends=True)
        assert last == f"vqcodec: error: {line}\n", errors
        assert all(lines.startswith(("training ", "step ", "skipping ")) for lines in earlier), errors


def write_noise(path: Path, samples: int = 8000, nan_at: int | None = None) -> None:
    import soundfile

    noise = (np.random.default_rng(len(path.name)).standard_normal(samples) * 0.1).astype(np.float32)
    if nan_at is not None:
        noise[nan_at] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, noise, 8000, subtype="FLOAT")


def test_every_process_stops_with_the_first_ones_failure_to_read_the_validation_files(tmp_path):
    """Only the first process reads the held-out files: where it could not, the others waited for it at their
    next exchange until it was gone, and died with torch.distributed's traceback. The held-out file decodes when
    the files are split and is changed (to samples that are not numbers) just before the first process reads it:
    a held-out file that does not decode at the split is not held out (data.split_files)."""
    data = tmp_path / "data"
    for name in ("a.wav", "b.wav", "c.wav"):
        write_noise(data / name)  # a.wav is held out
    changed = tmp_path / "changed.wav"
    write_noise(changed, nan_at=100)
    launcher = tmp_path / "held_out_changes.py"
    launcher.write_text(
        "import os, sys\n"
        "import vqcodec.train as train\n"
        "from vqcodec.cli import main\n"
        "crops = train.AudioCrops\n"
        "def changed_before_read(files, *args, role='training', **kwargs):\n"
        "    if role == 'held-out':\n"
        f"        os.replace({str(changed)!r}, files[0])\n"
        "    return crops(files, *args, role=role, **kwargs)\n"
        "train.AudioCrops = changed_before_read\n"
        "sys.argv[0] = 'vqcodec'\n"
        "main()\n")
    result, errors = torchrun_apart(tmp_path / "logs", str(launcher), "train", str(data), "--out",
                                    str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "2", "--crop", "1024",
                                    "--device", "cpu", "--no-prior")
    assert_ends_in(errors, f"no readable audio in the held-out file {data / 'a.wav'}")
    assert_all_stopped(result)


def test_every_process_stops_with_a_failure_to_read_a_training_file_in_one_of_them(tmp_path):
    """A process whose share of a batch could not be read (a file changed while a run reads from disk) stopped
    alone, and the others waited for it in the step's exchanges."""
    data, out = tmp_path / "data", tmp_path / "run"
    write_noise(data / "a.wav")  # held out: b.wav alone trains
    write_noise(data / "b.wav", 40000)
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log-dir",
               str(logs), "--redirects", "3", "--monitor-interval", "5", "-m", "vqcodec", "train", str(data), "--out",
               str(out), "--max-steps", "100000", "--batch-size", "2", "--crop", "1024", "--stream-data", "--device",
               "cpu", "--no-prior"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}) \
            as launched:
        try:
            while not (out / "train_log.jsonl").exists() and launched.poll() is None:
                time.sleep(0.05)
            # one crop in 38 covers the sample: the processes, which draw their own crops, come to it at different steps
            write_noise(tmp_path / "b.wav", 40000, nan_at=20000)
            (tmp_path / "b.wav").replace(data / "b.wav")
            _, stderr = launched.communicate(timeout=120)
        finally:
            launched.kill()
    errors = {int(path.parent.name): path.read_text() for path in logs.rglob("stderr.log")}
    assert_ends_in(errors, f"the training file could not be read ({data / 'b.wav'}: samples that are not finite)")
    assert_all_stopped(subprocess.CompletedProcess(command, launched.returncode, "", stderr))


def test_a_process_that_fails_before_the_others_join_has_them_stopped_at_once(tmp_path):
    """One process that fails before joining (its GPU, its environment) leaves the others waiting in the
    rendezvous: torchrun's SIGTERM, which they could not handle there, ended them only with its SIGKILL 30 s later."""
    script = tmp_path / "rank_1_without_a_port.sh"
    script.write_text(f'#!/bin/sh\n[ "$RANK" = 1 ] && export MASTER_PORT=x\nexec {sys.executable} -m vqcodec train "$@"\n')
    script.chmod(0o755)
    write_noise(tmp_path / "data" / "a.wav")
    logs = tmp_path / "logs"
    result = torchrun(str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--max-steps", "2", "--device", "cpu",
                      "--no-prior", launcher=("--log-dir", str(logs), "--redirects", "3", "--no-python", str(script)), timeout=120)
    errors = {int(path.parent.name): path.read_text() for path in logs.rglob("stderr.log")}
    assert errors == {0: "", 1: "vqcodec: error: the environment variable MASTER_PORT is 'x', not a whole number\n"}
    assert result.returncode != 0 and "exitcode  : -15" in result.stderr, result.stderr[-3000:]
    assert "SIGKILL" not in result.stderr and not (tmp_path / "run").exists()


def test_every_process_stops_with_the_first_ones_refusal_to_write_a_model(data_dir, tmp_path):  # noqa: F811
    """Only the first process writes the model: where it refused to (no step ended within --max-minutes), the
    others had ended as if it was written."""
    result, errors = torchrun_apart(tmp_path / "logs", "-m", "vqcodec", "train", str(data_dir), "--out",
                                    str(tmp_path / "run"), "--max-minutes", "0.000001", "--batch-size", "2", "--crop",
                                    "1024", "--device", "cpu", "--no-prior")
    assert_ends_in(errors, "no training step ended within --max-minutes: no model written (give it more time)")
    assert_all_stopped(result)


def test_the_processes_on_this_machine_are_torchruns_local_world_size(monkeypatch):
    from vqcodec import parallel
    from vqcodec.errors import VQCodecError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert parallel.local_processes() == 1  # not under torchrun
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert parallel.local_processes() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert parallel.local_processes() == 8  # no more than the run's
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert parallel.local_processes() == 1  # another launcher: each process's share alone, as before
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "x")
    with pytest.raises(VQCodecError, match="^the environment variable LOCAL_WORLD_SIZE is 'x', not a whole number$"):
        parallel.local_processes()


@pytest.mark.parametrize("environment, message", [
    ({"WORLD_SIZE": "two"}, "the environment variable WORLD_SIZE is 'two', not a whole number"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is 2 but RANK is not set: start the processes with torchrun"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE is 2 but MASTER_ADDR is not set"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "x"},
     "the environment variable MASTER_PORT is 'x'"),
    # a rank outside the group waited for the others for good
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "RANK is 2, not one of the 2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "PORT IN USE"},
     "cannot join the other training processes"),
])
def test_a_torchrun_environment_set_wrongly_is_refused_in_one_line(data_dir, tmp_path, capsys, monkeypatch,  # noqa: F811
                                                                    environment, message):
    """Each was a traceback from int() or torch.distributed's rendezvous."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, str(taken.getsockname()[1]) if value == "PORT IN USE" else value)
        out = tmp_path / "run"
        code, err = run_in_process(["train", data_dir, "--out", out, "--max-steps", "1", "--batch-size", "2",
                                    "--device", "cpu", "--no-prior"], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not out.exists()
