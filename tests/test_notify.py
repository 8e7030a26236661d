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
from mailgate.config import load_config
from mailgate.errors import (ConfigError, NoSuchTicket, RedmineRejected, RedmineUnavailable,
                             SenderNotPermitted)
from mailgate.message import parse_mail
from mailgate.notify import (Notice, Notifier, load_notify_settings, notice_for_error,
                             notice_for_outcome, notice_for_refusal, tell_sender)
from mailgate.outcome import Outcome
from mailgate.spool import SpooledMail
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


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "mailgate.yaml"
    path.write_text(yaml.safe_dump({
        "domains": ["example.org"],
        "redmine": {"url": "http://127.0.0.1:9", "api_key": "x",
                    "notification_address": "redmine@example.org"},
        "unknown_senders": "reject",
        "sites": {"site-a": {}},
        "server": {"hostname": LOOP_ID},
        "spool": {"path": str(tmp_path / "spool.db")},
    }))
    return load_config(path, environ={})


def spooled(name: str, mail_from: str | None = None, rcpt: str = "ticket1@example.org",
            raw: bytes | None = None) -> SpooledMail:
    raw = raw if raw is not None else fixture(name)
    sender = parse_mail(raw).from_address if mail_from is None else mail_from
    return SpooledMail(id=1, received_at=0.0, mail_from=sender, rcpt=rcpt, raw=raw, attempts=1)


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
    assert tell_sender(notifier, spooled("owner-confirms-unanswered.eml"), refused_outcome(),
                       config)
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
    assert notifier.stats() == {"sent": 1}


def test_subject_gets_one_re_and_the_thread_is_continued():
    raw = (b"From: Olive Owner <owner@example.org>\nTo: ticket1@example.org\n"
           b"Subject: The router drops the connection\nMessage-ID: <m2@mail.example.org>\n"
           b"In-Reply-To: <n1@redmine.example.org>\n"
           b"References: <n0@redmine.example.org> <n1@redmine.example.org>\n\n"
           b"Status: Solved\n")
    notice = notice_for_refusal(parse_mail(raw), 1, "command-refused", REFUSED,
                                site_address=None)
    assert notice.subject == "Re: The router drops the connection"
    assert notice.in_reply_to == "<m2@mail.example.org>"
    assert notice.references == ("<n0@redmine.example.org>", "<n1@redmine.example.org>",
                                 "<m2@mail.example.org>")


def test_each_kind_says_what_happened_and_what_to_do(config):
    mail = parse_mail(fixture("unknown-sender-reply.eml"))
    unknown = flat(notice_for_refusal(mail, 1, "unknown-sender", "", site_address=None).text)
    assert ("Your message was not added to ticket #1: the address <stranger@elsewhere.test>"
            " is not known to our ticket system.") in unknown
    assert "send it again from the address of your account" in unknown
    gone = flat(notice_for_refusal(mail, 99, "unknown-ticket", "no such ticket #99",
                                   site_address="site-a@example.org").text)
    assert "could not be added to ticket #99: there is no such ticket" in gone
    assert "write to site-a@example.org to start a new request" in gone
    for kind in ("status-refused", "unverified-sender", "too-large", "rejected"):
        text = notice_for_refusal(mail, None, kind, "some detail", site_address=None).text
        assert "some detail" in flat(text)
        assert max(len(line) for line in text.splitlines()) <= 76


def test_status_dropped_by_redmine_is_told(config):
    outcome = Outcome("status-refused", ticket=1, journal_id=8, action="confirm",
                      from_state="answered", to_state="answered",
                      reason="status change to solved refused by Redmine's workflow for olive")
    notice = notice_for_outcome(parse_mail(fixture("owner-confirms.eml")), outcome,
                                site_address=None)
    assert notice.reason_kind == "status-refused"
    assert "did not allow the status change" in flat(notice.text)


def test_no_notice_when_nothing_went_wrong_or_no_command_was_given():
    mail = parse_mail(fixture("owner-reply.eml"))
    assert notice_for_outcome(mail, Outcome("applied", ticket=1, action="comment",
                                            from_state="open", to_state="open"),
                              site_address=None) is None
    # A default action the workflow could not apply: the sender asked for nothing.
    assert notice_for_outcome(mail, refused_outcome(), site_address=None) is None
    assert notice_for_outcome(mail, Outcome("ignored", reason="automatic"),
                              site_address=None) is None


