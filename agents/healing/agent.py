"""Self-healing on the live path: candidate observations → the owning worker → cooldown store → effects, history."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

import faust
import numpy as np
import orjson
import structlog
from pydantic import ValidationError

from agents.healing.history import history_lines, load_healing_config
from agents.healing.logic.effects import Effect, effect_for
from agents.healing.logic.healing import (
    DURATION_METRICS,
    OBSERVED_METRICS,
    ActionPlan,
    ActionRegistry,
    HealingConfig,
    Observation,
    TriggerFiring,
    TriggerFramework,
    durations_s,
    metric_observation_columns,
    metric_observation_fields,
)
from streams import app as A
from streams.metric_codec import LeanPoint
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)

WATCHED = OBSERVED_METRICS  # the metrics that give observation fields
FORWARD_EVERY_SECONDS = 1.0  # of observation time, per (tenant, component, metric)
STATS: dict[str, int] = {"candidates": 0, "firings": 0, "actions": 0, "effects": 0, "suppressed": 0}


def observation_key(tenant_id: str, component: str) -> bytes:
    """healing.observations key: every observation of one component goes to one partition, one owner."""
    return f"{tenant_id}|{component}".encode()


async def forward(obs: Observation) -> None:
    """Hand an observation that crosses a threshold to the worker owning its component."""
    STATS["candidates"] += 1
    await A.healing_observations_topic.send(key=observation_key(obs.tenant_id, obs.component),
                                            value=orjson.dumps(obs.model_dump(mode="json", exclude_none=True)))


class Healing:
    """The metric-stream side: picks the points that cross a threshold (cooldown aside) and forwards
    them; the decision (cooldown, firing, effects) is made by the partition owner (`evaluate_observations`)."""

    def __init__(self, config: HealingConfig | None = None) -> None:
        self.config = config or load_healing_config()
        self.triggers = TriggerFramework(self.config)
        self.baselines = Baselines()
        self._forwarded: dict[tuple[str, str, str], float] = {}  # (tenant, component, metric) -> observation time

    async def observe(self, points: list[LeanPoint]) -> int:
        """Evaluate scored points (lean points, see streams/metric_codec.py); returns how many were forwarded.

        What `observe_per_point` (the reference) does, in columns: 0.25–0.5 µs a watched point instead
        of 1.0–1.5 in batches of 1,000. The batch is split by metric once; the durations and the EWMA
        baselines of their (tenant, component) are computed in numpy rounds (the k-th point of each
        component in round k: the same float64 operations in the same order per component, so the same
        baselines bit for bit); the trigger gates are compared on whole columns; only the rare point that
        crosses one goes through the cooldown and the forward, in batch order. A batch the columns do not
        take as it is (a value that is no number, a unit missing...) goes to the reference, which fails
        where it fails; a small one too (numpy's fixed cost would outweigh the per-point work). Points
        of a metric without baseline (ErrorRate...) have their tenant and component read only when they
        cross: lean points always have them (strings). The batch's baselines are all in place before its
        first forward (the metric path observes one batch at a time); should a forward fail, they are put
        back as the reference leaves them there.
        tests/unit/test_healing_batch.py checks the equivalence on generated batches."""
        if len(points) < MIN_BATCH:
            return await self.observe_per_point(points)
        try:
            batch = self._plan(points)
        except Exception:  # noqa: BLE001 - an unusual point: the reference meets it and fails where it fails
            return await self.observe_per_point(points)
        if batch is None:
            return 0
        durations = batch.durations
        if durations is not None:
            durations.commit(self.baselines)
        sent = 0
        forwarded = self._forwarded
        for i, baseline in batch.candidates:
            try:
                p = points[i]
                name = p["metric_name"]
                # A sustained condition crosses on every point: one per series and second is enough for the
                # owner, whose cooldown holds the rest back anyway.
                ts, seen = float(p["timestamp"]), (p["tenant_id"], p["component"], name)
                last = forwarded.get(seen)
                if last is not None and 0.0 <= ts - last < FORWARD_EVERY_SECONDS:
                    continue
                forwarded[seen] = ts
                fields = metric_observation_fields(name, float(p["value"]), p["unit"], baseline)
                at = datetime.fromtimestamp(ts, UTC)
                await forward(Observation.model_validate({
                    "component": p["component"], "tenant_id": p["tenant_id"], "timestamp": at,
                    "source": "cloudwatch", "ref": p["event_id"], **(fields or {})}))
            except BaseException:
                if durations is not None:
                    durations.rewind(self.baselines, i)
                raise
            sent += 1
        return sent

    async def observe_per_point(self, points: list[LeanPoint]) -> int:
        """The reference of `observe`, point by point (~1.5 µs a watched point): what observe gives, and
        what it runs for a batch it does not take in columns."""
        sent = 0
        for p in points:
            name = p["metric_name"]
            if name not in WATCHED:
                continue
            key = (p["tenant_id"], p["component"])
            baseline = self.baselines.get(key)
            fields = metric_observation_fields(name, float(p["value"]), p["unit"], baseline)
            if fields is None:
                continue
            duration = fields.get("duration_s")
            if duration is not None:
                # slow EWMA of the duration as the baseline of duration_increase (≥ 150 %)
                self.baselines[key] = duration if baseline is None else 0.98 * baseline + 0.02 * duration
            if not self.triggers.may_fire(fields):
                continue
            # A sustained condition crosses on every point: one per series and second is enough for the
            # owner, whose cooldown holds the rest back anyway.
            ts, seen = float(p["timestamp"]), (p["tenant_id"], p["component"], name)
            last = self._forwarded.get(seen)
            if last is not None and 0.0 <= ts - last < FORWARD_EVERY_SECONDS:
                continue
            self._forwarded[seen] = ts
            at = datetime.fromtimestamp(ts, UTC)
            await forward(Observation.model_validate({
                "component": p["component"], "tenant_id": p["tenant_id"], "timestamp": at, "source": "cloudwatch",
                "ref": p["event_id"], **fields}))
            sent += 1
        return sent

    def _plan(self, points: list[LeanPoint]) -> _Batch | None:
        """The batch's baselines and its points that cross a threshold (each with the baseline it was
        judged with), in batch order, without changing any state; None when no point is of a watched
        metric (one set of the names: an unwatched point costs nothing else)."""
        names = list(map(_NAME, points))
        distinct = set(names)
        present = WATCHED.intersection(distinct)
        if not present:
            return None
        codes: np.ndarray | None = None
        code: dict[str, int] = {}
        if len(distinct) > 1:
            code = {name: c for c, name in enumerate(distinct)}
            codes = np.fromiter(map(code.__getitem__, names), np.intp, len(names))

        def rows_of(metrics: AbstractSet[str]) -> np.ndarray | None:  # None: every point
            if codes is None:
                return None
            if len(metrics) == 1:
                return np.flatnonzero(codes == code[next(iter(metrics))])
            return np.flatnonzero(np.isin(codes, [code[m] for m in metrics]))

        candidates: list[tuple[int, float | None]] = []
        durations: _Durations | None = None
        duration_metrics = present & DURATION_METRICS
        if duration_metrics:
            rows = rows_of(duration_metrics)
            durations = _Durations(_take(points, rows), rows, self.baselines)
            crossing = self.triggers.may_fire_columns(
                {"duration_s": durations.duration, "baseline_duration_s": durations.baseline_column()})
            if crossing is not None:
                for j in np.flatnonzero(crossing).tolist():
                    candidates.append((j if rows is None else int(rows[j]), durations.baseline_at(j)))
        for metric in present - DURATION_METRICS:
            rows = rows_of({metric})
            pts = _take(points, rows)
            values = _floats(list(map(_VALUE, pts)))
            units = list(map(_UNIT, pts))
            columns = metric_observation_columns(metric, values, units)
            crossing = None if columns is None else self.triggers.may_fire_columns(columns)
            if crossing is not None:
                candidates.extend((j if rows is None else int(rows[j]), None)
                                  for j in np.flatnonzero(crossing).tolist())
        if len(present) > 1 and candidates:
            candidates.sort()  # in batch order (batch indices are unique: baselines are never compared)
        return _Batch(candidates, durations)


# A batch smaller than this is observed point by point: below it numpy's fixed cost (~25–40 µs a batch)
# outweighs the per-point work it saves (~1.2 µs a watched point).
MIN_BATCH = 32
# A round of the baseline EWMA over fewer components than this costs more in numpy calls (~8 µs a
# round) than the per-point loop (~0.25 µs a point): the points past it go one by one.
MIN_ROUND = 32

_NAME, _VALUE, _UNIT = itemgetter("metric_name"), itemgetter("value"), itemgetter("unit")
_KEY = itemgetter("tenant_id", "component")
_SERIES = itemgetter("series")


class Baselines(MutableMapping[tuple[str, str], float]):
    """The duration baselines of `Healing` (the slow EWMA per (tenant, component)) in a float64 column,
    one slot per key: a batch reads and writes them with one dict lookup per point and numpy gathers
    and scatters. A mapping key → baseline (a Python float, the same bits) for everything else."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], int] = {}
        self.by_series: dict[str, int] = {}   # a cache: series key -> its (tenant, component)'s slot
        self.column = np.zeros(64)
        self.used = 0  # slots handed out (a key deleted leaves its slot unused)

    def reserve(self, n: int) -> None:
        """Room for n slots (the slots past `used` hold nothing yet)."""
        if n > len(self.column):
            grown = np.zeros(max(n, 2 * len(self.column)))
            grown[:self.used] = self.column[:self.used]
            self.column = grown

    def add(self, keys: Mapping[tuple[str, str], int]) -> None:
        """New keys with the slots handed out to them (used, used + 1, ...), in this order."""
        self.slots.update(keys)
        self.used += len(keys)

    def __getitem__(self, key: tuple[str, str]) -> float:
        return float(self.column[self.slots[key]])

    def __setitem__(self, key: tuple[str, str], value: float) -> None:
        slot = self.slots.get(key)
        if slot is None:
            self.reserve(self.used + 1)
            slot = self.used
            self.add({key: slot})
        self.column[slot] = value

    def __delitem__(self, key: tuple[str, str]) -> None:
        del self.slots[key]
        self.by_series.clear()   # (rare: a failed forward's rewind) the cache refills from `slots`

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)


