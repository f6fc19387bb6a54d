"""MQTT users of a Mosquitto whose files are on this machine, and its access rules.

Each camera may only use its own topics.

The broker's ACL file (the same rules ship in ``deploy/mosquitto/acl``):

- a camera logs in with its camera id as user name and may publish only to
  its own ``events`` and ``outbox`` topics (under any shard, and in the
  layout from before shards) and ``<root>/cameras/<its id>/{snapshot,model}``,
  and read only its own ``ack`` and ``control`` topics (plus the sites' model instructions and
  the model files, which are not secret); the bridge then checks that every event's
  ``camera_id`` matches the topic it came on, so the MQTT user owns the
  camera id in the payload;
- the bridge user reads every camera's events and outbox head and writes the
  ack watermarks and its own status;
- an admin user (for operators and tests) may do anything.

Passwords are random, kept in files under ``<services_dir>/secrets`` (mode
0600) and only their hashes go to the broker's password file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from runtime.mqtt import login_accepted
from runtime.settings import BRIDGE_USER, MqttSettings, Settings
from runtime.waiting import WaitTimeout, wait_until

log = logging.getLogger("fleetsight.mqtt_users")

ADMIN_USER = "fleetsight-admin"

ACL = f"""\
# Written by FleetSight. Pattern rules apply to every user; %u is the user name,
# which for a camera is its camera id. The first level is the topic root; the
# camera topics under shards/+/ are today's, the ones without are what edges
# from before bridge shards use.
user {BRIDGE_USER}
topic read +/shards/+/cameras/+/events
topic read +/shards/+/cameras/+/outbox
topic readwrite +/shards/+/cameras/+/ack
topic read +/cameras/+/events
topic read +/cameras/+/outbox
topic readwrite +/cameras/+/ack
topic readwrite +/bridge/status/+

user {ADMIN_USER}
topic readwrite #

pattern write +/shards/+/cameras/%u/events
pattern write +/shards/+/cameras/%u/outbox
pattern read +/shards/+/cameras/%u/ack
pattern write +/cameras/%u/events
pattern write +/cameras/%u/outbox
pattern write +/cameras/%u/snapshot
pattern write +/cameras/%u/model
pattern read +/cameras/%u/ack
pattern read +/cameras/%u/control/#
pattern read +/sites/+/control/#
pattern read +/models/#
pattern read +/bridge/status/+
"""


class AuthError(RuntimeError):
    """A user could not be added to the broker."""


def secrets_dir(settings: MqttSettings) -> Path:
    return settings.services_dir / "secrets"


def password_file(settings: MqttSettings, user: str, camera: bool = False) -> Path:
    """Where ``user``'s password is kept (a camera's where the edge looks for it)."""
    return settings.camera_password_file(user) if camera else secrets_dir(settings) / f"{user}.password"


def admin_settings(settings: Settings) -> Settings:
    """The same settings, logged in as the admin user."""
    secret = settings.mqtt_admin_password_file or password_file(settings, ADMIN_USER)
    return settings.model_copy(update={"mqtt_username": ADMIN_USER, "mqtt_password_file": secret})


def ensure_user(settings: MqttSettings, user: str, *, camera: bool = False, passwd: Path | None = None) -> Path:
    """Give ``user`` a password (kept if it has one) and put it in the broker's
    password file; returns the file holding the password."""
    path = password_file(settings, user, camera)
    passwd = passwd or settings.services_dir / "mosquitto" / "passwd"
    if path.exists() and _listed(passwd, user):
        return path
    passwd.parent.mkdir(parents=True, exist_ok=True)
    # Cameras starting together each add themselves: without one lock,
    # mosquitto_passwd runs read-modify-write side by side and an entry is
    # lost (seen: the bridge's, after which the broker refused it for good).
    with open(passwd.parent / "passwd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _add_user(settings, user, path, passwd)


def _add_user(settings: MqttSettings, user: str, path: Path, passwd: Path) -> Path:
    if path.exists() and _listed(passwd, user):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir(settings), 0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise AuthError("mosquitto_passwd is not installed: run `make deps` (Debian package mosquitto)")
    passwd.parent.mkdir(parents=True, exist_ok=True)
    args = [tool, "-b"] + ([] if passwd.exists() else ["-c"]) + [str(passwd), user, path.read_text().strip()]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise AuthError(f"mosquitto_passwd failed for {user}: {result.stderr.strip()}")
    give_to_broker(passwd)
    reload_broker(settings)
    _until_loaded(settings, user, path.read_text().strip())
    return path


def _until_loaded(settings: MqttSettings, user: str, password: str, timeout: float = 15.0) -> None:
    """Wait until a running local broker takes ``user``'s new login, asking it again to reload.

    Mosquitto folds a SIGHUP that comes while it is still reloading: of cameras
    added one after another, the last were refused for good (seen: 4 of 100,
    and cam-b of two in test_rollout once the bridge held 17 sessions, which
    makes a reload longer).
    """
    if _broker_pid(settings) is None:
        return  # not running: it reads the file when it starts

    def loaded() -> bool:
        if login_accepted(settings, user, password):
            return True
        reload_broker(settings)
        return False

    try:
        wait_until(loaded, timeout, f"the broker to take {user}'s login", interval=0.5)
    except WaitTimeout:
        log.warning("the broker did not take %s's login within %.0f s; it will once it reloads", user, timeout)


def give_to_broker(path: Path) -> None:
    """Mosquitto started as root runs as user `mosquitto`, and reads its password
    and ACL files again on SIGHUP as that user: let it, and nobody else."""
    os.chmod(path, 0o600)
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    os.chown(path, user.pw_uid, user.pw_gid)


def _listed(passwd: Path, user: str) -> bool:
    try:
        return any(line.split(":", 1)[0] == user for line in passwd.read_text().splitlines())
    except FileNotFoundError:
        return False


def _broker_pid(settings: MqttSettings) -> int | None:
    """The local broker's pid, if it runs."""
    try:
        pid = int((settings.services_dir / "mosquitto" / "pid").read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def reload_broker(settings: MqttSettings) -> None:
    """SIGHUP makes a running Mosquitto read its password and ACL files again."""
    pid = _broker_pid(settings)
    if pid is not None:  # not running: it reads them when it starts
        os.kill(pid, signal.SIGHUP)


def local_auth_enabled(settings: MqttSettings) -> bool:
    """True when the local broker runs with passwords (it always does once set up)."""
    return (settings.services_dir / "mosquitto" / "passwd").exists()


def camera_login(settings: MqttSettings, camera_id: str) -> str | None:
    """The camera's password; on the local broker, a camera without one gets one."""
    if local_auth_enabled(settings):
        ensure_user(settings, camera_id, camera=True)
    return settings.camera_password(camera_id)
