"""Podman testbed for mlray: an MLflow server and one Ray cluster per Python version.

Import-light on purpose (the noxfile imports it to list sessions): heavy modules load lazily.
"""

from testbed.errors import TestbedError

__all__ = ["Testbed", "TestbedError"]


def __getattr__(name: str) -> object:
    if name == "Testbed":
        from testbed.core import Testbed

        return Testbed
    raise AttributeError(name)
