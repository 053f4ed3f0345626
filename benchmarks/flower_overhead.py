"""What attestation costs a Flower federation: the same app logic, data and rounds in plain Flower with TLS
(the baseline) and in the attested federation, back to back in one run.

    .venv/bin/python benchmarks/flower_overhead.py [--rounds 8] [--repeat 2] [--out DIR] [--json] [--stock-polls]

Both: a SuperLink and three SuperNodes on 127.0.0.1 over TLS, the digits example (logistic regression,
FedAvg with the same server-side DP), the same executor poll interval. The attested run adds what
fedattest adds: activation, the app gate in every process, Fleet-only listener, node registry, committed
(verified) reads, signed replies and their checks, and a signed round report to the coordinator per round.

Per-round time is the median (and the mean) interval between consecutive rounds, from the ServerApp's own
wall-clock stamps (so process start-up and app installation are not in it), pooled over ``--repeat``
pairs of runs done alternately. On two cores a round is mostly three ClientApp processes starting at once
(each imports Flower: about 1 s of CPU), so single intervals scatter by +-20 %; pool enough of them.
Also printed: the one-time activation cost per participant (an activation timed in this process, and
each launcher's start-to-activated time).

Flower's deployment engine polls on fixed clocks (hard-coded sleeps: the SuperNode's 3 s idle sleep, the
ServerApp's 3 s wait for replies, the SuperNode's 0.5 s wait for its ClientApp's reply, 1 s waits for
nodes), so a round lasts a whole number of those periods plus the work, and 50 ms more work can cost a
full period or nothing depending on phase. By default both runs shorten Flower's own fixed sleeps to
50 ms (the same patch, via a ``sitecustomize`` on PYTHONPATH of every process, applied only to sleeps
called from ``flwr`` modules) so the ratio measures the work; ``--stock-polls`` measures the engine as
shipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import socket
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))

import run_demo  # noqa: E402 - the example's federation driver

from fedattest.cli.flower import SIM_SUPERNODE_MRENCLAVE  # noqa: E402
from fedattest.coordinator.core import LIVE_SECONDS  # noqa: E402
from fedattest.participant import activate  # noqa: E402
from fedattest.pki import identity as ident  # noqa: E402
from fedattest.policy.approval import load_private_key  # noqa: E402
from fedattest.tee import SimulatedPlatform, WorkloadIdentity  # noqa: E402

STAMP = re.compile(r"fedattest-example: round (\d+): accuracy ([0-9.]+) \(t=([0-9.]+)\)")

PLAIN_CLIENT = '''"""Plain Flower ClientApp: the example's training, reading its files directly."""
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digits_fl.task import load_split, train

app = ClientApp()


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    x, y = load_split((Path(str(context.node_config["data-dir"])) / "train.npz").read_bytes())
    cfg = context.run_config
    new, loss = train(msg.content["arrays"].to_numpy_ndarrays(), x, y, float(cfg["learning-rate"]), int(cfg["local-epochs"]))
    content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
'''

PLAIN_SERVER = '''"""Plain Flower ServerApp: the example's FedAvg and server-side DP, with the rounds in the app."""
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from digits_fl.task import initial_weights, score_on_holdout

ROUNDS = {rounds}
app = ServerApp()


def score(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    loss, accuracy = score_on_holdout(server_round, arrays.to_numpy_ndarrays())
    return MetricRecord({{"accuracy": accuracy, "loss": loss}})


@app.main()
def main(grid: Grid, context: Context) -> None:
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
    strategy = DifferentialPrivacyServerSideFixedClipping(
        fedavg, noise_multiplier=0.01, clipping_norm=50.0, num_sampled_clients=3
    )
    strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_weights()), num_rounds=ROUNDS,
                   train_config=ConfigRecord({{}}), evaluate_fn=score)
