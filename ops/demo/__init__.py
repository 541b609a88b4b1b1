"""``ledger demo``: the whole ledger working from one command."""

from ops.demo.report import Reconciliation, print_report, reconcile
from ops.demo.runner import DemoResult, DemoRunner
from ops.demo.traffic import TrafficGenerator, popular_chat_models

__all__ = [
    "DemoResult",
    "DemoRunner",
    "Reconciliation",
    "TrafficGenerator",
    "popular_chat_models",
    "print_report",
    "reconcile",
]
