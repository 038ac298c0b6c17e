"""A pipeline worker as a child process, for the demo and the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from streams.settings import Settings

STOP_TIMEOUT_S = 30.0
#: A crash loop is MAX_RESTARTS restarts within RESTART_WINDOW_S: past that the
#: supervisor gives up. Restarts spread over a long run (a stall now and then) are not one.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 600.0


class WorkerProcess:
    """`paystream worker` in a child process with the given settings."""

    COMMAND: tuple[str, ...] = ("worker",)

    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.settings = settings
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._recent_restarts_s: deque[float] = deque(maxlen=MAX_RESTARTS)

    def env(self) -> dict[str, str]:
        s = self.settings
        # The child's Kafka security is the parent's, set in env or in code (the password as well: env is how it
        # travels).
        optional = {
            "PAYSTREAM_METRICS_PORT": s.metrics_port,
            "PAYSTREAM_PROVIDER_SCHEDULE_FILE": s.provider_schedule_file,
            "PAYSTREAM_ROUTING_LOG_DIR": s.routing_log_dir,
            "PAYSTREAM_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
            "PAYSTREAM_KAFKA_SASL_PASSWORD": s.kafka_sasl_password.get_secret_value()
            if s.kafka_sasl_password
            else None,
            "PAYSTREAM_KAFKA_SSL_CA_FILE": s.kafka_ssl_ca_file,
            "PAYSTREAM_KAFKA_SSL_CERT_FILE": s.kafka_ssl_cert_file,
            "PAYSTREAM_KAFKA_SSL_KEY_FILE": s.kafka_ssl_key_file,
            # The child switches its codecs as the parent did (streams/cli/main.py, configure).
            "PAYSTREAM_SCHEMA_REGISTRY_URL": s.schema_registry_url,
            "PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE": s.schema_registry_auth_file,
        }
        return (
            os.environ
            | {k: str(v) for k, v in optional.items() if v is not None}
            | {
                "PAYSTREAM_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                # With these the child knows every node of an embedded cluster (bootstrap_servers):
                # a worker restarted while node 1 is down still finds the other two.
                "PAYSTREAM_KAFKA_EMBEDDED_PORT": str(s.kafka_embedded_port),
                "PAYSTREAM_KAFKA_BROKERS": str(s.kafka_brokers),
                "PAYSTREAM_PARTITIONS": str(s.partitions),
                "PAYSTREAM_REPLICATION_FACTOR": str(s.replication_factor),
                "PAYSTREAM_NAMESPACE": s.namespace,
                "PAYSTREAM_WORKER_NAME": s.worker_name,
                "PAYSTREAM_SESSION_TIMEOUT_S": str(s.session_timeout_s),
                "PAYSTREAM_TRANSACTION_TIMEOUT_MS": str(s.transaction_timeout_ms),
                "PAYSTREAM_TRANSACTION_RETRY_MS": str(s.transaction_retry_ms),
                "PAYSTREAM_WORKER_STALL_S": str(s.worker_stall_s),
                "PAYSTREAM_DATA_DIR": str(s.data_dir),
                "PAYSTREAM_KEYS_DIR": str(s.keys_dir),
                "PAYSTREAM_COMMIT_INTERVAL_MS": str(s.commit_interval_ms),
                "PAYSTREAM_COMMIT_IDLE_MS": str(s.commit_idle_ms),
                "PAYSTREAM_PROVIDERS": s.providers,
                "PAYSTREAM_PROVIDER_SEED": str(s.provider_seed),
                "PAYSTREAM_PROVIDERS_DIR": str(s.providers_dir),  # workers with their own data dirs share one provider
                "PAYSTREAM_FRAUD_SCORING": str(s.fraud_scoring).lower(),
                "PAYSTREAM_ROUTING_LEARN": str(s.routing_learn).lower(),  # the whole group routes alike
                "PAYSTREAM_KAFKA_SECURITY_PROTOCOL": s.kafka_security_protocol,
                "PAYSTREAM_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
            }
        )

    def start(self) -> WorkerProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli.main", *self.COMMAND],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self, why: str = "stalled", now_s: float | None = None) -> None:
        """Kill and start again, at most MAX_RESTARTS times in RESTART_WINDOW_S; past
        that, raise with the end of its log. Safe: a restart loses nothing (tests/integration)."""
        now_s = time.monotonic() if now_s is None else now_s
        recent = self._recent_restarts_s
        if len(recent) == MAX_RESTARTS and now_s - recent[0] < RESTART_WINDOW_S:
            raise RuntimeError(
                f"worker {why} after {MAX_RESTARTS} restarts in {now_s - recent[0]:.0f}s"
                f" ({self.restarts} in all):\n{self.log_tail()}"
            )
        recent.append(now_s)
        self.restarts += 1
        self.kill()
        self.start()

    def supervise(self) -> None:
        """Restart the worker if it exited (a stall makes it exit on purpose)."""
        if self.proc is not None and not self.alive():
            self.restart(f"exited with code {self.proc.returncode}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApiProcess(WorkerProcess):
    """`paystream api` in a child process (the HTTP bench), on the settings' host,
    port and rate limits."""

    COMMAND = ("api",)

    def env(self) -> dict[str, str]:
        s = self.settings
        return super().env() | {
            "PAYSTREAM_API_HOST": s.api_host,
            "PAYSTREAM_API_PORT": str(s.api_port),
            "PAYSTREAM_API_RATE_PER_S": str(s.api_rate_per_s),
            "PAYSTREAM_API_RATE_BURST": str(s.api_rate_burst),
            "PAYSTREAM_API_RATE_QUEUE_MAX": str(s.api_rate_queue_max),
            "PAYSTREAM_API_OUTCOME_TIMEOUT_MS": str(s.api_outcome_timeout_ms),
            "PAYSTREAM_API_MAX_IN_FLIGHT": str(s.api_max_in_flight),
        }


class SchedulerProcess(WorkerProcess):
    """`paystream scheduler run` in a child process, with the settings' clock and jobs."""

    COMMAND = ("scheduler", "run")

    def env(self) -> dict[str, str]:
        s = self.settings
        extra = {
            "PAYSTREAM_SCHEDULER_TICK_INTERVAL_S": str(s.scheduler_tick_interval_s),
            "PAYSTREAM_SCHEDULER_TICK_LAG_S": str(s.scheduler_tick_lag_s),
            "PAYSTREAM_SCHEDULER_JOBS": s.scheduler_jobs,
            "PAYSTREAM_SCHEDULER_JOBS_DELAY_S": str(s.scheduler_jobs_delay_s),
            "PAYSTREAM_SCHEDULER_JOBS_CHECK_S": str(s.scheduler_jobs_check_s),
            "PAYSTREAM_CLICKHOUSE_URL": s.clickhouse_url,
            "PAYSTREAM_CLICKHOUSE_DATABASE": s.clickhouse_database,
        }
        return super().env() | extra


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true or the deadline; the one way we wait on a condition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
