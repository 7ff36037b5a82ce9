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


def cut_codes(codec, codes: np.ndarray, quality: int, weight: float) -> np.ndarray:
    """One chunk's codes (audio (channels, Q, n), image (Q, rows, cols), ABSENT beyond a cell's
    depth) cut to at most `quality` levels, each cell at the depth worth its bits at `weight`
    (0: every cell keeps its levels, up to `quality`)."""
    audio = codec.kind == "audio"
    planes = [channel[:, None, :] for channel in codes] if audio else [codes]  # (levels, rows, cols) each
    flat = torch.from_numpy(np.concatenate([p.reshape(p.shape[0], -1) for p in planes], axis=1).astype(np.int64))
    depth = torch.from_numpy((codes >= 0).sum(1 if audio else 0).reshape(-1)).clamp(max=quality)
    if weight > 0 and codec.prior is not None and flat.shape[1]:
        errors = _errors_by_depth(codec.model.quantizer, flat)
        bits = torch.from_numpy(np.concatenate([codec.prior.code_bits(p).reshape(p.shape[0], -1) for p in planes],
                                               axis=1))
        measured = min(quality, flat.shape[0] - 1)  # the level whose exchange of error for bits sets lambda
        removed, spent = float((errors[measured] - errors[measured + 1]).sum()), float(bits[measured].sum())
        if removed > 0 and spent > 0:
            spent_by_depth = torch.cat([bits.new_zeros((1, bits.shape[1])), bits[:quality].cumsum(0)])
            # past a cell's own depth, its error and bits stay the same, so argmin (the first minimum)
            # never picks a depth the file does not hold
            depth = (errors[:quality + 1] + weight * removed / spent * spent_by_depth).argmin(0)
    cut = flat[:quality].masked_fill(torch.arange(quality)[:, None] >= depth[None], ABSENT).numpy()
    if audio:
        return cut.reshape(quality, len(planes), -1).transpose(1, 0, 2).copy()
    return cut.reshape(quality, *codes.shape[1:])


def _errors_by_depth(quantizer, flat: torch.Tensor) -> torch.Tensor:
    """(Q + 1, cells) float64: |z - z_d|^2 for d = 0..Q, where z is what all of the cell's codes
    decode to and z_d its first d levels."""
    levels = []
    for layer, indices in zip(quantizer.layers, flat):
        indices = indices.to(layer.codebook.device)
        levels.append(layer.decode(indices.clamp(min=0)).masked_fill((indices < 0)[:, None], 0.0).cpu().double())
    rest = torch.stack(levels).flip(0).cumsum(0).flip(0)   # rest[d] = z - z_d
    return torch.cat([rest.pow(2).sum(-1), torch.zeros((1, flat.shape[1]), dtype=torch.float64)])
