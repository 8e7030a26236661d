"""Mail text is posted as text: no Redmine markup in a mail renders (issue 18, finding 8).

Rendered by Redmine's own code: tests/redmine_render.rb runs ApplicationHelper's
``textilizable`` (the site's formatter, then macros, wiki links, Redmine links and
mentions: what the issue page shows) in a ``rails runner`` of the local Redmine,
with each of its text formattings set for that process only (the shared server's
setting is never changed).  The last test goes through ``mailgate pipe`` into the
real server and reads the issue page as a browser gets it.

For every formatting, what the hostile mails below become must show no image, no
link whose text is not its target, no wiki link, no macro, no style, no mention
(neither the link nor the mail Redmine sends), and every word that was written.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import uuid
from html import unescape
from urllib.parse import unquote
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from mailgate.mail.markup import FORMATTINGS, neutralise

REDMINE_DIR = Path("/usr/share/redmine")
RENDER_RB = Path(__file__).with_name("redmine_render.rb")

#: One attack per line of the finding and of Redmine's formatters (each is a whole note).
HOSTILE = [
    # images
    "Look !http://evil.test/t.png! here",
    "!http://evil.test/t.png(a title with spaces)!",
    "!{width:1px}http://evil.test/t.png!:http://evil.test/go",
    "|!http://evil.test/cell.png!|",
    "Great!!! !http://evil.test/a.png!",
    "![pixel](http://evil.test/t.png)",
    "![pixel][p]\n\n[p]: http://evil.test/t.png",
    '<img src="http://evil.test/t.png">',
    # links whose text is not their target
    '"Reset your password":http://evil.test/reset',
    'say ["hi":http://evil.test/] there',
    '"Reset(title)":http://evil.test/',
    "[Reset your password](http://evil.test/reset)",
    "[Reset]\n(http://evil.test/reset)",
    "[Reset] [r]\n\n[r]: http://evil.test/reset",
    "[Reset]\n\n[Reset]: http://evil.test/reset",
    '<a href="http://evil.test/">Reset</a>',
    "\\[Reset](http://evil.test/) escaped already",
    "\\\\[Reset](http://evil.test/) after a backslash",
    # hidden text
    "%{font-size:0}hidden words%",
    "p{color:white}. hidden paragraph",
    "*{color:#fff}hidden bold*",
    "|{color:white}. hidden cell|",
    "table{display:none}.\n|hidden|",
    '<span style="font-size:0">hidden span</span>',
    "<details><summary>open</summary>hidden details</details>",
    "before <!-- hidden comment --> after",
    "before <notextile>inside</notextile> after </notextile> !http://evil.test/n.png!",
    "<pre>pre text</pre> !http://evil.test/p.png!",
    # macros
    "{{collapse\nhidden inside\n}}",
    "{{collapse(Details)\nhidden inside\n}}",
    "text{{collapse}}x",
    "{{{collapse}}}",
    "{{toc}}",
    "{{child_pages}} {{recent_pages}}",
    # mentions
    "@admin please look",
    "(@admin) and *@admin* and -@admin and [@admin]",
    "hi\n@owner",
    # wiki links
    "[[Start]] and [[markup-probe:Other|a label]]",
    "[[[Start]]]",
    "[[Start]](http://evil.test/w)",
    # mixed, and what must stay
    "mail me at owner@example.org, or see http://example.org/page",
    "Entities as written: &lt;b&gt; &amp; &#64;admin &nbsp;",
]

#: Words of ordinary mail that must come out as they went in, in every formatting.
PLAIN = [
    "Thanks, it works now.\n\nOlive",
    "Hi! [External] sender, see #1 and [1].\nRegards",
    "Error: file not found (code 2) -- retry?",
]

#: Fragments the fuzzing below strings together.
FRAGMENTS = ["!", "!!", "\"", "\":", ":", "[", "]", "](", "][", "]:", "[[", "]]", "{", "{{",
             "}}", "%", "*", "_", "@", "@admin", "<", ">", "<img src=x>", "<!--", "-->",
             "http://evil.test/t.png", "www.evil.test", "evil", "(", ")", "|", "p", ".",
             "\n", "\n\n", " ", "  ", "\\", "&", "&#64;", "&lt;", ";", "collapse", "toc",
             "Start", "=", "==", "^", "~", "`", "```", "x", "text", "{color:white}",
             "{font-size:0}", "p{", "%{", "* ", "# ", "h1. ", "bc. ", "> ", "[1]", "[^1]",
             "user:admin", "<details>", "<span style=x>", "<pre>", "</notextile>",
             "<http://evil.test>", "    ", "\t", "'", "-", "+"]


def fuzz(count: int, seed: int = 18) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(3, 14)))
            for _ in range(count)]


FUZZ = fuzz(400)


# -- rendering with Redmine's code ----------------------------------------------------------

def render(jobs: list[tuple[str, str]]) -> list[dict]:
    """Each (formatting, text) as Redmine renders it: [{"html", "mentions"}, ...]."""
    if not (REDMINE_DIR / "bin" / "rails").exists() or shutil.which("bundle") is None:
        pytest.skip("Redmine is not installed here (scripts/redmine-local start installs it)")
    with tempfile.NamedTemporaryFile("w", suffix=".rb", delete=False) as script:
        script.write(RENDER_RB.read_text())
    os.chmod(script.name, 0o644)
    command = ["bundle", "exec", "rails", "runner", "-e", "production", script.name]
    if os.geteuid() == 0:
        # As the server's own user, as scripts/redmine-local does: nothing it writes
        # (logs, caches) may end up owned by root.
        command = ["setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups",
                   *command]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/var/www", "LANG": "C.UTF-8",
           "RAILS_ENV": "production", "BUNDLER_VERSION": _bundler_version()}
    try:
        done = subprocess.run(command, input=json.dumps({"jobs": jobs}), capture_output=True,
                              text=True, cwd=REDMINE_DIR, env=env, timeout=300)
    finally:
        os.unlink(script.name)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.rpartition("@@RESULTS@@")[2])


def _bundler_version() -> str:
    # Debian's Redmine needs ruby-bundler's own version (scripts/redmine-local says why).
    found = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ruby-bundler"],
                           capture_output=True, text=True).stdout
    match = re.match(r"(?:\d+:)?(\d+\.\d+\.\d+)", found)
    return match.group(1) if match else "2.3.15"


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict]:
    """Every text of this module in every formatting, neutralised, in one Redmine run."""
    texts = HOSTILE + PLAIN + FUZZ
    jobs = [(formatting, neutralise(text, formatting)) for formatting in FORMATTINGS
            for text in texts]
    return {(formatting, text): result for (formatting, _), text, result in
            zip(jobs, texts * len(FORMATTINGS), render(jobs))}


# -- what a rendering may contain ------------------------------------------------------------

#: Elements that end a word (a line break, a paragraph, a table cell).
_BREAKS = {"br", "p", "td", "th", "li", "tr", "hr", "pre", "div", "blockquote", "h1", "h2",
           "h3", "h4", "h5", "h6"}


class _Page(HTMLParser):
    """The elements a rendering is made of, and the text a reader sees."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.links: list[dict] = []
        self.text: list[str] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag in _BREAKS:
            self.text.append(" ")
        if tag == "a":
            self.links.append({**dict(attrs), "text": ""})
            self._open.append(self.links[-1])

    def handle_data(self, data):
        self.text.append(data)
        for link in self._open:
            link["text"] += data

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            self._open.pop()


