"""The Kubernetes example (deploy/k8s/) and the Dockerfile run the service with authentication
on: loaded here as the service would load them, never with ``--insecure``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.settings import load_settings
from risk_monitor.service.security import Authenticator, check_exposure

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "deploy" / "k8s" / "risk-monitor-service.yaml"
TOKEN = "k8s-example-token-0123456789"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


def test_the_example_serves_an_exposed_address_with_tokens_and_tls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = documents()
    assert {"ConfigMap", "Deployment", "Service", "NetworkPolicy"} <= set(docs)
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "--insecure" not in container["args"]
    env = {e["name"]: e for e in container["env"]}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    settings = load_settings(config_file)
    service = settings.service
    assert service.rest_host == "0.0.0.0" and service.auth.token_envs
    for name in service.auth.token_envs:  # every token comes from a Kubernetes secret
        assert env[name]["valueFrom"]["secretKeyRef"]["name"]
        monkeypatch.setenv(name, TOKEN)
    check_exposure(service, Authenticator.from_env(service.auth.token_envs), insecure=False)
    assert service.tls is not None
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(service.tls.cert_file.parent) in mounts
    for probe in ("livenessProbe", "readinessProbe"):  # kubelet probes carry no token
        get = container[probe]["httpGet"]
        assert get["scheme"] == "HTTPS" and get["path"] in service.auth.open_paths
    assert "/metrics" not in service.auth.open_paths


def test_the_image_turns_authentication_on(monkeypatch: pytest.MonkeyPatch) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--insecure" not in dockerfile
    config = re.search(r"RISK_MONITOR_CONFIG=(\S+)", dockerfile)
    copied = re.search(r"^COPY .*?(deploy/docker/\S+) (\S+)$", dockerfile, re.MULTILINE)
    assert config and copied and copied.group(2) == config.group(1)
    assert "0.0.0.0" in dockerfile  # exposed: the refusal rule applies
    settings = load_settings(ROOT / copied.group(1))
    assert settings.service.auth.token_envs == ["RISK_MONITOR_API_TOKEN"]
    monkeypatch.delenv("RISK_MONITOR_API_TOKEN", raising=False)
    with pytest.raises(ConfigError):  # no token in the environment: the image does not start
        Authenticator.from_env(settings.service.auth.token_envs)
