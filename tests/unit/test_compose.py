"""docker-compose.yml is for users (no Docker engine here): it must parse and reference only files that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_the_services_of_the_spec() -> None:
    services = compose()["services"]
    assert {"kafka", "mongo", "worker", "api", "prometheus"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["mongo"]["image"].startswith("mongo:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_every_file_compose_references_exists() -> None:
    referenced: list[Path] = []
    for service in compose()["services"].values():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir()
            referenced.append(context / build["dockerfile"])
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                referenced.append(ROOT / source)
    assert referenced, "compose references no file: the check would be empty"
    missing = [str(path) for path in referenced if not path.exists()]
    assert not missing


def test_dockerfile_copies_only_existing_paths() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    sources = [part for line in dockerfile if line.startswith("COPY") for part in line.split()[1:-1]]
    assert sources
    assert [s for s in sources if not (ROOT / s).exists()] == []
