"""`import FILE --source NAME --replace` (the list follows its source) and `remove --source NAME`."""

from __future__ import annotations

import json
from pathlib import Path

from .test_entry_point import one_error_line, proc


def csv(path: Path, *addresses: str) -> Path:
    path.write_text("email\n" + "".join(f"{a}\n" for a in addresses))
    return path


def listed(db: Path, source: str | None = None) -> list[str]:
    args = ("list", "--db", str(db), "--nl") + (("--source", source) if source else ())
    return [json.loads(line)["key"] for line in proc(*args).stdout.splitlines()]


def test_replace_makes_the_source_the_file_in_one_go(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    export = csv(tmp_path / "export.csv", "a@x.com", "b@x.com", "c@x.com")
    assert proc("import", "--db", str(db), str(export), "--source", "lemlist").returncode == 0
    assert proc("add", "--db", str(db), "d@x.com").returncode == 0  # by hand: another source
    csv(export, "a@x.com", "d@x.com", "e@x.com", "not-an-address")

    dry = proc("import", "--db", str(db), str(export), "--source", "lemlist", "--replace", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"{export}: source 'lemlist': would add 1, would remove 2, 1 unchanged;"
        " 1 entry listed by another source and left there, 1 invalid",
        "  + e@x.com",
        "  - b@x.com",
        "  - c@x.com",
        "dry run: nothing was changed",
    ]
    assert listed(db, "lemlist") == ["a@x.com", "b@x.com", "c@x.com"]

    done = proc("import", "--db", str(db), str(export), "--source", "lemlist", "--replace", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["added"], report["removed"], report["unchanged"], report["elsewhere"]) == (
        ["e@x.com"],
        ["b@x.com", "c@x.com"],
        1,
        1,
    )
    assert listed(db, "lemlist") == ["a@x.com", "e@x.com"]
    assert listed(db) == ["a@x.com", "d@x.com", "e@x.com"]


def test_replace_refuses_to_empty_a_source_unless_forced(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    export = csv(tmp_path / "lemlist.csv", "a@x.com", "b@x.com")
    assert proc("import", "--db", str(db), str(export)).returncode == 0
    csv(export, "not-an-address")  # a broken export: no valid row at all
    refused = proc("import", "--db", str(db), str(export), "--replace")
    assert refused.returncode == 2
    one_error_line(refused)
    assert "would remove all 2 entries" in refused.stderr and "Add --force to accept it" in refused.stderr
    assert listed(db) == ["a@x.com", "b@x.com"]
    forced = proc("import", "--db", str(db), str(export), "--replace", "--force")
    assert forced.returncode == 0 and "removed 2" in forced.stdout
    assert listed(db) == []
    several = proc("import", "--db", str(db), str(export), str(export), "--replace")
    assert several.returncode == 2 and "exactly one file" in several.stderr


def test_remove_source_asks_then_removes_with_a_count(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    assert proc("import", "--db", str(db), str(csv(tmp_path / "oops.csv", "a@x.com", "b@x.com"))).returncode == 0
    assert proc("add", "--db", str(db), "keep@x.com").returncode == 0
    no = proc("remove", "--db", str(db), "--source", "oops", stdin="n\n")
    assert no.returncode == 1 and "remove all 2 entries of source 'oops'?" in no.stderr
    assert len(listed(db)) == 3
    yes = proc("remove", "--db", str(db), "--source", "oops", stdin="y\n")
    assert yes.returncode == 0 and yes.stdout.strip() == "removed 2 entries of source 'oops'"
    assert listed(db) == ["keep@x.com"]
    again = proc("remove", "--db", str(db), "--source", "oops", "--yes")
    assert again.returncode == 1
    one_error_line(again)
    neither = proc("remove", "--db", str(db))
    assert neither.returncode == 2 and "--source NAME" in neither.stderr
