"""Separate hosts on the simulated TEE: `sim add-host` issues a platform per host under one authority, with
none of the authority's private keys; every host's quotes verify under the one root and collateral, a host
serves its collateral until it expires and then fails closed, and another authority's host is refused."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedattest.attestation import attest
from fedattest.cli import app
from fedattest.dcap.result import TcbStatus
from fedattest.errors import TeeError
from fedattest.policy.appraisal import ReferenceValues
from fedattest.tee import Scenario, SimulatedPlatform
from fedattest.tee.simulated import trust_root
from tests.conftest import assert_one_line_error
from tests.test_sim import IDENTITY, NOW, REPORT_DATA, verifier

ACCEPT_SIMULATED = ReferenceValues(mrenclave=[IDENTITY.mr_enclave], allow_simulation=True)
AUTHORITY_KEYS = {"root_ca.key", "pck_ca.key", "tcb_signing.key"}
runner = CliRunner()


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path_factory.mktemp("authority") / "plat", now=NOW)


def test_a_host_holds_its_own_keys_and_only_public_authority_files(authority: SimulatedPlatform, tmp_path: Path) -> None:
    host = authority.add_host(tmp_path / "host", now=NOW)
    directory = tmp_path / "host"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = {p.name for p in directory.iterdir()}
    assert names == {"platform.json", "root_ca.der", "root_ca.pem", "pck_ca.pem", "tcb_signing.pem", "pck.pem",
                     "pck.key", "attestation.key", "sealing.key", "collateral.json"}  # fmt: skip
    assert not names & AUTHORITY_KEYS
    for name in ("pck.key", "attestation.key", "sealing.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    for name in names - {"pck.key", "attestation.key", "sealing.key"}:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644, name
    # Its own platform: another PPID, PCK key and sealing secret; the authority's root, TCB and scenario.
    assert host.description.kind == "host" and host.description.ppid != authority.description.ppid
    assert host.pck_certificate.public_key() != authority.pck_certificate.public_key()
    assert host.sealing_secret() != authority.sealing_secret()
    assert host.root_ca_der == authority.root_ca_der and host.pck_extension.fmspc == authority.pck_extension.fmspc
    assert host.pck_certificate.issuer == authority.pck_certificate.issuer
    assert json.loads((directory / "platform.json").read_text())["kind"] == "host"
    assert "kind" not in json.loads((authority.directory / "platform.json").read_text())  # as before hosts existed
    loaded = SimulatedPlatform.load(directory)
    assert loaded.description == host.description and not loaded.is_authority
    assert (directory / "root_ca.pem").read_bytes() == (authority.directory / "root_ca.pem").read_bytes()
    for path in directory.iterdir():  # no private key of the authority's in any file, under any name
        for key in AUTHORITY_KEYS:
            assert (authority.directory / key).read_bytes() not in path.read_bytes(), (path, key)


def test_quotes_of_two_hosts_verify_under_the_one_root_and_collateral(authority: SimulatedPlatform, tmp_path: Path) -> None:
    a = SimulatedPlatform.load(authority.add_host(tmp_path / "a", now=NOW).directory)
    b = SimulatedPlatform.load(authority.add_host(tmp_path / "b", now=NOW).directory)
    collateral = a.collateral(NOW)  # signed by the authority when it issued a; b holds its own copy
    for host in (a, b, authority):
        result = verifier(a).verify(host.tee(IDENTITY).quote(REPORT_DATA), collateral, at=NOW)
        assert result.tcb_status is TcbStatus.UP_TO_DATE and result.simulated
    # A verifier that holds only b's public files (root and collateral) checks a's quote too.
    outcome = attest(a.tee(IDENTITY).quote(REPORT_DATA), collateral=b.collateral(NOW), verifier=verifier(b), at=NOW,
                     reference=ACCEPT_SIMULATED)  # fmt: skip
    assert outcome.accepted, outcome.reasons


def test_a_host_serves_its_collateral_until_it_expires_then_fails_closed(authority: SimulatedPlatform, tmp_path: Path) -> None:
    host = authority.add_host(tmp_path / "h", now=NOW)
    given = host.collateral(NOW)
    assert host.collateral(NOW + timedelta(days=29, hours=23)) == given  # no refresh margin: it has nothing newer
    later = NOW + timedelta(days=31)
    for platform in (host, SimulatedPlatform.load(tmp_path / "h")):
        with pytest.raises(TeeError, match=r"collateral expired .*: re-issue with 'fedattest sim collateral") as err:
            platform.collateral(later)
        assert "\n" not in str(err.value)
    with pytest.raises(TeeError, match="cannot sign collateral"):
        host.issue_collateral(later)
    # The operator copies fresh collateral from the authority in; the host's own keys stay.
    (tmp_path / "h" / "collateral.json").write_text(authority.issue_collateral(later).to_json())
    fresh = host.collateral(later)
    assert verifier(host).verify(host.tee(IDENTITY).quote(REPORT_DATA), fresh, at=later).tcb_status is TcbStatus.UP_TO_DATE


def test_a_host_issues_no_hosts_and_keeps_the_authoritys_scenario(tmp_path: Path) -> None:
    authority = SimulatedPlatform.create(tmp_path / "auth", Scenario.OUT_OF_DATE, now=NOW)
    host = authority.add_host(tmp_path / "h", now=NOW)
    assert host.scenario is Scenario.OUT_OF_DATE
    result = verifier(host).verify(host.tee(IDENTITY).quote(REPORT_DATA), host.collateral(NOW), at=NOW)
    assert result.tcb_status is TcbStatus.OUT_OF_DATE
    with pytest.raises(TeeError, match="a host platform cannot issue others"):
        SimulatedPlatform.load(tmp_path / "h").add_host(tmp_path / "h2")
    with pytest.raises(TeeError, match="already exists"):
        authority.add_host(tmp_path / "h")
    assert not (tmp_path / "h2").exists()


def test_another_authoritys_host_is_refused(authority: SimulatedPlatform, tmp_path: Path) -> None:
    other = SimulatedPlatform.create(tmp_path / "other", now=NOW)
    foreign = other.add_host(tmp_path / "foreign", now=NOW)
    ours = authority.add_host(tmp_path / "ours", now=NOW)
    # A verifier with our root and collateral refuses the foreign host's quote: its PCK chain ends at another root.
    outcome = attest(foreign.tee(IDENTITY).quote(REPORT_DATA), collateral=ours.collateral(NOW), verifier=verifier(ours),
                     at=NOW, reference=ACCEPT_SIMULATED)  # fmt: skip
    assert not outcome.accepted and outcome.step == "pck_chain", (outcome.step, outcome.reasons)
    assert "does not end at the trust root" in outcome.reasons[0]
    # A host directory whose files mix two authorities does not load at all.
    (tmp_path / "ours" / "pck_ca.pem").write_bytes((tmp_path / "other" / "pck_ca.pem").read_bytes())
    with pytest.raises(TeeError, match=r"pck\.pem: not issued by pck_ca\.pem"):
        SimulatedPlatform.load(tmp_path / "ours")


def test_the_trust_root_is_read_from_public_files_only(authority: SimulatedPlatform, tmp_path: Path) -> None:
    public = tmp_path / "auditor"
    public.mkdir()
    for name in ("platform.json", "root_ca.pem"):
        (public / name).write_bytes((authority.directory / name).read_bytes())
    assert trust_root(public) == authority.root_ca
    with pytest.raises(TeeError, match="not a simulated platform"):
        trust_root(tmp_path)


def test_cli_add_host(tmp_path: Path) -> None:
    assert runner.invoke(app, ["sim", "init", str(tmp_path / "auth")]).exit_code == 0
    done = runner.invoke(app, ["sim", "add-host", "--authority", str(tmp_path / "auth"), str(tmp_path / "host"), "--json"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "host"
    assert not {p.name for p in (tmp_path / "host").iterdir()} & AUTHORITY_KEYS
    done = runner.invoke(app, ["sim", "quote", "-p", str(tmp_path / "host"), "--mrenclave", "ab" * 32, "--mrsigner", "cd" * 32,
                               "-o", str(tmp_path / "q.bin")])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    # A verifier with only the public files: the authority's root and a host's collateral.
    done = runner.invoke(app, ["quote", "verify", str(tmp_path / "q.bin"), "--collateral",
                               str(tmp_path / "host" / "collateral.json"), "--root-ca", str(tmp_path / "auth" / "root_ca.der"),
                               "--allow-simulation"])  # fmt: skip
    assert done.exit_code == 0, done.stdout + done.stderr
    done = runner.invoke(app, ["sim", "collateral", "-p", str(tmp_path / "host"), "-o", str(tmp_path / "c.json")])
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "c.json").read_bytes().strip() == (tmp_path / "host" / "collateral.json").read_bytes().strip()
    for args, needle in (
        (["--authority", str(tmp_path / "host"), str(tmp_path / "h2")], "a host platform cannot issue others"),
        (["--authority", str(tmp_path / "nope"), str(tmp_path / "h3")], "not a simulated platform"),
        (["--authority", str(tmp_path / "auth"), str(tmp_path / "host")], "already exists"),
    ):
        assert_one_line_error(runner.invoke(app, ["sim", "add-host", *args]), 2, needle)
    done = runner.invoke(app, ["sim", "collateral", "-p", str(tmp_path / "host"), "--at", "2099-01-01T00:00:00Z"])
    assert_one_line_error(done, 2, "collateral expired")
    assert "--authority" in runner.invoke(app, ["sim", "add-host", "--help"]).stdout
