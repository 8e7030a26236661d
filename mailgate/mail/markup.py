"""Mail text posted as text: Redmine markup in it made inert (issue 18, finding 8).

Redmine renders every note and description with the site's text formatting
(``textile``, its default; ``markdown``; ``common_mark``; or ``""``, none) and
then with its own links: ``{{macros}}``, ``[[wiki links]]`` and ``@login``
mentions.  Mail is written by anyone, so what it says must not become:

* an image (``!http://evil/t.png!``, ``![x](http://evil/t.png)``, ``<img>``):
  every reader's browser would load it;
* a link whose text is not its target (``"Reset":http://evil``,
  ``[Reset](http://evil)``, a reference definition), or a wiki link;
* hidden text (textile ``%{font-size:0}..%``, ``p{color:white}.``, HTML
  comments and tags, ``{{collapse}}``, the words after a markdown code fence),
  or any macro run on the reader's behalf;
* a mention (``@admin``: a link, and a mail Redmine sends to that user), or a
  link to a user shown as their name (``user:admin``).

What is left renders as before: paragraphs, emphasis, lists, and a bare URL
as a link to itself (it shows its real target).  Most mail contains none of
the above and is posted unchanged; where one is found, only its opening
character is escaped, with the escape the formatter itself reads (an HTML
character reference, a backslash, or Redmine's own ``!`` before a link or
macro), so the reader sees what was written.  A URL is left whole (an escape
inside it would become part of the link), but for a mention's ``@``, written
``%40`` there; a URL that holds what could open markup (``!``, ``"``, ``{``,
``[``) is escaped like other text, and may then show an escape.  Which escape
works where was found against Redmine 5.0's own formatters (RedCloth3,
Redcarpet, CommonMarker); tests/test_markup.py checks it against them.

Limits, each a matter of looks, never of markup: in markdown and CommonMark
code spans and blocks show the escapes (a code block renders its text
verbatim, and telling code from text would need the formatter's own parser);
with no formatting (``""``) Redmine escapes all HTML, so a mention is only
unlinked (``!@admin``) and Redmine still mails that user.
"""

from __future__ import annotations

import re
from typing import Callable, Match

#: Redmine's ``text_formatting`` values ("" is none: plain text, links only).
FORMATTINGS = ("textile", "markdown", "common_mark", "")

# A "]" that may close a link's text or a reference definition's label:
# "](url)", "][ref]", "]: url", with the space Redcarpet allows in between.
_LINK_CLOSE = re.compile(r"\][ \t]*\n?[ \t]*[(\[:]")

# What each escape stands before, in every formatting that needs it.
_ENTITY = r"&(?=[#A-Za-z0-9]+;)"          # a character reference the sender typed
# "[[page]]": every "[[", for its "]]" may come from elsewhere (RedCloth joins lines,
# and an autolink repeats its URL, so the "[[" of one copy meets the "]]" of the other).
_WIKI = r"\[(?=\[)"
_MENTION = r"(?<![A-Za-z0-9_])@"          # "@login" (a word character before it: an address)
_USER = r"(?<![A-Za-z0-9_])user[:#]"      # "user:login", "user#1": shown as that user's name
# A code fence with words after it: they become the block's language, never shown.
_FENCE = r"(?:`{3,}|~{3,})(?=[ \t]*[^\s`~])"
_BACKSLASH = r"\\(?=[!-/:-@\[-`{-~])"     # a backslash that escapes what follows


def _url(leading: str, entities: bool = True) -> str:
    """A URL the formatter links as it is, kept whole: one that starts where its
    autolinker starts one (after ``leading``) and holds nothing that opens markup.
    ``entities``: a character reference in it shows as typed (RedCloth's autolinker
    escapes the link's text; the markdown ones decode it, so there it is escaped)."""
    char = r"[^\s<!\"{\[]" if entities else rf"(?:(?!{_ENTITY})[^\s<!\"{{\[])"
    return (rf"(?:^|(?<=[{leading}]))(?:(?:https?|s?ftps?)://|www\.)"
            rf"{char}*+(?=[\s<]|$)")


def neutralise(text: str, formatting: str) -> str:
    """``text`` as Redmine with ``formatting`` shows it: as written, with no markup.

    >>> neutralise("see !http://evil.test/t.png! and @admin", "textile")
    'see &#33;http://evil.test/t.png! and &#64;admin'
    >>> neutralise("[Reset](http://evil.test/)", "common_mark")
    '\\\\[Reset](http://evil.test/)'
    >>> neutralise("Thanks, it works now.", "markdown")
    'Thanks, it works now.'
    """
    try:
        pattern, escape = _RULES[formatting]
    except KeyError:
        raise ValueError(f"unknown text formatting {formatting!r}") from None
    links_end = _links_end(text) if formatting in ("markdown", "common_mark") else 0
    return pattern.sub(lambda match: escape(match, links_end), text)


def _links_end(text: str) -> int:
    """Where the last possible link closes: every "[" before it may open a link."""
    last = None
    for last in _LINK_CLOSE.finditer(text):
        pass
    return last.start() if last else 0


Escape = Callable[[Match[str], int], str]


