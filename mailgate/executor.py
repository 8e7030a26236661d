"""The one place where plans become writes in Redmine."""

from __future__ import annotations

from typing import Mapping

from dataclasses import replace

from handlers.plans import Account, Duplicate, Ignore, OpenTicket, Plan, PostNote
from handlers.posted import with_refused

from mailgate.errors import RedmineRejected
from mailgate.outcome import Outcome

#: What Redmine 5 says (in English, the seed's and the API's language) when a login or an
#: address is in use.
LOGIN_TAKEN = "Login has already been taken"
EMAIL_TAKEN = "Email has already been taken"


def execute(plan: Plan, client, status_ids: Mapping[str, int]) -> Outcome:
    """Carry out a plan's step.  Refuse and Defer never come here: they write
    nothing, and ``mailgate.processing`` turns them into their outcome."""
    if isinstance(plan, (PostNote, OpenTicket)) and plan.new_account is not None:
        plan = replace(plan, as_user=_make_account(plan.new_account, client))
    if isinstance(plan, PostNote):
        return _post_note(plan, client, status_ids)
    if isinstance(plan, OpenTicket):
        return _open_ticket(plan, client)
    if isinstance(plan, Ignore):
        return Outcome("ignored", reason=plan.reason)
    if isinstance(plan, Duplicate):
        return Outcome("duplicate", reason=plan.reason)
    raise TypeError(f"not a plan: {plan!r}")


def _make_account(account: Account, client) -> str:
    """The login the sender writes as: the account made for them now, or the one an
    earlier try of this same mail made (Redmine knows their address by then)."""
    existing = client.find_user_by_email(account.address)
    if existing is not None:
        return existing.login
    try:
        return _create(account, account.login, client)
    except RedmineRejected as exc:
        if EMAIL_TAKEN in exc.messages:
            return _made_meanwhile(account, client, exc)
        if LOGIN_TAKEN not in exc.messages or account.login == account.fallback_login:
            raise
    # Someone else's account has this address as its login: use the other one.
    return _create(account, account.fallback_login, client)


def _made_meanwhile(account: Account, client, refusal: RedmineRejected) -> str:
    """Redmine has the address although our lookup said no: another process or host
    made the account since (our answer was remembered, or both looked at once).  Its
    account is theirs; a locked one stays a refusal (a locked user does not write)."""
    found = client.find_user_by_email(account.address, fresh=True)
    if found is None:
        raise refusal
    return found.login


def _create(account: Account, login: str, client) -> str:
    return client.create_user(login, account.address, account.firstname, account.lastname,
                              tell_them=account.tell_them).login


def _uploads(client, plan) -> tuple[list[dict], list[str]]:
    """(the uploads to attach, a "name (reason)" for each file Redmine refused).

    A file Redmine will not take (over its attachment_max_size, an extension it
    refuses) is left out and named, as the plan does with the files it leaves out:
    one file must not lose the whole mail (issue 18, finding 9)."""
    uploads, refused = [], []
    for attachment in plan.attachments:
        try:
            uploads.append(client.upload(attachment.data, attachment.filename,
                                         attachment.content_type))
        except RedmineRejected as exc:
            if not exc.messages:
                raise       # not about the file: a request this client should not send
            refused.append(f"{attachment.filename} (refused by Redmine:"
                           f" {'; '.join(exc.messages)})")
    return uploads, refused


def _naming(text: str, refused: list[str], plan) -> str:
    return with_refused(text, refused, plan.formatting) if refused else text


def _post_note(plan: PostNote, client, status_ids: Mapping[str, int]) -> Outcome:
    decision = plan.decision
    status_id = status_ids[decision.to_state] if decision.changes_state else None
    uploads, refused = _uploads(client, plan)
    # Read back only when what Redmine keeps of it is not known (RedmineClient.add_note).
    result = client.add_note(plan.ticket, _naming(plan.text, refused, plan),
                             status_id=status_id, uploads=uploads, as_user=plan.as_user,
                             read_back=False)
    kind, reason = "applied", None
    if status_id is not None and not result.status_applied:
        # Redmine keeps the note but silently drops a status change its own
        # workflow does not allow for that user: report it, never as success.
        kind = "status-refused"
        reason = (f"status change to {decision.to_state} refused by Redmine's workflow"
                  f" for {plan.as_user}")
    return Outcome(kind, ticket=plan.ticket, journal_id=result.journal_id,
                   action=decision.action, from_state=decision.from_state,
                   to_state=decision.to_state if kind == "applied" else decision.from_state,
                   refused=decision.refused, reason=reason)


def _open_ticket(plan: OpenTicket, client) -> Outcome:
    site = plan.site
    if plan.marker and plan.may_exist:
        # A crash after Redmine created the ticket but before we recorded it.
        found = client.find_issue_with_text(site.project, plan.marker)
        if found is not None:
            return Outcome("duplicate", ticket=found, reason=f"already ticket #{found}")
    tracker_id = client.tracker_id(site.tracker) if site.tracker else None
    fields = dict(site.fields)
    # The site's own custom_fields stay in ``fields``; create_issue merges both.
    custom_fields = dict(plan.recorded)
    uploads, refused = _uploads(client, plan)
    ticket = client.create_issue(site.project, plan.subject,
                                 _naming(plan.description, refused, plan),
                                 tracker_id=tracker_id, custom_fields=custom_fields,
                                 uploads=uploads, extra=fields, as_user=plan.as_user)
    return Outcome("created", ticket=ticket, action="open", to_state="open",
                   reason=f"new ticket in {site.project}")
