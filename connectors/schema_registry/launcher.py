"""The embedded Schema Registry: Apicurio Registry, whose Confluent-compatible API
(`/apis/ccompat/v7`) is what confluent-kafka's SchemaRegistryClient talks to.

Launched like the broker (connectors/jvm.py): its Quarkus distribution comes from
Maven Central through `deploy/registry/pom.xml` (unpacked once into `home/app`), the
JVM is the machine's Java 17+, its schemas live in an H2 file under `home/data`.
Plain parameters only; no `streams` imports.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from connectors import jvm

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "registry"
POM = DEPLOY_DIR / "pom.xml"
REGISTRY_VERSION = "2.6.13.Final"  # as apicurio.version in the pom
RUNNER_JAR = f"apicurio-registry-app-{REGISTRY_VERSION}-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"

MIN_JAVA = 17
MAVEN_TIMEOUT_S = 1800  # a cold resolve downloads ~140 MB
PROBE_TIMEOUT_S = 2.0
# Two cores shared with the broker and the workers; REGISTRY_HEAP_OPTS overrides.
DEFAULT_HEAP_OPTS = "-Xmx256m -Xms64m"
JVM_OPTS = ("-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
# Confluent's default level, and what deploy/ configures: a new version must read data
# written under the old one (our history/ schemas). Apicurio's own default is no rule.
COMPATIBILITY = "BACKWARD"


class RegistryServerError(jvm.JvmError):
    """The registry could not be resolved, started or stopped."""


@dataclass(frozen=True)
class RegistryConfig:
    home: Path
    port: int = 18081
    start_timeout_s: int = 120
    maven_repo: Path | None = None  # None -> home/m2, so a clean clone needs no ~/.m2

    @property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        """What PAYSTREAM_SCHEMA_REGISTRY_URL names to use this registry."""
        return f"http://localhost:{self.port}{CCOMPAT_PATH}"

    @property
    def service(self) -> jvm.JvmService:
        return jvm.JvmService(
            "the Schema Registry", self.root, self.root / "registry.pid", self.root / "registry.log",
            RUNNER_JAR.encode(), RegistryServerError,
        )  # fmt: skip


@dataclass(frozen=True)
class RegistryStatus:
    running: bool  # our registry process (from the pid file) is alive
    answering: bool  # something answers the Confluent-compatible API on the port
    pid: int | None
    url: str
    log_file: Path
    already_running: bool = False


def registry_answers(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Does a Confluent-compatible registry answer `GET <url>/subjects` with 200?"""
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def resolve_app(cfg: RegistryConfig) -> Path:
    """Unpack the registry's distribution into home/app with Maven, once per pom version."""
    repo = cfg.maven_repo or cfg.root / "m2"
    goal = ["dependency:unpack-dependencies"]
    return jvm.maven_resolve(POM, cfg.app_dir, repo, goal, MAVEN_TIMEOUT_S, "the Schema Registry", RegistryServerError)


def java_cmd(cfg: RegistryConfig, java: str, heap: str) -> list[str]:
    props = {
        "quarkus.http.host": "127.0.0.1",  # loopback only, like the broker's listener
        "quarkus.http.port": str(cfg.port),
        # A file, not H2's default in-memory database: schema ids survive a restart,
        # and messages already written name them.
        "quarkus.datasource.jdbc.url": f"jdbc:h2:file:{cfg.data_dir / 'registry'}",
        "registry.rules.global.compatibility": COMPATIBILITY,
    }
    return [
        java,
        *heap.split(),
        *JVM_OPTS,
        *(f"-D{k}={v}" for k, v in props.items()),
        "-jar",
        str(cfg.app_dir / RUNNER_JAR),
    ]


def status(cfg: RegistryConfig) -> RegistryStatus:
    pid = jvm.running_pid(cfg.service)
    return RegistryStatus(pid is not None, registry_answers(cfg.url), pid, cfg.url, cfg.service.log_file)


def up(cfg: RegistryConfig) -> RegistryStatus:
    """Start the registry unless it runs; return once its API answers."""
    svc = cfg.service
    with jvm.locked(cfg.root):
        pid = jvm.running_pid(svc)
        if pid is not None:
            jvm.wait_answering(
                svc, lambda: registry_answers(cfg.url), cfg.url, None, pid, cfg.start_timeout_s
            )  # it may still be starting
            return RegistryStatus(True, True, pid, cfg.url, svc.log_file, already_running=True)
        if registry_answers(cfg.url):
            raise RegistryServerError(
                f"another registry (not ours: no live pid in {svc.pid_file}) answers on {cfg.url}"
            )
        java = jvm.find_java(MIN_JAVA, "the Schema Registry", RegistryServerError)
        resolve_app(cfg)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        proc: subprocess.Popen[bytes] = jvm.launch(
            svc, java_cmd(cfg, java, os.environ.get("REGISTRY_HEAP_OPTS", DEFAULT_HEAP_OPTS)), cwd=cfg.root
        )
        jvm.wait_answering(svc, lambda: registry_answers(cfg.url), cfg.url, proc, proc.pid, cfg.start_timeout_s)
        return RegistryStatus(True, True, proc.pid, cfg.url, svc.log_file)


def down(cfg: RegistryConfig, timeout_s: float = 30) -> bool:
    """Stop the registry: SIGTERM, bounded wait, then SIGKILL. False if it was not running."""
    return jvm.down(cfg.service, timeout_s)
