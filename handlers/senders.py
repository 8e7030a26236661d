"""Who is writing: the sender's role on a ticket, and whom Redmine writes as."""

from __future__ import annotations

from mailgate.config import Config, Site
from mailgate.errors import SenderNotPermitted
from mailgate.mail.message import ParsedMail
from mailgate.trust import Verdict

from .plans import Defer, Refuse, Sender


def role_of(address: str, owner_address: str | None, config: Config) -> str:
    # The owner comes first: an admin writing on their own ticket is its owner,
    # and confirming or reopening is theirs to do.
    if owner_address and address == owner_address.lower():
        return "owner"
    if address in config.admins:
        return "admin"
    return "other"


def sender_of(mail: ParsedMail, login: str | None, role: str,
              verdict: Verdict | None = None) -> Sender:
    return Sender(address=mail.from_address, name=mail.from_name, role=role, login=login,
                  verified=bool(verdict and verdict.verified),
                  how=verdict.how if verdict else "")


def unverified_refusal(claimed: str, verdict: Verdict, address: str, site: Site | None,
                       config: Config) -> Refuse | Defer | str | None:
    """What to do with a sender whose role we cannot take on their word.

    None: the role stands (it is "other", which needs no proof, or it is
    verified).  A Refuse: reject; a Defer: wait (the key lookup failed for now).
    A string: the reason the mail is posted as a comment only.
    """
    if claimed == "other" or verdict.verified:
        return None
    if verdict.temporary:
        # Downgrading would silently drop an owner's "confirm": try again later.
        return Defer(f"cannot verify <{address}> yet: {verdict.how}")
    if unverified_policy(site, config) == "reject":
        return Refuse(f"<{address}> is not verified ({verdict.how})", SenderNotPermitted,
                      notice="unverified-sender")
    return f"the sender could not be verified ({verdict.how}), so the mail is only a comment"


def writer_for(sender: Sender, site: Site | None, config: Config) -> str | Refuse | None:
    """The Redmine login to write as, or a Refuse for an unknown sender."""
    if sender.login:
        return sender.login
    if unknown_policy(site, config) == "reject":
        return Refuse(f"<{sender.address}> is not a Redmine user", SenderNotPermitted,
                      notice="unknown-sender")
    # config.py refuses "accept" without a gateway_user: there is always one here.
    return config.redmine.gateway_user


def unknown_policy(site: Site | None, config: Config) -> str:
    return site.unknown_senders if site else config.unknown_senders


def unverified_policy(site: Site | None, config: Config) -> str:
    return site.unverified_senders if site else config.unverified_senders


def attributed(text: str, sender: Sender) -> str:
    """Text posted by the gateway's user for someone Redmine does not know."""
    return f"From: {sender.name} <{sender.address}>\n\n{text}".rstrip()
