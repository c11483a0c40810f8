"""Reports the simulated service to AWS like a real one: metrics, logs, its alarm; reads its parameters from SSM."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import ClientError

from connectors.actuators.base import encode_value
from kaizen.demo.workload.service import Tick, Value

LOG_GROUP_PREFIX = "/kaizen/demo"
SSM_PREFIX = "/kaizen"
CANARY_SEGMENT = "canary"


class _Named(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def component(self) -> str: ...


class ReportedService(Protocol):
    """What the reporter needs of a service: its tenant/component, and where to put the parameters it reads."""

    @property
    def profile(self) -> _Named: ...

    def configure(self, parameters: dict[str, Value], canary: dict[str, Value]) -> None: ...


def parse_value(raw: str) -> Value | None:
    """An SSM parameter value as the service understands it (booleans, numbers); None if unreadable."""
    text = raw.strip().lower()
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return None


def split_parameters(prefix: str, params: list[dict[str, Any]]) -> tuple[dict[str, Value], dict[str, Value]]:
    """GetParametersByPath results under `prefix` → (full values, canary values)."""
    full: dict[str, Value] = {}
    canary: dict[str, Value] = {}
    base = prefix.rstrip("/") + "/"
    for p in params:
        name = str(p.get("Name", ""))
        if not name.startswith(base):
            continue
        rest = name[len(base):]
        value = parse_value(str(p.get("Value", "")))
        if value is None:
            continue
        if rest.startswith(CANARY_SEGMENT + "/"):
            canary[rest[len(CANARY_SEGMENT) + 1:]] = value
        elif "/" not in rest:
            full[rest] = value
    return full, canary


class ServiceReporter:
    """One service's CloudWatch/Logs/SSM side; `cloudwatch`, `logs`, `ssm` are boto3 clients.

    Every boto3 call runs in a worker thread (asyncio.to_thread): the event loop never blocks.
    """

    def __init__(self, service: ReportedService, cloudwatch: Any, logs: Any, ssm: Any, *, namespace: str,
                 tenant_dimension: str = "tenant_id", log_group_prefix: str = LOG_GROUP_PREFIX,
                 ssm_prefix: str = SSM_PREFIX, instance: str = "i-1",
                 parameters: dict[str, Value] | None = None) -> None:
        self.service = service
        self.parameters = dict(parameters or {})  # created in SSM by setup()
        self.cloudwatch, self.logs, self.ssm = cloudwatch, logs, ssm
        self.namespace = namespace
        p = service.profile
        self.dimensions = [{"Name": tenant_dimension, "Value": p.tenant_id}, {"Name": "service", "Value": p.component}]
        self.log_group = f"{log_group_prefix}/{p.component}"
        self.log_stream = f"tenant-{p.tenant_id}/{instance}"
        self.parameter_path = f"{ssm_prefix}/{p.tenant_id}/{p.component}"
        self.alarm_name: str | None = None
        self.alarm_metric = "Latency"
        self.alarm_threshold = 0.0
        self.alarm_periods = 3
        self.alarm_state = "OK"
        self.recent_latency: deque[float] = deque(maxlen=10)
        self.calls = 0

    async def _call(self, client: Any, method: str, **kwargs: Any) -> Any:
        fn: Callable[..., Any] = getattr(client, method)
        self.calls += 1
        return await asyncio.to_thread(lambda: fn(**kwargs))

    # --- setup -----------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Create the log group and stream, and the service's parameters in SSM (kept if present)."""
        for method, kwargs in (("create_log_group", {"logGroupName": self.log_group}),
                               ("create_log_stream", {"logGroupName": self.log_group,
                                                      "logStreamName": self.log_stream})):
            try:
                await self._call(self.logs, method, **kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                    raise
        for name, value in self.parameters.items():
            try:
                await self._call(self.ssm, "put_parameter", Name=f"{self.parameter_path}/{name}", Type="String",
                                 Value=encode_value(value), Overwrite=False,
                                 Description=f"{self.service.profile.component} parameter (demo workload)")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ParameterAlreadyExists":
                    raise

    async def put_alarm(self, name: str, metric_name: str, threshold: float, periods: int = 3) -> None:
        """A critical alarm on the service's metric (severity tag + 'critical' in its name)."""
        self.alarm_name, self.alarm_threshold, self.alarm_periods = name, threshold, periods
        self.alarm_metric = metric_name
        self.alarm_state = "OK"
        await self._call(
            self.cloudwatch, "put_metric_alarm", AlarmName=name, MetricName=metric_name, Namespace=self.namespace,
            Statistic="Average", Period=10, EvaluationPeriods=periods, Threshold=threshold,
            ComparisonOperator="GreaterThanThreshold", Dimensions=self.dimensions, TreatMissingData="notBreaching",
            AlarmDescription=f"critical: {metric_name} of {self.service.profile.component} above {threshold:g}",
            Tags=[{"Key": "severity", "Value": "critical"}])

    # --- every tick ------------------------------------------------------------------------------
    async def read_parameters(self) -> tuple[dict[str, Value], dict[str, Value]]:
        """The service's full and canary parameters from SSM, applied to the service."""
        params: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Path": self.parameter_path, "Recursive": True}
        while True:
            page = await self._call(self.ssm, "get_parameters_by_path", **kwargs)
            params.extend(page.get("Parameters", []))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        full, canary = split_parameters(self.parameter_path, params)
        self.service.configure(full, canary)
        return full, canary

    def metric_data(self, tick: Tick) -> list[dict[str, Any]]:
        """PutMetricData entries of one tick, high resolution (1 s)."""
        base = {"Dimensions": self.dimensions, "Timestamp": tick.timestamp, "StorageResolution": 1}
        lat = tick.latency_ms
        return [
            {**base, "MetricName": "Latency", "Unit": "Milliseconds", "StatisticValues": {
                "SampleCount": float(tick.requests), "Sum": lat * tick.requests,
                "Minimum": lat * 0.25, "Maximum": tick.latency_max_ms}},
            {**base, "MetricName": "ErrorRate", "Unit": "Percent", "Value": tick.error_rate_pct},
            {**base, "MetricName": "RequestCount", "Unit": "Count", "Value": float(tick.requests)},
            *([] if tick.cache_hit_rate_pct is None else [
                {**base, "MetricName": "CacheHitRate", "Unit": "Percent", "Value": tick.cache_hit_rate_pct}]),
            {**base, "MetricName": "ActiveUsers", "Unit": "Count", "Value": tick.active_users},
            *self._canary_data(tick),
        ]

    def _canary_data(self, tick: Tick) -> list[dict[str, Any]]:
        """The canary share's own latency and error rate, dimension variant=canary (what monitoring
        judges during the canary stage). No RequestCount: a share's volume is not the service's throughput."""
        if tick.canary_latency_ms is None or tick.canary_error_rate_pct is None:
            return []
        base = {"Dimensions": [*self.dimensions, {"Name": "variant", "Value": "canary"}],
                "Timestamp": tick.timestamp, "StorageResolution": 1}
        n = max(1.0, round(tick.requests * tick.canary_share))
        lat = tick.canary_latency_ms
        return [
            {**base, "MetricName": "Latency", "Unit": "Milliseconds", "StatisticValues": {
                "SampleCount": n, "Sum": lat * n, "Minimum": lat * 0.25, "Maximum": lat * 3.0}},
            {**base, "MetricName": "ErrorRate", "Unit": "Percent", "Value": tick.canary_error_rate_pct},
        ]

    async def report(self, tick: Tick) -> None:
        """Send one tick: its metrics, its log lines, and the alarm's state if it changed."""
        await self._call(self.cloudwatch, "put_metric_data", Namespace=self.namespace,
                         MetricData=self.metric_data(tick))
        if tick.logs:
            ms = int(tick.timestamp.timestamp() * 1000)
            await self._call(self.logs, "put_log_events", logGroupName=self.log_group, logStreamName=self.log_stream,
                             logEvents=[{"timestamp": ms, "message": line.message} for line in tick.logs])
        await self.evaluate_alarm(tick.error_rate_pct if self.alarm_metric == "ErrorRate" else tick.latency_ms)

    async def evaluate_alarm(self, value: float) -> str | None:
        """Alarm evaluation as CloudWatch does it (N periods breaching → ALARM, N clear → OK); moto does
        not evaluate alarms, so the service sets the state. Returns the new state on a transition."""
        if self.alarm_name is None:
            return None
        self.recent_latency.append(value)
        last = list(self.recent_latency)[-self.alarm_periods:]
        if len(last) < self.alarm_periods:
            return None
        if all(v > self.alarm_threshold for v in last):
            new = "ALARM"
        elif all(v <= self.alarm_threshold for v in last):
            new = "OK"
        else:
            return None
        if new == self.alarm_state:
            return None
        self.alarm_state = new
        await self._call(self.cloudwatch, "set_alarm_state", AlarmName=self.alarm_name, StateValue=new,
                         StateReason=f"{self.alarm_periods} datapoints {'>' if new == 'ALARM' else '<='} "
                                     f"{self.alarm_threshold:g} (last {value:.1f})")
        return new
