"""The one error the load-test CLI reports without a traceback."""


class LoadTestError(Exception):
    """A load run could not be set up or carried out (not a failed gate: that is a result)."""
