"""Rollout buckets: stable, independent per campaign, and close to the target share."""

from __future__ import annotations

import pytest

from promoguard.promotions.rollout import BUCKETS, bucket, in_rollout

IDS = [f"customer-{n}" for n in range(100_000)]


def test_a_customer_always_lands_in_the_same_bucket():
    assert bucket("d11-vip", "c-42") == bucket("d11-vip", "c-42")
    assert all(0 <= bucket("d11-vip", i) < BUCKETS for i in IDS[:1000])


@pytest.mark.parametrize("bps", [100, 1000, 5000])
def test_the_share_in_rollout_is_within_half_a_point_of_the_target_over_100k_ids(bps: int):
    share = sum(in_rollout("d11-vip", i, bps) for i in IDS) / len(IDS) * 100
    assert abs(share - bps / 100) <= 0.5, share


def test_ramping_up_keeps_everyone_already_in():
    at_1 = {i for i in IDS if in_rollout("d11-vip", i, 100)}
    at_10 = {i for i in IDS if in_rollout("d11-vip", i, 1000)}
    at_100 = {i for i in IDS if in_rollout("d11-vip", i, 10_000)}
    assert at_1 <= at_10 <= at_100
    assert len(at_100) == len(IDS)


def test_zero_percent_prices_for_nobody():
    assert not any(in_rollout("d11-vip", i, 0) for i in IDS[:1000])


def test_each_campaign_draws_its_own_slice_of_customers():
    first = {i for i in IDS if in_rollout("campaign-a", i, 1000)}
    second = {i for i in IDS if in_rollout("campaign-b", i, 1000)}
    # Independent 10 % slices overlap on about 1 % of ids, not on all of them.
    assert len(first & second) < len(first) / 2
