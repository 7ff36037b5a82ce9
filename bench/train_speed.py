"""Training speed: seconds per step of `vqcodec train` in fp32 and under bf16 autocast.

    python bench/train_speed.py [--steps 30] [--runs 3] [--threads 1] [--out bench/out/train_speed.json]

Runs the real training loop (vqcodec.train.train: data, forward, losses, backward, AdamW step,
codebook updates) on the shipped models' configs and the project's training folders, with the
default batch and crop (speech 16 x 8000 samples, images 12 x 128 x 128), from fresh weights and
with no prior fit. Time per step is (time at the last step - time at step 1) / (steps - 1), taken
from the training log, whose clock leaves validation out; runs alternate between the precisions, and the table gives the median.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import training_runs  # noqa: E402



def seconds_per_step(kind: str, precision: str, steps: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        training_runs.train_briefly(kind, Path(out), steps, threads, precision=precision)
        return training_runs.seconds_per_step(Path(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default="audio,image")
    parser.add_argument("--out", default="bench/out/train_speed.json")
    args = parser.parse_args()

    rows, results = [], {}
    for kind in args.kinds.split(","):
        times = training_runs.alternating_runs(
            kind, ("fp32", "bf16"), args.runs, lambda precision: seconds_per_step(kind, precision, args.steps, args.threads))
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        results[kind] = {"seconds_per_step": times, "median": {"fp32": fp32, "bf16": bf16}, "speedup": fp32 / bf16}
        rows.append([training_runs.SETUPS[kind][0], training_runs.batch_shape(kind), fp32, bf16, fp32 / bf16])

    print(common.markdown_table(["model", "batch", "fp32 s/step", "bf16 s/step", "bf16 speed-up"], rows,
                                digits=[0, 0, 3, 3, 2]))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(args.threads), "command": common.repro_command(),
                                     "steps": args.steps, "runs": args.runs, "results": results})


if __name__ == "__main__":
    main()
