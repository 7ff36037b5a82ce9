"""Context tables fitted with a small network over codebook vectors (CodePrior.with_network_tables).

A level whose context is one source (the previous frame's code, or the coarser level's code at the
same frame) has K + 1 possible contexts. Fitted by counting alone, most of them are seen too rarely,
so prior.py groups the source values into 64 or 256 classes and loses what is particular to each
value. But codes whose codebook vectors lie close together tend to come before (or above) similar
codes, and a network that reads the vector can share what it learns between them:

    p_net(code | value) = softmax(W2 gelu(W1 vector(value) + b1) + b2)   (a learned input for "unavailable")

trained on the counts of (source value, code) pairs. A context's row is then its own counts smoothed
towards the network's prediction, (counts + beta p_net) / (n + beta): frequent contexts keep their
counts, rare ones lean on their neighbours in codebook space. beta and the training length are
chosen on held-out files.

The result is an ordinary table, one row per source value, with an identity class map: decoders
read it like any other, as stored integers, so nothing about bit-exact decoding changes and
decoding is exactly as fast. The network only runs while fitting. (A network evaluated for every
code, over the codebook vectors of several neighbours, saves about twice as many bits, but in
integer arithmetic it took a quarter of the total coding time: docs/ENTROPY.md, "Measurements
behind the prior".)
"""
from __future__ import annotations

import math

import numpy as np

HIDDEN = 64
MAX_STEPS = 3000
CHECK_EVERY = 50
PATIENCE = 6            # checks without improvement before training stops
SMOOTHING = (128.0, 512.0, 2048.0, 8192.0, 32768.0, 131072.0, 524288.0)  # beta: counts' pull towards the network


def fit_rows(vectors: np.ndarray, fit_counts: np.ndarray, test_counts: np.ndarray, hidden: int = HIDDEN,
             seed: int = 0, log=None) -> tuple[np.ndarray, float, dict]:
    """Probability rows (V + 1, K) for the V source values whose codebook vectors are `vectors`
    (V, D), plus "unavailable" (row V), from counts (V + 1, K) of (source value, code) pairs.

    Returns the rows fitted to fit_counts + test_counts, the held-out bits per code of the rows
    fitted to fit_counts alone (as quantised tables code them), and a record of the fit."""
    import torch

    from .prior import PRECISION, quantize_rows

    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    x = (x - x.mean(0)) / x.std().clamp_min(1e-8)
    dim = x.shape[1]
    k = fit_counts.shape[1]
    fit = torch.from_numpy(fit_counts.astype(np.float32))
    test = torch.from_numpy(test_counts.astype(np.float32))
    w1 = torch.nn.Parameter(torch.randn(hidden, dim, generator=generator) / math.sqrt(dim))
    b1 = torch.nn.Parameter(torch.zeros(hidden))
    unavailable = torch.nn.Parameter(torch.zeros(hidden))
    w2 = torch.nn.Parameter(torch.randn(k, hidden, generator=generator) * 0.01)
    b2 = torch.nn.Parameter(torch.log(fit.sum(0) + 0.5) - torch.log(fit.sum() + 0.5 * k))
    parameters = [w1, b1, unavailable, w2, b2]
    optimiser = torch.optim.Adam(parameters, 3e-3)

    def log_p():
        pre = torch.cat([x @ w1.T + b1, unavailable[None]])
        return torch.log_softmax(torch.nn.functional.gelu(pre) @ w2.T + b2, 1)

    def bits(counts, lp):
        return float(-(counts * lp).sum() / counts.sum().clamp_min(1)) / math.log(2)

    best, stale = (float("inf"), None, 0), 0  # held-out bits, parameters, step
    for step in range(1, MAX_STEPS + 1):
        loss = -(fit * log_p()).sum() / fit.sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % CHECK_EVERY == 0:
            with torch.no_grad():
                held = bits(test, log_p())
            if held < best[0] - 1e-4:
                best, stale = (held, [p.detach().clone() for p in parameters], step), 0
            else:
                stale += 1
                if stale >= PATIENCE:
                    break
    if best[1] is not None:
        with torch.no_grad():
            for p, saved in zip(parameters, best[1]):
                p.copy_(saved)
    with torch.no_grad():
        p_net = log_p().exp().double().numpy()

    def smoothed(counts, beta):
        return (counts + beta * p_net) / (counts.sum(1, keepdims=True) + beta)

    y = test_counts.astype(np.float64)
    scored = []
    for beta in SMOOTHING:
        table = quantize_rows(smoothed(fit_counts, beta))
        scored.append(((y * (PRECISION - np.log2(table.astype(np.float64)))).sum() / max(1.0, y.sum()), beta))
    heldout, beta = min(scored)
    record = {"network_heldout_bits": round(best[0], 4), "steps": best[2], "hidden": hidden, "smoothing": beta}
    if log:
        log(f"network rows: {best[0]:.3f} bits per held-out code alone after {best[2]} steps, "
            f"{heldout:.3f} smoothed with the counts (strength {beta:g})")
    return smoothed(fit_counts + test_counts, beta), float(heldout), record
