"""The metric side of healing in columns (Healing.observe) and the users inputs of scoring (send_users)
do exactly what their per-point references do: the same observations forwarded in the same order, the
same baselines bit for bit, the same cooldowns, the same users inputs — on generated batches."""

from __future__ import annotations

import struct
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.healing import agent as H
from agents.healing.logic.healing import (
    HealingConfig,
    Observation,
    TriggerFramework,
    metric_observation_columns,
    metric_observation_fields,
)
from agents.opportunities.logic.inputs import users_carriers, users_from_point
from agents.scoring import agent as S
from streams.records import OpportunityInput

T = 1_780_000_000.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends (the captured sends do not): no event loop needed."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


# --- the references: the per-point code as it was before the columns --------------------------------

class Reference:
    """Healing.observe as it was, point by point, on plain dicts."""

    def __init__(self, config: HealingConfig, forward: Callable[[Observation], Coroutine[Any, Any, None]]) -> None:
        self.triggers = TriggerFramework(config)
        self.baselines: dict[tuple[str, str], float] = {}
        self._forwarded: dict[tuple[str, str, str], float] = {}
        self.forward = forward

    async def observe(self, points: list[dict[str, Any]]) -> int:
        sent = 0
        for p in points:
            name = p["metric_name"]
            if name not in H.WATCHED:
                continue
            key = (p["tenant_id"], p["component"])
            baseline = self.baselines.get(key)
            fields = metric_observation_fields(name, float(p["value"]), p["unit"], baseline)
            if fields is None:
                continue
            duration = fields.get("duration_s")
            if duration is not None:
                self.baselines[key] = duration if baseline is None else 0.98 * baseline + 0.02 * duration
            if not self.triggers.may_fire(fields):
                continue
            ts, seen = float(p["timestamp"]), (p["tenant_id"], p["component"], name)
            last = self._forwarded.get(seen)
            if last is not None and 0.0 <= ts - last < H.FORWARD_EVERY_SECONDS:
                continue
            self._forwarded[seen] = ts
            at = datetime.fromtimestamp(ts, UTC)
            await self.forward(Observation.model_validate({
                "component": p["component"], "tenant_id": p["tenant_id"], "timestamp": at, "source": "cloudwatch",
                "ref": p["event_id"], **fields}))
            sent += 1
        return sent


async def send_users_reference(state: Any, points: list[dict[str, Any]], users_metric: str, users_dimension: str,
                               send_input: Callable[[OpportunityInput], Coroutine[Any, Any, None]]) -> None:
    """send_users as it was, point by point."""
    for p in points:
        users = users_from_point(p, users_metric, users_dimension)
        if users is None:
            continue
        key = (p["tenant_id"], p["component"])
        if state.users_sent.get(key) == users:
            continue
        state.users_sent[key] = users
        await send_input(OpportunityInput(kind="users", input_id=f"u|{key[0]}|{key[1]}|{p['timestamp']}|{users}",
                                          tenant_id=key[0], component=key[1], users_per_hour=users,
                                          observed_at=float(p["timestamp"])))


# --- generated batches --------------------------------------------------------------------------------

NAMES = sorted(H.WATCHED) + ["Invocations", "RequestCount", "ActiveUsers"]
UNITS = ["Seconds", "Milliseconds", "Microseconds", "Minutes", "Percent", "Count", "None", ""]
# around every default threshold (60 s, 3 retries, 20 % and 5 %, $0.50, 150 % of the baseline), in every
# unit, and the extremes (a huge value in Minutes is an infinite duration, then a NaN baseline)
SPECIAL = [0.0, -0.0, 5e-324, 1e-300, 1e-9, 0.05, 0.0500001, 0.2, 0.19999, 0.5, 0.50001, 1.0, 1.5, 2.0, 3.0,
           2.999, 5.0, 20.0, 59.999, 60.0, 60000.0, 59999.0, 6e7, 100.0, 149.99, 150.0, 151.0, 1e15, 1e308,
           -1e308, -1.0]
VALUES = st.one_of(st.sampled_from(SPECIAL), st.sampled_from(SPECIAL), st.sampled_from(SPECIAL),
                   st.floats(allow_nan=False, allow_infinity=False), st.floats(min_value=0.0, max_value=200.0),
                   st.integers(-10**6, 10**6))
