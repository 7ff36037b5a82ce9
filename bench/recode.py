"""Lower rates from a `.vq` file alone (`vqcodec encode talk.vq small.vq --bitrate`, Codec.recode)
against encoding the media again at the same target.

    python bench/recode.py [--speech ../shared/data/speech/dev] [--files 20] [--kbps 0.5,1,1.5,2]
                           [--images ../shared/data/images/kodak] [--image-files 12]
                           [--bpp 0.1,0.2,0.3] [--minutes 60] [--out bench/out/recode.json]

Each file is encoded once at the default settings of the top quality (speech -q 8, photos -q 20:
the file a user would keep). Then, for each target and on one thread:
  encode  the media encoded again with the target (encode --bitrate / --bpp), as the reference;
  recode  the top file recoded to the target, without the media (Codec.recode);
  twice   the top file recoded to the largest target first, then that file recoded to the target:
          recoding a file that was already cut (every target but the largest);
  cut     the top file cut to the highest -q whose file fits with every cell keeping its levels
          (depth weight 0: what cutting by level alone gives), for comparison.
Per row: mean real rate (whole file with header), quality against the original media (speech:
PESQ-WB, STOI, log-mel L1; photos: PSNR over RGB), and the mean seconds each way takes per file
(encode: the whole encoder with its search; recode: reading, cutting and entropy coding).

Long audio (--minutes, 0 to skip): the dev recordings joined into one recording of that length,
encoded at -q 8, then recoded to each --kbps target and to -q 4, each in a fresh process (median
of 3 runs), with that process's peak resident memory once the model and file are loaded, and at the end.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO_ROOT.parent / "shared" / "data"


def cut_by_level(codec, top: bytes, target: float) -> bytes | None:
    """The highest -q whose plain cut (every cell keeping its levels) fits `target`."""
    from vqcodec.fileinfo import read_info

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
    largest = max(targets)
    # the files of the largest target, which the "twice" rows recode again (None where it is out of reach)
    middles = [_recode_or_none(codec, top, largest) for top in tops]
    for target in targets:
        results = {"encode": [], "recode": [], "twice": [], "cut": []}
        for item, top, middle in zip(items, tops, middles):
            try:
                encode_s, fresh = common.time_median(lambda: encode_at(item, target), 1)
                recode_s, recoded = common.time_median(lambda: codec.recode(top, max_rate=target), 1)
            except RateUnreachable:
                continue
            cut = cut_by_level(codec, top, target)
            results["encode"].append({"seconds": encode_s, **measure(item, fresh)})
            results["recode"].append({"seconds": recode_s, **measure(item, recoded)})
            twice = _recode_or_none(codec, middle, target) if middle is not None and target < largest else None
            if twice is not None:
                results["twice"].append(measure(item, twice))
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


def _recode_or_none(codec, data: bytes, target: float) -> bytes | None:
    from vqcodec.ratecontrol import RateUnreachable

    try:
        return codec.recode(data, max_rate=target)
    except RateUnreachable:
        return None


# Peak memory from VmHWM: ru_maxrss would carry over the parent's size from before the exec.
_LONG = """
import sys, time, torch
torch.set_num_threads(1)
from vqcodec import Codec
def peak_mib():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
codec = Codec.load("speech16k")
data = open(sys.argv[1], "rb").read()
loaded = peak_mib()
start = time.perf_counter()
out = codec.recode(data, **({"max_rate": float(sys.argv[2])} if sys.argv[2] != "q4" else {"quality": 4}))
print(time.perf_counter() - start, len(out), loaded, peak_mib())
"""


def long_audio(args) -> list[dict]:
    import subprocess
    import tempfile

    import torch
    from seek import long_recording

    from vqcodec import Codec

    torch.set_num_threads(1)
    audio = long_recording(args.speech, args.minutes, 16000)
    seconds = audio.size / 16000
    codec = Codec.load("speech16k")
    encode_s, top = common.time_median(lambda: codec.encode_audio(audio, 16000, 8), 1)
    rows = [{"target": "encode -q 8 from the audio", "seconds": encode_s, "kbps": len(top) * 8 / seconds / 1000,
             "loaded_mib": None, "peak_mib": None}]
    with tempfile.NamedTemporaryFile(suffix=".vq") as file:
        file.write(top)
        file.flush()
        for target in [*[str(t) for t in common.numbers(args.kbps)], "q4"]:
            runs = []
            for _ in range(3):
                result = subprocess.run([sys.executable, "-c", _LONG, file.name, target], capture_output=True,
                                        text=True, env=dict(os.environ, PYTHONPATH=str(common.REPO_ROOT)))
                if result.returncode:
                    raise SystemExit(result.stderr)
                runs.append([float(v) for v in result.stdout.split()])
            runs.sort()
            recode_s, size, loaded, peak = runs[1]
            rows.append({"target": f"recode to {target} kbps" if target != "q4" else "recode to -q 4",
                         "seconds": recode_s, "kbps": size * 8 / seconds / 1000, "loaded_mib": loaded,
                         "peak_mib": peak})
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the rate, quality and time of lowering a .vq file's rate from the file alone (vqcodec "
               "encode talk.vq small.vq --bitrate, Codec.recode) against encoding the media again at the same "
               "target, and the memory recoding an hour of speech takes.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", default=str(DATA / "speech" / "dev"),
                        help="folder of speech recordings (FLAC, WAV), coded with speech16k and joined into the "
                             "long recording (default: %(default)s)")
    parser.add_argument("--files", type=common.at_least(0), default=20,
                        help="first N recordings of --speech, sorted by path; 0 for no speech rows "
                             "(default: %(default)s)")
    parser.add_argument("--kbps", default="0.5,1,1.5,2", type=common.number_list(),
                        help="speech targets in kbps, comma-separated, for the files and the long recording "
                             "(default: %(default)s)")
    parser.add_argument("--images", default=str(DATA / "images" / "kodak"),
                        help="folder of PNG photos, coded with the image model (default: %(default)s)")
    parser.add_argument("--image-files", type=common.at_least(0), default=12,
                        help="first N photos of --images, sorted by path; 0 for no image rows (default: %(default)s)")
    parser.add_argument("--bpp", default="0.1,0.2,0.3", type=common.number_list(),
                        help="photo targets in bits per pixel, comma-separated (default: %(default)s)")
    parser.add_argument("--minutes", type=common.seconds_or_minutes(zero=True), default=60.0,
                        help="minutes of the long recording whose recoding time and memory are measured; "
                             "0 to skip it (default: %(default)s)")
    parser.add_argument("--out", default=str(common.REPO_ROOT / "bench" / "out" / "recode.json"),
                        help="JSON file of every row ('' for none; default: %(default)s)")
    args = parser.parse_args()
    if args.files:
        common.require_modules(*common.SPEECH_METRICS)

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

    long_rows = long_audio(args) if args.minutes else []
    for kind, headers, keys, digits in (
            ("audio", ["target kbps", "way", "files", "kbps", "PESQ-WB", "STOI", "log-mel", "s per file"],
             ["rate", "pesq", "stoi", "log_mel", "seconds"], [2, 0, 0, 3, 3, 3, 3, 3]),
            ("image", ["target bpp", "way", "files", "bpp", "PSNR dB", "s per file"],
             ["rate", "psnr", "seconds"], [2, 0, 0, 4, 2, 3])):
        table = [[r["target"], r["way"], r["files"], *[r.get(k) for k in keys]] for r in rows if r["kind"] == kind]
        if table:
            print(f"\n{kind}, one thread\n")
            print(common.markdown_table(headers, table, digits))
    if long_rows:
        print(f"\n{args.minutes:g} minutes of speech, one thread\n")
        print(common.markdown_table(["file", "kbps", "seconds", "peak MiB, model and file loaded", "peak MiB"],
                                    [[r["target"], r["kbps"], r["seconds"], r["loaded_mib"], r["peak_mib"]]
                                     for r in long_rows], [0, 3, 2, 0, 0]))
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "machine": common.machine_info(threads=1),
                                    "rows": rows, "long": long_rows})
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
