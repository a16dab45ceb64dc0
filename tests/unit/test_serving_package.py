"""The serving-code zip: same bytes for the same code, and one layout for both of Ray's unpackers."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from ray._private.runtime_env.packaging import unzip_package

from mlray.serving_package import MANIFEST, build_serving_package


def test_the_zip_is_deterministic_and_named_by_its_hash():
    a, b = build_serving_package(), build_serving_package()
    assert a == b
    assert a.name == f"mlray-serving-{a.digest}.zip" and len(a.digest) == 40
    assert a.gcs_uri == f"gcs://_ray_pkg_{a.digest}.zip"


def test_the_http_uri_goes_through_mlflows_artifact_proxy():
    p = build_serving_package()
    assert p.http_uri("http://mlflow:5000/") == (
        f"http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/mlray/serving-code/{p.name}"
    )
    assert p.uri("gcs", "http://mlflow:5000") == p.gcs_uri
    assert p.uri("mlflow", "https://m.example") == p.http_uri("https://m.example")


@pytest.mark.parametrize("remote", [False, True], ids=["gcs", "http"])
def test_ray_unpacks_mlray_at_the_top_of_the_module_dir(tmp_path, remote):
    """Ray strips a lone top-level directory from http(s) zips and not from gcs ones.

    The manifest beside ``mlray/`` keeps the top level at two entries, so both unpack to
    ``<dir>/mlray/...`` and ``import mlray`` works from the dir Ray puts on sys.path.
    """
    zpath = tmp_path / "pkg.zip"
    zpath.write_bytes(build_serving_package().data)
    target = tmp_path / "unpacked"
    unzip_package(str(zpath), str(target), remove_top_level_directory=remote, unlink_zip=False)
    assert (target / "mlray" / "__init__.py").is_file()
    assert (target / "mlray" / "serving" / "app.py").is_file()
    assert (target / MANIFEST).is_file()


def test_the_manifest_names_every_file_it_ships():
    zf = zipfile.ZipFile(io.BytesIO(build_serving_package().data))
    manifest = json.loads(zf.read(MANIFEST))
    assert set(manifest["files"]) == set(zf.namelist()) - {MANIFEST}
    assert "mlray/serving/app.py" in manifest["files"]


def test_the_package_is_built_once_per_process_while_its_files_are_unchanged():
    from mlray.serving_package import build_serving_package

    assert build_serving_package() is build_serving_package()
