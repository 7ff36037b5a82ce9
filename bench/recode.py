"""Lower rates from a `.vq` file alone (`vqcodec encode talk.vq small.vq --bitrate`, Codec.recode)
against encoding the media again at the same target.

    python bench/recode.py [--speech ../shared/data/speech/dev] [--files 20] [--kbps 0.5,1,1.5,2]
                           [--images ../shared/data/images/kodak] [--image-files 12]
                           [--bpp 0.1,0.2,0.3] [--out bench/out/recode.json]

Each file is encoded once at the default settings of the top quality (speech -q 8, photos -q 20:
the file a user would keep). Then, for each target and on one thread:
  encode  the media encoded again with the target (encode --bitrate / --bpp), as the reference;
  recode  the top file recoded to the target, without the media (Codec.recode);
  cut     the top file cut to the highest -q whose file fits with every cell keeping its levels
          (depth weight 0: what cutting by level alone gives), for comparison.
Per row: mean real rate (whole file with header), quality against the original media (speech:
PESQ-WB, STOI, log-mel L1; photos: PSNR over RGB), and the mean seconds each way takes per file
(encode: the whole encoder with its search; recode: reading, cutting and entropy coding).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data"


def cut_by_level(codec, top: bytes, target: float) -> bytes | None:
    """The highest -q whose plain cut (every cell keeping its levels) fits `target`."""
    from vqcodec.codec import read_info

    weight, codec.depth_weight = codec.depth_weight, 0.0
    try:
        info = read_info(top)
        units = info.duration * 1000 if info.kind == "audio" else info.width * info.height
        for quality in range(info.quality, 0, -1):
            data = codec.recode(top, quality)
            if len(data) * 8 / units <= target:
                return data
        return None
    finally:
        codec.depth_weight = weight


def run(kind: str, codec, items, targets, top_quality: int, measure, encode_at) -> list[dict]:
    from vqcodec.ratecontrol import RateUnreachable

    rows = []
    tops = [codec.encode_image(item, top_quality) if kind == "image" else codec.encode_audio(*item, top_quality)
            for item in items]
    for target in targets:
        results = {"encode": [], "recode": [], "cut": []}
        for item, top in zip(items, tops):
            try:
                encode_s, fresh = common.time_median(lambda: encode_at(item, target), 1)
                recode_s, recoded = common.time_median(lambda: codec.recode(top, max_rate=target), 1)
            except RateUnreachable:
                continue
            cut = cut_by_level(codec, top, target)
            results["encode"].append({"seconds": encode_s, **measure(item, fresh)})
            results["recode"].append({"seconds": recode_s, **measure(item, recoded)})
            if cut is not None:
                results["cut"].append(measure(item, cut))
        for way, values in results.items():
            if values:
                keys = values[0].keys()
                rows.append({"kind": kind, "target": target, "way": way, "files": len(values),
                             **{k: float(np.mean([v[k] for v in values])) for k in keys}})
        print(f"  {kind} {target}: {[(r['way'], r['files']) for r in rows if r['target'] == target]}",
              file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", default=str(DATA / "speech" / "dev"))
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--kbps", default="0.5,1,1.5,2")
    parser.add_argument("--images", default=str(DATA / "images" / "kodak"))
    parser.add_argument("--image-files", type=int, default=12)
    parser.add_argument("--bpp", default="0.1,0.2,0.3")
    parser.add_argument("--out", default=str(common.REPO_ROOT / "bench" / "out" / "recode.json"))
    args = parser.parse_args()

    import soundfile as sf
    import torch
    from PIL import Image

    from vqcodec import Codec
    from vqcodec.metrics import log_mel_l1, pesq_wb, psnr, stoi_score

    torch.set_num_threads(1)
    rows = []
    if args.files:
        speech = Codec.load("speech16k")
        files = common.list_files(args.speech, (".flac", ".wav"), args.files)
        items = [(sf.read(str(p), dtype="float32")[0], sf.info(str(p)).samplerate) for p in files]

        def measure_speech(item, data):
            audio, rate = item
            decoded = speech.decode_audio(data)[0][0]
            seconds = audio.size / rate
            return {"rate": len(data) * 8 / seconds / 1000, "pesq": pesq_wb(audio, decoded, rate),
                    "stoi": stoi_score(audio, decoded, rate), "log_mel": log_mel_l1(audio, decoded)}
        rows += run("audio", speech, items, common.numbers(args.kbps), speech.num_codebooks, measure_speech,
                    lambda item, target: speech.encode_audio(*item, speech.num_codebooks, max_kbps=target))
    if args.image_files:
        image = Codec.load("image")
        files = common.list_files(args.images, (".png",), args.image_files)
        items = [Image.open(p).convert("RGB") for p in files]

        def measure_image(item, data):
            decoded = np.asarray(image.decode_image(data).convert("RGB"))
            return {"rate": len(data) * 8 / (item.width * item.height), "psnr": psnr(np.asarray(item), decoded)}
        rows += run("image", image, items, common.numbers(args.bpp), image.num_codebooks, measure_image,
                    lambda item, target: image.encode_image(item, image.num_codebooks, max_bpp=target))

    for kind, headers, keys, digits in (
            ("audio", ["target kbps", "way", "files", "kbps", "PESQ-WB", "STOI", "log-mel", "s per file"],
             ["rate", "pesq", "stoi", "log_mel", "seconds"], [2, 0, 0, 3, 3, 3, 3, 3]),
            ("image", ["target bpp", "way", "files", "bpp", "PSNR dB", "s per file"],
             ["rate", "psnr", "seconds"], [2, 0, 0, 4, 2, 3])):
        table = [[r["target"], r["way"], r["files"], *[r.get(k) for k in keys]] for r in rows if r["kind"] == kind]
        if table:
            print(f"\n{kind}, one thread\n")
            print(common.markdown_table(headers, table, digits))
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "machine": common.machine_info(threads=1),
                                    "rows": rows})
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
