"""Who is writing: the sender's role on a ticket, and whom Redmine writes as.

One identity rule (docs/trust.md): a mail is written *as* a Redmine user, and
acts with any role above a stranger's, only when its sender is verified
(aligned DKIM, or our MTA's trusted Authentication-Results).  Anyone else is
written by the gateway's own user, naming the claimed sender, as a comment:
no status change, no command.  Strangers (no Redmine account) never change a
ticket's status either.  The policies say what happens instead of a comment:
``unknown_senders`` for strangers, ``unverified_senders`` for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config import Config, Site
from mailgate.errors import SenderNotPermitted
from mailgate.mail.message import ParsedMail
from mailgate.trust import Verdict

from .plans import Defer, Refuse, Sender

#: For a sender whose identity is not looked at: a stranger writing a comment.
NOT_NEEDED = Verdict(False, "not checked: the sender has no account to act as")


def role_of(address: str, owner_address: str | None, config: Config) -> str:
    # The owner comes first: an admin writing on their own ticket is its owner,
    # and confirming or reopening is theirs to do.
    if owner_address and address == owner_address.lower():
        return "owner"
    if address in config.admins:
        return "admin"
    return "other"


def needs_proof(role: str, login: str | None) -> bool:
    """Whether the sender's identity decides anything (else no DNS lookup is made)."""
    return login is not None or role != "other"


def sender_of(mail: ParsedMail, login: str | None, role: str,
              verdict: Verdict | None = None) -> Sender:
    return Sender(address=mail.from_address, name=mail.from_name, role=role, login=login,
                  verified=bool(verdict and verdict.verified),
                  how=verdict.how if verdict else "")


@dataclass(frozen=True)
class Identity:
    """Who the mail is written as, and whether it may act (change a status, command)."""

    #: The Redmine login that writes: the sender's own, or the gateway's user.
    writer: str
    #: False: a comment only; ``why`` says why, for the note's reader and the sender.
    acts: bool
    why: str | None = None


def identity(sender: Sender, verdict: Verdict, site: Site | None,
             config: Config) -> Identity | Refuse | Defer:
    """The one identity rule, for a reply and for a new ticket alike."""
    if sender.login is None:
        if unknown_policy(site, config) == "reject":
            return Refuse(f"<{sender.address}> is not a Redmine user", SenderNotPermitted,
                          notice="unknown-sender")
        return _comment_by_gateway(sender, f"<{sender.address}> is not a Redmine user",
                                   site, config)
    if verdict.verified:
        return Identity(sender.login, acts=True)
    if verdict.temporary:
        # Downgrading would silently drop an owner's "confirm": try again later.
        return Defer(f"cannot verify <{sender.address}> yet: {verdict.how}")
    if unverified_policy(site, config) == "reject":
        return Refuse(f"<{sender.address}> is not verified ({verdict.how})",
                      SenderNotPermitted, notice="unverified-sender")
    return _comment_by_gateway(
        sender, f"the sender could not be verified ({verdict.how}), so the mail is only a"
                " comment", site, config, refusal_notice="unverified-sender")


def _comment_by_gateway(sender: Sender, why: str, site: Site | None, config: Config,
                        refusal_notice: str = "unknown-sender") -> Identity | Refuse:
    gateway = config.redmine.gateway_user
    if not gateway:
        # Nobody to write a comment with: the mail cannot be taken on the sender's word.
        return Refuse(why, SenderNotPermitted, notice=refusal_notice)
    return Identity(gateway, acts=False, why=why)


def unknown_policy(site: Site | None, config: Config) -> str:
    return site.unknown_senders if site else config.unknown_senders


def unverified_policy(site: Site | None, config: Config) -> str:
    return site.unverified_senders if site else config.unverified_senders


def attributed(text: str, sender: Sender) -> str:
    """Text posted by the gateway's user for someone it cannot write as."""
    return f"From: {sender.name} <{sender.address}>\n\n{text}".rstrip()
