"""Alpha vectors: per-tick features of a market from its rolling recent history.

Pure numpy. :func:`update_many` applies the new ticks of many markets at once (each
market's in arrival order) to their :class:`RollingState` and returns one raw vector per
tick, computed over the history including that tick; :func:`update` is the same for one
market.

The work is columnar: every window statistic of every new tick of every market in the
call is one gather of that tick's window from the market's history (``old window + new
ticks``) and one reduction, so the number of numpy calls per call is fixed, whatever the
number of markets, ticks or the window lengths. Windows are reduced from their values
each time (no running window sums), so nothing drifts: a tick's vector depends only on
the market's tick sequence, never on how it was split into calls (bit-identical). Only
the recurrences (EMAs, MACD signal, OBV, VWAP sums) run tick by tick, in plain Python
floats (IEEE doubles, the same operations numpy would do).

Components, in vector order (``n`` = ticks seen so far; a k-window statistic uses the last
``min(k, n)`` ticks, so nothing is zero-padded):

- ``sma10 sma20 sma50 sma200``: mean probability over the window;
- ``ema12 ema26``: exponential moving averages of probability, ``a = 2/(k+1)``, seeded with
  the first probability;
- ``rsi14``: Cutler's RSI (simple means) over the last ``min(14, n-1)`` changes, as a
  fraction in [0, 1] (RSI/100); 0.5 when there is no change;
- ``macd`` = ema12 - ema26; ``macd_signal`` = EMA(9) of macd, seeded with the first macd;
- ``bb_upper bb_lower``: sma20 ± 2 population standard deviations over the same window;
- ``atr14``: mean absolute probability change over the last ``min(14, n-1)`` changes
  (true range on a series without high/low); 0 for one tick;
- ``vol_sma10``: mean volume over the window;
- ``obv``: on-balance volume, Σ sign(Δp)·volume since the first tick;
- ``vwap``: Σ p·v / Σ v since the first tick; the probability while Σ v = 0;
- ``hour_of_day`` (/23), ``weekday`` (Monday 0, /6), ``seconds_of_day`` (/86399): UTC of the
  tick's event time, in [0, 1];
- ``log_odds``: ln(p / (1-p)) with p clipped to [1e-6, 1-1e-6];
- ``tick_rate``: ticks per second over the window of up to ``WINDOW`` ticks,
  (m-1) / ((max ts - min ts)/1000) (max-min keeps it non-negative with late ticks); 0 for
  one tick or a zero span.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

WINDOW = 200  # probabilities and event times kept per market (sma200, tick_rate)
VOL_WINDOW = 10  # volumes kept per market (vol_sma10)
COMPONENTS: tuple[str, ...] = (
    "sma10", "sma20", "sma50", "sma200", "ema12", "ema26", "rsi14", "macd", "macd_signal",
    "bb_upper", "bb_lower", "atr14", "vol_sma10", "obv", "vwap",
    "hour_of_day", "weekday", "seconds_of_day", "log_odds", "tick_rate",
)
DIM = len(COMPONENTS)
INDEX = {name: i for i, name in enumerate(COMPONENTS)}

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_STATE_VERSION = 2
_HEAD = struct.Struct("<BQHB6d")  # version, n, window length, volume window length, scalars
_DAY_MS = 86_400_000
_CHUNK = 4096  # ticks gathered at once (bounds the (ticks x WINDOW) temporaries)
_A12, _A26, _A9 = 2.0 / 13, 2.0 / 27, 2.0 / 10


@dataclass
class RollingState:
    """Per-market rolling state: all later vectors depend on nothing else.

    ``ts``/``prob`` hold the last ``min(n, WINDOW)`` ticks and ``vol`` the last
    ``min(n, VOL_WINDOW)`` volumes, oldest first.
    """

    ts: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    prob: F64 = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    vol: F64 = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    ema12: float = 0.0
    ema26: float = 0.0
    macd_signal: float = 0.0
    obv: float = 0.0
    vwap_num: float = 0.0
    vwap_den: float = 0.0
    n: int = 0

    @classmethod
    def empty(cls) -> RollingState:
        return cls()

    def to_bytes(self) -> bytes:
        """Versioned, exact (bit-identical floats) serialisation."""
        head = _HEAD.pack(
            _STATE_VERSION, self.n, len(self.ts), len(self.vol), self.ema12, self.ema26,
            self.macd_signal, self.obv, self.vwap_num, self.vwap_den,
        )
        return b"".join((
            head, self.ts.astype("<i8").tobytes(), self.prob.astype("<f8").tobytes(),
            self.vol.astype("<f8").tobytes(),
        ))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> RollingState:
        if len(data) < _HEAD.size or data[0] != _STATE_VERSION:
            raise ValueError(f"unknown rolling state format (first byte {bytes(data[:1])!r})")
        _version, n, m, mv, e12, e26, sig, obv, num, den = _HEAD.unpack_from(data)
        want = _HEAD.size + 16 * m + 8 * mv
        if len(data) != want:
            raise ValueError(f"rolling state of {len(data)} bytes, expected {want}")
        pos = _HEAD.size
        # read-only views of ``data`` (little-endian, as numpy's native types here); the
        # state is never changed in place, update_many builds new arrays
        ts = np.frombuffer(data, np.int64, m, pos)
        prob = np.frombuffer(data, np.float64, m, pos + 8 * m)
        vol = np.frombuffer(data, np.float64, mv, pos + 16 * m)
        return cls(ts, prob, vol, e12, e26, sig, obv, num, den, n)


def update(state: RollingState, ts: I64, prob: F64, vol: F64) -> tuple[RollingState, F64]:
    """Apply a market's new ticks, in arrival order; return (new state, raw vectors).

    ``raw[i]`` is the alpha vector right after tick ``i``. The input state is not changed.
    """
    states, raw = update_many([state], np.array([len(ts)]), ts, prob, vol)
    return states[0], raw


def update_many(
    states: Sequence[RollingState], counts: I64, ts: I64, prob: F64, vol: F64,
) -> tuple[list[RollingState], F64]:
    """Apply the new ticks of many markets at once.

    ``counts[m]`` ticks belong to market ``m`` (state ``states[m]``); ``ts``, ``prob`` and
    ``vol`` hold them market after market, each market's in arrival order. Returns the new
    states (a market with no new ticks keeps its state) and ``raw``: one row per tick, in
    the input order, the vector right after that tick.
    """
    counts = np.asarray(counts, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    vol = np.asarray(vol, dtype=np.float64)
    total = int(counts.sum())
    raw = np.empty((total, DIM), dtype=np.float64)
    if total == 0:
        return list(states), raw

    # every market's history followed by its new ticks, market after market
    new_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    p_parts: list[F64] = []
    t_parts: list[I64] = []
    v_parts: list[F64] = []
    for m, state in enumerate(states):
        a, b = int(new_start[m]), int(new_start[m] + counts[m])
        p_parts += (state.prob, prob[a:b])
        t_parts += (state.ts, ts[a:b])
        v_parts += (state.vol, vol[a:b])
    all_p, all_t, all_v = np.concatenate(p_parts), np.concatenate(t_parts), np.concatenate(
        v_parts)
    hist = np.fromiter((len(s.prob) for s in states), np.int64, len(states))
    vhist = np.fromiter((len(s.vol) for s in states), np.int64, len(states))
    seen = np.fromiter((s.n for s in states), np.int64, len(states))
    p_start = np.concatenate(([0], np.cumsum(hist + counts)[:-1]))
    v_start = np.concatenate(([0], np.cumsum(vhist + counts)[:-1]))

    # per tick: its position in the histories, and ticks seen once it is applied
    j = np.arange(total) - np.repeat(new_start, counts)
    at_p = np.repeat(p_start + hist, counts) + j
    at_v = np.repeat(v_start + vhist, counts) + j
    n_at = np.repeat(seen, counts) + j + 1

    for lo in range(0, total, _CHUNK):
        hi = min(lo + _CHUNK, total)
        _windowed(all_p, all_t, all_v, at_p[lo:hi], at_v[lo:hi], n_at[lo:hi], ts[lo:hi],
                  prob[lo:hi], raw[lo:hi])
    carried = _recurrences(states, counts, prob, vol, raw)

    out = list(states)
    for m, state in enumerate(states):
        c = int(counts[m])
        if not c:
            continue
        end_p, end_v = int(p_start[m] + hist[m]) + c, int(v_start[m] + vhist[m]) + c
        keep_p = min(state.n + c, WINDOW)
        keep_v = min(state.n + c, VOL_WINDOW)
        e12, e26, sig, obv, num, den = carried[m]
        out[m] = RollingState(
            all_t[end_p - keep_p:end_p].copy(), all_p[end_p - keep_p:end_p].copy(),
            all_v[end_v - keep_v:end_v].copy(), e12, e26, sig, obv, num, den, state.n + c,
        )
    return out, raw


def _windowed(
    all_p: F64, all_t: I64, all_v: F64, at_p: I64, at_v: I64, n_at: I64, ts: I64, prob: F64,
    out: F64,
) -> None:
    """Every window statistic of a chunk of ticks, into ``out``: one gather and one
    reduction each.

    Row r of a gathered window is the value r ticks before the tick (newest first); rows
    past the ticks seen are masked to 0 (sums) or to the tick's own value (max/min), so
    each statistic reduces the same numbers in the same order however ticks were split.
    """
    back = np.arange(WINDOW)
    have = np.minimum(n_at, WINDOW)
    # every window full (markets with long histories: the steady state): no masking, the
    # same numbers without the passes that mask nothing
    full = bool(have.min() == WINDOW) if len(have) else False
    valid = np.ones((0, WINDOW), dtype=bool) if full else back[None, :] < have[:, None]
    idx = at_p[:, None] - back[None, :]
    if not full:
        np.maximum(idx, 0, out=idx)
    win = all_p[idx] if full else np.where(valid, all_p[idx], 0.0)
    for k, name in ((10, "sma10"), (20, "sma20"), (50, "sma50"), (200, "sma200")):
        out[:, INDEX[name]] = win[:, :k].sum(axis=1) / np.minimum(n_at, k)

    sma20 = out[:, INDEX["sma20"]]
    dev = win[:, :20] - sma20[:, None]
    if not full:
        dev = np.where(valid[:, :20], dev, 0.0)
    std = np.sqrt((dev * dev).sum(axis=1) / np.minimum(n_at, 20))
    out[:, INDEX["bb_upper"]], out[:, INDEX["bb_lower"]] = sma20 + 2 * std, sma20 - 2 * std

    # change r: into the tick r back from this one, from the one before it
    changes = win[:, :14] - win[:, 1:15]
    if not full:
        changes = np.where(valid[:, 1:15], changes, 0.0)
    gains = np.maximum(changes, 0.0).sum(axis=1)
    losses = np.maximum(-changes, 0.0).sum(axis=1)
    total = gains + losses
    m = len(n_at)
    out[:, INDEX["rsi14"]] = np.divide(gains, total, out=np.full(m, 0.5), where=total > 0)
    count = np.minimum(n_at - 1, 14)
    out[:, INDEX["atr14"]] = np.divide(np.abs(changes).sum(axis=1), count, out=np.zeros(m),
                                       where=count > 0)

    vback = back[:VOL_WINDOW]
    vidx = np.maximum(at_v[:, None] - vback[None, :], 0)
    vwin = np.where(vback[None, :] < np.minimum(n_at, VOL_WINDOW)[:, None], all_v[vidx], 0.0)
    out[:, INDEX["vol_sma10"]] = vwin.sum(axis=1) / np.minimum(n_at, VOL_WINDOW)

    twin = all_t[idx] if full else np.where(valid, all_t[idx], ts[:, None])
    span = (twin.max(axis=1) - twin.min(axis=1)) / 1000.0
    out[:, INDEX["tick_rate"]] = np.divide(have - 1, span, out=np.zeros(m), where=span > 0)

    out[:, INDEX["hour_of_day"]:INDEX["seconds_of_day"] + 1] = _time_features(ts)
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    out[:, INDEX["log_odds"]] = np.log(p / (1 - p))


#: A numpy step over every market with a k-th new tick costs about as much as this many
#: ticks of the plain Python loop: the step form is used when it needs fewer steps.
_STEP_COST = 12
_CARRIED = ("ema12", "ema26", "macd", "macd_signal", "obv", "vwap")


def _recurrences(
    states: Sequence[RollingState], counts: I64, prob: F64, vol: F64, raw: F64,
) -> list[tuple[float, float, float, float, float, float]]:
    """EMAs, MACD signal, OBV and VWAP, tick by tick; returns each market's end values.

    Two forms, the same IEEE operations in the same order for every market (so the same
    bits): step k over all markets with a k-th new tick (numpy; wide batches), or a plain
    loop over ticks (a few markets with many ticks each).
    """
    if len(counts) and int(counts.max()) * _STEP_COST < len(prob):
        return _recurrences_by_step(states, counts, prob, vol, raw)
    return _recurrences_by_tick(states, counts, prob, vol, raw)


def _recurrences_by_step(
    states: Sequence[RollingState], counts: I64, prob: F64, vol: F64, raw: F64,
) -> list[tuple[float, float, float, float, float, float]]:
    def column(get: Callable[[RollingState], float]) -> F64:
        return np.fromiter(map(get, states), dtype=np.float64, count=len(states))

    e12, e26 = column(lambda s: s.ema12), column(lambda s: s.ema26)
    sig, obv = column(lambda s: s.macd_signal), column(lambda s: s.obv)
    num, den = column(lambda s: s.vwap_num), column(lambda s: s.vwap_den)
    prev = column(lambda s: float(s.prob[-1]) if s.n else 0.0)
    seeded = np.fromiter((s.n > 0 for s in states), dtype=bool, count=len(states))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.empty((len(prob), len(_CARRIED)), dtype=np.float64)
    for k in range(int(counts.max())):
        idx = np.flatnonzero(counts > k)
        pos = starts[idx] + k
        p, v, was = prob[pos], vol[pos], seeded[idx]
        a12, a26, asig, aobv = e12[idx], e26[idx], sig[idx], obv[idx]
        n12 = np.where(was, a12 + _A12 * (p - a12), p)
        n26 = np.where(was, a26 + _A26 * (p - a26), p)
        macd = n12 - n26
        nsig = np.where(was, asig + _A9 * (macd - asig), macd)
        last = prev[idx]
        step = (p > last).astype(np.float64) - (p < last).astype(np.float64)
        nobv = np.where(was, aobv + step * v, aobv)
        nnum, nden = num[idx] + p * v, den[idx] + v
        vwap = np.divide(nnum, nden, out=p.copy(), where=nden > 0)
        e12[idx], e26[idx], sig[idx], obv[idx], num[idx], den[idx] = (
            n12, n26, nsig, nobv, nnum, nden)
        prev[idx], seeded[idx] = p, True
        out[pos] = np.stack((n12, n26, macd, nsig, nobv, vwap), axis=1)
    for col, name in enumerate(_CARRIED):
        raw[:, INDEX[name]] = out[:, col]
    return list(zip(e12.tolist(), e26.tolist(), sig.tolist(), obv.tolist(), num.tolist(),
                    den.tolist(), strict=True))


def _recurrences_by_tick(
    states: Sequence[RollingState], counts: I64, prob: F64, vol: F64, raw: F64,
) -> list[tuple[float, float, float, float, float, float]]:
    ps, vs = prob.tolist(), vol.tolist()
    c12: list[float] = []
    c26: list[float] = []
    cmacd: list[float] = []
    csig: list[float] = []
    cobv: list[float] = []
    cvwap: list[float] = []
    carried = []
    i = 0
    for state, c in zip(states, counts.tolist(), strict=True):
        e12, e26, sig = state.ema12, state.ema26, state.macd_signal
        obv, num, den = state.obv, state.vwap_num, state.vwap_den
        prev = float(state.prob[-1]) if state.n else 0.0
        seeded = state.n > 0
        for _ in range(c):
            p, v = ps[i], vs[i]
            if seeded:
                e12 = e12 + _A12 * (p - e12)
                e26 = e26 + _A26 * (p - e26)
                macd = e12 - e26
                sig = sig + _A9 * (macd - sig)
                obv = obv + (1.0 if p > prev else -1.0 if p < prev else 0.0) * v
            else:
                e12 = e26 = p
                macd = sig = e12 - e26
                seeded = True
            num = num + p * v
            den = den + v
            c12.append(e12)
            c26.append(e26)
            cmacd.append(macd)
            csig.append(sig)
            cobv.append(obv)
            cvwap.append(num / den if den > 0 else p)
            prev = p
            i += 1
        carried.append((e12, e26, sig, obv, num, den))
    for name, values in zip(_CARRIED, (c12, c26, cmacd, csig, cobv, cvwap), strict=True):
        raw[:, INDEX[name]] = values
    return carried


def _time_features(ts: I64) -> F64:
    ms_of_day = np.mod(ts, _DAY_MS)
    days = np.floor_divide(ts, _DAY_MS)
    seconds = ms_of_day // 1000
    hour = seconds // 3600
    weekday = np.mod(days + 3, 7)  # 1970-01-01 was a Thursday (Monday = 0)
    return np.stack((hour / 23.0, weekday / 6.0, seconds / 86399.0), axis=1)


#: Components without a natural bound (mana volumes, counts per second): compressed with
#: sign(x)·ln(1+|x|) before the vector is normalised, so they do not drown the others.
UNBOUNDED = ("vol_sma10", "obv", "tick_rate")
_UNBOUNDED_IDX = [INDEX[name] for name in UNBOUNDED]


def embed(raw: F64) -> NDArray[np.float32]:
    """The stored alpha vector: unbounded components log-compressed, then unit length.

    Raw vectors (what each component means) stay in a market's latest state; this is the
    form compared by cosine similarity and kept as the ``market/alpha`` datom.
    """
    return embed_with_norms(raw)[0]


def embed_with_norms(raw: F64) -> tuple[NDArray[np.float32], F64]:
    """:func:`embed`, and each row's L2 norm after the compression (what it was divided by:
    ``vector * norm`` gives the compressed raw vector back to float32 precision)."""
    squashed = raw.copy()
    cols = squashed[:, _UNBOUNDED_IDX]
    squashed[:, _UNBOUNDED_IDX] = np.sign(cols) * np.log1p(np.abs(cols))
    return _unit(squashed)


def unit(raw: F64) -> NDArray[np.float32]:
    """Rows scaled to unit L2 length, as float32 (an all-zero row stays zero)."""
    return _unit(raw)[0]


def _unit(raw: F64) -> tuple[NDArray[np.float32], F64]:
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    scaled: F64 = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return scaled.astype(np.float32), norms[:, 0]
