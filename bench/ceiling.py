"""Where a model's quality is capped: the autoencoder itself, or the quantiser.

    python bench/ceiling.py [--data ../shared/data/images/kodak] [--model image] [--qualities 8,12,16,20]
                            [--images N] [--out bench/out/ceiling.json]
    python bench/ceiling.py --speech [--data ../shared/data/speech/dev] [--model speech16k]
                            [--qualities 1,4,8] [--files N] [--out bench/out/ceiling_speech.json]

Images: for every image, PSNR over RGB of the decoder's output from (a) the encoder's latents
themselves, unquantised: the autoencoder's ceiling, which no number of codebooks can pass; and (b)
the latents after the first q codebooks (greedy codes, every latent cell at full depth), with the
relative squared latent error left after them. The images are coded whole (no tiles, so up to 1024
pixels a side). One table row per image and the mean; the gap between the ceiling and the highest
quality says how much more codebooks could still buy.

Speech (--speech): the same two decodings of every recording, coded whole at the model rate, scored
against the input by PESQ-WB, STOI and log-mel L1 distance; one row for the unquantised latents and
one per quality, means over the recordings.
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


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures where a model's quality is capped: the quality its decoder gives from the encoder's "
               "unquantised latents (the autoencoder's ceiling) against that after the first q codebooks, on "
               "photos or, with --speech, on recordings.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--speech", action="store_true", help="a speech model on recordings instead of photos")
    parser.add_argument("--data", default=None, help="default: Kodak, or the speech dev set with --speech")
    parser.add_argument("--model", default=None, help="default: image, or speech16k with --speech")
    parser.add_argument("--qualities", default=None, type=common.number_list(int),
                        help="default: 8,12,16,20, or 1,4,8 with --speech")
    parser.add_argument("--images", "--files", dest="limit", type=common.positive_int, default=None,
                        help="first N files only")
    parser.add_argument("--out", default=None, help="JSON of every file's numbers ('' for none; default: "
                                                    "bench/out/ceiling.json, or ceiling_speech.json with --speech)")
    args = parser.parse_args()
    data = REPO_ROOT.parent / "shared" / "data"
    args.data = args.data or str(data / "speech" / "dev" if args.speech else data / "images" / "kodak")
    args.model = args.model or ("speech16k" if args.speech else "image")
    args.qualities = args.qualities or ("1,4,8" if args.speech else "8,12,16,20")
    if args.out is None:
        args.out = str(REPO_ROOT / "bench" / "out" / ("ceiling_speech.json" if args.speech else "ceiling.json"))
    if args.speech:
        common.require_modules(*common.SPEECH_METRICS)
        speech_ceiling(args)
        return

    import torch

    from vqcodec import Codec

    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    model, rvq = codec.model, codec.model.quantizer
    qualities = [int(q) for q in args.qualities.split(",")]
    pictures = [Picture(p) for p in common.list_files(args.data, (".png",), args.limit)]
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


def speech_ceiling(args) -> None:
    import torch

    from vqcodec import Codec
    from vqcodec.soundio import read_audio

    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    model, rvq, rate = codec.model, codec.model.quantizer, codec.sample_rate
    qualities = [int(q) for q in args.qualities.split(",")]
    files = common.list_files(args.data, (".flac", ".wav"), args.limit)
    settings = ["unquantised"] + [f"q{q}" for q in qualities]
    scores = {name: {"pesq": [], "stoi": [], "log_mel": []} for name in settings}
    records = []
    with torch.inference_mode():
        for path in files:
            audio = read_audio(path, rate)[0].mean(axis=0)
            padded = np.pad(audio, (0, -audio.size % codec.hop))
            latents = model.encoder(torch.from_numpy(padded)[None, None])
            decodings = {"unquantised": latents}
            for quality in qualities:
                decodings[f"q{quality}"] = rvq.decode_cells(rvq.encode_cells(latents, quality))
            record = {"file": path.name}
            for name, coded in decodings.items():
                output = model.decoder(coded)[0, 0, :audio.size].numpy()
                values = {"pesq": common.pesq_wb(audio, output, rate), "stoi": common.stoi_score(audio, output, rate),
                          "log_mel": common.log_mel_l1(audio, output, rate)}
                for key, value in values.items():
                    scores[name][key].append(value)
                record[name] = values
            records.append(record)
            print(f"  {path.name}: unquantised PESQ {record['unquantised']['pesq']}", file=sys.stderr, flush=True)
    rows = [[name, common.mean_or_none(scores[name]["pesq"]), common.mean_or_none(scores[name]["stoi"]),
             common.mean_or_none(scores[name]["log_mel"])] for name in settings]
    print(f"Decoded latents, model {codec.name} ({codec.model_id.hex()}), {len(files)} recordings from {args.data}, "
          "each coded whole; greedy codes, every frame at full depth\n")
    print(common.markdown_table(["latents", "PESQ-WB", "STOI", "log-mel L1"], rows, digits=[0, 2, 3, 3]))
    print(f"\nReproduce: {common.repro_command()}")
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "model": codec.model_id.hex(),
                                    "files": records})


if __name__ == "__main__":
    main()
