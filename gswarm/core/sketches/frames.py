"""Length-prefixed framing of several byte strings into one (sketch serialisation)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

_LEN = struct.Struct("<I")


def pack(blobs: Iterable[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in blobs)


def unpack(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated frame header")
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            raise ValueError("truncated frame")
        out.append(data[pos + 4: pos + 4 + n])
        pos += 4 + n
    return out
