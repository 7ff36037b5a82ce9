"""Codes that know which model made them: the arrays of audio codes (channels, quality, frames) and of
image codes (quality, rows, cols) are alike, and audio codes given to an image model (or the reverse)
fitted its layout and were decoded to noise, as codes of one speech model were by another speech model
of other codebooks."""
from __future__ import annotations

import numpy as np


class KindedCodes(np.ndarray):
    """Codes as the codes methods give them, with `kind` ("audio" or "image"), `model_id` (the 8 bytes
    a `.vq` header names its model by) of the model that made them and `codes_id` (8 bytes: the "codes_id" of
    its encoder and codebooks, which every model that makes the same codes shares). What is made of them (a
    slice, a copy, astype, a pickled copy) keeps them; arithmetic and reductions give plain arrays and scalars;
    np.asarray, a tensor or a saved .npy file drops them."""

    kind: str | None = None
    model_id: bytes | None = None
    codes_id: bytes | None = None

    def __array_finalize__(self, obj) -> None:
        self.kind = getattr(obj, "kind", None)
        self.model_id = getattr(obj, "model_id", None)
        self.codes_id = getattr(obj, "codes_id", None)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # Arithmetic and reductions give numbers, not codes: plain arrays and scalars, as NumPy's own.
        plain = np.asarray(array)
        return plain[()] if return_scalar else plain

    def __reduce__(self):
        # pickle, as copy.copy does, keeps what made them (ndarray's own state leaves attributes out)
        rebuild, arguments, state = super().__reduce__()
        return rebuild, arguments, (state, self.kind, self.model_id, self.codes_id)

    def __setstate__(self, state) -> None:
        # ndarray's own state (4 or 5 items, the second a dtype or a shape), as releases before model_id pickled
        # them; 3 items, without codes_id, as releases before codes_id
        if len(state) not in (3, 4) or isinstance(state[1], (np.dtype, tuple)):
            super().__setstate__(state)
            return
        array_state, self.kind, self.model_id, *codes_id = state
        self.codes_id = codes_id[0] if codes_id else None
        super().__setstate__(array_state)


def kinded(codes: np.ndarray, kind: str, model_id: bytes, codes_id: bytes) -> KindedCodes:
    """`codes` (not copied) as codes made by the model of `model_id` and `codes_id`, which codes `kind`."""
    view = codes.view(KindedCodes)
    view.kind, view.model_id, view.codes_id = kind, model_id, codes_id
    return view


def kind_of(codes) -> str | None:
    """The kind of the model that made `codes`, where they say it."""
    return codes.kind if isinstance(codes, KindedCodes) else None


def decoder_of(kind: str) -> str:
    """The Codec method that decodes codes of `kind` ("audio" or "image")."""
    return "codes_to_audio" if kind == "audio" else "codes_to_image"


def maker_of(codes) -> tuple[bytes | None, bytes | None]:
    """The model id and the codes id of the model that made `codes`, where they say them."""
    return (codes.model_id, codes.codes_id) if isinstance(codes, KindedCodes) else (None, None)
