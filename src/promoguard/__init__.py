"""promoguard: e-commerce promotions that cannot quietly give the store away."""

__version__ = "0.1.0"
