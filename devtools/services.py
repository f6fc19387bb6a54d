"""Local Mosquitto, Kafka (KRaft) and PostgreSQL on loopback, without Docker.

``python -m devtools services up`` starts what is not running yet, waits until each
answers, and prints where it listens; ``down`` stops exactly what ``up``
started (tracked by pid files under ``.services/``). Data stays in
``.services/`` between runs; ``down --purge`` deletes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from devtools.configs import KAFKA_CLUSTER_ENV, kafka_env, kafka_properties, mosquitto_conf
from devtools.ports import port_open
from fleetsight.mqtt_users import ACL, ADMIN_USER, ensure_user, give_to_broker, reload_broker
from runtime.settings import BRIDGE_USER, REPO_ROOT, KafkaSettings, Settings
from runtime.waiting import WaitAborted, WaitTimeout, wait_until

log = logging.getLogger("devtools.services")

KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


class ServiceError(RuntimeError):
    """A local service could not be started; the message says what to do."""


@dataclass
class Status:
    name: str
    address: str
    running: bool
    pid: int | None
    detail: str = ""


def _wait(predicate: Callable[[], object], what: str, timeout: float, proc: subprocess.Popen | None = None,
          log_file: Path | None = None) -> None:
    """Wait for ``predicate``; a ServiceError with the log's tail if ``proc`` exits or time runs out."""
    def exited() -> str | None:
        if proc is not None and proc.poll() is not None:
            return f"{what} exited with code {proc.returncode} while starting{_tail(log_file)}"
        return None

    try:
        wait_until(predicate, timeout, what, interval=0.1, abort=exited)
    except WaitAborted as exc:
        raise ServiceError(str(exc)) from None
    except WaitTimeout:
        raise ServiceError(f"{what} did not answer within {timeout:.0f} s{_tail(log_file)}") from None


def _tail(log_file: Path | None, lines: int = 15) -> str:
    if log_file is None or not log_file.exists():
        return ""
    text = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_file}:\n  " + "\n  ".join(text)


def _pid_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    # A pid file can outlive its process and the pid be reused: check it is ours.
    return marker in cmdline


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (no zombie left behind)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # started by another fleetsight process: its parent reaps it


def _is_root() -> bool:
    return os.geteuid() == 0


class _Process:
    """A server process we start ourselves and track with a pid file."""

    name = ""
    marker = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.services_dir / self.name
        self.pid_file = self.dir / "pid"
        self.log_file = self.dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, self.marker) else None

    def _spawn(self, cmd: list[str]) -> subprocess.Popen:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.dir,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def _terminate(self, timeout: float = 30.0, signalled: int | None = None) -> None:
        """SIGTERM (unless ``signalled`` already got it), wait, then SIGKILL."""
        pid = signalled or self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return

        def gone() -> bool:
            _reap(pid)
            return not _pid_alive(pid, self.marker)

        if signalled is None:
            os.kill(pid, signal.SIGTERM)
        try:
            wait_until(gone, timeout, f"{self.name} to exit", interval=0.1)
        except WaitTimeout:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, pid, timeout)
            os.kill(pid, signal.SIGKILL)
            try:
                wait_until(gone, 10, f"{self.name} to die of SIGKILL", interval=0.1)
            except WaitTimeout:
                log.error("%s (pid %d) still there 10 s after SIGKILL", self.name, pid)
        self.pid_file.unlink(missing_ok=True)


class Mosquitto(_Process):
    name = "mosquitto"
    marker = "mosquitto"

    @property
    def port(self) -> int:
        return self.settings.mqtt.port

    def status(self) -> Status:
        pid = self.pid()
        return Status(self.name, f"mqtt://127.0.0.1:{self.port}", pid is not None and port_open(self.port), pid)

    def up(self) -> None:
        acl = self.dir / "acl"
        if self.status().running:
            if acl.exists() and acl.read_text() != ACL:
                # A broker started by an older FleetSight: give it today's rules.
                acl.write_text(ACL)
                give_to_broker(acl)
                reload_broker(self.settings)
            return
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceError("mosquitto is not installed: run `make deps` (Debian package mosquitto)")
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        passwd = self.dir / "passwd"
        acl.write_text(ACL)
        give_to_broker(acl)
        for user in (BRIDGE_USER, ADMIN_USER):
            ensure_user(self.settings, user, passwd=passwd)
        conf = self.dir / "mosquitto.conf"
        overrides: dict[str, str | None] = {
            "listener": f"{self.port} 127.0.0.1",
            "password_file": str(passwd),
            "acl_file": str(acl),
            "persistence_location": f"{data}/",
        }
        extra = ["log_type error", "log_type warning", "log_type notice"]
        if _is_root():
            # Started as root, mosquitto drops to its own user: give it its
            # data (the password and ACL files are given in fleetsight/mqtt_users.py). A
            # folder that user cannot reach (a private temp dir) keeps it root.
            try:
                account = pwd.getpwnam("mosquitto")
                for item in (data, *data.iterdir()):
                    os.chown(item, account.pw_uid, account.pw_gid)
                reachable = subprocess.run(["runuser", "-u", "mosquitto", "--", "test", "-r", str(passwd)]).returncode == 0
            except KeyError:
                reachable = False
            if not reachable:
                overrides["user"] = "root"
        conf.write_text(mosquitto_conf(overrides, extra))
        proc = self._spawn([binary, "-c", str(conf)])
        _wait(lambda: port_open(self.port), "mosquitto", 10, proc, self.log_file)

    def down(self) -> None:
        self._terminate(10)


