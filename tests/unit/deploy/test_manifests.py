"""deploy/docker-compose.yml and deploy/k8s/ checked offline: Kubernetes objects
against the API schemas bundled in kubernetes-validate (strict: unknown fields
fail), the compose file against the Compose Specification's schema (check-jsonschema),
Strimzi resources by their structure, and both kept in step with the code (topics,
settings, commands, ports and probes)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from connectors.kafka.admin import CLUSTER_MIN_INSYNC_REPLICAS, CLUSTER_REPLICATION_FACTOR
from connectors.schema_registry.launcher import CCOMPAT_PATH, COMPATIBILITY, REGISTRY_VERSION
from streams.settings import Settings
from streams.topics import declared_topics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S_VERSION = "1.33.0"
# Settings the deploy files already pass, for code that is not merged yet: the
# ClickHouse server password file.
PENDING_SETTINGS = {
    "PAYSTREAM_CLICKHOUSE_PASSWORD_FILE",
}


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f.name, d) for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d
    ]


K8S = _k8s_docs()
CORE = [(f, d) for f, d in K8S if not d["apiVersion"].startswith("kafka.strimzi.io/")]
STRIMZI = [(f, d) for f, d in K8S if d["apiVersion"].startswith("kafka.strimzi.io/")]


def _kinds(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in K8S if d["kind"] == kind]


def _settings_configmap() -> dict[str, Any]:
    """The ConfigMap every pod takes its PAYSTREAM_* settings from."""
    (configmap,) = [d for d in _kinds("ConfigMap") if d["metadata"]["name"] == "paystream"]
    return configmap


@pytest.mark.parametrize(("file", "doc"), CORE, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in CORE])
def test_kubernetes_objects_match_the_api_schema(file: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_bad_object() -> None:
    (sts,) = _kinds("StatefulSet")
    broken = copy.deepcopy(sts)
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(sts)
    broken["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRefs"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_object_is_namespaced_and_uniquely_named() -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for _, d in K8S]
    assert len(keys) == len(set(keys))
    assert {d["metadata"].get("namespace") for _, d in K8S} == {"paystream"}


def test_strimzi_kafka_is_kraft_three_combined_nodes_rf3_min_isr2() -> None:
    (kafka,) = _kinds("Kafka")
    (pool,) = _kinds("KafkaNodePool")
    assert kafka["apiVersion"] == pool["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert pool["spec"]["replicas"] == 3 and sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert all(
        v["type"] == "persistent-claim" and v["deleteClaim"] is False for v in pool["spec"]["storage"]["volumes"]
    )
    config = kafka["spec"]["kafka"]["config"]
    assert (
        config["default.replication.factor"] == config["offsets.topic.replication.factor"] == CLUSTER_REPLICATION_FACTOR
    )
    assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == CLUSTER_MIN_INSYNC_REPLICAS
    assert config["auto.create.topics.enable"] is False and config["unclean.leader.election.enable"] is False
    listener_ports = {x["port"] for x in kafka["spec"]["kafka"]["listeners"]}
    configmap = _settings_configmap()
    host, port = configmap["data"]["PAYSTREAM_KAFKA_BOOTSTRAP"].split(":")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap" and int(port) in listener_ports


def test_kafka_topics_are_the_declared_topics() -> None:
    configmap = _settings_configmap()
    settings = Settings(
        partitions=int(configmap["data"]["PAYSTREAM_PARTITIONS"]),
        replication_factor=int(configmap["data"]["PAYSTREAM_REPLICATION_FACTOR"]),
        kafka_bootstrap=configmap["data"]["PAYSTREAM_KAFKA_BOOTSTRAP"],
    )
    expected = {s.name: (s.partitions, s.replication_factor, s.config()) for s in declared_topics(settings)}
    topics = _kinds("KafkaTopic")
    (kafka,) = _kinds("Kafka")
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for t in topics)
    actual = {
        t["metadata"]["name"]: (t["spec"]["partitions"], t["spec"]["replicas"], t["spec"]["config"]) for t in topics
    }
    assert actual == expected
    assert all(cfg["min.insync.replicas"] == "2" for _, _, cfg in actual.values())


def test_workers_keep_state_on_their_own_volume_and_name() -> None:
    (sts,) = _kinds("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    configmap = _settings_configmap()
    assert mounts["state"] == configmap["data"]["PAYSTREAM_DATA_DIR"]
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    name_env = {e["name"]: e for e in container["env"]}["PAYSTREAM_WORKER_NAME"]
    assert name_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_every_workload_has_a_disruption_budget() -> None:
    budgets = [p["spec"]["selector"]["matchLabels"] for p in _kinds("PodDisruptionBudget")]
    for workload in _kinds("StatefulSet") + _kinds("Deployment"):
        assert workload["spec"]["selector"]["matchLabels"] in budgets, workload["metadata"]["name"]


def test_mounted_secrets_exist() -> None:
    secrets = {s["metadata"]["name"] for s in _kinds("Secret")}
    for workload in _kinds("StatefulSet") + _kinds("Deployment"):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets


def _env_loads_into_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Load `env` as the process environment into Settings; return the unknown keys."""
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings()  # raises if any known value is invalid
    return {k for k in env if k.lower().removeprefix("paystream_") not in Settings.model_fields}


