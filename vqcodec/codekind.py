"""Codes that know which kind of media their model codes: the arrays of audio codes (channels, quality,
frames) and of image codes (quality, rows, cols) are alike, and audio codes given to an image model (or
the reverse) fitted its layout and were decoded to noise."""
from __future__ import annotations

import numpy as np


class KindedCodes(np.ndarray):
    """Codes as the codes methods give them, with `kind` ("audio" or "image") of the model that made them.
    What is made of them (a slice, a copy, astype) keeps it; arithmetic and reductions give plain arrays and scalars; np.asarray, a tensor or a saved file drops it."""

    kind: str | None = None

    def __array_finalize__(self, obj) -> None:
        self.kind = getattr(obj, "kind", None)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # Arithmetic and reductions give numbers, not codes: plain arrays and scalars, as NumPy's own.
        plain = np.asarray(array)
        return plain[()] if return_scalar else plain


def kinded(codes: np.ndarray, kind: str) -> KindedCodes:
    """`codes` (not copied) as codes of a model that codes `kind`."""
    view = codes.view(KindedCodes)
    view.kind = kind
    return view


def kind_of(codes) -> str | None:
    """The kind of the model that made `codes`, where they say it."""
    return codes.kind if isinstance(codes, KindedCodes) else None