OFFSETS = [0.0, 0.1, 0.5, 0.999, 1.0, 1.5, 2.0, -0.5, -3.0, 100.0]  # in and out of order, around 1 s
CONFIGS = [
    HealingConfig(),
    # other gates: on the baseline itself, a strict ratio, tokens, a disabled trigger, a changed threshold
    HealingConfig.from_dict({"triggers": {
        "duration_increase": {"threshold": 1.2, "comparison": "gt"},
        "slow_tasks": {"enabled": False},
        "high_error_rate": {"threshold": 0.5},
        "baseline_watch": {"type": "performance", "field": "baseline_duration_s", "threshold": 50.0,
                           "target_agent": "AuditorAgent"},
        "token_watch": {"type": "cost", "field": "tokens", "threshold": 1000.0, "comparison": "gt",
                        "target_agent": "PlannerAgent"}}}),
]


@st.composite
def points(draw: st.DrawFn, n_components: int = 4, names: list[str] = NAMES, units: list[str] = UNITS
           ) -> dict[str, Any]:
    tenant = draw(st.sampled_from(["acme", "globex"]))
    component = draw(st.sampled_from([f"c{i}" for i in range(n_components)]))
    name = draw(st.sampled_from(names))
    ts = T + draw(st.integers(0, 3)) + draw(st.sampled_from(OFFSETS))
    return {"metric_name": name, "value": draw(VALUES), "unit": draw(st.sampled_from(units)),
            "dimensions": {"FunctionName": component}, "timestamp": ts, "tenant_id": tenant, "namespace": "AWS/X",
            "statistic": "Average", "event_id": f"e-{draw(st.integers(0, 10**6))}",
            "series": f"{tenant}|AWS/X|{name}|Average|FunctionName={component}", "component": component}


@st.composite
def odd_points(draw: st.DrawFn) -> dict[str, Any]:
    """A point the columns do not take: its value is no plain number, or its unit is missing."""
    p = draw(points())
    p["metric_name"] = draw(st.sampled_from(["Latency", "ErrorRate", "Retries", "Invocations"]))
    if draw(st.booleans()):
        p["value"] = draw(st.sampled_from(["1.5", "abc", None, True, 2**80]))
    else:
        del p["unit"]
    return p


@st.composite
def batch(draw: st.DrawFn, n_components: int = 4, max_size: int = 40) -> list[dict[str, Any]]:
    """Points of every metric and unit, or (one batch in two) of one metric and unit, as a producer sends."""
    if draw(st.booleans()):
        one = points(n_components, [draw(st.sampled_from(NAMES))], [draw(st.sampled_from(UNITS))])
        return draw(st.lists(one, max_size=max_size))
    return draw(st.lists(points(n_components), max_size=max_size))


def batches(n_components: int = 4, max_size: int = 40) -> st.SearchStrategy[list[list[dict[str, Any]]]]:
    return st.lists(batch(n_components, max_size), min_size=1, max_size=4)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@contextmanager
def batched(min_round: int, min_batch: int = 0) -> Iterator[list[Any]]:
    """Healing.observe's forward captured; the columns taken for every batch (min_batch 0) and the EWMA
    rounds for every round of at least `min_round` components (1: always, a huge one: never)."""
    sent: list[Any] = []

    async def forward(obs: Observation) -> None:
        sent.append(obs)

    with mock.patch.object(H, "forward", forward), mock.patch.object(H, "MIN_ROUND", min_round), \
            mock.patch.object(H, "MIN_BATCH", min_batch):
        yield sent


def failing_forward(sent: list[Any], fail_at: int | None) -> Callable[[Observation], Coroutine[Any, Any, None]]:
    async def forward(obs: Observation) -> None:
        if fail_at is not None and len(sent) == fail_at:
            sent.append("failed")
            raise ConnectionError("broker away")
        sent.append(obs)
    return forward


