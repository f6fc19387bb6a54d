"""The ``fleetsight`` command: one entry point for every process of the product.

Local services and the demo are development tooling: ``python -m devtools``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from runtime.settings import (
    BridgeSettings,
    DatabaseSettings,
    EdgeSettings,
    MqttSettings,
    NotifierSettings,
    Settings,
    SinkSettings,
    WorkerSettings,
)

log = logging.getLogger("fleetsight")


def setup_logging(verbose: bool) -> None:
    """Log to stderr; the libraries' chatter only from warnings up."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "kafka", "faust", "mode", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_db(args: argparse.Namespace, settings: DatabaseSettings) -> int:
    from sinks.db import upgrade

    if args.action == "upgrade":
        upgrade(settings.database_url)
        log.info("database schema is at the latest migration")
    return asyncio.run(_partitions(settings, show=args.action == "partitions"))


async def _partitions(settings: DatabaseSettings, show: bool) -> int:
    """Partition maintenance now (what the sink does every hour), and with ``show`` a table of what there is."""
    from sqlalchemy.exc import DBAPIError

    from sinks.db import make_engine
    from sinks.partitions import JOB_DETACH_WAIT_S, JOB_TRIES, maintain, sizes

    engine = make_engine(settings.database_url)
    try:
        # A busy table is named and left for the next run (the rest goes on): not a failed job.
        try:
            report = await maintain(engine, settings.retention_of, settings.partitions_ahead_days,
                                    detach_wait_s=JOB_DETACH_WAIT_S, tries=JOB_TRIES)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":
                raise
            log.error("partition maintenance is running elsewhere (a sink or another job kept its lock); nothing changed, run this again later")
            return 1
        log.info("partitions: %d made, %d dropped, %d steps left for the next run (busy tables, above)",
                 len(report.created), len(report.dropped), len(report.deferred))
        if show:
            found = await sizes(engine)
            if not found:
                log.error("no time-partitioned tables in this database: run `fleetsight db upgrade` first")
                return 1
            # Plain lines, not a rich table: a table cut to an 80-column pipe loses the names.
            print(f"{'table':<29} {'parts':>5} {'from':>10} {'to':>10} {'keeps':>9} {'rows':>13} {'size':>10}")
            for t in found:
                days = settings.retention_of(t.table)
                print(
                    f"{t.table:<29} {t.partitions:>5} {f'{t.start:%Y-%m-%d}' if t.start else 'all before':>10} {t.end:%Y-%m-%d} "
                    f"{f'{days} days' if days else 'for ever':>9} {t.rows:>13,} {f'{t.bytes / 2**20:,.0f} MiB':>10}"
                )
    finally:
        await engine.dispose()
    return 0


def cmd_bridge(args: argparse.Namespace, settings: BridgeSettings) -> int:
    from streams.bridge import run_bridge

    return asyncio.run(run_bridge(settings))


