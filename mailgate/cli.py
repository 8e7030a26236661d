"""The ``mailgate`` command.  The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .errors import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_USAGE, MailgateError

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _workflow_commands(commands)
    check = commands.add_parser("check-config", help="load a config file and report problems")
    check.add_argument("config", help="the YAML config file")
    check.set_defaults(run=_check_config)
    return parser


def _workflow_commands(commands) -> None:
    workflow = commands.add_parser("workflow", help="show the ticket workflow")
    sub = workflow.add_subparsers(dest="workflow_command", metavar="WHAT")
    sub.required = True
    show = sub.add_parser("show", help="print the default-action table and the actions")
    graph = sub.add_parser("graph", help="print the state diagram")
    graph.add_argument("--format", choices=("dot", "mermaid"), default="mermaid")
    for each in (show, graph):
        each.add_argument("--config", help="use this config's workflow (with its overrides)")
        each.add_argument("--site", help="the workflow of this site of the config")
    show.set_defaults(run=_workflow_show)
    graph.set_defaults(run=_workflow_graph)


def _table(args: argparse.Namespace):
    from workflow import load_default_table

    if not args.config:
        return load_default_table()
    from .config import load_config

    config = load_config(args.config)
    site = config.sites.get(args.site) if args.site else None
    if args.site and site is None:
        raise SystemExit(f"mailgate: no site {args.site!r} in {args.config}")
    return config.workflow_for(site).table


def _workflow_show(args: argparse.Namespace) -> int:
    from workflow.render import show_table

    sys.stdout.write(show_table(_table(args)))
    return EX_OK


def _workflow_graph(args: argparse.Namespace) -> int:
    from workflow.render import graph_dot, graph_mermaid

    render = graph_dot if args.format == "dot" else graph_mermaid
    sys.stdout.write(render(_table(args)))
    return EX_OK


def _check_config(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config)
    sites = ", ".join(f"{s.name} <{s.address}>" for s in config.sites.values()) or "none"
    print(f"{args.config}: ok (domains: {', '.join(config.domains)}; sites: {sites})")
    return EX_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MailgateError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_SOFTWARE
    except BrokenPipeError:
        return EX_OK


__all__ = ["main", "EX_CONFIG", "EX_USAGE"]