def _rules(table: list[tuple[str, str, str | Escape | None]],
           flags: int = 0) -> tuple[re.Pattern[str], Escape]:
    """One pattern of named alternatives, and what each one becomes (None: itself)."""
    pattern = re.compile("|".join(f"(?P<{name}>{regex})" for name, regex, _ in table), flags)
    escapes = {name: escape for name, _, escape in table}

    def escape(match: Match[str], links_end: int) -> str:
        found = escapes[match.lastgroup]
        if found is None:
            return match.group()
        return found(match, links_end) if callable(found) else found
    return pattern, escape


def _link_opening(escaped: str) -> Callable[[Match[str], int], str]:
    # A "[" is escaped only when a "](", "][" or "]:" comes after it: a
    # bracket in ordinary text ("[External]", "[1]") is left as written.
    return lambda match, links_end: escaped if match.start() < links_end else "["


def _in_url(match: Match[str], links_end: int) -> str:
    # Redmine finds mentions in the text, links or not ("https://x/@admin" would
    # mail admin): there the "@" is written as the URL's own escape, "%40".
    return re.sub(_MENTION, "%40", match.group())


def _fence(match: Match[str], links_end: int) -> str:
    # Its first character escaped, it is no fence: the line shows as written.
    return "\\" + match.group()


def _user_link(match: Match[str], links_end: int) -> str:
    # The separator as a character reference: Redmine's links need the character.
    return "user" + ("&#58;" if match.group().endswith(":") else "&#35;")


_RULES: dict[str, tuple[re.Pattern[str], Escape]] = {
    # RedCloth3: no backslash escapes, but character references pass through
    # to the browser; only "<pre>", "<code>", "<kbd>" and "<notextile>" are
    # taken as tags (the rest are shown), and comments are dropped.
    "textile": _rules([
        # Redmine's own autolinker (links_helper.rb: AUTO_LINK_RE) starts after these.
        ("url", _url(r"\s(\[,;"), _in_url),
        ("entity", _ENTITY, "&amp;"),
        # "!src!" opens an image where a "!" touches what follows it and follows a
        # space or a tag, which any character but a letter or a digit may become
        # ("|!", "*x*!", "[1]!"); "Hello!" and "file.png!" stay as written.  A run
        # ("!!src!") is escaped whole: its first "!" would touch the escape.
        ("image", r"(?<![A-Za-z0-9!])!+(?=[^\s!])", lambda m, _: "&#33;" * len(m.group())),
        # '"text":url' is a link showing text, not its target.
        ("link", r'(?<=["]):(?=\S)', "&#58;"),
        # "{...}" after a block or span signature is a style ("{font-size:0}"
        # hides text); one after a "{" opens a macro.  Only a "{" after a space
        # can be neither.
        ("style", r"(?:(?<=\S)|^)\{", "&#123;"),
        ("wiki", _WIKI, "&#91;"),
        ("mention", _MENTION, "&#64;"),
        ("user", _USER, _user_link),
        ("tag", r"<(?=!|/?(?:pre|code|kbd|notextile|redpre)\b)", "&lt;"),
    ], re.MULTILINE | re.IGNORECASE),
    # Redcarpet (filter_html): backslash escapes, and character references
    # are kept as they are, so Redmine's links never see the "@" or "[[".
    "markdown": _rules([
        ("url", _url(r"\s(", entities=False), _in_url),
        ("backslash", _BACKSLASH, "\\\\"),
        ("entity", _ENTITY, "&amp;"),
        ("wiki", _WIKI, "&#91;"),
        ("link", r"\[", _link_opening("\\[")),
        # HTML is dropped by filter_html (its text vanishes): show it instead.  Not
        # "\\<": right after a URL the autolinker would take the backslash along.
        ("tag", r"<(?=[A-Za-z/!?])", "&lt;"),
        ("macro", r"(?<=\{)\{", "&#123;"),
        ("mention", _MENTION, "&#64;"),
        ("user", _USER, _user_link),
        ("fence", _FENCE, _fence),
        # Redcarpet takes the line after a lone "|" for a table's alignment row,
        # and shows none of it.
        ("table", r"^\|(?=\r?$)", "\\|"),
    ], re.MULTILINE),
    # CommonMarker turns character references back into characters before
    # Redmine's links see the HTML, so those use Redmine's own "!" escape.
    # Raw HTML is let through to a sanitiser that keeps <img>, <details> and
    # styles: every tag is shown as text.
    "common_mark": _rules([
        ("url", _url(r"\s(", entities=False), _in_url),
        ("backslash", _BACKSLASH, "\\\\"),
        ("entity", _ENTITY, "&amp;"),
        # Not "!\\[": the autolinker would take the backslash into a URL before it.
        ("wiki", _WIKI, "!&#91;"),
        ("link", r"\[", _link_opening("\\[")),
        ("tag", r"<(?=[A-Za-z/!?])", "&lt;"),
        ("macro", r"\{(?=\{[\w<>])", "!{"),
        # No "@" in the text, so no mail to that user; the "!" keeps the link away.
        ("mention", _MENTION, "!&#64;"),
        ("user", _USER, lambda match, _: "!" + match.group()),
        ("fence", _FENCE, _fence),
    ]),
    # No formatting: Redmine escapes all HTML, then makes its links.
    "": _rules([
        ("url", _url(r"\s(\[,;"), _in_url),
        ("wiki", _WIKI, "!["),
        ("macro", r"\{(?=\{[\w<>])", "!{"),
        ("mention", _MENTION, "!@"),
        ("user", _USER, lambda match, _: "!" + match.group()),
    ]),
}
