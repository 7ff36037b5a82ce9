"""A `.vq` file at a lower quality or rate, made from the file alone (`vqcodec encode talk.vq
small.vq -q 4`, `--bitrate`, `--bpp`; Codec.recode).

A residual quantiser's levels refine one another, so fewer levels of the same codes are a coarser
version of the same media. Cutting every frame or image cell to the same number of levels wastes
bits, though: encoding gives each cell its own depth (Codec._choose_depths), keeping a level only
where the error it removes is worth its bits. Without the media, the encoder's latents are not
known; the latents the file's own codes decode to stand in for them. Each cell is then cut at the
depth d that minimises |z - z_d|^2 + lambda * bits(d), where z is the file's latent, z_d the sum
of its first d levels and bits(d) their cost under the prior; lambda is the depth weight times the
error one more level removes per bit it costs, measured on the same chunk. Nothing but codebook
lookups and the prior's tables is evaluated, so this takes a small part of the time encoding takes.
"""
from __future__ import annotations

import numpy as np
import torch

from .prior import ABSENT


class FileCuts:
    """A file's codes (audio (channels, Q, frames), image (Q, rows, cols), ABSENT beyond a cell's
    depth), cut chunk by chunk. What choosing the cells' depths needs is computed once, on the first
    cut that needs it, into two arrays for the whole file (many small arrays kept between the large
    temporaries would keep the heap from shrinking: an hour of speech would hold 600 MB more)."""

    def __init__(self, codec, codes: np.ndarray, chunk: int):
        self.codec, self.codes, self.audio = codec, codes, codec.kind == "audio"
        self.axis = 2 if self.audio else 1
        total = codes.shape[self.axis]
        self.spans = [(start, min(total, start + chunk)) for start in range(0, total, chunk)]
        self._errors = self._bits = None

    def cut(self, quality: int, weight: float) -> np.ndarray:
        """The codes cut to at most `quality` levels, each cell at the depth worth its bits at
        `weight` (0: every cell keeps its levels, up to `quality`), lambda measured per chunk."""
        with_costs = weight > 0 and self.codec.prior is not None
        if with_costs and self._errors is None:
            self._measure()
        parts, cell = [], 0
        for a, b in self.spans:
            flat, depth = self._chunk(a, b)
            cells = flat.shape[1]
            if with_costs and cells:
                depth = _best_depths(self._errors[:, cell:cell + cells], self._bits[:, cell:cell + cells],
                                     quality, weight, depth)
            cell += cells
            parts.append(self._shaped(flat[:quality].masked_fill(torch.arange(quality)[:, None] >= depth[None],
                                                                 ABSENT).numpy(), b - a))
        return np.concatenate(parts, axis=self.axis)

    def _chunk(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A chunk's codes as (Q, cells), cells channel by channel for audio, and each cell's depth."""
        codes = self.codes[:, :, a:b] if self.audio else self.codes[:, a:b]
        flat = np.moveaxis(codes, 1, 0).reshape(codes.shape[1], -1) if self.audio else codes.reshape(codes.shape[0], -1)
        flat = torch.from_numpy(flat.astype(np.int64))
        return flat, (flat >= 0).sum(0)

    def _shaped(self, cut: np.ndarray, n: int) -> np.ndarray:
        if self.audio:
            return cut.reshape(cut.shape[0], -1, n).transpose(1, 0, 2)
        return cut.reshape(cut.shape[0], n, -1)

    def _measure(self) -> None:
        """|z - z_d|^2 for d = 0..Q (Q + 1, cells) and each code's bits under the prior (Q, cells)."""
        levels = self.codes.shape[1 if self.audio else 0]
        cells = self.codes.size // levels
        self._errors = torch.empty((levels + 1, cells), dtype=torch.float64)
        self._bits = torch.empty((levels, cells), dtype=torch.float64)
        cell = 0
        for a, b in self.spans:
            flat, _ = self._chunk(a, b)
            n = flat.shape[1]
            self._errors[:, cell:cell + n] = _errors_by_depth(self.codec.model.quantizer, flat)
            planes = [channel[:, None, :] for channel in self.codes[:, :, a:b]] if self.audio else [self.codes[:, a:b]]
            self._bits[:, cell:cell + n] = torch.from_numpy(np.concatenate(
                [self.codec.prior.code_bits(p).reshape(levels, -1) for p in planes], axis=1))
            cell += n


def _best_depths(errors: torch.Tensor, bits: torch.Tensor, quality: int, weight: float,
                 depth: torch.Tensor) -> torch.Tensor:
    """Each cell's depth d <= quality minimising errors[d] + lambda * (bits of its first d codes), with
    lambda = weight times the error the next level removes per bit it costs on these cells (the
    last level's own at the top); `depth` (the cells' own) where that exchange cannot be measured."""
    measured = min(quality, bits.shape[0] - 1)
    removed, spent = float((errors[measured] - errors[measured + 1]).sum()), float(bits[measured].sum())
    if not (removed > 0 and spent > 0):
        return depth.clamp(max=quality)
    spent_by_depth = torch.cat([bits.new_zeros((1, bits.shape[1])), bits[:quality].cumsum(0)])
    # past a cell's own depth its error and bits stay the same, so argmin (the first minimum) never
    # picks a depth the file does not hold
    return (errors[:quality + 1] + weight * removed / spent * spent_by_depth).argmin(0)


@torch.no_grad()
def _errors_by_depth(quantizer, flat: torch.Tensor) -> torch.Tensor:
    """(Q + 1, cells) float64: |z - z_d|^2 for d = 0..Q, where z is what all of the cell's codes
    decode to and z_d its first d levels."""
    levels = []
    for layer, indices in zip(quantizer.layers, flat):
        indices = indices.to(layer.codebook.device)
        levels.append(layer.decode(indices.clamp(min=0)).masked_fill((indices < 0)[:, None], 0.0).cpu().double())
    rest = torch.stack(levels).flip(0).cumsum(0).flip(0)   # rest[d] = z - z_d
    return torch.cat([rest.pow(2).sum(-1), torch.zeros((1, flat.shape[1]), dtype=torch.float64)])
