"""Deployment Targets files (JOBCTL_TARGETS): random YAML and near-valid target lists.

A file either loads, or gives a TargetsError that names the file and, for a bad entry, the entry
(its index and name); `jobctl targets --offline` shows that error and exits 1, never a traceback.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from jobctl.cli import app
from jobctl.targets import DeploymentTargets, TargetsError
from tests.fuzz.profile import fuzz
from tests.fuzz.strategies import mutated, targets_files, text

# Pieces of YAML that break parsers and constructors: bad tags and scalars, anchors, deep nesting, tabs.
FRAGMENTS = [
    "!!int abc", "!!float x", "!!timestamp yesterday", "!!binary ###", "!!bool maybe", "!!null 1",
    "2024-13-45", "2024-02-30 25:61:00", "!!python/object/apply:os.system ['true']", "!!set {a, b}",
    "&a [*a]", "*nowhere", "<<: *nowhere", "? [a, b]\n: c", "[" * 50, "{" * 50 + "}" * 50, "\t- x",
    "%YAML 9.9\n---", "--- a\n--- b", "'unclosed", '"\\xZZ"', ": :", "- - - -", "targets: !!str", "\x00",
    "\ufeff", "targets:\n  - *a", "targets:\n  -\n", "targets: [[[]]]", "targets: {name: x}", "1: 2",
]  # fmt: skip


def visible(text: str) -> str:
    """Text as a terminal shows it: printable characters, whitespace runs as one space."""
    return " ".join("".join(c for c in text if c.isprintable() or c.isspace()).split())


def terminal_safe(text: str) -> bool:
    """No control characters but newlines and tabs: a \\r or an escape sequence from the file would garble
    (or drive) the user's terminal."""
    return not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text)


def dump(doc: Any, as_json: bool) -> str:
    return json.dumps(doc) if as_json else yaml.safe_dump(doc, allow_unicode=True)


MUTATED_TARGETS = mutated(targets_files())


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, list[tuple[str | int, ...]] | None]:
    """A file's bytes, with the changed paths when it is a mutated targets list (None: free-form junk)."""
    how = draw(st.sampled_from(["mutated", "mutated", "spliced", "fragments", "bytes"]))
    if how == "mutated":
        doc, changed = draw(MUTATED_TARGETS)
        return dump(doc, draw(st.booleans())).encode(), changed
    if how == "spliced":  # a valid file with a bad fragment pasted somewhere
        good = dump(draw(targets_files()), False)
        at = draw(st.integers(0, len(good)))
        return (good[:at] + draw(st.sampled_from(FRAGMENTS)) + good[at:]).encode(), None
    if how == "fragments":
        parts = draw(st.lists(st.sampled_from(FRAGMENTS) | text, min_size=1, max_size=6))
        return draw(st.sampled_from(["\n", " ", ""])).join(parts).encode(), None
    return draw(st.binary(max_size=64)), None


def entries_named(message: str, changed: list[tuple[str | int, ...]]) -> bool:
    """The error names one of the changed entries (targets.<i>.…), or says which name is declared twice."""
    indexes = {c[1] for c in changed if len(c) >= 2 and c[0] == "targets" and isinstance(c[1], int)}
    return "declared twice" in message or any(re.search(rf"\btargets\.{i}\b", message) for i in indexes)


def inside_entries(changed: list[tuple[str | int, ...]]) -> bool:
    # A deleted entry is no error; any other change inside an entry must be reported for that entry.
    return bool(changed) and all(len(c) >= 3 and c[0] == "targets" and isinstance(c[1], int) for c in changed)


@fuzz()
@given(case=documents())
def test_targets_file_loads_or_names_file_and_entry(
    tmp_path_factory: Any, cli: CliRunner, cases: Any, case: Any
) -> None:
    ran = cases("targets file: DeploymentTargets.load + jobctl targets --offline")
    content, changed = case
    path = Path(tmp_path_factory.getbasetemp()) / "fuzz targets.yaml"
    path.write_bytes(content)
    ran.add("targets file: DeploymentTargets.load + jobctl targets --offline")
    shown = cli.invoke(app, ["targets", "--offline", "--file", str(path)])
    assert shown.exception is None or isinstance(shown.exception, SystemExit), shown.exception
    try:
        declared = DeploymentTargets.load(path)
    except TargetsError as err:
        message = str(err)
        assert str(path) in message, message
        assert changed != [], f"an intact targets file was refused: {message}"
        if changed and inside_entries(changed):
            assert entries_named(message, changed), f"{message!r} does not name the changed entry {changed}"
        assert shown.exit_code == 1, shown.output
        assert terminal_safe(shown.output), repr(shown.output)
        assert visible(shown.output).startswith(f"error: Deployment Targets file {path} "), shown.output
        if changed and inside_entries(changed):
            assert entries_named(shown.output, changed), shown.output
        return
    assert shown.exit_code == 0, shown.output
    as_json = cli.invoke(app, ["targets", "--offline", "--json", "--file", str(path)])
    assert as_json.exit_code == 0, as_json.output
    listed = [row["target"]["name"] for row in json.loads(as_json.output)]
    assert listed == [t.name for t in declared.all()]


def test_missing_file_directory_and_deep_nesting_are_named(tmp_path: Path, cli: CliRunner) -> None:
    # Nesting deep enough to exhaust PyYAML's (and json's) recursion: too slow to parse in every fuzz case.
    (tmp_path / "deep.yaml").write_text("targets: " + "[" * 3000 + "]" * 3000)
    (tmp_path / "deep.json").write_text('{"targets": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for path in (tmp_path / "nope.yaml", tmp_path, tmp_path / "deep.yaml", tmp_path / "deep.json"):
        result = cli.invoke(app, ["targets", "--offline", "--file", str(path)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert str(path) in visible(result.output)
