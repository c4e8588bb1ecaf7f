"""Shared by the benchmark scripts: write the figures as JSON and print them as aligned lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(figures: dict[str, Any], out: Path) -> None:
    """Write ``figures`` to ``out`` (JSON) and print one ``name  value`` line each."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")


def cpu_summary() -> str:
    """The CPU model and the vector flags that pick the fast paths (every benchmark prints them)."""
    import os
    import re

    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as info:
            text = info.read()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1).strip()
        flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.M).group(1).split())
    except (OSError, AttributeError):
        pass
    wanted = sorted(flag for flag in flags if re.match(r"(avx|amx|fma|f16c)", flag))
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(wanted) or 'none found'}"
