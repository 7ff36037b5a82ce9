"""Coding speed of larger speech networks: would they still meet the 20x real-time target?

    python bench/config_speed.py [--files 8] [--runs 3] [--threads 1] [--quality 8]
                                 [--configs "base_channels=24;base_channels=32;res_blocks=3;base_channels=24,res_blocks=3"]

Encodes and decodes the first N speech dev files (joined into one recording) with the shipped
speech16k and with untrained networks of other AudioConfig sizes, on one thread, and prints each
one's parameter count and speed as a multiple of real time (median of the runs). The untrained
networks have no prior, so their files are fixed-width and skip the per-frame depth choice, which
the shipped model (prior, depth weight 2) pays for; the shipped model coded fixed-width is the row
to compare them with. Speed does not depend on the weights' values, so an untrained network times
like a trained one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEV = common.REPO_ROOT.parent / "shared" / "data" / "speech" / "dev"


def audio_configs(text: str) -> list[tuple[str, object]]:
    """--configs as an argparse type: each ';'-separated 'field=value,field=value' with the AudioConfig it
    makes, checked as a config file's fields are (vqcodec.config.config_from_dict), so that a malformed one
    is refused as the argument, not met in a traceback after the shipped model was timed."""
    from vqcodec.config import config_from_dict

    configs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        try:
            fields = {}
            for pair in filter(None, (part.strip() for part in item.split(","))):
                key, sep, value = (part.strip() for part in pair.partition("="))
                if not sep or not key:
                    raise ValueError("not field=value" if pair == item else f"{pair!r} is not field=value")
                try:
                    fields[key] = int(value)
                except ValueError:
                    raise ValueError(f"{key} takes a whole number, not {value!r}") from None
            configs.append((item, config_from_dict({"kind": "audio", **fields}, strict=True)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{item!r}: {exc}") from None
    return configs


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the encoding and decoding speed, as a multiple of real time on one thread, of speech "
               "networks larger than speech16k, to tell whether they would still meet the 20x real-time "
               "target.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--files", type=common.positive_int, default=8,
                        help="first N speech dev recordings (FLAC, sorted by path), joined into one "
                             "(default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="timing runs of each encode and decode; the median is reported (default: %(default)s)")
    parser.add_argument("--threads", type=common.positive_int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--quality", type=int, default=8, help="quality level to encode at (default: %(default)s)")
    parser.add_argument("--configs", type=audio_configs,
                        default="base_channels=24;base_channels=32;res_blocks=3;base_channels=24,res_blocks=3",
                        help="';'-separated AudioConfig overrides, each 'field=value,field=value' "
                             "(default: %(default)s)")
    args = parser.parse_args()

    import soundfile
    import torch

    from vqcodec import Codec
    from vqcodec.modelfile import save_model
    from vqcodec.models import VQVAE

    torch.set_num_threads(args.threads)
    files = common.list_files(DEV, (".flac",), args.files)
    audio = np.concatenate([soundfile.read(f, dtype="float32")[0] for f in files])
    seconds = audio.size / 16000

    def measure(label: str, codec) -> list:
        encode_s, data = common.time_median(lambda: codec.encode_audio(audio, 16000, args.quality), args.runs)
        decode_s, _ = common.time_median(lambda: codec.decode_audio(data), args.runs)
        params = sum(p.numel() for p in codec.model.parameters()) / 1e6
        print(f"  {label}: {seconds / (encode_s + decode_s):.1f}x", file=sys.stderr, flush=True)
        return [label, params, seconds / encode_s, seconds / decode_s, seconds / (encode_s + decode_s)]

    rows = [measure("speech16k (shipped)", Codec.load("speech16k")),
            measure("speech16k, fixed-width", Codec.load("speech16k", coding="fixed"))]
    with tempfile.TemporaryDirectory() as folder:
        for index, (text, config) in enumerate(args.configs):
            torch.manual_seed(0)
            path = save_model(VQVAE(config).eval(), Path(folder) / f"probe{index}.safetensors")
            rows.append(measure(text, Codec.load(str(path))))
    print(f"{common.cpu_model()}, {args.threads} thread(s), torch {torch.__version__}; {len(files)} dev files joined, "
          f"{seconds:.1f} s; -q {args.quality}; median of {args.runs} runs\n")
    print(common.markdown_table(["network", "M params", "encode xRT", "decode xRT", "both xRT"], rows,
                                digits=[0, 2, 1, 1, 1]))
    print(f"\nReproduce: {common.repro_command()}")


if __name__ == "__main__":
    main()
