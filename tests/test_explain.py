"""`mailgate explain`: the dry run, through the real command, without a Redmine."""

import pytest

from tests.helpers import DEMO_CONFIG, MAIL, explain_json, run_mailgate, without_marker

KEYS = {"file", "route", "sender", "from_state", "action", "to_state", "refused",
        "subject", "body", "attachments", "reason", "plan"}


def test_every_field_is_there():
    [result] = explain_json("owner-reply.eml")
    assert set(result) == KEYS
    assert result["route"] == {"kind": "reply", "ticket": 1, "site": None}
    assert result["sender"] == {"address": "owner@example.org", "name": "Olive Owner",
                                "role": "owner", "verified": True}


@pytest.mark.parametrize("mail, state, action, to_state", [
    ("owner-reply.eml", "open", "give-info", "open"),
    ("owner-reply.eml", "needs-info", "give-info", "open"),
    ("owner-reply.eml", "answered", "reopen", "open"),
    ("owner-reply.eml", "expired", "reopen", "open"),
    ("owner-reply.eml", "solved", "comment", "solved"),
    ("owner-reply.eml", "invalid", "comment", "invalid"),
    ("support-answer.eml", "open", "answer", "answered"),
    ("support-answer.eml", "expired", "comment", "expired"),
    ("support-requests-info.eml", "open", "request-info", "needs-info"),
    ("owner-confirms.eml", "answered", "confirm", "solved"),
    ("admin-sets-invalid.eml", "open", "set-status", "invalid"),
])
def test_actions_follow_the_workflow(mail, state, action, to_state):
    [result] = explain_json(mail, state=state)
    assert (result["from_state"], result["action"], result["to_state"]) == \
        (state, action, to_state)


def test_body_is_the_note_without_commands():
    [result] = explain_json("owner-confirms.eml", state="answered")
    assert without_marker(result["body"]) == "That did it, thank you!"
    assert result["body"].splitlines()[-1].startswith("(mailgate:")


def test_a_refused_command_is_a_comment_with_the_reason():
    [result] = explain_json("owner-confirms-unanswered.eml", state="open")
    assert result["action"] == "comment" and result["to_state"] == "open"
    assert result["refused"] == "cannot confirm: the ticket has not been answered yet"
    assert without_marker(result["body"]) == "Never mind, I fixed it myself."


def test_html_only_mail_becomes_readable_text():
    [result] = explain_json("html-only-answer.eml")
    assert without_marker(result["body"]) == ("Hello Olive,\n\nplease try these steps:\n\n- unplug the router\n"
                              "- wait 30 seconds & plug it in\n\nSam\nSupport team")


def test_charsets_are_decoded():
    [result] = explain_json("latin1-owner-reply.eml")
    assert result["subject"] == "Réponse à votre question"
    assert without_marker(result["body"]) == "Le routeur est déconnecté chaque soir à 20 h."


def test_attachments_are_listed():
    [result] = explain_json("owner-reply-with-attachments.eml")
    assert result["attachments"] == [
        {"filename": "screenshot.png", "size": 1032, "content_type": "image/png"},
        {"filename": "router.log", "size": 54, "content_type": "text/plain"},
    ]
    assert without_marker(result["body"]) == "Here is the router's log from last night."


@pytest.mark.parametrize("mail, how", [
    ("site-a-subject-tag-reply.eml", "subject tag"),
    ("redmine-notification-reply.eml", "Message-ID"),
])
def test_replies_to_a_site_or_redmine_address_land_on_the_ticket(mail, how):
    [result] = explain_json(mail)
    assert result["route"]["kind"] == "reply" and result["route"]["ticket"] == 1, how


def test_site_address_opens_a_new_ticket():
    [result] = explain_json("site-a-new-ticket.eml")
    assert result["route"] == {"kind": "new", "ticket": None, "site": "site-a"}
    assert result["action"] == "open"


def test_the_recipient_option_overrides_the_headers():
    [result] = explain_json("owner-reply.eml", extra=("--recipient", "ticket42@example.org"))
    assert result["route"]["ticket"] == 42


