"""Tests of promoguard.members."""
