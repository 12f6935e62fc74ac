"""Signal rules: parsing (errors with file and line), each kind, edge-triggering, cool-down,
and the same signals however ticks are split into batches."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from gswarm.core import alpha
from gswarm.core.facts import Segment
from gswarm.core.ingest import Arrival, MarketRecord, apply_batch, apply_ticks
from gswarm.core.signals import (
    MarketSignals,
    RulesError,
    RuleSet,
    Signal,
    evaluate,
    load_rules,
    offline,
    parse_rules,
    resolved_signals,
)
from gswarm.core.ticks import Tick
from gswarm.feeds.replay import read_bets
from tests.conftest import SHARED_DATA

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "signals" / "rules.toml"


def rules(text: str) -> RuleSet:
    return parse_rules(text, "r.toml")


def run(rs: RuleSet, probs: list[float], vols: list[float] | None = None,
        step_ms: int = 1000, market: str = "m") -> list[Signal]:
    """The signals of one market's ticks (one per ``step_ms``), in one evaluation."""
    ts = [1_700_000_000_000 + i * step_ms for i in range(len(probs))]
    vol = vols or [1.0] * len(probs)
    return offline(rs, [(market, t, i << 16, p, v)
                        for i, (t, p, v) in enumerate(zip(ts, probs, vol, strict=True))])


def test_default_rules_file_is_valid_and_has_every_kind() -> None:
    rs = load_rules(DEFAULT_RULES)
    assert {r.kind for r in rs.rules} == {"move", "cross", "whale", "spike", "alpha",
                                          "resolved"}


def test_cross_is_edge_triggered_both_ways_and_by_direction() -> None:
    rs = rules('[[rule]]\nid = "c"\nkind = "cross"\nlevel = 0.5\n'
               '[[rule]]\nid = "up"\nkind = "cross"\nlevel = 0.5\ndirection = "up"\n')
    fired = run(rs, [0.4, 0.45, 0.55, 0.6, 0.7, 0.45, 0.5, 0.5])
    assert [(s["rule"], s["seq"] >> 16, s["values"]["direction"]) for s in fired] == [
        ("c", 2, "up"), ("up", 2, "up"), ("c", 5, "down"), ("c", 6, "up"), ("up", 6, "up")]
    assert fired[0]["id"] == f"c:m:{2 << 16}"


def test_a_condition_that_keeps_holding_fires_once_and_again_after_it_stopped() -> None:
    rs = rules('[[rule]]\nid = "w"\nkind = "whale"\nvolume = 100\n')
    fired = run(rs, [0.5] * 6, [1, 200, 300, 1, 500, 1])
    assert [s["seq"] >> 16 for s in fired] == [1, 4]


def test_cooldown_drops_edges_within_it_of_event_time() -> None:
    rs = rules('[[rule]]\nid = "w"\nkind = "whale"\nvolume = 100\ncooldown_s = 2.5\n')
    # edges at ticks 1, 3, 5, 7 (one second apart): 3 is 2 s after 1 (dropped), 5 is 4 s
    fired = run(rs, [0.5] * 9, [1, 200, 1, 200, 1, 200, 1, 200, 1])
    assert [s["seq"] >> 16 for s in fired] == [1, 5]


def test_move_within_the_window_of_event_time() -> None:
    rs = rules('[[rule]]\nid = "j"\nkind = "move"\ndelta = 0.1\nwithin_s = 2.5\n')
    # 0.50 -> 0.55 -> 0.58 -> 0.61: 0.11 over 3 s (out of the window), 0.06 within it
    assert run(rs, [0.50, 0.55, 0.58, 0.61]) == []
    fired = run(rs, [0.50, 0.55, 0.62, 0.62])
    assert len(fired) == 1 and fired[0]["values"]["from_prob"] == 0.50
    assert fired[0]["values"]["delta"] == pytest.approx(0.12)


def test_whale_by_factor_of_the_recent_mean_volume() -> None:
    rs = rules('[[rule]]\nid = "w"\nkind = "whale"\nfactor = 10\nmin_ticks = 3\n')
    fired = run(rs, [0.5] * 6, [10, 10, 10, 10, 150, 10])
    assert [s["seq"] >> 16 for s in fired] == [4]
    assert fired[0]["values"]["vol_sma10"] == 10 and fired[0]["values"]["ratio"] == 15
    assert run(rs, [0.5] * 3, [10, 150, 10]) == []  # too few ticks before


