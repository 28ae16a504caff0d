"""The chaos run's feeds and their ground truth, computed from the generated items alone.

Nothing here imports the pipeline: the expected outcome of every item follows from SPEC §2 applied
to what this module generated (key = sha1(sourceUrl + "|" + guid), first sight = created v1, other
content = updated v+1, same content = unchanged, no guid and no link = failed), so a bug shared by
the pipeline and its own models cannot hide behind a checker that reuses them. Pure code: no I/O.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

KINDS = ("rss", "atom", "rdf")
PUBLISHED_RFC822 = "Mon, 06 Jan 2025 10:00:00 +0000"
PUBLISHED_ISO = "2025-01-06T10:00:00Z"
WORDS = ("python", "kafka", "backend", "remote", "senior", "data", "platform", "cloud", "api", "team", "growth", "ops")
COUNTS = ("totalFetched", "newJobs", "updatedJobs", "unchangedJobs", "failedJobs")


def dedupe_key(source_url: str, guid: str) -> str:
    """SPEC §2, written out here rather than imported from models/."""
    return hashlib.sha1(f"{source_url}|{guid}".encode(), usedforsecurity=False).hexdigest()


@dataclass
class Posting:
    """One generated posting; ``guid`` None is a broken item (neither guid nor link: a failed item)."""

    guid: str | None
    title: str
    company: str
    description: str
    edits: int = 0

    def content(self) -> tuple[str, str]:
        """What may change between rounds; everything else (company, link, date) is fixed per posting."""
        return self.title, self.description


@dataclass
class Feed:
    name: str
    kind: str
    url: str
    postings: list[Posting]
    duplicates: int = 0  # the first N postings appear a second time at the end of the document

    def items(self) -> list[Posting]:
        """The items in document order (= sequence numbers of a run)."""
        return self.postings + self.postings[: self.duplicates]


@dataclass(frozen=True)
class Job:
    """What ``jobs`` must hold for one dedupeKey."""

    source_url: str
    external_id: str
    title: str
    description: str
    version: int
    last_run_id: str


@dataclass(frozen=True)
class Change:
    """One expected ``jobs.changes`` event, identified by (dedupeKey, version)."""

    type: str
    run_id: str
    title: str


@dataclass
class RunTruth:
    run_id: str
    feed: Feed
    counts: dict[str, int]
    status: str
    changes: list[tuple[str, int]] = field(default_factory=list)


class Truth:
    """The expected state after every run so far: jobs by key and every change that happened."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.content: dict[str, tuple[str, str]] = {}
        self.changes: dict[tuple[str, int], Change] = {}

    def run(self, feed: Feed, run_id: str) -> RunTruth:
        """Classify the feed's items in document order (SPEC §2) and record the outcome as expected."""
        counts = dict.fromkeys(COUNTS, 0)
        truth = RunTruth(run_id, feed, counts, "completed")
        for posting in feed.items():
            counts["totalFetched"] += 1
            if posting.guid is None:
                counts["failedJobs"] += 1
                continue
            key = dedupe_key(feed.url, posting.guid)
            previous = self.jobs.get(key)
            if previous is not None and self.content[key] == posting.content():
                counts["unchangedJobs"] += 1
                continue
            version = 1 if previous is None else previous.version + 1
            kind = "created" if previous is None else "updated"
            counts["newJobs" if previous is None else "updatedJobs"] += 1
            self.jobs[key] = Job(feed.url, posting.guid, posting.title, posting.description, version, run_id)
            self.content[key] = posting.content()
            self.changes[(key, version)] = Change(kind, run_id, posting.title)
            truth.changes.append((key, version))
        if counts["failedJobs"]:
            truth.status = "partial"
        return truth


