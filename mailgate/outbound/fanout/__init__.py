"""Discord fan-out: after a mail is applied in Redmine, say so in the site's Discord channel.

The fan-out is a durable queue of its own, beside the spool in the same store
(SQLite or PostgreSQL; its own tables and connection).  ``enqueue`` only writes
a row, so Discord being slow or down never delays or fails the Redmine write;
the fan-out's queue runner (``mailgate.runner``) delivers the rows.

The modules, in the order a post goes through them:

* ``events``: what happened to a mail (``FanoutEvent``, made by ``event_for``).
* ``settings``: the checked ``discord:`` config: each site's channel, retries.
* ``rendering``: the post's text (escaped, within Discord's limits) and thread name.
* ``mailgate.store.discord``: the tables of posts and threads (``PostQueue``);
  at most one post per (mail, channel).
* ``deliver``: ``Fanout``, which queues events and delivers the posts: at
  least once, in a thread per ticket, in order.
"""

from mailgate.outbound.fanout.deliver import Fanout
from mailgate.outbound.fanout.events import FanoutEvent, event_for
from mailgate.store.discord import PostQueue
from mailgate.outbound.fanout.rendering import render
from mailgate.outbound.fanout.settings import load_discord_settings

__all__ = ["Fanout", "FanoutEvent", "PostQueue", "event_for", "load_discord_settings", "render"]
