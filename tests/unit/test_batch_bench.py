"""The batch queue micro-bench (loadtests.batch_bench) runs, and its modes are what they say."""

from __future__ import annotations

import asyncio

import pytest

from loadtests import batch_bench


def _run(mode: str, clients: int, **settings) -> batch_bench.Result:
    s = batch_bench.Settings(seconds=0.3, **settings)
    return asyncio.run(batch_bench._run(mode, clients, s))


def test_the_ray_like_mode_waits_the_timeout_and_mlray_does_not():
    ray = _run("ray", 1, wait_s=0.05)
    mlray = _run("mlray", 1, wait_s=0.05)
    assert ray.p50_ms >= 45, ray
    assert ray.closed.split("/")[-1] != "0", ray  # closed by the timeout
    assert mlray.p50_ms < 30, mlray
    assert mlray.closed.split("/")[-1] == "0", mlray


def test_the_nolinger_mode_never_lingers():
    closed = _run("mlray-nolinger", 8).closed.split("/")  # full/early/linger/timeout
    assert closed[2] == "0" and closed[1] != "0", closed


def test_unbatched_predicts_one_at_a_time_and_batched_modes_merge_under_load():
    assert _run("unbatched", 4).mean_batch == 1.0
    assert _run("mlray", 8).mean_batch > 1.0


def test_the_bench_prints_a_row_per_mode_and_level(capsys):
    batch_bench.main(["--seconds", "0.2", "--levels", "2", "--modes", "unbatched,mlray"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows] == ["mode", "unbatched", "mlray"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--modes", "fast"],
        ["--levels", "x"],
        ["--repeat", "0"],
        ["--jitter", "2"],
        ["--proxy-ms", "-1"],
    ],
)
def test_the_bench_refuses_bad_options(argv):
    with pytest.raises(SystemExit, match="got "):
        batch_bench.main(argv)
