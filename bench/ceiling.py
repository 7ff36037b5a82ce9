"""Where an image model's quality is capped: the autoencoder itself, or the quantiser.

    python bench/ceiling.py [--data ../shared/data/images/kodak] [--model image] [--qualities 8,12,16,20]
                            [--images N] [--out bench/out/ceiling.json]

For every image, PSNR over RGB of the decoder's output from (a) the encoder's latents themselves,
unquantised: the autoencoder's ceiling, which no number of codebooks can pass; and (b) the latents
after the first q codebooks (greedy codes, every latent cell at full depth), with the relative
squared latent error left after them. The images are coded whole (no tiles, so up to 1024 pixels a
side). One table row per image and the mean; the gap between the ceiling and the highest quality
says how much more codebooks could still buy.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from image import Picture, psnr  # noqa: E402

REPO_ROOT = common.REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "images" / "kodak"))
    parser.add_argument("--model", default="image")
    parser.add_argument("--qualities", default="8,12,16,20")
    parser.add_argument("--images", type=int, default=None, help="first N images only")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "out" / "ceiling.json"))
    args = parser.parse_args()

    import torch

    from vqcodec import Codec

    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    model, rvq = codec.model, codec.model.quantizer
    qualities = [int(q) for q in args.qualities.split(",")]
    pictures = [Picture(p) for p in common.list_files(args.data, (".png",), args.images)]
    hop = codec.hop

    def decoded_psnr(latents, picture, height, width) -> float:
        pixels = model.decoder(latents)[0, :, :height, :width].clamp(0, 1)
        return psnr(picture.rgb, (pixels * 255).round().byte().permute(1, 2, 0).numpy())

    rows, records = [], []
    with torch.inference_mode():
        for picture in pictures:
            height, width, _ = picture.rgb.shape
            padded = np.pad(picture.rgb, ((0, -height % hop), (0, -width % hop), (0, 0)), mode="edge")
            latents = model.encoder(torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255)
            record = {"image": picture.name, "ceiling": decoded_psnr(latents, picture, height, width)}
            energy = float(latents.pow(2).sum())
            for quality in qualities:
                quantized = rvq.decode_cells(rvq.encode_cells(latents, quality))
                record[f"q{quality}"] = decoded_psnr(quantized, picture, height, width)
                record[f"q{quality}_latent_error"] = float((latents - quantized).pow(2).sum()) / energy
            records.append(record)
            rows.append([picture.name, record["ceiling"]] + [record[f"q{q}"] for q in qualities]
                        + [record["ceiling"] - record[f"q{qualities[-1]}"]])
            print(f"  {picture.name}: ceiling {record['ceiling']:.2f} dB", file=sys.stderr, flush=True)
    means = ["mean"] + [float(np.mean([r[i] for r in rows])) for i in range(1, len(rows[0]))]
    headers = ["image", "unquantised"] + [f"q{q}" for q in qualities] + [f"gap to q{qualities[-1]}"]
    print(f"PSNR (RGB, dB) of the decoded latents, model {codec.name} ({codec.model_id.hex()}), "
          f"{len(pictures)} images from {args.data}\n")
    print(common.markdown_table(headers, rows + [means], digits=2))
    print("\nRelative squared latent error left: "
          + ", ".join(f"q{q} {np.mean([r[f'q{q}_latent_error'] for r in records]):.4f}" for q in qualities))
    print(f"\nReproduce: {common.repro_command()}")
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "model": codec.model_id.hex(),
                                    "images": records})


if __name__ == "__main__":
    main()