def problems(html: str) -> list[str]:
    """What in ``html`` is markup a mail must not make."""
    page = _Page()
    page.feed(html)
    found = []
    for tag, attrs in page.elements:
        if tag in ("img", "details", "summary", "iframe", "style", "script"):
            found.append(f"<{tag}>")
        if "style" in attrs:
            found.append(f"<{tag} style={attrs['style']!r}>")
        classes = attrs.get("class") or ""
        for bad in ("wiki-page", "user-mention", "collapsible", "collapsed-text", "toc"):
            if bad in classes.split():
                found.append(f"<{tag} class={classes!r}>")
    for link in page.links:
        if not _honest(link):
            found.append(f"link {link.get('href')!r} shown as {link['text']!r}")
    return found


def _honest(link: dict) -> bool:
    """A link that shows where it goes: its own URL, a footnote, an issue of this Redmine.
    (Redmine's autolinker escapes the URL it shows once more than its target, and
    percent-encodes some of the target: either spelling counts.)"""
    href, text = link.get("href"), link["text"].strip()
    if href is None or href.startswith("#") or "issue" in (link.get("class") or "").split():
        return True
    # Inside a URL, Redmine drops the "!" of an escaped wiki link from its target, and
    # shows a footnote's "[1]" as "1".
    targets = {re.sub(r"[!\[\]]", "", form.rstrip("/"))
               for form in (href, unquote(href), unescape(href), unescape(unquote(href)))}
    shown = {re.sub(r"[!\[\]]", "", form.rstrip("/"))
             for form in (text, unescape(text), unquote(text), unescape(unquote(text)))}
    return bool(text) and any(target in (s, "http://" + s, "mailto:" + s)
                              for target in targets for s in shown)


