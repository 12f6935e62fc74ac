"""The rule that makes a peer worker dead, and whose member ids may be evicted."""

from __future__ import annotations

from gswarm.core.peers import REFUSALS, Liveness, Members

A, B = "http://127.0.0.1:6066", "http://127.0.0.1:6067"


def test_a_peer_is_dead_after_refusals_in_a_row_having_answered_before() -> None:
    live = Liveness()
    assert not live.refused(A)  # never answered: starting, or unknown -> never judged
    live.answered(A)
    verdicts = [live.refused(A) for _ in range(REFUSALS)]
    assert verdicts == [False] * (REFUSALS - 1) + [True]
    assert not live.refused(A)  # judged once; a new process must answer again first


def test_an_answer_between_refusals_starts_the_count_again() -> None:
    live = Liveness(refusals=2)
    live.answered(A)
    assert not live.refused(A)
    live.answered(A)  # a refusal, then an answer: alive (e.g. a restart already up)
    assert not live.refused(A)
    assert live.refused(A)


def test_peers_that_left_the_group_are_forgotten() -> None:
    live = Liveness(refusals=1)
    live.answered(A)
    live.answered(B)
    live.keep([B])
    assert not live.refused(A)
    assert live.refused(B)


def test_only_the_member_ids_seen_at_a_url_are_evicted() -> None:
    m = Members()
    m.seen([("m-1", A), ("m-2", B), ("other-client", None)])
    assert m.at(A) == {"m-1"} and m.at("http://elsewhere:1") == set()
    m.seen([("m-3", A), ("m-2", B)])  # A restarted as a new member: the old id is gone
    assert m.at(A) == {"m-3"}
