"""Per-cell depth (CODING_PRIOR_DEPTH): cells that use fewer levels than the file's quality.

Round trips of the payload with its depth maps, the integer depth model, corrupt payloads, the
encoder's choice (it must minimise error plus weighted bits exactly), the codec and CLI paths, and
the committed golden files. Tiny models and synthetic codes (K = 16) only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from make_golden import AUDIO_RATE, golden_audio, golden_image  # noqa: E402
from conftest import GOLDEN, K, markov_plane  # noqa: E402
from vqcodec import Codec, VQCodecError  # noqa: E402
from vqcodec import format as vqformat  # noqa: E402
from vqcodec.format import FormatError  # noqa: E402
from vqcodec.prior import ABSENT, PRECISION, DepthModel, counts_to_row, plane_depths  # noqa: E402


def truncate(plane: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """A code plane (levels, rows, cols) with every cell's levels from its depth on set to ABSENT."""
    levels = np.arange(plane.shape[0])[:, None, None]
    return np.where(levels < depth[None], plane, ABSENT)


def smooth_depths(rows: int, cols: int, quality: int, seed: int) -> np.ndarray:
    """Depths 0..quality in patches, as the encoder's choice tends to make them."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, quality + 1, (rows // 4 + 1, cols // 4 + 1))
    depth = np.kron(coarse, np.ones((4, 4), dtype=np.int64))[:rows, :cols]
    flips = rng.random((rows, cols)) < 0.1
    depth[flips] = rng.integers(0, quality + 1, int(flips.sum()))
    return depth


# ---------------------------------------------------------------- the payload

@pytest.mark.parametrize("shape", [(1, 4, 300), (2, 3, 17), (3, 1, 1), (1, 2, 1)])
def test_audio_depth_round_trip(audio_prior, shape):
    channels, quality, frames = shape
    codes = np.stack([truncate(markov_plane(quality, 1, frames, 50 + c), smooth_depths(1, frames, quality, c))[:, 0]
                      for c in range(channels)])
    payload = audio_prior.encode_chunk(codes, depths=True)
    np.testing.assert_array_equal(audio_prior.decode_chunk(payload, shape, depths=True), codes)


@pytest.mark.parametrize("shape", [(3, 12, 10), (2, 16, 7), (1, 1, 1), (3, 1, 9), (3, 5, 1)])
def test_image_depth_round_trip(image_prior, shape):
    quality, rows, cols = shape
    codes = truncate(markov_plane(*shape, seed=8), smooth_depths(rows, cols, quality, 3))
    payload = image_prior.encode_chunk(codes, depths=True)
    np.testing.assert_array_equal(image_prior.decode_chunk(payload, shape, depths=True), codes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2 ** 32 - 1))
def test_random_depths_round_trip(image_prior, quality, rows, cols, seed):
    """Unstructured codes and depths, every depth from 0 (nothing coded) to the quality."""
    rng = np.random.default_rng(seed)
    codes = truncate(rng.integers(0, K, (quality, rows, cols)), rng.integers(0, quality + 1, (rows, cols)))
    payload = image_prior.encode_chunk(codes, depths=True)
    np.testing.assert_array_equal(image_prior.decode_chunk(payload, codes.shape, depths=True), codes)


def test_full_depth_payload_holds_the_same_codes_as_plain_prior_coding(image_prior):
    codes = markov_plane(3, 12, 10, seed=9)
    plain = image_prior.encode_chunk(codes)
    with_depths = image_prior.encode_chunk(codes, depths=True)
    assert with_depths != plain
    np.testing.assert_array_equal(image_prior.decode_chunk(with_depths, codes.shape, depths=True), codes)
    # a depth map that never changes costs almost nothing once the model has adapted
    assert len(with_depths) <= len(plain) + 0.1 * codes[0].size / 8 + 8


def test_codes_must_be_present_up_to_the_depth(audio_prior, image_prior):
    codes = markov_plane(3, 4, 5, seed=1)
    gap = codes.copy()
    gap[0, 1, 1] = ABSENT            # level 0 absent but level 1 present: not a depth
    with pytest.raises(ValueError, match="depth"):
        image_prior.encode_chunk(gap, depths=True)
    below = codes.copy()
    below[2, 0, 0] = -2
    with pytest.raises(ValueError, match="code index out of range"):
        image_prior.encode_chunk(below, depths=True)
    above = codes.copy()
    above[1, 2, 3] = K
    for depths in (False, True):
        with pytest.raises(ValueError, match="code index out of range"):
            image_prior.encode_chunk(above, depths=depths)
    truncated = truncate(codes, np.full((4, 5), 1))
    # plain prior coding has no way to say a code is absent
    with pytest.raises(ValueError, match="code index out of range"):
        image_prior.encode_chunk(truncated)
    with pytest.raises(ValueError, match="code index out of range"):
        audio_prior.encode_chunk(np.full((1, 2, 5), ABSENT), depths=False)
    assert plane_depths(truncated).tolist() == np.full((4, 5), 1).tolist()


def test_counts_to_row_is_exact_integer_arithmetic():
    rng = np.random.default_rng(0)
    cases = [[1], [1, 1], [10 ** 9, 1, 1], list(rng.integers(1, 5000, 21)), [1] * 65, [7, 3]]
    for counts in cases:
        row = counts_to_row([int(c) for c in counts])
        assert all(isinstance(v, int) and v >= 1 for v in row)
        assert sum(row) == 1 << PRECISION
        assert row.index(max(row)) == list(counts).index(max(counts))


def test_depth_model_adapts_and_restarts_per_plane():
    model = DepthModel(8)
    assert model.context(None, None) == 8 and model.context(3, None) == 3 and model.context(2, 5) == 4
    start = model.row(8)[5]
    assert start == (1 << PRECISION) // 9 or start == (1 << PRECISION) // 9 + 1   # uniform over 0..8
    for _ in range(600):
        model.update(8, 5)
    assert 1 << 12 < sum(model.counts[8]) <= 1 << 13   # halved on the way (600 * 16 > 2**13)
    assert min(model.counts[8]) == 1                   # rounding up: no depth's count falls to 0 (min_bits relies on it)
    assert model.row(8)[5] > 0.99 * (1 << PRECISION)  # a repeated depth becomes cheap: under 0.015 bits
    assert model.row(3)[5] == start                    # other contexts are untouched
    assert DepthModel(8).row(8)[5] == start            # a new plane starts from scratch


def reference_decode_depths(decoder, rows: int, cols: int, quality: int) -> np.ndarray:
    """The depth map decoded cell by cell through DepthModel: each cell's row rebuilt from its counts."""
    depth, model = [[0] * cols for _ in range(rows)], DepthModel(quality)

    def step(context, r, c):
        depth[r][c] = int(decoder.decode(model.model(context)))
        return depth[r][c]

    model.code(rows, cols, depth, step)
    return np.asarray(depth, dtype=np.int64).reshape(rows, cols)


