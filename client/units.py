"""Human units: parse ``500ms``/``1.5s`` and ``100MiB/s``, format seconds and bytes. Pure."""

from __future__ import annotations

import math
import re

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION_RE = re.compile(rf"^{_NUMBER}\s*([a-zµ]+)$", re.IGNORECASE)
_DURATION_UNITS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}
_RATE_RE = re.compile(rf"^{_NUMBER}\s*([a-z]+(?:/s)?)$", re.IGNORECASE)
_BYTE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1 << 10,
    "mb": 1000**2,
    "mib": 1 << 20,
    "gb": 1000**3,
    "gib": 1 << 30,
    "tb": 1000**4,
    "tib": 1 << 40,
    # bits, for people who think in link speeds
    "bit": 1 / 8,
    "kbit": 1000 / 8,
    "mbit": 1000**2 / 8,
    "gbit": 1000**3 / 8,
}
_BPS_UNITS = {"bps": 1 / 8, "kbps": 1000 / 8, "mbps": 1000**2 / 8, "gbps": 1000**3 / 8}


def parse_duration(text: str) -> float:
    """Seconds in ``text`` such as ``500ms``, ``1.5s``, ``2m``, ``1h``.

    Raises:
        ValueError: one line saying what is wrong and what would work.
    """
    match = _DURATION_RE.match(text.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _DURATION_UNITS:
        hint = " (give a unit)" if _is_number(text) else ""
        raise ValueError(
            f"bad duration {text!r}{hint}: expected a number and a unit, e.g. 500ms, 1.5s, 2m"
        )
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_bandwidth(text: str) -> int:
    """Bytes per second in ``text`` such as ``100MiB/s``, ``1.5GB/s``, ``10Gbit/s``, ``800Mbps``.

    ``B`` is a byte and ``bit``/``bps`` a bit; ``KiB``/``MiB``/``GiB`` are powers of
    1024, ``kB``/``MB``/``GB`` powers of 1000.

    Raises:
        ValueError: one line saying what is wrong and what would work.
    """
    match = _RATE_RE.match(text.strip())
    factor: float | None = None
    if match is not None:
        unit = match.group(2).lower().removesuffix("/s")
        factor = _BYTE_UNITS.get(unit, _BPS_UNITS.get(unit))
    if match is None or factor is None:
        hint = " (give a unit)" if _is_number(text) else ""
        raise ValueError(
            f"bad bandwidth {text!r}{hint}: expected a number and a unit, "
            "e.g. 100MiB/s, 1.5GB/s, 10Gbit/s"
        )
    return round(float(match.group(1)) * factor)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_duration(seconds: float | None) -> str:
    """``850ms``, ``4.2s``, ``58s``, ``1m05s``, ``2h03m``, ``3d04h``; ``?`` when unknown."""
    if seconds is None or math.isnan(seconds):
        return "?"
    if math.isinf(seconds):
        return "∞"
    s = max(0.0, seconds)
    if s < 1:
        return f"{round(s * 1000)}ms"
    if s < 10:
        return f"{s:.1f}s"
    whole = round(s)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``12 MiB``, ``2.0 GiB``: binary units, 2-3 significant digits."""
    value = float(max(0.0, n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """``format_bytes`` per second; ``–`` for zero (nothing measured or nothing moving)."""
    return "–" if bytes_per_second <= 0 else f"{format_bytes(bytes_per_second)}/s"
