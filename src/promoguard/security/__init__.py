"""Security: API keys and roles, signed requests with replay protection, IP allow-lists,
rate limits, and the request context every audit entry carries."""
