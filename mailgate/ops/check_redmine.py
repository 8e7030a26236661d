"""``mailgate check-config --redmine``: does the Redmine the file names have everything
the file names?  Projects, trackers, statuses, the gateway's user, the custom fields,
and, where ``unknown_senders: create`` makes accounts, the rights such an account has.

Each missing thing is one line; the gateway would otherwise find out mail by mail
(a new ticket refused, a status never set, a field that is never written).
"""

from __future__ import annotations

from mailgate.config import Config
from mailgate.errors import ConfigError, UnknownUser


def redmine_problems(config: Config, client) -> list[str]:
    """What the configuration names that this Redmine lacks (empty: all there)."""
    client.current_user()           # a bad key or URL is a ConfigError: it says so itself
    problems = _statuses(config, client)
    sites = [*config.sites.values(), *([config.triage] if config.triage else [])]
    for site in sites:
        where = "triage" if site.name == "triage" else f"sites.{site.name}"
        project = client.project(site.project)
        if project is None:
            problems.append(f"{where}.project: Redmine has no project {site.project!r}")
        elif site.unknown_senders == "create":
            problems += _created_accounts(where, project, client)
        if site.tracker:
            try:
                client.tracker_id(site.tracker)
            except ConfigError as exc:
                problems.append(f"{where}.tracker: {exc}")
    if config.redmine.gateway_user:
        try:
            client.acting_user(config.redmine.gateway_user)
        except (UnknownUser, ConfigError) as exc:
            problems.append(f"redmine.gateway_user: {exc}")
    return problems + _custom_fields(config, client)


#: What an account made for a stranger must be allowed, to open a ticket and reply on it.
CREATED_ACCOUNT_NEEDS = ("view_issues", "add_issues", "add_issue_notes")


def _created_accounts(where: str, project: dict, client) -> list[str]:
    """An account mailgate makes is a member of no project: it writes in a public
    project, with the rights of Redmine's Non member role, or not at all (every mail
    of the new account would be refused, one by one)."""
    if not project.get("is_public"):
        return [f"{where}.unknown_senders: 'create' makes accounts that are members of no"
                f" project, and project {project['identifier']!r} is not public"]
    lacking = [p for p in CREATED_ACCOUNT_NEEDS if p not in client.non_member_permissions()]
    if lacking:
        return [f"{where}.unknown_senders: 'create' makes accounts with Redmine's Non member"
                f" role, which lacks {', '.join(lacking)} (Administration > Roles and"
                f" permissions > Non member)"]
    return []


def _statuses(config: Config, client) -> list[str]:
    # A site may override only the defaults: every workflow has the same states.
    names = {sid: config.redmine.statuses.get(sid, name)
             for sid, name in config.workflow.table.states.items()}
    try:
        client.status_ids(names)
    except ConfigError as exc:
        return [f"redmine.statuses: {exc}"]
    return []


def _custom_fields(config: Config, client) -> list[str]:
    wanted = [("redmine.reporter_field", config.redmine.reporter_field),
              ("redmine.participants_field", config.redmine.participants_field)]
    if config.discord is not None and config.discord.redmine_fields:
        # The fields the fan-out writes (mailgate.gateway: the thread's id on the ticket).
        wanted += [("discord.redmine_fields", "discord-thread"),
                   ("discord.redmine_fields", "discord-thread-id")]
    have = client.issue_custom_field_names()
    return [f"{key}: Redmine has no issue custom field {name!r}"
            for key, name in wanted if name and name not in have]
