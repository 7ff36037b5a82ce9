"""Data-parallel training over several processes, launched by torchrun: one process per GPU, or per
group of CPU cores.

Every process holds a whole copy of the model and trains on its own share of each batch. After
the backward pass the gradients are averaged over the processes, and the codebooks' EMA statistics
are summed, so every copy takes the same optimiser and codebook step and the copies never drift
apart. Where a step draws at random for all of them (k-means initialisation, restarting dead
codes), the first process's draw is sent to the others. Only the first process (rank 0) reads the
clock, prints, validates and writes files.

Run without torchrun (no WORLD_SIZE above 1 in the environment), every function here does nothing.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

import torch
import torch.distributed as dist

from .errors import VQCodecError


def _not_set(name: str) -> VQCodecError:
    return VQCodecError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {name} is not set: start the processes with "
                        f"torchrun (torchrun --nproc_per_node N -m vqcodec train ...), or unset WORLD_SIZE")


def _environment_number(name: str, default: str | None = None) -> int:
    """A whole number torchrun sets in the environment; one set wrongly (or missing) is refused."""
    text = os.environ.get(name, default)
    if text is None:
        raise _not_set(name)
    try:
        return int(text)
    except ValueError:
        raise VQCodecError(f"the environment variable {name} is {text!r}, not a whole number") from None


def launched_processes() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return max(1, _environment_number("WORLD_SIZE", "1"))


def local_processes() -> int:
    """How many of the run's processes torchrun started on this machine (LOCAL_WORLD_SIZE), which share its
    memory; 1 without torchrun. Within 1 to launched_processes()."""
    processes = launched_processes()
    if processes == 1:
        return 1
    return min(max(1, _environment_number("LOCAL_WORLD_SIZE", "1")), processes)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def start(device: str) -> str:
    """Join the process group torchrun describes in the environment, if any, and return the device
    this process trains on: `cuda:LOCAL_RANK` on GPUs (NCCL), the CPU otherwise (Gloo)."""
    if launched_processes() == 1 or active():
        return device
    if not dist.is_available():
        raise VQCodecError("this torch build has no torch.distributed: train in one process")
    processes, process = launched_processes(), _environment_number("RANK")
    if not 0 <= process < processes:
        raise VQCodecError(f"RANK is {process}, not one of the {processes} processes of WORLD_SIZE "
                           f"(0 to {processes - 1})")
    if not os.environ.get("MASTER_ADDR"):
        raise _not_set("MASTER_ADDR")
    _environment_number("MASTER_PORT")
    cuda = torch.device(device).type == "cuda"
    local_rank = _environment_number("LOCAL_RANK", "0")
    if cuda and not 0 <= local_rank < torch.cuda.device_count():
        raise VQCodecError(f"process {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible): "
                           f"start at most that many processes per machine")
    if cuda:
        torch.cuda.set_device(local_rank)
    _import_what_keeps_the_group()
    try:
        with _ended_by_sigterm():
            dist.init_process_group("nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as exc:  # the address taken or unreachable, a timeout
        raise VQCodecError("cannot join the other training processes "
                           f"({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    return f"cuda:{local_rank}" if cuda else device


def _import_what_keeps_the_group() -> None:
    """Import torch.distributed.nn.functional before the process group exists. Its functions take
    `group=group.WORLD` as a default argument, fixed when it is imported: the first optimiser imports it
    (through torch._dynamo), and imported after init_process_group its defaults held the group past
    destroy_process_group, with Gloo's threads running, into the interpreter's exit, where the first
    process now and then aborted ("terminate called without an active exception")."""
    import torch.distributed.nn.functional  # noqa: F401


@contextlib.contextmanager
def _ended_by_sigterm():
    """SIGTERM ends the process at once while it waits for the others to join: torchrun sends it to every
    process when one fails before joining (its GPU, its environment), and a process blocked in the
    rendezvous runs no Python handler (the command line's), so it waited until torchrun killed it 30 s later."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop() -> None:
    if active():
        dist.barrier()  # no process tears its connections down while another still exchanges over them
        dist.destroy_process_group()


def leave() -> None:
    """Leave the process group without waiting for the others, as every process does after the error that
    all of them raise (together): left to the interpreter's exit, its threads may abort the process."""
    if active():
        dist.destroy_process_group()


def together(action):
    """Run `action` in every process and return what it returns, or raise in every process the error of the
    first process it failed in: a step that one process alone may fail (the first process's lock of the
    --out folder, its files) would otherwise leave the others waiting for it at their next exchange."""
    if not active():
        return action()
    try:
        result, failure = action(), None
    except Exception as exc:  # noqa: BLE001  (sent on as one line; this process raises it as it was)
        result, failure = None, exc
    failures = [None] * world_size()
    dist.all_gather_object(failures, None if failure is None else _one_line(failure))
    if failure is not None:
        raise failure
    first = next((message for message in failures if message is not None), None)
    if first is not None:
        raise VQCodecError(first)
    return result


def _one_line(failure: Exception) -> str:
    if isinstance(failure, VQCodecError):
        return str(failure)
    lines = str(failure).strip().splitlines()
    return f"{type(failure).__name__}: {lines[0]}" if lines else type(failure).__name__


class Failure:
    """This process's first failure in work of its own between two exchanges (reading its share of a batch,
    the first process's validation), held until the next exchange raises it in every process
    (first_process_value): the others would wait for it there. Run without torchrun, it is raised at once."""

    def __init__(self):
        self.exception: Exception | None = None

    @contextlib.contextmanager
    def held(self):
        try:
            yield
        except Exception as exc:  # noqa: BLE001  (raised at the next exchange, as it was)
            if not active():
                raise
            if self.exception is None:
                self.exception = exc


def sum_(*tensors: torch.Tensor) -> None:
    """Replace each tensor, in place, by its sum over the processes (one exchange for all of them)."""
    if not active() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(parameters) -> None:
    """Average the gradients of `parameters` over the processes, so that each takes the step the
    whole batch gives. A parameter without a gradient counts as a zero gradient."""
    if not active():
        return
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in parameters]
    sum_(*grads)
    for g in grads:
        g.div_(world_size())


def broadcast_(*tensors: torch.Tensor) -> None:
    """Overwrite each tensor, in place, with the first process's."""
    if not active():
        return
    for t in tensors:
        dist.broadcast(t, src=0)


def broadcast_module_(module: torch.nn.Module) -> None:
    """Give every process the first process's parameters and buffers."""
    broadcast_(*module.state_dict().values())


def any_process(flag: bool, device) -> bool:
    """True where `flag` is true in any process."""
    if not active():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def first_process_value(value: float, device, failure: Failure | None = None) -> float:
    """The first process's `value`, in every process: the clock that decides the learning rate and
    when to stop must be one clock. The same exchange raises in every process the first `failure` that
    any process holds (together), so that all stop at this step with its one line."""
    if not active():
        return value
    held = failure is not None and failure.exception is not None
    tensor = torch.tensor([value if is_main() else 0.0, float(held)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)  # the others add zeros: the first process's value, exactly
    value, failed = tensor.tolist()
    if failed:
        together(lambda: _raise(failure.exception if held else None))
    return value


def _raise(failure: Exception | None) -> None:
    if failure is not None:
        raise failure


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """The (N, D) rows of every process, concatenated in process order, in every process."""
    if not active():
        return rows
    counts = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], dtype=torch.int64, device=rows.device))
    counts = [int(c.item()) for c in counts]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, counts)])
