"""Model configuration, saved as JSON beside the weights."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

FORMAT_VERSION = 1


@dataclass
class AudioConfig:
    """A 1-D convolutional VQ-VAE for mono audio at a fixed sample rate."""

    kind: str = "audio"
    sample_rate: int = 16000
    base_channels: int = 16
    strides: tuple[int, ...] = (4, 4, 4, 5)
    res_blocks: int = 2
    latent_dim: int = 64
    num_codebooks: int = 8
    codebook_size: int = 1024
    # Frames of context on each side when coding in blocks; must cover the receptive field.
    context_frames: int = 16
    # The decoder's base width; 0: base_channels. A wider decoder can be grown onto a trained model
    # without changing its codes (`vqcodec train --init MODEL --decoder-only --config`).
    decoder_channels: int = 0

    @property
    def hop(self) -> int:
        result = 1
        for s in self.strides:
            result *= s
        return result

    @property
    def decoder_base_channels(self) -> int:
        return self.decoder_channels or self.base_channels


@dataclass
class ImageConfig:
    """A 2-D convolutional VQ-VAE for RGB images."""

    kind: str = "image"
    patch: int = 4                      # pixel-unshuffle factor of the stem
    channels: tuple[int, ...] = (96, 160, 224)  # widths at 1/4, 1/8, 1/16 resolution
    res_blocks: int = 1
    latent_dim: int = 64
    num_codebooks: int = 20
    codebook_size: int = 1024
    context_frames: int = 6             # latent cells of context around a tile
    decoder_channels: tuple[int, ...] = ()  # the decoder's widths, finest first; (): channels

    @property
    def hop(self) -> int:
        return self.patch * 2 ** (len(self.channels) - 1)

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        return self.decoder_channels or self.channels


ModelConfig = AudioConfig | ImageConfig


def config_to_dict(config: ModelConfig) -> dict:
    data = dataclasses.asdict(config)
    if not data["decoder_channels"]:  # left out when unused, so that the ids of earlier models stay as they were
        del data["decoder_channels"]
    return data


def config_from_dict(data: dict) -> ModelConfig:
    kinds = {"audio": AudioConfig, "image": ImageConfig}
    cls = kinds.get(data.get("kind"))
    if cls is None:
        raise ValueError(f"unknown model kind {data.get('kind')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**values)


def load_config_file(path) -> ModelConfig:
    with open(path) as f:
        return config_from_dict(json.load(f))