class Kafka(_Process):
    """One Kafka node (broker and KRaft controller in one process).

    A single node lives in ``.services/kafka``; the nodes of a cluster in
    ``.services/kafka-cluster/<id>``, one per address in the bootstrap list,
    each with its controller on the port after its broker's.
    """

    marker = "kafka.Kafka"

    def __init__(
        self, settings: Settings, node: int = 1, overrides: dict[str, str | None] | None = None,
        scram_users: dict[str, str] | None = None,
    ) -> None:
        self.ports = kafka_ports(settings)
        self.node = node
        # A node of a test's own can change more (a secured listener) and
        # have SCRAM users made when its storage is formatted.
        self.overrides = dict(overrides or {})
        self.scram_users = dict(scram_users or {})
        self.name = "kafka" if len(self.ports) == 1 else f"kafka-{node}"
        super().__init__(settings)
        if len(self.ports) > 1:
            self.dir = settings.services_dir / "kafka-cluster" / str(node)
            self.pid_file, self.log_file = self.dir / "pid", self.dir / "kafka.log"

    @property
    def port(self) -> int:
        return self.ports[self.node - 1]

    @property
    def lib(self) -> Path:
        return self.settings.services_dir / "kafka" / "lib"

    def status(self) -> Status:
        pid = self.pid()
        return Status(self.name, f"127.0.0.1:{self.port} (KRaft)", pid is not None and port_open(self.port), pid)

    def fetch_jars(self) -> None:
        """Copy Kafka's jars from Maven Central once (about 46 MB)."""
        done = self.lib / ".complete"
        if done.exists():
            return
        shared = REPO_ROOT / ".services" / "kafka" / "lib"
        if (shared / ".complete").exists() and shared.resolve() != self.lib.resolve():
            # Another services folder (a test's own stack) reuses the checkout's jars.
            self.lib.parent.mkdir(parents=True, exist_ok=True)
            if self.lib.exists() or self.lib.is_symlink():
                shutil.rmtree(self.lib, ignore_errors=True)
            self.lib.symlink_to(shared)
            return
        if not shutil.which("mvn"):
            raise ServiceError("Maven (mvn) is needed once to fetch Kafka's jars: run `make deps`")
        self.lib.mkdir(parents=True, exist_ok=True)
        log.info("fetching Apache Kafka jars from Maven Central into %s", self.lib)
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies", f"-DoutputDirectory={self.lib}"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"mvn could not fetch Kafka's jars:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if not java:
            raise ServiceError("Java 17+ is needed to run Kafka: run `make deps` (Debian package openjdk-17-jre-headless)")
        return [java, "-cp", f"{self.lib}/*", *args]

    def properties(self) -> str:
        """This node's ``server.properties``: ``deploy/kafka/kafka.env``, then
        what a cluster changes (``deploy/kafka/cluster.env``), then loopback."""
        overrides: dict[str, str | None] = dict(kafka_env(KAFKA_CLUSTER_ENV)) if len(self.ports) > 1 else {}
        overrides.update({
            "node.id": str(self.node),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.port + 1}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.quorum.voters": ",".join(f"{i}@127.0.0.1:{p + 1}" for i, p in enumerate(self.ports, 1)),
            "log.dirs": str(self.dir / "data"),
            "num.partitions": str(self.settings.kafka_partitions),
        })
        overrides.update(self.overrides)
        return kafka_properties(overrides)

    def start(self, cluster_id: Callable[[], str]) -> subprocess.Popen | None:
        """Spawn the node unless it runs; format its storage first if new."""
        if self.status().running or self.pid() is not None:
            return None
        self.fetch_jars()
        data = self.dir / "data"
        props = self.dir / "server.properties"
        self.dir.mkdir(parents=True, exist_ok=True)
        props.write_text(self.properties())
        if not (data / "meta.properties").exists():
            scram = [arg for user, password in self.scram_users.items()
                     for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")]
            result = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(props), "--ignore-formatted", *scram),
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise ServiceError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")
        return self._spawn(
            self._java(
                "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-Dorg.slf4j.simpleLogger.log.kafka.server.ReplicaFetcherManager=warn",
                "kafka.Kafka", str(props),
            )
        )

    def tool(self, main_class: str, *args: str) -> str:
        """Run one of Kafka's own command-line tools (``kafka.admin.AclCommand`` is
        ``kafka-acls.sh``) from the jars; its output, or a ServiceError."""
        result = subprocess.run(self._java(main_class, *args), capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"{main_class} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result.stdout

    def new_cluster_id(self) -> str:
        return subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True, check=True
        ).stdout.strip()

    def wait_up(self, proc: subprocess.Popen | None, timeout: float = 60) -> None:
        """Wait until the node's broker listener answers (it opens once the node has the metadata)."""
        _wait(lambda: port_open(self.port), self.name, timeout, proc, self.log_file)

    def up(self) -> None:
        """Start this node alone (the others of a cluster must be up for it to join)."""
        self.wait_up(self.start(self._cluster_id))

    def _cluster_id(self) -> str:
        if len(self.ports) == 1:
            return self.new_cluster_id()
        return KafkaCluster(self.settings).cluster_id()

    def down(self) -> None:
        self._terminate(30)


