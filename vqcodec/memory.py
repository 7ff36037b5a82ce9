"""How much memory this process may use: the bound that sizes are checked against before large
arrays are allocated, since a lazily backed allocation past it is not refused but ends with the
process killed."""
from __future__ import annotations

import os
import resource

CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max",                     # cgroup v2
                      "/sys/fs/cgroup/memory/memory.limit_in_bytes")   # cgroup v1
NO_LIMIT_BYTES = 1 << 60  # cgroup v1 writes "no limit" as about 2**63 (rounded to pages)


def memory_bound() -> int | None:
    """The smallest of physical memory, the container's (cgroup) memory limit and the address-space
    limit (RLIMIT_AS), in bytes; None where none of them is known."""
    bounds = [bound for bound in (_physical_memory(), *map(_cgroup_limit, CGROUP_LIMIT_FILES), _address_space_limit())
              if bound is not None]
    return min(bounds, default=None)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_limit(path: str) -> int | None:
    """The limit a cgroup file states; None for none ("max", a value too large to be one, no file)."""
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    return _limit(int(text)) if text.isdigit() else None


def _address_space_limit() -> int | None:
    try:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ValueError, OSError):
        return None
    return None if soft == resource.RLIM_INFINITY else _limit(soft)


def _limit(value: int) -> int | None:
    return value if 0 < value < NO_LIMIT_BYTES else None
