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
``cooldown_s`` of event time after the rule's last signal for the market (or before it: a
late tick) is dropped; without one, every edge fires. The per-market state (:class:`States`
for many markets at once, stored as a few bytes per market) holds each rule's edge and,
for rules with a cool-down, the last signal's time; :func:`evaluate_many` is a function of
that state and the ticks, so the same ticks give the same signals however they are split
into batches. A signal's id is ``rule:market:seq`` (``seq``
as in :mod:`gswarm.core.facts`: the tick's offset and index), the same on every run.
"""

from __future__ import annotations

import math
import re
import struct
import tomllib
import zlib
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
    #: the rules evaluated on ticks (every kind but ``resolved``), in file order: the
    #: columns of :class:`States`
    tick_rules: tuple[Rule, ...] = field(init=False, repr=False)
    keys: NDArray[np.uint32] = field(init=False, repr=False)  # rule_key of each tick rule
    filtered: bool = field(init=False, repr=False)  # some tick rule has a market filter

    def __post_init__(self) -> None:
        self.tick_rules = tuple(r for r in self.rules if r.kind != "resolved")
        self.keys = np.array([rule_key(r.id) for r in self.tick_rules], dtype=np.uint32)
        self.filtered = any(r.markets or r.prefixes for r in self.tick_rules)

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
        same = [r for r in rules if rule_key(r.id) == rule_key(rule.id)]
        if same:  # the stored state keys rules by a crc32 of the id
            raise RulesError(f"{name}:{start}: rule ids {same[0].id!r} and {rule.id!r} have "
                             "the same crc32, under which signal state is stored: rename one")
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

#: a never-set time in the state arrays (no first tick seen, no signal fired yet)
NO_TIME = int(np.iinfo(np.int64).min)
_STATE_VERSION = 1
#: one stored entry: the rule (crc32 of its id), whether its condition held at the market's
#: last tick, the event time of its last signal (kept only for rules with a cool-down)
_ENTRY = np.dtype([("key", "<u4"), ("on", "u1"), ("last", "<i8")])  # packed: 13 bytes
_FIRST = struct.Struct("<Bq")


def rule_key(rule_id: str) -> int:
    """The 4-byte key a rule's entries are stored under (crc32 of its id)."""
    return zlib.crc32(rule_id.encode())


@dataclass
class States:
    """Many markets' signal states as arrays: ``first[m]`` the event time of the first tick
    the evaluator saw, ``on[m, r]`` whether tick rule ``r``'s condition held at the market's
    last tick, ``last[m, r]`` the event time of its last signal (:data:`NO_TIME`: none)."""

    first: NDArray[np.int64]
    on: NDArray[np.bool_]
    last: NDArray[np.int64]


