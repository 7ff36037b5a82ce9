"""Learned priors over code indices, range coded with constriction: the CODING_PRIOR payload.

A prior holds, for every codebook level, integer probability tables: the probability of a code
value given a small context class. Context sources, chosen per level when the prior is fitted:

    up     the code of the coarser level at the same frame or latent cell
    left   the code of the same level one frame earlier (audio) or one cell to the left (images)
    above  the code of the same level one latent row higher (images)

Each source maps its code value (or "unavailable", index K) to a class through a stored integer
table; a level's context is the mixed-radix number of its sources' classes, in the order above.
Contexts never reach across a chunk: chunks stay independently decodable. A level with a single
source may instead have one row per source value (an identity map), fitted with a small network
over codebook vectors (CodePrior.with_network_tables, vqcodec/netprior.py); it codes like any table.

Every stored probability is an integer q / 2**16 with q >= 1 and each row summing to exactly
2**16. constriction's Categorical model receives the weights 256 q - 1 as float64: integers that
sum to exactly 2**24 - K, so constriction's fast quantisation (scale = (2**24 - K) / sum = 1.0)
reproduces 256 q exactly, with no rounding anywhere (docs/ENTROPY.md). Encoder and decoder
therefore use the same integers on every machine, thread count and device: nothing in the
probability path depends on a float computation, torch or the codes' device.

Coding order inside a chunk: for each channel (audio) and each level, coarse to fine; a level whose
context only uses `up` is coded in groups of equal context (one constriction call per context); a
level that uses its own neighbours is coded symbol by symbol in raster order.

Per-cell depth (the CODING_PRIOR_DEPTH payload): a cell (an audio frame or an image latent cell)
may use fewer levels than the file's quality. Its codes beyond its depth are ABSENT (-1) in the
code arrays and are not coded; each plane's depth map goes first, under an adaptive integer model
(DepthModel), and absent neighbours count as unavailable context.
"""
from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .format import FormatError
from .wording import plural

try:  # constriction is a dependency, but keep `import vqcodec` working without it
    import constriction
except ImportError:  # pragma: no cover
    constriction = None

PRIOR_VERSION = 1
PRECISION = 16                   # stored tables: q / 2**16
CODER_PRECISION = 24             # constriction's Categorical works on 24-bit probabilities
SOURCES = ("up", "left", "above")
KIND_NAME = "context-tables"

# Fitting choices: classes per source when it is alone (the larger count only where it saves
# LARGER_TABLE_MIN_GAIN of the level's bits on held-out codes), and when two sources are combined.
SINGLE_CLASSES = (64, 256)
LARGER_TABLE_MIN_GAIN = 0.01
JOINT_CLASSES = {"up": 16, "left": 8, "above": 8}
JOINT_CLASSES_WITHOUT_UP = {"left": 32, "above": 32}  # the first image level: same-level neighbours only
BETAS = (0.5, 2.0, 8.0, 32.0, 128.0, 512.0, 2048.0, 8192.0)
DEFAULT_BETA = 8.0
UNIGRAM_ALPHAS = (0.5, 2.0, 8.0, 32.0, 128.0)  # pseudo-count per value of a level's unigram
DEFAULT_ALPHA = 0.5
HOLDOUT_EVERY = 5            # fitting scores its choices on every 5th group of planes (one file's)
NETWORK_MIN_GAIN = 0.01      # a network-fitted table replaces a count table that codes 1% more bits
NETWORK_MAX_CODEBOOK = 2048  # ... for codebooks of at most this size (its table has K + 1 rows of K)
SEQUENTIAL_MIN_GAIN = 0.01   # a level codes symbol by symbol only when that saves over 1% of its bits
ABSENT = -1                  # code value of a level a cell does not use (per-cell depth)
DEPTH_INCREMENT = 16         # the adaptive depth model adds this to a depth's count once it is coded
DEPTH_COUNT_LIMIT = 1 << 13  # and halves its counts (rounding up) when they sum to more than this
MAX_CODEBOOK = 1 << 15       # the largest codebook a prior covers (readers refuse larger ones)
DEPTH_MODELS_KEPT = 1 << 10  # coder models of depth counts kept for decoding (up to 1 MB at Q = 64), then begun anew


def check_codebook_size(codebook_size: int) -> None:
    """Refuse to fit a prior that no reader would load (from_tensors): codebooks over MAX_CODEBOOK."""
    if codebook_size > MAX_CODEBOOK:
        from .errors import VQCodecError
        raise VQCodecError(f"a prior covers codebooks of at most {MAX_CODEBOOK} entries, not {codebook_size}: "
                           "this model's files can only be coded at fixed width")


def _require_constriction():
    if constriction is None:  # pragma: no cover
        from .errors import VQCodecError
        raise VQCodecError("the constriction package is needed for entropy-coded .vq files (pip install constriction)")


# ---------------------------------------------------------------- tables

QUANTIZE_BLOCK = 1 << 21  # entries quantize_rows (and fitting) work on at once: bounds their temporaries
PAIR_ROWS_ALIGN = 64      # _PairCounts's blocks of rows start at multiples of this


