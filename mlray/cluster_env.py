"""Ray settings every node of a cluster that serves mlray apps should start with.

The testbed sets them on its nodes and `mlray export --format rayservice` on every Ray
container it writes; on clusters of your own, export them before `ray start` on each node.
"""

from __future__ import annotations

RAY_NODE_ENV: dict[str, str] = {
    # Ray returns a task's result inside the RPC reply up to this size, and through the
    # object store above it (default 100 KiB). Serve 2.60's replica metadata, which the
    # controller asks for whenever it starts or recovers a replica, is 111 KB: its default
    # request router is pickled by value. After a head crash with GCS fault tolerance, the
    # new head cannot pull from a worker's object store until the nodes know each other
    # again, so each recovery waited 10-30 s and Serve replaced every live replica at its
    # 30 s limit. With 1 MiB the metadata rides in the reply: recovery took 1 s
    # (docs/reliability.md, head_restart_ft).
    "RAY_max_direct_call_object_size": str(1024 * 1024),
}
