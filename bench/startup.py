"""Latency of one command on a short input: `vqcodec encode` and `decode` of a few seconds of speech or a small image.

    python bench/startup.py [--cases import,load-speech,load-image,encode-speech,decode-speech,encode-image,decode-image]
                            [--runs 5] [--threads N] [--source DIR ...] [--out bench/out/startup.json]

Each case is the command line as a user runs it, in a fresh process (`python -m vqcodec ...`), timed from
start to exit (wall clock), `--runs` times for each `--source` in turn, the sources alternating run by run so
that a busy machine slows them alike, after one untimed run of each (which writes the modules' bytecode, as
installing the package does, even under PYTHONDONTWRITEBYTECODE, and reads the files into memory). The
inputs are the test samples (tests/data/speech.flac, 3.5 s of speech, and tests/data/photo.png) and the
`.vq` files the first source encodes of them:

- `import`: `python -c "import vqcodec.codec"`, the start-up every coding command pays (torch most of it).
- `load-speech`, `load-image`: `Codec.load` of speech16k or the image model, timed inside the process once
  vqcodec is imported (the process's wall time would be mostly the import): the model's part of every command.
- `encode-speech`, `decode-speech`: speech16k, default settings, FLAC to `.vq` and `.vq` to WAV.
- `encode-image`, `decode-image`: the image model, PNG to `.vq` and `.vq` to PNG.

The table gives the median seconds, the range, the median CPU seconds of the process (user and system, all
its threads: less shaken by other work on the machine than the wall time, though a thread waiting on a busy
pool spins some of it; for `load-*`, the whole process's, its import included), and whether every run of every
source wrote the same bytes (SHA-256 of the output file). `--threads N` passes `--threads N` to the commands,
and sets torch's threads for `load-*` (default none: torch's default, as a user gets it). `--source DIR` runs
the vqcodec package found in DIR instead of this checkout (a `git worktree` of an earlier commit); given more
than once, each is measured in the same run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from memory import source_label  # noqa: E402

SAMPLES = common.REPO_ROOT / "tests" / "data"
# load-*: the seconds Codec.load takes, printed by the process itself
LOAD = ("import sys, time, torch; import vqcodec.codec; int(sys.argv[2]) and torch.set_num_threads(int(sys.argv[2])); "
        "start = time.perf_counter(); vqcodec.codec.Codec.load(sys.argv[1]); print('SECONDS', time.perf_counter() - start)")
CASES = ("import", "load-speech", "load-image", "encode-speech", "decode-speech", "encode-image", "decode-image")


def command_of(case: str, folder: Path, threads: int | None) -> tuple[list[str], Path | None]:
    """The argument list of `case` and the file it writes (None for `import`)."""
    if case == "import":
        return [sys.executable, "-c", "import vqcodec.codec"], None
    if case.startswith("load-"):
        return [sys.executable, "-c", LOAD, "speech16k" if case == "load-speech" else "image", str(threads or 0)], None
    action, media = case.split("-")
    source = {("encode", "speech"): SAMPLES / "speech.flac", ("encode", "image"): SAMPLES / "photo.png",
              ("decode", "speech"): folder / "speech.vq", ("decode", "image"): folder / "image.vq"}[action, media]
    out = folder / f"out-{case}{'.vq' if action == 'encode' else '.wav' if media == 'speech' else '.png'}"
    extra = ["--threads", str(threads)] if threads else []
    return [sys.executable, "-m", "vqcodec", action, str(source), str(out), "--force", *extra], out


def cpu_seconds_of_children() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed_run(command: list[str], out: Path | None, source: Path) -> tuple[float, float, str]:
    """Wall seconds of one run of `command` with the vqcodec package of `source` (those it prints on a line
    `SECONDS S`, where it times itself), its CPU seconds (user and system, all its threads) and its output's
    SHA-256."""
    env = dict(os.environ, PYTHONPATH=str(source))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode: compiling is no part of a run
    start, cpu = time.perf_counter(), cpu_seconds_of_children()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=source)
    seconds, cpu = time.perf_counter() - start, cpu_seconds_of_children() - cpu
    if result.returncode != 0:
        sys.exit(f"startup.py: {' '.join(command[1:])} with {source} failed: {result.stderr[-800:]}")
    timed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("SECONDS ")]
    seconds = float(timed[-1]) if timed else seconds
    return seconds, cpu, hashlib.sha256(out.read_bytes()).hexdigest() if out else ""


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the wall time of `vqcodec encode` and `decode` of a short speech file and a small image, "
               "each in a fresh process, for one or more vqcodec sources in the same run, and whether their "
               "outputs are the same.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--cases", default=",".join(CASES), type=common.case_list(CASES),
                        help=f"What to measure, comma-separated, of {', '.join(CASES)} (default all).")
    parser.add_argument("--runs", type=common.positive_int, default=5,
                        help="Fresh processes per case and source; the table gives the medians (default 5).")
    parser.add_argument("--threads", type=common.positive_int, default=None,
                        help="--threads N for the commands (default none: torch's default).")
    common.add_source_option(parser)
    parser.add_argument("--out", default="bench/out/startup.json",
                        help="JSON file of every row, '' for none (default bench/out/startup.json).")
    args = parser.parse_args()
    sources = [Path(s).resolve() for s in (args.source or [str(common.REPO_ROOT)])]
    labels = [source_label(source) for source in sources]
    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for media, sample in (("speech", "speech.flac"), ("image", "photo.png")):  # what the decode cases read
            if f"decode-{media}" in args.cases:
                subprocess.run([sys.executable, "-m", "vqcodec", "encode", str(SAMPLES / sample),
                                str(folder / f"{media}.vq")], check=True, cwd=sources[0],
                               env=dict(os.environ, PYTHONPATH=str(sources[0])))
        for case in args.cases:
            command, out = command_of(case, folder, args.threads)
            measured = {label: [] for label in labels}
            for source in sources:  # untimed: writes the bytecode, reads the files into the page cache
                timed_run(command, out, source)
            for _ in range(args.runs):
                for source, label in zip(sources, labels):
                    seconds, cpu, digest = timed_run(command, out, source)
                    measured[label].append((seconds, cpu, digest))
                    print(f"  {case}, {label}: {seconds:.2f} s, {cpu:.2f} s CPU", file=sys.stderr, flush=True)
            first = measured[labels[0]][0][2]
            for label in labels:
                seconds = sorted(s for s, _, _ in measured[label])
                rows.append({"case": case, "source": label, "seconds": statistics.median(seconds),
                             "all_seconds": seconds, "cpu_seconds": statistics.median(c for _, c, _ in measured[label]),
                             "sha256": measured[label][0][2],
                             "same": all(digest == first for _, _, digest in measured[label])})
    print(common.markdown_table(
        ["case", "code", "seconds (median)", "range", "CPU seconds (median)", "same output"],
        [[r["case"], r["source"], r["seconds"], f"{r['all_seconds'][0]:.2f}–{r['all_seconds'][-1]:.2f}",
          r["cpu_seconds"], "yes" if r["same"] else "NO"] for r in rows], digits=2))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=args.threads),
                                    "command": common.repro_command(),
                                    "sources": [str(source) for source in sources], "rows": rows})


if __name__ == "__main__":
    main()
