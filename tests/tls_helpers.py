"""Throwaway certificate authorities and server certificates made with openssl, and a
Mosquitto with a TLS listener beside its plain loopback one, for the TLS tests.

Keys and certificates live in the test's own folder; nothing here is ever trusted elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sim.broker import MosquittoBroker, free_port

_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str = "ca") -> Path:
    """A self-signed CA (EC P-256: fast) as d/NAME.crt with its key beside it."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_EC, "-keyout", str(d / f"{name}.key"),
             "-out", str(d / f"{name}.crt"), "-days", "2", "-subj", f"/CN=safecity-test-{name}")
    return d / f"{name}.crt"


def make_server(d: Path, ca: Path, san: str = "IP:127.0.0.1,DNS:localhost",
                name: str = "server") -> tuple[Path, Path]:
    """A server certificate signed by `ca` for the subjectAltName `san`: (cert, key)."""
    cn = san.split(",")[0].split(":", 1)[1]
    key, csr, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    _openssl("req", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    ext.write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
             "-CAcreateserial", "-out", str(d / f"{name}.crt"), "-days", "2", "-extfile", str(ext))
    return d / f"{name}.crt", key


def make_certs(d: Path) -> None:
    """d/ca.crt and d/server.crt, .key for 127.0.0.1 and localhost (hw/mosquitto's names)."""
    make_server(d, make_ca(d))


def der(pem: Path) -> bytes:
    """A PEM certificate as DER, the form flash.sh writes to a board's ca.der."""
    return subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER"],
                          check=True, capture_output=True).stdout


@dataclass
class TlsBroker:
    broker: MosquittoBroker
    tls_port: int
    ca: Path


@contextmanager
def tls_broker(san: str = "IP:127.0.0.1,DNS:localhost") -> Iterator[TlsBroker]:
    """Mosquitto with its plain loopback listener (for the test's own clients) and a TLS
    listener for boards whose certificate, signed by a fresh CA, names `san`."""
    # Mosquitto started as root reads its files as its own user: a folder it can read.
    d = Path(tempfile.mkdtemp(prefix="mosq-tls-"))
    try:
        d.chmod(0o755)
        ca = make_ca(d)
        cert, key = make_server(d, ca, san)
        for f in (ca, cert, key):
            f.chmod(0o644)
        port = free_port()
        conf = (f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                "tls_version tlsv1.2\n")
        with MosquittoBroker(extra_config=conf) as b:
            yield TlsBroker(b, port, ca)
    finally:
        shutil.rmtree(d, ignore_errors=True)
