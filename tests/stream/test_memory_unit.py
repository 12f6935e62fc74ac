"""The heap trimmer: free memory between live blocks goes back to the OS."""

from __future__ import annotations

from pathlib import Path

from gswarm.stream.memory import trimmer


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_trim_returns_the_free_memory_a_batch_left_between_live_blocks() -> None:
    release = trimmer()
    assert release is not None, "glibc has malloc_trim (this machine and CI run glibc)"
    # 2 KB blocks come from glibc's heap (not pymalloc's arenas); keeping every 16th, as a
    # batch leaves a few records alive, leaves the rest free but inside the heap
    blocks = [bytearray(2048) for _ in range(50_000)]
    kept = blocks[::16]
    del blocks
    before = rss_anon_mb()
    release()
    after = rss_anon_mb()
    assert len(kept) == 3125
    assert before - after > 40, (before, after)  # of the ~95 MB freed
