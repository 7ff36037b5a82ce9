"""How many bits a learned network prior could save over the shipped context tables (speech).

    python bench/prior_headroom.py [--model speech16k] [--levels 0,1,2,3] [--hidden 32,256] [--epochs 12]
                                   [--out bench/out/prior_headroom.json]

The speech training folder is coded at full quality (greedy codes, no extra views) and split into
files to fit on and every fifth file held out, as `CodePrior.fit` splits it. On the held-out files
it measures, per codebook level, the ideal code length in bits per code (sum of -log2 p) of:

* the unigram of each level (fitted on the fit files);
* the context tables `CodePrior.fit` chooses, fitted on the fit files alone (the shipped prior is
  fitted to the fit files' speed-perturbed views as well, which these rows leave out for all of them);
* float MLPs (one hidden layer, `--hidden` units) trained on the fit files with cross-entropy, for
  three sets of inputs, each the codebook vectors of known codes:
  - `cur`: the coarser levels' sum at this frame (what level-by-level decoding knows at once);
  - `win`: the same at the previous, this and the next frame (still known for a whole level at once,
    so a level can be coded in one batch);
  - `win+prev`: `win` plus this level's vector at the previous frame (needs frame-by-frame decoding).
  Level 0 has no coarser level; its inputs are the level-0 vectors of the two previous frames.

This is a float upper-bound probe, not a codec: the shipped prior must reproduce its probabilities
bit for bit on every machine (docs/ENTROPY.md), so a network prior would have to run in integer
arithmetic, and the MACs per code column says what it would cost the coder.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data"
FEATURES = ("cur", "win", "win+prev")


def level_inputs(torch, books, plane: np.ndarray, level: int, features: str):
    """Inputs (frames, dims) of one mono plane (levels, frames) for predicting `plane[level]`."""
    frames = plane.shape[1]
    shifted = lambda v, n: torch.cat([torch.zeros(n, v.shape[1]), v[:-n]]) if n > 0 else torch.cat([v[-n:], torch.zeros(-n, v.shape[1])])  # noqa: E731
    if level == 0:
        v = books[0][torch.from_numpy(plane[0])]
        return torch.cat([shifted(v, 1), shifted(v, 2)], 1)
    coarse = torch.zeros(frames, books[0].shape[1])
    for i in range(level):
        coarse += books[i][torch.from_numpy(plane[i])]
    if features == "cur":
        return coarse
    parts = [coarse, shifted(coarse, 1), shifted(coarse, -1)]
    if features == "win+prev":
        parts.append(shifted(books[level][torch.from_numpy(plane[level])], 1))
    return torch.cat(parts, 1)


def train_mlp(torch, x_fit, y_fit, x_test, y_test, hidden: int, epochs: int, k: int) -> float:
    """Best held-out bits per code over `epochs` epochs of a one-hidden-layer MLP."""
    nn = torch.nn
    net = nn.Sequential(nn.Linear(x_fit.shape[1], hidden), nn.GELU(), nn.Linear(hidden, k))
    optimiser = torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-5)
    best = float("inf")
    for _ in range(epochs):
        order = torch.randperm(len(y_fit))
        for start in range(0, len(order), 512):
            batch = order[start:start + 512]
            loss = nn.functional.cross_entropy(net(x_fit[batch]), y_fit[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            best = min(best, float(nn.functional.cross_entropy(net(x_test), y_test)) / np.log(2))
    return best


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures how many bits per code a learned network prior could save over the shipped context "
               "tables, on held-out speech codes.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--model", default="speech16k",
                        help="audio model name or .safetensors path whose codes are measured (default: %(default)s)")
    parser.add_argument("--data", default=str(DATA / "speech" / "train"),
                        help="folder of audio to code (at least 10 files; every fifth held out) "
                             "(default: %(default)s)")
    parser.add_argument("--levels", default="0,1,2,3", type=common.number_list(int),
                        help="codebook levels to measure, comma-separated, 0 the coarsest (default: %(default)s)")
    parser.add_argument("--hidden", default="32,256", type=common.number_list(int),
                        help="hidden units of the MLPs, comma-separated: one MLP per size and set of inputs "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", type=common.positive_int, default=12,
                        help="training epochs of each MLP; its best held-out bits over them are reported "
                             "(default: %(default)s)")
    parser.add_argument("--out", default="bench/out/prior_headroom.json",
                        help="JSON file of every row ('' for none; default: %(default)s)")
    args = parser.parse_args()
    common.require_folders(args.data)
    import torch

    from vqcodec import Codec
    from vqcodec.codec import AUDIO_CHUNK_FRAMES
    from vqcodec.prior import CodePrior, holdout_mask
    from vqcodec.priorfit import collect_codes

    torch.set_num_threads(1)
    torch.manual_seed(0)
    codec = Codec.load(args.model, coding="fixed")
    if codec.kind != "audio":
        sys.exit("prior_headroom.py: the model must be an audio model")
    k = codec.codebook_size
    _, files = common.find_media(args.data, "audio")
    start = time.monotonic()
    planes, groups = collect_codes(codec, files)
    held = holdout_mask(groups, 5)
    if held is None:
        sys.exit(f"prior_headroom.py: {len(files)} audio files in {args.data}; at least 10 are needed (every fifth held out)")
    fit_planes = [p for p, h in zip(planes, held) if not h]
    test_planes = [p for p, h in zip(planes, held) if h]
    print(f"coded {len(files)} files in {time.monotonic() - start:.0f} s: {len(fit_planes)} planes to fit, "
          f"{len(test_planes)} held out", file=sys.stderr, flush=True)
    tables = CodePrior.fit(fit_planes, k, "audio", AUDIO_CHUNK_FRAMES,
                           groups=[g for g, h in zip(groups, held) if not h])
    table_bits = common.bits_per_code(tables, test_planes, AUDIO_CHUNK_FRAMES, "audio")
    books = [layer.codebook.detach().float().cpu() for layer in codec.model.quantizer.layers]
    hidden_sizes = [int(h) for h in args.hidden.split(",")]
    columns = [f"{features}/{hidden}" for features in FEATURES for hidden in hidden_sizes]
    rows = []
    for level in (int(v) for v in args.levels.split(",")):
        y_fit = torch.from_numpy(np.concatenate([p[level] for p in fit_planes])).long()
        y_test = torch.from_numpy(np.concatenate([p[level] for p in test_planes])).long()
        unigram = torch.bincount(y_fit, minlength=k).double() + 0.5
        row = {"level": level, "unigram": float(-torch.log2(unigram[y_test] / unigram.sum()).mean()),
               "tables": float(table_bits[level]), "table_sources": "+".join(tables.levels[level].sources) or "unigram",
               "inputs": "prev2" if level == 0 else "coarser levels", "bits": {}, "macs": {}}
        for features in FEATURES[:1] if level == 0 else FEATURES:  # level 0 has one set of inputs (prev2)
            x_fit = torch.cat([level_inputs(torch, books, p, level, features) for p in fit_planes])
            x_test = torch.cat([level_inputs(torch, books, p, level, features) for p in test_planes])
            scale = x_fit.std(0).clamp_min(1e-6)
            for hidden in hidden_sizes:
                column = f"{features}/{hidden}"
                row["bits"][column] = train_mlp(torch, x_fit / scale, y_fit, x_test / scale, y_test, hidden, args.epochs, k)
                row["macs"][column] = x_fit.shape[1] * hidden + hidden * k
                print(f"level {level} {column} ({row['inputs']}): {row['bits'][column]:.3f} bits "
                      f"(tables {row['tables']:.3f})", file=sys.stderr, flush=True)
        rows.append(row)
    headers = ["level", "unigram", "tables (sources)"] + [f"MLP {c}" for c in columns] + ["MACs per code"]
    table = []
    for row in rows:
        note = " (prev2)" if row["inputs"] == "prev2" else ""
        cells = [row["level"], f"{row['unigram']:.3f}", f"{row['tables']:.3f} ({row['table_sources']})"]
        cells += [f"{row['bits'][c]:.3f}{note}" if c in row["bits"] else "—" for c in columns]
        cells.append(" / ".join(f"{macs:,}" for macs in row["macs"].values()))
        table.append(cells)
    print(common.markdown_table(headers, table))
    if args.out:
        common.save_json(args.out, {"machine": common.machine_info(threads=1), "command": common.repro_command(),
                                    "rows": rows})


if __name__ == "__main__":
    main()
