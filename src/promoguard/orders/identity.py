"""The identity ledger (首单): which accounts are one person, decided by promoguard, not the client.

An identity is known by its *signals*: the account id, the phone number (normalised to E.164),
the device id, the payment fingerprint and the delivery address (normalised). Each is stored
only as a keyed hash (HMAC-SHA256 with the service secret), so the ledger holds no phone number
or address in the clear.

Every committed order marks its signals (:class:`~promoguard.orders.models.IdentityMark`);
accounts that share any signal are linked. *First order* means none of the customer's signals
has a mark — no earlier order by any linked account that was paid or is still awaiting payment
(cancelled and expired orders lose their marks) — and the customer gave at least one signal
beyond the account id: an account alone is free to re-register, so it proves nothing. At
checkout the first-order discount also takes a counter per signal (limit 1), so two linked
accounts racing their first orders cannot both get it.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime

import phonenumbers
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.errors import InvalidError
from promoguard.orders.models import IdentityMark
from promoguard.orders.schemas import CustomerFacts
from promoguard.store.db import PlainSQL

__all__ = [
    "ACCOUNT",
    "Identity",
    "first_order_eligible",
    "first_order_eligible_in",
    "forget_order",
    "linked_accounts",
    "mark_order",
    "normalise_address",
    "normalise_phone",
]

ACCOUNT = "account"
_SEPARATORS = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise_phone(raw: str, region: str) -> str:
    """A phone number in E.164 (``+8613800138000``); a number without ``+`` is read in
    ``region``. Raises :class:`InvalidError` ``phone_invalid`` for a number that cannot exist."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise _bad_phone(raw, str(exc)) from None
    if not phonenumbers.is_valid_number(number):
        raise _bad_phone(raw, "not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _bad_phone(raw: str, why: str) -> InvalidError:
    return InvalidError(
        "phone_invalid",
        f"{raw!r} is not a phone number promoguard can use: {why}",
        errors=[("customer.phone", why)],
    )


def normalise_address(raw: str) -> str:
    """An address reduced to what identifies it: Unicode-normalised, case-folded, without
    spaces or punctuation (``"No. 1, Jianguo Rd"`` and ``"no 1 jianguo rd."`` are the same)."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw).casefold())


class Identity:
    """A customer's hashed signals, each as ``kind:hex``."""

    __slots__ = ("customer_id", "signals")

    def __init__(self, facts: CustomerFacts, *, secret: str, region: str) -> None:
        key = secret.encode()

        def signal(kind: str, value: str) -> str:
            digest = hmac.digest(key, f"{kind}\n{value}".encode(), "sha256").hex()
            return f"{kind}:{digest[:40]}"

        found = [signal(ACCOUNT, facts.id)]
        if facts.phone is not None:
            found.append(signal("phone", normalise_phone(facts.phone, region)))
        if facts.device_id is not None:
            found.append(signal("device", facts.device_id))
        if facts.payment_fingerprint is not None:
            found.append(signal("payment", facts.payment_fingerprint))
        if facts.address is not None and (address := normalise_address(facts.address)):
            found.append(signal("address", address))
        self.customer_id = facts.id
        self.signals: tuple[str, ...] = tuple(found)

    @property
    def proven(self) -> bool:
        """Whether anything beyond the account id identifies the customer."""
        return len(self.signals) > 1


async def first_order_eligible(session: AsyncSession, identity: Identity) -> bool:
    """No order on record for any of the identity's signals (and it has more than an account)."""
    if not identity.proven:
        return False
    seen = await session.scalar(
        select(IdentityMark.signal).where(IdentityMark.signal.in_(identity.signals)).limit(1)
    )
    return seen is None


def first_order_eligible_in(sql: PlainSQL, identity: Identity) -> bool:
    """:func:`first_order_eligible` inside an order's plain-SQL transaction."""
    if not identity.proven:
        return False
    signals = identity.signals
    seen = sql.one(
        f"SELECT signal FROM identity_marks WHERE signal IN ({sql.marks(len(signals))}) LIMIT 1",
        signals,
    )
    return seen is None


def mark_order(sql: PlainSQL, identity: Identity, order_id: str, at: datetime) -> None:
    """Record the order's signals (in its plain-SQL transaction): from now on they have
    ordered."""
    stamp = sql.instant(at)
    sql.insert(
        "identity_marks",
        ("signal", "order_id", "customer_id", "at"),
        [(s, order_id, identity.customer_id, stamp) for s in identity.signals],
    )


async def forget_order(session: AsyncSession, order_id: str) -> None:
    """A cancelled or expired order no longer counts as ordering."""
    await session.execute(delete(IdentityMark).where(IdentityMark.order_id == order_id))


async def linked_accounts(session: AsyncSession, customer_id: str, limit: int = 200) -> list[str]:
    """Every account linked to ``customer_id`` through shared signals, transitively (at most
    ``limit`` accounts, the customer first)."""
    accounts = [customer_id]
    known = {customer_id}
    signals: set[str] = set()
    frontier: Iterable[str] = [customer_id]
    while frontier and len(accounts) < limit:
        new_signals = (
            set(
                (
                    await session.scalars(
                        select(IdentityMark.signal).where(IdentityMark.customer_id.in_(frontier))
                    )
                ).all()
            )
            - signals
        )
        signals |= new_signals
        if not new_signals:
            break
        found = (
            await session.scalars(
                select(IdentityMark.customer_id)
                .where(IdentityMark.signal.in_(new_signals))
                .distinct()
            )
        ).all()
        frontier = sorted(set(found) - known)
        known.update(frontier)
        accounts.extend(frontier)
    return accounts[:limit]
