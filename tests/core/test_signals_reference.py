"""The vectorised rule evaluation against a plain tick-by-tick reference.

:func:`gswarm.core.signals.evaluate_many` computes every rule's condition for every tick of
a batch at once and keeps each market's edge state as arrays. This module evaluates the
same rules the slow, obvious way (one market, one tick, one rule at a time, straight from
the definitions in :mod:`gswarm.core.signals`' docstring) and checks both give the same
signals, ids and values, over random streams of many markets cut into random batches
(with redeliveries), through the stored record and signal state between batches (half way
through, in the JSON form of older records).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import numpy as np
import orjson
import pytest

from gswarm.core import alpha
from gswarm.core.facts import seq_for
from gswarm.core.ingest import Arrival, MarketRecord, apply_batch
from gswarm.core.signals import MarketSignals, Rule, RuleSet, Signal, parse_rules
from gswarm.core.ticks import Tick

RULES = """
[[rule]]
id = "jump"
kind = "move"
delta = 0.08
within_s = 30
cooldown_s = 20
[[rule]]
id = "jump-fast"
kind = "move"
delta = 0.04
within_s = 3
[[rule]]
id = "whale"
kind = "whale"
volume = 900
factor = 4
min_ticks = 5
[[rule]]
id = "whale-x"
kind = "whale"
factor = 3
cooldown_s = 5
[[rule]]
id = "busy"
kind = "spike"
factor = 2
min_ticks = 8
[[rule]]
id = "band"
kind = "alpha"
band = "outside"
min_ticks = 5
cooldown_s = 12
[[rule]]
id = "rsi-high"
kind = "alpha"
component = "rsi14"
op = "gt"
value = 0.7
[[rule]]
id = "macd-neg"
kind = "alpha"
component = "macd"
op = "le"
value = -0.01
min_ticks = 3
[[rule]]
id = "half"
kind = "cross"
level = 0.5
[[rule]]
id = "high-up"
kind = "cross"
level = 0.6
direction = "up"
cooldown_s = 10
[[rule]]
id = "b-only"
kind = "cross"
level = 0.45
direction = "down"
prefixes = ["b"]
[[rule]]
id = "res"
kind = "resolved"
"""


def _holds(rule: Rule, i: int, ts: list[int], prob: list[float], vol: list[float],
           raw: np.ndarray, first: int) -> tuple[bool, dict[str, Any]]:
    """Whether ``rule`` holds at tick ``i`` of one market (all its ticks from the first),
    and the values a signal would carry."""
    q, p = rule.params, prob[i]
    if rule.kind == "move":
        best, at = 0.0, -1
        for r in range(1, min(i, alpha.WINDOW) + 1):
            if float(ts[i] - ts[i - r]) > q["within_s"] * 1000.0:
                break
            d = abs(p - prob[i - r])
            if d > best:
                best, at = d, i - r
        return best >= q["delta"], ({"prob": p, "from_prob": prob[at], "from_ts": ts[at],
                                     "delta": p - prob[at]} if at >= 0 else {})
    if rule.kind == "cross":
        prev = prob[i - 1] if i else math.nan
        level = q["level"]
        up, down = prev < level <= p, p < level <= prev
        hold = up if q["direction"] == "up" else down if q["direction"] == "down" else (
            up or down)
        return hold, {"prob": p, "from_prob": prev, "level": level,
                      "direction": "up" if p >= level else "down"}
    if rule.kind == "whale":
        if q["volume"] is not None and vol[i] >= q["volume"]:
            return True, {"volume": vol[i], "prob": p}
        if q["factor"] is not None and i >= q["min_ticks"] and i:
            base = float(raw[i - 1, alpha.INDEX["vol_sma10"]])
            if base > 0 and vol[i] >= q["factor"] * base:
                return True, {"volume": vol[i], "vol_sma10": base, "ratio": vol[i] / base,
                              "prob": p}
        return False, {}
    if rule.kind == "spike":
        span = (ts[i] - first) / 1000.0
        longrun = i / span if span > 0 else math.nan
        rate = float(raw[i, alpha.INDEX["tick_rate"]])
        hold = i + 1 >= q["min_ticks"] and longrun > 0 and rate >= q["factor"] * longrun
        return hold, {"tick_rate": rate, "long_run_rate": longrun,
                      "ratio": rate / longrun if hold else 0}
    enough = i + 1 >= q["min_ticks"]
    row = raw[i]
    if q["band"] is not None:
        upper, lower = float(row[alpha.INDEX["bb_upper"]]), float(row[alpha.INDEX["bb_lower"]])
        hit = {"above": p > upper, "below": p < lower, "outside": p > upper or p < lower}
        return enough and hit[q["band"]], {"prob": p, "bb_upper": upper, "bb_lower": lower}
    x, value = float(row[alpha.INDEX[q["component"]]]), q["value"]
    hit = {"gt": x > value, "ge": x >= value, "lt": x < value, "le": x <= value}[q["op"]]
    return enough and hit, {q["component"]: x, "prob": p}


def reference(rules: RuleSet, ticks: list[tuple[str, int, int, float, float]]) -> list[Signal]:
    """Every signal over ``ticks`` (market, ts, seq, prob, volume), market by market, tick
    by tick, rule by rule: edge-triggered, with cool-downs of event time."""
    by_market: dict[str, list[tuple[int, int, float, float]]] = {}
    for market, t, s, p, v in ticks:
        by_market.setdefault(market, []).append((t, s, p, v))
    out: list[Signal] = []
    for market, rows in by_market.items():
        ts = [r[0] for r in rows]
        prob = [r[2] for r in rows]
        vol = [r[3] for r in rows]
        _, raw = alpha.update(alpha.RollingState.empty(), np.array(ts, dtype=np.int64),
                              np.array(prob), np.array(vol))
        mine = rules.for_market(market)
        on = {r.id: False for r in mine}
        last: dict[str, int] = {}
        for i, (t, s, _, _) in enumerate(rows):
            for rule in mine:
                hold, values = _holds(rule, i, ts, prob, vol, raw, ts[0])
                edge = hold if rule.kind == "cross" else hold and not on[rule.id]
                on[rule.id] = hold
                if not edge:
                    continue
                if rule.cooldown_ms and rule.id in last and t - last[rule.id] < rule.cooldown_ms:
                    continue
                last[rule.id] = t
                out.append({"id": f"{rule.id}:{market}:{s}", "rule": rule.id,
                            "kind": rule.kind, "market": market, "ts": t, "seq": s,
                            "values": values})
    return out


def _stream(seed: int, n: int) -> list[Tick]:
    """Random walks in a few markets: bursts of ticks, quiet gaps, late (out of order)
    event times, volumes with whales, prices crossing the rules' levels."""
    rng = random.Random(seed)
    markets = [f"{x}{i}" for x in "ab" for i in range(4)]
    price = {m: rng.uniform(0.3, 0.7) for m in markets}
    clock = {m: 1_700_000_000_000 + rng.randrange(10**6) for m in markets}
    out = []
    for k in range(n):
        m = rng.choice(markets)
        clock[m] += rng.choice([50, 200, 1000, 1000, 4000, 30_000])
        ts = clock[m] - (rng.randrange(5000) if rng.random() < 0.05 else 0)
        price[m] = min(0.98, max(0.02, price[m] + rng.gauss(0, 0.03)))
        volume = rng.choice([1.0, 5.0, 10.0, 20.0, 1000.0]) * rng.random()
        out.append(Tick(m, round(price[m], 4), ts, volume, f"u{rng.randrange(9)}", "synthetic",
                        "YES", f"bet-{k}"))
    return out


