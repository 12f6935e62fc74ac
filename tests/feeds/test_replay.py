"""Replay of Manifold bets: the real CSV export, bad rows, JSON bets, pacing."""

from __future__ import annotations

import json
import math
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from gswarm.core.ticks import parse_tick
from gswarm.errors import FeedError
from gswarm.feeds.replay import ReplayResult, paced, read_bets
from tests.feeds.fake_apis import BetMaker, FakeManifold

ALTMAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "manifold_bets_altman.csv"
HEADER = "bet_id,timestamp,amount,probability\n"


@pytest.fixture(scope="module")
def altman() -> ReplayResult:
    if not ALTMAN.exists():
        pytest.skip(f"{ALTMAN} is not there")
    return read_bets(ALTMAN, "altman-ceo")


# -- the real CSV export -------------------------------------------------------------------


def test_real_export_gives_one_tick_per_row_oldest_first(altman: ReplayResult) -> None:
    assert len(altman.ticks) == 5032
    assert altman.errors == [] and altman.skipped == 0
    ts = [t["ts"] for t in altman.ticks]
    assert all(a <= b for a, b in pairwise(ts))
    assert ts[0] == 1677902707690  # March 2023, the oldest row (the file's last)
    last = altman.ticks[-1]
    assert last["ts"] == 1701288365537  # the file's first data row, the newest
    assert last["prob"] == 0.930202653853111
    assert last["id"] == "4dniKcevTF2AKayTJ2yv:0"


def test_real_export_ids_are_unique_per_fill(altman: ReplayResult) -> None:
    ids = [t["id"] for t in altman.ticks]
    assert len(set(ids)) == len(ids) == 5032
    bets = {i.rsplit(":", 1)[0] for i in ids}
    assert len(bets) == 4479
    assert sum(1 for i in ids if i.endswith(":1")) == 273  # bets with several fills
    fills = [t for t in altman.ticks if t["id"].startswith("8acEnkDn9vAJvPrjEW51:")]
    assert [t["id"] for t in fills] == [f"8acEnkDn9vAJvPrjEW51:{k}" for k in range(3)]
    assert [t["volume"] for t in fills] == [159.81490481659677, 22.222222222222218,
                                            17.962872961181017]


def test_real_export_ties_keep_the_original_order(altman: ReplayResult) -> None:
    # a limit order (placed earlier) and the bet that filled it share the fill's time:
    # the older bet comes first, so the newer bet's probability is the last word
    same = [t["id"] for t in altman.ticks if t["ts"] == 1701249181408]
    assert same == ["QlmmFNABHKvJZufBSmpw:0"] + [f"8acEnkDn9vAJvPrjEW51:{k}" for k in range(3)]


def test_real_export_ticks_are_valid_on_the_wire(altman: ReplayResult) -> None:
    for tick in altman.ticks:
        parsed = parse_tick(orjson.loads(orjson.dumps(tick)))
        assert parsed.market == "altman-ceo"
        assert parsed.source == "manifold"
        assert parsed.outcome in ("YES", "NO")
        assert parsed.volume >= 0


