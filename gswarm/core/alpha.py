"""Alpha vectors: per-tick features of a market from its rolling recent history.

Pure numpy. :func:`update` applies a market's new ticks (in arrival order) to its
:class:`RollingState` and returns one raw vector per tick, computed over the history
including that tick. Window statistics are vectorised over the ticks of a call with
cumulative sums over ``old window + new ticks``; only the recursive EMAs loop.

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
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

WINDOW = 200
COMPONENTS: tuple[str, ...] = (
    "sma10", "sma20", "sma50", "sma200", "ema12", "ema26", "rsi14", "macd", "macd_signal",
    "bb_upper", "bb_lower", "atr14", "vol_sma10", "obv", "vwap",
    "hour_of_day", "weekday", "seconds_of_day", "log_odds", "tick_rate",
)
DIM = len(COMPONENTS)
INDEX = {name: i for i, name in enumerate(COMPONENTS)}

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_STATE_VERSION = 1
_HEAD = struct.Struct("<BQH6d")  # version, n, window length, 6 scalars
_DAY_MS = 86_400_000


def _ema_alpha(k: int) -> float:
    return 2.0 / (k + 1)


@dataclass
class RollingState:
    """Per-market rolling state: all later vectors depend on nothing else."""

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
            _STATE_VERSION, self.n, len(self.ts), self.ema12, self.ema26, self.macd_signal,
            self.obv, self.vwap_num, self.vwap_den,
        )
        return b"".join((
            head, self.ts.astype("<i8").tobytes(), self.prob.astype("<f8").tobytes(),
            self.vol.astype("<f8").tobytes(),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> RollingState:
        if len(data) < _HEAD.size or data[0] != _STATE_VERSION:
            raise ValueError(f"unknown rolling state format (first byte {data[:1]!r})")
        _version, n, m, e12, e26, sig, obv, num, den = _HEAD.unpack_from(data)
        if len(data) != _HEAD.size + 24 * m:
            want = _HEAD.size + 24 * m
            raise ValueError(f"rolling state of {len(data)} bytes, expected {want}")
        pos = _HEAD.size
        ts = np.frombuffer(data, "<i8", m, pos).astype(np.int64)
        prob = np.frombuffer(data, "<f8", m, pos + 8 * m).astype(np.float64)
        vol = np.frombuffer(data, "<f8", m, pos + 16 * m).astype(np.float64)
        return cls(ts, prob, vol, e12, e26, sig, obv, num, den, n)


def _windows(x: F64, k: int, pad: float = 0.0) -> F64:
    """Row j: the k values ending at x[j], front-padded with ``pad`` where fewer exist.

    Each statistic is then a reduction over exactly the same k numbers in the same order
    whatever way the ticks were split into calls, so results are bit-identical.
    """
    padded = np.concatenate((np.full(k - 1, pad), x))
    # the view sliding_window_view makes, built directly: it checks its arguments at a
    # cost (~40 us) that dominated updates of one or two ticks
    step = padded.strides[0]
    view: F64 = np.ndarray((len(x), k), padded.dtype, padded, strides=(step, step))
    view.flags.writeable = False
    return view


def _counts(length: int, start: int, k: int) -> F64:
    # positions in the combined array stand for ticks seen: a truncated state holds WINDOW
    # (>= k) ticks, so min(k, position + 1) equals min(k, n)
    return np.minimum(np.arange(start + 1, length + 1), k).astype(np.float64)


def _window_mean(x: F64, start: int, k: int) -> F64:
    """Mean of the last min(k, available) values ending at each position >= start."""
    sums: F64 = _windows(x, k)[start:].sum(axis=1)
    return sums / _counts(len(x), start, k)


def _ema_series(x: F64, prev: float, k: int, seeded: bool) -> F64:
    a = _ema_alpha(k)
    out = np.empty_like(x)
    e = prev
    for i, v in enumerate(x.tolist()):
        e = v if (i == 0 and not seeded) else e + a * (v - e)
        out[i] = e
    return out


def update(state: RollingState, ts: I64, prob: F64, vol: F64) -> tuple[RollingState, F64]:
    """Apply a market's new ticks, in arrival order; return (new state, raw vectors).

    ``raw[i]`` is the alpha vector right after tick ``i``. The input state is not changed.
    """
    m = len(ts)
    old = len(state.ts)
    all_ts = np.concatenate((state.ts, ts.astype(np.int64)))
    all_p = np.concatenate((state.prob, prob.astype(np.float64)))
    all_v = np.concatenate((state.vol, vol.astype(np.float64)))
    n_at = state.n + np.arange(1, m + 1)  # ticks ever seen, after each new tick
    raw = np.empty((m, DIM), dtype=np.float64)

    for k, name in ((10, "sma10"), (20, "sma20"), (50, "sma50"), (200, "sma200")):
        raw[:, INDEX[name]] = _window_mean(all_p, old, k)

    seeded = state.n > 0
    ema12 = _ema_series(prob, state.ema12, 12, seeded)
    ema26 = _ema_series(prob, state.ema26, 26, seeded)
    macd = ema12 - ema26
    signal = _ema_series(macd, state.macd_signal, 9, seeded)
    raw[:, INDEX["ema12"]], raw[:, INDEX["ema26"]] = ema12, ema26
    raw[:, INDEX["macd"]], raw[:, INDEX["macd_signal"]] = macd, signal

    # changes: diff[j] is the change into tick j+1 of the combined window
    diff = np.diff(all_p)
    gains, losses = np.maximum(diff, 0.0), np.maximum(-diff, 0.0)
    g = _change_sums(gains, old, 14)
    loss = _change_sums(losses, old, 14)
    total = g + loss
    raw[:, INDEX["rsi14"]] = np.divide(g, total, out=np.full(m, 0.5), where=total > 0)
    count = np.minimum(n_at - 1, 14)
    atr = _change_sums(np.abs(diff), old, 14)
    raw[:, INDEX["atr14"]] = np.divide(atr, count, out=np.zeros(m), where=count > 0)

    sma20 = raw[:, INDEX["sma20"]]
    win = _windows(all_p, 20)[old:]
    real = np.arange(20) >= 20 - _counts(len(all_p), old, 20)[:, None]  # not padding
    dev = np.where(real, win - sma20[:, None], 0.0)
    std = np.sqrt((dev * dev).sum(axis=1) / _counts(len(all_p), old, 20))
    raw[:, INDEX["bb_upper"]], raw[:, INDEX["bb_lower"]] = sma20 + 2 * std, sma20 - 2 * std
    raw[:, INDEX["vol_sma10"]] = _window_mean(all_v, old, 10)

    step = np.sign(diff[old - 1:]) * all_v[old:] if old else np.concatenate(
        ([0.0], np.sign(diff) * all_v[1:]))
    # running sums continue from the state value, one addition per tick, as a tick-at-a-
    # time run would: cumsum is sequential, so any split gives bit-identical values
    obv = np.cumsum(np.concatenate(([state.obv], step)))[1:]
    num = np.cumsum(np.concatenate(([state.vwap_num], prob * vol)))[1:]
    den = np.cumsum(np.concatenate(([state.vwap_den], vol)))[1:]
    raw[:, INDEX["obv"]] = obv
    raw[:, INDEX["vwap"]] = np.divide(num, den, out=prob.astype(np.float64).copy(), where=den > 0)

    raw[:, INDEX["hour_of_day"]:INDEX["seconds_of_day"] + 1] = _time_features(ts)
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    raw[:, INDEX["log_odds"]] = np.log(p / (1 - p))
    raw[:, INDEX["tick_rate"]] = _tick_rate(all_ts, old)

    keep = slice(max(len(all_ts) - WINDOW, 0), None)
    new = RollingState(
        all_ts[keep].copy(), all_p[keep].copy(), all_v[keep].copy(),
        float(ema12[-1]), float(ema26[-1]), float(signal[-1]),
        float(obv[-1]), float(num[-1]), float(den[-1]), state.n + m,
    ) if m else state
    return new, raw


def _change_sums(changes: F64, start: int, k: int) -> F64:
    """For each tick at position >= start: the sum of the last min(k, position) changes.

    ``changes[j]`` is the change into position j+1; position 0 has none and sums to 0.
    """
    sums = _windows(changes, k).sum(axis=1) if len(changes) else np.zeros(0)
    return np.concatenate(([0.0], sums))[start:]


def _time_features(ts: I64) -> F64:
    ms_of_day = np.mod(ts, _DAY_MS)
    days = np.floor_divide(ts, _DAY_MS)
    seconds = ms_of_day // 1000
    hour = seconds // 3600
    weekday = np.mod(days + 3, 7)  # 1970-01-01 was a Thursday (Monday = 0)
    return np.stack((hour / 23.0, weekday / 6.0, seconds / 86399.0), axis=1)


def _tick_rate(all_ts: I64, start: int) -> F64:
    if not len(all_ts):
        return np.zeros(0)
    w = _windows(all_ts.astype(np.float64), WINDOW, pad=float(all_ts[0]))[start:]
    span = (w.max(axis=1) - w.min(axis=1)) / 1000.0
    count = _counts(len(all_ts), start, WINDOW) - 1
    rate: F64 = np.divide(count, span, out=np.zeros_like(span), where=span > 0)
    return rate


#: Components without a natural bound (mana volumes, counts per second): compressed with
#: sign(x)·ln(1+|x|) before the vector is normalised, so they do not drown the others.
UNBOUNDED = ("vol_sma10", "obv", "tick_rate")
_UNBOUNDED_IDX = [INDEX[name] for name in UNBOUNDED]


def embed(raw: F64) -> NDArray[np.float32]:
    """The stored alpha vector: unbounded components log-compressed, then unit length.

    Raw vectors (what each component means) stay in a market's latest state; this is the
    form compared by cosine similarity and kept as the ``market/alpha`` datom.
    """
    squashed = raw.copy()
    cols = squashed[:, _UNBOUNDED_IDX]
    squashed[:, _UNBOUNDED_IDX] = np.sign(cols) * np.log1p(np.abs(cols))
    return unit(squashed)


def unit(raw: F64) -> NDArray[np.float32]:
    """Rows scaled to unit L2 length, as float32 (an all-zero row stays zero)."""
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    scaled: F64 = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return scaled.astype(np.float32)
