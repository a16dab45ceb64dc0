"""Ship the serving code with each deploy, so a cluster needs nothing but ``ray[serve]``.

The zip is built deterministically (sorted entries, fixed timestamps): the same code always
gets the same ``gcs://_ray_pkg_<sha1>.zip`` URI, so an unchanged redeploy sends a
byte-identical runtime_env and Ray restarts nothing.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mlray

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ServingPackage:
    uri: str
    data: bytes


def _files() -> list[tuple[str, Path]]:
    root = Path(mlray.__file__).resolve().parent
    files = [("mlray/__init__.py", root / "__init__.py")]
    for p in sorted((root / "serving").rglob("*.py")):
        files.append((f"mlray/{p.relative_to(root).as_posix()}", p))
    return files


def build_serving_package() -> ServingPackage:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, path in _files():
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    data = buf.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    return ServingPackage(uri=f"gcs://_ray_pkg_{digest}.zip", data=data)
