"""The coordinator's read-only status page, in a real headless browser (Debian's Chromium, driven by Playwright):
a real coordinator over TLS on 127.0.0.1, real activations and signed round reports with metrics, then what the
page renders. Chromium trusts the coordinator's certificate by its key alone (``--ignore-certificate-errors-spki-
list``, as an operator pins it); nothing else about TLS is relaxed. Screenshots go to the test's tmp directory and
to ``build/screenshots/`` (git-ignored)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedattest.flower.rounds import report_round, signed_round_report
from fedattest.participant import activate
from fedattest.pki import identity as ident
from fedattest.pki.signing import UpdateSigner
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import AGG, COLLAB, ENROL, Running, coordinator, tee

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
# What Chromium needs here: no sandbox (root, a container), no GPU, and none of its background traffic (on this
# closed network it would only be refused connections).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip
INJECTED = '<img src=x onerror="window.__pwned = 1">'
INJECTED_REASON = "<script>window.__pwned = 2</script> arrays do not decode"
RUN_A, RUN_B = 2**63 + 11, 42
DP = {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 1}


def _browser_or_skip() -> Any:
    """Playwright's sync API, or a skip that says what is missing (never a silent pass)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: bash scripts/test.sh installs it (apt-get install chromium) where it can")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[dev]'")
    return sync_playwright


def _spki_sha256_b64(url: str, root_pem: str) -> str:
    """Base64 SHA-256 of the SubjectPublicKeyInfo of the certificate the coordinator serves: the one key the
    browser is told to accept (verified against the pinned root first, so the pin is the coordinator's key)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    with socket.create_connection((host, port), timeout=30) as raw:
        context = ssl.create_default_context(cadata=root_pem)
        context.check_hostname = False  # the certificate names the coordinator, not 127.0.0.1; the chain is checked
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A coordinator with an aggregator and a collaborator activated (simulated TEE) and two runs of signed
    round reports with metrics: run A three rounds of two metrics (one round refusing an update whose member and
    reason carry markup), run B two rounds of one metric."""
    tmp = tmp_path_factory.mktemp("status-page")
    with coordinator(tmp, SimulatedPlatform.create(tmp / "platform")) as running:
        agg = tmp / "agg"
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp / "a",
                 enrolment_key=ENROL["hospital-a"], extra_keys={"node": ident.new_key().public_key()})  # fmt: skip
        nodes = {"hospital-a": 2**63 + 7}
        for rnd, (loss, accuracy) in enumerate([(2.25, 0.31), (1.5, 0.62), (0.75, 0.88)], start=1):
            refused = [(INJECTED, INJECTED_REASON)] if rnd == 2 else []
            report_round(running.url, running.root_pem, agg, RUN_A, rnd, ["hospital-a"], f"{rnd:02x}" * 32, refused, dp=DP,
                         metrics={"train.train_loss": loss, "server.accuracy": accuracy}, nodes=nodes)  # fmt: skip
        for rnd, loss in enumerate([0.5, 0.25], start=1):
            report_round(running.url, running.root_pem, agg, RUN_B, rnd, ["hospital-a"], f"{rnd + 8:02x}" * 32, dp=DP,
                         metrics={"evaluate.eval_loss": loss}, nodes=nodes)  # fmt: skip
        yield running


def test_the_page_and_its_overview_are_served_read_only_under_a_strict_policy(federation: Running) -> None:
    with federation.http() as http:
        page = http.get(f"{federation.url}/status")
        script = http.get(f"{federation.url}/status/status.js")
        overview = http.get(f"{federation.url}/api/v1/overview")
        missing = http.get(f"{federation.url}/status/..%2Fapi.py")
        posted = http.post(f"{federation.url}/status")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "require-trusted-types-for 'script'" in csp
    assert "unsafe-inline" not in csp and page.headers["x-content-type-options"] == "nosniff"
    assert "<form" not in page.text and "http://" not in page.text and "https://" not in page.text  # nothing external
    assert "<script>" not in page.text  # no inline script: the page's one script is served from the package
    assert script.headers["content-type"].startswith("text/javascript") and "innerHTML" not in script.text.split("\n", 5)[-1]
    assert missing.status_code == 404 and posted.status_code == 405
    o = overview.json()
    assert overview.headers["x-content-type-options"] == "nosniff"
    members = {m["name"]: m for m in o["members"]}
    assert members["hospital-a"]["node_id"] == str(2**63 + 7) and members["aggregator"]["node_id"] is None
    runs = {r["run_id"]: r for r in o["runs"]}
    assert [r["metrics"]["server.accuracy"] for r in runs[str(RUN_A)]["rounds"]] == [0.31, 0.62, 0.88]
    assert runs[str(RUN_A)]["refusals"] == [{"round": 2, "member": INJECTED, "reason": INJECTED_REASON}]
    assert o["simulated"] is True and o["policy_version"] == 1


