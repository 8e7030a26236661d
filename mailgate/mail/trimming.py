"""Reply trimming: the text a person wrote, without quoted history or signature.

A reply to a ticket notification carries, below what the person wrote, the
notification itself (quoted with ``>`` or pasted under an Outlook header
block) and often a signature.  Posting all of it would copy every earlier
note into every new one.  ``trim_reply`` cuts at the first line where the
history starts and drops the signature just above it.

It only ever cuts: the text it returns is the input's first lines (never
reordered, never rewritten), and when in doubt it keeps the text.  Three rules
keep real text safe:

* history is cut only where *everything* below the cut is history: a ``>``
  block followed by new text is an interleaved (or bottom-posted) reply, and
  the answers between the quotes are the point of it, so the mail is kept;
* a mail with nothing of its own above the history (a plain forward, a lone
  signature) is kept whole: an empty note would lose the mail;
* signatures are recognised only by the ``-- `` delimiter, known mobile/app
  lines and mailing-list footers, never by guessing at names or sign-offs.

Every rule reads the lines with invisible format characters (zero-width
spaces, byte-order marks, direction marks) taken out, since some clients add
them after the text; what is returned is always cut from the lines as they came.

Pure and stdlib-only; see docs/trimming.md for the rules and their scores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Trimmed:
    #: What the person wrote (the input unchanged when nothing was cut).
    text: str
    #: What was cut off below it ("" when nothing was cut).
    removed: str
    #: Why, for logs and `mailgate explain`; None when nothing was cut.
    reason: str | None


def trim_reply(text: str) -> Trimmed:
    """The text a person wrote in ``text``, with what was cut and why.

    >>> trim_reply("Fixed, thanks.\\n\\nOn Mon, 2 Jun 2025, Bob <bob@example.com> wrote:\\n"
    ...            "> Is it fixed?").text
    'Fixed, thanks.'
    >>> trim_reply("Fixed, thanks.\\n\\nSent from my iPhone").reason
    'mobile signature'
    """
    lines = re.split(r"\r?\n", text)
    # Taking characters out never takes out a line end: seen[i] is lines[i], visible.
    seen = re.split(r"\r?\n", _INVISIBLE.sub("", text))
    cut, reasons = _history_cut(seen)
    if not _has_text(seen[:cut]):
        # Nothing written above the history (a forward, a bare quote):
        # keep the whole mail rather than post an empty note.
        cut, reasons = len(lines), []
    kept_end, sig_reasons = _signature_cut(seen, cut)
    if _has_text(seen[:kept_end]):
        cut, reasons = kept_end, reasons + sig_reasons
    if not reasons:
        return Trimmed(text=text, removed="", reason=None)
    return Trimmed(text="\n".join(lines[:cut]).rstrip(),
                   removed="\n".join(lines[cut:]).strip("\n"),
                   reason=", ".join(reasons))


def _has_text(lines: list[str]) -> bool:
    return any(line.strip() for line in lines)


# Zero-width spaces and joiners, byte-order marks, direction marks, soft hyphens:
# the Unicode format characters mail clients use.  Some put them after the text
# or on otherwise empty lines, where they would hide a marker or make a blank
# line count as text.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                        "\u2066-\u206f\ufeff]")


# --- where the history starts ------------------------------------------------

def _history_cut(lines: list[str]) -> tuple[int, list[str]]:
    """The first line of quoted history, or len(lines) when there is none."""
    for i in range(len(lines)):
        found = _history_at(lines, i)
        if found is None:
            continue
        start, body, reason = found
        if body is not None and not _only_quotes_below(lines, body):
            # New text below the quote: an interleaved or bottom-posted
            # reply.  Its answers sit between the quotes, so keep it all.
            return len(lines), []
        return start, [reason]
    return len(lines), []


def _history_at(lines: list[str], i: int) -> tuple[int, int | None, str] | None:
    """(cut line, first quoted line or None, reason) if history starts at line i.

    The quoted line is None when the history below is not ``>``-quoted
    (Outlook pastes it under a header block): everything below is history.
    """
    line = lines[i]
    if _is_quoted(line):
        return i, i, "quoted history"
    if SEPARATOR.match(line):
        # Apple Mail quotes the forwarded mail with ">": then, as below an
        # attribution, text under the quote makes it an interleaved reply.
        below = _next_text_line(lines, i + 1)
        quoted = below is not None and _is_quoted(lines[below])
        return i, below if quoted else None, "original-message separator"
    if _header_block_at(lines, i) and not _patch_below(lines, i):
        start = i - 1 if i and RULE.match(lines[i - 1]) else i
        return start, None, "header block of the original message"
    if _run_on_attribution(line):
        # Yahoo Mail puts the old mail's first line after "wrote:" on the same
        # line and pastes the rest below unquoted: all of it is history.
        return i, None, "attribution line"
    start = i if DASHED_ATTRIBUTION.match(line) else _attribution_ending_at(lines, i)
    if start is not None:
        # Below an attribution the history is either ">"-quoted (and then
        # must be checked for answers) or pasted as is, up to the end.
        below = _next_text_line(lines, i + 1)
        quoted = below is not None and _is_quoted(lines[below])
        return start, below if quoted else None, "attribution line"
    return None


def _next_text_line(lines: list[str], i: int) -> int | None:
    return next((j for j in range(i, len(lines)) if lines[j].strip()), None)


def _is_quoted(line: str) -> bool:
    return QUOTED.match(line) is not None


QUOTED = re.compile(r"^[ \t]{0,3}>")

# A horizontal rule drawn above a header block: Outlook's underscores, or the
# dashes, asterisks or equals signs other clients and people use.
RULE = re.compile(r"^\s*([_\-*=~—])(?:\s?\1){9,}\s*$")

# Gmail and Markdown conversions put the phrase, or the whole line, in bold:
# "*-----Original Message-----*", "--------- **Original Message** ---------".
SEPARATOR = re.compile(
    r"^\s*[*_]{0,2}-{2,}\s*[*_]{0,2}(?:original message|reply message|message d'origine|"
    r"message original|ursprüngliche nachricht|originalnachricht|antwort nachricht|"
    r"oprindelig meddelelse|mensaje original|messaggio originale|oorspronkelijk bericht|"
    r"originalmeddelande|oprindelig besked|opprinnelig melding|alkuperäinen viesti|mensagem original|"
    r"wiadomość oryginalna|"
    r"исходное сообщение|původní zpráva|eredeti üzenet|"
    r"forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|"
    r"messaggio inoltrato|doorgestuurd bericht|videresendt meddelelse|vidarebefordrat meddelande|"
    r"mensagem encaminhada|wiadomość przekazana|пересылаемое сообщение|"
    r"原始邮件|原始郵件|元のメッセージ|원본 메시지|videresendt melding|přeposlaná zpráva|"
    r"továbbított üzenet|edelleenlähetetty viesti)[*_]{0,2}\s*-*[*_]{0,2}\s*$"
    # Apple Mail's (and Sparrow's) forward line, in the languages it speaks.
    r"|^\s*(?:begin forwarded message|forwarded message|anfang der weitergeleiteten nachricht|"
    r"début du message (?:transféré|réexpédié)|inizio messaggio inoltrato|"
    r"comienzo del mensaje reenviado|inicio del mensaje reenviado|"
    r"início da mensagem reencaminhada|begin doorgestuurd bericht|vidarebefordrat mejl|"
    r"początek przekazywanej wiadomości|начало переадресованного сообщения|"
    r"転送されたメッセージ)\s*[:：]\s*$",
    re.IGNORECASE)


# --- attribution lines ("On <date>, <person> wrote:") ------------------------

_EMAIL = r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+"
EMAIL = re.compile(_EMAIL)
DATE_OR_TIME = re.compile(r"\d{1,2}[:.]\d{2}|\b(?:19|20)\d\d\b|\d{4}年|\d+月\d+日")

# "wrote:" in the languages mail clients write it in (Latin scripts need a
# word boundary, CJK ones cannot have one).  A bracket may follow the verb:
# "napsal(a):", "написал(а):", Hungarian Gmail's "írta (időpont: 2026. aug. 16.):".
WROTE = re.compile(
    r"(?:(?<![^\W\d_])(?:wrote|writes|sent|schrieb|geschrieben|geschreven|het volgende|a écrit|"
    r"a ecrit|escribió|escribio|escreveu|ha scritto|scrisse|schreef|pisze|napisał|napisała|napsal|"
    r"napsala|napisao|napisala|a scris|пише|пишет|написал|написала|написав|писал|kirjoitti|skrev|"
    r"skriver|írta|"
    r"yazdı|đã viết|kirjutas|rašė|rakstīja|έγραψε|כתב|كتب)"
    r"|写道|寫道|のメッセージ|のメール)(?:\s*\([^()]*\))?\s*[:：]\s*$"
    # Some clients drop the colon: "On Wed, 14 Nov 2018 ... <john@doe.com> wrote".
    r"|^\s*On\b.*\bwrote\s*$"
    # Gmail in German and friends put the verb before the date:
    # "Aa Bb <abc@abc.org> schrieb am So., 23. Juni 2024, 21:08:".
    r"|(?<![^\W\d_])(?:schrieb am|wrote on|a écrit le|escribió el|ha scritto il|schreef op|"
    r"skrev den|napisał w dniu)\b.*[:：]\s*$"
    # Verb-second languages put the name after the verb, with no address when the
    # client has none: "Am 13.05.2026 um 09:05 schrieb Vorname Nachname:".
    r"|(?<![^\W\d_])(?:schrieb|schreef|skrev)\s+[^\s:<>@][^:<>@]{0,60}[:：]\s*$",
    re.IGNORECASE)

# The word a client opens its attribution with: "On", "Am", "Le", "El", "Il"...
ON_WORD = re.compile(r"^\s*(?:On|Am|Le|El|Il|Op|Em|Den|Dne|W dniu|Dnia|Dňa)\s", re.IGNORECASE)

# A day named without digits: "On Monday, Bob wrote:", "Le lundi, Marie a écrit :", or
# "5 May" / "May 5".  "Le", "El" and "Il" are also "the", so "Le client a écrit :"
# needs one to read as an attribution.
_WEEKDAYS = (
    "monday|tuesday|wednesday|thursday|friday|saturday|sunday|montag|dienstag|mittwoch|"
    "donnerstag|freitag|samstag|sonntag|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|"
    "lunes|martes|miércoles|jueves|viernes|sábado|domingo|lunedì|martedì|mercoledì|giovedì|"
    "venerdì|sabato|domenica|maandag|dinsdag|woensdag|donderdag|vrijdag|zaterdag|zondag|"
    "måndag|tisdag|onsdag|torsdag|fredag|lördag|söndag|mandag|tirsdag|lørdag|søndag|"
    "segunda-feira|terça-feira|quarta-feira|quinta-feira|sexta-feira")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|januar|februar|märz|juni|juli|oktober|"
    "dezember|janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|"
    "décembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|"
    "diciembre")
DATE_WORDS = re.compile(
    r"(?<![^\W\d_])(?:" + _WEEKDAYS + r")(?![^\W\d_])"
    r"|\b\d{1,2}\.?\s+(?:" + _MONTHS + r")(?![^\W\d_])"
    r"|(?<![^\W\d_])(?:" + _MONTHS + r")\.?\s+\d{1,2}\b", re.IGNORECASE)

# Yahoo Mail: "  On Sat, Sep 5, 2020 at 10:43 PM, Bob<bob@x.org> wrote:   Hello," -- the
# attribution and, after two or more spaces, the old mail's first line.
RUN_ON = re.compile(
    r"^(?P<head>\s*(?:On|Am|Le|El|Il|Op|Em|Den)\s.{5,200}?(?<![^\W\d_])(?:wrote|schrieb|"
    r"geschrieben|a écrit|escribió|ha scritto|schreef|skrev|escreveu)\s?[:：])\s{2,}\S")

# "---- John Smith wrote ----", "------On 12/29/1987 ..., Julius wrote-----".
DASHED_ATTRIBUTION = re.compile(r"^\s*-{2,}.*\b(?:wrote|schrieb|a écrit|escribió)\b\s*-{2,}\s*$",
                                re.IGNORECASE)

# A date-first attribution without a verb: "2014-10-17 11:28 GMT+03:00 Bob <bob@x.org>:",
# "ср, 30 апр. 2025 г. в 15:19, John <doe@x.com>:".
ADDRESS_COLON = re.compile(r"[<(\[]?(?:mailto:)?" + _EMAIL + r"[>)\]]*\s*[:：]\s*$")

# "23 лист. 2015", "2014-10-17", "15. marts": a date opening the line.
DATE_FIRST = re.compile(r"^\d{1,4}(?:[./\-年]|\s)")

# Gmail's oldest form: "2011/4/7 Nathan <support@example.com>" right above a quote.
DATE_ADDRESS = re.compile(r"^\s*\d{4}[/-]\d{1,2}[/-]\d{1,2}\b.*<" + _EMAIL + r">\s*$")


def _attribution_ending_at(lines: list[str], end: int) -> int | None:
    """The first line of an attribution (wrapped over up to 3 lines) ending at ``end``."""
    if not lines[end].strip() or _is_quoted(lines[end]):
        return None
    for start in range(end, max(end - 3, -1), -1):
        if start < end and (not lines[start].strip() or _is_quoted(lines[start])):
            return None
        # The smallest window that reads as an attribution wins, so a line of
        # the reply directly above it is never swallowed.
        joined = " ".join(line.strip() for line in lines[start:end + 1])
        if _starts_a_paragraph(lines, start) and _reads_as_attribution(joined, lines, end):
            return start
    return None


def _starts_a_paragraph(lines: list[str], i: int) -> bool:
    """Whether line i can open an attribution: wrapped tails like "<bob@x.org> wrote:" cannot."""
    if i == 0 or not lines[i - 1].strip() or _is_quoted(lines[i - 1]):
        return True
    text = lines[i].strip()
    return text[:1].isupper() or DATE_FIRST.match(text) is not None


def _reads_as_attribution(joined: str, lines: list[str], end: int) -> bool:
    tail = joined.rstrip()
    if len(joined) > 250 or not (tail.endswith((":", "：", ">")) or tail.lower().endswith("wrote")):
        # Every form below ends so; most lines of prose do not, and searching
        # them with every pattern is most of what trimming costs.
        return False
    has_email, has_date = EMAIL.search(joined), DATE_OR_TIME.search(joined)
    if WROTE.search(joined):
        # A verb alone is too weak ("The author writes:"): it needs who or when,
        # or, for "On Monday, Bob wrote:", the shape of one above a ">" quote --
        # then only quotes can be cut below it (the interleaving check).
        return bool(has_email or has_date or (
            ON_WORD.match(joined) and DATE_WORDS.search(joined) and _quote_below(lines, end)))
    if ADDRESS_COLON.search(joined):
        return bool(has_date)
    return bool(DATE_ADDRESS.match(joined) and _quote_below(lines, end))


def _quote_below(lines: list[str], end: int) -> bool:
    below = _next_text_line(lines, end + 1)
    return below is not None and _is_quoted(lines[below])


def _run_on_attribution(line: str) -> bool:
    found = RUN_ON.match(line)
    return bool(found and (EMAIL.search(found["head"]) or DATE_OR_TIME.search(found["head"])))


# --- Outlook header blocks ("From: / Sent: / To: / Subject:") ------------------

HEADER_NAMES = {
    "from": "from|von|de|da|van|fra|från|od|lähettäjä|feladó|kimden|от|发件人|寄件者|差出人",
    "date": "sent|date|gesendet|datum|envoyé|enviado|enviado el|enviada em|fecha|inviato|data|"
            "envoyé le|verzonden|sendt|dato|skickat|wysłano|lähetetty|küldve|odesláno|gönderildi|"
            "отправлено|дата|日期|发送时间|寄件日期|送信日時|日時",
    "to": "to|an|à|a|pour|para|aan|til|till|do|vastaanottaja|címzett|komu|kime|кому|收件人|收件者|"
          "宛先",
    "cc": "cc|kopie|copie|cópia|kopio|másolat|копия|抄送|副本",
    "subject": "subject|betreff|objet|sujet|asunto|assunto|oggetto|ogg|onderwerp|emne|ämne|temat|"
               "aihe|tárgy|předmět|konu|тема|主题|主旨|件名",
}
HEADER_LINE = re.compile(
    r"^\s*[*_]{0,2}(" + "|".join(HEADER_NAMES.values()) + r")[*_]{0,2}\s?[:：][*_]{0,2}(?:\s|$)",
    re.IGNORECASE)
_KIND_OF = {name: kind for kind, names in HEADER_NAMES.items() for name in names.split("|")}
INLINE_HEADER = re.compile(r"(?:^|\s)(from|to|subject|date|sent|cc)\s?:", re.IGNORECASE)


def _header_block_at(lines: list[str], i: int) -> bool:
    """Whether a block of quoted-mail header fields starts at line i."""
    if not HEADER_LINE.match(lines[i]):
        return False
    block = _header_lines(lines, i)
    kinds = {_header_kind(line) for line in block} - {None}
    if len(block) == 1:
        # "Date: ... From: ... To: ... Subject: ..." flattened onto one line.
        found = INLINE_HEADER.finditer(block[0])
        kinds = {m.group(1).lower().replace("sent", "date") for m in found}
    has_address = any(EMAIL.search(line) for line in block)
    # Two fields could be an agenda ("Date: / To:"), so they need an address;
    # three need the sender or an address.
    if len(kinds) >= 3:
        return "from" in kinds or has_address
    return len(kinds) == 2 and has_address


# A patch's own header ("From:/Date:/Subject: [PATCH]"), as git format-patch and
# akpm's scripts write it, is what the person sends, not an old mail: a unified
# diff below the fields proves it.
PATCH_LINE = re.compile(r"^(?:diff --git |@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@)")


def _patch_below(lines: list[str], i: int) -> bool:
    return any(PATCH_LINE.match(line) for line in lines[i:])


def _header_lines(lines: list[str], i: int) -> list[str]:
    """The header field lines from i on, with values wrapped onto following lines."""
    block, j = [], i
    while j < len(lines) and lines[j].strip():
        if HEADER_LINE.match(lines[j]):
            block.append(lines[j])
        elif not any(HEADER_LINE.match(line) for line in lines[j + 1:j + 3] if line.strip()):
            break  # a wrapped value is always followed by another field
        j += 1
    return block


def _header_kind(line: str) -> str | None:
    match = HEADER_LINE.match(line)
    return _KIND_OF.get(match.group(1).lower()) if match else None


# --- is everything below the quote still history? ------------------------------

def _only_quotes_below(lines: list[str], first: int) -> bool:
    """Whether lines[first:] hold only quotes and blank lines, above a signature.

    The signature is whatever ``_signature_cut`` would drop from the end, so
    this check and the trimming agree, and trimming twice changes nothing.
    """
    end, _ = _signature_cut(lines, len(lines))
    return all(not lines[j].strip() or _is_quoted(lines[j]) or _continues_quote(lines, j)
               for j in range(first, end))


def _continues_quote(lines: list[str], j: int) -> bool:
    """A long quoted line that the sender's client wrapped without re-quoting.

    Only taken as such when the first word could not have fitted on the
    quoted line and that line stopped mid-sentence, so an answer written
    right below a short question is never mistaken for it.
    """
    if j == 0:
        return False
    previous, line = lines[j - 1].rstrip(), lines[j].strip()
    if not _is_quoted(previous) or not line[:1].islower():
        return False
    word = line.split()[0]
    too_long = len(previous) + 1 + len(word) > 76
    return len(previous) >= 60 and too_long and previous[-1] not in ".?!:;"


# --- signatures ------------------------------------------------------------------

# "-- ", or "*-- *" when Gmail's editor made the delimiter bold (email_reply_parser#46).
SIG_DELIMITER = re.compile(r"^[*_]?-- ?[*_]?$")
# A longer block after "--" is more likely text that happens to follow one.
SIGNATURE_MAX_LINES = 20

# Lines a phone or app appends; short, and never a sentence (so "Sent from my
# desk, is much easier then my mobile phone." is kept).  After a possessive
# ("my", "meinem") a device is named, in up to eight words ("Sent wirelessly
# from my BlackBerry device on the Bell network.").  Without one the next word
# must be a product name (capitalised, or iPhone-style), so "Sent from the
# office" and "Wysłane z opóźnieniem" stay.
_POSSESSIVE_LEAD = (
    r"sent from my |sent wirelessly from my |sent using my |von meinem |gesendet von meinem |"
    r"gesendet mit der |"
    r"diese nachricht wurde von meinem |envoyé de mon |envoyé depuis mon |envoyé sans fil par mon |"
    r"enviado desde mi |enviado do meu |enviado de meu |inviato dal mio |inviato da mio |"
    r"verzonden vanaf mijn |verstuurd vanaf mijn |skickat från min |sendt fra min |"
    r"wysłane z mojego |odesláno z mého |отправлено с моего |отправлено из мобильной |"
    r"στάλθηκε από το |"
    r"get outlook for |download outlook for |télécharger outlook pour |obtener outlook para |"
    r"scarica outlook per |baixe o outlook para |hämta outlook för |hent outlook til ")
_PRODUCT_LEAD = (
    r"sent from |sent with |sent using |gesendet von |envoyé depuis |"
    r"envoyé de |envoyé à partir de |enviado desde |enviado do |inviato da |verzonden met |"
    r"verzonden vanuit |verstuurd met |verstuurd vanuit |skickat från |sendt fra |lähetetty |"
    r"wysłano z |wysłane z |odesláno z |отправлено с |надіслано з ")
# A word, dots inside it allowed ("Mail.ru"), so a sentence's full stop ends it.
_WORD = r"[^\s,.;:!?<(]+(?:\.[^\s,.;:!?<(]+)*"
# "Sent from a mobile device", "(sent from a phone)", "Sent via mobile".
_ANY_DEVICE = (r"(?i:sent (?:from|via|with|using) (?:a |an |my )?"
               r"(?:mobile|phone|cell|cellphone|smartphone|tablet|handheld)(?: device| phone)?)")
# "Sent from my cell, please excuse any typos.", "... - apologies for brevity".
_APOLOGY = (r"(?:\s*[,;.\-–]\s*|\s+)(?i:(?:please\s+)?(?:excuse|pardon|forgive)\s|"
            r"(?:sorry|apologies)\s+for\s)[^.!?<]{1,30}[.!]?")
# A link the app adds, after a space or glued on by an HTML-to-text conversion.
_APP_LINK = r"(?:\s*<[^>\s]+>|\s*\([^)\s]+\)|https?://\S+)?"
MOBILE_SIGNATURE = re.compile(
    r"^\s*(?:\(|<<)?(?:"
    r"(?i:" + _POSSESSIVE_LEAD + r")" + _WORD + r"(?: " + _WORD + r"){0,7}"
    r"|(?i:" + _PRODUCT_LEAD + r")(?:[A-Z]|i[A-Z])" + _WORD + r"?(?: " + _WORD + r"){0,4}"
    r"|" + _ANY_DEVICE + r")"
    r"[.!]?(?:" + _APOLOGY + r")?" + _APP_LINK + r"\s*(?:\)|>>)?\s*$"
    # Chinese: "发自我的iPhone", "從我的 iPhone 傳送", "发自我的华为手机"; a device named,
    # so "从我的角度来看" ("from my point of view") stays.
    r"|^\s*(?:发自|從|从|來自|来自)我的\s?(?:[A-Za-z][\w ]{0,20}?|\S{0,6}?(?:手机|手機|设备|裝置))"
    r"(?:\s?(?:发送|傳送|發送))?\s*$"
    # The device first: Japanese, Korean, Turkish, Hungarian.
    r"|^\s*(?:Az\s+)?(?i:iphone|ipad|android|galaxy|xperia)['’\-\w]*\s?"
    r"(?:から送信(?:しました|されました)?|에서 보냄|gönderildi|küldve)\s*$"
    # Outlook's line said the other way round, its verb last: "Outlook für iOS beziehen"
    # ("Outlook for Android" alone can be an answer).
    r"|^\s*(?i:outlook (?:für|for|pour|para|per|voor|til|för|dla) (?:ios|android) "
    r"(?:beziehen|herunterladen|abrufen|downloaden|pobierz|を入手))" + _APP_LINK + r"\s*$")

LIST_FOOTER_WORDS = re.compile(r"mailing list|/listinfo/|mailman", re.IGNORECASE)


def _is_list_footer(tail: list[str]) -> bool:
    """A Mailman footer: a rule of underscores, then the list's name and URL."""
    rest = [line for line in tail if line.strip()]
    return (bool(rest) and re.match(r"^\s*_{2,}\s*$", rest[0]) is not None
            and len(rest) <= 6 and any(LIST_FOOTER_WORDS.search(line) for line in rest[1:]))


def _signature_cut(lines: list[str], end: int) -> tuple[int, list[str]]:
    """Where the text above ``end`` stops once trailing signatures are dropped."""
    reasons: list[str] = []
    while True:
        end = _without_blank_tail(lines, end)
        found = _trailing_signature(lines, end)
        if found is None:
            return end, reasons
        end, reason = found
        reasons.append(reason)


def _without_blank_tail(lines: list[str], end: int) -> int:
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    return end


def _trailing_signature(lines: list[str], end: int) -> tuple[int, str] | None:
    if end and MOBILE_SIGNATURE.match(lines[end - 1]):
        return end - 1, "mobile signature"
    for j in range(end - 1, max(end - 1 - SIGNATURE_MAX_LINES, -1), -1):
        if _is_quoted(lines[j]):
            return None  # a signature never holds quotes: this is an interleaved reply
        if SIG_DELIMITER.match(lines[j]):
            return j, "signature"
        if _is_list_footer(lines[j:end]):
            return j, "mailing-list footer"
    return None
