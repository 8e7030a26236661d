"""The ticket state machine and the one pure decision function.

``Workflow.decide(role, state, commands, facts)`` answers: which action does
this mail take, from which state to which, and, if the sender asked for
something the workflow does not allow, why not.  It writes nothing anywhere.

The transitions themselves run in a ``transitions.Machine`` built from the
table, so the table stays the single source: the machine knows the
``state -> state`` edges and the conditions (``requires``), the table knows
who may take each action, which is what the refusal reasons are made from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .commands import Commands
from .table import ANY_STATE, Action, WorkflowTable, load_default_table

COMMENT = "comment"
SET_STATUS = "set-status"


@dataclass(frozen=True)
class TicketFacts:
    """What the decision needs to know about a ticket beyond its state."""

    #: The ticket has been answered at some point (a confirm needs an answer).
    has_answer: bool = False


@dataclass(frozen=True)
class Decision:
    role: str
    action: str
    from_state: str
    to_state: str
    #: Why the sender's command was not carried out, or None.
    refused: str | None = None

    @property
    def changes_state(self) -> bool:
        return self.from_state != self.to_state

    def __str__(self) -> str:
        text = f"{self.action}: {self.from_state} -> {self.to_state}"
        return f"{text} (refused: {self.refused})" if self.refused else text


class _Ticket:
    """The machine's model: a ticket's state plus the facts conditions read."""

    def __init__(self, state: str, facts: TicketFacts):
        self.state = state
        self.facts = facts

    def has_answer(self, event=None) -> bool:
        return self.facts.has_answer


class Workflow:
    def __init__(self, table: WorkflowTable | None = None):
        self.table = table or load_default_table()
        self._built: object | None = None

    @property
    def _machine(self):
        """The transitions Machine, built on first use: loading a config (as the pipe
        transport does per mail) need not pay for importing and building it."""
        if self._built is None:
            from transitions import Machine

            self._built = Machine(
                model=None,
                states=list(self.table.states),
                initial=self.table.initial,
                transitions=list(self._machine_transitions()),
                auto_transitions=False,
                send_event=True,
                ignore_invalid_triggers=True,
                model_override=True,
            )
        return self._built

    def _machine_transitions(self) -> Iterable[dict]:
        for action in self.table.actions.values():
            for source, dest in action.transitions.items():
                targets = [s for s in self.table.states if s != source] \
                    if dest == ANY_STATE else [dest]
                for target in targets:
                    yield {
                        "trigger": action.id, "source": source, "dest": target,
                        "conditions": list(action.requires) + _target_is(target, dest),
                    }

    # -- the decision ---------------------------------------------------------

    def decide(self, role: str, state: str, commands: Commands = Commands(),
               facts: TicketFacts = TicketFacts()) -> Decision:
        if role not in self.table.roles:
            raise ValueError(f"unknown role {role!r}")
        if state not in self.table.states:
            raise ValueError(f"unknown state {state!r}")
        if not commands:
            # "system" has no row: its jobs always say what they do.
            default = self.table.defaults.get(role, {}).get(state, COMMENT)
            return self._apply(role, state, default, None, facts)
        wanted = self._resolve(role, state, commands)
        if isinstance(wanted, str):
            return Decision(role, COMMENT, state, state, refused=wanted)
        action, target = wanted
        return self._apply(role, state, action, target, facts)

    def _resolve(self, role: str, state: str, commands: Commands) -> tuple[str, str | None] | str:
        """The (action, target) the commands ask for, or the reason they cannot."""
        target = None
        if commands.status is not None:
            target = self.state_id(commands.status)
            if target is None:
                return f"unknown status {commands.status!r}"
        if commands.action is not None:
            action = self.action_id(commands.action)
            if action is None:
                return f"unknown action {commands.action!r}"
            return action, target
        if role in self.table.actions[SET_STATUS].roles:
            return SET_STATUS, target
        # "Status: X" from anyone else means the action of theirs that leads to X.
        for action in self.table.actions.values():
            if role in action.roles and action.transitions.get(state) == target:
                return action.id, target
        return (f"{_WHO.get(role, role)} may not change the ticket "
                f"from {self._name(state)} to {self._name(target)}")

    def _apply(self, role: str, state: str, action_id: str, target: str | None,
               facts: TicketFacts) -> Decision:
        action = self.table.actions[action_id]
        reason = self._why_not(role, state, action, target, facts)
        if reason:
            return Decision(role, COMMENT, state, state, refused=reason)
        model = _Ticket(state, facts)
        # The event is fired for this one model, which is never added to the
        # machine: the machine stays immutable and safe to share across threads.
        moved = self._machine.events[action_id].trigger(model, target=target)
        if not moved:  # pragma: no cover - _why_not mirrors every condition
            return Decision(role, COMMENT, state, state, refused=f"cannot {action_id} now")
        return Decision(role, action_id, state, model.state)

    def _why_not(self, role: str, state: str, action: Action, target: str | None,
                 facts: TicketFacts) -> str | None:
        title = action.title.lower()
        if role not in action.roles:
            return f"{_WHO.get(role, role)} may not {title}"
        if state not in action.transitions:
            return f"cannot {title} when the ticket is {self._name(state)}"
        if action.needs_target:
            if target is None:
                return f"{title} needs a Status: line naming the new status"
            if target == state:
                return f"the ticket is already {self._name(state)}"
        elif target is not None and action.transitions[state] != target:
            return (f"{title} leads to {self._name(action.transitions[state])},"
                    f" not {self._name(target)}")
        for fact in action.requires:
            if not getattr(facts, fact):
                return f"cannot {title}: {_FACT_MISSING[fact]}"
        return None

    # -- names ----------------------------------------------------------------

    def state_id(self, text: str) -> str | None:
        """The state id for an id or a display name, case-insensitively."""
        return _lookup(text, {sid: (sid, name) for sid, name in self.table.states.items()})

    def action_id(self, text: str) -> str | None:
        """The action id for an id or a title, case-insensitively."""
        return _lookup(text, {a.id: (a.id, a.title) for a in self.table.actions.values()})

    def _name(self, state: str | None) -> str:
        return self.table.states.get(state, str(state))


_WHO = {"owner": "the ticket's owner", "other": "someone other than the ticket's owner",
        "admin": "an admin", "system": "the system"}
_FACT_MISSING = {"has_answer": "the ticket has not been answered yet"}


def _target_is(target: str, dest: str) -> list:
    """For "any state" actions, the condition that picks the named target."""
    if dest != ANY_STATE:
        return []
    return [lambda event: event.kwargs.get("target") == target]


def _lookup(text: str, names: dict[str, tuple[str, str]]) -> str | None:
    wanted = " ".join(text.split()).casefold()
    for key, spellings in names.items():
        if wanted in (s.casefold() for s in spellings):
            return key
    return None
