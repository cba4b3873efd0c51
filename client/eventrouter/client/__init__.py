"""eventrouter client library (stub, filled in below)."""
