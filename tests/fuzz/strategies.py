"""What the fuzz tests send: JSON junk, valid Jobs, specs and Deployment Targets, and mutations of them.

A mutated document comes with the paths that were changed, so a test can check that every validation
error names a field on (or right next to) a changed path: an error must point the user at what is wrong.
"""

from __future__ import annotations

import copy
import string
from datetime import UTC
from typing import Any

from hypothesis import strategies as st
from pydantic.alias_generators import to_camel, to_snake

Path = tuple[str | int, ...]

# Strings users (and attackers) type: empty, blank, markup, escapes, control characters, paths, unicode.
NASTY = [
    "",
    " ",
    "\t\n",
    "null",
    "None",
    "0",
    "-1",
    "[/]",
    "[bold]x[/bold]",
    "[/red]",
    "{}",
    "%s%n",
    "\x00",
    "a\x00b",
    "\u202e",
    "\ufeff",
    "💥",
    "../../etc/passwd",
    "file:///dev/null",
    "job-",
    "'; DROP TABLE jobs; --",
    "a" * 64,
    "ä" * 600,
]
text = st.text(max_size=24) | st.sampled_from(NASTY)


def huge(most: int) -> st.SearchStrategy[str]:
    """Long strings, cheaply: hypothesis' own text is slow at this size, and a repeated chunk is enough to
    hit every length limit."""
    return st.builds(lambda chunk, n: (chunk * n)[:n], st.text(min_size=1, max_size=3), st.integers(64, most))


# Past every length limit of a Job or targets file, and past Temporal's 2 kB limit on a search attribute value
# when its characters take several bytes; files are parsed by pure-Python PyYAML, slow on long scalars.
huge_strings = huge(2_100)
numbers = (
    st.integers()
    | st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, -(2**63), 10**30, 7 * 24 * 3600 + 1])
    | st.floats(allow_nan=False, allow_infinity=False)
)

# Field names of every model users write (both spellings), and near misses.
FIELDS = [
    "kind", "apiVersion", "metadata", "spec", "status", "id", "name", "deploymentName", "labels", "createdAt",
    "terminatedAt", "engine", "deploymentTargetName", "parallelism", "artifact", "flinkConfiguration",
    "restoreFromSavepoint", "project", "region", "savepointTimeoutSeconds", "jarUri", "entryClass", "mainArgs",
    "jobName", "containerSpecGcsPath", "gcsPath", "parameters", "secretParameters", "environment", "reason",
    "targets", "restUrl", "slots", "savepointDir", "webUiUrl", "headers", "maxConcurrentJobs", "maxWorkers",
]  # fmt: skip
TYPOS = ["paralelism", "Engine", "jar_URI", "deploymentTarget", "savepointTimeout", "reasons", "spec ", "kind\x00"]
keys = st.sampled_from(FIELDS) | st.sampled_from([to_snake(f) for f in FIELDS] + TYPOS) | text

json_leaves = st.none() | st.booleans() | numbers | text
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)
junk = json_values | huge_strings


def spelled(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A model's dict in camelCase or snake_case (both are accepted; one draw per dict keeps generation fast)."""
    return {to_snake(k): v for k, v in doc.items()} if draw(st.booleans()) else doc


@st.composite
def optional_fields(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    return {k: draw(v) for k, v in fields.items() if draw(st.booleans())}


job_ids = st.uuids().map(str)
label_keys = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,61}[A-Za-z0-9])?", fullmatch=True)
target_names = st.text(min_size=1, max_size=63) | st.sampled_from(["local", "dataflow-local", "[/]", "x" * 63])
non_empty = st.text(min_size=1, max_size=40) | st.sampled_from([n for n in NASTY if n])


@st.composite
def artifacts(draw: st.DrawFn, engine: str) -> dict[str, Any]:
    if engine == "FLINK":
        doc = {"kind": "JAR", "jarUri": draw(non_empty)}
        doc |= draw(optional_fields({"entryClass": st.none() | text, "mainArgs": st.lists(text, max_size=4)}))
    else:
        kind = draw(st.sampled_from(["FLEX_TEMPLATE", "CLASSIC_TEMPLATE"]))
        where = "containerSpecGcsPath" if kind == "FLEX_TEMPLATE" else "gcsPath"
        doc = {"kind": kind, "jobName": draw(non_empty), where: draw(non_empty)}
        # Parameter names are prefixed so that plain and secret ones never share a name (that is invalid).
        doc |= draw(
            optional_fields(
                {
                    "parameters": st.dictionaries(text.map("p.".__add__), text, max_size=3),
                    "secretParameters": st.dictionaries(text.map("s.".__add__), text, max_size=2),
                    "environment": st.dictionaries(keys, json_values, max_size=3),
                }
            )
        )
    return spelled(draw, doc)


