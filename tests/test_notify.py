"""Notices to senders, delivered through a real SMTP relay (an aiosmtpd sink on 127.0.0.1).

The mails answered are the raw fixtures in fixtures/mail; the clock is a
number the tests move, so "the next day" takes no time.
"""

from __future__ import annotations

import email
import logging
import re
import threading
import time
from email.policy import default as DEFAULT_POLICY
from pathlib import Path

import pytest
import yaml
from aiosmtpd.controller import Controller

from handlers.automatic import automatic_reason
from handlers.notices import NoticeDecision, notice_for
from handlers.planning import plan_mail
from handlers.plans import TicketView
from mailgate.config import load_config
from mailgate.errors import (ConfigError, Forbidden, NoSuchTicket, RedmineRejected,
                             RedmineUnavailable, SenderNotPermitted)
from mailgate.mail.message import parse_mail
from mailgate.outbound.notify import Notice, Notifier, load_notify_settings, notice_from_plan
from mailgate.outcome import Outcome
from mailgate.trust import Verdict
from tests.helpers import fixture

DOCS = Path(__file__).resolve().parent.parent / "docs" / "notify.md"
LOOP_ID = "mailgate.test"
DAY = 86400.0
REFUSED = "cannot confirm: the ticket has not been answered yet"


# --- the relay: a real SMTP server that keeps what it is given --------------------------

