"""Dedupe keys and content fingerprints: the recipe, its bytes, and its stability."""

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from models.feed import (
    JobPosting,
    fingerprint,
    hashing,
    parse_feed,
)
from tests.unit.feed_helpers import FEEDS, FIXTURES, REPO, SRC, only_posting, postings, read, rss

# --------------------------------------------------------------------------- fingerprint

BASE: dict[str, Any] = {
    "title": "Engineer",
    "company": "Acme",
    "location": "Remote",
    "jobType": "Full-Time",
    "categories": ["Ops", "SRE"],
    "region": "EMEA",
    "url": "https://j.example/1",
    "description": "<p>Hi</p>",
    "publishedAt": datetime(2025, 1, 6, 10, 0, tzinfo=UTC),
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Engineer II"),
        ("title", "engineer"),
        ("company", "Acme Inc"),
        ("location", "Berlin"),
        ("jobType", "Contract"),
        ("categories", ["Ops"]),
        ("categories", ["Ops", "SRE", "Dev"]),
        ("categories", []),
        ("region", ""),
        ("url", "https://j.example/2"),
        ("description", "<p>Hi!</p>"),
        ("publishedAt", datetime(2025, 1, 6, 10, 0, 1, tzinfo=UTC)),
        ("publishedAt", None),
        ("publishedAt", "2025-01-07T10:00:00Z"),
    ],
)
def test_fingerprint_changes_with_every_content_field(field: str, value: Any) -> None:
    assert fingerprint({**BASE, field: value}) != fingerprint(BASE)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({**BASE, "title": "Acme", "company": ""}, {**BASE, "title": "", "company": "Acme"}),
        ({**BASE, "categories": ["a,b"]}, {**BASE, "categories": ["a", "b"]}),
    ],
    ids=["title-to-company", "comma-inside-a-category"],
)
def test_fingerprint_distinguishes_values_moving_between_fields(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert fingerprint(a) != fingerprint(b)


@pytest.mark.parametrize(
    "variant",
    [
        {**BASE, "sourceName": "Other name"},
        {**BASE, "dedupeKey": "ffff", "sourceUrl": "https://elsewhere", "externalId": "zzz"},
        {**BASE, "version": 7, "runId": "r-1", "fingerprint": "stale"},
        dict(reversed(list(BASE.items()))),
        {**BASE, "categories": ("SRE", "Ops")},
        {**BASE, "publishedAt": "2025-01-06T10:00:00Z"},
        {**BASE, "publishedAt": "2025-01-06T11:00:00+01:00"},
        {**BASE, "publishedAt": datetime(2025, 1, 6, 5, 0, tzinfo=timezone(timedelta(hours=-5)))},
        {**BASE, "publishedAt": datetime(2025, 1, 6, 10, 0)},  # naive = UTC (pymongo)
    ],
    ids=[
        "source-name",
        "identity",
        "bookkeeping",
        "key-order",
        "category-order",
        "iso-z",
        "iso-offset",
        "aware-other-zone",
        "naive",
    ],
)
def test_fingerprint_ignores_identity_bookkeeping_order_and_date_representation(
    variant: dict[str, Any],
) -> None:
    assert fingerprint(variant) == fingerprint(BASE)


def test_fingerprint_is_sha1_hex_and_missing_fields_mean_empty() -> None:
    fp = fingerprint(BASE)
    assert len(fp) == 40 and int(fp, 16) >= 0 and fp == fp.lower()
    empty: dict[str, Any] = {"title": "", "company": "", "location": "", "jobType": "", "categories": [],
             "region": "", "url": "", "description": "", "publishedAt": None}  # fmt: skip
    assert fingerprint({}) == fingerprint(empty)


def test_fingerprint_golden_value_pins_the_recipe() -> None:
    """Changing the recipe re-marks every stored job as updated: it must be deliberate."""
    job = parse_feed(read(FEEDS / "wp-job-manager.rss.xml"), SRC).items[0]
    assert isinstance(job, JobPosting)
    assert job.fingerprint == "690b02fbe1ee8666100e5e602a6c0410aa938d01"


def stdlib_fingerprint(fields: list[Any]) -> str:
    """The recipe as first written: the stdlib encoder's bytes (compact, ``ensure_ascii=False``), sha1."""
    blob = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


def test_fingerprint_bytes_are_the_stdlib_encoders_for_every_code_point() -> None:
    """orjson writes the fingerprint's JSON; a changed byte would re-mark stored jobs as updated."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(points), 4096):
        text = "".join(points[start:start + 4096])
        fields = [hashing.FINGERPRINT_VERSION, text, "", 'a"b\\c', "\n\t\x00\x1f\x7f", sorted([text[:7], "z"]), "", "", text[::-1], ""]
        assert hashing._fingerprint(*fields[1:5], fields[5], *fields[6:]) == stdlib_fingerprint(fields), hex(ord(text[0]))


def test_fingerprint_of_a_lone_surrogate_takes_the_stdlib_path() -> None:
    fields = [hashing.FINGERPRINT_VERSION, "a\ud800b", "", "", "", [], "", "", "", ""]
    assert hashing._fingerprint(*fields[1:5], fields[5], *fields[6:]) == stdlib_fingerprint(fields)


@pytest.mark.parametrize("seed", ["1", "2"], ids=lambda seed: f"PYTHONHASHSEED={seed}")
def test_fingerprint_is_stable_across_processes(seed: str) -> None:
    code = (
        "import sys; from pathlib import Path; from models.feed import parse_feed;"
        "p = parse_feed(Path(sys.argv[1]).read_bytes(), sys.argv[2]);"
        "print(' '.join(i.fingerprint + ':' + i.dedupe_key for i in p.items))"
    )
    path = FEEDS / "wp-job-manager.rss.xml"
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
    result = subprocess.run(  # noqa: S603 - fixed interpreter and arguments
        [sys.executable, "-c", code, str(path), SRC], capture_output=True, text=True, env=env, check=True
    )
    here = " ".join(f"{i.fingerprint}:{i.dedupe_key}" for i in postings(parse_feed(read(path), SRC)))
    assert result.stdout.strip() == here


def test_posting_fingerprint_uses_its_content_fields() -> None:
    job = only_posting(rss("<item><guid>1</guid><title>X</title></item>"))
    doc = job.to_document()
    assert job.fingerprint == fingerprint(doc)
    other_source = parse_feed(rss("<item><guid>1</guid><title>X</title></item>"), "https://other", "N")
    assert isinstance(other_source.items[0], JobPosting)
    assert other_source.items[0].fingerprint == job.fingerprint
    assert other_source.items[0].dedupe_key != job.dedupe_key


# Computed by the code BEFORE issue 24 (commit 1fd4e2a, models/feed.py as one module) from the sample feeds,
# source https://feeds.example/jobs.xml, and hard-coded here: the package split and the job XML formats must
# leave every RSS/Atom/RDF posting's dedupe key and fingerprint as it was, so an upgrade followed by a
# re-import writes nothing (every posting `unchanged`).
PINNED: dict[str, list[tuple[str, str]]] = {
    'careers.atom.xml': [
        ('d0c41b12bd57cc7feb8bb42b2e16e7c841db5fea', '9710e3f8fb671bdafcb89b2f763f8e1b87e9988c'),
        ('6fbedf260102a3b5470949d3d75a7e8b3ff172b4', 'c756963077a5560ec8163fd3b1f62f4f9fe91f07'),
        ('89405fc68198ee2337bc05bc6d4bee22c3f195dd', '1eb23ed46e4b9b6ce0b50a60a9a955bb4b50d4c5'),
        ('3ca93a8954a5648acbc5157fb72441cac779093e', 'a334049c975f2ec3e0000eca0a79ab34b10670f0'),
        ('5a72f6be9c8047daa9519561087f806f695ade52', '68ce48aa8a8d982ab51b814116d108d8a7131cc1'),
        ('293d29195c51189ef4ec1c38d9d4999fbdc752a4', '71502db4c46034c5a9abc93b2ab7a3b55c2fcaaa'),
        ('3f7b44f7154e5841c3ccc70d9553c435d5aa5af2', 'ff82722f3393fd91f447000f4209129b9eff09ec'),
        ('66d69d017474da16e7f8408ef7aad4dc7e4a3002', '00a7c50a52778180a7999a13ff53c98f8eb53d68'),
        ('7f3dfd291c5f54d7f24066100109b3e133ae6a05', '1ae372fb7ed2c5b7ace16f23fa0d5a8a3e11fc1d'),
        ('aeddab2beba06cfd8180b783e946185b22407093', '97a3794d89f2b07a4d5f0c327469124be767188f'),
        ('28dee9ff0bd8cf9403ec303c12d1840eaf374a21', '0866037a886babd1b1a3d1c21e54d3ee1ba0a622'),
        ('35bf18af6fa31ebb680ae92aa6382f120b509c3f', '2aee1be903e1e243d7bf4958e47230b36b2cfbc4'),
        ('89b0aa50b4ded1249eab2154f6feb10941db196c', 'd85019d60e44c3e0dad174b5a6eff60273f84cf6'),
        ('502984b867b5892ab3d096299485752cdb3dd011', 'f839e2cafc4680c2a4ae98dbd284691a90479339'),
        ('ff579e9025e7c587f23d03ea042ee5dc09a64d91', 'dbe7c47dcbbdb41a6bdf8040a11e86ab59f79406'),
    ],
    'higher-ed.rss.xml': [
        ('544a1a6bf504a4ec703d1b38a5227e6572a80c2e', '774f5cd236ea3b9606aa59705f5bfdd59c91ac78'),
        ('9e42aaef5236be9028b3b7c0ee6f6fd098c7abea', '6d53024d9dfe11e13220e5fa763b9258cdefb43a'),
        ('b30527dfd56c2f6dde0f247197159a3df1aaa40e', '917abf829062ed7b6c09c2b3952b4935a15040cd'),
        ('b420e7f06755862a0439a773971dece03b3985c5', '12689ec3ff64a74576b87fdee933d4d6ee3da741'),
        ('5e23ff98776594e474c198e4eb5da97bb6baef57', '93608e09c63eada4a7e779d9cfde7ab51abc3c27'),
        ('c2faaca91cfac584c54608963b86bff8aacb0f72', '29c5b296db58f4e2938ea8ee7119303595e971c7'),
        ('be2fe38ffefb8ca08d1250395320ca286b5316d1', '56b2c2c019c54f381dbfe5934e856ec28c064210'),
        ('f6975ffd9920c451c2e1840ef03160108dba3c57', '0a3f6b91bb6ceaf71be01e1f0e00376309a4e203'),
        ('b634b3d83661fac921bebcf8d37bdc33bdfedf0a', '5f00c2756ceefe1111b25e714671ceb55424c2e9'),
        ('4db60316b28259e694eb8f8cc89816c47707e7b6', '70f2cb2856548614597f788f8b838513abe4826a'),
        ('619eaf881aea046e3250128acf136ee9972f2b44', '69b7a8c8e41ae49c932b4584b93e3671a7384a18'),
        ('aea2b3f8c6a0a857cf71ac92b6a09c05c80cbda9', 'f191f9485154fc04af4cd437e106babf917a6f15'),
        ('a8145e72259b67f7c2c318457f01f53fab4ee46a', 'd8209335bf2a344617668790fd8afb4ca823073a'),
        ('4e19b145e379f47f99437c22628d75bd35da966d', '93402611b41da38e30b418b0fa4ba132446f2c91'),
        ('a7e7226168f2f8f18e303158e7ef6290bda88268', '8a340a8f5f64fc73385cee6d9aef81129e3b8753'),
        ('dca8716e442173d80a283e2673d1f53c33693df2', '437eff17f14dbabe27c9f09f4995fbce33a38dbc'),
        ('97715fee7824a68088ea9c2ba5d0d06433f7a1da', '29941c7e395aacdf65b9aa8168ff875ebcd271ec'),
        ('dc30cdc069fcdbd70dbbb4ef9e29444195214eef', 'ca68ae93ae3c3b002db3255f22300cd7052e1f26'),
        ('67001871b36061c1312beb6af26e102b33fc6cdc', 'ca9d58e10beb3b6b660565714e8f754ffddef3ea'),
        ('1058f4dac04f3e4d354114b8b3a19836368370ed', '123c0c453240ac5b70a03d2e3efb2f9d79a0f694'),
        ('39a0f9d06d873ea19a296f902519522320c565d7', '6d0a5b51dadbd88eecb018e5aa92a669d00dcb37'),
        ('3437eaa129b2ee8cc4ed7534257b34d2ccae2694', 'bfd1682409540796c062320b30614a434c50b728'),
        ('29c77d298fbde4b138661c2d72d8b75d318cf7f2', '14ddd8bd75625e6c2e4632b751b89b2aec973d25'),
        ('2ba972dd1ab61c4b6ea8f7024afef8d2af74c261', '4ee76f55728754208a662f82a0cc9d0e35fc38b7'),
        ('2528d75cb720f46586fa68d3a9bf5adb20add4c0', 'e7ba33db55daf4239294001e6074ce5bf02968ad'),
    ],
    'wp-job-manager.rss.xml': [
        ('7ff1615416f0d2dd2dbc62cbe092c4374826ae1b', '690b02fbe1ee8666100e5e602a6c0410aa938d01'),
        ('1e3683c0741cc76dd7a0fd4d369876bd1e339c98', '7cccd675031a1fee6721c89d30bf54149046f476'),
        ('ca06f67fa7dbe0c1cd79e2ef254acc0dee065775', '04f03871d0db67f7a6b15e59d9bbb4952fe07404'),
        ('aaeb3b6c6c350db69ebec93fb72526607633262b', 'd7b5a1be3e796da9859343a74108bc15c44a180d'),
        ('6102f33f6dfec4e91c1b16f0f38dfc4a134e6ff7', 'c0de59eeede600ced1264e12882c0b5030634c72'),
        ('f89fe5ff272725c9630ec7a115b6b8861257a264', 'eb2566edc42ace1ffc211cb7c0139c6587769e64'),
        ('b89008473c17d9619960cdb982e4e73cd4164c2b', 'f3e0fc13edfccdfa570f5c1f25dfd4ba4820ba19'),
        ('5dbb9d782323d52adab9a0528444a86a7e22c8b3', '7dbe8975f537afe0dcce727c9f43e5e6507d7c12'),
        ('4efa444b88e5061fe69395c806527233723294cc', '11c0cfd6ed41af45d5691e1d74469dcb08440646'),
        ('9dee4f00e8d666238be1a64ac59bc7c6460a4935', 'c0a7fd99769a91cbaeec835a2b574ec9197aeb60'),
        ('c9f8122aa7cf38e89756b8e490ebd200025961ca', '30d3a020ce002c292b69bd896519326e0d40d3ba'),
        ('5fc9a01675d3bc332d2b31943d2610a53beabb44', 'e4ecd7db68c4ecf0f7604229a883055cf69a2332'),
        ('1a4e1b8dacfeda0ec86bee5b5d6974b0408f929c', '606b4a36d30fe14473970cbce3b16266f00c5ab2'),
        ('630a42fff53367f8b6ae6eed69559af6661eb627', '232d1d2070f504a299dcd702d1fdcea5b25516f7'),
        ('917504b28ed109d02e20390273018a93343e826b', 'f36703cfd05667547215316e332c0082217ec109'),
        ('3a22cbb7bb225751ded610d68b7a8c264b5bd85f', '65d3d08a0f8878b4fbb9c0d6fe78ab87033a9575'),
        ('0e263a0b09eec2ad9c3981f7948b0ce0595e11da', '7275dbaeb93325f92545a176189418e01949f2b5'),
        ('26b025e4cc23b2278179ebd7103d47778f23c691', 'abf0e530fd39cbc177f2fd004244369a29159ff9'),
        ('21613ba3024f7b2203e389b1fb33ebc7f3e0b500', '17d58beb874ec045d83ec243158ea6841a309a47'),
        ('57cc0166d6c8f11f774f4a8fbb042619c7e2ab73', 'feb1f1cce0932626285f63c777487cf584965248'),
        ('85e328ed38efd5ff8b00b9a151f443851b580c1e', 'e56e5d0a1eb176114bc62f6e8ec185a7f9c3f6f1'),
        ('6ac8a1dde96b45cda386e6db1c46d13e3f08df7e', '2d7f79b5a53337b9c46ae19c49bd31a65a75088e'),
        ('424f2e77c579aa81bcac8fb8d0ed002e85c4e568', '4de22b60d01a73c4f3576fa97a4f2f1794efc580'),
        ('d7cfb15c5a9dfcf4f9732fc71947d3ef2a9b6a0a', '0b6d8708d5e946380827c37a118936d54be0f22c'),
        ('fbc18a1ab330df7f60f08cc0bd4e1746b9819dac', '9d07b4780145aa8e21cf0382daf5506d81e1d7e0'),
        ('9e1ae1ce7725cb19abc086077d3dcdc998a97424', 'dd36bba48b89717db730aa6be872ec154269c6d2'),
        ('1fadc71b52cd9d003f0842a146f5283bf5225521', '6a941afd60aee4d5fd15390838ea179c38b94f58'),
        ('89fac9592e813df57f52b35ebee903e6d410c048', '5e3df77a3ed65c09ed3b116d7adf0bacc1763e55'),
        ('c9b740d7cf78fd099d2f37725327a1b85c9a075d', '1f568888594272136d2065f466b139c6e74630e9'),
        ('5a41ab3acb7e214d8e8581e790dfb0cd2ff1f7b6', 'fe47bb23062a6fbd88e4941c0a612fc06820b3d9'),
        ('a7bb797eb3d78ea6312be202c4246f0cc9179e81', '2a1c22931a4446477adf3757a0e50f0af7437f08'),
        ('b06def397ad44f524ba6051215d0dd0393210732', '8e734a009d92712ca4010fbff68e3cf37b1445c7'),
        ('5d58579feb8745f62824c41fb90346994614f0b8', '4926d0f504c637082d8b194d75222e0079c032e3'),
        ('15bd25b859d9aa34fe3c2e69ef3567908b3c6334', '5e11e85bd94f3215645848b53f34edbc265749d9'),
        ('75695f1b3e8171ddf632e8d5d8673b5392895aba', 'e736acd4f4f36b3f2e0dd8ea3c419cb63bd36459'),
        ('c1b01832eadb2f2ceb13ec268f594cfd8fb76ef7', 'f2b561bbd45ac5adf1550f93e7323a80797744dc'),
        ('3c9f6e6f4f5d9b6724d34e56350e7f86f102999a', '6c60c8d508690b72a426e3ffbea01c9da532e23d'),
        ('50f42ee4b831f494b7dbd8ab450c2f199b134266', '115768b8d8129d7a155bc7435055955943f2e380'),
        ('5dc313610cb49040ddbeb82672656cf77c71e507', 'e04d4916625e4b7199218932b944c970efdc18f3'),
        ('b56e237fac111e95188d86f995080ef9febfd772', 'b43be22b0809634b0501b943c77ad465f3343e74'),
    ],
    'latin1.rss.xml': [
        ('a6b7355cf68032dc4fa08fbee0b6bfc532ba254e', '43f59b0235d88727236f847022b50f5a21b54da9'),
    ],
    'rdf.rss1.xml': [
        ('0d8850feb76de5b57626f04ac4b468e5c59a06b3', 'b9e514a50ffaf318cc8f01c97626f1d14f6689dc'),
        ('48d6c5a999e8e5fb52f226e07202ca4d013987f5', '57fddb78056a1d8e0a484d9afa44566b1c2297f4'),
        ('79068ad5586cfb083b76aa691590fbfc955b1e76', 'db7504cb2b406f77ec90734ac5c742b73fcfe166'),
    ],
}


@pytest.mark.parametrize("name", sorted(PINNED))
@pytest.mark.parametrize("feed_format", ["auto", "explicit"])
def test_sample_feed_postings_keep_the_keys_and_fingerprints_of_before_the_job_xml_formats(name: str, feed_format: str) -> None:
    path = FEEDS / name if (FEEDS / name).exists() else FIXTURES / name
    kind = parse_feed(read(path), SRC, "Example").kind
    parsed = parse_feed(read(path), SRC, "Example", feed_format="auto" if feed_format == "auto" else kind)
    assert [(item.dedupe_key, item.fingerprint) for item in postings(parsed)] == PINNED[name]
    assert len(parsed.items) == len(PINNED[name])  # and no item became a failure