@pytest.mark.parametrize("quality, rows, cols, seed", [(1, 1, 3000, 0), (8, 1, 2500, 1), (20, 30, 40, 2),
                                                       (3, 45, 45, 3), (1, 4, 5, 4), (2, 1, 1, 5)])
def test_depth_decoder_reads_any_stream_as_the_depth_model_does(quality, rows, cols, seed):
    """CodePrior._decode_depths keeps each context's total and first largest count as the counts change
    instead of rebuilding the row from the counts: it must read the same depths from the same words as
    DepthModel does, whatever the words (random words give depths no encoder chose: ties for the
    largest count, runs that halve the counts), and read back what _encode_depths wrote."""
    import constriction
    from vqcodec.prior import CodePrior

    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2 ** 32, rows * cols + 8, dtype=np.uint64).astype(np.uint32)
    fast = CodePrior._decode_depths(constriction.stream.queue.RangeDecoder(words), rows, cols, quality)
    reference = reference_decode_depths(constriction.stream.queue.RangeDecoder(words), rows, cols, quality)
    np.testing.assert_array_equal(fast, reference)
    depth = smooth_depths(rows, cols, quality, seed)
    encoder = constriction.stream.queue.RangeEncoder()
    CodePrior._encode_depths(encoder, depth, quality)
    decoded = CodePrior._decode_depths(constriction.stream.queue.RangeDecoder(encoder.get_compressed()), rows, cols, quality)
    np.testing.assert_array_equal(decoded, depth)


