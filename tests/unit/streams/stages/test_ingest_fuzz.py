"""Fuzz of the ingest edge (issue 11, item 2).

Hostile and valid messages, interleaved, go through the pure stages exactly as the
agents chain them (streams/app.py): ingest -> keys -> payments, each hop through
its Avro codec and the partition the agent would send to, over dict tables. Every
message must end as exactly one of: a dead letter with a reason, a rejection
outcome with a reason code, or a success outcome; nothing raises (an exception in
an agent stops its partition); every valid command succeeds; no PAN reaches a dead
letter, an outcome, an event, a forwarded command, a table or a log record.

`FUZZ_EXAMPLES` raises the example count (default modest, so the suite stays fast).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.vault.tokenizer import Tokenizer
from schemas.codec import MAX_MESSAGE_BYTES, Codec, load_schema
from schemas.ids import derive_payment_id
from schemas.partitioning import partition_for
from streams.domain.payments import Policy
from streams.stages import idempotency as key_stage
from streams.stages.ingest import (
    DLQ_RAW_MAX_BYTES,
    DeadLetter,
    Forward,
    Limits,
    Source,
    command_key,
    dead_letter,
    ingest,
)
from streams.stages.payments import DEDUP, EVENTS, OUTCOMES, PAYMENTS, SELF, TIMERS, Tables, handle
from tests.unit.streams.conftest import saga_of

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
PARTITIONS = 4
TOKENIZER = Tokenizer(b"f" * 32, "t1")
LIMITS = Limits(max_amount_minor=10**15, idempotency_key_max_len=255, partitions=PARTITIONS)
RETENTION = timedelta(hours=24)
# Longer than the timers' MAX_FUTURE_SKEW_MS (30 days): a hostile command dated far
# ahead moves its partition's watermark up to that skew, which with the default 7-day
# window would expire valid authorizations early (docs/reliability.md, open items).
POLICY = Policy(auth_window=timedelta(days=31))
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)

COMMANDS = Codec("PaymentCommand")
VALIDATED = Codec("ValidatedCommand")
OUTCOME = Codec("PaymentOutcome")
EVENT = Codec("PaymentEvent")
DLQ = Codec("DeadLetter")
STREAM_CODECS = {OUTCOMES: OUTCOME, EVENTS: EVENT, SELF: VALIDATED}

# Luhn-valid test PANs of known brands; any of them anywhere in the output is a leak.
PANS = ("4242424242424242", "5555555555554444", "378282246310005", "6011111111111117", "4000056655665556")
VALID_MERCHANT = "m_valid"


# A PAN as a token of its own, digits grouped by spaces or dashes or not: what
# `schemas.cards.contains_pan` refuses. A PAN glued to letters or other digits
# ("ref4242...", "04242...") is deliberately not refused there (ids such as hex UUIDs
# would be, by accident); the dead-letter masking catches those too.
_LEAKS = [re.compile("(?<![0-9A-Za-z])" + "[ -]?".join(pan) + "(?![0-9A-Za-z])") for pan in PANS]


def assert_no_pan(text: str, what: object) -> None:
    # Digits of any script by value: a PAN in Arabic-Indic or fullwidth digits is a PAN.
    ascii_digits = "".join(str(int(c)) if c.isdecimal() else c for c in text)
    for pattern in _LEAKS:
        assert not pattern.search(ascii_digits), f"a PAN leaked: {what!r}"


# --- the pipeline, as the agents drive it --------------------------------------


@dataclass
class Result:
    dlq: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    skipped: bool = False


@dataclass
class Pipeline:
    keys: dict[bytes, bytes] = field(default_factory=dict)
    tables: dict[str, dict[bytes, bytes]] = field(default_factory=lambda: {PAYMENTS: {}, DEDUP: {}, TIMERS: {}})
    offsets: itertools.count = field(default_factory=itertools.count)
    # Everything the stages wrote or sent, for the PAN check.
    written: list[bytes] = field(default_factory=list)

    def publish(self, raw: bytes | None, key: bytes | None, partition: int, ts_ms: int) -> Result:
        source = Source("payment-commands", partition, next(self.offsets), ts_ms, key)
        result = ingest(raw, source, TOKENIZER, LIMITS)
        if isinstance(result, DeadLetter):
            return self._dlq(result)
        assert isinstance(result, Forward)
        # The keys stage runs in ingest's transaction, on the source partition (streams/worker/topology.py).
        effects = key_stage.handle(result.command, partition, ts_ms, self.keys.get, RETENTION)
        for k, v in effects.writes:
            self._write(self.keys, k, v)
        out = Forward(effects.command)
        value = self._hop(out.command)
        cmd = VALIDATED.decode(value)
        t = self.tables
        stage = handle(
            cmd,
            value,
            partition_for(out.key, PARTITIONS),
            ts_ms,
            Tables(t[PAYMENTS].get, t[DEDUP].get, t[TIMERS].get),
            saga_of(),
            POLICY,
            RETENTION,
        )
        if stage.skipped:
            return Result(skipped=True)
        if stage.reused_command_id:
            detail = "this command_id was answered for a different message"
            return self._dlq(dead_letter("payments", "command_id_reused", detail, value, source))
        for table, k, v in stage.writes:
            self._write(t[table], k, v)
        outcomes = [r for s, r in stage.records if s == OUTCOMES]
        assert len(outcomes) == 1, outcomes
        for s, r in stage.records:
            self.written.append(STREAM_CODECS[s].encode(r, check=True))
        return Result(outcome=outcomes[0])

    def _hop(self, command: dict[str, Any]) -> bytes:
        """A forwarded command as the next agent reads it; it must fit a Kafka message."""
        value = VALIDATED.encode(command, check=True)
        assert len(value) <= MAX_MESSAGE_BYTES, len(value)
        self.written.append(value)
        return value

    def _dlq(self, letter: DeadLetter) -> Result:
        encoded = DLQ.encode(letter.record, check=True)
        assert len(encoded) <= MAX_MESSAGE_BYTES, len(encoded)
        self.written.append(encoded)
        return Result(dlq=letter.record)

    def _write(self, table: dict[bytes, bytes], k: bytes, v: bytes | None) -> None:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v
            self.written.append(k + b"\x00" + v)


# --- messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    raw: bytes | None
    key: bytes | None
    partition: int
    ts_ms: int
    valid: bool = False  # a valid command: must succeed
    label: str = ""


def routed(cmd: dict[str, Any]) -> tuple[bytes, int]:
    """The key and partition a correct producer uses."""
    key = command_key(cmd)
    return key, partition_for(key, PARTITIONS)


def command(**fields: Any) -> dict[str, Any]:
    return {
        "command_id": "cmd",
        "kind": "create",
        "merchant_id": "m_hostile",
        "idempotency_key": "k",
        "payment_id": None,
        "amount_minor": 1_000,
        "currency": "USD",
        "capture_method": None,
        "card": {"number": PANS[0], "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        "metadata": {},
        "occurred_at": T0,
        "card_token": None,
    } | fields


def message_of(cmd: dict[str, Any], label: str, *, valid: bool = False, ts_ms: int = T0_MS) -> Message:
    key, partition = routed(cmd) if cmd["merchant_id"] and (cmd["payment_id"] or cmd["idempotency_key"]) else (None, 0)
    return Message(COMMANDS.encode(cmd), key, partition, ts_ms, valid, label)


def valid_flow(i: int, manual: bool, follow: str) -> list[Message]:
    """A valid payment: a create and, for some, a capture, void or refund after it."""
    key = f"v-{i}"
    pid = derive_payment_id(VALID_MERCHANT, key)
    at = T0 + timedelta(seconds=i)
    create = command(
        command_id=f"v-{i}-create",
        merchant_id=VALID_MERCHANT,
        idempotency_key=key,
        capture_method="manual" if manual else "automatic",
        amount_minor=5_000 + i,
        card={"number": PANS[i % len(PANS)], "exp_month": 12, "exp_year": 2030, "cvc": "737"},
        metadata={"order": str(i)},
        occurred_at=at,
    )
    msgs = [message_of(create, "valid create", valid=True)]
    kind = {"capture": "capture", "void": "void", "refund": "refund"}.get(follow)
    if kind == "refund" and manual:
        kind = "capture"  # nothing captured to refund yet
    if kind in ("capture", "void") and not manual:
        kind = "refund"
    if kind is not None:
        amount = 1_000 if kind in ("capture", "refund") else None
        up = command(
            command_id=f"v-{i}-{kind}",
            kind=kind,
            merchant_id=VALID_MERCHANT,
            idempotency_key=f"{key}-{kind}",
            payment_id=pid,
            amount_minor=amount,
            currency=None,
            card=None,
            occurred_at=at + timedelta(milliseconds=1),
        )
        msgs.append(message_of(up, f"valid {kind}", valid=True))
    return msgs


# Hostile text: unicode edge cases, control characters, PANs (plain, grouped), huge.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\x1f",
            "\u200b",
            "\ufeff",
            "e\u0301",
            "\U0001f4b3",
            "\u202e",
            "Ａ",
            "ｍ_valid",
            "m_valid\x00",
            "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",
            "４２４２４２４２４２４２４２４２",
            "²000000000000009",
            PANS[0],
            f"pan {PANS[1]}",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "x" * 300,
            "é" * 5000,
            "-1",
            "NaN",
        ]
    ),
)
hostile_amount = st.one_of(
    st.none(),
    st.sampled_from([0, -1, -(2**63), 2**63 - 1, 10**15, 10**15 + 1]),
    st.integers(-(2**63), 2**63 - 1),
)
hostile_currency = st.one_of(
    st.none(), st.sampled_from(["usd", "US", "USDD", "XAU", "XXX", "", "ＵＳＤ", "U\x00D"]), st.text(max_size=5)
)
hostile_time = st.one_of(
    st.sampled_from(
        [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]
    ),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)
hostile_metadata = st.one_of(
    st.dictionaries(hostile_text, hostile_text, max_size=5),
    st.just({f"k{i}": "v" for i in range(51)}),
    st.just({"note": f"card {PANS[2]}"}),
    st.just({f"card {PANS[3]}": "x"}),
    st.just({"big": "v" * 600}),
)
hostile_card = st.one_of(
    st.none(),
    st.builds(
        lambda n, m, y: {"number": n, "exp_month": m, "exp_year": y, "cvc": "123"},
        st.one_of(hostile_text, st.sampled_from(PANS), st.just("4242424242424241")),
        st.integers(-(2**31), 2**31 - 1),
        st.sampled_from([2030, 1999, 2101, -1, 0]),
    ),
)
hostile_token = st.one_of(
    st.none(),
    st.builds(
        lambda t, b, l4, brand: {"token": t, "bin": b, "last4": l4, "brand": brand, "exp_month": 12, "exp_year": 2030},
        st.one_of(st.just("tok_" + "a" * 32), hostile_text),
        st.one_of(st.just("424242"), hostile_text),
        st.one_of(st.just("4242"), hostile_text),
        st.sampled_from(["visa", "nope", ""]),
    ),
)


@st.composite
def hostile_command(draw: st.DrawFn, n: int) -> Message:
    """Valid Avro with hostile values; never the valid merchant, so it cannot touch valid payments' keys."""
    merchant = draw(st.one_of(st.just("m_hostile"), hostile_text.filter(lambda m: m != VALID_MERCHANT)))
    kind = draw(st.sampled_from(["create", "capture", "void", "refund", "expire"]))
    valid_pid = derive_payment_id(VALID_MERCHANT, f"v-{draw(st.integers(0, 5))}")
    cmd = command(
        command_id=f"h-{n}" + draw(st.one_of(st.just(""), hostile_text)),
        kind=kind,
        merchant_id=merchant,
        idempotency_key=draw(st.one_of(st.just(f"h-{n}"), hostile_text)),
        # A valid payment's id from another merchant must be answered as not found.
        payment_id=draw(st.one_of(st.none(), st.just(valid_pid), hostile_text)),
        amount_minor=draw(hostile_amount),
        currency=draw(hostile_currency),
        capture_method=draw(st.sampled_from([None, "automatic", "manual"])),
        card=draw(hostile_card),
        card_token=draw(hostile_token),
        metadata=draw(hostile_metadata),
        occurred_at=draw(hostile_time),
    )
    if cmd["command_id"] == "" or draw(st.booleans()):
        cmd["command_id"] = draw(st.sampled_from(["", "x" * 129, PANS[4], f"h-{n}"]))
    msg = message_of(cmd, "hostile values")
    if draw(st.integers(0, 9)) == 0:  # a producer with the wrong partitioner or key
        msg = Message(
            msg.raw,
            draw(st.one_of(st.none(), st.binary(max_size=20), st.just(PANS[0].encode()))),
            draw(st.integers(0, PARTITIONS - 1)),
            msg.ts_ms,
            label="hostile routing",
        )
    return msg


