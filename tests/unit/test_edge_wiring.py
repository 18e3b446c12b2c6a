"""Every way the API is started runs it behind services/api/edge.py: `make up` (services/stack.py),
docker-compose.yml, the API image's CMD and the k8s Deployment. Also the edge's idle registry."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from services import stack
from services.api.edge import EdgeLimits, EdgeProtocol, IdleConnections
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "services.api.edge:create_app"
PROTOCOL = "services.api.edge:EdgeProtocol"


def _behind_the_edge(argv: list[str]) -> bool:
    return (
        argv[:1] == ["uvicorn"]
        and FACTORY in argv
        and "--factory" in argv
        and argv[argv.index("--http") + 1 : argv.index("--http") + 2] == [PROTOCOL]
    )


def test_make_up_starts_the_api_behind_the_edge() -> None:
    assert _behind_the_edge(list(stack.API_COMMAND))


def test_compose_starts_the_api_behind_the_edge() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert _behind_the_edge(compose["services"]["api"]["command"])


def test_the_api_image_starts_behind_the_edge() -> None:
    lines = (ROOT / "deploy" / "docker" / "api.Dockerfile").read_text().splitlines()
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert _behind_the_edge(json.loads(cmd.removeprefix("CMD ")))


def test_k8s_starts_the_api_behind_the_edge() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "api.yaml").read_text()))
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = [str(a) for a in container.get("command", [])] + [str(a) for a in container.get("args", [])]
    assert _behind_the_edge(argv), shlex.join(argv)


def test_the_factory_configures_the_protocol_from_settings() -> None:
    settings = Settings(http_header_timeout_s=3.5, http_body_timeout_s=7.0, http_max_idle_per_client=9)
    assert EdgeLimits.of(settings) == EdgeLimits(header_timeout_s=3.5, body_timeout_s=7.0, max_idle_per_client=9)
    fields = Settings.model_fields
    # before the factory runs, the protocol has the settings' defaults
    assert EdgeProtocol.limits == EdgeLimits(
        header_timeout_s=fields["http_header_timeout_s"].default,
        body_timeout_s=fields["http_body_timeout_s"].default,
        max_idle_per_client=fields["http_max_idle_per_client"].default,
    )


def test_idle_registry_closes_the_oldest_beyond_the_cap() -> None:
    idle = IdleConnections()
    conns: list[Any] = [object() for _ in range(5)]
    evicted = [idle.add("10.0.0.1", c, cap=3) for c in conns]
    assert evicted == [[], [], [], [conns[0]], [conns[1]]]
    assert idle.count("10.0.0.1") == 3
    assert idle.add("10.0.0.2", conns[0], cap=3) == []
    idle.discard("10.0.0.1", conns[2])
    assert idle.count("10.0.0.1") == 2
    assert [idle.add("10.0.0.3", c, cap=0) for c in conns] == [[]] * 5
