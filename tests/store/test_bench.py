"""The store benchmark measures every store on the shared mix (it checks, while measuring, that
each store decides the same pushes as the plain engine), the cluster with one and two nodes, and
what a failover costs."""

from __future__ import annotations

from pushrules.benchmarks.stores import run_store_bench


def test_store_bench_measures_every_store(redis_server):
    result = run_store_bench(quick=True)
    assert set(result["events_per_s"]) == {
        "engine (no store)", "memory", "sqlite", "redis", "redis round-trip floor",
        "redis cluster (1 node)",
        "redis cluster wait=0 (1 node)", "redis cluster (2 nodes)"}
    assert all(rate > 0 for rate in result["events_per_s"].values())
    assert result["events"] > 1000 and result["pushes"] > 100
    assert "not_measured" not in result
    assert result["redis_floor_ratio"] > 0
    assert set(result["scale_out"]) == {"cluster 2 nodes / cluster 1 node",
                                        "cluster 1 node / redis 1 node",
                                        "cluster wait=0 / wait=1"}
    failover = result["failover"]
    assert failover["seconds_unavailable"] > 0 and failover["events_retried"] >= 1
    assert failover["failed_attempts"] >= failover["events_retried"]
    assert failover["pushes_checked_against_engine"] == result["pushes"]
