"""Training speed of `vqcodec train --init MODEL --decoder-only` against fine-tuning the whole model.

    python bench/train_decoder_only.py [--steps 20] [--runs 3] [--threads 1] [--out bench/out/train_decoder_only.json]

Runs the real training loop from each shipped model (`--init`), with the default CPU batch and crop
(speech 16 x 8000 samples, images 12 x 128 x 128), in fp32 and with no prior fit: once training every
weight, once the decoder alone (encoder and codebooks frozen). Time per step is taken from the
training log, whose clock leaves validation out; runs alternate between the two, and the table gives
the median.
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


def seconds_per_step(kind: str, decoder_only: bool, steps: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        training_runs.train_briefly(kind, Path(out), steps, threads, precision="fp32",
                                    init=training_runs.SETUPS[kind][0], decoder_only=decoder_only)
        return training_runs.seconds_per_step(Path(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default="audio,image")
    parser.add_argument("--out", default="bench/out/train_decoder_only.json")
    args = parser.parse_args()

    rows, results = [], {}
    for kind in args.kinds.split(","):
        times = training_runs.alternating_runs(
            kind, ("whole", "decoder"), args.runs, lambda part: seconds_per_step(kind, part == "decoder", args.steps,
                                                                                 args.threads))
        whole, decoder = statistics.median(times["whole"]), statistics.median(times["decoder"])
        results[kind] = {"seconds_per_step": times, "median": {"whole": whole, "decoder": decoder}}
        rows.append([training_runs.SETUPS[kind][0], training_runs.batch_shape(kind), whole, decoder, whole / decoder])

    print(common.markdown_table(["model", "batch", "whole model s/step", "--decoder-only s/step", "speed-up"], rows,
                                digits=[0, 0, 3, 3, 2]))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(args.threads), "command": common.repro_command(),
                                     "steps": args.steps, "runs": args.runs, "results": results})


if __name__ == "__main__":
    main()
