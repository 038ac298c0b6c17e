"""The embedded Kafka broker: real Apache Kafka in KRaft mode, one combined node.

Jars come from Maven Central through `deploy/kafka/pom.xml` (resolved once into
`home/libs`), the JVM is the machine's Java 17+, data lives in `home/data`.
Plain parameters only; no `streams` imports.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from connectors.kafka.admin import POLL_INTERVAL_S, broker_answers

#: deploy/kafka in the source tree: the pom and the log4j2 config.
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM = DEPLOY_DIR / "pom.xml"
LOG4J2_CONFIG = DEPLOY_DIR / "log4j2.properties"

MIN_JAVA = 17
MAVEN_TIMEOUT_S = 1800  # a cold resolve downloads ~45 MB
LOG_TAIL_LINES = 20
# The machine has 2 cores shared with workers and ClickHouse: a small heap, G1 as in
# kafka-run-class. KAFKA_HEAP_OPTS overrides the heap like it does for kafka-server-start.
DEFAULT_HEAP_OPTS = "-Xmx1g -Xms256m"
JVM_OPTS = ("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")


class BrokerError(RuntimeError):
    """The broker could not be resolved, formatted, started or stopped."""


@dataclass(frozen=True)
class BrokerConfig:
    home: Path
    port: int = 19092
    controller_port: int = 19093
    start_timeout_s: int = 120
    maven_repo: Path | None = None  # None -> home/m2, so a clean clone needs no ~/.m2

    @property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def libs_dir(self) -> Path:
        return self.root / "libs"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "broker.log"

    @property
    def properties_file(self) -> Path:
        return self.root / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool  # our broker process (from the pid file) is alive
    answering: bool  # something answers metadata requests on the bootstrap
    pid: int | None
    bootstrap: str
    log_file: Path
    already_running: bool = False


def render_server_properties(cfg: BrokerConfig) -> str:
    """server.properties for one KRaft node that is both broker and controller."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static voters: ports may change between runs without reformatting the data
        # dir (a --standalone dynamic quorum records the controller endpoint at format).
        "controller.quorum.voters": f"1@localhost:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://localhost:{cfg.port},CONTROLLER://localhost:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://localhost:{cfg.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(cfg.data_dir),
        "num.partitions": "8",
        "auto.create.topics.enable": "false",
        # One node: every internal topic (offsets, transactions, share state) gets RF 1.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        "default.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Two cores: fewer request threads than the defaults (3 network, 8 io).
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _new_cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding; Kafka
    # itself rerolls ids starting with '-' so they never look like a CLI flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError(f"Java {MIN_JAVA}+ is needed for Kafka: no java found (set JAVA_HOME or put java on PATH)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise BrokerError(f"cannot read the Java version from `{java} -version`: {out.strip()!r}")
    # Java 8 and older report "1.8.0_x"; 9+ report the feature release first.
    major = int(match[2]) if match[1] == "1" and match[2] else int(match[1])
    if major < MIN_JAVA:
        raise BrokerError(f"Kafka 4 needs Java {MIN_JAVA}+, but {java} is Java {major} (set JAVA_HOME)")
    return java


def _java_cmd(cfg: BrokerConfig, java: str, main: str, *args: str, heap: str) -> list[str]:
    return [
        java,
        *heap.split(),
        *JVM_OPTS,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        "-cp",
        f"{cfg.libs_dir}/*",  # a JVM class-path wildcard, not a shell glob
        main,
        *args,
    ]


def resolve_jars(cfg: BrokerConfig) -> Path:
    """Copy the broker's runtime jars into home/libs with Maven, once per pom version."""
    marker = cfg.libs_dir / ".resolved"
    # The marker holds the pom's hash, so any pin change (Kafka, log4j) re-resolves.
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == pom_hash:
        return cfg.libs_dir
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka jars from Maven Central: put mvn on PATH")
    repo = (cfg.maven_repo or cfg.root / "m2").resolve()
    staging = cfg.root / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), f"-Dmaven.repo.local={repo}",
        "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise BrokerError(f"Maven could not resolve the Kafka jars ({' '.join(cmd)}):\n{tail}")
    # Swap the whole dir: jars of two Kafka versions on one class path would mix.
    shutil.rmtree(cfg.libs_dir, ignore_errors=True)
    staging.rename(cfg.libs_dir)
    marker.write_text(pom_hash + "\n")
    return cfg.libs_dir


def _alive(pid: int) -> bool:
    """Is `pid` a live Kafka broker? Reaps it first if it is our own exited child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Guards against pid reuse after a crash; also a zombie's cmdline is empty.
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.parent.exists() or b"kafka.Kafka" in cmdline.read_bytes()


def _running_pid(cfg: BrokerConfig) -> int | None:
    """The broker's pid from the pid file; a stale pid file is removed."""
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        cfg.pid_file.unlink(missing_ok=True)
        return None
    if _alive(pid):
        return pid
    cfg.pid_file.unlink(missing_ok=True)
    return None


