"""Who is writing: the sender's role on a ticket, and whom Redmine writes as.

One identity rule (docs/trust.md): a mail is written *as* a Redmine user, and
acts with any role above a stranger's, only when its sender is verified
(aligned DKIM, or our MTA's trusted Authentication-Results).  Anyone else is
written by the gateway's own user, naming the claimed sender, as a comment:
no status change, no command.  Strangers (no Redmine account) never change a
ticket's status either.  The policies say what happens instead of a comment:
``unknown_senders`` for strangers, ``unverified_senders`` for the rest.

Two kinds of stranger are more than a stranger, and both only with a proven
address (docs/reporters.md): the recorded reporter of a ticket (the address
that opened it, ``TicketView.reporter_address``) is its owner, written by the
gateway's user; and under ``unknown_senders: create`` a Redmine account is
made for the sender, who then writes as themselves.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable

from mailgate.config import Config, Site
from mailgate.errors import SenderNotPermitted
from mailgate.mail.message import ParsedMail
from mailgate.trust import Verdict

from .plans import Account, Defer, Refuse, Sender

#: For a sender whose identity is not looked at: a stranger writing a comment.
NOT_NEEDED = Verdict(False, "not checked: the sender has no account to act as")


def role_of(address: str, owners: Iterable[str], config: Config) -> str:
    """``owners``: the ticket's author's address and its recorded reporter's."""
    # The owner comes first: an admin writing on their own ticket is its owner,
    # and confirming or reopening is theirs to do.
    if address.lower() in owners:
        return "owner"
    if address in config.admins:
        return "admin"
    return "other"


def needs_proof(role: str, login: str | None, site: Site | None, config: Config) -> bool:
    """Whether the sender's identity decides anything (else no DNS lookup is made)."""
    return login is not None or role != "other" or unknown_policy(site, config) == "create"


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
    #: The account to make first, which ``writer`` then is (``unknown_senders: create``).
    account: Account | None = None

    def writes_as(self, sender: Sender) -> bool:
        """Whether the note is in the sender's own name (else the gateway names them)."""
        return self.account is not None or self.writer == sender.login


def identity(sender: Sender, verdict: Verdict, site: Site | None, config: Config, *,
             reporter: bool = False) -> Identity | Refuse | Defer:
    """The one identity rule, for a reply and for a new ticket alike.  ``reporter``:
    the sender is the recorded reporter of the ticket the mail replies to."""
    if sender.login is None:
        return _stranger(sender, verdict, site, config, reporter)
    if verdict.verified:
        return Identity(sender.login, acts=True)
    if verdict.temporary:
        # Downgrading would silently drop an owner's "confirm": try again later.
        return Defer(f"cannot verify <{sender.address}> yet: {verdict.how}")
    return _unverified(sender, verdict, site, config)


def _stranger(sender: Sender, verdict: Verdict, site: Site | None, config: Config,
              reporter: bool) -> Identity | Refuse | Defer:
    policy = unknown_policy(site, config)
    not_a_user = f"<{sender.address}> is not a Redmine user"
    if not reporter and policy == "reject":
        return Refuse(not_a_user, SenderNotPermitted, notice="unknown-sender")
    if not reporter and policy == "accept":
        return _comment_by_gateway(sender, not_a_user, site, config)
    # The ticket's reporter, or a sender to make an account for: both act as that
    # address, so only a proven one may (an account made on a forged From: would
    # let anyone open accounts in other people's names).
    if verdict.temporary:
        return Defer(f"cannot verify <{sender.address}> yet: {verdict.how}")
    if not verdict.verified:
        return _unverified(sender, verdict, site, config)
    if policy == "create":
        account = new_account(sender, tell_them=config.redmine.account_notice)
        return Identity(account.login, acts=True, account=account)
    gateway = config.redmine.gateway_user
    if not gateway:
        return Refuse(not_a_user, SenderNotPermitted, notice="unknown-sender")
    return Identity(gateway, acts=True)


def _unverified(sender: Sender, verdict: Verdict, site: Site | None,
                config: Config) -> Identity | Refuse:
    if unverified_policy(site, config) == "reject":
        return Refuse(f"<{sender.address}> is not verified ({verdict.how})",
                      SenderNotPermitted, notice="unverified-sender")
    return _comment_by_gateway(
        sender, f"the sender could not be verified ({verdict.how}), so the mail is only a"
                " comment", site, config, refusal_notice="unverified-sender")


#: Redmine's User::LOGIN_LENGTH_LIMIT and login format (app/models/user.rb).
_LOGIN = re.compile(r"[a-z0-9_\-@.]{1,60}", re.IGNORECASE)


def new_account(sender: Sender, tell_them: bool = False) -> Account:
    """The account Redmine's own ``unknown_user=create`` would make: the address as
    login when Redmine accepts it as one, names from the From: display name."""
    address = sender.address.lower()
    fallback = "mail-" + hashlib.sha256(address.encode()).hexdigest()[:12]
    names = sender.name.split() or address.partition("@")[0].split(".")
    return Account(login=address if _LOGIN.fullmatch(address) else fallback,
                   fallback_login=fallback, address=address,
                   firstname=(names[0] if names else "")[:30] or "-",
                   lastname=" ".join(names[1:])[:30] or "-", tell_them=tell_them)


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
