"""Flattening a model's requirement files into one runtime_env pip list."""

from __future__ import annotations

import pytest

from mlray.requirements import RequirementsError, flatten, to_pip_list


def reader(files: dict[str, str]):
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return read


def test_includes_are_inlined_and_pins_kept_exactly():
    files = {
        "requirements.txt": "mlflow==2.17.2\n-r extra/more.txt\n# comment\n\nxgboost==1.7.6  # pinned\n",
        "extra/more.txt": "pandas==2.2.3\n--requirement ../base.txt\n",
        "base.txt": "numpy==1.26.4 \\\n  ; python_version >= '3.9'\n",
    }
    flat = flatten(reader(files))
    assert to_pip_list(flat) == [
        "mlflow==2.17.2",
        "pandas==2.2.3",
        "numpy==1.26.4 ; python_version >= '3.9'",
        "xgboost==1.7.6",
    ]


def test_constraints_merge_into_requirements_or_become_requirements():
    files = {
        "requirements.txt": "mlflow\nxgboost>=1.7\n-c constraints.txt\n",
        "constraints.txt": "xgboost==1.7.6\nscipy==1.13.1\n",
    }
    assert to_pip_list(flatten(reader(files))) == [
        "mlflow",
        "xgboost>=1.7,==1.7.6",
        "scipy==1.13.1",
    ]


def test_options_lines_and_duplicates():
    files = {"requirements.txt": "--extra-index-url https://x/simple\na==1\na==1\n"}
    assert to_pip_list(flatten(reader(files))) == ["--extra-index-url https://x/simple", "a==1"]


def test_missing_include_and_cycle_are_errors():
    with pytest.raises(RequirementsError, match=r"got no file nope\.txt"):
        flatten(reader({"requirements.txt": "-r nope.txt\n"}))
    with pytest.raises(RequirementsError, match="include cycle"):
        flatten(reader({"requirements.txt": "-r a.txt\n", "a.txt": "-r requirements.txt\n"}))