def decode_states(rules: RuleSet, data: Sequence[bytes]) -> States:
    """The stored states of many markets (``b""``: none yet), as arrays over the tick rules
    of ``rules``. Entries of rules no longer in the file are dropped; a state written as
    JSON (records before the binary form) is read through :meth:`MarketSignals.from_json`."""
    m, keys = len(data), rules.keys
    first = np.full(m, NO_TIME, dtype=np.int64)
    on = np.zeros((m, len(keys)), dtype=bool)
    last = np.full((m, len(keys)), NO_TIME, dtype=np.int64)
    data = [d if not d or d[0] == _STATE_VERSION
            else MarketSignals.from_json(d).to_bytes(rules) for d in data]
    stored = [i for i, d in enumerate(data) if d]
    if not stored or not len(keys):
        for i in stored:
            first[i] = _FIRST.unpack_from(data[i])[1]
        return States(first, on, last)
    first[stored] = [_FIRST.unpack_from(data[i])[1] for i in stored]
    body = b"".join(data[i][_FIRST.size:] for i in stored)
    if body:
        entries = np.frombuffer(body, dtype=_ENTRY)
        sizes = np.fromiter((len(data[i]) - _FIRST.size for i in stored), np.int64, len(stored))
        owner = np.repeat(np.asarray(stored), sizes // _ENTRY.itemsize)
        order = np.argsort(keys)
        at = np.minimum(np.searchsorted(keys, entries["key"], sorter=order), len(keys) - 1)
        col = order[at]
        known = keys[col] == entries["key"]
        on[owner[known], col[known]] = entries["on"][known].astype(bool)
        last[owner[known], col[known]] = entries["last"][known]
    return States(first, on, last)


def encode_states(rules: RuleSet, states: States) -> list[bytes]:
    """The stored form of each market's state: its first time, then an entry for each rule
    whose condition holds or that has a last signal time, in rule order (the same bytes for
    the same state, whatever the batches)."""
    keep = states.on | (states.last != NO_TIME)
    rows, cols = np.nonzero(keep)
    entries = np.empty(len(rows), dtype=_ENTRY)
    entries["key"] = rules.keys[cols]
    entries["on"] = states.on[rows, cols]
    entries["last"] = states.last[rows, cols]
    body = entries.tobytes()
    ends = (np.cumsum(keep.sum(axis=1)) * _ENTRY.itemsize).tolist()
    out: list[bytes] = []
    start = 0
    for f, end in zip(states.first.tolist(), ends, strict=True):
        out.append(_FIRST.pack(_STATE_VERSION, f) + body[start:end])
        start = end
    return out


@dataclass
class MarketSignals:
    """One market's signal state, readable: per rule id (condition held at the last tick,
    last signal's event time), and the event time of the first tick seen (for ``spike``).
    The stored form keys rules by :func:`rule_key`, so reading it back needs the rules."""

    rules: dict[str, tuple[bool, int | None]] = field(default_factory=dict)
    first_ts: int | None = None

    def to_bytes(self, rules: RuleSet) -> bytes:
        """The stored form (:func:`encode_states`) for the tick rules of ``rules``; entries
        of other rules are not kept."""
        if not self.rules and self.first_ts is None:
            return b""
        held = [self.rules.get(r.id, (False, None)) for r in rules.tick_rules]
        return encode_states(rules, States(
            np.array([NO_TIME if self.first_ts is None else self.first_ts], dtype=np.int64),
            np.array([[on for on, _ in held]], dtype=bool).reshape(1, len(held)),
            np.array([[NO_TIME if t is None else t for _, t in held]],
                     dtype=np.int64).reshape(1, len(held))))[0]

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, rules: RuleSet) -> MarketSignals:
        """The state of ``data`` for the tick rules of ``rules``."""
        if not data:
            return cls()
        s = decode_states(rules, [bytes(data)])
        first = int(s.first[0])
        return cls({r.id: (bool(s.on[0, k]), None if s.last[0, k] == NO_TIME
                           else int(s.last[0, k]))
                    for k, r in enumerate(rules.tick_rules)
                    if s.on[0, k] or s.last[0, k] != NO_TIME},
                   None if first == NO_TIME else first)

    @classmethod
    def from_json(cls, data: bytes) -> MarketSignals:
        """A state stored as JSON (``{"r": {rule: [held, last]}, "f": first}``)."""
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
    """One market's new ticks (in arrival order) through ``rules`` (its tick rules).

    ``history`` is the market's rolling state *before* these ticks, ``prev_vector`` the raw
    alpha vector after its last tick (None for a new market), ``raw[i]`` the vector after
    tick ``i``. Returns the new state and the signals fired, in tick then rule order; the
    input state is not changed. (:func:`evaluate_many` for many markets at once.)
    """
    rs = RuleSet(tuple(rules))
    vsma = np.array([prev_vector[_VOL] if prev_vector is not None else np.nan])
    states, fired = evaluate_many(
        rs, [market], [state.to_bytes(rs)], [history], vsma,
        np.array([len(ts)], dtype=np.int64), np.asarray(ts, dtype=np.int64),
        np.asarray(seq, dtype=np.uint64), np.asarray(prob, dtype=np.float64),
        np.asarray(volume, dtype=np.float64), np.asarray(raw, dtype=np.float64))
    return MarketSignals.from_bytes(states[0], rs), fired[0]


_CHUNK = 2048  # ticks whose look-back window (WINDOW values each) is gathered at once
_LONG_AGO = -(2 ** 62)  # an event time older than any window reaches (ms)


