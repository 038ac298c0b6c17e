"""Which client errors are retried until a deadline."""

from __future__ import annotations


def test_a_local_timeout_is_retried_until_the_deadline_like_a_settling_leader() -> None:
    from confluent_kafka import KafkaError

    from connectors.kafka.clients import _transient

    assert _transient(KafkaError(KafkaError._TIMED_OUT))  # a busy broker: ask again
    assert _transient(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
    assert not _transient(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))  # never settles
