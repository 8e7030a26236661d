"""In-repo fakes of the servers mailgate talks to: real servers on 127.0.0.1, kept honest
by contract tests that run the same checks against the real thing."""

from .redmine import FakeRedmine, USERS, api_key

__all__ = ["FakeRedmine", "USERS", "api_key"]
