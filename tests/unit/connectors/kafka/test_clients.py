"""Which client errors are retried until a deadline."""

from __future__ import annotations

import pytest


def test_a_local_timeout_is_retried_until_the_deadline_like_a_settling_leader() -> None:
    from confluent_kafka import KafkaError

    from connectors.kafka.clients import _transient

    assert _transient(KafkaError(KafkaError._TIMED_OUT))  # a busy broker: ask again
    assert _transient(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
    assert not _transient(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))  # never settles


def test_produce_waiting_waits_for_room_and_drops_nothing() -> None:
    from connectors.kafka.clients import produce_waiting

    class Full:  # librdkafka's queue full twice, then room
        def __init__(self) -> None:
            self.refusals, self.polls, self.produced = 2, [], []

        def produce(self, topic: str, **record: object) -> None:
            if self.refusals:
                self.refusals -= 1
                raise BufferError("Local: Queue full")
            self.produced.append((topic, record))

        def poll(self, timeout_s: float) -> int:
            self.polls.append(timeout_s)
            return 0

    p = Full()
    produce_waiting(p, "t", key=b"k", value=b"v", partition=3, wait_s=0.01)  # type: ignore[arg-type]
    assert p.produced == [("t", {"key": b"k", "value": b"v", "partition": 3})] and p.polls == [0.01, 0.01]


class Batches:
    """produce_batch as librdkafka answers it: each message queued, or marked with its
    `_error`; `refuse` holds the error codes of the next messages offered."""

    def __init__(self, refuse: list[int]) -> None:
        self.refuse, self.polls, self.queued = refuse, [], []  # type: ignore[var-annotated]

    def produce_batch(self, topic: str, messages: list[dict], partition: int) -> int:  # type: ignore[type-arg]
        from confluent_kafka import KafkaError

        for m in messages:
            if self.refuse:
                m["_error"] = KafkaError(self.refuse.pop(0))
            else:
                self.queued.append((topic, partition, m["key"], m["value"]))
        return sum("_error" not in m for m in messages)

    def poll(self, timeout_s: float) -> int:
        self.polls.append(timeout_s)
        return 0


def test_produce_batch_waiting_offers_what_a_full_queue_refused_again_and_drops_nothing() -> None:
    from confluent_kafka import KafkaError

    from connectors.kafka.clients import produce_batch_waiting

    p = Batches([KafkaError._QUEUE_FULL] * 4)  # the whole batch, then the first of the three offered again
    produce_batch_waiting(p, "t", 3, [(b"a", b"1"), (b"b", None), (b"c", b"3")], wait_s=0.01)  # type: ignore[arg-type]
    assert sorted(p.queued) == [("t", 3, b"a", b"1"), ("t", 3, b"b", None), ("t", 3, b"c", b"3")]
    assert p.polls == [0.01, 0.01]  # a wait for room before each offer again


def test_produce_batch_waiting_raises_any_other_refusal() -> None:
    import pytest
    from confluent_kafka import KafkaError, KafkaException

    from connectors.kafka.clients import produce_batch_waiting

    p = Batches([KafkaError._STATE])
    with pytest.raises(KafkaException) as refused:
        produce_batch_waiting(p, "t", 0, [(b"a", b"1"), (b"b", b"2")])  # type: ignore[arg-type]
    assert refused.value.args[0].code() == KafkaError._STATE and p.polls == []


def test_id_assigned_fails_fast_and_plainly_when_no_broker_answers() -> None:
    import pytest
    from confluent_kafka import KafkaException

    from connectors.kafka.clients import id_assigned

    with pytest.raises(KafkaException):
        id_assigned({"bootstrap.servers": "127.0.0.1:1"}, timeout_s=0.5)  # nothing listens on port 1


def test_idemp_state_reads_librdkafkas_statistics() -> None:
    from connectors.kafka.clients import idemp_state

    assert idemp_state('{"name": "rdkafka#producer-1", "eos": {"idemp_state": "WaitPID", "txn_state": "Init"}}') == (
        "WaitPID"
    )
    assert idemp_state('{"name": "rdkafka#consumer-1"}') is None  # no eos section: not an idempotent producer


class Fetched:
    """A consumer whose client holds `queued` fetched messages (pure logic: no broker)."""

    def __init__(self, queued: list[str]) -> None:
        self.queued, self.calls = list(queued), []  # type: ignore[var-annotated]

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", timeout))
        return self.queued.pop(0) if self.queued else None

    def consume(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append(("consume", num_messages, timeout))
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken


def test_consume_available_waits_only_for_the_first_message() -> None:
    from connectors.kafka.clients import consume_available

    c = Fetched(["a", "b", "c"])
    assert consume_available(c, 2, 0.5) == ["a", "b"]  # type: ignore[arg-type]
    assert c.calls == [("poll", 0.5), ("consume", 1, 0)]  # the rest: no wait at all
    assert consume_available(c, 1, 0.5) == ["c"] and c.calls[-1] == ("poll", 0.5)  # type: ignore[arg-type]
    assert consume_available(c, 5, 0.5) == [] and c.calls[-1] == ("poll", 0.5)  # type: ignore[arg-type]


class Looked:
    """A read_committed consumer whose polls return `polled` (None: nothing yet), then nothing."""

    def __init__(self, polled: list[object]) -> None:
        self.polled, self.assigned = list(polled), None  # type: ignore[var-annotated]

    def assign(self, positions: list[object]) -> None:
        self.assigned = positions

    def unassign(self) -> None:
        self.assigned = None

    def poll(self, timeout: float) -> object:
        return self.polled.pop(0) if self.polled else None


class Msg:
    def __init__(self, error: object = None) -> None:
        self._error = error

    def error(self) -> object:
        return self._error


def test_readable_past_finds_a_record_and_leaves_nothing_assigned() -> None:
    from confluent_kafka import KafkaError, TopicPartition

    from connectors.kafka.clients import readable_past

    at = [TopicPartition("t", 0, 5)]
    eof = Msg(KafkaError(KafkaError._PARTITION_EOF))
    found = Looked([None, eof, Msg()])
    assert readable_past(found, at, 30.0)  # type: ignore[arg-type]
    assert found.assigned is None
    nothing = Looked([None, eof])  # aborted records and markers: the reader skips them
    assert not readable_past(nothing, at, 0.05)  # type: ignore[arg-type]
    assert nothing.assigned is None


def test_readable_past_raises_a_broker_error_and_still_unassigns() -> None:
    from confluent_kafka import KafkaError, TopicPartition

    from connectors.kafka.clients import readable_past

    failing = Looked([Msg(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))])
    with pytest.raises(RuntimeError, match="consumer error"):
        readable_past(failing, [TopicPartition("t", 0, 0)], 30.0)  # type: ignore[arg-type]
    assert failing.assigned is None
