"""A seeded synthetic tick feed, and grouping of ticks into per-market array messages.

Pure Python and numpy (no Kafka). :func:`synthetic_ticks` draws ticks in numpy chunks:

* markets are Zipf-skewed (s = 1.1): a few markets get most ticks; which market ids are the
  popular ones is itself drawn from the seed;
* each market's probability is a random walk in logit space folded (reflected) into
  ``[-LOGIT_BOUND, LOGIT_BOUND]``, so it stays strictly inside (0, 1) and never sticks at
  the edges; each market starts at its own random level and has its own volatility;
* event times form a Poisson process of ``rate`` ticks per second (integer milliseconds,
  non-decreasing);
* traders are ``u-<int>`` drawn Zipf-Mandelbrot (s = 1, q = 10) from a pool of
  ``max(100, 5 * markets)``;
* volumes are lognormal mana amounts (at least 1, rounded to cents);
* the outcome is ``"YES"`` when the move raised the probability, else ``"NO"``;
* ids are unique, deterministic bet ids (a digest of the parameters, then the tick number).

The same arguments always give the same ticks, and a shorter feed is a prefix of a longer
one with the same markets, seed, start and rate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from gswarm.errors import FeedError

SOURCE = "synthetic"
MARKET_ZIPF_S = 1.1
TRADER_ZIPF_S = 1.0
TRADER_ZIPF_Q = 10.0  # Zipf-Mandelbrot offset: a heavy head of regulars, no single giant
LOGIT_BOUND = 5.0  # probabilities stay within [0.0067, 0.9933]
CHUNK = 65_536
PROB_DECIMALS = 6

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def synthetic_ticks(
    markets: int,
    count: int,
    seed: int,
    start_ms: int = 1_700_000_000_000,
    rate: float = 1000.0,
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` synthetic tick dicts over ``markets`` markets, deterministic per seed.

    Each tick is ``{"v", "market", "prob", "ts", "volume", "trader", "outcome", "source",
    "id"}`` with source ``"synthetic"``; ``ts`` starts near ``start_ms`` and advances by
    ``1000 / rate`` ms on average. Ticks are generated lazily, ``CHUNK`` at a time, so
    ``count`` may be practically unbounded.
    """
    _check_args(markets, count, start_ms, rate)
    world = _World(markets, seed, rate)
    tag = _id_tag(markets, seed, start_ms, rate)
    width = max(5, len(str(markets - 1)))
    done = 0
    while done < count:
        # always draw whole chunks, so a shorter feed is a prefix of a longer one
        n = min(CHUNK, count - done)
        yield from _chunk_ticks(world.chunk(CHUNK), start_ms, tag, done, width, n)
        done += n


def _check_args(markets: int, count: int, start_ms: int, rate: float) -> None:
    """Raise :class:`FeedError` for arguments no feed can be made of."""
    if markets < 1:
        raise FeedError(f"markets must be >= 1, got {markets}")
    if count < 0:
        raise FeedError(f"count must be >= 0, got {count}")
    if start_ms <= 0:
        raise FeedError(f"start_ms must be > 0, got {start_ms}")
    if not (math.isfinite(rate) and rate > 0):
        raise FeedError(f"rate must be a finite number > 0, got {rate}")


def _id_tag(markets: int, seed: int, start_ms: int, rate: float) -> str:
    """A short digest of the parameters, so feeds with different parameters never share ids."""
    text = f"{markets}/{seed}/{start_ms}/{rate!r}".encode()
    return hashlib.blake2b(text, digest_size=4).hexdigest()


def _zipf_cdf(n: int, s: float, q: float = 0.0) -> FloatArray:
    """The cumulative distribution of ranks ``0..n-1`` with weights ``1 / (rank + 1 + q) ** s``."""
    weights = 1.0 / (np.arange(1, n + 1, dtype=np.float64) + q) ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf


def _fold(logit: FloatArray) -> FloatArray:
    """Reflect an unbounded walk into ``[-LOGIT_BOUND, LOGIT_BOUND]`` (a triangle wave)."""
    width = 2.0 * LOGIT_BOUND
    u = np.mod(logit + LOGIT_BOUND, 2.0 * width)
    return np.where(u < width, u, 2.0 * width - u) - LOGIT_BOUND


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


class _Chunk:
    """One chunk of generated columns (numpy arrays, converted to lists for speed)."""

    __slots__ = ("market", "offset_ms", "outcome_yes", "prob", "trader", "volume")

    def __init__(
        self,
        market: IntArray,
        prob: FloatArray,
        outcome_yes: npt.NDArray[np.bool_],
        offset_ms: IntArray,
        volume: FloatArray,
        trader: IntArray,
    ) -> None:
        self.market = market
        self.prob = prob
        self.outcome_yes = outcome_yes
        self.offset_ms = offset_ms
        self.volume = volume
        self.trader = trader