#: Textile's block signatures ("h1. ", "p{...}. "): what they say is shown as the block.
_SIGNATURE = re.compile(r"(?<![A-Za-z0-9])(?:h[1-6]|p|bq|bc|pre|fn[0-9]+|table|notextile)"
                        r"(?=[^\s]*\.)")


def hidden(text: str, html: str, formatting: str = "") -> str:
    """What of ``text`` (its letters and digits, in order) a reader of ``html`` does not
    see; "" when all of it shows.  More may show: Redmine's autolinker keeps what
    follows a URL in the link, and code shows escapes as they are."""
    page = _Page()
    page.feed(html)
    shown = iter(re.sub(r"[^A-Za-z0-9]", "", "".join(page.text)))
    if formatting == "textile":
        text = _SIGNATURE.sub("", text)
    wanted = re.sub(r"[^A-Za-z0-9]", "", text)
    for at, char in enumerate(wanted):
        if char not in shown:
            return wanted[at:]
    return ""


def mentioned(result: dict) -> list[str]:
    # Redmine looks up every login it finds; an empty one is nobody.
    return [login for login in result["mentions"] if login]


# -- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("formatting", FORMATTINGS)
@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_markup_renders_as_text(rendered, formatting, text):
    result = rendered[(formatting, text)]
    assert problems(result["html"]) == [], result["html"]
    assert hidden(text, result["html"], formatting) == "", result["html"]
    if formatting:
        # Without formatting Redmine escapes every "&": a mention can only be unlinked.
        assert mentioned(result) == [], neutralise(text, formatting)


@pytest.mark.parametrize("formatting", FORMATTINGS)
def test_random_strings_of_markup_render_as_text(rendered, formatting):
    failed = []
    for text in FUZZ:
        result = rendered[(formatting, text)]
        bad = problems(result["html"])
        if hidden(text, result["html"], formatting):
            bad.append(f"hidden {hidden(text, result['html'], formatting)!r}")
        if formatting and mentioned(result):
            bad.append(f"mentions {mentioned(result)}")
        if bad:
            failed.append((text, neutralise(text, formatting), result["html"], bad))
    assert failed == []


@pytest.mark.parametrize("formatting", FORMATTINGS)
@pytest.mark.parametrize("text", PLAIN)
def test_ordinary_mail_is_posted_as_written(rendered, formatting, text):
    assert neutralise(text, formatting) == text
    assert hidden(text, rendered[(formatting, text)]["html"], formatting) == ""


def test_a_bare_url_stays_a_link_to_itself(rendered):
    text = "mail me at owner@example.org, or see http://example.org/page"
    for formatting in FORMATTINGS:
        html = rendered[(formatting, text)]["html"]
        assert 'href="http://example.org/page"' in html, (formatting, html)


def test_an_unknown_formatting_is_an_error():
    with pytest.raises(ValueError, match="unknown text formatting 'rst'"):
        neutralise("text", "rst")


# -- through the pipe into the real Redmine ---------------------------------------------------

HOSTILE_MAIL = """Hello, the pixel !http://evil.test/t.png! and "Reset your password":http://evil.test/reset
and ![pixel](http://evil.test/m.png) and [Click here](http://evil.test/c) too.

{{collapse
hidden words
}}

%{font-size:0}tiny words% p. and @admin please look at [[Start]].

My profile: https://mastodon.social/@olive
"""


