"""What fitting the prior to extra views of each training file saves (vqcodec.priorfit.prior_views).

    python bench/prior_views.py [--skip-speech] [--skip-images] [--speech-model speech16k] [--image-model image]
                                [--files N] [--out bench/out/prior_views.json]

For each model, the training folder is split the way `vqcodec train` splits it (every 20th file is
the network's validation set, which it never trained on). Two priors are fitted to the other files:
one to the files alone, and one to the files and their views (photos turned a quarter turn and
scaled to 71 % and 50 %; recordings played at 1.1x and 0.9x speed). Both are then measured, as the
ideal code length in bits per code (sum of -log2 p, contexts restarting at every container chunk as
in a .vq file), on the network's validation files and on the evaluation set (speech dev, Kodak),
at several quality levels: the first q levels of the codes at full quality. Fixed width is 10 bits.
--files N keeps the first N files of each set, after the split, for a quick check.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data"


def run_model(name: str, train_dir: Path, eval_dir: Path, eval_name: str, qualities: list[int],
              limit: int | None) -> list[dict]:
    from vqcodec import Codec
    from vqcodec.codec import AUDIO_CHUNK_FRAMES, IMAGE_CHUNK_ROWS
    from vqcodec.prior import CodePrior
    from vqcodec.data import split_files
    from vqcodec.priorfit import collect_codes

    codec = Codec.load(name, coding="fixed")
    chunk = AUDIO_CHUNK_FRAMES if codec.kind == "audio" else IMAGE_CHUNK_ROWS
    _, files = common.find_media(train_dir, codec.kind)
    fit_files, network_val = (part[:limit] for part in split_files(files))
    eval_files = common.find_media(eval_dir, codec.kind, limit)[1]
    start = time.monotonic()
    with_views, groups = collect_codes(codec, fit_files, views=True)
    # a file's own planes come first among its views (the speech here is mono)
    originals = [plane for plane, group, previous in zip(with_views, groups, [None] + groups) if group != previous]
    sets = {"network validation": collect_codes(codec, network_val)[0], eval_name: collect_codes(codec, eval_files)[0]}
    print(f"{name}: coded {len(fit_files)} files and their views, {len(network_val)} + {len(eval_files)} files to "
          f"measure ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    priors = {"files": CodePrior.fit(originals, codec.codebook_size, codec.kind, chunk),
              "files + views": CodePrior.fit(with_views, codec.codebook_size, codec.kind, chunk, groups=groups)}
    rows = []
    for set_name, planes in sets.items():
        bits = {variant: common.bits_per_code(prior, planes, chunk, codec.kind) for variant, prior in priors.items()}
        for q in qualities:
            plain, viewed = (float(bits[v][:q].mean()) for v in ("files", "files + views"))
            rows.append({"model": name, "set": set_name, "quality": q, "bits_files": plain,
                         "bits_with_views": viewed, "saving_files": 1 - plain / 10,
                         "saving_with_views": 1 - viewed / 10, "gain": 1 - viewed / plain})
    return rows


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the bits per code saved by fitting the prior to extra views of each training file "
               "(photos turned and scaled, recordings sped up and slowed down) as well as to the files "
               "themselves.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    common.add_model_options(parser, "bench/out/prior_views.json")
    parser.add_argument("--files", type=common.positive_int, default=None, help="first N files of each set")
    args = parser.parse_args()
    common.require_folders(*([] if args.skip_speech else [DATA / "speech" / "train", DATA / "speech" / "dev"]),
                           *([] if args.skip_images else [DATA / "images" / "train", DATA / "images" / "kodak"]))
    import torch

    torch.set_num_threads(1)
    rows = []
    if not args.skip_speech:
        rows += run_model(args.speech_model, DATA / "speech" / "train", DATA / "speech" / "dev", "speech dev", [1, 2, 4, 6, 8],
                          args.files)
    if not args.skip_images:
        rows += run_model(args.image_model, DATA / "images" / "train", DATA / "images" / "kodak", "Kodak", [2, 4, 8, 12, 20],
                          args.files)
    print(common.markdown_table(
        ["model", "measured on", "q", "bits/code, prior fitted to files", "with views", "saving vs fixed", "with views",
         "views save"],
        [[r["model"], r["set"], r["quality"], r["bits_files"], r["bits_with_views"], f"{r['saving_files']:.1%}",
          f"{r['saving_with_views']:.1%}", f"{r['gain']:.1%}"] for r in rows], digits=3))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=1), "command": common.repro_command(),
                                    "rows": rows})


if __name__ == "__main__":
    main()
