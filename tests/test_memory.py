import resource
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import vqcodec.memory
from vqcodec.evaluate import evaluate
from vqcodec.memory import memory_bound

GB = 10 ** 9
NO_LIMIT_V1 = "9223372036854771712"


class Machine:
    """A machine of 16 GB with no RLIMIT_AS or RLIMIT_DATA, a fake cgroup file system at `root` (empty: no limits) and a
    fake /proc/self/cgroup at `own` (absent until cgroups() writes it)."""

    def __init__(self, tmp_path: Path):
        self.root, self.own = tmp_path / "sys_fs_cgroup", tmp_path / "proc_self_cgroup"
        self.root.mkdir()
        self.address_space = self.data = resource.RLIM_INFINITY

    def cgroups(self, *lines: str) -> None:
        self.own.write_text("".join(line + "\n" for line in lines))

    def v2(self, folder: str, text: str) -> None:
        self._write(self.root / folder.strip("/") / "memory.max", text)

    def v1(self, folder: str, text: str) -> None:
        self._write(self.root / "memory" / folder.strip("/") / "memory.limit_in_bytes", text)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    def bound(self) -> int | None:
        return memory_bound(self.root, self.own)


@pytest.fixture
def machine(monkeypatch, tmp_path) -> Machine:
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 16 * GB // 4096}
    monkeypatch.setattr(vqcodec.memory.os, "sysconf", lambda name: pages[name])
    fake = Machine(tmp_path)
    monkeypatch.setattr(vqcodec.memory.resource, "getrlimit", lambda which: (
        {resource.RLIMIT_AS: fake.address_space, resource.RLIMIT_DATA: fake.data}[which], resource.RLIM_INFINITY))
    return fake


def test_without_limits_the_bound_is_physical_memory(machine):
    assert machine.bound() == 16 * GB
    machine.cgroups("0::/user.slice/session-1.scope")
    assert machine.bound() == 16 * GB


@pytest.mark.parametrize("v2, v1", [("2000000000", None), (None, "2000000000"), ("max", "2000000000"),
                                    ("3000000000", "2000000000")])
def test_a_limit_at_the_roots_counts_without_a_proc_self_cgroup(machine, v2, v1):
    if v2 is not None:
        machine.v2("", v2)
    if v1 is not None:
        machine.v1("", v1)
    assert machine.bound() == 2 * GB


@pytest.mark.parametrize("v2, v1", [("max", None), (None, NO_LIMIT_V1), ("32000000000", None), ("", "junk"),
                                    ("0", "-1"), ("2.5e9", "²"), ("1000000000 extra", " ")])
def test_no_limit_a_bad_one_or_one_above_physical_memory_leaves_physical_memory(machine, v2, v1):
    if v2 is not None:
        machine.v2("", v2)
    if v1 is not None:
        machine.v1("", v1)
    assert machine.bound() == 16 * GB


def test_the_v2_limit_of_the_processs_own_cgroup(machine):
    machine.cgroups("0::/system.slice/job.service")
    machine.v2("system.slice/job.service", "3000000000")
    assert machine.bound() == 3 * GB


def test_a_v2_limit_above_the_own_cgroup_holds_for_it(machine):
    machine.cgroups("0::/system.slice/job.service")
    machine.v2("system.slice/job.service", "max")
    machine.v2("system.slice", "4000000000")
    assert machine.bound() == 4 * GB


@pytest.mark.parametrize("limits, bound", [({"a": 3, "a/b": 5, "a/b/c": 7}, 3), ({"a": 7, "a/b": 5, "a/b/c": 3}, 3),
                                            ({"a": 7, "a/b": 2, "a/b/c": 5}, 2), ({"": 6, "a/b/c": 8}, 6)])
def test_the_smallest_limit_on_the_way_up_is_the_bound(machine, limits, bound):
    machine.cgroups("0::/a/b/c")
    for folder, gigabytes in limits.items():
        machine.v2(folder, str(gigabytes * GB))
    assert machine.bound() == bound * GB


def test_the_limits_of_other_cgroups_do_not_count(machine):
    machine.cgroups("0::/a/b")
    machine.v2("a/b/child", str(1 * GB))  # below the process's cgroup
    machine.v2("a/sibling", str(1 * GB))
    machine.v2("other", str(1 * GB))
    assert machine.bound() == 16 * GB


def test_the_v1_memory_controllers_cgroup(machine):
    machine.cgroups("12:pids:/docker/abc", "4:memory:/docker/abc", "1:name=systemd:/docker/abc", "0::/")
    machine.v1("docker/abc", "5000000000")
    assert machine.bound() == 5 * GB


def test_a_v1_limit_above_the_own_cgroup_holds_for_it(machine):
    machine.cgroups("4:memory:/docker/abc")
    machine.v1("docker/abc", NO_LIMIT_V1)
    machine.v1("docker", "6000000000")
    assert machine.bound() == 6 * GB


def test_memory_mounted_with_other_v1_controllers_is_found(machine):
    machine.cgroups("7:cpu,memory:/batch/job")
    machine.v1("batch/job", "2000000000")
    assert machine.bound() == 2 * GB


