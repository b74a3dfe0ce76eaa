"""Payouts exactly once: the payment provider interface, a simulated provider, the payer and
reconciliation (see docs/payments.md)."""
