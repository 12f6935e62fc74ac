from gswarm.core.offsets import OffsetWatch, Skip


def test_contiguous_and_redelivered_offsets_are_not_skips() -> None:
    watch = OffsetWatch()
    for offset in [0, 1, 2, 3, 1, 2, 3, 4]:  # a redelivery goes back and comes again
        assert watch.see(0, offset) is None


def test_a_jump_forward_reports_the_unseen_range_per_partition() -> None:
    watch = OffsetWatch()
    assert watch.see(0, 5) is None  # the first offset of a partition is not a skip
    assert watch.see(1, 7) is None
    skip = watch.see(0, 9)
    assert skip == Skip(0, 6, 8) and skip.count == 3
    assert watch.see(1, 8) is None


def test_a_partition_that_was_away_starts_afresh() -> None:
    watch = OffsetWatch()
    watch.see(0, 5)
    watch.see(1, 5)
    watch.keep({1})  # partition 0 went to another worker, which read 6..99
    assert watch.see(0, 100) is None
    assert watch.see(1, 8) == Skip(1, 6, 7)
