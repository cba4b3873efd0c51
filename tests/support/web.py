"""A unary call to the web listener in the Connect protocol's JSON form, as a browser makes it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

SERVICE_PATH = "/eventrouter.v1.EventRouterService"


def connect_call(address: str, method: str, request: dict[str, Any], token: str) -> Any:
    """POST ``request`` as JSON to the service's METHOD at ``ADDRESS``; the decoded reply."""
    call = urllib.request.Request(
        f"http://{address}{SERVICE_PATH}/{method}",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(call, timeout=10) as response:
        return json.loads(response.read())
