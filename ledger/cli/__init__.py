"""The ``migration-ledger`` command line: every command, one module per command group.

``ledger.cli.app`` is the composition root (it wires every group into one typer app);
``ledger.cli.options`` holds what the groups share (common flags, settings, error exits).
This package is the only one that imports the sibling packages (``streams``, ``producers``,
``reports``): everything below it is reachable from here, nothing below reaches up.
"""