def observe_both(config: HealingConfig, runs: list[list[dict[str, Any]]], min_round: int,
                 fail_at: int | None = None, per_point: bool = False) -> None:
    """The runs through the reference and through Healing.observe (or observe_per_point): equal answers,
    forwards and state after every run. fail_at: the forward fails at that call (a broker away)."""
    want: list[Any] = []
    ref = Reference(config, failing_forward(want, fail_at))
    h = H.Healing(config)
    with batched(min_round) as got:
        if fail_at is not None:
            H.forward = failing_forward(got, fail_at)  # type: ignore[assignment]
        for pts in runs:
            try:
                expected: Any = run(ref.observe(pts))
            except Exception as exc:  # noqa: BLE001
                expected = type(exc)
            try:
                answer: Any = run((h.observe_per_point if per_point else h.observe)(pts))
            except Exception as exc:  # noqa: BLE001
                answer = type(exc)
            assert answer == expected
            assert got == want
            assert list(h.baselines) == list(ref.baselines)  # the same keys, in the same order
            assert [bits(b) for b in h.baselines.values()] == [bits(b) for b in ref.baselines.values()]
            assert list(h._forwarded.items()) == list(ref._forwarded.items())


@settings(max_examples=500, deadline=None)
@given(config=st.sampled_from(CONFIGS), runs=batches(), min_round=st.sampled_from([1, 2, 3, 10**9]))
def test_observe_in_columns_is_the_per_point_observe(config: HealingConfig, runs: list[list[dict[str, Any]]],
                                                     min_round: int) -> None:
    observe_both(config, runs, min_round)


@settings(max_examples=60, deadline=None)
@given(runs=batches(n_components=60, max_size=400), min_round=st.sampled_from([2, 32]))
def test_many_components_with_several_points_each(runs: list[list[dict[str, Any]]], min_round: int) -> None:
    """Rounds of many components, then the few with more points one by one."""
    observe_both(HealingConfig(), runs, min_round)


# mostly durations of a few components around the thresholds: crossings (forwards that can fail) with
# points of the same components before and after them in the batch
CROSSING = st.lists(points(2, ["Latency", "Latency", "Duration", "ErrorRate", "Retries"], ["Seconds", "Percent"]),
                    max_size=30)


@settings(max_examples=200, deadline=None)
@given(runs=st.lists(CROSSING, min_size=1, max_size=3), fail_at=st.integers(0, 3),
       min_round=st.sampled_from([1, 10**9]))
def test_a_failing_forward_leaves_the_state_the_reference_leaves(runs: list[list[dict[str, Any]]], fail_at: int,
                                                                 min_round: int) -> None:
    observe_both(HealingConfig(), runs, min_round, fail_at=fail_at)


@settings(max_examples=100, deadline=None)
@given(runs=st.lists(st.lists(st.one_of(points(), odd_points()), max_size=20), min_size=1, max_size=3),
       min_round=st.sampled_from([1, 10**9]))
def test_unusual_points_fail_where_the_reference_fails(runs: list[list[dict[str, Any]]], min_round: int) -> None:
    observe_both(HealingConfig(), runs, min_round)


@settings(max_examples=100, deadline=None)
@given(config=st.sampled_from(CONFIGS), runs=batches())
def test_the_per_point_path_on_the_baselines_store_is_the_reference(config: HealingConfig,
                                                                    runs: list[list[dict[str, Any]]]) -> None:
    """observe_per_point (small batches, unusual ones) runs on the same store as the columns."""
    observe_both(config, runs, 10**9, per_point=True)


def test_small_batches_and_large_ones_with_the_default_limits() -> None:
    """The default MIN_BATCH / MIN_ROUND: a small batch point by point, then large ones in rounds, on the
    same state (a slow component crossing slow_tasks, one whose latency rises past 150 % of its baseline)."""
    pts: list[list[dict[str, Any]]] = []
    for b in range(6):
        size = 10 if b == 0 else 600
        batch = []
        for k in range(size):
            comp = f"c{k % 50}"
            ms = 100.0 + k % 7 + (120.0 * b if comp == "c3" else 0.0) + (70_000.0 if comp == "c7" else 0.0)
            batch.append({"metric_name": "Latency" if k % 3 else "ErrorRate", "value": ms if k % 3 else 0.1 * (k % 5),
                          "unit": "Milliseconds" if k % 3 else "Percent", "tenant_id": "acme", "component": comp,
                          "timestamp": T + 60 * b + k * 0.05, "event_id": f"e{b}-{k}"})
        pts.append(batch)
    want: list[Any] = []
    ref = Reference(HealingConfig(), failing_forward(want, None))
    h = H.Healing(HealingConfig())
    got: list[Any] = []
    with mock.patch.object(H, "forward", failing_forward(got, None)):
        for batch in pts:
            assert run(h.observe(batch)) == run(ref.observe(batch))
    assert got == want and len(got) > 10
    assert {o.component for o in got} >= {"c3", "c7"}
    assert [bits(b) for b in h.baselines.values()] == [bits(b) for b in ref.baselines.values()]
    assert list(h._forwarded.items()) == list(ref._forwarded.items())


