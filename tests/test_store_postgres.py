"""The results store on PostgreSQL (a throwaway server, tests/postgres_server.py) and under concurrent writers; and a
scan of embedlab/ that fails when SQL is built from strings.

Only the public ResultsStore API is used (constructor, add_run, query), so these tests hold while the schema grows.
"""
from __future__ import annotations

import ast
import datetime as dt
import multiprocessing as mp
import queue
import re
import traceback
import uuid
from pathlib import Path

from embedlab.bench.store import ResultsStore

EMBEDLAB = Path(__file__).resolve().parents[1] / "embedlab"


# --- (a) PostgreSQL round trip equals SQLite's -----------------------------------------------------------------------

def _roundtrip_rows(model: str) -> list[dict]:
    when = dt.datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # not UTC on purpose
    common = {"model": model, "task": "stsb", "task_type": "sts", "dataset": "stsb", "split": "test",
              "created_at": when, "git_commit": "c0ffee", "run_id": uuid.uuid4().hex}
    return [
        {**common, "metric": "cosine_spearman", "value": 81.25, "duration_s": 1.5, "model_path": "models/m",
         "model_hash": "h1", "extra": {"max_length": 128, "nested": {"a": [1, 2.5, None, "x"]}, "text": "é ✓ 'q\""}},
        {**common, "metric": "undefined", "value": float("nan"), "duration_s": float("inf"), "extra": None},
        {**common, "metric": "main_score", "value": 12345.678901234567, "git_commit": None, "extra": {}},
    ]


def test_postgres_round_trip_equals_sqlite(postgres_url, tmp_path):
    model = f"roundtrip-{uuid.uuid4().hex[:8]}"  # the session's database is shared: keep to our own rows
    rows = _roundtrip_rows(model)
    got = {}
    for name, url in (("postgresql", postgres_url), ("sqlite", f"sqlite:///{tmp_path / 'results.sqlite'}")):
        with ResultsStore(url) as store:
            assert store.add_run(rows) == rows[0]["run_id"]
            got[name] = [{k: v for k, v in r.items() if k != "id"} for r in store.query(model=model)]
            assert [r["metric"] for r in store.query(model=model, latest_only=True)] == \
                   ["cosine_spearman", "undefined", "main_score"]
    pg, lite = got["postgresql"], got["sqlite"]
    assert pg == lite  # every column, the ones added later included
    assert [r["metric"] for r in pg] == ["cosine_spearman", "undefined", "main_score"]
    assert pg[0]["value"] == 81.25 and pg[0]["duration_s"] == 1.5
    assert pg[1]["value"] is None and pg[1]["duration_s"] is None  # NaN / inf are stored as NULL
    assert pg[2]["value"] == 12345.678901234567  # double precision, not a 4-byte float
    assert pg[0]["extra"] == rows[0]["extra"] and pg[1]["extra"] is None and pg[2]["extra"] == {}
    assert pg[0]["model_path"] == "models/m" and pg[0]["model_hash"] == "h1" and pg[2]["git_commit"] is None
    for r in pg:
        assert r["created_at"] == rows[0]["created_at"]  # the same instant ...
        assert r["created_at"].utcoffset() == dt.timedelta(0)  # ... returned timezone-aware, in UTC
        assert r["run_id"] == rows[0]["run_id"]


# --- (b) concurrent writers ----------------------------------------------------------------------------------------

WRITERS, RUNS, ROWS_PER_RUN = 4, 25, 6


def _writer(url: str, writer: int, barrier, results) -> None:
    """One writer process: open the store (all writers at once, on a new database) and add RUNS runs."""
    try:
        barrier.wait(timeout=120)  # all open at once: also races the store's creation / migration
        with ResultsStore(url) as store:
            for run in range(RUNS):
                store.add_run([
                    {"model": f"writer-{writer}", "task": f"task-{run}", "task_type": "sts", "dataset": "d",
                     "split": "test", "metric": f"m{k}", "value": writer * 1000 + run + k / 10,
                     "run_id": f"w{writer}-r{run}", "git_commit": None, "extra": {"writer": writer, "row": k}}
                    for k in range(ROWS_PER_RUN)])
        results.put((writer, None))
    except BaseException:
        results.put((writer, traceback.format_exc()))


def _run_writers(url: str) -> None:
    ctx = mp.get_context("spawn")  # no fork of pytest's process (threads, open connections)
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, w, barrier, results)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    reports = {}
    try:
        for _ in procs:
            writer, error = results.get(timeout=300)
            reports[writer] = error
    except queue.Empty:
        pass
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    failed = {w: e for w, e in reports.items() if e}
    assert not failed, "writers failed:\n" + "\n".join(f"writer {w}:\n{e}" for w, e in failed.items())
    assert sorted(reports) == list(range(WRITERS)), f"writers that never reported: {set(range(WRITERS)) - set(reports)}"
    assert [p.exitcode for p in procs] == [0] * WRITERS


