"""Issue #15 finding 4: the container bound 0.0.0.0 with no authentication or TLS, so anyone
who reached the pod read the desk. Now: bearer tokens on REST, the dashboard and gRPC; probes
open or closed by configuration; TLS on both listeners; an exposed bind without
authentication refuses to start unless ``--insecure``.

Real servers only: the service in-process on PostgreSQL, real HTTP requests (httpx), a real
grpcio client, and a throwaway self-signed certificate made here with ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from risk_monitor.cli import cli
from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.settings import Settings
from risk_monitor.service.main import ServiceApp
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor.service.security import SESSION_COOKIE
from risk_monitor_tests.fixtures.service import ServiceThread, service_settings

pytestmark = pytest.mark.integration

TOKEN_ENV = "RM_TEST_HARDENING_TOKEN"
NEXT_TOKEN_ENV = "RM_TEST_HARDENING_TOKEN_NEXT"
TOKEN = "t0ken-for-the-hardening-tests-0001"
NEXT_TOKEN = "t0ken-for-the-hardening-tests-0002"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    @property
    def pem(self) -> bytes:
        return self.cert_file.read_bytes()


def self_signed(directory: Path) -> Certificate:
    """A throwaway certificate for 127.0.0.1 / localhost, valid for one day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "risk-monitor-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificate(cert_file, key_file)


@pytest.fixture(scope="module")
def tokens() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_ENV, TOKEN)
        patch.setenv(NEXT_TOKEN_ENV, NEXT_TOKEN)
        yield


@pytest.fixture(scope="module")
def plain(tokens: None, module_postgres_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    """Authentication on (two tokens, as during a rotation), probes open, no TLS."""
    settings = service_settings(
        database_url=module_postgres_url, redis_url=None,
        tmp=tmp_path_factory.mktemp("auth-plain"),
        service={"auth": {"token_envs": [TOKEN_ENV, NEXT_TOKEN_ENV]}})
    thread = ServiceThread(settings).start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls(tokens: None, module_postgres_url: str, certificate: Certificate,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    """TLS on both listeners; only /healthz open; grpc.health.v1 needs a token too."""
    settings = service_settings(
        database_url=module_postgres_url, redis_url=None,
        tmp=tmp_path_factory.mktemp("auth-tls"),
        service={"auth": {"token_envs": [TOKEN_ENV], "open_paths": ["/healthz"],
                          "open_grpc_health": False},
                 "tls": {"cert_file": str(certificate.cert_file),
                         "key_file": str(certificate.key_file)}})
    thread = ServiceThread(settings).start()
    try:
        yield thread
    finally:
        thread.stop()


# -- REST -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/risk/status", "/v1/dashboard/state",
                                  "/v1/dashboard/timeline", "/static/dashboard.js"])
