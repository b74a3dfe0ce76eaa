"""``promoguard incident``: open, list, acknowledge and report from a terminal."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli_safe_change import cli, database  # noqa: F401 (the fixture)


def test_open_list_ack_and_report_an_incident(database: str, tmp_path: Path) -> None:  # noqa: F811
    opened = cli(database, "incident", "open", "checkout shows 0 yuan", "--severity", "P1")
    assert opened.exit_code == 0, opened.output
    assert "opened incident 1 (P1)" in opened.output

    listed = cli(database, "incident", "list")
    assert listed.exit_code == 0, listed.output
    assert "checkout" in listed.output  # the title (wrapped to the terminal's width)
    assert "│ P1 " in listed.output
    assert "open" in listed.output

    acked = cli(database, "incident", "ack", "1", "--message", "looking")
    assert acked.exit_code == 0, acked.output
    again = cli(database, "incident", "ack", "1")
    assert again.exit_code == 1
    assert "incident_state" in again.output

    out = tmp_path / "pm.html"
    written = cli(database, "incident", "report", "1", "--format", "html", "--out", str(out))
    assert written.exit_code == 0, written.output
    html = out.read_text(encoding="utf-8")
    assert "<h1>Post-mortem: incident 1 — checkout shows 0 yuan</h1>" in html
    assert "acknowledged" in html  # the timeline's status move
    markdown = cli(database, "incident", "report", "1")
    assert "# Post-mortem: incident 1 — checkout shows 0 yuan" in markdown.output
    assert "| Severity | P1 (impact alone grades P3) |" in markdown.output


def test_a_bad_version_reference_and_an_unknown_incident_fail_clearly(database: str) -> None:  # noqa: F811
    bad = cli(database, "incident", "open", "x", "--version", "mj")
    assert bad.exit_code == 1
    assert "is not campaign:version" in bad.output
    missing = cli(database, "incident", "report", "42")
    assert missing.exit_code == 1
    assert "incident_not_found" in missing.output
