"""Benchmark: SIMI and SIMICE over real processes, TLS and real latency, beside in-process runs.

    .venv/bin/python bench/network.py                # peer-shaped and large jobs at 0, 50, 100 ms
    .venv/bin/python bench/network.py --rtt 50       # at 50 ms round-trip time only
    .venv/bin/python bench/network.py --quick        # the peer-shaped jobs, 20,000-row large ones
    .venv/bin/python bench/network.py --shape peer --repeat 3
    .venv/bin/python bench/network.py --secure       # with secure_aggregation (masked sums)

Central and each remote site run as their own `fip` processes (central over TLS, each site
portal with its WebSocket worker), set up as in the end-to-end tests. Between the sites and
central sits a delay relay (tests/latency.py) that holds every chunk RTT/2 in each direction,
keeping order and throughput: this kernel has no ``netem``. As root, central runs in a network
namespace of its own (``fipbench-<pid>``, a veth pair to this one) and the relay is the only
path to it; otherwise (not root, or no ``ip netns``) everything runs on loopback with the same
relay in the way, which measures the same round-trip cost. The output says which mode ran.
The namespace, the veth pair and every process are removed at the end, on Ctrl-C or error too.

Jobs:

- ``peer``: the shape of the upstream peer's SIMICE test (PYMIDN): 3 sites (central and two
  remotes) x 3,000 rows x 10 columns, SIMICE with a binary (b, logistic) and a continuous (g1,
  Gaussian) target, M = 12, 7 cycles before the first imputation and 6 between; SIMI of g1.
- ``large``: ``--sites`` x ``--rows`` x ``--columns`` (default 4 x 250,000 x 20), SIMI of g1 and
  SIMICE of g1, g2, b with the default cycles, M = ``--imputations``.

For every job and round-trip time it prints the seconds from the job's start at central (the
last site ready and central's data in) to its results, the round trips and ms per round trip
from the job's report, the same job in one process (``fip simulate``'s in-memory transport),
and the ratio network / (in-process + round trips x RTT): 1.0 would be a network that costs
nothing but its latency. Times are medians of ``--repeat`` runs. The last column, the network
path's own cost a round trip, is the median over the runs of (network - in-process) / round
trips - RTT, in ms: in-process and network runs alternate, each network run set against the
in-process run just before it, so that the machine's load (this one is shared) weighs on both
alike. It prints numbers; it asserts nothing (but that each network run makes the round trips
of the in-process run beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trustme  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from engine import QUICK_ROWS, Layout, make_tables  # noqa: E402
from namespace import Namespace, netem_available  # noqa: E402

from federation.data import Table  # noqa: E402
from federation.outputs import dataset_csv  # noqa: E402
from federation.registry import Registry  # noqa: E402
from federation.simulation import simulate  # noqa: E402
from tests.federation_env import ADMIN_PASSWORD, Federation, Mailbox, add_site  # noqa: E402
from tests.latency import DelayRelay  # noqa: E402
from tests.processes import FIP, Process, free_port, wait_for  # noqa: E402

DEFAULT_RTTS = (0.0, 50.0, 100.0)


@dataclass(frozen=True)
class Job:
    shape: str
    algorithm: str
    targets: tuple[tuple[str, str], ...]
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Shape:
    name: str
    sites: int
    rows: int
    columns: int
    jobs: tuple[Job, ...]


def shapes(args: argparse.Namespace) -> list[Shape]:
    peer = Shape(
        "peer",
        sites=3,
        rows=3_000,
        columns=10,
        jobs=(
            Job("peer", "SIMI", (("g1", "gaussian"),), {"imputations": 12}),
            Job(
                "peer",
                "SIMICE",
                (("b", "logistic"), ("g1", "gaussian")),
                {
                    "imputations": 12,
                    "iteration_before_first_imputation": 7,
                    "iteration_between_imputations": 6,
                    "chains": "single",  # the peer's one chain
                },
            ),
        ),
    )
    m = {"imputations": args.imputations}
    large = Shape(
        "large",
        sites=args.sites,
        rows=QUICK_ROWS if args.quick else args.rows,
        columns=args.columns,
        jobs=(
            Job("large", "SIMI", (("g1", "gaussian"),), m),
            Job("large", "SIMICE", (("g1", "gaussian"), ("g2", "gaussian"), ("b", "logistic")), m),
        ),
    )
    chosen = {"peer": [peer], "large": [large], "both": [peer, large]}[args.shape]
    if args.secure:
        chosen = [
            dataclasses.replace(
                shape,
                jobs=tuple(
                    dataclasses.replace(j, parameters={**j.parameters, "secure_aggregation": True})
                    for j in shape.jobs
                ),
            )
            for shape in chosen
        ]
    return chosen


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rtt",
        type=float,
        nargs="+",
        default=list(DEFAULT_RTTS),
        metavar="MS",
        help="round-trip times between the sites and central, in ms (default 0 50 100)",
    )
    parser.add_argument(
        "--shape", choices=("peer", "large", "both"), default="both", help="which jobs to run"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job (median)")
    parser.add_argument("--rows", type=int, default=250_000, help="rows per site (large)")
    parser.add_argument("--sites", type=int, default=4, help="sites including central (large)")
    parser.add_argument("--columns", type=int, default=20, help="columns (large)")
    parser.add_argument("--imputations", type=int, default=5, help="M (large)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROWS:,} rows per site in the large jobs"
    )
    parser.add_argument(
        "--secure", action="store_true", help="run the jobs with secure_aggregation (masked sums)"
    )
    parser.add_argument(
        "--loopback",
        action="store_true",
        help="no network namespace even as root: the relay on loopback (as when not root)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if any(rtt < 0 for rtt in args.rtt):
        parser.error("--rtt must not be negative")
    return args


# ---------------------------------------------------------------- the federation


@dataclass
class Delayed:
    """A federation whose sites reach central through ``relay`` (the delay under test); the
    benchmark itself talks to central through ``direct``, a relay without delay."""

    federation: Federation
    relay: DelayRelay
    mode: str


@contextmanager
def delayed_federation(
    root: Path, remote: Sequence[str], *, loopback: bool = False
) -> Iterator[Delayed]:
    """Central (in a namespace of its own unless ``loopback`` or not possible), a delay relay
    to it and ``remote`` site portals that reach central only through the relay; everything
    stopped and removed on exit."""
    with ExitStack() as stack:
        namespace = "asked for by --loopback" if loopback else Namespace.create()
        if isinstance(namespace, Namespace):
            stack.callback(namespace.remove)
            netem = "netem available" if netem_available(namespace) else "no netem in this kernel"
            mode = (
                f"namespace mode: central in network namespace {namespace.name} "
                f"({namespace.inside_address}), sites on this host, {netem}"
            )
            listen, smtp_host = namespace.inside_address, namespace.host_address
        else:
            mode = (
                f"loopback mode, no network namespace ({namespace}): central and sites on "
                "127.0.0.1, the delay relay between them"
            )
            listen, smtp_host = "127.0.0.1", "127.0.0.1"

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")  # the sites and the bench use the relays
        tls = root / "tls"
        tls.mkdir(parents=True)
        ca_file, certfile, keyfile = tls / "ca.pem", tls / "server.pem", tls / "server-key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))

        mailbox = Mailbox()
        smtp = Controller(mailbox, hostname=smtp_host, port=free_port())
        smtp.start()
        stack.callback(smtp.stop)
        port = free_port()
        relay = DelayRelay(listen, port)
        stack.callback(relay.close)
        direct = DelayRelay(listen, port)
        stack.callback(direct.close)
        central_dir = root / "central"
        (root / "tmp").mkdir(exist_ok=True)
        env = {
            "TMPDIR": str(root / "tmp"),
            "FIP_CENTRAL_DATA_DIR": str(central_dir),
            "FIP_CENTRAL_ARGON2_TIME_COST": "1",
            "FIP_CENTRAL_ARGON2_MEMORY_KIB": "64",
            "FIP_CENTRAL_REGISTER_REQUESTS_PER_HOUR": "10000",
            "FIP_CENTRAL_SMTP_HOST": smtp_host,
            "FIP_CENTRAL_SMTP_PORT": str(smtp.port),
            "FIP_CENTRAL_SMTP_SECURITY": "none",
            "FIP_CENTRAL_SITE_GRACE_SECONDS": "6",
            "FIP_CENTRAL_TOKEN_REQUESTS_PER_MINUTE": "10000",
            "FIP_CENTRAL_PUBLIC_URL": f"https://127.0.0.1:{relay.port}",
        }
        subprocess.run(
            [FIP, "central", "create-admin", "--username", "admin"]
            + ["--email", "admin@central.example", "--password", ADMIN_PASSWORD],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            timeout=120,
        )
        command = [FIP, "central", "--host", listen, "--port", str(port)]
        command += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
        if isinstance(namespace, Namespace):
            command = namespace.command(*command)
        central = Process(command[1:], fip=command[0], log=root / "central.log", env=env)
        stack.callback(central.stop)
        federation = Federation(
            root=root,
            central_url=f"https://127.0.0.1:{relay.port}",
            ca_file=ca_file,
            central_dir=central_dir,
            central=central,
            mailbox=mailbox,
        )
        central.wait_until_up(f"{federation.central_url}/health", verify=federation.tls())
        try:
            for name in remote:  # registered, signed in and connected through the delay relay
                federation.sites.append(add_site(federation, name))
        finally:
            for site in federation.sites:
                stack.callback(site.process.stop)
        admin = dataclasses.replace(federation, central_url=f"https://127.0.0.1:{direct.port}")
        yield Delayed(federation=admin, relay=relay, mode=mode)


# ---------------------------------------------------------------- one job


def _seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


def run_job(
    fed: Federation,
    job: Job,
    columns: Sequence[str],
    files: dict[str, bytes],
) -> tuple[float, dict[str, Any]]:
    """One network run: its seconds from start to results, and its report."""
    with fed.admin() as admin:
        created = admin.post(
            "/api/jobs",
            json={
                "name": f"bench {job.shape} {job.algorithm}",
                "algorithm": job.algorithm,
                "columns": list(columns),
                "participants": [s.site_id for s in fed.sites],
                "targets": [{"column": c, "type": t} for c, t in job.targets],
                "imputations": job.parameters["imputations"],
                "parameters": {k: v for k, v in job.parameters.items() if k != "imputations"},
                "seed": 1,
            },
        )
        created.raise_for_status()
    job_id = created.json()["id"]
    for site in fed.sites:
        with site.api() as api:
            api.post(
                f"/api/jobs/{job_id}/data", files={"file": ("data.csv", files[site.name])}
            ).raise_for_status()
            api.post(f"/api/jobs/{job_id}/start").raise_for_status()
    with fed.admin() as admin:
        admin.post(
            f"/api/jobs/{job_id}/data", files={"file": ("central.csv", files["central"])}
        ).raise_for_status()

    with fed.admin() as admin:  # one client polls (the job's times are central's own)

        def finished() -> bool:
            state = admin.get(f"/api/jobs/{job_id}").json()["state"]
            return state not in ("waiting", "running")

        wait_for(finished, seconds=3600, every=0.5, what=f"{job.algorithm} to finish")
        done = admin.get(f"/api/jobs/{job_id}").json()
        if done["state"] != "completed":
            raise SystemExit(f"{job.algorithm} ended {done['state']}: {done['message']}")
        report: dict[str, Any] = admin.get(f"/api/jobs/{job_id}/report").json()
    return _seconds(done), report


def in_process(job: Job, tables: dict[str, Table], site_ids: dict[str, str]) -> tuple[float, int]:
    """The same job with ``fip simulate``'s in-memory transport: seconds and round trips."""
    started = time.perf_counter()
    result = asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get(job.algorithm),
            central=tables["central"],
            sites={site_ids[name]: tables[name] for name in site_ids},
            targets=list(job.targets),
            params=dict(job.parameters),
            seed=1,
        )
    )
    return time.perf_counter() - started, int(result.report["round_trips"])


