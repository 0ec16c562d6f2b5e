"""The Kubernetes deployment of the Dagster side (deploy/k8s/dagster/) loads and agrees with itself.

- ``dagster.yaml`` is loaded by Dagster itself as an instance (its schema validation, storages
  built on a real PostgreSQL), and the K8sRunLauncher block is validated against the launcher's
  own config schema, then used to build a launcher (a kubeconfig file stands in for the
  in-cluster credentials: there is no cluster here).
- ``values.yaml`` (Dagster's Helm chart layout) is parsed and checked for what matters: the
  run launcher, external PostgreSQL with the password from a Secret, the code-location image,
  and Risk Monitor's settings and secrets from a ConfigMap and a Secret in every run pod.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s" / "dagster"
SECRET_NAMES = {"risk-monitor-secrets"}

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: none
    cluster: {server: "https://127.0.0.1:1"}
users:
  - name: none
    user: {token: not-a-real-token}
contexts:
  - name: none
    context: {cluster: none, user: none, namespace: risk-monitor}
current-context: none
"""


@dg.asset
def k8s_probe() -> int:
    return 1


def _instance_doc() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "dagster.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _values() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "values.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _names(entries: list[Any]) -> set[str]:
    """Secret / ConfigMap names in either form (chart: ``{name: x}``, launcher: ``x``)."""
    return {e["name"] if isinstance(e, dict) else e for e in entries}


def test_k8s_instance_loads_on_postgres(tmp_path: Path, fresh_postgres_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url = make_url(fresh_postgres_url)
    assert url.port in (None, 5432), "dagster.yaml pins the PostgreSQL port to 5432"
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database or "")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(K8S / "dagster.yaml", home / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        assert "Postgres" in type(instance.event_log_storage).__name__
        assert "Postgres" in type(instance.schedule_storage).__name__
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        # a real write and read through the instance's storages
        result = dg.materialize([k8s_probe], instance=instance)
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("k8s_probe"))
        assert event is not None and event.run_id == result.run_id


def test_k8s_run_launcher_config_is_valid_and_builds(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_k8s import K8sRunLauncher

    launcher = _instance_doc()["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = launcher["config"]

    # the launcher's own config schema, through Dagster's config validation
    @dg.op(config_schema=K8sRunLauncher.config_type())
    def launcher_config() -> None:
        return None

    @dg.job
    def validate() -> None:
        launcher_config()

    dg.validate_run_config(validate, {"ops": {"launcher_config": {"config": config}}})
    bad = {**config, "load_incluster_config": "yes please"}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(validate, {"ops": {"launcher_config": {"config": bad}}})

    assert config["load_incluster_config"] is True
    assert set(config["env_secrets"]) == SECRET_NAMES
    assert config["postgres_password_secret"] == _values()["global"]["postgresqlSecretName"]

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    built = K8sRunLauncher(**{**config, "load_incluster_config": False,
                              "kubeconfig_file": str(kubeconfig)})
    assert built.job_namespace == config["job_namespace"]
    assert built.service_account_name == config["service_account_name"]
    assert built.security_context["runAsNonRoot"] is True
    assert set(built.env_secrets) == SECRET_NAMES
    assert built.image_pull_policy == "IfNotPresent"


def test_helm_values_have_what_a_deployment_needs() -> None:
    values = _values()
    # run launcher: a Kubernetes Job per run, settings and secrets from the environment
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert _names(k8s["envSecrets"]) == SECRET_NAMES
    assert _names(k8s["envConfigMaps"]) == {"risk-monitor-config"}
    assert k8s["loadInclusterConfig"] is True
    assert k8s["jobNamespace"] == _instance_doc()["run_launcher"]["config"]["job_namespace"]

    # external PostgreSQL, psycopg2 driver, TLS, password only from a Secret
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"]
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert pg["postgresqlParams"]["sslmode"] in ("require", "verify-ca", "verify-full")
    assert "postgresqlPassword" not in pg
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]

    # the code location: our image (pinned tag, not latest), our definitions, env from secrets
    deployments = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert len(deployments) == 1
    code = deployments[0]
    assert code["image"]["repository"] and code["image"]["tag"] not in ("", "latest")
    assert code["dagsterApiGrpcArgs"] == ["-m", "risk_monitor.definitions"]
    assert _names(code["envSecrets"]) == SECRET_NAMES
    assert code["podSecurityContext"]["runAsNonRoot"] is True

    # queued runs with the same bounds as the instance file
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    instance_queue = _instance_doc()["run_coordinator"]["config"]
    assert queued["maxConcurrentRuns"] == instance_queue["max_concurrent_runs"]
    assert queued["dequeueIntervalSeconds"] == instance_queue["dequeue_interval_seconds"]


def test_no_secret_values_in_deploy_files() -> None:
    """Passwords, tokens and keys never sit in these files, only Secret names."""
    for path in K8S.glob("*.yaml"):
        text = path.read_text().lower()
        for word in ("password:", "token:", "api_key:", "secret_key:"):
            for line in text.splitlines():
                stripped = line.split("#", 1)[0].strip()
                if stripped.startswith(word):
                    value = stripped[len(word):].strip()
                    assert value == "" or value.startswith("{env"), (path.name, line)
