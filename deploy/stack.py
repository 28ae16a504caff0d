"""Start, check and stop the local stack: Kafka (KRaft), FerretDB, and optionally the worker and API.

Everything binds 127.0.0.1, keeps its data under ``.state/`` and its build artefacts in a cache
folder outside git (``$JOBSTREAM_CACHE``, default ``~/.cache/jobstream``), so a second clone or a
second ``make test`` reuses them. Each process we start has a PID file; ``down`` stops exactly
those PIDs. When ``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGO_URL`` are set, nothing of that kind is
started: the user's services are used instead.

``BROKERS=3`` (SPEC §7) starts a KRaft cluster of three combined broker+controller nodes instead
of the single node: node *i* (1..N) listens on ``JOBSTREAM_KAFKA_PORT + 2(i-1)`` (clients) and
``JOBSTREAM_KAFKA_CONTROLLER_PORT + 2(i-1)`` (its controller), keeps its data in ``.state/kafka-i/``,
its log in ``.state/logs/kafka-i.log`` and its PID in ``.state/kafka-i.pid``; the three controllers
form the quorum. ``BROKERS=1`` (the default) is the single node, ``kafka``, as before.

Usage: python deploy/stack.py up [--app] | down | status | env
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess  # noqa: S404 - this module's job is starting processes
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("JOBSTREAM_STATE", ROOT / ".state"))
CACHE = Path(os.environ.get("JOBSTREAM_CACHE", Path.home() / ".cache" / "jobstream"))
LOGS = STATE / "logs"
KAFKA_VERSION = "4.1.1"
# The local services' ports: fixed defaults a user can move (a test runs a second stack beside the suite's).
KAFKA_PORT = int(os.environ.get("JOBSTREAM_KAFKA_PORT", "9092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("JOBSTREAM_KAFKA_CONTROLLER_PORT", str(KAFKA_PORT + 1)))
MONGO_PORT = int(os.environ.get("JOBSTREAM_MONGO_PORT", "27017"))
API_PORT = int(os.environ.get("API_PORT", "8080"))
WORKER_METRICS_PORT = int(os.environ.get("WORKER_METRICS_PORT", "9464"))
LOCAL_KAFKA = f"127.0.0.1:{KAFKA_PORT}"
MAX_BROKERS = 9
CLUSTER_HEAP = "512m"  # a node of the local cluster: three of them share the machine with the pipeline
LOCAL_MONGO = f"mongodb://127.0.0.1:{MONGO_PORT}"


class StackError(RuntimeError):
    """A service could not be set up or started; the message says what to look at."""


@dataclass(frozen=True)
class Service:
    """One process the stack owns: how to build its command line and how to tell it is ready."""

    name: str
    port: int
    command: Callable[[], list[str]]
    ready: Callable[[], bool]
    timeout: float
    env: tuple[tuple[str, str], ...] = ()  # this process's own settings, over the shared environment

    @property
    def pid_file(self) -> Path:
        return STATE / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOGS / f"{self.name}.log"


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> None:
    """Run a set-up command; on failure raise with its output so the user sees the real error."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]  # noqa: S603
    if result.returncode != 0:
        raise StackError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")


# --- Kafka -------------------------------------------------------------------------------------


