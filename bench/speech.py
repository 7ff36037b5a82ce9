"""Speech benchmark: our codec at each quality level against Opus and Codec 2, same run, same files.

    python bench/speech.py [--data ../shared/data/speech/dev] [--model speech16k] [--files N]
                           [--runs 3] [--qualities 1,2,4] [--refine N] [--refine-qualities 1,6]
                           [--skip-ours | --skip-baselines] [--max-shift 1] [--out bench/out/speech.json]
                           [--plot bench/out/speech_rd.png]

Prints a Markdown table, one row per codec setting:

* real bitrate: total bytes of the coded files (all headers and container overhead included)
  x 8 / total duration of the references;
* PESQ-WB, STOI, log-mel L1 and SI-SDR means over the files (metrics at 16 kHz against the
  reference; see bench/common.py for the definitions);
* encode and decode speed as x realtime on one thread: total duration / wall-clock coding time
  for the whole set, median of --runs runs. Only the coding is timed: our codec's
  encode_audio/decode_audio calls, and the opusenc/opusdec/c2enc/c2dec subprocesses (process
  start-up included, as a user of those tools pays it). File preparation, resampling for
  Codec 2 and the metrics are not timed.

With --refine N, our codec also runs with N steps of latent refinement (`vqcodec encode --refine
N`) at --refine-qualities, as rows "vqcodec+refine N", timed once (encoding is much slower).

Alignment: opusdec removes Opus's pre-skip itself and writes exactly the input length. Codec 2
has an algorithmic delay that c2dec does not remove; we measured it on this data (the STOI
maximum and the envelope cross-correlation agree) and it matches the codec's structure:
160 samples at 8 kHz (20 ms) for 3200 and 1600, 240 samples (30 ms) for 700C, whose decoder
interpolates over 40 ms frames. The 8 kHz input is padded with silence so that the delayed
tail is still coded (those extra frames count in the bitrate), and the decoded signal is
advanced by the delay before resampling back to 16 kHz.

Residual delay: Opus's internal resamplers leave a fractional delay of about one sample at
16 kHz whose sign depends on the bitrate (libopus 1.3.1: about +1 sample at 3-8 kbps, -1 at
12 kbps), worth 1-2 dB of SI-SDR. So for every row, ours included, one integer shift of at
most --max-shift samples (default 1), the same for all files of the row, is chosen to maximise
the mean SI-SDR, and applied before all metrics (not for rows whose best mean SI-SDR is not
positive: a parametric codec such as Codec 2 has no sample alignment to find); it is reported in the JSON (shift_samples)
and in a footnote when non-zero. Files are never aligned one by one.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# one thread for everything, including whatever numpy/torch start in the tools' children
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SAMPLE_RATE = 16000
REPO_ROOT = common.REPO_ROOT

OPUS_BITRATES = (3, 6, 8, 12)          # kbps, nominal (opusenc --bitrate)
CODEC2_MODES = ("3200", "1600", "700C")
# Codec 2 delay at 8 kHz in samples, and frame length in samples (see module docstring).
CODEC2_DELAY = {"3200": 160, "2400": 160, "1600": 160, "1400": 160, "1300": 160,
                "1200": 160, "700C": 240}
CODEC2_FRAME = {"3200": 160, "2400": 160, "1600": 320, "1400": 320, "1300": 320,
                "1200": 320, "700C": 320}

HEADERS = ["codec", "setting", "kbps", "PESQ-WB", "STOI", "log-mel L1", "SI-SDR dB",
           "enc ×RT", "dec ×RT"]
DIGITS = [0, 0, 2, 2, 3, 3, 1, 1, 1]


@dataclass
class Clip:
    name: str
    audio: np.ndarray          # float32 mono at 16 kHz
    wav16: Path                # 16-bit PCM wav at 16 kHz (Opus input)
    raw8: dict = field(default_factory=dict)   # Codec 2 mode -> padded s16le raw at 8 kHz

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


@dataclass
class Result:
    codec: str
    setting: str
    total_bytes: int
    encode_s: float
    decode_s: float
    decoded: list              # float32 mono 16 kHz, reference length
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- helpers

def run_tool(args, watch: common.Stopwatch) -> None:
    with watch:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")


def opus_label() -> str:
    """'Opus 1.3.1' from the libopus version opusenc reports, else 'Opus'."""
    try:
        text = subprocess.run(["opusenc", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "Opus"
    match = re.search(r"libopus ([0-9][0-9.]*)", text)
    return f"Opus {match.group(1)}" if match else "Opus"


def require_tools(*names) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise SystemExit(f"missing tools: {' '.join(missing)} "
                         "(apt-get install -y opus-tools codec2)")


def load_clips(files, workdir: Path) -> list[Clip]:
    clips = []
    for number, path in enumerate(files):
        name = f"{number:04d}-{path.stem}"  # a.flac and a.wav, or sub/a.flac: each its own work files
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if rate != SAMPLE_RATE:
            audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
        wav = workdir / f"{name}.wav"
        sf.write(str(wav), audio, SAMPLE_RATE, subtype="PCM_16")
        # use exactly what the tools see (16-bit) as the reference for everybody
        audio = sf.read(str(wav), dtype="float32")[0]
        clips.append(Clip(name, audio, wav))
    return clips


def median_runs(runs: int, once):
    """Run `once()` -> (encode_s, decode_s, payload) `runs` times; medians and the last payload."""
    enc, dec, payload = [], [], None
    for _ in range(max(1, runs)):
        e, d, payload = once()
        enc.append(e)
        dec.append(d)
    return float(np.median(enc)), float(np.median(dec)), payload


# --------------------------------------------------------------------------- codecs

def bench_opus(clips, bitrate: int, workdir: Path, runs: int) -> Result:
    def once():
        enc, dec = common.Stopwatch(), common.Stopwatch()
        size, decoded = 0, []
        for clip in clips:
            coded, out = workdir / f"{clip.name}.opus", workdir / f"{clip.name}.opus.wav"
            run_tool(["opusenc", "--quiet", "--bitrate", str(bitrate), clip.wav16, coded], enc)
            run_tool(["opusdec", "--quiet", "--rate", str(SAMPLE_RATE), coded, out], dec)
            size += coded.stat().st_size
            audio, rate = sf.read(str(out), dtype="float32", always_2d=True)
            assert rate == SAMPLE_RATE, rate
            decoded.append(common.fit_length(audio.mean(axis=1), clip.audio.size))
        return enc.seconds, dec.seconds, (size, decoded)

    enc_s, dec_s, (size, decoded) = median_runs(runs, once)
    return Result(opus_label(), f"{bitrate} kbps", size, enc_s, dec_s, decoded)


def prepare_codec2(clips, mode: str, workdir: Path) -> None:
    delay, frame = CODEC2_DELAY[mode], CODEC2_FRAME[mode]
    for clip in clips:
        x8 = soxr.resample(clip.audio, SAMPLE_RATE, 8000).astype(np.float32)
        padded = math.ceil((x8.size + delay) / frame) * frame
        x8 = np.concatenate([x8, np.zeros(padded - x8.size, dtype=np.float32)])
        raw = workdir / f"{clip.name}.{mode}.raw"
        np.round(np.clip(x8, -1.0, 32767 / 32768) * 32768).astype("<i2").tofile(raw)
        clip.raw8[mode] = raw


def bench_codec2(clips, mode: str, workdir: Path, runs: int) -> Result:
    prepare_codec2(clips, mode, workdir)
    delay = CODEC2_DELAY[mode]

    def once():
        enc, dec = common.Stopwatch(), common.Stopwatch()
        size, outputs = 0, []
        for clip in clips:
            coded, out = workdir / f"{clip.name}.c2", workdir / f"{clip.name}.c2.raw"
            run_tool(["c2enc", mode, clip.raw8[mode], coded], enc)   # .c2: with mode header
            run_tool(["c2dec", mode, coded, out], dec)
            size += coded.stat().st_size
            outputs.append(np.fromfile(out, dtype="<i2").astype(np.float32) / 32768)
        return enc.seconds, dec.seconds, (size, outputs)

    enc_s, dec_s, (size, outputs) = median_runs(runs, once)
    decoded = [common.fit_length(soxr.resample(y[delay:], 8000, SAMPLE_RATE), clip.audio.size)
               for y, clip in zip(outputs, clips)]
    return Result("Codec 2", mode, size, enc_s, dec_s, decoded)


def bench_ours(clips, codec, quality: int, runs: int, label: str = "vqcodec") -> Result:
    import torch

    def once():
        enc, dec = common.Stopwatch(), common.Stopwatch()
        size, decoded, bad_rate = 0, [], 0
        with torch.inference_mode():
            for clip in clips:
                audio = clip.audio[None, :]
                with enc:
                    data = codec.encode_audio(audio, SAMPLE_RATE, quality)
                with dec:
                    out, rate = codec.decode_audio(data)
                size += len(data)
                out = np.asarray(out, dtype=np.float32)
                if rate != SAMPLE_RATE:  # the API promises the original rate; guard anyway
                    bad_rate += 1
                    out = soxr.resample(out.T, rate, SAMPLE_RATE).T
                decoded.append(common.fit_length(out.mean(axis=0) if out.ndim == 2 else out,
                                                 clip.audio.size))
        return enc.seconds, dec.seconds, (size, decoded, bad_rate)

    enc_s, dec_s, (size, decoded, bad_rate) = median_runs(runs, once)
    result = Result(label, f"q{quality}", size, enc_s, dec_s, decoded)
    if bad_rate:
        result.notes.append(f"decode_audio returned a rate other than {SAMPLE_RATE} Hz "
                            f"for {bad_rate} files (resampled)")
    return result


# --------------------------------------------------------------------------- metrics, report

def score(result: Result, clips, max_shift: int = 1) -> dict:
    seconds = sum(c.seconds for c in clips)
    refs = [c.audio for c in clips]
    shift = common.best_shift(refs, result.decoded, max_shift) if max_shift else 0
    result.decoded = [common.shift_signal(y, shift) for y in result.decoded]
    pesq_values = [common.pesq_wb(c.audio, y) for c, y in zip(clips, result.decoded)]
    row = {
        "codec": result.codec,
        "setting": result.setting,
        "kbps": result.total_bytes * 8 / seconds / 1000,
        "pesq_wb": common.mean_or_none(pesq_values),
        "stoi": common.mean_or_none([common.stoi_score(c.audio, y) for c, y in zip(clips, result.decoded)]),
        "log_mel_l1": float(np.mean([common.log_mel_l1(c.audio, y)
                                     for c, y in zip(clips, result.decoded)])),
        "si_sdr_db": float(np.mean([common.si_sdr(c.audio, y)
                                    for c, y in zip(clips, result.decoded)])),
        "encode_xrt": seconds / result.encode_s if result.encode_s > 0 else None,
        "decode_xrt": seconds / result.decode_s if result.decode_s > 0 else None,
        "bytes": result.total_bytes,
        "encode_s": result.encode_s,
        "decode_s": result.decode_s,
        "pesq_skipped": sum(v is None for v in pesq_values),
        "shift_samples": shift,
        "notes": result.notes,
    }
    return row


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Rate-quality curves: PESQ-WB and STOI against real kbps, one line per codec."""
    fig, axes = common.side_by_side_axes(4.5)
    for codec in dict.fromkeys(r["codec"] for r in rows):
        points = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["kbps"])
        style = dict(marker="o", markersize=4, linewidth=2 if codec.startswith("vqcodec") else 1.2)
        for axis, key in zip(axes, ("pesq_wb", "stoi")):
            axis.plot([r["kbps"] for r in points], [r[key] for r in points], label=codec, **style)
    for axis, label in zip(axes, ("PESQ-WB", "STOI")):
        axis.set_xlabel("real bitrate, kbps (file bytes x 8 / duration)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    common.save_figure(fig, path, title, dpi=110)


def parse_qualities(text: str | None, maximum: int) -> list[int]:
    if not text:
        return list(range(1, maximum + 1))
    qualities = sorted({int(q) for q in text.split(",") if q.strip()})
    bad = [q for q in qualities if not 1 <= q <= maximum]
    if bad:
        raise SystemExit(f"--qualities {bad} outside 1..{maximum}")
    return qualities


# --help's description: one sentence saying what the script measures (the docstring starts with a title)
DESCRIPTION = ("Measures the speech codec's real bitrate, PESQ-WB, STOI, log-mel L1, SI-SDR and coding speed "
               "at each quality against Opus and Codec 2, on the same files in the same run.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--data", default="../shared/data/speech/dev",
                        help="folder of speech files (relative paths: to the repository root; default: %(default)s)")
    parser.add_argument("--model", default="speech16k", help="model name or .safetensors path (default: %(default)s)")
    parser.add_argument("--files", type=common.positive_int, default=None, help="first N files only (sorted)")
    parser.add_argument("--runs", type=common.positive_int, default=3,
                        help="timing runs (median; default: %(default)s)")
    parser.add_argument("--qualities", default=None, type=common.number_list(int), help="e.g. 1,2,4,6,8 (default: all)")
    parser.add_argument("--refine", type=common.at_least(0), default=0,
                        help="also run ours with this many refinement steps")
    parser.add_argument("--refine-qualities", default="1,6", type=common.number_list(int),
                        help="qualities of the --refine rows (default: %(default)s)")
    parser.add_argument("--skip-ours", action="store_true", help="baselines only")
    parser.add_argument("--skip-baselines", action="store_true", help="our codec only")
    parser.add_argument("--max-shift", type=common.at_least(0), default=1,
                        help="largest residual alignment shift in samples, per row (0: none; default: %(default)s)")
    parser.add_argument("--out", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--plot", default=None, help="also draw PESQ and STOI against kbps to this PNG")
    args = parser.parse_args(argv)
    common.require_modules(*common.SPEECH_METRICS, *(["matplotlib"] if args.plot else []))
    if not args.skip_baselines:
        require_tools("opusenc", "opusdec", "c2enc", "c2dec")

    import torch
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    data = Path(args.data)
    if not data.is_absolute() and not data.exists():
        data = REPO_ROOT / data
    files = common.list_files(data, ["flac", "wav"], args.files)

    lines = [f"Reproduce: `{common.repro_command()}` (from the repository root)"]
    info = common.machine_info(threads=1)
    lines.append(f"Machine: {info['cpu']} ({info['cpu_count']} cores), torch {info.get('torch')}, "
                 f"{info.get('torch_threads')} thread, Python {info['python']}")
    print("\n".join(lines), flush=True)

    rows, footnotes, model_note = [], [], None
    with tempfile.TemporaryDirectory(prefix="vqbench-") as tmp:
        workdir = Path(tmp)
        clips = load_clips(files, workdir)
        seconds = sum(c.seconds for c in clips)
        print(f"Data: {len(clips)} files from {args.data}, {seconds:.1f} s, {SAMPLE_RATE} Hz mono; "
              f"timing: median of {max(1, args.runs)} runs\n", flush=True)

        def report(result):
            row = score(result, clips, args.max_shift)
            rows.append(row)
            print(f"  done {row['codec']} {row['setting']}: {row['kbps']:.2f} kbps",
                  file=sys.stderr, flush=True)

        if not args.skip_ours:
            from vqcodec import Codec
            codec = Codec.load(args.model, device="cpu")
            model_note = (f"vqcodec: model {args.model} (name {codec.name}, id "
                          f"{codec.model_id.hex()}, {codec.num_codebooks} codebooks).")
            qualities = parse_qualities(args.qualities, codec.num_codebooks)
            # warm-up (not timed): first-call allocations, lazy initialisation
            codec.decode_audio(codec.encode_audio(clips[0].audio[None, :SAMPLE_RATE],
                                                  SAMPLE_RATE, qualities[-1]))
            for quality in qualities:
                report(bench_ours(clips, codec, quality, args.runs))
            if args.refine:
                codec.refine = args.refine
                for quality in parse_qualities(args.refine_qualities, codec.num_codebooks):
                    report(bench_ours(clips, codec, quality, 1, f"vqcodec+refine {args.refine}"))
                codec.refine = 0

        if not args.skip_baselines:
            for bitrate in OPUS_BITRATES:
                try:
                    report(bench_opus(clips, bitrate, workdir, args.runs))
                except RuntimeError as error:
                    footnotes.append(f"Opus {bitrate} kbps skipped: {error}")
            for mode in CODEC2_MODES:
                report(bench_codec2(clips, mode, workdir, args.runs))

    table = [[r["codec"], r["setting"], r["kbps"], r["pesq_wb"], r["stoi"], r["log_mel_l1"],
              r["si_sdr_db"], r["encode_xrt"], r["decode_xrt"]] for r in rows]
    for r in rows:
        if r["pesq_skipped"]:
            footnotes.append(f"{r['codec']} {r['setting']}: PESQ skipped on "
                             f"{r['pesq_skipped']} of {len(files)} files (PESQ refused them)")
        footnotes += [f"{r['codec']} {r['setting']}: {n}" for n in r["notes"]]
    shifted = [f"{r['codec']} {r['setting']} {r['shift_samples']:+d}" for r in rows
               if r["shift_samples"]]
    if shifted:
        footnotes.append("Residual alignment (samples at 16 kHz, one shift per row, chosen by "
                         "mean SI-SDR within ±%d): %s." % (args.max_shift, ", ".join(shifted)))
    footnotes += [
        "kbps: total coded bytes (all headers/containers) × 8 / total duration.",
        "log-mel L1: mean |Δ log10 mel| (80 mels, n_fft 1024, hop 256, clamp 1e-5); lower is better.",
        "×RT: total audio duration / coding wall-clock time on 1 thread (external tools: "
        "subprocess wall clock incl. start-up).",
    ]
    if not args.skip_baselines:
        footnotes.append(
            "Opus: opusenc on 16-bit 16 kHz wav, opusdec --rate 16000. Codec 2: soxr to 8 kHz, "
            "c2enc/c2dec (.c2 with header), delay removed (160 samples @8 kHz, 240 for 700C), "
            "soxr back to 16 kHz.")
    if model_note:
        footnotes.append(model_note)
    if any(r["codec"].startswith("Opus") and r["setting"] == "3 kbps" for r in rows):
        footnotes.append("Opus 3 kbps: opusenc accepts --bitrate 3, but libopus does not go "
                         "below its SILK minimum, so the real rate stays near 6 kbps.")
    print(common.markdown_table(HEADERS, table, DIGITS))
    print()
    for i, note in enumerate(footnotes, 1):
        print(f"{i}. {note}")
    sys.stdout.flush()

    if args.out:
        common.save_json(args.out, {
            "command": common.repro_command(),
            "machine": info,
            "data": str(args.data),
            "files": [f.name for f in files],
            "duration_s": sum(sf.info(str(f)).duration for f in files),
            "runs": max(1, args.runs),
            "rows": rows,
            "footnotes": footnotes,
        })
        print(f"\nSaved {args.out}", file=sys.stderr)
    if args.plot:
        plot(rows, Path(args.plot), f"Speech, {len(files)} files of {args.data}")
        print(f"Saved {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
