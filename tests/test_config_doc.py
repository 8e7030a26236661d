"""README.md's configuration table is the one written from the schema (issue 17,
point 1): a key added, renamed or given another default there cannot leave the
README behind."""

from __future__ import annotations

from pathlib import Path

from mailgate.settings.doc import BEGIN, END, markdown_table, replace_table
from mailgate.settings.schema import ConfigFile
from mailgate.settings.walk import keys

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_table_is_the_schema_s():
    readme = README.read_text("utf-8")
    written = readme.partition(BEGIN)[2].partition(END)[0].strip("\n")
    assert written == markdown_table(ConfigFile).strip("\n"), (
        "README.md's configuration table differs from mailgate/settings/schema.py:"
        " run scripts/config-table --write")


def test_the_table_has_every_key_its_default_and_its_variable():
    table = markdown_table(ConfigFile)
    assert "| `spool.workers` | positive whole number | 2 | `MAILGATE_SPOOL_WORKERS` |" in table
    assert "| `redmine.timeout` | number of seconds > 0 | 10 | `MAILGATE_REDMINE_TIMEOUT` |" \
        in table
    # A mailbox's row names the variable of its key under imap: (every mailbox's default).
    assert "| `imap.mailboxes[].poll_interval` | number of seconds > 0 | 300 |" \
           " `MAILGATE_IMAP_POLL_INTERVAL` |" in table
    for key in keys(ConfigFile):
        if key.variable and not key.meta.get("every"):
            assert f"| `{key.name}` |" in table and f"`{key.variable}`" in table


def test_a_different_table_would_be_found():
    readme = f"# x\n\n{BEGIN}\n| old |\n{END}\nafter\n"
    assert replace_table(readme, "| new |\n") == f"# x\n\n{BEGIN}\n| new |\n{END}\nafter\n"
