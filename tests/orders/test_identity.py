"""The identity ledger's pure parts: phone and address normalisation and the hashed signals."""

from __future__ import annotations

from typing import Any

import pytest

from promoguard.errors import InvalidError
from promoguard.orders.identity import Identity, normalise_address, normalise_phone
from promoguard.orders.schemas import CustomerFacts

SECRET = "identity-secret-0123456789"
OTHER_SECRET = "another-secret-9876543210"


def identity(secret: str = SECRET, **facts: Any) -> Identity:
    facts.setdefault("id", "c-1")
    return Identity(CustomerFacts(**facts), secret=secret, region="CN")


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+86 138 0013 8000",
        "+86(138)00138000",
        "008613800138000",
        "１３８００１３８０００",  # full-width digits, as some Chinese keyboards type them
    ],
)
def test_a_mobile_number_in_any_common_format_becomes_e164(raw: str) -> None:
    assert normalise_phone(raw, "CN") == "+8613800138000"


def test_a_number_without_plus_is_read_in_the_default_region() -> None:
    assert normalise_phone("010-6552 9988", "CN") == "+861065529988"
    assert normalise_phone("(650) 253-0000", "US") == "+16502530000"


def test_a_number_with_plus_keeps_its_own_country() -> None:
    assert normalise_phone("+1 650-253-0000", "CN") == "+16502530000"
    assert normalise_phone("+44 20 7946 0958", "CN") == "+442079460958"


@pytest.mark.parametrize("raw", ["12345", "1380013800", "99999999999999", "+86 000", "abc"])
def test_a_number_that_cannot_exist_is_phone_invalid_at_customer_phone(raw: str) -> None:
    with pytest.raises(InvalidError) as caught:
        normalise_phone(raw, "CN")

    assert caught.value.code == "phone_invalid"
    assert caught.value.status == 422
    assert [path for path, _ in caught.value.errors] == ["customer.phone"]
    assert repr(raw) in caught.value.detail


def test_an_invalid_phone_makes_the_identity_refuse_too() -> None:
    with pytest.raises(InvalidError) as caught:
        identity(phone="12345")

    assert caught.value.code == "phone_invalid"


@pytest.mark.parametrize(
    "raw",
    [
        "No. 1, Jianguo Rd",
        "no 1 jianguo rd.",
        "NO.1 JIANGUO RD",
        "  No.1   Jianguo-Rd ",
        "ＮＯ．１， Ｊｉａｎｇｕｏ Ｒｄ",  # full-width letters, digits and punctuation
    ],
)
def test_address_variants_normalise_to_one_form(raw: str) -> None:
    assert normalise_address(raw) == "no1jianguord"


def test_a_chinese_address_drops_full_width_punctuation_and_spaces() -> None:
    assert normalise_address("北京市 朝阳区，建国路１号。") == "北京市朝阳区建国路1号"
    assert normalise_address("北京市朝阳区建国路1号") == "北京市朝阳区建国路1号"


def test_different_addresses_stay_different() -> None:
    assert normalise_address("No. 1, Jianguo Rd") != normalise_address("No. 11, Jianguo Rd")


def test_signals_are_keyed_hashes_without_the_raw_values() -> None:
    who = identity(
        phone="138 0013 8000",
        device_id="device-abc-123",
        payment_fingerprint="card-fp-777",
        address="No. 1, Jianguo Rd",
    )

    assert [s.split(":")[0] for s in who.signals] == [
        "account",
        "phone",
        "device",
        "payment",
        "address",
    ]
    for signal in who.signals:
        _, digest = signal.split(":")
        assert len(digest) == 40
        assert all(ch in "0123456789abcdef" for ch in digest)
    text = " ".join(who.signals)
    for raw in ("13800138000", "+8613800138000", "device-abc-123", "card-fp-777", "jianguo", "c-1"):
        assert raw not in text


def test_the_same_facts_give_the_same_signals_whatever_their_format() -> None:
    one = identity(phone="13800138000", address="No. 1, Jianguo Rd")
    two = identity(phone="+86 138-0013-8000", address="no 1 jianguo rd.")

    assert one.signals == two.signals


def test_another_secret_gives_other_signals() -> None:
    facts = {"phone": "13800138000", "device_id": "device-abc-123"}

    ours = identity(**facts)
    theirs = identity(OTHER_SECRET, **facts)

    assert set(ours.signals).isdisjoint(theirs.signals)


def test_two_accounts_on_one_phone_share_the_phone_signal_only() -> None:
    one = identity(id="c-1", phone="13800138000")
    two = identity(id="c-2", phone="+8613800138000")

    assert set(one.signals) & set(two.signals) == {one.signals[1]}
    assert one.signals[0] != two.signals[0]


def test_a_signal_kind_is_part_of_the_hash() -> None:
    # The same text as a device id and as a payment fingerprint must not link two customers.
    as_device = identity(device_id="same-value")
    as_payment = identity(payment_fingerprint="same-value")

    assert as_device.signals[1].split(":")[1] != as_payment.signals[1].split(":")[1]


def test_an_account_alone_is_not_proven() -> None:
    assert identity().proven is False
    assert len(identity().signals) == 1


@pytest.mark.parametrize(
    "facts",
    [
        {"phone": "13800138000"},
        {"device_id": "device-abc-123"},
        {"payment_fingerprint": "card-fp-777"},
        {"address": "No. 1, Jianguo Rd"},
    ],
)
def test_any_signal_beyond_the_account_proves_the_identity(facts: dict[str, str]) -> None:
    assert identity(**facts).proven is True


def test_an_address_of_only_punctuation_is_no_signal() -> None:
    who = identity(address=" ,.;- ")

    assert who.proven is False
    assert len(who.signals) == 1