def _encoded_valid(n: int) -> bytes:
    return COMMANDS.encode(command(command_id=f"h-{n}", idempotency_key=f"h-{n}"))


@st.composite
def hostile_bytes(draw: st.DrawFn, n: int) -> Message:
    """Bytes that are not a command we can read."""
    kind = draw(
        st.sampled_from(
            [
                "random",
                "truncated",
                "fingerprint",
                "flipped",
                "tombstone",
                "other_schema",
                "bad_utf8",
                "time_overflow",
                "trailing",
                "pan_garbage",
            ]
        )
    )
    good = _encoded_valid(n)
    if kind == "random":
        raw = draw(st.binary(max_size=300))
    elif kind == "truncated":
        raw = good[: draw(st.integers(0, len(good) - 1))]
    elif kind == "fingerprint":
        raw = good[:2] + draw(st.binary(min_size=8, max_size=8)) + good[10:]
    elif kind == "flipped":
        i = draw(st.integers(10, len(good) - 1))
        raw = good[:i] + bytes([good[i] ^ draw(st.integers(1, 255))]) + good[i + 1 :]
    elif kind == "tombstone":
        raw = None
    elif kind == "other_schema":
        raw = VALIDATED.encode(
            command(command_id=f"h-{n}")
            | {"card": None, "rejection_reason": None, "rejection_detail": None}
            | {"card_token": None}
        )
    elif kind == "bad_utf8":
        # A lone surrogate (CESU-8) in merchant_id: the string length prefix stays right.
        raw = COMMANDS.encode(command(command_id=f"h-{n}", merchant_id="m_XXX")).replace(b"m_XXX", b"m_\xed\xa0\x80")
    elif kind == "time_overflow":
        raw = _with_raw_time(
            command(command_id=f"h-{n}"), draw(st.sampled_from([2**63 - 1, -(2**63), 253402300800000]))
        )
    elif kind == "trailing":
        raw = good + draw(st.binary(min_size=1, max_size=10))
    else:
        raw = b"\xc3\x01" + bytes(8) + f"junk {PANS[0]} junk 4242 4242 4242 4242".encode()
    return Message(
        raw,
        draw(st.one_of(st.none(), st.just(b"k"), st.just(PANS[1].encode()))),
        draw(st.integers(0, PARTITIONS - 1)),
        T0_MS,
        label=f"bytes:{kind}",
    )


