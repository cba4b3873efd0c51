"""Credentials, TLS and limits: who may subscribe as whom, who may emit, how much."""
