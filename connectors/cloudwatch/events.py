"""The event sources: alarm transitions by DescribeAlarms polling, and EventBridge events delivered to an SQS queue."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from connectors.cloudwatch.base import SourceBatch
from connectors.cloudwatch.client import GuardedClient, is_outage
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.mapping import (
    alarm_event,
    eventbridge_event,
    tenant_allowed,
    to_datetime,
    unwrap_sqs_body,
)
from streams.records import DeadLetter
from streams.settings import Settings


class AlarmsSource:
    """Alarm state transitions, found by comparing DescribeAlarms with the states remembered in the cursor.

    Cursor `alarms:<prefix>`: per alarm its last state and transition time. An event is emitted when
    the state differs from the remembered one (or, where AWS reports StateTransitionedTimestamp, when
    that time moved: a flip and flip-back between two polls). An alarm seen for the first time emits
    an event only if it is in ALARM (old_state "UNKNOWN"). Restarting therefore re-emits nothing.
    Severity follows `mapping.alarm_severity` (tags need ListTagsForResource, asked only on transitions).
    """

    kind = "event"
    client_name = "cloudwatch"

    def __init__(self, client: GuardedClient, cursors: CursorStore, settings: Settings) -> None:
        self.client = client
        self.cursors = cursors
        self.settings = settings
        self.prefix = settings.cloudwatch_alarm_prefix
        self.name = f"alarms:{self.prefix or '*'}"
        self.alarms_seen = 0
        self.transitions = 0

    async def describe(self) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"AlarmNamePrefix": self.prefix} if self.prefix else {}
            if token:
                kwargs["NextToken"] = token
            page = await self.client.call("describe_alarms", **kwargs)
            alarms.extend(page.get("MetricAlarms", []))
            alarms.extend(page.get("CompositeAlarms", []))
            token = page.get("NextToken")
            if not token:
                return alarms

    async def _tags(self, arn: str | None) -> dict[str, str]:
        if not arn:
            return {}
        try:
            res = await self.client.call("list_tags_for_resource", ResourceARN=arn)
        except ClientError as exc:
            if is_outage(exc):
                raise
            return {}  # no permission / not taggable: the name and description rules still apply
        return {str(t["Key"]): str(t.get("Value", "")) for t in res.get("Tags", [])}

    async def collect(self, now: datetime) -> SourceBatch:
        cursor = self.cursors.load(self.name)
        known: dict[str, list[Any]] = dict(cursor.get("states") or {})
        batch = SourceBatch(kind=self.kind)
        alarms = await self.describe()
        self.alarms_seen = len(alarms)
        new_states: dict[str, list[Any]] = {}
        for alarm in alarms:
            name, state = str(alarm["AlarmName"]), str(alarm.get("StateValue", ""))
            moved = alarm.get("StateTransitionedTimestamp")
            moved_iso = to_datetime(moved).isoformat() if moved else None
            new_states[name] = [state, moved_iso]
            before = known.get(name)
            if before is None:
                if state != "ALARM":
                    continue
                old = "UNKNOWN"
            elif before[0] != state or (moved_iso and before[1] and moved_iso != before[1]):
                old = str(before[0])
            else:
                continue
            event = alarm_event(alarm, old, await self._tags(alarm.get("AlarmArn")),
                                tenant_dimension=self.settings.cloudwatch_tenant_dimension)
            if tenant_allowed(event.tenant_id, self.settings.cloudwatch_tenant_filter):
                batch.records.append(event)
        self.transitions += len(batch.records)

        async def commit() -> None:
            await asyncio.to_thread(self.cursors.save, self.name, {"states": new_states})

        batch.commit = commit
        return batch

    def status(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "alarms": self.alarms_seen, "transitions_emitted": self.transitions}


class QueueSource:
    """EventBridge events routed to the SQS queue CLOUDWATCH_EVENTS_QUEUE_URL.

    ReceiveMessage long-polls (first call waits `wait_seconds`, later ones return at once) up to
    `max_batches` × 10 messages per poll. Each body (an EventBridge envelope, SNS-wrapped or not) is
    mapped to a CloudWatchEvent; an unreadable body becomes a dead letter. The messages are deleted
    only in `commit`, i.e. after Kafka acknowledged the records and dead letters; messages of tenants
    outside CLOUDWATCH_TENANT_FILTER are deleted too (counted as filtered). If publishing fails the
    messages reappear after the queue's visibility timeout and are sent again (same event ids).
    """

    kind = "event"
    client_name = "sqs"

    def __init__(self, client: GuardedClient, settings: Settings, *, queue_url: str | None = None,
                 wait_seconds: int = 2, max_batches: int = 10) -> None:
        url = queue_url or settings.cloudwatch_events_queue_url
        if not url:
            raise ValueError("QueueSource needs CLOUDWATCH_EVENTS_QUEUE_URL")
        self.client = client
        self.settings = settings
        self.queue_url = url
        self.name = f"queue:{url}"
        self.wait_seconds = wait_seconds
        self.max_batches = max_batches
        self.received = 0
        self.deleted = 0
        self.filtered_out = 0
        self.dead_letters = 0
        self.delete_failures = 0
        self.last_delete_error: str | None = None

    async def collect(self, now: datetime) -> SourceBatch:
        batch = SourceBatch(kind=self.kind)
        handles: list[str] = []
        for i in range(self.max_batches):
            res = await self.client.call("receive_message", QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                         WaitTimeSeconds=self.wait_seconds if i == 0 else 0)
            messages = res.get("Messages", [])
            if not messages:
                break
            for msg in messages:
                self.received += 1
                handles.append(msg["ReceiptHandle"])
                body = str(msg.get("Body", ""))
                try:
                    event = eventbridge_event(unwrap_sqs_body(body),
                                              tenant_field=self.settings.cloudwatch_tenant_dimension)
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
                    batch.dead.append(DeadLetter(reason=f"SQS message is not an EventBridge event: {exc!r}"[:300],
                                                 source_topic=f"sqs:{self.queue_url}", original=body))
                    self.dead_letters += 1
                    continue
                if tenant_allowed(event.tenant_id, self.settings.cloudwatch_tenant_filter):
                    batch.records.append(event)
                else:
                    self.filtered_out += 1

        async def commit() -> None:
            for i in range(0, len(handles), 10):
                entries = [{"Id": str(j), "ReceiptHandle": h} for j, h in enumerate(handles[i:i + 10])]
                try:
                    res = await self.client.call("delete_message_batch", QueueUrl=self.queue_url, Entries=entries)
                except (BotoCoreError, ClientError) as exc:
                    # Redelivered after the visibility timeout; the same event ids make it harmless downstream.
                    self.delete_failures += 1
                    self.last_delete_error = str(exc)[:300]
                    continue
                self.deleted += len(res.get("Successful", []))

        batch.commit = commit
        return batch

    def status(self) -> dict[str, Any]:
        return {"queue_url": self.queue_url, "received": self.received, "deleted": self.deleted,
                "filtered_out": self.filtered_out, "dead_letters": self.dead_letters,
                "delete_failures": self.delete_failures, "last_delete_error": self.last_delete_error}
