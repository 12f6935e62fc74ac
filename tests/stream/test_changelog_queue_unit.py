"""The changelog queue keeps what a recovery is reading (gswarm.stream.changelogs).

Faust empties its changelog queue on every resume of the app's flow, also the resumes
after the standby partitions started reading: records queued then were lost to the
standby for good (the chaos soak's never-pruned tick). No broker: nothing is started.
"""

from __future__ import annotations

import faust
from faust.types import TP

from gswarm.stream.changelogs import ChangelogQueue, TableManager
from tests.stream.offline import offline_app

TP0 = TP("app-facts-changelog", 0)


def make_app() -> faust.App:
    return offline_app("changelog-queue-unit",
                       TableManager="gswarm.stream.changelogs:TableManager")


async def test_a_resume_without_a_rebalance_keeps_the_queued_records() -> None:
    app = make_app()
    tables = app.tables
    assert isinstance(tables, TableManager)
    queue = tables.changelog_queue
    assert isinstance(queue, ChangelogQueue)
    await queue.put("record 101")
    app.flow_control.resume()  # as Recovery.on_recovery_completed, standbys reading
    assert queue.qsize() == 1
    assert await queue.get() == "record 101"


async def test_the_first_resume_after_a_rebalance_began_drops_the_old_generation() -> None:
    app = make_app()
    tables = app.tables
    assert isinstance(tables, TableManager)
    queue = tables.changelog_queue
    await queue.put("fetched in generation 1")
    tables.on_partitions_revoked({TP0})  # a rebalance begins
    app.flow_control.suspend()
    app.flow_control.resume()  # the recovery of generation 2 starts reading
    assert queue.qsize() == 0
    await queue.put("fetched in generation 2")
    app.flow_control.resume()  # later resumes of the same recovery keep it
    assert queue.qsize() == 1
