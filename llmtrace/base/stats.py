"""Small statistics shared by stats and alerts."""

from __future__ import annotations

import math


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) of already-sorted values, interpolating between closest ranks."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
