"""Residual vector quantisation with EMA codebooks (van den Oord et al. 2017; Zeghidour et al. 2021).

Each codebook is updated by exponential moving averages of the vectors assigned to it,
initialised by k-means on the first batch it sees, and dead codes are restarted from
vectors of the current batch. Quantizer dropout trains one model for every bitrate.
Under data-parallel training (vqcodec.parallel) every process makes the same codebook
update, from the statistics of the whole batch.
"""
from __future__ import annotations

import torch
from torch import nn

from . import parallel


NEAREST_ELEMENTS = 1 << 20  # distances nearest_code holds at once (4 MB): bounds its memory, stays in cache


@torch.no_grad()  # an index has no gradient; and addmm's out= refuses inputs that require one
def nearest_code(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row for each row of `vectors` (N, D) -> (N,); the first of equals.
    The distances are computed a few rows at a time, into one reused buffer."""
    norms = codebook.pow(2).sum(1)
    rows = max(1, NEAREST_ELEMENTS // max(1, codebook.shape[0]))
    buffer = vectors.new_empty((min(rows, vectors.shape[0]), codebook.shape[0]))
    parts = [_nearest_rows(part, codebook, norms, buffer[:part.shape[0]]) for part in vectors.split(rows)]
    return torch.cat(parts) if parts else vectors.new_zeros((0,), dtype=torch.long)


def _nearest_rows(vectors: torch.Tensor, codebook: torch.Tensor, norms: torch.Tensor,
                  out: torch.Tensor) -> torch.Tensor:
    # |v|^2 - 2 v.c + |c|^2, rounded as that expression is, left to right
    distances = torch.addmm(vectors.pow(2).sum(1, keepdim=True), vectors, codebook.t(), alpha=-2, out=out)
    return distances.add_(norms).argmin(1)


def kmeans(vectors: torch.Tensor, k: int, iterations: int = 10) -> torch.Tensor:
    n = vectors.shape[0]
    pick = torch.randperm(n, device=vectors.device)[:k] if n >= k else torch.randint(n, (k,), device=vectors.device)
    centroids = vectors[pick].clone()
    if n < k:
        centroids += 1e-3 * vectors.std() * torch.randn_like(centroids)
    for _ in range(iterations):
        assign = nearest_code(vectors, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        counts = torch.bincount(assign, minlength=k).to(vectors.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class VectorQuantizer(nn.Module):
    def __init__(self, dim: int, size: int, decay: float = 0.99, restart_after: int = 50):
        super().__init__()
        self.size = size
        self.decay = decay
        self.restart_after = restart_after  # training steps a code may go unused before it is restarted
        self.register_buffer("codebook", torch.randn(size, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("idle_steps", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return nearest_code(vectors, self.codebook)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]

    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        if not bool(self.initialized):
            self.codebook.copy_(kmeans(parallel.gather_rows(vectors), self.size))
            parallel.broadcast_(self.codebook)
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
            self.initialized.fill_(True)
            return
        one_hot_count = torch.bincount(indices, minlength=self.size).to(vectors.dtype)
        sums = torch.zeros_like(self.codebook).index_add_(0, indices, vectors)
        parallel.sum_(one_hot_count, sums)
        self.ema_count.mul_(self.decay).add_(one_hot_count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (total + self.size * 1e-5) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.idle_steps.add_(1).masked_fill_(one_hot_count > 0, 0)
        dead = self.idle_steps >= self.restart_after
        n_dead = int(dead.sum())
        if n_dead:
            pool = parallel.gather_rows(vectors)
            replacement = pool[torch.randint(pool.shape[0], (n_dead,), device=vectors.device)]
            parallel.broadcast_(replacement)
            self.codebook[dead] = replacement
            self.ema_sum[dead] = replacement
            self.ema_count[dead] = 1.0
            self.idle_steps[dead] = 0

    def forward(self, vectors: torch.Tensor, active: torch.Tensor | None = None):
        """Quantise (N, D) vectors. `active` (N,) bool marks rows that take part in training updates.

        Returns the quantised vectors with a straight-through gradient, the indices and the
        commitment loss.
        """
        indices = self.encode(vectors.detach())
        if self.training:
            mask = active if active is not None else torch.ones_like(indices, dtype=torch.bool)
            if parallel.any_process(bool(mask.any()), vectors.device):
                self._update(vectors.detach()[mask], indices[mask])
                indices = self.encode(vectors.detach())
        quantized = self.decode(indices)
        commitment = (vectors - quantized.detach()).pow(2).mean(1)
        quantized = vectors + (quantized - vectors).detach()
        return quantized, indices, commitment


BEAM_ROWS = 2048      # latent vectors searched at once by the beam encoder, at most ...
BEAM_SCORES = 1 << 23  # ... and fewer where their scores (rows x paths x codes) would be more than this:
                       # 32 MB of float32 (a codebook of 2**15 and a beam of 4 held 1 GiB for 2048 rows)
TOPK_GROUP = 64   # _smallest looks for the k smallest values among the k groups with the smallest minima


def _smallest(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest values of each row of (N, M) and their indices, in increasing order.

    The k smallest lie in the k groups (of TOPK_GROUP columns) with the smallest minima, so a
    group minimum, a small top-k over the group minima and one over k groups replace a top-k over
    all M columns: about 3x faster on CPU.
    """
    n, m = values.shape
    if m % TOPK_GROUP or m // TOPK_GROUP < k:
        return values.topk(k, dim=1, largest=False)
    groups = values.view(n, m // TOPK_GROUP, TOPK_GROUP)
    _, chosen = groups.amin(2).topk(k, dim=1, largest=False)
    candidates = groups.gather(1, chosen[..., None].expand(-1, -1, TOPK_GROUP)).reshape(n, -1)
    smallest, where = candidates.topk(k, dim=1, largest=False)
    return smallest, chosen.gather(1, where // TOPK_GROUP) * TOPK_GROUP + where % TOPK_GROUP


def beam_rows(beam: int, sizes: list[int]) -> int:
    """Latent vectors the beam encoder searches at once: BEAM_ROWS, or fewer so that a level's scores,
    one per row, path (at most `beam`) and code (`sizes`: each level's codebook size), stay within
    BEAM_SCORES. Each row's search is its own, so the codes do not depend on it."""
    widest = max(1, beam) * max(sizes, default=1)
    return max(1, min(BEAM_ROWS, BEAM_SCORES // widest))


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, num_codebooks: int, codebook_size: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = dropout
        self.layers = nn.ModuleList(VectorQuantizer(dim, codebook_size) for _ in range(num_codebooks))

    @property
    def num_codebooks(self) -> int:
        return len(self.layers)

    def forward(self, latents: torch.Tensor, group_size: int):
        """Quantise (N, D) latent vectors, where each run of `group_size` rows is one training example.

        With quantizer dropout, each example uses a random number of codebooks 1..Q.
        Returns quantised latents, indices (Q, N), commitment loss, and per-layer usage.
        """
        n = latents.shape[0]
        depth = torch.full((n,), self.num_codebooks, device=latents.device)
        if self.training and self.dropout > 0:
            examples = n // group_size
            drawn = torch.randint(1, self.num_codebooks + 1, (examples,), device=latents.device)
            keep_full = torch.rand(examples, device=latents.device) >= self.dropout
            drawn = torch.where(keep_full, torch.full_like(drawn, self.num_codebooks), drawn)
            depth = drawn.repeat_interleave(group_size)
        residual = latents
        output = torch.zeros_like(latents)
        commitment = torch.zeros((), device=latents.device)
        all_indices = []
        for level, layer in enumerate(self.layers):
            active = depth > level
            quantized, indices, commit = layer(residual, active)
            weight = active.to(latents.dtype)
            output = output + quantized * weight[:, None]
            residual = residual - quantized.detach() * weight[:, None]
            commitment = commitment + (commit * weight).sum() / n
            all_indices.append(indices)
        return output, torch.stack(all_indices), commitment

    def encode(self, latents: torch.Tensor, count: int, beam: int = 1, bit_costs=None) -> torch.Tensor:
        """(N, D) latents -> (count, N) indices. With beam > 1 the search keeps the `beam` best
        partial sums at every level instead of the nearest code alone (greedy), which lowers the
        quantisation error at the same number of codebooks; the decoder is the same either way.

        bit_costs: optional rate term for rate-distortion-optimised quantisation, a callable
        (level, rows: slice of the N rows, coarser codes (rows, paths) or None at level 0) ->
        (rows, paths or 1, K) costs added to the squared error of every code (prior.RateCosts).
        The search then minimises error plus the summed costs along each path.
        """
        if beam <= 1 and bit_costs is None:
            residual = latents
            out = []
            for layer in self.layers[:count]:
                indices = layer.encode(residual)
                residual = residual - layer.decode(indices)
                out.append(indices)
            return torch.stack(out) if out else latents.new_zeros((0, latents.shape[0]), dtype=torch.long)
        beam = max(1, beam)
        step = beam_rows(beam, [layer.codebook.shape[0] for layer in self.layers[:count]])
        columns = [self._score_columns(layer.codebook) for layer in self.layers[:count]]  # once, not per block
        parts = [self._beam_encode(latents[start:start + step], count, beam, bit_costs, start, columns)
                 for start in range(0, latents.shape[0], step)]
        return torch.cat(parts, 1) if parts else latents.new_zeros((count, 0), dtype=torch.long)

    def encode_cells(self, latents: torch.Tensor, count: int, beam: int = 1, bit_costs=None) -> torch.Tensor:
        """(batch, D, *cells) latents -> (count, batch, *cells) indices: frames for audio, rows and
        columns for images."""
        vectors = latents.movedim(1, -1).reshape(-1, latents.shape[1])
        return self.encode(vectors, count, beam, bit_costs).reshape(count, latents.shape[0], *latents.shape[2:])

    def decode_cells(self, indices: torch.Tensor) -> torch.Tensor:
        """(q, batch, *cells) indices -> (batch, D, *cells) latents: the inverse layout of encode_cells."""
        vectors = self.decode(indices.reshape(indices.shape[0], -1))
        return vectors.reshape(*indices.shape[1:], -1).movedim(-1, 1).contiguous()  # layout decides conv kernels

    @staticmethod
    def _score_columns(codebook: torch.Tensor) -> torch.Tensor:
        """[-2c, |c|^2, 1] for every code c: the beam search's scores are its rows' products with these."""
        return torch.cat([-2 * codebook, codebook.pow(2).sum(1, keepdim=True),
                          codebook.new_ones((codebook.shape[0], 1))], 1)

    def _beam_encode(self, latents: torch.Tensor, count: int, beam: int, bit_costs, first_row: int,
                     columns: list[torch.Tensor]) -> torch.Tensor:
        """Codes of one block of rows (first_row on); `columns`: each level's _score_columns."""
        n, dim = latents.shape
        rows = slice(first_row, first_row + n)
        ones = latents.new_ones((n, 1, 1))
        residuals = latents[:, None, :]                                    # (N, paths, D)
        rates = latents.new_zeros((n, 1))                                  # summed bit costs of each path
        paths = torch.zeros((n, 1, 0), dtype=torch.long, device=latents.device)
        for level, layer in enumerate(self.layers[:count]):
            codebook = layer.codebook
            size, width = codebook.shape[0], residuals.shape[1]
            # |r - c|^2 + rate = (|r|^2 + rate) - 2 r.c + |c|^2 for every path and code, as one product
            # [r, 1, |r|^2 + rate] . [-2c, |c|^2, 1]
            known = residuals.pow(2).sum(-1, keepdim=True) + rates[..., None]
            rows_r = torch.cat([residuals, ones.expand(-1, width, -1), known], 2)
            scores = (rows_r.reshape(-1, dim + 2) @ columns[level].t()).view(n, width, size)
            if bit_costs is not None:
                costs = bit_costs(level, rows, paths[:, :, -1] if level else None)   # (N, paths or 1, K)
                scores.add_(costs)
            _, best = _smallest(scores.view(n, width * size), min(beam, width * size))
            parent, code = best // size, best % size
            if bit_costs is not None:
                chosen = costs.reshape(n, width * size).gather(1, best) if costs.shape[1] == width else \
                    costs[:, 0].gather(1, code)
                rates = rates.gather(1, parent) + chosen
            residuals = residuals.gather(1, parent[..., None].expand(-1, -1, dim)) - codebook[code]
            paths = torch.cat([paths.gather(1, parent[..., None].expand(-1, -1, paths.shape[2])), code[..., None]], 2)
        return paths[:, 0].t()                                             # in increasing order: path 0 is the best

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(q, N) indices -> (N, D) latents, using the first q codebooks. An index of -1 adds nothing:
        that vector does not use that level (per-cell depth, Codec.depth_weight)."""
        total = 0
        for layer, level_indices in zip(self.layers, indices):
            absent = level_indices < 0
            if bool(absent.any()):
                total = total + layer.decode(level_indices.clamp(min=0)).masked_fill(absent[:, None], 0.0)
            else:
                total = total + layer.decode(level_indices)
        return total

    def partial_errors(self, latents: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Squared error of each of the (N, D) latents after 0, 1, .., q of its (q, N) codes: (q + 1, N)."""
        residual = latents
        errors = [residual.pow(2).sum(1)]
        for layer, level_indices in zip(self.layers, indices):
            residual = residual - layer.decode(level_indices)
            errors.append(residual.pow(2).sum(1))
        return torch.stack(errors)