@dataclass
class _Batch:
    """The ticks of many markets (market after market, each in arrival order) and what
    every rule needs about them, as arrays over the ticks (each computed once a rule asks)."""

    counts: NDArray[np.int64]
    ts: NDArray[np.int64]
    prob: F64
    vol: F64
    raw: F64
    histories: Sequence[alpha.RollingState]
    prev_vsma: F64  # vol_sma10 of each market's vector before the batch (NaN: none)
    firsts: NDArray[np.int64] = field(init=False)  # each market's first event time
    seg: NDArray[np.int64] = field(init=False)  # each tick's market (index)
    pos: NDArray[np.int64] = field(init=False)  # its position among the market's new ticks
    starts: NDArray[np.int64] = field(init=False)
    before: NDArray[np.int64] = field(init=False)  # ticks of its market before it
    #: every market's history then new ticks (probabilities, times) and each tick's place
    #: in them, once a move rule gathered them
    move_source: tuple[F64, NDArray[np.int64], NDArray[np.int64]] | None = field(
        default=None, init=False)
    _cache: dict[str, F64] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        counts = self.counts
        m = len(counts)
        self.starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.seg = np.repeat(np.arange(m), counts)
        self.pos = np.arange(len(self.ts)) - np.repeat(self.starts, counts)
        seen = np.fromiter((h.n for h in self.histories), np.int64, m)
        self.before = np.repeat(seen, counts) + self.pos

    def shifted(self, values: F64, at_first: F64) -> F64:
        """``values`` of the previous tick of the same market; ``at_first[m]`` for a
        market's first tick of the batch."""
        out = np.empty_like(values)
        out[1:] = values[:-1]
        busy = self.counts > 0
        out[self.starts[busy]] = at_first[busy]
        return out

    def prev_prob(self) -> F64:
        if "prev_prob" not in self._cache:
            last = np.array([h.prob[-1] if h.n else np.nan for h in self.histories],
                            dtype=np.float64)
            self._cache["prev_prob"] = self.shifted(self.prob, last)
        return self._cache["prev_prob"]

    def prev_vol_sma(self) -> F64:
        if "prev_vsma" not in self._cache:
            self._cache["prev_vsma"] = self.shifted(self.raw[:, _VOL], self.prev_vsma)
        return self._cache["prev_vsma"]

    def long_run(self) -> F64:
        """Ticks per second since the market's first tick (NaN where no time has passed)."""
        if "long_run" not in self._cache:
            span = (self.ts - self.firsts[self.seg]) / 1000.0
            self._cache["long_run"] = np.divide(
                self.before.astype(np.float64), span, out=np.full(len(span), np.nan),
                where=span > 0)
        return self._cache["long_run"]