def kafka_libs() -> Path:
    """Fetch the broker's runtime jars with Maven once; later calls reuse the cache."""
    libs = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    log(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (first run only)")
    staging = libs.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.monotonic()
    run(
        [
            "mvn", "-q", "-B", "-f", str(ROOT / "deploy" / "kafka" / "pom.xml"), "package",
            f"-Dkafka.version={KAFKA_VERSION}", f"-Dkafka.libs={staging}",
        ]
    )
    shutil.rmtree(ROOT / "deploy" / "kafka" / "target", ignore_errors=True)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    log(f"kafka jars ready in {libs} ({time.monotonic() - t0:.0f}s)")
    return libs


def kafka_config(port: int = KAFKA_PORT, controller_port: int = KAFKA_CONTROLLER_PORT,
                 state_dir: Path = STATE / "kafka", *, node_id: int = 1, voters: str | None = None,
                 cluster_size: int = 1, cluster_id: str | None = None) -> Path:
    """Write a node's KRaft configuration and format its storage once (``deploy/chaos.py`` runs its own).

    The single node by default; a node of a cluster of ``cluster_size`` combined broker+controller
    nodes with ``node_id`` and the quorum's ``voters`` (``id@host:port,...``), formatted with the
    cluster's shared ``cluster_id``. A cluster's internal topics (consumer offsets, transactions)
    and topics created by auto-creation get min(3, nodes) replicas and a min ISR of one less.
    """
    data = state_dir / "data"
    config = state_dir / "server.properties"
    data.mkdir(parents=True, exist_ok=True)
    replicas = min(3, cluster_size)
    min_isr = max(1, replicas - 1)
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node_id}",
                f"controller.quorum.voters={voters or f'{node_id}@127.0.0.1:{controller_port}'}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=8",
                "auto.create.topics.enable=true",
                f"offsets.topic.replication.factor={replicas}",
                "offsets.topic.num.partitions=8",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                *([f"default.replication.factor={replicas}", f"min.insync.replicas={min_isr}"] if cluster_size > 1 else []),
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "log.segment.bytes=134217728",
                "",
            ]
        )
    )
    (state_dir / "log4j2.properties").write_text(
        "\n".join(
            [
                "status = warn",
                "appender.out.type = Console",
                "appender.out.name = OUT",
                "appender.out.layout.type = PatternLayout",
                "appender.out.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.out.ref = OUT",
                "logger.kafka.name = kafka",
                "logger.kafka.level = WARN",
                "logger.apache.name = org.apache.kafka",
                "logger.apache.level = WARN",
                "logger.started.name = kafka.server.KafkaRaftServer",
                "logger.started.level = INFO",
                "",
            ]
        )
    )
    if not (data / "meta.properties").exists():
        # "--cluster-id=ID" in one argument: a random ID may begin with "-", which the tool would read as an option.
        cluster_id = cluster_id or new_cluster_id()
        run([*java_command(state_dir), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)])
        log(f"formatted KRaft storage in {data}")
    return config


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def java_command(state_dir: Path = STATE / "kafka", heap: str = "768m") -> list[str]:
    libs = kafka_libs()
    log4j = state_dir / "log4j2.properties"
    initial = "128m" if heap == CLUSTER_HEAP else "256m"
    return [
        "java", f"-Xms{initial}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*",
    ]


def kafka_command() -> list[str]:
    config = kafka_config()
    return [*java_command(), "kafka.Kafka", str(config)]


def kafka_ready(address: str = LOCAL_KAFKA, brokers: int = 1) -> bool:
    """A metadata request answered by the broker at ``address``, listing at least ``brokers`` brokers (a
    cluster node is ready once every node has registered: RF 3 is resolved from that count)."""
    return probe("import asyncio, aiokafka\n"
                 "async def main():\n"
                 f"    c = aiokafka.AIOKafkaClient(bootstrap_servers='{address}', request_timeout_ms=3000)\n"
                 "    try:\n"
                 "        await c.bootstrap()\n"
                 "        md = await c.fetch_all_metadata()\n"
                 f"        assert len(md.brokers()) >= {brokers}\n"
                 "    finally:\n"
                 "        await c.close()\n"
                 "asyncio.run(main())\n")


def broker_count() -> int:
    """``BROKERS`` (SPEC §6): Kafka nodes the local stack starts; default 1."""
    raw = os.environ.get("BROKERS", "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_BROKERS:
        raise StackError(f"BROKERS must be a whole number from 1 to {MAX_BROKERS}, got {raw!r}")
    return int(raw)


def node_port(index: int) -> int:
    """Client port of cluster node ``index`` (1-based)."""
    return KAFKA_PORT + 2 * (index - 1)


def node_controller_port(index: int) -> int:
    return KAFKA_CONTROLLER_PORT + 2 * (index - 1)


def cluster_id_file() -> Path:
    return STATE / "kafka-cluster.id"


def cluster_node_command(index: int, count: int) -> list[str]:
    """Node ``index`` of a ``count``-node cluster: its configuration written (storage formatted once), then its command."""
    state_dir = STATE / f"kafka-{index}"
    id_file = cluster_id_file()
    if not id_file.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new_cluster_id())
    voters = ",".join(f"{i}@127.0.0.1:{node_controller_port(i)}" for i in range(1, count + 1))
    config = kafka_config(node_port(index), node_controller_port(index), state_dir, node_id=index, voters=voters,
                          cluster_size=count, cluster_id=id_file.read_text().strip())
    return [*java_command(state_dir, CLUSTER_HEAP), "kafka.Kafka", str(config)]


