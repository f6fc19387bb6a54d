"""The docker-compose stack for real: an engine, images without a registry, the shipped compose file.

No image can be pulled on the machines this project is built on, so the
third-party images of ``docker-compose.yml`` are replaced (through its
``FLEETSIGHT_*_IMAGE`` variables, the file itself unchanged) by stand-ins
built here from Debian packages and the Kafka jars of ``deploy/kafka/pom.xml``
(``tests/compose/images/``), on a Debian base made with debootstrap.
Prometheus and Grafana have no stand-in (no Debian package of Grafana) and
are not started. Images are cached by the engine: the base is made once,
later builds reuse their layers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from runtime.settings import REPO_ROOT
from runtime.waiting import WaitAborted, WaitTimeout, wait_until

BASE = "local/debian:bookworm"
PYTHON = "fleetsight-test/python"
STANDINS = {"mosquitto": "fleetsight-test/mosquitto", "kafka": "fleetsight-test/kafka", "postgres": "fleetsight-test/postgres"}
APP = "fleetsight:compose-test"
PROJECT = "fleetsight-compose-test"
SERVICES = ["mosquitto", "kafka", "postgres", "migrate", "bridge", "worker", "sink", "notifier"]
IMAGES = REPO_ROOT / "tests" / "compose" / "images"
DOCKERD_PID = Path("/run/fleetsight-test-dockerd.pid")


class Unavailable(Exception):
    """No container engine can be had here; the message says why."""


def run(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def _engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Engine:
    """A Docker engine: the running one, or a ``dockerd`` started (and later stopped) here."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if not shutil.which("docker"):
            raise Unavailable("no docker client (Debian package docker.io; `make deps` installs it)")
        if _engine_answers():
            return
        if not shutil.which("dockerd"):
            raise Unavailable("no dockerd (Debian package docker.io; `make deps` installs it)")
        if os.geteuid() != 0:
            raise Unavailable("dockerd is not running and starting it needs root")
        log = open(tempfile.gettempdir() + "/fleetsight-test-dockerd.log", "ab")
        self.proc = subprocess.Popen(["dockerd", "--pidfile", str(DOCKERD_PID)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.proc
        try:
            wait_until(_engine_answers, 60, "dockerd to answer",
                       abort=lambda: f"dockerd exited ({proc.returncode})" if proc.poll() is not None else None)
        except (WaitTimeout, WaitAborted) as exc:
            self.stop()
            raise Unavailable(f"{exc} (log in {log.name})") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def has_image(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def base_image() -> None:
    """A minimal Debian bookworm image, made with debootstrap once and kept by the engine."""
    if has_image(BASE):
        return
    if not shutil.which("debootstrap"):
        raise Unavailable("no debootstrap to make a base image (Debian package debootstrap; `make deps` installs it)")
    mirror = "http://deb.debian.org/debian"
    with tempfile.TemporaryDirectory(prefix="fleetsight-rootfs-") as root:
        run("debootstrap", "--variant=minbase", "bookworm", root, mirror, timeout=900)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", BASE], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()


def build_images(kafka_jars: Path) -> None:
    """The stand-ins and the project's image from ``deploy/Dockerfile`` on the Python stand-in."""
    with tempfile.TemporaryDirectory(prefix="fleetsight-images-") as tmp:
        contexts = {}
        for name in ("python", *STANDINS):
            ctx = Path(tmp) / name
            shutil.copytree(IMAGES / name, ctx)
            contexts[name] = ctx
        # pip inside the build reaches PyPI through this machine's egress, which the host's CAs verify.
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", contexts["python"] / "ca-bundle.crt")
        shutil.copytree(kafka_jars, contexts["kafka"] / "lib", ignore=shutil.ignore_patterns(".complete"))
        builds = [
            subprocess.Popen(["docker", "build", "-q", "-t", tag, "--build-arg", f"BASE={BASE}", str(contexts[name])],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, tag in [("python", PYTHON), *STANDINS.items()]
        ]
        for proc in builds:
            out, _ = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(proc.args)} failed:\n{out[-3000:]}")
    run("docker", "build", "-q", "-f", "deploy/Dockerfile", "-t", APP, "--build-arg", f"PYTHON_IMAGE={PYTHON}", ".",
        cwd=REPO_ROOT, timeout=1200)


class ComposeStack:
    """The shipped compose file, run from a copy of the tracked files (its ./secrets are the copy's)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "FLEETSIGHT_IMAGE": APP,
            "FLEETSIGHT_PYTHON_IMAGE": PYTHON,
            "FLEETSIGHT_MOSQUITTO_IMAGE": STANDINS["mosquitto"],
            "FLEETSIGHT_KAFKA_IMAGE": STANDINS["kafka"],
            "FLEETSIGHT_POSTGRES_IMAGE": STANDINS["postgres"],
        }

    def copy_repository(self) -> None:
        files = run("git", "ls-files", "-z", cwd=REPO_ROOT).split("\0")
        for name in filter(None, files):
            src = REPO_ROOT / name
            if src.is_file():
                dst = self.root / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        return run("docker-compose", *args, cwd=self.root, env=self.env, timeout=timeout, check=check)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def inspect(self, service: str, template: str) -> str:
        return run("docker", "inspect", "-f", template, self.container(service)).strip()

    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text().strip()

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail=40", check=False)[-12000:]
