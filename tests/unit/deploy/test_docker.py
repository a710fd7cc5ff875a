"""The image and the laptop stack: Dockerfile, .dockerignore, docker-compose.yml, deploy/.

No Docker engine runs where these tests normally run, so the image is NOT built
here: the files are parsed and checked for what a build or `docker compose up`
depends on. ``test_image_builds`` really builds when a Docker engine answers (and is
marked slow); otherwise it skips and says why.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.conftest import REPO

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

FEDCAST_SUBCOMMANDS = {"keyserver", "aggregator", "edge"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def fedcast_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if str(svc.get("image", "")).startswith("fedcast")
    }


# --- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in instructions if w == "ARG" and "=" in a}
    base = args["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim")
    assert all(f.split()[0] in ("${PYTHON_IMAGE}", base) for f in froms)


def test_final_stage_runs_fedcast_as_non_root() -> None:
    stage = final_stage()
    users = [args for word, args in stage if word == "USER"]
    assert users, "the final stage must switch away from root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, "numeric uid: runAsNonRoot can only verify a number"
    entrypoints = [args for word, args in stage if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["fedcast"]


def test_final_stage_has_no_build_tools() -> None:
    stage = final_stage()
    runs = " ".join(args for word, args in stage if word == "RUN")
    for tool in ("apt-get install", "apk add", "build-essential", "gcc", "pip install", "pip wheel"):
        assert tool not in runs, f"final stage runs {tool!r}"
    copies = [args for word, args in stage if word == "COPY"]
    assert all(args.startswith("--from=") for args in copies), (
        "the final stage copies only from the build stage"
    )


def test_build_refuses_source_distributions() -> None:
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    assert "--only-binary=:all:" in runs, "amd64 and arm64 wheels exist for every dependency: require them"


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, args in dockerfile_instructions():
        if word != "COPY" or args.startswith("--from="):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{source} is ignored"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "**/__pycache__"} <= ignored


def test_healthcheck_probes_readiness() -> None:
    checks = [args for word, args in final_stage() if word == "HEALTHCHECK"]
    assert checks and "/readyz" in checks[-1]


@pytest.mark.slow
def test_image_builds() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI here: the image cannot be built (no Docker engine in this environment)")
    if subprocess.run([docker, "info"], capture_output=True, check=False, timeout=30).returncode != 0:
        pytest.skip("the docker CLI cannot reach a Docker engine: the image cannot be built here")
    build = subprocess.run(
        [docker, "build", "-t", "fedcast:test", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run(
        [docker, "run", "--rm", "fedcast:test", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0 and "keyserver" in run.stdout
    user = subprocess.run(
        [docker, "image", "inspect", "-f", "{{.Config.User}}", "fedcast:test"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert user.stdout.strip().startswith("10001")


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_has_the_laptop_stack() -> None:
    services = set(compose()["services"])
    assert {"rabbitmq", "prometheus", "grafana", "keyserver", "aggregator"} <= services
    assert {"edge-1", "edge-2", "edge-3"} <= services
    assert {"provision", "verify-key"} <= services, "the bootstrap one-shots"


def _fedcast_argvs(name: str, service: dict[str, Any]) -> list[list[str]]:
    """The fedcast command lines a compose service runs.

    Default entrypoint: `command` is fedcast's argv. A shell wrapper ending in
    `exec fedcast "$@"`: `command` is fedcast's argv. A one-shot script: every
    `fedcast ...` line in it, with shell variables replaced by a placeholder id.
    """
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        return [list(service["command"])]
    assert entrypoint[:2] == ["/bin/sh", "-ec"], f"{name}: unexpected entrypoint"
    script = entrypoint[2]
    if re.search(r'exec fedcast "\$\$@"\s*$', script):
        return [list(service["command"])]
    argvs = []
    for line in script.splitlines():
        match = re.search(r"\bfedcast ([^>|;&]+)", line)
        if match:
            words = shlex.split(re.sub(r'"?\$\$\w+"?', "device-1", match.group(1)))
            argvs.append(words)
    assert argvs, f"{name}: runs no fedcast command"
    return argvs


def test_compose_commands_are_real_fedcast_subcommands() -> None:
    from fedcast.cli import build_parser

    services = fedcast_services()
    assert len(services) >= 7
    seen: set[str] = set()
    for name, service in services.items():
        for argv in _fedcast_argvs(name, service):
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # argparse's way of rejecting an argv
                raise AssertionError(f"{name}: `fedcast {' '.join(argv)}` does not parse") from exc
            assert args.command in FEDCAST_SUBCOMMANDS, f"{name}: {argv}"
            seen.add(f"{args.command} {getattr(args, 'action', '') or ''}".strip())
    assert {"keyserver serve", "keyserver add-device", "keyserver verify-key", "aggregator", "edge"} <= seen


def test_compose_fedcast_services_are_locked_down() -> None:
    for name, service in fedcast_services().items():
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name


def test_compose_bootstrap_order() -> None:
    services = compose()["services"]

    def waits_for(name: str) -> dict[str, str]:
        return {dep: cond["condition"] for dep, cond in services[name].get("depends_on", {}).items()}

    assert waits_for("keyserver")["provision"] == "service_completed_successfully"
    assert waits_for("verify-key")["keyserver"] == "service_healthy"
    for client in ("aggregator", "edge-1", "edge-2", "edge-3"):
        assert waits_for(client)["verify-key"] == "service_completed_successfully", client
        assert waits_for(client)["rabbitmq"] == "service_healthy", client
        env = services[client]["environment"]
        assert env["FEDCAST_KEYSERVER_VERIFY_KEY_FILE"].endswith("verify-key.hex"), client
    provisioned = re.findall(r"edge-\d", services["provision"]["entrypoint"][2])
    assert sorted(set(provisioned)) == ["edge-1", "edge-2", "edge-3"]
    shards = sorted(services[f"edge-{i}"]["environment"]["FEDCAST_SYNTHETIC_SHARD"] for i in (1, 2, 3))
    assert shards == ["0", "1", "2"]


def test_compose_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_compose_prometheus_scrapes_every_fedcast_service() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    runtime = set(fedcast_services()) - {"provision", "verify-key"}
    assert {f"{name}:9100" for name in runtime} <= targets
    assert "rabbitmq:15692" in targets


def test_grafana_provisioning() -> None:
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/fedcast.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = [v.split(":")[1] for v in compose()["services"]["grafana"]["volumes"]]
    assert any(m.startswith(path + "/") and m.endswith(".json") for m in mounts)


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip(
            "no docker CLI here: `docker compose config` cannot run (no Docker engine in this environment)"
        )
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False, timeout=30)
    if plugin.returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin: `docker compose config` cannot run")
    proc = subprocess.run(
        [docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_deploy_docs_exist() -> None:
    text = (REPO / "docs/DEPLOY.md").read_text()
    for needle in (
        "kubectl apply -k k8s/overlays/dev",
        "--node-taint edge=true:NoSchedule",
        "docker compose up",
    ):
        assert needle in text, needle
    assert Path(REPO / "k8s/base/grafana/fedcast-dashboard.json").is_file()
