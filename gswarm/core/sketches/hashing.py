"""Stable 64-bit hashes of string ids, vectorised over a batch.

Each id is encoded once (UTF-8); the bytes are laid out as a fixed-width numpy array and
hashed column by column with FNV-1a (64-bit), the length is folded in (so ``"a"`` and
``"a\\0"`` differ), and a splitmix64 finaliser spreads the bits. The result depends only on
the id's bytes: the same id hashes the same in every process, run and machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: U64) -> U64:
    """The splitmix64 finaliser (a bijection on 64-bit integers), vectorised."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out: U64 = z ^ (z >> np.uint64(31))
    return out


def hash_ids(ids: Sequence[str]) -> U64:
    """64-bit hashes of ``ids`` (one per id, in order)."""
    if not ids:
        return np.zeros(0, dtype=np.uint64)
    encoded = [s.encode() for s in ids]
    lengths = np.fromiter(map(len, encoded), dtype=np.uint64, count=len(encoded))
    raw = np.array(encoded)  # fixed width, zero padded
    width = raw.dtype.itemsize
    cols = raw.view(np.uint8).reshape(len(encoded), width) if width else None
    h = np.full(len(encoded), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        if cols is not None:
            for j in range(width):
                # padding past an id's length must not count: the hash may not depend on
                # the longest id in the batch
                mixed = (h ^ cols[:, j].astype(np.uint64)) * _FNV_PRIME
                h = np.where(lengths > j, mixed, h)
        h = (h ^ lengths) * _FNV_PRIME
    return splitmix64(h)


def rehash(h: U64, salt: int) -> U64:
    """An independent-looking second hash of the same values (for CMS rows)."""
    with np.errstate(over="ignore"):
        return splitmix64(h ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
