"""Signals: alert rules evaluated on every tick of a market, edge-triggered.

Pure Python (no Faust). Rules come from a TOML file (``signals/rules.toml``), one
``[[rule]]`` table each::

    [[rule]]
    id = "jump"             # letters, digits, - _ . (part of every signal id)
    kind = "move"           # move, cross, whale, spike, alpha, resolved
    delta = 0.10            # the kind's parameters (below)
    within_s = 60
    cooldown_s = 300        # optional: no new signal of this rule and market for this long
    markets = ["abc"]       # optional filter: these market ids ...
    prefixes = ["0x"]       # ... or ids starting with one of these (neither: every market)

Kinds and their parameters (``p`` is the tick's probability, "the vector" its raw alpha
vector, the one right after the tick, :mod:`gswarm.core.alpha`):

- ``move``: ``delta``, ``within_s``: ``|p - p'| >= delta`` for a previous tick ``p'`` of the
  market whose event time is at most ``within_s`` before the tick's (looking back through
  the previous ticks, newest first, while they are within the window; at most
  ``alpha.WINDOW`` of them). The values name the largest such move.
- ``cross``: ``level``, ``direction`` (``up``, ``down`` or ``both``, default ``both``): the
  previous tick was below ``level`` and this one is at or above it (up), or the reverse.
  A crossing is itself the edge: down and straight back up are two signals.
- ``whale``: ``volume`` and/or ``factor`` (with ``min_ticks``, default 10): the tick's volume
  is at least ``volume``, or at least ``factor`` times ``vol_sma10`` of the vector before the
  tick (once the market has ``min_ticks`` earlier ticks).
- ``spike``: ``factor`` (with ``min_ticks``, default 50): the vector's ``tick_rate`` (over the
  last ``alpha.WINDOW`` ticks) is at least ``factor`` times the market's long-run rate,
  ``(n - 1) / (ts - first ts)`` over every tick since the first this evaluator saw.
- ``alpha``: ``component``, ``op`` (``gt ge lt le``), ``value``: a component of the vector
  compared with ``value``; or ``band = "above" | "below" | "outside"``: ``p`` above
  ``bb_upper``, below ``bb_lower``, or either. Both with ``min_ticks`` (default 20).
- ``resolved``: (optional ``outcome``): the market's resolution arrives from a live feed's
  metadata (a new non-null ``market/resolution``, or one that changed).

Edge-triggered: a rule fires when its condition starts to hold for a market (it held not
at the market's previous tick), not again while it holds; with a cool-down, an edge within
``cooldown_s`` of event time after the rule's last signal for the market is dropped. The
per-market state (:class:`MarketSignals`) holds each rule's edge and last signal time;
:func:`evaluate` is a function of that state and the ticks, so the same ticks give the same
signals however they are split into batches. A signal's id is ``rule:market:seq`` (``seq``
as in :mod:`gswarm.core.facts`: the tick's offset and index), the same on every run.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from gswarm.core import alpha
from gswarm.errors import ConfigError

KINDS = ("move", "cross", "whale", "spike", "alpha", "resolved")
OPS = ("gt", "ge", "lt", "le")
BANDS = ("above", "below", "outside")
DIRECTIONS = ("up", "down", "both")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_COMMON = {"id", "kind", "cooldown_s", "markets", "prefixes"}

#: kind -> parameter -> (type, required, default); a number is a finite float
_PARAMS: dict[str, dict[str, tuple[type, bool, Any]]] = {
    "move": {"delta": (float, True, None), "within_s": (float, True, None)},
    "cross": {"level": (float, True, None), "direction": (str, False, "both")},
    "whale": {"volume": (float, False, None), "factor": (float, False, None),
              "min_ticks": (int, False, 10)},
    "spike": {"factor": (float, True, None), "min_ticks": (int, False, 50)},
    "alpha": {"component": (str, False, None), "op": (str, False, None),
              "value": (float, False, None), "band": (str, False, None),
              "min_ticks": (int, False, 20)},
    "resolved": {"outcome": (str, False, None)},
}


class RulesError(ConfigError):
    """A rules file is invalid: the message names the file, the line and the reason."""


@dataclass(frozen=True)
class Rule:
    """One validated rule; ``params`` holds the kind's parameters with their defaults."""

    id: str
    kind: str
    params: Mapping[str, Any]
    cooldown_ms: int = 0
    markets: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    line: int = 0

    def matches(self, market: str) -> bool:
        """Whether the rule watches ``market`` (its filter; no filter: every market)."""
        if not self.markets and not self.prefixes:
            return True
        return market in self.markets or market.startswith(self.prefixes)