def kafka_ports(settings: KafkaSettings) -> list[int]:
    """The broker ports of the loopback cluster: one per bootstrap address."""
    return [int(address.strip().rsplit(":", 1)[1]) for address in settings.kafka_bootstrap.split(",") if address.strip()]


def cluster_bootstrap(brokers: int, first_port: int) -> str:
    """Bootstrap list of a loopback cluster of ``brokers`` nodes from ``first_port``
    (every other port: each controller takes the port after its broker)."""
    return ",".join(f"127.0.0.1:{first_port + 2 * i}" for i in range(brokers))


class KafkaCluster:
    """The Kafka nodes of the local services, started and stopped together
    (a KRaft quorum only elects a leader once a majority of them runs)."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes = [Kafka(settings, i) for i in range(1, len(kafka_ports(settings)) + 1)]
        self.dir = self.nodes[0].dir if len(self.nodes) == 1 else settings.services_dir / "kafka-cluster"

    def cluster_id(self) -> str:
        """One id for every node of the cluster, made once and kept in its folder."""
        if len(self.nodes) == 1:
            return self.nodes[0].new_cluster_id()
        path = self.dir / "cluster-id"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(self.nodes[0].new_cluster_id())
        return path.read_text().strip()

    def status(self) -> Status:
        states = [node.status() for node in self.nodes]
        address = self.settings.kafka_bootstrap + (" (KRaft)" if len(states) == 1 else f" ({len(states)} KRaft nodes)")
        pids = [s.pid for s in states if s.pid is not None]
        return Status(self.name, address, all(s.running for s in states), pids[0] if len(pids) == 1 else None,
                      ", ".join(f"{s.name} {'up' if s.running else 'down'}" for s in states))

    def up(self) -> None:
        if self.status().running:
            return
        self.nodes[0].fetch_jars()
        started = [(node, node.start(self.cluster_id)) for node in self.nodes]
        for node, proc in started:
            node.wait_up(proc, 90)
        brokers = len(self.nodes)
        _wait(lambda: asyncio.run(kafka_ready(self.settings.kafka_bootstrap, brokers)), "kafka metadata", 60,
              started[0][1], self.nodes[0].log_file)

    def down(self) -> None:
        # All at once: a node left alone without a quorum waits for a
        # controller to let it shut down (seen: the last of three ignored
        # SIGTERM for 30 s when they were stopped one after another).
        pids = [node.pid() for node in self.nodes]
        for pid in pids:
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        for node, pid in zip(self.nodes, pids, strict=True):
            node._terminate(30, signalled=pid)


async def kafka_ready(bootstrap: str, brokers: int = 1) -> bool:
    """True when the cluster answers a metadata request with ``brokers`` brokers in it."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return len(metadata.brokers()) >= brokers
    except Exception:  # any failure means "not yet"
        return False
    finally:
        await client.close()


