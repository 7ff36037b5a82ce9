"""A folder in one run (`vqcodec encode DIR OUT`, `vqcodec decode DIR OUT`) against one run per file.

    python bench/folders.py [--data ../shared/data/speech/dev] [--files 20]
                            [--images ../shared/data/images/kodak] [--image-files 6] [--runs 3]
                            [--out bench/out/folders.json]

The first --files speech recordings (and --image-files photos) are copied into a folder. Each is
then coded by the command line both ways, in fresh processes with two threads, as a user would run
it: `vqcodec encode FILE FILE.vq` once per file, then `vqcodec encode DIR OUT` once; the same for
decoding to WAV (PNG). Wall-clock seconds for the whole folder, median of --runs runs, and whether
the two ways wrote the same bytes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def run(*args: str) -> None:
    environment = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(common.REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "vqcodec", *args], capture_output=True, env=environment)
    if result.returncode:
        raise SystemExit(f"vqcodec {' '.join(args)} failed: {result.stderr.decode()}")


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and \
        all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def copy_sources(sources: list[Path], folder: Path) -> None:
    """Copy `sources` into `folder`, each under a name of its own: sub/a.flac and other/a.flac, or a.flac and
    a.wav (which would both write a.vq), of a folder read recursively."""
    folder.mkdir(parents=True)
    for number, path in enumerate(sources):
        shutil.copy(path, folder / f"{number:04d}-{path.name}")


def measure(kind: str, sources: list[Path], runs: int, work: Path) -> dict:
    folder = work / kind / "in"
    copy_sources(sources, folder)
    media_suffix = ".wav" if kind == "audio" else ".png"
    one_by_one, at_once = work / kind / "one", work / kind / "folder"

    def encode_each():
        one_by_one.mkdir(exist_ok=True)
        for path in sorted(folder.iterdir()):
            run("encode", str(path), str(one_by_one / (path.stem + ".vq")), "--force")

    def decode_each():
        (one_by_one / "out").mkdir(exist_ok=True)
        for path in sorted(one_by_one.glob("*.vq")):
            run("decode", str(path), str(one_by_one / "out" / (path.stem + media_suffix)), "--force")

    encode_each_s = common.time_median(encode_each, runs)[0]
    encode_folder_s = common.time_median(lambda: run("encode", str(folder), str(at_once), "--force"), runs)[0]
    decode_each_s = common.time_median(decode_each, runs)[0]
    decode_folder_s = common.time_median(
        lambda: run("decode", str(at_once), str(work / kind / "folder_out"), "--force"), runs)[0]
    same_vq = all((one_by_one / (p.stem + ".vq")).read_bytes() == (at_once / (p.stem + ".vq")).read_bytes()
                  for p in folder.iterdir())
    return {"kind": kind, "files": len(sources), "encode_each_s": encode_each_s, "encode_folder_s": encode_folder_s,
            "decode_each_s": decode_each_s, "decode_folder_s": decode_folder_s,
            "same_bytes": same_vq and same_tree(one_by_one / "out", work / kind / "folder_out")}


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the wall-clock time of coding a folder in one run (vqcodec encode DIR OUT, vqcodec "
               "decode DIR OUT) against one run per file, and whether both ways write the same bytes.")


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.fill(DESCRIPTION), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = common.REPO_ROOT.parent / "shared" / "data"
    parser.add_argument("--data", default=str(data / "speech" / "dev"),
                        help="folder of speech recordings (FLAC, WAV), read recursively (default: %(default)s)")
    parser.add_argument("--files", type=common.at_least(0), default=20,
                        help="first N recordings of --data, sorted by path; 0 for no audio (default: %(default)s)")
    parser.add_argument("--images", default=str(data / "images" / "kodak"),
                        help="folder of PNG photos, read recursively (default: %(default)s)")
    parser.add_argument("--image-files", type=common.at_least(0), default=6,
                        help="first N photos of --images, sorted by path; 0 for no images (default: %(default)s)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="timing runs of each way over the whole folder; the median is reported "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=str(common.REPO_ROOT / "bench" / "out" / "folders.json"),
                        help="JSON file of every row ('' for none; default: %(default)s)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for kind, folder, count in (("audio", args.data, args.files), ("image", args.images, args.image_files)):
            if count:
                extensions = (".flac", ".wav") if kind == "audio" else (".png",)
                rows.append(measure(kind, common.list_files(folder, extensions, count), args.runs, Path(work)))
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)

    headers = ["media", "files", "step", "one run per file s", "one run for the folder s", "× faster", "same bytes"]
    table = []
    for r in rows:
        for step in ("encode", "decode"):
            each, once = r[f"{step}_each_s"], r[f"{step}_folder_s"]
            table.append([r["kind"], r["files"], step, each, once, each / once, "yes" if r["same_bytes"] else "NO"])
    print(f"\nvqcodec command line, two threads, default models and settings, median of {args.runs} runs\n")
    print(common.markdown_table(headers, table, [0, 0, 0, 1, 1, 1, 0]))
    if args.out:
        common.save_json(args.out, {"command": common.repro_command(), "machine": common.machine_info(threads=2),
                                    "rows": rows})
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