def kafka_node(index: int, count: int) -> Service:
    """Node ``index`` (1-based) of the local ``count``-node cluster."""
    address = f"127.0.0.1:{node_port(index)}"
    return Service(f"kafka-{index}", node_port(index), lambda: cluster_node_command(index, count),
                   lambda: kafka_ready(address, count), timeout=180)


def kafka_services(count: int | None = None) -> list[Service]:
    """The Kafka processes of the stack: the single node, or the nodes of a ``BROKERS`` cluster."""
    count = broker_count() if count is None else count
    return [KAFKA] if count == 1 else [kafka_node(i, count) for i in range(1, count + 1)]


def started_kafka() -> list[Service]:
    """Every Kafka process of this stack with a PID file, whatever BROKERS was when it was started."""
    nodes = [kafka_node(i, MAX_BROKERS) for i in range(1, MAX_BROKERS + 1)]
    return [service for service in [KAFKA, *nodes] if service.pid_file.exists()]


def local_kafka() -> str:
    """The bootstrap servers of the local Kafka: every node's address."""
    return ",".join(f"127.0.0.1:{service.port}" for service in kafka_services())


# --- FerretDB ----------------------------------------------------------------------------------


FERRETDB_MODULE = "github.com/FerretDB/FerretDB@v1.24.0"
FERRETDB_SRC = ROOT / "deploy" / "ferretdb"


def ferretdb_patches() -> list[Path]:
    """The project's patch set (SPEC §7), applied in name order to FerretDB's module source."""
    return sorted((FERRETDB_SRC / "patches").glob("*.patch"))


def ferretdb_binary(patched: bool = True) -> Path:
    """Build the embedding program once per source version and patch set; the Go caches are reused.

    go.mod replaces the FerretDB module with ``./FerretDB``: a copy of the module from the Go
    module proxy, with ``patches/*.patch`` applied unless ``patched`` is False (FerretDB 1.24 as
    shipped, kept buildable so ``make bench-store`` can compare the two).
    """
    sources = [FERRETDB_SRC / f for f in ("go.mod", "go.sum", "main.go")] + (ferretdb_patches() if patched else [])
    digest = hashlib.sha256(b"".join([p.name.encode() + p.read_bytes() for p in sources])).hexdigest()[:12]
    variant = "patched" if patched else "shipped"
    binary = CACHE / f"ferretdb-{variant}-{digest}" / "jobstream-ferretdb"
    if binary.exists():
        return binary
    log(f"building FerretDB ({variant}, SQLite backend) from the Go module proxy (first run only)")
    t0 = time.monotonic()
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    listing = subprocess.run(  # noqa: S603
        ["go", "mod", "download", "-json", FERRETDB_MODULE], cwd=FERRETDB_SRC, env=env,  # noqa: S607
        check=True, capture_output=True, text=True,
    )
    module_dir = Path(json.loads(listing.stdout)["Dir"])
    build = binary.parent / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(module_dir, build / "FerretDB")
    for path in (build / "FerretDB").rglob("*"):  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    (build / "FerretDB").chmod(0o755)
    for patch in sources[3:]:
        run(["git", "apply", "--whitespace=nowarn", str(patch)], cwd=str(build / "FerretDB"))
    for name in ("go.mod", "go.sum", "main.go"):
        shutil.copy(FERRETDB_SRC / name, build / name)
    tmp = binary.with_name(f"jobstream-ferretdb.tmp-{os.getpid()}")
    try:
        run(["go", "build", "-trimpath", "-o", str(tmp), "."], cwd=str(build))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    tmp.rename(binary)
    log(f"FerretDB ({variant}) built in {time.monotonic() - t0:.0f}s: {binary}")
    return binary


