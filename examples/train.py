"""Train, log, register and tag one example iris classifier (xgboost or catboost).

Run it with the interpreter of the Ray cluster that will serve the model, in an environment
holding exactly the model's requirements file: MLflow writes that interpreter's exact Python
version into python_env.yaml and the file's pins (plus this environment's mlflow) into
requirements.txt, and mlray routes and installs the model from those two files.
`nox -s train` (testbed/training.py) does this in a container from the cluster's own image.

    python examples/train.py --flavor xgboost \\
        --requirements examples/requirements.iris_classifier-py311-xgboost2.1.4.txt \\
        --name iris_xgb21.staging --tag ray.name=iris-xgb21 \\
        --tag ray.ray_actor_options.num_cpus=0.25 --tag ray.ray_actor_options.memory=0.5

Idempotent: a version whose fingerprint tag (requirements + this file + flavor + Python +
mlflow) matches is reused, and only the registered model's tags and alias are re-applied.
The notebooks import this module, so there is one copy of the training code.

Importing this module needs only the standard library; mlflow, scikit-learn and the flavor's
library are imported where they are used (the testbed host imports it to compute fingerprints).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

EXPERIMENT = "mlray-examples"
# What the registered model itself predicts on the held-out rows (the e2e suite's reference).
REFERENCE_ARTIFACT = "reference/iris_test_predictions.json"
DEFAULT_ALIAS = "staging"
FLAVORS = ("xgboost", "catboost")
# Version tag holding the fingerprint of what produced the version (not a ray.* tag: mlray
# ignores it).
FINGERPRINT_TAG = "examples.fingerprint"
RESULT_PREFIX = "MLRAY_EXAMPLE_RESULT "
TAG_PREFIX = "ray."
SEED = 42  # model seed
SPLIT_SEED = 0  # train/test split: 105 rows to fit, 45 held out
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
THIS_FILE = Path(__file__).resolve()


class ExampleError(Exception):
    """A bad argument or registry state; main() prints it without a traceback."""


@dataclass(frozen=True)
class Split:
    """The iris data set split once, the same way for every flavor."""

    x_train: Any
    x_test: Any
    y_train: Any
    y_test: Any


@dataclass(frozen=True)
class Trained:
    """A fitted model with the parameters it was trained with and its test accuracy."""

    flavor: str
    model: Any
    params: dict[str, Any]
    accuracy: float
    train_accuracy: float


@dataclass(frozen=True)
class Outcome:
    """What run() did: trained a new version, or reused the matching one."""

    name: str
    version: str
    trained: bool
    fingerprint: str
    python_version: str
    accuracy: float | None = None
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "trained": self.trained,
                "fingerprint": self.fingerprint,
                "python_version": self.python_version,
                "accuracy": self.accuracy,
                "run_id": self.run_id,
                **self.extra,
            },
            sort_keys=True,
        )


# ---- requirements and fingerprint ----------------------------------------------------------


def read_requirements(path: Path | str) -> list[str]:
    """The requirement lines of a pip requirements file, without comments and blank lines."""
    lines: list[str] = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    if not lines:
        raise ExampleError(f"got no requirement lines in {path}; expected pinned requirements")
    return lines


def mlflow_version() -> str:
    """The mlflow distribution of this environment (the cluster image's, in a container)."""
    return metadata.version("mlflow")


def pip_requirements(requirements: Sequence[str], mlflow: str | None = None) -> list[str]:
    """What the model's requirements.txt will hold: the file's pins plus this env's mlflow.

    mlflow is pinned to the version that logged the model, which is the cluster image's, so
    Ray's runtime_env install finds it already satisfied and never replaces the cluster's.
    """
    if any(_dist_name(r) in ("mlflow", "mlflow-skinny") for r in requirements):
        raise ExampleError(
            "got mlflow in the requirements file; expected it left out (it is pinned to the "
            "cluster image's version automatically)"
        )
    return [*requirements, f"mlflow=={mlflow or mlflow_version()}"]


def _dist_name(requirement: str) -> str:
    name = requirement
    for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", " ", "@"):
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("_", "-")


def fingerprint(
    flavor: str,
    requirements: Sequence[str],
    python_version: str | None = None,
    mlflow: str | None = None,
    source: bytes | None = None,
) -> str:
    """SHA-256 of everything that shapes a version's artifacts.

    ray.* tags are left out on purpose: they are registered-model settings re-applied on
    every run, and a tag edit must not retrain (a new version would restart the replicas).
    """
    raw = json.dumps(
        {
            "flavor": flavor,
            "requirements": list(requirements),
            "python": python_version or platform.python_version(),
            "mlflow": mlflow or mlflow_version(),
            "train_py": hashlib.sha256(source or THIS_FILE.read_bytes()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(raw.encode()).hexdigest()


# ---- training ------------------------------------------------------------------------------


def iris_split(test_size: float = 0.3, seed: int = SPLIT_SEED) -> Split:
    """sklearn's bundled iris data (no download), with snake_case column names."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    data = load_iris(as_frame=True)
    x = data.data.copy()
    x.columns = list(FEATURES)
    y = data.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return Split(x_train, x_test, y_train, y_test)


def default_params(flavor: str) -> dict[str, Any]:
    """Small, deterministic, single-threaded models: training takes about a second."""
    if flavor == "xgboost":
        return {
            "n_estimators": 30,
            "max_depth": 3,
            "learning_rate": 0.3,
            "random_state": SEED,
            "n_jobs": 1,
        }
    if flavor == "catboost":
        return {
            "iterations": 60,
            "depth": 4,
            "learning_rate": 0.2,
            "random_seed": SEED,
            "thread_count": 1,
            "verbose": False,
            "allow_writing_files": False,
        }
    raise ExampleError(f"got flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")


def fit(flavor: str, split: Split, params: Mapping[str, Any] | None = None) -> Trained:
    """Fit the flavor's sklearn-style classifier and measure accuracy on the held-out rows."""
    params = {**default_params(flavor), **(params or {})}
    if flavor == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(**params)
    else:
        import catboost

        model = catboost.CatBoostClassifier(**params)
    model.fit(split.x_train, split.y_train)
    return Trained(
        flavor=flavor,
        model=model,
        params=dict(params),
        accuracy=_accuracy(model, split.x_test, split.y_test),
        train_accuracy=_accuracy(model, split.x_train, split.y_train),
    )


def _accuracy(model: Any, x: Any, y: Any) -> float:
    import numpy as np

    predicted = np.asarray(model.predict(x)).reshape(-1).astype("int64")
    return float((predicted == np.asarray(y)).mean())


# ---- logging and registering ---------------------------------------------------------------


def log_model(
    trained: Trained,
    split: Split,
    requirements: Sequence[str],
    experiment: str = EXPERIMENT,
    run_name: str | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> tuple[Any, str]:
    """Log params, metrics and the model (signature, input example, exact pins) in one run."""
    import mlflow
    from mlflow.models import infer_signature

    flavor_module = importlib.import_module(f"mlflow.{trained.flavor}")
    library = importlib.import_module(trained.flavor)
    mlflow.set_experiment(experiment)
    signature = infer_signature(split.x_train, trained.model.predict(split.x_train))
    params = {
        **trained.params,
        "flavor": trained.flavor,
        f"{trained.flavor}_version": library.__version__,
        "python_version": platform.python_version(),
    }
    with mlflow.start_run(run_name=run_name, tags=dict(run_tags or {})) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({"accuracy": trained.accuracy, "train_accuracy": trained.train_accuracy})
        info = flavor_module.log_model(
            trained.model,
            name="model",
            signature=signature,
            input_example=split.x_test.head(3),
            pip_requirements=pip_requirements(requirements),
        )
    return info, run.info.run_id


def client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def latest_version(mlflow_client: Any, name: str) -> Any | None:
    """The highest version of a registered model, or None when there is none (or no model)."""
    quoted = name.replace("'", "''")
    versions = mlflow_client.search_model_versions(f"name='{quoted}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def reusable_version(mlflow_client: Any, name: str, fp: str) -> str | None:
    """The latest version if it carries this fingerprint: nothing to retrain."""
    latest = latest_version(mlflow_client, name)
    if latest is not None and (latest.tags or {}).get(FINGERPRINT_TAG) == fp:
        return str(latest.version)
    return None


def ensure_registered_model(mlflow_client: Any, name: str, description: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        mlflow_client.create_registered_model(name, description=description)
        return
    if description and model.description != description:
        mlflow_client.update_registered_model(name, description=description)


def register(model_uri: str, name: str, fp: str, description: str = "") -> str:
    """Register the logged model as a new version carrying its fingerprint."""
    import mlflow

    mlflow_client = client()
    ensure_registered_model(mlflow_client, name, description)
    version = mlflow.register_model(model_uri, name, tags={FINGERPRINT_TAG: fp})
    return str(version.version)


def apply_settings(
    mlflow_client: Any,
    name: str,
    version: str,
    tags: Mapping[str, str],
    alias: str | None = DEFAULT_ALIAS,
) -> None:
    """Make the registered model's ray.* tags exactly `tags` and point the alias at `version`.

    ray.* tags not in `tags` are deleted, so editing the examples' tag list converges.
    """
    bad = sorted(k for k in tags if not k.startswith(TAG_PREFIX))
    if bad:
        raise ExampleError(f"got tags {bad} for {name}; expected only {TAG_PREFIX}* tags")
    current = dict(mlflow_client.get_registered_model(name).tags or {})
    for key in sorted(current):
        if key.startswith(TAG_PREFIX) and key not in tags:
            mlflow_client.delete_registered_model_tag(name, key)
    for key, value in sorted(tags.items()):
        if current.get(key) != value:
            mlflow_client.set_registered_model_tag(name, key, value)
    if alias:
        mlflow_client.set_registered_model_alias(name, alias, version)


def run(
    flavor: str,
    requirements_file: Path | str,
    name: str,
    tags: Mapping[str, str],
    alias: str | None = DEFAULT_ALIAS,
    force_new_version: bool = False,
    experiment: str = EXPERIMENT,
    description: str | None = None,
) -> Outcome:
    """Train + log + register + tag unless the latest version already matches; then tag."""
    if flavor not in FLAVORS:
        raise ExampleError(f"got flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
    requirements = read_requirements(requirements_file)
    fp = fingerprint(flavor, requirements)
    mlflow_client = client()
    python = platform.python_version()
    version = None if force_new_version else reusable_version(mlflow_client, name, fp)
    if version is not None:
        apply_settings(mlflow_client, name, version, tags, alias)
        return Outcome(name, version, False, fp, python)
    split = iris_split()
    trained = fit(flavor, split)
    info, run_id = log_model(
        trained,
        split,
        requirements,
        experiment=experiment,
        run_name=name,
        run_tags={"examples.requirements_file": Path(requirements_file).name},
    )
    text = description or (
        f"mlray example: iris classifier ({flavor}, {Path(requirements_file).name}), "
        f"trained on Python {python}."
    )
    version = register(info.model_uri, name, fp, text)
    log_reference(mlflow_client, name, version, split, run_id)
    apply_settings(mlflow_client, name, version, tags, alias)
    return Outcome(name, version, True, fp, python, trained.accuracy, run_id)


def log_reference(mlflow_client: Any, name: str, version: str, split: Split, run_id: str) -> None:
    """Predict the held-out rows with the model loaded back from the registry, here, in its
    own environment (the cluster's image and its pinned requirements): the only place where
    every example's conflicting libraries can be loaded, so served predictions are checked
    against this artifact."""
    import mlflow
    import numpy as np

    predictions = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(split.x_test)
    payload = {
        "model_uri": f"models:/{name}/{version}",
        "columns": list(split.x_test.columns),
        "data": split.x_test.to_numpy().tolist(),
        "predictions": np.asarray(predictions).tolist(),
    }
    mlflow_client.log_dict(run_id, payload, REFERENCE_ARTIFACT)


# ---- CLI -----------------------------------------------------------------------------------


def parse_tag_args(pairs: Sequence[str], as_json: str | None) -> dict[str, str]:
    """--tags-json '{...}' first, then each --tag KEY=VALUE (a value may contain '=')."""
    tags: dict[str, str] = {}
    if as_json:
        try:
            loaded = json.loads(as_json)
        except json.JSONDecodeError as exc:
            raise ExampleError(
                f"got invalid JSON for --tags-json ({exc}); expected an object"
            ) from None
        if not isinstance(loaded, dict):
            raise ExampleError(f"got {type(loaded).__name__} for --tags-json; expected an object")
        tags.update({str(k): str(v) for k, v in loaded.items()})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ExampleError(f"got {pair!r} for --tag; expected KEY=VALUE")
        tags[key.strip()] = value
    return tags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flavor", required=True, choices=FLAVORS)
    parser.add_argument("--requirements", required=True, help="pinned requirements file")
    parser.add_argument("--name", required=True, help="registered model name, e.g. x.staging")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tags-json", help="ray.* tags as one JSON object")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to move ('' for none)")
    parser.add_argument("--experiment", default=EXPERIMENT)
    parser.add_argument(
        "--force-new-version", action="store_true", help="train even if a version matches"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        outcome = run(
            args.flavor,
            args.requirements,
            args.name,
            parse_tag_args(args.tag, args.tags_json),
            alias=args.alias or None,
            force_new_version=args.force_new_version,
            experiment=args.experiment,
        )
    except ExampleError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    verb = "registered new" if outcome.trained else "reused matching"
    accuracy = f", accuracy {outcome.accuracy:.3f}" if outcome.accuracy is not None else ""
    print(
        f"{args.name}: {verb} version {outcome.version} (Python {outcome.python_version}"
        f"{accuracy}) in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    print(RESULT_PREFIX + outcome.as_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
