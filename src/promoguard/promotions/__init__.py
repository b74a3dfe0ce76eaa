"""Promotion rules and the pure pricing engine."""
