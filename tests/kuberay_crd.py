"""KubeRay's RayService CRD schema (vendored at a pinned release, tests/unit/schemas/README.md),
as `kubectl apply` enforces it; shared by the unit and e2e suites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from mlray import kuberay

SCHEMAS = Path(__file__).resolve().parent / "unit" / "schemas"
CRD_SCHEMA = SCHEMAS / f"rayservice-v1-kuberay-{kuberay.KUBERAY_VERSION}.json"


def strict(schema: Any) -> Any:
    """The schema as `kubectl apply` enforces it: unknown fields are errors, not pruned.

    (kubectl's default field validation is Strict since Kubernetes 1.27.)
    """
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_validator() -> jsonschema.Draft4Validator:
    schema = strict(json.loads(CRD_SCHEMA.read_text()))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def crd_errors(validator: jsonschema.Draft4Validator, manifest: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(manifest)]  # fmt: skip
