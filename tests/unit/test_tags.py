"""ray.* tags -> ServeOptions: every rule and every error class."""

from __future__ import annotations

import pytest

from mlray.tags import DEFAULT_MAX_ONGOING, GB, TAG_SPECS, parse_tags, tags_reference_markdown

REQUIRED = {
    "ray.name": "iris",
    "ray.ray_actor_options.num_cpus": "0.5",
    "ray.ray_actor_options.memory": "1.5",
}


def ok(**extra: str):
    options, problems = parse_tags({**REQUIRED, **extra})
    assert problems == []
    assert options is not None
    return options


def errors(tags: dict[str, str]) -> list[str]:
    options, problems = parse_tags(tags)
    assert options is None
    return problems


def test_required_tags_give_autoscaling_defaults_and_memory_in_bytes():
    o = ok()
    assert (o.name, o.num_cpus, o.memory_bytes) == ("iris", 0.5, int(1.5 * GB))
    assert o.autoscaling == {"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2}
    assert o.num_replicas is None and o.max_batch_size is None
    assert o.user_config == {"max_batch_size": None}
    # Never Ray's 5, which collapses under concurrency behind the classic proxy.
    assert o.max_ongoing_requests == DEFAULT_MAX_ONGOING == 64


def test_batching_sets_target_and_raises_max_ongoing_so_batches_can_fill():
    o = ok(**{"ray.user_config.max_batch_size": "16"})
    assert o.autoscaling["target_ongoing_requests"] == 16
    assert o.max_ongoing_requests == 64  # the default already fits 2 x 16
    big = ok(**{"ray.user_config.max_batch_size": "48"})
    assert big.max_ongoing_requests == 96  # 2 x max_batch_size when that is larger
    assert o.user_config == {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}


def test_explicit_values_win_over_batching_defaults():
    o = ok(**{
        "ray.user_config.max_batch_size": "8",
        "ray.user_config.batch_wait_timeout_s": "0.05",
        "ray.autoscaling_config.target_ongoing_requests": "3",
        "ray.max_ongoing_requests": "12",
    })  # fmt: skip
    assert o.autoscaling["target_ongoing_requests"] == 3
    assert o.max_ongoing_requests == 12
    assert o.user_config["batch_wait_timeout_s"] == 0.05


def test_fixed_replicas_drop_autoscaling():
    o = ok(**{"ray.num_replicas": "2"})
    assert o.num_replicas == 2 and o.autoscaling is None


def test_autoscaling_delays_and_env_vars():
    o = ok(**{
        "ray.autoscaling_config.max_replicas": "4",
        "ray.autoscaling_config.upscale_delay_s": "2",
        "ray.autoscaling_config.downscale_delay_s": "5",
        "ray.ray_actor_options.runtime_env.env_vars": '{"OMP_NUM_THREADS": "1"}',
    })  # fmt: skip
    assert o.autoscaling["upscale_delay_s"] == 2.0
    assert o.autoscaling["downscale_delay_s"] == 5.0
    assert o.autoscaling["max_replicas"] == 4
    assert dict(o.env_vars) == {"OMP_NUM_THREADS": "1"}


def test_foreign_tags_are_ignored():
    assert ok(owner="team-a", **{"mlray.cluster": "py311"}).name == "iris"


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("ray.ray_actor_options.num_cpus", "abc", "got 'abc' for ray.ray_actor_options.num_cpus; expected a number > 0"),
        ("ray.ray_actor_options.num_cpus", "-1", "got '-1' for ray.ray_actor_options.num_cpus; expected a number > 0"),
        ("ray.ray_actor_options.memory", "0", "got '0' for ray.ray_actor_options.memory; expected a number > 0"),
        ("ray.ray_actor_options.memory", "nan", "got 'nan' for ray.ray_actor_options.memory"),
        ("ray.num_replicas", "1.5", "got '1.5' for ray.num_replicas; expected a whole number >= 1"),
        ("ray.autoscaling_config.min_replicas", "-2", "got '-2' for ray.autoscaling_config.min_replicas"),
        ("ray.autoscaling_config.upscale_delay_s", "-1", "expected a number >= 0"),
        ("ray.ray_actor_options.runtime_env.env_vars", "{bad", "expected a JSON object of strings"),
        ("ray.ray_actor_options.runtime_env.env_vars", '{"A": 1}', "expected a JSON object of strings"),
        ("ray.ray_actor_options.runtime_env.env_vars", '["A"]', "expected a JSON object of strings"),
        ("ray.name", "Iris Model", "got 'Iris Model' for ray.name"),
        ("ray.name", "fraud/eu", "got 'fraud/eu' for ray.name; expected letters (any case)"),
        ("ray.name", "", "got '' for ray.name"),
        ("ray.name", "iris{v}", "no '/', spaces or braces"),
        ("ray.name", "-iris", "starting with a letter or digit"),
        ("ray.user_config.max_batch_size", "0", "expected a whole number >= 1"),
    ],
)  # fmt: skip
def test_bad_values_are_reported_with_tag_value_and_expectation(key, value, expected):
    problems = errors({**REQUIRED, key: value})
    assert len(problems) == 1
    assert expected in problems[0]


