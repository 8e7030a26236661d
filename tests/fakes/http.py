"""What both fake servers do alike: write an answer as the real APIs do (JSON bodies,
no body and no Content-Type on 204)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, Mapping


def write_answer(handler: BaseHTTPRequestHandler, status: int, body: Any, content_type: str,
                 headers: Mapping[str, str] = {}) -> None:
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    if status != 204:
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body or b"")))
    handler.end_headers()
    if body and status != 204:
        handler.wfile.write(body)