def test_the_columns_cover_every_watched_metric() -> None:
    """The metrics the columns know are the watched ones, with metric_observation_fields' fields."""
    for name in H.WATCHED:
        cols = metric_observation_columns(name, np.array([1.0]), ["Count"])
        fields = metric_observation_fields(name, 1.0, "Count")
        assert cols is not None and fields is not None
        assert set(cols) == set(fields) - {"baseline_duration_s"}
        assert (name in H.DURATION_METRICS) == ("duration_s" in fields)
    assert metric_observation_columns("Invocations", np.array([1.0]), ["Count"]) is None


# --- users inputs -----------------------------------------------------------------------------------

USERS_METRIC, USERS_DIM = "ActiveUsers", "users"


@st.composite
def user_points(draw: st.DrawFn, odd: bool = False) -> dict[str, Any]:
    tenant = draw(st.sampled_from(["acme", "globex"]))
    component = draw(st.sampled_from(["c0", "c1", "c2"]))
    dims: dict[str, Any] = {"FunctionName": component}
    if draw(st.integers(0, 3)) == 0:
        dims[USERS_DIM] = draw(st.sampled_from(["12", "12.0", "7.5", "abc", "", "1e3", "nan"]))
    p: dict[str, Any] = {
        "metric_name": draw(st.sampled_from([USERS_METRIC, "Latency", "ErrorRate", "Invocations"])),
        "value": draw(st.sampled_from([0.0, 12.0, 7.5, 1e3, 3])), "unit": "Count", "dimensions": dims,
        "timestamp": T + draw(st.integers(0, 5)), "tenant_id": tenant, "component": component}
    if odd:  # what users_from_point fails on
        match draw(st.integers(0, 2)):
            case 0:
                del p["dimensions"]
            case 1:
                p["dimensions"] = None
            case _:
                dims[USERS_DIM] = None
    return p


class UsersState:
    def __init__(self) -> None:
        self.users_sent: dict[tuple[str, str], float] = {}


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.lists(st.one_of(user_points(), user_points(), user_points(), user_points(odd=True)),
                              max_size=30), min_size=1, max_size=4))
def test_send_users_is_the_per_point_send_users(runs: list[list[dict[str, Any]]]) -> None:
    want: list[Any] = []
    got: list[Any] = []

    async def capture_want(inp: OpportunityInput) -> None:
        want.append(inp)

    async def capture_got(inp: OpportunityInput) -> None:
        got.append(inp)

    ref, state = UsersState(), UsersState()
    with mock.patch.object(S, "send_input", capture_got), \
            mock.patch.object(S.opportunity_context, "users_metric", USERS_METRIC), \
            mock.patch.object(S.opportunity_context, "users_dimension", USERS_DIM):
        for pts in runs:
            try:
                expected: Any = run(send_users_reference(ref, pts, USERS_METRIC, USERS_DIM, capture_want))
            except Exception as exc:  # noqa: BLE001
                expected = type(exc)
            try:
                answer: Any = run(S.send_users(state, pts))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                answer = type(exc)
            assert answer == expected
            assert [i.model_dump_json() for i in got] == [i.model_dump_json() for i in want]  # NaN users too
            assert repr(list(state.users_sent.items())) == repr(list(ref.users_sent.items()))


def test_users_carriers_are_the_points_with_users() -> None:
    pts: list[dict[str, Any]] = [{"metric_name": "Latency", "dimensions": {"FunctionName": "a"}},
                                 {"metric_name": USERS_METRIC, "dimensions": {}},
                                 {"metric_name": "Latency", "dimensions": {USERS_DIM: "3"}}]
    assert users_carriers(pts, USERS_METRIC, USERS_DIM) == pts[1:]
    assert users_carriers(pts[:1] + pts[2:], USERS_METRIC, USERS_DIM) == pts[2:]
    assert users_carriers(pts[:1] * 3, USERS_METRIC, USERS_DIM) == []
    broken = [*pts, {"metric_name": "Latency"}]  # no dimensions: the per-point loop fails on it
    assert users_carriers(broken, USERS_METRIC, USERS_DIM) is broken
