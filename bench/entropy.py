"""Entropy coding benchmark: fixed-width payloads against range coding with the model's prior.

    python bench/entropy.py [--speech ../shared/data/speech/dev] [--images ../shared/data/images/kodak]
                            [--speech-model speech16k] [--image-model image] [--files N]
                            [--speech-qualities 1,2,4,6,8] [--image-qualities 1,2,4,8,12,16,20]
                            [--skip-speech] [--skip-images] [--out bench/out/entropy.json]

For each data set and quality level, every file is encoded and decoded with the real codec API
(Codec.encode_audio/decode_audio, encode_image/decode_image; one torch thread, CPU), and the
payload coding is instrumented. One row per quality:

* fixed bytes: the fixed-width payloads the same codes take (ceil(n * 10 / 8) per chunk for K = 1024;
  with per-cell depth, the fixed-width payload of every level of every cell);
* entropy bytes: the actual range-coded payloads (header and chunk framing excluded, as in fixed bytes);
* saving: 1 - entropy / fixed;
* ideal bytes: the prior's ideal code length, sum of -log2 p over all codes (plus the depth maps'
  under their adaptive model with per-cell depth), / 8;
* overhead: entropy bytes / ideal bytes - 1 (coder flush words, 2^-16 probability floor);
* coding share: time in entropy coding and decoding / whole encode + decode time;
* file rate: whole .vq files (all framing included) in kbps (speech) or bits per pixel (images);
* mismatches: codes that did not decode to exactly what the encoder coded (must be 0).

Codes are chosen without the rate term and with every cell at full depth (--rate-weight 0
--depth-weight 0) unless asked, so that the saving is the prior's alone; bench/rdo.py measures
rate-distortion-optimised codes and per-cell depth at equal quality.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from vqcodec.format import CODING_PRIOR_DEPTH  # noqa: E402  (common puts the repository on the path)

REPO_ROOT = common.REPO_ROOT
DATA = REPO_ROOT.parent / "shared" / "data"


class Instrumented:
    """Wraps a Codec's payload coding: records the coded arrays, the payload sizes and the time spent."""

    def __init__(self, codec):
        self.codec = codec
        self.reset()
        encode, decode = codec._encode_payload, codec._decode_payload

        def timed_encode(coding, codes):
            start = time.perf_counter()
            payload = encode(coding, codes)
            self.seconds += time.perf_counter() - start
            bookkeeping = time.perf_counter()
            self.encoded.append(np.array(codes, copy=True))
            self.payload_bytes += len(payload)
            self.fixed_bytes += math.ceil(codes.size * math.ceil(math.log2(codec.codebook_size)) / 8)
            self.ideal_bits += float(codec.prior.ideal_bits(codes).sum())
            if coding == CODING_PRIOR_DEPTH:
                self.ideal_bits += codec.prior.depth_bits(codes)
            self.untimed += time.perf_counter() - bookkeeping  # not part of encoding: left out of the total
            return payload

        def timed_decode(header, payload, shape):
            start = time.perf_counter()
            codes = decode(header, payload, shape)
            self.seconds += time.perf_counter() - start
            self.decoded.append(codes)
            return codes

        codec._encode_payload, codec._decode_payload = timed_encode, timed_decode

    def reset(self):
        self.seconds = self.untimed = 0.0
        self.encoded, self.decoded = [], []
        self.payload_bytes = self.fixed_bytes = 0
        self.ideal_bits = 0.0

    def mismatches(self) -> int:
        if len(self.encoded) != len(self.decoded):
            return -1
        return int(sum(np.count_nonzero(a != b) if a.shape == b.shape else a.size
                       for a, b in zip(self.encoded, self.decoded)))