# Data written by a build whose indexes use other SQL expressions is read correctly but slowly
# (the patched queries cannot use those indexes): say so instead of letting every read scan.
FERRETDB_FORMAT = "jobstream-ferretdb-format-2\n"  # 2: indexes on ->> (patches/0002)


def ferretdb_command(port: int = MONGO_PORT, data: Path = STATE / "ferretdb") -> list[str]:
    marker = data / ".format"
    data.mkdir(parents=True, exist_ok=True)
    if not marker.exists() and not any(data.glob("*.sqlite")):
        marker.write_text(FERRETDB_FORMAT)
    elif not marker.exists() or marker.read_text() != FERRETDB_FORMAT:
        log(f"warning: {data} was written by an older FerretDB build: its indexes do not serve this build's "
            "queries (correct, but slow at scale); `make clean` (drops local data) to start afresh")
    # FERRETDB_DEBUG_ADDR (a loopback host:port): serve Go's pprof there, to see where the store's time goes.
    debug = os.environ.get("FERRETDB_DEBUG_ADDR", "").strip()
    return [str(ferretdb_binary()), "-listen", f"127.0.0.1:{port}", "-data", str(data), *(["-debug-addr", debug] if debug else [])]


def mongo_ready() -> bool:
    return probe("import pymongo\n"
                 f"pymongo.MongoClient('{LOCAL_MONGO}', serverSelectionTimeoutMS=2000).admin.command('ping')\n")


# --- the application ---------------------------------------------------------------------------


def app_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", local_kafka())
    env.setdefault("MONGO_URL", LOCAL_MONGO)
    return env


def python_bin() -> str:
    return str(Path(sys.executable))


def worker_command() -> list[str]:
    return [python_bin(), "-m", "streams.cli", "worker"]


def api_command() -> list[str]:
    return [python_bin(), "-m", "streams.cli", "api"]


def http_ready(port: int, path: str) -> Callable[[], bool]:
    return lambda: probe(
        "import urllib.request\n"
        f"urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=2).read()\n"
    )