class Postgres:
    name = "postgres"

    def __init__(self, settings: Settings, options: tuple[str, ...] = (), hba: str | None = None) -> None:
        self.settings = settings
        # A cluster of a test's own can take more server options (-c name=value)
        # and its own client rules (pg_hba.conf), e.g. TLS only.
        self.options, self.hba = options, hba
        url = urlsplit(settings.postgres_dsn)
        self.port = url.port or 5432
        self.db_user = url.username or "fleetsight"
        self.db_name = (url.path or "/fleetsight").lstrip("/") or "fleetsight"
        self.dir = self._data_root()
        self.data = self.dir / "data"
        self.log_file = self.dir / "postgres.log"

    def _data_root(self) -> Path:
        home = self.settings.services_dir / "postgres"
        if not _is_root() or home.is_symlink():
            return home.resolve()
        # As root the server runs as `postgres`, which must reach the data dir;
        # a checkout under a private home cannot, so the data then lives in
        # /var/tmp with a link from .services/.
        self.settings.services_dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres_ok(["test", "-x", str(self.settings.services_dir)]):
            return home
        digest = hashlib.sha1(str(self.settings.services_dir).encode()).hexdigest()[:10]
        target = Path(f"/var/tmp/fleetsight-{digest}/postgres")
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        home.symlink_to(target)
        return target

    @staticmethod
    def _as_postgres_ok(cmd: list[str]) -> bool:
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True).returncode == 0

    @staticmethod
    def bindir() -> Path:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
        if not versions:
            raise ServiceError("PostgreSQL server is not installed: run `make deps` (Debian package postgresql)")
        return versions[-1].parent

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise ServiceError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}{_tail(self.log_file)}")
        return result

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid, "postgres") else None

    def status(self) -> Status:
        pid = self.pid()
        return Status(self.name, f"postgresql://127.0.0.1:{self.port}/{self.db_name}", pid is not None and port_open(self.port), pid)

    def up(self) -> None:
        if not self.status().running:
            self._start()
        self._ensure_database()

    def _start(self) -> None:
        bindir = self.bindir()
        self.dir.mkdir(parents=True, exist_ok=True)
        if _is_root():
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            # trust on loopback only: a development cluster of our own.
            self._run(str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
            if self.hba is not None:
                # Written by the server's own user: initdb made the folder its own.
                self._run("sh", "-c", f"cat > {self.data}/pg_hba.conf <<'EOF'\n{self.hba}\nEOF")
        options = " ".join(f"-c {option}" for option in self.options)
        self._run(
            str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {options}", "start",
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _ensure_database(self) -> None:
        # Names come from our own settings, but quote them anyway.
        user, db = self.db_user.replace('"', ""), self.db_name.replace('"', "")
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'"):
            self.psql(f'CREATE ROLE "{user}" LOGIN CREATEDB CREATEROLE')
        else:
            # Migrations create the writer and analyst group roles.
            self.psql(f'ALTER ROLE "{user}" CREATEROLE')
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'"):
            self.psql(f'CREATE DATABASE "{db}" OWNER "{user}"')

    def down(self) -> None:
        if self.pid() is not None:
            self._run(str(self.bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)


class Service(Protocol):
    """What `Services` needs of each one."""

    name: str
    dir: Path

    def status(self) -> Status: ...
    def up(self) -> None: ...
    def down(self) -> None: ...


class Services:
    """The three local services, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.all: list[Service] = [Mosquitto(settings), KafkaCluster(settings), Postgres(settings)]

    def up(self) -> list[Status]:
        self.settings.services_dir.mkdir(parents=True, exist_ok=True)
        for service in self.all:
            started = time.monotonic()
            was_running = service.status().running
            service.up()
            if not was_running:
                log.info("%s up in %.1f s", service.name, time.monotonic() - started)
        return self.status()

    def down(self, purge: bool = False) -> list[Status]:
        for service in reversed(self.all):
            service.down()
        if purge:
            for service in self.all:
                for data in (service.dir / "data", *service.dir.glob("*/data")):
                    if data.exists():
                        shutil.rmtree(data)
                (service.dir / "cluster-id").unlink(missing_ok=True)
        return self.status()

    def status(self) -> list[Status]:
        return [service.status() for service in self.all]

    def running(self) -> bool:
        return all(s.running for s in self.status())
