"""Percentage rollout (灰度发布): a customer's place in a campaign's rollout.

Each (campaign, customer) pair hashes with MurmurHash3 (x86, 32-bit, seed 0) into one of
10,000 buckets. A campaign live at ``p`` basis points (100 bp = 1 %) prices for the customers
whose bucket is below ``p``; so as the percentage ramps (1 % → 10 % → 100 %) everyone already in
stays in, and each campaign draws its own, independent slice of customers.
"""

from __future__ import annotations

import mmh3

__all__ = ["BUCKETS", "bucket", "in_rollout"]

BUCKETS = 10_000
"""Buckets per campaign; a rollout percentage is a whole number of basis points of them."""


def bucket(campaign_id: str, customer_id: str) -> int:
    """The customer's bucket (0–9,999) for this campaign; the same on every worker, forever."""
    key = f"{campaign_id}\x1f{customer_id}".encode()
    return mmh3.hash(key, 0, signed=False) % BUCKETS


def in_rollout(campaign_id: str, customer_id: str, rollout_bps: int) -> bool:
    """Whether a campaign live at ``rollout_bps`` (0–10,000) prices for this customer."""
    if rollout_bps >= BUCKETS:
        return True
    return rollout_bps > 0 and bucket(campaign_id, customer_id) < rollout_bps
