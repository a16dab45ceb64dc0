"""examples/train.py's pure parts: fingerprint, requirements, tag arguments; and the notebooks
must call it rather than carry their own copy of the training code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.training import EXAMPLES_DIR, train_module

train = train_module()
NOTEBOOKS = ("train_xgboost_model.ipynb", "train_catboost_model.ipynb")
PINS = ["xgboost==1.7.6", "numpy==1.26.4"]


def fp(**changes: object) -> str:
    args: dict = {"flavor": "xgboost", "requirements": PINS, "python_version": "3.11.2",
                  "mlflow": "3.17.2", "source": b"code"}  # fmt: skip
    return train.fingerprint(**{**args, **changes})


def test_fingerprint_is_stable_and_follows_every_input() -> None:
    assert fp() == fp()
    others = [
        fp(flavor="catboost"),
        fp(requirements=["xgboost==2.1.4", "numpy==1.26.4"]),
        fp(python_version="3.11.9"),
        fp(mlflow="3.18.0"),
        fp(source=b"other code"),
    ]
    assert fp() not in others
    assert len(set(others)) == len(others)


def test_read_requirements_drops_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("# header\n\nxgboost==1.7.6  # why\n  numpy==1.26.4\n")
    assert train.read_requirements(path) == PINS


def test_read_requirements_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("# nothing\n")
    with pytest.raises(train.ExampleError, match="no requirement lines"):
        train.read_requirements(path)


def test_pip_requirements_pin_the_environments_mlflow() -> None:
    assert train.pip_requirements(PINS, mlflow="3.17.2") == [*PINS, "mlflow==3.17.2"]
    with pytest.raises(train.ExampleError, match="mlflow in the requirements"):
        train.pip_requirements(["mlflow-skinny>=2"], mlflow="3.17.2")


def test_tag_arguments_merge_json_then_pairs() -> None:
    tags = train.parse_tag_args(
        ['ray.ray_actor_options.runtime_env.env_vars={"A": "1=2"}', "ray.name=b"],
        '{"ray.name": "a", "ray.num_replicas": 2}',
    )
    assert tags == {
        "ray.name": "b",
        "ray.num_replicas": "2",
        "ray.ray_actor_options.runtime_env.env_vars": '{"A": "1=2"}',
    }
    with pytest.raises(train.ExampleError, match="KEY=VALUE"):
        train.parse_tag_args(["novalue"], None)
    with pytest.raises(train.ExampleError, match="expected an object"):
        train.parse_tag_args([], "[1]")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebooks_are_nbformat4_and_reuse_train_py(notebook: str) -> None:
    nb = json.loads((EXAMPLES_DIR / notebook).read_text())
    assert nb["nbformat"] == 4
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "import train" in code
    assert "train.fit(" in code
    assert "train.log_model(" in code
    assert "train.log_reference(" in code
    # No second copy of the training code.
    for duplicate in ("XGBClassifier(", "CatBoostClassifier(", "load_iris(", "def "):
        assert duplicate not in code
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
