"""mailgate: an inbound-email gateway for ticket workflows.

The decisions live in ``workflow`` and ``handlers``; everything else is here,
in subpackages named for what they are:

* ``mail``: pure mail code (parsing, charsets, HTML to text, trimming,
  idempotency keys, address grammar); a leaf that imports nothing above it.
* ``intake``: the sources (SMTP/LMTP, pipe, replay) and the one step they share.
* ``store``: the spool and state store (SQLite or PostgreSQL).
* ``clients``: Redmine and Discord over HTTP.
* ``outbound``: the Discord fan-out and notices to senders.
* ``ops``: metrics, health, the sweep, ``explain``, ``mailgate spool``.

At the top: ``gateway`` (the wiring), ``processing`` (one spooled mail, read
from its plan), ``runner`` (every queue's runner), ``executor`` (plans into
Redmine writes), ``config``, ``errors``.  docs/architecture.md draws the path
of one mail through them.
"""

__version__ = "0.1.0"
