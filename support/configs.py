"""A gateway config file for a test or a bench run."""

from __future__ import annotations

from pathlib import Path

import yaml

#: What our MTA writes on mail whose DKIM signature it verified (trusted in write_config).
VERIFIED = "Authentication-Results: mx.example.org; dkim=pass header.d=example.org"


def write_config(path: Path, url: str, api_key: str, **overrides) -> Path:
    """A config like the demo's, pointed at the given Redmine, written to ``path``.

    Each override replaces a top-level key; a mapping is merged into the section
    of that name one level deep (``redmine={"timeout": 10}`` keeps the url)."""
    data = {
        "domains": ["example.org"],
        "redmine": {"url": url, "api_key": api_key, "gateway_user": "gateway",
                    "notification_address": "redmine@example.org", "timeout": 5},
        "admins": ["admin@example.org"],
        # The SMTP client of a test or bench plays our MTA handing mail over from 127.0.0.1.
        "trust": {"trusted_authserv_ids": ["mx.example.org"], "trusted_relays": ["127.0.0.1"]},
        "unknown_senders": "accept",
        "sites": {"site-a": {"tracker": "Support"},
                  "site-b": {"tracker": "Support", "unknown_senders": "reject"}},
        "triage": {"project": "triage", "tracker": "Support"},
        "server": {"hostname": "mailgate.test", "max_message_size": 200_000,
                   "max_recipients": 3},
        "spool": {"path": str(path.parent / "spool.db")},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data))
    return path
