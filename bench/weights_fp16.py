"""Does storing a model's weights as float16 change what it codes? The shipped models, as shipped
(float32) and converted to float16, on the same files in the same run.

    python bench/weights_fp16.py [--files 20] [--images 6] [--speech-qualities 1,4,8]
                                 [--image-qualities 4,12,20] [--out bench/out/weights_fp16.json]

The converted copy keeps the prior and the config; only its id changes (it hashes the weights).
Speech: the first --files dev files, kbps (file bytes x 8 / duration), PESQ-WB, STOI, log-mel L1
and SI-SDR, as bench/speech.py measures them. Images: the first --images Kodak images, bpp and
PSNR and MS-SSIM, as bench/image.py measures them. One run each: quality does not depend on timing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import image as image_bench  # noqa: E402
import speech as speech_bench  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data"


def float16_copy(name: str, folder: Path) -> Path:
    from vqcodec.registry import find_model
    from vqcodec.modelfile import compute_model_id, read_model_files, storage_form, write_model_files

    meta, tensors = read_model_files(find_model(name))
    network = {k: storage_form(v) for k, v in tensors.items() if not k.startswith("prior.")}
    meta["model_id"] = compute_model_id(meta["config"], network)
    network.update({k: v for k, v in tensors.items() if k.startswith("prior.")})
    return write_model_files(folder / f"{name}_fp16.safetensors", meta, network)


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures whether storing a model's weights as float16 changes what it codes: the shipped "
               "models as shipped (float32) and converted to float16, scored on the same files in the same "
               "run.")


def main() -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--files", type=common.positive_int, default=20,
                        help="first N speech dev recordings, sorted by path (default: %(default)s)")
    parser.add_argument("--images", type=common.positive_int, default=6,
                        help="first N Kodak images, sorted by path (default: %(default)s)")
    parser.add_argument("--speech-qualities", default="1,4,8", type=common.number_list(int),
                        help="speech16k quality levels, comma-separated (default: %(default)s)")
    parser.add_argument("--image-qualities", default="4,12,20", type=common.number_list(int),
                        help="image quality levels, comma-separated (default: %(default)s)")
    parser.add_argument("--out", default=None, help="also write the rows to this JSON file (default: none)")
    args = parser.parse_args()
    common.require_modules(*common.SPEECH_METRICS)

    import torch

    from vqcodec import Codec

    torch.set_num_threads(1)
    speech_rows, image_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = speech_bench.load_clips(common.list_files(DATA / "speech" / "dev", (".flac", ".wav"), args.files), tmp)
        pictures = [image_bench.Picture(p) for p in common.list_files(DATA / "images" / "kodak", (".png",), args.images)]
        for label, model in (("float32 (shipped)", "speech16k"), ("float16", float16_copy("speech16k", tmp))):
            codec = Codec.load(str(model))
            for quality in (int(q) for q in args.speech_qualities.split(",")):
                row = speech_bench.score(speech_bench.bench_ours(clips, codec, quality, 1), clips)
                speech_rows.append({"weights": label, "q": quality, **row})
        for label, model in (("float32 (shipped)", "image"), ("float16", float16_copy("image", tmp))):
            codec = Codec.load(str(model))
            qualities = [int(q) for q in args.image_qualities.split(",")]
            for row in image_bench.run_ours(codec, pictures, qualities, 1, label=label):
                image_rows.append({"weights": label, "q": row["quality"], "bpp": row["bpp"], "psnr": row["psnr"],
                                   "ms_ssim": row["ms_ssim"]})

    print(f"speech16k, first {len(clips)} dev files:\n")
    print(common.markdown_table(["weights", "q", "kbps", "PESQ-WB", "STOI", "log-mel L1", "SI-SDR dB"],
                                [[r["weights"], r["q"], r["kbps"], r["pesq_wb"], r["stoi"], r["log_mel_l1"],
                                  r["si_sdr_db"]] for r in speech_rows], digits=[0, 0, 3, 3, 4, 4, 2]))
    print(f"\nimage, first {len(pictures)} Kodak images:\n")
    print(common.markdown_table(["weights", "q", "bpp", "PSNR dB", "MS-SSIM"],
                                [[r["weights"], r["q"], r["bpp"], r["psnr"], r["ms_ssim"]] for r in image_rows],
                                digits=[0, 0, 4, 3, 4]))
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "speech": speech_rows, "image": image_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