@pytest.mark.parametrize("mail, reason", [
    ("unknown-address.eml", "no recipient given and no address in the headers"),
    ("empty.eml", "empty message"),
    ("garbage.eml", "unparseable message"),
])
def test_unroutable_mail_is_rejected_with_a_reason(mail, reason):
    [result] = explain_json(mail)
    assert result["route"]["kind"] == "rejected"
    assert reason in result["reason"]


def test_human_readable_output():
    result = run_mailgate("explain", "--ticket-state", "answered", "--ticket-owner",
                          "owner@example.org", str(MAIL / "owner-confirms.eml"),
                          env={"MAILGATE_CONFIG": "fixtures/config/demo.yaml"})
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "reply to ticket #1" in text and "confirm: answered -> solved" in text
    assert "| That did it, thank you!" in text


def test_quoted_history_and_signature_are_trimmed_and_the_original_attached():
    [result] = explain_json("owner-reply-quoting-history.eml")
    assert without_marker(result["body"]) == \
        "Updating did not help, it dropped again at 20:05.\n\nOlive"
    assert result["attachments"][-1]["filename"] == "original.eml"
    assert result["attachments"][-1]["content_type"] == "message/rfc822"


def test_outlook_header_block_is_trimmed_but_the_mail_is_a_persons():
    [result] = explain_json("outlook-reply-with-suppress-header.eml")
    assert result["route"]["kind"] == "reply"
    assert without_marker(result["body"]) == "Written by a person in Outlook: still broken."


# Replies as Yahoo Mail for Android, an iPhone set to German and git format-patch write
# them (fixtures/replies/185, 154, 190), through the real command.
YAHOO = ("What is the difference with Unikraft?\n\nSent from Yahoo Mail on Android \n \n"
         "  On Sat, Sep 5, 2020 at 10:43 PM, Samuel Thibault<samuel.thibault@ens-lyon.org> "
         "wrote:   Hello,\n\nJason Long, le ven. 04 sept. 2020 22:01:42 +0000, a ecrit:\n"
         "> Can anyone tell me about the goal and features of Mini-OS?\n\n"
         "https://wiki.xen.org/wiki/Mini-OS\n\nSamuel\n")
GERMAN = ("Hier ist meine neue Antwort.\n\nVon meinem iPhone gesendet\u200b\n\n"
          "Am 13.05.2026 um 09:05 schrieb Vorname Nachname:\n> Hier steht der alte Text.\n")
PATCH = ("Here is v3.\n\n" + "*" * 40 + "\nFrom: Olive Owner <owner@example.org>\n"
         "Subject: [PATCH v3] router: keep the link up\n\n---\n--- a/link.c\n+++ b/link.c\n"
         "@@ -1,1 +1,2 @@\n int up;\n+int kept;\n")


@pytest.mark.parametrize("body, note", [
    (YAHOO, "What is the difference with Unikraft?"),
    (GERMAN, "Hier ist meine neue Antwort."),
    (PATCH, None),                        # kept whole (textile escapes its "@@")
], ids=["yahoo-run-on-attribution", "german-mobile-line-and-attribution", "patch-kept"])
def test_what_more_clients_write_is_trimmed_to_the_persons_text(tmp_path, body, note):
    mail = tmp_path / "reply.eml"
    mail.write_bytes(("Authentication-Results: mx.example.org; dkim=pass header.d=example.org\n"
                      "From: Olive Owner <owner@example.org>\nTo: ticket1@example.org\n"
                      "Subject: Re: [site-a - Support #1] The router\n"
                      "Message-ID: <issue17-trim@mail.example.org>\nMIME-Version: 1.0\n"
                      "Content-Type: text/plain; charset=utf-8\n"
                      "Content-Transfer-Encoding: 8bit\n\n" + body).encode())
    [result] = explain_json(str(mail))
    attached = [a["filename"] for a in result["attachments"]]
    if note is None:
        assert "Subject: [PATCH v3]" in result["body"] and "+int kept;" in result["body"]
        assert "original.eml" not in attached      # nothing was cut
    else:
        assert without_marker(result["body"]) == note
        assert "original.eml" in attached


