"""Rate control benchmark: `encode --bpp` / `--bitrate` against the quality ladder and JPEG at the same rates.

    python bench/rate_control.py [--images ../shared/data/images/kodak] [--speech ../shared/data/speech/dev]
                                 [--files N] [--bpp 0.1,0.2,0.3,0.5] [--kbps 0.5,1,1.5,2,2.5,3]
                                 [--skip-speech] [--skip-images] [--out bench/out/rate_control.json]

Every file is encoded with a target (Codec.encode_image(..., max_bpp=) / encode_audio(...,
max_kbps=), all codebooks allowed, one torch thread) and decoded. One row per target:

* rate: the files' real rate (whole .vq files, header included), mean over files, and the largest
  rate over target (never above 1: the target is a ceiling per file);
* quality of the rate-controlled files: PSNR and MS-SSIM (images); PESQ-WB, STOI and log-mel L1
  (speech); means over files;
* "vs ladder": the rate-controlled value minus each file's own default-encoder quality ladder (-q
  1..max, measured in the same run) interpolated linearly at that file's rate-controlled rate,
  averaged over the files whose ladder reaches that rate ("files"; the others are left out of
  both sides of the difference);
* images, "vs JPEG": the same against JPEG (Pillow, optimised Huffman tables, bench/image.py's
  sweep);
* encode: mean seconds per image, or times real time for the whole speech set.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data"


def spread(files: list[Path], count: int | None) -> list[Path]:
    if count is None or count >= len(files):
        return files
    return [files[i * len(files) // count] for i in range(count)]


def at_same_rate(controlled: list[dict], sweeps: list[list[dict]], keys: list[str]) -> dict:
    """Means over the files whose sweep covers their rate-controlled rate: the rate-controlled value
    and the sweep's interpolated one, per key."""
    from image import interpolate_at

    pairs = {key: [] for key in keys}
    covered = 0
    for point, sweep in zip(controlled, sweeps):
        values = {key: interpolate_at([p["rate"] for p in sweep], [p[key] for p in sweep], point["rate"])
                  for key in keys}
        if any(v is None for v in values.values()):
            continue
        covered += 1
        for key in keys:
            pairs[key].append((point[key], values[key]))
    result = {"covered": covered}
    for key in keys:
        result[key] = [float(np.mean([a for a, _ in pairs[key]])), float(np.mean([b for _, b in pairs[key]]))] \
            if pairs[key] else None
    return result


# --------------------------------------------------------------------------- images

def bench_images(args) -> dict:
    import torch
    from image import BASELINE_SWEEPS, Picture, _measure, run_baseline

    from vqcodec import Codec, VQCodecError

    codec = Codec.load(args.image_model)
    pictures = [Picture(p) for p in spread(common.list_files(args.images, (".png", ".jpg", ".jpeg")), args.files)]
    as_points = lambda point: {**point, "rate": point["bpp"]}  # noqa: E731

    def decoded(data):
        return np.asarray(codec.decode_image(data).convert("RGB"))

    with torch.inference_mode():
        ladder = [[] for _ in pictures]
        for quality in range(1, codec.num_codebooks + 1):
            for sweep, picture in zip(ladder, pictures):
                data = codec.encode_image(picture.image, quality)
                sweep.append(as_points(_measure(picture, data, decoded(data))))
        print(f"  images: ladder of {codec.num_codebooks} qualities done", file=sys.stderr, flush=True)
        jpeg = [[as_points(p) for p in sweep] for sweep in
                _regroup(run_baseline("JPEG", pictures, BASELINE_SWEEPS["JPEG"]), len(pictures))]
        rows = []
        for target in common.numbers(args.bpp):
            points, seconds = [], 0.0
            for picture in pictures:
                start = time.perf_counter()
                try:
                    data = codec.encode_image(picture.image, codec.num_codebooks, max_bpp=target)
                except VQCodecError as exc:  # a target below what the image can reach
                    print(f"  {picture.name} at {target:g} bpp: {exc}", file=sys.stderr)
                    continue
                finally:
                    seconds += time.perf_counter() - start
                points.append(as_points(_measure(picture, data, decoded(data))))
            if not points:
                print(f"  images {target:g} bpp: no image fits, no row", file=sys.stderr, flush=True)
                continue
            row = {"target": target, "rate": float(np.mean([p["rate"] for p in points])),
                   "max_over_target": max(p["rate"] for p in points) / target,
                   "psnr": float(np.mean([p["psnr"] for p in points])),
                   "ms_ssim": float(np.mean([p["ms_ssim"] for p in points])),
                   "encode_s": seconds / len(pictures),
                   "ladder": at_same_rate(points, ladder, ["psnr", "ms_ssim"]),
                   "jpeg": at_same_rate(points, jpeg, ["psnr"]), "points": points}
            rows.append(row)
            print(f"  images {target:g} bpp: {row['rate']:.4f} bpp, {row['psnr']:.2f} dB, "
                  f"{row['encode_s']:.2f} s", file=sys.stderr, flush=True)
    return {"data": str(args.images), "model": codec.name, "files": [p.name for p in pictures], "rows": rows}


