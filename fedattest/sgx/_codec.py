"""Little-endian field reader/writer shared by the SGX binary formats.

Every read names the field it is reading, so a truncated or malformed structure raises a
:class:`~fedattest.errors.FormatError` that says exactly where parsing stopped.
"""

from __future__ import annotations

from fedattest.errors import FormatError


class Reader:
    """Sequential reader over an immutable byte string."""

    __slots__ = ("_data", "_pos", "_where")

    def __init__(self, data: bytes, where: str, start: int = 0) -> None:
        self._data = data
        self._pos = start
        self._where = where

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise FormatError(
                f"{self._where}.{field}",
                f"truncated: need {n} bytes at offset {self._pos}, only {self.remaining} left",
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "little")

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out


def u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def check_len(value: bytes, size: int, field: str) -> None:
    """Reject a fixed-size field of the wrong length when building a structure."""
    if len(value) != size:
        raise FormatError(field, f"must be {size} bytes, got {len(value)}")
