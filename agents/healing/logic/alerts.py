"""The alert table (docs/healing.md) as rules over execution metrics, quota and vendor status (pure)."""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from agents.healing.logic.execution_metrics import Baseline, ExecutionMetrics, QuotaStatus, percentile

__all__ = ["Alert", "AlertEvaluator", "AlertRules"]

Channel = Literal["realtime", "digest", "both"]
AlertSeverity = Literal["critical", "warning"]


class Alert(BaseModel):
    """One notification: what, how bad, which channel (real-time webhook or daily digest) and what to do."""

    alert_id: str
    kind: str  # success_rate | consecutive_failures | quota_high | quota_critical | quota_exhausted |
    #            latency_p95 | cost_spike | fingerprint_mismatch | vendor_degraded
    severity: AlertSeverity
    channel: Channel
    action: Literal["notify", "notify_investigate", "notify_pause_skill"] = "notify"
    title: str
    message: str
    skill: str
    tenant_id: str
    timestamp: datetime
    evidence: dict[str, Any] = {}


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the alert table (all configurable)."""

    min_success_rate: float = 0.95
    success_window: int = 20  # executions; the rate is judged once the window is full
    consecutive_failures: int = 5
    quota_warning_pct: float = 80.0
    quota_critical_pct: float = 95.0
    latency_factor: float = 2.0  # recent p95 > 2× baseline p95
    cost_factor: float = 2.0  # recent mean cost > 2× baseline mean
    recent_window: int = 20
    min_recent: int = 5
    cooldown_seconds: float = 3600.0  # one alert per (kind, tenant, skill) per hour


# kind -> (severity, channel, action), the table's "Severity" and "Action" columns
_TABLE: dict[str, tuple[AlertSeverity, Channel, str]] = {
    "success_rate": ("critical", "realtime", "notify_investigate"),
    "consecutive_failures": ("critical", "realtime", "notify_investigate"),
    "quota_high": ("warning", "digest", "notify"),
    "quota_critical": ("critical", "realtime", "notify"),
    "quota_exhausted": ("critical", "realtime", "notify_pause_skill"),
    "latency_p95": ("warning", "digest", "notify"),
    "cost_spike": ("warning", "digest", "notify"),
    "fingerprint_mismatch": ("critical", "realtime", "notify"),
    "vendor_degraded": ("warning", "both", "notify"),
}


class AlertEvaluator:
    """Feeds executions through the alert rules, keeping per-skill windows and a per-alert cooldown.

    A condition that persists raises its alert once per cooldown_seconds (observation time), so the
    operator sees an incident once, not once per execution.
    """

    def __init__(self, rules: AlertRules | None = None) -> None:
        self.rules = rules or AlertRules()
        self._outcomes: dict[tuple[str, str], deque[bool]] = defaultdict(
            lambda: deque(maxlen=self.rules.success_window))
        self._recent: dict[tuple[str, str], deque[ExecutionMetrics]] = defaultdict(
            lambda: deque(maxlen=self.rules.recent_window))
        self._streak: dict[tuple[str, str], int] = defaultdict(int)
        self._last: dict[tuple[str, str, str], datetime] = {}

    def _make(self, kind: str, skill: str, tenant: str, now: datetime, title: str, message: str,
              evidence: dict[str, Any]) -> Alert | None:
        key = (kind, tenant, skill)
        last = self._last.get(key)
        if last is not None and (now - last).total_seconds() < self.rules.cooldown_seconds:
            return None
        self._last[key] = now
        severity, channel, action = _TABLE[kind]
        aid = hashlib.sha1(f"{kind}|{tenant}|{skill}|{now.isoformat()}".encode()).hexdigest()[:16]
        return Alert(alert_id=f"alert-{aid}", kind=kind, severity=severity, channel=channel,
                     action=action,  # type: ignore[arg-type]
                     title=title, message=message, skill=skill, tenant_id=tenant, timestamp=now, evidence=evidence)

    def evaluate(self, em: ExecutionMetrics, baseline: Baseline | None, now: datetime) -> list[Alert]:
        """Alerts raised by one execution (reliability, quota, latency, cost, fingerprint)."""
        r, key, skill, tenant = self.rules, (em.tenant_id, em.skill_name), em.skill_name, em.tenant_id
        out: list[Alert | None] = []
        outcomes = self._outcomes[key]
        outcomes.append(em.execution_succeeded)
        self._streak[key] = 0 if em.execution_succeeded else self._streak[key] + 1
        if self._streak[key] >= r.consecutive_failures:
            out.append(self._make("consecutive_failures", skill, tenant, now,
                                  f"{skill}: {self._streak[key]} consecutive failures",
                                  f"last error: {em.error_category or '-'} {em.error_reason or ''}".strip(),
                                  {"streak": self._streak[key], "execution_id": em.execution_id}))
        if len(outcomes) == outcomes.maxlen:
            rate = sum(outcomes) / len(outcomes)
            if rate < r.min_success_rate:
                out.append(self._make("success_rate", skill, tenant, now, f"{skill}: success rate {rate:.0%}",
                                      f"below {r.min_success_rate:.0%} over the last {len(outcomes)} executions",
                                      {"success_rate": rate, "window": len(outcomes)}))
        pct = em.free_tier_quota_pct_used
        if (em.free_tier_quota_used_today > 0 and em.free_tier_quota_remaining <= 0) or pct >= 100.0:
            out.append(self._make("quota_exhausted", skill, tenant, now, f"{skill}: free-tier quota exhausted",
                                  "hard limit hit today; pause the skill until the quota resets",
                                  {"pct_used": pct, "used": em.free_tier_quota_used_today}))
        elif pct > r.quota_critical_pct:
            out.append(self._make("quota_critical", skill, tenant, now, f"{skill}: free-tier quota {pct:.0f}%",
                                  "quota exhaustion imminent", {"pct_used": pct}))
        elif pct > r.quota_warning_pct:
            out.append(self._make("quota_high", skill, tenant, now, f"{skill}: free-tier quota {pct:.0f}%",
                                  f"above {r.quota_warning_pct:.0f}% of today's quota", {"pct_used": pct}))
        if em.fingerprint and em.expected_fingerprint and em.fingerprint != em.expected_fingerprint:
            out.append(self._make("fingerprint_mismatch", skill, tenant, now, f"{skill}: fingerprint mismatch",
                                  "skill code differs from its deployed fingerprint",
                                  {"fingerprint": em.fingerprint, "expected": em.expected_fingerprint}))
        recent = self._recent[key]
        recent.append(em)
        if baseline is not None and len(recent) >= r.min_recent:
            p95 = percentile(sorted(float(x.total_latency_ms) for x in recent), 95)
            if baseline.latency_p95_ms > 0 and p95 > r.latency_factor * baseline.latency_p95_ms:
                out.append(self._make("latency_p95", skill, tenant, now, f"{skill}: latency p95 {p95:.0f} ms",
                                      f"more than {r.latency_factor:g}× baseline p95 {baseline.latency_p95_ms:.0f} ms",
                                      {"p95_ms": p95, "baseline_p95_ms": baseline.latency_p95_ms}))
            cost = sum(x.cost_usd for x in recent) / len(recent)
            if baseline.avg_cost_per_execution > 0 and cost > r.cost_factor * baseline.avg_cost_per_execution:
                out.append(self._make("cost_spike", skill, tenant, now, f"{skill}: cost ${cost:.4f}/execution",
                                      f"more than {r.cost_factor:g}× baseline ${baseline.avg_cost_per_execution:.4f}",
                                      {"avg_cost": cost, "baseline_cost": baseline.avg_cost_per_execution}))
        return [a for a in out if a is not None]

    def quota(self, status: QuotaStatus, now: datetime, tenant_id: str = "default") -> list[Alert]:
        """Alerts from a polled quota status (an external API rather than one execution)."""
        pct, api = status.pct_used, status.api
        if status.remaining <= 0:
            alert = self._make("quota_exhausted", api, tenant_id, now, f"{api}: quota exhausted",
                               f"resets in {status.hours_until_reset:.1f} h", status.model_dump())
        elif pct > self.rules.quota_critical_pct:
            alert = self._make("quota_critical", api, tenant_id, now, f"{api}: quota {pct:.0f}%",
                               "quota exhaustion imminent", status.model_dump())
        elif pct > self.rules.quota_warning_pct:
            alert = self._make("quota_high", api, tenant_id, now, f"{api}: quota {pct:.0f}%",
                               f"resets in {status.hours_until_reset:.1f} h", status.model_dump())
        else:
            alert = None
        return [alert] if alert else []

    def vendor(self, vendor: str, status: str, now: datetime, tenant_id: str = "default") -> list[Alert]:
        """Vendor API degraded (any status other than operational/ok/none): warning, Slack + email."""
        if status.lower() in {"operational", "ok", "none", "green"}:
            return []
        alert = self._make("vendor_degraded", vendor, tenant_id, now, f"{vendor} API degraded",
                           f"vendor status: {status}", {"vendor": vendor, "status": status})
        return [alert] if alert else []
