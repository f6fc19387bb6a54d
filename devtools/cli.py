"""``python -m devtools``: local services and the demo, for development on one machine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fleetsight.cli import command_parser, run
from runtime.settings import Settings

log = logging.getLogger("devtools")


def _print_status(statuses: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="FleetSight local services")
    for column in ("service", "listens on", "state", "pid"):
        table.add_column(column)
    for s in statuses:
        state = "[green]running[/]" if s.running else "[red]stopped[/]"
        table.add_row(s.name, s.address, state, str(s.pid or "-"))
    Console().print(table)


def _cluster_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with the bootstrap list of a loopback Kafka cluster of
    ``--kafka-brokers`` nodes; without the flag, of the cluster ``up`` last made."""
    from devtools.services import cluster_bootstrap, kafka_ports

    remembered = settings.services_dir / "kafka-cluster" / "bootstrap"
    if args.kafka_brokers is None:
        if remembered.exists() and len(kafka_ports(settings)) == 1:
            return settings.model_copy(update={"kafka_bootstrap": remembered.read_text().strip()})
        return settings
    bootstrap = cluster_bootstrap(args.kafka_brokers, kafka_ports(settings)[0])
    if args.action == "up":
        if args.kafka_brokers == 1:
            remembered.unlink(missing_ok=True)
        else:
            remembered.parent.mkdir(parents=True, exist_ok=True)
            remembered.write_text(bootstrap)
    return settings.model_copy(update={"kafka_bootstrap": bootstrap})


def cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.services import ServiceError, Services

    settings = _cluster_settings(args, settings)
    services = Services(settings)
    try:
        if args.action == "up":
            statuses = services.up()
        elif args.action == "down":
            statuses = services.down(purge=args.purge)
        else:
            statuses = services.status()
    except ServiceError as exc:
        log.error("%s", exc)
        return 1
    _print_status(statuses)
    if args.action == "up" and "," in settings.kafka_bootstrap:
        print(f"Kafka is a cluster: give FleetSight's processes\n  export FLEETSIGHT_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}")
    if args.action == "status":
        return 0 if all(s.running for s in statuses) else 3
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.demo import DemoOptions, run_demo

    options = DemoOptions(cameras=args.cameras, loops=args.loops, max_frames=args.frames, realtime=not args.fast, report=args.report)
    return run_demo(settings, options)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("python -m devtools", __doc__)

    p = sub.add_parser("services", help="local Mosquitto, Kafka and PostgreSQL on loopback")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--purge", action="store_true", help="with down: also delete their data")
    p.add_argument("--kafka-brokers", type=int, choices=[1, 3], metavar="N",
                   help="Kafka as a cluster of N KRaft nodes (1 or 3; default: what `up` last started, else 1)")
    p.set_defaults(func=cmd_services, settings=Settings)

    p = sub.add_parser("demo", help="everything at once: services, pipeline, camera nodes on a sample video, SQL, an HTML report")
    p.add_argument("--cameras", type=int, choices=[1, 2, 3], default=3)
    p.add_argument("--loops", type=int, default=1, help="times through the 80 s clip")
    p.add_argument("--frames", type=int, help="stop each camera after this many frames")
    p.add_argument("--fast", action="store_true", help="as fast as the CPU allows instead of the clip's 10 fps")
    p.add_argument("--report", type=Path, default=Path("demo-report.html"), help="where to write the HTML report")
    p.set_defaults(func=cmd_demo, settings=Settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``python -m devtools`` command."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
