"""``python -m ops`` is the ``ledger`` command."""

from ops.cli import main

main()