def test_depth_decoder_builds_a_coder_model_once_for_each_counts_it_meets(audio_prior, monkeypatch):
    """Decoding a depth map built a constriction model for every cell, most of a cell's time, though a
    run of one depth (silence) cycles through a few hundred counts: 64 channels of 500 silent frames
    built 32 000 models, and the 2^26 cells of a 64-channel chunk of 2^20 frames took minutes. The
    prior keeps the model of each counts it meets (up to DEPTH_MODELS_KEPT), and reads the same depths
    whatever the cache holds: kept across planes, chunks and qualities, or begun anew when full."""
    import constriction

    from vqcodec import prior as prior_module

    built = []
    original = constriction.stream.model.Categorical
    monkeypatch.setattr(constriction.stream.model, "Categorical", lambda *a, **k: built.append(1) or original(*a, **k))
    silent = np.full((64, 4, 500), ABSENT)
    payload = audio_prior.encode_chunk(silent, depths=True)
    built.clear()
    assert np.array_equal(audio_prior.decode_chunk(payload, silent.shape, depths=True), silent)
    assert len(built) < 1000, len(built)
    rng = np.random.default_rng(7)
    for kept in (prior_module.DEPTH_MODELS_KEPT, 5):
        monkeypatch.setattr(prior_module, "DEPTH_MODELS_KEPT", kept)
        for quality in (1, 3, 4, 2, 4):
            codes = np.where(np.arange(quality)[None, :, None] < rng.integers(0, quality + 1, (3, 1, 700)),
                             rng.integers(0, K, (3, quality, 700)), ABSENT)
            codes[1, :, 100:600] = ABSENT  # a silent run among busy depths
            payload = audio_prior.encode_chunk(codes, depths=True)
            assert np.array_equal(audio_prior.decode_chunk(payload, codes.shape, depths=True), codes)
        assert len(audio_prior._depth_models) <= kept


@pytest.mark.parametrize("kind", ["audio", "image"])
def test_code_report_reads_the_depth_maps_bits_off_the_decoder(kind, golden_audio_codec, golden_image_codec,
                                                                monkeypatch):
    """code_report decoded each chunk and then ran the depth model over its depth maps again to count
    their bits, DepthModel's rows built cell by cell: three times the decoding's time (four minutes,
    of `info --verbose`, for a chunk of 2^20 silent frames of 64 channels at q8). The decoder now adds
    up the bits of the rows it decodes with: the same bits, to float rounding."""
    codec = golden_audio_codec if kind == "audio" else golden_image_codec
    data = (GOLDEN / f"golden_{kind}_depth.vq").read_bytes()
    header, codes = codec.read_codes(data)
    planes = [codes[:, :, a:a + header.chunk_frames] if kind == "audio" else codes[:, a:a + header.chunk_frames]
              for a in range(0, codes.shape[2 if kind == "audio" else 1], header.chunk_frames)]
    expected = sum(codec.prior.depth_bits(chunk) for chunk in planes)
    monkeypatch.setattr(DepthModel, "code", lambda *args: pytest.fail("the depth model ran again"))
    report = codec.code_report(data)
    assert report["chunks"] == len(planes) > 1
    assert report["depth_ideal_bits"] == pytest.approx(expected, abs=0.1) and expected > 0