def _regroup(rows: list[dict], count: int) -> list[list[dict]]:
    return [[row["points"][i] for row in rows] for i in range(count)]


def image_table(result: dict) -> str:
    headers = ["target bpp", "bpp", "max / target", "PSNR dB", "MS-SSIM", "vs ladder: PSNR", "MS-SSIM",
               "files", "vs JPEG: PSNR", "files", "encode s"]
    table = []
    for r in result["rows"]:
        ladder, jpeg = r["ladder"], r["jpeg"]
        table.append([r["target"], r["rate"], r["max_over_target"], r["psnr"], r["ms_ssim"],
                      _gain(ladder["psnr"]), _gain(ladder["ms_ssim"], 4), ladder["covered"],
                      _gain(jpeg["psnr"]), jpeg["covered"], r["encode_s"]])
    return common.markdown_table(headers, table, [2, 4, 3, 2, 4, 0, 0, 0, 0, 0, 2])


def _gain(pair, digits: int = 2) -> str:
    """Rate-controlled minus the other, from an (ours, theirs) pair of means over the same files."""
    return "–" if pair is None else f"{pair[0] - pair[1]:+.{digits}f}"


# --------------------------------------------------------------------------- speech

def bench_speech(args) -> dict:
    import torch
    from speech import SAMPLE_RATE, load_clips

    from vqcodec import Codec, VQCodecError

    codec = Codec.load(args.speech_model)
    files = spread(common.list_files(args.speech, (".flac", ".wav", ".ogg")), args.files)
    with tempfile.TemporaryDirectory() as workdir:
        clips = load_clips(files, Path(workdir))
    seconds_total = sum(c.seconds for c in clips)

    def measure(clip, data) -> dict:
        out = common.fit_length(codec.decode_audio(data)[0][0], clip.audio.size)
        return {"file": clip.name, "rate": len(data) * 8 / clip.seconds / 1000,
                "pesq_wb": common.pesq_wb(clip.audio, out), "stoi": common.stoi_score(clip.audio, out),
                "log_mel_l1": common.log_mel_l1(clip.audio, out)}

    keys = ["pesq_wb", "stoi", "log_mel_l1"]
    with torch.inference_mode():
        ladder = [[] for _ in clips]
        for quality in range(1, codec.num_codebooks + 1):
            for sweep, clip in zip(ladder, clips):
                sweep.append(measure(clip, codec.encode_audio(clip.audio[None], SAMPLE_RATE, quality)))
        print(f"  speech: ladder of {codec.num_codebooks} qualities done", file=sys.stderr, flush=True)
        rows = []
        for target in common.numbers(args.kbps):
            points, seconds = [], 0.0
            for clip in clips:
                start = time.perf_counter()
                try:
                    data = codec.encode_audio(clip.audio[None], SAMPLE_RATE, codec.num_codebooks, max_kbps=target)
                except VQCodecError as exc:  # a target below what a short file can reach
                    print(f"  {clip.name} at {target:g} kbps: {exc}", file=sys.stderr)
                    continue
                finally:
                    seconds += time.perf_counter() - start
                points.append(measure(clip, data))
            if not points:
                print(f"  speech {target:g} kbps: no file fits, no row", file=sys.stderr, flush=True)
                continue
            kept = [sweep for sweep, clip in zip(ladder, clips) if clip.name in {p["file"] for p in points}]
            row = {"target": target, "files": len(points), "rate": float(np.mean([p["rate"] for p in points])),
                   "max_over_target": max(p["rate"] for p in points) / target,
                   **{key: float(np.mean([p[key] for p in points])) for key in keys},
                   "encode_xrt": seconds_total / seconds, "ladder": at_same_rate(points, kept, keys), "points": points}
            rows.append(row)
            print(f"  speech {target:g} kbps: {row['rate']:.3f} kbps, PESQ {row['pesq_wb']:.3f}, "
                  f"STOI {row['stoi']:.4f}", file=sys.stderr, flush=True)
    return {"data": str(args.speech), "model": codec.name, "files": [c.name for c in clips], "rows": rows}


