"""Payload codings for code indices.

CODING_FIXED packs each index in ceil(log2 K) bits, most significant bit first.
"""
from __future__ import annotations

import math

import numpy as np

from .format import FormatError
from .wording import plural


UNPACK_BLOCK_CODES = 1 << 16  # codes packed or unpacked at a time: a multiple of 8, so that each block starts on a byte


def bits_per_index(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_fixed(indices: np.ndarray, codebook_size: int) -> bytes:
    """Pack non-negative integers < codebook_size at a fixed width, MSB first, zero-padded to a byte.
    UNPACK_BLOCK_CODES codes at a time, as unpack_fixed takes them: taken whole, the codes and their
    bits as int64 took 103 MB for 2^20 codes of 10 bits."""
    bits = bits_per_index(codebook_size)
    values = np.asarray(indices).ravel()
    out = np.empty(-(-values.size * bits // 8), dtype=np.uint8)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    for first in range(0, values.size, UNPACK_BLOCK_CODES):
        last = min(values.size, first + UNPACK_BLOCK_CODES)
        block = values[first:last].astype(np.int64)
        if block.min() < 0 or block.max() >= codebook_size:
            raise ValueError("code index out of range")
        packed = np.packbits(((block[:, None] >> shifts) & 1).astype(np.uint8).ravel())
        out[first * bits // 8:first * bits // 8 + packed.size] = packed
    return out.tobytes()


def unpack_fixed(payload: bytes, count: int, codebook_size: int, dtype=np.int64) -> np.ndarray:
    """The `count` codes of a payload pack_fixed wrote, as `dtype` (one that holds codebook_size - 1)."""
    bits = bits_per_index(codebook_size)
    expected = math.ceil(count * bits / 8)
    if len(payload) != expected:
        raise FormatError(f"chunk holds {plural(len(payload), 'byte')} where {expected} "
                          f"{'was' if expected == 1 else 'were'} expected")
    data = np.frombuffer(payload, dtype=np.uint8)
    if np.unpackbits(data[count * bits // 8:])[count * bits % 8:].any():
        raise FormatError("corrupted chunk: padding bits are not zero")
    # UNPACK_BLOCK_CODES at a time, a whole number of bytes each: their bits and the int64 product
    # take 9 bytes a bit, 9.7 GB for a chunk of 2^27 bytes taken whole, besides the codes
    values = np.empty(count, dtype=dtype)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    for first in range(0, count, UNPACK_BLOCK_CODES):
        last = min(count, first + UNPACK_BLOCK_CODES)
        block = np.unpackbits(data[first * bits // 8:-(-last * bits // 8)])[:(last - first) * bits]
        values[first:last] = block.reshape(last - first, bits).astype(np.int64) @ weights
    if values.size and values.max() >= codebook_size:
        raise FormatError("corrupted chunk: code index beyond the codebook")
    return values
