"""Image benchmark: our codec at each quality against JPEG, WebP and AVIF (Pillow), same run, same images.

    python bench/image.py [--data ../shared/data/images/kodak] [--model image] [--qualities 1,2,4,8]
                          [--images N] [--runs 3] [--threads 2] [--refine N] [--depth-weights 0]
                          [--baselines JPEG,WebP,AVIF]
                          [--out bench/out/image.json] [--plot bench/out/image_rd.png]

Relative paths are taken from the repository root (an existing path relative to the current
directory wins for --data and --model).

Prints the reproducing command and the machine, then two Markdown tables:

(a) our codec, one row per -q: real bits per pixel (the whole `.vq` file, header and container
    included, x 8 / pixels; the mean of the per-image values, and the total-bytes figure),
    PSNR over RGB (mean of per-image PSNR), MS-SSIM (mean of per-image values), and encode
    and decode seconds per image (median of --runs runs of `Codec.encode_image` /
    `Codec.decode_image`, mean over the images; CPU, --threads torch threads).
(b) PSNR at 0.2, 0.3 and 0.5 bpp for ours and each baseline: every image's PSNR-vs-bpp curve
    along the codec's quality sweep is interpolated linearly at the target, then the values are
    averaged over images. When some image's sweep does not reach the target, the value is
    interpolated along the curve of the means instead and marked '*'; '—' when even that
    curve does not reach it.

With --refine N our codec is run a second time with N steps of latent refinement (`vqcodec
encode --refine N`), as its own row in (b) and its own table like (a), timed once. With
--depth-weights W1,W2 it is also run at each of those depth weights (`vqcodec encode
--depth-weight W`; 0: every latent cell uses every level), each its own row and table, timed once.

Baselines are Pillow's encoders with default settings except the quality: JPEG (libjpeg,
4:2:0, with optimised Huffman tables), WebP (method 4) and AVIF (Pillow's built-in libavif,
speed 6; reported as unavailable when Pillow lacks it). Their bpp counts the whole file as Pillow writes it (EXIF-free, with the
usual container headers).

MS-SSIM is Wang, Simoncelli and Bovik (2003): five scales, 11-tap Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, exponents (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), valid
filtering, 2x2 average pooling between scales, computed per RGB channel on [0, 255] values and
averaged over the channels (the convention of the pytorch-msssim package, which it matches to
1e-6). It needs a shortest side of at least 161 pixels.

The JSON (--out) holds every per-image point, the summaries and the machine description; the
plot (--plot) shows PSNR and MS-SSIM against bpp for all codecs (means along each sweep).
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from vqcodec.metrics import ms_ssim, psnr  # noqa: E402,F401  (psnr: for the other benchmarks)

REPO_ROOT = common.REPO_ROOT
TARGETS_BPP = (0.2, 0.3, 0.5)

# Quality sweeps of the baselines: dense where the bitrate is low, reaching well past 0.5 bpp.
BASELINE_SWEEPS = {
    "JPEG": [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 90],
    "WebP": [0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90],
    "AVIF": [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 80],
}
PILLOW_FORMAT = {"JPEG": "JPEG", "WebP": "WEBP", "AVIF": "AVIF"}
# Save options besides the quality. JPEG gets optimised Huffman tables (cjpeg -optimize): a free,
# lossless 5-10 % saving any careful JPEG user has; without it JPEG looks about 1 dB worse here.
PILLOW_OPTIONS = {"JPEG": {"optimize": True}, "WebP": {}, "AVIF": {}}
PILLOW_FEATURE = {"JPEG": "jpg", "WebP": "webp", "AVIF": "avif"}


# --------------------------------------------------------------------------- metrics

def interpolate_at(bpps, values, target: float) -> float | None:
    """Linear interpolation of values(bpp) at `target` along one image's sweep; None outside it."""
    order = np.argsort(bpps, kind="stable")
    x, y = np.asarray(bpps, dtype=np.float64)[order], np.asarray(values, dtype=np.float64)[order]
    if not len(x) or target < x[0] or target > x[-1]:
        return None
    return float(np.interp(target, x, y))


def mean_at(points_per_image: list[list[dict]], target: float, key: str = "psnr"):
    """Mean over images of each image's interpolated value at `target` bpp, and how many images
    cover it. The mean is None unless every image does."""
    values = [interpolate_at([p["bpp"] for p in points], [p[key] for p in points], target)
              for points in points_per_image]
    covered = [v for v in values if v is not None]
    return (float(np.mean(covered)) if covered and len(covered) == len(values) else None), len(covered)


