"""The stack a lab run uses: embedded broker and moto, one worker and the connectors, with the demo's fast profile."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from kaizen.demo.env import apply_demo_env, connectors_available, reset_connector_state
from streams.settings import Settings

# On top of the demo profile (1 s telemetry, 20 s baseline): the lab's own data dir, room for one improvement
# per case at once, polls every 2 s (moto's ListMetrics and GetMetricData cost grows with every point stored,
# and the connectors ask once per namespace per poll), and 60 s of monitoring (a verdict waits up to twice
# that for telemetry that arrives late on a busy machine). No history read-back of newly seen series: the
# lab's endpoint has no history, and the canary series that appear mid-run would each cost moto seconds.
LAB_ENV = {"KAIZEN_DATA_DIR": ".kaizen/lab", "MAX_CONCURRENT_IMPROVEMENTS": "64",
           "CLOUDWATCH_STREAM_INTERVAL_SECONDS": "2", "MONITORING_DURATION_SECONDS": "60",
           "CLOUDWATCH_METRICS_HISTORY_SECONDS": "0"}


def forget_runs(data_dir: Path) -> None:
    """The lab's own data dir starts empty but for the logs: a fresh broker has no history, so cursors, the
    applied-changes journal and the audit of an earlier run would only mislead the new one."""
    if not data_dir.is_dir():
        return
    for entry in data_dir.iterdir():
        if entry.name == "logs":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def lab_stack(namespaces: list[str], log_dir: Path | None = None
              ) -> Iterator[tuple[Settings, Callable[[], str | None]]]:
    """Tansu + moto (never real AWS), a worker and `kaizen connect` reading `namespaces`; every process
    stopped by pid on exit. Yields the settings and a check that names a child that stopped (None while
    all run)."""
    from kaizen.supervisor import Supervisor, child_failure
    from streams.settings import get_settings

    own_dir = "KAIZEN_DATA_DIR" not in os.environ
    os.environ["CLOUDWATCH_NAMESPACE"] = ",".join(namespaces)
    for k, v in LAB_ENV.items():
        os.environ.setdefault(k, v)
    apply_demo_env(os.environ)
    get_settings.cache_clear()
    settings = get_settings()
    if own_dir:
        forget_runs(settings.kaizen_data_dir)
    else:
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
        def dead() -> str | None:
            for child in [*sup.children, *sup.stack.processes]:
                if not child.alive():
                    return child_failure(child.name, child.proc.poll(), child.log_path)
            return None

        yield settings, dead
    finally:
        sup.stop()