# -- CSV: bad rows, bad files --------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bad_csv_rows_are_reported_by_line_and_good_rows_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "bets.csv", HEADER + (
        "g3,1700000003000,10,0.7\n"         # 2
        "x1,1700000002900,abc,0.6\n"        # 3 amount not a number
        "x2,1700000002800,10\n"             # 4 a column missing
        "x3,1700000002700,10,1.5\n"         # 5 probability above 1
        "x4,1700000002600,10,nan\n"         # 6 NaN
        ",1700000002500,10,0.5\n"           # 7 no bet id
        "x5,-5,10,0.5\n"                    # 8 bad timestamp
        "\n"                                # 9 blank: not a row
        "g2,1700000002000,-5,0.65\n"        # 10 a sale...
        "g2,1700000002000,3,0.65\n"         # 11 ...in two fills
        "x6,1700000001500,1,-0.1\n"         # 12 probability below 0
        "g1,1700000001000,10,0.6\n"         # 13
    ))
    result = read_bets(path, "m-1")
    assert [line for line, _ in result.errors] == [3, 4, 5, 6, 7, 8, 12]
    reasons = dict(result.errors)
    assert "amount" in reasons[3] and "not a number" in reasons[3]
    assert "probability" in reasons[4] and "missing" in reasons[4]
    assert "outside [0, 1]" in reasons[5] and "outside [0, 1]" in reasons[12]
    assert "NaN" in reasons[6]
    assert "bet_id" in reasons[7]
    assert "timestamp" in reasons[8]
    assert [(t["id"], t["ts"], t["prob"], t["volume"]) for t in result.ticks] == [
        ("g1:0", 1700000001000, 0.6, 10.0),
        ("g2:0", 1700000002000, 0.65, 5.0),
        ("g2:1", 1700000002000, 0.65, 3.0),
        ("g3:0", 1700000003000, 0.7, 10.0),
    ]
    # the export has no side: a sale that raised the price was on NO
    assert [t["outcome"] for t in result.ticks] == ["YES", "NO", "NO", "YES"]
    assert all(t["market"] == "m-1" and t["trader"] == "" for t in result.ticks)


def test_csv_extra_columns_and_bom_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bets.csv"
    path.write_bytes(b"\xef\xbb\xbfprobability,bet_id,note,timestamp,amount\r\n"
                     b'0.25,a,"hello, world",1700000000000,4\r\n')
    result = read_bets(path, "m-2")
    assert result.errors == []
    assert [(t["id"], t["prob"], t["volume"]) for t in result.ticks] == [("a:0", 0.25, 4.0)]


@pytest.mark.parametrize(("text", "match"), [
    ("g1,1700000001000,10,0.6\n", "header"),
    ("bet_id,timestamp,amount\ng1,1700000001000,10\n", "probability"),
    ("", "empty"),
    ("  \n\n", "empty"),
])
def test_unusable_csv_raises_feed_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(FeedError, match=match):
        read_bets(write(tmp_path, "bets.csv", text), "m-1")


def test_csv_needs_a_market_and_files_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "bets.csv", HEADER + "g1,1700000001000,10,0.6\n")
    with pytest.raises(FeedError, match="market"):
        read_bets(path)
    with pytest.raises(FeedError, match="market"):
        read_bets(path, "bad\x00id")
    with pytest.raises(FeedError, match="cannot read"):
        read_bets(tmp_path / "nope.csv", "m-1")
    with pytest.raises(FeedError, match="UTF-8"):
        read_bets(write_bytes(tmp_path, b"\xff\xfe\x00bet_id"), "m-1")


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "binary.csv"
    path.write_bytes(data)
    return path


# -- JSON bets -----------------------------------------------------------------------------


def fill(amount: float, ts: int, shares: float, matched: str | None = None) -> dict[str, Any]:
    return {"amount": amount, "timestamp": ts, "matchedBetId": matched, "shares": shares}


def bet(bet_id: str, ts: int, amount: float, before: float, after: float,
        **extra: Any) -> dict[str, Any]:
    """A Manifold bet object as the API returns it (market order unless told)."""
    doc: dict[str, Any] = {
        "id": bet_id, "userId": "uAlice01", "contractId": "c8Zt3vLhQx", "createdTime": ts,
        "amount": amount, "shares": round(amount / after, 4) if after else 0.0,
        "outcome": "YES", "probBefore": before, "probAfter": after, "isRedemption": False,
        "isFilled": True, "isCancelled": False, "fills": [fill(amount, ts, amount / after)],
        "fees": {"creatorFee": 0, "platformFee": 0, "liquidityFee": 0},
        "visibility": "public", "isApi": False,
    }
    doc.update(extra)
    return doc


