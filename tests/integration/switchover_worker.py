"""The worker with every stream processor the switchover needs, for the switchover tests.

``migration-ledger worker`` runs ``streams.app.AGENT_MODULES``; this adds any of the modules
below that are not (yet) in it, so the tests do not depend on the order in which they are
registered there. Configuration comes from ``MIGRATION_LEDGER_*`` as for the real worker.
"""

from __future__ import annotations

from ledger.settings import Settings
from streams.app import AGENT_MODULES, create_app
from streams.worker_cli import run_worker

NEEDED = (
    "streams.metrics",
    "streams.pairing",
    "streams.flag_writer",
    "streams.health",
    "streams.switchover",
)

if __name__ == "__main__":
    modules = tuple(AGENT_MODULES) + tuple(m for m in NEEDED if m not in AGENT_MODULES)
    ledger_app = create_app(Settings(), web_enabled=False, modules=modules)
    run_worker(ledger_app.app, loglevel="warning")
