"""The cards the demo pays with: issuers' public test numbers and their cardholders."""

from __future__ import annotations

import random

from schemas.cards import luhn_valid

# The public test cards (issuers' documentation), then the simulated provider's saga
# cards (connectors/providers/simulated.py): a lost authorization response, resolved
# by a status query, and a capture the provider refuses. The last one always declines.
TEST_CARDS = (
    "4242424242424242",
    "5555555555554444",
    "4000056655665556",
    "378282246310005",
    "6011111111111117",
    "4000000000000119",
    "4000000000000341",
    "4000000000000002",
)


CARD_WEIGHTS = (30, 25, 15, 12, 10, 2, 2, 8)


# The first five are ordinary cards: each payment gets its own number under that card's
# BIN (a fraud stage sees many cardholders, not five people paying 10,000 times). The
# saga cards' numbers keep their last four digits too: the provider keys on BIN + last4.
ORDINARY_CARDS = 5


def cardholder(test_card: str, rng: random.Random, *, keep_last4: bool = False) -> str:
    """Another valid number of the same BIN and length (and last four digits, if asked):
    random account digits, the one before the kept tail chosen to pass the Luhn check
    (changing one digit runs through every residue, so exactly one does)."""
    tail = test_card[-4:] if keep_last4 else ""
    body = test_card[:6] + "".join(str(rng.randrange(10)) for _ in range(len(test_card) - 7 - len(tail)))
    return next(body + d + tail for d in "0123456789" if luhn_valid(body + d + tail))
