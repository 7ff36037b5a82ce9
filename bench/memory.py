"""Peak memory of `vqcodec encode` and `decode` on long speech: does an hour need more than a minute?

    python bench/memory.py [--minutes 1,60] [--runs 3] [--model speech16k] [-q 8] [--ways cli,api]
                           [--dtypes int16,float32] [--source DIR ...] [--out bench/out/memory.json]

Recordings of the speech dev set are joined, end to end and repeated, into 16 kHz mono 16-bit WAV
files of each length. Each is then coded in a fresh process, `--runs` times, by each of `--ways`:

- `cli`: the command line, four ways: file to file and stdin to stdout, encoding and decoding.
- `api`: the Python API, `Codec.load(model).encode(array, quality, sample_rate=16000)`, the WAV
  read first (soundfile) into a NumPy array of each of `--dtypes` (int16: the PCM as it is, float32:
  scaled to +-1, float64, ...). The array is the caller's, so the table also gives the peak less
  the array's size: what coding it costs.

The table gives the median over the runs of each process's peak resident memory (ru_maxrss of
the command's process; VmHWM of the API's, whose ru_maxrss would include this script's), its
range, and the growth of the median over the shortest length. The peak of one and the same run
varies by tens of MiB from run to run (the allocator's luck with the networks' large
temporaries), hence the median. `--source DIR` runs the vqcodec package found in DIR instead
(for example a `git clone` or `git worktree` of an earlier commit); given more than once, each
is measured in turn, in the same run, and the table names each by its commit. The API's `.vq`
files are compared across sources (`same .vq`: the bytes of the first source's file).
"""
from __future__ import annotations

import argparse
import hashlib
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

API_PEAK = """
import resource, sys
import numpy as np, soundfile
wav, dtype, model, quality, out = sys.argv[1:6]
audio, rate = soundfile.read(wav, dtype=dtype)  # mono: (samples,), as the caller holds it
from vqcodec import Codec
data = Codec.load(model).encode(audio, int(quality), sample_rate=rate)
with open(out, "wb") as file:
    file.write(data)
print(0, own_peak(), audio.nbytes)
"""
# This process's own high-water mark, VmHWM: ru_maxrss of a process started by this script would
# report this script's peak (Linux carries the spawning process's peak over into the child's
# maxrss at exec), 1.8 GiB for the 4-hour WAV this script builds, whatever the API itself used.
API_PEAK = """
def own_peak():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
""" + API_PEAK


def speech_of_length(files: list[Path], seconds: int, rate: int) -> np.ndarray:
    from vqcodec.soundio import read_audio

    pieces, total = [], 0
    while total < seconds * rate:
        for path in files:
            audio = read_audio(path, rate)[0].mean(axis=0)
            pieces.append(audio)
            total += audio.size
            if total >= seconds * rate:
                break
    return np.concatenate(pieces)[:seconds * rate]


def peak_rss(stdin: Path, stdout: Path, args: list[str], source: Path) -> tuple[int, float, int]:
    """(peak resident bytes, seconds, 0) of `python -m vqcodec ARGS`, run from `source`."""
    return _measured([sys.executable, "-c", PEAK_RSS, str(stdin), str(stdout), *args], source,
                     f"vqcodec {' '.join(args)}")


def api_peak_rss(wav: Path, dtype: str, model: str, quality: int, out: Path, source: Path) -> tuple[int, float, int]:
    """(peak resident bytes, seconds, bytes of the input array) of encoding `wav`, read as a `dtype`
    array, through the Python API of the vqcodec in `source`, in a fresh process."""
    return _measured([sys.executable, "-c", API_PEAK, str(wav), dtype, model, str(quality), str(out)], source,
                     f"Codec.encode of a {dtype} array")


def _measured(command: list[str], source: Path, what: str) -> tuple[int, float, int]:
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS="1")
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, env=env, cwd=source)
    seconds = time.monotonic() - start
    words = result.stdout.split()
    if result.returncode != 0 or not words or words[0] != b"0":
        sys.exit(f"memory.py: {what} failed: {result.stderr.decode()[-500:]}")
    return int(words[1]), seconds, int(words[2]) if len(words) > 2 else 0