def test_rest_refuses_without_a_valid_token(plain: ServiceThread, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                    {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.get(f"{plain.rest_url}{path}", headers=headers, timeout=10)
        assert response.status_code == 401, (path, headers)
        assert response.json() == {"error": {"code": "unauthenticated",
                                              "message": "a valid bearer token is required"}}
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_rest_answers_either_token_of_a_rotation(plain: ServiceThread) -> None:
    for token in (TOKEN, NEXT_TOKEN):
        response = httpx.get(f"{plain.rest_url}/v1/risk/status",
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 200
        assert "evaluation_source" in response.json()


def test_probes_are_open_by_default(plain: ServiceThread) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{plain.rest_url}{path}", timeout=10).status_code in (200, 503), path
    assert httpx.get(f"{plain.rest_url}/healthz", timeout=10).json()["status"] == "alive"


def test_the_dashboard_signs_in_with_a_session_cookie(plain: ServiceThread) -> None:
    with httpx.Client(base_url=plain.rest_url, timeout=10) as browser:
        page = browser.get("/dashboard")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert browser.get("/login").status_code == 200
        refused = browser.post("/login", data={"token": "not-the-token-not-the-token"})
        assert refused.status_code == 401 and SESSION_COOKIE not in refused.cookies
        signed_in = browser.post("/login", data={"token": TOKEN})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert TOKEN not in cookie  # the cookie carries an HMAC of the token, never the token
        assert browser.get("/dashboard").status_code == 200
        assert browser.get("/v1/dashboard/state").status_code == 200
    forged = httpx.get(f"{plain.rest_url}/v1/dashboard/state",
                       cookies={SESSION_COOKIE: "0" * 64}, timeout=10)
    assert forged.status_code == 401


def test_an_oversized_login_body_is_refused(plain: ServiceThread) -> None:
    response = httpx.post(f"{plain.rest_url}/login", data={"token": "x" * 100_000}, timeout=10)
    assert response.status_code == 401


# -- gRPC -------------------------------------------------------------------------------------
def test_grpc_refuses_every_rpc_without_a_valid_token(plain: ServiceThread) -> None:
    with grpc.insecure_channel(plain.grpc_target) as channel:
        stub = pb_grpc.RiskMonitorStub(channel)
        for metadata in ((), (("authorization", "Bearer nope-nope-nope-nope"),)):
            calls = [
                lambda m=metadata: stub.GetRiskStatus(pb.GetRiskStatusRequest(), metadata=m,
                                                      timeout=10),
                lambda m=metadata: stub.ListLimitStatus(pb.ListLimitStatusRequest(),
                                                        metadata=m, timeout=10),
                lambda m=metadata: stub.CheckOrder(pb.CheckOrderRequest(
                    venue="binance", instrument="BTC/USDT:USDT", side=pb.SIDE_BUY,
                    quantity=1.0), metadata=m, timeout=10),
                lambda m=metadata: next(iter(stub.WatchAlerts(
                    pb.WatchAlertsRequest(), metadata=m, timeout=10))),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_answers_with_a_token_and_health_stays_open(plain: ServiceThread) -> None:
    with grpc.insecure_channel(plain.grpc_target) as channel:
        stub = pb_grpc.RiskMonitorStub(channel)
        status = stub.GetRiskStatus(pb.GetRiskStatusRequest(),
                                    metadata=(("authorization", f"Bearer {NEXT_TOKEN}"),),
                                    timeout=10)
        assert status.evaluation_source
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


# -- TLS --------------------------------------------------------------------------------------
def test_rest_over_tls_with_closed_probes(tls: ServiceThread, certificate: Certificate) -> None:
    https = tls.rest_url.replace("http://", "https://")
    trust = ssl.create_default_context(cafile=str(certificate.cert_file))
    with httpx.Client(base_url=https, verify=trust, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 401  # not in open_paths
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=BEARER).status_code == 200
        assert client.get("/v1/risk/status", headers=BEARER).status_code == 200
        signed_in = client.post("/login", data={"token": TOKEN})
        assert "Secure" in signed_in.headers["set-cookie"]
    with pytest.raises(httpx.HTTPError):  # plaintext to the TLS port is not served
        httpx.get(f"{tls.rest_url}/healthz", timeout=10)


def test_grpc_over_tls(tls: ServiceThread, certificate: Certificate) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate.pem)
    with grpc.secure_channel(tls.grpc_target, credentials) as channel:
        stub = pb_grpc.RiskMonitorStub(channel)
        status = stub.GetRiskStatus(pb.GetRiskStatusRequest(),
                                    metadata=(("authorization", f"Bearer {TOKEN}"),),
                                    timeout=10)
        assert status.evaluation_source
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as closed:  # open_grpc_health: false
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert closed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10,
                            metadata=(("authorization", f"Bearer {TOKEN}"),)).status in (
            health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
    with grpc.insecure_channel(tls.grpc_target) as plaintext:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.RiskMonitorStub(plaintext).GetRiskStatus(
                pb.GetRiskStatusRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# -- exposure ---------------------------------------------------------------------------------
def exposed_settings(tmp_path: Path, **service: object) -> Settings:
    return service_settings(database_url=f"sqlite:///{tmp_path / 'rm.db'}", redis_url=None,
                            tmp=tmp_path, service={"rest_host": "0.0.0.0", **service})


def test_an_exposed_bind_without_auth_refuses_to_start(tmp_path: Path) -> None:
    settings = exposed_settings(tmp_path)
    with pytest.raises(ConfigError) as info:
        ServiceApp(settings)
    assert info.value.key == "service.auth.token_envs"
    assert "--insecure" in info.value.message
    ServiceApp(settings, insecure=True).engine.dispose()


def test_an_exposed_bind_with_auth_is_accepted(tokens: None, tmp_path: Path) -> None:
    settings = exposed_settings(tmp_path, auth={"token_envs": [TOKEN_ENV]})
    ServiceApp(settings).engine.dispose()


def test_a_missing_or_short_token_refuses_to_start(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RM_TEST_UNSET_TOKEN", raising=False)
    monkeypatch.setenv("RM_TEST_SHORT_TOKEN", "short")
    for env in ("RM_TEST_UNSET_TOKEN", "RM_TEST_SHORT_TOKEN"):
        settings = exposed_settings(tmp_path, auth={"token_envs": [env]})
        with pytest.raises(ConfigError) as info:
            ServiceApp(settings)
        assert info.value.key == "service.auth.token_envs"


def test_serve_cli_offers_the_explicit_insecure_flag() -> None:
    # the refusal itself is tested on ServiceApp above: a CLI run that did not refuse would
    # bind 0.0.0.0 and serve until killed
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--insecure" in result.output