def test_spike_against_the_long_run_rate() -> None:
    rs = rules('[[rule]]\nid = "s"\nkind = "spike"\nfactor = 3\nmin_ticks = 10\n')
    ts = [i * 60_000 for i in range(300)] + [300 * 60_000 + i * 100 for i in range(300)]
    fired = offline(rs, [("m", 1_700_000_000_000 + t, i, 0.5, 1.0)
                         for i, t in enumerate(ts)])
    assert len(fired) == 1 and fired[0]["seq"] >= 300
    v = fired[0]["values"]
    assert v["tick_rate"] >= 3 * v["long_run_rate"]


def test_alpha_component_and_band() -> None:
    rs = rules('[[rule]]\nid = "r"\nkind = "alpha"\ncomponent = "rsi14"\nop = "ge"\n'
               'value = 0.99\nmin_ticks = 5\n'
               '[[rule]]\nid = "b"\nkind = "alpha"\nband = "above"\nmin_ticks = 5\n')
    probs = [0.5, 0.49, 0.5, 0.49, 0.5, 0.49, 0.5, 0.49] + [0.5 + 0.01 * i for i in range(20)]
    fired = run(rs, probs)
    by_rule = {s["rule"]: s for s in fired}
    assert set(by_rule) == {"r", "b"}
    assert by_rule["b"]["values"]["prob"] > by_rule["b"]["values"]["bb_upper"]


def test_resolved_and_market_filters() -> None:
    rs = rules('[[rule]]\nid = "res"\nkind = "resolved"\nprefixes = ["0x"]\n'
               '[[rule]]\nid = "yes"\nkind = "resolved"\noutcome = "YES"\n')
    assert [s["rule"] for s in resolved_signals(rs.resolved_for("0xab"), "0xab", "NO", 5, 7)
            ] == ["res"]
    assert [s["id"] for s in resolved_signals(rs.resolved_for("abc"), "abc", "YES", 5, 7)
            ] == ["yes:abc:7"]
    assert resolved_signals(rs.rules, "abc", None, 5, 7) == []
    only = rules('[[rule]]\nid = "c"\nkind = "cross"\nlevel = 0.5\nmarkets = ["a"]\n')
    assert run(only, [0.4, 0.6], market="b") == [] and len(run(only, [0.4, 0.6], market="a"))


def _manifold_arrivals() -> list[Arrival]:
    ticks = read_bets(SHARED_DATA / "manifold_bets_altman.csv", "altman").ticks
    return [Arrival(i, 0, Tick(**{k: t[k] for k in (
        "market", "prob", "ts", "volume", "trader", "source", "outcome", "id")}))
        for i, t in enumerate(ticks)]


def test_the_same_signals_however_the_ticks_are_batched() -> None:
    rs = load_rules(DEFAULT_RULES)
    arrivals = _manifold_arrivals()
    whole = offline(rs, [(a.tick.market, a.tick.ts, a.offset << 16, a.tick.prob,
                          a.tick.volume) for a in arrivals])
    assert len(whole) > 20
    rng = random.Random(3)
    record: MarketRecord | None = None
    got: list[Signal] = []
    i = 0
    while i < len(arrivals):
        n = rng.choice([1, 2, 7, 50, 400])
        batch = arrivals[i:i + n]
        # a redelivery of the previous batch's end never fires again
        again = arrivals[max(0, i - 3):i]
        applied = apply_batch([("altman", record, again + batch)], rs)[0]
        record = MarketRecord.decode(applied.record.encode())  # through the stored form
        assert applied.segment is not None
        assert Segment.decode(applied.segment.encode()).signals == applied.signals
        got += applied.signals
        i += n
    assert got == whole


