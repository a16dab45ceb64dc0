"""Library versions for /metadata (mlray.serving.introspect) and signature hints (app)."""

from __future__ import annotations

import numpy as np

from mlray.serving import introspect


def test_requirement_names():
    lines = [
        "mlflow==2.9.2",
        "scikit-learn==1.3.0 ; python_version >= '3.8'",
        "# a comment",
        "",
        "cloudpickle>=2  # trailing comment",
        "mlflow[gateway]==2.9.2",
        "-r other.txt",
        "-c constraints.txt",
        "--extra-index-url https://example.invalid/simple",
        "my-pkg @ https://example.invalid/my_pkg-1.0-py3-none-any.whl",
        "https://example.invalid/bare.whl",
        "zope.interface",
    ]
    assert introspect.requirement_names(lines) == [
        "mlflow",
        "scikit-learn",
        "cloudpickle",
        "my-pkg",
        "zope.interface",
    ]


def test_library_versions():
    versions = introspect.library_versions(["numpy", "surely-not-installed-mlray-test"])
    assert versions == {"numpy": np.__version__, "surely-not-installed-mlray-test": None}


def test_flavor_libraries():
    flavors = {
        "python_function": {"loader_module": "mlflow.sklearn"},
        "numpy": {"numpy_version": "1.0"},
        "no_such_module_for_mlray": {},
    }
    result = introspect.flavor_libraries(flavors)
    assert set(result) == {"numpy", "no_such_module_for_mlray"}
    assert result["numpy"] == {
        "module": "numpy",
        "logged_with": {"numpy_version": "1.0"},
        "version": np.__version__,
    }
    assert result["no_such_module_for_mlray"]["version"] is None
    assert "ModuleNotFoundError" in result["no_such_module_for_mlray"]["import_error"]


def test_input_hints_from_signatures():
    from mlflow import types
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

    from mlray.serving.app import input_hints

    class Meta:
        def __init__(self, schema):
            self.signature = ModelSignature(inputs=schema) if schema is not None else None

        def get_input_schema(self):
            return self.signature.inputs if self.signature else None

    assert input_hints(Meta(None)) is None
    columns = Schema(
        [
            ColSpec(types.DataType.double, "x"),
            ColSpec(types.DataType.string, "s"),
            ColSpec(Array(types.DataType.long), "arr"),
        ]
    )
    hints = input_hints(Meta(columns))
    assert not hints.is_tensor and hints.named
    assert hints.types == (("x", "double"), ("s", "string"), ("arr", "complex"))
    tensor = Schema([TensorSpec(np.dtype("float32"), (-1, 4))])
    hints = input_hints(Meta(tensor))
    assert hints.is_tensor and not hints.named
    assert hints.types == ((None, "float32"),)


def test_requirement_mismatches_name_only_exact_pins_the_environment_misses():
    installed = {
        "xgboost-cpu": "2.1.4",
        "numpy": "2.2.6",
        "pandas": "2.2",
        "mlflow-skinny": "3.17.2",
    }
    lines = [
        "# logged by MLflow",
        "xgboost-cpu==2.1.4",
        "numpy==2.3.0",  # the env has another numpy
        "pandas==2.2.0",  # 2.2 == 2.2.0, as pip compares releases
        "scipy==1.15.3",  # not installed
        "mlflow==3.17.2",  # met by mlflow-skinny, as MLflow itself allows
        "scikit-learn>=1.5",  # a range: pip resolved it already
        "torch==2.1; sys_platform == 'darwin'",  # a marker: skipped
        "-r extra.txt",
        "scipy==1.*",  # a prefix match, not an exact pin
        "numpy===2.3.0",  # arbitrary equality: left to pip
    ]
    assert introspect.requirement_mismatches(lines, installed.get) == [
        "numpy==2.3.0 (installed: 2.2.6)",
        "scipy==1.15.3 (installed: none)",
    ]
