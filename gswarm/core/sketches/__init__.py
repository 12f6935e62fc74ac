"""Mergeable numpy sketches: HyperLogLog, Count-Min, top-k, time-sliced windows."""
