"""Regenerate the golden fixtures in tests/data/golden/ (checked by tests/test_entropy.py).

    python tests/make_golden.py          # everything
    python tests/make_golden.py depth    # only the per-cell depth files, from the committed models
    python tests/make_golden.py shared   # only the shared-channel file, from the committed audio model

Writes, for a tiny audio model and a tiny image model, each with a fitted prior:
    golden_KIND.safetensors + golden_KIND.json   the model files, prior included
    golden_KIND_fixed.vq                          a file with fixed-width payloads
    golden_KIND_prior.vq                          the same codes range coded with the prior
    golden_KIND_codes.npy                         the codes both files must decode to (int16, no pickle)
    golden_KIND_depth.vq                          a file with per-cell depth (coding 2)
    golden_KIND_depth_codes.npy                   the codes it must decode to, -1 where absent
    golden_audio_shared.vq                        stereo whose channels share their codes in two chunks
    golden_audio_shared_codes.npy                 the codes it must decode to (both channels)

Only regenerate on purpose (a deliberate format or prior change): the point of the fixtures is that
files written by an earlier build keep decoding to exactly these codes on every machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vqcodec.codec import AUDIO_CHUNK_FRAMES, IMAGE_CHUNK_ROWS, Codec  # noqa: E402
from vqcodec.config import AudioConfig, ImageConfig  # noqa: E402
from vqcodec.format import parse_file  # noqa: E402
from vqcodec.modelfile import attach_prior, save_model  # noqa: E402
from vqcodec.models import VQVAE  # noqa: E402
from vqcodec.prior import CodePrior  # noqa: E402

OUT = REPO / "tests" / "data" / "golden"
AUDIO_CONFIG = AudioConfig(base_channels=4, strides=(2, 4), res_blocks=1, latent_dim=8, num_codebooks=4,
                           codebook_size=16, context_frames=16)
IMAGE_CONFIG = ImageConfig(patch=2, channels=(8, 8), res_blocks=1, latent_dim=8, num_codebooks=3,
                           codebook_size=16, context_frames=6)
AUDIO_RATE = 16000


def golden_audio(seed: int, seconds: float = 0.7, channels: int = 2) -> np.ndarray:
    """Speech-like test audio: gliding harmonics with a syllable envelope, float32 (channels, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE
    rows = []
    for c in range(channels):
        f0 = 120 + 40 * c + 30 * np.sin(2 * np.pi * 3 * t + seed)
        phase = 2 * np.pi * np.cumsum(f0) / AUDIO_RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + c) ** 2
        rows.append(0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size))
    return np.asarray(rows, dtype=np.float32)


def golden_image(seed: int, height: int = 72, width: int = 44) -> np.ndarray:
    """A photo-like uint8 RGB array: smooth gradients, a disc and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, 128 + 100 * np.sin((x + y + seed) / 7)], axis=-1)
    disc = (y - height / 2) ** 2 + (x - width / 3) ** 2 < (min(height, width) / 4) ** 2
    rgb[disc] = [200, 40, 90]
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["depth"]:
        write_depth()
        return
    if sys.argv[1:] == ["shared"]:
        write_shared()
        return

    torch.manual_seed(0)
    path = save_model(VQVAE(AUDIO_CONFIG).eval(), OUT / "golden_audio.safetensors")
    codec = Codec.load(str(path), coding="fixed")
    planes = [p for seed in range(6) for p in codec.audio_to_codes(golden_audio(seed + 10), 4)]
    attach_prior(path, CodePrior.fit(planes, 16, "audio", AUDIO_CHUNK_FRAMES))
    write(Codec.load(str(path)), "audio", lambda c: c.encode_audio(golden_audio(1), AUDIO_RATE, 4))

    torch.manual_seed(1)
    path = save_model(VQVAE(IMAGE_CONFIG).eval(), OUT / "golden_image.safetensors")
    codec = Codec.load(str(path), coding="fixed")
    planes = [codec.image_to_codes(golden_image(seed + 10), 3) for seed in range(6)]
    attach_prior(path, CodePrior.fit(planes, 16, "image", IMAGE_CHUNK_ROWS))
    write(Codec.load(str(path)), "image", lambda c: c.encode_image(Image.fromarray(golden_image(1)), 2))
    write_depth()
    write_shared()


def write_shared() -> None:
    """A stereo file (FLAG_SHARED_CHANNELS, per-cell depth coded) whose channels carry one signal for
    its first two chunks, which store their codes once, and differ in the other two."""
    codec = Codec.load(str(OUT / "golden_audio.safetensors"))
    codec.rate_weight, codec.depth_weight = 0.0, 0.1
    data = codec.encode_audio(shared_golden_audio(), AUDIO_RATE, 4)
    header, codes = codec.read_codes(data)
    layouts = [chunk[0] for chunk in parse_file(data)[1]]
    assert header.flags == 2 and header.channels == 2 and layouts == [1, 1, 0, 0], layouts
    (OUT / "golden_audio_shared.vq").write_bytes(data)
    np.save(OUT / "golden_audio_shared_codes.npy", codes.astype(np.int16), allow_pickle=False)
    print(f"audio: shared codes {codes.shape}, chunk layouts {layouts}, {len(data)} bytes")


def shared_golden_audio() -> np.ndarray:
    """0.9 s of stereo whose channels are the same for the first 9000 samples (the first two
    chunks of 4000 samples, with their network context)."""
    audio = golden_audio(3, seconds=0.9)
    audio[1, :9000] = audio[0, :9000]
    return audio


def write_depth() -> None:
    """Per-cell depth files (CODING_PRIOR_DEPTH) from the golden models, with depths that vary."""
    for kind, weight, encode in (
            ("audio", 0.1, lambda c: c.encode_audio(golden_audio(2, seconds=1.2), AUDIO_RATE, 4)),
            ("image", 1.0, lambda c: c.encode_image(Image.fromarray(golden_image(2, 96, 60)), 3))):
        codec = Codec.load(str(OUT / f"golden_{kind}.safetensors"))
        codec.rate_weight, codec.depth_weight = 0.0, weight
        data = encode(codec)
        header, codes = codec.read_codes(data)
        depths = np.unique((codes >= 0).sum(1 if kind == "audio" else 0))
        assert header.coding == 2 and len(depths) >= 3, depths
        (OUT / f"golden_{kind}_depth.vq").write_bytes(data)
        np.save(OUT / f"golden_{kind}_depth_codes.npy", codes.astype(np.int16), allow_pickle=False)
        print(f"{kind}: depth codes {codes.shape}, {int((codes < 0).sum())} absent, {len(data)} bytes")


def write(codec: Codec, kind: str, encode) -> None:
    codec.rate_weight = codec.depth_weight = 0.0  # the same codes in both codings: nearest codes, every level
    codec.coding = "fixed"
    fixed = encode(codec)
    codec.coding = "prior"
    prior = encode(codec)
    _, expected = codec.read_codes(fixed)
    _, again = codec.read_codes(prior)
    assert np.array_equal(expected, again), "the two codings of one input must hold the same codes"
    (OUT / f"golden_{kind}_fixed.vq").write_bytes(fixed)
    (OUT / f"golden_{kind}_prior.vq").write_bytes(prior)
    np.save(OUT / f"golden_{kind}_codes.npy", expected.astype(np.int16), allow_pickle=False)
    print(f"{kind}: codes {expected.shape}, fixed {len(fixed)} bytes, prior {len(prior)} bytes, "
          f"prior id {codec.prior.prior_id:08x}")


if __name__ == "__main__":
    main()
