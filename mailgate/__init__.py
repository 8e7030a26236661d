"""mailgate: an inbound-email gateway for ticket workflows.

The edges live here (config, CLI, SMTP/LMTP/pipe listeners, the spool, the
Redmine and Discord clients); the decisions live in ``workflow`` and
``handlers``.
"""

__version__ = "0.1.0"
