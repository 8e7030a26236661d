"""Discord fan-out: after a mail is applied in Redmine, say so in the site's Discord channel."""

from .deliver import (Fanout, FanoutEvent, PostQueue, event_for, load_discord_settings,
                      render)

__all__ = ["Fanout", "FanoutEvent", "PostQueue", "event_for", "load_discord_settings", "render"]
