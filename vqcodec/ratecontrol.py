"""Rate control: the best file of at most a given size (`encode --bitrate`, `--bpp`).

A file's size is set by two knobs: the quality (how many codebooks a cell may use) and, for
entropy-coded files, the depth weight (how readily a cell stops before that many). The search
first finds, at the configured depth weight, the highest quality whose file fits. Then, to use
the budget that is left, it codes one quality higher with a larger depth weight, the largest file
that still fits: on both shipped models a larger depth weight at a higher quality gives better
quality at equal rate than the level below (README, "Per-cell depth"). At the top quality it
lowers the depth weight instead, down to 0 (every cell at full depth), and below the lowest it
raises the weight at quality 1.

A target takes 4-10 probes, more below quality 1. Each repeats the code search and the entropy
coding; the codec keeps the encoder network's latents between them (Codec._fit_rate). The decoder
and the file format are the same as for any file.
"""
from __future__ import annotations

import math
from typing import Callable

from .errors import VQCodecError

WEIGHT_STEPS = 6          # search steps on the depth weight
CLOSE_ENOUGH = 0.99       # a file of at least this share of the budget ends a weight search early
SMALLEST_RAISED_WEIGHT = 0.125


def byte_limit(bits: float) -> int:
    """A budget of `bits` bits as whole bytes. One beyond any file (a rate such as 1e308, whose bits
    overflow to infinity) becomes a large finite number of bytes, which every file fits."""
    return math.floor(min(bits / 8, float(1 << 62)))


def rate_that_fits(size: int, bits_per_rate: float) -> float:
    """The smallest rate of three significant digits whose budget (byte_limit of rate x `bits_per_rate`) holds
    `size` bytes: what a refusal quotes as the smallest rate, so that asking for it fits (the rate rounded to
    nearest, 0.373 for 0.37333, did not)."""
    rate = float(f"{size * 8 / bits_per_rate:.3g}")
    while byte_limit(rate * bits_per_rate) < size:
        rate = float(f"{rate + 10.0 ** (math.floor(math.log10(rate)) - 2):.3g}")
    return rate


class RateUnreachable(VQCodecError):
    """Even the smallest file the model makes of the input is over the budget."""


def fit_size(encode: Callable[[int, float], bytes], limit: int, max_quality: int, weight: float,
             max_weight: float, variable_depth: bool, target: str, describe: Callable[[int], str]) -> bytes:
    """The largest file of at most `limit` bytes that `encode(quality, depth_weight)` makes.

    weight: the depth weight to search the qualities at; max_weight: the largest one allowed;
    variable_depth: whether the depth weight changes the file at all (entropy-coded files);
    target and describe: the budget, and the rate of a file of so many bytes, in words, for the
    error when nothing fits.
    """
    sizes: dict[tuple[int, float], bytes] = {}

    def probe(quality: int, depth_weight: float) -> bytes:
        key = (quality, depth_weight)
        if key not in sizes:
            sizes[key] = encode(quality, depth_weight)
        return sizes[key]

    size = lambda quality: len(probe(quality, weight)) if quality else 0  # noqa: E731
    if size(max_quality) <= limit:
        best, above = max_quality, None
    else:
        # interpolation search: a file's size grows about linearly with the quality
        low, high = 0, max_quality  # size(low) fits (quality 0 stands for no file), size(high) does not
        while high - low > 1:
            guess = low + int((limit - size(low)) / (size(high) - size(low)) * (high - low))
            guess = min(max(guess, low + 1), high - 1)
            low, high = (guess, high) if size(guess) <= limit else (low, guess)
        best, above = (low or None), high

    candidates = [probe(best, weight)] if best is not None else []
    if variable_depth and above is None and weight > 0:  # the top quality fits: spend the rest at full depth
        full_depth = probe(max_quality, 0.0)
        candidates.append(full_depth if len(full_depth) <= limit else
                          _search_weight(lambda w: probe(max_quality, w), limit, weight, 0.0, geometric=False))
    elif variable_depth and above is not None:          # one quality higher, with cells stopping sooner
        if len(probe(above, max_weight)) <= limit:
            start = max(weight, SMALLEST_RAISED_WEIGHT)
            candidates.append(_search_weight(lambda w: probe(above, w), limit, max_weight, start, geometric=True))
    candidates = [c for c in candidates if len(c) <= limit]
    if not candidates:
        smallest = min(sizes.values(), key=len)
        raise RateUnreachable(f"cannot fit the input in {target}: the smallest file this model makes "
                              f"of it is {describe(len(smallest))} ({len(smallest)} bytes)")
    return max(candidates, key=len)


def _search_weight(encode_at: Callable[[float], bytes], limit: int, fitting: float, too_big: float,
                   geometric: bool) -> bytes:
    """The largest file of at most `limit` bytes found between depth weights `fitting` (whose file
    fits) and `too_big` (whose file does not), by false position on the weight (on its logarithm
    when `geometric`), each guess kept within the middle 80 % of the bracket."""
    position = math.log if geometric else (lambda w: w)
    weight_at = math.exp if geometric else (lambda x: x)
    best, biggest = encode_at(fitting), encode_at(too_big)
    if len(biggest) <= limit:  # the lower end of a raised weight's range may fit after all
        return max(best, biggest, key=len)
    fit_size, big_size = len(best), len(biggest)
    missed = False  # whether the last guess was too big
    for _ in range(WEIGHT_STEPS):
        if fit_size >= CLOSE_ENOUGH * limit:
            break
        a, b = position(fitting), position(too_big)
        share = (CLOSE_ENOUGH * limit + limit) / 2 - fit_size
        share = min(max(share / max(big_size - fit_size, 1), 0.1), 0.9)
        # where the size stays flat over a range of weights (cells that no weight there cuts), false
        # position keeps guessing next to the too-big end; after a miss, halve the bracket instead
        middle = weight_at(a + (0.5 if missed else share) * (b - a))
        data = encode_at(middle)
        missed = len(data) > limit
        if missed:
            too_big, big_size = middle, len(data)
        else:
            best, fitting, fit_size = max(best, data, key=len), middle, len(data)
    return best


def rate_target(max_rate: float, audio: bool, amount: float) -> tuple[int, str, Callable[[int], str]]:
    """A rate search's byte limit for `max_rate` (kbps over `amount` seconds of audio, or bits per pixel
    over `amount` pixels), the target as its messages name it, and how a size in bytes reads in its unit."""
    bits_per_rate, unit = (1000 * amount, "kbps") if audio else (amount, "bpp")
    return (byte_limit(max_rate * bits_per_rate), f"{max_rate:g} {unit}",
            lambda size: f"{rate_that_fits(size, bits_per_rate):g} {unit}")
