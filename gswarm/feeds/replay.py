"""Replay of Manifold Markets bets: parse a bets file into ticks, and pace them in time.

Two formats are recognised by their content, not their name:

* **CSV export** of one market's bets, header ``bet_id,timestamp,amount,probability``
  (other columns are ignored). ``timestamp`` is the fill's Unix time in ms, ``amount`` its
  mana (negative for a sale), ``probability`` the bet's ``probAfter``. One row is one fill;
  a bet with several fills has several rows. The file names no market, so the caller
  gives one. Each row becomes one tick with id ``"<bet_id>:<k>"`` (``k`` = the row's place
  among its bet's valid rows, from 0). The file has no trader (``trader`` is ``""``) and no
  side: ``outcome`` is inferred from the move (see :func:`_infer_outcomes`).
* **JSON** bet objects as the Manifold API returns them: a JSON array, or JSON lines.
  One tick per bet: ``prob`` = ``probAfter``, ``ts`` = ``createdTime``, ``volume`` =
  ``abs(amount)``, ``trader`` = ``userId``, ``outcome`` = ``outcome``, ``id`` = ``id``,
  ``market`` = ``contractId`` (``contractId:answerId`` for an answer of a multiple-choice
  market). Redemptions and limit orders that never filled are skipped: they move no price.

Exports list bets newest first; ticks come out in event order (oldest first, ties kept in
original order). A bad row is reported with its line number, never silently dropped.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from gswarm.errors import FeedError

SOURCE = "manifold"
CSV_COLUMNS = ("bet_id", "timestamp", "amount", "probability")
MAX_MARKET_LEN = 200

_WS = re.compile(r"[ \t\n\r]+")

Tick = dict[str, Any]


@dataclass(frozen=True)
class ReplayResult:
    """Ticks of a bets file in event order, what was skipped, and the bad rows.

    ``skipped`` counts bets that are not price moves (redemptions, unfilled limit orders);
    ``errors`` holds ``(line, reason)`` for each bad row, ``line`` being 1-based in the file.
    """

    ticks: list[Tick]
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


class BadRow(Exception):
    """One row or bet cannot be turned into a tick; the message is the reason."""


@dataclass(frozen=True, slots=True)
class _Event:
    """A parsed tick with its sort key (event time, then original order) and signed amount."""

    key: tuple[int, int, int]
    amount: float
    tick: Tick


# -- entry point ---------------------------------------------------------------------------


def read_bets(path: Path, market: str | None = None) -> ReplayResult:
    """Parse a Manifold bets file (CSV export, JSON array or JSON lines) into ticks.

    ``market`` is the market id of a CSV export (required: the file has none); for JSON it
    replaces each bet's ``contractId``. Raises :class:`FeedError` if the file cannot be read,
    is not one of the formats, or (CSV) lacks a required column in its header.
    """
    if market is not None:
        _check_market(market, FeedError)
    text = _read_text(path)
    head = text.lstrip()
    if not head:
        raise FeedError(f"{path}: the file is empty (expected Manifold bets: a CSV export, "
                        "a JSON array or JSON lines)")
    if head[0] == "[":
        return _from_json(_json_array_items(text, path), market)
    if head[0] == "{":
        return _from_json(_json_object_items(text, path), market)
    if market is None:
        raise FeedError(f"{path}: a CSV export names no market: give its market id")
    return _from_csv(text, path, market)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise FeedError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FeedError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _check_market(market: str, error: type[Exception]) -> str:
    """Raise ``error`` unless ``market`` is a valid market id (as ticks require)."""
    if not market or len(market) > MAX_MARKET_LEN or any(ord(c) < 32 for c in market):
        raise error(f"bad market id {market[:MAX_MARKET_LEN + 1]!r}")
    return market


# -- values ------------------------------------------------------------------------------


def _number(value: Any, name: str) -> float:
    """A finite float from a CSV cell (str) or a JSON number; :class:`BadRow` otherwise."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise BadRow(f"{name} is not a number: {value[:40]!r}") from None
    elif type(value) in (int, float):
        number = float(value)
    elif value is None:
        raise BadRow(f"missing {name}")
    else:
        raise BadRow(f"{name} is not a number: {type(value).__name__}")
    if math.isnan(number):
        raise BadRow(f"{name} is NaN")
    if math.isinf(number):
        raise BadRow(f"{name} is infinite")
    return number


def _prob(value: Any, name: str) -> float:
    prob = _number(value, name)
    if not 0.0 <= prob <= 1.0:
        raise BadRow(f"{name} {prob!r} is outside [0, 1]")
    return prob


