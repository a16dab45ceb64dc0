"""Reference docs generated from code must not drift from it."""

from pathlib import Path

from mlray.tags import tags_reference_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_tags_reference_matches_the_parser():
    assert tags_reference_markdown() in (DOCS / "tags.md").read_text()
