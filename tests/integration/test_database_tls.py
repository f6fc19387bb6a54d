"""PostgreSQL over TLS: what the pipeline does when the database is not on loopback.

A PostgreSQL cluster of the test's own that takes TLS connections only
(``hostssl`` in its pg_hba.conf), with a certificate from a CA the test
makes. ``fleetsight db upgrade`` connects with ``FLEETSIGHT_DATABASE_TLS``
verify-full (what ``auto`` means for any host but loopback) and the CA in
``PGSSLROOTCERT``; without TLS, or trusting another CA, it is refused.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from devtools.certs import Certs, make_certs
from devtools.ports import free_port
from devtools.services import Postgres
from runtime.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration


@dataclass
class TlsPostgres:
    settings: Settings
    certs: Certs
    other_ca: Path  # a CA that did not sign the server's certificate


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    root = Path(tempfile.mkdtemp(prefix="fleetsight-pg-tls-"))
    os.chmod(root, 0o755)  # the server runs as its own user
    certs = make_certs(root / "certs", "fleetsight-db")
    other = make_certs(root / "other", "someone-else")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (root / "certs", certs.cert, certs.key):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    settings = Settings(database_url=f"postgresql+asyncpg://fleetsight@127.0.0.1:{port}/fleetsight", services_dir=root / "services")
    server = Postgres(
        settings,
        options=("ssl=on", f"ssl_cert_file={certs.cert}", f"ssl_key_file={certs.key}"),
        hba="local all all trust\nhostssl all all 127.0.0.1/32 trust",
    )
    try:
        server.up()
        yield TlsPostgres(settings, certs, other.ca)
    finally:
        server.down()
        shutil.rmtree(root, ignore_errors=True)


def db_upgrade(settings: Settings, tls: str, ca: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLEETSIGHT_DATABASE_URL": settings.database_url, "FLEETSIGHT_DATABASE_TLS": tls,
           "PGSSLROOTCERT": str(ca)}
    return subprocess.run([sys.executable, "-m", "fleetsight", "db", "upgrade"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_without_tls_the_database_refuses(tls_postgres: TlsPostgres) -> None:
    plain = Settings(database_url=tls_postgres.settings.database_url + "?ssl=disable")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(plain.postgres_dsn)


async def test_verify_full_connects_with_the_ca_and_refuses_another(tls_postgres: TlsPostgres) -> None:
    settings = tls_postgres.settings
    refused = db_upgrade(settings, "verify-full", tls_postgres.other_ca)
    assert refused.returncode != 0 and "certificate verify failed" in refused.stderr + refused.stdout
    done = db_upgrade(settings, "verify-full", tls_postgres.certs.ca)
    assert done.returncode == 0, done.stderr[-3000:]
    secure = Settings(database_url=settings.database_url, database_tls="verify-full")
    assert "sslmode=verify-full" in secure.postgres_dsn
    conn = await asyncpg.connect(f"{secure.postgres_dsn}&sslrootcert={tls_postgres.certs.ca}")
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1  # the migrations ran over TLS
    finally:
        await conn.close()


def test_tls_is_the_default_off_loopback() -> None:
    assert Settings(database_url="postgresql+asyncpg://u@db.example:5432/x").database_url.endswith("?ssl=verify-full")
    assert "ssl" not in Settings(database_url="postgresql+asyncpg://u@127.0.0.1:5432/x").database_url
    kept = Settings(database_url="postgresql+asyncpg://u@db.example/x?ssl=require").database_url
    assert kept.endswith("?ssl=require")
