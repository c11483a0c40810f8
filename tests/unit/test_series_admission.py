"""The live-series cap per tenant (agents/scoring/admission.py)."""

from __future__ import annotations

from agents.scoring.admission import Admission, per_partition_cap, split_admitted


def _p(tenant: str, i: int) -> dict[str, object]:
    return {"series": f"{tenant}|ns|m|Average|id={i}", "tenant_id": tenant}


def test_cap_per_tenant_counts_every_point_beyond_it() -> None:
    adm = Admission(cap=3)
    pts = [_p("a", i % 5) for i in range(20)] + [_p("b", i) for i in range(2)]
    keep, over = split_admitted(adm, pts)
    assert len(keep) + len(over) == len(pts)
    assert {p["series"] for p in keep} == {f"a|ns|m|Average|id={i}" for i in range(3)} | {
        f"b|ns|m|Average|id={i}" for i in range(2)}
    assert len(over) == 8 and all(p["tenant_id"] == "a" for p in over)


def test_admission_rebuilt_from_checkpoint_keys_and_partition_share() -> None:
    adm = Admission(cap=2, admitted=["a|x", "a|y"])
    assert not adm.admit("a|z", "a") and adm.admit("a|x", "a") and adm.admit("b|x", "b")
    assert per_partition_cap(20_000, 4) == 5_000 and per_partition_cap(10, 4) == 3 and per_partition_cap(1, 8) == 1


def test_total_cap_bounds_the_partition_whatever_the_tenants() -> None:
    adm = Admission(cap=10, total_cap=4)
    keep, over = split_admitted(adm, [_p(t, i) for t in "abc" for i in range(3)])
    assert len(keep) == 4 and len(over) == 5
