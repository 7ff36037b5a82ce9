"""Hot paths of coding: depth-map decoding, prior fitting for large codebooks and beam search memory.

    python bench/hot_paths.py [--cases depth,fit-audio,fit-image,fit-spread,beam-q4,beam-16,beam-1024]
                              [--runs 3] [--source DIR ...] [--out bench/out/hot_paths.json]

Each case runs in a fresh process (one thread), `--runs` times for each `--source` in turn, the
sources alternating run by run so that a busy machine slows them alike; the table gives the median
seconds and peak resident memory (VmHWM) and whether every source produced the same output (a
SHA-256 of it: the codes read, the prior's tables, the searched codes):

- `depth`: the dev speech joined into 60 s at 16 kHz and encoded once (`speech16k`, `-q 8`, its
  default depth weight: every frame has a depth map cell); `Codec.read_codes` of that file, the
  median of 9 calls, and the part of it spent decoding the depth map (CodePrior._decode_depths).
- `fit-audio`, `fit-image`, `fit-spread`: CodePrior.fit on synthetic codes of a codebook of 2**15
  (the largest a prior covers): audio (20 files of 4 levels by 3000 frames, heavy-tailed values
  copied from the left and the coarser level), images (12 of 4 levels by 48 x 64 cells, alike),
  and audio whose values are spread uniformly over the codebook (10 files of 1000 frames), which
  makes the clustering's pair counts as large as they get.
- `beam-q4`, `beam-16`, `beam-1024`: ResidualVQ.encode of 4096 random 64-dimensional vectors at
  4 levels with a beam of 4 (the default) and 16 over codebooks of 2**15, and a beam of 8 over
  codebooks of 1024.

`--source DIR` runs the vqcodec package found in DIR instead of this checkout (a `git worktree`
or clone of an earlier commit); given more than once, each is measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from memory import source_label, speech_of_length  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data" / "speech" / "dev"
CASES = ("depth", "fit-audio", "fit-image", "fit-spread", "beam-q4", "beam-16", "beam-1024")

WORKER = r"""
import hashlib, json, sys, time
import numpy as np

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()

def structured(rng, files, levels, rows, cols, k):
    planes = []
    for _ in range(files):
        plane = np.zeros((levels, rows, cols), dtype=np.int64)
        for level in range(levels):
            fresh = np.minimum(rng.zipf(1.4, (rows, cols)) - 1, k - 1)
            if level:
                coarser = (plane[level - 1] * 3 + 1) % k
                fresh = np.where(rng.random((rows, cols)) < 0.5, coarser, fresh)
            keep = rng.random((rows, cols)) < 0.5
            keep[:, 0] = False
            # a run of kept cells copies the value before it: index of the last fresh cell of the row
            where = np.where(keep, 0, np.arange(cols)[None, :])
            np.maximum.accumulate(where, axis=1, out=where)
            plane[level] = np.take_along_axis(fresh, where, axis=1)
        planes.append(plane)
    return planes

case = sys.argv[1]
result = {}
if case == "depth":
    from vqcodec import Codec
    from vqcodec import prior
    data = open(sys.argv[2], "rb").read()
    codec = Codec.load("speech16k")
    spent, original = [], prior.CodePrior._decode_depths
    def timed(*args):
        start = time.perf_counter()
        value = original(*args)
        spent.append(time.perf_counter() - start)
        return value
    prior.CodePrior._decode_depths = staticmethod(timed)
    codec.read_codes(data)
    calls, depth = [], []
    for _ in range(9):
        spent.clear()
        start = time.perf_counter()
        header, codes = codec.read_codes(data)
        calls.append(time.perf_counter() - start)
        depth.append(sum(spent))
    result = {"seconds": float(np.median(calls)), "depth_seconds": float(np.median(depth)), "sha256": digest(codes)}
elif case.startswith("fit-"):
    import torch  # imported by the prior's id: not part of the fit's time
    from vqcodec.prior import CodePrior
    rng, k = np.random.default_rng(0), 1 << 15
    if case == "fit-audio":
        planes, kind, chunk = [p[:, 0] for p in structured(rng, 20, 4, 1, 3000, k)], "audio", 500
    elif case == "fit-image":
        planes, kind, chunk = structured(rng, 12, 4, 48, 64, k), "image", 16
    else:
        planes, kind, chunk = [rng.integers(0, k, (4, 1000)) for _ in range(10)], "audio", 500
    start = time.perf_counter()
    fitted = CodePrior.fit(planes, k, kind, chunk)
    seconds = time.perf_counter() - start
    tensors = fitted.to_tensors(compress=False)  # the tables and maps, and the JSON's record of the fit
    described = np.frombuffer(json.dumps(fitted.describe(), sort_keys=True).encode(), dtype=np.uint8)
    result = {"seconds": seconds, "sha256": digest(*(tensors[name].numpy() for name in sorted(tensors)), described)}
