"""Pieces the benchmark scripts share: percentiles, process CPU time and the machine."""

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


def child_pids(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc; none where unavailable)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int], with_children: bool = False) -> float:
    """User+system CPU seconds of processes (Linux /proc; 0 where unavailable); with
    ``with_children`` also of their live descendants (smtp-ingress's SMTP workers, a
    service's worker processes under its forkserver)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
        if with_children:
            total += cpu_seconds(child_pids(pid), with_children=True)
    return total


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, or ``unknown``."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"
