"""`mailgate workflow show|graph` and `check-config`, through the installed command."""

import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent.parent / "fixtures"


def mailgate(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mailgate", *args],
                          capture_output=True, text=True, env=env)


def test_show_prints_the_table():
    result = mailgate("workflow", "show")
    assert result.returncode == 0
    assert "owner       give-info -> open" in result.stdout
    assert 'set-status "Change status" (admin)' in result.stdout


def test_graph_dot_and_mermaid():
    dot = mailgate("workflow", "graph", "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith("digraph workflow {")
    # Who may take each move; a move only a command takes is dashed.
    assert '"answered" -> "solved" [label="confirm (owner, by command)", style=dashed];' \
        in dot.stdout
    assert '"answered" -> "open" [label="reopen (owner)"];' in dot.stdout
    mermaid = mailgate("workflow", "graph", "--format", "mermaid").stdout
    assert "needs_info --> answered : answer (other, admin)" in mermaid
    assert "open --> expired : expire (the sweep)" in mermaid


def test_the_graph_has_every_move_the_table_allows():
    """Self-loops and the admin's any-to-any override were left out, so Invalid looked
    terminal (issue 17, point 4)."""
    from workflow import load_default_table

    table = load_default_table()
    mermaid = mailgate("workflow", "graph", "--format", "mermaid").stdout
    assert "answered --> answered : answer (other, admin)" in mermaid
    assert "solved --> solved : comment (owner, other, admin, system)" in mermaid
    node = {sid: sid.replace("-", "_") for sid in table.states}
    for source in table.states:
        for dest in table.states:
            if dest != source:
                assert f"{node[source]} --> {node[dest]} : set-status (admin, by command)" \
                    in mermaid, (source, dest)


def test_show_with_a_site_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "domains: [example.org]\nredmine: {url: http://127.0.0.1:9, api_key: k}\n"
        "sites:\n  site-b:\n    workflow:\n      defaults:\n        owner: {solved: reopen}\n")
    result = mailgate("workflow", "show", "--config", str(config), "--site", "site-b")
    assert result.returncode == 0, result.stderr
    assert "reopen -> open      reopen -> open" in result.stdout


def test_show_with_a_config_needs_no_redmine_secrets(tmp_path):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    result = mailgate("workflow", "show", "--config", str(FIXTURES / "config/demo.yaml"),
                      env=env)
    assert result.returncode == 0, result.stderr
    unknown = mailgate("workflow", "show", "--config", str(FIXTURES / "config/demo.yaml"),
                       "--site", "site-z", env=env)
    assert unknown.returncode == 78 and "--site: no site 'site-z'" in unknown.stderr


def test_check_config_names_the_bad_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "domains: [example.org]\nredmine: {url: http://x, api_key: k}\n"
        "sites:\n  site-a:\n    workflow:\n      defaults:\n        other: {open: confirm}\n")
    result = mailgate("check-config", str(config))
    assert result.returncode == 78
    assert "sites.site-a.workflow: defaults.other.open: role 'other' may not confirm" \
        in result.stderr


def test_check_config_takes_secrets_from_the_environment():
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    missing = mailgate("check-config", str(FIXTURES / "config/demo.yaml"), env=env)
    assert missing.returncode == 78 and "MAILGATE_REDMINE_API_KEY" in missing.stderr
    env["MAILGATE_REDMINE_API_KEY"] = "secret"
    ok = mailgate("check-config", str(FIXTURES / "config/demo.yaml"), env=env)
    assert ok.returncode == 0, ok.stderr


