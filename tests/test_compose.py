"""docker-compose.yml is the production path; Docker is not here, so check it by reading it."""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from setuptools import find_packages

from ledger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_services_are_postgres_kraft_kafka_and_the_projector() -> None:
    services = _compose()["services"]
    assert {"postgres", "kafka", "projector"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")  # the official image
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka["environment"]
    projector = services["projector"]
    assert projector["build"] == "."
    assert projector["command"][:2] == ["ledger", "project"]
    assert (ROOT / "Dockerfile").exists()


def test_ports_match_what_the_services_listen_on() -> None:
    services = _compose()["services"]
    assert "5432:5432" in services["postgres"]["ports"]
    assert any(p.endswith(":29092") for p in services["kafka"]["ports"])
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:9092" in listeners and "localhost:29092" in listeners


def test_ledger_services_use_only_real_setting_names() -> None:
    services = _compose()["services"]
    known = {name.upper() for name in Settings.model_fields}
    for name in ("projector", "migrate"):
        env = services[name]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env[
            "DATABASE_URL"]
        Settings(**{k.lower(): v for k, v in env.items()})  # every value parses


def test_topic_settings_keep_history_and_fit_the_brokers_of_the_compose() -> None:
    services = _compose()["services"]
    brokers = [s for s in services.values() if str(s.get("image", "")).startswith(
        "apache/kafka:") and "broker" in s["environment"]["KAFKA_PROCESS_ROLES"]]
    for name in ("projector", "migrate"):
        env = services[name]["environment"]
        # Spelled out, so whoever deploys it sees what to change for production.
        assert {"TOPIC_RETENTION_MS", "TOPIC_REPLICATION_FACTOR",
                "TOPIC_MIN_INSYNC_REPLICAS"} <= set(env)
        settings = Settings(**{k.lower(): v for k, v in env.items()})
        assert settings.topic_retention_ms == -1  # a rebuild replays the log from offset 0
        # More replicas than brokers and `ledger topics ensure` fails to create the topics.
        assert settings.topic_replication_factor <= len(brokers)
        assert settings.topic_min_insync_replicas <= settings.topic_replication_factor


# -- the image the compose file builds ------------------------------------------------------


def _dockerfile_copies() -> dict[str, str]:
    """What each COPY of the Dockerfile puts in the image: source path -> path under WORKDIR."""
    workdir = PurePosixPath("/")
    copies: dict[str, str] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction, args = words[0].upper(), [w for w in words[1:] if not w.startswith("--")]
        if instruction == "WORKDIR":
            workdir = workdir / args[0]
        elif instruction == "COPY":
            *sources, dest = args
            target = workdir / dest
            for source in sources:
                # Several sources, or a destination ending in "/": each goes inside it.
                into = len(sources) > 1 or dest.endswith("/")
                placed = target / PurePosixPath(source).name if into else target
                copies[source] = str(placed.relative_to(workdir))
    return copies


def _image_tree(tmp_path: Path) -> Path:
    """The build context as the image's WORKDIR holds it: only what the Dockerfile copies."""
    for source, placed in _dockerfile_copies().items():
        origin, target = ROOT / source, tmp_path / placed
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, target)
    return tmp_path


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, module: str) -> str:
    path = _module_file(root, module)
    assert path is not None, module
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _first_party_imports(root: Path, start: str) -> set[str]:
    """Every module of ours that ``start`` imports, transitively, lazy imports included (a
    command imports its dependencies inside the function that runs it)."""
    ours = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        path = _module_file(root, module)
        if module in seen or path is None:
            continue
        seen.add(module)
        package = _package_of(root, module)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([base] if base else [])])
                # ``from package import name``: name may be a submodule.
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            todo.extend(n for n in names if n.split(".")[0] in ours)
    return {module for module in seen if _module_file(root, module) is not None}


def test_the_image_copies_every_package_pyproject_installs_and_the_migrations() -> None:
    copied = set(_dockerfile_copies().values())
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = {p for p in find_packages(str(ROOT), include=include) if "." not in p}
    assert installed >= {"ledger", "projections", "readmodels", "ops", "integrations"}
    assert installed <= copied, f"the Dockerfile does not copy {sorted(installed - copied)}"
    assert "migrations" in copied and "pyproject.toml" in copied
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "LEDGER_MIGRATIONS_DIR=/app/migrations" in dockerfile and "WORKDIR /app" in dockerfile


def test_the_image_installs_every_module_the_ledger_command_imports(tmp_path: Path) -> None:
    """``pip install .`` in the image finds packages only among what was copied: the
    ``ledger`` console script, which every compose command and the image's CMD run, must find
    each module of ours it imports there (without ``ops/``: "No module named 'ops'")."""
    project = _pyproject()
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    entry = project["project"]["scripts"]["ledger"]
    image = _image_tree(tmp_path)
    packages = set(find_packages(str(image), include=include))
    needed = _first_party_imports(ROOT, entry.partition(":")[0])
    assert {"ops.cli", "ops.cli.project", "ops.migrate", "projections", "readmodels",
            "ledger.settings"} <= needed  # the walk did follow the imports
    missing = {m for m in needed if _package_of(ROOT, m) not in packages}
    assert not missing, f"not installed in the image: {sorted(missing)}"


def test_every_command_the_image_runs_is_the_ledger_console_script() -> None:
    """So the test above covers them all: compose's commands and the image's CMD."""
    commands = [s["command"] for s in _compose()["services"].values() if s.get("build") == "."]
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines()
               if line.startswith("CMD "))
    commands.append(json.loads(cmd.removeprefix("CMD ")))
    assert len(commands) == 3
    for command in commands:
        line = command[2] if command[:2] == ["sh", "-c"] else shlex.join(command)
        for step in line.split("&&"):
            assert shlex.split(step)[0] == "ledger", command
