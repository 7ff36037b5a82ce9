"""Rate-distortion-optimised quantisation benchmark: codes and per-cell depths chosen by error plus weighted bits.

    python bench/rdo.py [--images ../shared/data/images/kodak] [--speech ../shared/data/speech/dev]
                        [--files N] [--image-weights 0,0.1,0.2,0.4] [--speech-weights 0,0.05,0.1,0.2]
                        [--image-depth-weights 0] [--speech-depth-weights 0]
                        [--image-qualities 2,4,8,12,16,20] [--speech-qualities 1,2,4,6,8]
                        [--beams default] [--skip-speech] [--skip-images] [--out bench/out/rdo.json]

With a rate weight w > 0 the encoder picks, at every level, the codes that minimise squared latent
error plus w times their bits under the model's prior (vqcodec/prior.py RateCosts), instead of the
nearest codes. With a depth weight d > 0 it then gives every cell (audio frame, image latent cell)
only the first levels whose error reduction is worth their bits at d times the exchange rate
(Codec.depth_weight, the per-cell depth files). Every file is encoded with the real codec API (one
torch thread, CPU) at every pair of weights and every quality, and decoded. One row per beam, rate
weight, depth weight and quality:

* rate: whole .vq files (header and framing included), kbps for speech, bits per pixel for images;
* quality: PSNR over RGB (images); PESQ-WB, STOI and log-mel L1 (speech);
* saved vs w=0: rate saved against the entropy-coded ladder of the same beam at weights 0, at equal
  quality (the ladder's rate interpolated linearly at the row's quality between its two nearest
  qualities; the weight-0 ladder is measured at every quality so that the interpolation is short);
* saved vs fixed: the same against fixed-width files (weight 0, the model's default beam): the
  "entropy-coded files are smaller at equal quality" measure;
* encode: mean encode seconds per file (images) or times real time (speech).

Savings are computed on the curve of the means over files. Use --images/--speech on the training
folders to choose weights: the shipped defaults (vqcodec/codec.py DEFAULT_RATE_WEIGHT and
DEFAULT_DEPTH_WEIGHT) come from those.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO_ROOT = common.REPO_ROOT
DATA = REPO_ROOT.parent / "shared" / "data"


def spread(files: list[Path], count: int | None) -> list[Path]:
    """`count` files evenly spaced over the sorted list (all when count is None)."""
    if count is None or count >= len(files):
        return files
    return [files[i * len(files) // count] for i in range(count)]


def rate_at(ladder: list[dict], key: str, quality: float, higher_is_better: bool = True) -> float | None:
    """The ladder's rate at `quality`, interpolated along its points; None outside them."""
    points = sorted((p[key], p["rate"]) for p in ladder if p[key] is not None)
    if not higher_is_better:
        points = sorted((-q, r) for q, r in points)
        quality = -quality
    values, rates = np.array([q for q, _ in points]), np.array([r for _, r in points])
    if len(values) < 2 or not values[0] <= quality <= values[-1] or np.any(np.diff(values) <= 0):
        return None
    return float(np.interp(quality, values, rates))


def add_savings(rows: list[dict], fixed: list[dict], metrics: list[tuple[str, bool]]) -> None:
    for row in rows:
        ladder = [r for r in rows if r["beam"] == row["beam"] and r["weight"] == 0 and r["depth_weight"] == 0]
        for key, higher in metrics:
            for name, reference in (("vs_ladder", ladder), ("vs_fixed", fixed)):
                at = rate_at(reference, key, row[key], higher) if row[key] is not None else None
                row[f"saved_{name}_{key}"] = None if at is None else 1 - row["rate"] / at


def sweep(run, num_codebooks: int, default_beam: int, beams: list[int], weights: list[float],
          depth_weights: list[float], qualities: list[int], metrics: list[tuple[str, bool]],
          describe) -> tuple[list[dict], list[dict]]:
    """Rows for every beam, pair of weights and quality (the weights-0 ladder at every quality), the
    fixed-width ladder (the default beam's weights-0 codes, so the same quality), and the savings."""
    every = list(range(1, num_codebooks + 1))
    pairs = [(w, d) for w in weights for d in depth_weights]
    if (0.0, 0.0) not in pairs:
        pairs.insert(0, (0.0, 0.0))
    rows = []
    for beam in beams:
        for weight, depth in pairs:
            for quality in (every if weight == depth == 0 else qualities):
                rows.append(run(beam, weight, quality, depth=depth))
                print(f"  {describe(rows[-1])}", file=sys.stderr, flush=True)
    ladder = {r["quality"]: r for r in rows if r["beam"] == default_beam and r["weight"] == r["depth_weight"] == 0}
    fixed = []
    for quality in every:
        row = run(default_beam, 0.0, quality, "fixed")
        for key, _ in metrics:
            row[key] = ladder[quality][key] if quality in ladder else None
        fixed.append(row)
    add_savings(rows, fixed, metrics)
    return rows, fixed


