"""Coupons: templates (coupon campaigns), claims into a customer's wallet, redemption."""
