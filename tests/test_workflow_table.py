"""Loading the workflow table: what is checked, and that each mistake names its entry."""

import copy

import pytest
import yaml
from importlib import resources

from workflow import Workflow, WorkflowError, load_default_table, load_table


@pytest.fixture
def data():
    text = resources.files("workflow").joinpath("default.yaml").read_text()
    return yaml.safe_load(text)


def test_default_table_covers_every_state_for_every_mail_role():
    table = load_default_table()
    for role in ("owner", "other", "admin"):
        assert set(table.defaults[role]) == set(table.states)


def test_admin_alias_resolves_to_the_other_row():
    table = load_default_table()
    assert dict(table.defaults["admin"]) == dict(table.defaults["other"])


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["actions"]["answer"]["transitions"].update({"closed": "answered"}),
     "actions.answer.transitions: unknown state 'closed'"),
    (lambda d: d["actions"]["answer"]["transitions"].update({"open": "done"}),
     "actions.answer.transitions.open: unknown state 'done'"),
    (lambda d: d["actions"]["answer"]["roles"].append("boss"),
     "actions.answer.roles: unknown role 'boss'"),
    (lambda d: d["defaults"]["owner"].update({"open": "escalate"}),
     "defaults.owner.open: unknown action 'escalate'"),
    (lambda d: d["defaults"]["owner"].update({"open": "answer"}),
     "defaults.owner.open: role 'owner' may not answer"),
    (lambda d: d["defaults"]["other"].update({"solved": "answer"}),
     "defaults.other.solved: answer is not possible from 'solved'"),
    (lambda d: d["defaults"]["owner"].pop("expired"),
     "defaults.owner: no default action for state 'expired'"),
    (lambda d: d["defaults"].update({"boss": "other"}), "defaults.boss: unknown role"),
    (lambda d: d["defaults"].update({"admin": "nobody"}),
     "defaults.admin: 'nobody' is not a role with defaults"),
    (lambda d: d["states"].update({"limbo": "Limbo"}), "defaults.owner: no default action"),
    (lambda d: d.update({"initial": "new"}), "initial: unknown state 'new'"),
    (lambda d: d["actions"]["confirm"].update({"requires": ["paid"]}),
     "actions.confirm.requires: unknown fact 'paid'"),
])
def test_mistakes_are_reported_naming_the_entry(data, edit, message):
    edit(data)
    with pytest.raises(WorkflowError) as info:
        load_table(data)
    assert message in str(info.value)


def test_an_unreachable_state_is_an_error(data):
    # Nothing but set-status leads to "invalid" once reject is gone.
    del data["actions"]["reject"]
    with pytest.raises(WorkflowError, match=r"states\.invalid: unreachable from 'open'"):
        load_table(data)


def test_the_machine_reads_the_table_not_a_copy_of_it(data):
    changed = copy.deepcopy(data)
    changed["actions"]["give-info"]["transitions"]["needs-info"] = "answered"
    workflow = Workflow(load_table(changed))
    assert workflow.decide("owner", "needs-info").to_state == "answered"


def test_site_override_merges_cells_and_keeps_the_alias(data):
    table = load_default_table().with_defaults({"other": {"open": "request-info"}})
    assert table.defaults["other"]["open"] == "request-info"
    assert table.defaults["admin"]["open"] == "request-info"   # admin is "as other"
    assert table.defaults["other"]["needs-info"] == "answer"    # untouched cell


def test_site_override_is_validated():
    with pytest.raises(WorkflowError, match="defaults.owner.open: role 'owner' may not expire"):
        load_default_table().with_defaults({"owner": {"open": "expire"}})