def cmd_worker(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from streams.worker import run_worker

    return run_worker(settings, loglevel="debug" if args.verbose else "info")


def cmd_sink(args: argparse.Namespace, settings: SinkSettings) -> int:
    from sinks.writer import run_sink

    return asyncio.run(run_sink(settings))


def cmd_notifier(args: argparse.Namespace, settings: NotifierSettings) -> int:
    from sinks.notifier import run_notifier, send_test

    if args.test is None:
        return asyncio.run(run_notifier(settings))
    try:
        attempt = asyncio.run(send_test(settings, args.test))
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if attempt.outcome == "delivered":
        print(f"webhook {args.test}: delivered (HTTP {attempt.status})")
        return 0
    print(f"webhook {args.test}: not delivered ({attempt.outcome}): {attempt.error}")
    return 1


def cmd_audit(args: argparse.Namespace, settings: SinkSettings) -> int:
    """Reconcile SQL with the cameras' ledgers now; 1 if any minute mismatches."""
    from rich.console import Console

    from fleetsight.audit import audit, parse_since

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    return asyncio.run(audit(settings, since, args.camera, Console(), args.format))


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """Ask a process's /health (the compose healthchecks run this); 0 healthy, 1 not."""
    import json
    import urllib.error
    import urllib.request

    port = {
        "bridge": settings.bridge_metrics_port, "worker": settings.worker_metrics_port, "sink": settings.sink_metrics_port,
        "notifier": settings.notifier_metrics_port,
    }[args.process]
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        print(f"{args.process}: {exc.code} {exc.read().decode(errors='replace')}")
        return 1
    except (OSError, ValueError) as exc:
        print(f"{args.process}: no answer from {url}: {exc}")
        return 1
    print(f"{args.process}: {body.get('status', 'ok')}, last progress {body.get('progress_age_s', 0)} s ago, {body.get('waiting', 0)} waiting")
    return 0


def cmd_edge_simulate(args: argparse.Namespace, settings: EdgeSettings) -> int:
    from edge.simulate import SimulatorConfig, run_simulator

    config = SimulatorConfig(
        cameras=args.cameras,
        site=args.site,
        rate=args.rate,
        duration_s=args.duration,
        outbox_dir=Path(args.outbox_dir),
        wire_format=args.format,
        camera_prefix=args.camera_prefix,
        drain_timeout_s=args.drain_timeout,
    )
    from fleetsight.mqtt_users import camera_login

    def login(camera_id: str) -> str | None:
        return camera_login(settings, camera_id)

    report = asyncio.run(run_simulator(settings, config, progress=sys.stderr.isatty(), login=login))
    print(report.summary())
    return 0 if report.drained else 1


def cmd_edge_run(args: argparse.Namespace, settings: EdgeSettings) -> int:
    import signal

    from edge.capture import stuck_connections
    from edge.config import ConfigError, SiteConfig, load_edge_config
    from edge.model_spec import ModelError
    from edge.node import CameraNode
    from edge.site import Site

    runner: CameraNode | Site
    try:
        config = load_edge_config(args.config)
        if isinstance(config, SiteConfig):
            runner = Site(config, settings, debug_dir=args.debug_dir, max_frames=args.max_frames)
            log.info("site %s: %d cameras in one process", args.config, len(config.cameras))
        else:
            runner = CameraNode(config, settings, debug_dir=args.debug_dir, max_frames=args.max_frames)
    except (ConfigError, ModelError, OSError) as exc:
        log.error("%s", exc)
        return 2

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await runner.run(stop, drain_timeout_s=args.drain_timeout, progress=sys.stderr.isatty())

    try:
        drained = asyncio.run(main())
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    if not drained:
        log.warning("events are still waiting in the outbox; they will be sent on the next run")
    if stuck_connections():
        # A frozen camera's connection is blocked in FFmpeg and cannot be
        # interrupted; leaving now keeps the 2 s stop (see stuck_connections).
        logging.shutdown()
        os._exit(0)
    return 0


def cmd_mqtt(args: argparse.Namespace, settings: MqttSettings) -> int:
    from fleetsight.mqtt_users import ACL, AuthError, ensure_user

    if args.action == "acl":
        print(ACL, end="")
        return 0
    if not args.name:
        log.error("fleetsight mqtt %s needs a name", args.action)
        return 2
    try:
        path = ensure_user(settings, args.name, camera=args.action == "add-camera")
    except AuthError as exc:
        log.error("%s", exc)
        return 1
    print(f"{args.name}: password in {path}")
    return 0


def cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    from fleetsight.kafka_users import acl_script

    print(acl_script(settings, args.command_config), end="")
    return 0


def cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from fleetsight import rollout
    from schemas.rollout import RolloutError

    console = Console()
    try:
        if args.action == "publish":
            row = asyncio.run(rollout.publish(settings, args.file, args.version, args.name, args.notes, check=not args.no_check, family=args.family))
            print(f"{row.version}  {row.name}  {row.size_bytes} bytes  sha256 {row.sha256}")
        elif args.action == "rollout":
            desired = asyncio.run(rollout.rollout(settings, args.version, args.site, args.camera))
            print(f"rollout {desired.rollout_id}: {desired.version} to "
                  + ", ".join([f"site {s}" for s in args.site] + [f"camera {c}" for c in args.camera])
                  + "; `fleetsight model status` follows it")
        else:
            versions, cameras = asyncio.run(rollout.status(settings))
            table = Table(title="Model registry")
            for column in ("version", "architecture", "size", "input", "published", "notes"):
                table.add_column(column)
            for v in versions:
                table.add_row(v.version, v.name, f"{v.size_bytes / 2**20:.1f} MiB", v.input_shape, f"{v.created_at:%Y-%m-%d %H:%M}", v.notes)
            console.print(table)
            table = Table(title="Cameras")
            for column in ("camera", "site", "should run", "runs", "rollout", "detail"):
                table.add_column(column)
            colours = {"active": "green", "failed": "red", "refused": "red", "rolled_back": "red", "pending": "yellow"}
            for c in cameras:
                state = f"[{colours.get(c.state, 'cyan')}]{c.state}[/]"
                table.add_row(c.camera_id, c.site or "?", c.desired or "-", c.running or "?", state, c.detail)
            console.print(table)
    except RolloutError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_edge_eval(args: argparse.Namespace, settings: EdgeSettings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    from edge.accuracy import AnnotationError, evaluate_rates, every_nth, format_report, load_annotation
    from edge.conditions import condition
    from edge.config import ConfigError, load_camera_config
    from edge.model_spec import ModelError

    try:
        config = load_camera_config(args.config)
        annotation = load_annotation(args.annotation)
        conditions = [condition(name) for name in args.condition]
    except (ConfigError, AnnotationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if min(args.every + args.mirrored, default=1) < 1:
        log.error("--every and --mirrored take frame steps of 1 or more (1: every frame)")
        return 2
    video = args.video or Path(config.source.uri)
    runs = [(False, args.every)] + ([(True, args.mirrored)] if args.mirrored else [])
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=Console(stderr=True)) as progress:
            for cond in conditions:
                for mirror, strides in runs:
                    rates = ", ".join(every_nth(n) for n in strides)
                    task = progress.add_task(f"{cond.name}: {rates}{' (mirrored)' if mirror else ''}", total=None)

                    def advance(done: int, total: int | None, task: TaskID = task) -> None:
                        progress.update(task, completed=done, total=total)

                    results += evaluate_rates(
                        config, video, annotation, strides=strides, mirror=mirror, class_name=args.object_class,
                        progress=advance, condition=cond,
                    )
    except (ModelError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    report = format_report(results)
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    return 0


def command_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """A command line with ``-v`` and subcommands, as :func:`run` expects it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser, parser.add_subparsers(dest="command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("fleetsight", __doc__)

    p = sub.add_parser("mqtt", help="MQTT users of the local broker")
    p.add_argument("action", choices=["add-camera", "add-user", "acl"])
    p.add_argument("name", nargs="?", help="camera id (its MQTT user name) or user name")
    p.set_defaults(func=cmd_mqtt, settings=MqttSettings)

    p = sub.add_parser("kafka", help="Kafka users: what each process may touch")
    p.add_argument("action", choices=["acls"], help="print the ACLs as kafka-acls.sh commands")
    p.add_argument("--command-config", default="admin.properties", help="the admin login file kafka-acls.sh is given")
    p.set_defaults(func=cmd_kafka, settings=Settings)

    p = sub.add_parser("db", help="database schema, and the time partitions (made ahead, dropped after their retention)")
    p.add_argument("action", choices=["upgrade", "partitions"], help="upgrade: migrate, then partition maintenance; partitions: maintenance and a summary")
    p.set_defaults(func=cmd_db, settings=DatabaseSettings)

    sub.add_parser("bridge", help="MQTT -> Kafka bridge").set_defaults(func=cmd_bridge, settings=BridgeSettings)
    sub.add_parser("worker", help="Faust stream worker (dedupe, aggregates; state in PostgreSQL)").set_defaults(func=cmd_worker, settings=WorkerSettings)
    sub.add_parser("sink", help="Kafka -> PostgreSQL writer").set_defaults(func=cmd_sink, settings=SinkSettings)
    p = sub.add_parser("notifier", help="posts each alert's opening and closing to the configured webhooks")
    p.add_argument("--test", metavar="WEBHOOK", help="post one signed test alert (kind 'test') to this webhook now, print what it answered, and exit")
    p.set_defaults(func=cmd_notifier, settings=NotifierSettings)
    p = sub.add_parser("audit", help="does SQL hold what each camera recorded? (exit 1 on a mismatch)")
    p.add_argument("--camera", help="one camera id (default: all)")
    p.add_argument("--since", default="24h", help="a span back from now (30m, 2h, 7d) or an ISO time (default 24h)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (for people, fits 80 columns), json (everything) or csv (a row per camera) for scripts")
    p.set_defaults(func=cmd_audit, settings=SinkSettings)
    p = sub.add_parser("health", help="is a local bridge, worker, sink or notifier making progress? (exit 0 / 1)")
    p.add_argument("process", choices=["bridge", "worker", "sink", "notifier"])
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_health, settings=Settings)

    edge = sub.add_parser("edge", help="camera-side commands")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True)
    p = edge_sub.add_parser("simulate", help="a simulated fleet publishing schema-valid events")
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--site", default="demo-site")
    p.add_argument("--camera-prefix", default="sim-cam")
    p.add_argument("--rate", type=float, default=5.0, help="events per second per camera")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to generate events")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="seconds to wait for the cloud to confirm everything")
    p.add_argument("--outbox-dir", default=".services/edge-sim", help="where the per-camera outboxes live")
    p.add_argument("--format", choices=["json", "msgpack"], default="json", help="wire encoding")
    p.set_defaults(func=cmd_edge_simulate, settings=EdgeSettings)

    p = edge_sub.add_parser("run", help="run a camera node, or all of a site's cameras in one process")
    p.add_argument("--config", required=True, type=Path, help="a camera's YAML file, a site file (cameras: [...]) or a folder of camera files")
    p.add_argument("--debug-dir", type=Path, help="write annotated frames here (stays on this machine)")
    p.add_argument("--max-frames", type=int, help="stop each camera after this many frames")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="after a file ends: seconds to wait for the cloud")
    p.set_defaults(func=cmd_edge_run, settings=EdgeSettings)

    p = edge_sub.add_parser("eval", help="count an annotated clip with a camera's config and compare with the annotation")
    p.add_argument("--config", required=True, type=Path, help="the camera's YAML file (lines, zones, settings)")
    p.add_argument("--annotation", required=True, type=Path, help="ground truth in MOTChallenge format (gt.txt)")
    p.add_argument("--video", type=Path, help="the annotated video; default: the config's source")
    p.add_argument("--every", type=int, nargs="+", default=[1, 2], help="detection rates to run: every Nth frame (default: 1 2)")
    p.add_argument("--mirrored", type=int, nargs="*", default=[], help="also run these rates on the mirrored clip")
    p.add_argument(
        "--condition", nargs="+", default=["daylight"], metavar="NAME",
        help="show the frames as: daylight (as they are), dusk, night, compressed, half (default: daylight)",
    )
    p.add_argument("--class", dest="object_class", default="person", help="the class the annotation marks (default: person)")
    p.add_argument("--markdown", type=Path, help="also write the report here")
    p.set_defaults(func=cmd_edge_eval, settings=EdgeSettings)

    model = sub.add_parser("model", help="model registry and rollout to the edges")
    model_sub = model.add_subparsers(dest="action", required=True)
    p = model_sub.add_parser("publish", help="put an ONNX file in the registry")
    p.add_argument("file", type=Path)
    p.add_argument("--version", help="default: <architecture>@<first 12 hex digits of its sha256>")
    p.add_argument("--name", help="architecture the edges know it as (edge/models/models.json; default: the family's first, else nanodet-g-416)")
    p.add_argument("--family", help="how the edges decode it: nanodet-g, nanodet-plus or yolox; its outputs are checked against it")
    p.add_argument("--notes", default="")
    p.add_argument("--no-check", action="store_true", help="do not load it with onnxruntime first")
    p.set_defaults(func=cmd_model, settings=Settings)
    p = model_sub.add_parser("rollout", help="tell sites or cameras to run a published version")
    p.add_argument("version")
    p.add_argument("--site", action="append", default=[], help="every camera of this site, now and later (repeatable)")
    p.add_argument("--camera", action="append", default=[], help="this camera (repeatable)")
    p.set_defaults(func=cmd_model, settings=Settings)
    model_sub.add_parser("status", help="registry, and what each camera runs").set_defaults(func=cmd_model, settings=Settings)

    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv``, load the command's settings class (``settings`` default), run its ``func``."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        # Each command reads the settings of the process it is, and only those.
        settings = args.settings()
    except Exception as exc:  # a bad env var or YAML file: say which, briefly
        log.error("invalid configuration: %s", exc)
        return 2
    return int(args.func(args, settings))


def main(argv: list[str] | None = None) -> int:
    """The ``fleetsight`` command."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
