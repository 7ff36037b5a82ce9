import resource

import pytest

import vqcodec.memory
from vqcodec.memory import memory_bound

GB = 10 ** 9


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine of 16 GB with no cgroup files and no RLIMIT_AS; set(v2=..., v1=..., rlimit=...) limits it."""
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 16 * GB // 4096}
    monkeypatch.setattr(vqcodec.memory.os, "sysconf", lambda name: pages[name])
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(vqcodec.memory, "CGROUP_LIMIT_FILES", (str(v2), str(v1)))
    rlimit = [resource.RLIM_INFINITY]
    monkeypatch.setattr(vqcodec.memory.resource, "getrlimit", lambda which: (rlimit[0], resource.RLIM_INFINITY))

    def limit(v2_text=None, v1_text=None, address_space=resource.RLIM_INFINITY):
        for path, text in ((v2, v2_text), (v1, v1_text)):
            if text is not None:
                path.write_text(text + "\n")
        rlimit[0] = address_space
    return limit


def test_without_limits_the_bound_is_physical_memory(machine):
    machine()
    assert memory_bound() == 16 * GB


@pytest.mark.parametrize("v2, v1", [("2000000000", None), (None, "2000000000"), ("max", "2000000000"),
                                    ("3000000000", "2000000000")])
def test_a_cgroup_limit_below_physical_memory_is_the_bound(machine, v2, v1):
    machine(v2, v1)
    assert memory_bound() == 2 * GB


@pytest.mark.parametrize("v2, v1", [("max", None), (None, "9223372036854771712"), ("32000000000", None), ("", "junk")])
def test_no_cgroup_limit_or_one_above_physical_memory_leaves_physical_memory(machine, v2, v1):
    machine(v2, v1)
    assert memory_bound() == 16 * GB


def test_an_address_space_limit_is_the_bound_when_lowest(machine):
    machine("8000000000", address_space=1 * GB)
    assert memory_bound() == 1 * GB
    machine(address_space=20 * GB)
    assert memory_bound() == 8 * GB


def test_unknown_physical_memory_and_no_limit_gives_no_bound(machine, monkeypatch):
    def unknown(name):
        raise ValueError(name)
    monkeypatch.setattr(vqcodec.memory.os, "sysconf", unknown)
    machine()
    assert memory_bound() is None
    machine(v1_text="9223372036854771712")
    assert memory_bound() is None
    machine(v2_text="5000000000")
    assert memory_bound() == 5 * GB
