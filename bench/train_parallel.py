"""Data-parallel training speed: seconds per step of the same training run in one process and split
over several torchrun processes, on the CPU.

    python bench/train_parallel.py [--processes 1,2] [--threads 2] [--steps 12] [--runs 3] [--out bench/out/train_parallel.json]

Every run trains the shipped model's config from fresh weights on the project's training folder,
with the same batch over all processes (speech 16 x 8000 samples, images 12 x 128 x 128) and the
same total of CPU threads, split evenly between the processes (1 process x 2 threads against
2 processes x 1 thread). Time per step is (time at the last step - time at step 1) / (steps - 1),
from the training log of the first process, whose clock leaves validation out; for several
processes it includes the exchange of gradients and codebook statistics through Gloo. Runs alternate the
order of the settings and the table gives the median.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import training_runs  # noqa: E402
from training_runs import SETUPS  # noqa: E402

def seconds_per_step(kind: str, processes: int, threads: int, steps: int, precision: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [__file__, "--worker", kind, "--worker-out", out, "--steps", str(steps),
                   "--threads", str(threads // processes), "--precision", precision]
        if processes > 1:
            command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *command]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads // processes)}
        subprocess.run([sys.executable, *command], check=True, env=env, stdout=subprocess.DEVNULL)
        return training_runs.seconds_per_step(Path(out))


def process_counts(text: str) -> list[int]:
    """--processes: process counts, comma-separated, each at least 1."""
    return [common.positive_int(count) for count in text.split(",")]


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the seconds per step of the same training run in one process and split over several "
               "torchrun processes on the CPU.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", type=process_counts,
                        help="process counts to compare, comma-separated; 1 is a plain process, more are "
                             "torchrun processes; --threads must split evenly over each (default: %(default)s)")
    parser.add_argument("--threads", type=common.positive_int, default=2,
                        help="CPU threads of a run, over all its processes (default: %(default)s)")
    parser.add_argument("--steps", type=common.at_least(2), default=12,
                        help="training steps of each run, at least 2 (default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="runs of each process count, alternating their order; the table gives the median "
                             "(default: %(default)s)")
    parser.add_argument("--kinds", default="audio,image",
                        help="what to train, comma-separated: audio (speech16k's config) and/or image "
                             "(default: %(default)s)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="training precision, as vqcodec train --precision: bf16 autocast, fp32, or auto "
                             "(bf16 on GPUs and on CPUs with AMX, else fp32) (default: %(default)s)")
    parser.add_argument("--out", default="bench/out/train_parallel.json",
                        help="JSON file of every run ('' for none; default: %(default)s)")
    parser.add_argument("--worker", choices=sorted(SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        training_runs.train_briefly(args.worker, Path(args.worker_out), args.steps, args.threads, precision=args.precision)
        return

    counts = args.processes
    if any(args.threads % p for p in counts):
        raise SystemExit(f"--threads {args.threads} must split evenly over every process count in "
                         f"{','.join(map(str, counts))}")
    rows, results = [], {}
    for kind in training_runs.kinds_named(args.kinds):
        times = training_runs.alternating_runs(
            kind, counts, args.runs, lambda processes: seconds_per_step(kind, processes, args.threads, args.steps,
                                                                        args.precision))
        medians = {p: statistics.median(t) for p, t in times.items()}
        results[kind] = {"seconds_per_step": {str(p): t for p, t in times.items()},
                         "median": {str(p): m for p, m in medians.items()}}
        for processes in counts:
            rows.append([SETUPS[kind][0], training_runs.batch_shape(kind), f"{processes} x {args.threads // processes}",
                         medians[processes], medians[counts[0]] / medians[processes]])

    print(common.markdown_table(["model", "batch (all processes)", "processes x threads", "s/step",
                                 f"speed-up vs {counts[0]} process{'es' if counts[0] > 1 else ''}"], rows,
                                digits=[0, 0, 0, 3, 2]))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(args.threads), "command": common.repro_command(),
                                     "steps": args.steps, "runs": args.runs, "results": results})


if __name__ == "__main__":
    main()
