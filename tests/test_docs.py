"""The docs under docs/ say what the code does: generated files are up to date, worked examples
price and sign to the values they state, every field, setting and error code is described."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promoguard import docgen
from promoguard.cli import app
from promoguard.promotions.rules import rule_json_schema
from promoguard.security import signing

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = DOCS.parent / "README.md"
runner = CliRunner()


def _block(text: str, heading: str, language: str) -> str:
    """The first fenced code block of ``language`` after ``heading``."""
    after = text.split(heading, 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", after, re.DOTALL)
    assert match, (heading, language)
    return match.group(1)


# -- generated files ------------------------------------------------------------------------


def test_committed_generated_docs_match_the_code():
    result = runner.invoke(app, ["docs", "--check", "--dir", str(DOCS)])
    assert result.exit_code == 0, result.output


def test_check_fails_on_a_drifted_file_and_docs_repairs_it(tmp_path):
    for name in (*docgen.WHOLE, *docgen.BLOCKS):
        shutil.copy(DOCS / name, tmp_path / name)
    api = tmp_path / "api.md"
    api.write_text(api.read_text(encoding="utf-8") + "\nhand edit\n", encoding="utf-8")
    (tmp_path / "lint.md").unlink()

    drifted = runner.invoke(app, ["docs", "--check", "--dir", str(tmp_path)])
    assert drifted.exit_code == 1
    assert "api.md" in drifted.output
    assert "lint.md" in drifted.output

    assert runner.invoke(app, ["docs", "--dir", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["docs", "--check", "--dir", str(tmp_path)]).exit_code == 0
    assert api.read_text(encoding="utf-8") == (DOCS / "api.md").read_text(encoding="utf-8")


def test_a_hand_written_file_keeps_its_prose_around_the_generated_block(tmp_path):
    page = tmp_path / "operations.md"
    page.write_text(
        "before\n<!-- generated: configuration -->\nold\n<!-- end generated: configuration -->\n"
        "after\n",
        encoding="utf-8",
    )
    for name in docgen.WHOLE:
        shutil.copy(DOCS / name, tmp_path / name)

    assert runner.invoke(app, ["docs", "--dir", str(tmp_path)]).exit_code == 0

    text = page.read_text(encoding="utf-8")
    assert text.startswith("before\n<!-- generated: configuration -->\n")
    assert text.endswith("<!-- end generated: configuration -->\nafter\n")
    assert "`PROMOGUARD_DATABASE_URL`" in text
    assert "\nold\n" not in text


# -- the rule reference ---------------------------------------------------------------------


def test_every_kind_has_a_worked_example():
    kinds = {ref["$ref"].rsplit("/", 1)[-1] for ref in rule_json_schema()["oneOf"]}
    defs = rule_json_schema()["$defs"]
    kind_names = {defs[k]["properties"]["kind"]["const"] for k in kinds}
    _, examples = docgen.rule_examples()
    assert kind_names <= {e.kind for e in examples}
    assert len(kind_names) == 10


def test_every_worked_example_prices_to_the_figures_it_states():
    at, examples = docgen.rule_examples()
    for example in examples:
        quotes = docgen.price_example(at, example)
        stated = example.expect
        assert [
            {"list_total": q.list_total, "discount_total": q.discount_total, "total": q.total}
            for q in quotes
        ] == stated, example.title


def test_every_worked_example_runs_as_written_with_promoguard_price(tmp_path, monkeypatch):
    """The files and the command the page shows, run as a reader would run them."""
    monkeypatch.chdir(tmp_path)
    text = (DOCS / "rules.md").read_text(encoding="utf-8")
    _, examples = docgen.rule_examples()
    for example in examples:
        slug = example.rules[0]["id"]
        for suffix in ("rules", "carts"):
            name = f"{slug}-{suffix}.json"
            Path(name).write_text(_block(text, f"`{name}`:", "json"), encoding="utf-8")
        command = _block(text, f"`{slug}-carts.json`:", "bash").split()
        assert command[:2] == [".venv/bin/promoguard", "price"]
        result = runner.invoke(app, [*command[1:], "--json"])
        assert result.exit_code == 0, result.output
        totals = [entry["quote"]["total"] for entry in json.loads(result.output)]
        assert totals == [e["total"] for e in example.expect], example.title


def test_every_rule_field_and_setting_has_a_description():
    assert docgen.undescribed_rule_fields() == []
    assert docgen.undescribed_settings() == []


# -- error codes ----------------------------------------------------------------------------


def _readme_error_codes() -> dict[str, set[int]]:
    section = README.read_text(encoding="utf-8").split("### Errors", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[int]] = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and cells[1].strip().isdigit():
            for code in re.findall(r"`([a-z_]+)`", cells[2]):
                found.setdefault(code, set()).add(int(cells[1]))
    return found


def test_every_error_code_in_the_readme_is_raised_with_the_status_it_states():
    raised: dict[str, set[int]] = {}
    for entry in docgen.error_codes():
        raised.setdefault(entry.code, set()).add(entry.status)
    readme = _readme_error_codes()
    assert len(readme) > 80
    for code, statuses in readme.items():
        assert code in raised, code
        assert statuses <= raised[code], (code, statuses, raised[code])


def test_every_code_with_a_meaning_is_a_code_the_service_raises():
    raised = {entry.code for entry in docgen.error_codes()}
    assert set(docgen.MEANINGS) <= raised


def test_the_error_page_lists_every_code_once_per_status():
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    for entry in docgen.error_codes():
        assert f"| `{entry.code}` |" in text, entry.code


# -- the API reference ----------------------------------------------------------------------


def test_the_api_page_gives_every_operation_its_roles():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    spec = docgen._docs_app().openapi()
    for path, operations in spec["paths"].items():
        for method in operations:
            heading = f"### `{method.upper()} {path}`"
            assert heading in text
            section = text.split(heading, 1)[1].split("\n### ", 1)[0]
            if path.startswith("/v1/"):
                assert "rate-limit name `" in section, (method, path)
                assert "`admin`" in section, (method, path)


# -- the signing guide ----------------------------------------------------------------------

KEY, SECRET, STAMP = "pk_0123456789abcdef", "example-secret", 1795996800
EXAMPLES = {
    "Worked example 1": {
        "method": "POST",
        "path": "/v1/coupons/d11-coupon/claims",
        "query": "",
        "body": b'{"customer_id":"c-1001"}',
        "nonce": "3f6c0f3b9a2d4e51",
    },
    "Worked example 2": {
        "method": "GET",
        "path": "/v1/claims",
        "query": "status=needs_review&overdue=true&limit=20",
        "body": b"",
        "nonce": "7d1e4c9a0b2f3e58",
    },
}


def _signed(example: dict[str, object]) -> dict[str, str]:
    return signing.sign(
        key_id=KEY,
        secret=SECRET,
        method=str(example["method"]),
        path=str(example["path"]),
        query=str(example["query"]),
        body=bytes(example["body"]),  # type: ignore[arg-type]
        timestamp=STAMP,
        nonce=str(example["nonce"]),
    )


@pytest.mark.parametrize("heading", list(EXAMPLES))
def test_the_signing_guide_worked_examples_are_what_the_server_computes(heading):
    example = EXAMPLES[heading]
    text = (DOCS / "signing.md").read_text(encoding="utf-8")
    section = text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.DOTALL)
    headers = _signed(example)
    canonical = signing.canonical_string(
        str(example["method"]),
        str(example["path"]),
        str(example["query"]),
        str(STAMP),
        str(example["nonce"]),
        hashlib.sha256(bytes(example["body"])).hexdigest(),  # type: ignore[arg-type]
    )
    assert canonical + "\n" in blocks
    assert headers["X-Promoguard-Signature"] + "\n" in blocks
    assert headers["X-Promoguard-Content-SHA256"] in section


def test_the_shell_client_signs_like_the_server(tmp_path):
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and openssl")
    script = _block((DOCS / "signing.md").read_text(encoding="utf-8"), "### curl", "bash")
    fake_curl = 'curl() { printf "%s\\n" "$@"; }\n'
    result = subprocess.run(
        ["bash", "-c", fake_curl + script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "TS": str(STAMP), "NONCE": "3f6c0f3b9a2d4e51"},
    )
    expected = _signed(EXAMPLES["Worked example 1"])
    for name, value in expected.items():
        assert f"{name}: {value}" in result.stdout.splitlines()


def test_the_javascript_client_signs_like_the_server(tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    code = _block((DOCS / "signing.md").read_text(encoding="utf-8"), "### JavaScript", "javascript")
    tricky = "b=2&a=x+y&a=%7E1&c=&z=%2F%C3%A9&a=1"
    cases = [
        {**EXAMPLES["Worked example 1"], "body": '{"customer_id":"c-1001"}'},
        {**EXAMPLES["Worked example 2"], "body": ""},
        {"method": "get", "path": "/v1/alerts", "query": tricky, "body": "", "nonce": "n-000001"},
    ]
    calls = "\n".join(
        "console.log(JSON.stringify(signHeaders("
        + json.dumps({"keyId": KEY, "secret": SECRET, "timestamp": STAMP, **case})
        + ")));"
        for case in cases
    )
    script = tmp_path / "sign.js"
    script.write_text(code + "\n" + calls + "\n", encoding="utf-8")
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    for case, answer in zip(cases, answers, strict=True):
        expected = _signed({**case, "body": str(case["body"]).encode()})
        assert answer == expected, case
    assert signing.sorted_query(tricky) == "a=1&a=x+y&a=%7E1&b=2&c=&z=%2F%C3%A9".replace("%7E", "~")


def test_the_playbook_helper_signs_like_the_server():
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and openssl")
    helper = _block(
        (DOCS / "playbook.md").read_text(encoding="utf-8"), "## Calling the API", "bash"
    )
    fake_curl = 'curl() { printf "%s\\n" "$@"; }\n'
    calls = (
        'promo POST /v1/coupons/d11-coupon/claims \'{"customer_id":"c-1001"}\'\n'
        "NONCE=7d1e4c9a0b2f3e58 promo GET "
        "'/v1/claims?limit=20&overdue=true&status=needs_review'\n"
    )
    result = subprocess.run(
        ["bash", "-c", fake_curl + helper + calls],
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PROMO_URL": "http://promo.test",
            "PROMO_KEY": KEY,
            "PROMO_SECRET": SECRET,
            "TS": str(STAMP),
            "NONCE": "3f6c0f3b9a2d4e51",
        },
    )
    lines = result.stdout.splitlines()
    for example in EXAMPLES.values():
        signature = _signed(example)["X-Promoguard-Signature"]
        assert f"X-Promoguard-Signature: {signature}" in lines
    assert '{"customer_id":"c-1001"}' in lines
    assert "http://promo.test/v1/claims?limit=20&overdue=true&status=needs_review" in lines
