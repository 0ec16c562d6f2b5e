"""Scenario files: every packaged one loads, plays deterministically and does what it says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ccxt
import pytest
import yaml

from risk_monitor_tests.fixtures.sims import ccxt_client
from risk_sim.launcher import SimulatorStack
from risk_sim.scenario import ScenarioError, list_scenarios, load_scenario, parse_scenario

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
PACKAGED = list_scenarios()


def play_all(scenario: str, seed: int | None = None) -> list[dict[str, Any]]:
    with SimulatorStack(scenario, seed=seed, control=False) as stack:
        states = [stack.player.state()]
        while (record := stack.player.step()) is not None:
            states.append(record["state"])
        return states


def test_the_expected_scenarios_are_packaged() -> None:
    assert set(PACKAGED) >= {"calm", "limit_breach", "flash_crash", "exchange_outage",
                             "custodian_errors", "slack_outage", "bad_data"}


@pytest.mark.parametrize("name", PACKAGED)
def test_each_scenario_plays_deterministically_from_its_seed(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name and scenario.steps
    first, second = play_all(name), play_all(name)
    assert len(first) == len(scenario.steps) + 1
    assert first == second
    other = play_all(name, seed=scenario.seed + 1)
    assert [s["market"]["prices"] for s in other] != [s["market"]["prices"] for s in first]


def notional_utilisation(state: dict[str, Any], limit: dict[str, Any]) -> float:
    positions = state["market"]["accounts"][limit["venue"]]["main"]["positions"]
    notional = sum(float(p["notional"]) for p in positions if p["symbol"] == limit["instrument"])
    return notional / float(limit["breach"])


def status_of(utilisation: float, limit: dict[str, Any]) -> str:
    breach = float(limit["breach"])
    if utilisation * breach >= breach:
        return "BREACH"
    if utilisation * breach >= float(limit["warn"]):
        return "WARN"
    return "OK"


@pytest.mark.parametrize("name", ["calm", "limit_breach", "slack_outage"])
def test_notional_expectations_hold(name: str) -> None:
    scenario = load_scenario(name)
    [limit] = scenario.meta["limits"]
    with SimulatorStack(name, control=False) as stack:
        while (record := stack.player.step()) is not None:
            expected = record["expect"].get(limit["id"])
            if not expected:
                continue
            utilisation = notional_utilisation(record["state"], limit)
            if "utilisation" in expected:
                assert utilisation == pytest.approx(expected["utilisation"], abs=0.02), \
                    record["label"]
            assert status_of(utilisation, limit) == expected["status"], record["label"]


def test_flash_crash_moves_every_venue() -> None:
    with SimulatorStack("flash_crash", control=False) as stack:
        stack.player.step()
        start = {v: float(stack.market.quote(v, BTC).last) for v in ("binance", "okx")}
        record = stack.player.step()
        assert record is not None
        for venue in ("binance", "okx"):
            price = float(record["state"]["market"]["prices"][venue][BTC]["last"])
            assert price / start[venue] == pytest.approx(0.85, abs=0.01)
        losses = [float(p["unrealized_pnl"]) for p in
                  record["state"]["market"]["accounts"]["binance"]["main"]["positions"]]
        assert sum(losses) < 0


def test_exchange_outage_is_seen_by_ccxt_and_recovers() -> None:
    with SimulatorStack("exchange_outage", control=False) as stack:
        okx = ccxt_client(stack, "okx", "sync")
        okx.load_markets()
        stack.player.step()
        assert okx.fetch_ticker(BTC)["last"] > 0
        stack.player.step()
        with pytest.raises(ccxt.ExchangeNotAvailable):
            okx.fetch_ticker(BTC)
        assert stack.venue("okx").ws_refusing()
        binance = ccxt_client(stack, "binance", "sync")
        assert binance.fetch_ticker(BTC)["last"] > 0  # the other venue is fine
        stack.player.step()
        assert not stack.venue("okx").ws_refusing()
        assert okx.fetch_ticker(BTC)["last"] == float(stack.market.quote("okx", BTC).last)


def test_bad_data_switches_the_declared_faults() -> None:
    with SimulatorStack("bad_data", control=False) as stack:
        kinds = []
        while (record := stack.player.step()) is not None:
            faults = record["state"]["faults"]
            kinds.append(sorted((sim, f["kind"]) for sim, fs in faults.items() for f in fs))
        assert kinds[0] == []
        assert kinds[1] == [("binance", "nan"), ("binance", "nan")]
        assert kinds[2] == [("okx", "negative")]
        assert kinds[3] == [("binance", "stale"), ("okx", "stale")]
        assert kinds[4] == [("binance", "malformed")]
        assert kinds[5] == []


def test_custodian_and_slack_scenarios_drive_those_simulators() -> None:
    with SimulatorStack("custodian_errors", control=False) as stack:
        if stack.fireblocks is None:
            pytest.fail(f"fireblocks simulator missing: {stack.missing}")
        before = {v["id"]: v for v in stack.fireblocks.vault_accounts()}
        assert {a["id"] for a in before["0"]["assets"]} == {"BTC", "ETH", "USDT_ERC20"}
        stack.player.step()
        stack.player.step()
        assert [f.kind for f in stack.fireblocks.faults.snapshot()] == ["http_error"]
        while stack.player.step() is not None:
            pass
        after = {v["id"]: v for v in stack.fireblocks.vault_accounts()}
        btc = {vid: next(a for a in v["assets"] if a["id"] == "BTC")["total"]
               for vid, v in after.items()}
        assert btc == {"0": "30", "2": "130"}
        assert stack.fireblocks.faults.snapshot() == []
    with SimulatorStack("slack_outage", control=False) as stack:
        assert stack.slack is not None
        stack.player.step()
        stack.player.step()
        assert [f.kind for f in stack.slack.faults.snapshot()] == ["http_error"]
        stack.player.step()
        assert [f.kind for f in stack.slack.faults.snapshot()] == ["timeout"]
        stack.player.step()
        assert stack.slack.faults.snapshot() == []


def test_play_matches_stepping_and_realtime_play_waits() -> None:
    stepped = play_all("limit_breach")
    with SimulatorStack("limit_breach", control=False) as stack:
        records = stack.player.play(realtime=False)
        assert [r["state"] for r in records] == stepped[1:]
        assert stack.player.done and stack.player.step() is None
        stack.reset()
        assert stack.player.state() == stepped[0]
    quick = load_scenario("limit_breach").model_dump(mode="json")
    for step in quick["steps"]:
        step["duration"] = 0.1
    scenario = parse_scenario(quick)
    with SimulatorStack(scenario, clock="realtime", control=False) as stack:
        started = time.monotonic()
        records = stack.player.play(realtime=True)
        assert time.monotonic() - started >= 0.45
        assert [r["label"] for r in records] == [s.label for s in scenario.steps]
        assert stack.market.clock.elapsed() >= 0.45


def base_document() -> dict[str, Any]:
    return {"name": "custom", "seed": 1,
            "instruments": {BTC: {"price": 60000}},
            "venues": {"binance": {"accounts": {"main": {"balances": {"USDT": 1000}}}}},
            "steps": [{"label": "go", "actions": [
                {"order": {"venue": "binance", "symbol": BTC, "side": "buy", "amount": 0.001}}]}]}


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.pop("instruments"), "instruments"),
    (lambda d: d["instruments"][BTC].update(price=-5), f"instruments.{BTC}.price"),
    (lambda d: d["steps"][0]["actions"][0]["order"].update(side="hold"),
     "steps.0.actions.0.order.side"),
    (lambda d: d["steps"][0]["actions"].append({"explode": {}}), "steps.0.actions.1.explode"),
    (lambda d: d["steps"][0]["actions"][0].update(set_price={"symbol": BTC, "price": 1}),
     "steps.0.actions.0"),
    (lambda d: d["steps"][0]["actions"][0]["order"].update(account="ghost"),
     "steps.0.actions.0.order.account"),
    (lambda d: d["steps"][0]["actions"][0]["order"].update(symbol="DOGE/USDT:USDT"),
     "steps.0.actions.0.order.symbol"),
    (lambda d: d["venues"]["binance"]["accounts"]["main"].update(
        positions=[{"symbol": "ETH/USDT:USDT", "side": "long", "contracts": 1}]),
     "venues.binance.accounts.main.positions.0.symbol"),
    (lambda d: d["venues"].update(kraken={}), "venues.kraken"),
    (lambda d: d["steps"][0].update(duration=-1), "steps.0.duration"),
    (lambda d: d["steps"][0]["actions"].append({"fault": {"sim": "okx", "kind": "boom"}}),
     "steps.0.actions.1.fault.kind"),
])
def test_a_malformed_scenario_names_the_field(change: Any, field: str) -> None:
    document = base_document()
    parse_scenario(document)  # the base document is valid
    change(document)
    with pytest.raises(ScenarioError) as error:
        parse_scenario(document, source="custom.yaml")
    assert error.value.field == field
    assert f"'{field}'" in str(error.value) and "custom.yaml" in str(error.value)


def test_bad_files_and_names(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ninstruments: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ScenarioError, match="must hold a mapping"):
        load_scenario(listing)
    with pytest.raises(ScenarioError, match="limit_breach"):  # lists what exists
        load_scenario("no_such_scenario")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base_document()))
    assert load_scenario(good).name == "custom"