# --------------------------------------------------------------------------- images

def bench_images(args, beams: list[int]) -> dict:
    import torch
    from image import Picture, psnr

    from vqcodec import Codec

    codec = Codec.load(args.image_model)
    pictures = [Picture(p) for p in spread(common.list_files(args.images, (".png", ".jpg", ".jpeg")), args.files)]
    qualities = common.numbers(args.image_qualities, int)
    pixels = sum(p.pixels for p in pictures)
    default_beam = codec.beam

    def run(beam, weight, quality, coding="auto", depth=0.0):
        codec.beam, codec.rate_weight, codec.depth_weight, codec.coding = beam, weight, depth, coding
        size, scores, seconds = 0, [], 0.0
        with torch.inference_mode():
            for picture in pictures:
                start = time.perf_counter()
                data = codec.encode_image(picture.image, quality)
                seconds += time.perf_counter() - start
                size += len(data)
                if coding == "auto":
                    scores.append(psnr(picture.rgb, np.asarray(codec.decode_image(data).convert("RGB"))))
        return {"beam": beam, "weight": weight, "depth_weight": depth, "quality": quality, "rate": size * 8 / pixels,
                "psnr": float(np.mean(scores)) if scores else None, "encode_s": seconds / len(pictures)}

    rows, fixed = sweep(run, codec.num_codebooks, default_beam, beams, common.numbers(args.image_weights),
                        common.numbers(args.image_depth_weights), qualities, [("psnr", True)],
                        lambda r: f"images beam {r['beam']} w {r['weight']:g} d {r['depth_weight']:g} q{r['quality']}: "
                                  f"{r['rate']:.4f} bpp "
                                  f"{r['psnr']:.3f} dB {r['encode_s']:.2f} s")
    return {"data": str(args.images), "model": codec.name, "files": [p.name for p in pictures], "rows": rows,
            "fixed": fixed}


def image_table(result: dict) -> str:
    headers = ["beam", "weight", "depth", "q", "bpp", "PSNR dB", "saved vs w=0", "saved vs fixed", "encode s"]
    table = [[r["beam"], f"{r['weight']:g}", f"{r['depth_weight']:g}", r["quality"], r["rate"], r["psnr"],
              _percent(r["saved_vs_ladder_psnr"]), _percent(r["saved_vs_fixed_psnr"]), r["encode_s"]]
             for r in result["rows"]]
    return common.markdown_table(headers, table, [0, 0, 0, 0, 4, 3, 0, 0, 2])


# --------------------------------------------------------------------------- speech

def bench_speech(args, beams: list[int]) -> dict:
    import torch
    from speech import SAMPLE_RATE, load_clips

    from vqcodec import Codec

    codec = Codec.load(args.speech_model)
    files = spread(common.list_files(args.speech, (".flac", ".wav", ".ogg")), args.files)
    qualities = common.numbers(args.speech_qualities, int)
    default_beam = codec.beam
    with tempfile.TemporaryDirectory() as workdir:
        clips = load_clips(files, Path(workdir))
    seconds_total = sum(c.seconds for c in clips)

    def run(beam, weight, quality, coding="auto", depth=0.0):
        codec.beam, codec.rate_weight, codec.depth_weight, codec.coding = beam, weight, depth, coding
        size, pesq, stoi, mel, seconds = 0, [], [], [], 0.0
        with torch.inference_mode():
            for clip in clips:
                start = time.perf_counter()
                data = codec.encode_audio(clip.audio[None, :], SAMPLE_RATE, quality)
                seconds += time.perf_counter() - start
                size += len(data)
                if coding == "auto":
                    out = common.fit_length(codec.decode_audio(data)[0][0], clip.audio.size)
                    pesq.append(common.pesq_wb(clip.audio, out))
                    stoi.append(common.stoi_score(clip.audio, out))
                    mel.append(common.log_mel_l1(clip.audio, out))
        return {"beam": beam, "weight": weight, "depth_weight": depth, "quality": quality,
                "rate": size * 8 / seconds_total / 1000,
                "pesq_wb": common.mean_or_none(pesq) if pesq else None,
                "stoi": common.mean_or_none(stoi) if stoi else None,
                "log_mel_l1": float(np.mean(mel)) if mel else None,
                "encode_xrt": seconds_total / seconds}

    rows, fixed = sweep(run, codec.num_codebooks, default_beam, beams, common.numbers(args.speech_weights),
                        common.numbers(args.speech_depth_weights), qualities,
                        [("pesq_wb", True), ("stoi", True), ("log_mel_l1", False)],
                        lambda r: f"speech beam {r['beam']} w {r['weight']:g} d {r['depth_weight']:g} q{r['quality']}: "
                                  f"{r['rate']:.3f} kbps "
                                  f"PESQ {r['pesq_wb']:.3f} STOI {r['stoi']:.4f} log-mel {r['log_mel_l1']:.4f} "
                                  f"{r['encode_xrt']:.1f}x")
    return {"data": str(args.speech), "model": codec.name, "files": [c.name for c in clips], "rows": rows,
            "fixed": fixed}


