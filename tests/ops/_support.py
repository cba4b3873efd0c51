"""Helpers of the operability tests: real HTTP requests, Prometheus text parsing."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HTTP_TIMEOUT_S = 10.0

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _get_blocking(port: int, path: str, method: str, headers: Mapping[str, str]) -> HttpResult:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(method, path, headers=dict(headers))
        response = connection.getresponse()
        body = response.read()
        return HttpResult(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


async def http_get(
    port: int, path: str, method: str = "GET", headers: Mapping[str, str] | None = None
) -> HttpResult:
    """A real HTTP request, made from a thread: the server runs on this test's event loop."""
    return await asyncio.to_thread(_get_blocking, port, path, method, headers or {})


def parse_samples(text: str) -> dict[SampleKey, float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    out: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = sample.value
    return out


async def scrape(port: int) -> dict[SampleKey, float]:
    result = await http_get(port, "/metrics")
    assert result.status == 200, result
    assert result.headers["content-type"].startswith("text/plain"), result.headers
    return parse_samples(result.body.decode())


def value(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def family(
    samples: Mapping[SampleKey, float], name: str
) -> dict[frozenset[tuple[str, str]], float]:
    """The samples named ``name`` (one family's series): labels -> value."""
    return {labels: v for (n, labels), v in samples.items() if n == name}
