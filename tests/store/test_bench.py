"""The store benchmark measures every store on the shared mix (it checks, while measuring, that
each store decides the same pushes as the plain engine), one and two node processes on the
cluster against one on a single Redis over the same window with the CPU accounted, and what a
failover costs."""

from __future__ import annotations

from pushrules.benchmarks.stores import BATCHED, PIPELINED_FLOOR, SCALE_OUT, run_store_bench


def test_store_bench_measures_every_store(redis_server):
    result = run_store_bench(quick=True)
    assert set(result["events_per_s"]) == {
        "engine (no store)", "memory", "sqlite", "redis", "redis round-trip floor", BATCHED,
        PIPELINED_FLOOR}
    assert all(rate > 0 for rate in result["events_per_s"].values())
    assert result["events"] > 1000 and result["pushes"] > 100
    assert "not_measured" not in result
    assert result["redis_floor_ratio"] > 0 and result["redis_batched_floor_ratio"] > 0
    assert result["redis_batched_to_pipelined_floor"] > 0
    scale_out = result["scale_out"]
    assert set(scale_out["runs"]) == set(SCALE_OUT)
    for name, run in scale_out["runs"].items():
        assert run["events_per_s"] > 0 and run["events"] > 0, name
        cpu = run["cpu_cores"]
        assert cpu["nodes"] > 0 and cpu["redis"] > 0 and cpu["machine"] >= 1, (name, cpu)
    # Only the nodes sharing users race on them; nodes on their own users never do.
    assert scale_out["runs"]["cluster, 2 nodes (own users)"]["conflicts"] == 0
    assert {"cluster 2 nodes / cluster 1 node", "cluster 2 nodes / redis 1 node",
            "cluster 1 node / redis 1 node", "cluster 2 nodes shared users / 1 node",
            "cluster wait=0 / wait=1"} <= set(scale_out)
    failover = result["failover"]
    assert failover["seconds_unavailable"] > 0 and failover["events_retried"] >= 1
    assert failover["failed_attempts"] >= failover["events_retried"]
    assert failover["pushes_checked_against_engine"] == result["pushes"]
