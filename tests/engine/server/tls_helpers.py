"""Certificates for TLS tests, made by trustme: a CA, a server cert for loopback, client certs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Certs:
    ca: Path             # the CA that signed everything below
    server_cert: Path
    server_key: Path
    client_cert: Path    # cert + key in one PEM, signed by ca
    stranger_cert: Path  # cert + key in one PEM, signed by another CA

    def client_context(self, cert: Path | None = None) -> ssl.SSLContext:
        """A client context that trusts the CA and presents `cert` (none if None)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert))
        return ctx


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    ca.issue_cert("client@dyno.test").private_key_and_cert_chain_pem.write_to_path(str(directory / "client.pem"))
    other_ca.issue_cert("client@dyno.test").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "stranger.pem"))
    return Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                 directory / "client.pem", directory / "stranger.pem")
