"""The README's configuration table, written from the schema.

    scripts/config-table                    print it
    scripts/config-table --write [README]   put it in README.md between its two markers

tests/test_config_doc.py fails when README.md's table is not this one.
"""

import sys
from pathlib import Path
from typing import Any

import msgspec

from mailgate.settings.walk import Key, keys, struct_of, words

BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def markdown_table(section: type) -> str:
    """Every key: | key | type | default | variable | meaning |, in the order declared.
    A mailbox key written under ``imap:`` itself is every mailbox's default: its
    variable is shown on the mailbox's row, which it sets."""
    every = {(*k.path[:-1], k.meta["every"], "[]", k.path[-1]): k.variable
             for k in keys(section) if k.meta.get("every")}
    lines = ["| key | type | default | variable | meaning |", "|---|---|---|---|---|"]
    for key in keys(section):
        if not key.meta.get("every") and (key.meta.get("description") or key.variable):
            name = key.variable or every.get(key.path)
            lines.append("| " + " | ".join(_cell(c) for c in (
                f"`{key.name}`", _kind(key), _default(key), f"`{name}`" if name else "",
                key.meta.get("description", ""))) + " |")
    return "\n".join(lines) + "\n"


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"README.md has no {BEGIN} ... {END} section")
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def _kind(key: Key) -> str:
    if struct_of(key.type) and not key.variable:
        return "section"
    return words(key.type).removeprefix("a ").removeprefix("an ")


def _default(key: Key) -> str:
    said = key.meta.get("default")
    if said:
        return said
    value = key.default
    if struct_of(key.type) and value is not None:
        return ""
    return _value(value)


def _value(value: Any) -> str:
    if value is msgspec.NODEFAULT:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (tuple, list, frozenset, dict)):
        return " ".join(f"`{v}`" for v in value) or "none"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str]) -> int:
    from mailgate.settings.schema import ConfigFile

    table = markdown_table(ConfigFile)
    if argv[:1] != ["--write"]:
        sys.stdout.write(table)
        return 0
    readme = Path(argv[1] if len(argv) > 1 else "README.md")
    readme.write_text(replace_table(readme.read_text("utf-8"), table), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
