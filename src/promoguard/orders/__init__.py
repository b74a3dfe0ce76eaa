"""Orders: quotes and their signed tokens, checkout, redemptions, per-customer use, events."""
