"""config.yml validation: typed, with errors that point into the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlray.config import load_config, parse_config
from mlray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "mlflow": {"tracking_uri": "http://127.0.0.1:5000"},
    "clusters": {"py311": {"dashboard_url": "http://127.0.0.1:8265/",
                           "serve_url": "http://127.0.0.1:8000", "python": "3.11"}},
}  # fmt: skip


def test_shipped_example_is_valid():
    cfg = load_config(ROOT / "config.example.yml")
    assert cfg.selection.alias == "staging"
    assert cfg.cluster("py311").python == "3.11"


def test_defaults_and_env_override(monkeypatch):
    cfg = parse_config(GOOD)
    assert cfg.selection.name_suffix == ".staging" and cfg.selection.alias is None
    assert cfg.cluster("py311").dashboard_url == "http://127.0.0.1:8265"
    assert cfg.cluster("py311").platform == "linux_x86_64"
    assert cfg.cluster_tracking_uri("py311") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    assert cfg.tracking_uri == "http://elsewhere:5000"


def test_errors_name_the_path_the_value_and_the_expectation():
    bad = {**GOOD, "clusters": {"py311": {**GOOD["clusters"]["py311"], "python": "3.11.7",
                                          "platform": "windows", "dashbord_url": "x"}}}  # fmt: skip
    with pytest.raises(ConfigError) as e:
        parse_config(bad, "config.yml")
    msg = str(e.value)
    assert "got '3.11.7' for clusters.py311.python" in msg
    assert "got 'windows' for clusters.py311.platform" in msg
    assert "got unknown key clusters.py311.dashbord_url" in msg


def test_missing_section_and_unknown_cluster():
    with pytest.raises(ConfigError, match="missing mlflow"):
        parse_config({"clusters": GOOD["clusters"]})
    with pytest.raises(
        ConfigError,
        match="got 'py312' for the cluster; expected one of the config's clusters: py311",
    ):
        parse_config(GOOD).cluster("py312")


def test_auth_token_env_must_be_set(monkeypatch):
    c = parse_config(
        {**GOOD, "clusters": {"a": {**GOOD["clusters"]["py311"], "auth_token_env": "RAY_TOK"}}}
    )
    monkeypatch.delenv("RAY_TOK", raising=False)
    with pytest.raises(ConfigError, match="RAY_TOK"):
        c.cluster("a").auth_token()
    monkeypatch.setenv("RAY_TOK", "s3cret")
    assert c.cluster("a").auth_token() == "s3cret"


def test_unreadable_and_non_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yml")
    p = tmp_path / "c.yml"
    p.write_text("mlflow: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
