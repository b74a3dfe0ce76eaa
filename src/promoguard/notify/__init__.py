"""Notifications: signed webhooks, email, SMS and app push, from a persistent outbox."""
