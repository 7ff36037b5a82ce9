"""Training data held in memory against crops read from disk: peak memory and seconds per step.

    python bench/train_data.py [--steps 12] [--runs 3] [--threads 1] [--out bench/out/train_data.json]

Every run trains the shipped model's config from fresh weights on the project's training folder
(speech: 52 minutes at 16 kHz; photos: 69 images) with the default CPU batch and crop, once with the
decoded folder in memory (the default below 2 GiB) and once with `--stream-data`, where each crop is
read from its file when a batch needs it, in worker threads while the step before runs. Peak memory
is the training process's maximum resident set size (getrusage), so it includes torch itself.
Time per step is (time at the last step - time at step 1) / (steps - 1) from the training log,
whose clock leaves validation out.
Runs alternate the order of the two settings; the table gives medians.
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

def measure(kind: str, stream: bool, steps: int, threads: int) -> tuple[float, float]:
    """Seconds per step and peak resident memory (MiB) of one training run in its own process."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--worker", kind, "--worker-out", out, "--steps", str(steps),
                   "--threads", str(threads)] + (["--stream"] if stream else [])
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            raise SystemExit(f"training run failed: {' '.join(command)}")
        return training_runs.seconds_per_step(Path(out)), usage.ru_maxrss / 1024


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the peak memory and seconds per training step with the training folder held in memory "
               "against crops read from disk (--stream-data).")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=common.at_least(2), default=12,
                        help="training steps of each run, at least 2 (default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="runs of each setting, alternating their order; the table gives the medians "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=common.positive_int, default=1, help="torch CPU threads of each run (default: %(default)s)")
    parser.add_argument("--kinds", default="audio,image",
                        help="what to train, comma-separated: audio (speech16k's config) and/or image "
                             "(default: %(default)s)")
    parser.add_argument("--out", default="bench/out/train_data.json",
                        help="JSON file of every run ('' for none; default: %(default)s)")
    parser.add_argument("--worker", choices=sorted(SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        training_runs.train_briefly(args.worker, Path(args.worker_out), args.steps, args.threads, stream_data=args.stream)
        return

    rows, results = [], {}
    for kind in training_runs.kinds_named(args.kinds):
        runs: dict[str, list[tuple[float, float]]] = {"memory": [], "disk": []}
        for run in range(args.runs):
            for where in ("memory", "disk") if run % 2 == 0 else ("disk", "memory"):
                runs[where].append(measure(kind, where == "disk", args.steps, args.threads))
                print(f"{kind} run {run + 1}, {where}: {runs[where][-1][0]:.3f} s/step, {runs[where][-1][1]:.0f} MiB",
                      file=sys.stderr, flush=True)
        medians = {where: (statistics.median(s for s, _ in r), statistics.median(m for _, m in r))
                   for where, r in runs.items()}
        results[kind] = {"runs": runs, "median": medians}
        for where, label in (("memory", "in memory"), ("disk", "from disk (--stream-data)")):
            seconds, mib = medians[where]
            rows.append([SETUPS[kind][0], label, mib, seconds, seconds / medians["memory"][0]])

    print(common.markdown_table(["model", "training crops", "peak memory MiB", "s/step", "time vs in memory"], rows,
                                digits=[0, 0, 0, 3, 2]))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(args.threads), "command": common.repro_command(),
                                     "steps": args.steps, "runs": args.runs, "results": results})


if __name__ == "__main__":
    main()
