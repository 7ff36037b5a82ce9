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

CELLS_AT_ONCE = 4096  # cells whose codebook vectors are held at once (float64: 42 MB at q20, 64 dimensions)


class FileCuts:
    """A file's codes (audio (channels, Q, frames), image (Q, rows, cols), ABSENT beyond a cell's
    depth), cut chunk by chunk. What choosing a chunk's depths needs (each cell's error and bits at
    every depth) is computed for that chunk at each cut and let go after it, not kept for the whole
    file (25 MB an hour of speech at q8), so besides the codes and the cut codes a cut needs no more
    memory for an hour than for a minute; a rate search, which cuts 4-10 times, takes a tenth to
    a fifth longer for it."""

    def __init__(self, codec, codes: np.ndarray, chunk: int):
        self.codec, self.codes, self.audio = codec, codes, codec.kind == "audio"
        self.axis = 2 if self.audio else 1
        total = codes.shape[self.axis]
        self.spans = [(start, min(total, start + chunk)) for start in range(0, total, chunk)]
        books = [layer.codebook.cpu() for layer in codec.model.quantizer.layers[:codes.shape[self.axis - 1]]]
        self.codebooks = torch.stack([torch.cat([book, book.new_zeros((1, book.shape[1]))]) for book in books])

    def cut(self, quality: int, weight: float) -> np.ndarray:
        """The codes cut to at most `quality` levels, each cell at the depth worth its bits at
        `weight` (0: every cell keeps its levels, up to `quality`), lambda measured per chunk; of
        the codes' integer type."""
        with_costs = weight > 0 and self.codec.prior is not None
        shape = list(self.codes.shape)
        shape[self.axis - 1] = quality
        cut = np.empty(shape, dtype=self.codes.dtype)
        for a, b in self.spans:
            flat, depth = self._chunk(a, b)
            if with_costs and flat.shape[1]:
                depth = _best_depths(*self._costs(a, b, flat), quality, weight, depth)
            cut[(slice(None),) * self.axis + (slice(a, b),)] = self._shaped(
                flat[:quality].masked_fill(torch.arange(quality)[:, None] >= depth[None], ABSENT).numpy(), b - a)
        return cut

    def shallowest(self) -> int:
        """The fewest levels any frame or cell holds."""
        return min(int(self._chunk(a, b)[1].min()) for a, b in self.spans)

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

    def _costs(self, a: int, b: int, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A chunk's |z - z_d|^2 for d = 0..Q (Q + 1, cells) and each code's bits under the prior (Q, cells)."""
        levels = flat.shape[0]
        planes = [channel[:, None, :] for channel in self.codes[:, :, a:b]] if self.audio else [self.codes[:, a:b]]
        bits = np.concatenate([self.codec.prior.code_bits(p).reshape(levels, -1) for p in planes], axis=1)
        return _errors_by_depth(self.codebooks, flat), torch.from_numpy(bits)


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
def _errors_by_depth(codebooks: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """(Q + 1, cells) float64: |z - z_d|^2 for d = 0..Q, where z is what all of the cell's codes
    decode to and z_d its first d levels; `codebooks` (levels, K + 1, D) the quantizer's, each with
    a row of zeros, the last, for ABSENT. Worked out CELLS_AT_ONCE cells at a time: the codebook
    vectors of a whole chunk of a wide image (65 536 cells at q20) took 1.4 GB."""
    return torch.cat([_cell_errors(codebooks, flat[:, start:start + CELLS_AT_ONCE])
                      for start in range(0, max(flat.shape[1], 1), CELLS_AT_ONCE)], dim=1)


def _cell_errors(codebooks: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    rows = flat.where(flat >= 0, codebooks.shape[1] - 1)
    rest = codebooks[torch.arange(flat.shape[0])[:, None], rows].double()
    for d in range(flat.shape[0] - 2, -1, -1):
        rest[d] += rest[d + 1]   # rest[d] = z - z_d
    return torch.cat([rest.pow(2).sum(-1), torch.zeros((1, flat.shape[1]), dtype=torch.float64)])