@pytest.mark.parametrize("quality, seed", [(1, 0), (2, 1)])
def test_depth_decoder_reads_long_unstructured_depth_maps(quality, seed):
    """Depths drawn at random along 20 000 frames: the counts of a context stay close and are halved
    every few hundred cells, so the first largest count changes both as a depth is learnt and as the
    counts are halved (a decoder that missed the second read these back wrong)."""
    import constriction
    from vqcodec.prior import CodePrior

    depth = np.random.default_rng(seed).integers(0, quality + 1, (1, 20000))
    encoder = constriction.stream.queue.RangeEncoder()
    CodePrior._encode_depths(encoder, depth, quality)
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    np.testing.assert_array_equal(CodePrior._decode_depths(decoder, 1, depth.shape[1], quality), depth)


def test_corrupt_depth_payloads_raise_or_stay_well_formed(audio_prior, image_prior):
    rng = np.random.default_rng(4)
    for prior, shape in ((audio_prior, (2, 4, 60)), (image_prior, (3, 9, 8))):
        if prior is audio_prior:
            codes = np.stack([truncate(rng.integers(0, K, (shape[1], 1, shape[2])),
                                       rng.integers(0, shape[1] + 1, (1, shape[2])))[:, 0] for _ in range(shape[0])])
        else:
            codes = truncate(rng.integers(0, K, shape), rng.integers(0, shape[0] + 1, shape[1:]))
        payload = prior.encode_chunk(codes, depths=True)
        attempts = [payload[:-1], payload[:-4], b"", payload + b"\x00\x00\x00\x01", b"\xff" * len(payload)]
        for _ in range(30):
            damaged = bytearray(payload)
            damaged[rng.integers(len(damaged))] ^= 1 << int(rng.integers(8))
            attempts.append(bytes(damaged))
        refused = 0
        for attempt in attempts:
            try:
                out = prior.decode_chunk(attempt, shape, depths=True)
            except FormatError:
                refused += 1
                continue
            assert out.shape == shape and out.min() >= ABSENT and out.max() < K
            planes = [c[:, None] for c in out] if prior is audio_prior else [out]
            for plane in planes:
                plane_depths(plane)   # well formed: present codes first, then absent
        assert refused >= 3



@pytest.mark.parametrize("quality", [1, 2, 4])
def test_an_empty_payload_cannot_claim_the_depths_of_many_planes(audio_prior, quality):
    """min_bits counted every depth at the most a steady context gives (8 of 2**16 for each other depth),
    so an empty payload passed for a chunk of 64 channels of 500 frames, and decoded 32 000 depths
    (cells of no code) from the 8 bytes of its framing: a file of a few KB could declare hours of them.
    The first depth of each plane is coded with a new context's row (every count 1, about log2(Q + 1)
    bits), so such a payload is now refused before it is decoded. The encoder's own payload for the
    same chunk, every cell of depth 0 (silence, the cheapest there is), still decodes."""
    shape = (64, quality, 500)
    silent = np.full(shape, ABSENT)
    payload = audio_prior.encode_chunk(silent, depths=True)
    assert np.array_equal(audio_prior.decode_chunk(payload, shape, depths=True), silent)
    with pytest.raises(FormatError, match="too short for its"):
        audio_prior.decode_chunk(b"", shape, depths=True)
    for shape in ((1, quality, 500), (1, quality, 1), (4, quality, 2 ** 14)):  # few planes, or many cells a plane
        silent = np.full(shape, ABSENT)
        payload = audio_prior.encode_chunk(silent, depths=True)
        assert np.array_equal(audio_prior.decode_chunk(payload, shape, depths=True), silent)


# ---------------------------------------------------------------- the encoder's choice