class _World:
    """The generator's state across chunks: the random stream, walks and clock."""

    def __init__(self, markets: int, seed: int, rate: float) -> None:
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.markets = markets
        self.mean_gap_ms = 1000.0 / rate
        self.market_cdf = _zipf_cdf(markets, MARKET_ZIPF_S)
        self.market_of_rank = rng.permutation(markets)
        self.walk = rng.uniform(-3.0, 3.0, markets)  # unfolded logit level per market
        self.sigma = 0.04 * rng.lognormal(0.0, 0.5, markets)  # per-market volatility
        pool = max(100, markets * 5)
        self.trader_cdf = _zipf_cdf(pool, TRADER_ZIPF_S, TRADER_ZIPF_Q)
        self.trader_of_rank = rng.permutation(pool)
        self.clock_ms = 0.0  # time since start_ms, fractional

    def chunk(self, n: int) -> _Chunk:
        """Draw the next ``n`` ticks' columns."""
        market = self._markets(n)
        before, after = self._walk(market)
        prob = np.round(_sigmoid(after), PROB_DECIMALS)
        outcome_yes = after >= before
        offset_ms = self._times(n)
        mana: FloatArray = self.rng.lognormal(np.log(25.0), 1.3, n)
        volume = mana.clip(1.0, None).round(2)
        trader = self._traders(n)
        return _Chunk(market, prob, outcome_yes, offset_ms, volume, trader)

    def _markets(self, n: int) -> IntArray:
        ranks = np.searchsorted(self.market_cdf, self.rng.random(n), side="right")
        return self.market_of_rank[np.minimum(ranks, self.markets - 1)].astype(np.int64)

    def _traders(self, n: int) -> IntArray:
        pool = len(self.trader_cdf)
        ranks = np.searchsorted(self.trader_cdf, self.rng.random(n), side="right")
        return self.trader_of_rank[np.minimum(ranks, pool - 1)].astype(np.int64)

    def _walk(self, market: IntArray) -> tuple[FloatArray, FloatArray]:
        """Advance each market's walk by its ticks in this chunk, in order.

        Returns the folded logit before and after each tick's step.
        """
        steps = self.rng.standard_normal(len(market)) * self.sigma[market]
        order = np.argsort(market, kind="stable")
        sorted_market = market[order]
        sorted_steps = steps[order]
        running = np.cumsum(sorted_steps)
        first = np.ones(len(market), dtype=bool)
        first[1:] = sorted_market[1:] != sorted_market[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(market)), 0))
        within = running - running[group_start] + sorted_steps[group_start]
        level_sorted = self.walk[sorted_market] + within
        last = np.ones(len(market), dtype=bool)
        last[:-1] = first[1:]
        self.walk[sorted_market[last]] = level_sorted[last]
        level = np.empty_like(level_sorted)
        level[order] = level_sorted
        return _fold(level - steps), _fold(level)

    def _times(self, n: int) -> IntArray:
        gaps = self.rng.exponential(self.mean_gap_ms, n)
        clock = self.clock_ms + np.cumsum(gaps)
        self.clock_ms = float(clock[-1])
        return np.floor(clock).astype(np.int64)


def _chunk_ticks(
    chunk: _Chunk, start_ms: int, tag: str, first_index: int, width: int, n: int
) -> Iterator[dict[str, Any]]:
    """The first ``n`` ticks of a chunk as dicts of plain Python values.

    Market ids are ``m-`` and the market number zero-padded to ``width`` digits.
    """
    rows = zip(
        chunk.market[:n].tolist(), chunk.prob[:n].tolist(), chunk.outcome_yes[:n].tolist(),
        chunk.offset_ms[:n].tolist(), chunk.volume[:n].tolist(), chunk.trader[:n].tolist(),
        strict=True,
    )
    for i, (m, prob, yes, offset, volume, trader) in enumerate(rows, first_index):
        yield {
            "v": 1, "market": f"m-{m:0{width}d}", "prob": prob, "ts": start_ms + offset,
            "volume": volume, "trader": f"u-{trader}", "outcome": "YES" if yes else "NO",
            "source": SOURCE, "id": f"syn-{tag}-{i}",
        }


def batch_by_market(
    ticks: Iterable[dict[str, Any]], size: int, window: int | None = None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Group ticks into ``(market, ticks)`` arrays of at most ``size`` ticks of one market.

    Each market's ticks keep their order (so do the arrays of one market). A market's
    array is emitted when it is full; to bound memory and latency, at most ``window``
    ticks (default ``64 * size``) are held back, the oldest array being emitted first when
    the window is exceeded. Whatever remains is flushed at the end.
    """
    batcher = MarketBatcher(size, window)
    for tick in ticks:
        yield from batcher.add(tick)
    yield from batcher.flush()


class MarketBatcher:
    """The incremental core of :func:`batch_by_market` (also usable from async code)."""

    def __init__(self, size: int, window: int | None = None) -> None:
        if size < 1:
            raise FeedError(f"array size must be >= 1, got {size}")
        self.size = size
        self.window = max(size, window if window is not None else 64 * size)
        # insertion order = order of each pending array's first tick: the first is the oldest
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._held = 0

    def add(self, tick: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        """Add one tick; return the arrays that are now ready (often none)."""
        market = market_of(tick)
        if self.size == 1:
            return [(market, [tick])]
        ready: list[tuple[str, list[dict[str, Any]]]] = []
        batch = self._pending.setdefault(market, [])
        batch.append(tick)
        self._held += 1
        if len(batch) >= self.size:
            ready.append(self._pop(market))
        while self._held > self.window:
            ready.append(self._pop(next(iter(self._pending))))
        return ready

    def flush(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Return every pending array, oldest first, and forget them."""
        return [self._pop(market) for market in list(self._pending)]

    def _pop(self, market: str) -> tuple[str, list[dict[str, Any]]]:
        batch = self._pending.pop(market)
        self._held -= len(batch)
        return market, batch


def market_of(tick: dict[str, Any]) -> str:
    """The tick's market id; :class:`FeedError` if it has none."""
    market = tick.get("market")
    if not isinstance(market, str) or not market:
        raise FeedError(f"tick without a market id: {tick!r}"[:300])
    return market
