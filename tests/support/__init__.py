"""Shared helpers for the test suite (servers on free ports, stream readers)."""