def _with_json_state(data: bytes, rules: RuleSet) -> bytes:
    """A market record whose signal state is in the JSON form records had before the
    binary one."""
    record = MarketRecord.decode(data)
    state = MarketSignals.from_bytes(record.signal_state, rules)
    doc = {"r": {k: [int(on), t] for k, (on, t) in state.rules.items()}, "f": state.first_ts}
    return dataclasses.replace(record, signal_state=orjson.dumps(doc)).encode()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_batched_evaluation_equals_the_tick_by_tick_reference(seed: int) -> None:
    rules = parse_rules(RULES)
    ticks = _stream(seed, 1500)
    arrivals = [Arrival(i, 0, t) for i, t in enumerate(ticks)]
    want = reference(rules, [(a.tick.market, a.tick.ts, seq_for(a.offset, a.index),
                              a.tick.prob, a.tick.volume) for a in arrivals])
    assert len({s["rule"] for s in want}) >= 10, "the stream should fire most rules"
    rng = random.Random(seed)
    records: dict[str, bytes] = {}
    got: list[Signal] = []
    i = 0
    while i < len(arrivals):
        n = rng.choice([1, 3, 20, 150, 400])
        again = arrivals[max(0, i - rng.choice([0, 0, 5])):i]  # redelivered: never fire
        groups: dict[str, list[Arrival]] = {}
        for a in again + arrivals[i:i + n]:
            groups.setdefault(a.tick.market, []).append(a)
        work = [(m, MarketRecord.decode(records[m]) if m in records else None, a)
                for m, a in groups.items()]
        for (m, _, _), applied in zip(work, apply_batch(work, rules), strict=True):
            got += applied.signals
            records[m] = applied.record.encode()
        if i < len(arrivals) // 2 <= i + n:  # records of an older release: state as JSON
            records = {m: _with_json_state(r, rules) for m, r in records.items()}
        i += n

    def key(s: Signal) -> tuple[str, int]:
        return s["market"], s["seq"]

    assert sorted(got, key=key) == sorted(want, key=key)
