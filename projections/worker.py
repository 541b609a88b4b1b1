"""ProjectorWorker: the ``ledger project`` process — one runner per projection, signals, metrics.

SIGTERM or SIGINT sets the stop event: each runner finishes and commits the batch in hand,
leaves its consumer group and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from ledger.settings import Settings
from projections import gc_tuning
from projections.alerts import AlertRelay
from projections.metrics import ProjectorMetrics
from projections.registry import PROJECTION_NAMES, make_projection
from projections.runner import ProjectionRunner

log = logging.getLogger("ledger.projector")


class ProjectorWorker:
    def __init__(
        self, settings: Settings, *, dsn: str, bootstrap_servers: str,
        projections: tuple[str, ...] = PROJECTION_NAMES, metrics_port: int | None = None,
    ) -> None:
        self.metrics = ProjectorMetrics()
        self.runners = [
            ProjectionRunner(make_projection(name), settings, dsn=dsn,
                             bootstrap_servers=bootstrap_servers, metrics=self.metrics)
            for name in projections
        ]
        # Where usage is projected, budget alerts are published (projections/alerts.py).
        self.relays = [AlertRelay(settings, dsn=dsn, bootstrap_servers=bootstrap_servers)
                       ] if "usage" in projections else []
        self.stop = asyncio.Event()
        self._metrics_port = metrics_port

    async def run(self) -> None:
        gc_tuning.tune_for_batches()  # this is the ``ledger project`` process
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        if self._metrics_port is not None:
            start_http_server(self._metrics_port, registry=self.metrics.registry)
            log.info("metrics on :%d/metrics", self._metrics_port)
        tasks = [asyncio.create_task(r.run(self.stop), name=r.projection.name)
                 for r in self.runners]
        tasks += [asyncio.create_task(r.run(self.stop), name="alerts") for r in self.relays]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                failure = task.exception()
                if failure is not None:
                    self.stop.set()  # one runner failed: stop the others cleanly, then raise
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise failure
        finally:
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
