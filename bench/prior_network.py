"""What the network-fitted tables save over count tables (CodePrior.with_network_tables).

    python bench/prior_network.py [--skip-speech] [--skip-images] [--speech-model speech16k]
                                  [--image-model image] [--levels 4] [--files N]
                                  [--out bench/out/prior_network.json]

For each model the whole training folder is coded at full quality with its views, as `vqcodec
fit-prior` codes it, and two priors are fitted to those codes: count tables alone (CodePrior.fit),
and the same with network-fitted tables where they pay (with_network_tables, which holds every
fifth file out to decide). Both are measured on the evaluation set (speech dev, Kodak) as the
ideal code length in bits per code of each level (sum of -log2 p, contexts restarting at every
container chunk as in a .vq file), and as the saving against fixed width (10 bits) of the first q
levels. --files N keeps the first N files of each folder for a quick check (at least 10: network-
fitted tables are tried only where every fifth file can be held out, from ten files on).
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


def run_model(name: str, train_dir: Path, eval_dir: Path, eval_name: str, levels: int, limit: int | None) -> dict:
    import numpy as np
    import torch

    from vqcodec import Codec
    from vqcodec.codec import AUDIO_CHUNK_FRAMES, IMAGE_CHUNK_ROWS
    from vqcodec.prior import CodePrior
    from vqcodec.priorfit import collect_codes

    torch.set_num_threads(1)
    codec = Codec.load(name, coding="fixed")
    chunk = AUDIO_CHUNK_FRAMES if codec.kind == "audio" else IMAGE_CHUNK_ROWS
    train_files = common.find_media(train_dir, codec.kind, limit)[1]
    eval_files = common.find_media(eval_dir, codec.kind, limit)[1]
    start = time.monotonic()
    planes, groups = collect_codes(codec, train_files, views=True)
    evaluation = collect_codes(codec, eval_files)[0]
    print(f"{name}: coded {len(train_files)} files and their views, {len(eval_files)} to measure "
          f"({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    counted = CodePrior.fit(planes, codec.codebook_size, codec.kind, chunk, groups=groups)
    codebooks = [layer.codebook.detach().float().cpu().numpy() for layer in codec.model.quantizer.layers]
    start = time.monotonic()
    networked = counted.with_network_tables(planes, groups, codebooks, chunk)
    seconds = time.monotonic() - start
    bits = {label: common.bits_per_code(prior, evaluation, chunk, codec.kind)
            for label, prior in (("counts", counted), ("network", networked))}
    fixed = float(np.ceil(np.log2(codec.codebook_size)))
    rows = []
    for level in range(min(levels, counted.num_levels)):
        rows.append({"level": level, "counts_context": counted.levels[level].info.get("chosen", ""),
                     "network_context": networked.levels[level].info.get("chosen", ""),
                     "bits_counts": float(bits["counts"][level]), "bits_network": float(bits["network"][level])})
    savings = [{"q": q, "saving_counts": 1 - float(bits["counts"][:q].mean()) / fixed,
                "saving_network": 1 - float(bits["network"][:q].mean()) / fixed}
               for q in (1, 2, 4, 8, 12, 20) if q <= counted.num_levels]
    return {"model": name, "measured_on": eval_name, "prior_counts": f"{counted.prior_id:08x}",
            "prior_network": f"{networked.prior_id:08x}", "network_seconds": seconds, "levels": rows, "savings": savings}


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the bits per code that network-fitted tables (CodePrior.with_network_tables) save "
               "over count tables alone, level by level, on the speech and photo evaluation sets.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    common.add_model_options(parser, "bench/out/prior_network.json")
    parser.add_argument("--levels", type=common.positive_int, default=4,
                        help="the first N levels, each listed in its own row (default: %(default)s)")
    parser.add_argument("--files", type=common.positive_int, default=None,
                        help="first N files of each folder (at least 10)")
    args = parser.parse_args()
    if args.files is not None and args.files < 10:
        parser.error("--files must be at least 10: network-fitted tables are tried only from ten files on")
    common.require_folders(*([] if args.skip_speech else [DATA / "speech" / "train", DATA / "speech" / "dev"]),
                           *([] if args.skip_images else [DATA / "images" / "train", DATA / "images" / "kodak"]))
    results = []
    if not args.skip_speech:
        results.append(run_model(args.speech_model, DATA / "speech" / "train", DATA / "speech" / "dev",
                                 "speech dev", args.levels, args.files))
    if not args.skip_images:
        results.append(run_model(args.image_model, DATA / "images" / "train", DATA / "images" / "kodak",
                                 "Kodak", args.levels, args.files))
    for result in results:
        print(f"\n{result['model']} on {result['measured_on']}: count tables (prior {result['prior_counts']}) "
              f"against network-fitted tables (prior {result['prior_network']}, {result['network_seconds']:.0f} s "
              "to fit the networks)\n")
        print(common.markdown_table(
            ["level", "count context", "bits/code", "network-fitted context", "bits/code", "saved bits/code"],
            [[r["level"], r["counts_context"], f"{r['bits_counts']:.3f}", r["network_context"],
              f"{r['bits_network']:.3f}", f"{r['bits_counts'] - r['bits_network']:+.3f}"] for r in result["levels"]]))
        print()
        print(common.markdown_table(
            ["q", "saving vs fixed, counts", "saving vs fixed, network-fitted"],
            [[s["q"], f"{100 * s['saving_counts']:.1f} %", f"{100 * s['saving_network']:.1f} %"]
             for s in result["savings"]]))
    print(f"\nReproduce: {common.repro_command()}")
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=1), "command": common.repro_command(),
                                    "results": results})


if __name__ == "__main__":
    main()
