"""Learning-rate schedule of stage 2: linear warm-up to the peak, then cosine down to a floor."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, peak: float, floor: float, warmup: int, total: int) -> float:
    """Learning rate at optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
