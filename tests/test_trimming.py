"""trim_reply: the corpus of real replies, one test per rule, and properties.

The corpus and its scoring come from support/trim_corpus.py, as bench/trim_score.py's
do, so this test and the published score cannot disagree about what "exact" means.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailgate.mail.trimming import Trimmed, trim_reply
from support import trim_corpus

CORPUS = trim_corpus.load_corpus()


def trimmed(text: str) -> str:
    return trim_reply(text).text


# --- the corpus ---------------------------------------------------------------------

def test_corpus_is_large_enough_and_documented():
    sources = (trim_corpus.CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    assert len(CORPUS) >= 60
    missing = [case.name for case in CORPUS if f"`{case.name}`" not in sources]
    assert missing == []


def test_corpus_exact_match_is_at_least_80_percent():
    result = trim_corpus.score(trimmed, CORPUS)
    assert result.percent >= 80.0, result.misses


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_corpus_case_never_loses_real_text(case):
    assert not trim_corpus.cuts_real_text(trimmed(case.body), case.expected)


def test_the_scorer_itself_notices_cut_text_and_misses():
    # The corpus checks are only worth something if the scorer can fail.
    assert trim_corpus.cuts_real_text("Hello", "Hello\nSecond line")
    assert not trim_corpus.cuts_real_text("Hello  \n\nSecond line\n> q", "Hello\nSecond line")
    assert not trim_corpus.is_exact("Hello\n> q", "Hello")
    assert trim_corpus.is_exact("\nHello  \n\n", "Hello")
    assert trim_corpus.naive("Hi\nOn Mon, Bob wrote:\n> q") == "Hi\n"


# --- attribution lines --------------------------------------------------------------

ATTRIBUTIONS = {
    "english": "On Thu, Mar 3, 2016 at 5:21 PM, Jan Novak <jan@example.com> wrote:",
    "german": "Am 03.03.2016 um 17:21 schrieb Jan Novak <jan@example.com>:",
    "french": "Le jeu. 3 mars 2016 à 17:21, Jan Novak <jan@example.com> a écrit :",
    "spanish": "El jue., 3 mar. 2016 a las 17:21, Jan Novak (<jan@example.com>) escribió:",
    "italian": "Il giorno gio 3 mar 2016 alle ore 17:21 Jan Novak <jan@example.com> ha scritto:",
    "dutch": "Op 3 mrt. 2016 om 17:21 schreef Jan Novak <jan@example.com>:",
    "polish": "W dniu 3.03.2016 o 17:21, Jan Novak <jan@example.com> pisze:",
    "russian": "3 марта 2016 г., 17:21 пользователь Jan Novak <jan@example.com> написал(а):",
    "japanese": "2016年3月3日(木) 17:21 Jan Novak <jan@example.com>:",
    "chinese": "在 2016年3月3日，17:21，Jan Novak <jan@example.com> 写道：",
    "iso date first": "2016-03-03 17:21 GMT+01:00 Jan Novak <jan@example.com>:",
    "danish date first": "3. mar. 2016 kl. 17.21 skrev Jan Novak <jan@example.com>:",
}


@pytest.mark.parametrize("attribution", ATTRIBUTIONS.values(), ids=ATTRIBUTIONS.keys())
def test_attribution_above_quote_is_cut(attribution):
    result = trim_reply(f"Done, see the log.\n\n{attribution}\n> Is it done?\n> Jan")
    assert result == Trimmed("Done, see the log.", f"{attribution}\n> Is it done?\n> Jan",
                             "attribution line")


@pytest.mark.parametrize("attribution", ATTRIBUTIONS.values(), ids=ATTRIBUTIONS.keys())
def test_attribution_above_unquoted_history_is_cut(attribution):
    # Outlook and phones paste the old mail without ">" below the line.
    assert trimmed(f"Done.\n\n{attribution}\n\nIs it done?\nJan") == "Done."


def test_attribution_wrapped_over_two_lines_is_cut_whole():
    text = ("Thanks!\n\nOn Tue, Sep 25, 2012 at 8:59 AM, Chris Wanstrath\n"
            "<notifications@github.com> wrote:\n\n> Steps 0-2 are in prod.")
    assert trimmed(text) == "Thanks!"


def test_attribution_wrapped_after_the_address_bracket_is_cut_whole():
    text = ("Danke.\n\nAm Mo., 4. Juli 2022 um 08:13 Uhr schrieb Rick Sanchez <\n"
            "rick@example.com>:\n\n> Hallo")
    assert trimmed(text) == "Danke."


def test_reply_line_directly_above_attribution_is_kept():
    # No blank line between the reply and "On ... wrote:" (Android Gmail).
    text = "See http://example.com\nOn Nov 28, 2014 12:36 PM, \"Arpit\" <a@example.org> wrote:\n> x"
    assert trimmed(text) == "See http://example.com"


@pytest.mark.parametrize("text", [
    "On Friday we deployed it.\n\nOn Monday it broke.",
    "On your host run:\n\n    telnet 127.0.0.1 52698",
    "The author writes: this is just a sentence.",
    "Hi,\n\nAs the manual puts it, the author writes:\n\nUse the force flag.",
])
def test_sentences_that_look_like_attributions_are_kept(text):
    assert trim_reply(text) == Trimmed(text, "", None)


# --- Outlook header blocks and separators ----------------------------------------------

HEADER_BLOCKS = {
    "english": "From: Jan Novak <jan@example.com>\nSent: Thursday, March 3, 2016 5:21 PM\n"
               "To: Support\nSubject: RE: Printer",
    "german": "Von: Jan Novak <jan@example.com>\nGesendet: Donnerstag, 3. März 2016 17:21\n"
              "An: Support\nBetreff: AW: Drucker",
    "french": "De : Jan Novak [mailto:jan@example.com]\nEnvoyé : jeudi 3 mars 2016 17:21\n"
              "À : Support\nObjet : RE: Imprimante",
    "spanish": "De: Jan Novak <jan@example.com>\nEnviado: jueves, 3 de marzo de 2016 17:21\n"
               "Para: Soporte\nAsunto: RE: Impresora",
    "italian": "Da: Jan Novak <jan@example.com>\nInviato: giovedì 3 marzo 2016 17:21\n"
               "A: Supporto\nOggetto: R: Stampante",
    "dutch": "Van: Jan Novak <jan@example.com>\nVerzonden: donderdag 3 maart 2016 17:21\n"
             "Aan: Support\nOnderwerp: RE: Printer",
    "bold, wrapped": "*From:* Jan Novak [mailto:\n jan@example.com]\n*Sent:* Thursday 17:21\n"
                     "*To:* Support\n*Subject:* Printer",
}


@pytest.mark.parametrize("block", HEADER_BLOCKS.values(), ids=HEADER_BLOCKS.keys())
def test_outlook_header_block_is_cut(block):
    result = trim_reply(f"It works now.\n\n{block}\n\nThe printer is broken.")
    assert result.text == "It works now."
    assert result.reason == "header block of the original message"


def test_outlook_rule_above_header_block_is_cut_too():
    text = ("It works now.\n________________________________\n" + HEADER_BLOCKS["english"]
            + "\n\nOld text")
    assert trim_reply(text).removed.startswith("_____")


@pytest.mark.parametrize("text", [
    "Invitation:\n\nDate: Wednesday 3 October\nTime: 7:00\nAddress: 130 Fox St\n\nBring ID.",
    "Project: onlinestore\nStatus: Resolved\nAssigned to: John Smith\n\nDone.",
    "Agenda\nDate: Monday\nTo: all staff\n\nCake at four.",
])
def test_field_lines_that_are_not_a_quoted_header_are_kept(text):
    assert trimmed(text) == text


@pytest.mark.parametrize("separator", [
    "-----Original Message-----",
    "----- Original Message -----",
    "-----Ursprüngliche Nachricht-----",
    "-------- Message d'origine --------",
    "-------- Mensaje original --------",
    "-----Messaggio originale-----",
    "-----Oorspronkelijk bericht-----",
    "---------- Forwarded message ---------",
    "-------- Weitergeleitete Nachricht --------",
    "Begin forwarded message:",
])
def test_original_message_and_forward_separators_are_cut(separator):
    assert trimmed(f"See below.\n\n{separator}\nFrom: x@example.com\n\nOld text") == "See below."


def test_forward_with_nothing_above_is_kept_whole():
    text = ("---------- Forwarded message ---------\nFrom: Jan <jan@example.com>\n"
            "Date: Thu, 3 Mar 2016\nSubject: Printer\nTo: support@example.com\n\nIt is broken.")
    assert trim_reply(text) == Trimmed(text, "", None)


def test_header_block_with_nothing_above_is_kept_whole():
    text = HEADER_BLOCKS["german"] + "\n\nDer Drucker ist kaputt."
    assert trimmed(text) == text


# --- quotes: trailing, interleaved, bottom-posted -------------------------------------

def test_trailing_quote_without_attribution_is_cut():
    result = trim_reply("Fixed in 1.2.\n\n> --- Reply above. ---\n> Issue #6779 updated")
    assert result == Trimmed("Fixed in 1.2.", "> --- Reply above. ---\n> Issue #6779 updated",
                             "quoted history")


def test_interleaved_answers_keep_the_whole_mail():
    text = ("On Mon, Jan <jan@example.com> wrote:\n> Option A?\n\nYes.\n\n> Option B?\n\nNo.")
    assert trim_reply(text) == Trimmed(text, "", None)


def test_answers_below_an_android_attribution_keep_the_whole_mail():
    text = "Top\n\n---- Jan wrote ----\n\n> Option A?\n\nYes."
    assert trimmed(text) == text
    assert trimmed("Yes.\n\n---- Jan wrote ----\n\n> Option A?") == "Yes."


def test_bottom_posted_reply_keeps_the_whole_mail():
    text = "On 04/02/2012 06:26 PM, Megan wrote:\n> Hi\nHello"
    assert trimmed(text) == text


def test_text_above_and_below_a_quote_keeps_the_whole_mail():
    text = "Test reply\n\nOn 04/19/2011 07:10 AM, Roman wrote:\n\n> Test\n\nRegards, Roman"
    assert trimmed(text) == text


def test_quote_lines_wrapped_by_the_client_still_count_as_quote():
    long_quote = "> Pitchfork occupy vegan pabst hammock. Wayfarers etsy pok pok, kale chips"
    text = (f"This is a test\n\nOn Sep 21, 2016 3:18 PM, \"frugal\" <n@example.com> wrote:\n"
            f"{long_quote}\nbrooklyn four dollar toast street art.\n> VIEW ALL")
    assert trimmed(text) == "This is a test"


def test_short_answer_right_below_a_short_question_is_not_a_wrap():
    text = "Top\n\n> Can you do it by Friday?\nyes, friday works\n> And the docs?"
    assert trimmed(text) == text


def test_signature_and_list_footer_after_the_quote_still_leave_it_trailing():
    text = ("Thanks.\n\nOn Mon, Bob <b@example.com> wrote:\n> q\n\n-- \nBob\n\n")
    assert trimmed(text) == "Thanks."
    footer = "__\nriak-users mailing list\nhttp://lists.basho.com/mailman/listinfo/riak-users"
    assert trimmed(f"Thanks.\n\nOn Mon, Bob <b@example.com> wrote:\n> q\n\n{footer}") == "Thanks."


# --- signatures ---------------------------------------------------------------------------

def test_dash_dash_space_signature_is_cut():
    result = trim_reply("Na štriku se suši šosić.\n\n-- \nšosić\n+385 1 234")
    assert result == Trimmed("Na štriku se suši šosić.", "-- \nšosić\n+385 1 234", "signature")


def test_dash_dash_without_space_counts_too():
    # mailgate's parser strips trailing blanks, so "-- " arrives as "--".
    assert trimmed("Done.\n\n--\nJan Novak") == "Done."


def test_long_text_after_dash_dash_is_kept():
    body = "Done.\n\n--\n" + "\n".join(f"log line {n}" for n in range(30))
    assert trimmed(body) == body


@pytest.mark.parametrize("line", [
    "Sent from my iPhone", "Sent from my Android", "Sent from my Samsung Galaxy smartphone.",
    "Von meinem iPhone gesendet", "Envoyé de mon iPhone", "Enviado desde mi iPhone",
    "Inviato da iPhone", "Verzonden vanaf mijn iPhone", "Get Outlook for iOS",
    "Get Outlook for Android<https://aka.ms/ghei36>", "Sent from Mail for Windows",
    "Télécharger Outlook pour iOS<https://aka.ms/o0ukef>",
])
def test_mobile_signature_is_cut(line):
    assert trim_reply(f"Yes, tomorrow.\n\n{line}") == Trimmed("Yes, tomorrow.", line,
                                                            "mobile signature")


def test_mobile_signature_above_the_quote_is_cut_with_it():
    text = ("Hello\n\nSent from my iPhone\n\n"
            "On Apr 3, 2012, at 4:19 PM, bob <b@example.com> wrote:\n\n> Hi")
    assert trim_reply(text).text == "Hello"
    assert trim_reply(text).reason == "attribution line, mobile signature"


@pytest.mark.parametrize("text", [
    "Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
    "The notification was sent from my iPhone app to all users.",
    "I will check.\n\nSent from the office",
    "And here is a fix -- this is not a signature.\n\nkthxbai",
    "Points:\n-- first\n-- second\n\nThanks!",
    "Thanks,\n\nMed venlig hilsen / Kind regards\n\nTim Tommy\nCEO",
])
def test_text_that_resembles_a_signature_is_kept(text):
    assert trimmed(text) == text


def test_only_a_signature_is_kept_rather_than_emptied():
    assert trimmed("--\n202-555-1212") == "--\n202-555-1212"


def test_mobile_line_with_nothing_above_it_is_kept():
    text = "Sent from my iPhone\n\nOn Apr 3, 2012, bob <b@example.com> wrote:\n> Hi"
    assert trimmed(text) == "Sent from my iPhone"


def test_mailing_list_footer_is_cut():
    text = ("Wat is de beste manier?\n\n-Maarten\n\n\n______________________\n"
            "riak mailing list\nriak@lists.example.com\n"
            "http://lists.example.com/mailman/listinfo/riak")
    assert trim_reply(text).text == "Wat is de beste manier?\n\n-Maarten"
    assert trim_reply(text).reason == "mailing-list footer"


# --- issue 17: what more clients write ------------------------------------------------------

# Each line is what a phone, tablet or app appends, as other trimmers' fixtures and
# issue threads show it (fixtures/replies/SOURCES.md names them); cut like any other.
MORE_MOBILE_LINES = [
    "Sent from my iPhone!", "Sent from my HTC smartphone!",
    "Sent wirelessly from my BlackBerry device on the Bell network.",
    "Envoyé sans fil par mon terminal mobile BlackBerry sur le réseau de Bell.",
    "Enviado desde mi oficina móvil BlackBerry® de Telcel",
    "Sent from my cell, please excuse any typos.", "Sent from my iPhone, please excuse any typos",
    "Sent from my HTC M8 Android phone.  Please excuse typoze",
    "Sent from my phone - apologies for brevity",
    "Sent from a mobile device", "(Sent from mobile device)", "(sent from a phone)",
    "Sent via mobile",
    "Sent with ProtonMail Secure Email.",
    "Diese Nachricht wurde von meinem Android-Mobiltelefon mit K-9 Mail gesendet.",
    "Gesendet mit der Telekom Mail App", "Von meinem Samsung Galaxy Smartphone gesendet.",
    "Envoyé de Yahoo Mail pour Android", "Enviado do meu iPhone",
    "Enviado do Yahoo Mail para iPhone",
    "Inviato dal mio dispositivo Galaxy", "Verzonden vanuit Outlook", "Verstuurd met BlueMail",
    "Skickat från Outlook för Android", "Hämta Outlook för iOS", "Sendt fra Outlook til iOS",
    "Hent Outlook til Android", "Lähetetty iPhonesta", "Wysłane z iPhone'a", "Odesláno z iPhonu",
    "Отправлено из мобильной Почты Mail.ru", "Надіслано з iPhone", "Στάλθηκε από το iPhone μου",
    "從我的 iPhone 傳送", "从我的 iPhone 发送", "iPadから送信", "iPhone에서 보냄",
    "iPhone'umdan gönderildi", "Outlook für iOS beziehen",
    "Get Outlook for iOShttps://aka.ms/o0ukef",
]


@pytest.mark.parametrize("line", MORE_MOBILE_LINES)
def test_mobile_and_app_lines_in_more_languages_are_cut(line):
    assert trim_reply(f"Yes, tomorrow.\n\n{line}") == Trimmed("Yes, tomorrow.", line,
                                                            "mobile signature")


@pytest.mark.parametrize("text", [
    "Login works from the desktop.\n\nFails from mobile",
    "The crash report:\n\nOutlook for Android crashes on start",
    "Sent from my iPhone at ten, then again from the laptop.",
    "Wysłane z opóźnieniem.", "Lähetetty eilen.", "Sent via FedEx.", "Gesendet mit DHL",
    "Which app?\nOutlook for Android", "我同意。\n从我的角度来看",
    "Sent from my iPhone, please excuse the delay in answering your question about the invoice",
])
def test_lines_that_only_resemble_app_lines_are_kept(text):
    assert trimmed(f"Hello,\n\n{text}") == f"Hello,\n\n{text}"


@pytest.mark.parametrize("rule", ["-" * 54, "*" * 66, "=" * 40, "_" * 32])
def test_a_decorative_rule_above_a_header_block_goes_with_it(rule):
    result = trim_reply(f"It works now.\n\n{rule}\n{HEADER_BLOCKS['english']}\n\nOld text")
    assert result.text == "It works now."
    assert result.removed.startswith(rule)


@pytest.mark.parametrize("separator", [
    "*-----Original Message-----*", "**-----Original Message-----**",
    "--------- **Original Message** ---------", "Forwarded message:",
    "------------------ 原始邮件 ------------------", "Начало переадресованного сообщения:",
])
def test_decorated_and_more_separators_are_cut(separator):
    assert trimmed(f"See below.\n\n{separator}\nFrom: x@example.com\n\nOld text") == "See below."


def test_gmail_bold_signature_delimiter_is_cut():
    # github/email_reply_parser#46: a bold "-- " arrives as "*-- *".
    assert trimmed("Done.\n\n*-- *\nJan Novak\n+420 123") == "Done."


def test_a_patch_under_a_from_and_subject_is_what_the_person_sent():
    # A rule, From: and Subject: above a patch (fixtures/replies/190, 189): not history.
    text = ("Here is v3.\n\n" + "*" * 40 + "\nFrom: Jan Novak <jan@example.com>\n"
            "Date: Fri, 1 Nov 2019 10:54:14 +0200\nSubject: [PATCH v3] fix the reader\n\n"
            "Signed-off-by: Jan Novak <jan@example.com>\n---\n--- a/x.c\n+++ b/x.c\n"
            "@@ -1,2 +1,3 @@\n int x;\n+int y;")
    assert trim_reply(text) == Trimmed(text, "", None)


@pytest.mark.parametrize("attribution", [
    "Am 13.05.2026 um 09:05 schrieb Vorname Nachname:",      # the verb before the name
    "Op 13 mei 2026 om 09:05 schreef Jan Jansen:",
    "29 грудня 2017 р. о 19:09 <support@example.com> написав:",
    "On Monday, Bob wrote:", "Le lundi, Marie a écrit :",    # no address, no date: a quote below
])
def test_attributions_without_an_address_are_cut_above_a_quote(attribution):
    assert trimmed(f"Thanks, done.\n\n{attribution}\n> Is it done?") == "Thanks, done."


@pytest.mark.parametrize("text", [
    "On Monday, Bob wrote:\nthe list is below, please check it.",
    "Hi,\n\nOn Monday the team wrote:\n\n- fix the printer\n- order paper",
])
def test_an_attribution_with_nothing_to_prove_it_keeps_unquoted_text(text):
    assert trimmed(text) == text


@pytest.mark.parametrize("intro", [
    "Le client a écrit :",       # "Le" is "the" too, and no day is named
    "On the forum Bob wrote:",
])
def test_a_sentence_introducing_a_quote_stays_though_the_quote_goes(intro):
    assert trimmed(f"Thanks.\n\n{intro}\n> Nothing works.") == f"Thanks.\n\n{intro}"


def test_yahoo_attribution_run_on_into_the_old_text_is_cut():
    # Yahoo Mail for Android puts the old mail's first line after "wrote:" (cases 185-187).
    text = ("Yes .. all are zeros\n\nSent from Yahoo Mail on Android\n\n"
            "  On Mon, 30 Dec 2019 at 15:45, Rob Kossler<rkossler@nd.edu> wrote:   Perhaps the "
            "digital values are all zero?\nOn Wed, Dec 18, 2019 at 7:02 AM Bob <b@example.com> "
            "wrote:\n\nOne more thing")
    result = trim_reply(text)
    assert result.text == "Yes .. all are zeros"
    assert result.reason == "attribution line, mobile signature"


def test_a_line_with_wrote_and_spaces_in_prose_is_kept():
    text = "Thanks.\n\nOn the forum Bob wrote:   see the thread for the rest"
    assert trimmed(text) == text


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", "\u200e", "\u2060", "\u00ad"])
def test_invisible_characters_after_the_text_do_not_hide_markers(invisible):
    assert trimmed(f"Thanks.\n\nSent from my iPhone{invisible}") == "Thanks."
    assert trimmed(f"Thanks.\n{invisible}\n-- {invisible}\nJan") == "Thanks."
    text = f"Yes.\n{invisible}\nOn Mon, 2 Jun 2025, Bob <b@example.com> wrote:{invisible}\n> q"
    assert trim_reply(text).text == "Yes."
    # A line of invisible characters between the quote's lines is still inside the quote.
    assert trimmed(f"Yes.\n\n> q\n{invisible}\n> r") == "Yes."


def test_invisible_characters_alone_are_no_text_of_ones_own():
    text = "\u200b\n\nOn Mon, 2 Jun 2025, Bob <b@example.com> wrote:\n> q"
    assert trim_reply(text) == Trimmed(text, "", None)
    assert trimmed("\ufeffFixed.\n\n-- \nJan") == "\ufeffFixed."


# --- input shapes -------------------------------------------------------------------------

def test_windows_line_ends_are_understood():
    assert trimmed("Yes.\r\n\r\nOn Mon, Bob <b@example.com> wrote:\r\n> q\r\n") == "Yes."


def test_empty_and_blank_input_come_back_unchanged():
    assert trim_reply("") == Trimmed("", "", None)
    assert trim_reply("\n  \n") == Trimmed("\n  \n", "", None)


def test_all_quoted_mail_is_kept_rather_than_emptied():
    assert trimmed("> just\n> a quote") == "> just\n> a quote"


# --- properties ---------------------------------------------------------------------------

# Text with none of the characters any rule keys on (":", ">", "-", "_", "@", "<").
plain_line = st.text(alphabet="abcdefghij KLMNOP.,!?'0123456789", max_size=60)
plain_text = st.lists(plain_line, max_size=12).map("\n".join)

PIECES = [
    "Thanks, that works.", "", "Jan", "-- ", "--", "Sent from my iPhone", "> quoted line",
    ">", "> > nested", "On Mon, 3 Mar 2016 at 17:21, Bob <bob@example.com> wrote:",
    "Am 03.03.2016 um 17:21 schrieb Bob <bob@example.com>:", "From: Bob <bob@example.com>",
    "Sent: Thursday, March 3, 2016", "To: Support", "Subject: RE: hi",
    "-----Original Message-----", "---------- Forwarded message ---------",
    "________________________________", "__", "riak mailing list", "Regards, Roman",
    "yes, friday works", "Get Outlook for iOS", "\u200b", "Sent from my iPhone\u200b",
    "*" * 20, "  On Mon, 2 Jun 2025, Bob <b@example.com> wrote:   old text", "@@ -1 +1 @@",
]
mail_like = st.lists(st.one_of(st.sampled_from(PIECES), plain_line), max_size=25).map("\n".join)
any_text = st.one_of(mail_like, st.text(max_size=300))


@given(plain_text)
def test_text_without_markers_comes_back_unchanged(text):
    assert trim_reply(text) == Trimmed(text, "", None)


@settings(max_examples=300)
@given(any_text)
# Found by hypothesis: the signature below the quote used to hide that the
# quote was trailing until a second pass had removed the signature.
@example("Thanks, that works.\n> quoted line\nSent from my iPhone\n-- ")
def test_trimming_is_idempotent(text):
    once = trim_reply(text).text
    assert trim_reply(once).text == once


@settings(max_examples=300)
@given(any_text)
def test_output_is_the_first_lines_of_the_input(text):
    # Never invents, reorders or rewrites: a prefix of the lines (the last
    # one may lose trailing blanks).
    lines = re.split(r"\r?\n", text)
    out = re.split(r"\r?\n", trim_reply(text).text)
    assert out[:-1] == lines[:len(out) - 1]
    assert lines[len(out) - 1].startswith(out[-1])


@settings(max_examples=300)
@given(any_text)
def test_text_and_removed_together_are_the_input(text):
    result = trim_reply(text)
    if result.reason is None:
        assert (result.text, result.removed) == (text, "")
    else:
        kept = text.replace("\r\n", "\n").split("\n")
        assert "\n".join(kept).startswith(result.text)
        assert "\n".join(kept).rstrip().endswith(result.removed.rstrip())


@settings(max_examples=300)
@given(any_text)
def test_never_empty_when_the_input_had_text(text):
    if text.strip():
        assert trim_reply(text).text.strip()