class _Unusual(Exception):
    """Values the columns do not take as they are (not all plain numbers)."""


def _take(points: list[LeanPoint], rows: np.ndarray | None) -> Sequence[LeanPoint]:
    if rows is None:
        return points
    if len(rows) == 1:
        return [points[int(rows[0])]]
    return itemgetter(*rows.tolist())(points)  # type: ignore[no-any-return]


def _floats(values: list[Any]) -> np.ndarray:
    """float(v) of each value as a float64 column: numpy converts ints and floats as float() does; any
    other kind of value (a string, bools alone, None...) goes to the per-point path."""
    column = np.array(values)
    if column.ndim != 1 or column.dtype.kind not in "fi":
        raise _Unusual
    return column.astype(np.float64, copy=False)


class _Batch:
    def __init__(self, candidates: list[tuple[int, float | None]], durations: _Durations | None) -> None:
        self.candidates = candidates  # (batch index, baseline_duration_s the point was judged with)
        self.durations = durations


class _Durations:
    """The duration points of a batch and the EWMA baselines of their (tenant, component) keys, as
    observe_per_point gives them: a key's baseline is the duration of its first point, then 0.98 ×
    baseline + 0.02 × duration per point in batch order; each point is judged with the baseline before it.
    Planned without changing the baselines (`commit` writes them)."""

    def __init__(self, pts: Sequence[LeanPoint], rows: np.ndarray | None, store: Baselines) -> None:
        self.rows = rows  # batch index of each duration point (None: the points are the batch)
        self.duration = durations_s(_floats(list(map(_VALUE, pts))), list(map(_UNIT, pts)))
        self.pts = pts
        m = len(pts)
        # a point's key by its series (a series has one tenant and component; its string's hash is cached
        # by the grouping before): no (tenant, component) tuple per point, one dict probe
        slots = np.fromiter(map(store.by_series.get, map(_SERIES, pts), repeat(-1)), np.intp, m)
        # keys new to the store get the next slots, in order of their first point (as a dict inserts them)
        self.new: dict[tuple[str, str], int] = {}
        if (slots < 0).any():
            by_series = store.by_series
            for j in np.flatnonzero(slots < 0).tolist():
                key = _KEY(pts[j])
                slot = store.slots.get(key)
                if slot is not None:
                    by_series[pts[j]["series"]] = slot
                else:
                    slot = self.new.get(key)
                    if slot is None:
                        slot = self.new[key] = store.used + len(self.new)
                slots[j] = slot
            store.reserve(store.used + len(self.new))  # room only: no key is added before commit
        self.slots = slots
        self.known = store.used  # slots below this had a baseline before the batch
        self.new_keys = bool(self.new)
        order = np.argsort(slots, kind="stable")  # each key's points together, in batch order
        by_slot = slots[order]
        repeated = by_slot[1:] == by_slot[:-1]
        if not repeated.any():  # the usual batch: one point per component
            self.key_slots = slots
            self.key_of: np.ndarray | None = None
            self.initial = store.column[slots]  # (nothing where the key is new)
            self.final = self._once()
        else:
            self.final = self._rounds(store, order, by_slot, ~repeated)

    def _once(self) -> np.ndarray:
        """Every key has one point: one step of the EWMA."""
        base, dur = self.initial, self.duration
        self.before, self.had = base, self.slots < self.known
        with np.errstate(all="ignore"):  # inf/NaN durations: the same IEEE results as Python's, unwarned
            after = 0.98 * base + 0.02 * dur
        self.after = np.where(self.had, after, dur) if self.new_keys else after
        return self.after

    def _rounds(self, store: Baselines, order: np.ndarray, by_slot: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Keys with several points: round k steps the k-th point of every key that has one, in numpy
        while a round holds MIN_ROUND points at least; the rest point by point."""
        m, dur = len(self.duration), self.duration
        first = np.concatenate(([True], changes))  # where a key's points start, in `order`
        starts = np.flatnonzero(first)
        key_sorted = np.cumsum(first) - 1
        self.key_slots = by_slot[starts]
        self.key_of = key_of = np.empty(m, dtype=np.intp)  # each point's key, an index into key_slots
        key_of[order] = key_sorted
        self.initial = store.column[self.key_slots]
        rank_sorted = np.arange(m) - starts[key_sorted]  # the point's place among its key's points
        rank = np.empty(m, dtype=np.intp)
        rank[order] = rank_sorted
        # a key's later points have the baseline of its first; its first one what the key had
        self.had = (rank > 0) | (self.key_slots < self.known)[key_of]
        self.before = np.zeros(m)
        self.after = np.empty(m)
        by_round = order[np.argsort(rank_sorted, kind="stable")]  # round 0's points, then round 1's...
        bounds = np.concatenate(([0], np.cumsum(np.bincount(rank_sorted)))).tolist()
        base = self.initial.copy()
        k = 0
        with np.errstate(all="ignore"):  # inf/NaN durations: the same IEEE results as Python's, unwarned
            while k < len(bounds) - 1 and bounds[k + 1] - bounds[k] >= MIN_ROUND:
                at = by_round[bounds[k]:bounds[k + 1]]
                keys = key_of[at]
                d, b = dur[at], base[keys]
                new = 0.98 * b + 0.02 * d
                if k == 0 and self.new_keys:
                    new = np.where(self.had[at], new, d)
                self.before[at] = b
                self.after[at] = new
                base[keys] = new
                k += 1
        if k < len(bounds) - 1:
            # Python floats: the same IEEE operations as the rounds'. A key's points stay in order (round
            # by round), and a point needs only its own key's baseline before it.
            rows = by_round[bounds[k]:].tolist()
            b_of, d_of, k_of, h_of = base.tolist(), dur.tolist(), key_of.tolist(), self.had.tolist()
            before: list[float] = []
            after: list[float] = []
            for j in rows:
                g = k_of[j]
                b = b_of[g]
                before.append(b)
                b = b_of[g] = 0.98 * b + 0.02 * d_of[j] if h_of[j] else d_of[j]
                after.append(b)
            self.before[rows], self.after[rows] = before, after
            base = np.array(b_of, dtype=np.float64)
        return base

    def baseline_column(self) -> np.ndarray:
        """baseline_duration_s of each point, NaN where it has none (see may_fire_columns)."""
        return np.where(self.had, self.before, np.nan)

    def baseline_at(self, j: int) -> float | None:
        return float(self.before[j]) if self.had[j] else None

    def commit(self, store: Baselines) -> None:
        store.column[self.key_slots] = self.final
        store.add(self.new)

    def rewind(self, store: Baselines, i: int) -> None:
        """The baselines as the reference leaves them when it stops at batch index `i` (a failed forward):
        those before the batch, then each duration point up to i in order."""
        for key in self.new:
            del store[key]
        known = self.key_slots < self.known
        store.column[self.key_slots[known]] = self.initial[known]
        upto = i + 1 if self.rows is None else int(np.searchsorted(self.rows, i, side="right"))
        for j in range(upto):
            store[_KEY(self.pts[j])] = float(self.after[j])


class Evaluator:
    """The owner side: triggers with their cooldowns in a changelog store partitioned like
    healing.observations, so one worker decides for a component and a restart or rebalance keeps them."""

    def __init__(self, store: ChangelogStore[dict[str, Any]], config: HealingConfig | None = None) -> None:
        self.store = store
        self.config = config or load_healing_config()
        self.triggers = TriggerFramework(self.config)
        self.actions = ActionRegistry(self.config)

    async def decide(self, partition: int, obs: Observation) -> tuple[list[TriggerFiring], list[ActionPlan]]:
        """Firings and planned actions of one observation; the cooldown updates are durable before return."""
        state = await self.store.state(partition)
        changes: dict[str, float] = {}
        view = ChainMap(changes, state)  # writes land in `changes`, reads see both
        at = obs.timestamp
        before = sum(self.triggers.suppressed.values())
        firings = self.triggers.evaluate(obs, at, view)
        STATS["suppressed"] += sum(self.triggers.suppressed.values()) - before
        if not firings:
            return [], []
        due = self.triggers.comprehensive_due(view, obs.tenant_id, obs.component, at)
        plans = self.actions.actions_for_all(firings, {(obs.tenant_id, obs.component): due})
        await self.store.record(partition, {"set": changes}, wait=True)
        return firings, plans


def effects_of(firings: Iterable[TriggerFiring], plans: Iterable[ActionPlan], config: dict[str, Any],
               now: datetime) -> list[Effect]:
    by_trigger = {(f.trigger, f.tenant_id, f.component): f for f in firings}
    first = next(iter(by_trigger.values()), None)
    out: list[Effect] = []
    for plan in plans:
        firing = by_trigger.get((plan.trigger, plan.tenant_id, plan.component), first)
        if firing is None:
            continue
        eff = effect_for(plan, firing, now, config, A.settings.llm_max_tokens, A.settings.max_concurrent_improvements)
        if eff is not None:
            out.append(eff)
    return out


async def publish(firings: list[TriggerFiring], plans: list[ActionPlan], effects: list[Effect]) -> None:
    """Effects first (a command on `commands`, a policy on `config.changes`), then the history lines."""
    for eff in effects:
        if eff.command is not None:
            await A.commands_topic.send(key=str(eff.command.get("tenant_id") or "healing").encode(),
                                        value=orjson.dumps(eff.command))
        elif eff.config_key is not None:
            await A.config_topic.send(key=eff.config_key.encode(), value=orjson.dumps(eff.config_value))
    for key, line in history_lines(firings, plans, effects, datetime.now(UTC)):
        await A.healing_topic.send(key=key, value=line)
    STATS["firings"] += len(firings)
    STATS["actions"] += len(plans)
    STATS["effects"] += len(effects)


_evaluator: dict[str, Evaluator] = {}
_healing: dict[str, Healing] = {}


def healing() -> Healing:
    h = _healing.get("h")
    if h is None:
        h = _healing["h"] = Healing()
    return h


@A.app.agent(A.healing_observations_topic, name="healing")
async def evaluate_observations(stream: faust.StreamT[bytes]) -> None:
    from agents.improvement.context import step_context

    ev = _evaluator.get("e")
    if ev is None:
        store: ChangelogStore[dict[str, Any]] = await start_agent_store(
            "healing-cooldowns", A.healing_observations_topic.get_topic_name())
        ev = _evaluator["e"] = Evaluator(store)
    async for event in stream.events():
        try:
            obs = Observation.model_validate_json(event.value)
        except ValidationError as exc:
            log.error("invalid healing observation", error=str(exc)[:300])
            continue
        firings, plans = await ev.decide(event.message.partition, obs)
        if not firings:
            continue
        ctx = await step_context()
        effects = effects_of(firings, plans, ctx.views.config, datetime.now(UTC))
        await publish(firings, plans, effects)
        log.warning("self-healing triggers fired", component=obs.component, tenant=obs.tenant_id,
                    triggers=[f.trigger for f in firings], actions=[p.action for p in plans],
                    effects=[e.kind for e in effects])
