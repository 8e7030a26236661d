"""HTTP sessions for the REST clients: keep-alive, and no delayed ACK before an answer.

A server that writes an answer's header and its body in two writes, without
``TCP_NODELAY``, stalls on every answer that has a body: Nagle's algorithm
holds the body back until the header is acknowledged, and Linux delays that
acknowledgement (up to 40 ms) in the hope of sending it with our next request.
Redmine under WEBrick (Debian's packaged set-up, and the local test Redmine)
does exactly this: a GET of an issue that Redmine served in 15 ms reached us
after 64 ms, while a PUT (204, no body) did not stall (bench B, issue 16).
Asking Linux for an immediate ACK before reading each answer removes the
stall; it costs one ``setsockopt`` per request and changes nothing on the wire
but the timing of an ACK.  Elsewhere (no ``TCP_QUICKACK``) sessions are plain.
"""

from __future__ import annotations

import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: Linux only; None elsewhere.
QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _ack_at_once(sock) -> None:
    if QUICKACK is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
    except OSError:
        pass    # a socket that refuses it is read as it is


class _QuickAckHTTP(HTTPConnection):
    def getresponse(self, *args, **kwargs):
        # Linux leaves quick-ACK mode on its own once we send again: set it per answer.
        _ack_at_once(self.sock)
        return super().getresponse(*args, **kwargs)


class _QuickAckHTTPS(HTTPSConnection):
    def getresponse(self, *args, **kwargs):
        _ack_at_once(self.sock)
        return super().getresponse(*args, **kwargs)


class _QuickAckHTTPPool(HTTPConnectionPool):
    ConnectionCls = _QuickAckHTTP


class _QuickAckHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _QuickAckHTTPS


class QuickAckAdapter(HTTPAdapter):
    """requests' adapter, with connections that ACK an answer's first segment at once."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _QuickAckHTTPPool,
                                                   "https": _QuickAckHTTPSPool}


def session() -> requests.Session:
    """A requests session whose connections do not delay the ACK of an answer."""
    made = requests.Session()
    if QUICKACK is not None:
        adapter = QuickAckAdapter()
        made.mount("http://", adapter)
        made.mount("https://", adapter)
    return made
