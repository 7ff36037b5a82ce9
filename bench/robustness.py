"""Speech robustness benchmark: input level and background noise, where a codec trained on clean,
normalised speech goes wrong.

    python bench/robustness.py [--data ../shared/data/speech/dev] [--files 20]
                               [--models speech16k[,PATH...]] [--qualities 1,6] [--levels 0,-12,-24]
                               [--peaks 0.5,0.99,2,4] [--depth-weights default]
                               [--out bench/out/robustness.json]

Two sets of inputs:

* "dev" (the --data folder's name): the first --files files of the clean dev speakers;
* "noisy": tests/data/speech.flac, a LibriSpeech test-other utterance with background noise.

Each is coded at each input level (a gain in dB applied before encoding; the reference is the
scaled input) and each quality. With --peaks instead, each clip is scaled to each peak (its
largest absolute sample): peaks above 1.0 are float audio beyond full scale, which the networks
never saw in training (README, "Limits"). One row per model, set, level and quality:

* log-mel L1 between the scaled input and the decoded output (bench/common.py);
* pause level (common.pause_level_db): how much louder (positive) or quieter (negative) the
  output is than the input in the input's quietest quarter of frames, in dB over the 80 mel
  bands, file by file. A codec that gates background noise scores well below 0 dB; one that
  adds hiss, above.

Several --models are measured in the same run, so a retrained model can be compared with the one
it replaces (for instance the previous release, extracted with `git show REV:models/...`), and
several --depth-weights (Codec.depth_weight; "default" is the model's own), so that per-cell depth
can be checked for gating quiet frames.
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
NOISY_SAMPLE = common.REPO_ROOT / "tests" / "data" / "speech.flac"


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures how the speech codec copes with input levels and background noise that a codec "
               "trained on clean, normalised speech can get wrong: log-mel distance and how loud pauses come "
               "out, per model, input set, level and quality.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--data", default=str(DATA / "speech" / "dev"),
                        help="Folder of clean speech (FLAC, WAV), read recursively; the set is named after it "
                             "(default %(default)s).")
    parser.add_argument("--files", type=common.positive_int, default=20,
                        help="Use the first N files of --data, sorted by path (default 20).")
    parser.add_argument("--models", default="speech16k",
                        help="Comma-separated model names or paths (default %(default)s).")
    parser.add_argument("--qualities", default="1,6", type=common.number_list(int),
                        help="Comma-separated quality levels (default 1,6).")
    parser.add_argument("--levels", default="0,-12,-24", type=common.number_list(),
                        help="Comma-separated input gains in dB (default %(default)s).")
    parser.add_argument("--peaks", default=None, type=common.number_list(),
                        help="Comma-separated sample peaks to scale each clip to (replaces --levels).")
    parser.add_argument("--depth-weights", default="default",
                        help="Comma-separated encoder depth weights, or 'default' for the codec's own (the default).")
    parser.add_argument("--out", default=str(common.REPO_ROOT / "bench" / "out" / "robustness.json"),
                        help="JSON file of every row, '' for none (default %(default)s).")
    args = parser.parse_args()

    import torch

    from vqcodec import Codec
    from vqcodec.soundio import read_audio

    torch.set_num_threads(1)
    sets = {Path(args.data).name: [read_audio(p, 16000)[0][0] for p in common.list_files(args.data, ["flac", "wav"], args.files)],
            "noisy": [read_audio(NOISY_SAMPLE, 16000)[0][0]]}
    qualities = [int(q) for q in args.qualities.split(",")]
    by_peak = args.peaks is not None
    levels = [float(level) for level in (args.peaks if by_peak else args.levels).split(",")]

    def scale(clip: np.ndarray, level: float) -> np.ndarray:
        gain = level / max(float(np.abs(clip).max()), 1e-9) if by_peak else 10 ** (level / 20)
        return (clip * gain).astype(np.float32)
    rows, records = [], []
    settings = [(model, weight) for model in args.models.split(",") for weight in args.depth_weights.split(",")]
    for model, weight in settings:
        codec = Codec.load(model)
        if weight != "default":
            codec.depth_weight = float(weight)
        label = f"{codec.name} {codec.model_id.hex()[:8]}" + (f" depth {weight}" if weight != "default" else "")
        for set_name, clips in sets.items():
            for level in levels:
                scaled_clips = [scale(clip, level) for clip in clips]
                for quality in qualities:
                    mel, pause = [], []
                    for scaled in scaled_clips:
                        decoded = codec.decode_audio(codec.encode_audio(scaled[None], 16000, quality))[0][0]
                        mel.append(common.log_mel_l1(scaled, decoded))
                        pause.append(common.pause_level_db(scaled, decoded))
                    record = {"model": codec.name, "model_id": codec.model_id.hex(), "depth_weight": codec.depth_weight,
                              "set": set_name, "files": len(clips),
                              **({"peak": level} if by_peak else {"level_db": level}), "quality": quality,
                              "log_mel_l1": float(np.mean(mel)), "pause_level_db": float(np.mean(pause))}
                    records.append(record)
                    rows.append([label, f"{set_name} ({len(clips)})", f"{level:g}" if by_peak else f"{level:+.0f}",
                                 f"q{quality}", record["log_mel_l1"], record["pause_level_db"]])
                    print(rows[-1], file=sys.stderr, flush=True)
    machine = common.machine_info(threads=1)
    print(f"Speech robustness, {machine['cpu']}, 1 thread, torch {machine.get('torch')}\n")
    print(common.markdown_table(["model", "set (files)", "input peak" if by_peak else "input dB", "quality", "log-mel L1", "pause level dB"],
                                rows, digits=[0, 0, 0, 0, 3, 1]))
    command = common.repro_command()
    print(f"\nReproduce: {command}")
    if args.out:
        common.save_json(args.out, {"machine": machine, "command": command, "rows": records})


if __name__ == "__main__":
    main()