def test_unknown_key_suggests_the_closest_tag():
    (p,) = errors({**REQUIRED, "ray.user_config.max_batchsize": "8"})
    assert (
        p
        == "got unknown tag ray.user_config.max_batchsize; did you mean ray.user_config.max_batch_size?"
    )


def test_min_above_max_and_both_scaling_modes_are_errors():
    problems = errors({
        **REQUIRED,
        "ray.autoscaling_config.min_replicas": "5",
        "ray.autoscaling_config.max_replicas": "2",
        "ray.num_replicas": "3",
    })  # fmt: skip
    assert any("min_replicas 5 > max_replicas 2" in p for p in problems)
    assert any("got both ray.num_replicas and ray.autoscaling_config" in p for p in problems)


def test_min_above_default_max_is_an_error():
    (p,) = errors({**REQUIRED, "ray.autoscaling_config.min_replicas": "101"})
    assert "min_replicas 101 > max_replicas 100" in p


def test_every_problem_is_listed_at_once():
    problems = errors({
        "ray.nmae": "x",
        "ray.ray_actor_options.num_cpus": "abc",
        "ray.autoscaling_config.min_replicas": "3",
        "ray.autoscaling_config.max_replicas": "1",
    })  # fmt: skip
    text = "\n".join(problems)
    assert "unknown tag ray.nmae" in text
    assert "missing required tag ray.name" in text
    assert "missing required tag ray.ray_actor_options.memory" in text
    assert "got 'abc' for ray.ray_actor_options.num_cpus" in text
    assert "min_replicas 3 > max_replicas 1" in text
    assert len(problems) == 5


def test_batch_timeout_without_batch_size_and_capped_ongoing_are_errors():
    (p,) = errors({**REQUIRED, "ray.user_config.batch_wait_timeout_s": "0.1"})
    assert "without ray.user_config.max_batch_size" in p
    (p,) = errors(
        {**REQUIRED, "ray.user_config.max_batch_size": "8", "ray.max_ongoing_requests": "4"}
    )
    assert "batches can never fill" in p


def test_initial_replicas_must_lie_within_bounds():
    (p,) = errors({**REQUIRED, "ray.autoscaling_config.initial_replicas": "7",
                   "ray.autoscaling_config.max_replicas": "4"})  # fmt: skip
    assert "expected a count within [1, 4]" in p


def test_reference_table_lists_every_tag():
    table = tags_reference_markdown()
    for key in TAG_SPECS:
        assert f"`{key}`" in table


@pytest.mark.parametrize("name", ["FraudScorer-EU", "iris", "Iris_v2.1", "a", "x~y", "7up"])
def test_names_ray_accepts_as_app_name_and_route_are_accepted(name):
    assert ok(**{"ray.name": name}).name == name