@pytest.mark.parametrize("kind", ["audio", "image"])
def test_chosen_depths_minimise_error_plus_weighted_bits(kind, golden_audio_codec, golden_image_codec):
    """Every cell's depth is the exact minimiser of its squared latent error after d levels plus
    lambda times the bits of its first d codes, over d = 0..q, recomputed here by brute force."""
    codec = golden_audio_codec if kind == "audio" else golden_image_codec
    torch.manual_seed(0)
    quality = codec.num_codebooks
    if kind == "audio":
        latents = codec.model.encoder(torch.from_numpy(golden_audio(3, seconds=0.4))[:, None])  # (2, D, frames)
    else:
        latents = codec.model.encoder(torch.from_numpy(golden_image(3, 48, 40)).permute(2, 0, 1)[None].float() / 255)
    latents = latents.detach()
    codes = codec.model.quantizer.encode_cells(latents, quality)
    depth_lambda = 0.05 * float(latents.pow(2).sum(1).mean())   # big enough that depths vary
    chosen = codec._choose_depths(latents, codes, depth_lambda).numpy()
    full = codes.numpy()
    vectors = latents.movedim(1, -1).numpy()                        # (batch, *cells, D)
    books = [layer.codebook.numpy() for layer in codec.model.quantizer.layers]
    depths_seen = set()
    for item in range(full.shape[1]):
        plane = full[:, item]
        plane = plane[:, None] if plane.ndim == 2 else plane       # (q, rows, cols)
        bits = codec.prior.code_bits(plane)
        latent = vectors[item].reshape(plane.shape[1], plane.shape[2], -1)
        result = chosen[:, item].reshape(plane.shape)
        for r in range(plane.shape[1]):
            for c in range(plane.shape[2]):
                residual, costs = latent[r, c].astype(np.float64), []
                for d in range(quality + 1):
                    costs.append(float(residual @ residual) + depth_lambda * float(bits[:d, r, c].sum()))
                    if d < quality:
                        residual = residual - books[d][plane[d, r, c]]
                best = int(np.argmin(costs))
                got = int((result[:, r, c] >= 0).sum())
                assert costs[got] <= costs[best] + 1e-6 * (1 + abs(costs[best]))
                np.testing.assert_array_equal(result[:got, r, c], plane[:got, r, c])
                assert (result[got:, r, c] == ABSENT).all()
                depths_seen.add(got)
    assert len(depths_seen) > 1


@pytest.mark.parametrize("quality", [2, 3])
def test_depth_lambda_is_the_weight_times_the_ladders_exchange_rate(quality, golden_image_codec):
    """Without an explicit lambda, the choice uses depth_weight times the error one more level of
    nearest codes removes per bit it spends (the last level's own at the top quality)."""
    codec = golden_image_codec
    rvq = codec.model.quantizer
    torch.manual_seed(5)  # latents that differ from cell to cell, at the codebooks' scale
    latents = torch.randn(1, codec.cfg.latent_dim, 8, 6) * rvq.layers[0].codebook.std() * 2
    codes = rvq.encode_cells(latents, quality)
    ladder = min(quality + 1, codec.num_codebooks)
    nearest = rvq.encode_cells(latents, ladder)             # greedy: its first levels are `codes` too
    np.testing.assert_array_equal(nearest[:quality].numpy(), codes.numpy())
    vectors = latents.movedim(1, -1).reshape(-1, latents.shape[1]).double()
    books = [layer.codebook.double() for layer in rvq.layers]
    flat = nearest.reshape(ladder, -1)
    before = vectors - sum(books[level][flat[level]] for level in range(ladder - 1))
    after = before - books[ladder - 1][flat[ladder - 1]]
    removed = float((before.pow(2).sum(1) - after.pow(2).sum(1)).sum())
    spent = codec.prior.code_bits(nearest[:, 0].numpy())[ladder - 1].sum()
    defaults = codec.depth_weight
    try:
        codec.depth_weight = 1.0
        expected = codec._choose_depths(latents, codes, removed / spent)
        assert len(np.unique((expected >= 0).sum(0))) == quality + 1   # every depth occurs: lambda matters
        np.testing.assert_array_equal(codec._choose_depths(latents, codes).numpy(), expected.numpy())
        codec.depth_weight = 100.0   # the weight does matter: heavy enough, levels go
        assert (codec._choose_depths(latents, codes) < 0).any()
    finally:
        codec.depth_weight = defaults


