"""Every error of the four packages is a ``ledger.LedgerError``, defined in its package's one
exceptions module, and says whether it is retriable.

The classes are found by importing every module of ``ledger``, ``projections``, ``readmodels``
and ``ops`` and collecting the exception classes each defines, so a class added anywhere
later is checked too.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

from ledger.exceptions import LedgerError

PACKAGES = ("ledger", "projections", "readmodels", "ops")
# Where each package defines its errors.
EXCEPTIONS_MODULE = {
    "ledger": "ledger.exceptions",
    "projections": "projections.exceptions",
    "readmodels": "readmodels.exceptions",
    "ops": "ops.exceptions",
}


def modules() -> list[ModuleType]:
    """Every module of the four packages (``__main__`` runs the CLI when imported: not it)."""
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if not info.name.endswith(".__main__"):
                found.append(importlib.import_module(info.name))
    return found


def defined_exceptions(module: ModuleType) -> list[type[BaseException]]:
    """The exception classes ``module`` defines itself (not those it imports)."""
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__]


def error_classes() -> list[type[BaseException]]:
    return sorted({cls for module in modules() for cls in defined_exceptions(module)},
                  key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def strays(found: list[type[BaseException]]) -> list[str]:
    """Classes outside their package's exceptions module, or not rooted in LedgerError."""
    problems = []
    for cls in found:
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not issubclass(cls, LedgerError):
            problems.append(f"{where} does not derive from LedgerError")
        if cls.__module__ != EXCEPTIONS_MODULE[cls.__module__.split(".")[0]]:
            problems.append(f"{where} is not in its package's exceptions module")
    return problems


def test_every_error_is_a_ledger_error_in_its_exceptions_module() -> None:
    found = error_classes()
    # Each package's module holds errors (the walk found them), and nothing else does.
    assert {cls.__module__ for cls in found} == set(EXCEPTIONS_MODULE.values())
    assert strays(found) == []


def test_every_error_says_whether_it_is_retriable() -> None:
    for cls in error_classes():
        assert isinstance(getattr(cls, "retriable", None), bool), cls


def test_the_check_sees_a_stray_error() -> None:
    """The rule can fail: an error defined elsewhere, on Exception, is reported twice."""
    module = ModuleType("projections.somewhere")
    exec("class StrayError(Exception):\n    pass\n", module.__dict__)
    assert strays(defined_exceptions(module)) == [
        "projections.somewhere.StrayError does not derive from LedgerError",
        "projections.somewhere.StrayError is not in its package's exceptions module",
    ]


def test_moved_errors_are_still_importable_where_they_were() -> None:
    from ledger.db import DatabaseConnectError
    from ledger.pricing import UnpricedUsageError
    from ops.catalog_import import CatalogImportError
    from ops.cli.catalog_cmd import CatalogLookupError, CostOptionError
    from projections.repricing import RepricingError
    from projections.sequential import HandlerError
    from readmodels import ReadModelError

    for cls in (DatabaseConnectError, UnpricedUsageError, CatalogImportError,
                CatalogLookupError, CostOptionError, RepricingError, HandlerError,
                ReadModelError):
        assert issubclass(cls, LedgerError), cls
