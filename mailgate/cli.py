"""The ``mailgate`` command.  The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from mailgate.errors import EX_CONFIG, EX_OK, EX_TEMPFAIL, ConfigError, MailgateError

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailgate", description="mailgate: an inbound-email gateway for ticket workflows.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _workflow_commands(commands)
    check = commands.add_parser("check-config", help="load a config file and report problems")
    check.add_argument("config", help="the YAML config file")
    check.add_argument("--redmine", action="store_true",
                       help="also check that Redmine has the projects, trackers, statuses,"
                            " user and custom fields the file names")
    check.set_defaults(run=_check_config)
    _mail_commands(commands)
    return parser


def _config_option(parser, required: bool = True) -> None:
    parser.add_argument("--config", default=os.environ.get("MAILGATE_CONFIG"),
                        required=required and not os.environ.get("MAILGATE_CONFIG"),
                        help="the YAML config file (default: $MAILGATE_CONFIG)")


def _mail_commands(commands) -> None:
    serve = commands.add_parser("serve", help="run the SMTP/LMTP listener and the worker")
    _config_option(serve)
    serve.add_argument("--smtp", metavar="HOST:PORT", help="SMTP listen address")
    serve.add_argument("--lmtp", metavar="HOST:PORT", help="LMTP listen address")
    serve.add_argument("--metrics", metavar="HOST:PORT",
                       help="serve /metrics (Prometheus) and /healthz here")
    serve.set_defaults(run=_serve)

    pipe = commands.add_parser("pipe", help="deliver one mail from stdin (MTA pipe transport)")
    _config_option(pipe)
    pipe.add_argument("--recipient", help="the envelope recipient (Postfix: ${recipient})")
    pipe.add_argument("--sender", help="the envelope sender (Postfix: ${sender})")
    pipe.add_argument("--queue-only", action="store_true",
                      help="spool and exit; `mailgate worker` applies it (no Redmine check)")
    pipe.set_defaults(run=_pipe)

    fetch = commands.add_parser("fetch", help="take the mail waiting in the imap: mailboxes,"
                                " once (for cron), and apply it")
    _config_option(fetch)
    fetch.add_argument("--queue-only", action="store_true",
                       help="spool and file the mail; `mailgate worker` (or serve) applies it")
    fetch.set_defaults(run=_fetch)

    worker = commands.add_parser("worker", help="process the spool until it is empty")
    _config_option(worker)
    worker.add_argument("--forever", action="store_true", help="keep polling the spool")
    worker.set_defaults(run=_worker)

    explain = commands.add_parser("explain", help="say what would happen to mail; write nothing")
    _config_option(explain)
    explain.add_argument("--recipient", help="the envelope recipient (default: from headers)")
    explain.add_argument("--ticket-state", help="the ticket's state (with --ticket-owner:"
                         " Redmine is not contacted)")
    explain.add_argument("--ticket-owner", help="the ticket owner's address")
    explain.add_argument("--json", action="store_true", help="one JSON object per line")
    explain.add_argument("--via", default="pipe",
                         help="how the mail reached us, which decides whose"
                              " Authentication-Results count: pipe or lmtp (from our MTA;"
                              " the default), 'smtp ADDRESS', replay")
    explain.add_argument("files", nargs="+", metavar="FILE|DIR|MBOX")
    explain.set_defaults(run=_explain)

    replay = commands.add_parser("replay", help="deliver saved mail (files, dirs, mboxes)")
    _config_option(replay)
    replay.add_argument("--recipient", help="the recipient for every mail (default: headers)")
    replay.add_argument("--via", default="replay", choices=("replay", "pipe"),
                        help="replay (the default): the saved mail's Authentication-Results"
                             " are not believed; pipe: it was saved after our MTA took it in"
                             " (from its queue, or a mailbox it delivered to)")
    replay.add_argument("paths", nargs="+", metavar="FILE|DIR|MBOX")
    replay.set_defaults(run=_replay)
    _spool_commands(commands)

    sweep = commands.add_parser("sweep", help="expire tickets with no activity (for cron)")
    _config_option(sweep)
    sweep.add_argument("--dry-run", action="store_true", help="say what would be done")
    sweep.set_defaults(run=_sweep)


def _spool_commands(commands) -> None:
    spool = commands.add_parser("spool", help="see and fix what is waiting in the spool")
    sub = spool.add_subparsers(dest="spool_command", metavar="WHAT")
    sub.required = True
    listing = sub.add_parser("list", help="mails by state, with age, tries and last error")
    listing.add_argument("--state", default="queued", choices=("queued", "dead", "done", "all"))
    show = sub.add_parser("show", help="one mail in detail")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="print the mail as received")
    retry = sub.add_parser("retry", help="make a waiting or dead mail due now")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?")
    which.add_argument("--all", action="store_true")
    drop = sub.add_parser("drop", help="delete a waiting or dead mail (asks first)")
    drop.add_argument("id", type=int)
    drop.add_argument("--yes", action="store_true", help="do not ask")
    stats = sub.add_parser("stats", help="counts by state and the oldest waiting mail")
    for each in (listing, show, retry, drop, stats):
        _config_option(each)
        each.set_defaults(run=_spool)


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
    from mailgate.config import load_config

    # The workflow is all it needs: no Redmine, so no secrets.
    config = load_config(args.config, need_redmine=False)
    site = config.sites.get(args.site) if args.site else None
    if args.site and site is None:
        raise ConfigError(f"--site: no site {args.site!r} in {args.config}")
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
    from mailgate.config import load_config

    config = load_config(args.config)
    if args.redmine:
        from mailgate.clients.redmine import RedmineClient
        from mailgate.ops.check_redmine import redmine_problems

        problems = redmine_problems(config, RedmineClient.from_settings(config.redmine))
        for problem in problems:
            print(f"mailgate: {problem}", file=sys.stderr)
        if problems:
            return EX_CONFIG
    sites = ", ".join(f"{s.name} <{s.address}>" for s in config.sites.values()) or "none"
    checked = f"; Redmine at {config.redmine.url} has what it names" if args.redmine else ""
    print(f"{args.config}: ok (domains: {', '.join(config.domains)}; sites: {sites}{checked})")
    return EX_OK


def _setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("MAILGATE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Both log every command and callback at INFO; our own lines say what matters.
    for chatty in ("mail.log", "transitions"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _gateway(args: argparse.Namespace):
    from mailgate.config import load_config
    from mailgate.gateway import build_gateway

    return build_gateway(load_config(args.config))


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from mailgate.config import parse_listen
    from mailgate.serve import check_startup, serve

    _setup_logging()
    for option in ("smtp", "lmtp", "metrics"):
        if getattr(args, option):
            parse_listen(getattr(args, option), f"--{option}")
    gateway = _gateway(args)
    smtp = args.smtp or gateway.config.smtp_listen
    lmtp = args.lmtp or gateway.config.lmtp_listen
    if not (smtp or lmtp or gateway.config.imap):
        raise SystemExit("mailgate serve: give --smtp and/or --lmtp (or listen: or imap:"
                         " in the config)")
    reached = check_startup(gateway)
    metrics = args.metrics or gateway.config.metrics_listen
    asyncio.run(serve(gateway, smtp, lmtp, metrics=metrics, redmine_reached=reached))
    return EX_OK


def _pipe(args: argparse.Namespace) -> int:
    from mailgate.intake.pipe import run_pipe

    from mailgate.intake.ratelimit import StoreRateLimiter

    raw = sys.stdin.buffer.read()
    if args.queue_only:
        from mailgate.config import load_config
        from mailgate.gateway import build_queue_only_gateway

        gateway = build_queue_only_gateway(load_config(args.config, need_redmine=False))
    else:
        gateway = _gateway(args)
    per_sender = gateway.config.limits.per_sender
    if per_sender:
        # One process per mail: the limit's buckets must outlive it.
        gateway.sender_limit = StoreRateLimiter.for_limit(gateway.config.store, per_sender)
    status, said = run_pipe(gateway, raw, args.recipient, args.sender,
                            process=not args.queue_only)
    print(f"mailgate: {said}", file=sys.stderr)
    return status


def _fetch(args: argparse.Namespace) -> int:
    from mailgate.errors import ConfigError
    from mailgate.intake.imap import fetch_once, worst

    _setup_logging()
    gateway = _gateway(args)
    if gateway.config.imap is None:
        raise ConfigError(f"{args.config}: no imap: section, so no mailbox to fetch from")
    _, errors = fetch_once(gateway, gateway.config.imap,
                           lambda line: print(line, file=sys.stderr, flush=True))
    if not args.queue_only:
        # As `mailgate worker`: what was taken, then the Discord posts and notices it made.
        gateway.drain()
    if errors:
        for error in errors:
            if error is not worst(errors):
                print(f"mailgate: {error}", file=sys.stderr)
        raise worst(errors)
    return EX_OK


def _worker(args: argparse.Namespace) -> int:
    _setup_logging()
    gateway = _gateway(args)
    if not args.forever:
        # The cron form: every queue until nothing is due (the spool's mail first,
        # then the Discord posts and notices it made).
        gateway.drain()
        return EX_OK
    import signal
    import threading

    from mailgate.serve import start_runners, stop_runners

    stop = threading.Event()

    def finish(signum, frame):
        # Finish the item in hand, then stop (no lease left to expire).
        stop.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    start_runners(gateway, stop)
    while not stop.wait(1.0):
        pass
    stop_runners(gateway)
    return EX_OK


def _explain(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mailgate.config import load_config
    from mailgate.ops.explain import explain
    from mailgate.facts import GivenFacts, RedmineFacts

    given = args.ticket_state is not None and args.ticket_owner is not None
    config = load_config(args.config, need_redmine=not given)
    if given:
        if args.ticket_state not in config.workflow.table.states:
            raise SystemExit(f"mailgate explain: unknown state {args.ticket_state!r}")
        facts = GivenFacts(args.ticket_state, args.ticket_owner, config)
    else:
        from mailgate.clients.redmine import RedmineClient

        facts = RedmineFacts(RedmineClient.from_settings(config.redmine), config)
    from mailgate.intake.replay import messages

    seen = _spool_record(config) if not given else (lambda key, route: None)
    for name, raw in messages(args.files):
        result = explain(name, raw, config, facts, args.recipient, via=args.via, seen=seen)
        print(json.dumps(result.data, ensure_ascii=False) if args.json else result.text())
    return EX_OK


def _spool_record(config):
    """What the spool says was applied already, when there is a spool to ask (explain
    creates none: it writes nothing)."""
    if config.spool_url is None and not config.spool_path.exists():
        return lambda key, route: None
    from mailgate.store import open_spool

    return open_spool(config.store).seen


def _replay(args: argparse.Namespace) -> int:
    from mailgate.intake.replay import replay

    def progress(line: str, done: int, total: int) -> None:
        # "n of m" where a person watches; the plain lines where a log collects them.
        prefix = f"[{done} of {total}] " if sys.stderr.isatty() else ""
        print(prefix + line, file=sys.stderr, flush=True)

    summary = replay(_gateway(args), args.paths, args.recipient, args.via, progress)
    print(", ".join(f"{count} {kind}" for kind, count in sorted(summary.items())) or "no mail")
    return EX_OK


def _sweep(args: argparse.Namespace) -> int:
    from mailgate.ops.sweep import sweep

    _setup_logging()
    actions = sweep(_gateway(args), dry_run=args.dry_run)
    for action in actions:
        print(action)
    print(f"{len(actions)} ticket(s) {'due' if args.dry_run else 'swept'}")
    return EX_OK


def _spool(args: argparse.Namespace) -> int:
    from mailgate.ops import spool_cli
    from mailgate.config import load_config
    from mailgate.store import open_spool

    config = load_config(args.config, need_redmine=False)
    spool = open_spool(config.store)
    out = sys.stdout
    command = args.spool_command
    if command == "list":
        return spool_cli.list_mails(spool, args.state, out)
    if command == "show":
        return spool_cli.show(spool, args.id, args.raw, out)
    if command == "retry":
        return spool_cli.retry(spool, None if args.all else args.id, out)
    if command == "drop":
        return spool_cli.drop(spool, args.id, args.yes, input, out)
    return spool_cli.stats(spool, out)


#: Commands that only print what they read: a reader that stops early is no error.
READERS = frozenset({"explain", "check-config", "spool", "workflow", "sweep"})


class _Never(Exception):
    """Matches nothing: the except clause for a broken pipe outside READERS."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MailgateError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_TEMPFAIL
    except BrokenPipeError if args.command in READERS else _Never:
        # `mailgate spool list | head -1`: the reader has all it wanted.  Only for
        # commands that just print: elsewhere a broken pipe is a failure like any other.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
    except Exception as exc:  # never exit 0 (or a bounce code) after a crash
        logging.getLogger("mailgate").exception("internal error")
        print(f"mailgate: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL

