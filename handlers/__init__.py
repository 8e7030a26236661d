"""One module per kind of mail; each returns a plan (``handlers.plans``), never writes.

- ``reply``: a mail to ``ticket<N>@`` or a reply to Redmine's notification about N.
- ``new_ticket``: a mail to a site's address (or triage) that answers no ticket.

``handlers.planning`` makes the one plan per mail from them; ``mailgate.processing``
reads it and has ``mailgate.executor`` carry its step out.
"""
