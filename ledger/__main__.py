"""``python -m ledger``: the same CLI as ``migration-ledger``, for child processes."""

from ledger.cli.app import main

if __name__ == "__main__":
    main()
