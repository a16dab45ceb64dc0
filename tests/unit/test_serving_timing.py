"""Per-stage timings a replica reports in /metadata (mlray.serving.timing)."""

from __future__ import annotations

from mlray.serving import timing


def test_snapshot_has_every_stage_with_mean_and_recent_percentiles_in_ms():
    times = timing.StageTimes(window=4)
    for seconds in (0.001, 0.002, 0.003, 0.010, 0.004):
        times.record("predict", seconds)
    snap = times.snapshot()
    assert set(snap) == set(timing.STAGES)
    predict = snap["predict"]
    assert predict["count"] == 5
    assert predict["mean_ms"] == 4.0  # over all samples
    assert predict["p50_ms"] == 4.0  # over the last 4: 2, 3, 4, 10 ms
    assert predict["p99_ms"] == 10.0
    assert predict["max_recent_ms"] == 10.0
    assert snap["parse"] == {
        "count": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "max_recent_ms": 0.0
    }  # fmt: skip


def test_percentile_nearest_rank():
    assert timing.percentile([], 0.5) == 0.0
    assert timing.percentile([1.0], 0.99) == 1.0
    assert timing.percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert timing.percentile([1.0, 2.0, 3.0], 0.0) == 1.0


def test_the_startup_timeline_places_each_step_of_a_replica_start():
    import os
    import time

    from mlray.serving.app import process_started_at, startup_timeline

    started = process_started_at(os.getpid())
    assert started is not None and 0 <= time.time() - started < 24 * 3600
    t = started + 2.0
    line = startup_timeline(t, t + 1.5, t + 1.75, t + 2.25)
    assert line["process_to_init_s"] == 2.0
    assert (line["import_mlflow_s"], line["download_s"], line["load_s"]) == (1.5, 0.25, 0.5)
    assert line["total_s"] == 4.25 and line["ready_at"] == round(t + 2.25, 3)
    assert process_started_at("no-such-pid") is None
