"""The live-pattern cap per tenant (agents/patterns/logic/admission.py) and the agent's dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from agents.patterns import agent as patterns_agent
from agents.patterns.logic.admission import PatternCap, admit_line, per_partition_cap
from agents.patterns.logic.patterns import PatternCounter
from agents.patterns.logic.templates import PatternMiner
from streams import app as A
from streams import topics as T
from streams.records import DeadLetter, LogEvent
from streams.testing import AgentHarness

NOW = datetime.now(UTC).timestamp()
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]


def distinct(i: int) -> str:
    """A message of its own template: constant words no other i shares (masking keeps words, not numbers)."""
    return f"ERROR {WORDS[i % 20]} {WORDS[(i // 20) % 20]} {WORDS[(i // 400) % 20]} failed in module {WORDS[i % 7]}"


def line(tenant: str, message: str, group: str = "/aws/lambda/api") -> LogEvent:
    return LogEvent.model_validate({"log_group": group, "message": message, "timestamp": NOW, "tenant_id": tenant,
                                    "severity": "ERROR"})


def run(lines: list[LogEvent], cap: PatternCap, miner: PatternMiner | None = None,
        counter: PatternCounter | None = None) -> tuple[PatternMiner, PatternCounter, list[LogEvent]]:
    miner = miner or PatternMiner()
    counter = counter or PatternCounter(3600, 10)
    over = []
    for ev in lines:
        m = admit_line(miner, counter, cap, ev)
        if m is None:
            over.append(ev)
        else:
            counter.observe(ev, m, NOW)
    return miner, counter, over


def test_beyond_the_cap_new_patterns_are_returned_known_ones_still_counted() -> None:
    cap = PatternCap(per_tenant=5, total=1000)
    lines = [line("a", distinct(i)) for i in range(30)]
    miner, counter, over = run(lines, cap)
    assert counter.per_tenant["a"] == 5 and len(over) == 25, "5 patterns admitted, every other line returned"
    assert len(miner) == 5, "the miner did not learn the lines beyond the cap"
    # a known pattern of the tenant (another variant of an admitted line) is still counted at the cap
    _, counter, again = run([line("a", distinct(0).replace("module", "module")), line("a", distinct(3))], cap,
                            miner, counter)
    assert not again and sum(e.total for e in counter.entries.values()) == 7


def test_another_tenant_is_unaffected_and_a_known_template_in_a_new_log_group_is_a_new_pattern() -> None:
    cap = PatternCap(per_tenant=3, total=1000)
    miner, counter, over = run([line("a", distinct(i)) for i in range(10)], cap)
    assert len(over) == 7
    # tenant b may open patterns the miner already knows from a (its own entries) and new ones
    miner, counter, over_b = run([line("b", distinct(i)) for i in (0, 1, 50)], cap, miner, counter)
    assert not over_b and counter.per_tenant["b"] == 3
    # a's known template in another log group would be a new entry: beyond a's cap
    _, counter, over_a = run([line("a", distinct(0), group="/aws/lambda/other")], cap, miner, counter)
    assert len(over_a) == 1 and counter.per_tenant["a"] == 3


def test_total_cap_bounds_the_partition_and_shares_are_per_partition() -> None:
    cap = PatternCap(per_tenant=100, total=4)
    _, counter, over = run([line(t, distinct(i)) for t in "abc" for i in range(3)], cap)
    assert len(counter.entries) == 4 and len(over) == 5
    assert PatternCap.share(5_000, 50_000, 4) == PatternCap(1_250, 12_500)
    assert per_partition_cap(10, 4) == 3 and per_partition_cap(1, 8) == 1


def test_counts_rebuilt_from_the_book_and_freed_by_expiry() -> None:
    cap = PatternCap(per_tenant=2, total=20_000)
    _, counter, _ = run([line("a", distinct(i)) for i in range(2)], cap)
    book = {k: e.to_json() for k, e in counter.entries.items()}
    rebuilt = PatternCounter.from_book(book, 3600, 10)
    assert rebuilt.per_tenant["a"] == 2 and not cap.has_room(rebuilt, "a")
    for e in rebuilt.entries.values():
        e.last_seen = NOW - 3 * 3600  # not seen for two windows
    template = next(iter(book.values()))
    filler = {f"p|f|g|{i}": {**template, "key": f"p|f|g|{i}", "tenant_id": "f", "last_seen": NOW}
              for i in range(10_000)}  # expiry runs once the partition holds 10,000 entries
    rebuilt = PatternCounter.from_book({**{k: {**v, "last_seen": NOW - 3 * 3600} for k, v in book.items()},
                                        **filler}, 3600, 10)
    rebuilt._expire(NOW)
    assert rebuilt.per_tenant["a"] == 0 and cap.has_room(rebuilt, "a") and rebuilt.per_tenant["f"] == 10_000
    assert sorted(rebuilt.expired_keys()) == sorted(book)


@pytest.fixture
async def harness():  # type: ignore[no-untyped-def]
    patterns_agent._store.clear()
    patterns_agent._parts.clear()
    saved = (A.settings.pattern_max_templates_per_tenant, A.settings.kafka_topic_partitions)
    A.settings.pattern_max_templates_per_tenant, A.settings.kafka_topic_partitions = 12, 4  # 3 per partition
    try:
        async with AgentHarness() as h:
            yield h
    finally:
        A.settings.pattern_max_templates_per_tenant, A.settings.kafka_topic_partitions = saved
        patterns_agent._store.clear()
        patterns_agent._parts.clear()


async def test_agent_dead_letters_every_line_beyond_the_cap_once_with_its_reason(harness: AgentHarness) -> None:
    before = patterns_agent.STATS["pattern_cap_lines"]
    burst = [line("a", distinct(i)).model_dump(mode="json") for i in range(40)]
    other = [line("b", distinct(i)).model_dump(mode="json") for i in range(2)]
    await harness.feed(patterns_agent.patterns, [orjson.dumps({"records": burst[:25]}),
                                                 orjson.dumps({"records": burst[25:] + other})], partition=1)
    dead = harness.records(T.DEADLETTER, DeadLetter)
    assert dead and all(d.reason.startswith("pattern cap: tenant a ") for d in dead)
    assert all("PATTERN_MAX_TEMPLATES_PER_TENANT (12, 3 in this partition)" in d.reason for d in dead)
    capped = [r["message"] for d in dead for r in orjson.loads(d.original)["records"]]
    assert sorted(capped) == sorted(b["message"] for b in burst[3:]), "every line beyond the cap, each once"
    assert patterns_agent.STATS["pattern_cap_lines"] - before == 37
    pats = {orjson.loads(v)["key"] for v in harness.values(T.PATTERNS)}
    assert len([k for k in pats if k.startswith("p|a|")]) == 3 and len([k for k in pats if k.startswith("p|b|")]) == 2
    # a restart rebuilds the counts from the changelog: the cap still holds
    harness.restart()
    patterns_agent._parts.clear()
    await harness.feed(patterns_agent.patterns, [orjson.dumps({"records": [burst[0], burst[39]]})], partition=1)
    dead2 = harness.records(T.DEADLETTER, DeadLetter)[len(dead):]
    assert [r["message"] for d in dead2 for r in orjson.loads(d.original)["records"]] == [burst[39]["message"]]