def _check_all_rows(url: str) -> None:
    with ResultsStore(url) as store:
        rows = store.query()
    assert len(rows) == WRITERS * RUNS * ROWS_PER_RUN  # no lost row, no duplicate
    seen = {(r["run_id"], r["metric"]): r for r in rows}
    assert len(seen) == len(rows)
    for w in range(WRITERS):
        for run in range(RUNS):
            for k in range(ROWS_PER_RUN):
                r = seen[(f"w{w}-r{run}", f"m{k}")]
                assert r["model"] == f"writer-{w}" and r["task"] == f"task-{run}"
                assert r["value"] == w * 1000 + run + k / 10 and r["extra"] == {"writer": w, "row": k}


def test_postgres_concurrent_writers_lose_nothing(postgres_server):
    url = postgres_server.create_database(f"writers_{uuid.uuid4().hex[:8]}")  # new and empty: creation races too
    _run_writers(url)
    _check_all_rows(url)


def test_sqlite_file_concurrent_writers_lose_nothing(tmp_path):
    """SQLite's default (a file with a 60 s busy timeout) holds for a few local writers."""
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    _run_writers(url)
    _check_all_rows(url)


# --- (c) no SQL built from strings -------------------------------------------------------------------------------

# SQLAlchemy's escape hatches into raw SQL text: text("..."), literal_column("...").
RAW_SQL_FUNCS = {"text", "literal_column"}
EXECUTE_METHODS = {"execute", "executemany", "executescript"}
# Upper case only: messages and docstrings say "update" or "select", SQL is written SELECT.
SQL_KEYWORDS = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE (TABLE|INDEX|UNIQUE INDEX)|"
                          r"DROP (TABLE|INDEX)|ALTER TABLE|PRAGMA)\s|\sWHERE\s")