def _millis(value: Any, name: str) -> int:
    """A positive whole number of milliseconds."""
    if isinstance(value, str) and value.strip().isdigit():
        ms = int(value.strip())  # exact, even beyond 2**53
    else:
        number = _number(value, name)
        if number != int(number):
            raise BadRow(f"{name} {number!r} is not a whole number of ms")
        ms = int(number)
    if ms <= 0:
        raise BadRow(f"{name} {ms} is not a positive time in ms")
    return ms


def _text(bet: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A non-empty string field of a bet (``None`` when optional and absent)."""
    value = bet.get(name)
    if value is None:
        if required:
            raise BadRow(f"missing {name}")
        return None
    if not isinstance(value, str) or not value:
        raise BadRow(f"{name} must be a non-empty string, got {value!r}"[:120])
    return value


# -- CSV ---------------------------------------------------------------------------------


def _from_csv(text: str, path: Path, market: str) -> ReplayResult:
    """Parse a CSV export: one tick per row (fill), sorted into event order."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise FeedError(
            f"{path}: not a Manifold bets CSV: the header lacks {', '.join(missing)} "
            f"(expected {','.join(CSV_COLUMNS)})"
        )
    columns = {name: header.index(name) for name in CSV_COLUMNS}
    rows: list[tuple[int, str, int, float, float]] = []  # line, bet, ts, amount, prob
    errors: list[tuple[int, str]] = []
    line = reader.line_num + 1
    for record in reader:
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue  # a blank line is not a row
        try:
            rows.append((start, *_csv_row(record, columns, len(header))))
        except BadRow as exc:
            errors.append((start, str(exc)))
    return ReplayResult(_csv_ticks(rows, market), 0, errors)


def _csv_row(
    record: list[str], columns: dict[str, int], width: int
) -> tuple[str, int, float, float]:
    """Validate one CSV record: ``(bet_id, ts, amount, prob)``."""
    for name, index in columns.items():
        if index >= len(record):
            raise BadRow(f"missing column {name!r} ({len(record)} fields, header has {width})")
    if len(record) > width:
        raise BadRow(f"{len(record)} fields, header has {width}")
    bet_id = record[columns["bet_id"]].strip()
    if not bet_id:
        raise BadRow("empty bet_id")
    ts = _millis(record[columns["timestamp"]], "timestamp")
    amount = _number(record[columns["amount"]], "amount")
    prob = _prob(record[columns["probability"]], "probability")
    return bet_id, ts, amount, prob


def _csv_ticks(rows: list[tuple[int, str, int, float, float]], market: str) -> list[Tick]:
    """Ticks of valid CSV rows in event order; each row's id is ``<bet_id>:<fill index>``.

    A bet's rank is its first row's; a bet's fills keep their file order. Ties in time go
    to the older bet (the file lists bets newest first, or oldest first: detected).
    """
    newest_first = _newest_first([ts for _, _, ts, _, _ in rows])
    first_row: dict[str, int] = {}
    fills: dict[str, int] = {}
    events: list[_Event] = []
    for row, (_, bet_id, ts, amount, prob) in enumerate(rows):
        rank = first_row.setdefault(bet_id, row)
        fill = fills.get(bet_id, 0)
        fills[bet_id] = fill + 1
        tick: Tick = {
            "v": 1, "market": market, "prob": prob, "ts": ts, "volume": abs(amount),
            "trader": "", "outcome": "YES", "source": SOURCE, "id": f"{bet_id}:{fill}",
        }
        events.append(_Event((ts, -rank if newest_first else rank, fill), amount, tick))
    events.sort(key=lambda e: e.key)
    _infer_outcomes(events)
    return [e.tick for e in events]


def _infer_outcomes(events: Sequence[_Event]) -> None:
    """Set each CSV tick's outcome from its move (the export has no side).

    A buy (amount >= 0) that raised the probability, or a sale that lowered it, is on
    ``"YES"``; the opposite is on ``"NO"``. A tick that left the probability unchanged
    (another fill of the same bet, typically) keeps the previous tick's outcome.
    """
    previous: float | None = None
    outcome = "YES"
    for event in events:
        prob = event.tick["prob"]
        if previous is not None and prob != previous:
            raised = prob > previous
            outcome = "YES" if raised == (event.amount >= 0) else "NO"
        event.tick["outcome"] = outcome
        previous = prob


def _newest_first(times: Sequence[int]) -> bool:
    """Whether a file's rows run newest first (more steps down than up; ties: yes)."""
    down = sum(1 for a, b in pairwise(times) if a > b)
    up = sum(1 for a, b in pairwise(times) if a < b)
    return down >= up


# -- JSON --------------------------------------------------------------------------------


