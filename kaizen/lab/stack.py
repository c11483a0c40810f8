"""The stack a lab run uses: embedded broker and moto, one worker and the connectors, with the demo's fast profile."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from kaizen.demo.env import apply_demo_env, connectors_available, reset_connector_state
from streams.settings import Settings

# On top of the demo profile (1 s telemetry, 40 s monitoring, 20 s baseline): the lab's own data dir, and room
# for one improvement per case at once.
LAB_ENV = {"KAIZEN_DATA_DIR": ".kaizen/lab", "MAX_CONCURRENT_IMPROVEMENTS": "64"}


@contextlib.contextmanager
def lab_stack(log_dir: Path | None = None) -> Iterator[Settings]:
    """Tansu + moto (never real AWS), a worker and `kaizen connect`; every process stopped by pid on exit."""
    from kaizen.supervisor import Supervisor
    from streams.settings import get_settings

    for k, v in LAB_ENV.items():
        os.environ.setdefault(k, v)
    apply_demo_env(os.environ)
    get_settings.cache_clear()
    settings = get_settings()
    reset_connector_state(settings.kaizen_data_dir)
    sup = Supervisor(settings, log_dir or settings.kaizen_data_dir / "logs", force_moto=True)
    try:
        env = sup.start_infrastructure()
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()
        sup.spawn("worker-0", ["worker"])
        if connectors_available():
            sup.spawn("connect", ["connect"])
        yield settings
    finally:
        sup.stop()
