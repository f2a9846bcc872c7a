"""HTTP hardening of the gateway: rate limits, body size cap, security headers (wired in by install.py)."""
