"""Monitoring: live-traffic signals, sliding-window detectors, alert rules and actions."""
