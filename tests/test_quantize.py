"""Residual VQ encoding: greedy and beam search."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcodec import Codec, VQCodecError
from vqcodec import quantize
from vqcodec.quantize import ResidualVQ


@pytest.fixture(scope="module")
def rvq() -> ResidualVQ:
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=8, num_codebooks=4, codebook_size=32)
    for level, layer in enumerate(rvq.layers):
        layer.codebook.copy_(torch.randn(32, 8) * 0.6 ** level)
    return rvq.eval()


def quantisation_error(rvq: ResidualVQ, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return (latents - rvq.decode(codes)).pow(2).sum(1)


def test_greedy_picks_the_nearest_code_at_every_level(rvq):
    latents = torch.randn(500, 8)
    codes = rvq.encode(latents, 3)
    assert codes.shape == (3, 500)
    residual = latents
    for layer, level_codes in zip(rvq.layers, codes):
        distances = torch.cdist(residual, layer.codebook)
        assert torch.equal(level_codes, distances.argmin(1))
        residual = residual - layer.codebook[level_codes]


@pytest.mark.parametrize("count", [1, 2, 4])
def test_beam_search_lowers_the_quantisation_error(rvq, count):
    latents = torch.randn(2000, 8)
    greedy = quantisation_error(rvq, latents, rvq.encode(latents, count))
    beam = quantisation_error(rvq, latents, rvq.encode(latents, count, beam=8))
    if count == 1:
        assert torch.allclose(beam, greedy)  # one level: the nearest code is optimal
    else:
        assert beam.mean() < 0.97 * greedy.mean()
    assert rvq.encode(latents, count, beam=8).shape == (count, 2000)


def test_beam_search_in_blocks_gives_the_same_codes(rvq, monkeypatch):
    latents = torch.randn(300, 8)
    whole = rvq.encode(latents, 4, beam=4)
    monkeypatch.setattr(quantize, "BEAM_ROWS", 7)
    assert torch.equal(rvq.encode(latents, 4, beam=4), whole)


@pytest.mark.parametrize("size, beam, rate", [(32, 3, False), (256, 4, False), (256, 8, True), (32, 1, True), (256, 2, True)])
def test_beam_search_with_bounded_scores_gives_the_codes_of_one_block(monkeypatch, size, beam, rate):
    """Blocks of 1 to a few rows (BEAM_SCORES forced down) against all rows in one block: the same codes,
    with and without a rate term (whose rows are the block's), through topk and _smallest's groups."""
    torch.manual_seed(size + beam)
    rvq = ResidualVQ(dim=8, num_codebooks=3, codebook_size=size).eval()
    for level, layer in enumerate(rvq.layers):
        layer.codebook.copy_(torch.randn(size, 8) * 0.6 ** level)
    latents = torch.randn(203, 8)
    first, later = torch.rand(203, size), torch.rand(size, size)
    costs = (lambda level, rows, coarser: first[rows][:, None, :] if level == 0 else later[coarser]) if rate else None
    monkeypatch.setattr(quantize, "BEAM_ROWS", 10 ** 6)
    monkeypatch.setattr(quantize, "BEAM_SCORES", 1 << 40)
    whole = rvq.encode(latents, 3, beam, costs)
    for scores in (1, size * beam * 3 - 1, size * beam * 17):
        monkeypatch.setattr(quantize, "BEAM_SCORES", scores)
        assert torch.equal(rvq.encode(latents, 3, beam, costs), whole), scores


@pytest.mark.parametrize("beam", [1, 4, 16])
def test_beam_search_holds_at_most_beam_scores_at_once(monkeypatch, beam):
    """A codebook of 2**15 and a beam of 4 scored 2048 rows at once, 2**28 float32 (1 GiB; 2.6 GB peak
    for the search): the rows per block now keep rows x paths x codes within BEAM_SCORES (2**23)."""
    size = 1 << 15
    rvq = ResidualVQ(dim=4, num_codebooks=2, codebook_size=size).eval()
    blocks = []
    search = ResidualVQ._beam_encode

    def counted(self, latents, *args):
        blocks.append(latents.shape[0])
        return search(self, latents, *args)

    monkeypatch.setattr(ResidualVQ, "_beam_encode", counted)
    codes = rvq.encode(torch.randn(300, 4), 2, beam, (lambda level, rows, coarser: torch.zeros(rows.stop - rows.start, 1, size))
                       if beam == 1 else None)
    assert codes.shape == (2, 300) and sum(blocks) == 300
    assert max(blocks) * beam * size <= quantize.BEAM_SCORES == 1 << 23 and max(blocks) == min(300, (1 << 23) // (beam * size))


def reference_beam(codebooks: list[np.ndarray], latents: np.ndarray, beam: int, first, later) -> np.ndarray:
    """A row at a time, every path and code scored as |r - c|^2 plus its costs (first[row, code] at level 0,
    later[coarser code, code] + first[row, code] after), the `beam` smallest kept: the codes of the best
    path, (levels, N)."""
    out = []
    for row, latent in enumerate(latents):
        paths = [(0.0, latent, [])]  # (summed costs, residual, codes)
        for level, codebook in enumerate(codebooks):
            scored = []
            for parent, (rate, residual, codes) in enumerate(paths):
                cost = first[row] if level == 0 else later[codes[-1]] + first[row]
                for code, vector in enumerate(codebook):
                    total = float(((residual - vector) ** 2).sum()) + rate + float(cost[code])
                    scored.append((total, parent * len(codebook) + code, rate + float(cost[code]), residual - vector,
                                   codes + [code]))
            scored.sort(key=lambda entry: entry[:2])
            kept = scored[:beam + 1]
            assert len({entry[0] for entry in kept}) == len(kept), "a tie: the order is the search's choice"
            paths = [entry[2:] for entry in kept[:beam]]
        out.append(paths[0][2])
    return np.array(out).T


@pytest.mark.parametrize("beam, rate", [(3, False), (3, True), (5, True), (1, True)])
def test_beam_search_matches_a_row_by_row_reference(monkeypatch, beam, rate):
    """Whole numbers small enough that every score is exact in float32: the blocked search (BEAM_SCORES
    forced down to blocks of a few rows) keeps the same paths
    as the straightforward one."""
    rng = np.random.default_rng(beam + 10 * rate)
    size, count = 16, 3
    codebooks = [rng.integers(-300, 301, (size, 4)).astype(np.float32) for _ in range(count)]
    latents = rng.integers(-300, 301, (61, 4)).astype(np.float32)
    first = rng.integers(0, 4000, (61, size)) if rate else np.zeros((61, size), dtype=np.int64)
    later = rng.integers(0, 4000, (size, size)) if rate else np.zeros((size, size), dtype=np.int64)
    rvq = ResidualVQ(dim=4, num_codebooks=count, codebook_size=size).eval()
    for layer, codebook in zip(rvq.layers, codebooks):
        layer.codebook.copy_(torch.from_numpy(codebook))
    first_t, later_t = torch.from_numpy(first).float(), torch.from_numpy(later).float()
    costs = (lambda level, rows, coarser: first_t[rows][:, None, :] + (later_t[coarser] if level else 0)) if rate else None
    expected = reference_beam(codebooks, latents, beam, first, later)
    for scores in (1 << 40, size * beam * 3 - 1, size * 5):
        monkeypatch.setattr(quantize, "BEAM_SCORES", scores)
        assert np.array_equal(rvq.encode(torch.from_numpy(latents), count, beam, costs).numpy(), expected), scores


def test_beam_of_one_is_greedy(rvq):
    latents = torch.randn(100, 8)
    assert torch.equal(rvq.encode(latents, 4, beam=1), rvq.encode(latents, 4))


def test_codec_beam_setting_and_files_decode_either_way():
    codec = Codec.load("image")
    assert codec.beam == 4 and Codec.load("speech16k").beam == 1
    with pytest.raises(VQCodecError, match="beam"):
        Codec.load("image", beam=0)
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(128, 40, (48, 64, 3)).cumsum(1) / 8 + 64, 0, 255).astype(np.uint8)
    wide = codec.image_to_codes(rgb, 6)
    codec.beam = 1
    greedy = codec.image_to_codes(rgb, 6)
    assert wide.shape == greedy.shape == (6, 3, 4)
    # the wider search changes some codes, and its reconstruction is no worse in pixel terms on average
    assert not np.array_equal(wide, greedy)
    error = [np.mean((codec.codes_to_image(c, 48, 64).astype(float) - rgb) ** 2) for c in (wide, greedy)]
    assert error[0] <= error[1] * 1.02


@pytest.mark.parametrize("beam", [1, 4])
def test_code_search_does_not_depend_on_the_thread_count(beam):
    """README "Same input, same codes": across thread counts only the encoder network's latents can
    differ; the search makes the same codes of the same latents."""
    rvq = Codec.load("image").model.quantizer
    latents = torch.randn(1000, rvq.layers[0].codebook.shape[1], generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        codes = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            codes.append(rvq.encode(latents, 12, beam=beam))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])


@pytest.mark.parametrize("shape, k", [((50, 4096), 4), ((50, 4096), 1), ((30, 1000), 3), ((5, 128), 3), ((7, 64), 2)])
def test_grouped_smallest_matches_topk(shape, k):
    values = torch.randn(shape)
    smallest, where = quantize._smallest(values, k)
    expected, _ = values.topk(k, dim=1, largest=False)
    assert torch.equal(smallest, expected)
    assert torch.equal(values.gather(1, where), smallest)


# ---------------------------------------------------------------- rate-distortion-optimised search

def test_zero_bit_costs_change_nothing(rvq):
    latents = torch.randn(300, 8)
    zero = lambda level, rows, coarser: torch.zeros((rows.stop - rows.start, 1, 32))  # noqa: E731
    for beam in (1, 4):
        assert torch.equal(rvq.encode(latents, 4, beam, zero), rvq.encode(latents, 4, beam))


def test_rate_term_search_is_exact_with_a_full_beam(rvq, monkeypatch):
    """Two levels, a beam as wide as the first codebook: the search must find the pair of codes with
    the smallest error plus costs, where the second level's costs depend on the first level's code."""
    torch.manual_seed(1)
    latents = torch.randn(40, 8)
    first = torch.rand(40, 32) * 3
    second = torch.rand(32, 32) * 3          # indexed by (coarser code, code)
    monkeypatch.setattr(quantize, "BEAM_ROWS", 16)

    def costs(level, rows, coarser):
        return first[rows][:, None, :] if level == 0 else second[coarser]

    codes = rvq.encode(latents, 2, beam=32, bit_costs=costs)
    c0, c1 = rvq.layers[0].codebook, rvq.layers[1].codebook
    total = ((latents[:, None, None, :] - c0[None, :, None, :] - c1[None, None, :, :]).pow(2).sum(-1)
             + first[:, :, None] + second[None])
    best = total.view(40, -1).argmin(1)
    assert torch.equal(codes[0], best // 32) and torch.equal(codes[1], best % 32)


def test_heavy_rate_term_wins_over_error(rvq):
    latents = torch.randn(100, 8)
    costs = torch.full((32,), 1e6)
    costs[5] = 0
    codes = rvq.encode(latents, 3, beam=2, bit_costs=lambda level, rows, coarser: costs.expand(rows.stop - rows.start, 1, 32))
    assert (codes == 5).all()


def test_nearest_code_in_row_blocks_matches_the_whole_distance_matrix(monkeypatch):
    """nearest_code computes distances a few rows at a time: the same codes as one N x K matrix of
    |v|^2 - 2 v.c + |c|^2, and among equal codebook rows the first."""
    generator = torch.Generator().manual_seed(0)
    vectors, codebook = torch.randn(301, 8, generator=generator), torch.randn(64, 8, generator=generator)
    codebook[40] = codebook[3]  # a tie: the first wins
    whole = (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codebook.t() + codebook.pow(2).sum(1)).argmin(1)
    assert torch.equal(quantize.nearest_code(vectors, codebook), whole)
    monkeypatch.setattr(quantize, "NEAREST_ELEMENTS", 7 * 64)  # blocks of 7 rows, the last of 0 < 7
    chosen = quantize.nearest_code(vectors, codebook)
    assert torch.equal(chosen, whole) and (chosen == 3).any() and not (chosen == 40).any()
    assert quantize.nearest_code(vectors[:0], codebook).shape == (0,)