def login(url: str) -> requests.Session:
    """A browser's session as Redmine's admin (the seed's password): the issue page
    is HTML, which Redmine serves only to a session, never for an API key."""
    session = requests.Session()
    form = session.get(f"{url}/login", timeout=10).text
    token = re.search(r'name="authenticity_token" value="([^"]+)"', form).group(1)
    answer = session.post(f"{url}/login", data={"authenticity_token": token,
                                                "username": "admin", "password": "password123"},
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and "/login" not in answer.headers["Location"], answer.text
    return session


def wiki_block(page: str, start: str) -> str:
    """The HTML inside the element whose opening tag contains ``start`` (its <div>s counted)."""
    at = page.index(start)
    at = page.index(">", at) + 1
    depth, scan = 1, at
    for tag in re.finditer(r"<(/?)div\b", page[at:]):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return page[at:at + tag.start()]
    raise AssertionError(f"no end to {start!r}")


@pytest.mark.real_redmine
def test_a_hostile_mail_through_the_pipe_renders_as_text_in_redmine(tmp_path, real_redmine):
    from mailgate.clients.redmine import RedmineClient
    from support.configs import VERIFIED, write_config
    from tests.helpers import run_mailgate

    config = write_config(tmp_path / "mailgate.yaml", real_redmine.url, real_redmine.admin_key)
    client = RedmineClient(real_redmine.url, real_redmine.admin_key)
    ticket = client.create_issue("site-a", "markup probe", "Plain text.", as_user="owner")
    stamp = uuid.uuid4().hex
    for recipient, subject in ((f"ticket{ticket}@example.org", f"Re: markup probe {stamp}"),
                               ("site-a@example.org", f"Markup probe {stamp}")):
        mail = (f"{VERIFIED}\nFrom: Olive Owner <owner@example.org>\nTo: {recipient}\n"
                f"Subject: {subject}\nMessage-ID: <markup-{stamp}-{recipient}>\n"
                f"Content-Type: text/plain; charset=utf-8\n\n{HOSTILE_MAIL}").encode()
        done = run_mailgate("pipe", "--config", str(config), "--recipient", recipient,
                            stdin=mail, env={"MAILGATE_LOG_LEVEL": "WARNING"})
        assert done.returncode == 0, done.stderr.decode()
    [journal] = client.get_issue(ticket).journals
    [created] = requests.get(f"{real_redmine.url}/issues.json", timeout=10, params={
        "project_id": "site-a", "status_id": "*", "subject": f"~Markup probe {stamp}"},
        headers={"X-Redmine-API-Key": real_redmine.admin_key}).json()["issues"]
    session = login(real_redmine.url)
    page = session.get(f"{real_redmine.url}/issues/{ticket}", timeout=30).text
    shown = [wiki_block(page, f'id="journal-{journal.id}-notes"')]
    page = session.get(f"{real_redmine.url}/issues/{created['id']}", timeout=30).text
    shown.append(wiki_block(page[page.index('class="description"'):], '<div class="wiki">'))
    for html in shown:
        assert problems(html) == [], html
        assert hidden(HOSTILE_MAIL, html, "textile") == "", html
        assert "hidden words" in html and "tiny words" in html
        assert 'href="https://mastodon.social/%40olive"' in html


# -- the setting -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, formatting", [
    (None, "textile"), ("textile", "textile"), ("markdown", "markdown"),
    ("common_mark", "common_mark"), ("none", ""), ("", "")])
def test_the_text_formatting_is_redmines_setting(tmp_path, value, formatting):
    from mailgate.config import load_config
    from support.configs import write_config

    redmine = {} if value is None else {"text_formatting": value}
    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key", redmine=redmine)
    assert load_config(config, {}).redmine.text_formatting == formatting
    # And from the environment, as every scalar setting.
    if value is not None:
        plain = write_config(tmp_path / "p.yaml", "http://127.0.0.1:9", "key")
        environ = {"MAILGATE_REDMINE_TEXT_FORMATTING": value}
        assert load_config(plain, environ).redmine.text_formatting == formatting


def test_an_unknown_text_formatting_is_a_config_error(tmp_path):
    from mailgate.config import load_config
    from mailgate.errors import ConfigError
    from support.configs import write_config

    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key",
                          redmine={"text_formatting": "rst"})
    with pytest.raises(ConfigError, match="redmine.text_formatting: 'rst' is not one of"):
        load_config(config, {})