class Corpus:
    """Feeds of several formats and sizes, changed between rounds by a seeded generator."""

    def __init__(self, sizes: list[int], url_of: dict[str, str], seed: int = 9, broken: int = 3, duplicates: int = 4) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - test data, seeded to be repeatable
        self.serial = 0
        self.feeds: list[Feed] = []
        for index, size in enumerate(sizes):
            kind = KINDS[index % len(KINDS)]
            name = f"feed-{index}.{kind}.xml"
            feed = Feed(name, kind, url_of[name], [self.new_posting(index) for _ in range(size)])
            if index == 1:  # one feed with broken items: its runs are ``partial``
                for position in self.rng.sample(range(size), broken):
                    feed.postings.insert(position, Posting(None, f"Broken {index}-{position}", "Nobody", "no guid, no link"))
            if index == 0:  # one feed that lists some postings twice (SPEC §2: counted twice)
                feed.duplicates = duplicates
            self.feeds.append(feed)

    @staticmethod
    def names(count: int) -> list[str]:
        return [f"feed-{index}.{KINDS[index % len(KINDS)]}.xml" for index in range(count)]

    def new_posting(self, feed_index: int) -> Posting:
        self.serial += 1
        words = " ".join(self.rng.choice(WORDS) for _ in range(30))
        return Posting(f"job-{feed_index}-{self.serial}", f"Engineer {self.serial} ({self.rng.choice(WORDS)})",
                       f"Company {self.serial % 97}", f"Job {self.serial}: {words}.")

    def mutate(self, edit: float, add: float, remove: float) -> dict[str, int]:
        """Edit titles or descriptions, add and drop postings in every feed; returns what was done."""
        done = {"edited": 0, "added": 0, "removed": 0}
        for index, feed in enumerate(self.feeds):
            live = [p for p in feed.postings if p.guid is not None]
            for posting in self.rng.sample(live, max(1, int(len(live) * edit))):
                posting.edits += 1
                if self.rng.random() < 0.5:
                    posting.title = f"{posting.title.split(' [')[0]} [edit {posting.edits}]"
                else:
                    posting.description = f"{posting.description.split(' [')[0]} [edit {posting.edits}]"
                done["edited"] += 1
            # Dropped postings leave the feed but stay in ``jobs`` as they were (no delete semantics).
            for posting in self.rng.sample(live[feed.duplicates:], int(len(live) * remove)):
                feed.postings.remove(posting)
                done["removed"] += 1
            for _ in range(max(1, int(len(live) * add))):
                position = self.rng.randrange(feed.duplicates, len(feed.postings) + 1)
                feed.postings.insert(position, self.new_posting(index))
                done["added"] += 1
        return done

    def total(self) -> int:
        return sum(len(feed.items()) for feed in self.feeds)


def render(feed: Feed) -> bytes:
    """The feed's XML document (RSS 2.0, Atom 1.0 or RSS 1.0/RDF)."""
    items = [_ITEM[feed.kind](feed.url, posting) for posting in feed.items()]
    title = escape(f"Chaos {feed.name}")
    if feed.kind == "rss":
        head = ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
                f'xmlns:job_listing="https://wpjobmanager.com/job-listing"><channel><title>{title}</title>')
        return (head + "".join(items) + "</channel></rss>").encode()
    if feed.kind == "atom":
        head = (f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>{title}</title>'
                f"<id>{escape(feed.url)}</id><updated>{PUBLISHED_ISO}</updated>")
        return (head + "".join(items) + "</feed>").encode()
    head = ('<?xml version="1.0" encoding="UTF-8"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f'<channel rdf:about="{escape(feed.url)}"><title>{title}</title><link>{escape(feed.url)}</link></channel>')
    return (head + "".join(items) + "</rdf:RDF>").encode()


def _link(posting: Posting) -> str:
    return f"https://jobs.example.com/{posting.guid}"


def _rss_item(_url: str, posting: Posting) -> str:
    if posting.guid is None:
        return f"<item><title>{escape(posting.title)}</title><description>{escape(posting.description)}</description></item>"
    return (f"<item><title>{escape(posting.title)}</title><link>{_link(posting)}</link>"
            f'<guid isPermaLink="false">{posting.guid}</guid>'
            f"<job_listing:company>{escape(posting.company)}</job_listing:company>"
            f"<description>{escape(posting.description)}</description><pubDate>{PUBLISHED_RFC822}</pubDate></item>")


def _atom_entry(_url: str, posting: Posting) -> str:
    if posting.guid is None:
        return f"<entry><title>{escape(posting.title)}</title><summary>{escape(posting.description)}</summary></entry>"
    return (f"<entry><id>{posting.guid}</id><title>{escape(posting.title)}</title>"
            f'<link rel="alternate" href="{_link(posting)}"/><author><name>{escape(posting.company)}</name></author>'
            f"<summary>{escape(posting.description)}</summary><published>{PUBLISHED_ISO}</published></entry>")


def _rdf_item(_url: str, posting: Posting) -> str:
    if posting.guid is None:
        return f"<item><title>{escape(posting.title)}</title><description>{escape(posting.description)}</description></item>"
    return (f'<item rdf:about="{posting.guid}"><title>{escape(posting.title)}</title><link>{_link(posting)}</link>'
            f"<description>{escape(posting.description)}</description><dc:creator>{escape(posting.company)}</dc:creator>"
            f"<dc:date>{PUBLISHED_ISO}</dc:date></item>")


_ITEM = {"rss": _rss_item, "atom": _atom_entry, "rdf": _rdf_item}


# --------------------------------------------------------------------------- feeds that test the parse's memory bounds

ITEM_ELEMENTS_BOUND = 100_000  # the item reader's bound (models.feed.MAX_ITEM_NODES), written out here
ITEM_TEXT_BOUND = 4_000_000  # and models.feed.MAX_ITEM_TEXT_CHARS


@dataclass(frozen=True)
class MemoryCase:
    """A feed built to cost the parse memory, and what its run must end as.

    ``status``/``reason``: the run's status and a substring of its error or of a failure's reason;
    ``counts``: the exact SPEC counts of its run (None when the parse stops it as a whole).
    """

    name: str
    body: bytes
    status: str
    reason: str
    counts: dict[str, int] | None


def _around(hostile_item: str, name: str) -> bytes:
    """An RSS feed of one good item, the hostile one (guid ``{name}-hostile``, first), and another good item."""
    def good(n: int) -> str:
        return f"<item><title>Good {n}</title><guid>{name}-good-{n}</guid><description>A job.</description></item>"
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Memory</title>'
            f"{good(1)}{hostile_item}{good(2)}</channel></rss>").encode()


