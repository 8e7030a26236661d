"""The workflow table for people: a text table, and the state diagram as DOT or Mermaid."""

from __future__ import annotations

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


def _edges(table: WorkflowTable) -> dict[tuple[str, str], list[str]]:
    """(source, dest) -> action ids; "any state" actions and self-loops left out."""
    edges: dict[tuple[str, str], list[str]] = {}
    for action in table.actions.values():
        for source, dest in action.transitions.items():
            if dest not in (ANY_STATE, source):
                edges.setdefault((source, dest), []).append(action.id)
    return edges


def graph_dot(table: WorkflowTable) -> str:
    lines = ["digraph workflow {", "  rankdir=LR;", '  node [shape=box, style=rounded];']
    lines += [f'  "{sid}" [label="{name}"];' for sid, name in table.states.items()]
    for (source, dest), actions in _edges(table).items():
        lines.append(f'  "{source}" -> "{dest}" [label="{", ".join(actions)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_mermaid(table: WorkflowTable) -> str:
    def node(sid: str) -> str:
        return sid.replace("-", "_")

    lines = ["stateDiagram-v2", f"  [*] --> {node(table.initial)}"]
    lines += [f"  {node(sid)} : {name}" for sid, name in table.states.items()]
    for (source, dest), actions in _edges(table).items():
        lines.append(f"  {node(source)} --> {node(dest)} : {', '.join(actions)}")
    return "\n".join(lines) + "\n"
