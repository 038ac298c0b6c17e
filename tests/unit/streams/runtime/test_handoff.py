"""streams/runtime/handoff.py: which sends are handed to their stage, over plain values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runtime.handoff import FROM_HEADER, HANDLED_HEADER, Handoff, marks

TP = ("risk", 0)


def ready_handoff() -> Handoff:
    handoff = Handoff(["risk"])
    handoff.reset([TP])
    handoff.set_ends({TP: 0})
    return handoff


def test_nothing_is_handed_off_before_the_partition_is_read_to_its_end() -> None:
    handoff = Handoff(["risk"])
    handoff.reset([TP])
    assert handoff.wants_ends and not handoff.may_hand(*TP, b"k")
    handoff.set_ends({TP: 10})
    assert not handoff.wants_ends and handoff.waiting() == {TP: 10}
    handoff.read(*TP, 9)
    assert not handoff.may_hand(*TP, b"k")
    handoff.read(*TP, 10)  # an end-of-partition event's offset, or the one after the last record
    assert handoff.may_hand(*TP, b"k") and handoff.waiting() == {}


def test_a_partition_read_past_its_end_before_it_was_asked_is_ready_at_once() -> None:
    handoff = Handoff(["risk"])
    handoff.reset([TP])
    handoff.read(*TP, 12)
    handoff.set_ends({TP: 12})
    assert handoff.may_hand(*TP, b"k")


def test_a_partition_not_owned_takes_no_handoff_and_counts_no_send() -> None:
    handoff = ready_handoff()
    assert not handoff.may_hand("risk", 1, b"k")
    assert not handoff.sent_normally("risk", 1, b"k")
    handoff.reset([])  # a revocation
    assert not handoff.may_hand(*TP, b"k") and not handoff.wants_ends


def test_a_key_with_a_normal_send_unread_waits_behind_it_other_keys_do_not() -> None:
    handoff = ready_handoff()
    assert handoff.sent_normally(*TP, b"a")
    assert handoff.sent_normally(*TP, b"a")
    assert not handoff.may_hand(*TP, b"a") and handoff.may_hand(*TP, b"b")
    handoff.read_back(*TP, b"a", handoff.token)
    assert not handoff.may_hand(*TP, b"a")  # one of two still unread
    handoff.read_back(*TP, b"a", handoff.token)
    assert handoff.may_hand(*TP, b"a")


def test_a_send_from_before_a_reset_or_another_worker_releases_nothing() -> None:
    handoff = ready_handoff()
    old = handoff.token
    handoff.reset([TP])
    handoff.set_ends({TP: 0})
    assert handoff.token != old
    handoff.sent_normally(*TP, b"a")
    handoff.read_back(*TP, b"a", old)  # read back only now, but sent before the reset
    handoff.read_back(*TP, b"a", Handoff(["risk"]).token)  # another incarnation's
    assert not handoff.may_hand(*TP, b"a")
    handoff.read_back(*TP, b"a", handoff.token)
    assert handoff.may_hand(*TP, b"a")


def test_refs_are_unique_across_incarnations() -> None:
    one, two = Handoff(["risk"]), Handoff(["risk"])
    refs = {one.next_ref(), one.next_ref(), two.next_ref()}
    assert len(refs) == 3


def test_marks_read_the_headers() -> None:
    assert marks(None) == (False, None)
    assert marks([("paystream-origin-ms", b"1")]) == (False, None)
    assert marks([("paystream-origin-ms", b"1"), (HANDLED_HEADER, b"")]) == (True, None)
    assert marks([(FROM_HEADER, b"tok"), ("paystream-origin-ms", b"1")]) == (False, b"tok")


ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from([b"a", b"b", b"c"])),
        st.tuples(st.just("read"), st.integers(1, 4)),
        st.tuples(st.just("eof"), st.none()),
        st.tuples(st.just("reset"), st.none()),
        st.tuples(st.just("ask"), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_a_key_is_never_handed_off_ahead_of_an_unread_record_of_it(steps: list[tuple[str, object]]) -> None:
    """One partition's log as the worker writes and reads it. A hand-off is handled at
    once; a normal send waits in the log until the consumer reads it. Whatever the
    order of sends, reads, resets (assignments, aborts) and asks for the end, no key is
    handed off while a record of it is still unread: its stage sees it in log order."""
    handoff = Handoff(["risk"])
    log: list[tuple[bytes, bool, bytes]] = []  # (key, handed off, the sender's token)
    read_to = 0
    handoff.reset([TP])
    for op, arg in steps:
        if op == "send":
            assert isinstance(arg, bytes)
            if handoff.may_hand(*TP, arg):
                unread = [key for key, handed, _ in log[read_to:] if not handed]
                assert arg not in unread
                log.append((arg, True, b""))
            else:
                assert handoff.sent_normally(*TP, arg)
                log.append((arg, False, handoff.token))
        elif op == "read":
            assert isinstance(arg, int)
            for key, handed, token in log[read_to : read_to + arg]:
                if not handed:
                    handoff.read_back(*TP, key, token)
            read_to = min(len(log), read_to + arg)
            handoff.read(*TP, read_to)
        elif op == "eof" and read_to == len(log):
            handoff.read(*TP, read_to)
        elif op == "reset":  # every send before is committed (unread ones stay in the log)
            handoff.reset([TP])
        elif op == "ask" and handoff.wants_ends:
            handoff.set_ends({TP: len(log)})
