"""What tests/ and bench/ share: a gateway config (configs), child processes and
ports (processes), verified replies for a load (mails), and the reply corpus's
scoring (trim_corpus).

tests/ and bench/ both import from here and never from each other
(tests/test_layout.py checks it), so one helper cannot drift into two copies.
Nothing here imports mailgate: bench measures other refs' code, exported
elsewhere, and drives it through its command line; a helper that imported
mailgate would bring this tree's.  Not part of the product: pyproject.toml
ships mailgate, workflow and handlers only, and they never import this.
"""
