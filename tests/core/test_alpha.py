"""Alpha components against plain-loop references; split invariance; state round trip."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from gswarm.core import alpha
from gswarm.core.alpha import COMPONENTS, DIM, INDEX, RollingState, unit, update


def walk(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.clip(0.5 + np.cumsum(rng.normal(0, 0.02, n)), 0.01, 0.99)
    ts = 1_700_000_000_000 + np.cumsum(rng.integers(1, 5000, n)).astype(np.int64)
    vol = np.round(rng.lognormal(2, 1, n), 2)
    vol[::7] = 0.0
    return ts, p, vol


def reference(ts: list[int], p: list[float], v: list[float]) -> list[dict[str, float]]:
    """Straightforward per-tick computation of every component."""
    out = []
    e12 = e26 = sig = obv = num = den = 0.0
    for i in range(len(p)):
        def last(xs: list[float], k: int, i: int = i) -> list[float]:
            return xs[max(0, i + 1 - k): i + 1]
        a12, a26, a9 = 2 / 13, 2 / 27, 2 / 10
        if i == 0:
            e12 = e26 = p[0]
            sig = e12 - e26
        else:
            e12 += a12 * (p[i] - e12)
            e26 += a26 * (p[i] - e26)
            sig += a9 * ((e12 - e26) - sig)
        changes = [p[j] - p[j - 1] for j in range(max(1, i - 13), i + 1)]
        gain = sum(c for c in changes if c > 0)
        loss = sum(-c for c in changes if c < 0)
        w20 = last(p, 20)
        m20 = sum(w20) / len(w20)
        sd = math.sqrt(sum((x - m20) ** 2 for x in w20) / len(w20))
        if i > 0:
            obv += (1 if p[i] > p[i - 1] else -1 if p[i] < p[i - 1] else 0) * v[i]
        num += p[i] * v[i]
        den += v[i]
        t = dt.datetime.fromtimestamp(ts[i] / 1000, dt.UTC)
        wts = last(ts, alpha.WINDOW)  # type: ignore[arg-type]
        span = (max(wts) - min(wts)) / 1000
        q = min(max(p[i], 1e-6), 1 - 1e-6)
        out.append({
            "sma10": float(np.mean(last(p, 10))), "sma20": m20,
            "sma50": float(np.mean(last(p, 50))), "sma200": float(np.mean(last(p, 200))),
            "ema12": e12, "ema26": e26, "rsi14": gain / (gain + loss) if gain + loss else 0.5,
            "macd": e12 - e26, "macd_signal": sig, "bb_upper": m20 + 2 * sd,
            "bb_lower": m20 - 2 * sd,
            "atr14": sum(abs(c) for c in changes) / len(changes) if changes else 0.0,
            "vol_sma10": float(np.mean(last(v, 10))), "obv": obv,
            "vwap": num / den if den else p[i],
            "hour_of_day": t.hour / 23, "weekday": t.weekday() / 6,
            "seconds_of_day": (t.hour * 3600 + t.minute * 60 + t.second) / 86399,
            "log_odds": math.log(q / (1 - q)),
            "tick_rate": (len(wts) - 1) / span if span > 0 else 0.0,
        })
    return out


def test_components_match_the_reference_on_a_random_walk() -> None:
    ts, p, v = walk(300, seed=3)
    _, raw = update(RollingState.empty(), ts, p, v)
    ref = reference(ts.tolist(), p.tolist(), v.tolist())
    assert raw.shape == (300, DIM) and len(COMPONENTS) == DIM == 20
    for name in COMPONENTS:
        expected = np.array([r[name] for r in ref])
        assert np.allclose(raw[:, INDEX[name]], expected, rtol=1e-9, atol=1e-12), name


def test_small_hand_checked_series() -> None:
    p = np.array([0.5, 0.6, 0.55, 0.7])
    v = np.array([10.0, 20.0, 5.0, 0.0])
    ts = np.array([1000, 2000, 3000, 5000], dtype=np.int64)
    _, raw = update(RollingState.empty(), ts, p, v)
    last = dict(zip(COMPONENTS, raw[-1], strict=True))
    assert last["rsi14"] == pytest.approx(0.25 / 0.30)  # gains .1+.15, loss .05
    assert last["atr14"] == pytest.approx(0.30 / 3)
    assert raw[:, INDEX["obv"]].tolist() == pytest.approx([0, 20, 15, 15])
    assert last["vwap"] == pytest.approx((5 + 12 + 2.75) / 35)
    assert last["tick_rate"] == pytest.approx(3 / 4)
    assert raw[0, INDEX["rsi14"]] == 0.5 and raw[0, INDEX["atr14"]] == 0.0


@pytest.mark.parametrize("splits", [[1] * 30, [7, 193, 50, 1, 49], [250], [199, 2, 49]])
def test_any_split_gives_bit_identical_vectors(splits: list[int]) -> None:
    ts, p, v = walk(sum(splits), seed=9)
    _, whole = update(RollingState.empty(), ts, p, v)
    state, parts, i = RollingState.empty(), [], 0
    for n in splits:
        state, raw = update(state, ts[i:i + n], p[i:i + n], v[i:i + n])
        parts.append(raw)
        i += n
        state = RollingState.from_bytes(state.to_bytes())  # as after a restart
    assert np.array_equal(np.vstack(parts), whole)


def test_state_round_trip_and_bad_version() -> None:
    ts, p, v = walk(260)
    state, _ = update(RollingState.empty(), ts, p, v)
    assert len(state.ts) == alpha.WINDOW and state.n == 260
    back = RollingState.from_bytes(state.to_bytes())
    assert back.to_bytes() == state.to_bytes()
    assert np.array_equal(back.prob, state.prob) and back.obv == state.obv
    with pytest.raises(ValueError, match="unknown rolling state"):
        RollingState.from_bytes(b"\x09" + state.to_bytes()[1:])


def test_time_components_on_a_known_timestamp() -> None:
    ts = np.array([1701285965537], dtype=np.int64)  # 2023-11-29T19:26:05.537Z, a Wednesday
    _, raw = update(RollingState.empty(), ts, np.array([0.5]), np.array([1.0]))
    assert raw[0, INDEX["hour_of_day"]] == pytest.approx(19 / 23)
    assert raw[0, INDEX["weekday"]] == pytest.approx(2 / 6)
    assert raw[0, INDEX["seconds_of_day"]] == pytest.approx((19 * 3600 + 26 * 60 + 5) / 86399)


@pytest.mark.parametrize("p", [[0.3] * 40, [0.0, 1.0, 0.0, 1.0], [1.0], [0.0] * 3])
def test_edge_series_stay_finite(p: list[float]) -> None:
    n = len(p)
    ts = np.full(n, 1_700_000_000_000, dtype=np.int64)
    _, raw = update(RollingState.empty(), ts, np.array(p), np.zeros(n))
    assert np.all(np.isfinite(raw))
    u = unit(raw)
    assert u.dtype == np.float32
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-6)


def test_unit_keeps_zero_rows_zero() -> None:
    u = unit(np.array([[0.0] * DIM, [3.0, 4.0] + [0.0] * (DIM - 2)]))
    assert u[0].tolist() == [0.0] * DIM
    assert u[1, :2].tolist() == pytest.approx([0.6, 0.8])


def test_embed_keeps_unbounded_components_from_drowning_the_rest() -> None:
    ts, p, v = walk(100, seed=4)
    _, raw = update(RollingState.empty(), ts, p, v * 1e6)  # whale volumes
    plain, emb = unit(raw), alpha.embed(raw)
    assert abs(plain[-1, INDEX["obv"]]) > 0.99  # OBV alone would be the whole vector
    assert abs(emb[-1, INDEX["obv"]]) < 0.9
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


def test_long_series_matches_a_from_scratch_computation() -> None:
    """No running window sums: tick 5,000's vector is as exact as tick 10's."""
    ts, p, v = walk(5000, seed=21)
    state, parts = RollingState.empty(), []
    for i in range(0, 5000, 37):  # in uneven pieces, as batches cut a stream
        state, raw = update(state, ts[i:i + 37], p[i:i + 37], v[i:i + 37])
        parts.append(raw)
    raw = np.vstack(parts)
    ref = reference(ts.tolist(), p.tolist(), v.tolist())
    for name in COMPONENTS:
        expected = np.array([r[name] for r in ref])
        assert np.allclose(raw[:, INDEX[name]], expected, rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_markets_at_once_equal_each_market_alone(seed: int) -> None:
    """update_many over random batches of interleaved markets == one market at a time,
    bit for bit, however the stream is cut."""
    rng = np.random.default_rng(seed)
    markets = 23
    series = {m: walk(int(rng.integers(1, 400)), seed=100 * seed + m) for m in range(markets)}
    alone = {m: update(RollingState.empty(), *series[m])[1] for m in range(markets)}
    order = np.concatenate([np.full(len(series[m][0]), m) for m in range(markets)])
    rng.shuffle(order)  # arrival order across markets; each market's ticks stay in order
    states = {m: RollingState.empty() for m in range(markets)}
    done = dict.fromkeys(range(markets), 0)
    got: dict[int, list[np.ndarray]] = {m: [] for m in range(markets)}
    i = 0
    while i < len(order):
        cut = order[i:i + int(rng.integers(1, 300))]
        i += len(cut)
        batch = sorted(set(cut.tolist()))
        counts = np.array([int((cut == m).sum()) for m in batch])
        cols: list[list[np.ndarray]] = [[], [], []]
        for m, c in zip(batch, counts.tolist(), strict=True):
            for col, arr in zip(cols, series[m], strict=True):
                col.append(arr[done[m]:done[m] + c])
            done[m] += c
        new, raw = alpha.update_many([states[m] for m in batch], counts,
                                     *(np.concatenate(col) for col in cols))
        start = 0
        for m, c, state in zip(batch, counts.tolist(), new, strict=True):
            got[m].append(raw[start:start + c])
            start += c
            states[m] = RollingState.from_bytes(state.to_bytes())
    for m in range(markets):
        assert np.array_equal(np.vstack(got[m]), alone[m]), m
        assert states[m].n == len(series[m][0])


def test_both_forms_of_the_recurrences_give_the_same_bits() -> None:
    rng = np.random.default_rng(5)
    states: list[RollingState] = []
    counts: list[int] = []
    cols: list[list[np.ndarray]] = [[], [], []]
    for m in range(40):
        n_old, n_new = int(rng.integers(0, 30)), int(rng.integers(0, 25))
        ts, p, v = walk(n_old + n_new, seed=200 + m)
        state = update(RollingState.empty(), ts[:n_old], p[:n_old], v[:n_old])[0]
        states.append(state)
        counts.append(n_new)
        for col, arr in zip(cols, (ts, p, v), strict=True):
            col.append(arr[n_old:])
    c = np.array(counts)
    ts, p, v = (np.concatenate(col) for col in cols)
    a, b = np.zeros((len(p), DIM)), np.zeros((len(p), DIM))
    assert alpha._recurrences_by_step(states, c, p, v, a) == alpha._recurrences_by_tick(
        states, c, p, v, b)
    assert np.array_equal(a, b)
