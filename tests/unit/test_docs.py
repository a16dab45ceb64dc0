"""Reference docs generated from code must not drift from it."""

import re
from pathlib import Path

from pydantic import BaseModel

from mlray.config import KubernetesSettings
from mlray.tags import tags_reference_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_tags_reference_matches_the_parser():
    assert tags_reference_markdown() in (DOCS / "tags.md").read_text()


def test_every_kubernetes_setting_is_documented_and_nothing_else():
    section = (DOCS / "config.md").read_text().split("### `clusters.<name>.kubernetes`")[1]
    table = section.split("\n\n")[2]  # after the heading and the paragraph before the table
    documented = {
        key
        for row in table.splitlines()[2:]
        for key in re.findall(r"`([a-z_.]+)`", row.split(" | ")[0])
    }
    fields = set()
    for name, field in KubernetesSettings.model_fields.items():
        sub = field.annotation
        nested = isinstance(sub, type) and issubclass(sub, BaseModel)
        fields |= {f"{name}.{s}" for s in sub.model_fields} if nested else {name}
    assert documented == fields