def evaluate_many(
    rules: RuleSet, markets: Sequence[str], states: Sequence[bytes],
    histories: Sequence[alpha.RollingState], prev_vsma: F64,
    counts: NDArray[np.int64], ts: NDArray[np.int64], seq: NDArray[np.uint64], prob: F64,
    volume: F64, raw: F64,
) -> tuple[list[bytes], list[list[Signal]]]:
    """The new ticks of many markets through their tick rules, at once.

    ``counts[m]`` ticks belong to ``markets[m]`` (its stored state, its rolling state before
    them, ``prev_vsma[m]`` the ``vol_sma10`` of its last vector), laid out market after
    market as :func:`alpha.update_many` takes them, ``raw`` their vectors. Each rule's
    condition is computed for every tick at once (numpy), the edges of every rule at once
    from a (ticks, rules) matrix and the edge states kept as arrays over (market, rule), so
    a batch costs a few numpy calls per rule; only the edges found go through the
    cool-downs and become signals one by one.

    Returns each market's new stored state and its signals (tick then rule order): the same
    as evaluating each market's ticks alone, tick after tick.
    """
    m = len(markets)
    tick_rules = rules.tick_rules
    if rules.filtered:
        watched = np.fromiter((bool(rules.for_market(x)) for x in markets), bool, m)
    else:
        watched = np.full(m, bool(tick_rules))
    if not watched.any() or not len(ts):
        return list(states), [[] for _ in range(m)]
    b = _Batch(np.asarray(counts, dtype=np.int64), ts, prob, volume, raw, histories,
               np.asarray(prev_vsma, dtype=np.float64))
    st = decode_states(rules, states)
    b.firsts = st.first.copy()
    for mk in np.flatnonzero(st.first == NO_TIME).tolist():
        h, c = histories[mk], int(b.counts[mk])
        b.firsts[mk] = int(h.ts[0]) if h.n else (int(ts[b.starts[mk]]) if c else 0)
    busy = np.flatnonzero(b.counts > 0)
    ends = b.starts[busy] + b.counts[busy] - 1
    moves = _moves(b, {r.params["within_s"] for r in tick_rules if r.kind == "move"})
    # whether each rule's condition holds at each tick: (ticks, rules)
    hold = np.zeros((len(ts), len(tick_rules)), dtype=bool)
    keep_on: list[tuple[int, NDArray[np.bool_]]] = []  # filtered rules: markets not theirs
    for ri, rule in enumerate(tick_rules):
        if rule.markets or rule.prefixes:
            mine = np.fromiter((rule.matches(x) for x in markets), bool, m)
            keep_on.append((ri, ~mine[busy]))
            if not mine.any():
                continue
            hold[:, ri] = _condition(rule, b, moves) & mine[b.seg]
        else:
            hold[:, ri] = _condition(rule, b, moves)
    # an edge: the condition holds and did not at the market's previous tick (a crossing
    # is its own edge)
    held = np.empty_like(hold)
    held[1:] = hold[:-1]
    held[b.starts[busy]] = st.on[busy]
    edge = hold & ~held
    cross = [ri for ri, r in enumerate(tick_rules) if r.kind == "cross"]
    edge[:, cross] = hold[:, cross]
    # the condition at each market's last tick is the edge state its next tick sees
    on = hold[ends]
    for ri, others in keep_on:
        on[others, ri] = st.on[busy[others], ri]
    st.on[busy] = on
    seqs, segs = seq.tolist(), b.seg.tolist()
    out: list[list[Signal]] = [[] for _ in range(m)]
    for i, ri in zip(*(x.tolist() for x in np.nonzero(edge)), strict=True):  # tick, rule
        rule, mk, t = tick_rules[ri], segs[i], int(ts[i])
        if rule.cooldown_ms:
            before = int(st.last[mk, ri])
            if before != NO_TIME and t - before < rule.cooldown_ms:
                continue
            st.last[mk, ri] = t
        out[mk].append(make_signal(rule, markets[mk], t, seqs[i], _values(rule, b, i, moves)))
    st.last[:, [not r.cooldown_ms for r in tick_rules]] = NO_TIME
    st.first = b.firsts
    new = encode_states(rules, st)
    return [n if w else s for n, s, w in zip(new, states, watched.tolist(), strict=True)], out


def _condition(rule: Rule, b: _Batch, moves: dict[float, tuple[F64, NDArray[np.int64]]],
               ) -> Any:
    k, q = rule.kind, rule.params
    p, raw = b.prob, b.raw
    if k == "move":
        return moves[q["within_s"]][0] >= q["delta"]
    if k == "cross":
        prev = b.prev_prob()
        level, way = q["level"], q["direction"]
        up = (prev < level) & (level <= p)
        down = (p < level) & (level <= prev)
        return up if way == "up" else down if way == "down" else up | down
    if k == "whale":
        hold = np.zeros(len(p), dtype=bool)
        if q["volume"] is not None:
            hold |= b.vol >= q["volume"]
        if q["factor"] is not None:
            base = b.prev_vol_sma()
            with np.errstate(invalid="ignore"):
                hold |= (b.before >= q["min_ticks"]) & (base > 0) & (
                    b.vol >= q["factor"] * base)
        return hold
    if k == "spike":
        longrun = b.long_run()
        with np.errstate(invalid="ignore"):
            return (b.before + 1 >= q["min_ticks"]) & (longrun > 0) & (
                raw[:, _RATE] >= q["factor"] * longrun)
    enough = b.before + 1 >= q["min_ticks"]
    band = q["band"]
    if band is not None:
        above, below = p > raw[:, _UPPER], p < raw[:, _LOWER]
        return enough & (above if band == "above" else below if band == "below"
                         else above | below)
    x, op, value = raw[:, alpha.INDEX[q["component"]]], q["op"], q["value"]
    hit = (x > value if op == "gt" else x >= value if op == "ge"
           else x < value if op == "lt" else x <= value)
    return enough & hit