def test_the_paths_of_other_v1_controllers_are_not_read_as_memorys(machine):
    machine.cgroups("3:cpu:/a", "4:memory:/b", "5:name=memory:/a")
    machine.v1("a", "1000000000")
    machine.v2("a", "1000000000")
    assert machine.bound() == 16 * GB


def test_a_container_whose_root_is_its_own_cgroup_finds_its_limit_at_the_root(machine):
    # without a cgroup namespace, /proc/self/cgroup names the host's path, which the container's mount lacks
    machine.cgroups("4:memory:/docker/0123abcd", "0::/docker/0123abcd")
    machine.v1("", "7000000000")
    assert machine.bound() == 7 * GB


def test_v1_and_v2_limits_together_give_the_smaller(machine):
    machine.cgroups("4:memory:/a", "0::/b")
    machine.v1("a", "5000000000")
    machine.v2("b", "3000000000")
    assert machine.bound() == 3 * GB
    machine.v1("a", "2000000000")
    assert machine.bound() == 2 * GB


def test_a_path_with_dotdot_is_ignored(machine, tmp_path):
    # a cgroup outside the namespace's root is shown as /../..; joined to the root it would name files outside it
    machine.cgroups("0::/../escaped", "4:memory:/a/../../escaped")
    for path in (tmp_path / "escaped" / "memory.max", tmp_path / "escaped" / "memory.limit_in_bytes",
                 machine.root / "escaped" / "memory.max"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{1 * GB}\n")
    assert machine.bound() == 16 * GB
    machine.v2("", str(9 * GB))  # the root's own limit still counts
    assert machine.bound() == 9 * GB


def test_a_relative_path_is_ignored(machine):
    machine.cgroups("0::a/b", "4:memory:c")
    machine.v2("a/b", str(1 * GB))
    machine.v1("c", str(1 * GB))
    assert machine.bound() == 16 * GB


@pytest.mark.parametrize("text", [b"", b"\n\n", b"garbage\n", b"0:/a\n", b"x::/a\n", b"1::/a\n", b"\xff\xfe0::/a\n"])
def test_lines_not_of_the_form_are_ignored(machine, text):
    machine.own.write_bytes(text)
    machine.v2("a", str(1 * GB))
    assert machine.bound() == 16 * GB


def test_an_unreadable_proc_self_cgroup_leaves_the_roots_limits(machine):
    machine.own.mkdir()  # reading it fails (IsADirectoryError)
    machine.v2("", str(3 * GB))
    assert machine.bound() == 3 * GB


def test_a_limit_file_that_cannot_be_read_is_no_limit(machine):
    machine.cgroups("0::/a")
    (machine.root / "a" / "memory.max").mkdir(parents=True)
    machine.v2("", str(5 * GB))
    assert machine.bound() == 5 * GB


def test_memory_in_use_is_not_subtracted(machine):
    machine.cgroups("0::/a")
    machine.v2("a", str(4 * GB))
    (machine.root / "a" / "memory.current").write_text(f"{3 * GB}\n")
    machine.v1("", str(5 * GB))
    (machine.root / "memory" / "memory.usage_in_bytes").write_text(f"{4 * GB}\n")
    assert machine.bound() == 4 * GB


def test_an_address_space_limit_is_the_bound_when_lowest(machine):
    machine.cgroups("0::/a")
    machine.v2("a", "8000000000")
    machine.address_space = 1 * GB
    assert machine.bound() == 1 * GB
    machine.address_space = 20 * GB
    assert machine.bound() == 8 * GB


def test_a_data_limit_is_the_bound_when_lowest(machine):
    """numpy's arrays count against `ulimit -d` (RLIMIT_DATA): one past it failed with MemoryError
    while the bound was physical memory."""
    machine.data = 2 * GB
    assert machine.bound() == 2 * GB
    machine.address_space = 1 * GB
    assert machine.bound() == 1 * GB
    machine.address_space, machine.data = resource.RLIM_INFINITY, 20 * GB
    assert machine.bound() == 16 * GB


def test_the_shared_bound_leaves_out_the_limits_each_process_has_of_its_own(machine):
    """Several training processes of one machine hold its memory and their cgroup's together, while each has
    an RLIMIT_AS and RLIMIT_DATA of its own."""
    machine.cgroups("0::/a")
    machine.v2("a", "8000000000")
    machine.address_space = machine.data = 1 * GB
    assert machine.bound() == 1 * GB
    assert vqcodec.memory.shared_memory_bound(machine.root, machine.own) == 8 * GB
    machine.v2("a", "max")
    assert vqcodec.memory.shared_memory_bound(machine.root, machine.own) == 16 * GB


def test_the_bound_holds_what_numpy_can_allocate_under_a_data_limit():
    """In a process of `ulimit -d 400000` (KiB), the bound is within it, so that read_codes refuses
    in one line what np.empty would fail to allocate."""
    import subprocess
    import sys

    code = ("import resource; from vqcodec.memory import memory_bound; "
            "resource.setrlimit(resource.RLIMIT_DATA, (400 << 20, resource.RLIM_INFINITY)); print(memory_bound())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) <= 400 << 20


def test_unknown_physical_memory_and_no_limit_gives_no_bound(machine, monkeypatch):
    def unknown(name):
        raise ValueError(name)
    monkeypatch.setattr(vqcodec.memory.os, "sysconf", unknown)
    assert machine.bound() is None
    machine.v1("", NO_LIMIT_V1)
    assert machine.bound() is None
    machine.cgroups("0::/a")
    machine.v2("a", "5000000000")
    assert machine.bound() == 5 * GB


def test_the_defaults_are_the_real_files_which_callers_use(machine, monkeypatch):
    machine.cgroups("0::/a")
    machine.v2("a", str(3 * GB))
    monkeypatch.setattr(vqcodec.memory, "CGROUP_ROOT", str(machine.root))
    monkeypatch.setattr(vqcodec.memory, "OWN_CGROUPS", str(machine.own))
    assert memory_bound() == 3 * GB



# ---------------------------------------------------------------- inference without gradients

AUDIO = (np.random.default_rng(0).standard_normal((1, 4000)) * 0.1).astype(np.float32)  # 0.25 s at 16 kHz
RGB = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
# Each path: (codec, its .vq file of AUDIO or RGB, the media file, a folder) -> run it
INFERENCE_PATHS = {"audio": {
    "encode_audio": lambda codec, vq, media, out: codec.encode_audio(AUDIO, 16000, 4),
    "encode_audio --bitrate": lambda codec, vq, media, out: codec.encode_audio(AUDIO, 16000, 4, max_kbps=3.5),
    "encode_audio_file": lambda codec, vq, media, out: codec.encode_audio_file(str(media), 4),
    "encode_audio_stream": lambda codec, vq, media, out: codec.encode_audio_stream(
        iter([AUDIO[:, :2500], AUDIO[:, 2500:]]), 16000, 1, 4000, 4),
    "audio_to_codes": lambda codec, vq, media, out: codec.audio_to_codes(AUDIO, 4),
    "codes_to_audio": lambda codec, vq, media, out: codec.codes_to_audio(np.zeros((1, 4, 20), np.int16)),
    "decode_audio": lambda codec, vq, media, out: codec.decode_audio(vq),
    "decode_audio_blocks": lambda codec, vq, media, out: list(codec.decode_audio_blocks(vq)[1]),
    "decode_audio_blocks salvage": lambda codec, vq, media, out: list(codec.decode_audio_blocks(vq, salvage=True)[1]),
    "decode_audio_file": lambda codec, vq, media, out: codec.decode_audio_file(vq, str(out / "out.wav")),
    "media_to_codes audio": lambda codec, vq, media, out: codec.media_to_codes(str(media), 4),
    "evaluate audio": lambda codec, vq, media, out: evaluate(codec, [media], [2, 4]),
    "evaluate audio --rates": lambda codec, vq, media, out: evaluate(codec, [media], [4], targets=[3.5]),
}, "image": {
    "encode_image": lambda codec, vq, media, out: codec.encode_image(RGB, 3),
    "encode_image --bpp": lambda codec, vq, media, out: codec.encode_image(RGB, 3, max_bpp=1.0),
    "image_to_codes": lambda codec, vq, media, out: codec.image_to_codes(RGB, 3),
    "codes_to_image": lambda codec, vq, media, out: codec.codes_to_image(np.zeros((3, 5, 7), np.int16)),
    "decode_image": lambda codec, vq, media, out: codec.decode_image(vq),
    "decode_image salvage": lambda codec, vq, media, out: codec.decode_image(vq, salvage=True),
    "media_to_codes image": lambda codec, vq, media, out: codec.media_to_codes(str(media), 3),
    "evaluate image": lambda codec, vq, media, out: evaluate(codec, [media], [2, 3]),
    "evaluate image --rates": lambda codec, vq, media, out: evaluate(codec, [media], [3], targets=[1.0]),
}}


@pytest.mark.parametrize("kind, path", [(kind, path) for kind, paths in INFERENCE_PATHS.items() for path in paths],
                         ids=[path for paths in INFERENCE_PATHS.values() for path in paths])
def test_inference_runs_no_network_with_gradients(kind, path, golden_audio_codec, golden_image_codec, tmp_path):
    """Codec.decode_image ran the decoder with autograd on, so each tile kept its activations for a backward pass
    (813 MB against 513 for a 1536x1024 image): every path that runs a network to code, decode or measure must run
    it with gradients off (refinement, not run here, alone takes gradients through the decoder)."""
    if kind == "audio":
        codec, vq, media = golden_audio_codec, golden_audio_codec.encode_audio(AUDIO, 16000, 4), tmp_path / "a.wav"
        soundfile.write(media, AUDIO[0], 16000)
    else:
        codec, vq, media = golden_image_codec, golden_image_codec.encode_image(RGB, 3), tmp_path / "i.png"
        Image.fromarray(RGB).save(media)
    with_gradients = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: with_gradients.append(torch.is_grad_enabled()))
    try:
        INFERENCE_PATHS[kind][path](codec, vq, media, tmp_path)
    finally:
        hook.remove()
    assert with_gradients and not any(with_gradients)