# newest first, as the API lists bets
BETS: list[dict[str, Any]] = [
    bet("mc1", 1700000006000, 25, 0.28, 0.31, outcome="NO", userId="uCarol03",
        contractId="cMulti77", answerId="ans-2"),
    bet("red1", 1700000005000, -40, 0.6, 0.6, outcome="NO", isRedemption=True,
        shares=-40, fills=[]),
    bet("lim0", 1700000004000, 0, 0.6, 0.6, limitProb=0.4, orderAmount=100, fills=[],
        isFilled=False, userId="uBob02"),
    bet("lim1", 1700000003000, 60, 0.58, 0.65, limitProb=0.65, orderAmount=100,
        isFilled=False, userId="uBob02",
        fills=[fill(45, 1700000003000, 70.3), fill(15, 1700000003500, 23.1, "b9")]),
    bet("bad1", 1700000002800, 10, 0.58, 1.3),
    bet("b4", 1700000002500, 5, 0.58, 0.585),
    bet("b3", 1700000002500, 5, 0.575, 0.58),
    bet("b2", 1700000002000, -20, 0.56, 0.575, outcome="NO"),
    bet("b1", 1700000001000, 50, 0.5, 0.56),
]

EXPECTED = [
    # id, market, prob, ts, volume, trader, outcome
    ("b1", "c8Zt3vLhQx", 0.56, 1700000001000, 50.0, "uAlice01", "YES"),
    ("b2", "c8Zt3vLhQx", 0.575, 1700000002000, 20.0, "uAlice01", "NO"),
    ("b3", "c8Zt3vLhQx", 0.58, 1700000002500, 5.0, "uAlice01", "YES"),
    ("b4", "c8Zt3vLhQx", 0.585, 1700000002500, 5.0, "uAlice01", "YES"),
    ("lim1", "c8Zt3vLhQx", 0.65, 1700000003000, 60.0, "uBob02", "YES"),
    ("mc1", "cMulti77:ans-2", 0.31, 1700000006000, 25.0, "uCarol03", "NO"),
]


def summary(result: ReplayResult) -> list[tuple[Any, ...]]:
    return [(t["id"], t["market"], t["prob"], t["ts"], t["volume"], t["trader"], t["outcome"])
            for t in result.ticks]


def test_json_array_of_bets_maps_as_specified(tmp_path: Path) -> None:
    # one bet per line, so bet k is on line k + 2
    text = "[\n" + ",\n".join(json.dumps(b) for b in BETS) + "\n]\n"
    result = read_bets(write(tmp_path, "bets.json", text))
    assert summary(result) == EXPECTED
    assert result.skipped == 2  # the redemption and the unfilled limit order
    assert result.errors == [(6, "probAfter 1.3 is outside [0, 1]")]
    assert all(t["source"] == "manifold" and t["v"] == 1 for t in result.ticks)
    for tick in result.ticks:
        parse_tick(tick)


def test_pretty_printed_json_reports_the_line_a_bad_bet_starts_on(tmp_path: Path) -> None:
    text = json.dumps(BETS, indent=2)
    result = read_bets(write(tmp_path, "bets.json", text))
    assert summary(result) == EXPECTED
    (line, _), = result.errors
    assert text.splitlines()[line - 1].strip() == "{"
    assert '"id": "bad1"' in "\n".join(text.splitlines()[line - 1:line + 3])


def test_json_lines_of_bets_and_a_broken_line(tmp_path: Path) -> None:
    lines = [json.dumps(b) for b in BETS]
    lines.insert(3, '{"id": "torn", "amount": ')
    result = read_bets(write(tmp_path, "bets.jsonl", "\n".join(lines) + "\n"))
    assert summary(result) == EXPECTED
    assert result.skipped == 2
    assert [line for line, _ in result.errors] == [4, 6]
    assert "not valid JSON" in result.errors[0][1]


def test_json_market_argument_renames_the_contract(tmp_path: Path) -> None:
    result = read_bets(write(tmp_path, "bets.json", json.dumps(BETS)), "altman")
    assert [t["market"] for t in result.ticks] == ["altman"] * 5 + ["altman:ans-2"]


