"""Properties of the workflow over any sequence of mails (hypothesis)."""

from hypothesis import given, settings, strategies as st

from workflow import Commands, TicketFacts, Workflow

WORKFLOW = Workflow()
TABLE = WORKFLOW.table
STATES = list(TABLE.states)
MAIL_ROLES = ["owner", "other", "admin"]

names = st.sampled_from(
    [None, "bogus"] + STATES + list(TABLE.states.values()) + [s.upper() for s in STATES])
actions = st.sampled_from([None, "bogus"] + list(TABLE.actions)
                          + [a.title for a in TABLE.actions.values()])
commands = st.builds(Commands, action=actions, status=names)
mails = st.lists(st.tuples(st.sampled_from(MAIL_ROLES + ["system"]), commands), max_size=30)

# The states ordinary senders can reach from "open" without admin or system.
PEOPLE_STATES = {"open", "needs-info", "answered", "solved"}


def allowed(action: str, role: str, source: str, dest: str) -> bool:
    spec = TABLE.actions[action]
    if role not in spec.roles or source not in spec.transitions:
        return False
    target = spec.transitions[source]
    return dest != source if target == "*" else target == dest


@settings(max_examples=300)
@given(mails)
def test_every_step_is_one_the_table_allows(sequence):
    state, has_answer = TABLE.initial, False
    for role, cmds in sequence:
        decision = WORKFLOW.decide(role, state, cmds, TicketFacts(has_answer))
        assert decision.from_state == state
        assert allowed(decision.action, role, state, decision.to_state)
        if decision.action == "comment":
            assert decision.to_state == state
        if decision.refused:
            assert decision.action == "comment" and decision.to_state == state
        state = decision.to_state
        has_answer |= decision.action == "answer"


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["owner", "other"]), commands), max_size=30))
def test_owner_and_other_alone_never_reach_expired_or_invalid(sequence):
    state, has_answer = TABLE.initial, False
    for role, cmds in sequence:
        decision = WORKFLOW.decide(role, state, cmds, TicketFacts(has_answer))
        state = decision.to_state
        has_answer |= decision.action == "answer"
        assert state in PEOPLE_STATES


@given(st.sampled_from(MAIL_ROLES), st.sampled_from(STATES), st.booleans())
def test_no_command_means_the_table_default(role, state, has_answer):
    decision = WORKFLOW.decide(role, state, Commands(), TicketFacts(has_answer))
    assert decision.action == TABLE.defaults[role][state]
    assert decision.refused is None


@given(st.sampled_from(MAIL_ROLES + ["system"]), st.sampled_from(STATES), commands)
def test_unknown_names_are_refused_with_the_name(role, state, cmds):
    decision = WORKFLOW.decide(role, state, cmds)
    for name, known in ((cmds.action, WORKFLOW.action_id), (cmds.status, WORKFLOW.state_id)):
        if name is not None and known(name) is None:
            assert decision.refused and repr(name) in decision.refused
            break
