"""The device the networks run on, as the command line's --device and the API's `device` name it:
"auto", "cpu", "cuda" (the current GPU) or "cuda:N" (GPU N), or a torch.device of those."""
from __future__ import annotations

import re

from .errors import VQCodecError
from .wording import plural, setting, shown

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def device_form_problem(device) -> str | None:
    """Why `device` (a string) names no device of those DEVICE_FORMS gives, or None; torch is not needed."""
    if isinstance(device, str) and re.fullmatch(r"auto|cpu|cuda(:(0|[1-9][0-9]*))?", device):
        return None
    return f"unknown device {shown(device)} (use {DEVICE_FORMS})"


def resolve_device(device) -> str:
    """The device `device` names, as a string torch takes: "auto" is "cuda" where there is a GPU, else
    "cpu". A GPU asked for where there is none, or an index beyond the GPUs there are, is refused."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)  # "cuda:1", "cpu"; a torch.device("cuda") is "cuda"
    problem = device_form_problem(device)
    if problem:
        raise VQCodecError(problem)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    asked = setting(f"--device {device}", f"device={shown(device)}")
    if not torch.cuda.is_available():
        raise VQCodecError(f"{asked} asked for, but no CUDA device is available")
    index, count = torch.device(device).index, torch.cuda.device_count()
    if index is not None and index >= count:
        raise VQCodecError(f"{asked} asked for, but there {'is' if count == 1 else 'are'} "
                           f"{plural(count, 'CUDA device')} "
                           f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return device