@pytest.mark.parametrize("error, kind, words", [
    (SenderNotPermitted("<stranger@elsewhere.test> is not a Redmine user"), "unknown-sender",
     "is not known to our ticket system"),
    (NoSuchTicket("no such ticket #1"), "unknown-ticket", "there is no such ticket"),
    (RedmineRejected("422", ["Notes is too long"]), "rejected",
     "the ticket system refused it (Notes is too long)"),
])
def test_dead_lettered_mail_is_told(relay, make_notifier, config, error, kind, words):
    notifier = make_notifier(relay.controller.port)
    assert tell_sender(notifier, spooled("unknown-sender-reply.eml"), error, config)
    notifier.run_once()
    [message] = relay.messages()
    assert message["To"] == "stranger@elsewhere.test"
    assert words in body(message)


@pytest.mark.parametrize("error", [RedmineUnavailable("down for 5 days"),
                                   RuntimeError("a bug")])
def test_no_notice_for_what_the_operator_may_still_retry(make_notifier, config, error):
    notifier = make_notifier(1)
    assert not tell_sender(notifier, spooled("unknown-sender-reply.eml"), error, config)


# --- never to whom -----------------------------------------------------------------------

@pytest.mark.parametrize("name, mail_from", [
    ("out-of-office-reply.eml", None),           # Auto-Submitted: auto-replied
    ("bounce-dsn.eml", ""),                      # a delivery report from the null sender
    ("owner-confirms-unanswered.eml", ""),       # a person's text, but a null return path
])
def test_never_to_automatic_mail(make_notifier, config, name, mail_from, caplog):
    notifier = make_notifier(1)                  # never contacted
    with caplog.at_level(logging.INFO, "mailgate.notify"):
        assert not tell_sender(notifier, spooled(name, mail_from=mail_from),
                               refused_outcome(), config)
        assert not tell_sender(notifier, spooled(name, mail_from=mail_from),
                               SenderNotPermitted("x"), config)
    assert not notifier.run_once()
    assert "not sent: the mail is automatic" in caplog.text


@pytest.mark.parametrize("to", ["", "<>", "MAILER-DAEMON@example.net", "postmaster@example.net",
                                "mailgate@example.org", "a@example.org, b@example.org"])
def test_never_to_a_null_or_system_or_own_address(make_notifier, to):
    notifier = make_notifier(1)
    notice = Notice(to=to, reason_kind="rejected", subject="Re: x", text="x", in_reply_to=None)
    assert not notifier.notify(notice, automatic=None)
    assert not notifier.run_once()


def test_our_own_notice_coming_back_is_automatic(relay, make_notifier, config):
    notifier = make_notifier(relay.controller.port)
    tell_sender(notifier, spooled("owner-confirms-unanswered.eml"), refused_outcome(), config)
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
    assert not tell_sender(notifier, spooled("", mail_from="owner@example.org", raw=raw),
                           SenderNotPermitted("x"), config)


# --- once a day --------------------------------------------------------------------------

def test_at_most_one_per_sender_and_reason_per_day(relay, make_notifier, config, clock):
    notifier = make_notifier(relay.controller.port)
    mail = spooled("owner-confirms-unanswered.eml")
    assert tell_sender(notifier, mail, refused_outcome(), config)
    clock.now += 3600
    assert not tell_sender(notifier, mail, refused_outcome(), config)    # same day: suppressed
    # Another kind of problem the same day is news to them.
    assert tell_sender(notifier, mail, NoSuchTicket("gone"), config)
    notifier.run_until_idle()
    assert len(relay.received) == 2
    clock.now += DAY
    assert tell_sender(notifier, mail, refused_outcome(), config)        # the next day: sent
    notifier.run_until_idle()
    assert len(relay.received) == 3


