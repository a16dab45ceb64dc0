"""Chaos scenarios (`nox -s chaos`): faults injected into the testbed under steady Locust load.

A subpackage of loadtests because it is a load run with a fault in the middle: it reuses the
Locust runner, the replica sampler and the report helpers, and the `load` extra.
"""
