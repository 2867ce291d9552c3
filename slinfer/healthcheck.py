"""`python -m slinfer.healthcheck HOST:PORT [SERVICE]`: exit 0 when the gRPC server is SERVING.

Used by docker-compose health checks and scripts; no grpcurl needed inside the image.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    service = sys.argv[2] if len(sys.argv) > 2 else ""
    with grpc.insecure_channel(sys.argv[1]) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=3.0
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    ok = resp.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if ok else health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