@pytest.mark.parametrize("mail, reason", [
    ("out-of-office-reply.eml", "Auto-Submitted"),
    ("bounce-dsn.eml", "multipart/report"),
])
def test_automatic_mail_is_ignored_with_its_reason(mail, reason):
    [result] = explain_json(mail)
    assert result["route"]["kind"] == "ignored"
    assert result["reason"].startswith("automatic mail:") and reason in result["reason"]
    assert result["body"] is None


def test_a_blocked_attachment_is_named_in_the_note_not_lost_silently():
    [result] = explain_json("owner-reply-with-blocked-attachment.eml")
    assert without_marker(result["body"]) == ("The vendor sent me this tool and a log.\n\n"
                                              "(not attached: fixer.exe (blocked type))")
    assert [a["filename"] for a in result["attachments"]] == ["router.log"]


def test_attachment_limits_from_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(DEMO_CONFIG.read_text() + "\nattachments: {max_count: 1, max_size: 600}\n")
    [result] = explain_json("owner-reply-with-attachments.eml", config=config)
    assert [a["filename"] for a in result["attachments"]] == ["router.log"]
    assert without_marker(result["body"]).endswith(
        "(not attached: screenshot.png (larger than 600 bytes))")


def test_a_forged_owner_is_only_a_comment_posted_by_the_gateway():
    # The Authentication-Results is from an MTA we do not trust: anyone can write one.
    [result] = explain_json("forged-owner-confirms.eml", state="answered")
    assert result["sender"]["role"] == "owner" and result["sender"]["verified"] is False
    assert (result["action"], result["to_state"]) == ("comment", "answered")
    assert result["refused"].startswith("the sender could not be verified")
    assert without_marker(result["body"]).startswith(
        "From: Olive Owner <owner@example.org>\n\nFixed, close it.")


def test_a_site_may_reject_unverified_senders(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(DEMO_CONFIG.read_text() + "\nunverified_senders: reject\n")
    [result] = explain_json("forged-owner-confirms.eml", state="answered", config=config)
    assert result["route"]["kind"] == "rejected"
    assert result["reason"].startswith("<owner@example.org> is not verified")


def test_an_unverified_other_is_only_a_comment_too():
    # Issue 18: "Sam Support" from anywhere, unsigned, moved tickets as Sam.  Every
    # account needs proof to be written as; without it the gateway's user comments.
    # (explain with the ticket given takes every sender for a Redmine user.)
    [result] = explain_json("unknown-sender-reply.eml", state="open")
    assert (result["sender"]["role"], result["action"]) == ("other", "comment")
    assert result["plan"]["as_user"] == "gateway"
    assert result["refused"].startswith("the sender could not be verified")


@pytest.mark.real_redmine
def test_a_mail_already_applied_is_explained_as_a_duplicate(real_redmine, tmp_path):
    """explain reads the spool's record: the mail the pipe applied is a duplicate of the
    note on its ticket, not a plan without a role (issue 17, point 3)."""
    import uuid

    from mailgate.clients.redmine import RedmineClient
    from support.configs import write_config
    from support.mails import verified_reply

    config = write_config(tmp_path / "m.yaml", real_redmine.url, real_redmine.admin_key)
    client = RedmineClient(real_redmine.url, real_redmine.admin_key)
    ticket = client.create_issue("site-a", f"explain {uuid.uuid4().hex[:8]}", "x",
                                 as_user="owner")
    mail = tmp_path / "reply.eml"
    mail.write_bytes(verified_reply(ticket, "owner@example.org", "Olive Owner", "Re: x",
                                    f"<{uuid.uuid4().hex}@example.org>", "More detail."))
    before = run_mailgate("explain", "--config", str(config), str(mail))
    assert "give-info: open -> open" in before.stdout.decode(), before.stderr.decode()
    piped = run_mailgate("pipe", "--config", str(config), stdin=mail.read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()
    after = run_mailgate("explain", "--config", str(config), str(mail))
    text = after.stdout.decode()
    assert f"{mail}: duplicate" in text and f"already on ticket #{ticket}" in text, text
    assert "role None" not in text
