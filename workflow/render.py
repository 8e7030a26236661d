"""The workflow table for people: a text table, and the state diagram as DOT or Mermaid."""

from __future__ import annotations

from dataclasses import dataclass

from .table import ANY_STATE, WorkflowTable


def show_table(table: WorkflowTable) -> str:
    """The default-action table, then who may take which action from where."""
    states = list(table.states)
    width = max(len(s) for s in states + ["sender"]) + 2
    rows = {role: [f"{cells[s]} -> {table.actions[cells[s]].transitions[s]}" for s in states]
            for role, cells in table.defaults.items()}
    cell = max(len(c) for row in rows.values() for c in row + states) + 2
    lines = ["Default action for a mail with no command (sender \\ state):", ""]
    lines.append("sender".ljust(width) + "".join(s.ljust(cell) for s in states).rstrip())
    for role, row in rows.items():
        lines.append(role.ljust(width) + "".join(c.ljust(cell) for c in row).rstrip())
    lines += ["", "Actions (who: from -> to):", ""]
    for action in table.actions.values():
        moves = ", ".join(_move(src, dst) for src, dst in action.transitions.items())
        needs = f"  [needs {', '.join(action.requires)}]" if action.requires else ""
        lines.append(f"{action.id} \"{action.title}\" ({', '.join(sorted(action.roles))}):"
                     f" {moves}{needs}")
    lines += ["", "States: " + ", ".join(f"{sid} \"{name}\"" for sid, name in table.states.items()),
              f"A new ticket starts {table.initial}."]
    return "\n".join(lines) + "\n"


def _move(source: str, dest: str) -> str:
    if dest == ANY_STATE:
        return f"{source} -> any other"
    return source if dest == source else f"{source} -> {dest}"


@dataclass(frozen=True)
class Edge:
    """One move of the diagram: from ``source`` to ``dest`` by ``action``, for ``roles``."""

    source: str
    dest: str
    action: str
    roles: tuple[str, ...]
    #: True when no role gets this move by default: only a command at the top of a
    #: mail (``Status:``, ``Action:``) takes it.
    command_only: bool

    @property
    def label(self) -> str:
        if self.roles == ("system",):
            return f"{self.action} (the sweep)"
        mark = ", by command" if self.command_only else ""
        return f"{self.action} ({', '.join(self.roles)}{mark})"


def edges(table: WorkflowTable) -> list[Edge]:
    """Every move the table allows: self-loops (a comment, an answer on an answered
    ticket), the admin's move to any other state, each with who may take it."""
    found = []
    for action in table.actions.values():
        roles = tuple(r for r in table.roles if r in action.roles)
        for source in table.states:
            for dest in _destinations(table, action.transitions, source):
                by_default = any(table.defaults.get(role, {}).get(source) == action.id
                                 for role in roles)
                # The system's moves (expiry) are the sweep's, never a mail's command.
                command_only = not by_default and roles != ("system",)
                found.append(Edge(source, dest, action.id, roles, command_only))
    return found


def _destinations(table: WorkflowTable, transitions, source: str) -> list[str]:
    dest = transitions.get(source)
    if dest is None:
        return []
    if dest == ANY_STATE:
        return [state for state in table.states if state != source]
    return [dest]


def graph_dot(table: WorkflowTable) -> str:
    """Command-only moves are dashed."""
    lines = ["digraph workflow {", "  rankdir=LR;", '  node [shape=box, style=rounded];',
             f'  start [shape=point]; start -> "{table.initial}";']
    lines += [f'  "{sid}" [label="{name}"];' for sid, name in table.states.items()]
    for edge in edges(table):
        style = ", style=dashed" if edge.command_only else ""
        lines.append(f'  "{edge.source}" -> "{edge.dest}" [label="{edge.label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_mermaid(table: WorkflowTable) -> str:
    def node(sid: str) -> str:
        return sid.replace("-", "_")

    lines = ["stateDiagram-v2", f"  [*] --> {node(table.initial)}"]
    lines += [f"  {node(sid)} : {name}" for sid, name in table.states.items()]
    for edge in edges(table):
        lines.append(f"  {node(edge.source)} --> {node(edge.dest)} : {edge.label}")
    return "\n".join(lines) + "\n"
