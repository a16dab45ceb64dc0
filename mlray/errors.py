"""The one exception type users see.

Everything raised as :class:`MlrayError` is an expected failure with a message written for
the person at the terminal; the CLI prints it without a traceback and exits with
``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MlrayError(Exception):
    """An expected failure whose message tells the user what is wrong and where."""

    exit_code = 1


class UsageError(MlrayError):
    """Bad input from the user: config, tags, arguments. Nothing was changed."""

    exit_code = 2


class ConfigError(UsageError):
    """``config.yml`` (or its overrides) is invalid or disagrees with the live cluster."""


class TagError(UsageError):
    """One or more selected models carry invalid ``ray.*`` tags."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{len(problems)} tag problem(s); nothing was deployed "
            f"(fix the tags, or pass --skip-invalid to deploy the valid models):\n{lines}"
        )


class RegistryError(MlrayError):
    """The MLflow registry could not be read."""


class ClusterError(MlrayError):
    """The Ray cluster could not be reached or refused a request."""


class DeployFailed(MlrayError):
    """The cluster accepted the config but an application did not reach RUNNING."""
