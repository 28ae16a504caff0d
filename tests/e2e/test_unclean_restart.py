"""A worker restarted after a kill does not trust table state the changelog never had (issue 20).

Faust writes a table value to the worker's RocksDB at once and sends its changelog record in the
background; a worker killed -9 between the two kept a "ghost" value. Restarted on the same DATA_DIR,
it used it: in chaos --rebalance (join-then-kill) postings MongoDB held were called new or updated,
and a changed one unchanged. The timing of a kill cannot be chosen here, so the ghost is planted
where such a kill leaves it (the stopped worker's RocksDB, no clean-shutdown mark) and the worker is
started on that state: its next run must classify from the changelog, not from the ghost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import rocksdict

from models.envelopes import partition_of
from streams.worker import CLEAN_MARK
from tests.e2e.test_pipeline import counts, postings, run_import
from tests.support import FeedServer, Process, mongo_db, rss, settings_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ITEMS = 20


def plant_ghost(tabledir: Path, key: str, partitions: int) -> None:
    """A dedupe value for ``key`` that no changelog record carries, as a killed worker leaves one."""
    path = tabledir / f"dedupe-{partition_of(key, partitions)}.db"
    assert path.exists(), f"the worker wrote no table partition at {path}"
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        db[orjson.dumps(key)] = orjson.dumps({"fingerprint": "ghost", "version": 9, "recent": [], "pos": [-1, -1]})
    finally:
        db.close()


async def test_a_worker_killed_mid_write_rebuilds_its_tables_from_the_changelog(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    worker = start_worker()
    url = feed_server.put(f"{unique}-u.xml", rss(postings(ITEMS)), conditional=False)
    [first] = await run_import(pipeline_env, url)
    assert counts(first) == (ITEMS, ITEMS, 0, 0, 0)
    worker.stop()
    data_dir = Path(pipeline_env["DATA_DIR"])
    assert (data_dir / CLEAN_MARK).exists(), "a graceful stop marks the state clean"

    key = mongo_db(pipeline_env).jobs.find_one({"sourceUrl": url}, sort=[("_id", 1)])["_id"]  # type: ignore[index]
    plant_ghost(data_dir / "v1" / "tables", key, settings_of(pipeline_env).topic_partitions)
    (data_dir / CLEAN_MARK).unlink()  # as a kill -9 leaves it

    worker = start_worker()
    assert "did not stop cleanly" in worker.log_path.read_text(errors="replace")
    [second] = await run_import(pipeline_env, url)
    assert counts(second) == (ITEMS, 0, 0, ITEMS, 0), "every posting is unchanged: the ghost is gone, the changelog kept the rest"
    doc = mongo_db(pipeline_env).jobs.find_one({"_id": key})
    assert doc is not None and doc["version"] == 1 and doc["lastRunId"] == first["runId"]
