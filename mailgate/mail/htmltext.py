"""HTML mail made readable as plain text, for mail that has no text/plain part.

A note in Redmine is read as text, so we keep what a person reads in a mail
client: paragraphs and line breaks, list items, link targets; and we drop
what they never see (scripts, styles, the head).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
           "ul", "ol", "blockquote", "pre", "section", "article", "header", "footer"}
_HIDDEN = {"script", "style", "head", "title"}


class _TextCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag):
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self._href:
            # Keep the target unless the text already shows it.
            if self._href.startswith(("http", "mailto:")) and self._href not in self.parts[-1:]:
                self.parts.append(f" <{self._href}>")
            self._href = None

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """
    >>> html_to_text("<p>Hello <b>there</b>,</p><p>line one<br>line two</p>")
    'Hello there,\\n\\nline one\\nline two'
    >>> html_to_text("<style>p {}</style><ul><li>a</li><li>b &amp; c</li></ul>")
    '- a\\n- b & c'
    """
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    text = "".join(collector.parts)
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
