"""How dsprof writes quantities for people: bytes, durations, counts. The one place these
rules live; the terminal (render/, cli/) and the dashboard call these with their precision.

Bytes are binary (KiB = 1024 B). A duration in the terminal keeps a fixed unit (ms) so columns
line up; the dashboard picks s / ms / us by size.
"""

from __future__ import annotations

MIB = 1 << 20
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes(n: float | None, decimals: int = 2) -> str:
    """``1.50 GiB`` (``-`` for None); whole bytes below 1 KiB."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _BYTE_UNITS:
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.{decimals}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_rate(gbps: float | None, decimals: int = 2) -> str:
    """A bandwidth given in GB/s, in the unit it reads best in: ``12.50 GB/s``, ``2.74 MB/s``
    (a gloo all-reduce of a few KiB), never ``0.00 GB/s`` (``-`` for None)."""
    if gbps is None:
        return "-"
    if gbps >= 0.1:
        return f"{gbps:.{decimals}f} GB/s"
    return f"{gbps * 1e3:.{decimals}f} MB/s" if gbps >= 1e-4 else f"{gbps * 1e6:.1f} KB/s"


def fmt_mib(n: float | None, decimals: int = 1) -> str:
    """``12.5 MiB`` (``-`` for None): a fixed unit, for tables that compare sizes."""
    return "-" if n is None else f"{n / MIB:.{decimals}f} MiB"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds in a fixed unit: ``1.234 ms`` below 10 ms, ``12.3 ms`` above."""
    if ms is None:
        return "-"
    return f"{ms:,.3f} ms" if ms < 10 else f"{ms:,.1f} ms"


def fmt_duration_ms(ms: float | None) -> str:
    """A duration given in ms, in the unit its size reads best in: ``1.20 s``, ``3.40 ms``,
    ``56.0 us``."""
    if ms is None:
        return "-"
    if abs(ms) >= 1000:
        return f"{ms / 1000:.2f} s"
    if abs(ms) >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.1f} us"


def fmt_s_as_ms(s: float | None) -> str:
    """Seconds shown as ``12.34 ms``."""
    return "-" if s is None else f"{s * 1e3:.2f} ms"


def fmt_count(n: float | None) -> str:
    """``1,234`` or ``1,234.5`` (``-`` for None)."""
    if n is None:
        return "-"
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def fmt_flops(n: float | None) -> str:
    """FLOPs in the SI unit they read best in: ``2.15 GFLOP``, ``327.7 kFLOP`` (``-`` for None),
    so a small model's known count is never printed as ``0.000`` TFLOP."""
    if n is None:
        return "-"
    for scale, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"),
                        (1e3, "kFLOP")):
        if abs(n) >= scale:
            return f"{n / scale:.{3 if n / scale < 10 else 1}f} {unit}"
    return f"{n:.0f} FLOP"
