"""Decoding part of a long recording: `decode --start --duration` against decoding all of it.

    python bench/seek.py [--data ../shared/data/speech/dev] [--minutes 60] [--rate 44100]
                         [--seconds 10] [--runs 3] [--out bench/out/seek.json]

The dev recordings are joined into one recording of --minutes minutes (repeated as needed),
resampled to --rate (so that the part is resampled too) and encoded once with speech16k at -q 8.
Then, on one thread: the whole file decoded (one run), and a part of --seconds seconds decoded at
five places spread over the file (median of --runs runs each). Each part is compared with the
same samples of the whole decoding (largest absolute difference).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def long_recording(folder: str, minutes: float, rate: int) -> np.ndarray:
    pieces, total, wanted = [], 0, int(minutes * 60 * 16000)
    files = common.list_files(folder, (".flac", ".wav"))
    while total < wanted:
        for path in files:
            audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            if file_rate != 16000:
                audio = soxr.resample(audio, file_rate, 16000).astype(np.float32)
            pieces.append(audio)
            total += audio.size
            if total >= wanted:
                break
    audio = np.concatenate(pieces)[:wanted]
    return soxr.resample(audio, 16000, rate).astype(np.float32) if rate != 16000 else audio


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the time to decode part of a long recording (decode --start --duration) against "
               "decoding all of it, and how far the part differs from the same samples of the whole.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(common.REPO_ROOT.parent / "shared" / "data" / "speech" / "dev"),
                        help="folder of speech recordings (FLAC, WAV) joined into the long recording "
                             "(default: %(default)s)")
    parser.add_argument("--model", default="speech16k",
                        help="model name or .safetensors path; the file is encoded at -q 8 (default: %(default)s)")
    parser.add_argument("--minutes", type=common.seconds_or_minutes(), default=60.0,
                        help="length of the long recording in minutes, the recordings repeated as needed "
                             "(default: %(default)s)")
    parser.add_argument("--rate", type=int, default=44100,
                        help="sample rate in Hz the recording is resampled to before encoding, so that the "
                             "decoded part is resampled too (default: %(default)s)")
    parser.add_argument("--seconds", type=common.seconds_or_minutes(), default=10.0,
                        help="length in seconds of each part decoded (default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="timing runs of each part, the median reported; the whole file is decoded once "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=str(common.REPO_ROOT / "bench" / "out" / "seek.json"),
                        help="JSON file of every row ('' for none; default: %(default)s)")
    args = parser.parse_args()

    import torch

    from vqcodec import Codec

    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    audio = long_recording(args.data, args.minutes, args.rate)
    seconds = audio.size / args.rate
    data = codec.encode_audio(audio, args.rate, 8)
    print(f"encoded {seconds / 60:.1f} min at {args.rate} Hz: {len(data)} bytes", file=sys.stderr, flush=True)

    start = time.perf_counter()
    whole, _ = codec.decode_audio(data)
    whole_s = time.perf_counter() - start
    rows = [{"part": "whole file", "start_s": 0.0, "seconds": seconds, "decode_s": whole_s, "max_diff": 0.0}]
    for place in np.linspace(0.0, 1.0, 5):
        at = float(place * (seconds - args.seconds))
        decode_s, (part, _) = common.time_median(lambda: codec.decode_audio(data, start=at, duration=args.seconds),
                                                 args.runs)
        first = round(at * args.rate)
        rows.append({"part": f"{args.seconds:g} s", "start_s": at, "seconds": part.shape[1] / args.rate,
                     "decode_s": decode_s,
                     "max_diff": float(np.abs(part - whole[:, first:first + part.shape[1]]).max())})
        print(f"  {args.seconds:g} s at {at:.1f} s: {decode_s * 1000:.0f} ms", file=sys.stderr, flush=True)

    headers = ["part", "from s", "length s", "decode s", "× faster than whole", "max abs difference"]
    table = [[r["part"], r["start_s"], r["seconds"], r["decode_s"], whole_s / r["decode_s"], f"{r['max_diff']:.1e}"]
             for r in rows]
    print(f"\n{args.model}, {seconds / 60:.1f} min at {args.rate} Hz, -q 8, one thread\n")
    print(common.markdown_table(headers, table, [0, 1, 1, 3, 1, 0]))
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "machine": common.machine_info(threads=1),
                                    "model": codec.name, "rate": args.rate, "bytes": len(data), "rows": rows})
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
