"""The chaos soak, short (CI): supervised workers on a 3-node cluster killed at seeded
moments, one broker node killed, one prune round; the cold recovery equals the calm run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chaos

pytestmark = pytest.mark.timeout(900)


def test_stream_mixes_every_kind_of_message() -> None:
    stream = chaos.make_stream(seed=3, ticks=4000)
    values = [v for part in (stream.phase_a, stream.phase_b, stream.phase_c) for _, v, _ in part]
    assert stream.bad and all(b in values for b in stream.bad)
    assert any(v.startswith(b"[") for v in values)  # arrays
    assert len(values) > len(set(values))  # duplicate bets
    assert chaos.make_stream(seed=3, ticks=4000) == stream  # seeded


def test_short_soak_recovers_bit_for_bit(tmp_path: Path) -> None:
    result = chaos.soak(tmp_path, seconds=20, worker_kills=2, broker_kills=1, seed=11,
                        rate=1000.0, log=print)
    assert result["differences"] == []
    assert result["worker_kills"] >= 1 and result["broker_kills"] == 1
    assert result["offsets_skipped"] == 0
