"""The command line: the bundled example prices and explains; bad input exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from promoguard.cli import EXIT_INVALID, EXIT_UNREADABLE, app
from promoguard.store import migrate

runner = CliRunner()


def test_price_bundled_example_prints_every_cart_and_explanation() -> None:
    result = runner.invoke(app, ["price"])
    assert result.exit_code == 0, result.output
    assert "Pricing 6 cart(s) under 13 rule(s)" in result.output
    assert "满399.00减50.00 reached with 546.00: saves 50.00" in result.output
    assert "threshold not met: 91.72 < 300.00" in result.output
    assert "guard line_floor on d11-cross-store" in result.output


def test_price_json_totals_are_integer_minor_units_that_add_up() -> None:
    result = runner.invoke(app, ["price", "--json"])
    assert result.exit_code == 0, result.output
    quotes = json.loads(result.output)
    assert len(quotes) == 6
    for item in quotes:
        quote = item["quote"]
        assert isinstance(quote["total"], int)
        assert quote["total"] == quote["list_total"] - quote["discount_total"]
        assert quote["total"] == sum(line["final_amount"] for line in quote["lines"])
    apparel = quotes[0]["quote"]
    assert (apparel["list_total"], apparel["total"]) == (54600, 44600)


def test_price_at_outside_the_campaign_window_gives_no_discount() -> None:
    result = runner.invoke(app, ["price", "--json", "--at", "2026-12-01T00:00:00+08:00"])
    assert result.exit_code == 0, result.output
    assert all(item["quote"]["discount_total"] == 0 for item in json.loads(result.output))


def test_validate_reports_each_bad_field_with_its_path_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "kind": "threshold",
                    "id": "t",
                    "scope": {"all_items": True},
                    "tiers": [{"min_spend": 20000, "discount": -5}],
                    "surprise": 1,
                }
            ]
        )
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == EXIT_INVALID
    assert "[0].tiers[0].discount" in result.output
    assert "[0].surprise" in result.output


def test_validate_accepts_the_bundled_campaigns() -> None:
    path = Path(__file__).parents[1] / "src/promoguard/examples/campaigns.json"
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok: 13 rule(s)" in result.output


def test_price_with_an_unreadable_rules_file_exits_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["price", "--rules", str(tmp_path / "missing.json")])
    assert result.exit_code == EXIT_UNREADABLE
    assert "cannot read" in result.output


def test_price_with_an_invalid_cart_exits_1_with_the_path(tmp_path: Path) -> None:
    carts = tmp_path / "carts.json"
    carts.write_text(
        json.dumps(
            {
                "scenarios": [
                    {
                        "name": "x",
                        "customer": {"id": "c"},
                        "cart": {
                            "lines": [
                                {"sku": "a", "category": "b", "unit_price": -1, "quantity": 1}
                            ]
                        },
                    }
                ]
            }
        )
    )
    result = runner.invoke(app, ["price", "--carts", str(carts)])
    assert result.exit_code == EXIT_INVALID
    assert "scenarios[0].cart.lines[0].unit_price" in result.output


def test_schema_lists_every_rule_kind() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    text = result.output
    for kind in (
        "threshold",
        "percent_off",
        "tiered_percent",
        "fixed_price",
        "bxgy",
        "member_price",
        "first_order",
        "group_buy",
        "flash_sale",
        "coupon",
    ):
        assert f'"{kind}"' in text


def test_db_upgrade_migrates_an_empty_sqlite_database_and_can_run_again(tmp_path: Path):
    env = {"PROMOGUARD_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"}

    first = runner.invoke(app, ["db", "upgrade"], env=env)
    again = runner.invoke(app, ["db", "upgrade"], env=env)

    assert first.exit_code == 0, first.output
    assert f"at migration {migrate.head_revision()}" in " ".join(first.output.split())
    assert again.exit_code == 0
    assert (tmp_path / "shop.db").exists()


def test_db_upgrade_says_plainly_when_the_database_cannot_be_reached(tmp_path: Path):
    env = {"PROMOGUARD_DATABASE_URL": f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"}

    result = runner.invoke(app, ["db", "upgrade"], env=env)

    assert result.exit_code == EXIT_UNREADABLE
    assert "cannot migrate" in result.output


def test_a_bad_configuration_is_reported_with_the_variable(tmp_path: Path):
    env = {"PROMOGUARD_ENVIRONMENT": "production"}

    result = runner.invoke(app, ["db", "upgrade"], env=env)

    assert result.exit_code == EXIT_INVALID
    assert "PROMOGUARD_SECRET_KEY" in result.output