def test_configmap_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    configmap = _settings_configmap()
    assert _env_loads_into_settings(configmap["data"], monkeypatch) <= PENDING_SETTINGS


# --- docker-compose ---

COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_has_the_issue_services() -> None:
    assert {"kafka-1", "kafka-2", "kafka-3", "schema-registry", "clickhouse", "worker", "prometheus", "grafana"} <= set(
        SERVICES
    )
    assert "${PAYSTREAM_WORKERS" in str(SERVICES["worker"]["deploy"]["replicas"])


def test_long_running_services_have_healthchecks() -> None:
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            continue  # one-shot jobs
        check = service.get("healthcheck")
        assert check and check["test"][0] in {"CMD", "CMD-SHELL"} and check["retries"] >= 1, name


def test_dependencies_exist_and_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in SERVICES, f"{name} -> {dep}"
            expected = "service_completed_successfully" if SERVICES[dep].get("restart") == "no" else "service_healthy"
            assert cond == {"condition": expected}, f"{name} -> {dep}"


def test_compose_kafka_is_a_three_node_kraft_quorum() -> None:
    brokers = {n: s["environment"] for n, s in SERVICES.items() if n.startswith("kafka-")}
    ids = sorted(int(env["KAFKA_NODE_ID"]) for env in brokers.values())
    assert ids == [1, 2, 3]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in brokers.values()}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({env["CLUSTER_ID"] for env in brokers.values()}) == 1
    for name, env in brokers.items():
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == str(CLUSTER_MIN_INSYNC_REPLICAS)
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == str(CLUSTER_REPLICATION_FACTOR)
    assert len({s["volumes"][0] for n, s in SERVICES.items() if n.startswith("kafka-")}) == 3


def test_compose_worker_env_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v.replace("${PAYSTREAM_PARTITIONS:-16}", "16") for k, v in SERVICES["worker"]["environment"].items()}
    assert _env_loads_into_settings(env, monkeypatch) <= PENDING_SETTINGS
    assert env["PAYSTREAM_KAFKA_BOOTSTRAP"] == ",".join(f"{n}:9092" for n in ("kafka-1", "kafka-2", "kafka-3"))


def test_compose_mounts_what_exists() -> None:
    for service in ("prometheus", "grafana"):
        for volume in SERVICES[service]["volumes"]:
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), source
    # A secret is named (short syntax) or given a source and a target (long syntax).
    used = {s if isinstance(s, str) else s["source"] for svc in SERVICES.values() for s in svc.get("secrets", [])}
    assert used <= set(COMPOSE["secrets"])


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    # The Compose Specification's JSON schema, as check-jsonschema ships it (offline).
    assert _check_compose(DEPLOY / "docker-compose.yml").returncode == 0
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["worker"]["depends_on"]["topics"]["condition"] = "service_ready"  # not a condition
    broken["services"]["sink"]["restart_policy"] = "always"  # not a service key
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = _check_compose(path)
    assert result.returncode == 1 and "service_ready" in result.stdout and "restart_policy" in result.stdout, (
        result.stdout
    )


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    validator = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(validator), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


# --- every long-lived process, in both ---

