"""Encoder and decoder networks, and the VQ-VAE that joins them with a residual quantiser.

Audio tensors are (batch, 1, samples); image tensors are (batch, 3, height, width) in [0, 1].
Latents are (batch, latent_dim, frames) for audio and (batch, latent_dim, h, w) for images.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import AudioConfig, ImageConfig, ModelConfig
from .quantize import ResidualVQ


class AudioResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(),
            nn.Conv1d(channels, channels // 2, 3, dilation=dilation, padding=dilation),
            nn.ELU(),
            nn.Conv1d(channels // 2, channels, 1),
        )

    def forward(self, x):
        return x + self.block(x)


def _res_stack(channels: int, count: int) -> list[nn.Module]:
    return [AudioResBlock(channels, 3 ** i) for i in range(count)]


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioConfig):
        super().__init__()
        width = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv1d(1, width, 7, padding=3)]
        for stride in cfg.strides:
            layers += _res_stack(width, cfg.res_blocks)
            layers += [nn.ELU(), nn.Conv1d(width, width * 2, 2 * stride, stride=stride, padding=(stride + 1) // 2)]
            width *= 2
        layers += [nn.ELU(), nn.Conv1d(width, cfg.latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, audio):
        return self.net(audio)


class Upsample1d(nn.Module):
    """Sub-pixel upsampling: a convolution to `stride` times the channels, then interleave.

    Much faster on CPU than a transposed convolution, and free of its checkerboard artefacts.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels * stride, 3, padding=1)

    def forward(self, x):
        b, _, t = x.shape
        y = self.conv(x).reshape(b, -1, self.stride, t)
        return y.transpose(2, 3).reshape(b, -1, t * self.stride)


