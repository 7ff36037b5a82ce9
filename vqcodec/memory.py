"""How much memory this process may use: the bound that sizes are checked against before large
arrays are allocated, since a lazily backed allocation past it is not refused but ends with the
process killed.

It is a bound on what the process may ever hold, not on what is free now: memory already in use (by
this process, or by the others of its cgroup or machine) is not subtracted from it, so an array within
it can still fail to allocate (a MemoryError, which the callers turn into one line too)."""
from __future__ import annotations

import os
import resource
from pathlib import Path, PurePosixPath

from .errors import VQCodecError

CGROUP_ROOT = "/sys/fs/cgroup"      # where the cgroup file systems are mounted
OWN_CGROUPS = "/proc/self/cgroup"   # this process's cgroup in each hierarchy
V2_LIMIT = "memory.max"             # cgroup v2: ROOT/PATH/memory.max
V1_FOLDER, V1_LIMIT = "memory", "memory.limit_in_bytes"  # cgroup v1 memory controller: ROOT/memory/PATH/...
NO_LIMIT_BYTES = 1 << 60  # cgroup v1 writes "no limit" as about 2**63 (rounded to pages)


def refuse_beyond(size: int, memory: int | None, held: str, advice: str = "",
                  error: type[VQCodecError] = VQCodecError, whose: str = "the memory this process may use") -> None:
    """Refuse `size` bytes that `memory` (memory_bound's: None, no bound known) cannot hold, before they are
    allocated; `held` says what they are ("the codes take"), `advice` what to do instead (if anything), `whose`
    what `memory` is the bound of."""
    if memory is not None and size > memory:
        raise error(f"{held} {size / 1e9:.1f} GB, more than {whose} ({memory / 1e9:.1f} GB)"
                    + (f"; {advice}" if advice else ""))


def memory_bound(root: str | Path | None = None, own: str | Path | None = None) -> int | None:
    """The smallest of physical memory, the memory limits of this process's cgroups (cgroup_limit) and
    the address-space and data limits (RLIMIT_AS, RLIMIT_DATA: `ulimit -v`, `ulimit -d`), in bytes;
    None where none of them is known. Memory in use is not subtracted (see the module's note). `root`
    and `own` stand for /sys/fs/cgroup and /proc/self/cgroup (CGROUP_ROOT, OWN_CGROUPS), for tests."""
    limits = (shared_memory_bound(root, own), _resource_limit(resource.RLIMIT_AS),
              _resource_limit(resource.RLIMIT_DATA))
    bounds = [bound for bound in limits if bound is not None]
    return min(bounds, default=None)


def shared_memory_bound(root: str | Path | None = None, own: str | Path | None = None) -> int | None:
    """The smaller of physical memory and this process's cgroups' limits (memory_bound without the limits
    each process has of its own): what all the processes of this machine and cgroup hold together."""
    bounds = [bound for bound in (_physical_memory(), cgroup_limit(root, own)) if bound is not None]
    return min(bounds, default=None)


def cgroup_limit(root: str | Path | None = None, own: str | Path | None = None) -> int | None:
    """The smallest memory limit of this process's cgroups and of every cgroup above them (each one's
    limit holds for all below it), in bytes; None for none.

    The process's cgroups are the lines of `own` (/proc/self/cgroup), "ID:CONTROLLERS:PATH": the cgroup
    v2 one ("0::PATH"), whose limits are ROOT/PATH/memory.max and those of the folders above it up to
    ROOT, and a cgroup v1 one whose controllers include "memory", whose limits are
    ROOT/memory/PATH/memory.limit_in_bytes and those above it up to ROOT/memory. The limit files at
    the two roots always count (where /proc/self/cgroup cannot be read, they are all there is): a
    container whose cgroup file system shows its own cgroup as the root, while /proc/self/cgroup names
    it by the host's path, finds its limit there. A PATH that is not absolute or holds ".." (a cgroup
    outside the container's view: no folder under ROOT is its) is ignored, as are lines of other
    controllers and lines that are not of that form."""
    root = Path(CGROUP_ROOT if root is None else root)
    files = [root / V2_LIMIT, root / V1_FOLDER / V1_LIMIT]
    for line in _lines(OWN_CGROUPS if own is None else own):
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            base, name = root, V2_LIMIT
        elif V1_FOLDER in controllers.split(","):
            base, name = root / V1_FOLDER, V1_LIMIT
        else:
            continue
        cgroup = PurePosixPath(path)
        if not cgroup.is_absolute() or ".." in cgroup.parts:
            continue
        folders = cgroup.relative_to("/").parts
        files.extend(base.joinpath(*folders[:depth], name) for depth in range(len(folders), 0, -1))
    limits = [limit for limit in map(_cgroup_limit, files) if limit is not None]
    return min(limits, default=None)


def _lines(path: str | Path) -> list[str]:
    try:
        with open(path) as file:
            return file.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_limit(path: Path) -> int | None:
    """The limit a cgroup file states; None for none ("max", a value too large to be one, no file)."""
    try:
        with open(path) as file:
            text = file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return _limit(int(text)) if text.isascii() and text.isdigit() else None


def _resource_limit(which: int) -> int | None:
    """The soft limit of `which`; a numpy array past RLIMIT_DATA (which counts its pages since Linux
    4.7) fails as one past RLIMIT_AS does."""
    try:
        soft = resource.getrlimit(which)[0]
    except (ValueError, OSError):
        return None
    return None if soft == resource.RLIM_INFINITY else _limit(soft)


def _limit(value: int) -> int | None:
    return value if 0 < value < NO_LIMIT_BYTES else None