# ---------------------------------------------------------------- main


@dataclass
class Row:
    job: Job
    rtt: float
    network: float
    trips: int
    local: float
    overhead: float
    """ms a round trip beyond the latency: the median over the runs of (network - in-process)
    / round trips - RTT, each network run against the in-process run just before it."""

    @property
    def ratio(self) -> float:
        return self.network / (self.local + self.trips * self.rtt / 1000)


def print_rows(rows: Sequence[Row]) -> None:
    header = (
        "job            RTT ms  network s  round trips  ms/round trip  in-process s  "
        "in-process + trips x RTT s  ratio  overhead ms/round trip"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        expected = row.local + row.trips * row.rtt / 1000
        name = f"{row.job.shape} {row.job.algorithm}"
        print(
            f"{name:<13}  {row.rtt:6.0f}  {row.network:9.2f}  {row.trips:11d}  "
            f"{1000 * row.network / row.trips:13.1f}  {row.local:12.2f}  {expected:26.2f}  "
            f"{row.ratio:4.2f}x  {row.overhead:22.2f}"
        )


def run_shape(shape: Shape, args: argparse.Namespace, root: Path) -> tuple[list[Row], str]:
    """Every job of ``shape`` at every RTT, and the mode it ran in (namespace or loopback)."""
    layout = Layout.of(shape.columns)
    remote = [f"site{k}" for k in range(1, shape.sites)]
    tables: dict[str, dict[str, Table]] = {}
    files: dict[str, dict[str, bytes]] = {}
    for job in shape.jobs:  # each job's data miss only its own targets
        targets = [c for c, _ in job.targets]
        tables[job.algorithm] = make_tables(layout, shape.rows, shape.sites, args.seed, targets)
        files[job.algorithm] = {
            site: dataset_csv(table.columns, table.values)
            for site, table in tables[job.algorithm].items()
        }
    print(
        f"{shape.name}: {shape.sites} sites (central + {shape.sites - 1} site portals) x "
        f"{shape.rows:,} rows x {shape.columns} columns"
        + (", secure aggregation" if args.secure else ""),
        flush=True,
    )
    rows = []
    with delayed_federation(root / shape.name, remote, loopback=args.loopback) as delayed:
        print(f"  {delayed.mode}", flush=True)
        fed = delayed.federation
        site_ids = {s.name: s.site_id for s in fed.sites}
        for job in shape.jobs:  # warm up (imports, the algorithm's modules) on a few rows
            few = {
                site: dataclasses.replace(table, values=table.values[:500])
                for site, table in tables[job.algorithm].items()
            }
            in_process(job, few, site_ids)
        for job in shape.jobs:
            # In-process and network runs alternate (each repeat: one in-process run, then the
            # network run at every RTT), so that a change in the machine's load between runs
            # weighs on both sides of each difference alike.
            local_runs: list[tuple[float, int]] = []
            runs: dict[float, list[tuple[float, dict[str, Any]]]] = {rtt: [] for rtt in args.rtt}
            for _ in range(args.repeat):
                local_runs.append(in_process(job, tables[job.algorithm], site_ids))
                for rtt in args.rtt:
                    delayed.relay.rtt_ms = rtt
                    runs[rtt].append(run_job(fed, job, layout.columns, files[job.algorithm]))
            local = statistics.median(seconds for seconds, _ in local_runs)
            for rtt in args.rtt:
                pairs = list(zip(local_runs, runs[rtt], strict=True))
                for (_, local_trips), (_, report) in pairs:
                    trips = int(report["round_trips"])
                    assert trips == local_trips, "the same job takes the same round trips"
                overhead = statistics.median(
                    1000 * (network - seconds) / trips - rtt
                    for (seconds, trips), (network, _) in pairs
                )
                row = Row(
                    job,
                    rtt,
                    statistics.median(seconds for seconds, _ in runs[rtt]),
                    int(statistics.median(trips for _, trips in local_runs)),
                    local,
                    overhead,
                )
                print(
                    f"  {job.algorithm} at {rtt:g} ms: {row.network:.2f} s, {row.trips} round "
                    f"trips, {row.ratio:.2f}x, {row.overhead:.2f} ms a round trip beyond RTT",
                    flush=True,
                )
                rows.append(row)
    return rows, delayed.mode


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    # Ctrl-C unwinds (everything made is removed), even when started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = Path(tempfile.mkdtemp(prefix="fip-bench-"))
    rows = []
    modes = set()
    for shape in shapes(args):
        ran, mode = run_shape(shape, args, root)
        rows += ran
        modes.add(mode.split(":")[0])
    print()
    print(
        f"{', '.join(sorted(modes))}; medians of {args.repeat} run(s); "
        "ratio = network / (in-process + round trips x RTT)"
    )
    print_rows(rows)


if __name__ == "__main__":
    main()
