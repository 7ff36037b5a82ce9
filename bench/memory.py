"""Peak memory of `vqcodec encode` and `decode` on long speech: does an hour need more than a minute?

    python bench/memory.py [--minutes 1,60] [--runs 3] [--model speech16k] [-q 8] [--source DIR] [--out bench/out/memory.json]

Recordings of the speech dev set are joined, end to end and repeated, into 16 kHz mono 16-bit WAV
files of each length. Each is then coded by the command line in a fresh process, four ways:
file to file and stdin to stdout, encoding and decoding, `--runs` times. The table gives the
median over the runs of each process's peak resident memory (ru_maxrss), its range, and the
growth of the median over the shortest length. The peak of one and the same run varies by tens
of MiB from run to run (the allocator's luck with the networks' large temporaries), hence the
median. `--source DIR` runs the
vqcodec package found in DIR instead (for example a `git worktree` of an earlier commit).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data" / "speech" / "dev"
PEAK_RSS = """
import resource, subprocess, sys
with open(sys.argv[1], "rb") as stdin, open(sys.argv[2], "wb") as stdout:
    code = subprocess.run([sys.executable, "-m", "vqcodec", *sys.argv[3:]], stdin=stdin, stdout=stdout).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def speech_of_length(files: list[Path], seconds: int, rate: int) -> np.ndarray:
    from vqcodec.io import read_audio

    pieces, total = [], 0
    while total < seconds * rate:
        for path in files:
            audio = read_audio(path, rate)[0].mean(axis=0)
            pieces.append(audio)
            total += audio.size
            if total >= seconds * rate:
                break
    return np.concatenate(pieces)[:seconds * rate]


def peak_rss(stdin: Path, stdout: Path, args: list[str], source: Path) -> tuple[int, float]:
    """(peak resident bytes, seconds) of `python -m vqcodec ARGS`, run from `source`."""
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS="1")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(stdin), str(stdout), *args], capture_output=True,
                            env=env, cwd=source)
    seconds = time.monotonic() - start
    if result.returncode != 0 or not result.stdout.split() or result.stdout.split()[0] != b"0":
        sys.exit(f"memory.py: vqcodec {' '.join(args)} failed: {result.stderr.decode()[-500:]}")
    return int(result.stdout.split()[1]), seconds


def _minute_list(text: str) -> list[int]:
    try:
        return [common.positive_int(m) for m in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a list of whole minutes, each at least 1: {text!r}") from None


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the peak memory of vqcodec encode and decode on long speech recordings, to tell "
               "whether an hour needs more than a minute.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--minutes", default="1,60", type=_minute_list,
                        help="Whole minutes of audio to code, comma-separated (default 1,60).")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="speech16k")
    parser.add_argument("-q", "--quality", type=int, default=8)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--source", default=str(common.REPO_ROOT), help="Folder holding the vqcodec package to run.")
    parser.add_argument("--out", default="bench/out/memory.json")
    args = parser.parse_args()
    import soundfile

    source = Path(args.source).resolve()
    files = common.list_files(args.data, (".flac", ".wav"))
    if not files:
        sys.exit(f"memory.py: no audio in {args.data}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        empty = folder / "empty"
        empty.write_bytes(b"")
        for minutes in args.minutes:
            wav, vq, back = folder / f"{minutes}.wav", folder / f"{minutes}.vq", folder / f"{minutes}.out.wav"
            soundfile.write(str(wav), speech_of_length(files, minutes * 60, 16000), 16000, subtype="PCM_16")
            model = ["-m", args.model]
            runs = {
                "encode file → file": (empty, folder / "log", ["encode", str(wav), str(vq), "-q", str(args.quality), "--force", *model]),
                "encode stdin → stdout": (wav, vq, ["encode", "-", "-", "-q", str(args.quality), *model]),
                "decode file → file": (empty, folder / "log", ["decode", str(vq), str(back), "--force", *model]),
                "decode stdin → stdout": (vq, back, ["decode", "-", "-", *model]),
            }
            for name, (stdin, stdout, command) in runs.items():
                measured = [peak_rss(stdin, stdout, command, source) for _ in range(args.runs)]
                peaks = sorted(peak for peak, _ in measured)
                rows.append({"minutes": minutes, "run": name, "peak_bytes": float(np.median(peaks)), "peaks": peaks,
                             "seconds": float(np.median([s for _, s in measured])), "wav_bytes": wav.stat().st_size})
                print(f"  {minutes} min, {name}: {' '.join(f'{p / 2**20:.0f}' for p in peaks)} MiB", file=sys.stderr,
                      flush=True)
    shortest = min(r["minutes"] for r in rows)
    base = {r["run"]: r["peak_bytes"] for r in rows if r["minutes"] == shortest}
    print(common.markdown_table(
        ["minutes", "WAV MiB", "run", "peak MiB (median)", "range", f"growth over {shortest} min, MiB", "seconds"],
        [[r["minutes"], r["wav_bytes"] / 2**20, r["run"], r["peak_bytes"] / 2**20,
          f"{r['peaks'][0] / 2**20:.0f}–{r['peaks'][-1] / 2**20:.0f}", (r["peak_bytes"] - base[r["run"]]) / 2**20,
          r["seconds"]] for r in rows], digits=1))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=1), "command": common.repro_command(),
                                    "source": str(source), "rows": rows})


if __name__ == "__main__":
    main()