def mean_curve_at(rows: list[dict], target: float, key: str = "psnr") -> float | None:
    """Interpolation at `target` along the curve of the means (mean bpp, mean value) of each
    quality setting; the fallback when some image's own sweep does not reach the target."""
    return interpolate_at([r["bpp"] for r in rows], [r[key] for r in rows], target)


# --------------------------------------------------------------------------- data

class Picture:
    def __init__(self, path: Path):
        from vqcodec.imageio import open_image

        self.path = path
        self.name = path.stem
        self.image = open_image(path)
        self.rgb = np.asarray(self.image.convert("RGB"))
        self.pixels = self.rgb.shape[0] * self.rgb.shape[1]


def _measure(picture: Picture, data: bytes, decoded_rgb: np.ndarray) -> dict:
    return {"image": picture.name, "bytes": len(data), "bpp": len(data) * 8 / picture.pixels,
            "psnr": psnr(picture.rgb, decoded_rgb), "ms_ssim": ms_ssim(picture.rgb, decoded_rgb)}


# --------------------------------------------------------------------------- codecs

def run_ours(codec, pictures: list[Picture], qualities: list[int], runs: int, label: str = "ours") -> list[dict]:
    """One summary row per quality, each with its per-image points."""
    rows = []
    for quality in qualities:
        points = []
        for picture in pictures:
            encode_s, data = common.time_median(lambda: codec.encode_image(picture.image, quality), runs)
            decode_s, decoded = common.time_median(lambda: codec.decode_image(data), runs)
            point = _measure(picture, data, np.asarray(decoded.convert("RGB")))
            point.update(encode_s=encode_s, decode_s=decode_s)
            points.append(point)
        rows.append(_summary(label, quality, points, pictures))
        print(f"  {label} -q {quality}: {rows[-1]['bpp']:.3f} bpp, {rows[-1]['psnr']:.2f} dB", file=sys.stderr, flush=True)
    return rows


def baseline_available(name: str) -> bool:
    from PIL import features

    try:
        return bool(features.check(PILLOW_FEATURE[name]))
    except ValueError:  # a Pillow that does not even know the feature's name
        return False


def run_baseline(name: str, pictures: list[Picture], qualities: list[int]) -> list[dict]:
    from PIL import Image

    rows = []
    for quality in qualities:
        points = []
        for picture in pictures:
            buffer = io.BytesIO()
            picture.image.convert("RGB").save(buffer, format=PILLOW_FORMAT[name], quality=quality,
                                              **PILLOW_OPTIONS[name])
            data = buffer.getvalue()
            with Image.open(io.BytesIO(data)) as decoded:
                points.append(_measure(picture, data, np.asarray(decoded.convert("RGB"))))
        rows.append(_summary(name, quality, points, pictures))
    return rows


def _summary(codec: str, quality: int, points: list[dict], pictures: list[Picture]) -> dict:
    row = {"codec": codec, "quality": quality,
           "bpp": float(np.mean([p["bpp"] for p in points])),
           "bpp_total": sum(p["bytes"] for p in points) * 8 / sum(p.pixels for p in pictures),
           "psnr": float(np.mean([p["psnr"] for p in points])),
           "ms_ssim": float(np.mean([p["ms_ssim"] for p in points])),
           "points": points}
    if "encode_s" in points[0]:
        row["encode_s"] = float(np.mean([p["encode_s"] for p in points]))
        row["decode_s"] = float(np.mean([p["decode_s"] for p in points]))
    return row


def per_image_sweeps(rows: list[dict]) -> list[list[dict]]:
    """Regroup the rows of one codec into one sweep (list of points) per image."""
    names = [p["image"] for p in rows[0]["points"]]
    return [[row["points"][i] for row in rows] for i in range(len(names))]


# --------------------------------------------------------------------------- reporting