def test_depth_weight_trades_bits_for_error(golden_image_codec, golden_audio_codec):
    from PIL import Image

    image = Image.fromarray(golden_image(9, 80, 64))
    signal = golden_audio(9, seconds=1.0)
    for codec, encode, codes_of, decode in (
            (golden_image_codec, lambda c: c.encode_image(image, 3),
             lambda c: c.image_to_codes(np.asarray(image), 3, variable_depth=True),
             lambda c, data: np.asarray(c.decode_image(data)).astype(np.float64)),
            (golden_audio_codec, lambda c: c.encode_audio(signal, AUDIO_RATE, 4),
             lambda c: c.audio_to_codes(signal, 4, variable_depth=True),
             lambda c, data: c.decode_audio(data)[0].astype(np.float64))):
        defaults = codec.rate_weight, codec.depth_weight
        try:
            codec.rate_weight, codec.depth_weight = 0.0, 0.0
            full = encode(codec)
            assert vqformat.parse_header(full).coding == vqformat.CODING_PRIOR
            codec.depth_weight = 1.0
            shallow = encode(codec)
            header, codes = codec.read_codes(shallow)
            assert header.coding == vqformat.CODING_PRIOR_DEPTH and header.prior_id == codec.prior.prior_id
            assert len(shallow) < len(full)
            assert (codes == ABSENT).any() and (codes >= 0).any()
            # the file holds exactly the codes the API chooses with the same weight
            np.testing.assert_array_equal(codes, codes_of(codec))
            # and decodes to what the API makes of them; absent levels add nothing
            decoded = decode(codec, shallow)
            if codec.kind == "image":
                np.testing.assert_array_equal(decoded, codec.codes_to_image(codes, header.height, header.width))
            else:
                reference = codec.codes_to_audio(codes)[:, :signal.shape[1]]
                np.testing.assert_allclose(decoded, reference, atol=1e-6)
            # worse than every cell at full depth, but not broken
            assert not np.array_equal(decoded, decode(codec, full))
            # the report counts the codes present and the depth maps' bits
            report = codec.code_report(shallow)
            assert sum(r["codes"] for r in report["levels"]) == int((codes >= 0).sum())
            assert report["depth_ideal_bits"] > 0
            assert report["ideal_bytes"] - 4 <= report["payload_bytes"] <= report["ideal_bytes"] * 1.01 + 8 * report["chunks"]
            # fixed-width coding cannot leave codes out: a depth weight set for it is refused, in files and codes
            codec.coding = "fixed"
            for refused in (encode, codes_of):
                with pytest.raises(VQCodecError, match="depth weight 1 weighs bits under the model's prior"):
                    refused(codec)
        finally:
            codec.rate_weight, codec.depth_weight = defaults
            codec.coding = "auto"
    for bad in (-0.1, True, "1", float("nan"), 1e9):
        with pytest.raises(VQCodecError, match="depth weight"):
            golden_image_codec.depth_weight = bad


def test_depth_with_refinement_writes_the_codes_it_judged(golden_image_codec):
    from PIL import Image

    codec = golden_image_codec
    image = Image.fromarray(golden_image(12, 48, 48))
    defaults = codec.depth_weight, codec.refine
    try:
        codec.depth_weight, codec.refine = 4.0, 2
        data = codec.encode_image(image, 3)
        header, codes = codec.read_codes(data)
        assert header.coding == vqformat.CODING_PRIOR_DEPTH
        np.testing.assert_array_equal(codes, codec.image_to_codes(np.asarray(image), 3, variable_depth=True))
    finally:
        codec.depth_weight, codec.refine = defaults


