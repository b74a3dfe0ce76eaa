"""The safe-change command line: lint, simulate, catalogue load and campaign moves.

Lint needs no database. The other commands run on a fresh SQLite file migrated by
``promoguard db upgrade``; a campaign that must be live is taken through review by the API
(signed client, approver keys) on the same file, and its state is read back through the API.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tests.service.conftest import SECRET, signed_client
from tests.service.helpers import live, threshold
from typer.testing import CliRunner, Result

from promoguard.campaigns import service
from promoguard.cli import EXIT_INVALID, EXIT_UNREADABLE, app
from promoguard.settings import Settings
from promoguard.store.db import Database

runner = CliRunner()
EXAMPLES = Path(__file__).parents[1] / "src/promoguard/examples"
CAMPAIGNS = EXAMPLES / "campaigns.json"
CATALOGUE = EXAMPLES / "catalogue.json"
AT = "2026-10-31T12:00:00+08:00"
"""Before the 双11 window of the bundled campaigns, after which every valid_until here lies."""
UNTIL = "2026-11-12T00:00:00+08:00"


def mj(spend: int, off: int, **fields: Any) -> dict[str, Any]:
    """满{spend}减{off} (fen) on every item, ending after ``AT``."""
    return threshold("mj", spend=spend, off=off, valid_until=UNTIL, **fields)


def write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def flat(result: Result) -> str:
    """Everything printed (stdout and stderr), with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def exited_cleanly(result: Result) -> bool:
    """The command exited with a code of its own, not with an uncaught exception."""
    return result.exception is None or isinstance(result.exception, SystemExit)


def lint(*args: str) -> Result:
    return runner.invoke(app, ["lint", *args])


def lint_json(*args: str) -> tuple[Result, list[dict[str, Any]]]:
    result = lint(*args, "--json")
    assert exited_cleanly(result), result.output
    return result, json.loads(result.stdout)


# -- lint -------------------------------------------------------------------------------------


def test_lint_refuses_the_classic_50_off_200_with_l101_and_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path, "mj.json", mj(spend=5000, off=20000))

    result, findings = lint_json(str(path), "--at", AT)

    assert result.exit_code == EXIT_INVALID, result.output
    errors = [f for f in findings if f["severity"] == "error"]
    assert [(f["code"], f["rule_id"]) for f in errors] == [("L101", "mj")]
    assert errors[0]["name"] == "discount_exceeds_threshold"
    assert "1 error(s)" in flat(result)


def test_lint_table_names_the_code_of_the_error(tmp_path: Path) -> None:
    path = write(tmp_path, "mj.json", [mj(spend=5000, off=20000)])

    result = lint(str(path), "--at", AT)

    assert result.exit_code == EXIT_INVALID, result.output
    assert "L101" in result.output
    assert "error" in result.output


def test_lint_passes_200_off_50_with_exit_0_and_no_findings(tmp_path: Path) -> None:
    path = write(tmp_path, "mj.json", mj(spend=20000, off=5000))

    result, findings = lint_json(str(path), "--at", AT)

    assert result.exit_code == 0, result.output
    assert findings == []
    assert "1 rule(s): 0 error(s), 0 warning(s)" in flat(result)


def test_lint_of_the_bundled_campaigns_with_the_catalogue_has_warnings_only() -> None:
    result, findings = lint_json(str(CAMPAIGNS), "--catalogue", str(CATALOGUE), "--at", AT)

    assert result.exit_code == 0, result.output
    assert findings, "the bundled campaigns should give at least one warning"
    assert {f["severity"] for f in findings} == {"warning"}
    text = flat(result)
    assert "0 error(s)" in text
    assert "skipped" not in text


def test_lint_of_the_bundled_campaigns_prints_the_warning_in_the_table() -> None:
    result = lint(str(CAMPAIGNS), "--catalogue", str(CATALOGUE), "--at", AT)

    assert result.exit_code == 0, result.output
    assert "warning" in result.output
    assert "lint findings" in result.output


def test_lint_without_a_catalogue_says_the_catalogue_checks_were_skipped() -> None:
    result = lint(str(CAMPAIGNS), "--at", AT)

    assert result.exit_code == 0, result.output
    assert "no --catalogue: the checks on real SKUs were skipped" in flat(result)


def test_lint_catches_with_the_catalogue_what_it_cannot_see_without(tmp_path: Path) -> None:
    nothing = mj(spend=20000, off=5000, scope={"categories": ["no-such-category"]})
    path = write(tmp_path, "mj.json", nothing)

    without, quiet = lint_json(str(path), "--at", AT)
    with_catalogue, found = lint_json(str(path), "--catalogue", str(CATALOGUE), "--at", AT)

    assert without.exit_code == 0, without.output
    assert quiet == []
    assert with_catalogue.exit_code == EXIT_INVALID, with_catalogue.output
    assert "L301" in {f["code"] for f in found}


