"""The example models (examples/models.yml) must deploy as documented: tags that mlray accepts,
pinned requirement files, and the conflicts and coverage the e2e and load tests rely on."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement

from mlray.tags import parse_tags
from testbed.training import EXAMPLES_DIR, ExampleModel, load_catalog

CATALOG = load_catalog()
MODELS = CATALOG.models
FILE_NAME = re.compile(r"^requirements\.iris_classifier-py(\d)(\d+)-([a-z]+)(\d+(?:\.\d+)*)\.txt$")
FLAVOR_DISTS = {"xgboost": ("xgboost", "xgboost-cpu"), "catboost": ("catboost",)}


def pins(model: ExampleModel) -> dict[str, str]:
    """name -> pinned version of the model's requirements file."""
    out = {}
    for line in model.requirements_path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            out[req.name.lower()] = spec.version
    return out


def flavor_version(model: ExampleModel) -> str:
    found = {d: v for d, v in pins(model).items() if d in FLAVOR_DISTS[model.flavor]}
    assert len(found) == 1, f"{model.name}: expected one {model.flavor} pin, got {found}"
    return next(iter(found.values()))


def on_cluster(python: str) -> list[ExampleModel]:
    """Models mlray routes to a cluster: by the Python they were trained on."""
    return [m for m in MODELS if m.python == python]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_tags_parse_without_problems(model: ExampleModel) -> None:
    options, problems = parse_tags(model.tags)
    assert problems == []
    assert options is not None and options.name == model.ray_name
    # Each cluster is a head + 1 worker of ~2 logical CPUs on a 2-core host: keep requests small.
    assert 0.25 <= options.num_cpus <= 0.5
    assert options.memory_bytes <= 1024**3


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_names_follow_the_selection_rule(model: ExampleModel) -> None:
    assert model.name.endswith(".staging")
    assert CATALOG.alias == "staging"


def test_app_names_are_unique() -> None:
    names = [m.ray_name for m in MODELS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_requirement_files_are_exactly_pinned_and_named_after_their_pin(
    model: ExampleModel,
) -> None:
    pinned = pins(model)
    for line in model.requirements_path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line), line
    assert "mlflow" not in pinned and "mlflow-skinny" not in pinned  # added by train.py
    major, minor, lib, version = FILE_NAME.fullmatch(model.requirements).groups()  # type: ignore[union-attr]
    assert f"{major}.{minor}" == (model.intended_python or model.python)
    assert lib == model.flavor
    assert flavor_version(model) == version


def test_every_requirement_file_is_used() -> None:
    files = {p.name for p in EXAMPLES_DIR.glob("requirements.*.txt")}
    assert files == {m.requirements for m in MODELS}


def test_py311_serves_two_xgboost_majors_side_by_side() -> None:
    majors = {flavor_version(m).split(".")[0] for m in on_cluster("3.11") if m.flavor == "xgboost"}
    assert len(majors) >= 2
    numpy = {pins(m)["numpy"] for m in on_cluster("3.11")}
    assert len(numpy) >= 2  # numpy 1.x next to numpy 2.x on one cluster


def test_catboost_on_both_clusters_with_different_versions() -> None:
    versions = {
        python: {flavor_version(m) for m in on_cluster(python) if m.flavor == "catboost"}
        for python in ("3.11", "3.13")
    }
    assert versions["3.11"] and versions["3.13"]
    assert versions["3.11"].isdisjoint(versions["3.13"])


def test_one_model_is_trained_on_the_wrong_python() -> None:
    wrong = [m for m in MODELS if m.mismatched]
    assert len(wrong) == 1
    assert wrong[0].python == "3.13" and wrong[0].intended_python == "3.11"


def test_py311_covers_batching_and_autoscaling_to_four_for_the_load_tests() -> None:
    parsed = [parse_tags(m.tags)[0] for m in on_cluster("3.11")]
    assert any(o is not None and o.max_batch_size == 16 for o in parsed)
    assert any(
        o is not None and o.autoscaling is not None and o.autoscaling["max_replicas"] == 4
        and o.autoscaling["upscale_delay_s"] <= 5 for o in parsed
    )  # fmt: skip


def test_examples_cover_env_vars_and_fixed_replicas() -> None:
    parsed = [parse_tags(m.tags)[0] for m in MODELS]
    assert any(o is not None and o.env_vars.get("OMP_NUM_THREADS") == "1" for o in parsed)
    assert any(o is not None and (o.num_replicas or 0) >= 2 for o in parsed)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_request_file_covers_every_form(model: ExampleModel) -> None:
    text = (EXAMPLES_DIR / f"{model.ray_name}.request.http").read_text()
    requests = [r for r in text.split("###")[1:] if "POST" in r]
    for request in requests:
        assert f"POST {{{{host}}}}/{model.ray_name}/invocations" in request
    bodies = " ".join(requests)
    for form in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        assert f'{{"{form}":' in bodies
    assert "Content-Type: text/csv" in bodies
    assert "Content-Type: application/json" in bodies
