"""Kafka client security: PAYSTREAM_KAFKA_* settings, validated, mapped to librdkafka
keys (client_config), which every client and the worker's runtime start from;
the SASL password never shows in a repr, an error or a log."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from connectors.kafka.clients import bootstrap_of, connection
from streams.settings import Settings, client_config

PASSWORD = "s3cret-Pa55word-that-must-not-leak"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate, and a client certificate and key (PEM files)."""
    out = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paystream-worker")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = {"ca": out / "ca.pem", "cert": out / "worker.pem", "key": out / "worker.key"}
    paths["ca"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def sasl(**extra: object) -> Settings:
    return Settings(
        kafka_bootstrap="kafka-0:9093,kafka-1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="paystream-worker",
        kafka_sasl_password=PASSWORD,
        **extra,
    )


# --- settings ---


def test_the_default_is_plaintext_and_its_config_names_only_the_brokers(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert client_config(s) == {"bootstrap.servers": s.bootstrap_servers, "security.protocol": "PLAINTEXT"}


def test_sasl_scram_over_tls_from_env(env: pytest.MonkeyPatch, pems: dict[str, Path]) -> None:
    env.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "kafka-0:9093")
    env.setenv("PAYSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("PAYSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    env.setenv("PAYSTREAM_KAFKA_SASL_USERNAME", "paystream-worker")
    env.setenv("PAYSTREAM_KAFKA_SASL_PASSWORD", PASSWORD)
    env.setenv("PAYSTREAM_KAFKA_SSL_CA_FILE", str(pems["ca"]))
    assert client_config(Settings()) == {
        "bootstrap.servers": "kafka-0:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "paystream-worker",
        "sasl.password": PASSWORD,
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(pems["ca"]),
    }


def test_mutual_tls_maps_the_three_files(env: pytest.MonkeyPatch, pems: dict[str, Path]) -> None:
    s = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pems["ca"],
        kafka_ssl_cert_file=pems["cert"],
        kafka_ssl_key_file=pems["key"],
    )
    conf = client_config(s)
    assert (
        conf["security.protocol"],
        conf["ssl.ca.location"],
        conf["ssl.certificate.location"],
        conf["ssl.key.location"],
    ) == ("SSL", str(pems["ca"]), str(pems["cert"]), str(pems["key"]))
    assert not any(k.startswith("sasl.") for k in conf)


def test_sasl_plaintext_uses_no_tls_keys(env: pytest.MonkeyPatch) -> None:
    s = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password=PASSWORD,
    )
    conf = client_config(s)
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")
    assert not any(k.startswith("ssl.") for k in conf)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "needs PAYSTREAM_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": PASSWORD},
            "needs PAYSTREAM_KAFKA_SASL_USERNAME",
        ),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u", "kafka_sasl_password": ""}, "needs"),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD}, "would not use them"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": PASSWORD,
                "kafka_ssl_ca_file": "ca.pem",
            },
            "uses no TLS",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/nonexistent/ca.pem"}, "no such file"),
        ({"kafka_security_protocol": "SSL", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
    ],
)
def test_incomplete_or_contradictory_security_is_refused(env: pytest.MonkeyPatch, fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        Settings(**fields)
    assert PASSWORD not in str(raised.value)


def test_a_client_certificate_needs_its_key(env: pytest.MonkeyPatch, pems: dict[str, Path]) -> None:
    with pytest.raises(ValidationError, match="come together"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=pems["cert"])


def test_the_password_is_in_no_repr_error_or_log(env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    s = sasl()
    assert PASSWORD not in repr(s) and PASSWORD not in str(s) and PASSWORD not in repr(s.model_dump())
    assert PASSWORD not in s.model_dump_json()
    with caplog.at_level(logging.INFO):
        logging.getLogger("paystream.test").info("settings: %s %r", s, s)
    assert "paystream-worker" in caplog.text and PASSWORD not in caplog.text
    # A validation error reports what is wrong, not the input it was given.
    env.setenv("PAYSTREAM_KAFKA_SASL_PASSWORD", PASSWORD)
    env.setenv("PAYSTREAM_PARTITIONS", "0")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "partitions" in str(raised.value) and PASSWORD not in str(raised.value)


# --- connectors take a bootstrap string or the full config ---


def test_a_connection_is_a_bootstrap_string_or_client_config(env: pytest.MonkeyPatch) -> None:
    assert connection("localhost:19092") == {"bootstrap.servers": "localhost:19092"}
    conf = client_config(sasl())
    assert connection(conf) == conf and connection(conf) is not conf  # a copy the caller may extend
    assert bootstrap_of(conf) == "kafka-0:9093,kafka-1:9093"


def test_no_confluent_client_is_built_without_client_config() -> None:
    """Every Consumer/Producer/AdminClient the project builds starts from a Connection:
    a "bootstrap.servers" key written anywhere but the two helpers would skip the security settings."""
    root = Path(__file__).resolve().parents[3]
    helpers = {"streams/settings.py", "connectors/kafka/clients.py"}  # client_config, connection
    offenders = [
        f"{path}:{n}"
        for package in ("streams", "connectors")
        for p in sorted((root / package).rglob("*.py"))
        if (path := str(p.relative_to(root))) not in helpers
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if '"bootstrap.servers"' in line
    ]
    assert offenders == []


# --- the runtime's clients ---


def test_the_worker_runtime_connects_with_the_security_settings(
    env: pytest.MonkeyPatch, tmp_path: Path, pems: dict[str, Path]
) -> None:
    from streams.worker.topology import build_worker

    s = sasl(kafka_ssl_ca_file=pems["ca"], namespace="unit", data_dir=tmp_path, keys_dir=tmp_path / "keys")
    engine = build_worker(s)  # builds the clients without connecting
    assert engine.config.client == client_config(s)
    assert engine.config.client["sasl.username"] == "paystream-worker"
    assert PASSWORD not in repr(s)  # the settings' repr hides it


# --- deploy/kafka-security/clients: the documented env gives the documented client keys ---


@pytest.mark.parametrize("name", ["sasl-scram.properties", "mtls.properties"])
def test_the_documented_env_yields_the_documented_client_settings(
    env: pytest.MonkeyPatch, tmp_path: Path, pems: dict[str, Path], name: str
) -> None:
    text = (Path(__file__).resolve().parents[3] / "deploy" / "kafka-security" / "clients" / name).read_text()
    tls = "/etc/paystream/tls/"
    for target, source in (("ca.pem", "ca"), ("worker.pem", "cert"), ("worker.key", "key")):
        (tmp_path / target).write_bytes(pems[source].read_bytes())

    def real(value: str) -> str:
        return (
            value.replace("${SERVICE_PASSWORD}", PASSWORD).replace("${SERVICE}", "worker").replace(tls, f"{tmp_path}/")
        )

    for line in text.splitlines():
        if line.startswith("#   PAYSTREAM_"):
            key, value = line[4:].split("=", 1)
            env.setenv(key, PASSWORD if key.endswith("PASSWORD") else real(value.split()[0]))
    documented = {
        k: real(v) for k, v in (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    }
    conf = client_config(Settings())
    assert {k: conf.get(k) for k in documented} == documented


def test_a_worker_child_gets_the_same_security(env: pytest.MonkeyPatch, tmp_path: Path, pems: dict[str, Path]) -> None:
    from streams.client.processes import WorkerProcess

    parent = sasl(kafka_ssl_ca_file=pems["ca"], data_dir=tmp_path)
    for key, value in WorkerProcess(parent, tmp_path / "w.log").env().items():
        if key.startswith("PAYSTREAM_"):
            env.setenv(key, value)
    child = Settings()
    assert client_config(child) == client_config(parent)
