"""The main job: ``promoguard demo --fast`` runs the whole 双11 story on this machine (real
processes, SQLite) and says what happened; this test holds it to the story."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.serving import free_port

PROMOGUARD = str(Path(sys.executable).with_name("promoguard"))


def test_the_fast_demo_tells_the_whole_story(tmp_path: Path):
    run = subprocess.run(
        [
            PROMOGUARD, "demo", "--fast", "--exit", "--seed", "3",
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