@contextmanager
def _locked(cfg: BrokerConfig) -> Iterator[None]:
    # Two concurrent `up`s would both launch a JVM and fight over the pid file.
    cfg.root.mkdir(parents=True, exist_ok=True)
    with open(cfg.root / ".launcher.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _log_excerpt(cfg: BrokerConfig) -> str:
    """The log's first error lines and its last lines.

    A failed start ends in pages of shutdown chatter; the cause (a bind error, a bad
    config) is the first ERROR and its "Caused by" chain, long before the tail.
    """
    try:
        lines = cfg.log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    tail = lines[-LOG_TAIL_LINES:]
    errors = [ln for ln in lines if " ERROR " in ln or " FATAL " in ln or ln.startswith("Caused by:")]
    if not errors:
        return "\n".join(tail)
    return "\n".join(["first errors:", *errors[:LOG_TAIL_LINES // 2], "last lines:", *tail])


def status(cfg: BrokerConfig) -> BrokerStatus:
    pid = _running_pid(cfg)
    return BrokerStatus(
        running=pid is not None,
        answering=broker_answers(cfg.bootstrap),
        pid=pid,
        bootstrap=cfg.bootstrap,
        log_file=cfg.log_file,
    )


def _format_storage(cfg: BrokerConfig, java: str) -> None:
    if (cfg.data_dir / "meta.properties").exists():
        return
    cmd = _java_cmd(
        cfg, java, "kafka.tools.StorageTool",
        "format", "--cluster-id", _new_cluster_id(), "--config", str(cfg.properties_file),
        heap="-Xmx256m",
    )  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.start_timeout_s, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"formatting {cfg.data_dir} failed:\n{proc.stdout}{proc.stderr}")


def _wait_answering(cfg: BrokerConfig, proc: subprocess.Popen[bytes] | None, pid: int) -> None:
    deadline = time.monotonic() + cfg.start_timeout_s
    while not broker_answers(cfg.bootstrap):
        exited = proc.poll() is not None if proc else not _alive(pid)
        if exited:
            cfg.pid_file.unlink(missing_ok=True)
            raise BrokerError(f"Kafka exited during startup; see {cfg.log_file}:\n{_log_excerpt(cfg)}")
        if time.monotonic() >= deadline:
            tail = _log_excerpt(cfg)
            _stop(cfg, pid, timeout_s=30)  # `up` leaves an answering broker or none
            raise BrokerError(
                f"Kafka did not answer on {cfg.bootstrap} within {cfg.start_timeout_s}s;"
                f" stopped it; see {cfg.log_file}:\n{tail}"
            )
        time.sleep(POLL_INTERVAL_S)


def up(cfg: BrokerConfig) -> BrokerStatus:
    """Start the broker unless it runs; return once it answers metadata requests."""
    with _locked(cfg):
        pid = _running_pid(cfg)
        if pid is not None:
            _wait_answering(cfg, None, pid)  # it may still be starting
            return BrokerStatus(True, True, pid, cfg.bootstrap, cfg.log_file, already_running=True)
        if broker_answers(cfg.bootstrap):
            raise BrokerError(f"another Kafka (not ours: no live pid in {cfg.pid_file}) answers on {cfg.bootstrap}")

        java = _java()
        resolve_jars(cfg)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        cfg.properties_file.write_text(render_server_properties(cfg))
        _format_storage(cfg, java)

        if cfg.log_file.exists():  # keep the previous run's log for post-mortems
            cfg.log_file.replace(cfg.log_file.with_suffix(".log.1"))
        heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS)
        with open(cfg.log_file, "wb") as log:
            proc = subprocess.Popen(
                _java_cmd(cfg, java, "kafka.Kafka", str(cfg.properties_file), heap=heap),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cfg.root,
                start_new_session=True,  # outlives the CLI and its Ctrl-C
            )
        cfg.pid_file.write_text(f"{proc.pid}\n")
        _wait_answering(cfg, proc, proc.pid)
        return BrokerStatus(True, True, proc.pid, cfg.bootstrap, cfg.log_file)


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # it may exit between our check and the kill
        os.kill(pid, sig)


def _stop(cfg: BrokerConfig, pid: int, timeout_s: float) -> None:
    _signal(pid, signal.SIGTERM)  # Kafka shuts down cleanly on SIGTERM
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid):
            if time.monotonic() >= deadline:
                raise BrokerError(f"Kafka (pid {pid}) survived SIGKILL")
            time.sleep(POLL_INTERVAL_S)
    cfg.pid_file.unlink(missing_ok=True)


def down(cfg: BrokerConfig, timeout_s: float = 60) -> bool:
    """Stop the broker: SIGTERM, bounded wait, then SIGKILL. False if it was not running."""
    with _locked(cfg):
        pid = _running_pid(cfg)
        if pid is None:
            return False
        _stop(cfg, pid, timeout_s)
        return True
