"""Codes that know which model made them: the arrays of audio codes (channels, quality, frames) and of
image codes (quality, rows, cols) are alike, and audio codes given to an image model (or the reverse)
fitted its layout and were decoded to noise, as codes of one speech model were by another speech model
of other codebooks."""
from __future__ import annotations

import numpy as np


class KindedCodes(np.ndarray):
    """Codes as the codes methods give them, with `kind` ("audio" or "image") and `model_id` (the 8 bytes
    a `.vq` header names its model by) of the model that made them. What is made of them (a slice, a copy,
    astype, a pickled copy) keeps both; arithmetic and reductions give plain arrays and scalars; np.asarray, a
    tensor or a saved .npy file drops them."""

    kind: str | None = None
    model_id: bytes | None = None

    def __array_finalize__(self, obj) -> None:
        self.kind = getattr(obj, "kind", None)
        self.model_id = getattr(obj, "model_id", None)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # Arithmetic and reductions give numbers, not codes: plain arrays and scalars, as NumPy's own.
        plain = np.asarray(array)
        return plain[()] if return_scalar else plain

    def __reduce__(self):
        # pickle, as copy.copy does, keeps what made them (ndarray's own state leaves attributes out)
        rebuild, arguments, state = super().__reduce__()
        return rebuild, arguments, (state, self.kind, self.model_id)

    def __setstate__(self, state) -> None:
        if len(state) != 3:  # ndarray's own state (4 or 5 items), as releases before model_id pickled them
            super().__setstate__(state)
            return
        array_state, self.kind, self.model_id = state
        super().__setstate__(array_state)


def kinded(codes: np.ndarray, kind: str, model_id: bytes) -> KindedCodes:
    """`codes` (not copied) as codes made by the model of `model_id`, which codes `kind`."""
    view = codes.view(KindedCodes)
    view.kind, view.model_id = kind, model_id
    return view


def kind_of(codes) -> str | None:
    """The kind of the model that made `codes`, where they say it."""
    return codes.kind if isinstance(codes, KindedCodes) else None


def maker_of(codes) -> bytes | None:
    """The model id of the model that made `codes`, where they say it."""
    return codes.model_id if isinstance(codes, KindedCodes) else None
