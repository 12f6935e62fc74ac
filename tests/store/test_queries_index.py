"""Similar markets and screens from the in-memory index equal the full scans of the stored
market records (RocksDB), on random markets and random queries."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rocksdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gswarm.core import alpha
from gswarm.core.facts import market_key
from gswarm.core.ingest import MarketRecord, latest_alpha
from gswarm.core.vectors import PartitionIndex
from gswarm.errors import NotFoundError, QueryError
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.store import queries
from gswarm.stream.vectors import exact_vectors, latest_vectors, market_records
from tests.stream.truth import ground_truth

PARTS = 3


def rebuilt(db: Any) -> PartitionIndex:
    """A partition's index as a worker rebuilds it from the stored records."""
    index = PartitionIndex(functools.partial(exact_vectors, db))
    records = market_records(db)
    while chunk := list(itertools.islice(records, 7)):
        index.fill(*latest_vectors(chunk))
    return index


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], list[
        PartitionIndex], list[str]]]:
    """Synthetic markets (1 to many ticks each) in PARTS RocksDB databases, and indexes."""
    ticks = list(synthetic_ticks(markets=400, count=3000, seed=5))
    truth = ground_truth(ticks)
    home: Path = tmp_path_factory.mktemp("dbs")
    opts = rocksdict.Options(raw_mode=True)
    dbs = [rocksdict.Rdict(str(home / f"p{p}"), opts) for p in range(PARTS)]
    upserted = [PartitionIndex(functools.partial(exact_vectors, db)) for db in dbs]
    names = sorted(truth.records)
    for i, market in enumerate(names):
        rec = truth.records[market]
        dbs[i % PARTS][market_key(market)] = rec.encode()
        raw = np.array([list(rec.latest["alpha"].values())])
        upserted[i % PARTS].upsert([market], raw)
    try:
        yield dbs, upserted, names
    finally:
        for db in dbs:
            db.close()


def test_latest_alpha_reads_the_records_vector() -> None:
    truth = ground_truth(synthetic_ticks(markets=5, count=50, seed=2))
    for rec in truth.records.values():
        raw = latest_alpha(rec.encode())
        assert raw is not None
        assert list(np.frombuffer(raw, "<f8")) == list(rec.latest["alpha"].values())
    assert latest_alpha(MarketRecord("empty").encode()) is None
    pairs = [(market_key(m), rec.encode()) for m, rec in sorted(truth.records.items())]
    pairs.insert(2, (market_key("empty"), MarketRecord("empty").encode()))
    ids, rows = latest_vectors(pairs)
    assert ids == sorted(truth.records)
    assert rows.tolist() == [list(truth.records[m].latest["alpha"].values()) for m in ids]


def test_rebuilt_index_equals_upserted_index(stored: Any) -> None:
    dbs, upserted, _ = stored
    for db, want in zip(dbs, upserted, strict=True):
        got = rebuilt(db)
        assert sorted(got.ids) == sorted(want.ids)
        for market in want.ids:
            a, b = got.vector(market), want.vector(market)
            assert a is not None and b is not None and np.array_equal(a, b)
        rows = [got.rows[m] for m in want.ids]
        for j in range(alpha.DIM):
            assert np.array_equal(got.approx(j)[0][rows], want.approx(j)[0])
            assert np.array_equal(got.recoverable(np.array(rows), j),
                                  want.recoverable(np.arange(len(want)), j))


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(st.data(), st.integers(1, 50), st.sampled_from([-1.0, 0.0, 0.9, 0.99]))
def test_similar_equals_the_scan(stored: Any, data: st.DataObject, k: int,
                                 floor: float) -> None:
    dbs, upserted, names = stored
    market = data.draw(st.sampled_from(names))
    target = queries.target_vector(upserted, market)
    assert target == queries._unit_alpha(queries.record(dbs, market)).astype(float).tolist()
    got = queries.similar(upserted, vector=target, k=k, min_score=floor, exclude=market)
    assert got == queries.similar_scan(dbs, market=market, k=k, min_score=floor)
    given_vec = data.draw(st.lists(st.floats(-1, 1), min_size=alpha.DIM, max_size=alpha.DIM))
    assert queries.similar(upserted, vector=given_vec, k=k, min_score=floor) == (
        queries.similar_scan(dbs, vector=given_vec, k=k, min_score=floor))


WHERE = st.tuples(st.sampled_from(alpha.COMPONENTS), st.sampled_from(["gt", "ge", "lt", "le"]),
                  st.sampled_from([0.0, 0.5, 0.7, 1.0, -1.0, 0.3]) | st.floats(-3, 3))


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(st.lists(WHERE, min_size=1, max_size=3),
       st.none() | st.sampled_from(alpha.COMPONENTS), st.none() | st.sampled_from(
           ["asc", "desc"]), st.integers(1, 300))
def test_screen_equals_the_scan(stored: Any, where: list[tuple[str, str, float]],
                                sort: str | None, order: str | None, limit: int) -> None:
    dbs, upserted, _ = stored
    spec = queries.make_screen([queries.condition(*w) for w in where], sort, order, limit)
    got, want = queries.screen(upserted, spec), queries.screen_scan(dbs, spec)
    assert got == want
    assert [[float(v).hex() for v in row.values() if isinstance(v, float)] for row in got] == [
        [float(v).hex() for v in row.values() if isinstance(v, float)] for row in want]


def test_exact_vectors_read_the_records(stored: Any) -> None:
    dbs, upserted, _ = stored
    some = upserted[0].ids[:5]
    want = [list(queries.record(dbs, m).latest["alpha"].values()) for m in some]
    assert exact_vectors(dbs[0], some).tolist() == want
    with pytest.raises(LookupError):
        exact_vectors(dbs[0], ["m-not-stored"])


def test_screen_syntax_and_its_errors() -> None:
    c = queries.parse_where("rsi14:gt:0.7")
    assert (c.component, c.op, c.value) == ("rsi14", "gt", 0.7)
    spec = queries.make_screen([c, queries.parse_where("log_odds:lt:0")])
    assert (spec.sort, spec.descending, spec.limit) == ("rsi14", True, 100)
    assert spec.components == ["rsi14", "log_odds"]
    low = queries.make_screen([queries.parse_where("log_odds:le:0")])
    assert not low.descending
    assert queries.make_screen([], sort="tick_rate").descending
    for bad in ("rsi14:gt", "rsi14:gt:x", "nope:gt:1", "rsi14:eq:1", "rsi14:gt:nan",
                "rsi14:gt:inf", "a:b:c:d"):
        with pytest.raises(QueryError):
            queries.parse_where(bad)
    for args in (([],), ([c], "nope"), ([c], None, "up"), ([c], None, None, 0),
                 ([c] * 21,)):
        with pytest.raises(QueryError):
            queries.make_screen(*args)
    with pytest.raises(NotFoundError):
        queries.target_vector([PartitionIndex(lambda ms: np.zeros((0, alpha.DIM)))],
                              "m-nope")


def test_a_stored_vector_given_back_is_compared_as_stored() -> None:
    """Scaling a stored vector again moves some components by a float32 step; a market's
    vector passed between workers must not change."""
    rng = np.random.default_rng(4)
    stored = alpha.embed(rng.normal(size=(2000, alpha.DIM)))
    rescaled = alpha.unit(stored.astype(np.float64))
    assert not np.array_equal(rescaled, stored)  # the trap is real
    for row in stored:
        assert np.array_equal(queries.given_vector(row.astype(float).tolist()), row)
    assert np.allclose(queries.given_vector([3.0] + [0.0] * (alpha.DIM - 1))[0], 1.0)
