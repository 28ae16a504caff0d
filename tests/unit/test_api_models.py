"""The API's pydantic models (api.models): pinned to the rules they wrap, every bad input a 400, schemas well-formed."""

from __future__ import annotations

from typing import Any, get_args

import jsonschema
import pytest

from api import models
from api.queries import ALREADY_REQUESTED, ALREADY_RUNNING, ApiError
from models.feed.mapping import FIELDS, FORMATS
from models.runs import STATUSES, TRIGGERS


def test_the_literal_types_are_the_constants_they_stand_for() -> None:
    assert get_args(models.FeedFormat) == FORMATS
    assert get_args(models.RunStatus) == STATUSES
    assert get_args(models.RunTrigger) == TRIGGERS
    assert get_args(models.SkipReason) == (ALREADY_RUNNING, ALREADY_REQUESTED)
    assert tuple(models.MappingFields.model_fields) == FIELDS


@pytest.mark.parametrize(("model", "body", "message"), [
    (models.NewFeed, {"url": "https://x.example/f", "owner": "me", "color": 1}, "unknown field(s): color, owner"),
    (models.NewFeed, {"name": "no url"}, "'url' is required: the feed's URL"),
    (models.NewFeed, {"url": "https://x.example/f", "enabled": "yes"}, "enabled: must be a boolean"),
    (models.NewFeed, {"url": "https://x.example/f", "format": 5}, "format: must be one of auto, rss, atom, rdf, indeed, xml"),
    (models.FeedChange, {"url": "https://x"}, "unknown field(s): url; only 'enabled', 'name', 'format' and 'mapping'"),
    (models.FeedChange, {"enabled": None}, "enabled: must be a boolean"),
    (models.FeedChange, {"name": None}, "name: feed name must be a non-empty string"),
    (models.FeedChange, {}, "nothing to change"),
    (models.RunRequest, {"feeds": [1]}, "feeds[0]: feed url must be a non-empty string"),
    (models.ReplayRequest, {"runId": None}, "runId: must be a run id"),
    (models.ReplayRequest, {"runId": "r", "feed": "https://x.example/f"}, 'give exactly one of "runId"'),
    (models.PreviewRequest, {}, "'url' is required: the feed to preview"),
])
def test_a_bad_body_is_a_400_naming_the_field_and_why(model: type[models.Body], body: Any, message: str) -> None:
    with pytest.raises(ApiError) as raised:
        models.validated(model, body)
    assert raised.value.status == 400 and message in raised.value.message, raised.value.message


GARBAGE: list[Any] = [None, 0, "x", [], [1], {"": None}, {"url": None}, {"url": ["https://x"]}, {"url": {"a": 1}},
                      {"url": "https://x.example/f", "mapping": []}, {"url": "https://x.example/f", "format": None, "mapping": None},
                      {"url": "https://x.example/f", "format": "xml", "mapping": {"item": None, "fields": None}},
                      {"url": "https://x.example/f", "format": "indeed", "mapping": {"fields": {"title": ["a"] * 40}}},
                      {"url": "https://x.example/f", "format": "xml", "mapping": {"item": "a/@b", "fields": {"title": "t", "url": 3}}},
                      {"url": "https://x.example/f", "name": "\udcff"}, {"feeds": None}, {"feeds": [None]}, {"runId": 7},
                      {"feed": None}, {"token": "\udcff"}, {"token": 1}, {"enabled": 1}, {"name": ""}, {"format": "xml"}]


@pytest.mark.parametrize("model", [models.NewFeed, models.FeedChange, models.RunRequest, models.ReplayRequest,
                                   models.PreviewRequest, models.SessionRequest])
@pytest.mark.parametrize("body", GARBAGE)
def test_any_json_value_is_a_model_or_a_400_never_another_error(model: type[models.Body], body: Any) -> None:
    try:
        models.validated(model, body)
    except ApiError as exc:
        assert exc.status == 400 and exc.message


def test_a_format_with_a_mapping_is_kept_as_given_with_paths_stripped() -> None:
    entry = models.validated(models.NewFeed, {"url": "https://x.example/f", "format": "indeed",
                                              "mapping": {"fields": {"title": " t ", "location": ["a", "b/@c"]}}}).entry()
    assert (entry.format, entry.mapping) == ("indeed", {"fields": {"title": "t", "location": ["a", "b/@c"]}})
    assert models.validated(models.FeedChange, {"format": "rss"}).changes() == {"format": "rss", "mapping": None}
    assert models.validated(models.RunRequest, {"feeds": None}).urls() is None


@pytest.mark.parametrize(("query", "message"), [
    ({"page": "0"}, "page must be between 1 and 1000, got 0"), ({"limit": "1e3"}, "limit must be an integer"),
    ({"status": "done"}, "status must be one or more of"), ({"since": "x" * 501}, "since is longer than 500"),
    ({"page": "2", "after": "W10"}, "give page or after, not both"), ({"total": "maybe"}, "total must be 1/true or 0/false"),
])
def test_a_bad_list_query_is_a_400_naming_the_parameter(query: dict[str, str], message: str) -> None:
    with pytest.raises(ApiError) as raised:
        models.ImportLogsQuery.of(query)
    assert raised.value.status == 400 and message in raised.value.message


def test_blank_and_unknown_query_parameters_are_left_out() -> None:
    query = models.JobsQuery.of({"page": " ", "q": "", "color": "red", "limit": "10"})
    assert (query.paging.page, query.paging.limit, query.conditions()) == (1, 10, {})


def titled(schema: Any) -> bool:
    """A ``title`` keyword anywhere in a schema (a property named ``title`` is not one)."""
    if isinstance(schema, list):
        return any(titled(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    return isinstance(schema.get("title"), str) or any(
        any(titled(item) for item in value.values()) if key == "properties" else titled(value) for key, value in schema.items())


def test_the_generated_components_are_json_schemas_with_local_references_only() -> None:
    schemas = models.components()
    assert {"Health", "Feed", "ImportLog", "Job", "JobPage", "ImportLogPage", "NewFeed", "FeedChange", "FeedMapping",
            "Preview", "Error"} <= set(schemas)
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert not titled(schema), name  # pydantic's generated titles are left out
    assert schemas["Job"]["properties"]["title"] == {"type": "string"}  # a property named title stays
    for model in models.QUERIES:
        for parameter in models.query_parameters(model):
            assert parameter["in"] == "query" and not parameter["required"] and "anyOf" not in parameter["schema"]
