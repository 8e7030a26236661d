"""Load the workflow table (states, roles, actions, default actions) and check it.

The table is data (``default.yaml`` beside this file, or a site's override in
mailgate's config).  Everything the rest of the code needs is resolved here,
once, so that later code never meets a "*" or a role alias, and so that a
mistake in the data is reported at load time naming the entry that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

#: A destination meaning "the state the command names" (``set-status``).
ANY_STATE = "*"
#: Ticket facts an action may require, each a boolean on ``TicketFacts``.
KNOWN_FACTS = frozenset({"has_answer"})


class WorkflowError(ValueError):
    """The workflow data is wrong; the message names the offending entry."""


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    roles: frozenset[str]
    #: source state -> destination state, or ANY_STATE for "the named one".
    transitions: Mapping[str, str]
    requires: tuple[str, ...] = ()

    @property
    def needs_target(self) -> bool:
        return ANY_STATE in self.transitions.values()


@dataclass(frozen=True)
class WorkflowTable:
    initial: str
    #: state id -> display name (the Redmine status name by default).
    states: Mapping[str, str]
    roles: tuple[str, ...]
    actions: Mapping[str, Action]
    #: role -> state -> action id, aliases already resolved.
    defaults: Mapping[str, Mapping[str, str]]
    #: The defaults as written, kept so a site override can be merged onto them.
    raw_defaults: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def with_defaults(self, overrides: Mapping[str, Any]) -> "WorkflowTable":
        """A new table whose default-action cells are overridden, validated again."""
        merged: dict[str, Any] = {}
        for role, cells in self.raw_defaults.items():
            merged[role] = dict(cells) if isinstance(cells, Mapping) else cells
        for role, cells in (overrides or {}).items():
            if isinstance(cells, Mapping) and isinstance(merged.get(role), Mapping):
                merged[role].update(cells)
            else:
                merged[role] = cells
        return _build(self._as_data(merged))

    def _as_data(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "initial": self.initial,
            "states": dict(self.states),
            "roles": list(self.roles),
            "actions": {
                a.id: {"title": a.title, "roles": sorted(a.roles),
                       "transitions": dict(a.transitions), "requires": list(a.requires)}
                for a in self.actions.values()
            },
            "defaults": defaults,
        }


def load_default_table() -> WorkflowTable:
    # Beside this module, not through importlib.resources, whose import (with zipfile
    # and tempfile) took 3 ms of every `mailgate pipe`.
    text = Path(__file__).with_name("default.yaml").read_text("utf-8")
    # libyaml's parser where PyYAML has it: the same YAML, read about 8x faster (the
    # pipe builds this table once per mail).
    return load_table(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def load_table(data: Mapping[str, Any]) -> WorkflowTable:
    """Build and validate a table from plain data (as YAML gives it)."""
    if not isinstance(data, Mapping):
        raise WorkflowError("workflow: expected a mapping")
    return _build(data)


def _build(data: Mapping[str, Any]) -> WorkflowTable:
    states = _states(data)
    roles = _roles(data)
    initial = data.get("initial")
    if initial not in states:
        raise WorkflowError(f"initial: unknown state {initial!r}")
    actions = {aid: _action(aid, spec, states, roles)
               for aid, spec in _mapping(data, "actions").items()}
    defaults = _defaults(_mapping(data, "defaults"), states, roles, actions)
    _check_reachable(initial, states, actions)
    return WorkflowTable(
        initial=initial,
        states=MappingProxyType(dict(states)),
        roles=tuple(roles),
        actions=MappingProxyType(actions),
        defaults=MappingProxyType(defaults),
        raw_defaults=MappingProxyType(dict(data["defaults"])),
    )


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping) or not value:
        raise WorkflowError(f"{key}: expected a non-empty mapping")
    return value


def _states(data: Mapping[str, Any]) -> dict[str, str]:
    states = _mapping(data, "states")
    for sid, name in states.items():
        if sid in (ANY_STATE, "=") or not isinstance(name, str) or not name.strip():
            raise WorkflowError(f"states.{sid}: needs a display name")
    return dict(states)


def _roles(data: Mapping[str, Any]) -> list[str]:
    roles = data.get("roles")
    if not isinstance(roles, list) or not roles or len(set(roles)) != len(roles):
        raise WorkflowError("roles: expected a list of distinct role names")
    return roles


def _action(aid: str, spec: Any, states: Mapping[str, str], roles: list[str]) -> Action:
    where = f"actions.{aid}"
    if not isinstance(spec, Mapping):
        raise WorkflowError(f"{where}: expected a mapping")
    for role in spec.get("roles", []):
        if role not in roles:
            raise WorkflowError(f"{where}.roles: unknown role {role!r}")
    for fact in spec.get("requires", []):
        if fact not in KNOWN_FACTS:
            raise WorkflowError(f"{where}.requires: unknown fact {fact!r}")
    return Action(
        id=aid,
        title=str(spec.get("title") or aid),
        roles=frozenset(spec.get("roles", [])),
        transitions=MappingProxyType(_transitions(where, spec.get("transitions"), states)),
        requires=tuple(spec.get("requires", [])),
    )


def _transitions(where: str, spec: Any, states: Mapping[str, str]) -> dict[str, str]:
    """Expand "*" sources and "=" destinations into one entry per state."""
    if not isinstance(spec, Mapping) or not spec:
        raise WorkflowError(f"{where}.transitions: expected a non-empty mapping")
    resolved: dict[str, str] = {}
    for source, dest in spec.items():
        if source != ANY_STATE and source not in states:
            raise WorkflowError(f"{where}.transitions: unknown state {source!r}")
        if dest not in (ANY_STATE, "=") and dest not in states:
            raise WorkflowError(f"{where}.transitions.{source}: unknown state {dest!r}")
    explicit = {s: d for s, d in spec.items() if s != ANY_STATE}
    for state in states:
        dest = explicit.get(state, spec.get(ANY_STATE))
        if dest is not None:
            resolved[state] = state if dest == "=" else dest
    return resolved


def _defaults(spec: Mapping[str, Any], states: Mapping[str, str], roles: list[str],
              actions: Mapping[str, Action]) -> dict[str, Mapping[str, str]]:
    for role in spec:
        if role not in roles:
            raise WorkflowError(f"defaults.{role}: unknown role")
    resolved: dict[str, Mapping[str, str]] = {}
    # "system" takes no mail, so it needs no default action.
    for role in (r for r in roles if r != "system"):
        cells = _follow_alias(spec, role)
        missing = [s for s in states if s not in cells]
        if missing:
            raise WorkflowError(f"defaults.{role}: no default action for state {missing[0]!r}")
        for state, aid in cells.items():
            _check_default_cell(f"defaults.{role}.{state}", role, state, aid, states, actions)
        resolved[role] = MappingProxyType(dict(cells))
    return resolved


def _follow_alias(spec: Mapping[str, Any], role: str) -> Mapping[str, str]:
    seen = [role]
    cells = spec.get(role)
    while isinstance(cells, str):
        if cells in seen or cells not in spec:
            raise WorkflowError(f"defaults.{seen[-1]}: {cells!r} is not a role with defaults")
        seen.append(cells)
        cells = spec[cells]
    if not isinstance(cells, Mapping):
        raise WorkflowError(f"defaults.{role}: missing")
    return cells


def _check_default_cell(where: str, role: str, state: str, aid: str,
                        states: Mapping[str, str], actions: Mapping[str, Action]) -> None:
    if state not in states:
        raise WorkflowError(f"{where}: unknown state")
    action = actions.get(aid)
    if action is None:
        raise WorkflowError(f"{where}: unknown action {aid!r}")
    if role not in action.roles:
        raise WorkflowError(f"{where}: role {role!r} may not {aid}")
    if state not in action.transitions or action.needs_target:
        raise WorkflowError(f"{where}: {aid} is not possible from {state!r}")


def _check_reachable(initial: str, states: Mapping[str, str],
                     actions: Mapping[str, Action]) -> None:
    # "Any state" transitions (set-status) would make every state trivially
    # reachable, so they do not count: each state needs a real path.
    edges = [(s, d) for a in actions.values() for s, d in a.transitions.items()
             if d != ANY_STATE]
    reached, frontier = {initial}, [initial]
    while frontier:
        here = frontier.pop()
        for source, dest in edges:
            if source == here and dest not in reached:
                reached.add(dest)
                frontier.append(dest)
    for state in states:
        if state not in reached:
            raise WorkflowError(f"states.{state}: unreachable from {initial!r}")
