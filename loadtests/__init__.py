"""Load tests: Locust against the testbed's deployed examples, with gates and a report.

`nox -s load` (or `python -m loadtests`) runs them; docs/performance.md explains the figures.
"""