def source_label(source: Path) -> str:
    """The commit `source` holds (with +changes if its tree differs), or its folder's name."""
    result = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty=+changes"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else source.name


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


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
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="Fresh processes per way, source and length; the table gives the median peak "
                             "and its range (default 3).")
    parser.add_argument("--model", default="speech16k",
                        help="Model name or .safetensors path, given to the command line's -m and to Codec.load "
                             "(default speech16k).")
    parser.add_argument("-q", "--quality", type=int, default=8, help="Quality level to encode at (default 8).")
    parser.add_argument("--data", default=str(DATA),
                        help="Folder of speech recordings (FLAC, WAV), joined end to end and repeated into 16 kHz "
                             "mono 16-bit WAV files of each length (default %(default)s).")
    common.add_source_option(parser)
    parser.add_argument("--ways", default="cli", type=_names,
                        help="What to measure, comma-separated: cli (the command line, four ways) and/or api "
                             "(Codec.encode of an array; default cli).")
    parser.add_argument("--dtypes", default="int16", type=_names,
                        help="Types of the array the API is given, comma-separated NumPy names (default int16).")
    parser.add_argument("--out", default="bench/out/memory.json",
                        help="JSON file of every row, '' for none (default bench/out/memory.json).")
    args = parser.parse_args()
    import soundfile

    unknown = set(args.ways) - {"cli", "api"}
    if unknown or not args.ways:
        sys.exit(f"memory.py: --ways takes cli and/or api, not {args.ways}")
    for dtype in args.dtypes:
        if dtype not in ("int16", "int32", "float32", "float64"):
            sys.exit(f"memory.py: --dtypes takes int16, int32, float32 and float64 (what soundfile reads), not {dtype}")
    sources = [Path(s).resolve() for s in (args.source or [str(common.REPO_ROOT)])]
    labels = [source_label(source) for source in sources]
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
            runs = {}
            if "cli" in args.ways:
                runs.update({
                    "encode file → file": (empty, folder / "log", ["encode", str(wav), str(vq), "-q", str(args.quality), "--force", *model]),
                    "encode stdin → stdout": (wav, vq, ["encode", "-", "-", "-q", str(args.quality), *model]),
                    "decode file → file": (empty, folder / "log", ["decode", str(vq), str(back), "--force", *model]),
                    "decode stdin → stdout": (vq, back, ["decode", "-", "-", *model]),
                })
            if "api" in args.ways:
                runs.update({f"API encode, {dtype} array": dtype for dtype in args.dtypes})
            for name, run in runs.items():
                first_vq = None
                for source, label in zip(sources, labels):
                    if isinstance(run, str):
                        out = folder / f"{minutes}.api.vq"
                        measured = [api_peak_rss(wav, run, args.model, args.quality, out, source)
                                    for _ in range(args.runs)]
                        digest = hashlib.sha256(out.read_bytes()).hexdigest()
                        first_vq = first_vq or digest
                        same = "yes" if digest == first_vq else "NO"
                    else:
                        stdin, stdout, command = run
                        measured = [peak_rss(stdin, stdout, command, source) for _ in range(args.runs)]
                        digest, same = None, ""
                    peaks = sorted(peak for peak, _, _ in measured)
                    held = measured[0][2]
                    rows.append({"source": label, "minutes": minutes, "run": name, "peak_bytes": float(np.median(peaks)),
                                 "peaks": peaks, "input_bytes": held, "seconds": float(np.median([s for _, s, _ in measured])),
                                 "wav_bytes": wav.stat().st_size, "vq_sha256": digest, "same_vq": same})
                    print(f"  {label}, {minutes} min, {name}: {' '.join(f'{p / 2**20:.0f}' for p in peaks)} MiB"
                          + (f" ({held / 2**20:.0f} MiB of it the input array)" if held else ""), file=sys.stderr,
                          flush=True)
    shortest = min(r["minutes"] for r in rows)
    base = {(r["source"], r["run"]): r["peak_bytes"] for r in rows if r["minutes"] == shortest}
    print(common.markdown_table(
        ["code", "minutes", "WAV MiB", "run", "peak MiB (median)", "range", "input array MiB", "peak less input, MiB",
         f"growth over {shortest} min, MiB", "seconds", "same .vq"],
        [[r["source"], r["minutes"], r["wav_bytes"] / 2**20, r["run"], r["peak_bytes"] / 2**20,
          f"{r['peaks'][0] / 2**20:.0f}–{r['peaks'][-1] / 2**20:.0f}", r["input_bytes"] / 2**20,
          (r["peak_bytes"] - r["input_bytes"]) / 2**20, (r["peak_bytes"] - base[r["source"], r["run"]]) / 2**20,
          r["seconds"], r["same_vq"]] for r in rows], digits=1))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=1), "command": common.repro_command(),
                                    "sources": [str(source) for source in sources], "rows": rows})


if __name__ == "__main__":
    main()
