"""Model configuration, saved as JSON beside the weights."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .format import MAX_QUALITY
from .streams import read_json_file
from .wording import plural, type_of

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


# Bounds on a config's sizes: what the container, the quantiser and the prior are built for
# (MAX_QUALITY codebooks in a file), well above any useful model, so that a typo fails here and
# not deep inside torch.
MAX_CODEBOOKS = MAX_QUALITY
MAX_CODEBOOK_SIZE = 1 << 16
MAX_WIDTH = 4096
MAX_CODEBOOK_ENTRIES = 1 << 27  # codebooks x size x latent_dim: 512 MB of float32 codebooks
MAX_IMAGE_LEVELS = 8
# the encoder's and decoder's weights: 1 GiB of float32 (the shipped models have 1.4 M and 2.7 M)
MAX_PARAMETERS = 1 << 28
MIN_MODEL_RATE, MAX_MODEL_RATE = 1000, 192_000  # a model's sample rate (files may have others)
# samples (audio) or pixels (images) a side per code, and the most of them the context around a block
# spans: a larger stride pads even a short input out to one enormous frame (shipped: 320 and 16)
MAX_HOP = {"audio": 1 << 14, "image": 256}
MAX_CONTEXT = {"audio": 1 << 20, "image": 1024}


def config_from_dict(data: dict, strict: bool = False) -> ModelConfig:
    """The config a dict describes, its values checked. Unknown fields are ignored, or refused when
    `strict` (a config a user wrote, where one is most likely a typo)."""
    if not isinstance(data, dict):
        raise ValueError(f"a config is a JSON object of fields, not {type_of(data)}")
    kinds = {"audio": AudioConfig, "image": ImageConfig}
    if "kind" not in data:
        raise ValueError('a config names its media kind: "kind": "audio" or "image"')
    cls = kinds.get(data["kind"]) if isinstance(data["kind"], str) else None
    if cls is None:
        raise ValueError(f'unknown model kind {data["kind"]!r} ("audio" or "image")')
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if strict and unknown:
        raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for an {cls().kind} "
                         f"config (fields: {', '.join(sorted(names))})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    config = cls(**values)
    check_config(config)
    return config


def network_parameter_counts(config: ModelConfig) -> dict[str, int]:
    """The weights and biases of the encoder and of the decoder that vqcodec.models builds for `config`, by
    the name of the VQVAE module that holds them (the codebooks are buffers), counted without building them;
    tests/test_train.py checks them against the networks."""
    def conv(inputs: int, outputs: int, kernel: int) -> int:  # kernel: the number of taps (k, or k*k in 2-D)
        return inputs * outputs * kernel + outputs

    if isinstance(config, AudioConfig):
        def block(c: int) -> int:
            return conv(c, c // 2, 3) + conv(c // 2, c, 1)

        width, encoder = config.base_channels, conv(1, config.base_channels, 7)
        for stride in config.strides:
            encoder += config.res_blocks * block(width) + conv(width, 2 * width, 2 * stride)
            width *= 2
        encoder += conv(width, config.latent_dim, 3)
        width = config.decoder_base_channels << len(config.strides)
        decoder = conv(config.latent_dim, width, 7)
        for stride in reversed(config.strides):
            decoder += conv(width, width // 2 * stride, 3)
            width //= 2
            decoder += config.res_blocks * block(width)
        return {"encoder": encoder, "decoder": decoder + conv(width, 1, 7)}

    def block2d(c: int) -> int:
        return conv(c, c // 2, 1) + conv(c // 2, c // 2, 9) + conv(c // 2, c, 1)

    def levels(widths: tuple[int, ...]) -> int:  # their residual blocks, and the resampling between them
        return (sum(config.res_blocks * block2d(width) for width in widths)
                + sum(conv(wide, narrow, 16) for wide, narrow in zip(widths, widths[1:])))

    stem = 3 * config.patch ** 2
    encoder, decoder = config.channels, config.decoder_widths[::-1]
    return {"encoder": conv(stem, encoder[0], 9) + levels(encoder) + block2d(encoder[-1])
                       + conv(encoder[-1], config.latent_dim, 1),
            "decoder": conv(config.latent_dim, decoder[0], 9) + block2d(decoder[0]) + levels(decoder)
                       + conv(decoder[-1], stem, 9)}


def parameter_count(config: ModelConfig) -> int:
    """The weights and biases of the networks that vqcodec.models builds for `config` (network_parameter_counts)."""
    return sum(network_parameter_counts(config).values())


def check_config(config: ModelConfig) -> None:
    """Raise ValueError for a field of the wrong type or out of bounds."""
    def whole(name: str, value, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")

    def listed(name: str, value, allow_empty: bool = False) -> None:
        if isinstance(value, tuple) and not value and not allow_empty:
            raise ValueError(f"{name} must be a list of at least one whole number, not an empty one")
        if not isinstance(value, tuple):
            raise ValueError(f"{name} must be a list of whole numbers, not {value!r}")

    def widths(name: str, value, allow_empty: bool) -> None:
        listed(name, value, allow_empty)
        for item in value:
            whole(f"each of {name}", item, 2, MAX_WIDTH)  # a residual block halves its width

    whole("num_codebooks", config.num_codebooks, 1, MAX_CODEBOOKS)
    whole("codebook_size", config.codebook_size, 2, MAX_CODEBOOK_SIZE)
    whole("latent_dim", config.latent_dim, 1, MAX_WIDTH)
    whole("res_blocks", config.res_blocks, 0, 64)
    whole("context_frames", config.context_frames, 0, 1024)
    entries = config.num_codebooks * config.codebook_size * config.latent_dim
    if entries > MAX_CODEBOOK_ENTRIES:
        raise ValueError(f"num_codebooks x codebook_size x latent_dim is {entries}, more than {MAX_CODEBOOK_ENTRIES}")
    if isinstance(config, AudioConfig):
        whole("sample_rate", config.sample_rate, MIN_MODEL_RATE, MAX_MODEL_RATE)
        whole("base_channels", config.base_channels, 2, MAX_WIDTH)  # a residual block halves its width
        whole("decoder_channels", config.decoder_channels, 0, MAX_WIDTH)
        if config.decoder_channels == 1:
            raise ValueError("decoder_channels must be 0 (base_channels) or at least 2, not 1")
        listed("strides", config.strides)
        for stride in config.strides:
            whole("each of strides", stride, 2, 64)  # a stride of 1 makes one latent frame more than samples
        for name, base in (("base_channels", config.base_channels), ("decoder_channels", config.decoder_channels)):
            widest = base << len(config.strides)  # the width doubles at each stride
            if widest > MAX_WIDTH:
                raise ValueError(f"{name} {base} doubled at each of {plural(len(config.strides), 'stride')} makes "
                                 f"layers {widest} wide, more than {MAX_WIDTH}")
    else:
        whole("patch", config.patch, 1, 64)
        widths("channels", config.channels, allow_empty=False)
        if len(config.channels) > MAX_IMAGE_LEVELS:
            raise ValueError(f"channels must have at most {MAX_IMAGE_LEVELS} levels, not {len(config.channels)}")
        widths("decoder_channels", config.decoder_channels, allow_empty=True)
        if config.decoder_channels and len(config.decoder_channels) != len(config.channels):
            raise ValueError(f"decoder_channels must have one width per level of channels ({len(config.channels)})")
    parameters = parameter_count(config)
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"the networks would have {parameters / 1e6:,.0f} M parameters "
                         f"({parameters * 4 / 2**30:.1f} GiB "
                         f"of float32 weights), more than {MAX_PARAMETERS / 1e6:.0f} M: narrower "
                         "channels or fewer res_blocks")
    unit = "samples" if config.kind == "audio" else "pixels"
    if config.hop > MAX_HOP[config.kind]:
        raise ValueError(f"the strides make one code of {config.hop} {unit}, more than {MAX_HOP[config.kind]}")
    if config.hop * config.context_frames > MAX_CONTEXT[config.kind]:
        raise ValueError(f"context_frames {config.context_frames} of {config.hop} {unit} each span "
                         f"{config.hop * config.context_frames} {unit}, more than {MAX_CONTEXT[config.kind]}")


def load_config_file(path) -> ModelConfig:
    """The config in a JSON file of its fields; only a regular file of at most streams.MAX_JSON_BYTES is read."""
    return config_from_dict(read_json_file(path, what="a config"), strict=True)
