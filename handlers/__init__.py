"""One module per kind of mail; each returns a plan (``handlers.plans``), never writes.

- ``reply``: a mail to ``ticket<N>@`` or a reply to Redmine's notification about N.
- ``new_ticket``: a mail to a site's address (or triage) that answers no ticket.

``mailgate.dispatch`` gathers the facts each needs and executes what it returns.
"""
