"""Sketch kernels: our vectorised HLL/CMS against Apache DataSketches' per-item updates.

Same ids, same process, medians of several runs. Run through the suite: ``make bench``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from gswarm.core.sketches.cms import CountMinSketch
from gswarm.core.sketches.hashing import hash_ids
from gswarm.core.sketches.hll import HyperLogLog


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(n: int = 1_000_000, runs: int = 5) -> dict[str, object]:
    import datasketches as ds

    rng = np.random.default_rng(1)
    traders = [f"u-{i}" for i in rng.integers(0, n // 2, n)]
    markets = [f"m-{i:05d}" for i in rng.zipf(1.2, n) % 20_000]

    def ours_hll() -> None:
        HyperLogLog(14).update(hash_ids(traders))

    def theirs_hll() -> None:
        sk = ds.hll_sketch(14, ds.tgt_hll_type.HLL_8)
        for s in traders:
            sk.update(s)

    def ours_cms() -> None:
        CountMinSketch.from_error(0.002, 0.01).update(hash_ids(markets))

    def ours_cms_plain() -> None:
        CountMinSketch.from_error(0.002, 0.01).update(hash_ids(markets), conservative=False)

    def theirs_cms() -> None:
        sk = ds.count_min_sketch(5, 1360)
        for s in markets:
            sk.update(s)

    rows = {}
    for name, fn in [("hll p=14: gswarm (vectorised)", ours_hll),
                     ("hll p=14: datasketches hll_sketch (per item)", theirs_hll),
                     ("cms 5x1360 conservative: gswarm", ours_cms),
                     ("cms 5x1360 plain: gswarm (vectorised)", ours_cms_plain),
                     ("cms 5x1360: datasketches count_min_sketch (per item)", theirs_cms)]:
        times = timed(fn, runs)
        rows[name] = {"median_s": statistics.median(times), "min_s": min(times),
                      "max_s": max(times), "items_per_s": n / statistics.median(times)}
    return {"items": n, "runs": runs, "kernels": rows}
