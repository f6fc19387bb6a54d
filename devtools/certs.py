"""A certificate authority and server certificates for tests and local trials (openssl).

Kafka reads PEM key stores: a file with the node's private key (PKCS#8,
unencrypted) and its certificate, and a trust store with the CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA's certificate: what clients verify servers with
    cert: Path  # the server's certificate
    key: Path  # its private key
    keystore: Path  # both in one PEM file (the key as PKCS#8), as Kafka reads them


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(folder: Path, common_name: str, ips: tuple[str, ...] = ("127.0.0.1",), dns: tuple[str, ...] = ("localhost",)) -> Certs:
    """A new CA in ``folder`` and a certificate it signed for ``common_name`` at these addresses."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "30",
             "-subj", "/CN=fleetsight-test-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}")
    names = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{name}" for name in dns)])
    ext = folder / "server.ext"
    ext.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
             "-days", "30", "-extfile", str(ext))
    keystore = folder / "keystore.pem"
    pkcs8 = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(key)], check=True, capture_output=True, text=True).stdout
    keystore.write_text(pkcs8 + cert.read_text())
    keystore.chmod(0o600)
    key.chmod(0o600)
    return Certs(ca, cert, key, keystore)
