"""Adapters that plug the ledger into gateways other people wrote (``integrations.litellm``).

A top-level package, not ``ledger.integrations``: an adapter needs both the write side
(``ledger``) and the hot-path reads (``readmodels``), and ``ledger`` must not import
``readmodels`` (tests/test_layout.py). Nothing imports this package; each gateway's
adapter is an optional extra (``usage-ledger[litellm]``).
"""