def _one_failed() -> dict[str, int]:
    """The counts of a first run of ``_around``'s feed: the two good items created, the hostile one failed."""
    return {"totalFetched": 3, "newJobs": 2, "updatedJobs": 0, "unchangedJobs": 0, "failedJobs": 1}


def wide_item(name: str, elements: int, distinct_names: bool = False) -> MemoryCase:
    """One item of ``elements`` small child elements (``<p>x</p>``, or ``<p123>x</p123>`` each named apart).

    Built as a dict per item, this took about 50 times the feed's size (issue 22); past the reader's
    bound the item fails alone. Distinct names also cost expat about 70 bytes each for the whole parse
    (its table of element types), which no reader can avoid: the memory limit is the bound there.
    """
    children = "".join(f"<p{i}>x</p{i}>" for i in range(elements)) if distinct_names else "<p>x</p>" * elements
    body = _around(f"<item><guid>{name}-hostile</guid><title>Wide</title>{children}</item>", name)
    return MemoryCase(name, body, "partial", f"item too large: more than {ITEM_ELEMENTS_BOUND:,} elements and attributes",
                      _one_failed())


def many_attributes(name: str, attributes: int, elements: int = 1) -> MemoryCase:
    """One item whose ``elements`` child elements carry ``attributes`` attributes in all (``a0=""``...)."""
    per = attributes // elements
    child = "<x " + " ".join(f'a{i}=""' for i in range(per)) + "/>"
    body = _around(f"<item><guid>{name}-hostile</guid><title>Attributes</title>{child * elements}</item>", name)
    return MemoryCase(name, body, "partial", f"item too large: more than {ITEM_ELEMENTS_BOUND:,} elements and attributes",
                      _one_failed())


def long_text(name: str, chars: int) -> MemoryCase:
    """One item with ``chars`` characters of text in one element (far past any field's own bound)."""
    body = _around(f"<item><guid>{name}-hostile</guid><title>Text</title><description>{'x' * chars}</description></item>",
                   name)
    return MemoryCase(name, body, "partial", f"item too large: more than {ITEM_TEXT_BOUND:,} characters of text",
                      _one_failed())


def past_memory_limit(name: str, attributes: int, limit_mb: int) -> MemoryCase:
    """One start tag of ``attributes`` attributes: expat and pyexpat build all of it (a dict of about 300 bytes an
    attribute, measured) before any reader code runs, so only the parse process's memory limit stops it."""
    case = many_attributes(name, attributes)
    return MemoryCase(name, case.body, "failed", f"parser exceeded PARSE_MAX_MEMORY_MB={limit_mb}", None)
