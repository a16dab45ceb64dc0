"""`nox -s demo`: the whole flow on one host, left running for you to poke at.

testbed up -> train and register the examples in their clusters' images -> `mlray deploy`
each cluster -> one sample request per app in each input form, with its response.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import requests
import yaml

from testbed.core import Testbed
from testbed.errors import TestbedError
from testbed.training import load_catalog, train_examples

SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _stage(name: str, timings: dict[str, float], fn, *args, **kwargs):
    print(f"\n==> {name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = fn(*args, **kwargs)
    timings[name] = time.monotonic() - started
    return result


def _deploy(config: str, cluster: str) -> None:
    cmd = [sys.executable, "-m", "mlray", "deploy", config, cluster]
    print(f"$ mlray deploy {config} {cluster}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise TestbedError(f"`mlray deploy {config} {cluster}` failed; see its output above")


def _samples(cfg: dict) -> None:
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": COLUMNS, "data": SAMPLE}},
        "dataframe_records": {
            "dataframe_records": [dict(zip(COLUMNS, r, strict=True)) for r in SAMPLE]
        },
        # Named rows: the examples' signatures have named columns, so bare lists are refused.
        "instances": {"instances": [dict(zip(COLUMNS, r, strict=True)) for r in SAMPLE]},
    }
    by_python = {c["python"]: (name, c) for name, c in cfg["clusters"].items()}
    for model in load_catalog().models:
        if model.python not in by_python:
            continue
        cluster, c = by_python[model.python]
        url = f"{c['serve_url']}/{model.ray_name}/invocations"
        for body in bodies.values():
            data = json.dumps(body)
            print(f"\n$ curl -s {url} -H 'Content-Type: application/json' -d {shlex.quote(data)}")
            resp = requests.post(url, data=data, headers={"Content-Type": "application/json"},
                                 timeout=60)  # fmt: skip
            print(f"{resp.status_code} {resp.text.strip()[:300]}")
        csv = ",".join(COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in SAMPLE) + "\n"
        print(f"\n$ curl -s {url} -H 'Content-Type: text/csv' --data-binary {shlex.quote(csv)}")
        resp = requests.post(url, data=csv, headers={"Content-Type": "text/csv"}, timeout=60)
        print(f"{resp.status_code} {resp.text.strip()[:300]}")
        meta = requests.get(url.replace("/invocations", "/metadata"), timeout=30).json()
        libs = meta.get("flavor_libraries", {})
        print(f"# {model.ray_name} on {cluster}: Python {meta.get('python_version')}, "
              + ", ".join(f"{k} {v.get('version')}" for k, v in libs.items()))  # fmt: skip


def main() -> int:
    timings: dict[str, float] = {}
    try:
        tb = Testbed.from_file()
        _stage("testbed up", timings, tb.up, reuse=True)
        _stage("train and register examples", timings, train_examples, tb)
        cfg = yaml.safe_load(tb.config_path.read_text())
        for cluster in cfg["clusters"]:
            _stage(f"deploy {cluster}", timings, _deploy, str(tb.config_path), cluster)
        _stage("sample requests", timings, _samples, cfg)
        print("\n" + tb.endpoints())
    except TestbedError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("\nstage timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    print(f"The testbed keeps running. mlray config: {tb.config_path}; "
          "try `mlray status` with it, and `nox -s down` when done.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
