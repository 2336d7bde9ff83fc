"""The store benchmark measures every store on the shared mix (it checks, while measuring, that
each store decides the same pushes as the plain engine)."""

from __future__ import annotations

from pushrules.benchmarks.stores import run_store_bench


def test_store_bench_measures_every_store(redis_server):
    result = run_store_bench(quick=True)
    assert set(result["events_per_s"]) == {"engine (no store)", "memory", "sqlite", "redis"}
    assert all(rate > 0 for rate in result["events_per_s"].values())
    assert result["events"] > 1000 and result["pushes"] > 100
    assert "not_measured" not in result
