"""Stripe's bracket-notation form bodies, decoded to nested values."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from streams.api.forms import FormError, as_list, decode_form, parse_name


def test_brackets_nest_and_every_leaf_stays_a_string() -> None:
    body = urlencode(
        [
            ("amount", "1999"),
            ("metadata[order]", "o-1"),
            ("metadata[0]", "zero"),
            ("payment_method_data[card][number]", "4242424242424242"),
            ("payment_method_data[card][exp_month]", "12"),
            ("expand[]", "latest_charge"),
            ("expand[]", "customer"),
            ("confirm", "true"),
        ]
    ).encode()
    assert decode_form(body) == {
        "amount": "1999",
        "metadata": {"order": "o-1", "0": "zero"},
        "payment_method_data": {"card": {"number": "4242424242424242", "exp_month": "12"}},
        "expand": ["latest_charge", "customer"],
        "confirm": "true",
    }


def test_the_sdks_indexed_lists_read_as_lists() -> None:
    form = decode_form("expand[0]=a&expand[1]=b&expand[2]=c")
    assert form == {"expand": {"0": "a", "1": "b", "2": "c"}}
    assert as_list(form["expand"], "expand") == ["a", "b", "c"]
    assert as_list(["x"], "expand") == ["x"]
    with pytest.raises(FormError):
        as_list({"0": "a", "2": "b"}, "expand")
    with pytest.raises(FormError):
        as_list("a", "expand")


def test_an_empty_body_and_blank_values() -> None:
    assert decode_form(b"") == {}
    assert decode_form(b"metadata=") == {"metadata": ""}


@pytest.mark.parametrize(
    "body",
    [
        "a=1&a=2",  # twice
        "a=1&a[b]=2",  # a value and an object
        "a[b]=1&a=2",
        "a[]=1&a[b]=2",  # a list and an object
        "a[b]=1&a[]=2",
        "a[b=1",  # unbalanced
        "a]b[=1",
        "a[b][c][d][e][f]=1",  # too deep
        "=1",
        "a",  # no '='
    ],
)
def test_malformed_forms_are_refused_without_echoing_values(body: str) -> None:
    with pytest.raises(FormError) as e:
        decode_form(body.replace("1", "4242424242424242"))
    assert "4242" not in e.value.message


def test_a_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(FormError):
        decode_form(b"a=%ff%fe")


def test_parse_name() -> None:
    assert parse_name("a") == ["a"]
    assert parse_name("a[b][]") == ["a", "b", ""]