@dataclass
class RuleSet:
    """The rules of a file, with each market's matching tick rules cached."""

    rules: tuple[Rule, ...] = ()
    path: str = ""
    _cache: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)

    def for_market(self, market: str) -> tuple[Rule, ...]:
        """The tick rules (every kind but ``resolved``) that watch ``market``."""
        hit = self._cache.get(market)
        if hit is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            hit = self._cache[market] = tuple(
                r for r in self.rules if r.kind != "resolved" and r.matches(market))
        return hit

    def resolved_for(self, market: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.kind == "resolved" and r.matches(market))

    def __bool__(self) -> bool:
        return bool(self.rules)


# -- the rules file ------------------------------------------------------------------------


def load_rules(path: Path | str) -> RuleSet:
    """Read and check a rules file; raise :class:`RulesError` (file, line, reason)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RulesError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return parse_rules(text, str(path))


def parse_rules(text: str, name: str = "<rules>") -> RuleSet:
    """Parse the text of a rules file named ``name`` (for messages)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "(at line L, column C)" itself
        raise RulesError(f"{name}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"rule"})
    if unknown:
        line = _line_of_key(text, 0, unknown[0], top=True)
        raise RulesError(f"{name}:{line}: unknown top-level key {unknown[0]!r} (rules are "
                         "[[rule]] tables)")
    entries = doc.get("rule", [])
    if not isinstance(entries, list):
        raise RulesError(f"{name}:{_line_of_key(text, 0, 'rule', top=True)}: 'rule' must be "
                         "an array of tables ([[rule]])")
    starts = _table_lines(text)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for n, entry in enumerate(entries):
        start = starts[n] if n < len(starts) else 0
        rule = _rule(entry, text, start, name)
        if rule.id in seen:
            raise RulesError(f"{name}:{start}: rule id {rule.id!r} is used twice (first at "
                             f"line {seen[rule.id]})")
        seen[rule.id] = start
        rules.append(rule)
    return RuleSet(tuple(rules), name)


_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rule[ \t]*\]\]", re.M)
_ANY_HEADER = re.compile(r"^[ \t]*\[")


def _table_lines(text: str) -> list[int]:
    """1-based line numbers of each ``[[rule]]`` header, in order."""
    return [text.count("\n", 0, m.start()) + 1 for m in _HEADER.finditer(text)]


def _line_of_key(text: str, start: int, key: str, top: bool = False) -> int:
    """The line of ``key = ...`` in the table whose header is on line ``start`` (or above
    every table with ``top``); the header's line if the key is not written there."""
    lines = text.split("\n")
    pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
    for i in range(0 if top else start, len(lines)):
        if _ANY_HEADER.match(lines[i]):
            if top and key == "rule":
                return i + 1
            break
        if pattern.match(lines[i]):
            return i + 1
    return max(start, 1)


