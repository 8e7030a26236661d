"""The ticket workflow: pure decisions, no I/O.

``Workflow(table).decide(role, state, commands, facts)`` is the whole API the
rest of mailgate uses; the table is data (``default.yaml``) loaded and checked
by ``table.py``.
"""

from .commands import Commands, parse_commands
from .machine import Decision, TicketFacts, Workflow
from .table import WorkflowError, WorkflowTable, load_default_table, load_table

__all__ = [
    "Commands", "Decision", "TicketFacts", "Workflow", "WorkflowError", "WorkflowTable",
    "load_default_table", "load_table", "parse_commands",
]