def test_codes_to_media_accept_absent_levels_only_as_minus_one(golden_audio_codec, golden_image_codec):
    audio_codes = golden_audio_codec.audio_to_codes(golden_audio(2, seconds=0.2), 4)
    full = golden_audio_codec.codes_to_audio(audio_codes)
    fewer = audio_codes.copy()
    fewer[:, 2:] = ABSENT
    np.testing.assert_allclose(golden_audio_codec.codes_to_audio(fewer), golden_audio_codec.codes_to_audio(audio_codes[:, :2]),
                               atol=1e-6)
    assert not np.allclose(golden_audio_codec.codes_to_audio(fewer), full)
    below = audio_codes.copy()
    below[0, 1, 3] = -2
    with pytest.raises(VQCodecError):
        golden_audio_codec.codes_to_audio(below)
    # a level left out below a present one: no file holds it (codes_to_file refuses it), nor did decoding
    hole = audio_codes.copy()
    hole[1, 1, 3] = ABSENT
    with pytest.raises(VQCodecError, match="present from the first level up to a cell's depth, then -1"):
        golden_audio_codec.codes_to_audio(hole)
    image_codes = golden_image_codec.image_to_codes(golden_image(2, 32, 32), 3)
    below = image_codes.copy()
    below[2, 1, 1] = -2
    with pytest.raises(VQCodecError):
        golden_image_codec.codes_to_image(below)
    hole = image_codes.copy()
    hole[0, 1, 1] = ABSENT
    with pytest.raises(VQCodecError, match="present from the first level up to a cell's depth, then -1"):
        golden_image_codec.codes_to_image(hole)
    with pytest.raises(VQCodecError):
        golden_image_codec.codes_to_image(image_codes + K)


# ---------------------------------------------------------------- committed golden files

@pytest.mark.parametrize("kind", ["audio", "image"])
def test_golden_depth_files_decode_to_the_committed_codes(kind):
    """Per-cell depth files written by an earlier build decode to exactly the committed codes, and
    today's encoder writes their payloads byte for byte."""
    codec = Codec.load(str(GOLDEN / f"golden_{kind}.safetensors"))
    assert json.loads((GOLDEN / f"golden_{kind}.json").read_text())["prior"]["id"] == codec.prior.prior_id
    expected = np.load(GOLDEN / f"golden_{kind}_depth_codes.npy", allow_pickle=False).astype(np.int64)
    data = (GOLDEN / f"golden_{kind}_depth.vq").read_bytes()
    header, codes = codec.read_codes(data)
    assert header.coding == vqformat.CODING_PRIOR_DEPTH
    np.testing.assert_array_equal(codes, expected)
    assert (expected == ABSENT).any()
    header, chunks, _ = vqformat.parse_file(data)
    axis = 2 if kind == "audio" else 1
    for index, payload in enumerate(chunks):
        part = np.take(expected, range(index * header.chunk_frames,
                                       min(expected.shape[axis], (index + 1) * header.chunk_frames)), axis=axis)
        assert codec.prior.encode_chunk(part, depths=True) == payload
    if kind == "audio":
        codec.decode_audio(data)
    else:
        codec.decode_image(data)


def test_verbose_info_says_what_the_fixed_width_size_counts(cli):
    """On a file whose cells stop at several depths, the fixed bits count the codes present and the
    fixed-width size every level of every cell: the two disagreed with nothing saying why."""
    args = (GOLDEN / "golden_audio_depth.vq", "-v", "-m", GOLDEN / "golden_audio.safetensors")
    result = cli("info", *args, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(cli("info", *args, "--json", text=True).stdout)["payload"]
    codes = sum(row["codes"] for row in report["levels"])
    assert codes < report["cells"] * 4 and report["fixed_width_bytes"] == report["cells"] * 4 * 4 // 8
    line = next(line for line in result.stdout.splitlines() if line.startswith("payload:"))
    assert line.endswith(f"fixed width would take {report['fixed_width_bytes']} bytes "
                         f"(all 4 levels of every cell, not only the {codes} codes above)")
    full = cli("info", GOLDEN / "golden_audio_prior.vq", "-v", "-m", GOLDEN / "golden_audio.safetensors", text=True)
    assert "every cell" not in full.stdout  # every code present: the two agree