def test_lint_of_a_file_that_is_not_json_exits_1_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{ not json", encoding="utf-8")

    result = lint(str(path))

    assert result.exit_code == EXIT_INVALID
    assert exited_cleanly(result), result.exception
    assert f"{path} is not JSON" in flat(result)


def test_lint_of_a_missing_file_exits_3(tmp_path: Path) -> None:
    result = lint(str(tmp_path / "missing.json"))

    assert result.exit_code == EXIT_UNREADABLE
    assert "cannot read" in flat(result)


def test_lint_of_a_missing_catalogue_exits_3(tmp_path: Path) -> None:
    path = write(tmp_path, "mj.json", mj(spend=20000, off=5000))

    result = lint(str(path), "--catalogue", str(tmp_path / "missing.json"))

    assert result.exit_code == EXIT_UNREADABLE
    assert "cannot read" in flat(result)


def test_lint_of_an_unparseable_percent_gives_l105_and_exit_1(tmp_path: Path) -> None:
    spec = {
        "kind": "percent_off",
        "id": "pct",
        "scope": {"all_items": True},
        "percent": "150",
        "valid_until": UNTIL,
    }
    path = write(tmp_path, "pct.json", spec)

    result, findings = lint_json(str(path), "--at", AT)

    assert result.exit_code == EXIT_INVALID, result.output
    assert [(f["code"], f["rule_id"], f["path"]) for f in findings] == [("L105", "pct", "percent")]


def test_lint_of_a_spec_missing_a_field_gives_l001_under_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", [{"kind": "threshold", "scope": {"all_items": True}}])

    result, findings = lint_json(str(path), "--at", AT)

    assert result.exit_code == EXIT_INVALID, result.output
    assert findings
    assert {f["code"] for f in findings} == {"L001"}
    assert {f["rule_id"] for f in findings} == {"[0]"}


def test_lint_at_without_an_offset_is_refused_plainly(tmp_path: Path) -> None:
    path = write(tmp_path, "mj.json", mj(spend=20000, off=5000))

    result = lint(str(path), "--at", "2026-10-31T12:00:00")

    assert exited_cleanly(result), repr(result.exception)
    assert result.exit_code in (EXIT_INVALID, 2)


def test_lint_with_an_invalid_live_file_exits_1_with_the_field_path(tmp_path: Path) -> None:
    path = write(tmp_path, "mj.json", mj(spend=20000, off=5000))
    bad_live = write(tmp_path, "live.json", [threshold("old", spend=-5, off=1)])

    result = lint(str(path), "--live", str(bad_live), "--at", AT)

    assert exited_cleanly(result), repr(result.exception)
    assert result.exit_code == EXIT_INVALID
    assert "[0].tiers[0].min_spend" in flat(result)


def test_lint_of_json_that_is_not_a_spec_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "five.json", 5)

    result = lint(str(path), "--at", AT)

    assert exited_cleanly(result), repr(result.exception)
    assert result.exit_code == EXIT_INVALID


