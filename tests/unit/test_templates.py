"""Unit tests for the log template miner and its masking."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agents.patterns.logic.masking import mask
from agents.patterns.logic.templates import (
    MinerConfig,
    PatternMatch,
    PatternMiner,
    categorize,
    mine_lines,
    write_clusters_csv,
)

_TIMEOUT_VARIANTS = [  # (peer, duration in ms, request id)
    ("10.0.0.1:5432", 3000, "7f3a9c1e-2b4d-4e8f-9a1b-3c5d7e9f1a2b"),
    ("10.0.0.2:5432", 3100, "0a1b2c3d-4e5f-6789-abcd-ef0123456789"),
    ("192.168.1.20:8080", 12, "11111111-2222-3333-4444-555555555555"),
    ("db-1.internal.example.com:5432", 5000, "abcdefab-cdef-abcd-efab-cdefabcdefab"),
    ("api.example.org:443", 250, "98765432-1098-7654-3210-987654321098"),
    ("172.16.0.9:6379", 75, "deadbeef-dead-beef-dead-beefdeadbeef"),
    ("10.1.2.3:9092", 30000, "c0ffee00-c0ff-ee00-c0ff-ee00c0ffee00"),
    ("cache.prod.svc.cluster.local:6379", 1, "a1a1a1a1-b2b2-c3c3-d4d4-e5e5e5e5e5e5"),
    ("[2001:db8::1]:443", 999, "f0f0f0f0-0f0f-f0f0-0f0f-f0f0f0f0f0f0"),
    ("8.8.8.8:53", 42, "12345678-9abc-def0-1234-56789abcdef0"),
    ("queue.eu-west-1.amazonaws.com:443", 60000, "0badf00d-0bad-f00d-0bad-f00d0badf00d"),
]
TIMEOUTS = [
    f"Connection to {p} timed out after {ms} ms (request_id={rid})" for p, ms, rid in _TIMEOUT_VARIANTS
]


def test_eleven_variants_of_one_timeout_are_one_pattern() -> None:
    miner = PatternMiner()
    matches = [miner.add(line) for line in TIMEOUTS]
    assert len({m.pattern_id for m in matches}) == 1
    assert len(miner) == 1
    assert matches[0].is_new and not any(m.is_new for m in matches[1:])
    assert "timed out after" in matches[-1].template
    assert all(m.category == "timeout" for m in matches)


def test_a_different_error_is_a_different_pattern() -> None:
    miner = PatternMiner()
    first = [miner.add(line) for line in TIMEOUTS]
    other = miner.add("NullPointerException in OrderService.checkout at line 118")
    assert other.is_new
    assert other.pattern_id != first[0].pattern_id
    assert len(miner) == 2
    # A similar-looking message with different constant words must not be swallowed either.
    refused = miner.add("Connection to 10.0.0.7:5432 refused by peer after 3000 ms")
    assert refused.pattern_id not in {first[0].pattern_id, other.pattern_id}


def test_variants_with_optional_variable_parts_share_a_pattern() -> None:
    # Same event, one variant carries an extra parenthesised size: constant words are identical.
    matches = mine_lines(
        [
            "host.example.com:443 close, 120 bytes sent, 300 bytes received, lifetime 00:01",
            "host.example.com:443 close, 1190 bytes (1.16 KB) sent, 1671 bytes (1.63 KB) received, "
            "lifetime 00:02",
        ]
    )
    assert matches[0].pattern_id == matches[1].pattern_id


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("Request to payments timed out after 5000 ms", "timeout"),
        ("upstream request timeout", "timeout"),
        (
            "could not connect to database: connection refused (postgres at 10.0.0.5:5432)",
            "database_connection",
        ),
        (
            "HikariPool-1 - Connection is not available, request timed out after 30000ms",
            "database_connection",
        ),
        ("POST https://api.stripe.com/v1/charges returned status code 502", "api_error"),
        ("External API call failed: HTTP 429 Too Many Requests", "api_error"),
        ("java.lang.NullPointerException: null at com.acme.Foo.bar(Foo.java:42)", "exception"),
        ("Traceback (most recent call last): ValueError: bad input", "exception"),
        ("User 42 logged in", "other"),
    ],
)
def test_categories(message: str, category: str) -> None:
    assert categorize(message) == category


def test_state_round_trip_keeps_ids_and_assigns_the_same_ids() -> None:
    lines = TIMEOUTS[:5] + [
        "Disk /dev/sda1 is 91% full",
        "Disk /dev/sdb2 is 97% full",
        "user alice logged out",
    ]
    miner = PatternMiner()
    before = [miner.add(line) for line in lines]
    restored = PatternMiner.from_state(miner.to_state())
    assert len(restored) == len(miner)
    # Messages seen before map to the same ids, and learning continues on the restored miner.
    for line, m in zip(lines, before, strict=True):
        again = restored.match(line)
        assert again is not None and again.pattern_id == m.pattern_id
    later = restored.add(TIMEOUTS[-1])
    assert later.pattern_id == before[0].pattern_id and not later.is_new
    assert restored.add("Disk /dev/nvme0n1 is 99% full").pattern_id == before[5].pattern_id
    fresh = restored.add("Payment provider rejected card")
    assert fresh.is_new and fresh.pattern_id not in {m.pattern_id for m in before}
    # A second round-trip after further learning is still consistent.
    twice = PatternMiner.from_state(restored.to_state())
    assert twice.match("Payment provider rejected card") == PatternMatch(
        fresh.pattern_id, fresh.template, False, fresh.category
    )


def test_from_state_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        PatternMiner.from_state(b"not a state")


def test_match_does_not_learn() -> None:
    miner = PatternMiner()
    assert miner.match("brand new message 1") is None
    assert len(miner) == 0
    miner.add("brand new message 1")
    found = miner.match("brand new message 2")
    assert found is not None and not found.is_new
    assert len(miner) == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("id 123e4567-e89b-12d3-a456-426614174000 done", "id <UUID> done"),
        ("from 10.251.42.84 ok", "from <IP> ok"),
        ("peer 10.251.42.84:50010 ok", "peer <IP> ok"),
        ("addr 0x7fff5fbff8a8 bad", "addr <HEX> bad"),
        ("hash deadbeef00c0ffee seen", "hash <HEX> seen"),
        ("open /var/log/app/server.log failed", "open <PATH> failed"),
        ("took 250ms", "took <NUM>"),
        ("retry 3 of 5", "retry <NUM> of <NUM>"),
        ("block blk_-6952295868487656571 lost", "block <ID> lost"),
        ("at 2024-05-01T12:00:03.123Z stop", "at <TS> stop"),
        ("at Fri Jun 17 07:07:00 2005 stop", "at <TS> stop"),
        ("see https://example.com/a?b=1 now", "see <URL> now"),
        ("host proxy.cse.cuhk.edu.hk:5070 up", "host <HOST> up"),
        ("plain words stay", "plain words stay"),
    ],
)
def test_masking(raw: str, expected: str) -> None:
    assert mask(raw) == expected


def test_no_config_file_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a stray drain3.ini in the CWD must not matter
    (tmp_path / "drain3.ini").write_text("[DRAIN]\nsim_th = 0.01\n")
    ids = {m.pattern_id for m in mine_lines(["alpha beta gamma", "delta epsilon zeta"])}
    assert len(ids) == 2


def test_write_clusters_csv_uses_final_ids_and_templates(tmp_path: Path) -> None:
    lines = ["job 1 failed on node a1", "job 2 failed on node b7", "shutting down", "job 3 failed on node c9"]
    matches = mine_lines(lines, MinerConfig())
    out = tmp_path / "pred.csv"
    write_clusters_csv(matches, out)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["LineId"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["EventId"] == rows[1]["EventId"] == rows[3]["EventId"] != rows[2]["EventId"]
    assert rows[0]["EventTemplate"] == rows[3]["EventTemplate"] == "job <NUM> failed on node <ID>"
