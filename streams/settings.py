"""The one settings object. Every knob is read here from `PAYSTREAM_*` env vars.

Secrets are held as paths to key files or, the Kafka SASL password alone, as a
pydantic SecretStr (its repr is `**********`), so a repr of the settings is safe to log.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.kafka.launcher import ClusterConfig
from connectors.schema_registry.launcher import CCOMPAT_PATH
from schemas.money import is_currency

#: The default bootstrap, where the embedded broker listens (PAYSTREAM_KAFKA_EMBEDDED_PORT moves it).
EMBEDDED_BOOTSTRAP = "localhost:19092"


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error would otherwise print the whole input, SASL password included.
    model_config = SettingsConfigDict(env_prefix="PAYSTREAM_", extra="ignore", hide_input_in_errors=True)

    # Kafka
    kafka_bootstrap: str = Field(
        EMBEDDED_BOOTSTRAP,
        description="Kafka bootstrap servers; the embedded broker unless set to an external cluster.",
    )
    kafka_controller_port: int = Field(19093, ge=1024, le=65535)
    # The port our embedded broker listens on: a bootstrap of exactly localhost:<this>
    # is ours to start and stop. Change it (with the bootstrap) to run a second embedded
    # broker beside another; a broker of docker-compose on localhost:9092 stays external.
    kafka_embedded_port: int = Field(19092, ge=1024, le=65535)
    kafka_start_timeout_s: int = Field(120, ge=5, le=1800)
    # Nodes of the embedded cluster (`paystream kafka up --brokers 3`); 1 is the single node.
    kafka_brokers: int = Field(1, ge=1, le=5)
    # A worker's commit writes one partition per output topic and owned partition, so its
    # latency grows with the partitions it owns: 4 on one box (docs/decisions.md, Partition budget).
    partitions: int = Field(4, ge=1, le=256, description="Partitions of each pipeline topic.")
    # Unset: 1 on one embedded node, 3 on an embedded cluster (with min.insync.replicas 2).
    replication_factor: int = Field(1, ge=1, le=5)
    # A worker commits its transaction this often (or at commit_records_max): each hop's
    # output is visible to read_committed readers only then, so it bounds latency per hop
    # (docs/performance.md says how the default was measured).
    commit_interval_ms: int = Field(50, ge=1, le=30_000)
    # ... and a worker with nothing more to read commits once its transaction is this old
    # (at most the interval): at low load a hop costs its commit, not half an interval.
    commit_idle_ms: int = Field(5, ge=0, le=30_000)
    # Security of an external cluster (deploy/kafka-security/): SASL/SCRAM over TLS, or
    # mutual TLS. Every client applies it: client_config() for confluent-kafka,
    # the runtime's and every tool's. The password is never printed or logged.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = Field(None, min_length=1, max_length=255)
    kafka_sasl_password: SecretStr | None = None
    # PEM files. No CA file: the system's trust store verifies the brokers. A certificate
    # and its key (mTLS) come together.
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    # A changelog's open segment rolls after this long, so the log cleaner can compact it:
    # the cleaner never touches the open segment, and the 7-day default kept every version
    # of every key, so a restart replayed the whole history (the keys table rewrites its
    # merchant's state on each command: 35,000 records for a handful of keys). Recovery
    # then reads about one record per live key (docs/reliability.md, Recovery time).
    changelog_segment_ms: int = Field(60_000, ge=10_000, le=7 * 24 * 3600 * 1000)

    # Schema Registry: when set, codecs write the Confluent wire format (schemas/codec.py).
    schema_registry_url: str | None = Field(None, pattern=r"^https?://\S+$")
    # A file holding "user:password" for the registry's basic auth (never the secret itself here).
    schema_registry_auth_file: Path | None = None
    # The embedded registry (`paystream registry up`) listens here: a URL of exactly
    # http://localhost:<this>/apis/ccompat/v7 is ours to start and stop.
    schema_registry_embedded_port: int = Field(18081, ge=1024, le=65535)
    schema_registry_start_timeout_s: int = Field(120, ge=5, le=1800)
    # A process starting with the URL set waits this long for the registry to answer.
    schema_registry_wait_s: float = Field(60.0, ge=0, le=600)

    # Local state
    data_dir: Path = Path("var")
    keys_dir: Path = Path("var/keys")
    # Producers seal cards to this exported card-intake public key (`paystream keys
    # intake-public`); unset, they read the active one from keys_dir (one machine).
    intake_public_key_file: Path | None = None
    # Ingest accepts raw `card` data from producers that do not seal yet (PaymentCommand
    # before v5). Off: refused with raw_card_refused (docs/security.md, Card intake).
    ingest_accept_raw_card: bool = True
    # The vault (connectors/vault/topic.py): every worker keeps at most this many sealed
    # cards of the card-vault topic in memory (a record is about 430 bytes: 100,000 take
    # about 45 MB); a card not held is read from its partition within vault_read_through_s.
    vault_cache_max_cards: int = Field(100_000, ge=1, le=10_000_000)
    vault_read_through_s: float = Field(5.0, ge=0.5, le=60.0)

    # Workers. A namespace gives tests (or a second environment on one cluster) their
    # own topics, consumer group and changelogs.
    namespace: str = Field("", pattern=r"^[a-z0-9-]{0,32}$")
    # Names this worker's local state dir, so several workers can share one machine.
    worker_name: str = Field("w0", pattern=r"^[a-z0-9-]{1,32}$")
    # How soon a dead worker's partitions move to the others.
    session_timeout_s: float = Field(10.0, ge=6, le=300)
    # The transactional producer's transaction.timeout.ms: a record must be delivered
    # within it (a partition leader dying takes ~10 s to move on a cluster), and a worker
    # that died holding a transaction blocks its partitions' next owner until the broker
    # aborts it after this long (docs/reliability.md, finding 8, for the figures). At
    # most the broker's transaction.max.timeout.ms (15 min by default).
    transaction_timeout_ms: int = Field(30_000, ge=2_000, le=900_000)
    # How long the runtime retries one transactional call's retriable errors before it
    # exits for a restart; below the transaction timeout (streams/runtime/txn.py).
    transaction_retry_ms: int = Field(20_000, ge=1_000, le=600_000)
    # A worker that is ready (tables restored) and sees a source partition with lag whose
    # committed offset has not moved for this long exits for a restart (streams/worker/probes.py).
    worker_stall_s: float = Field(60.0, ge=10, le=3600)

    # ClickHouse read models: chdb:///<dir> (in-process) or http(s)://host:8123.
    # Empty: chDB under the data dir (see connectors/clickhouse/client.py).
    clickhouse_url: str = ""
    # Default: "paystream", or "paystream_<namespace>" so a namespace's read models are its own.
    clickhouse_database: str = Field("", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")

    # Payment providers: `rails` routes over the simulated rails (connectors/providers/
    # rails.toml) with breakers and failover; `test` is the one deterministic test-mode
    # provider (every card approves except the documented test cards), for suites that
    # assert exact outcomes. The seed makes a rails run repeatable.
    providers: Literal["rails", "test"] = "rails"
    provider_seed: int = Field(0, ge=0, le=2**31 - 1)
    # The rails' own books (connectors/providers/journal.py): the workers of one
    # machine share them, as they share an external provider. Unset: <data_dir>/providers.
    providers_dir: Path | None = None
    # Outage/degradation windows per rail, by event time (rails.load_schedules), for
    # chaos runs (`paystream demo --chaos-providers` writes one); unset: none.
    provider_schedule_file: Path | None = None
    # When set, each worker appends the router's decisions (attempts, failovers, breaker
    # transitions) to <dir>/<worker_name>.jsonl (connectors/providers/routing_log.py);
    # what the rails processed is in their journals under providers_dir.
    routing_log_dir: Path | None = None
    # The learning router (docs/routing.md): Thompson sampling over approvals per segment,
    # cost-aware, the rule router its fallback. Every worker of a group must agree (a
    # redelivered create must take the route it took), so change it with the group stopped.
    routing_learn: bool = False

    # Business limits
    max_amount_minor: int = Field(10**15, ge=1, le=2**63 - 1)  # an Avro long
    idempotency_key_max_len: int = Field(255, ge=1, le=1024)
    # Uncaptured authorizations expire this long after creation (event time).
    auth_window_h: int = Field(7 * 24, ge=1, le=31 * 24)
    # Prometheus /metrics on this port (deploy/ sets 9108); unset: not served.
    metrics_port: int | None = Field(None, ge=1024, le=65535)
    # Fraud scoring before authorization (the risk stage); off: creates go straight to payments.
    fraud_scoring: bool = True
    # A payment's follow-ups travel its create's path (through the risk stage) this long
    # after the create, by event time: the refund and dispute window.
    follow_up_route_days: int = Field(180, ge=1, le=730)
    # Idempotency records are kept at least this long (event time), then swept.
    idempotency_retention_h: int = Field(24, ge=24, le=30 * 24)

    # Bounds (docs/reliability.md lists every bound, these and the fixed ones).
    # The runtime's Kafka clients (streams/runtime/engine.py) take these.
    # Records one consume returns: a batch, handled before the next (and ingest's new
    # cards reach the card-vault topic in that batch's transaction).
    batch_max: int = Field(2_000, ge=1, le=100_000)
    # Records one transaction may carry before it commits early.
    commit_records_max: int = Field(20_000, ge=1, le=1_000_000)
    # Per partition per fetch; at least the largest message (schemas.codec.MAX_MESSAGE_BYTES).
    consumer_max_fetch_size_bytes: int = Field(1_048_576, ge=1_048_576, le=64 * 1_048_576)
    producer_max_batch_size_bytes: int = Field(1_000_000, ge=1_024, le=16 * 1_048_576)
    producer_linger_ms: int = Field(0, ge=0, le=1_000)
    # The worker's transactional producer: its records wait this long to fill a batch, and
    # never past the commit, which sends them at once (they are read only after it anyway).
    # One commit interval: a transaction's records to a partition go in one request
    # (against 5 ms and 0: docs/performance.md).
    worker_linger_ms: int = Field(50, ge=0, le=1_000)
    # One produce request; room for the largest message a stage sends plus its batch overhead.
    producer_max_request_size_bytes: int = Field(1_100_000, ge=1_100_000, le=16 * 1_048_576)
    # Messages the command producer (confluent-kafka) queues before produce() blocks.
    producer_queue_max_messages: int = Field(100_000, ge=1, le=10_000_000)
    # Pure stages.
    # Timers fired per event and queue (streams.domain.timers.SWEEP_MAX is the default).
    timer_sweep_max: int = Field(8, ge=1, le=1_024)
    # Follow-up operations per payment (streams.domain.payments.MAX_FOLLOW_UPS is the default).
    payment_max_follow_ups: int = Field(100, ge=1, le=1_000)
    # The network's fee per dispute, in minor units of the payment's currency
    # (streams.domain.payments.DISPUTE_FEE_MINOR is the default; docs/payments.md, Disputes).
    dispute_fee_minor: int = Field(1_500, ge=0, le=10**9)
    # A 3DS step-up answered U (authentication could not be performed): authorize without
    # a liability shift, or decline (streams.domain.payments.three_ds_verdict; docs/fraud.md).
    three_ds_unavailable: Literal["authorize", "decline"] = "authorize"
    # Refuse creates of merchants absent from the registry (streams/domain/merchants.py);
    # off by default so unregistered (demo) merchants keep working.
    merchants_require_registration: bool = False
    # What a merchant whose KYC is pending may take per event-time UTC day, per currency,
    # in minor units (JSON: '{"USD": 500000}'); a currency absent or 0: refused until
    # verified (streams/domain/kyc_limits.py; docs/compliance.md).
    kyc_pending_daily_cap_minor: dict[str, int] = Field(default_factory=dict)
    # Transaction monitoring's thresholds that differ from the documented defaults
    # (streams.domain.monitoring.Thresholds, docs/compliance.md), JSON: '{"device_cards": 3,
    # "reporting_threshold_minor": {"USD": 1000000}}'. The worker refuses to start on a bad one.
    monitoring_thresholds: dict[str, int | dict[str, int]] = Field(default_factory=dict)
    # ClickHouse sink (connectors/clickhouse/sink.py: Batcher, Sink; the caps are its MAX_*).
    clickhouse_batch_max_rows: int = Field(10_000, ge=1, le=1_000_000)
    clickhouse_batch_max_wait_ms: int = Field(1_000, ge=0, le=60_000)
    clickhouse_insert_attempts: int = Field(8, ge=1, le=20)
    # Webhook retries (connectors/webhooks/delivery.py: Backoff); given up after this much event time.
    webhook_backoff_base_s: int = Field(30, ge=1, le=3_600)
    webhook_backoff_max_delay_s: int = Field(6 * 3600, ge=1, le=86_400)
    webhook_give_up_after_s: int = Field(3 * 86_400, ge=60, le=30 * 86_400)

    # The scheduler (`paystream scheduler run`, streams/jobs/scheduler.py; docs/decisions.md, Scheduler): the one
    # process that turns the wall clock into event time. Every interval it publishes a tick on every
    # partition of clock at (wall clock - lag): commands stamped up to `lag` late still land before the
    # timers they could beat (a capture before its expiry), and no tick is ever ahead of the wall clock.
    scheduler_tick_interval_s: float = Field(30.0, ge=0.1, le=3_600)
    scheduler_tick_lag_s: float = Field(120.0, ge=0, le=24 * 3600)
    # Daily jobs (settle, kyc_reverify, payouts, providers_report, reconcile, comma-separated; empty:
    # ticks only): a day's jobs run once the clock is this far past the day's end (late commands and
    # the sink settle first), each job and day at most once; the jobs are checked every `jobs_check_s`.
    scheduler_jobs: str = Field(
        "settle,kyc_reverify,payouts,providers_report,reconcile",
        pattern=r"^((settle|kyc_reverify|payouts|providers_report|reconcile)"
        r"(,(settle|kyc_reverify|payouts|providers_report|reconcile))*)?$",
    )
    scheduler_jobs_delay_s: int = Field(3_600, ge=0, le=7 * 86_400)
    scheduler_jobs_check_s: float = Field(60.0, ge=0.1, le=86_400)
    # Missed days run after downtime, at most this many back; older ones are logged for a manual run.
    scheduler_catch_up_days: int = Field(7, ge=1, le=90)
    # Attempts per job and day in one scheduler process before it waits for a restart (or an operator).
    scheduler_job_attempts: int = Field(3, ge=1, le=20)

    # Merchant HTTP API (streams/api, docs/api.md). Loopback unless told otherwise.
    api_host: str = Field("127.0.0.1", min_length=1, max_length=255)
    api_port: int = Field(8080, ge=1024, le=65535)
    # A write waits this long for its committed outcome, then answers 202 with a status URL.
    api_outcome_timeout_ms: int = Field(10_000, ge=100, le=120_000)
    api_max_body_bytes: int = Field(16_384, ge=1_024, le=1_048_576)
    # Per API key: sustained rate, burst, and requests that may wait for a token before 429.
    api_rate_per_s: float = Field(50.0, gt=0, le=100_000)
    api_rate_burst: int = Field(100, ge=1, le=100_000)
    api_rate_queue_max: int = Field(20, ge=0, le=10_000)
    # Writes awaiting an outcome in one process; idempotency records one process keeps.
    api_max_in_flight: int = Field(10_000, ge=1, le=1_000_000)
    api_idempotency_records_max: int = Field(100_000, ge=100, le=10_000_000)
    # The dashboard (/dashboard, docs/api.md): a file holding the ops token (unset: only
    # merchants' keys log in), and the workers' /metrics URLs, comma-separated, for the
    # breaker states (unset: http://127.0.0.1:<metrics_port>/metrics when that is set).
    dashboard_token_file: Path | None = None
    dashboard_metrics_urls: str = Field("", pattern=r"^(https?://[^,\s]+(,https?://[^,\s]+)*)?$")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("PAYSTREAM_KAFKA_BOOTSTRAP must not be empty")
        return v.strip()

    @field_validator("kyc_pending_daily_cap_minor")
    @classmethod
    def _caps_are_currencies_and_longs(cls, v: dict[str, int]) -> dict[str, int]:

        for currency, cap in v.items():
            if not is_currency(currency) or not 0 <= cap <= 2**63 - 1:
                raise ValueError("kyc_pending_daily_cap_minor: ISO 4217 codes to minor units in 0..2**63-1")
        return v

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if (
                not self.kafka_sasl_username
                or not self.kafka_sasl_password
                or not self.kafka_sasl_password.get_secret_value()
            ):
                raise ValueError(
                    f"PAYSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs PAYSTREAM_KAFKA_SASL_USERNAME "
                    "and PAYSTREAM_KAFKA_SASL_PASSWORD"
                )
        elif self.kafka_sasl_username or self.kafka_sasl_password is not None:
            raise ValueError(
                f"SASL credentials are set but PAYSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} would not use them"
            )
        files = {
            "PAYSTREAM_KAFKA_SSL_CA_FILE": self.kafka_ssl_ca_file,
            "PAYSTREAM_KAFKA_SSL_CERT_FILE": self.kafka_ssl_cert_file,
            "PAYSTREAM_KAFKA_SSL_KEY_FILE": self.kafka_ssl_key_file,
        }
        given = [name for name, path in files.items() if path is not None]
        if given and not protocol.endswith("SSL"):
            raise ValueError(f"{', '.join(given)} set but PAYSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS")
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError(
                "PAYSTREAM_KAFKA_SSL_CERT_FILE and PAYSTREAM_KAFKA_SSL_KEY_FILE come together (mutual TLS)"
            )
        missing = [f"{name}={files[name]}" for name in given if not files[name].is_file()]
        if missing:
            raise ValueError(f"no such file: {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _idle_commit_within_the_interval(self) -> Settings:
        if self.commit_idle_ms > self.commit_interval_ms:
            raise ValueError("PAYSTREAM_COMMIT_IDLE_MS must not exceed PAYSTREAM_COMMIT_INTERVAL_MS")
        return self

    @model_validator(mode="after")
    def _transaction_retries_end_before_its_timeout(self) -> Settings:
        if self.transaction_retry_ms >= self.transaction_timeout_ms:
            raise ValueError(
                "PAYSTREAM_TRANSACTION_RETRY_MS must be below PAYSTREAM_TRANSACTION_TIMEOUT_MS:"
                " past the timeout the broker aborts the transaction anyway"
            )
        return self

    @model_validator(mode="after")
    def _default_clickhouse_url(self) -> Settings:
        if not self.clickhouse_url.strip():
            # chDB wants an absolute directory: chdb:///var/... would be /var.
            self.clickhouse_url = f"chdb://{(self.data_dir / 'clickhouse').resolve()}"
        return self

    @model_validator(mode="after")
    def _default_clickhouse_database(self) -> Settings:
        if not self.clickhouse_database:
            self.clickhouse_database = "paystream" + (f"_{self.namespace.replace('-', '_')}" if self.namespace else "")
        return self

    @property
    def reports_dir(self) -> Path:
        """Where the providers' settlement reports go (`<dir>/<day>/<rail>.csv`), per namespace."""
        return self.data_dir / "settlement-reports" / (self.namespace or "")

    @model_validator(mode="after")
    def _default_providers_dir(self) -> Settings:
        if self.providers_dir is None:
            # A namespace is a deployment of its own: its providers' books are its own too.
            self.providers_dir = self.data_dir / "providers" / (self.namespace or "")
        return self

    @model_validator(mode="after")
    def _replication_follows_the_embedded_cluster(self) -> Settings:
        if self.kafka_embedded and self.kafka_brokers > 1 and self.kafka_brokers < 3:
            raise ValueError("PAYSTREAM_KAFKA_BROKERS is 1 (one node) or 3-5 (a cluster)")
        if self.kafka_embedded and "replication_factor" not in self.model_fields_set:
            self.replication_factor = min(3, self.kafka_brokers)
        return self

    @property
    def bootstrap_servers(self) -> str:
        """Every node of the embedded cluster (a client that starts while node 1 is
        down still finds the others), else PAYSTREAM_KAFKA_BOOTSTRAP as given."""
        if not self.kafka_embedded or self.kafka_brokers == 1:
            return self.kafka_bootstrap

        port = int(self.kafka_bootstrap.rsplit(":", 1)[1])
        return ClusterConfig(self.kafka_dir, self.kafka_brokers, port).bootstrap

    @property
    def kafka_embedded(self) -> bool:
        return self.kafka_bootstrap == f"localhost:{self.kafka_embedded_port}"

    @property
    def app_id(self) -> str:
        return f"paystream-{self.namespace}" if self.namespace else "paystream"

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def schema_registry_embedded_url(self) -> str:

        return f"http://localhost:{self.schema_registry_embedded_port}{CCOMPAT_PATH}"

    @property
    def schema_registry_dir(self) -> Path:
        return self.data_dir / "schema-registry"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state" / self.app_id / self.worker_name


def client_config(settings: Settings) -> dict[str, str]:
    """librdkafka's connection settings (bootstrap and security) for a confluent-kafka
    client; every Consumer, Producer and AdminClient starts from these. Holds the SASL
    password in clear: pass it to the client, never to a log."""
    conf = {"bootstrap.servers": settings.bootstrap_servers, "security.protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_username and settings.kafka_sasl_password is not None  # the validator's promise
        conf |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password.get_secret_value(),
        }
    if settings.kafka_security_protocol.endswith("SSL"):
        # Verify the broker's name against its certificate (librdkafka's default since 2.0, said out loud).
        conf["ssl.endpoint.identification.algorithm"] = "https"
        for key, path in (
            ("ssl.ca.location", settings.kafka_ssl_ca_file),
            ("ssl.certificate.location", settings.kafka_ssl_cert_file),
            ("ssl.key.location", settings.kafka_ssl_key_file),
        ):
            if path is not None:
                conf[key] = str(path)
    return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
