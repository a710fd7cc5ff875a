"""The image and the laptop stack: Dockerfile, .dockerignore, docker-compose.yml, deploy/.

No Docker engine runs where these tests normally run, so the image is NOT built
here: the files are parsed and checked for what a build or `docker compose up`
depends on. ``test_image_builds`` really builds when a Docker engine answers (and is
marked slow); otherwise it skips and says why.
"""

from __future__ import annotations

import copy
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

FEDCAST_SUBCOMMANDS = {"keyserver", "aggregator", "edge", "broker", "certs"}
#: The compose one-shots that run fedcast's image; the other fedcast services run all the time.
ONE_SHOTS = {"certs", "broker-setup", "provision", "verify-key"}
#: Only these may know the broker administrator's password.
ADMIN_READERS = {"rabbitmq", "broker-setup"}
ADMIN_VARIABLE = "FEDCAST_BROKER_ADMIN_PASSWORD"
BOOTSTRAP = "/var/lib/fedcast/bootstrap"


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


def fedcast_services(services: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    services = compose()["services"] if services is None else services
    return {name: svc for name, svc in services.items() if str(svc.get("image", "")).startswith("fedcast")}


def runtime_services(services: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The long-running fedcast services: key service, aggregator, edge clients."""
    return {n: s for n, s in fedcast_services(services).items() if n not in ONE_SHOTS}


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
    assert {"certs", "rabbitmq-tls", "broker-setup", "provision", "verify-key"} <= services, "the one-shots"


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
    assert {"broker setup", "broker add-device", "certs init", "certs issue"} <= seen


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
    assert waits_for("rabbitmq-tls")["certs"] == "service_completed_successfully"
    assert waits_for("rabbitmq")["rabbitmq-tls"] == "service_completed_successfully"
    assert waits_for("broker-setup")["rabbitmq"] == "service_healthy"
    for client in ("keyserver", "aggregator", "edge-1", "edge-2", "edge-3"):
        # their queues and users exist before they start (they declare nothing)
        assert waits_for(client)["broker-setup"] == "service_completed_successfully", client
        assert waits_for(client)["rabbitmq"] == "service_healthy", client
    for client in ("aggregator", "edge-1", "edge-2", "edge-3"):
        assert waits_for(client)["verify-key"] == "service_completed_successfully", client
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
    runtime = set(runtime_services())
    assert {f"{name}:9100" for name in runtime} <= targets
    assert "rabbitmq:15692" in targets


# --- the broker: own logins, the administrator's only where it belongs, TLS only (issue 11) ---


def _script(service: dict[str, Any]) -> str:
    """A service's shell script as the container runs it (compose's $$ is a literal $)."""
    entrypoint = service.get("entrypoint") or [""]
    return str(entrypoint[2] if len(entrypoint) > 2 else "").replace("$$", "$")


def _login_files(script: str) -> str | None:
    """The login a wrapper builds FEDCAST_AMQP_URL from: the variable naming its files, or None."""
    match = re.search(
        r'login="' + re.escape(BOOTSTRAP) + r'/amqp/\$(\w+)"\s*\n\s*'
        r'FEDCAST_AMQP_URL="amqps://\$\(cat "\$login\.user"\):\$\(cat "\$login\.password"\)@\$AMQP_ADDRESS"',
        script,
    )
    exported = re.search(r"export [^\n]*\bFEDCAST_AMQP_URL\b", script)
    return match.group(1) if match and exported else None


def compose_login_problems(services: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        if ADMIN_VARIABLE in json.dumps(service) and name not in ADMIN_READERS:
            problems.append(f"{name} knows the broker administrator's password")
        if "FEDCAST_BROKER_ADMIN_URL" in json.dumps(service) and name != "broker-setup":
            problems.append(f"{name} holds the management API's admin URL")
    if ADMIN_VARIABLE not in json.dumps(services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"]):
        problems.append("RabbitMQ's administrator is not the one broker-setup uses")
    setup = _script(services["broker-setup"])
    provisioned = (
        set(re.findall(r"for id in ([\w -]+); do", setup)[0].split()) if "for id in" in setup else set()
    )
    if "fedcast broker setup" in setup:
        provisioned |= {"keyserver", "aggregator"}
    seen: dict[str, str] = {}
    for name, service in runtime_services(services).items():
        env = service.get("environment", {})
        if env.get("FEDCAST_AMQP_DECLARE") != "0":
            problems.append(f"{name}: FEDCAST_AMQP_DECLARE is not 0")
        if "FEDCAST_AMQP_URL" in env:
            problems.append(f"{name}: a broker URL in its environment (shared, or with a literal login)")
        variable = _login_files(_script(service))
        login = env.get(variable or "", "")
        own = env.get("FEDCAST_CLIENT_ID") or name
        if variable is None or login != own:
            problems.append(f"{name}: does not log in as its own broker user ({variable}={login!r})")
            continue
        if login in seen:
            problems.append(f"{name} shares the broker user {login} with {seen[login]}")
        seen[login] = name
        if login not in provisioned:
            problems.append(f"{name}: broker-setup does not make the user {login}")
    return problems


def _conf(path: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def compose_tls_problems(services: dict[str, Any]) -> list[str]:
    """RabbitMQ listens on TLS only with fedcast certs' files; every client dials amqps pinning that CA."""
    problems: list[str] = []
    mounts = dict(v.split(":")[:2][::-1] for v in services["rabbitmq"]["volumes"])  # target -> source
    confs = sorted(t for t in mounts if t.startswith("/etc/rabbitmq/conf.d/"))
    conf: dict[str, str] = {}
    for target in confs:
        conf.update(_conf(REPO / mounts[target]))
    if conf.get("listeners.tcp") != "none" or conf.get("listeners.ssl.default") != "5671":
        listeners = (conf.get("listeners.tcp"), conf.get("listeners.ssl.default"))
        problems.append(f"RabbitMQ is not TLS-only on 5671: tcp {listeners[0]}, ssl {listeners[1]}")
    installer = _script(services["rabbitmq-tls"])
    installer_mounts = dict(v.split(":")[:2][::-1] for v in services["rabbitmq-tls"]["volumes"])
    installed = {
        target: (source, mode)
        for mode, source, target in re.findall(r"install -o \d+ -g \d+ -m (\d+) (\S+) (\S+)", installer)
    }

    def installed_as(path: str, where: dict[str, str]) -> tuple[str, str] | None:
        """(source in the pki volume, mode) of the file a service sees at `path`, if rabbitmq-tls put it."""
        for target, volume in where.items():
            if path.startswith(target + "/"):
                for inside, (source, mode) in installed.items():
                    mount = next((t for t, v in installer_mounts.items() if v == volume), None)
                    if mount and inside == mount + path[len(target) :]:
                        return source, mode
        return None

    for key, expected in (
        ("cacertfile", "ca.pem"),
        ("certfile", "rabbitmq.pem"),
        ("keyfile", "rabbitmq-key.pem"),
    ):
        found = installed_as(conf.get(f"ssl_options.{key}", ""), mounts)
        if found is None or Path(found[0]).name != expected:
            problems.append(f"ssl_options.{key} is not the {expected} that fedcast certs made: {found}")
        elif key == "keyfile" and found[1] != "0600":
            problems.append("the broker's key is not 0600")
    certs = _script(services["certs"])
    if not re.search(r"fedcast certs init ", certs) or not re.search(
        r"fedcast certs issue rabbitmq [^\n]*--server[^\n]*--dns rabbitmq\b", certs
    ):
        problems.append("the certs one-shot does not make the CA and the broker's certificate for 'rabbitmq'")
    for name, service in runtime_services(services).items():
        env = service.get("environment", {})
        where = dict(v.split(":")[:2][::-1] for v in service.get("volumes", []))
        if env.get("AMQP_ADDRESS") != "rabbitmq:5671/":
            problems.append(f"{name} dials {env.get('AMQP_ADDRESS')}")
        ca = installed_as(env.get("FEDCAST_AMQP_CA_FILE", ""), where)
        if ca is None or Path(ca[0]).name != "ca.pem":
            problems.append(
                f"{name} does not pin the CA fedcast certs made ({env.get('FEDCAST_AMQP_CA_FILE')})"
            )
        if "pki" in where.values() or "rabbitmq-tls" in where.values():
            problems.append(f"{name} mounts a volume with a private key of the broker or the CA")
    return problems


def compose_port_problems(services: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name} publishes {port} beyond this machine")
        if name in fedcast_services(services) and service.get("ports"):
            problems.append(f"{name} publishes a port: its /metrics is for Prometheus on the compose network")
    for name, service in runtime_services(services).items():
        if service.get("environment", {}).get("FEDCAST_METRICS_HOST") != "0.0.0.0":
            problems.append(f"{name}: Prometheus cannot scrape it over the compose network")
    return problems


def test_compose_every_party_logs_in_as_its_own_broker_user() -> None:
    assert compose_login_problems(compose()["services"]) == []


def test_compose_broker_is_tls_only_with_certificates_from_fedcast_certs() -> None:
    assert compose_tls_problems(compose()["services"]) == []


def test_compose_publishes_nothing_beyond_this_machine() -> None:
    assert compose_port_problems(compose()["services"]) == []


def test_compose_checks_catch_what_they_are_for() -> None:
    """Guard the three tests above with the mistakes they exist to catch."""
    services = compose()["services"]

    def broken(change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(services)
        change(copied)
        return copied

    admin_url = "amqps://fedcast:${FEDCAST_BROKER_ADMIN_PASSWORD:-fedcast-dev}@rabbitmq:5671/"
    for change in (
        lambda s: s["edge-1"]["environment"].update(FEDCAST_AMQP_URL=admin_url),
        lambda s: s["edge-2"]["environment"].update(FEDCAST_AMQP_LOGIN="aggregator"),
        lambda s: s["aggregator"]["environment"].update(FEDCAST_AMQP_DECLARE="1"),
        lambda s: s["keyserver"].update(entrypoint=None),
        lambda s: s["edge-3"]["environment"].update(FEDCAST_AMQP_LOGIN="edge-4"),
    ):
        assert compose_login_problems(broken(change)), change
    plaintext = broken(
        lambda s: s["rabbitmq"]["volumes"].remove(
            next(v for v in s["rabbitmq"]["volumes"] if "tls.conf" in v)
        )
    )
    assert compose_tls_problems(plaintext)
    assert compose_tls_problems(
        broken(lambda s: s["edge-1"]["environment"].update(FEDCAST_AMQP_CA_FILE="/etc/ssl/cert.pem"))
    )
    assert compose_tls_problems(broken(lambda s: s["edge-1"]["volumes"].append("pki:/pki:ro")))
    assert compose_port_problems(broken(lambda s: s["edge-1"].update(ports=["127.0.0.1:9101:9100"])))
    assert compose_port_problems(broken(lambda s: s["rabbitmq"]["ports"].append("15671:15671")))
    assert compose_port_problems(broken(lambda s: s["aggregator"]["environment"].pop("FEDCAST_METRICS_HOST")))


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