# The processes that run until stopped (docs/deploy.md); each is deployed in both.
LONG_LIVED = {("worker",), ("sink",), ("api",), ("webhooks", "run"), ("scheduler", "run")}


PAYSTREAM_IMAGE = "ghcr.io/paystream/paystream:"


def _k8s_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod template, container) of every paystream container of a
    Deployment or StatefulSet (the registry's is Apicurio's)."""
    workloads = _kinds("Deployment") + _kinds("StatefulSet")
    return [
        (w["metadata"]["name"], w["spec"]["template"], c)
        for w in workloads
        for c in w["spec"]["template"]["spec"]["containers"]
        if c["image"].startswith(PAYSTREAM_IMAGE)
    ]


PAYSTREAM_SERVICES = {n: s for n, s in SERVICES.items() if s.get("image") == "paystream:local"}


def test_every_long_lived_process_runs_in_compose_and_kubernetes() -> None:
    assert {tuple(c["args"]) for _, _, c in _k8s_containers()} == LONG_LIVED
    compose = {tuple(s["command"]) for s in PAYSTREAM_SERVICES.values() if s.get("restart") != "no"}
    assert compose == LONG_LIVED


def _cli_command_exists(words: tuple[str, ...]) -> bool:
    import typer.main

    from streams.cli.main import app

    cmd: Any = typer.main.get_group(app)
    for word in words:  # a group has sub-commands, a command has none
        cmd = getattr(cmd, "commands", {}).get(word)
    return cmd is not None and not hasattr(cmd, "commands")


def test_deployed_commands_are_cli_commands() -> None:
    deployed = {tuple(c["args"]) for _, _, c in _k8s_containers()} | {
        tuple(s["command"]) for s in PAYSTREAM_SERVICES.values()
    }
    missing = {words for words in deployed if not _cli_command_exists(words)}
    assert missing == set()


def test_kubernetes_ports_and_probes_follow_the_settings() -> None:
    metrics_port = int(_settings_configmap()["data"]["PAYSTREAM_METRICS_PORT"])
    for name, template, container in _k8s_containers():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, f"{name} {probe}"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if tuple(container["args"]) == ("api",):
            assert env["PAYSTREAM_API_HOST"] == "0.0.0.0" and int(env["PAYSTREAM_API_PORT"]) == ports["http"], name
            assert container["readinessProbe"]["httpGet"] == {"path": "/openapi.json", "port": "http"}
        else:  # served by metrics.serve on PAYSTREAM_METRICS_PORT, and scraped there
            assert ports == {"metrics": metrics_port}, name
            assert template["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port), name
            assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}, name


def test_kubernetes_file_settings_are_mounted() -> None:
    # A PAYSTREAM_*_FILE a pod is given but cannot read fails it at start (the registry's
    # user info: every process reads it once PAYSTREAM_SCHEMA_REGISTRY_URL is set).
    shared = _settings_configmap()["data"]
    for name, _, container in _k8s_containers():
        env = shared | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for key, path in env.items():
            if key.endswith("_FILE"):
                assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), f"{name}: {key}={path}"


def test_compose_ports_healthchecks_and_secrets_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in PAYSTREAM_SERVICES.items():
        env = {k: v.replace("${PAYSTREAM_PARTITIONS:-16}", "16") for k, v in service["environment"].items()}
        assert _env_loads_into_settings(env, monkeypatch) <= PENDING_SETTINGS, name
        secrets = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        for key, value in env.items():
            if key.endswith("_FILE") and value.startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/").split("/")[0] in secrets, f"{name}: {key}"
        if service.get("restart") == "no":
            continue
        probe = " ".join(service["healthcheck"]["test"])
        if tuple(service["command"]) == ("api",):
            port = env["PAYSTREAM_API_PORT"]
            assert env["PAYSTREAM_API_HOST"] == "0.0.0.0" and f"localhost:{port}/openapi.json" in probe
            assert service["ports"] == [f"{port}:{port}"]
        else:
            assert f"localhost:{env['PAYSTREAM_METRICS_PORT']}/metrics" in probe, name
    scraped = {
        c["dns_sd_configs"][0]["names"][0]
        for c in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert scraped == {n for n, s in PAYSTREAM_SERVICES.items() if s.get("restart") != "no" and s["command"] != ["api"]}


# --- the Schema Registry: the one CI and `paystream registry up` run ---

REGISTRY_IMAGE = f"quay.io/apicurio/apicurio-registry-kafkasql:{REGISTRY_VERSION}"


def _registry_workload() -> dict[str, Any]:
    (registry,) = [
        w
        for w in _kinds("Deployment")
        if any(not c["image"].startswith(PAYSTREAM_IMAGE) for c in w["spec"]["template"]["spec"]["containers"])
    ]
    return registry


def test_the_registry_is_apicurio_at_the_launchers_version_in_both() -> None:
    (container,) = _registry_workload()["spec"]["template"]["spec"]["containers"]
    assert container["image"] == SERVICES["schema-registry"]["image"] == REGISTRY_IMAGE
    k8s_env = {e["name"]: e["value"] for e in container["env"]}
    compose_env = SERVICES["schema-registry"]["environment"]
    # The same global rule as the embedded registry (and as Confluent's default).
    assert k8s_env["REGISTRY_RULES_GLOBAL_COMPATIBILITY"] == compose_env["REGISTRY_RULES_GLOBAL_COMPATIBILITY"]
    assert compose_env["REGISTRY_RULES_GLOBAL_COMPATIBILITY"] == COMPATIBILITY
    # Its storage is the pipeline's Kafka cluster.
    assert k8s_env["KAFKA_BOOTSTRAP_SERVERS"] == _settings_configmap()["data"]["PAYSTREAM_KAFKA_BOOTSTRAP"]
    assert compose_env["KAFKA_BOOTSTRAP_SERVERS"] == SERVICES["worker"]["environment"]["PAYSTREAM_KAFKA_BOOTSTRAP"]
    everything = yaml.safe_dump(COMPOSE) + "".join(yaml.safe_dump(d) for _, d in K8S)
    assert "confluentinc" not in everything and "SCHEMA_REGISTRY_" not in everything.replace("PAYSTREAM_SCHEMA_", "")


def test_every_kubernetes_process_uses_the_registrys_ccompat_url() -> None:
    registry = _registry_workload()
    labels = registry["spec"]["template"]["metadata"]["labels"]
    (service,) = [s for s in _kinds("Service") if s["spec"]["selector"] == labels]
    (container,) = registry["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    url = f"http://{service['metadata']['name']}:{port['port']}{CCOMPAT_PATH}"
    shared = _settings_configmap()["data"]
    for name, _, c in _k8s_containers():
        assert {"configMapRef": {"name": "paystream"}} in c["envFrom"], name
        overridden = {e["name"] for e in c.get("env", [])}
        assert "PAYSTREAM_SCHEMA_REGISTRY_URL" not in overridden, name
    assert shared["PAYSTREAM_SCHEMA_REGISTRY_URL"] == url
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": f"{CCOMPAT_PATH}/subjects", "port": "http"}


def test_only_paystream_pods_reach_the_registry() -> None:
    registry = _registry_workload()
    (policy,) = _kinds("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == registry["spec"]["template"]["metadata"]["labels"]
    ((source,),) = [rule["from"] for rule in policy["spec"]["ingress"]]
    (expression,) = source["podSelector"]["matchExpressions"]
    admitted = set(expression["values"]) if expression["operator"] == "In" else set()
    names = {t["metadata"]["labels"]["app.kubernetes.io/name"] for _, t, _ in _k8s_containers()}
    assert expression["key"] == "app.kubernetes.io/name" and admitted == names


def test_every_compose_process_uses_the_registrys_ccompat_url() -> None:
    registry = SERVICES["schema-registry"]
    health = " ".join(registry["healthcheck"]["test"])
    container_port = registry["ports"][0].split(":")[1]
    assert f"localhost:{container_port}{CCOMPAT_PATH}/subjects" in health
    for name, service in PAYSTREAM_SERVICES.items():
        url = service["environment"]["PAYSTREAM_SCHEMA_REGISTRY_URL"]
        assert url == f"http://schema-registry:{container_port}{CCOMPAT_PATH}", name
        if service.get("restart") != "no":
            assert service["depends_on"]["schema-registry"] == {"condition": "service_healthy"}, name
