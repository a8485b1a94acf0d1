"""TLS for the server: --ssl-keyfile/--ssl-certfile, and mutual TLS with --ssl-ca-certs and
--ssl-cert-reqs, handed to uvicorn as its own ssl_* arguments.

Mistakes a user can make (a key without a certificate, a missing file, client certificates
required without a CA to check them against) are ArgsError with a one-line message, raised
before uvicorn starts.
"""

from __future__ import annotations

import os
import ssl

from engine.args import ArgsError, EngineArgs, cert_reqs


def _readable(option: str, path: str | None) -> None:
    if path is not None and not os.path.isfile(path):
        raise ArgsError(f"{option} {path}: no such file; give the path of a PEM file")


def uvicorn_ssl_kwargs(args: EngineArgs) -> dict:
    """ssl_keyfile, ssl_certfile, ssl_ca_certs and ssl_cert_reqs for uvicorn.run / Config."""
    try:
        reqs = cert_reqs(args.ssl_cert_reqs)
    except ValueError as e:
        raise ArgsError(str(e)) from None
    for option, path in (("--ssl-keyfile", args.ssl_keyfile), ("--ssl-certfile", args.ssl_certfile),
                         ("--ssl-ca-certs", args.ssl_ca_certs)):
        _readable(option, path)
    if args.ssl_keyfile and not args.ssl_certfile:
        raise ArgsError("--ssl-keyfile needs --ssl-certfile (the server's certificate)")
    if not args.ssl_certfile and (args.ssl_ca_certs or reqs):
        given = "--ssl-ca-certs" if args.ssl_ca_certs else "--ssl-cert-reqs"
        raise ArgsError(f"{given} is for TLS: give --ssl-certfile and --ssl-keyfile too")
    if reqs != ssl.CERT_NONE and not args.ssl_ca_certs:
        raise ArgsError("--ssl-cert-reqs optional/required checks client certificates against "
                        "--ssl-ca-certs: give that CA file too")
    if args.ssl_certfile:
        _check_loadable(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs)
    return {"ssl_keyfile": args.ssl_keyfile, "ssl_certfile": args.ssl_certfile,
            "ssl_ca_certs": args.ssl_ca_certs, "ssl_cert_reqs": reqs}


def _check_loadable(certfile: str, keyfile: str | None, ca_certs: str | None) -> None:
    """Load the files as uvicorn will, so a bad one is a clear error and not a traceback."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as e:
        raise ArgsError(f"--ssl-certfile {certfile} / --ssl-keyfile {keyfile}: cannot load the "
                        f"certificate and its key ({e}); give PEM files that match") from None
    if ca_certs:
        try:
            ctx.load_verify_locations(ca_certs)
        except (ssl.SSLError, OSError) as e:
            raise ArgsError(f"--ssl-ca-certs {ca_certs}: cannot load CA certificates ({e}); "
                            f"give a PEM file") from None