def probe(code: str) -> bool:
    """Run a readiness check in a child interpreter so a hung client can never hang the script."""
    try:
        result = subprocess.run(  # noqa: S603
            [python_bin(), "-c", code], capture_output=True, timeout=10, check=False, env=app_env(), cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


# --- process management ------------------------------------------------------------------------


def running_pid(service: Service) -> int | None:
    """The PID in the service's PID file if that process is still ours and alive."""
    try:
        pid = int(service.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"kafka.Kafka" not in cmdline and b"jobstream" not in cmdline and b"streams.cli" not in cmdline:
        return None  # the PID was recycled by an unrelated process
    return pid


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def log_tail(service: Service, lines: int = 20) -> str:
    """The last lines of a service's log, indented, for an error message that shows the cause."""
    try:
        text = service.log_file.read_text(errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


def exited(service: Service, proc: subprocess.Popen[bytes]) -> StackError:
    service.pid_file.unlink(missing_ok=True)
    return StackError(f"{service.name} exited with code {proc.returncode} during start-up; "
                      f"last lines of {service.log_file}:\n{log_tail(service)}")


def spawn(service: Service) -> subprocess.Popen[bytes] | None:
    """Start the service's process unless it runs already (None then); readiness is the caller's to wait for."""
    pid = running_pid(service)
    if pid is not None:
        log(f"{service.name} already running (pid {pid}) on 127.0.0.1:{service.port}")
        return None
    if port_in_use(service.port):
        raise StackError(
            f"{service.name}: port 127.0.0.1:{service.port} is taken by a process this stack did not start; "
            "stop it or point the project at it (see README)"
        )
    command = service.command()
    LOGS.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=ROOT, env={**app_env(), **dict(service.env)}, start_new_session=True,
        )
    service.pid_file.write_text(str(proc.pid))
    return proc


def start(service: Service) -> bool:
    """Start the service unless it runs already and wait until it is ready; True when this call started it."""
    proc = spawn(service)
    if proc is None:
        return False
    deadline = time.monotonic() + service.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise exited(service, proc)
        if service.ready():
            log(f"{service.name} ready on 127.0.0.1:{service.port} (pid {proc.pid}, log {service.log_file})")
            return True
        time.sleep(0.5)
    stop(service)
    raise StackError(f"{service.name} did not become ready within {service.timeout:.0f}s; "
                     f"last lines of {service.log_file}:\n{log_tail(service)}")


def start_together(services: list[Service], started: list[str]) -> None:
    """Start the services that are not running at once and wait until every one is ready (a cluster's
    nodes: none is ready before a quorum of them runs). Appends each one it starts to ``started``."""
    procs = {}
    for service in services:
        proc = spawn(service)
        if proc is not None:
            started.append(service.name)
            procs[service.name] = (service, proc)
    waiting = dict(procs)
    deadline = time.monotonic() + max((service.timeout for service in services), default=0)
    while waiting and time.monotonic() < deadline:
        for name, (service, proc) in list(waiting.items()):
            if proc.poll() is not None:
                for other, _ in procs.values():
                    stop(other)
                raise exited(service, proc)
            if service.ready():
                log(f"{service.name} ready on 127.0.0.1:{service.port} (pid {proc.pid}, log {service.log_file})")
                del waiting[name]
        time.sleep(0.5)
    if waiting:
        for service, _ in procs.values():
            stop(service)
        names = ", ".join(waiting)
        raise StackError(f"{names} did not become ready in time; last lines of their logs:\n" +
                         "\n".join(f"  {service.name}:\n{log_tail(service)}" for service, _ in waiting.values()))


def worker_readiness(port: int) -> dict[str, object] | None:
    """A worker's ``/ready`` answer (``ready``, ``reason``, ``generation``, ``partitions``), None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:  # noqa: S310 - loopback
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 503: not ready, with the reason in the body
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def start_workers(services: list[Service], started: list[str], timeout: float = 180.0) -> None:
    """Start the workers that are not running, all at once, and wait until the group is settled.

    Settled: every worker answers ``/ready`` (joined, partitions assigned, tables recovered, store
    prepared) in the same group generation, so no rebalance is still under way when ``make run``
    returns and a first request cannot race the start-up. A worker that exits meanwhile fails the
    start with its log tail. Appends each worker it starts to ``started`` as it goes, so a failure
    stops exactly those.
    """
    procs: dict[str, tuple[Service, subprocess.Popen[bytes] | None]] = {}
    for service in services:
        procs[service.name] = (service, spawn(service))
        if procs[service.name][1] is not None:
            started.append(service.name)
    deadline = time.monotonic() + timeout
    waiting: list[str] = []
    while time.monotonic() < deadline:
        for service, proc in procs.values():
            if proc is not None and proc.poll() is not None:
                raise exited(service, proc)
        answers = {service.name: worker_readiness(service.port) for service, _ in procs.values()}
        waiting = [f"{name}: {(answer or {}).get('reason', 'not answering yet')}"
                   for name, answer in answers.items() if not (answer and answer.get("ready"))]
        generations = {answer.get("generation") for answer in answers.values() if answer}
        if not waiting and len(generations) == 1:
            for service, proc in procs.values():
                answer = answers[service.name] or {}
                pid = proc.pid if proc is not None else running_pid(service)
                log(f"{service.name} ready on 127.0.0.1:{service.port} (pid {pid}, {answer.get('partitions')} "
                    f"partitions, group generation {answer.get('generation')}, log {service.log_file})")
            return
        time.sleep(0.5)
    detail = "; ".join(waiting) or "the workers are in different group generations (a rebalance did not settle)"
    raise StackError(f"workers not ready within {timeout:.0f}s: {detail}")


def check_alive(services: list[Service]) -> None:
    """After start-up: a service that died since it was ready fails ``up`` as well."""
    for service in services:
        if service.pid_file.exists() and running_pid(service) is None:
            service.pid_file.unlink(missing_ok=True)
            raise StackError(f"{service.name} exited after start-up; last lines of {service.log_file}:\n{log_tail(service)}")


def stop(service: Service) -> None:
    pid = running_pid(service)
    if pid is None:
        service.pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running_pid(service) is not None:
        time.sleep(0.2)
    if running_pid(service) is not None:
        log(f"{service.name} (pid {pid}) ignored SIGTERM for 30s; sending SIGKILL")
        os.killpg(pid, signal.SIGKILL)
    service.pid_file.unlink(missing_ok=True)
    log(f"{service.name} stopped (pid {pid})")


def stop_together(services: list[Service], grace: float = 30.0) -> None:
    """SIGTERM every service at once, then wait (SIGKILL after ``grace``): a cluster's nodes stopped one by
    one would leave the last ones waiting on a controller quorum that is gone."""
    pids = {service.name: (service, pid) for service in services if (pid := running_pid(service)) is not None}
    for service in services:
        if service.name not in pids:
            service.pid_file.unlink(missing_ok=True)
    for _service, pid in pids.values():
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(running_pid(service) is not None for service, _ in pids.values()):
        time.sleep(0.2)
    for service, pid in pids.values():
        if running_pid(service) is not None:
            log(f"{service.name} (pid {pid}) ignored SIGTERM for {grace:.0f}s; sending SIGKILL")
            os.killpg(pid, signal.SIGKILL)
        service.pid_file.unlink(missing_ok=True)
        log(f"{service.name} stopped (pid {pid})")


KAFKA = Service("kafka", KAFKA_PORT, kafka_command, kafka_ready, timeout=120)
FERRETDB = Service("ferretdb", MONGO_PORT, ferretdb_command, mongo_ready, timeout=60)
def worker_count() -> int:
    """``WORKERS`` (SPEC §6): worker processes ``make run`` starts, sharing the partitions; default the core count."""
    raw = os.environ.get("WORKERS", "").strip()
    if not raw:
        return os.cpu_count() or 1
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise StackError(f"WORKERS must be a whole number from 1 to 64, got {raw!r}")
    return int(raw)


def worker(index: int) -> Service:
    """Worker ``index``: its own metrics port (WORKER_METRICS_PORT + index) and table directory."""
    port = WORKER_METRICS_PORT + index
    return Service(f"worker-{index}", port, worker_command, lambda: bool((worker_readiness(port) or {}).get("ready")), timeout=180,
                   env=(("WORKER_METRICS_PORT", str(port)), ("DATA_DIR", str(STATE / "worker" / str(index)))))


MAX_WORKERS = 64  # every worker this stack may have started, for ``down`` and ``status``
API = Service("api", API_PORT, api_command, http_ready(API_PORT, "/health"), timeout=60)


def infrastructure() -> list[Service]:
    """The services this stack starts itself: those the environment does not already provide."""
    services = []
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        services.extend(kafka_services())
    else:
        log(f"using Kafka at KAFKA_BOOTSTRAP_SERVERS={os.environ['KAFKA_BOOTSTRAP_SERVERS']}")
    if not os.environ.get("MONGO_URL"):
        services.append(FERRETDB)
    else:
        log("using MongoDB at MONGO_URL (set in the environment)")
    return services


def started_workers() -> list[Service]:
    """The workers with a PID file (however many WORKERS was when they were started)."""
    legacy = Service("worker", WORKER_METRICS_PORT, worker_command, http_ready(WORKER_METRICS_PORT, "/metrics"), timeout=120)
    candidates = [legacy] + [worker(i) for i in range(MAX_WORKERS)]  # "worker": one started before WORKERS existed
    return [service for service in candidates if service.pid_file.exists()]


def up(with_app: bool, record: Path | None) -> None:
    """Start what is missing; ``record`` lists what this call started, for a matching ``down``.

    With the app, ``up`` returns only once every worker is ready in a settled group and the API
    answers; if any of them exits or never gets there, the app processes this call started are
    stopped again (Kafka and the store stay up for the next try) and the error shows the log tail.
    """
    started: list[str] = []
    try:
        services = infrastructure()
        nodes = [service for service in services if service.name.startswith("kafka")]
        other_mode = [service for service in started_kafka() if service.name not in {node.name for node in nodes}]
        if nodes and any(running_pid(service) is not None for service in other_mode):
            raise StackError(f"a Kafka of this stack with another BROKERS is running ({', '.join(s.name for s in other_mode)}): "
                             "stop it first (`make stop`)")
        if len(nodes) > 1:
            start_together(nodes, started)
        for service in services:
            if service not in nodes or len(nodes) == 1:
                if start(service):
                    started.append(service.name)
        if with_app:
            workers = [worker(i) for i in range(worker_count())]
            try:
                start_workers(workers, started)
                if start(API):
                    started.append(API.name)
                check_alive([*workers, API])
            except StackError:
                for service in (API, *workers):
                    if service.name in started:
                        stop(service)
                raise
    finally:
        if record is not None:
            record.write_text("\n".join(started))
    env = app_env()
    log(f"Kafka:   {env['KAFKA_BOOTSTRAP_SERVERS']}")
    log(f"MongoDB: {redact(env['MONGO_URL'])}")
    if with_app:
        count = worker_count()
        log(f"workers: {count} (WORKERS), metrics on http://127.0.0.1:{WORKER_METRICS_PORT}/metrics"
            + (f" to :{WORKER_METRICS_PORT + count - 1}" if count > 1 else ""))
        log(f"dashboard:      http://127.0.0.1:{API_PORT}/")
    log(f"logs in {LOGS}; stop with `make stop`")


def down(record: Path | None) -> None:
    """Stop our services; with ``record``, only those the matching ``up`` started."""
    only = set(record.read_text().split()) if record is not None and record.exists() else None
    for service in (API, *started_workers()):
        if only is None or service.name in only:
            stop(service)
    kafka = {service.name: service for service in (KAFKA, *started_kafka())}
    stop_together([service for service in kafka.values() if only is None or service.name in only])
    if only is None or FERRETDB.name in only:
        stop(FERRETDB)
    if record is not None:
        record.unlink(missing_ok=True)


def status() -> int:
    """One line per service: running (workers: ready or why not), dead (a PID file whose process is gone), or not running.

    Exits 1 when a service this stack started has died, so scripts can tell.
    """
    dead = 0
    nodes = [service for service in started_kafka() if service is not KAFKA]
    kafka = kafka_services()
    if kafka == [KAFKA] and nodes and not KAFKA.pid_file.exists():
        kafka = nodes  # a cluster started with BROKERS=3, asked about without it
    else:
        kafka += [node for node in nodes if node.name not in {service.name for service in kafka}]
    for service in (*kafka, FERRETDB, *started_workers(), API):
        pid = running_pid(service)
        if pid is not None:
            state = f"running (pid {pid}) on 127.0.0.1:{service.port}"
            if service.name.startswith("worker"):
                answer = worker_readiness(service.port)
                state += ", " + ("not answering /ready" if answer is None else
                                 f"ready ({answer.get('partitions')} partitions)" if answer.get("ready") else
                                 f"not ready: {answer.get('reason')}")
        elif service.pid_file.exists():
            dead += 1
            last = log_tail(service, 1).strip()
            state = f"DEAD (pid {service.pid_file.read_text().strip()} is gone; log {service.log_file} ends: {last})"
        else:
            state = "not running"
        print(f"{service.name:9} {state}")
    if len(kafka) > 1 and any(running_pid(service) for service in kafka):
        print(f"{'':9} Kafka bootstrap: {','.join(f'127.0.0.1:{service.port}' for service in kafka)}")
    return 1 if dead else 0


def redact(url: str) -> str:
    """Never print a password that a user put in MONGO_URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--app", action="store_true", help="also start the worker and the API")
    parser.add_argument("--record", type=Path, help="up: write what was started here; down: stop only that")
    args = parser.parse_args()
    try:
        if args.action == "up":
            up(args.app, args.record)
        elif args.action == "down":
            down(args.record)
        elif args.action == "env":
            env = app_env()
            print(f"export KAFKA_BOOTSTRAP_SERVERS={env['KAFKA_BOOTSTRAP_SERVERS']}")
            print(f"export MONGO_URL={env['MONGO_URL']}")
        else:
            return status()
    except StackError as exc:
        print(f"[stack] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