# -- the database commands --------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> str:
    """A fresh SQLite file migrated by ``promoguard db upgrade``."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env_for(url))
    assert upgraded.exit_code == 0, upgraded.output
    return url


def env_for(url: str) -> dict[str, str | None]:
    return {
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_ENVIRONMENT": None,
        "PROMOGUARD_REDIS_URL": None,
    }


def cli(url: str, *args: str) -> Result:
    return runner.invoke(app, list(args), env=env_for(url))


def create_draft(url: str, spec: dict[str, Any]) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            async with db.write() as session:
                await service.create_campaign(session, spec=spec, author="test")
        finally:
            await db.dispose()

    asyncio.run(run())


def test_catalogue_load_prints_the_item_count(database: str) -> None:
    items = len(json.loads(CATALOGUE.read_text(encoding="utf-8"))["items"])

    result = cli(database, "catalogue", "load", str(CATALOGUE))

    assert result.exit_code == 0, result.output
    assert f"catalogue loaded: {items} items" in flat(result)
    again = cli(database, "catalogue", "load", str(CATALOGUE))
    assert again.exit_code == 0, again.output


def test_catalogue_load_of_a_bad_file_exits_1_with_the_field_path(
    database: str, tmp_path: Path
) -> None:
    bad = write(
        tmp_path,
        "catalogue.json",
        {"currency": "CNY", "items": [{"sku": "a", "category": "c", "unit_price": -1}]},
    )

    result = cli(database, "catalogue", "load", str(bad))

    assert result.exit_code == EXIT_INVALID, result.output
    text = flat(result)
    assert "invalid_catalogue" in text
    assert "items.0.unit_price" in text


def test_simulate_with_the_catalogue_prints_a_report_and_exits_0(database: str) -> None:
    assert cli(database, "catalogue", "load", str(CATALOGUE)).exit_code == 0
    create_draft(database, mj(spend=20000, off=5000))

    result = cli(database, "simulate", "mj", "--expected-orders", "1000")

    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "simulation of mj" in text
    assert "sample: synthetic" in text
    assert "over 1000 orders" in text
    assert "fits" in text


def test_simulate_over_a_tiny_budget_exits_1_and_says_it_is_exceeded(database: str) -> None:
    assert cli(database, "catalogue", "load", str(CATALOGUE)).exit_code == 0
    create_draft(database, mj(spend=20000, off=5000, limits={"budget": 100}))

    result = cli(database, "simulate", "mj", "--expected-orders", "1000")
    as_json = cli(database, "simulate", "mj", "--expected-orders", "1000", "--json")

    assert result.exit_code == EXIT_INVALID, result.output
    assert "exceeds the budget" in flat(result)
    assert as_json.exit_code == EXIT_INVALID, as_json.output
    report = json.loads(as_json.stdout)
    assert report["blocked"] is True
    forecast = report["forecast"]
    assert forecast["budget"] == 100
    assert forecast["expected_orders"] == 1000
    assert forecast["forecast_spend"] > 100


def test_simulate_without_a_catalogue_or_orders_exits_1_saying_what_to_do(database: str) -> None:
    create_draft(database, mj(spend=20000, off=5000))

    result = cli(database, "simulate", "mj")

    assert result.exit_code == EXIT_INVALID, result.output
    assert "promoguard catalogue load" in flat(result)


def test_simulate_an_unknown_campaign_exits_1_with_the_code(database: str) -> None:
    result = cli(database, "simulate", "nope")

    assert result.exit_code == EXIT_INVALID, result.output
    assert exited_cleanly(result), repr(result.exception)
    assert "campaign_not_found" in flat(result)


def test_campaign_moves_from_the_cli_change_the_campaign_and_sign_the_timeline(
    database: str,
) -> None:
    settings = Settings(database_url=database, environment="test", secret_key=SECRET)
    with signed_client(settings) as client:
        live(client, threshold("mj", valid_until="2099-01-01T00:00:00+08:00"))

        rolled = cli(database, "campaigns", "rollout", "mj", "10", "--reason", "canary")
        paused = cli(database, "campaigns", "pause", "mj", "--reason", "x")
        back = cli(database, "campaigns", "rollback", "mj", "--reason", "y")

        campaign = client.get("/v1/campaigns/mj")
        timeline = client.get("/v1/campaigns/mj/timeline")

    assert rolled.exit_code == 0, rolled.output
    assert "rollout changed: campaign mj is live, live version 1, rollout 10%" in flat(rolled)
    assert paused.exit_code == 0, paused.output
    assert "campaign mj is paused" in flat(paused)
    assert back.exit_code == EXIT_INVALID, back.output
    assert exited_cleanly(back), repr(back.exception)
    assert "nothing_to_roll_back" in flat(back)

    assert campaign.status_code == 200, campaign.text
    assert campaign.json()["rollout_bps"] == 1000
    assert campaign.json()["status"] == "paused"
    assert campaign.json()["live_version"] == 1

    assert timeline.status_code == 200, timeline.text
    by_action = {entry["action"]: entry for entry in timeline.json()}
    assert by_action["campaign.rollout_changed"]["actor"].startswith("cli")
    assert by_action["campaign.rollout_changed"]["detail"]["after"] == {"rollout_bps": 1000}
    assert by_action["campaign.rollout_changed"]["detail"]["reason"] == "canary"
    assert by_action["campaign.paused"]["actor"].startswith("cli")
    assert not by_action["campaign.activated"]["actor"].startswith("cli")
    assert "campaign.rolled_back" not in by_action


def test_a_bad_rollout_percentage_is_a_usage_error(database: str) -> None:
    result = cli(database, "campaigns", "rollout", "mj", "150")

    assert result.exit_code == 2, result.output
    assert "percentage from 0 to 100" in flat(result)


def test_a_move_on_an_unknown_campaign_exits_1_with_the_code(database: str) -> None:
    result = cli(database, "campaigns", "pause", "nope", "--reason", "x")

    assert result.exit_code == EXIT_INVALID, result.output
    assert "campaign_not_found" in flat(result)
