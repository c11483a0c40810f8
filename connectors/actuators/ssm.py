"""Actuator for AWS SSM Parameter Store: `/kaizen/<tenant>/<component>[/<target>]/<parameter>`."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from botocore.exceptions import ClientError

from connectors.actuators.base import Actuator, AppliedChange, FingerprintMismatch, applied, check_key
from connectors.actuators.fingerprint import fingerprint, verify

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def _not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ParameterNotFound"


class SSMActuator(Actuator):
    """`client` is a boto3 `ssm` client; every call runs in a worker thread.

    Before writing, the previous value (or its absence) is stored under a marker parameter
    `/kaizen/_applied/<improvement_id>/<name>`; the marker also makes apply idempotent."""

    name = "ssm"

    def __init__(self, client: Any, prefix: str = "/kaizen") -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")

    def full_key(self, key: str, target: str | None) -> str:
        """`<prefix>/<tenant>/<component>[/<target>]/<parameter>`; every segment a checked identifier."""
        return f"{self.prefix}/{check_key(super().full_key(key.lstrip('/'), target))}"

    def marker(self, improvement_id: str, name: str) -> str:
        return f"{self.prefix}/_applied/{_UNSAFE.sub('_', improvement_id)}{name}"

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(lambda: getattr(self.client, method)(**kwargs))

    async def _get(self, name: str) -> dict[str, Any] | None:
        try:
            response = await self._call("get_parameter", Name=name)
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise
        param: dict[str, Any] = response["Parameter"]
        return param

    async def read(self, key: str) -> str | None:
        param = await self._get(key)
        return None if param is None else str(param["Value"])

    async def history(self, name: str) -> list[dict[str, Any]]:
        """Every stored version of a parameter (oldest first)."""
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Name": name}
        while True:
            page = await self._call("get_parameter_history", **kwargs)
            out.extend(page.get("Parameters", []))
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    async def apply(self, key: str, value: str, improvement_id: str, target: str | None = None) -> AppliedChange:
        name = self.full_key(key, target)
        marker = self.marker(improvement_id, name)
        current = await self._get(name)
        current_value = None if current is None else str(current["Value"])
        mark = await self._get(marker)
        if mark is not None:
            previous = orjson.loads(mark["Value"])["previous"]
            if current_value == value:
                return applied(name, previous, value, improvement_id, target,
                               str(current["Version"]) if current else None, noop=True)
        else:
            previous = current_value
            await self._call("put_parameter", Name=marker, Type="String", Overwrite=True,
                             Value=orjson.dumps({"previous": previous, "new": value,
                                                 "previous_version": current["Version"] if current else None}).decode())
        result = await self._call("put_parameter", Name=name, Value=value, Type="String", Overwrite=True,
                                  Description=f"kaizen improvement {improvement_id}")
        return applied(name, previous, value, improvement_id, target, str(result.get("Version")))

    async def rollback(self, change: AppliedChange) -> None:
        current = await self.read(change.key)
        if current == change.previous and current != change.new:
            return  # already rolled back
        if not verify(current, change.fingerprint):
            raise FingerprintMismatch(
                f"{change.key}: current {fingerprint(current)} != applied {change.fingerprint}; not rolling back"
            )
        if change.previous is None:
            await self._call("delete_parameter", Name=change.key)
        else:
            await self._call("put_parameter", Name=change.key, Value=change.previous, Type="String", Overwrite=True,
                             Description=f"kaizen rollback of {change.improvement_id}")
        try:
            await self._call("delete_parameter", Name=self.marker(change.improvement_id, change.key))
        except ClientError as exc:
            if not _not_found(exc):
                raise