def speech_table(result: dict) -> str:
    headers = ["beam", "weight", "depth", "q", "kbps", "PESQ-WB", "STOI", "log-mel L1",
               "saved vs w=0 (PESQ / STOI / log-mel)", "saved vs fixed (PESQ / STOI / log-mel)", "encode ×RT"]
    metrics = ("pesq_wb", "stoi", "log_mel_l1")
    table = [[r["beam"], f"{r['weight']:g}", f"{r['depth_weight']:g}", r["quality"], r["rate"], r["pesq_wb"],
              r["stoi"], r["log_mel_l1"],
              " / ".join(_percent(r[f"saved_vs_ladder_{m}"]) for m in metrics),
              " / ".join(_percent(r[f"saved_vs_fixed_{m}"]) for m in metrics),
              r["encode_xrt"]] for r in result["rows"]]
    return common.markdown_table(headers, table, [0, 0, 0, 0, 3, 3, 4, 4, 0, 0, 1])


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


# --------------------------------------------------------------------------- main

# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the rate saved at equal quality when codes and per-cell depths are chosen by latent "
               "error plus weighted bits (--rate-weight, --depth-weight) instead of the nearest codes at full "
               "depth, for photos and speech.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--images", default=str(DATA / "images" / "kodak"),
                        help="Folder of images (PNG, JPEG), read recursively (default %(default)s).")
    parser.add_argument("--speech", default=str(DATA / "speech" / "dev"),
                        help="Folder of speech recordings (FLAC, WAV, Ogg), read recursively (default %(default)s).")
    common.add_model_options(parser, str(REPO_ROOT / "bench" / "out" / "rdo.json"))
    parser.add_argument("--files", type=common.positive_int, default=None, help="Use N files spread evenly over each set.")
    parser.add_argument("--image-weights", default="0,0.1,0.2,0.4", type=common.number_list(),
                        help="Image rate weights, comma-separated: bits under the prior weighed against squared "
                             "latent error (default 0,0.1,0.2,0.4).")
    parser.add_argument("--speech-weights", default="0,0.05,0.1,0.2", type=common.number_list(),
                        help="Speech rate weights, comma-separated (default 0,0.05,0.1,0.2).")
    parser.add_argument("--image-depth-weights", default="0", type=common.number_list(),
                        help="Image depth weights, comma-separated, each tried with every rate weight; 0 keeps "
                             "every level of every cell (default 0).")
    parser.add_argument("--speech-depth-weights", default="0", type=common.number_list(),
                        help="Speech depth weights, comma-separated, each tried with every rate weight (default 0).")
    parser.add_argument("--image-qualities", default="2,4,8,12,16,20", type=common.number_list(int),
                        help="Image quality levels, comma-separated (default 2,4,8,12,16,20).")
    parser.add_argument("--speech-qualities", default="1,2,4,6,8", type=common.number_list(int),
                        help="Speech quality levels, comma-separated (default 1,2,4,6,8).")
    parser.add_argument("--beams", default="default",
                        help="Comma-separated beam widths, or 'default' for each model's own.")
    args = parser.parse_args()
    if not args.skip_speech:
        common.require_modules(*common.SPEECH_METRICS)

    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO_ROOT))
    from vqcodec.codec import DEFAULT_BEAM

    payload = {"command": common.repro_command(), "machine": common.machine_info(1)}
    for kind, skip, bench, table in (("image", args.skip_images, bench_images, image_table),
                                     ("audio", args.skip_speech, bench_speech, speech_table)):
        if skip:
            continue
        beams = [DEFAULT_BEAM[kind]] if args.beams == "default" else common.numbers(args.beams, int)
        result = bench(args, beams)
        payload["images" if kind == "image" else "speech"] = result
        print(f"\n{result['data']} ({len(result['files'])} files, model {result['model']}):\n")
        print(table(result))
    if args.out:
        common.save_json(args.out, payload)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
