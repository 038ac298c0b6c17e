"""Figures every measurement reports the same way."""

from __future__ import annotations

from collections.abc import Sequence


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max by nearest rank (each figure is a real sample), plus the count."""
    assert values_ms, "no samples"
    ordered = sorted(values_ms)

    def rank(q: int) -> float:
        return round(ordered[max(0, -(-len(ordered) * q // 100) - 1)], 1)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": round(ordered[-1], 1), "count": len(ordered)}


def peak_rss_bytes(pid: int) -> int:
    """A process's peak resident set (VmHWM, Linux); 0 if it is gone or not Linux."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0