def run_set(name, codec, files, qualities, load, encode, decode, unit):
    import torch

    torch.set_num_threads(1)
    probe = Instrumented(codec)
    items = [load(path) for path in files]
    rows, records = [], []
    for quality in qualities:
        probe.reset()
        total_seconds, file_bytes, amount = 0.0, 0, 0.0
        for item in items:
            start = time.perf_counter()
            data = encode(item, quality)
            decode(data)
            total_seconds += time.perf_counter() - start
            file_bytes += len(data)
        total_seconds -= probe.untimed
        for item in items:
            amount += unit(item)
        rate = file_bytes * 8 / amount / (1000 if name == "speech" else 1)
        record = {
            "quality": quality, "files": len(items), "fixed_bytes": probe.fixed_bytes,
            "entropy_bytes": probe.payload_bytes, "saving": 1 - probe.payload_bytes / probe.fixed_bytes,
            "ideal_bytes": probe.ideal_bits / 8, "overhead": probe.payload_bytes / (probe.ideal_bits / 8) - 1,
            "coding_seconds": probe.seconds, "total_seconds": total_seconds,
            "coding_share": probe.seconds / total_seconds, "file_rate": rate, "mismatches": probe.mismatches(),
        }
        records.append(record)
        rows.append([quality, record["fixed_bytes"], record["entropy_bytes"], 100 * record["saving"],
                     record["ideal_bytes"], 100 * record["overhead"], 100 * record["coding_share"], rate,
                     record["mismatches"]])
        print(f"  {name} q={quality}: saving {record['saving']:.1%}, overhead {record['overhead']:.2%}, "
              f"coding share {record['coding_share']:.1%}", file=sys.stderr, flush=True)
    rate_name = "file kbps" if name == "speech" else "file bpp"
    table = common.markdown_table(
        ["quality", "fixed bytes", "entropy bytes", "saving %", "ideal bytes", "overhead %", "coding share %",
         rate_name, "mismatches"],
        rows, digits=[0, 0, 0, 1, 0, 2, 1, 3, 0])
    return table, records


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures how much smaller range coding with the model's prior makes the payload of speech and "
               "photo files than fixed-width coding, at each quality, with its overhead over the ideal code "
               "length and its share of the coding time.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--speech", default=str(DATA / "speech" / "dev"),
                        help="Folder of speech recordings (FLAC, WAV), read recursively (default %(default)s).")
    parser.add_argument("--images", default=str(DATA / "images" / "kodak"),
                        help="Folder of PNG images, read recursively (default %(default)s).")
    common.add_model_options(parser, str(REPO_ROOT / "bench" / "out" / "entropy.json"))
    parser.add_argument("--files", type=common.positive_int, default=None, help="Use the first N files of each set.")
    parser.add_argument("--speech-qualities", default="1,2,4,6,8", type=common.number_list(int),
                        help="Speech quality levels, comma-separated: one row each (default 1,2,4,6,8).")
    parser.add_argument("--image-qualities", default="1,2,4,8,12,16,20", type=common.number_list(int),
                        help="Image quality levels, comma-separated: one row each (default 1,2,4,8,12,16,20).")
    parser.add_argument("--rate-weight", type=float, default=0.0,
                        help="Encoder rate weight (default 0: codes chosen by error alone, so that the saving "
                             "is the prior's; bench/rdo.py measures the weighted search).")
    parser.add_argument("--depth-weight", type=float, default=0.0,
                        help="Encoder depth weight (default 0: every cell keeps every level).")
    args = parser.parse_args()

    from vqcodec import Codec
    from vqcodec.imageio import open_image
    from vqcodec.soundio import read_audio

    results = {"machine": common.machine_info(threads=1), "command": common.repro_command(), "sets": {}}
    tables = []
    if not args.skip_speech:
        codec = Codec.load(args.speech_model)
        codec.rate_weight, codec.depth_weight = args.rate_weight, args.depth_weight
        if codec.prior is None:
            raise SystemExit(f"model {args.speech_model} has no prior: run vqcodec fit-prior first")
        files = common.list_files(args.speech, ["flac", "wav"], args.files)
        table, records = run_set(
            "speech", codec, files, [int(q) for q in args.speech_qualities.split(",")],
            load=lambda path: read_audio(path)[0:2],
            encode=lambda item, q: codec.encode_audio(item[0], item[1], q),
            decode=codec.decode_audio,
            unit=lambda item: item[0].shape[1] / item[1])
        tables.append(f"### Speech: {args.speech} ({len(files)} files), model {codec.name}, prior "
                      f"{codec.prior.prior_id:08x}\n\n{table}")
        results["sets"]["speech"] = {"data": args.speech, "model": codec.name, "prior_id": codec.prior.prior_id,
                                     "rows": records}
    if not args.skip_images:
        codec = Codec.load(args.image_model)
        codec.rate_weight, codec.depth_weight = args.rate_weight, args.depth_weight
        if codec.prior is None:
            raise SystemExit(f"model {args.image_model} has no prior: run vqcodec fit-prior first")
        files = common.list_files(args.images, ["png"], args.files)
        table, records = run_set(
            "images", codec, files, [int(q) for q in args.image_qualities.split(",")],
            load=lambda path: open_image(path),
            encode=lambda image, q: codec.encode_image(image, q),
            decode=codec.decode_image,
            unit=lambda image: image.size[0] * image.size[1])
        tables.append(f"### Images: {args.images} ({len(files)} files), model {codec.name}, prior "
                      f"{codec.prior.prior_id:08x}\n\n{table}")
        results["sets"]["images"] = {"data": args.images, "model": codec.name, "prior_id": codec.prior.prior_id,
                                     "rows": records}
    machine = results["machine"]
    print(f"Entropy coding, {machine['cpu']}, 1 thread, torch {machine.get('torch')}\n")
    print("\n\n".join(tables))
    print(f"\nReproduce: {results['command']}")
    if args.out:
        common.save_json(args.out, results)


if __name__ == "__main__":
    main()