def quantize_rows(p: np.ndarray) -> np.ndarray:
    """Float probability rows (n, K) -> uint16 rows with every entry >= 1 summing to 2**PRECISION.
    Each row is quantised on its own, so the rows go a block at a time (QUANTIZE_BLOCK entries):
    the same integers as all at once, with a block's temporaries instead of the whole table's."""
    p = np.asarray(p, dtype=np.float64)
    n, k = p.shape
    step = max(1, QUANTIZE_BLOCK // max(1, k))
    if n <= step:
        return _quantize_block(p)
    out = np.empty((n, k), dtype=np.uint16)
    for start in range(0, n, step):
        out[start:start + step] = _quantize_block(p[start:start + step])
    return out


def _quantize_block(p: np.ndarray) -> np.ndarray:
    n, k = p.shape
    p = np.where(np.isfinite(p), np.maximum(p, 0), 0.0)
    p[p.sum(1) <= 0] = 1.0  # an empty row becomes uniform
    p = p / p.sum(1, keepdims=True)
    budget = (1 << PRECISION) - k
    raw = p * budget
    whole = np.floor(raw)
    q = whole.astype(np.int64)
    left = (budget - q.sum(1)).tolist()
    frac = np.subtract(raw, whole, out=raw)
    # The `left` largest fractions of a row get one more, ties to the lowest index: what ranking the
    # row by (-frac, index) with a stable sort and taking the first `left` gave, found with a partition.
    for row, count in enumerate(left):
        if count <= 0:
            continue
        negative = np.negative(frac[row])
        threshold = np.partition(negative, count - 1)[count - 1]
        larger = negative < threshold
        q[row] += larger
        ties = np.flatnonzero(negative == threshold)[:count - int(np.count_nonzero(larger))]
        q[row, ties] += 1
    q += 1
    assert (q.sum(1) == 1 << PRECISION).all() and q.min() >= 1
    return q.astype(np.uint16)


def coder_weights(row) -> np.ndarray:
    """constriction weights for a probability row of integers q >= 1 summing to 2**PRECISION: the
    integers 256 q - 1, exact in float64 and summing to exactly 2**24 - len(row) (module doc). A
    row given as a list (the short rows of the depth model) is converted in plain Python, which is
    faster than NumPy at that size."""
    if isinstance(row, list):
        return np.array([(q << (CODER_PRECISION - PRECISION)) - 1 for q in row], dtype=np.float64)
    return np.asarray(row, dtype=np.float64) * (1 << (CODER_PRECISION - PRECISION)) - 1.0


def counts_to_row(counts: list[int]) -> list[int]:
    """Positive integer counts -> integers q >= 1 summing to exactly 2**PRECISION, in integer
    arithmetic only: 1 + floor(count * (2**PRECISION - n) / total), the remainder to the first
    largest count."""
    n, total = len(counts), sum(counts)
    budget = (1 << PRECISION) - n
    row = [1 + c * budget // total for c in counts]
    row[counts.index(max(counts))] += (1 << PRECISION) - sum(row)
    return row


class DepthModel:
    """Adaptive model of the depth (0..quality) of every cell of one plane, in raster order.

    The context is the rounded mean of the left and above neighbours' depths (one of them when the
    other is outside the plane, `quality` when both are); each context has its own counts, starting
    at 1 for every depth. After a depth is coded its count grows by DEPTH_INCREMENT, and a context's
    counts are halved, rounding up, once they sum to more than DEPTH_COUNT_LIMIT. Everything is an
    integer, so encoder and decoder build the same probabilities on every machine.
    """

    def __init__(self, quality: int):
        self.quality = int(quality)
        self.counts: dict[int, list[int]] = {}
        self._models: dict[int, object] = {}

    def context(self, left: int | None, above: int | None) -> int:
        if left is None and above is None:
            return self.quality
        if left is None or above is None:
            return above if left is None else left
        return (left + above + 1) // 2

    def row(self, context: int) -> list[int]:
        """The probability row (integers summing to 2**PRECISION) of a context, as it stands."""
        return counts_to_row(self.counts.get(context) or [1] * (self.quality + 1))

    def model(self, context: int):
        """The row of a context as a constriction model (cached until the context's next update)."""
        model = self._models.get(context)
        if model is None:
            model = constriction.stream.model.Categorical(coder_weights(self.row(context)), perfect=False)
            self._models[context] = model
        return model

    def update(self, context: int, depth: int) -> None:
        counts = self.counts.setdefault(context, [1] * (self.quality + 1))
        counts[depth] += DEPTH_INCREMENT
        if sum(counts) > DEPTH_COUNT_LIMIT:
            counts[:] = [(c + 1) // 2 for c in counts]
        self._models.pop(context, None)

    def code(self, rows: int, cols: int, depths: list[list[int]], step) -> None:
        """Visit the cells in raster order: `step(context, row, col)` codes one cell's depth under that
        context (with `self.model(context)` or `self.row(context)`) and returns it, and the model then
        learns it. `depths` (lists of rows) must hold the depth of every earlier cell: the decoder's
        `step` fills it in as it goes."""
        context_of = self.context
        for r in range(rows):
            above_row = depths[r - 1] if r else None
            left = None
            for c in range(cols):
                context = context_of(left, above_row[c] if above_row is not None else None)
                left = step(context, r, c)
                self.update(context, left)


def plane_depths(plane: np.ndarray) -> np.ndarray:
    """Depth of every cell of a code plane (levels, rows, cols): its number of leading present codes.
    Raises ValueError unless every cell's present codes come first (then only ABSENT)."""
    present = plane >= 0
    depth = present.sum(0)
    if (plane < ABSENT).any() or not np.array_equal(present, np.arange(plane.shape[0])[:, None, None] < depth[None]):
        raise ValueError("codes must be present from the first level up to a cell's depth, then -1")
    return depth


MAX_TABLE_BYTES = 1 << 30  # a stored table larger than this is refused before it is inflated


def _stored_table(names: dict, index: int, rows: int, k: int, bad) -> np.ndarray:
    """Level `index`'s uint16 (rows, k) table, stored plain (`table`) or compressed (`table_z`)."""
    import torch

    plain, packed = names.get(f"prior.{index}.table"), names.get(f"prior.{index}.table_z")
    if plain is not None:
        if plain.dtype != torch.int16:
            raise bad(f"level {index} table is {str(plain.dtype)[6:]}, not int16")
        if tuple(plain.shape) != (rows, k):
            raise bad(f"level {index} table is misshapen: {tuple(plain.shape)} where its maps make ({rows}, {k})")
        return plain.numpy().view(np.uint16).copy()
    if packed is None or packed.dtype != torch.uint8 or packed.ndim != 1:
        raise bad(f"level {index} table missing")
    size = rows * k * 2
    if size > MAX_TABLE_BYTES:
        raise bad(f"level {index} table of {rows} x {k} entries is too large")
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(packed.numpy().tobytes(), size)
    except zlib.error as exc:
        raise bad(f"level {index} table does not decompress ({exc})") from None
    if len(data) != size or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:  # bytes after it too
        raise bad(f"level {index} table does not decompress to {rows} x {k} entries")
    planes = np.frombuffer(data, dtype=np.uint8).reshape(2, rows, k).astype(np.uint16)
    return planes[0] | (planes[1] << 8)


def _compressed_table(table: np.ndarray) -> bytes:
    """A uint16 table as stored in `prior.N.table_z`: its low bytes, then its high bytes, zlib level 9.
    Level 9 takes most of CodePrior.to_tensors at large K: on a 65 x 2^15 table of small, irregular
    values (smoothed rows average 2 of 2^16) it walks long hash chains, about 30 s a level."""
    planes = np.concatenate([(table & 0xFF).astype(np.uint8).ravel(), (table >> 8).astype(np.uint8).ravel()])
    return zlib.compress(planes.tobytes(), 9)


@dataclass
class LevelPrior:
    sources: tuple[str, ...]                    # in SOURCES order
    maps: dict[str, np.ndarray]                 # source -> int64 (K + 1,) class of each value; K: unavailable
    table: np.ndarray                           # uint16 (contexts, K)
    info: dict = field(default_factory=dict)    # fitting record, not part of the coding

    @property
    def sizes(self) -> list[int]:
        return [int(self.maps[s].max()) + 1 for s in self.sources]

    @property
    def sequential(self) -> bool:
        return any(s != "up" for s in self.sources)

    def multipliers(self) -> dict[str, int]:
        mult, out = 1, {}
        for source, size in reversed(list(zip(self.sources, self.sizes))):
            out[source] = mult
            mult *= size
        return out


def _neighbours(plane: np.ndarray, level: int, codebook_size: int) -> dict[str, np.ndarray]:
    """Known code values of each context source for every cell of `plane[level]` (R, C)."""
    k = codebook_size
    x = np.where(plane[level] < 0, k, plane[level])  # an absent code is unavailable context
    up = np.where(plane[level - 1] < 0, k, plane[level - 1]) if level > 0 else np.full_like(x, k)
    left = np.full_like(x, k)
    left[:, 1:] = x[:, :-1]
    above = np.full_like(x, k)
    above[1:] = x[:-1]
    return {"up": up, "left": left, "above": above}


def _contexts(level_prior: LevelPrior, neighbours: dict[str, np.ndarray], without: str | None = None) -> np.ndarray:
    """Context numbers of every cell; `without` leaves one source's term out (its part is added later)."""
    mult = level_prior.multipliers()
    ctx = np.zeros(next(iter(neighbours.values())).shape, dtype=np.int64)
    for source in level_prior.sources:
        if source != without:
            ctx += level_prior.maps[source][neighbours[source]] * mult[source]
    return ctx


# ---------------------------------------------------------------- the prior

class CodePrior:
    """Integer context tables over code indices for one model (every level), and their range coder."""

    def __init__(self, levels: list[LevelPrior], codebook_size: int, kind: str):
        self.levels = levels
        self.codebook_size = int(codebook_size)
        self.kind = kind
        self._models: list[dict[int, object]] = [dict() for _ in levels]
        self._depth_models: dict[tuple, object] = {}  # a depth context's counts -> their coder model
        self._log2: list[np.ndarray | None] = [None] * len(levels)
        self._bit_tables: dict = {}
        self._largest = [int(lp.table.max()) for lp in levels]  # each level's largest q (min_bits)
        self.prior_id = self._compute_id()

    def __getstate__(self) -> dict:
        """A copy (pickle, copy.deepcopy) without the cached coder models, which constriction cannot pickle."""
        return {**self.__dict__, "_models": [dict() for _ in self.levels], "_depth_models": {}}

    # ------------------------------------------------------------ storage

    def to_tensors(self, compress: bool = True) -> dict:
        """The prior as integer tensors for a model file. With `compress`, each table is stored as
        `prior.N.table_z`: its uint16 entries split into a plane of low bytes and then a plane of high
        bytes, zlib-compressed (a third to a half of the size); otherwise as `prior.N.table`, int16."""
        import torch

        tensors = self._plain_tensors()
        if compress:
            # zlib releases the GIL: the levels compress in parallel, to the same bytes
            with ThreadPoolExecutor() as pool:
                packed = list(pool.map(_compressed_table, (level.table for level in self.levels)))
            for index, table in enumerate(packed):
                del tensors[f"prior.{index}.table"]
                tensors[f"prior.{index}.table_z"] = torch.frombuffer(bytearray(table), dtype=torch.uint8)
        return tensors

    def _plain_tensors(self) -> dict:
        import torch

        tensors = {
            "prior.version": torch.tensor([PRIOR_VERSION, self.codebook_size, len(self.levels),
                                           1 if self.kind == "image" else 0], dtype=torch.int32),
        }
        for index, level in enumerate(self.levels):
            tensors[f"prior.{index}.table"] = torch.from_numpy(np.ascontiguousarray(level.table.view(np.int16)).copy())
            for source in level.sources:
                tensors[f"prior.{index}.map.{source}"] = torch.from_numpy(level.maps[source].astype(np.int16))
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict) -> "CodePrior | None":
        """The prior stored among a model's tensors, or None when the model has none."""
        import torch

        from .errors import VQCodecError

        names = {k: v for k, v in tensors.items() if k.startswith("prior.")}
        if not names:
            return None

        def bad(message):
            return VQCodecError(f"model prior is damaged: {message}")

        head = names.get("prior.version")
        if head is None or head.dtype != torch.int32 or head.numel() != 4:
            raise bad("no version record")
        version, k, count, image = (int(v) for v in head.tolist())
        if version != PRIOR_VERSION:
            raise VQCodecError(f"model prior version {version} is not supported (this vqcodec reads {PRIOR_VERSION})")
        if not 2 <= k <= MAX_CODEBOOK or not 1 <= count <= 256:
            raise bad("bad sizes")
        levels = []
        for index in range(count):
            sources, maps = [], {}
            for source in SOURCES:
                m = names.get(f"prior.{index}.map.{source}")
                if m is not None:
                    if m.dtype != torch.int16:
                        raise bad(f"level {index} map {source} is not int16")
                    m = m.numpy().astype(np.int64)
                    if m.shape != (k + 1,) or m.min() < 0:
                        raise bad(f"level {index} map {source} misshapen")
                    if source == "up" and index == 0:
                        raise bad("level 0 cannot use the coarser level")
                    sources.append(source)
                    maps[source] = m
            level = LevelPrior(tuple(sources), maps, table=None)
            table = level.table = _stored_table(names, index, math.prod(level.sizes), k, bad)
            if table.min() < 1 or (table.astype(np.int64).sum(1) != 1 << PRECISION).any():
                raise bad(f"level {index} probabilities do not sum to 2**{PRECISION}")
            levels.append(level)
        prior = cls(levels, k, "image" if image else "audio")
        used = {"prior.version"}
        for index, level in enumerate(levels):  # _stored_table reads the plain table where there are both
            used |= {f"prior.{index}.map.{source}" for source in level.sources}
            used.add(f"prior.{index}.table" if f"prior.{index}.table" in names else f"prior.{index}.table_z")
        unused = sorted(set(names) - used)
        if unused:  # as build_model refuses tensors the network does not use
            raise bad(f"it holds {unused[0]}, which it does not use"
                      + (f" ({plural(len(unused), 'tensor')} in all)" if len(unused) > 1 else ""))
        return prior

    def _compute_id(self) -> int:
        from .modelfile import little_endian_bytes

        digest = hashlib.sha256()  # over the plain tables, so the id does not depend on how they are stored
        for name, tensor in sorted(self._plain_tensors().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(little_endian_bytes(tensor))
        return int.from_bytes(digest.digest()[:4], "little")

    def describe(self) -> dict:
        """A JSON-friendly summary for the model's NAME.json."""
        return {
            "id": self.prior_id,
            "kind": KIND_NAME,
            "precision_bits": PRECISION,
            "coder": "constriction RangeEncoder, Categorical(perfect=False)",
            "contexts": [{"level": i, "sources": list(level.sources), "classes": level.sizes,
                          "table_rows": int(level.table.shape[0]), **level.info}
                         for i, level in enumerate(self.levels)],
        }

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def check_shape(self, quality: int, codebook_size: int) -> None:
        from .errors import VQCodecError

        if codebook_size != self.codebook_size or quality > self.num_levels:
            raise VQCodecError(f"the model's prior covers {plural(self.num_levels, 'codebook')} of "
                               f"{self.codebook_size}, not {quality} of {codebook_size}")

    # ------------------------------------------------------------ probabilities

    def _model(self, level: int, context: int):
        cache = self._models[level]
        model = cache.get(context)
        if model is None:
            _require_constriction()
            model = constriction.stream.model.Categorical(coder_weights(self.levels[level].table[context]),
                                                          perfect=False)
            cache[context] = model
        return model

    def bit_table(self, level: int, device="cpu"):
        """-log2 p of every (context, value) of a level as a float32 torch tensor, cached per device
        (read-only: the encoder's rate term, prior.RateCosts)."""
        import torch

        key = (level, str(device))
        if key not in self._bit_tables:
            self._bit_tables[key] = torch.from_numpy(self._level_log2(level)).to(device=device, dtype=torch.float32)
        return self._bit_tables[key]

    def _level_log2(self, level: int) -> np.ndarray:
        if self._log2[level] is None:
            self._log2[level] = PRECISION - np.log2(self.levels[level].table.astype(np.float64))
        return self._log2[level]

    # ------------------------------------------------------------ planes

    def _planes(self, codes: np.ndarray) -> list[np.ndarray]:
        """Chunk codes -> planes (levels, rows, cols): audio (channels, q, frames), image (q, rows, cols)."""
        return list(self._each_plane(codes))

    def _each_plane(self, codes: np.ndarray) -> Iterator[np.ndarray]:
        """_planes one at a time, each made int64 as it comes: a chunk may hold 2^20 frames of 64 channels."""
        codes = np.asarray(codes)
        if codes.ndim != 3:
            raise ValueError("chunk codes must be 3-D")
        if self.kind == "audio":
            yield from (np.asarray(channel, dtype=np.int64)[:, None, :] for channel in codes)
        else:
            yield np.asarray(codes, dtype=np.int64)

    def code_bits(self, plane: np.ndarray) -> np.ndarray:
        """-log2 p of every code of a plane (levels, rows, cols), with the plane's own codes as context;
        0 where a code is absent."""
        plane = np.asarray(plane, dtype=np.int64)
        bits = np.zeros(plane.shape)
        for level in range(plane.shape[0]):
            ctx = _contexts(self.levels[level], _neighbours(plane, level, self.codebook_size))
            present = plane[level] >= 0
            bits[level][present] = self._level_log2(level)[ctx[present], plane[level][present]]
        return bits

    def ideal_bits(self, codes: np.ndarray) -> np.ndarray:
        """Ideal code length, sum of -log2 p, of one chunk's codes: float64 bits per level (absent codes
        cost nothing here; their depth maps are counted by depth_bits)."""
        bits = None
        for plane in self._each_plane(codes):
            level_bits = self.code_bits(plane).reshape(plane.shape[0], -1).sum(1)
            bits = level_bits if bits is None else bits + level_bits
        return np.zeros(0) if bits is None else bits

    def depth_bits(self, codes: np.ndarray) -> float:
        """Ideal code length of one chunk's depth maps under DepthModel (CODING_PRIOR_DEPTH)."""
        total = 0.0
        for plane in self._each_plane(codes):
            rows = plane_depths(plane).tolist()
            model = DepthModel(plane.shape[0])

            def step(context, r, c):
                nonlocal total
                total += PRECISION - math.log2(model.row(context)[rows[r][c]])
                return rows[r][c]

            model.code(plane.shape[1], plane.shape[2], rows, step)
        return total

    # ------------------------------------------------------------ coding

    def encode_chunk(self, codes: np.ndarray, depths: bool = False) -> bytes:
        """Range-code one chunk's codes (shape as in _planes) into a payload. With `depths`
        (CODING_PRIOR_DEPTH) codes may be ABSENT beyond each cell's depth, and the depth maps are coded too."""
        _require_constriction()
        planes = self._planes(codes)
        quality = planes[0].shape[0] if planes else 0
        self.check_shape(quality, self.codebook_size)
        for plane in planes:
            if plane.size and (plane.min() < (ABSENT if depths else 0) or plane.max() >= self.codebook_size):
                raise ValueError("code index out of range")
        encoder = constriction.stream.queue.RangeEncoder()
        for plane in planes:
            if depths:
                self._encode_depths(encoder, plane_depths(plane), quality)
            for level in range(quality):
                lp = self.levels[level]
                x = plane[level].ravel()
                ctx = _contexts(lp, _neighbours(plane, level, self.codebook_size)).ravel()
                if depths:
                    present = x >= 0
                    x, ctx = x[present], ctx[present]
                if lp.sequential:
                    models = {c: self._model(level, c) for c in np.unique(ctx).tolist()}
                    for symbol, c in zip(x.tolist(), ctx.tolist()):
                        encoder.encode(symbol, models[c])
                else:
                    order = np.argsort(ctx, kind="stable")
                    counts = np.bincount(ctx, minlength=lp.table.shape[0])
                    start = 0
                    for c in np.flatnonzero(counts).tolist():
                        end = start + int(counts[c])
                        encoder.encode(x[order[start:end]].astype(np.int32), self._model(level, c))
                        start = end
        words = encoder.get_compressed()
        return np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()

    @staticmethod
    def _encode_depths(encoder, depth: np.ndarray, quality: int) -> None:
        """The depth map in one call to the coder, with each cell's row of the adaptive model as it
        stood at that cell: the same probabilities, and so the same bytes, as coding the cells one
        by one (constriction's Categorical without `perfect` is the same model however it is built)."""
        rows, model, weights = depth.tolist(), DepthModel(quality), []

        def step(context, r, c):
            weights.append(model.row(context))
            return rows[r][c]

        model.code(depth.shape[0], depth.shape[1], rows, step)
        if weights:
            encoder.encode(depth.reshape(-1).astype(np.int32), constriction.stream.model.Categorical(perfect=False),
                           coder_weights(np.array(weights)))

    @staticmethod
    def _decode_depths(decoder, rows: int, cols: int, quality: int, models: dict | None = None,
                       bits: list[float] | None = None) -> np.ndarray:
        """The depth map that _encode_depths coded: DepthModel's contexts, counts and rows, in one loop.
        The model adapts after every cell, so the cells cannot be decoded in one call; each cell's
        weights, coder_weights(counts_to_row(counts)), are computed in one pass over the counts, from
        the counts' total and first largest (kept as the counts change) instead of recomputed. The
        coder's model of each counts met is kept in `models` (by default for this call alone): a run of
        one depth cycles through the same few hundred counts, and building a model took most of a cell's
        time (decoding a run is about three times as fast). With `bits` ([a float]), the ideal bits of the
        depths decoded are added to bits[0], cell by cell, as depth_bits adds them."""
        n = quality + 1
        budget = (1 << PRECISION) - n                 # counts_to_row: q = 1 + count * budget // total
        shift = CODER_PRECISION - PRECISION
        low = (1 << shift) - 1                        # coder_weights: (q << shift) - 1 = (floor << shift) + low
        spare = low * n
        increment, limit = DEPTH_INCREMENT, DEPTH_COUNT_LIMIT
        categorical, decode, array, float64 = (constriction.stream.model.Categorical, decoder.decode, np.array,
                                               np.float64)
        states: dict[int, list] = {}                  # context -> [counts, their total, index of the first largest]
        models = {} if models is None else models
        cost, log2 = (bits[0] if bits is not None else 0.0), math.log2
        remainders: dict[tuple, int] = {}             # counts -> what counts_to_row adds to the first largest
        depth, above = [], None
        for _ in range(rows):
            row, left = [0] * cols, None
            for c in range(cols):
                up = above[c] if above is not None else None
                if left is None:
                    context = quality if up is None else up
                else:
                    context = left if up is None else (left + up + 1) // 2
                state = states.get(context)
                if state is None:
                    state = states[context] = [[1] * n, n, 0]
                counts, total, top = state
                key = tuple(counts)
                model = models.get(key)
                if model is None:
                    weights = [((count * budget // total) << shift) + low for count in counts]
                    # the remainder, as counts_to_row
                    weights[top] += (budget - ((sum(weights) - spare) >> shift)) << shift
                    if len(models) >= DEPTH_MODELS_KEPT:
                        models.clear()
                    model = models[key] = categorical(array(weights, float64), perfect=False)
                value = int(decode(model))
                if bits is not None:  # the row's q of the depth, as counts_to_row has it
                    q = 1 + counts[value] * budget // total
                    if value == top:
                        remainder = remainders.get(key)
                        if remainder is None:
                            if len(remainders) >= DEPTH_MODELS_KEPT:
                                remainders.clear()
                            remainder = remainders[key] = budget - sum(count * budget // total for count in counts)
                        q += remainder
                    cost += PRECISION - log2(q)
                counts[value] += increment
                total += increment
                if total > limit:
                    counts[:] = [(count + 1) // 2 for count in counts]
                    total = sum(counts)
                    top = counts.index(max(counts))
                elif counts[value] > counts[top] or (counts[value] == counts[top] and value < top):
                    top = value
                state[1], state[2] = total, top
                row[c] = left = value
            depth.append(row)
            above = row
        if bits is not None:
            bits[0] = cost
        return np.asarray(depth, dtype=np.int64).reshape(rows, cols)

    def decode_chunk(self, payload: bytes, shape: tuple[int, int, int], depths: bool = False,
                     dtype=np.int64, depth_bits: list[float] | None = None) -> np.ndarray:
        """Payload -> codes of `shape` (as in _planes) as `dtype`, ABSENT beyond each cell's depth when the
        payload has depth maps (`depths`, CODING_PRIOR_DEPTH). Corrupt input raises FormatError. Each
        plane is decoded as int64 and copied into the result, so the chunk is not held twice as int64
        (a chunk may hold 2^20 frames of 64 channels). With `depth_bits` ([a float]), the ideal bits of
        the depth maps decoded are added to depth_bits[0]: depth_bits(codes), without a pass of its own."""
        _require_constriction()
        shape = tuple(int(s) for s in shape)
        if self.kind == "audio":
            channels, quality, frames = shape
            plane_shapes = [(quality, 1, frames)] * channels
        else:
            quality, rows, cols = shape
            plane_shapes = [(quality, rows, cols)]
        self.check_shape(quality, self.codebook_size)
        if len(payload) % 4:
            raise FormatError("corrupted chunk: entropy-coded payload is not a whole number of words")
        cells = sum(rows * cols for _, rows, cols in plane_shapes)
        word_count = len(payload) // 4
        # an encoder writes at least one word for any code or depth, so no payload is empty (a peaked prior's
        # min_bits alone lets an empty one through)
        if cells and (not word_count
                      or 2 * (32 * word_count + 32) < self.min_bits(quality, cells, depths, len(plane_shapes))):
            raise FormatError(f"corrupted chunk: entropy-coded payload of {plural(len(payload), 'byte')} is too short "
                              f"for its {plural(cells * quality, 'code')}")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        codes = np.empty(shape, dtype=dtype)
        try:
            decoder = constriction.stream.queue.RangeDecoder(words)
            for index, plane_shape in enumerate(plane_shapes):
                plane = self._decode_plane(decoder, plane_shape, depths, depth_bits)
                if self.kind == "audio":
                    codes[index] = plane[:, 0, :]
                else:
                    codes[...] = plane
        except FormatError:
            raise
        except (AssertionError, ValueError) as exc:  # constriction's refusal of data its models cannot have coded
            raise FormatError(f"corrupted chunk: entropy decoding failed ({exc})") from None
        if not decoder.maybe_exhausted():
            raise FormatError("corrupted chunk: entropy-coded payload has data left over")
        return codes

    def min_bits(self, quality: int, cells: int, depths: bool = False, planes: int = 0) -> float:
        """A lower bound on the size in bits of any payload of `cells` cells (audio frames of a
        channel, image latent cells) at `quality` levels, in `planes` planes: each code, or with `depths`
        each cell's depth (a cell may have no code), costs at least -log2 of the largest probability its
        model can give. Every q of a row is >= 1; a depth row's counts each are >= 1 and sum to at most
        DEPTH_COUNT_LIMIT, so its other depths have q >= 1 + (2**16 - Q - 1) // DEPTH_COUNT_LIMIT; and
        the first depth of each plane is coded with the row of a new context, every count 1 (about
        log2(Q + 1) bits). The + 1 covers constriction's rounding to 24 bits. decode_chunk refuses a
        payload that far too short, which no encoder writes, before it decodes (and allocates) the codes."""
        one = 1 << PRECISION

        def bits(q: int) -> float:
            return -math.log2(min(one, q + 1) / one)

        if depths:
            others = 1 + (one - quality - 1) // DEPTH_COUNT_LIMIT
            first = max(counts_to_row([1] * (quality + 1)))
            planes = min(planes, cells)
            return (cells - planes) * bits(one - quality * others) + planes * bits(first)
        return cells * sum(bits(q) for q in self._largest[:quality])

    def _decode_plane(self, decoder, shape: tuple[int, int, int], depths: bool = False,
                      depth_bits: list[float] | None = None) -> np.ndarray:
        quality, rows, cols = shape
        k = self.codebook_size
        plane = np.zeros(shape, dtype=np.int64)
        depth = self._decode_depths(decoder, rows, cols, quality, self._depth_models, depth_bits) if depths else None
        for level in range(quality):
            lp = self.levels[level]
            present = (depth > level).ravel() if depth is not None else None
            if not lp.sequential:
                ctx = _contexts(lp, _neighbours(plane, level, k)).ravel()
                cells = np.flatnonzero(present) if present is not None else np.arange(ctx.size)
                ctx = ctx[cells]
                counts = np.bincount(ctx, minlength=lp.table.shape[0])
                order = np.argsort(ctx, kind="stable")
                values = np.empty(ctx.size, dtype=np.int64)
                start = 0
                for c in np.flatnonzero(counts).tolist():
                    end = start + int(counts[c])
                    values[start:end] = decoder.decode(self._model(level, c), end - start)
                    start = end
                flat = np.full(rows * cols, ABSENT, dtype=np.int64)
                flat[cells[order]] = values
                plane[level] = flat.reshape(rows, cols)
                continue
            mult = lp.multipliers()
            base = np.zeros((rows, cols), dtype=np.int64)
            if "up" in lp.sources:
                base = lp.maps["up"][plane[level - 1]] * mult["up"]
            base = base.tolist()
            left_map = (lp.maps["left"] * mult["left"]).tolist() if "left" in lp.sources else [0] * (k + 1)
            above_map = (lp.maps["above"] * mult["above"]).tolist() if "above" in lp.sources else [0] * (k + 1)
            coded = (depth > level).tolist() if depth is not None else [[True] * cols] * rows
            cache = self._models[level]
            previous = [k] * cols
            out = []
            for r in range(rows):
                row_base, row_coded = base[r], coded[r]
                row = []
                left = k
                for c in range(cols):
                    if not row_coded[c]:
                        left = k  # absent: unavailable as context
                        row.append(k)
                        continue
                    context = row_base[c] + left_map[left] + above_map[previous[c]]
                    model = cache.get(context)
                    if model is None:
                        model = self._model(level, context)
                    left = int(decoder.decode(model))
                    row.append(left)
                out.append(row)
                previous = row
            values = np.asarray(out, dtype=np.int64).reshape(rows, cols)
            plane[level] = np.where(values == k, ABSENT, values)
        return plane

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, planes: list[np.ndarray], codebook_size: int, kind: str, chunk: int,
            log=None, groups: list[int] | None = None) -> "CodePrior":
        """Fit a prior to code planes: audio (levels, frames) per channel, images (levels, rows, cols).

        `chunk` is the container's chunk length (frames for audio, latent rows for images): the
        same-level context restarts there. Context sources, class counts and smoothing are chosen
        per level by the ideal code length on every HOLDOUT_EVERY-th group of planes, then refitted
        on all. `groups` gives each plane's group (its source file, so that the channels or extra
        views of one file are held out together); by default each plane is its own group.
        """
        k = int(codebook_size)
        check_codebook_size(k)
        groups = list(range(len(planes))) if groups is None else list(groups)
        if len(groups) != len(planes):
            raise ValueError("one group per plane")
        planes = _as_planes(planes)
        groups = [g for g, p in zip(groups, planes) if p.size]
        planes = [p for p in planes if p.size]
        if not planes:
            from .errors import VQCodecError
            raise VQCodecError("no codes to fit a prior to")
        num_levels = min(p.shape[0] for p in planes)
        held = holdout_mask(groups, HOLDOUT_EVERY)
        by_segment = held is None  # too few files to hold some out: hold out chunks instead
        if kind == "audio":
            candidates = [(), ("left",)], [(), ("up",), ("left",), ("up", "left")]
        else:
            candidates = [(), ("left",), ("above",), ("left", "above")], [(), ("up",), ("up", "left"), ("up", "above")]
        levels = []
        for level in range(num_levels):
            data = _level_data(planes, level, k, chunk, kind)
            options = candidates[0] if level == 0 else candidates[1]
            record = {}
            mask = _segment_mask(data["segment"], HOLDOUT_EVERY) if by_segment else held[data["plane"]]
            if mask is not None:
                train = {n: v[~mask] for n, v in data.items()}
                test = {n: v[mask] for n, v in data.items()}
                scored = []
                for sources in options:
                    bits, beta, single_classes = _choose_classes(train, test, sources, k)
                    record[_option_name(sources, single_classes)] = round(bits, 4)
                    scored.append((bits, sources, beta, single_classes))
                # symbol-by-symbol coding (same-level neighbours) is slower: it must pay for itself
                batched = min((s for s in scored if "left" not in s[1] and "above" not in s[1]), key=lambda s: s[0])
                best = min(scored, key=lambda s: s[0])
                if best[0] > batched[0] * (1 - SEQUENTIAL_MIN_GAIN):
                    best = batched
                _, sources, beta, single_classes = best
                chosen = _option_name(sources, single_classes)
            else:
                sources, beta, single_classes = options[0], None, SINGLE_CLASSES[0]
            fitted, _ = _fit_level(data, sources, k, None, beta, single_classes=single_classes)
            fitted.info = {"heldout_bits": record, "chosen": chosen} if record else {}
            if log and record:  # with none held out, the summary's line says so (priorfit.prior_summary)
                log(f"level {level}: {'+'.join(sources) or 'unigram'} "
                    + " ".join(f"{n} {b:.3f}" for n, b in record.items()))
            levels.append(fitted)
        return cls(levels, k, kind)

    def with_network_tables(self, planes: list[np.ndarray], groups: list[int], codebooks: list[np.ndarray],
                            chunk: int, log=None) -> "CodePrior":
        """This prior, with some levels' tables replaced by network-fitted ones (vqcodec/netprior.py:
        one row per value of a single context source, from a network over codebook vectors) where
        that codes the held-out planes in NETWORK_MIN_GAIN (a fraction) fewer bits than the level's count
        table did. Tried: every source of level 0's context (its own earlier neighbours, whose vectors
        predict it best), and the source of every other level whose context has a single source.
        `planes` and `groups` as for fit(); `codebooks` (K, D) for every level. Codebooks larger than
        NETWORK_MAX_CODEBOOK keep their count tables (a table of K + 1 rows would be too large)."""
        from . import netprior

        k = self.codebook_size
        held = holdout_mask(groups, HOLDOUT_EVERY)
        if held is None or k > NETWORK_MAX_CODEBOOK:
            return self
        planes = _as_planes(planes)
        levels = []
        for index, level in enumerate(self.levels):
            table_bits = level.info.get("heldout_bits", {}).get(level.info.get("chosen", ""))
            candidates = level.sources if index == 0 or len(level.sources) == 1 else ()
            if table_bits is None or not candidates:
                levels.append(level)
                continue
            data = _level_data(planes, index, k, chunk, self.kind)
            mask = held[data["plane"]]
            best = None
            for source in candidates:
                pairs = data[source] * k + data["x"]
                counts = [np.bincount(pairs[m], minlength=(k + 1) * k).reshape(k + 1, k).astype(np.float64)
                          for m in (~mask, mask)]
                rows, bits, record = netprior.fit_rows(codebooks[index - 1 if source == "up" else index], *counts,
                                                       log=log)
                if log:
                    log(f"level {index}: network-fitted {source} table {bits:.3f} bits per held-out code against "
                        f"{table_bits:.3f} ({level.info['chosen']} counts)")
                if best is None or bits < best[0]:
                    best = (bits, source, rows, record)
            bits, source, rows, record = best
            if bits < table_bits * (1 - NETWORK_MIN_GAIN):
                if log:
                    log(f"level {index}: kept the network-fitted {source} table")
                info = {**level.info, "chosen": f"{source}/network",
                        "network": {**record, "heldout_bits": round(bits, 4)}}
                level = LevelPrior((source,), {source: np.arange(k + 1, dtype=np.int64)}, quantize_rows(rows), info)
            levels.append(level)
        return CodePrior(levels, k, self.kind)


class RateCosts:
    """The rate term of rate-distortion-optimised quantisation: `weight` times the prior's code length,
    in bits, of every value of a level at every cell (quantize.ResidualVQ.encode's `bit_costs`).

    The coarser level's code (source `up`) comes from the search itself; same-level neighbours
    (`left`, `above`) come from `estimate`, codes chosen without the rate term, since the final ones
    are not known yet. Only the encoder uses this: it changes which codes are chosen, never how they
    are coded, so files stay exact whatever the estimate was.
    """

    def __init__(self, prior: CodePrior, estimate: np.ndarray, inner: tuple[slice, ...], weight: float,
                 levels: int, device="cpu"):
        """estimate: (levels estimated, batch, *cells) codes of a window of cells, as
        ResidualVQ.encode_cells returns them (cells: frames, or rows and columns), for at least
        every level of the `levels` that uses a same-level neighbour; inner: slices of the cells searched."""
        import torch

        k = prior.codebook_size
        estimate = np.asarray(estimate, dtype=np.int64)
        self.levels = []
        for level in range(levels):
            lp = prior.levels[level]
            mult = lp.multipliers()
            if lp.sequential:
                if level >= estimate.shape[0]:
                    raise ValueError(f"level {level} needs estimated neighbours")
                parts = []
                for item in range(estimate.shape[1]):
                    plane = estimate[:, item]
                    plane = plane[:, None, :] if plane.ndim == 2 else plane
                    context = _contexts(lp, _neighbours(plane, level, k), without="up")
                    parts.append((context[:, inner[0]] if len(inner) == 1 else context[inner]).ravel())
                base = torch.from_numpy(np.concatenate(parts)).to(device)
            else:
                base = None
            up = torch.from_numpy(lp.maps["up"] * mult["up"]).to(device) if "up" in lp.sources else None
            self.levels.append((base, up, prior.bit_table(level, device)))
        if weight != 1:
            self.scale(weight)

    def bits(self, level: int, coarser, codes):
        """The weighted bits of `codes` (N,) at level `level`, given the coarser level's codes (N,) or None."""
        table = self(level, slice(0, codes.shape[0]), None if coarser is None else coarser[:, None])
        return table[:, 0].gather(1, codes[:, None])[:, 0]

    def scale(self, factor: float) -> None:
        """Multiply the weight by `factor`."""
        self.levels = [(base, up, table * factor) for base, up, table in self.levels]

    def __call__(self, level: int, rows: slice, coarser):
        import torch

        base, up, table = self.levels[level]
        if up is not None:
            context = up[coarser] if base is None else base[rows, None] + up[coarser]
        else:
            context = base[rows, None] if base is not None else torch.zeros((rows.stop - rows.start, 1),
                                                                              dtype=torch.int64, device=table.device)
        return table[context]


def _segment_mask(segments: np.ndarray, every: int) -> np.ndarray | None:
    """Which codes CodePrior.fit holds out when there are too few files for holdout_mask: those of every
    `every`-th segment (a container chunk of one plane); None when there are fewer than 2 * `every`."""
    count = int(segments.max()) + 1 if segments.size else 0
    return None if count < 2 * every else segments % every == every - 1


def holdout_mask(groups: list[int], every: int) -> np.ndarray | None:
    """Which planes CodePrior.fit holds out: those of every `every`-th group, counted in order of first
    appearance; None when there are fewer than 2 * `every` groups."""
    rank = {group: index for index, group in enumerate(dict.fromkeys(groups))}
    if len(rank) < 2 * every:
        return None
    return np.array([rank[group] % every == every - 1 for group in groups])


def _as_planes(planes: list[np.ndarray]) -> list[np.ndarray]:
    """Fitting input as int64 planes (levels, rows, cols): audio (levels, frames) gets one row."""
    planes = [np.asarray(p, dtype=np.int64) for p in planes]
    return [p[:, None, :] if p.ndim == 2 else p for p in planes]


def _level_data(planes: list[np.ndarray], level: int, k: int, chunk: int, kind: str) -> dict[str, np.ndarray]:
    """Flat arrays of (value, source values, plane index, segment index) for one level of every plane;
    a segment is one container chunk of one plane, numbered across planes."""
    parts = {n: [] for n in ("x", "up", "left", "above", "plane", "segment")}
    segments = 0
    for index, plane in enumerate(planes):
        n = _neighbours(plane, level, k)
        rows, cols = plane[level].shape
        if kind == "audio":
            n["left"][:, ::chunk] = k
            segment = np.broadcast_to(np.arange(cols) // chunk, (rows, cols))
        else:
            n["above"][::chunk] = k
            segment = np.broadcast_to(np.arange(rows)[:, None] // chunk, (rows, cols))
        parts["segment"].append(segments + segment.ravel())
        segments += int(segment.max()) + 1 if segment.size else 0
        parts["x"].append(plane[level].ravel())
        for source in SOURCES:
            parts[source].append(n[source].ravel())
        parts["plane"].append(np.full(plane[level].size, index))
    return {n: np.concatenate(v) for n, v in parts.items()}


def _pair_counts(rows: np.ndarray, columns: np.ndarray, num_rows: int, num_columns: int) -> np.ndarray:
    """A num_rows x num_columns table of float counts: how often each (row, column) pair occurs."""
    return _float_counts(rows * num_columns + columns, num_rows * num_columns).reshape(num_rows, num_columns)


def _float_counts(index: np.ndarray, size: int) -> np.ndarray:
    """np.bincount(index, minlength=size) as float64, counted in float64 (exact: whole numbers below 2**53)
    rather than copied from an int64 array as large."""
    return np.bincount(index, weights=np.ones(index.size), minlength=size)


def _cluster(values: np.ndarray, targets: np.ndarray, k: int, classes: int, iterations: int = 12) -> np.ndarray:
    """Map each source value 0..k-1 to one of `classes` classes with similar target distributions
    (hard EM on a mixture of multinomials); value k (unavailable) gets its own class `classes`."""
    available = values < k
    values, targets = values[available], targets[available]
    totals = np.bincount(values, minlength=k).astype(np.float64)
    seen = np.flatnonzero(totals)
    # Pair counts of the values and codes that occur only: the rest add nothing to any class's
    # likelihood, and a K x K table would not fit for large K.
    row_of_value = np.zeros(k, dtype=np.int64)
    row_of_value[seen] = np.arange(seen.size)
    codes, column = np.unique(targets, return_inverse=True)
    counts = _PairCounts(row_of_value[values], column, seen.size, codes.size)
    unigram = (np.bincount(column, minlength=codes.size).astype(np.float64) + 0.5) / (values.size + 0.5 * k)
    mapping = np.zeros(k + 1, dtype=np.int64)
    mapping[k] = classes
    if seen.size == 0:
        return mapping
    first = np.argsort(-totals[seen], kind="stable")[:classes]
    seeds = seen[first]
    q = (counts.rows(first) + unigram) / (totals[seeds, None] + 1.0)
    assign = np.zeros(k, dtype=np.int64)
    for _ in range(iterations):
        new = counts.times(np.log(q).T).argmax(1)
        if _ > 0 and np.array_equal(new, assign[seen]):
            break
        assign[seen] = new
        sums = _pair_counts(assign[values], column, q.shape[0], codes.size)
        q = (sums + unigram) / (sums.sum(1, keepdims=True) + 1.0)
    # unseen values go to the class of the most common value
    assign[totals == 0] = assign[seeds[0]]
    # renumber the classes in use densely
    used = np.unique(assign)
    mapping[:k] = np.searchsorted(used, assign)
    mapping[k] = used.size
    return mapping


class _PairCounts:
    """The num_rows x num_columns table of pair counts _pair_counts makes, kept as its nonzero entries
    (the table of a codebook of 2**15 can hold hundreds of MB of zeros) and expanded into float64
    about QUANTIZE_BLOCK entries at a time for a product.

    A product of blocks of rows has the bytes of the product of the whole table only where every row
    is computed by the same BLAS kernel: OpenBLAS's gemm computes the rows in groups (4 to 16 of them
    on x86) and the last few rows of a matrix with a smaller kernel that rounds differently, and NumPy
    computes a single row with gemv. Each block therefore starts at a multiple of PAIR_ROWS_ALIGN
    rows and the last one takes the rest, so the whole table's last rows are the last block's."""

    def __init__(self, rows: np.ndarray, columns: np.ndarray, num_rows: int, num_columns: int):
        self.keys, self.counts = np.unique(rows * num_columns + columns, return_counts=True)
        self.shape = (num_rows, num_columns)
        step = max(1, QUANTIZE_BLOCK // max(1, num_columns) // PAIR_ROWS_ALIGN) * PAIR_ROWS_ALIGN
        starts = list(range(0, num_rows - PAIR_ROWS_ALIGN, step)) or [0]
        self.blocks = list(zip(starts, starts[1:] + [num_rows]))

    def _dense(self, start: int, stop: int) -> np.ndarray:
        width = self.shape[1]
        lo, hi = np.searchsorted(self.keys, [start * width, stop * width])
        block = np.zeros((stop - start) * width)
        block[self.keys[lo:hi] - start * width] = self.counts[lo:hi]
        return block.reshape(stop - start, width)

    def rows(self, which: np.ndarray) -> np.ndarray:
        return np.concatenate([self._dense(row, row + 1) for row in which.tolist()])

    def times(self, matrix: np.ndarray) -> np.ndarray:
        """The table @ matrix, as float64."""
        return np.concatenate([self._dense(start, stop) @ matrix for start, stop in self.blocks])


def _option_name(sources: tuple[str, ...], single_classes: int) -> str:
    """A level's context option as a prior's info names it: its sources, and a class count not the default."""
    name = "+".join(sources) or "unigram"
    return f"{name}/{single_classes}" if single_classes != SINGLE_CLASSES[0] else name


def _choose_classes(train: dict, test: dict, sources: tuple[str, ...], k: int) -> tuple[float, tuple, int]:
    """Held-out bits per code, smoothing and class count of a level fitted with `sources`; a lone
    source tries every SINGLE_CLASSES count, and a larger one wins only by LARGER_TABLE_MIN_GAIN."""
    best = None
    for classes in SINGLE_CLASSES if len(sources) == 1 else SINGLE_CLASSES[:1]:
        fitted, beta = _fit_level(train, sources, k, test, single_classes=classes)
        bits = fitted.info["heldout_bits_per_code"]
        if best is None or bits < best[0] * (1 - LARGER_TABLE_MIN_GAIN):
            best = (bits, beta, classes)
    return best


def _unigram_bits(counts: np.ndarray, alpha: float, test: np.ndarray) -> float:
    """Bits per code of `test` under the unigram of `counts` with `alpha` added to every value."""
    if not test.size:
        return 0.0
    return float(-np.log2((counts[test] + alpha) / (counts.sum() + alpha * counts.size)).mean())


def _fit_level(data: dict, sources: tuple[str, ...], k: int, test: dict | None, beta=None,
               single_classes: int = SINGLE_CLASSES[0]):
    """Fit one level's tables with the given sources; returns (LevelPrior, chosen smoothing: the
    unigram's pseudo-count, then each context stage's weight on its parent). With `test` (held-out
    codes) the smoothing is chosen on them, and the level only records their bits per code in its
    info: its table is None (the rows of the held-out codes' contexts alone were quantised)."""
    x = data["x"]
    value_counts = np.bincount(x, minlength=k)
    if beta is not None:
        alpha, stage_betas = beta[0], tuple(beta[1:])
    elif test is None:
        alpha, stage_betas = DEFAULT_ALPHA, (DEFAULT_BETA,) * len(sources)
    else:  # chosen on the held-out codes: the unigram's here, the stages' once their counts are in
        alpha, stage_betas = min(UNIGRAM_ALPHAS, key=lambda a: _unigram_bits(value_counts, a, test["x"])), None
    unigram = (value_counts + alpha) / (x.size + alpha * k)
    maps = {}
    for source in sources:
        joint = JOINT_CLASSES if "up" in sources else JOINT_CLASSES_WITHOUT_UP
        classes = single_classes if len(sources) == 1 else joint[source]
        maps[source] = _cluster(data[source], x, k, classes)
    sizes = [int(maps[s].max()) + 1 for s in sources]

    def context(d, upto):
        ctx = np.zeros(d["x"].size, dtype=np.int64)
        for source, size in zip(sources[:upto], sizes[:upto]):
            ctx = ctx * size + maps[source][d[source]]
        return ctx

    # Hierarchical smoothing: the first source alone backs off to the unigram, both sources back off
    # to the first. Stage s's probabilities are (counts + b * parent) / (row total + b), its parent
    # the unigram or the row of stage s - 1 that the context extends. A stage's counts are kept as
    # the sorted keys context * k + value, not a dense (contexts, k) table: the smoothing is chosen
    # on the held-out codes' entries alone, and the table is computed and quantised a block of rows
    # at a time. Every entry is the same float expression of the same numbers as in dense form (row
    # totals are sums of whole numbers, exact in any order), so the table has the same bytes.
    stages = []
    for upto in range(1, len(sources) + 1):
        n_ctx = int(np.prod(sizes[:upto]))
        ctx = context(data, upto)
        stages.append((n_ctx, np.sort(ctx * k + x), _float_counts(ctx, n_ctx)))

    def counts_at(keys, where):
        return (np.searchsorted(keys, where, side="right")
                - np.searchsorted(keys, where, side="left")).astype(np.float64)

    def probabilities_at(betas, contexts, values):
        """The probability of `values` in `contexts` (one array per stage), as probability_rows has them."""
        p = unigram[values]
        for (n_ctx, keys, totals), b, ctx in zip(stages, betas, contexts):
            p = (counts_at(keys, ctx * k + values) + b * p) / (totals[ctx] + b)
        return p

    def probability_rows(betas, stage, start, stop):
        """Rows start..stop - 1 of stage `stage`'s (contexts, k) probabilities."""
        if stage < 0:
            return unigram[None, :]
        n_ctx, keys, totals = stages[stage]
        if stage == 0:
            parent = unigram[None, :]
        else:
            size = sizes[stage]
            first, last = start // size, (stop - 1) // size + 1
            parent = np.repeat(probability_rows(betas, stage - 1, first, last), size, axis=0)
            parent = parent[start - first * size:stop - first * size]
        lo, hi = np.searchsorted(keys, [start * k, stop * k])
        counts = _float_counts(keys[lo:hi] - start * k, (stop - start) * k).reshape(stop - start, k)
        return (counts + betas[stage] * parent) / (totals[start:stop, None] + betas[stage])

    if stage_betas is None:
        stage_betas = ()
        contexts = [context(test, upto) for upto in range(1, len(stages) + 1)]
        for stage in range(len(stages)):
            best = None
            for b in BETAS:
                p = probabilities_at(stage_betas + (b,), contexts[:stage + 1], test["x"])
                bits = -np.log2(p).mean() if test["x"].size else 0.0
                if best is None or bits < best[0]:
                    best = (bits, b)
            stage_betas = stage_betas + (best[1],)
    if test is not None:
        # only the held-out codes' bits are wanted (_choose_classes): the rows of their contexts
        ctx_test = context(test, len(sources))
        rows, where = np.unique(ctx_test, return_inverse=True)
        rows = rows.tolist() if sources else rows[:1].tolist()  # no sources: the one context, the unigram

        def needed(row):
            return probability_rows(stage_betas, len(stages) - 1, row, row + 1) if sources else unigram[None, :]

        step = max(1, QUANTIZE_BLOCK // k)  # rows computed and quantised at once, not all of them
        table = np.concatenate([quantize_rows(np.concatenate([needed(r) for r in rows[i:i + step]]))
                                for i in range(0, len(rows), step)]) if rows else np.zeros((0, k), dtype=np.uint16)
        level = LevelPrior(tuple(sources), maps, None)  # no table: held-out bits only
        log2 = PRECISION - np.log2(table[where, test["x"]].astype(np.float64))
        level.info["heldout_bits_per_code"] = float(log2.mean()) if test["x"].size else 0.0
        return level, (alpha,) + stage_betas
    if sources:
        n_ctx = stages[-1][0]
        table = np.empty((n_ctx, k), dtype=np.uint16)
        step = max(1, QUANTIZE_BLOCK // k)
        for start in range(0, n_ctx, step):
            stop = min(n_ctx, start + step)
            table[start:stop] = quantize_rows(probability_rows(stage_betas, len(stages) - 1, start, stop))
    else:
        table = quantize_rows(unigram[None, :])
    level = LevelPrior(tuple(sources), maps, table)
    return level, (alpha,) + stage_betas
