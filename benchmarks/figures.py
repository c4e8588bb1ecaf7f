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
