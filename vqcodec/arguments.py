"""Values given to the Python API, checked: settings, weights, sizes, rates and amounts as numbers of their kind
and range, arrays and tensors as NumPy arrays, model and codes ids as bytes; each refused in one line naming it."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from . import format as vqformat
from .errors import VQCodecError
from .registry import is_model_id
from .streams import is_whole, scalar_of
from .wording import shown, shown_cut


def is_real(value) -> bool:
    """An int, float or NumPy number, but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def checked_setting(name: str, value, low: int, high: int) -> int:
    value = scalar_of(value)
    if not is_whole(value) or not low <= value <= high:
        raise VQCodecError(f"{name} must be an integer from {low} to {high}, not {shown(value)}")
    return int(value)


def checked_weight(name: str, value, high: float) -> float:
    value = scalar_of(value)
    if not is_real(value) or not 0 <= value <= high:
        raise VQCodecError(f"{name} must be a number from 0 to {high:g}, not {shown(value)}")
    return float(value)


def checked_count(name: str, value, unit: str = "") -> int:
    """A size given to the API (samples, channels, pixels): a whole number of at least 1, or a one-line
    error naming it (a size of 0 or below read as 'audio is empty' or 'image 0x-5 is empty')."""
    value = scalar_of(value)
    if not is_whole(value) or value < 1:
        raise VQCodecError(f"{name} must be a whole number{' of ' + unit if unit else ''} from 1 up, "
                           f"not {shown(value)}")
    return int(value)


def checked_rate(value) -> int:
    """A sample rate given to the API: a whole number of Hz within the container's bounds."""
    value = scalar_of(value)
    if not is_whole(value) or not 1 <= value <= vqformat.MAX_SAMPLE_RATE:
        raise VQCodecError(f"the sample rate must be a whole number of Hz from 1 to {vqformat.MAX_SAMPLE_RATE}, "
                           f"not {shown(value)}")
    return int(value)


def as_array(value) -> np.ndarray:
    """An array given to the API (a NumPy array, a torch tensor on any device, with or without
    gradients, or nested lists) as a NumPy array, or a one-line error."""
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise VQCodecError("a tensor on the meta device holds no data")
        if value.layout != torch.strided or value.is_quantized or value.is_nested:
            raise VQCodecError(f"a {tensor_kind(value)} tensor is not an array of numbers: make it a dense one first "
                               "(to_dense(), dequantize())")
        value = value.detach().cpu().resolve_conj().resolve_neg()  # numpy() refuses lazy conjugate and negative views
        if value.is_floating_point() and value.dtype not in (torch.float16, torch.float32, torch.float64):
            value = value.float()  # bfloat16 and float8, which NumPy lacks
        try:
            value = value.numpy()
        except TypeError:  # complex32, bits8, and integers of fewer than 8 bits (uint1 .. int7)
            raise VQCodecError(f"a tensor of {str(value.dtype).removeprefix('torch.')} has no NumPy type: convert it "
                               "to a float or integer type first (tensor.float(), tensor.to(torch.int16))") from None
    if np.ma.is_masked(value):  # np.asarray would take the values under the mask as they are
        raise VQCodecError("a masked array with masked values: fill them first (numpy.ma.filled; for codes, -1 "
                           "leaves a level out)")
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise VQCodecError(f"not an array of numbers: {exc}") from None


def id_bytes(name: str, value) -> bytes:
    """A model id or codes id given to the API: its 8 bytes, or their 16 hex digits (a codes.json's), as bytes."""
    if isinstance(value, str) and is_model_id(value.lower()):
        return bytes.fromhex(value)
    if isinstance(value, (bytes, bytearray, memoryview)) and memoryview(value).nbytes == 8:
        return bytes(value)
    raise VQCodecError(f"{name} is 8 bytes (as Codec.{name} gives it) or their 16 hex digits (as codes.json "
                       f"writes it), not {shown_cut(value, 40)}")


def integer_codes(codes: np.ndarray) -> np.ndarray:
    """Codes as given, refused naming their type unless it is an integer one (float codes of whole numbers too)."""
    if not np.issubdtype(codes.dtype, np.integer):
        raise VQCodecError(f"codes must be integers, not {codes.dtype}")
    return codes


def tensor_kind(tensor: torch.Tensor) -> str:
    """What sets a tensor apart from a dense one NumPy can view: "quantized", "nested" or its layout."""
    if tensor.is_quantized:
        return "quantized"
    return "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.").lstrip("_")


def checked_peak(value) -> float:
    """A stream's peak given to the API: its largest absolute sample, finite and not below 0."""
    value = scalar_of(value)
    if not is_real(value) or not 0 <= value < math.inf:
        raise VQCodecError("the peak must be the largest absolute sample, a finite number from 0 up, "
                           f"not {shown(value)}")
    return float(value)


def checked_amount(name: str, value, unit: str, allow_zero: bool = False) -> float:
    """A finite positive number (or zero, with allow_zero) of `unit`, or a one-line error."""
    value = scalar_of(value)
    if not is_real(value) or not (
            (0 <= value if allow_zero else 0 < value) and value < math.inf):
        raise VQCodecError(f"the {name} must be a {'non-negative' if allow_zero else 'positive'} number of {unit}, "
                           f"not {shown(value)}")
    return float(value)


def checked_max_rate(value, audio: bool) -> float:
    """A rate target given to the API: kbps for audio, bits per pixel for an image (checked_amount)."""
    return checked_amount("bitrate", value, "kbps") if audio else checked_amount("bits per pixel", value, "bpp")
