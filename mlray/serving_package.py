"""Ship the serving code with each deploy, so a cluster needs nothing but ``ray[serve]``.

The zip is built deterministically (sorted entries, fixed timestamps) and named by its
hash, so the same code always has the same URI, an unchanged redeploy sends a
byte-identical runtime_env, and Ray restarts nothing.

Where it lives decides what survives. By default it goes to MLflow's artifact store and
Ray fetches it over HTTP (``runtime_env.py_modules`` accepts ``http(s)://…zip``): any
node, a restarted head and a brand-new KubeRay cluster can all fetch it. ``gcs`` keeps it
in the head's GCS, as Ray's job submission does, for tracking servers that do not serve
artifacts; it is lost with a head restarted without GCS fault tolerance until the next
deploy uploads it again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import requests

import mlray
from mlray.errors import ConfigError, RegistryError

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# The artifact path (under the server's --artifacts-destination) the zips are kept in.
ARTIFACT_DIR = "mlray/serving-code"
# A file beside the mlray/ directory. It documents the zip, and it makes the top level two
# entries, so Ray unpacks the same bytes the same way from gcs:// (kept as is) and from
# http(s):// (where a single top-level directory would be stripped).
MANIFEST = "mlray-serving.json"

Store = Literal["mlflow", "gcs"]


@dataclass(frozen=True)
class ServingPackage:
    digest: str  # sha1 of `data`: the zip's identity in every store
    data: bytes

    @property
    def name(self) -> str:
        return f"mlray-serving-{self.digest}.zip"

    @property
    def gcs_uri(self) -> str:
        """The URI in the cluster's GCS (``PUT /api/packages/gcs/<name>`` uploads it)."""
        return f"gcs://_ray_pkg_{self.digest}.zip"

    def http_uri(self, tracking_uri: str) -> str:
        """Where Ray nodes fetch the zip through MLflow's artifact proxy.

        ``tracking_uri`` is MLflow as the cluster reaches it, which may differ from the
        CLI host's address (a container name, a Kubernetes service).
        """
        return artifact_url(tracking_uri, f"{ARTIFACT_DIR}/{self.name}")

    def uri(self, store: Store, tracking_uri: str) -> str:
        return self.gcs_uri if store == "gcs" else self.http_uri(tracking_uri)


def artifact_url(tracking_uri: str, path: str) -> str:
    return f"{tracking_uri.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/{path}"


def _files() -> list[tuple[str, Path]]:
    root = Path(mlray.__file__).resolve().parent
    files = [("mlray/__init__.py", root / "__init__.py")]
    for p in sorted((root / "serving").rglob("*.py")):
        files.append((f"mlray/{p.relative_to(root).as_posix()}", p))
    return files


def _entry(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def build_serving_package() -> ServingPackage:
    """The zip of this installation's serving code, built once per process while its files
    are unchanged (deploy, check and the plugin each ask for it more than once)."""
    files = _files()
    stamp = tuple((arcname, p.stat().st_mtime_ns, p.stat().st_size) for arcname, p in files)
    return _build(stamp, tuple(files))


@functools.lru_cache(maxsize=2)
def _build(stamp: tuple, files: tuple[tuple[str, Path], ...]) -> ServingPackage:
    sources = [(arcname, path.read_bytes()) for arcname, path in files]
    manifest = {
        "mlray": mlray.__version__,
        "files": {a: hashlib.sha256(d).hexdigest() for a, d in sources},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        _entry(zf, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        for arcname, data in sources:
            _entry(zf, arcname, data)
    data = buf.getvalue()
    return ServingPackage(digest=hashlib.sha1(data).hexdigest(), data=data)


def _mlflow_call(tracking_uri: str, method: str, path: str, **kw) -> requests.Response:
    """One call to MLflow's artifact proxy, with MLflow's own auth and TLS settings."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    endpoint = artifact_url("", path)
    try:
        return http_request(creds, endpoint, method, max_retries=2, timeout=60, **kw)
    except Exception as e:  # MLflow wraps connection errors in its own exception types
        raise RegistryError(
            f"cannot reach MLflow at {tracking_uri} to store the serving code: {e}"
        ) from None


def publish_serving_package(package: ServingPackage, tracking_uri: str) -> bool:
    """Upload the zip to MLflow's artifact store unless it is there; True if uploaded.

    Content-addressed, so "there" means "the same bytes": no overwrite, no race.
    """
    path = f"{ARTIFACT_DIR}/{package.name}"
    resp = _mlflow_call(tracking_uri, "GET", path, stream=True)
    resp.close()
    if resp.status_code == 200:
        return False
    put = _mlflow_call(tracking_uri, "PUT", path, data=package.data)
    if put.status_code >= 400:
        raise ConfigError(
            f"got {put.status_code} from MLflow at {tracking_uri} storing the serving code at "
            f"{artifact_url(tracking_uri, path)}: {put.text[:300]}; expected a tracking "
            "server that serves artifacts (`mlflow server --serve-artifacts`, the default "
            "since MLflow 2.0). Or set `serving_code: gcs` on the cluster to keep it in "
            "the Ray head's GCS. Nothing was changed."
        )
    return True