def _dash(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ours_table(rows: list[dict]) -> str:
    headers = ["q", "bpp", "bpp (total bytes)", "PSNR dB", "MS-SSIM", "encode s", "decode s"]
    body = [[r["quality"], r["bpp"], r["bpp_total"], r["psnr"], r["ms_ssim"], r["encode_s"], r["decode_s"]]
            for r in rows]
    return common.markdown_table(headers, body, digits=[0, 3, 3, 2, 4, 3, 3])


def comparison_table(results: dict[str, list[dict] | None], image_count: int) -> tuple[str, dict, list[str]]:
    headers = ["codec"] + [f"PSNR @ {t} bpp" for t in TARGETS_BPP]
    body, summary, notes = [], {}, []
    for name, rows in results.items():
        if rows is None:
            body.append([name] + ["unavailable"] * len(TARGETS_BPP))
            summary[name] = None
            continue
        sweeps = per_image_sweeps(rows)
        cells, summary[name] = [], {}
        for target in TARGETS_BPP:
            value, covered = mean_at(sweeps, target)
            msssim, _ = mean_at(sweeps, target, key="ms_ssim")
            fallback = mean_curve_at(rows, target)
            summary[name][str(target)] = {"psnr": value, "ms_ssim": msssim, "images_covered": covered,
                                          "psnr_mean_curve": fallback,
                                          "ms_ssim_mean_curve": mean_curve_at(rows, target, key="ms_ssim")}
            if value is None and fallback is not None:
                cells.append(_dash(fallback) + "*")
                notes.append(f"{name} at {target} bpp: only {covered} of {image_count} images reach it; "
                             f"* marks the interpolation along the mean curve instead")
            else:
                cells.append(_dash(value))
        body.append([name] + cells)
    return common.markdown_table(headers, body, align=["l"] + ["r"] * len(TARGETS_BPP)), summary, notes


def plot(results: dict[str, list[dict] | None], path: Path, title: str) -> None:
    fig, (left, right) = common.side_by_side_axes(4.8)
    for name, rows in results.items():
        if not rows:
            continue
        bpp = [r["bpp"] for r in rows]
        style = dict(marker="o", markersize=3, linewidth=2 if name.startswith("ours") else 1.2)
        left.plot(bpp, [r["psnr"] for r in rows], label=name, **style)
        right.plot(bpp, [-10 * math.log10(max(1e-12, 1 - r["ms_ssim"])) for r in rows], label=name, **style)
    for axis, label in ((left, "PSNR (RGB), dB"), (right, "MS-SSIM, dB  (-10 log10(1 - MS-SSIM))")):
        axis.set_xlim(0, 1.5)
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        for target in TARGETS_BPP:
            axis.axvline(target, color="grey", linewidth=0.5, linestyle=":")
        axis.legend()
    common.save_figure(fig, path, title, dpi=120)


# --------------------------------------------------------------------------- main

def _input_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def _output_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the image codec's real bits per pixel, PSNR, MS-SSIM and coding time at each quality "
               "against JPEG, WebP and AVIF, on the same images in the same run.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--data", default="../shared/data/images/kodak",
                        help="folder of PNG images (default: %(default)s, from the repository root)")
    parser.add_argument("--model", default="image", help="model name or .safetensors path (default: %(default)s)")
    parser.add_argument("--qualities", default=None, type=common.number_list(int),
                        help="e.g. 1,2,4,8,12 (default: every quality of the model)")
    parser.add_argument("--images", type=common.positive_int, default=None, help="first N images only (sorted by name)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="timing runs of our codec (median; default: %(default)s)")
    parser.add_argument("--threads", type=common.positive_int, default=2,
                        help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--refine", type=common.at_least(0), default=0,
                        help="also run our codec with this many refinement steps (encode --refine), one timing run")
    parser.add_argument("--depth-weights", default="", type=common.number_list(empty=True),
                        help="also run our codec at these depth weights (encode --depth-weight), one timing run")
    parser.add_argument("--baselines", default="JPEG,WebP,AVIF",
                        help="baselines to run, comma-separated ('' for none; default: %(default)s)")
    parser.add_argument("--skip-baselines", action="store_true", help="our codec only (same as --baselines '')")
    parser.add_argument("--out", default="bench/out/image.json",
                        help="JSON with every point ('' for none; default: %(default)s)")
    parser.add_argument("--plot", default="bench/out/image_rd.png",
                        help="RD plot PNG, which needs matplotlib ('' for none; default: %(default)s)")
    args = parser.parse_args(argv)
    common.require_modules(*(["matplotlib"] if args.plot else []))
    wanted = [] if args.skip_baselines else [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in BASELINE_SWEEPS]
    if unknown:
        raise SystemExit(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINE_SWEEPS)}")

    import torch

    torch.set_num_threads(args.threads)
    from vqcodec import Codec

    model_arg = args.model
    if model_arg.endswith((".safetensors", ".json")) or "/" in model_arg:
        model_arg = str(_input_path(model_arg))
    codec = Codec.load(model_arg, device="cpu")
    if codec.kind != "image":
        raise SystemExit(f"model {args.model} codes {codec.kind}, not images")
    if args.qualities:
        qualities = sorted({int(q) for q in args.qualities.split(",")})
        bad = [q for q in qualities if not 1 <= q <= codec.num_codebooks]
        if bad:
            raise SystemExit(f"qualities {bad} outside 1..{codec.num_codebooks} for this model")
    else:
        qualities = list(range(1, codec.num_codebooks + 1))

    files = common.list_files(_input_path(args.data), ["png"], args.images)
    pictures = [Picture(f) for f in files]
    small = [p.path.name for p in pictures if min(p.rgb.shape[:2]) < 161]
    if small:  # MS-SSIM is measured for every point
        raise SystemExit(f"MS-SSIM needs a shortest side of at least 161 pixels: {', '.join(small)}")
    machine = common.machine_info(threads=args.threads)
    command = common.repro_command()
    print(f"Command: `{command}`")
    print(f"Machine: {machine['cpu']} ({machine['cpu_count']} CPUs), Python {machine['python']}, "
          f"torch {machine.get('torch')} with {args.threads} thread(s), Pillow {_pillow_version()}")
    print(f"Data: {len(pictures)} images from {args.data}; model {codec.name} (id {codec.model_id.hex()}, "
          f"{codec.num_codebooks} codebooks x {codec.codebook_size}); timing: median of {args.runs} run(s); "
          f"encoder: beam {codec.beam}, rate weight {codec.rate_weight:g}, depth weight {codec.depth_weight:g}")
    print()

    started = time.perf_counter()
    ours = run_ours(codec, pictures, qualities, args.runs)
    results: dict[str, list[dict] | None] = {"ours": ours}
    refined_label = f"ours --refine {args.refine}"
    if args.refine:
        codec.refine = args.refine
        results[refined_label] = run_ours(codec, pictures, qualities, 1, refined_label)
        codec.refine = 0
    default_depth = codec.depth_weight
    depth_labels = []
    for weight in [float(w) for w in args.depth_weights.split(",") if w.strip()]:
        depth_labels.append(f"ours --depth-weight {weight:g}")
        codec.depth_weight = weight
        results[depth_labels[-1]] = run_ours(codec, pictures, qualities, 1, depth_labels[-1])
    codec.depth_weight = default_depth
    for name, sweep in BASELINE_SWEEPS.items():
        if name in wanted:
            if baseline_available(name):
                results[name] = run_baseline(name, pictures, sweep)
                print(f"  {name}: done", file=sys.stderr, flush=True)
            else:
                results[name] = None

    print("Our codec, means over the images:")
    print()
    print(ours_table(ours))
    print()
    if args.refine:
        print(f"With --refine {args.refine} (one timing run):")
        print()
        print(ours_table(results[refined_label]))
        print()
    for label in depth_labels:
        print(f"With {label[len('ours '):]} (one timing run):")
        print()
        print(ours_table(results[label]))
        print()
    table, summary, notes = comparison_table(results, len(pictures))
    print("PSNR (RGB, dB) at equal bitrate, per-image interpolation along each quality sweep, mean over images:")
    print()
    print(table)
    for note in notes:
        print(f"\n* {note}")
    print(f"\n({time.perf_counter() - started:.0f} s)")

    title = f"{len(pictures)} images from {Path(args.data).name}: rate-distortion"
    if args.plot:
        plot(results, _output_path(args.plot), title)
    if args.out:
        common.save_json(_output_path(args.out), {
            "command": command, "machine": machine, "data": str(args.data),
            "images": [p.name for p in pictures], "model": {"name": codec.name, "id": codec.model_id.hex()},
            "runs": args.runs, "targets_bpp": list(TARGETS_BPP), "at_targets": summary,
            "sweeps": {name: BASELINE_SWEEPS.get(name, qualities) for name in results},
            "results": results})
    return 0


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


if __name__ == "__main__":
    sys.exit(main())