class Relay:
    """aiosmtpd handler: records (MAIL FROM, RCPT TOs, bytes); can refuse on demand."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes]] = []
        self.rcpt_answer: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_answer:
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(raw, policy=DEFAULT_POLICY)
                for _, _, raw in self.received]


class PortZeroController(Controller):
    """A Controller on port 0: the port the system chose is read back into ``.port``."""

    def _create_server(self):
        async def bound():
            server = await super(PortZeroController, self)._create_server()
            self.port = server.sockets[0].getsockname()[1]
            return server
        return bound()


@pytest.fixture
def relay():
    handler = Relay()
    controller = PortZeroController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    handler.controller = controller
    yield handler
    if controller._thread is not None:
        controller.stop()


class Clock:
    def __init__(self, now: float = 1_795_000_000.0):     # 2026-11-18, mid-morning UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_notifier(tmp_path, clock):
    made = []

    def make(port: int) -> Notifier:
        settings = load_notify_settings({"relay": f"127.0.0.1:{port}",
                                         "from": "mailgate@example.org", "timeout": 5},
                                        hostname=LOOP_ID)
        notifier = Notifier(settings, tmp_path / "spool.db", clock=clock)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def _config_file(tmp_path, **top) -> Path:
    path = tmp_path / "mailgate.yaml"
    path.write_text(yaml.safe_dump({
        "domains": ["example.org"],
        "redmine": {"url": "http://127.0.0.1:9", "api_key": "x",
                    "notification_address": "redmine@example.org"},
        "unknown_senders": "reject",
        "sites": {"site-a": {}},
        "server": {"hostname": LOOP_ID},
        "spool": {"path": str(tmp_path / "spool.db")},
        **top,
    }))
    return path


@pytest.fixture
def config(tmp_path):
    return load_config(_config_file(tmp_path), environ={})


class Facts:
    """A ticket in ``state`` owned by owner@example.org; ``known`` addresses are Redmine
    users; every sender is verified unless ``verified`` is False."""

    def __init__(self, state: str = "open", verified: bool = True,
                 known: tuple[str, ...] = ("owner@example.org", "support@example.org"),
                 spf_pass: bool = True):
        self.state, self.verified, self.known = state, verified, known
        self.spf_pass = spf_pass

    def ticket(self, ticket_id: int, history: bool = True) -> TicketView:
        if ticket_id == 99:
            raise NoSuchTicket("no such ticket #99")
        return TicketView(ticket_id, self.state, self.state.title(), "owner@example.org",
                          has_answer=False, subject="The router drops the connection")

    def login_for(self, address: str) -> str | None:
        return address.partition("@")[0] if address in self.known else None

    def sender_verdict(self, mail, via_our_mta: bool) -> Verdict:
        return Verdict(self.verified, "test: " + ("verified" if self.verified else "no proof"))

    def return_path_proven(self, mail, envelope_sender: str, via_our_mta: bool) -> bool:
        # Our MTA's SPF result, as the fixtures' Authentication-Results do not carry one.
        return self.spf_pass


def planned(config, name: str, mail_from: str | None = None, rcpt: str = "ticket1@example.org",
            raw: bytes | None = None, facts: Facts | None = None):
    """The plan the worker would make for the fixture ``name`` (or ``raw``)."""
    mail = parse_mail(raw if raw is not None else fixture(name))
    sender = mail.from_address if mail_from is None else mail_from
    return plan_mail(mail, rcpt, facts or Facts(), config, envelope_sender=sender,
                     via_our_mta=True)


def tell(notifier, plan, outcome=None, error=None) -> bool:
    """What the worker does after carrying ``plan`` out: queue the notice it calls for."""
    decision = notice_for(plan, outcome, error)
    return decision is not None and notifier.tell(plan, decision)


def refused_outcome() -> Outcome:
    return Outcome("applied", ticket=1, journal_id=7, action="comment", from_state="open",
                   to_state="open", refused=REFUSED)


def flat(text: str) -> str:
    return " ".join(text.split())


def body(message) -> str:
    return flat(message.get_content())


# --- what is sent ------------------------------------------------------------------------

def test_a_refused_command_is_told_once_with_the_headers_of_an_automatic_reply(
        relay, make_notifier, config):
    notifier = make_notifier(relay.controller.port)
    assert tell(notifier, planned(config, "owner-confirms-unanswered.eml"), refused_outcome())
    assert notifier.run_once()
    assert not notifier.run_once()                  # nothing else due

    [(mail_from, rcpt_tos, _)] = relay.received
    assert mail_from == "<>"                        # MAIL FROM:<> (RFC 3834 §3.3)
    assert rcpt_tos == ["owner@example.org"]
    [message] = relay.messages()
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Loop"] == LOOP_ID
    assert message["From"] == "mailgate@example.org"
    assert message["To"] == "owner@example.org"
    assert message["Subject"] == "Re: The router drops the connection"   # no "Re: Re:"
    assert message["In-Reply-To"] == "<owner-confirms-unanswered-1@mail.example.org>"
    assert message["References"] == "<owner-confirms-unanswered-1@mail.example.org>"
    assert message["Message-ID"].endswith(f"@{LOOP_ID}>")
    text = body(message)
    assert (f"Your command 'Status: Solved' was not carried out: {REFUSED}. Your message"
            " was added to ticket #1 as a comment; the ticket's status is unchanged.") in text
    assert "at most one like it a day" in text
    # What they wrote is never sent back (a forged sender cannot relay text through us).
    assert "fixed it myself" not in text
    assert notifier.counts() == {"sent": 1}


def test_subject_gets_one_re_and_the_thread_is_continued(config):
    raw = (b"From: Olive Owner <owner@example.org>\nTo: ticket1@example.org\n"
           b"Subject: The router drops the connection\nMessage-ID: <m2@mail.example.org>\n"
           b"In-Reply-To: <n1@redmine.example.org>\n"
           b"References: <n0@redmine.example.org> <n1@redmine.example.org>\n\n"
           b"Status: Solved\n")
    notice = notice_from_plan(planned(config, "", raw=raw),
                              NoticeDecision("command-refused", REFUSED, 1))
    assert notice.subject == "Re: The router drops the connection"
    assert notice.in_reply_to == "<m2@mail.example.org>"
    assert set(notice.references) == {"<n0@redmine.example.org>", "<n1@redmine.example.org>",
                                      "<m2@mail.example.org>"}
    assert notice.references[-1] == "<m2@mail.example.org>"


def test_each_kind_says_what_happened_and_what_to_do(config):
    plan = planned(config, "unknown-sender-reply.eml")
    unknown = flat(notice_from_plan(plan, NoticeDecision("unknown-sender", "", 1)).text)
    assert ("Your message was not added to ticket #1: the address <stranger@elsewhere.test>"
            " is not known to our ticket system.") in unknown
    assert "send it again from the address of your account" in unknown
    to_site = planned(config, "unknown-sender-reply.eml", rcpt="site-a@example.org")
    gone = flat(notice_from_plan(to_site, NoticeDecision("unknown-ticket",
                                                         "no such ticket #99", 99)).text)
    assert "could not be added to ticket #99: there is no such ticket" in gone
    assert "write to site-a@example.org to start a new request" in gone
    for kind in ("status-refused", "unverified-sender", "too-large", "rejected", "forbidden"):
        text = notice_from_plan(plan, NoticeDecision(kind, "some detail", None)).text
        assert "some detail" in flat(text)
        assert max(len(line) for line in text.splitlines()) <= 76


def test_status_dropped_by_redmine_is_told(config):
    outcome = Outcome("status-refused", ticket=1, journal_id=8, action="confirm",
                      from_state="answered", to_state="answered",
                      reason="status change to solved refused by Redmine's workflow for olive")
    decision = notice_for(planned(config, "owner-confirms.eml", facts=Facts("answered")),
                          outcome)
    assert decision.kind == "status-refused"
    plan = planned(config, "owner-confirms.eml", facts=Facts("answered"))
    assert "did not allow the status change" in flat(notice_from_plan(plan, decision).text)


def test_no_notice_when_nothing_went_wrong_or_no_command_was_given(config):
    plan = planned(config, "owner-reply.eml")
    assert not plan.commands
    assert notice_for(plan, Outcome("applied", ticket=1, action="comment",
                                    from_state="open", to_state="open")) is None
    # A default action the workflow could not apply: the sender asked for nothing.
    assert notice_for(plan, refused_outcome()) is None
    assert notice_for(plan, Outcome("ignored", reason="automatic")) is None


def test_a_planned_refusal_is_told_with_its_true_reason(relay, make_notifier, config):
    notifier = make_notifier(relay.controller.port)
    plan = planned(config, "unknown-sender-reply.eml")
    assert plan.step.notice == "unknown-sender"
    assert tell(notifier, plan, Outcome("refused", ticket=1, reason=plan.step.reason))
    notifier.run_once()
    [message] = relay.messages()
    assert message["To"] == "stranger@elsewhere.test"
    assert "is not known to our ticket system" in body(message)


def test_an_unverified_owner_under_reject_is_told_unverified_not_unknown(relay, make_notifier,
                                                                         tmp_path):
    # The defect of the first round: the refusal and its notice were decided in
    # two places, and the real owner was told their address was unknown.
    config = load_config(_config_file(tmp_path, unverified_senders="reject"), environ={})
    notifier = make_notifier(relay.controller.port)
    plan = planned(config, "owner-confirms.eml", facts=Facts("answered", verified=False))
    assert plan.step.notice == "unverified-sender"
    assert tell(notifier, plan, Outcome("refused", ticket=1, reason=plan.step.reason))
    notifier.run_once()
    text = body(relay.messages()[0])
    assert "we could not verify that it came from <owner@example.org>" in text
    assert "not known" not in text


@pytest.mark.parametrize("error, kind, words", [
    (NoSuchTicket("no such ticket #1"), "unknown-ticket", "there is no such ticket"),
    (RedmineRejected("422", ["Notes is too long"]), "rejected",
     "the ticket system refused it (Notes is too long)"),
    (Forbidden("olive may not PUT /issues/1.json (403)"), "forbidden",
     "does not allow your account"),
])
def test_a_write_redmine_refuses_for_good_is_told(relay, make_notifier, config, error, kind,
                                                  words):
    notifier = make_notifier(relay.controller.port)
    plan = planned(config, "owner-reply.eml")
    assert notice_for(plan, error=error).kind == kind
    assert tell(notifier, plan, error=error)
    notifier.run_once()
    [message] = relay.messages()
    assert message["To"] == "owner@example.org"
    assert words in body(message)


@pytest.mark.parametrize("error", [RedmineUnavailable("down for 5 days"),
                                   RuntimeError("a bug")])
def test_no_notice_for_what_the_operator_may_still_retry(config, error):
    assert notice_for(planned(config, "owner-reply.eml"), error=error) is None


# --- never to whom -----------------------------------------------------------------------

@pytest.mark.parametrize("name, mail_from", [
    ("out-of-office-reply.eml", None),           # Auto-Submitted: auto-replied
    ("bounce-dsn.eml", ""),                      # a delivery report from the null sender
    ("owner-confirms-unanswered.eml", ""),       # a person's text, but a null return path
])
def test_never_to_automatic_mail(config, name, mail_from):
    plan = planned(config, name, mail_from=mail_from)
    assert plan.automatic and plan.reply_to is None
    assert notice_for(plan, refused_outcome()) is None
    assert notice_for(plan, error=SenderNotPermitted("x")) is None


@pytest.mark.parametrize("to", ["", "<>", "MAILER-DAEMON@example.net", "postmaster@example.net",
                                "mailgate@example.org", "a@example.org, b@example.org"])
def test_never_to_a_null_or_system_or_own_address(make_notifier, to):
    notifier = make_notifier(1)
    notice = Notice(to=to, reason_kind="rejected", subject="Re: x", text="x", in_reply_to=None)
    assert not notifier.notify(notice)
    assert not notifier.run_once()


def test_our_own_notice_coming_back_is_automatic(relay, make_notifier, config):
    notifier = make_notifier(relay.controller.port)
    tell(notifier, planned(config, "owner-confirms-unanswered.eml"), refused_outcome())
    notifier.run_once()
    [(_, _, raw)] = relay.received
    echo = parse_mail(raw)
    reason = automatic_reason(echo.headers, "", echo.from_address,
                              content_type=echo.headers["content-type"], own_loop_id=LOOP_ID,
                              redmine_address=None)
    assert reason and "X-Loop: mailgate.test is our own" in reason
    # Another mailgate (another loop id) still sees an automatic reply, not a person.
    other = automatic_reason(echo.headers, None, echo.from_address,
                             content_type=echo.headers["content-type"],
                             own_loop_id="elsewhere.test", redmine_address=None)
    assert other == "Auto-Submitted: auto-replied (RFC 3834)"
    # Fed back to us as if the owner's MTA had returned it: never answered.
    echoed = planned(config, "", mail_from="owner@example.org", raw=raw)
    assert echoed.reply_to is None and not tell(notifier, echoed, error=SenderNotPermitted("x"))


# --- once a day --------------------------------------------------------------------------

def test_at_most_one_per_sender_and_reason_per_day(relay, make_notifier, config, clock):
    notifier = make_notifier(relay.controller.port)
    plan = planned(config, "owner-confirms-unanswered.eml")
    assert tell(notifier, plan, refused_outcome())
    clock.now += 3600
    assert not tell(notifier, plan, refused_outcome())                   # same day: suppressed
    # Another kind of problem the same day is news to them.
    assert tell(notifier, plan, error=NoSuchTicket("gone"))
    notifier.run_until_idle()
    assert len(relay.received) == 2
    clock.now += DAY
    assert tell(notifier, plan, refused_outcome())                       # the next day: sent
    notifier.run_until_idle()
    assert len(relay.received) == 3


def test_the_daily_record_survives_a_restart(relay, make_notifier, config):
    first = make_notifier(relay.controller.port)
    plan = planned(config, "owner-confirms-unanswered.eml")
    assert tell(first, plan, refused_outcome())
    first.close()
    second = make_notifier(relay.controller.port)                        # after a restart
    assert second.run_once()                                             # queued: not lost
    assert not tell(second, plan, refused_outcome())
    assert len(relay.received) == 1


# --- the relay ---------------------------------------------------------------------------

def test_relay_down_the_notice_waits_and_goes_when_it_is_back(relay, make_notifier, config,
                                                                  clock):
    port = relay.controller.port
    relay.controller.stop()                                              # the relay is down
    notifier = make_notifier(port)
    assert tell(notifier, planned(config, "owner-confirms-unanswered.eml"), refused_outcome())
    assert notifier.run_once()                                           # tried, failed
    assert notifier.counts() == {"queued": 1}
    assert not notifier.run_once()                                       # not due yet
    back = PortZeroController(relay, hostname="127.0.0.1", port=port)
    back.start()
    try:
        clock.now += 60                                                  # the first backoff
        assert notifier.run_once()
    finally:
        back.stop()
    [message] = relay.messages()
    assert message["In-Reply-To"] == "<owner-confirms-unanswered-1@mail.example.org>"
    assert notifier.counts() == {"sent": 1}


def test_relay_down_for_too_long_gives_up(make_notifier, config, clock):
    notifier = make_notifier(1)                  # nothing listens on port 1
    tell(notifier, planned(config, "owner-confirms-unanswered.eml"), refused_outcome())
    for _ in range(60):
        notifier.run_once()
        clock.now += 3600
    assert notifier.counts() == {"dead": 1}


def test_a_recipient_the_relay_refuses_is_not_retried(relay, make_notifier, config):
    relay.rcpt_answer = "550 5.1.1 no such user"
    notifier = make_notifier(relay.controller.port)
    tell(notifier, planned(config, "owner-confirms-unanswered.eml"), refused_outcome())
    assert notifier.run_once()
    assert notifier.counts() == {"dead": 1}


def test_a_temporary_refusal_is_retried(relay, make_notifier, config, clock):
    relay.rcpt_answer = "450 4.2.0 greylisted"
    notifier = make_notifier(relay.controller.port)
    tell(notifier, planned(config, "owner-confirms-unanswered.eml"), refused_outcome())
    notifier.run_once()
    assert notifier.counts() == {"queued": 1}
    relay.rcpt_answer = None
    clock.now += 60
    assert notifier.run_once()
    assert notifier.counts() == {"sent": 1}


def test_notify_never_raises(make_notifier, caplog):
    notifier = make_notifier(1)
    notifier.store.close()                      # the database is gone
    notice = Notice(to="owner@example.org", reason_kind="rejected", subject="Re: x",
                    text="x", in_reply_to=None)
    with caplog.at_level(logging.ERROR, "mailgate.outbound.notify"):
        assert not notifier.notify(notice)
    assert "not queued" in caplog.text


# --- configuration -----------------------------------------------------------------------

def test_the_documented_config_loads():
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    data = yaml.safe_load(blocks[0])
    settings = load_notify_settings(data["notify"], hostname="mailgate.example.org")
    assert (settings.relay_host, settings.relay_port) == ("127.0.0.1", 25)
    assert settings.from_address == "mailgate@example.org"
    assert settings.loop_id == "mailgate.example.org"
    from mailgate.intake.ratelimit import Limit, load_limits
    assert load_limits(data["limits"]).per_sender == Limit(30, 600.0)


def test_config_absent_or_disabled_means_no_notices():
    assert load_notify_settings(None, hostname="h") is None
    assert load_notify_settings({"enabled": False, "from": "x@y"}, hostname="h") is None
    assert load_notify_settings({"enabled": "false"}, hostname="h") is None


@pytest.mark.parametrize("section, key", [
    ({}, "notify.from"),
    ({"from": "not an address"}, "notify.from"),
    ({"from": "a@b", "relay": "localhost"}, "notify.relay"),
    ({"from": "a@b", "relay": "localhost:99999"}, "notify.relay"),
    ({"from": "a@b", "timeout": 0}, "notify.timeout"),
    ({"from": "a@b", "enabled": "maybe"}, "notify.enabled"),
    ({"from": "a@b", "sender": "x"}, "notify.sender: unknown"),
])
def test_bad_config_names_the_key(section, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_notify_settings(section, hostname="h")


def test_run_forever_delivers_what_is_queued_and_stops(relay, tmp_path, config):
    settings = load_notify_settings({"relay": f"127.0.0.1:{relay.controller.port}",
                                     "from": "mailgate@example.org", "timeout": 5},
                                    hostname=LOOP_ID)
    notifier = Notifier(settings, tmp_path / "spool.db")          # the real clock
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run_forever, args=(stop, 5.0), daemon=True)
    thread.start()
    try:
        notice = notice_from_plan(planned(config, "owner-confirms-unanswered.eml"),
                                  NoticeDecision("command-refused", REFUSED, 1))
        started = time.monotonic()
        assert notifier.notify(notice)
        while not relay.received and time.monotonic() - started < 5:
            time.sleep(0.01)
        # notify wakes the thread: no waiting for the 5 s poll.
        assert relay.received and time.monotonic() - started < 2
    finally:
        stop.set()
        notifier.wake.set()
        thread.join(5)
        notifier.close()
    assert not thread.is_alive()


# --- issue 18: notices only to proven senders, and never too many ------------------------

def test_a_forged_envelope_sender_gets_no_notice(config):
    # Before: a forged MAIL FROM aimed our notice (with the attacker's Subject) at a victim.
    forged = planned(config, "owner-confirms-unanswered.eml", mail_from="victim@elsewhere.test",
                     facts=Facts(spf_pass=False))
    assert forged.reply_to is None and notice_for(forged, refused_outcome()) is None
    # The same mail from its own verified address, or with our MTA's SPF pass, may be told.
    assert planned(config, "owner-confirms-unanswered.eml",
                   facts=Facts(spf_pass=False)).reply_to == "owner@example.org"
    assert planned(config, "owner-confirms-unanswered.eml", mail_from="list@example.net",
                   facts=Facts(spf_pass=True)).reply_to == "list@example.net"
    stranger = planned(config, "unknown-sender-reply.eml", facts=Facts(spf_pass=False))
    assert stranger.reply_to is None                    # nothing proves a stranger's address


def test_the_hourly_cap_holds_whatever_gets_past_the_other_rules(relay, tmp_path, clock):
    settings = load_notify_settings({"relay": f"127.0.0.1:{relay.controller.port}",
                                     "from": "mailgate@example.org", "max_per_hour": 2},
                                    hostname=LOOP_ID)
    notifier = Notifier(settings, tmp_path / "spool.db", clock=clock)
    try:
        told = [notifier.notify(Notice(to=f"person{n}@example.org", reason_kind="rejected",
                                       subject="Re: x", text="x", in_reply_to=None))
                for n in range(3)]
        assert told == [True, True, False]
        clock.now += 3601
        assert notifier.notify(Notice(to="person9@example.org", reason_kind="rejected",
                                      subject="Re: x", text="x", in_reply_to=None))
    finally:
        notifier.close()
