"""``jobstream worker``: build the pipeline, prepare Kafka and MongoDB, run the Faust worker."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

import agents
from agents import metrics
from agents.parsing import ParserPool, default_processes
from models.registry import RegistryError, parse_feeds_file
from streams import faust_internals
from streams.app import consumer_lag, create_pipeline
from streams.readiness import ReadinessProbe, serve_probes
from streams.replication import ReplicationError, publish, with_replication
from streams.settings import Settings
from streams.store import Store, until_reachable
from streams.topics import ensure_topics

logger = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Blocks until the worker is stopped (SIGTERM/SIGINT stop it gracefully)."""
    try:
        writable_dir(settings.data_dir)
    except OSError as exc:
        logger.error("worker cannot start: DATA_DIR %s is not a writable folder: %s", settings.data_dir, exc)
        sys.exit(2)
    try:
        ready = asyncio.run(ensure_topics(settings))
    except ReplicationError as exc:
        logger.error("worker cannot start: %s", exc)
        sys.exit(2)
    settings = with_replication(settings, ready.replication)  # Faust declares its own topics with this RF
    publish(ready.topics, ready.under_replicated, metrics.TOPICS_UNDER_REPLICATED, metrics.TOPIC_UNDER_REPLICATED)
    metrics.REPLICATION_FACTOR.set(ready.replication.factor)
    metrics.MIN_INSYNC_REPLICAS.set(ready.replication.min_insync)
    pipeline = create_pipeline(settings)
    if discard_unclean_tables(Path(pipeline.app.conf.tabledir), settings.data_dir / CLEAN_MARK):
        logger.warning("the last run of this worker did not stop cleanly: its local table state (%s) is discarded "
                       "and rebuilt from the changelogs", pipeline.app.conf.tabledir)
    store = Store(settings)
    # No process starts here: the first feed to parse starts the first parse process.
    parsers = ParserPool(processes=default_processes(), timeout_seconds=settings.parse_timeout_seconds,
                         max_items=settings.max_items_per_feed, max_posting_bytes=settings.max_posting_bytes,
                         partitions=settings.topic_partitions, max_memory_mb=settings.parse_max_memory_mb,
                         on_peak_rss=metrics.PARSE_PEAK_RSS_BYTES.set)
    agents.attach_all(pipeline, store, parsers)

    async def prepare_store() -> None:
        """Retried with back-off while MongoDB is away or slow (both steps are idempotent)."""

        async def prepare() -> None:
            await store.ensure_indexes()
            await seed_registry(settings, store)

        await until_reachable(prepare, "indexes/seed")
        await until_reachable(store.log_durability, "write concern check")
        await until_reachable(store.backfill_job_search, "job_search backfill")
        probe.store_prepared = True

    async def close_clients(app: faust.App, **_: Any) -> None:
        await parsers.close()
        await store.close()

    async def watch_event_loop_lag() -> None:
        await metrics.watch_event_loop_lag(settings.loop_lag_report_seconds)

    async def observe_consumer_lag() -> None:
        for tp, lag in (await consumer_lag(pipeline.app, settings.topic_prefix)).items():
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    probe = ReadinessProbe()

    async def watch_readiness() -> None:
        await probe.watch(pipeline.app)

    pipeline.app.task(prepare_store)
    pipeline.app.task(watch_readiness)
    pipeline.app.task(watch_event_loop_lag)
    pipeline.app.timer(10.0, name="observe_consumer_lag")(observe_consumer_lag)
    skipped = faust_internals.SkippedWatch()

    async def read_skipped_again() -> None:
        if not pipeline.app.rebalancing:
            await skipped.check(pipeline.app.consumer)

    pipeline.app.timer(2.0, name="read_skipped_again")(read_skipped_again)
    pipeline.app.on_before_shutdown.connect(close_clients)  # type: ignore[arg-type]  # faust's signal types are too narrow

    serve_probes(probe, settings.api_host, settings.worker_metrics_port)
    logger.info(
        "worker starting app_id=%s kafka=%s replication_factor=%d min_insync_replicas=%d mongo=%s db=%s "
        "metrics=http://%s:%d/metrics (readiness on /ready)",
        settings.app_id, settings.kafka_bootstrap_servers, settings.kafka_replication_factor,
        settings.kafka_min_insync_replicas, settings.mongo_url_redacted, settings.mongo_db,
        settings.api_host, settings.worker_metrics_port,
    )
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.lower(), redirect_stdouts=False,
                          override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        if stop.code in (0, None):  # Faust stopped cleanly: agents drained, tables closed, producer flushed
            mark_clean(settings.data_dir / CLEAN_MARK)
        raise


# Written when the worker stopped cleanly; its absence at start means the local table state may hold writes
# whose changelog records never reached the broker.
CLEAN_MARK = "clean-shutdown"


def discard_unclean_tables(tabledir: Path, mark: Path) -> bool:
    """Delete the local table state unless the last run stopped cleanly; return whether it was deleted.

    Faust writes a table value to RocksDB at once and sends its changelog record in the background.
    A worker killed between the two keeps, in its RocksDB, values the changelog never had ("ghosts").
    Restarted on the same DATA_DIR it trusts them, and a redelivered envelope replayed from a ghost
    writes nothing, so the ghost never reaches the changelog: when the partition moved on, its next
    owner's table lacked it, and called postings MongoDB held new or updated, and a changed one
    unchanged (chaos --rebalance, join-then-kill). Without the mark, the state is rebuilt from the
    changelogs, which hold exactly what was acknowledged. The mark is removed at start, so a crash
    during this run leaves none.
    """
    clean = mark.exists()
    mark.unlink(missing_ok=True)
    if clean or not tabledir.exists() or not any(tabledir.iterdir()):
        return False
    shutil.rmtree(tabledir)
    return True


def mark_clean(mark: Path) -> None:
    mark.write_text(f"{datetime.now(UTC).isoformat()}\n", encoding="utf-8")


def writable_dir(path: Path) -> None:
    """Create ``path`` with its parents and prove a file can be written there.

    Faust creates only the last folder of its datadir, so ``.state/worker/0`` on a fresh clone
    (no ``.state/worker``) crashed every worker at start; and a read-only folder would fail later,
    at the first table write, far from its cause.
    """
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


async def seed_registry(settings: Settings, store: Store) -> None:
    """Add the feeds of FEEDS_FILE to the registry; a missing file only means an empty registry."""
    path = settings.feeds_file
    if not path.exists():
        logger.warning("FEEDS_FILE %s not found: no feeds seeded", path)
        return
    try:
        entries = parse_feeds_file(path.read_text(encoding="utf-8"))
    except RegistryError as exc:
        logger.error("FEEDS_FILE %s ignored: %s", path, exc)
        return
    added = await store.seed_feeds(entries, datetime.now(UTC))
    logger.info("feed registry seeded from %s: %d listed, %d new", path, len(entries), added)