def _moves(b: _Batch, windows: set[float]) -> dict[float, tuple[F64, NDArray[np.int64]]]:
    """Per window length (``within_s``), per tick: the largest |p - p'| over the previous
    ticks within it (looking back while they are within it, at most ``alpha.WINDOW``),
    and how many previous ticks that look-back covers.

    The differences to the previous ticks are computed once for every window, as a running
    maximum along the look-back: a window's largest move is that maximum at its depth."""
    if not windows:
        return {}
    hist = np.fromiter((len(h.prob) for h in b.histories), np.int64, len(b.histories))
    parts_p: list[F64] = []
    parts_t: list[NDArray[np.int64]] = []
    for mk, h in enumerate(b.histories):
        a, c = int(b.starts[mk]), int(b.counts[mk])
        parts_p += (h.prob, b.prob[a:a + c])
        parts_t += (h.ts, b.ts[a:a + c])
    # one more value past the end: where a look-back runs past a market's history it reads
    # this time, so far in the past that it is beyond every window
    all_p = np.concatenate((*parts_p, [0.0]))
    all_t = np.concatenate((*parts_t, [_LONG_AGO]))
    c_start = np.concatenate(([0], np.cumsum(hist + b.counts)[:-1]))
    at = np.repeat(c_start + hist, b.counts) + b.pos  # each tick in the concatenation
    have = np.minimum(np.repeat(hist, b.counts) + b.pos, alpha.WINDOW)  # ticks before it
    b.move_source = (all_p, all_t, at)
    total = len(b.ts)
    out = {w: (np.zeros(total), np.zeros(total, dtype=np.int64)) for w in windows}
    # an age (integer ms) is beyond a window of w s when it exceeds floor(w * 1000)
    limits = {w: math.floor(w * 1000.0) for w in windows}
    # only as far back as any tick has history
    deepest = max(int(have.max()) if total else 0, 1)
    r = np.arange(1, deepest + 1)
    for lo in range(0, total, _CHUNK):
        hi = min(lo + _CHUNK, total)
        idx = np.where(r[None, :] <= have[lo:hi, None], at[lo:hi, None] - r[None, :],
                       len(all_t) - 1)
        age = b.ts[lo:hi, None] - all_t[idx]
        peak = np.maximum.accumulate(np.abs(b.prob[lo:hi, None] - all_p[idx]), axis=1)
        rows = np.arange(hi - lo)
        for w, (best, depth) in out.items():
            beyond = age > limits[w]
            d = np.argmax(beyond, axis=1)  # the first tick beyond the window ...
            d[~beyond[rows, d]] = deepest  # ... if any
            depth[lo:hi] = d
            best[lo:hi] = np.where(d > 0, peak[rows, np.maximum(d - 1, 0)], 0.0)
    return out


def _values(rule: Rule, b: _Batch, i: int, moves: dict[float, tuple[F64, NDArray[np.int64]]],
            ) -> dict[str, Any]:
    """The values that made ``rule`` fire at tick ``i``."""
    k, q = rule.kind, rule.params
    p = float(b.prob[i])
    row = b.raw[i]
    if k == "move":
        depth = int(moves[q["within_s"]][1][i])
        assert b.move_source is not None
        all_p, all_t, at = b.move_source
        back = all_p[at[i] - depth:at[i]][::-1]  # newest first
        d = np.abs(p - back)
        j = int(at[i]) - 1 - int(np.argmax(d == d.max()))  # the newest with the largest move
        return {"prob": p, "from_prob": float(all_p[j]), "from_ts": int(all_t[j]),
                "delta": p - float(all_p[j])}
    if k == "cross":
        prev = float(b.prev_prob()[i])
        return {"prob": p, "from_prob": prev, "level": q["level"],
                "direction": "up" if p >= q["level"] else "down"}
    if k == "whale":
        v = float(b.vol[i])
        if q["volume"] is not None and v >= q["volume"]:
            return {"volume": v, "prob": p}
        base = float(b.prev_vol_sma()[i])
        return {"volume": v, "vol_sma10": base, "ratio": v / base, "prob": p}
    if k == "spike":
        rate, longrun = float(row[_RATE]), float(b.long_run()[i])
        return {"tick_rate": rate, "long_run_rate": longrun, "ratio": rate / longrun}
    if q["band"] is not None:
        return {"prob": p, "bb_upper": float(row[_UPPER]), "bb_lower": float(row[_LOWER])}
    return {q["component"]: float(row[alpha.INDEX[q["component"]]]), "prob": p}


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
