"""engine/server/tls.py: flag checks, and TLS / mutual TLS on a real uvicorn with a small app."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from engine.args import ArgsError, EngineArgs
from engine.server.tls import uvicorn_ssl_kwargs

from .tls_helpers import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_args(certs, **flags) -> EngineArgs:
    return EngineArgs(ssl_certfile=str(certs.server_cert), ssl_keyfile=str(certs.server_key), **flags)


def test_off_by_default():
    assert uvicorn_ssl_kwargs(EngineArgs()) == {"ssl_keyfile": None, "ssl_certfile": None,
                                                "ssl_ca_certs": None, "ssl_cert_reqs": 0}


@pytest.mark.parametrize("value, number", [("none", 0), ("optional", 1), ("required", 2), ("0", 0),
                                           ("1", 1), ("2", 2), (2, 2), ("CERT_REQUIRED", 2)])
def test_cert_reqs_forms(certs, value, number):
    kwargs = uvicorn_ssl_kwargs(tls_args(certs, ssl_ca_certs=str(certs.ca), ssl_cert_reqs=value))
    assert kwargs == {"ssl_keyfile": str(certs.server_key), "ssl_certfile": str(certs.server_cert),
                      "ssl_ca_certs": str(certs.ca), "ssl_cert_reqs": number}


@pytest.mark.parametrize("argv, number", [(["--ssl-cert-reqs", "required"], 2), (["--ssl-cert-reqs", "1"], 1),
                                          (["--ssl-cert-reqs", "none"], 0), ([], 0)])
def test_cert_reqs_on_the_command_line(argv, number):
    from engine.args import make_parser
    ns = make_parser().parse_args(argv)
    assert getattr(ns, "ssl_cert_reqs", 0) == number


def test_cert_reqs_bad_value(capsys):
    from engine.args import make_parser
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--ssl-cert-reqs", "sometimes"])
    assert "--ssl-cert-reqs: must be none, optional, required, 0, 1 or 2 (got sometimes)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (dict(ssl_keyfile="KEY"), "--ssl-keyfile needs --ssl-certfile"),
    (dict(ssl_certfile="/nonexistent.pem"), "--ssl-certfile /nonexistent.pem: no such file"),
    (dict(ssl_ca_certs="CA"), "--ssl-ca-certs is for TLS"),
    (dict(ssl_cert_reqs=2), "--ssl-cert-reqs is for TLS"),
    (dict(ssl_cert_reqs="sometimes"), "--ssl-cert-reqs must be none, optional, required"),
])
def test_bad_combinations(certs, flags, message):
    flags = {k: (str(certs.server_key) if v == "KEY" else str(certs.ca) if v == "CA" else v)
             for k, v in flags.items()}
    with pytest.raises(ArgsError, match="^" + message.replace("(", r"\(")):
        uvicorn_ssl_kwargs(EngineArgs(**flags))


def test_required_needs_a_ca(certs):
    with pytest.raises(ArgsError, match="give that CA file too"):
        uvicorn_ssl_kwargs(tls_args(certs, ssl_cert_reqs="required"))


def test_mismatched_key(certs, tmp_path):
    other = make_certs(tmp_path / "other")
    with pytest.raises(ArgsError, match="cannot load the certificate and its key"):
        uvicorn_ssl_kwargs(EngineArgs(ssl_certfile=str(certs.server_cert), ssl_keyfile=str(other.server_key)))


# -- a real handshake ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A small app on uvicorn in a thread, with the ssl kwargs of some flags."""

    def __init__(self, args: EngineArgs):
        app = FastAPI()

        @app.get("/health")
        async def health():
            return {"ok": True}

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                                    **uvicorn_ssl_kwargs(args)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"https://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def get(url: str, ctx: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=5) as client:
        return client.get(url + "/health")


def test_tls_serves_https(certs):
    with Served(tls_args(certs)) as url:
        assert get(url, certs.client_context()).json() == {"ok": True}
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            get(url, ssl.create_default_context())


def test_mutual_tls_required(certs):
    with Served(tls_args(certs, ssl_ca_certs=str(certs.ca), ssl_cert_reqs="required")) as url:
        assert get(url, certs.client_context(certs.client_cert)).status_code == 200
        for cert in (None, certs.stranger_cert):
            with pytest.raises(httpx.TransportError):
                get(url, certs.client_context(cert))


def test_mutual_tls_optional(certs):
    with Served(tls_args(certs, ssl_ca_certs=str(certs.ca), ssl_cert_reqs="optional")) as url:
        assert get(url, certs.client_context()).status_code == 200
        assert get(url, certs.client_context(certs.client_cert)).status_code == 200
        with pytest.raises(httpx.TransportError):  # a certificate is checked when one is sent
            get(url, certs.client_context(certs.stranger_cert))
