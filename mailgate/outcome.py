"""What became of a mail: outcomes are results, not errors.

``applied`` (a note, and the status if it changed), ``created`` (a new
ticket), ``ignored`` (nothing to do, with the reason), ``duplicate`` (already
posted), ``status-refused`` (the note is in, but Redmine's own workflow
dropped the status change), ``refused`` (the plan refused the mail, or
Redmine refused it for good: it is dead-lettered with ``reason``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Outcome:
    kind: str
    ticket: int | None = None
    journal_id: int | None = None
    action: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    #: Why the sender's command was refused by the workflow, if it was.
    refused: str | None = None
    reason: str | None = None
    #: For ``refused``: the error class the refusal is reported as (SenderNotPermitted, ...).
    error: str | None = None
    #: The plan's record (handlers.planning.MailPlan.record): what was decided, and why.
    plan: dict | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        parts = [self.kind]
        if self.ticket is not None:
            parts.append(f"#{self.ticket}")
        if self.action:
            parts.append(f"{self.action}: {self.from_state} -> {self.to_state}")
        if self.refused:
            parts.append(f"(command refused: {self.refused})")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)
