"""Pieces the benchmark scripts share: percentiles and a description of the machine."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (``nan`` when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def machine_info(packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """CPU model, cores, Python and platform; plus the versions of ``packages`` if given."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "cpu_usable": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }
    if packages:
        versions = {}
        for dist in packages:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[dist] = importlib.metadata.version(dist)
        info["packages"] = versions
    return info
