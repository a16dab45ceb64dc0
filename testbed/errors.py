"""The one exception type the testbed raises for problems a user can act on."""


class TestbedError(RuntimeError):
    """A testbed problem with an actionable message ("got X for Y; expected Z")."""

    __test__ = False  # not a pytest test class despite the name
