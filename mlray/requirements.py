"""Flatten a model's pip requirements into one list for ``runtime_env.pip``.

Ray writes the list into a requirements file of its own, so ``-r``/``-c`` lines naming
files in the model's artifacts would dangle there: they are inlined here. Pins are kept
exactly as MLflow logged them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ReadFile = Callable[[str], str]


class RequirementsError(ValueError):
    """A requirements file cannot be flattened (missing include, cycle, bad line)."""


@dataclass(frozen=True)
class Flattened:
    requirements: list[str]
    constraints: list[str]
    options: list[str]


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comments and blank lines, as pip does."""
    out: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line = (buf + line).strip()
        buf = ""
        if line.startswith("#"):
            continue
        if " #" in line:
            line = line.split(" #", 1)[0].rstrip()
        if line:
            out.append(" ".join(line.split()))
    if buf.strip():
        out.append(buf.strip())
    return out


def _include(line: str, flags: tuple[str, ...]) -> str | None:
    for flag in flags:
        if line.startswith(flag + " ") or line.startswith(flag + "="):
            return line[len(flag) + 1 :].strip()
        if flag.startswith("-") and not flag.startswith("--") and line.startswith(flag):
            return line[len(flag) :].strip()
    return None


def flatten(read: ReadFile, path: str = "requirements.txt") -> Flattened:
    reqs: list[str] = []
    cons: list[str] = []
    opts: list[str] = []

    def walk(p: str, into: list[str], stack: tuple[str, ...]) -> None:
        if p in stack:
            raise RequirementsError(f"got an include cycle {' -> '.join([*stack, p])}")
        try:
            text = read(p)
        except FileNotFoundError:
            where = f" (included from {stack[-1]})" if stack else ""
            raise RequirementsError(
                f"got no file {p}{where}; expected it in the model's artifacts"
            ) from None
        base = posixpath.dirname(p)
        for line in _logical_lines(text):
            if (inc := _include(line, ("-r", "--requirement"))) is not None:
                walk(posixpath.normpath(posixpath.join(base, inc)), into, (*stack, p))
            elif (inc := _include(line, ("-c", "--constraint"))) is not None:
                walk(posixpath.normpath(posixpath.join(base, inc)), cons, (*stack, p))
            elif line.startswith("-"):
                opts.append(line)
            else:
                into.append(line)

    walk(posixpath.normpath(path), reqs, ())
    return Flattened(_dedupe(reqs), _dedupe(cons), _dedupe(opts))


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _name(line: str) -> str | None:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None  # a URL or path requirement: kept verbatim, never merged


def to_pip_list(flat: Flattened) -> list[str]:
    """One list pip installs with the same result as the original files.

    A constraint on a package the model requires is appended to its specifier
    (``xgboost>=1.7`` + ``xgboost==1.7.6`` -> ``xgboost>=1.7,==1.7.6``). A constraint on any
    other package becomes a requirement: that may install a package the model did not
    strictly need, but it keeps the pin, which matters more for reproducible serving.
    """
    constraints: dict[str, list[str]] = {}
    loose: list[str] = []
    for c in flat.constraints:
        name = _name(c)
        if name is None:
            loose.append(c)
        else:
            constraints.setdefault(name, []).append(c)
    out: list[str] = list(flat.options)
    for r in flat.requirements:
        name = _name(r)
        if name is not None and name in constraints:
            out.append(_merge(r, constraints.pop(name)))
        else:
            out.append(r)
    for cs in constraints.values():
        out.extend(cs)
    out.extend(loose)
    return _dedupe(out)


def _merge(req: str, constraints: list[str]) -> str:
    r = Requirement(req)
    specs = [str(r.specifier)] if str(r.specifier) else []
    for c in constraints:
        cr = Requirement(c)
        if str(cr.specifier):
            specs.append(str(cr.specifier))
    extras = f"[{','.join(sorted(r.extras))}]" if r.extras else ""
    marker = f"; {r.marker}" if r.marker else ""
    return f"{r.name}{extras}{','.join(specs)}{marker}"