class AudioDecoder(nn.Module):
    def __init__(self, cfg: AudioConfig):
        super().__init__()
        width = cfg.decoder_base_channels * 2 ** len(cfg.strides)
        layers: list[nn.Module] = [nn.Conv1d(cfg.latent_dim, width, 7, padding=3)]
        for stride in reversed(cfg.strides):
            layers += [nn.ELU(), Upsample1d(width, width // 2, stride)]
            width //= 2
            layers += _res_stack(width, cfg.res_blocks)
        layers += [nn.ELU(), nn.Conv1d(width, 1, 7, padding=3)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents):
        return self.net(latents)


class ImageResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.GELU(),
            nn.Conv2d(channels, channels // 2, 1),
            nn.GELU(),
            nn.Conv2d(channels // 2, channels // 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels // 2, channels, 1),
        )

    def forward(self, x):
        return x + self.block(x)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ImageConfig):
        super().__init__()
        widths = cfg.channels
        layers: list[nn.Module] = [nn.PixelUnshuffle(cfg.patch), nn.Conv2d(3 * cfg.patch ** 2, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            layers += [ImageResBlock(width) for _ in range(cfg.res_blocks)]
            if i + 1 < len(widths):
                layers += [nn.GELU(), nn.Conv2d(width, widths[i + 1], 4, stride=2, padding=1)]
        layers += [ImageResBlock(widths[-1]), nn.GELU(), nn.Conv2d(widths[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image):
        return self.net(image - 0.5)


class ImageDecoder(nn.Module):
    def __init__(self, cfg: ImageConfig):
        super().__init__()
        widths = list(reversed(cfg.decoder_widths))
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, widths[0], 3, padding=1), ImageResBlock(widths[0])]
        for i, width in enumerate(widths):
            layers += [ImageResBlock(width) for _ in range(cfg.res_blocks)]
            if i + 1 < len(widths):
                layers += [nn.GELU(), nn.ConvTranspose2d(width, widths[i + 1], 4, stride=2, padding=1)]
        layers += [nn.GELU(), nn.Conv2d(widths[-1], 3 * cfg.patch ** 2, 3, padding=1), nn.PixelShuffle(cfg.patch)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents):
        return self.net(latents) + 0.5


def _networks(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    if isinstance(cfg, AudioConfig):
        return AudioEncoder(cfg), AudioDecoder(cfg)
    return ImageEncoder(cfg), ImageDecoder(cfg)


class VQVAE(nn.Module):
    """Encoder -> residual VQ -> decoder, for either media kind."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = _networks(cfg)
        self.quantizer = ResidualVQ(cfg.latent_dim, cfg.num_codebooks, cfg.codebook_size)

    @staticmethod
    def _flatten(latents):
        """(B, D, *grid) -> (B * cells, D)."""
        return latents.flatten(2).transpose(1, 2).reshape(-1, latents.shape[1])

    @staticmethod
    def _unflatten(vectors, like):
        b, d, *grid = like.shape
        return vectors.reshape(b, -1, d).transpose(1, 2).reshape(b, d, *grid)

    def forward(self, x):
        """Training pass: returns the reconstruction, codes (Q, N) and commitment loss."""
        latents = self.encoder(x).float()
        cells = latents[0, 0].numel()
        with torch.autocast(latents.device.type, enabled=False):  # code search and EMA updates need fp32
            quantized, codes, commitment = self.quantizer(self._flatten(latents), group_size=cells)
        return self.decoder(self._unflatten(quantized, latents)), codes, commitment


# ---------------------------------------------------------------- growing a trained network

def network_widths(cfg: ModelConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The encoder's and the decoder's widths."""
    if isinstance(cfg, AudioConfig):
        return (cfg.base_channels,), (cfg.decoder_base_channels,)
    return cfg.channels, cfg.decoder_widths


def _without_widths(cfg: ModelConfig) -> ModelConfig:
    if isinstance(cfg, AudioConfig):
        return dataclasses.replace(cfg, base_channels=0, decoder_channels=0)
    return dataclasses.replace(cfg, channels=(), decoder_channels=())


def widths_differ_only(old: ModelConfig, new: ModelConfig) -> bool:
    """True when `new` is `old` with wider networks (audio base_channels and decoder_channels, image
    channels and decoder_channels) and nothing else."""
    if type(old) is not type(new) or network_widths(old) == network_widths(new):
        return False
    pairs = list(zip(network_widths(old), network_widths(new)))
    return (all(len(a) == len(b) and all(y >= x for x, y in zip(a, b)) for a, b in pairs)
            and _without_widths(new) == _without_widths(old))


def encoder_unchanged(old: ModelConfig, new: ModelConfig) -> bool:
    return network_widths(old)[0] == network_widths(new)[0]


@torch.no_grad()
def widen(model: VQVAE, cfg: ModelConfig, seed: int = 0) -> VQVAE:
    """A wider network (`cfg`) that computes what the trained `model` computes (Chen et al., Net2Net, 2016).

    Each new channel copies an old one: its incoming weights are the old channel's, and the weights
    that read a copied channel share the old weight between the copies in random proportions that sum
    to one. The output is unchanged (to rounding), yet the copies receive different gradients and
    grow apart in training. The quantiser, whose width is latent_dim, is copied as it is."""
    if not widths_differ_only(model.cfg, cfg):
        raise ValueError("widen needs the same config with equal or wider networks")
    generator = torch.Generator().manual_seed(seed)
    wide = VQVAE(cfg)
    for old_net, new_net in ((model.encoder.net, wide.encoder.net), (model.decoder.net, wide.decoder.net)):
        first = next(m for m in old_net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))
        _widen_sequence(list(old_net), list(new_net), torch.arange(first.in_channels), generator)
    wide.quantizer.load_state_dict(model.quantizer.state_dict())
    return wide.train(model.training)


def _copy_map(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """For each of `new` channels, the old channel it copies: first each old one, then random ones."""
    extra = new - old
    if extra <= old:
        picks = torch.randperm(old, generator=generator)[:extra]
    else:
        picks = torch.randint(old, (extra,), generator=generator)
    return torch.cat([torch.arange(old), picks])


def _read_shares(source: torch.Tensor, shape: tuple[int, ...], dim: int, generator: torch.Generator) -> torch.Tensor:
    """Random positive weights over dimension `dim` (new input channels) that sum to one over the
    copies of each old channel, element by element."""
    shares = 0.5 + torch.rand(shape, generator=generator)
    moved = shares.movedim(dim, 0)
    totals = torch.zeros((int(source.max()) + 1, *moved.shape[1:])).index_add_(0, source, moved)
    return (moved / totals[source]).movedim(0, dim)


def _widen_conv(old: nn.Module, new: nn.Module, source_in: torch.Tensor, source_out: torch.Tensor,
                generator: torch.Generator) -> None:
    weight = old.weight
    in_dim, out_dim = (0, 1) if isinstance(old, nn.ConvTranspose2d) else (1, 0)
    weight = weight.index_select(out_dim, source_out).index_select(in_dim, source_in)
    weight = weight * _read_shares(source_in, tuple(weight.shape), in_dim, generator)
    new.weight.copy_(weight)
    if old.bias is not None:
        new.bias.copy_(old.bias[source_out])


def _widen_sequence(old_layers: list[nn.Module], new_layers: list[nn.Module], source: torch.Tensor,
                    generator: torch.Generator, last_out: torch.Tensor | None = None) -> torch.Tensor:
    """Widen each layer of a sequence in place of `new_layers`; `source` maps the channels flowing in
    to the old channels they copy. `last_out` forces the last convolution's map (residual blocks)."""
    convolutions = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
    last_conv = max(i for i, m in enumerate(old_layers) if isinstance(m, convolutions))
    for index, (old, new) in enumerate(zip(old_layers, new_layers)):
        if isinstance(old, (AudioResBlock, ImageResBlock)):
            _widen_sequence(list(old.block), list(new.block), source, generator, last_out=source)
        elif isinstance(old, Upsample1d):  # its convolution's channels are (output channel, phase) pairs
            target = _copy_map(old.conv.out_channels // old.stride, new.conv.out_channels // new.stride, generator)
            rows = (target[:, None] * old.stride + torch.arange(old.stride)).reshape(-1)
            _widen_conv(old.conv, new.conv, source, rows, generator)
            source = target
        elif isinstance(old, convolutions):
            if last_out is not None and index == last_conv:
                target = last_out
            else:
                target = _copy_map(old.out_channels, new.out_channels, generator)
            _widen_conv(old, new, source, target, generator)
            source = target
    return source
