"""Reconstruction losses: multi-resolution log-mel L1 (torch.stft) plus waveform L1 for audio, MSE for
images. Training minimises them; encoding with refinement (vqcodec/refine.py) does too."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-style mel filters, (n_mels, n_fft // 2 + 1)."""
    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    mel_points = np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    filters = np.zeros((n_mels, bins.size), dtype=np.float32)
    for m in range(n_mels):
        left, centre, right = hz_points[m:m + 3]
        rising = (bins - left) / max(centre - left, 1e-6)
        falling = (right - bins) / max(right - centre, 1e-6)
        filters[m] = np.clip(np.minimum(rising, falling), 0, None)
    return torch.from_numpy(filters)


class MultiResolutionMelLoss(torch.nn.Module):
    """L1 distance of log-mel spectrograms at several STFT sizes, computed with torch.stft."""

    def __init__(self, sample_rate: int, sizes=(2048, 1024, 512, 256, 128), mels=(128, 80, 64, 32, 16)):
        super().__init__()
        self.sizes = sizes
        for size, n_mels in zip(sizes, mels):
            self.register_buffer(f"mel_{size}", mel_filterbank(size, n_mels, sample_rate))
            self.register_buffer(f"window_{size}", torch.hann_window(size))

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        length = estimate.shape[-1]
        sizes = [size for size in self.sizes if size // 2 < length] or [min(self.sizes)]
        for size in sizes:
            window, filters = getattr(self, f"window_{size}"), getattr(self, f"mel_{size}")
            specs = []
            for signal in (estimate, target):
                spec = torch.stft(signal.flatten(0, 1), size, size // 4, window=window, pad_mode="constant",
                                  return_complex=True).abs()
                specs.append(torch.log10((filters @ spec).clamp_min(1e-5)))
            total = total + (specs[0] - specs[1]).abs().mean()
        return total / len(sizes)


class ReconstructionLoss(torch.nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.kind
        if cfg.kind == "audio":
            self.mel = MultiResolutionMelLoss(cfg.sample_rate)

    def forward(self, estimate, target) -> tuple[torch.Tensor, dict]:
        if self.kind == "audio":
            mel = self.mel(estimate, target)
            wave = (estimate - target).abs().mean()
            return mel + 0.1 * wave, {"mel": mel.item(), "l1": wave.item()}
        mse = F.mse_loss(estimate, target)
        return 1000.0 * mse, {"psnr": -10 * math.log10(max(mse.item(), 1e-10))}