def _rule(entry: Any, text: str, start: int, name: str) -> Rule:
    def fail(key: str | None, reason: str) -> RulesError:
        line = _line_of_key(text, start, key) if key else start
        rid = entry.get("id") if isinstance(entry, dict) else None
        what = f"rule {rid!r}" if isinstance(rid, str) else "rule"
        return RulesError(f"{name}:{line}: {what}: {reason}")

    if not isinstance(entry, dict):
        raise RulesError(f"{name}:{start}: a rule must be a table")
    rid = entry.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise fail("id" if "id" in entry else None,
                   "needs an id of 1-64 letters, digits, '-', '_' or '.'")
    kind = entry.get("kind")
    if kind not in _PARAMS:
        raise fail("kind" if "kind" in entry else None,
                   f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    schema = _PARAMS[kind]
    for key in entry:
        if key not in _COMMON and key not in schema:
            raise fail(key, f"unknown parameter {key!r} for kind {kind!r} (known: "
                            f"{', '.join(sorted(schema))})")
    params: dict[str, Any] = {}
    for key, (typ, required, default) in schema.items():
        if key not in entry:
            if required:
                raise fail(None, f"kind {kind!r} needs {key!r}")
            params[key] = default
            continue
        params[key] = _typed(entry[key], typ, lambda r, k=key: fail(k, f"{k} {r}"))
    _check_kind(kind, params, fail)
    cooldown = entry.get("cooldown_s", 0)
    cooldown = _typed(cooldown, float, lambda r: fail("cooldown_s", f"cooldown_s {r}"))
    if cooldown < 0:
        raise fail("cooldown_s", "cooldown_s must be >= 0")
    markets = _strings(entry, "markets", fail)
    prefixes = _strings(entry, "prefixes", fail)
    return Rule(rid, kind, params, round(cooldown * 1000), frozenset(markets),
                tuple(prefixes), start)


def _typed(value: Any, typ: type, fail: Any) -> Any:
    if typ is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise fail(f"must be a finite number, got {value!r}")
        return float(value)
    if typ is int:
        if type(value) is not int or value < 0:
            raise fail(f"must be a whole number >= 0, got {value!r}")
        return value
    if not isinstance(value, str):
        raise fail(f"must be a string, got {value!r}")
    return value


def _strings(entry: dict[str, Any], key: str, fail: Any) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(key, f"{key} must be a list of non-empty strings")
    return list(value)


def _check_kind(kind: str, p: dict[str, Any], fail: Any) -> None:
    """Ranges and combinations each kind needs."""
    if kind == "move":
        if not 0 < p["delta"] <= 1:
            raise fail("delta", "delta must be in (0, 1]")
        if p["within_s"] <= 0:
            raise fail("within_s", "within_s must be > 0")
    elif kind == "cross":
        if not 0 < p["level"] < 1:
            raise fail("level", "level must be in (0, 1)")
        if p["direction"] not in DIRECTIONS:
            raise fail("direction", f"direction must be one of {', '.join(DIRECTIONS)}")
    elif kind == "whale":
        if p["volume"] is None and p["factor"] is None:
            raise fail(None, "kind 'whale' needs 'volume' or 'factor' (or both)")
        for key in ("volume", "factor"):
            if p[key] is not None and p[key] <= 0:
                raise fail(key, f"{key} must be > 0")
    elif kind == "spike":
        if p["factor"] <= 0:
            raise fail("factor", "factor must be > 0")
        if p["min_ticks"] < 2:
            raise fail("min_ticks", "min_ticks must be >= 2")
    elif kind == "alpha":
        if p["band"] is not None:
            if p["band"] not in BANDS:
                raise fail("band", f"band must be one of {', '.join(BANDS)}")
            if p["component"] is not None or p["op"] is not None or p["value"] is not None:
                raise fail("band", "give either band or component/op/value, not both")
        else:
            if p["component"] is None or p["op"] is None or p["value"] is None:
                raise fail(None, "kind 'alpha' needs component, op and value (or band)")
            if p["component"] not in alpha.INDEX:
                raise fail("component", f"unknown alpha component {p['component']!r} (one "
                                        f"of {', '.join(alpha.COMPONENTS)})")
            if p["op"] not in OPS:
                raise fail("op", f"op must be one of {', '.join(OPS)}")


# -- per-market state ------------------------------------------------------------------------


@dataclass
class MarketSignals:
    """A market's signal state: per rule (edge held at the last tick, last signal's event
    time), and the event time of the first tick seen (for ``spike``)."""

    rules: dict[str, tuple[bool, int | None]] = field(default_factory=dict)
    first_ts: int | None = None

    def to_bytes(self) -> bytes:
        if not self.rules and self.first_ts is None:
            return b""
        return orjson.dumps({"r": {k: [int(a), t] for k, (a, t) in sorted(self.rules.items())},
                             "f": self.first_ts})

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> MarketSignals:
        if not data:
            return cls()
        doc = orjson.loads(bytes(data))
        return cls({k: (bool(a), t) for k, (a, t) in doc["r"].items()}, doc["f"])


Signal = dict[str, Any]
F64 = NDArray[Any]


def signal_id(rule: str, market: str, seq: int) -> str:
    return f"{rule}:{market}:{seq}"


def make_signal(rule: Rule, market: str, ts: int, seq: int, values: dict[str, Any]) -> Signal:
    return {"id": signal_id(rule.id, market, seq), "rule": rule.id, "kind": rule.kind,
            "market": market, "ts": ts, "seq": seq, "values": values}


_VOL = alpha.INDEX["vol_sma10"]
_RATE = alpha.INDEX["tick_rate"]
_UPPER, _LOWER = alpha.INDEX["bb_upper"], alpha.INDEX["bb_lower"]


def evaluate(
    rules: Sequence[Rule], state: MarketSignals, market: str, history: alpha.RollingState,
    prev_vector: Sequence[float] | None, ts: Sequence[int], seq: Sequence[int],
    prob: Sequence[float], volume: Sequence[float], raw: F64,
) -> tuple[MarketSignals, list[Signal]]:
    """One market's new ticks (in arrival order) through its tick rules.

    ``history`` is the market's rolling state *before* these ticks, ``prev_vector`` the raw
    alpha vector after its last tick (None for a new market), ``raw[i]`` the vector after
    tick ``i``. Returns the new state and the signals fired, in tick then rule order; the
    input state is not changed.
    """
    rules = [r for r in rules if r.kind != "resolved"]
    if not rules or not len(ts):
        return state, []
    edges = dict(state.rules)
    first_ts = state.first_ts
    if first_ts is None:
        first_ts = int(history.ts[0]) if history.n else int(ts[0])
    past_ts: list[int] = history.ts.tolist()
    past_p: list[float] = history.prob.tolist()
    rows: list[list[float]] = raw.tolist()
    prev_row = list(prev_vector) if prev_vector is not None else None
    n0 = history.n
    out: list[Signal] = []
    for i, (t, s, p, v) in enumerate(zip(ts, seq, prob, volume, strict=True)):
        t, s = int(t), int(s)
        row = rows[i]
        before = n0 + i  # ticks of the market before this one
        first_ts = min(first_ts, t)
        for rule in rules:
            values = _condition(rule, t, p, v, row, prev_row, before, first_ts, past_ts,
                                past_p)
            active, last = edges.get(rule.id, (False, None))
            # a crossing is itself an edge (from one side to the other): a cross down then
            # straight back up is two
            if values is not None and (not active or rule.kind == "cross") and (
                    last is None or t - last >= rule.cooldown_ms):
                out.append(make_signal(rule, market, t, s, values))
                last = t
            if values is not None or active or last is not None:
                edges[rule.id] = (values is not None, last)
        past_ts.append(t)
        past_p.append(p)
        prev_row = row
    return MarketSignals(edges, first_ts), out


def _condition(
    rule: Rule, t: int, p: float, v: float, row: list[float], prev_row: list[float] | None,
    before: int, first_ts: int, past_ts: list[int], past_p: list[float],
) -> dict[str, Any] | None:
    """The values that make ``rule`` hold at this tick, or None if it does not."""
    k, q = rule.kind, rule.params
    if k == "move":
        cutoff = t - q["within_s"] * 1000.0
        best, at = 0.0, -1
        lo = max(len(past_ts) - alpha.WINDOW, 0)
        for j in range(len(past_ts) - 1, lo - 1, -1):
            if past_ts[j] < cutoff:
                break
            d = abs(p - past_p[j])
            if d > best:
                best, at = d, j
        if at < 0 or best < q["delta"]:
            return None
        return {"prob": p, "from_prob": past_p[at], "from_ts": past_ts[at],
                "delta": p - past_p[at]}
    if k == "cross":
        if not past_p:
            return None
        prev, level, way = past_p[-1], q["level"], q["direction"]
        if prev < level <= p and way != "down":
            return {"prob": p, "from_prob": prev, "level": level, "direction": "up"}
        if p < level <= prev and way != "up":
            return {"prob": p, "from_prob": prev, "level": level, "direction": "down"}
        return None
    if k == "whale":
        if q["volume"] is not None and v >= q["volume"]:
            return {"volume": v, "prob": p}
        if q["factor"] is not None and prev_row is not None and before >= q["min_ticks"]:
            base = prev_row[_VOL]
            if base > 0 and v >= q["factor"] * base:
                return {"volume": v, "vol_sma10": base, "ratio": v / base, "prob": p}
        return None
    if k == "spike":
        if before + 1 < q["min_ticks"] or t <= first_ts:
            return None
        longrun = before / ((t - first_ts) / 1000.0)
        rate = row[_RATE]
        if longrun > 0 and rate >= q["factor"] * longrun:
            return {"tick_rate": rate, "long_run_rate": longrun, "ratio": rate / longrun}
        return None
    # alpha
    if before + 1 < q["min_ticks"]:
        return None
    band = q["band"]
    if band is not None:
        up, low = row[_UPPER], row[_LOWER]
        if (p > up and band != "below") or (p < low and band != "above"):
            return {"prob": p, "bb_upper": up, "bb_lower": low}
        return None
    x = row[alpha.INDEX[q["component"]]]
    op, value = q["op"], q["value"]
    hit = (x > value if op == "gt" else x >= value if op == "ge"
           else x < value if op == "lt" else x <= value)
    return {q["component"]: x, "prob": p} if hit else None


def resolved_signals(
    rules: Sequence[Rule], market: str, resolution: Any, ts: int, seq: int,
) -> list[Signal]:
    """Signals of ``resolved`` rules for a market's new resolution (not null)."""
    if resolution is None:
        return []
    return [make_signal(r, market, ts, seq, {"resolution": resolution}) for r in rules
            if r.kind == "resolved" and r.matches(market)
            and (r.params["outcome"] is None or r.params["outcome"] == resolution)]


def offline(
    rules: RuleSet, ticks: Sequence[tuple[str, int, int, float, float]],
) -> list[Signal]:
    """Every signal of ``rules`` over ``ticks`` (market, ts, seq, prob, volume) in arrival
    order, evaluated one market at a time in one pass: the ground truth tests compare the
    stream's signals with."""
    by_market: dict[str, list[tuple[int, int, float, float]]] = {}
    for market, t, s, p, v in ticks:
        by_market.setdefault(market, []).append((t, s, p, v))
    out: list[Signal] = []
    for market, rows in by_market.items():
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        prob = np.array([r[2] for r in rows], dtype=np.float64)
        vol = np.array([r[3] for r in rows], dtype=np.float64)
        _, raw = alpha.update(alpha.RollingState.empty(), ts, prob, vol)
        _, fired = evaluate(rules.for_market(market), MarketSignals(), market,
                            alpha.RollingState.empty(), None, ts.tolist(),
                            [r[1] for r in rows], prob.tolist(), vol.tolist(), raw)
        out += fired
    return out