def test_the_daily_record_survives_a_restart(relay, make_notifier, config):
    first = make_notifier(relay.controller.port)
    assert tell_sender(first, spooled("owner-confirms-unanswered.eml"), refused_outcome(),
                       config)
    first.close()
    second = make_notifier(relay.controller.port)                        # after a restart
    assert second.run_once()                                             # queued: not lost
    assert not tell_sender(second, spooled("owner-confirms-unanswered.eml"),
                           refused_outcome(), config)
    assert len(relay.received) == 1


# --- the relay ---------------------------------------------------------------------------

def test_relay_down_the_notice_waits_and_goes_when_it_is_back(relay, make_notifier, config,
                                                                  clock):
    port = relay.controller.port
    relay.controller.stop()                                              # the relay is down
    notifier = make_notifier(port)
    assert tell_sender(notifier, spooled("owner-confirms-unanswered.eml"), refused_outcome(),
                       config)
    assert notifier.run_once()                                           # tried, failed
    assert notifier.stats() == {"queued": 1}
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
    assert notifier.stats() == {"sent": 1}


def test_relay_down_for_too_long_gives_up(make_notifier, config, clock):
    notifier = make_notifier(1)                  # nothing listens on port 1
    tell_sender(notifier, spooled("owner-confirms-unanswered.eml"), refused_outcome(), config)
    for _ in range(60):
        notifier.run_once()
        clock.now += 3600
    assert notifier.stats() == {"dead": 1}


def test_a_recipient_the_relay_refuses_is_not_retried(relay, make_notifier, config):
    relay.rcpt_answer = "550 5.1.1 no such user"
    notifier = make_notifier(relay.controller.port)
    tell_sender(notifier, spooled("owner-confirms-unanswered.eml"), refused_outcome(), config)
    assert notifier.run_once()
    assert notifier.stats() == {"dead": 1}


def test_a_temporary_refusal_is_retried(relay, make_notifier, config, clock):
    relay.rcpt_answer = "450 4.2.0 greylisted"
    notifier = make_notifier(relay.controller.port)
    tell_sender(notifier, spooled("owner-confirms-unanswered.eml"), refused_outcome(), config)
    notifier.run_once()
    assert notifier.stats() == {"queued": 1}
    relay.rcpt_answer = None
    clock.now += 60
    assert notifier.run_once()
    assert notifier.stats() == {"sent": 1}


def test_notify_never_raises(make_notifier, caplog):
    notifier = make_notifier(1)
    notifier.store.close()                      # the database is gone
    notice = Notice(to="owner@example.org", reason_kind="rejected", subject="Re: x",
                    text="x", in_reply_to=None)
    with caplog.at_level(logging.ERROR, "mailgate.notify"):
        assert not notifier.notify(notice, automatic=None)
    assert "not queued" in caplog.text


# --- configuration -----------------------------------------------------------------------

def test_the_documented_config_loads():
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    data = yaml.safe_load(blocks[0])
    settings = load_notify_settings(data["notify"], hostname="mailgate.example.org")
    assert (settings.relay_host, settings.relay_port) == ("127.0.0.1", 25)
    assert settings.from_address == "mailgate@example.org"
    assert settings.loop_id == "mailgate.example.org"
    from mailgate.ratelimit import Limit, load_limits
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


def test_an_error_class_may_name_its_notice_kind(config):
    class SenderUnverified(SenderNotPermitted):
        notice_kind = "unverified-sender"

    mail = parse_mail(fixture("unknown-sender-reply.eml"))
    notice = notice_for_error(mail, SenderUnverified("no aligned DKIM signature"), ticket=1,
                              site_address=None)
    assert notice.reason_kind == "unverified-sender"
    assert "(no aligned DKIM signature)" in flat(notice.text)


def test_run_forever_delivers_what_is_queued_and_stops(relay, tmp_path):
    settings = load_notify_settings({"relay": f"127.0.0.1:{relay.controller.port}",
                                     "from": "mailgate@example.org", "timeout": 5},
                                    hostname=LOOP_ID)
    notifier = Notifier(settings, tmp_path / "spool.db")          # the real clock
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run_forever, args=(stop, 5.0), daemon=True)
    thread.start()
    try:
        notice = notice_for_refusal(parse_mail(fixture("owner-confirms-unanswered.eml")), 1,
                                    "command-refused", REFUSED, site_address=None)
        started = time.monotonic()
        assert notifier.notify(notice, automatic=None)
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