def test_signal_state_round_trips_and_old_records_read() -> None:
    rs = rules("".join(f'[[rule]]\nid = "{x}"\nkind = "whale"\nvolume = 1\n' for x in "abc"))
    state = MarketSignals({"a": (True, 5), "b": (False, 9)}, 17)
    assert MarketSignals.from_bytes(state.to_bytes(rs), rs) == state
    assert len(state.to_bytes(rs)) == 9 + 2 * 13  # first time, then 13 bytes per rule kept
    assert MarketSignals.from_bytes(b"", rs) == MarketSignals()
    # a rule gone from the file loses its entry; a state written as JSON still reads
    assert MarketSignals.from_bytes(state.to_bytes(rs), rules(
        '[[rule]]\nid = "b"\nkind = "whale"\nvolume = 1\n')) == MarketSignals(
        {"b": (False, 9)}, 17)
    old = b'{"r":{"a":[1,5],"b":[0,9],"c":[0,null]},"f":17}'
    assert MarketSignals.from_bytes(old, rs) == state
    tick = Tick("m", 0.5, 1_700_000_000_000, 1.0, "u", "s")
    rec = apply_ticks(None, "m", [Arrival(0, 0, tick)]).record
    v2 = bytearray(rec.encode())
    v2[0] = 2  # a version-2 record: the same layout without the signal state
    assert v2[-len(rec.rolling.to_bytes()) - 4:-len(rec.rolling.to_bytes())] == b"\0" * 4
    old = bytes(v2[:-len(rec.rolling.to_bytes()) - 4]) + rec.rolling.to_bytes()
    back = MarketRecord.decode(old)
    assert back.signal_state == b"" and back.n == 1 and back.latest == rec.latest


def test_evaluate_does_not_change_its_input_state() -> None:
    rs = rules('[[rule]]\nid = "w"\nkind = "whale"\nvolume = 1\n'
               '[[rule]]\nid = "c"\nkind = "whale"\nvolume = 1\ncooldown_s = 5\n')
    state = MarketSignals()
    raw = np.zeros((1, alpha.DIM))
    new, fired = evaluate(rs.rules, state, "m", alpha.RollingState.empty(), None, [1], [0],
                          [0.5], [5.0], raw)
    assert len(fired) == 2 and state == MarketSignals()
    # the last signal's time is kept only where a cool-down needs it
    assert new.rules == {"w": (True, None), "c": (True, 1)} and new.first_ts == 1


BAD = [
    ("[[rule]]\nid = 'a'\nkind = 'move'\ndelta = 0.1\n", 1, "needs 'within_s'"),
    ("[[rule]]\nid = 'a'\nkind = 'cross'\nlevel = 0.5\n\n[[rule]]\nid = 'b'\nkind = 'alpha'\n"
     "component = 'foo'\nop = 'gt'\nvalue = 1\n", 9, "unknown alpha component 'foo'"),
    ("[[rule]]\nid = 'a'\nkind = 'cross'\nlevel = 1.5\n", 4, "level must be in (0, 1)"),
    ("[[rule]]\nid = 'a'\nkind = 'whale'\nvolume = 10\nvolume_x = 3\n", 5,
     "unknown parameter 'volume_x'"),
    ("[[rule]]\nid = 'a'\nkind = 'teleport'\n", 3, "kind must be one of"),
    ("[[rule]]\nkind = 'cross'\nlevel = 0.5\n", 1, "needs an id"),
    ("[[rule]]\nid = 'a'\nkind = 'cross'\nlevel = 0.5\n[[rule]]\nid = 'a'\nkind = 'cross'\n"
     "level = 0.4\n", 5, "used twice (first at line 1)"),
    ("[[rule]]\nid = 'a'\nkind = 'whale'\nvolume = 'lots'\n", 4, "must be a finite number"),
    ("[[rule]]\nid = 'a'\nkind = 'whale'\nvolume = 1\ncooldown_s = -1\n", 5, "cooldown_s"),
    ("[[rule]]\nid = 'a'\nkind = 'whale'\nvolume = 1\nmarkets = 'x'\n", 5, "list of"),
    ("title = 'x'\n", 1, "unknown top-level key 'title'"),
    # state is stored under a crc32 of the id: two ids with the same one are refused
    ("[[rule]]\nid = 'plumless'\nkind = 'cross'\nlevel = 0.5\n[[rule]]\nid = 'buckeroo'\n"
     "kind = 'cross'\nlevel = 0.4\n", 5, "'plumless' and 'buckeroo' have the same crc32"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD)
def test_a_bad_rules_file_names_file_line_and_reason(text: str, line: int, reason: str
                                                     ) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules(text, "rules.toml")
    assert str(err.value).startswith(f"rules.toml:{line}: ")
    assert reason in str(err.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"r.toml: not valid TOML: .*line 2"):
        parse_rules("[[rule]]\nid = \n", "r.toml")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "none.toml")
