"""Throw-away TLS material (a CA and a server certificate made with ``openssl``) for the suite
and local trials of TLS to an embedded server."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

from callqueue.embedded import EmbeddedServerError, TlsFiles


def make_self_signed_tls(directory: Path) -> TlsFiles:
    """Make ``ca.crt`` and ``server.crt``/``server.key`` (for 127.0.0.1 and localhost)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise EmbeddedServerError("the openssl command is needed to make TLS certificates")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n",
        encoding="ascii",
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        result = subprocess.run(
            [openssl, *args], capture_output=True, text=True, check=False, timeout=30
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"openssl {args[0]} failed (exit {result.returncode})",
                (result.stderr or result.stdout).strip(),
            )

    run(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "3650",
        "-subj", "/CN=callqueue local test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)), "-days", "825",
        "-out", str(crt), "-extfile", str(ext),
    )  # fmt: skip
    for private in (ca_key, key):
        private.chmod(0o600)
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    return TlsFiles(ca=ca_crt, cert=crt, key=key)
