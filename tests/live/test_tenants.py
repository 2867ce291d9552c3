"""Tenants and API keys with authentication on (docs/RELIABILITY.md, "Tenants and keys").

Every call without a valid credential is UNAUTHENTICATED, on every service; every call across
tenants is refused (NOT_FOUND: another tenant's model does not exist for the caller;
PERMISSION_DENIED: a cluster operation without the admin role); tenant limits hold; TLS works
end to end; `--insecure` is refused off loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets

import grpc
import pytest
import pytest_asyncio

from slinfer import AsyncClient, SlinferError
from slinfer.services.common.auth import Role, create_key
from slinfer.services.common.security import INSECURE, Security
from slinfer.services.common.store import Store
from slinfer.services.inprocess import LiveStack
from slinfer.v1 import (
    consolidator_pb2,
    consolidator_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from tests.live.waits import wait_until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, profile_dir):
    security = Security(cluster_token=secrets.token_urlsafe(16))
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[{"node_id": "cpu-0", "memory_bytes": 1 << 30, "profile_dir": profile_dir}],
        security=security,
    )
    # Bootstrap: the first admin key is written to etcd directly (`slinfer keys create
    # --etcd`, or `slinfer up`), the others through the gateway with it.
    store = Store(etcd.endpoint)
    await store.connect()
    admin_key, record = await create_key(store, "ops", Role.ADMIN, "test")
    await store.close()
    await wait_until(
        lambda: record["key_id"] in s.scheduler.watcher.view.api_keys, what="the key in view"
    )
    s.api_key = admin_key
    s.client = s.new_client()
    yield s
    await s.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tenants(stack: LiveStack, tiny_models):
    """Two tenants with a model each, and their clients."""
    a_key = (await stack.c.create_key("alpha", name="a", max_models=2)).key
    b_key = (await stack.c.create_key("beta", name="b", max_concurrent_requests=1)).key
    a, b = stack.new_client(a_key), stack.new_client(b_key)
    await a.deploy("alpha-m", str(tiny_models["llama"]), ttft_slo_s=30.0, tpot_slo_s=5.0)
    await b.deploy("beta-m", str(tiny_models["llama"]), ttft_slo_s=30.0, tpot_slo_s=5.0)
    yield a, b
    await a.close()
    await b.close()


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(SlinferError) as info:
        await coro
    return info.value.code, info.value.message


async def test_each_tenant_sees_and_calls_only_its_own_models(stack, tenants) -> None:
    a, b = tenants
    assert [m.model_id for m in await a.models()] == ["alpha-m"]
    assert [m.model_id for m in await b.models()] == ["beta-m"]
    assert {m.model_id for m in await stack.c.models()} == {"alpha-m", "beta-m"}  # admin
    result = await a.complete("alpha-m", "hello", max_tokens=3, temperature=0)
    assert result.completion.completion_tokens == 3


async def test_every_cross_tenant_call_is_refused(stack, tenants, tiny_models) -> None:
    a, b = tenants
    refusals = [
        (b.complete("alpha-m", "hi", max_tokens=2), NOT_FOUND, "not deployed"),
        (b.delete("alpha-m"), NOT_FOUND, "not deployed"),
        (b.deploy("alpha-m", str(tiny_models["llama"])), grpc.StatusCode.ALREADY_EXISTS, "id"),
        (b.status(), DENIED, "admin"),
        (b.create_key("beta", admin=True), DENIED, "admin"),
        (b.create_key("alpha"), DENIED, "admin"),
        (b.list_keys(), DENIED, "admin"),
        (b.revoke_key("whatever"), DENIED, "admin"),
        (a.complete("beta-m", "hi", max_tokens=2), NOT_FOUND, "not deployed"),
        (a.delete("beta-m"), NOT_FOUND, "not deployed"),
        (a.status(), DENIED, "admin"),
    ]
    for coro, code, needle in refusals:
        got, message = await _code(coro)
        assert got == code and needle in message, (got, message)
    # Both models are untouched, and still serve their owners.
    assert {m.model_id for m in await stack.c.models()} == {"alpha-m", "beta-m"}
    assert (await b.complete("beta-m", "hi", max_tokens=2)).completion.completion_tokens == 2
    # Request ids are per tenant: the same id in two tenants is two requests.
    ra = await a.complete("alpha-m", "x", max_tokens=2, request_id="same-id")
    rb = await b.complete("beta-m", "x", max_tokens=2, request_id="same-id")
    assert ra.completion.request_id == rb.completion.request_id == "same-id"


async def test_every_unauthenticated_call_is_refused(stack, tenants) -> None:
    """No key, a malformed key, an unknown key: UNAUTHENTICATED on every Gateway RPC, and on
    every internal service (worker, memory, consolidator) too."""
    for key in (None, "not-a-key", "sk-slinfer-000000000000-forged", "Bearer"):
        client = AsyncClient(stack.scheduler.address, api_key=key or "")
        calls = [
            client.complete("alpha-m", "hi", max_tokens=2),
            client.models(),
            client.deploy("x", "/tmp"),
            client.delete("alpha-m"),
            client.status(),
            client.create_key("alpha"),
            client.list_keys(),
            client.revoke_key("k"),
        ]
        for call in calls:
            code, _ = await _code(call)
            assert code == UNAUTH, (key, code)
        await client.close()
    worker = stack.workers[0].address
    memory, consolidator = stack.others[0].address, stack.others[1].address
    async with grpc.aio.insecure_channel(worker) as ch:
        stub = worker_pb2_grpc.WorkerStub(ch)
        for call in (
            stub.Stats(worker_pb2.StatsRequest(), timeout=10),
            stub.UnloadInstance(worker_pb2.UnloadInstanceRequest(instance_id="x"), timeout=10),
            stub.LoadInstance(worker_pb2.LoadInstanceRequest(instance_id="x"), timeout=10),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == UNAUTH
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.Submit(worker_pb2.SubmitRequest(), timeout=10):
                pass
        assert info.value.code() == UNAUTH
    async with grpc.aio.insecure_channel(memory) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await memory_pb2_grpc.MemoryStub(ch).GetLedger(
                memory_pb2.GetLedgerRequest(node_id="cpu-0"), timeout=10
            )
        assert info.value.code() == UNAUTH
    user_key = (await stack.c.create_key("alpha")).key
    async with grpc.aio.insecure_channel(consolidator) as ch:
        stub = consolidator_pb2_grpc.ConsolidatorStub(ch)
        for metadata in ((), (("authorization", f"Bearer {user_key}"),)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Drain(consolidator_pb2.DrainRequest(node_id="cpu-0"), timeout=10,
                                 metadata=metadata)  # fmt: skip
            assert info.value.code() == UNAUTH, "drain needs an admin key"
        plans = await stub.ListPlans(
            consolidator_pb2.ListPlansRequest(),
            timeout=10,
            metadata=(("authorization", f"Bearer {stack.api_key}"),),
        )
        assert plans.leader
    # Health checks stay open (orchestrators probe them).
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(stack.scheduler.address) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_revoked_key_is_refused_at_once(stack, tiny_models) -> None:
    made = await stack.c.create_key("gamma")
    client = stack.new_client(made.key)
    assert await client.models() == []
    assert await stack.c.revoke_key(made.info.key_id)
    code, _ = await _code(client.models())
    assert code == UNAUTH
    await client.close()


async def test_keys_are_stored_hashed(stack, etcd) -> None:
    made = await stack.c.create_key("delta", name="hashed")
    listed = {k.key_id: k for k in await stack.c.list_keys("delta")}
    assert listed[made.info.key_id].tenant == "delta"
    store = Store(etcd.endpoint)
    await store.connect()
    entries, _ = await store.list("/slinfer/")
    await store.close()
    secret = made.key.rsplit("-", 1)[1]
    assert all(secret not in str(e.value) for e in entries), "the secret never reaches etcd"


async def test_tenant_limits(stack, tenants, tiny_models) -> None:
    a, b = tenants
    await a.deploy("alpha-2", str(tiny_models["llama"]))
    code, message = await _code(a.deploy("alpha-3", str(tiny_models["llama"])))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_models" in message
    await a.delete("alpha-2")
    # beta may stream one request at a time.
    first = b.generate("beta-m", "long", max_tokens=64, ignore_eos=True, temperature=0)
    await anext(first)
    code, message = await _code(b.complete("beta-m", "second", max_tokens=2))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_concurrent_requests" in message
    rest = [ev async for ev in first]
    assert rest[-1].completion_tokens == 64
    assert (await b.complete("beta-m", "now", max_tokens=2)).completion.completion_tokens == 2


async def test_insecure_only_on_loopback() -> None:
    INSECURE.check_listen("127.0.0.1:50051")
    INSECURE.check_listen("localhost:50051")
    for address in ("0.0.0.0:50051", "[::]:50051", ":50051"):
        with pytest.raises(ValueError, match="loopback"):
            INSECURE.check_listen(address)
    with pytest.raises(ValueError, match="cluster token"):
        Security().check_listen("127.0.0.1:1")


def _certificate(tmp_path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


async def test_tls_between_every_service_and_the_client(tmp_path, tiny_models, profile_dir):
    from slinfer.services.common import security
    from slinfer.services.common.etcd_process import start_etcd

    cert, key = _certificate(tmp_path)
    tls = Security(cluster_token="t0ken", tls_cert=cert, tls_key=key, tls_ca=cert)
    etcd = start_etcd()
    s = None
    try:
        s = await LiveStack.start(
            etcd.endpoint,
            workers=[{"node_id": "tls-0", "memory_bytes": 1 << 30, "profile_dir": profile_dir}],
            security=tls,
        )
        store = Store(etcd.endpoint)
        await store.connect()
        admin_key, _ = await create_key(store, "ops", Role.ADMIN)
        await store.close()
        await wait_until(lambda: s.scheduler.watcher.view.api_keys, what="the key")
        client = AsyncClient(s.scheduler.address, api_key=admin_key, tls_ca=cert)
        await client.deploy("m", str(tiny_models["llama"]))
        result = await client.complete("m", "over TLS", max_tokens=3, temperature=0)
        assert result.completion.completion_tokens == 3  # gateway -> worker -> memory: TLS
        await client.close()
        plain = AsyncClient(s.scheduler.address, api_key=admin_key, retries=1)
        code, _ = await _code(plain.models())
        assert code == grpc.StatusCode.UNAVAILABLE, "a plaintext client cannot talk to TLS"
        await plain.close()
    finally:
        if s is not None:
            await s.stop()
        etcd.stop()
        security.configure(INSECURE)


async def test_http_api_takes_the_same_keys_and_tenants(stack, tenants, etcd) -> None:
    """The OpenAI-compatible HTTP front passes `Authorization: Bearer` to the gateway: no key
    is 401, another tenant's model is 404, the owner's key is served."""
    import httpx

    from slinfer.services.http.server import HttpConfig, HttpService

    a, _b = tenants
    http = HttpService(HttpConfig(etcd=etcd.endpoint, gateway=stack.scheduler.address,
                                  listen="127.0.0.1:0"))  # fmt: skip
    await http.start()
    try:
        url = f"http://{http.address}/v1/completions"
        body = {"model": "alpha-m", "prompt": "hi", "max_tokens": 2}
        async with httpx.AsyncClient(timeout=60) as web:
            assert (await web.post(url, json=body)).status_code == 401
            wrong = {"authorization": "Bearer sk-slinfer-000000000000-nope"}
            assert (await web.post(url, json=body, headers=wrong)).status_code == 401
            beta = {"authorization": f"Bearer {_b.api_key}"}
            assert (await web.post(url, json=body, headers=beta)).status_code == 404
            listed = await web.get(f"http://{http.address}/v1/models", headers=beta)
            assert [m["id"] for m in listed.json()["data"]] == ["beta-m"]
            alpha = {"authorization": f"Bearer {a.api_key}"}
            ok = await web.post(url, json=body, headers=alpha)
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
    finally:
        await http.stop()