else:
    import torch
    from vqcodec.quantize import ResidualVQ
    torch.manual_seed(0)
    size, beam = {"beam-q4": (1 << 15, 4), "beam-16": (1 << 15, 16), "beam-1024": (1024, 8)}[case]
    rvq = ResidualVQ(64, 4, size).eval()
    for layer in rvq.layers:
        layer.codebook.normal_(0, 0.3)
    latents = torch.randn(4096, 64)
    start = time.perf_counter()
    codes = rvq.encode(latents, 4, beam=beam)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "sha256": digest(codes.numpy())}
result["peak_bytes"] = peak()
print("RESULT " + json.dumps(result))
"""


def run_case(case: str, source: Path, vq: Path | None) -> dict:
    """One case in a fresh process, with the vqcodec package of `source`."""
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-c", WORKER, case] + ([str(vq)] if vq else [])
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=source)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        sys.exit(f"hot_paths.py: {case} with {source} failed: {result.stderr[-800:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the time and peak memory of depth-map decoding, prior fitting for codebooks of 2**15 "
               "and beam search, for one or more vqcodec sources in the same run, and whether their outputs are "
               "the same.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--cases", default=",".join(CASES), type=common.case_list(CASES),
                        help=f"What to measure, comma-separated, of {', '.join(CASES)} (default all).")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="Fresh processes per case and source; the table gives the medians (default 3).")
    parser.add_argument("--data", default=str(DATA),
                        help="Folder of speech recordings joined into the 60 s the depth case decodes "
                             "(default %(default)s).")
    common.add_source_option(parser)
    parser.add_argument("--out", default="bench/out/hot_paths.json",
                        help="JSON file of every row, '' for none (default bench/out/hot_paths.json).")
    args = parser.parse_args()
    sources = [Path(s).resolve() for s in (args.source or [str(common.REPO_ROOT)])]
    labels = [source_label(source) for source in sources]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        vq = None
        if "depth" in args.cases:
            import soundfile

            wav, vq = Path(folder) / "speech60.wav", Path(folder) / "speech60.vq"
            soundfile.write(str(wav), speech_of_length(common.list_files(args.data, (".flac", ".wav")), 60, 16000),
                            16000, subtype="PCM_16")
            encode = "from vqcodec import Codec; import sys; open(sys.argv[2], 'wb').write(Codec.load('speech16k').encode(sys.argv[1], quality=8))"
            subprocess.run([sys.executable, "-c", encode, str(wav), str(vq)], check=True, cwd=sources[0],
                           env=dict(os.environ, PYTHONPATH=str(sources[0])))
        for case in args.cases:
            measured = {label: [] for label in labels}
            for _ in range(args.runs):
                for source, label in zip(sources, labels):
                    result = run_case(case, source, vq if case == "depth" else None)
                    measured[label].append(result)
                    print(f"  {case}, {label}: {result['seconds'] * 1e3:.1f} ms, {result['peak_bytes'] / 2**20:.0f} MiB",
                          file=sys.stderr, flush=True)
            first = measured[labels[0]][0]["sha256"]
            for label in labels:
                results = measured[label]
                seconds = sorted(r["seconds"] for r in results)
                rows.append({"case": case, "source": label, "seconds": float(np.median(seconds)), "all_seconds": seconds,
                             "depth_seconds": float(np.median([r["depth_seconds"] for r in results]))
                             if case == "depth" else None,
                             "peak_bytes": float(np.median([r["peak_bytes"] for r in results])),
                             "sha256": results[0]["sha256"],
                             "same": all(r["sha256"] == first for r in results)})
    print(common.markdown_table(
        ["case", "code", "seconds (median)", "range", "of it depth map, ms", "peak MiB (median)", "same output"],
        [[r["case"], r["source"], r["seconds"], f"{r['all_seconds'][0]:.4g}–{r['all_seconds'][-1]:.4g}",
          r["depth_seconds"] * 1e3 if r["depth_seconds"] is not None else "", r["peak_bytes"] / 2**20,
          "yes" if r["same"] else "NO"] for r in rows], digits=4))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=1), "command": common.repro_command(),
                                    "sources": [str(source) for source in sources], "rows": rows})


if __name__ == "__main__":
    main()