def _const_text(node: ast.AST) -> str:
    """The literal text of a str constant or an f-string's constant parts ('' for anything else)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_const_text(v) for v in node.values)
    return ""


def _is_stringy(node: ast.AST) -> bool:
    """A str literal, an f-string, or a string built with %, + or .format() / .join()."""
    if isinstance(node, (ast.JoinedStr,)) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _is_stringy(node.left) or _is_stringy(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return _is_stringy(node.func.value)
    return False


def _built_sql_text(node: ast.AST) -> str:
    """For a string built from parts (f-string, %, +, .format), the literal text of its parts ('' otherwise)."""
    if isinstance(node, ast.JoinedStr):
        return _const_text(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)) and _is_stringy(node):
        return _const_text(node.left) + " " + _const_text(node.right) + " " + _built_sql_text(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _const_text(node.func.value)
    return ""


def find_string_sql(root: Path) -> list[str]:
    """Every place under ``root`` (*.py) where SQL is written or built as a string, as "path:line: what".

    Flags: sqlalchemy's text / literal_column (imported or called), any exec_driver_sql, .execute / .executemany /
    .executescript whose statement is a str, an f-string or a %/+/.format-built string, and any f-string or
    %/+/.format-built string whose literal parts hold SQL (SELECT, INSERT INTO, UPDATE, DELETE FROM, CREATE TABLE,
    ...). A file that does not parse is reported too (it could not be checked). Not seen: a plain str variable
    passed to execute (the variable's origin is not followed).
    """
    found: list[tuple[Path, int, str]] = []
    for path in sorted(Path(root).rglob("*.py")):
        where = path.relative_to(root)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as e:
            found.append((where, 0, f"cannot be parsed, so not checked ({e})"))
            continue
        raw_names: set[str] = set()  # local names of sqlalchemy's text / literal_column
        sa_modules: set[str] = set()  # local names of sqlalchemy modules (sa, sqlalchemy, sql, expression)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "sqlalchemy":
                        sa_modules.add(a.asname or a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
                for a in node.names:
                    if a.name in RAW_SQL_FUNCS:
                        raw_names.add(a.asname or a.name)
                        found.append((where, node.lineno, f"imports {node.module}.{a.name} (raw SQL text)"))
                    elif a.name in ("sql", "expression"):
                        sa_modules.add(a.asname or a.name)

        def flag(node: ast.AST, what: str) -> None:
            found.append((where, node.lineno, what))

        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in raw_names:
                    flag(node, f"{f.id}(...): raw SQL text")
                elif isinstance(f, ast.Attribute):
                    base = f.value
                    while isinstance(base, ast.Attribute):  # sqlalchemy.sql.expression.text
                        base = base.value
                    if f.attr in RAW_SQL_FUNCS and isinstance(base, ast.Name) and base.id in sa_modules:
                        flag(node, f"{ast.unparse(f)}(...): raw SQL text")
                    elif f.attr == "exec_driver_sql":
                        flag(node, "exec_driver_sql(...): raw SQL string")
                    elif f.attr in EXECUTE_METHODS:
                        stmt = node.args[0] if node.args else next(
                            (k.value for k in node.keywords if k.arg in ("statement", "sql", "object_")), None)
                        if stmt is not None and _is_stringy(stmt):
                            flag(node, f".{f.attr}() of a string: {ast.unparse(stmt)[:60]}")
            text = _built_sql_text(node) if isinstance(node, (ast.JoinedStr, ast.BinOp, ast.Call)) else ""
            if text and SQL_KEYWORDS.search(text):
                flag(node, f"SQL built from a string: {ast.unparse(node)[:60]}")
    return [f"{where}:{line}: {what}" if line else f"{where}: {what}" for where, line, what in sorted(set(found))]


def test_no_sql_built_from_strings_in_embedlab():
    """Queries go through SQLAlchemy's expression language (select, insert, func, ...): parameters are bound, names
    are quoted per dialect, and the same code runs on SQLite and PostgreSQL. Nothing is allow-listed."""
    hits = find_string_sql(EMBEDLAB)
    assert not hits, "SQL written as strings in embedlab/ (use select()/insert()/func.* instead):\n" + "\n".join(hits)


BAD_SAMPLE = '''\
import sqlalchemy as sa
import sqlalchemy
from sqlalchemy import text, select
from sqlalchemy import literal_column as lc

def f(conn, table, name, cur):
    conn.execute(text("SELECT 1"))                                  # 7
    conn.execute(sa.text("DELETE FROM results"))                    # 8
    conn.execute(sqlalchemy.sql.expression.text("SELECT 2"))        # 9
    conn.exec_driver_sql("VACUUM")                                  # 10
    conn.execute(f"SELECT * FROM {table}")                          # 11
    cur.execute("SELECT * FROM results WHERE model = '%s'" % name)  # 12
    cur.executemany("INSERT INTO t VALUES (" + name + ")", [])      # 13
    cur.execute("DROP TABLE {}".format(table))                      # 14
    q = f"UPDATE results SET value = 0 WHERE model = '{name}'"      # 15
    q2 = "CREATE TABLE " + table                                    # 16
    return select(lc("x"))                                          # 17
'''

GOOD_SAMPLE = '''\
from sqlalchemy import func, select, insert
from sqlalchemy.orm import Session

def f(engine, table, name, path):
    with Session(engine) as s:
        s.execute(select(table).where(table.c.model == name))
        s.execute(insert(table), [{"model": name}])
        s.execute(select(func.pg_advisory_xact_lock(42)))
    text = path.read_text()
    raise ValueError(f"cannot update {name}: select another store, delete {path} first; {text[:10]}")
'''


def test_sql_scanner_catches_bad_sample(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(BAD_SAMPLE)
    (tmp_path / "pkg" / "good.py").write_text(GOOD_SAMPLE)
    hits = find_string_sql(tmp_path)
    assert all(h.startswith(str(Path("pkg") / "bad.py") + ":") for h in hits), hits
    # every rule on its own: the line of each bad pattern carries that rule's message
    expected = {3: "imports sqlalchemy.text", 4: "imports sqlalchemy.literal_column", 7: "text(...)",
                8: "sa.text(...)", 9: "sqlalchemy.sql.expression.text(...)", 10: "exec_driver_sql",
                11: ".execute() of a string", 12: ".execute() of a string", 13: ".executemany() of a string",
                14: ".execute() of a string", 15: "SQL built from a string", 16: "SQL built from a string",
                17: "lc(...)"}
    for line, what in expected.items():
        assert any(h.startswith(f"{Path('pkg') / 'bad.py'}:{line}: {what}") for h in hits), (line, what, hits)
    for line in (11, 12, 13, 14):  # the SQL-keyword rule alone also catches the strings passed to execute
        assert any(h.startswith(f"{Path('pkg') / 'bad.py'}:{line}: SQL built from a string") for h in hits), line
    assert {int(h.split(":")[1]) for h in hits} == set(expected), "\n".join(hits)
    assert find_string_sql(tmp_path / "empty-folder-that-does-not-exist") == []
    (tmp_path / "pkg" / "broken.py").write_text("def f(:\n")
    assert any("broken.py: cannot be parsed" in h for h in find_string_sql(tmp_path))
