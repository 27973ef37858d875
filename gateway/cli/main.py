"""The `gateway` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.processes import LISTEN_FDS_FLAG
from gateway.errors import ConfigError, GatewayError
from gateway.model import StateKeys, StateSnapshot
from gateway.ops.logs import LOG_FORMATS, LOG_LEVELS, SECRETS, remember_secrets, setup_logging
from gateway.routing.compiled import LoadedConfig, load_config

if TYPE_CHECKING:
    from gateway.routing.chain import StepAnswer


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        _print_problems(exc, "the config")
        return 1
    except GatewayError as exc:
        print(f"error: {SECRETS.mask(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`gateway test ... | head`): stop quietly, as `cat` would
        _discard_stdout()
        return 141  # what the shell reports for a tool ended by SIGPIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Route and forward Missive webhooks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="receive webhooks and deliver them")
    _config_arg(serve)
    _listen_args(serve)
    serve.add_argument("--no-worker", action="store_true", help="only receive; deliveries are sent by `gateway worker`")
    serve.add_argument(
        "--processes", default="1", help="gateway processes sharing the port and the store: a number or auto (per core)"
    )
    serve.add_argument("--no-pin", action="store_true", help="with --processes: let every process run on any core "
                       "(by default each has one of its own when there are enough)")
    serve.add_argument(LISTEN_FDS_FLAG, help=argparse.SUPPRESS)  # set by the supervisor of --processes
    _log_args(serve)
    serve.set_defaults(run=_serve)

    check = sub.add_parser("check", help="validate a config; exit 1 with every problem listed")
    _config_arg(check)
    check.set_defaults(run=_check)

    worker = sub.add_parser(
        "worker", help="only deliver, next to `serve --no-worker` (serves /healthz, /readyz, /metrics, /admin/)"
    )
    _config_arg(worker)
    _listen_args(worker)
    _log_args(worker)
    worker.set_defaults(run=_worker)

    schema = sub.add_parser("schema", help="print the config's JSON Schema (for editor completion)")
    schema.set_defaults(run=_schema)

    test = sub.add_parser("test", help="dry run: show what a payload would do, without sending anything")
    _config_arg(test)
    test.add_argument("payload", type=Path, nargs="?", help="a JSON payload file, as Missive would POST it")
    test.add_argument("--cases", type=Path, help="run the rule tests in this cases file instead; exit 1 if any fails")
    test.add_argument("--source", help="source the payload arrives on (needed with several sources)")
    test.add_argument(
        "--no-state", action="store_true",
        help="route as if the store knew nothing (conversations new, no once_per window running)",
    )
    test.add_argument("--json", action="store_true", help="print one JSON object")
    test.add_argument(
        "--step-response", action="append", default=[], metavar="ID=FILE",
        help="render the requests that run after step ID against this sample answer (its body; repeat for several)",
    )
    test.set_defaults(run=_test)
    _add_delivery_commands(sub)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("GATEWAY_CONFIG") or "config.yaml"  # the container image sets GATEWAY_CONFIG
    parser.add_argument("-c", "--config", type=Path, default=Path(default),
                        help="config file (default: $GATEWAY_CONFIG, else config.yaml)")


def _listen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default: server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: server.port)")


def _log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text, or one JSON object per line (default: text on a terminal)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="least severe level logged")


def _check(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    for warning in loaded.warnings():
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    print(f"{args.config}: ok ({loaded.summary()})")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from gateway.config.schema import GatewayConfig

    print(json.dumps(GatewayConfig.model_json_schema(by_alias=True), indent=2))
    return 0


def _print_problems(exc: ConfigError, what: str) -> None:
    print(exc.headline(what), file=sys.stderr)
    print(SECRETS.mask(exc.render()), file=sys.stderr)


def _test(args: argparse.Namespace) -> int:
    from gateway.cli.dry_run_text import format_text
    from gateway.routing.dry_run import dry_run, needed_state

    if (args.payload is None) == (args.cases is None):
        raise GatewayError("give either a PAYLOAD file or --cases CASES.yaml")
    loaded = load_config(args.config)
    if args.cases is not None:
        return _test_cases(args, loaded)
    try:
        body = args.payload.read_bytes()
    except OSError as exc:
        raise GatewayError(f"cannot read {args.payload}: {exc.strerror}") from None
    remember_secrets(loaded)  # the report is masked already; this also hides credentials known from the config
    keys = None if args.no_state else needed_state(loaded, body, args.source)
    seen = asyncio.run(_state_now(loaded, keys)) if keys is not None else None
    answers = _step_responses(args.step_response)
    report = SECRETS.mask_value(dry_run(loaded, body, args.source, answers=answers, seen=seen))
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_text(report))
    return 0


def _step_responses(given: list[str]) -> dict[str, StepAnswer]:
    """`--step-response ID=FILE` options as sample answers."""
    from gateway.routing.dry_run import sample_answer

    answers = {}
    for option in given:
        step, equals, file = option.partition("=")
        if not (step and equals and file):
            raise GatewayError(f"--step-response {option!r}: write it as ID=FILE, e.g. contact=answer.json")
        try:
            answers[step] = sample_answer(Path(file).read_bytes())
        except OSError as exc:
            raise GatewayError(f"cannot read {file}: {exc.strerror}") from None
    return answers


async def _state_now(loaded: LoadedConfig, keys: StateKeys) -> StateSnapshot:
    """The state a dry run routes on, as the store has it now (nothing, before the store's first start)."""
    from gateway.clock import SystemClock
    from gateway.delivery.dead_letters import opened_store
    from gateway.errors import StoreUnavailable

    storage = loaded.config.storage
    if storage.backend == "sqlite" and not (loaded.file.parent / storage.path).exists():
        return StateSnapshot()
    try:
        async with opened_store(loaded) as store:
            return await store.read_state(keys, SystemClock().now_ms())
    except StoreUnavailable as exc:
        raise GatewayError(f"{exc}; add --no-state to route without the store's state") from None


def _test_cases(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    """`gateway test --cases`: every case's PASS/FAIL line; exit 1 when any fails or the file is broken."""
    from gateway.cli.cases import format_results, load_cases, results_document, run_cases

    try:
        cases = load_cases(args.cases, loaded, args.source)
    except ConfigError as exc:
        _print_problems(exc, "the cases file")
        return 1
    results = run_cases(loaded, cases)
    print(json.dumps(results_document(results), indent=2, ensure_ascii=False) if args.json else format_results(results))
    return 0 if all(result.passed for result in results) else 1


def _serve(args: argparse.Namespace) -> int:
    return _run_app(args, run_worker=not args.no_worker, receive=True)


def _worker(args: argparse.Namespace) -> int:
    args.processes, args.listen_fds = "1", None
    return _run_app(args, run_worker=True, receive=False)


def _run_app(args: argparse.Namespace, run_worker: bool, receive: bool) -> int:
    from gateway.cli.processes import (
        Supervisor,
        child_argv,
        cores_for,
        inherited_sockets,
        process_count,
        reuse_port_copies,
        stop_when_orphaned,
    )
    from gateway.ops.config_holder import ConfigHolder
    from gateway.web.app import create_app
    from gateway.web.listeners import bind, refuse_placeholder_secrets
    from gateway.web.server import serve

    setup_logging(args.log_format, args.log_level)
    loaded = load_config(args.config)
    if receive:
        refuse_placeholder_secrets(loaded, args.host or loaded.config.server.host)
    if args.listen_fds:
        sockets = inherited_sockets(args.listen_fds)
        stop_when_orphaned()
    else:
        sockets = bind(loaded.config, args.host, args.port)  # before the store opens: a busy port fails at once
    count = process_count(args.processes)
    if count > 1:
        cores = cores_for(count, pin=not args.no_pin)
        return Supervisor(child_argv(args.argv), reuse_port_copies(sockets, count), cores).run()
    overridden = frozenset(f"server.{name}" for name in ("host", "port") if getattr(args, name) is not None)
    app = create_app(ConfigHolder(loaded), run_worker=run_worker, receive=receive, overridden=overridden)
    gc.freeze()  # what start-up built lives as long as the process: keep it out of every collection
    server = loaded.config.server
    serve(app, sockets, server.read_timeout, server.shutdown_grace, loop=_loop())
    return 0


def _add_delivery_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deliveries = sub.add_parser("deliveries", help="list deliveries (dead letters...) with attempts and last error")
    _config_arg(deliveries)
    deliveries.add_argument("--id", help="show one delivery with each of its attempts")
    deliveries.add_argument("--status", help="pending, delivered or dead")
    _filter_args(deliveries)
    deliveries.set_defaults(run=_deliveries)

    replay = sub.add_parser("replay", help="re-queue dead deliveries (after fixing a destination or a template)")
    _config_arg(replay)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", help="a delivery to re-queue (repeat for several)")
    which.add_argument("--status", help="re-queue every delivery with this status (dead; delivered to send again)")
    _filter_args(replay)
    replay.add_argument(
        "--rerender", action="store_true", help="route the stored event again under this config and render anew"
    )
    replay.set_defaults(run=_replay)

    events = sub.add_parser("events", help="look events up by conversation, sender, subject, type...")
    _config_arg(events)
    for option, meaning in (
        ("--conversation", "only this conversation's events (its id)"),
        ("--from", "only events from this sender address (any case)"),
        ("--subject", "only events whose subject contains this (any case)"),
        ("--q", "only events whose conversation id, subject or sender contains this"),
        ("--type", "only events of this rule type, e.g. label_change"),
        ("--source", "only events of this source"),
        ("--route", "only events with a delivery made by this route"),
        ("--destination", "only events with a delivery to this destination"),
        ("--status", "only events with a delivery in this status: pending, delivered or dead"),
        ("--since", "only events received within this long (1h, 7d) or since this time (2026-03-01T12:00:00Z)"),
        ("--until", "only events received before this long ago, or before this time"),
        ("--cursor", "continue after the last event a previous page listed"),
        ("--limit", "at most this many events, newest first (default 50)"),
    ):
        events.add_argument(option, dest=option.removeprefix("--"), help=meaning)
    events.add_argument("--json", action="store_true", help="print one JSON object")
    events.set_defaults(run=_events)


def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--route", help="only this route's deliveries")
    parser.add_argument("--destination", help="only deliveries to this destination")
    parser.add_argument("--event", help="only the deliveries of this event id")
    parser.add_argument("--since", help="only deliveries created within this long, e.g. 30m, 1h, 7d")
    parser.add_argument("--limit", help="at most this many deliveries (default 100 listed, 1000 replayed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _filter_fields(args: argparse.Namespace) -> dict[str, object]:
    return {
        "status": args.status, "route": args.route, "destination": args.destination, "event_id": args.event,
        "since": args.since, "limit": args.limit,
    }


def _deliveries(args: argparse.Namespace) -> int:
    from gateway.cli import deliveries_text as text
    from gateway.clock import SystemClock
    from gateway.delivery import dead_letters as service
    from gateway.delivery.quota_waits import quota_pauses

    loaded = load_config(args.config)
    remember_secrets(loaded)
    where = service.parse_filter(_filter_fields(args), SystemClock().now_ms())

    async def show() -> dict[str, Any]:
        async with service.opened_store(loaded) as store:
            pauses = await quota_pauses(store, SystemClock().now_ms())
            if args.id:
                return service.detail_document(*await service.delivery_detail(store, args.id), loaded.masker, pauses)
            return service.list_document(await service.find_deliveries(store, where), where, loaded.masker, pauses)

    document = asyncio.run(show())
    as_text = text.format_delivery if args.id else text.format_deliveries
    print(json.dumps(document, indent=2, ensure_ascii=False) if args.json else as_text(document))
    return 0


def _events(args: argparse.Namespace) -> int:
    from gateway.cli.events_text import format_events
    from gateway.clock import SystemClock
    from gateway.delivery import event_lookup
    from gateway.delivery.dead_letters import opened_store

    loaded = load_config(args.config)
    remember_secrets(loaded)
    fields = {name: getattr(args, name) for name in event_lookup.EVENT_FILTERS}
    query = event_lookup.parse_event_query(fields, SystemClock().now_ms())

    async def find() -> dict[str, Any]:
        async with opened_store(loaded) as store:
            return event_lookup.events_document(await store.find_events(query), query, loaded.masker)

    document = asyncio.run(find())
    print(json.dumps(document, indent=2, ensure_ascii=False) if args.json else format_events(document))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from gateway.cli import deliveries_text as text
    from gateway.clock import SystemClock
    from gateway.delivery import dead_letters as service
    from gateway.delivery.filters import MAX_LIMIT

    loaded = load_config(args.config)
    remember_secrets(loaded)
    now_ms = SystemClock().now_ms()
    if args.id:
        where = service.parse_filter(_filter_fields(args), now_ms, MAX_LIMIT, ids=tuple(args.id))
    else:
        where = service.replay_filter(_filter_fields(args), now_ms)

    async def run() -> service.ReplayReport:
        async with service.opened_store(loaded) as store:
            return await service.replay(loaded, store, where, now_ms, rerender=args.rerender)

    document = service.replay_document(asyncio.run(run()), loaded.masker)
    print(json.dumps(document, indent=2, ensure_ascii=False) if args.json else text.format_replay(document))
    return 0


def _loop() -> asyncio.AbstractEventLoop | None:
    """uvloop's event loop when installed (about 25% faster here), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
