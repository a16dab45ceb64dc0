"""docs/preparing-models.md must not drift from the examples or from the tag parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlray.tags import TAG_SPECS
from testbed.training import load_catalog

DOC = (Path(__file__).resolve().parents[2] / "docs" / "preparing-models.md").read_text()
MODELS = load_catalog().models


def tag_rows() -> list[list[str]]:
    """Rows of the examples' tags table: | `tag` | expected | default | examples |."""
    start = DOC.index("<!-- checked against mlray.tags.TAG_SPECS")
    rows = []
    for line in DOC[start:].splitlines()[3:]:
        if not line.startswith("| `"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_example_is_documented(model) -> None:
    assert f"`{model.name}`" in DOC
    assert f"`{model.ray_name}`" in DOC


def test_tags_table_matches_the_parser() -> None:
    rows = tag_rows()
    assert rows
    for tag, expected, default, _examples in rows:
        spec = TAG_SPECS[tag.strip("`")]
        assert expected == spec.expected, tag
        want = "- (required)" if spec.required else (spec.default or "-")
        assert default == want, tag


def test_tags_table_lists_every_tag_the_examples_use() -> None:
    used = {key for model in MODELS for key in model.tags}
    assert used == {row[0].strip("`") for row in tag_rows()}
