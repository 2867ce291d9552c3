"""`python -m slinfer.services.http`: the OpenAI-compatible HTTP API in front of the gateway."""

from __future__ import annotations

import argparse
import asyncio
import os

from slinfer.services.common.cli_args import run_until_signal
from slinfer.services.common.serving import configure_logging
from slinfer.services.http.server import HttpConfig, HttpService


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slinfer.services.http", description=__doc__)
    p.add_argument(
        "--listen",
        default=os.environ.get("SLINFER_HTTP_LISTEN", "127.0.0.1:8000"),
        help="HTTP listen address host:port; /metrics is served here too (env SLINFER_HTTP_LISTEN)",
    )
    p.add_argument(
        "--gateway",
        default=os.environ.get("SLINFER_GATEWAY", "127.0.0.1:50051"),
        help="the gateway (scheduler) gRPC address; a dns:/// name spreads calls over every "
        "address it resolves to (env SLINFER_GATEWAY)",
    )
    p.add_argument(
        "--tls-ca",
        default=os.environ.get("SLINFER_TLS_CA", ""),
        help="the gateway serves TLS: trust this CA (env SLINFER_TLS_CA). Callers' "
        "`Authorization: Bearer` keys are passed to the gateway, which checks them",
    )
    p.add_argument(
        "--etcd",
        default=os.environ.get("SLINFER_ETCD", "127.0.0.1:2379"),
        help="etcd endpoint host:port, checked by /ready (env SLINFER_ETCD)",
    )
    return p


def main() -> None:
    ns = parser().parse_args()
    configure_logging("http")
    service = HttpService(
        HttpConfig(etcd=ns.etcd, gateway=ns.gateway, listen=ns.listen, tls_ca=ns.tls_ca)
    )
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
