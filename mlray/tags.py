"""``ray.*`` registry tags -> typed Serve deployment options.

Tags are strings typed by hand in the MLflow UI, so every one is checked here and every
problem of every model is reported at once: a user fixing tags should need one round trip.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

GB = 1024**3
TAG_PREFIX = "ray."
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 100
DEFAULT_TARGET_ONGOING = 2
RAY_DEFAULT_MAX_ONGOING = 5
# mlray's default for max_ongoing_requests. Ray's 5 collapses behind Serve's classic proxy once
# every replica is full: requests back off in the proxy while the replica idles (measured with
# loadtests/replica_bench.py: 52 rps at c=8, 13 rps at c=32; docs/performance.md,
# ray-project/ray#52609). 64 held at c=32; it does not change what the autoscaler sees.
DEFAULT_MAX_ONGOING = 64
# mlray's default for health_check_period_s. Ray notices a dead replica only at its next health
# check (Ray's default period: 10 s), so a SIGKILLed replica's replacement was RUNNING 7-17 s
# later (nox -s chaos, replica_kill). mlray's check_health is an attribute test: checking every
# 2 s costs the controller little and notices the death within 2 s.
DEFAULT_HEALTH_CHECK_PERIOD_S = 2.0
# Ray takes any non-empty app name, and `/<name>` as its route must have no "{", "}" and no
# trailing "/". We accept what is also one clean URL path segment (RFC 3986's unreserved
# characters, any case): Ray-valid, and never a route with "/", spaces or escapes.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.~-]{0,127}$")


@dataclass(frozen=True)
class TagSpec:
    """How one tag is parsed: a converter returning the value or raising ValueError."""

    key: str
    parse: Callable[[str], Any]
    expected: str
    required: bool = False
    doc: str = ""
    default: str = ""


def _number(lo: float, strict: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        v = float(raw)
        if not math.isfinite(v) or (v <= lo if strict else v < lo):
            raise ValueError
        return v

    return parse


def _integer(lo: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            raise ValueError
        v = int(raw)
        if v < lo:
            raise ValueError
        return v

    return parse


def _name(raw: str) -> str:
    if not NAME_PATTERN.fullmatch(raw):
        raise ValueError
    return raw


def _env_vars(raw: str) -> dict[str, str]:
    v = json.loads(raw)
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise ValueError
    return v


def _spec(key: str, parse: Callable[[str], Any], expected: str, **kw: Any) -> TagSpec:
    return TagSpec(TAG_PREFIX + key, parse, expected, **kw)


_POS = "a number > 0"
_NONNEG = "a number >= 0"
AUTOSCALING_KEYS = (
    "min_replicas",
    "max_replicas",
    "initial_replicas",
    "target_ongoing_requests",
    "upscale_delay_s",
    "downscale_delay_s",
    "metrics_interval_s",
    "look_back_period_s",
    "upscaling_factor",
    "downscaling_factor",
)
TAG_SPECS: dict[str, TagSpec] = {
    s.key: s
    for s in [
        _spec(
            "name",
            _name,
            "letters (any case), digits, '-', '_', '.' or '~', starting with a letter or digit "
            "(at most 128): no '/', spaces or braces, since /<name> is the route",
            required=True,
            doc="Serve application name and route: /<name>",
        ),
        _spec(
            "ray_actor_options.num_cpus",
            _number(0, True),
            _POS,
            required=True,
            doc="CPUs reserved per replica",
        ),
        _spec(
            "ray_actor_options.memory",
            _number(0, True),
            _POS,
            required=True,
            doc="memory reserved per replica, in GB (sent to Ray in bytes)",
        ),
        _spec(
            "ray_actor_options.num_gpus",
            _number(0, False),
            _NONNEG,
            doc="GPUs reserved per replica",
            default="0",
        ),
        _spec(
            "ray_actor_options.runtime_env.env_vars",
            _env_vars,
            'a JSON object of strings, e.g. {"OMP_NUM_THREADS": "1"}',
            doc="env vars of the replica's process",
        ),
        _spec(
            "num_replicas",
            _integer(1),
            "a whole number >= 1",
            doc="fixed replica count; excludes ray.autoscaling_config.*",
        ),
        _spec(
            "max_ongoing_requests",
            _integer(1),
            "a whole number >= 1",
            doc="requests a replica takes at once",
            default=f"{DEFAULT_MAX_ONGOING}, or 2 x max_batch_size if larger",
        ),
        _spec(
            "health_check_period_s",
            _number(0, True),
            _POS,
            doc="seconds between Ray's health checks of a replica: a dead replica is noticed "
            "within this long, then replaced (applied live, no restart)",
            default=f"{DEFAULT_HEALTH_CHECK_PERIOD_S:g}",
        ),
        _spec(
            "autoscaling_config.min_replicas",
            _integer(0),
            "a whole number >= 0",
            default=str(DEFAULT_MIN_REPLICAS),
            doc="autoscaling lower bound",
        ),
        _spec(
            "autoscaling_config.max_replicas",
            _integer(1),
            "a whole number >= 1",
            default=str(DEFAULT_MAX_REPLICAS),
            doc="autoscaling upper bound",
        ),
        _spec(
            "autoscaling_config.initial_replicas",
            _integer(0),
            "a whole number >= 0",
            doc="replicas at start",
            default="min_replicas",
        ),
        _spec(
            "autoscaling_config.target_ongoing_requests",
            _number(0, True),
            _POS,
            default=f"{DEFAULT_TARGET_ONGOING}, or max_batch_size when batching",
            doc="ongoing requests per replica the autoscaler aims at",
        ),
        _spec(
            "autoscaling_config.upscale_delay_s",
            _number(0, False),
            _NONNEG,
            doc="seconds of sustained load before scaling up",
            default="30 (Ray)",
        ),
        _spec(
            "autoscaling_config.downscale_delay_s",
            _number(0, False),
            _NONNEG,
            doc="seconds of low load before scaling down",
            default="600 (Ray)",
        ),
        _spec(
            "autoscaling_config.metrics_interval_s",
            _number(0, True),
            _POS,
            doc="how often replicas report load",
            default="10 (Ray)",
        ),
        _spec(
            "autoscaling_config.look_back_period_s",
            _number(0, True),
            _POS,
            doc="window the load is averaged over",
            default="30 (Ray)",
        ),
        _spec(
            "autoscaling_config.upscaling_factor",
            _number(0, True),
            _POS,
            doc="multiplier on each upscaling decision",
            default="1 (Ray)",
        ),
        _spec(
            "autoscaling_config.downscaling_factor",
            _number(0, True),
            _POS,
            doc="multiplier on each downscaling decision",
            default="1 (Ray)",
        ),
        _spec(
            "user_config.max_batch_size",
            _integer(1),
            "a whole number >= 1",
            doc="turns batching on: concurrent requests merged into one predict call",
        ),
        _spec(
            "user_config.batch_wait_timeout_s",
            _number(0, False),
            _NONNEG,
            doc="longest wait for a batch to fill",
            default="0.01",
        ),
    ]
}
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01


@dataclass(frozen=True)
class ServeOptions:
    """One model's deployment options, validated. Field names follow Ray's schema."""

    name: str
    num_cpus: float
    memory_bytes: int
    num_gpus: float | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)
    num_replicas: int | None = None
    autoscaling: Mapping[str, float | int] | None = None
    max_ongoing_requests: int | None = None
    health_check_period_s: float = DEFAULT_HEALTH_CHECK_PERIOD_S
    max_batch_size: int | None = None
    batch_wait_timeout_s: float | None = None

    @property
    def user_config(self) -> dict[str, Any]:
        if self.max_batch_size is None:
            return {"max_batch_size": None}
        timeout = self.batch_wait_timeout_s
        return {
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": DEFAULT_BATCH_WAIT_TIMEOUT_S if timeout is None else timeout,
        }


class Problem(str):
    """A problem's sentence, also carrying its parts for ``--output json``.

    A ``str`` so every message, join and test of problems stays as it was.
    """

    tag: str | None
    got: str | None
    expected: str | None
    model: str | None
    version: str | None

    def __new__(
        cls,
        text: str,
        *,
        tag: str | None = None,
        got: str | None = None,
        expected: str | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> Problem:
        self = super().__new__(cls, text)
        self.tag, self.got, self.expected = tag, got, expected
        self.model, self.version = model, version
        return self

    def of(self, model: str, version: str, label: str) -> Problem:
        """The same problem, said of one model version."""
        return Problem(
            f"{label}: {self}", tag=self.tag, got=self.got, expected=self.expected,
            model=model, version=version,
        )  # fmt: skip


def _fmt(v: float | int) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def parse_tags(tags: Mapping[str, str]) -> tuple[ServeOptions | None, list[Problem]]:
    """Parse a model's tags. Returns the options (None if any problem) and all problems.

    Non-``ray.*`` tags are ignored: the registry holds other teams' tags too.
    """
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for key in sorted(tags):
        if not key.startswith(TAG_PREFIX):
            continue
        raw = tags[key]
        spec = TAG_SPECS.get(key)
        if spec is None:
            hint = _closest(key)
            problems.append(
                Problem(
                    f"got unknown tag {key}"
                    + (f"; did you mean {hint}?" if hint else "; see docs/tags.md for the list"),
                    tag=key,
                    got=key,
                    expected=hint or "a tag listed in docs/tags.md",
                )
            )
            continue
        try:
            values[key] = spec.parse(raw)
        except (ValueError, json.JSONDecodeError):
            problems.append(
                Problem(
                    f"got {raw!r} for {key}; expected {spec.expected}",
                    tag=key,
                    got=raw,
                    expected=spec.expected,
                )
            )
    for spec in TAG_SPECS.values():
        if spec.required and spec.key not in tags:
            problems.append(
                Problem(
                    f"missing required tag {spec.key} ({spec.expected})",
                    tag=spec.key,
                    expected=spec.expected,
                )
            )

    def get(k: str) -> Any:
        return values.get(TAG_PREFIX + k)

    auto = {k: get(f"autoscaling_config.{k}") for k in AUTOSCALING_KEYS}
    auto = {k: v for k, v in auto.items() if v is not None}
    if get("num_replicas") is not None and auto:
        other = f"ray.autoscaling_config.{sorted(auto)[0]}"
        problems.append(
            Problem(
                f"got both ray.num_replicas and {other}; "
                "expected one of them: a fixed count or autoscaling",
                tag="ray.num_replicas",
                got=f"ray.num_replicas and {other}",
                expected="one of them: a fixed count or autoscaling",
            )
        )
    lo = auto.get("min_replicas", DEFAULT_MIN_REPLICAS)
    hi = auto.get("max_replicas", DEFAULT_MAX_REPLICAS)
    if lo > hi:
        problems.append(
            Problem(
                f"got min_replicas {lo} > max_replicas {hi} for ray.autoscaling_config; "
                "expected min_replicas <= max_replicas",
                tag="ray.autoscaling_config.min_replicas",
                got=f"min_replicas {lo} > max_replicas {hi}",
                expected="min_replicas <= max_replicas",
            )
        )
    init = auto.get("initial_replicas")
    if init is not None and not lo <= init <= hi:
        problems.append(
            Problem(
                f"got {init} for ray.autoscaling_config.initial_replicas; "
                f"expected a count within [{lo}, {hi}]",
                tag="ray.autoscaling_config.initial_replicas",
                got=str(init),
                expected=f"a count within [{lo}, {hi}]",
            )
        )
    batch = get("user_config.max_batch_size")
    if batch is None and get("user_config.batch_wait_timeout_s") is not None:
        problems.append(
            Problem(
                "got ray.user_config.batch_wait_timeout_s without ray.user_config.max_batch_size; "
                "expected both (max_batch_size turns batching on)",
                tag="ray.user_config.batch_wait_timeout_s",
                got="ray.user_config.batch_wait_timeout_s without ray.user_config.max_batch_size",
                expected="both (max_batch_size turns batching on)",
            )
        )
    max_ongoing = get("max_ongoing_requests")
    if batch is not None and max_ongoing is not None and max_ongoing < batch:
        problems.append(
            Problem(
                f"got {max_ongoing} for ray.max_ongoing_requests below max_batch_size {batch}; "
                "expected at least the batch size, or batches can never fill",
                tag="ray.max_ongoing_requests",
                got=str(max_ongoing),
                expected=f"at least the batch size ({batch}), or batches can never fill",
            )
        )
    if problems:
        return None, problems

    if get("num_replicas") is None:
        auto.setdefault("min_replicas", DEFAULT_MIN_REPLICAS)
        auto.setdefault("max_replicas", DEFAULT_MAX_REPLICAS)
        auto.setdefault("target_ongoing_requests", batch or DEFAULT_TARGET_ONGOING)
    if max_ongoing is None:
        # Never Ray's 5: it collapses under concurrency behind the classic proxy, and with
        # batching it would silently cap every batch at 5 requests.
        max_ongoing = max(DEFAULT_MAX_ONGOING, 2 * batch) if batch else DEFAULT_MAX_ONGOING
    return (
        ServeOptions(
            name=get("name"),
            num_cpus=get("ray_actor_options.num_cpus"),
            memory_bytes=round(get("ray_actor_options.memory") * GB),
            num_gpus=get("ray_actor_options.num_gpus"),
            env_vars=get("ray_actor_options.runtime_env.env_vars") or {},
            num_replicas=get("num_replicas"),
            autoscaling=dict(sorted(auto.items())) if get("num_replicas") is None else None,
            max_ongoing_requests=max_ongoing,
            health_check_period_s=get("health_check_period_s") or DEFAULT_HEALTH_CHECK_PERIOD_S,
            max_batch_size=batch,
            batch_wait_timeout_s=get("user_config.batch_wait_timeout_s"),
        ),
        [],
    )


def _closest(key: str) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, TAG_SPECS, n=1, cutoff=0.75)
    return match[0] if match else None


def tags_reference_markdown() -> str:
    """The tags table of docs/tags.md, generated so docs cannot drift from the parser."""
    rows = ["| tag | expected | required | default | meaning |", "|---|---|---|---|---|"]
    for s in TAG_SPECS.values():
        rows.append(
            f"| `{s.key}` | {s.expected} | {'yes' if s.required else 'no'} | "
            f"{s.default or '-'} | {s.doc} |"
        )
    return "\n".join(rows)