def test_json_bets_missing_fields_are_reported(tmp_path: Path) -> None:
    incomplete = [
        {k: v for k, v in bet("n1", 1700000001000, 5, 0.5, 0.52).items() if k != "userId"},
        bet("n2", 1700000001000, 5, 0.5, float("nan")),
        bet("n3", 1700000001000, 5, 0.5, 0.52, createdTime=1.5),
        bet("n4", 1700000001000, True, 0.5, 0.52),
        bet("n5", 1700000001000, 5, 0.5, 0.52, contractId=""),
        ["not", "a", "bet"],
        bet("ok", 1700000001000, 5, 0.5, 0.52),
    ]
    text = "[\n" + ",\n".join(json.dumps(b) for b in incomplete) + "\n]"
    result = read_bets(write(tmp_path, "bets.json", text))
    assert [t["id"] for t in result.ticks] == ["ok"]
    assert [line for line, _ in result.errors] == [2, 3, 4, 5, 6, 7]
    reasons = [reason for _, reason in result.errors]
    assert "userId" in reasons[0]
    assert "NaN" in reasons[1]
    assert "createdTime" in reasons[2]
    assert "amount" in reasons[3]
    assert "contractId" in reasons[4]
    assert "not a JSON object" in reasons[5]


@pytest.mark.parametrize("lines", [False, True], ids=["array", "json-lines"])
def test_an_api_listing_with_same_ms_runs_replays_in_its_order_reversed(
    tmp_path: Path, lines: bool
) -> None:
    maker = BetMaker(seed=4)
    bets = [maker.bet(f"c{i % 3}", same_ms=i % 5 != 0) for i in range(200)]
    listing = FakeManifold(bets).listing()  # newest first, ties in the API's own order
    text = "\n".join(json.dumps(b) for b in listing) if lines else json.dumps(listing)
    result = read_bets(write(tmp_path, "bets.json", text))
    assert [t["id"] for t in result.ticks] == [b["id"] for b in reversed(listing)]


@pytest.mark.parametrize("text", ['[{"id": "a"}', '[{"id": "a"} {"id": "b"}]', "[1] 2"])
def test_broken_json_array_raises_feed_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(FeedError, match="not valid JSON"):
        read_bets(write(tmp_path, "bets.json", text))


# -- paced() -------------------------------------------------------------------------------


def ticks_at(*offsets_ms: int) -> list[dict[str, Any]]:
    return [{"v": 1, "market": "m", "prob": 0.5, "ts": 1_700_000_000_000 + ms, "volume": 1.0,
             "trader": "u", "source": "test", "id": str(i)} for i, ms in enumerate(offsets_ms)]


async def test_paced_with_a_large_speedup_yields_everything_in_order(
    altman: ReplayResult,
) -> None:
    started = time.perf_counter()
    out = [t async for t in paced(altman.ticks, 1e9)]  # 9 months in ~25 ms
    assert out == altman.ticks
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("speedup", [0.0, math.inf])
async def test_paced_without_pacing_is_immediate(speedup: float) -> None:
    ticks = ticks_at(0, 10_000_000, 20_000_000)
    started = time.perf_counter()
    assert [t async for t in paced(ticks, speedup)] == ticks
    assert time.perf_counter() - started < 1


async def test_paced_respects_the_gaps_divided_by_the_speedup() -> None:
    ticks = ticks_at(0, 100, 200, 300)
    started = time.perf_counter()
    stamps = []
    async for _ in paced(ticks, 2.0):
        stamps.append(time.perf_counter() - started)
    assert stamps[0] < 0.05
    assert stamps[-1] >= 0.14  # 300 ms of event time at 2x
    assert stamps[-1] < 1.0
    assert all(a <= b for a, b in pairwise(stamps))


@pytest.mark.parametrize("speedup", [-1.0, math.nan])
def test_paced_rejects_a_bad_speedup(speedup: float) -> None:
    with pytest.raises(FeedError):
        paced(ticks_at(0), speedup)
