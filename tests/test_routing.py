"""Address routing: the precedence of ticket, site, triage and Redmine's own address."""

import pytest

from mailgate.config import load_config
from mailgate.errors import UnknownAddress
from mailgate.mail.message import parse_mail
from mailgate.routing import resolve_recipient, route_mail, ticket_reference
from tests.helpers import DEMO_CONFIG, fixture


@pytest.fixture(scope="module")
def config():
    return load_config(DEMO_CONFIG, need_redmine=False)


@pytest.mark.parametrize("address, kind, ticket, site", [
    ("ticket12@example.org", "ticket", 12, None),
    ("<Ticket12@EXAMPLE.org>", "ticket", 12, None),
    ("site-a@example.org", "site", None, "site-a"),
    ("SITE-B@example.org", "site", None, "site-b"),
    ("triage@example.org", "site", None, "triage"),
    ("redmine@example.org", "notification", None, "triage"),
])
def test_addresses_we_serve(config, address, kind, ticket, site):
    recipient = resolve_recipient(address, config)
    assert (recipient.kind, recipient.ticket) == (kind, ticket)
    assert (recipient.site.name if recipient.site else None) == site


@pytest.mark.parametrize("address", [
    "nobody@example.org", "ticket12@elsewhere.test", "ticketx@example.org",
    "ticket@example.org", "site-a@elsewhere.test", "not-an-address", "",
])
def test_anything_else_is_unknown(config, address):
    with pytest.raises(UnknownAddress) as info:
        resolve_recipient(address, config)
    assert info.value.smtp_reply.startswith("550 5.1.1")


def mail_with(subject="Hello", refs=""):
    extra = f"In-Reply-To: {refs}\n" if refs else ""
    return parse_mail(f"From: a@b.test\nSubject: {subject}\n{extra}\nbody\n".encode())


@pytest.mark.parametrize("subject, refs, ticket", [
    ("Re: [site-a - Support #12] Router", "", 12),
    ("Re: [#7] Router", "", 7),
    ("AW: [Support #99] (Answered) x", "", 99),
    ("Hello [not a tag] #5", "", None),
    ("Hello", "<redmine.issue-31.20261123091000.5@example.org>", 31),
    ("Re: [#7] Router", "<redmine.issue-31.20261123091000.5@example.org>", 31),
    ("Hello", "<redmine.journal-31.20261123091000.5@example.org>", None),
])
def test_ticket_references(subject, refs, ticket):
    assert ticket_reference(mail_with(subject, refs))[0] == ticket


def test_a_ticket_address_wins_over_a_subject_tag(config):
    route = route_mail(resolve_recipient("ticket3@example.org", config), mail_with("[#9] x"))
    assert (route.kind, route.ticket) == ("reply", 3)


def test_redmine_address_without_a_ticket_goes_to_triage(config):
    route = route_mail(resolve_recipient("redmine@example.org", config), mail_with())
    assert (route.kind, route.site.name) == ("new", "triage")


def test_site_mail_without_a_reference_is_a_new_ticket(config):
    mail = parse_mail(fixture("site-a-new-ticket.eml"))
    route = route_mail(resolve_recipient("site-a@example.org", config), mail)
    assert (route.kind, route.site.project) == ("new", "site-a")
