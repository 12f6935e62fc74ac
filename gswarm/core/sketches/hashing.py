"""Stable 64-bit hashes of string ids, vectorised over a batch.

Each id is encoded once (UTF-8); the bytes are laid out as a fixed-width numpy array and
hashed column by column with FNV-1a (64-bit), the length is folded in (so ``"a"`` and
``"a\\0"`` differ), and a splitmix64 finaliser spreads the bits. The result depends only on
the id's bytes: the same id hashes the same in every process, run and machine.

Batches of the live path are mostly small (a few ticks per partition when the load is
light), where numpy's fixed cost per call (tens of microseconds for the dozen calls of
one hash) is most of the work. So the same function has a plain-Python form for a few
ids, and ids seen recently (markets and traders repeat) come from a bounded cache; both
give exactly the numpy form's values (``tests/core/sketches/test_hashing.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK = 0xFFFFFFFFFFFFFFFF

#: Up to this many values, plain Python integers beat numpy's per-call cost.
SMALL = 24
#: Batches larger than this bypass the cache (mostly new ids: lookups would only add).
_CACHED_BATCH = 65_536
_CACHE_SIZE = 1 << 16
_cache: dict[str, int] = {}


def splitmix64(x: U64) -> U64:
    """The splitmix64 finaliser (a bijection on 64-bit integers), vectorised."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out: U64 = z ^ (z >> np.uint64(31))
    return out


def splitmix64_int(x: int) -> int:
    """:func:`splitmix64` of one value, on Python integers."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def hash_id(text: str) -> int:
    """The hash of one id, on Python integers (equal to ``hash_ids([text])[0]``)."""
    raw = text.encode()
    h = 0xCBF29CE484222325
    for byte in raw:
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    return splitmix64_int(((h ^ len(raw)) * 0x100000001B3) & _MASK)


def _hash_columns(ids: Sequence[str]) -> U64:
    """The numpy form: one masked FNV step per byte column of the whole batch."""
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


def _hash_new(ids: Sequence[str]) -> list[int]:
    if len(ids) <= SMALL:
        return [hash_id(s) for s in ids]
    return _hash_columns(ids).tolist()  # type: ignore[no-any-return]


def hash_ids(ids: Sequence[str]) -> U64:
    """64-bit hashes of ``ids`` (one per id, in order)."""
    if not ids:
        return np.zeros(0, dtype=np.uint64)
    if len(ids) > _CACHED_BATCH:
        return _hash_columns(ids)
    get = _cache.get
    found = [get(s) for s in ids]
    if None in found:
        new = list(dict.fromkeys(s for s, h in zip(ids, found, strict=True) if h is None))
        hashed = dict(zip(new, _hash_new(new), strict=True))
        if len(_cache) + len(hashed) > _CACHE_SIZE:
            _cache.clear()
        _cache.update(hashed)
        found = [hashed[s] if h is None else h for s, h in zip(ids, found, strict=True)]
    return np.array(found, dtype=np.uint64)


def rehash(h: U64, salt: int) -> U64:
    """An independent-looking second hash of the same values (for CMS rows)."""
    with np.errstate(over="ignore"):
        return splitmix64(h ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
