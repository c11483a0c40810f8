"""Checks a command runs before it starts work: broker and AWS endpoint answer, ports free, files usable.

Each raises kaizen.errors.UserError naming the value, the variable or option it came from, and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from kaizen.errors import UserError


def _hostports(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip().removeprefix("PLAINTEXT://").removeprefix("kafka://")
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} is not a list of host:port",
                            "set it like 127.0.0.1:9092 (comma-separated for several brokers)")
        out.append((host.strip("[]"), int(port)))
    return out


def _answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_broker(bootstrap: str, wait_seconds: float) -> None:
    """Wait up to `wait_seconds` for one of the bootstrap brokers to accept a connection."""
    targets = _hostports(bootstrap)
    deadline = time.monotonic() + wait_seconds
    while True:
        if any(_answers(h, p) for h, p in targets):
            return
        if time.monotonic() >= deadline:
            raise UserError(
                f"no Kafka broker answers at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS) after {wait_seconds:.0f} s",
                "start the broker or fix KAFKA_BOOTSTRAP_SERVERS (unset, `kaizen run` starts an embedded one)")
        time.sleep(0.25)


def check_aws_endpoint(url: str, wait_seconds: float) -> None:
    """An AWS_ENDPOINT_URL that nothing answers on fails at start, not as connector errors later."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"AWS_ENDPOINT_URL={url!r} is not an http(s) URL",
                        "set it like http://127.0.0.1:5000 or unset it")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + wait_seconds
    while not _answers(parts.hostname, port):
        if time.monotonic() >= deadline:
            raise UserError(f"no AWS endpoint answers at {url} (AWS_ENDPOINT_URL) after {wait_seconds:.0f} s",
                            "start it (e.g. moto_server) or unset AWS_ENDPOINT_URL "
                            "(`kaizen run` then starts moto when no AWS credentials are configured)")
        time.sleep(0.25)


def check_port_free(host: str, port: int, variable: str, what: str) -> None:
    if port and _answers("127.0.0.1" if host in ("0.0.0.0", "") else host, port, timeout=0.3):  # noqa: S104
        raise UserError(f"port {port} for {what} is taken",
                        f"stop what listens on it or set {variable} to a free port")


def check_input(path: Path, option: str, what: str) -> None:
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file", f"pass an existing {what}")


def check_output(path: Path, option: str) -> None:
    """The file can be created: its directory exists and is writable, and it is not a directory."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory", "give a file name")
    if not parent.is_dir():
        raise UserError(f"{option} {path}: directory {parent} does not exist",
                        f"create it (mkdir -p {parent}) or choose another path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{option} {path}: not writable", "choose a path you can write to")


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """aiokafka logs every failed connection attempt at ERROR; while a command still decides whether the
    broker is there, the one error line it prints says it better."""
    loggers = [logging.getLogger(n) for n in ("aiokafka", "aiokafka.conn", "aiokafka.client")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)
