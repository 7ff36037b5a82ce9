"""Network-fitted context tables (vqcodec/netprior.py, CodePrior.with_network_tables): they beat
count tables where codebook geometry carries the structure, they are ordinary stored tables that
code and decode exactly, and they are only kept where they pay.

Tiny sizes (K = 256, 4-dimensional codebooks), so this file runs in seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcodec import netprior
from vqcodec.prior import ABSENT, CodePrior

K = 256
DIM = 4
CHUNK = 500


def walk_planes(count: int, frames: int, seed: int):
    """Two-level codes of a residual quantiser of a slow random process in 4-D, with fixed random
    codebooks: level 0 follows its previous frame to a *nearby* codebook vector, not the same code,
    so counts of exact code pairs are sparse while the vectors say where the next code lies."""
    books_rng, rng = np.random.default_rng(5), np.random.default_rng(seed)
    books = [books_rng.standard_normal((K, DIM)).astype(np.float32), books_rng.standard_normal((K, DIM)).astype(np.float32) * 0.4]
    planes = []
    for _ in range(count):
        x = np.zeros((frames, DIM))
        for t in range(1, frames):
            x[t] = 0.9 * x[t - 1] + 0.45 * rng.standard_normal(DIM)
        residual, plane = x.astype(np.float32), []
        for book in books:
            codes = ((residual[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
            residual = residual - book[codes]
            plane.append(codes)
        planes.append(np.stack(plane))
    return planes, books


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    planes, books = walk_planes(15, 600, seed=1)
    counted = CodePrior.fit(planes, K, "audio", CHUNK)
    networked = counted.with_network_tables(planes, list(range(len(planes))), books, CHUNK)
    return counted, networked, books


def test_network_tables_beat_count_tables_on_new_codes(fitted):
    counted, networked, _ = fitted
    assert networked.levels[0].info["chosen"] == "left/network"
    assert networked.levels[0].sources == ("left",)
    np.testing.assert_array_equal(networked.levels[0].maps["left"], np.arange(K + 1))
    test, _ = walk_planes(5, 600, seed=77)
    bits = [sum(prior.ideal_bits(p[None])[0] for p in test) for prior in (counted, networked)]
    assert bits[1] < 0.95 * bits[0], bits


def test_network_tables_code_exactly_and_survive_storage(fitted):
    _, networked, _ = fitted
    codes, _ = walk_planes(2, 400, seed=9)
    codes = np.stack(codes)  # (channels, levels, frames)
    depth = np.random.default_rng(0).integers(0, 3, codes.shape[::2])
    with_depth = np.where(np.arange(2)[None, :, None] < depth[:, None, :], codes, ABSENT)
    again = CodePrior.from_tensors(networked.to_tensors())
    assert again.prior_id == networked.prior_id
    for chunk, depths in ((codes, False), (with_depth, True)):
        payload = networked.encode_chunk(chunk, depths=depths)
        assert again.encode_chunk(chunk, depths=depths) == payload
        np.testing.assert_array_equal(again.decode_chunk(payload, chunk.shape, depths=depths), chunk)
        ideal = networked.ideal_bits(chunk).sum() + (networked.depth_bits(chunk) if depths else 0)
        assert ideal / 8 <= len(payload) <= ideal / 8 * 1.02 + 8


def test_codes_unrelated_to_their_neighbours_keep_their_count_tables():
    """Codes with no relation to their neighbours: the count table (a unigram) stays."""
    rng = np.random.default_rng(3)
    planes = [rng.integers(0, K, (2, 600)) for _ in range(15)]
    books = [rng.standard_normal((K, DIM)).astype(np.float32) for _ in range(2)]
    counted = CodePrior.fit(planes, K, "audio", CHUNK)
    networked = counted.with_network_tables(planes, list(range(15)), books, CHUNK)
    assert all("network" not in level.info for level in networked.levels)
    assert networked.prior_id == counted.prior_id


def test_a_network_table_tried_that_codes_worse_than_its_counts_is_not_kept(monkeypatch):
    """Level 0 follows its left neighbour through a random permutation: counts of exact pairs hold
    it, random codebook vectors do not, so the network-fitted table is tried and dropped."""
    monkeypatch.setattr(netprior, "MAX_STEPS", 200)
    k, rng = 64, np.random.default_rng(3)
    follow = rng.permutation(k)
    planes = []
    for _ in range(10):
        plane = rng.integers(0, k, (2, 300))
        for t in range(1, 300):
            if rng.random() < 0.9:
                plane[0, t] = follow[plane[0, t - 1]]
        planes.append(plane)
    books = [rng.standard_normal((k, DIM)).astype(np.float32) for _ in range(2)]
    counted = CodePrior.fit(planes, k, "audio", CHUNK)
    assert counted.levels[0].sources == ("left",)
    messages = []
    networked = counted.with_network_tables(planes, list(range(10)), books, CHUNK, log=messages.append)
    assert any(m.startswith("level 0: network-fitted left table") for m in messages)  # tried ...
    assert "network" not in networked.levels[0].info and networked.prior_id == counted.prior_id  # ... and dropped


def test_too_few_files_to_hold_out_leaves_the_prior_alone(fitted):
    counted, _, books = fitted
    planes, _ = walk_planes(4, 300, seed=2)
    assert counted.with_network_tables(planes, list(range(4)), books, CHUNK) is counted


def test_fit_rows_prefers_counts_where_they_are_plentiful():
    """A context seen very often keeps (about) its empirical row whatever the network predicts."""
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((8, 3)).astype(np.float32)
    fit = rng.integers(0, 3, (9, 16)).astype(np.float64)
    fit[2] = 0
    fit[2, 5] = 1e7                                   # value 2 is always followed by code 5
    test = fit.copy()
    rows, bits, record = netprior.fit_rows(vectors, fit, test)
    assert rows.shape == (9, 16) and np.allclose(rows.sum(1), 1)
    assert rows[2, 5] > 0.95
    assert bits > 0 and record["hidden"] == netprior.HIDDEN


def test_fit_prior_files_tries_network_tables_and_the_model_codes_with_them(tmp_path):
    """The fit-prior path (priorfit.fit_prior_files) offers every single-source level a network-fitted
    table, and whatever it keeps, the stored prior loads and codes a file exactly."""
    import sys
    from pathlib import Path

    import soundfile

    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo / "tests"))
    from make_golden import AUDIO_RATE, golden_audio

    from vqcodec import Codec
    from vqcodec.priorfit import fit_prior_files

    data = tmp_path / "data"
    data.mkdir()
    for seed in range(12):  # enough files to hold every fifth out
        soundfile.write(str(data / f"clip{seed:02d}.wav"), golden_audio(60 + seed, seconds=0.4).T, AUDIO_RATE)
    messages = []
    out = fit_prior_files(repo / "tests" / "data" / "golden" / "golden_audio.safetensors", sorted(data.iterdir()),
                          out=tmp_path / "model.safetensors", log=messages.append)
    codec = Codec.load(str(out))
    single = [i for i, level in enumerate(codec.prior.levels) if len(level.sources) == 1]
    tried = [m for m in messages if "network-fitted" in m]
    assert single and len(tried) >= 1
    signal = golden_audio(99, seconds=0.7)
    header, codes = codec.read_codes(codec.encode_audio(signal, AUDIO_RATE, 4))
    np.testing.assert_array_equal(codes, codec.audio_to_codes(signal, 4, variable_depth=True))


def test_large_codebooks_keep_their_count_tables(fitted, monkeypatch):
    """A table of K + 1 rows of K grows with K squared: above NETWORK_MAX_CODEBOOK nothing is refitted."""
    import vqcodec.prior as prior_module

    counted, _, books = fitted
    planes, _ = walk_planes(15, 600, seed=1)
    monkeypatch.setattr(prior_module, "NETWORK_MAX_CODEBOOK", K - 1)
    assert counted.with_network_tables(planes, list(range(15)), books, CHUNK) is counted