def test_every_scalar_setting_can_come_from_the_environment(tmp_path):
    from mailgate.config import load_config

    config = load_config(FIXTURES / "config/demo.yaml", environ={
        "MAILGATE_REDMINE_API_KEY": "000123",          # stays text, leading zeros and all
        "MAILGATE_SERVER_MAX_MESSAGE_SIZE": "1048576",
        "MAILGATE_SPOOL_MAX_AGE": "3600",
        "MAILGATE_UNKNOWN_SENDERS": "reject",
        "MAILGATE_SWEEP_EXPIRE_AFTER_DAYS": "30",
    })
    assert config.redmine.api_key == "000123"
    assert config.max_message_size == 1048576 and config.max_age == 3600.0
    assert config.unknown_senders == "reject" and config.expire_after_days == 30.0


def test_a_bad_value_from_the_environment_names_the_key():
    import pytest

    from mailgate.config import load_config
    from mailgate.errors import ConfigError

    with pytest.raises(ConfigError, match="server.max_recipients"):
        load_config(FIXTURES / "config/demo.yaml", environ={
            "MAILGATE_REDMINE_API_KEY": "k", "MAILGATE_SERVER_MAX_RECIPIENTS": "many"})


def _redmine_env():
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}


def test_check_config_redmine_finds_what_redmine_lacks(tmp_path, redmine):
    """check-config --redmine names each project, tracker, status, user and custom field
    the file names and Redmine has not (issue 17, point 1); against the fake and the
    real Redmine alike."""
    from support.configs import write_config

    good = write_config(tmp_path / "good.yaml", redmine.url, redmine.admin_key,
                        redmine={"reporter_field": "reporter-email"}, unknown_senders="create")
    ok = mailgate("check-config", "--redmine", str(good), env=_redmine_env())
    assert ok.returncode == 0, ok.stderr
    assert "has what it names" in ok.stdout
    bad = write_config(tmp_path / "bad.yaml", redmine.url, redmine.admin_key,
                       redmine={"gateway_user": "nobody-here", "reporter_field": "reporter",
                                "statuses": {"solved": "Fixed"}},
                       sites={"site-a": {"project": "site-q", "tracker": "Bug"}})
    result = mailgate("check-config", "--redmine", str(bad), env=_redmine_env())
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert any(line.startswith("mailgate: redmine.statuses: Redmine has no issue status"
                               " 'Fixed'") for line in lines), lines
    assert "mailgate: sites.site-a.project: Redmine has no project 'site-q'" in lines
    assert any(line.startswith("mailgate: sites.site-a.tracker:") and "'Bug'" in line
               for line in lines), lines
    assert any(line.startswith("mailgate: redmine.gateway_user:") for line in lines), lines
    assert "mailgate: redmine.reporter_field: Redmine has no issue custom field 'reporter'" \
        in lines


def test_check_config_redmine_says_when_created_accounts_could_not_write(
        tmp_path, fake_redmine, monkeypatch):
    """unknown_senders: create makes accounts that are members of no project: check-config
    --redmine names a private project, and the rights Redmine's Non member role lacks."""
    from support.configs import write_config
    from tests.fakes import redmine as fake_seed

    monkeypatch.setitem(fake_seed.PERMISSIONS, "Non member", {"view_issues"})
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          unknown_senders="create")
    result = mailgate("check-config", "--redmine", str(config), env=_redmine_env())
    assert result.returncode == 78
    assert ("mailgate: sites.site-a.unknown_senders: 'create' makes accounts with Redmine's"
            " Non member role, which lacks add_issues, add_issue_notes (Administration >"
            " Roles and permissions > Non member)") in result.stderr.splitlines()
    # site-b keeps its own policy (reject): nothing said about it.
    assert "sites.site-b" not in result.stderr

    monkeypatch.setitem(fake_seed.PERMISSIONS, "Non member", fake_seed._BASE)
    monkeypatch.setattr(fake_seed, "PRIVATE_PROJECTS", {"site-a"})
    result = mailgate("check-config", "--redmine", str(config), env=_redmine_env())
    assert result.returncode == 78
    assert ("mailgate: sites.site-a.unknown_senders: 'create' makes accounts that are members"
            " of no project, and project 'site-a' is not public") in result.stderr.splitlines()
