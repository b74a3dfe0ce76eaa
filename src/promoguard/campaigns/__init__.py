"""Campaigns: a rule spec's immutable versions and the lifecycle that makes one live."""
