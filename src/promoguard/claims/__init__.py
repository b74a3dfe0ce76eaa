"""Customers' own refund and compensation claims (see ``docs/claims.md``)."""