def test_a_metric_name_with_markup_never_reaches_the_page(federation: Running, tmp_path: Path) -> None:
    agg = federation.state.parent / "agg"
    signer = UpdateSigner((agg / "key.pem").read_bytes(), (agg / "chain.pem").read_bytes())
    body = signed_round_report(signer, 99, 1, ["hospital-a"], "ab" * 32, metrics={INJECTED: 1.0})
    with federation.http() as http:
        refused = http.post(f"{federation.url}/api/v1/rounds", json=body)
    assert refused.status_code == 400 and "is not 1-64 characters" in refused.json()["error"]


@pytest.mark.slow  # a real Chromium: seconds to start
def test_the_status_page_renders_members_runs_and_a_chart_per_run_in_chromium(federation: Running, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    spki = _spki_sha256_b64(federation.url, federation.root_pem)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir: the SPKI pin needs one
            executable_path=str(CHROMIUM), headless=True, viewport={"width": 1400, "height": 900},
            args=[*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={spki}"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type in {"error", "warning"} else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (problems.append(f"a dialog opened: {d.message}"), d.dismiss()))
            response = page.goto(f"{federation.url}/status")
            assert response is not None and response.ok
            page.wait_for_selector("body[data-rendered='true']", timeout=60_000)

            assert page.locator("#federation").text_content() == "hospitals"
            badge = page.locator("#simulated-badge")
            assert badge.is_visible() and badge.text_content() == "SIMULATED"
            assert "policy version 1" in str(page.locator("#policy").text_content())
            rows = page.locator("#members tbody tr")
            assert rows.count() == 2
            hospital = page.locator("#members tbody tr[data-member='hospital-a'] td").all_text_contents()
            assert hospital[:3] == ["hospital-a", "collaborator", "verified"] and hospital[4] == "UpToDate"
            assert hospital[-1] == str(2**63 + 7)  # the Flower node id its updates came from
            assert page.locator("#runs tbody tr").count() == 2

            # One chart per run, one path per metric, one point per round that reported it.
            for run, metrics, rounds in ((RUN_A, {"server.accuracy", "train.train_loss"}, 3), (RUN_B, {"evaluate.eval_loss"}, 2)):
                paths = page.locator(f".chart[data-run='{run}'] svg path.series")
                assert paths.count() == len(metrics)
                assert {paths.nth(i).get_attribute("data-metric") for i in range(paths.count())} == metrics
                for i in range(paths.count()):
                    d = str(paths.nth(i).get_attribute("d"))
                    assert len(re.findall(r"[ML]", d)) == rounds and paths.nth(i).get_attribute("data-points") == str(rounds)
            accuracy = str(page.locator(f".chart[data-run='{RUN_A}'] path[data-metric='server.accuracy']").get_attribute("d"))
            ys = [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)", accuracy)]
            assert ys == sorted(ys, reverse=True)  # accuracy rises: the line goes up the SVG (y decreases)

            # The refused update's member and reason carry markup: shown as text, never run.
            cells = page.locator("#refusals tbody td").all_text_contents()
            assert INJECTED in cells and INJECTED_REASON in cells
            assert page.evaluate("window.__pwned") is None
            assert page.locator("img").count() == 0 and page.locator("script").count() == 1

            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, SCREENSHOTS / "status-page.png")
            page.locator(f".chart[data-run='{RUN_A}']").screenshot(path=str(tmp_path / "status-chart.png"))
            shutil.copyfile(tmp_path / "status-chart.png", SCREENSHOTS / "status-chart.png")
        finally:
            browser.close()
    assert problems == [], problems  # no script error, no CSP violation, no dialog


@pytest.mark.slow  # a real Chromium: seconds to start
def test_chromium_refuses_the_coordinator_without_its_key_pinned(federation: Running, tmp_path: Path) -> None:
    """The pin is what makes the page load: pinned to another key, Chromium refuses the coordinator's certificate."""
    sync_playwright = _browser_or_skip()
    other = base64.b64encode(hashlib.sha256(b"another key").digest()).decode()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={other}"],
        )  # fmt: skip
        try:
            with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
                browser.new_page().goto(f"{federation.url}/status")
        finally:
            browser.close()
