"""The main job: ``promoguard demo --fast --seed 1`` runs the whole 双11 story on this machine (real
processes, SQLite), exits 0, and its summary's numbers match what its database holds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.serving import free_port

PROMOGUARD = str(Path(sys.executable).with_name("promoguard"))


def test_the_fast_demo_tells_the_whole_story(tmp_path: Path):
    run = subprocess.run(
        [
            PROMOGUARD, "demo", "--fast", "--exit", "--seed", "1",
            "--workdir", str(tmp_path / "demo"), "--port", str(free_port()),
        ],
        capture_output=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    output = run.stdout.decode()
    assert run.returncode == 0, output[-3000:] + run.stderr.decode()[-3000:]
    summary = json.loads(output.strip().splitlines()[-1])

    assert summary["campaigns_live"] == 13
    assert "L101" in summary["lint_stopped"]  # 满50减200 stopped by lint
    assert summary["bot_claims"].get("429", 0) > 0  # the bot is rate-limited ...
    assert set(summary["bot_claims"]) <= {"201", "409", "429"}  # ... and gets one coupon at most
    assert summary["bot_claims"].get("201", 0) <= 1
    assert summary["unsigned_status"] == 401
    assert summary["flash_sold"] == summary["flash_stock"] == 20  # sold out exactly
    assert summary["paused_by"] == "tier-mix-shift"
    assert summary["incident_severity"] == "P1"
    assert summary["affected_orders"] > 0
    assert summary["plan_status"] == "done"
    assert summary["refunds_paid"] > 0
    assert summary["claims"].get("paid", 0) >= 1  # affected customers: paid once, by the plan
    assert summary["claims"].get("rejected", 0) >= 1  # unaffected ones: refused with a reason
    report = Path(summary["postmortem"]).read_text(encoding="utf-8")
    assert "Alert rule **tier-mix-shift** (P1) fired" in report
    assert (tmp_path / "demo" / "postmortem.html").exists()

    # The summary's numbers are the database's.
    with sqlite3.connect(tmp_path / "demo" / "promoguard.db") as db:
        one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        assert summary["orders"] == one("SELECT COUNT(*) FROM orders")
        assert summary["flash_sold"] == one(
            "SELECT COUNT(DISTINCT order_id) FROM order_discounts WHERE rule_id = 'd11-phone-flash'"
        )
        assert summary["refunds_paid"] == one(
            "SELECT COALESCE(SUM(amount), 0) FROM payouts WHERE status = 'succeeded'"
        )
        assert summary["incident_severity"] == one(
            f"SELECT severity FROM incidents WHERE id = {summary['incident_id']}"
        )
        claims = dict(db.execute("SELECT status, COUNT(*) FROM claims GROUP BY status"))
        assert claims == summary["claims"]
        assert one("SELECT status FROM campaigns WHERE id = 'd11-member-electronics'") == "paused"
        live = "SELECT COUNT(*) FROM campaigns WHERE status = 'live' AND id LIKE 'd11-%'"
        assert one(live) == summary["campaigns_live"] - 1  # all but the paused one
    assert "make explore" in output