def _with_raw_time(cmd: dict[str, Any], occurred_at_ms: int) -> bytes:
    """A command whose occurred_at long no datetime can hold (same fingerprint: the
    parsing canonical form drops logicalType)."""
    schema = load_schema("PaymentCommand")
    plain = fastavro.parse_schema(_strip_logical(schema_dict("PaymentCommand")))
    buf = io.BytesIO()
    buf.write(schema.header)
    fastavro.schemaless_writer(buf, plain, cmd | {"occurred_at": occurred_at_ms})
    return buf.getvalue()


def schema_dict(name: str) -> dict[str, Any]:
    import json

    from schemas.codec import schema_text

    return json.loads(schema_text(name))


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(x) for x in node]
    return node


@st.composite
def streams_of_messages(draw: st.DrawFn) -> list[Message]:
    valid: list[list[Message]] = [
        valid_flow(i, draw(st.booleans()), draw(st.sampled_from(["none", "capture", "void", "refund"])))
        for i in range(draw(st.integers(1, 6)))
    ]
    hostile = [draw(st.one_of(hostile_command(n), hostile_bytes(n))) for n in range(draw(st.integers(1, 12)))]
    # Interleave: hostile messages anywhere, each valid flow keeps its own order.
    slots = draw(
        st.permutations(
            [("v", i) for i, flow in enumerate(valid) for _ in flow] + [("h", n) for n in range(len(hostile))]
        )
    )
    cursors = [iter(flow) for flow in valid]
    return [next(cursors[i]) if tag == "v" else hostile[i] for tag, i in slots]


