"""What the engine does when a transactional call fails: a pure decision over the
error's flags, librdkafka's contract (src/rdkafka.h, "Transactional producer API",
and the doc of each call; confluent-kafka-python raises the same error object in a
KafkaException):

- `fatal()`: the producer is done for (fenced by a newer incarnation with the same
  transactional.id, an authorization revoked): exit for a restart; the restarted
  worker's init_transactions fences this one for good.
- `txn_requires_abort()` (abortable): the transaction failed but the producer lives:
  abort it and redo its input from the offsets it started at. A `_STATE` from
  send_offsets_to_transaction while the group coordinator moves ("broker (none)") and
  a record timed out before the commit are of this kind (docs/reliability.md, finding 8).
- `retriable()`: call again with the same arguments (commit and abort resume the work
  in the background; send_offsets "is retriable but not resumable", so the same
  offsets and group metadata), within a bound of attempts and a deadline shorter than
  the transaction timeout: past it the broker aborts the transaction anyway.
- none of them: "treat as fatal" (rdkafka.h, "Handling of other errors").

Abortable is checked before retriable, as in rdkafka.h's error handling example.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from confluent_kafka import KafkaError


class Step(Enum):
    RETRY = "retry"
    ABORT = "abort"
    EXIT = "exit"


@dataclass(frozen=True)
class RetryLimits:
    """How long one transactional call is tried again: at most `attempts_max` calls and
    `deadline_ms` after the first one, whichever comes first."""

    attempts_max: int
    deadline_ms: int

    def __post_init__(self) -> None:
        assert self.attempts_max >= 1 and self.deadline_ms > 0, self


def step(
    *,
    retriable: bool,
    requires_abort: bool,
    fatal: bool,
    in_transaction: bool,
    attempt: int,
    elapsed_ms: float,
    limits: RetryLimits,
) -> Step:
    """The next step after attempt number `attempt` (1-based) of a call failed
    `elapsed_ms` after the first attempt. `in_transaction`: the call is part of an open
    transaction the engine can abort and redo (send_offsets_to_transaction,
    commit_transaction); init, begin and abort themselves cannot be aborted."""
    if fatal:
        return Step.EXIT
    if requires_abort:
        return Step.ABORT if in_transaction else Step.EXIT
    if retriable and attempt < limits.attempts_max and elapsed_ms < limits.deadline_ms:
        return Step.RETRY
    # Out of retries (the coordinator is still away), or an error with no flag: crash-only.
    return Step.EXIT


def step_for(err: KafkaError, *, in_transaction: bool, attempt: int, elapsed_ms: float, limits: RetryLimits) -> Step:
    return step(
        retriable=err.retriable(),
        requires_abort=err.txn_requires_abort(),
        fatal=err.fatal(),
        in_transaction=in_transaction,
        attempt=attempt,
        elapsed_ms=elapsed_ms,
        limits=limits,
    )


def backoff_s(attempt: int) -> float:
    """Between attempts: CONCURRENT_TRANSACTIONS right after a commit clears in
    milliseconds; a coordinator moving takes seconds (librdkafka retries inside the
    call as well, every 500 ms for send_offsets)."""
    return min(0.01 * attempt, 0.2)