def _json_array_items(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` for each element of a top-level JSON array.

    Elements are decoded one at a time so each has the line it starts on.
    """
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, text.index("[") + 1)
    line, counted = 1 + text.count("\n", 0, pos), pos
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            line, counted = line + text.count("\n", counted, pos), pos
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise FeedError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
            yield line, value
            pos = _skip_ws(text, pos)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                where = 1 + text.count("\n", 0, pos)
                raise FeedError(f"{path}:{where}: not valid JSON: expected ',' or ']'")
    if text[pos:].strip():
        where = 1 + text.count("\n", 0, pos)
        raise FeedError(f"{path}:{where}: not valid JSON: data after the array")


def _skip_ws(text: str, pos: int) -> int:
    """The position of the first non-whitespace character at or after ``pos``."""
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _json_object_items(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` for JSON lines, or for a file that is one (multi-line) object.

    A line that is not valid JSON yields a :class:`BadRow` as its value.
    """
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        yield 1 + text.count("\n", 0, len(text) - len(text.lstrip())), whole
        return
    parsed = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, BadRow(f"not valid JSON: {exc.msg}")
            continue
        parsed += 1
        yield number, value
    if not parsed:
        raise FeedError(f"{path}: neither a JSON array, a JSON object nor JSON lines")


def _from_json(items: Iterator[tuple[int, Any]], market: str | None) -> ReplayResult:
    """One tick per bet that moved the price, in event order."""
    events: list[_Event] = []
    skipped = 0
    errors: list[tuple[int, str]] = []
    for index, (line, bet) in enumerate(items):
        try:
            if isinstance(bet, BadRow):
                raise bet
            tick = bet_tick(bet, market)
        except BadRow as exc:
            errors.append((line, str(exc)))
            continue
        if tick is None:
            skipped += 1
            continue
        events.append(_Event((tick["ts"], index, 0), 0.0, tick))
    if _newest_first([e.tick["ts"] for e in events]):
        events.reverse()  # so equal times keep their original (oldest first) order
    events.sort(key=lambda e: e.key[0])
    return ReplayResult([e.tick for e in events], skipped, errors)


def bet_tick(bet: Any, market: str | None) -> Tick | None:
    """Map one Manifold bet object to a tick; ``None`` if it is not a price move."""
    if not isinstance(bet, dict):
        raise BadRow(f"not a JSON object: {type(bet).__name__}")
    if bet.get("isRedemption"):
        return None
    if bet.get("limitProb") is not None and _unfilled(bet):
        return None
    bet_id = _text(bet, "id")
    contract = market or _text(bet, "contractId")
    answer = _text(bet, "answerId", required=False)
    outcome = _text(bet, "outcome", required=False) or "YES"
    trader = _text(bet, "userId")
    return {
        "v": 1,
        "market": _bet_market(contract, answer),
        "prob": _prob(bet.get("probAfter"), "probAfter"),
        "ts": _millis(bet.get("createdTime"), "createdTime"),
        "volume": abs(_number(bet.get("amount"), "amount")),
        "trader": trader,
        "outcome": outcome,
        "source": SOURCE,
        "id": bet_id,
    }


def _unfilled(bet: dict[str, Any]) -> bool:
    """Whether a limit order has not traded at all (no fills, or nothing filled)."""
    if not bet.get("fills"):
        return True
    amount = bet.get("amount")
    return type(amount) in (int, float) and amount == 0


def _bet_market(contract: str | None, answer: str | None) -> str:
    market = f"{contract}:{answer}" if answer else str(contract)
    return _check_market(market, BadRow)


# -- pacing ------------------------------------------------------------------------------


def paced(ticks: Sequence[Tick], speedup: float) -> AsyncIterator[Tick]:
    """Yield ``ticks`` with their original gaps in event time divided by ``speedup``.

    ``speedup`` 0 (or infinity) means as fast as possible. The schedule is anchored at the
    first tick, so a slow consumer catches up instead of drifting; ticks out of time order
    are yielded at once. Raises :class:`FeedError` for a negative or NaN speedup.
    """
    if math.isnan(speedup) or speedup < 0:
        raise FeedError(f"speedup must be >= 0, got {speedup}")
    if speedup == 0 or math.isinf(speedup):
        return _unpaced(ticks)
    return _paced(ticks, speedup)


async def _unpaced(ticks: Sequence[Tick]) -> AsyncIterator[Tick]:
    for i, tick in enumerate(ticks, 1):
        yield tick
        if i % 1000 == 0:
            await asyncio.sleep(0)  # let other tasks run


async def _paced(ticks: Sequence[Tick], speedup: float) -> AsyncIterator[Tick]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    first_ts: int | None = None
    for tick in ticks:
        ts = tick.get("ts")
        if not isinstance(ts, int):
            raise FeedError(f"tick without an integer ts: {tick!r}"[:300])
        if first_ts is None:
            first_ts = ts
        delay = start + (ts - first_ts) / 1000.0 / speedup - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield tick