'''


FAST_POLLS = """# Written by benchmarks/flower_overhead.py: Flower's fixed polls shortened, in every process.
import sys
import time

_sleep = time.sleep
_FIXED_POLLS = (0.5, 1, 3)


def _short_polls(seconds):
    caller = sys._getframe(1).f_globals.get("__name__", "")
    _sleep(0.05 if seconds in _FIXED_POLLS and caller.startswith("flwr") else seconds)


time.sleep = _short_polls
"""


def fast_polls(out: Path) -> dict[str, str]:
    site = out / "fast-polls"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(FAST_POLLS)
    return {"PYTHONPATH": str(site)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def per_round(stdout: str, rounds: int) -> tuple[list[float], list[float]]:
    stamps = {int(m[0]): (float(m[1]), float(m[2])) for m in STAMP.findall(stdout)}
    if sorted(stamps) != list(range(1, rounds + 1)):
        raise SystemExit(f"error: expected rounds 1..{rounds} in the ServerApp's output, got {sorted(stamps)}:\n{stdout[-3000:]}")
    times = [stamps[r][1] for r in range(1, rounds + 1)]
    return [b - a for a, b in itertools.pairwise(times)], [stamps[r][0] for r in range(1, rounds + 1)]


def tls_files(out: Path) -> tuple[Path, Path, Path]:
    """A CA and a localhost server certificate for the plain SuperLink (fedattest's helpers, no attestation)."""
    key, leaf_key = ident.new_key(), ident.new_key()
    ca = ident.make_root_ca(key, "plain-flower", ident.utcnow())
    leaf = ident.issue_leaf(ca_key=key, ca=ca, public_key=leaf_key.public_key(), common_name="superlink", uris=[],
                            dns_names=["localhost"], ips=["127.0.0.1"], now=ident.utcnow(),
                            lifetime=timedelta(days=1))  # fmt: skip
    pem = serialization.Encoding.PEM
    paths = out / "ca.pem", out / "superlink.pem", out / "superlink.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    fmt = serialization.PrivateFormat.PKCS8
    paths[2].write_bytes(leaf_key.private_bytes(pem, fmt, serialization.NoEncryption()))
    return paths


def plain_run(out: Path, rounds: int, extra_env: dict[str, str]) -> tuple[list[float], list[float]]:
    out.mkdir(parents=True)
    with run_demo.federation(out) as fed:
        env, procs = {**fed["env"], **extra_env}, fed["procs"]
        procs.env = env
        run_demo.run([sys.executable, str(run_demo.HERE / "prepare_data.py"), str(out / "data"), "--holdout",
                      str(out / "holdout.json")], env)  # fmt: skip
        app = out / "plain-app"
        skip = shutil.ignore_patterns(*run_demo.NOT_IN_APP)
        shutil.copytree(run_demo.HERE, app, ignore=skip)
        shutil.copyfile(out / "holdout.json", app / "digits_fl" / "holdout.json")
        (app / "digits_fl" / "client_app.py").write_text(PLAIN_CLIENT)
        (app / "digits_fl" / "server_app.py").write_text(PLAIN_SERVER.format(rounds=rounds))
        ca, cert, key = tls_files(out)
        port = free_port()
        procs.start("superlink", [str(run_demo.BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca), "--ssl-certfile",
                                  str(cert), "--ssl-keyfile", str(key), "--host", "127.0.0.1", "--port", str(port),
                                  "--disable-runtime-dependency-installation"])  # fmt: skip
        for h in run_demo.HOSPITALS:
            procs.start(h, [str(run_demo.BIN / "flower-supernode"), "--superlink", f"localhost:{port}", "--root-certificates",
                            str(ca), "--node-config", f"data-dir='{out / 'data' / h}'", "--port", str(free_port())])  # fmt: skip
        run_demo.flwr_config(out / "flwr-cli", f"localhost:{port}", ca)
        # Readiness, not a fixed sleep: the SuperLink took 3-7 s to open its port on a busy machine.
        run_demo.wait_for("the plain SuperLink to listen", lambda: _listening(port), timeout=120, procs=procs, name="superlink")
        done = run_demo.run([str(run_demo.BIN / "flwr"), "run", str(app), "attested", "--stream"], env, timeout=900)
        (out / "logs" / "flwr-run.log").write_text(done.stdout + done.stderr)
        return per_round(done.stdout, rounds)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def attested_run(out: Path, rounds: int, extra_env: dict[str, str]) -> tuple[list[float], list[float], dict[str, Any]]:
    out.mkdir(parents=True)
    with run_demo.federation(out) as fed:
        env, procs = {**fed["env"], **extra_env}, fed["procs"]
        procs.env = env
        t0 = time.monotonic()
        started = run_demo.start_attested(out, procs, env, rounds=rounds)
        launch = time.monotonic() - t0
        done = run_demo.run([str(run_demo.BIN / "flwr"), "run", str(started.app_dir), "attested", "--stream"], env, timeout=900)
        (out / "logs" / "flwr-run.log").write_text(done.stdout + done.stderr)
        intervals, accuracy = per_round(done.stdout, rounds)
        # One activation, timed in this process: new key, quote, claims, TLS to the coordinator, verification, issue.
        # hospital-a's running SuperNode is stopped first, and its identity left to stop counting as running: the
        # coordinator refuses a second live activation of a member (a launcher started twice).
        procs.stop("hospital-a")
        time.sleep(LIVE_SECONDS + 1)
        platform = SimulatedPlatform.load(out / "platform")
        tee = platform.tee(WorkloadIdentity(bytes.fromhex(SIM_SUPERNODE_MRENCLAVE), b"\x00" * 32))
        timings = []
        for i in range(3):
            t = time.perf_counter()
            activate(started.url, started.root_ca.read_text(), "hospital-a", tee, out / f"timed-activation-{i}",
                     enrolment_key=load_private_key((out / "keys" / "hospital-a.key").read_bytes()))  # fmt: skip
            timings.append(time.perf_counter() - t)
        launchers = {name: float(m[-1]) for name in ("superlink", *run_demo.HOSPITALS)
                     if (m := re.findall(r"ACTIVATED: .* in ([0-9.]+) s", procs.log(name)))}  # fmt: skip
        return intervals, accuracy, {"activation_s": statistics.median(timings), "launcher_activation_s": launchers,
                                     "setup_s": launch}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per run (at least 3; intervals = rounds - 1)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="pairs of runs, interleaved plain/attested so drift hits both alike; intervals are pooled",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output" / "flower-overhead")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--stock-polls", action="store_true", help="keep Flower's fixed polls (see above)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be between 1 and 20")
    shutil.rmtree(args.out, ignore_errors=True)
    extra_env = {} if args.stock_polls else fast_polls(args.out)
    plain: list[float] = []
    attested: list[float] = []
    for i in range(args.repeat):
        print(f"== pair {i + 1} of {args.repeat}: plain Flower, then the attested federation", file=sys.stderr)
        intervals, plain_acc = plain_run(args.out / f"plain-{i}", args.rounds, extra_env)
        plain += intervals
        intervals, attested_acc, once = attested_run(args.out / f"attested-{i}", args.rounds, extra_env)
        attested += intervals
    p, a = statistics.median(plain), statistics.median(attested)
    pm, am = statistics.fmean(plain), statistics.fmean(attested)
    result = {
        "rounds": args.rounds, "repeat": args.repeat, "polls": "stock" if args.stock_polls else "50 ms",
        "plain_round_s": p, "attested_round_s": a, "ratio": a / p, "ratio_of_means": am / pm,
        "plain_intervals_s": plain, "attested_intervals_s": attested,
        "plain_final_accuracy": plain_acc[-1], "attested_final_accuracy": attested_acc[-1], **once,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    polls = "Flower's stock polls" if args.stock_polls else "Flower's fixed polls shortened to 50 ms in both runs"
    print(f"per-round time over {len(plain)} intervals each ({args.repeat} interleaved pairs of runs; {polls}):")
    print("                          median    ratio     mean    ratio    spread (quartiles)")
    for name, xs, median, mean in (("plain Flower + TLS", plain, p, pm), ("attested federation", attested, a, am)):
        q = statistics.quantiles(xs, n=4)
        print(f"  {name:<22}{median:7.3f} s  {median / p:6.3f}x  {mean:6.3f} s  {mean / pm:6.3f}x   {q[0]:.2f} .. {q[2]:.2f} s")
    print(f"  target <= 1.05x (median): {'met' if a / p <= 1.05 else 'MISSED'}")
    print(f"final accuracy (last pair): plain {plain_acc[-1]:.3f}, attested {attested_acc[-1]:.3f}")
    launchers = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in once["launcher_activation_s"].items())
    print(f"one-time cost per participant: activation {once['activation_s'] * 1000:.0f} ms (timed here, median of 3);"
          f" in the launchers: {launchers}")  # fmt: skip
    print(f"(whole attested set-up: platform, data commitments, app builds, policy, coordinator, four activations:"
          f" {once['setup_s']:.1f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