# --- the checks -----------------------------------------------------------------


def check_stream(messages: list[Message]) -> Pipeline:
    pipeline = Pipeline()
    for msg in messages:
        result = pipeline.publish(msg.raw, msg.key, msg.partition, msg.ts_ms)
        kinds = [result.dlq is not None, result.outcome is not None, result.skipped]
        assert sum(kinds) == 1, (msg.label, result)
        assert not result.skipped, f"{msg.label}: every message here has its own command_id"
        if result.dlq is not None:
            assert result.dlq["reason"] and result.dlq["detail"], result.dlq
            assert not msg.valid, (msg.label, result.dlq)
            assert len(result.dlq["raw_value"]) <= DLQ_RAW_MAX_BYTES
        else:
            out = result.outcome
            assert out["status"] in ("succeeded", "rejected"), out
            if out["status"] == "rejected":
                assert out["reason_code"], out
            if msg.valid:
                assert out["status"] == "succeeded", (msg.label, out)
    for blob in pipeline.written:
        assert_no_pan(blob.decode("utf-8", "replace"), blob[:300])
    return pipeline


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=streams_of_messages())
def test_hostile_and_valid_messages_interleaved(messages: list[Message], caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        check_stream(messages)
    assert_no_pan(caplog.text, "log records")


def test_ten_megabytes_of_metadata_is_a_bounded_dead_letter() -> None:
    big = command(command_id="h-big", metadata={f"k{i}": "v" * 1050 for i in range(10_000)})
    msg = message_of(big, "10 MB metadata")
    assert len(msg.raw) > 10 * 1024 * 1024
    pipeline = Pipeline()
    result = pipeline.publish(msg.raw, msg.key, msg.partition, msg.ts_ms)
    assert result.dlq is not None and result.dlq["reason"] == "message_too_large"
    assert len(result.dlq["raw_value"]) == DLQ_RAW_MAX_BYTES
    # The partition keeps flowing: a valid command after it succeeds.
    for m in valid_flow(0, manual=True, follow="capture"):
        assert pipeline.publish(m.raw, m.key, m.partition, m.ts_ms).outcome["status"] == "succeeded"


def test_metadata_just_under_the_message_limit_is_refused_without_forwarding_it() -> None:
    """A command near the 1 MiB limit decodes; its refusal must not carry the bulk on."""
    cmd = command(command_id="h-near", metadata={"big": "v" * 500_000, "bigger": "w" * 500_000})
    msg = message_of(cmd, "near-limit metadata")
    assert len(msg.raw) <= MAX_MESSAGE_BYTES
    pipeline = Pipeline()
    result = pipeline.publish(msg.raw, msg.key, msg.partition, msg.ts_ms)
    assert result.outcome is not None and result.outcome["reason_code"] == "invalid_metadata"
    assert max(map(len, pipeline.written)) < 10_000


def test_a_huge_follow_up_payment_id_is_refused_and_not_forwarded() -> None:
    cmd = command(
        command_id="h-pid",
        kind="capture",
        payment_id="pay_" + "a" * 900_000,
        amount_minor=None,
        currency=None,
        card=None,
        idempotency_key="h-pid",
    )
    pipeline = Pipeline()
    result = pipeline.publish(COMMANDS.encode(cmd), None, partition_for(cmd["payment_id"].encode(), PARTITIONS), T0_MS)
    assert result.outcome is not None and result.outcome["reason_code"] == "invalid_payment_id"
    assert max(map(len, pipeline.written)) < 10_000