def speech_table(result: dict) -> str:
    headers = ["target kbps", "kbps", "max / target", "PESQ-WB", "STOI", "log-mel L1",
               "vs ladder: PESQ-WB", "STOI", "log-mel L1", "files", "encode ×RT"]
    table = []
    for r in result["rows"]:
        ladder = r["ladder"]
        table.append([r["target"], r["rate"], r["max_over_target"], r["pesq_wb"], r["stoi"], r["log_mel_l1"],
                      _gain(ladder["pesq_wb"], 3), _gain(ladder["stoi"], 4), _gain(ladder["log_mel_l1"], 4),
                      ladder["covered"], r["encode_xrt"]])
    return common.markdown_table(headers, table, [2, 3, 3, 3, 4, 4, 0, 0, 0, 0, 1])


# --------------------------------------------------------------------------- main

# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the real rate, quality and encoding time of files coded to a target (encode --bpp / "
               "--bitrate) against each file's quality ladder and, for photos, JPEG at the same rates.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(DATA / "images" / "kodak"),
                        help="Folder of images (PNG, JPEG), read recursively (default %(default)s).")
    parser.add_argument("--speech", default=str(DATA / "speech" / "dev"),
                        help="Folder of speech recordings (FLAC, WAV, Ogg), read recursively (default %(default)s).")
    parser.add_argument("--files", type=common.positive_int, default=None, help="Use N files spread evenly over each set.")
    parser.add_argument("--bpp", default="0.1,0.2,0.3,0.5", type=common.number_list(),
                        help="Image targets in bits per pixel, comma-separated: one row each, a ceiling per file "
                             "(default 0.1,0.2,0.3,0.5).")
    parser.add_argument("--kbps", default="0.5,1,1.5,2,2.5,3", type=common.number_list(),
                        help="Speech targets in kbps, comma-separated: one row each, a ceiling per file "
                             "(default 0.5,1,1.5,2,2.5,3).")
    common.add_model_options(parser, str(common.REPO_ROOT / "bench" / "out" / "rate_control.json"))
    args = parser.parse_args()
    if not args.skip_speech:
        common.require_modules(*common.SPEECH_METRICS)

    import torch
    torch.set_num_threads(1)
    result = {"command": common.repro_command(), "machine": common.machine_info(threads=1)}
    if not args.skip_images:
        result["images"] = bench_images(args)
        print(f"\nImages ({result['images']['model']}, {len(result['images']['files'])} files): "
              f"rate-controlled files, and their gain over the ladder and JPEG at the same rates\n")
        print(image_table(result["images"]))
    if not args.skip_speech:
        result["speech"] = bench_speech(args)
        print(f"\nSpeech ({result['speech']['model']}, {len(result['speech']['files'])} files): "
              f"rate-controlled files, and their gain over the ladder at the same rates\n")
        print(speech_table(result["speech"]))
    if args.out:
        common.save_json(args.out, result)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
