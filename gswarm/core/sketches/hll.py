"""HyperLogLog with Ertl's improved estimator, vectorised over a batch of 64-bit hashes.

A hash's top ``p`` bits choose one of ``m = 2**p`` registers; the register keeps the
largest rank seen, rank = 1 + number of leading zeros of the remaining ``64 - p`` bits (at
most ``65 - p``). Leading zeros are counted with integer shifts (no float tricks).

The estimate is Ertl's improved raw estimator ("New cardinality estimation algorithms for
HyperLogLog sketches", 2017, algorithm 6): it uses the whole register histogram, needs no
bias tables or linear-counting switch, and is accurate from 0 to far beyond 10**9 with 64-bit
hashes. Relative standard error is about 1.04/sqrt(m) (0.81 % at p = 14).

Merging is the register-wise maximum, so it is associative, commutative and idempotent: the
order and grouping of updates never change the registers.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
from numpy.typing import NDArray

from gswarm.core.sketches.hashing import SMALL

U64 = NDArray[np.uint64]

VERSION = 1
MIN_P, MAX_P = 4, 18
_HEAD = struct.Struct("<BB")


def leading_zeros64(x: U64) -> NDArray[np.uint8]:
    """Number of leading zero bits of each 64-bit value (64 for zero), by binary search."""
    x = x.copy()
    n = np.zeros(x.shape, dtype=np.uint8)
    for shift in (32, 16, 8, 4, 2, 1):
        top_empty = (x >> np.uint64(64 - shift)) == 0
        n[top_empty] += shift
        x[top_empty] <<= np.uint64(shift)
    n[x == 0] = 64
    return n


class HyperLogLog:
    """A HyperLogLog sketch of precision ``p`` (``m = 2**p`` one-byte registers)."""

    __slots__ = ("p", "registers")

    def __init__(self, p: int = 14, registers: NDArray[np.uint8] | None = None) -> None:
        if not MIN_P <= p <= MAX_P:
            raise ValueError(f"precision p must be in [{MIN_P}, {MAX_P}], got {p}")
        self.p = p
        m = 1 << p
        if registers is None:
            registers = np.zeros(m, dtype=np.uint8)
        elif registers.shape != (m,):
            raise ValueError(f"expected {m} registers, got {registers.shape}")
        self.registers = registers

    @property
    def m(self) -> int:
        return 1 << self.p

    def update(self, hashes: U64) -> None:
        """Add a batch of 64-bit hashes."""
        if len(hashes) == 0:
            return
        q = 64 - self.p
        if len(hashes) <= SMALL:
            # the same registers, on Python integers (numpy's cost per call dominates here)
            regs, mask = self.registers, (1 << 64) - 1
            for h in np.asarray(hashes, dtype=np.uint64).tolist():
                rank = min(64 - ((h << self.p) & mask).bit_length(), q) + 1
                if regs[h >> q] < rank:
                    regs[h >> q] = rank
            return
        h = np.asarray(hashes, dtype=np.uint64)
        index = (h >> np.uint64(q)).astype(np.intp)
        rest = h << np.uint64(self.p)  # the low q bits, moved to the top
        rank = np.minimum(leading_zeros64(rest), q).astype(np.uint8) + np.uint8(1)
        np.maximum.at(self.registers, index, rank)

    def merge(self, other: HyperLogLog) -> None:
        """In place: the sketch of the union."""
        if other.p != self.p:
            raise ValueError(f"cannot merge HLL p={other.p} into p={self.p}")
        np.maximum(self.registers, other.registers, out=self.registers)

    def copy(self) -> HyperLogLog:
        return HyperLogLog(self.p, self.registers.copy())

    def estimate(self) -> float:
        """Ertl's improved raw estimate of the number of distinct hashes added."""
        m, q = self.m, 64 - self.p
        counts = np.bincount(self.registers, minlength=q + 2).astype(np.float64)
        z = m * _tau(1.0 - counts[q + 1] / m)
        for k in range(q, 0, -1):
            z = 0.5 * (z + counts[k])
        z += m * _sigma(counts[0] / m)
        if math.isinf(z):
            return 0.0
        return float((m * m / (2.0 * math.log(2))) / z)

    def to_bytes(self) -> bytes:
        """Versioned, compressed: version, p, zlib(registers)."""
        return _HEAD.pack(VERSION, self.p) + zlib.compress(self.registers.tobytes(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> HyperLogLog:
        if len(data) < _HEAD.size:
            raise ValueError("HLL data too short")
        version, p = _HEAD.unpack_from(data)
        if version != VERSION:
            raise ValueError(f"unknown HLL format version {version}")
        try:
            regs = np.frombuffer(zlib.decompress(data[_HEAD.size:]), dtype=np.uint8).copy()
        except zlib.error as exc:
            raise ValueError(f"corrupt HLL registers: {exc}") from exc
        return cls(p, regs)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, HyperLogLog) and other.p == self.p
                and bool(np.array_equal(other.registers, self.registers)))

    __hash__ = None  # type: ignore[assignment]


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_old = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == z_old:
            return z / 3.0
