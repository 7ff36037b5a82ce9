"""Stereo files that hold one signal: coded once (this release) against each channel coded apart.

    python bench/channels.py [--data ../shared/data/speech/dev] [--music ../shared/data/music]
                             [--files 20] [-q 8] [--runs 3] [--out bench/out/channels.json]

Variants, each coded with speech16k at -q, on one thread:
  mono            the dev recordings as they are (the reference for size and time);
  same samples    each recording in both channels of 16-bit stereo (a mono recording saved as stereo);
  dithered apart  each channel quantised to 16 bits with its own TPDF dither, so the channels differ
                  by up to two 16-bit steps;
  stereo, then one signal
                  10 s of a stereo music file (resampled to 16 kHz) followed by two recordings in
                  both channels, as a stereo jingle before a mono talk: the 10-second chunks
                  after the jingle are stored once (speech quality is measured after it);
  music stereo    the stereo files of the music folder (first 20 s): most have channels that
                  differ, and should not change; a few are one signal in both channels.
Modes: "shared" is the codec as it is; "apart" switches off both the encoder's same-channel check
and the container's shared-channel flag, which is how every channel was coded before. Both modes
run in the same process. Reported: real file kbps (whole file, header included), encode + decode
time as a multiple of real time (median of --runs), and for speech PESQ-WB and STOI of every
channel against that channel's own input, averaged.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def pcm16(audio: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """`audio` quantised to 16-bit steps, with TPDF dither of one step when `rng` is given."""
    scaled = audio * 32767.0
    if rng is not None:
        scaled = scaled + rng.uniform(-0.5, 0.5, audio.shape) + rng.uniform(-0.5, 0.5, audio.shape)
    return (np.clip(np.round(scaled), -32768, 32767) / 32767.0).astype(np.float32)


def variants(speech_files, music_files, seed: int = 0):
    """(variant name, [(audio (channels, samples), rate, first sample whose speech quality is measured
    or None)])."""
    rng = np.random.default_rng(seed)
    speech = [(sf.read(str(p), dtype="float32")[0], sf.info(str(p)).samplerate) for p in speech_files]
    yield "mono", [(pcm16(s)[None], r, 0) for s, r in speech]
    yield "same samples", [(np.repeat(pcm16(s)[None], 2, axis=0), r, 0) for s, r in speech]
    yield "dithered apart", [(np.stack([pcm16(s, rng), pcm16(s, rng)]), r, 0) for s, r in speech]
    music = []
    for path in music_files:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        if audio.shape[1] == 2:
            music.append((np.ascontiguousarray(audio[: rate * 20].T), rate))
    jingles = [soxr.resample(audio.T, rate, 16000).T.astype(np.float32)[:, :160000]
               for audio, rate in music if audio.shape[1] >= rate * 10]
    talks = []
    for index in range(0, len(speech) - 1, 2) if jingles else ():  # no stereo file of 10 s: no jingle
        (first, rate), (second, _) = speech[index], speech[index + 1]
        talk = pcm16(np.concatenate([first, second]))
        jingle = jingles[index // 2 % len(jingles)]
        talks.append((np.concatenate([jingle, np.stack([talk, talk])], axis=1), rate, jingle.shape[1]))
    yield "stereo, then one signal", talks
    yield "music stereo", [(audio, rate, None) for audio, rate in music]


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the rate, coding speed and speech quality of stereo files that hold one signal, coded "
               "once as this release codes them against each channel coded apart.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = common.REPO_ROOT.parent / "shared" / "data"
    parser.add_argument("--data", default=str(data / "speech" / "dev"),
                        help="folder of speech recordings (FLAC, WAV), read recursively (default: %(default)s)")
    parser.add_argument("--music", default=str(data / "music"),
                        help="folder of music files (FLAC, WAV) whose stereo ones give the jingles and the "
                             "'music stereo' rows (default: %(default)s)")
    parser.add_argument("--model", default="speech16k", help="model name or .safetensors path (default: %(default)s)")
    parser.add_argument("--files", type=common.positive_int, default=20,
                        help="first N speech recordings, sorted by path (default: %(default)s)")
    parser.add_argument("-q", "--quality", type=int, default=8,
                        help="quality level every variant is coded at (default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="timing runs of each encode and decode; the median is reported (default: %(default)s)")
    parser.add_argument("--out", default=str(common.REPO_ROOT / "bench" / "out" / "channels.json"),
                        help="JSON file of every row ('' for none; default: %(default)s)")
    args = parser.parse_args()
    common.require_modules(*common.SPEECH_METRICS)

    import torch

    import vqcodec.codec as codec_module
    from vqcodec import Codec
    from vqcodec.metrics import pesq_wb, stoi_score

    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    shared_rules = (codec_module._same_channels, codec_module._codes_shared)
    apart_rules = (lambda x, tolerance=0.0: False, lambda codes: False)
    speech_files = common.list_files(args.data, (".flac", ".wav"), args.files)
    music_files = common.list_files(args.music, (".flac", ".wav"))

    codec.decode_audio(codec.encode_audio(np.zeros((2, 16000), np.float32), 16000, args.quality))  # warm-up
    rows = []
    for name, items in variants(speech_files, music_files):
        if not items:  # --files 1 makes no talk of two recordings; --music may hold no (long enough) stereo file
            print(f"  {name}: no files, left out", file=sys.stderr, flush=True)
            continue
        for mode, rules in (("shared", shared_rules), ("apart", apart_rules)):
            codec_module._same_channels, codec_module._codes_shared = rules
            size = seconds = time_s = 0.0
            pesq, stoi, flagged = [], [], 0
            for audio, rate, measured_from in items:
                encode_s, data = common.time_median(lambda: codec.encode_audio(audio, rate, args.quality), args.runs)
                decode_s, (decoded, _) = common.time_median(lambda: codec.decode_audio(data), args.runs)
                size += len(data)
                seconds += audio.shape[1] / rate
                time_s += encode_s + decode_s
                flagged += bool(data[43] & 2)
                if measured_from is not None:
                    for channel in range(audio.shape[0]):
                        reference, heard = audio[channel, measured_from:], decoded[channel, measured_from:]
                        pesq.append(pesq_wb(reference, heard, rate))
                        stoi.append(stoi_score(reference, heard, rate))
            row = {"variant": name, "mode": mode, "files": len(items), "seconds": seconds, "flagged": flagged,
                   "kbps": size * 8 / seconds / 1000, "realtime": seconds / time_s,
                   "pesq": common.mean_or_none(pesq), "stoi": common.mean_or_none(stoi)}
            rows.append(row)
            print(f"  {name}, {mode}: {row['kbps']:.3f} kbps, {row['realtime']:.1f}x real time",
                  file=sys.stderr, flush=True)
    codec_module._same_channels, codec_module._codes_shared = shared_rules

    apart = {r["variant"]: r for r in rows if r["mode"] == "apart"}
    headers = ["variant", "mode", "files", "with shared chunks", "kbps", "size vs apart", "enc+dec × real time",
               "time vs apart", "PESQ-WB", "STOI"]
    table = [[r["variant"], r["mode"], r["files"], r["flagged"], r["kbps"], r["kbps"] / apart[r["variant"]]["kbps"],
              r["realtime"], apart[r["variant"]]["realtime"] / r["realtime"], r["pesq"], r["stoi"]] for r in rows]
    print(f"\n{args.model}, -q {args.quality}, one thread, median of {args.runs} runs\n")
    print(common.markdown_table(headers, table, [0, 0, 0, 0, 3, 3, 1, 2, 3, 3]))
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "machine": common.machine_info(threads=1),
                                    "model": codec.name, "quality": args.quality, "rows": rows})
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
