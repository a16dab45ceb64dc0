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
    line = startup_timeline(t, t + 1.5, t + 1.75, t + 2.25, cpu_s=1.7)
    assert line["process_to_init_s"] == 2.0
    assert (line["import_mlflow_s"], line["download_s"], line["load_s"]) == (1.5, 0.25, 0.5)
    assert line["total_s"] == 4.25 and line["ready_at"] == round(t + 2.25, 3)
    # 1.7 s of CPU over a 4.25 s start: the process had 0.4 of a core on average.
    assert (line["cpu_s"], line["cpu_share"]) == (1.7, 0.4)
    assert startup_timeline(t, t, t, t)["cpu_share"] is None  # not measured: not guessed
    assert startup_timeline(t, t, t, t, cpu_wait=0.1234)["cpu_wait_s"] == 0.123


def _busy(seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_cpu_wait_of_a_process_is_its_time_runnable_without_a_cpu():
    """On one CPU with two busy processes beside it, this thread runs about a third of the
    time and waits the rest: its wait grows about twice as fast as its CPU time."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from mlray.serving.app import cpu_wait_s

    assert cpu_wait_s(-1) is None
    me = threading.get_native_id()
    child = "import time\nend = time.monotonic() + 2.0\nwhile time.monotonic() < end: pass"
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # this thread, and the children it forks
    try:
        others = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(2)]
        time.sleep(0.5)  # both interpreters up and spinning
        waited, cpu = cpu_wait_s(me), time.process_time()
        _busy(0.6)
        waited, cpu = cpu_wait_s(me) - waited, time.process_time() - cpu
        for other in others:
            other.wait(timeout=30)
    finally:
        os.sched_setaffinity(0, allowed)
    assert waited > 0.15 and waited > 1.3 * cpu, (waited, cpu)


def test_the_start_paths_wait_is_the_main_threads_then_the_init_threads():
    from mlray.serving.app import start_path_wait_s

    # Main thread waited 4 s before __init__; the init thread had waited 1 s (before it ran
    # __init__) and 7 s at ready: the path waited 4 + 6.
    assert start_path_wait_s(4.0, 1.0, 7.0) == 10.0
    # __init__ on the main thread itself: its wait at ready is the whole path's.
    assert start_path_wait_s(4.0, 4.0, 9.0) == 9.0
    assert start_path_wait_s(None, 1.0, 2.0) is None
