"""The packages depend one way: ``ledger`` <- ``projections``, ``readmodels`` <- ``ops``.

``ledger`` is what a gateway imports and the contracts everyone shares; ``projections`` (the
workers) and ``readmodels`` (the gateway's hot path) build on it and not on each other; the
operator shell ``ops`` sits on top and nothing imports it; nor ``integrations`` (adapters for
other people's gateways, LiteLLM's), which uses ``ledger`` and ``readmodels``. Every import
statement of every module counts, including those inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "projections", "readmodels", "ops", "integrations")

# What each package (or sub-package, longest prefix wins) may import among ours.
ALLOWED: dict[str, set[str]] = {
    "ledger": {"ledger"},
    "projections": {"ledger", "projections"},
    "readmodels": {"ledger", "readmodels"},
    "ops": {"ledger", "projections", "readmodels", "ops"},
    # Adapters for other people's gateways: the write side and the hot-path reads.
    "integrations": {"ledger", "readmodels", "integrations"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                drop = node.level - (1 if is_package else 0)
                base = base[: len(base) - drop] if drop else base
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def _rule_for(module: str) -> tuple[str, set[str]]:
    owner = max((key for key in ALLOWED if module == key or module.startswith(key + ".")),
                key=len)
    return owner, ALLOWED[owner]


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def violations() -> list[str]:
    found = []
    for path in _modules():
        module = _module_name(path)
        owner, allowed = _rule_for(module)
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in sorted(_imported(tree, module, path.name == "__init__.py")):
            target = name.split(".")[0]
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{module} ({owner}) imports {name} ({target})")
    return found


def test_dependencies_run_one_way() -> None:
    assert violations() == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The rule can fail: an import of the shell from the kernel is reported."""
    tree = ast.parse("def f():\n    from ops.cli import app\n")
    imported = _imported(tree, "ledger.events", is_package=False)
    owner, allowed = _rule_for("ledger.events")
    assert owner == "ledger"
    assert imported == {"ops.cli"}
    assert not any(name.startswith(a) for name in imported for a in allowed)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_checked(package: str) -> None:
    assert any(_module_name(p).split(".")[0] == package for p in _modules())
