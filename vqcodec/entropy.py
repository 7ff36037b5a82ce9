"""Payload codings for code indices.

CODING_FIXED packs each index in ceil(log2 K) bits, most significant bit first.
"""
from __future__ import annotations

import math

import numpy as np

from .format import FormatError
from .wording import plural


def bits_per_index(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_fixed(indices: np.ndarray, codebook_size: int) -> bytes:
    """Pack non-negative integers < codebook_size at a fixed width, MSB first, zero-padded to a byte."""
    bits = bits_per_index(codebook_size)
    values = np.ascontiguousarray(indices, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= codebook_size):
        raise ValueError("code index out of range")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_matrix = ((values[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.ravel()).tobytes()


def unpack_fixed(payload: bytes, count: int, codebook_size: int) -> np.ndarray:
    bits = bits_per_index(codebook_size)
    expected = math.ceil(count * bits / 8)
    if len(payload) != expected:
        raise FormatError(f"chunk holds {plural(len(payload), 'byte')} where {expected} {'was' if expected == 1 else 'were'} expected")
    all_bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    if all_bits[count * bits:].any():
        raise FormatError("corrupted chunk: padding bits are not zero")
    bit_matrix = all_bits[:count * bits].reshape(count, bits)
    values = bit_matrix.astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    if values.size and values.max() >= codebook_size:
        raise FormatError("corrupted chunk: code index beyond the codebook")
    return values
