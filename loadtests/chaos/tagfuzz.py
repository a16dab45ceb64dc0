"""`ray.*` tag sets generated with Hypothesis, run through mlray's check.

A tag is a string typed by hand in the MLflow UI, so anything may come: known keys with
numbers out of range, NaN, huge integers, JSON of the wrong shape, empty strings, unicode;
unknown keys and typos of known ones; conflicting scaling tags. `mlray check` must answer
each set with exit 0 (valid) or 2 (a message saying what is wrong), never with a traceback.

`run` calls a checker once per set and sorts the outcomes: success, an `MlrayError` (the
user-facing type; its exit code and message), or anything else (a bug: its traceback kept).
"""

from __future__ import annotations

import json
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hypothesis import strategies as st

from loadtests.chaos.fuzz import draw, json_values
from mlray.errors import MlrayError
from mlray.tags import TAG_PREFIX, TAG_SPECS

KNOWN = sorted(TAG_SPECS)
FUZZ_APP = "iris-chaos-fz"
# A valid set: where most generated sets start from, so that most reach the plan.
BASE = {
    "ray.name": FUZZ_APP,
    "ray.ray_actor_options.num_cpus": "0.25",
    "ray.ray_actor_options.memory": "0.25",
}
PLAUSIBLE = ["0", "1", "2", "3", "0.25", "0.5", "1.5", "16", "64", "0.02", "10", "100"]
ODD = [
    "", " ", "-1", "-0", "1e309", "-1e309", "nan", "NaN", "inf", "-inf", "1_000", "0x10",
    "1e-320", "true", "false", "null", "none", "[]", "{}", "[1, 2]", '{"A": "b"}', '{"A": 1}',
    '{"": ""}', '{"A": null}', "9" * 40, "0." + "0" * 30 + "1", " 2 ", "+3", "2.0", "1/2",
    "iris-xgb17", "iris-chaos", "a/b", "a b", "-lead", "é", "x" * 200, "{", "\x00", "\u202e",
]  # fmt: skip

values = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.sampled_from(PLAUSIBLE),
    st.sampled_from(PLAUSIBLE),
    st.sampled_from(ODD),
    st.integers(-(10**6), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=40),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
)


def _typo(key: str, at: int) -> str:
    """`key` with one character dropped (never the `ray.` prefix)."""
    i = len(TAG_PREFIX) + at % max(len(key) - len(TAG_PREFIX), 1)
    return key[:i] + key[i + 1 :]


keys = st.one_of(
    *[st.sampled_from(KNOWN)] * 8,
    st.builds(_typo, st.sampled_from(KNOWN), st.integers(0, 60)),
    st.text(max_size=24).map(lambda t: TAG_PREFIX + t),
    st.sampled_from(KNOWN).map(lambda k: TAG_PREFIX + k[len(TAG_PREFIX) :].upper()),
    st.sampled_from(KNOWN).map(lambda k: k + "."),
)


def _tag_set(base: bool, drop: list[str], extra: dict[str, str]) -> dict[str, str]:
    tags = dict(BASE) if base else {}
    for key in drop:
        tags.pop(key, None)
    return {**tags, **extra}


tag_sets = st.builds(
    _tag_set,
    st.sampled_from([True, True, True, False]),  # mostly from the valid base
    st.lists(st.sampled_from(sorted(BASE)), max_size=1),
    st.one_of(  # known tags with plausible values (mostly valid), or anything
        st.dictionaries(st.sampled_from(KNOWN), st.sampled_from(PLAUSIBLE), max_size=3),
        st.dictionaries(keys, values, max_size=4),
    ),
)


def generate(count: int) -> list[dict[str, str]]:
    """`count` tag sets drawn by Hypothesis."""
    return draw(tag_sets, count)


@dataclass
class TagFuzzResult:
    exits: Counter[int] = field(default_factory=Counter)  # 0, or the MlrayError's exit code
    silent: list[str] = field(default_factory=list)  # an MlrayError with no message: its tags
    bugs: list[str] = field(default_factory=list)  # anything else: tags and traceback
    first_message: dict[int, str] = field(default_factory=dict)  # an example per exit code

    @property
    def total(self) -> int:
        return sum(self.exits.values()) + len(self.bugs)


def run(
    check: Callable[[Mapping[str, str]], None], tag_sets: list[dict[str, str]]
) -> TagFuzzResult:
    """Call `check` on each set; sort what happened."""
    result = TagFuzzResult()
    for tags in tag_sets:
        try:
            check(tags)
        except MlrayError as e:
            result.exits[e.exit_code] += 1
            message = str(e).strip()
            result.first_message.setdefault(e.exit_code, message[:300])
            if not message:
                result.silent.append(json.dumps(tags))
        except Exception:  # a bug: what the CLI would show as a traceback
            result.bugs.append(f"{json.dumps(tags)}\n{traceback.format_exc(limit=8)}")
        else:
            result.exits[0] += 1
    return result
