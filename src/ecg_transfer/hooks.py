"""Project hooks: wall time per node, logged, so a long study says where its time went
(benchmarks/study_runtime.py reads these lines)."""

from __future__ import annotations

import logging
import time

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    """Logs ``node <name> took <seconds> s`` after every node and a slowest-first summary."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._took: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._started.clear()
        self._took.clear()

    @hook_impl
    def before_node_run(self, node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        took = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        self._took[node.name] = took
        logger.info("node %s took %.1f s", node.name, took)

    @hook_impl
    def after_pipeline_run(self) -> None:
        if self._took:
            slowest = sorted(self._took.items(), key=lambda item: -item[1])[:5]
            logger.info(
                "nodes: %.1f s in all; slowest: %s",
                sum(self._took.values()),
                ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest),
            )
