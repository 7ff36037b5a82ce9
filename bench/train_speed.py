"""Training speed: seconds per step of `vqcodec train`, fp32 against bf16 autocast, or (with
--decoder-only) fine-tuning the whole model against `--decoder-only`.

    python bench/train_speed.py [--steps 30] [--runs 3] [--threads 1] [--out bench/out/train_speed.json]
    python bench/train_speed.py --decoder-only [--steps 20] [--out bench/out/train_decoder_only.json]

Runs the real training loop (vqcodec.train.train: data, forward, losses, backward, AdamW step,
codebook updates) on the shipped models' configs and the project's training folders, with the
default batch and crop (speech 16 x 8000 samples, images 12 x 128 x 128) and no prior fit: from
fresh weights for the precisions; from the shipped models (`--init`), in fp32, for --decoder-only.
Time per step is (time at the last step - time at step 1) / (steps - 1), taken from the training
log, whose clock leaves validation out; runs alternate between the two settings, and the table
gives the median.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import training_runs  # noqa: E402

COMPARISONS = {  # name: (the two settings, their TrainOptions, column titles)
    "precision": (("fp32", "bf16"), {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}},
                  ["fp32 s/step", "bf16 s/step", "bf16 speed-up"]),
    "decoder-only": (("whole", "decoder"),
                     {"whole": {"precision": "fp32"}, "decoder": {"precision": "fp32", "decoder_only": True}},
                     ["whole model s/step", "--decoder-only s/step", "speed-up"]),
}


def seconds_per_step(kind: str, steps: int, threads: int, **options) -> float:
    with tempfile.TemporaryDirectory() as out:
        training_runs.train_briefly(kind, Path(out), steps, threads, **options)
        return training_runs.seconds_per_step(Path(out))


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the seconds per step of vqcodec train in fp32 against bf16 autocast or, with "
               "--decoder-only, of fine-tuning the whole model against the decoder alone.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=common.at_least(2), default=30,
                        help="training steps of each run, at least 2 (default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="runs of each setting, alternating their order; the table gives the median "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=common.positive_int, default=1, help="torch CPU threads of each run (default: %(default)s)")
    parser.add_argument("--kinds", default="audio,image",
                        help="what to train, comma-separated: audio (speech16k's config) and/or image "
                             "(default: %(default)s)")
    parser.add_argument("--decoder-only", action="store_true", help="compare --decoder-only with the whole model")
    parser.add_argument("--out", default=None, help="default: bench/out/train_speed.json (train_decoder_only.json)")
    args = parser.parse_args()
    comparison = "decoder-only" if args.decoder_only else "precision"
    settings, options, titles = COMPARISONS[comparison]
    out = args.out if args.out is not None else \
        "bench/out/train_decoder_only.json" if args.decoder_only else "bench/out/train_speed.json"

    rows, results = [], {}
    for kind in training_runs.kinds_named(args.kinds):
        init = {"init": training_runs.SETUPS[kind][0]} if args.decoder_only else {}
        times = training_runs.alternating_runs(
            kind, settings, args.runs,
            lambda setting: seconds_per_step(kind, args.steps, args.threads, **options[setting], **init))
        first, second = (statistics.median(times[setting]) for setting in settings)
        results[kind] = {"seconds_per_step": times, "median": dict(zip(settings, (first, second))),
                         "speedup": first / second}
        rows.append([training_runs.SETUPS[kind][0], training_runs.batch_shape(kind), first, second, first / second])

    print(common.markdown_table(["model", "batch", *titles], rows, digits=[0, 0, 3, 3, 2]))
    if out:
        common.save_json(out, {"machine": common.machine_info(args.threads), "command": common.repro_command(),
                               "comparison": comparison, "steps": args.steps, "runs": args.runs, "results": results})


if __name__ == "__main__":
    main()
