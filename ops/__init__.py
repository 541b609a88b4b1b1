"""The operator shell: the ``ledger`` command, the demo, the embedded dev stack, migrations and
the catalog import.

Nothing imports this package. It sits on top of the others and asks them for what it needs:
``ledger`` (contracts, producer, pricing) <- ``projections`` and ``readmodels`` <- ``ops``.
``ops.migrate`` is the one place that runs raw DDL.
"""
