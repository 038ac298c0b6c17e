"""The transactional error decision (streams/runtime/txn.py): librdkafka's contract over
the error's flags, within the retry limits."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.txn import RetryLimits, Step, backoff_s, step, step_for

LIMITS = RetryLimits(attempts_max=10, deadline_ms=20_000)


def decide(err: KafkaError, in_transaction: bool = True, attempt: int = 1, elapsed_ms: float = 0.0) -> Step:
    return step_for(err, in_transaction=in_transaction, attempt=attempt, elapsed_ms=elapsed_ms, limits=LIMITS)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        # CONCURRENT_TRANSACTIONS right after a commit; a coordinator moving: the same call again.
        (KafkaError(KafkaError.CONCURRENT_TRANSACTIONS, "busy", retriable=True), Step.RETRY),
        (KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "moving", retriable=True), Step.RETRY),
        (KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True), Step.RETRY),
        # Finding 8: send_offsets_to_transaction while the group coordinator is unknown.
        (KafkaError(KafkaError._STATE, "Failed to commit offsets to transaction", txn_requires_abort=True), Step.ABORT),
        # A record timed out before the commit: the transaction is abortable.
        (KafkaError(KafkaError._TIMED_OUT, "3 message(s) timed out", txn_requires_abort=True), Step.ABORT),
        # A newer incarnation took over: the zombie exits, whatever other flag is set.
        (KafkaError(KafkaError._FENCED, "fenced", fatal=True), Step.EXIT),
        (KafkaError(KafkaError._FENCED, "fenced", fatal=True, retriable=True, txn_requires_abort=True), Step.EXIT),
        # No flag at all: treated as fatal (rdkafka.h, "Handling of other errors").
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "refused"), Step.EXIT),
    ],
)
def test_librdkafka_s_flags_decide(err: KafkaError, expected: Step) -> None:
    assert decide(err) is expected


def test_abortable_comes_before_retriable_as_in_librdkafka_s_example() -> None:
    both = KafkaError(KafkaError._TIMED_OUT, "x", retriable=True, txn_requires_abort=True)
    assert decide(both) is Step.ABORT


def test_a_call_outside_a_transaction_cannot_be_aborted_and_redone() -> None:
    # init_transactions, begin_transaction and abort_transaction itself.
    abortable = KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)
    assert decide(abortable, in_transaction=False) is Step.EXIT
    retriable = KafkaError(KafkaError._TIMED_OUT, "x", retriable=True)
    assert decide(retriable, in_transaction=False) is Step.RETRY


def test_retries_end_at_the_attempt_bound_or_the_deadline() -> None:
    retriable = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "x", retriable=True)
    assert decide(retriable, attempt=LIMITS.attempts_max - 1) is Step.RETRY
    assert decide(retriable, attempt=LIMITS.attempts_max) is Step.EXIT
    assert decide(retriable, elapsed_ms=LIMITS.deadline_ms - 1) is Step.RETRY
    assert decide(retriable, elapsed_ms=LIMITS.deadline_ms) is Step.EXIT


@given(
    retriable=st.booleans(),
    requires_abort=st.booleans(),
    fatal=st.booleans(),
    in_transaction=st.booleans(),
    attempt=st.integers(1, 1_000),
    elapsed_ms=st.floats(0, 100_000, allow_nan=False),
)
def test_the_decision_never_breaks_the_contract(
    retriable: bool, requires_abort: bool, fatal: bool, in_transaction: bool, attempt: int, elapsed_ms: float
) -> None:
    decided = step(
        retriable=retriable,
        requires_abort=requires_abort,
        fatal=fatal,
        in_transaction=in_transaction,
        attempt=attempt,
        elapsed_ms=elapsed_ms,
        limits=LIMITS,
    )
    if fatal:
        assert decided is Step.EXIT  # a fatal producer never goes on
    if decided is Step.ABORT:
        assert requires_abort and in_transaction and not fatal
    if decided is Step.RETRY:
        assert retriable and not requires_abort and not fatal
        assert attempt < LIMITS.attempts_max and elapsed_ms < LIMITS.deadline_ms
    if not (retriable or requires_abort):
        assert decided is Step.EXIT


def test_limits_and_backoff_are_bounded() -> None:
    with pytest.raises(AssertionError):
        RetryLimits(attempts_max=0, deadline_ms=1_000)
    assert backoff_s(1) > 0 and max(backoff_s(a) for a in range(1, 1_000)) == 0.2
