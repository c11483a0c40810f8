"""AlarmsSource transition rules (moto has no StateTransitionedTimestamp, so a stand-in answers DescribeAlarms)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.breaker import CircuitBreaker
from connectors.cloudwatch.client import GuardedClient
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.events import AlarmsSource
from streams.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Alarms:
    def __init__(self) -> None:
        self.alarms: dict[str, dict[str, Any]] = {}

    def set(self, name: str, state: str, moved: int, tenant: str = "acme") -> None:
        self.alarms[name] = {"AlarmName": name, "AlarmArn": f"arn:{name}", "StateValue": state,
                             "StateReason": "r", "MetricName": "Latency", "Namespace": "NS",
                             "Dimensions": [{"Name": "tenant_id", "Value": tenant}],
                             "StateUpdatedTimestamp": datetime.fromtimestamp(1_767_225_600 + moved, UTC),
                             "StateTransitionedTimestamp": datetime.fromtimestamp(1_767_225_600 + moved, UTC)}

    def describe_alarms(self, **kw: Any) -> dict[str, Any]:
        names = sorted(self.alarms)
        start = int(kw.get("NextToken", 0))
        out: dict[str, Any] = {"MetricAlarms": [self.alarms[n] for n in names[start:start + 1]]}
        if start + 1 < len(names):
            out["NextToken"] = str(start + 1)
        return out

    def list_tags_for_resource(self, **kw: Any) -> dict[str, Any]:
        return {"Tags": [{"Key": "severity", "Value": "critical"}] if "db" in kw["ResourceARN"] else []}


def _source(tmp_path: Path, fake: Alarms, **kw: Any) -> AlarmsSource:
    guarded = GuardedClient("cloudwatch", fake, CircuitBreaker("t"))
    return AlarmsSource(guarded, CursorStore(tmp_path), Settings(**kw))


async def _poll(src: AlarmsSource) -> list[dict[str, Any]]:
    batch = await src.collect(NOW)
    await batch.commit()
    return [r.model_dump() for r in batch.records]


async def test_transitions_only_and_restart_safe(tmp_path: Path) -> None:
    fake = Alarms()
    fake.set("api-latency", "OK", 0)
    fake.set("db-errors", "ALARM", 0)
    src = _source(tmp_path, fake)
    first = await _poll(src)
    assert [(e["detail"]["alarm_name"], e["detail"]["old_state"]) for e in first] == [("db-errors", "UNKNOWN")]
    assert first[0]["detail"]["severity"] == "critical"  # from the tag
    assert await _poll(src) == []
    fake.set("api-latency", "ALARM", 10)
    second = await _poll(src)
    assert [(e["detail"]["old_state"], e["detail"]["new_state"]) for e in second] == [("OK", "ALARM")]
    assert second[0]["detail"]["severity"] == "high" and second[0]["tenant_id"] == "acme"
    assert await _poll(_source(tmp_path, fake)) == []  # a restart re-emits nothing
    fake.set("api-latency", "ALARM", 20)  # flipped to OK and back between two polls
    assert [e["detail"]["new_state"] for e in await _poll(src)] == ["ALARM"]


async def test_tenant_filter(tmp_path: Path) -> None:
    fake = Alarms()
    fake.set("a", "ALARM", 0, tenant="acme")
    fake.set("b", "ALARM", 0, tenant="other")
    events = await _poll(_source(tmp_path, fake, cloudwatch_tenant_filter=["acme"]))
    assert [e["tenant_id"] for e in events] == ["acme"]
