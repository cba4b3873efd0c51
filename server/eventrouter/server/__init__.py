"""eventrouter server."""
