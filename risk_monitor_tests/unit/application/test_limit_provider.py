"""The one limit provider over a fake configuration service (``fakes.FakeConfigSource``) and an
embedded store: the service's document, the last good through an outage, fail closed blind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from risk_monitor.adapters.config_service import SOURCE_FILE, SOURCE_SERVICE, SOURCE_STORE
from risk_monitor.adapters.limit_provider import LimitConfigProvider
from risk_monitor.adapters.sql import Storage
from risk_monitor.platform.settings import Settings, load_settings
from risk_monitor_tests.fakes import FakeConfigSource
from risk_monitor_tests.fixtures.waiting import async_wait_until

COMPONENT = "desk"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path, config_service={
        "enabled": True, "component": COMPONENT, "url": "http://127.0.0.1:9",
        "poll_timeout_s": 0.05})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage.open(f"sqlite:///{tmp_path / 'risk.db'}")
    yield storage
    storage.close()


def test_a_packaged_document_from_the_service_is_used_and_kept_through_an_outage(
        settings: Settings, store: Storage) -> None:
    packaged = yaml.safe_load(settings.effective_limits_file.read_text())
    source = FakeConfigSource({COMPONENT: {"limits": packaged}})
    live = LimitConfigProvider(settings, store.config_versions, source).current()
    assert live.source == SOURCE_SERVICE and not live.config.unavailable

    source.documents.clear()  # the configuration service answers nothing any more
    kept = LimitConfigProvider(settings, store.config_versions, source).current()
    assert (kept.source, kept.config.version) == (SOURCE_STORE, live.config.version)


def test_nothing_known_fails_closed_never_the_files_levels(settings: Settings,
                                                           store: Storage) -> None:
    blind = LimitConfigProvider(settings, store.config_versions, FakeConfigSource()).current()
    assert blind.source == SOURCE_FILE and blind.config.unavailable
    assert store.config_versions.history() == []  # an untrusted file is nobody's last good


def test_an_invalid_service_document_keeps_the_last_good_one(settings: Settings,
                                                            store: Storage) -> None:
    packaged = yaml.safe_load(settings.effective_limits_file.read_text())
    source = FakeConfigSource({COMPONENT: {"limits": packaged}})
    good = LimitConfigProvider(settings, store.config_versions, source).current()

    source.documents[COMPONENT] = {"limits": {"limits": "not a list"}}
    provider = LimitConfigProvider(settings, store.config_versions, source)
    kept = provider.current()
    assert (kept.source, kept.config.version) == (SOURCE_STORE, good.config.version)
    assert provider.state.rejected == 1  # the bad document was seen, refused and counted


async def test_the_services_refresh_loop_applies_news_through_the_same_provider(
        settings: Settings, store: Storage) -> None:
    packaged = yaml.safe_load(settings.effective_limits_file.read_text())
    source = FakeConfigSource({COMPONENT: {"limits": packaged}})
    provider = LimitConfigProvider(settings, store.config_versions, source)
    await provider.start()
    try:
        first = provider.state.current
        assert first is not None and first.source == SOURCE_SERVICE
        assert provider.readiness()["service_connected"] is True

        tighter = {**packaged, "description": "tighter"}
        source.documents[COMPONENT] = {"limits": tighter}
        await async_wait_until(lambda: provider.state.current is not None
                               and provider.state.current.limits_version != first.limits_version)
        # what a Dagster run asks at that moment is the same document
        run = LimitConfigProvider(settings, store.config_versions, source).current()
        assert (run.source, run.config.version) == (SOURCE_SERVICE,
                                             provider.state.current.limits_version)
    finally:
        await provider.stop()
