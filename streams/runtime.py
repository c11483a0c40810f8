"""Process-wide runtime handles of a worker: bootstrap address and the changelog stores it owns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.settings import get_settings


@dataclass
class Runtime:
    bootstrap: str = field(default_factory=lambda: get_settings().kafka_bootstrap_servers or "127.0.0.1:9092")
    stores: list[Any] = field(default_factory=list)
    process_id: str = ""


runtime = Runtime()
