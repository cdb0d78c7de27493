"""What every benchmark records next to its numbers (shared with `gpudecode benchmark`)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

from gpudecode.benchmark import git_commit, machine_info, write_result

__all__ = ["git_commit", "machine_info", "median_ms", "write_result"]


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds (these machines are noisy: medians, not means)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)