@st.composite
def specs(draw: st.DrawFn, engine: str | None = None) -> dict[str, Any]:
    """A valid spec (FLINK or DATAFLOW)."""
    engine = engine or draw(st.sampled_from(["FLINK", "DATAFLOW"]))
    doc = {"engine": engine, "deploymentTargetName": draw(target_names), "artifact": draw(artifacts(engine))}
    doc |= draw(
        optional_fields(
            {
                "parallelism": st.integers(1, 100_000),
                "flinkConfiguration": st.dictionaries(text, text, max_size=3),
                "restoreFromSavepoint": st.none() | text,
                "project": st.none() | text,
                "region": st.none() | text,
                "savepointTimeoutSeconds": st.integers(1, 7 * 24 * 3600),
            }
        )
    )
    return spelled(draw, doc)


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Job resource as a user writes it."""
    metadata = draw(
        optional_fields(
            {
                "id": job_ids | st.uuids().map(lambda u: str(u).upper()),
                "name": st.text(max_size=253) | st.just("n" * 253),
                "deploymentName": st.none() | st.text(max_size=60),
                "labels": st.dictionaries(label_keys, text, max_size=3),
                "createdAt": st.none() | st.datetimes(timezones=st.just(UTC)).map(str),
            }
        )
    )
    doc: dict[str, Any] = {"spec": draw(specs())}
    doc |= draw(optional_fields({"kind": st.just("Job"), "apiVersion": text}))
    if metadata or draw(st.booleans()):
        doc["metadata"] = spelled(draw, metadata)
    return doc


@st.composite
def targets_files(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Deployment Targets file (names unique)."""
    url = st.sampled_from(["http://localhost:8081", "https://flink.example.com:443/", "http://10.0.0.7:8081/x"])
    flink = st.fixed_dictionaries(
        {"name": target_names, "kind": st.just("flink-session"), "restUrl": url, "slots": st.integers(1, 1_000_000)},
        optional={"savepointDir": st.none() | text, "webUiUrl": st.none() | url, "headers": st.dictionaries(
            st.text(string.ascii_letters + "-", min_size=1, max_size=20), text, max_size=2)},
    )  # fmt: skip
    dataflow = st.fixed_dictionaries(
        {"name": target_names, "kind": st.just("dataflow"), "project": non_empty, "region": non_empty},
        optional={"maxConcurrentJobs": st.integers(1, 10_000), "maxWorkers": st.none() | st.integers(1, 10_000)},
    )
    entries = draw(st.lists(flink | dataflow, max_size=5, unique_by=lambda t: t["name"]))
    return {"targets": [spelled(draw, e) for e in entries]}


# --- mutations ------------------------------------------------------------------------------------


def nodes(doc: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """Every node of a JSON document with its path, the root first."""
    found = [(path, doc)]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += nodes(value, (*path, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += nodes(value, (*path, index))
    return found


def _set(doc: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@st.composite
def mutated(
    draw: st.DrawFn, valid: st.SearchStrategy[Any], most: int = 3, value: st.SearchStrategy[Any] = junk
) -> tuple[Any, list[Path]]:
    """A valid document with 0..`most` random mutations, and the paths they changed."""
    doc = copy.deepcopy(draw(valid))
    changed: list[Path] = []
    # Mostly broken, sometimes intact: the valid path must keep working too.
    for _ in range(draw(st.sampled_from([0, *range(1, most + 1), *range(1, most + 1)]))):
        path, node = draw(st.sampled_from(nodes(doc)))
        op = draw(st.sampled_from(["replace", "delete", "extra", "huge"]))
        if op == "delete" and path and isinstance(_parent(doc, path), dict):
            del _parent(doc, path)[path[-1]]
        elif op == "extra" and isinstance(node, dict):
            key = draw(keys)
            node[key] = draw(value)
            path = (*path, key)
        elif op == "huge":
            doc = _set(doc, path, draw(huge_strings))
        else:
            doc = _set(doc, path, draw(value))
        changed.append(path)
    return doc, changed


def _parent(doc: Any, path: Path) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


# --- what an error must name ----------------------------------------------------------------------

ARTIFACT_TAGS = {"JAR", "FLEX_TEMPLATE", "CLASSIC_TEMPLATE"}
TARGET_TAGS = {"flink-session", "dataflow"}


def _normal(path: Path) -> list[str]:
    """A path as a user reads it: one spelling, without pydantic's union tags and dict-key markers."""
    out: list[str] = []
    for step in path:
        tag = (step in ARTIFACT_TAGS and out[-1:] == ["artifact"]) or (
            step in TARGET_TAGS and out[-2:-1] == ["targets"]
        )
        if tag or step == "[key]":
            continue
        out.append(to_camel(str(step)) if isinstance(step, str) else str(step))
    return out


def related(loc: Path, changed: Path) -> bool:
    """Whether an error at `loc` is about the change at `changed`: on its path (a container of it, or
    inside it), or a sibling of a changed discriminator (`kind`), which decides what the siblings mean."""
    a, b = _normal(loc), _normal(changed)
    if a[: len(b)] == b or b[: len(a)] == a:
        return True
    return bool(b) and b[-1] == "kind" and a[: len(b) - 1] == b[:-1]


def unrelated_errors(errors: list[Any], changed: list[Path]) -> list[Any]:
    """The pydantic errors that name no changed path (must be none)."""
    return [e for e in errors if not any(related(tuple(e["loc"]), c) for c in changed)]
