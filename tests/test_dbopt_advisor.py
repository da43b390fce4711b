"""The index advisor (issue 4, "Advisor"): `quaver-dbopt advise` on a fixture database with a
workload whose right answers are known (tests/fixtures/advisor_workload.py), then with --apply;
the bad inputs; the daemon's Advise/ApplyIndex/Explain and the gateway's endpoints.

The fixture lives in its own database (`advfix`) of the test PostgreSQL, created here, so the
rooms database is not touched. Precision and recall: a proposal matches an expected index
when table and columns (in order) are equal; DESC and a partial WHERE do not change the match
and are asserted separately for the cases made for them.
"""
import json
import os
import subprocess
import sys
import time

import pytest

import harness
from harness import bus_read, bus_sub

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
import advisor_workload as workload  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "advisor_fixture.sql")
DB = "advfix"


def _psql_file(pg, db, path):
    cmd = [f"{harness.PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.dir,
           "-p", str(pg.port), "-U", "postgres", "-d", db, "-o", "/dev/null", "-f", path]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def _fresh_db(pg, db, extensions=("pg_stat_statements", "hypopg")):
    """db dropped and created again, with these extensions."""
    pg.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", db="postgres")
    pg.sql(f"CREATE DATABASE {db}", db="postgres")
    for ext in extensions:
        pg.sql(f"CREATE EXTENSION {ext}", db=db)


def _url(pg, db):
    return f"postgresql://postgres@127.0.0.1:{pg.port}/{db}"


def _advise(*args, timeout=240):
    exe = os.path.join(harness.find_bin_dir(), "quaver-dbopt")
    t0 = time.monotonic()
    r = subprocess.run([exe, "advise", *args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    r.wall_ms = (time.monotonic() - t0) * 1000
    return r


def _indexes(pg, db):
    out = pg.sql("SELECT indexrelid::regclass::text || ':' || indisvalid FROM pg_index i "
                 "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n "
                 "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                 "AND c.relname <> 'dbopt_index_history' ORDER BY 1", db=db)
    return set(out.split())


def _key(rec):
    return (rec["table"], tuple(rec["columns"]))


@pytest.fixture(scope="module")
def fixture_db(stack):
    """advfix loaded (fsync is off in the test cluster), statistics reset, workload run."""
    pg = stack.pg
    _fresh_db(pg, DB)
    t0 = time.monotonic()
    _psql_file(pg, DB, FIXTURE)
    load_s = time.monotonic() - t0
    # the load's own inserts must not count as the workload's writes
    pg.sql("SELECT pg_stat_reset()", db=DB)
    pg.sql("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
           f"WHERE datname = '{DB}'), 0)", db=DB)
    path = os.path.join(pg.dir, "..", "advisor_workload.sql")
    with open(path, "w") as f:
        f.write(workload.script())
    _psql_file(pg, DB, path)
    # cumulative statistics reach the shared view at the end of a transaction, at most ~1 s later
    time.sleep(1.5)
    yield pg
    print(f"\nadvisor fixture: loaded in {load_s:.1f} s")


@pytest.fixture(scope="module")
def advice(fixture_db):
    r = _advise("--database", _url(fixture_db, DB), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r


def test_advise_precision_and_recall(fixture_db, advice):
    """The advisor proposes the known right indexes and nothing else (>= 0.9 each)."""
    out, r = advice
    got = {_key(rec) for rec in out["recommendations"]}
    hits = got & workload.EXPECTED
    precision = len(hits) / len(got) if got else 0.0
    recall = len(hits) / len(workload.EXPECTED)
    print(f"\nadvisor: precision {precision:.2f} recall {recall:.2f}, "
          f"{out['elapsed_ms']} ms (CLI wall {r.wall_ms:.0f} ms), "
          f"{out['queries_used']} statements, {out['candidates']} candidates")
    assert precision >= 0.9, f"wrong proposals: {sorted(got - workload.EXPECTED)}"
    assert recall >= 0.9, f"missed: {sorted(workload.EXPECTED - got)}"
    for rec in out["recommendations"]:
        for field in ("table", "columns", "where", "sql", "queries", "cost_before",
                      "cost_after"):
            assert field in rec, (field, rec)
        assert rec["sql"].startswith("CREATE INDEX CONCURRENTLY "), rec["sql"]
        assert rec["queries"], rec
        assert rec["cost_after"] < rec["cost_before"], rec
        assert "ms_before" not in rec and "kept" not in rec   # not measured without --apply
    for k, where in workload.PARTIAL.items():
        rec = next(x for x in out["recommendations"] if _key(x) == k)
        assert rec["where"] == where, rec
    for k, dirs in workload.DIRECTIONS.items():
        rec = next(x for x in out["recommendations"] if _key(x) == k)
        assert rec["directions"] == dirs, rec
    for rec in out["recommendations"]:
        if _key(rec) not in workload.PARTIAL:
            assert rec["where"] is None, rec
    for name in ("unused_indexes", "duplicate_indexes", "invalid_indexes"):
        assert isinstance(out[name], list)
    # the pg_stat_statements picture of the database: the workload's statements, heaviest first
    top = out["top_statements"]
    assert 0 < len(top) <= 20, top
    assert {"query", "calls", "total_ms", "mean_ms", "rows", "shared_hit_ratio"} <= set(top[0])
    assert [x["total_ms"] for x in top] == sorted((x["total_ms"] for x in top), reverse=True)
    assert any("line_items" in x["query"] and x["calls"] >= 6 for x in top), top


def test_advise_changes_nothing(fixture_db, advice):
    """Advice alone leaves the database as it was: no index, no history table."""
    idx = _indexes(fixture_db, DB)
    assert not any("dbopt_" in i for i in idx), idx
    assert fixture_db.sql("SELECT to_regclass('dbopt_index_history') IS NULL", db=DB).strip() == "t"


def test_advise_readable_table(fixture_db, advice):
    r = _advise("--database", _url(fixture_db, DB))
    assert r.returncode == 0, r.stderr
    assert "recommended index(es)" in r.stdout
    assert "CREATE INDEX CONCURRENTLY" in r.stdout


def test_apply_keeps_only_measured_wins(fixture_db, advice):
    """--apply creates each proposal, times its queries before and after, keeps it only at
    >= 2x; afterwards the database holds exactly the kept ones, none INVALID, and one history
    row per outcome."""
    before = _indexes(fixture_db, DB)
    r = _advise("--database", _url(fixture_db, DB), "--apply", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    recs = out["recommendations"]
    assert recs, "apply found nothing to do"
    kept = [x for x in recs if x["kept"]]
    for x in recs:
        assert {"ms_before", "ms_after", "kept", "reason"} <= set(x), x
    lines = []
    for x in kept:
        assert x["ms_after"] > 0 and x["ms_before"] / x["ms_after"] >= 2.0, x
        lines.append(f"{x['table']}({', '.join(x['columns'])}): {x['ms_before']:.2f} -> "
                     f"{x['ms_after']:.2f} ms = {x['ms_before'] / x['ms_after']:.1f}x")
    print("\nkept: " + "; ".join(lines) + f" (apply run {out['elapsed_ms']} ms)")
    after = _indexes(fixture_db, DB)
    new = after - before
    assert new == {f"{x['index_name']}:true" for x in kept}, (new, kept)
    assert not any(i.endswith(":false") for i in after), after
    rows = fixture_db.sql("SELECT index_name || ':' || kept FROM dbopt_index_history", db=DB)
    assert sorted(rows.split()) == sorted(f"{x['index_name']}:{'true' if x['kept'] else 'false'}"
                                          for x in recs)
    # with the kept indexes in place there is nothing left to propose for those queries
    again = _advise("--database", _url(fixture_db, DB), "--json")
    assert again.returncode == 0, again.stderr
    left = {_key(x) for x in json.loads(again.stdout)["recommendations"]}
    assert not (left & {_key(x) for x in kept}), left


def test_apply_failed_build_leaves_no_invalid_index(stack):
    """A CREATE INDEX CONCURRENTLY that fails (here: statement_timeout while an older
    transaction holds its snapshot) leaves an INVALID index; the advisor drops it, says so,
    and records the failure."""
    pg = stack.pg
    db = "advfail"
    _fresh_db(pg, db)
    pg.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g",
           db=db)
    pg.sql("VACUUM ANALYZE t", db=db)
    for i in range(5):
        pg.sql(f"SELECT v FROM t WHERE id = {i * 101 + 7}", db=db)
    env = dict(os.environ, PGAPPNAME="advisor-blocker")
    blocker = subprocess.Popen(
        [f"{harness.PG_BIN}/psql", "-X", "-q", "-h", pg.dir, "-p", str(pg.port), "-U", "postgres",
         "-d", db, "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ", "-c", "SELECT count(*) FROM t",
         "-c", "SELECT pg_sleep(6)", "-c", "COMMIT"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        harness.wait_for(lambda: pg.sql("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "application_name = 'advisor-blocker' AND query LIKE "
                                        "'%pg_sleep%'", db=db).strip() == "1", 10,
                         what="the blocking transaction")
        r = _advise("--database", _url(pg, db), "--apply", "--json", "--statement-timeout", "2000")
    finally:
        blocker.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)["recommendations"]
    assert [x["columns"] for x in recs] == [["id"]], recs
    assert recs[0]["kept"] is False, recs[0]
    assert "CREATE INDEX failed" in recs[0]["reason"], recs[0]
    assert "INVALID index it left was dropped" in recs[0]["reason"], recs[0]
    assert pg.sql("SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass", db=db).strip() == "0"
    assert pg.sql("SELECT kept FROM dbopt_index_history", db=db).split() == ["f"]


def test_reports_unused_duplicate_invalid(stack):
    pg = stack.pg
    db = "advrep"
    _fresh_db(pg, db)
    pg.sql("CREATE TABLE r (id int PRIMARY KEY, k int, v int)", db=db)
    pg.sql("INSERT INTO r SELECT g, g % 100, g FROM generate_series(1, 1000) g", db=db)
    pg.sql("CREATE INDEX r_k ON r (k)", db=db)
    pg.sql("CREATE INDEX r_k_again ON r (k)", db=db)
    pg.sql("CREATE INDEX r_k_v ON r (k, v)", db=db)
    pg.sql("CREATE INDEX r_v ON r (v)", db=db)
    # a unique build over duplicate values fails and leaves its index INVALID
    with pytest.raises(RuntimeError):
        pg.sql("CREATE UNIQUE INDEX CONCURRENTLY r_bad ON r (k)", db=db)
    r = _advise("--database", _url(pg, db), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["recommendations"] == []      # 1000 rows: below the size threshold
    unused = {x["index"]: x for x in out["unused_indexes"]}
    assert {"r_k", "r_k_again", "r_k_v", "r_v"} <= set(unused), unused
    assert "r_pkey" not in unused and "r_bad" not in unused
    assert all(x["stats_since"].endswith("Z") and x["stats_age_s"] >= 0 for x in unused.values())
    dups = {(x["index"], x["duplicate_of"]) for x in out["duplicate_indexes"]}
    assert ("r_k", "r_k_v") in dups and ("r_k_again", "r_k_v") in dups, dups
    assert ("r_k_again", "r_k") in dups or ("r_k", "r_k_again") in dups, dups
    assert not any(i == "r_v" or i == "r_pkey" for i, _ in dups), dups
    assert [x["index"] for x in out["invalid_indexes"]] == ["r_bad"]


# ------------------------------------------------------------------------- bad inputs
def test_bad_usage_exit_2():
    r = _advise()
    assert r.returncode == 2 and "--database URL is required" in r.stderr
    r = _advise("--database", "postgresql:///x", "--runs", "zero")
    assert r.returncode == 2 and "--runs" in r.stderr


def test_database_not_answering(stack):
    port = harness.free_port()
    r = _advise("--database", f"postgresql://admin:s3cret@127.0.0.1:{port}/nope", "--json")
    assert r.returncode == 1
    assert "does not answer" in r.stderr and str(port) in r.stderr
    assert "s3cret" not in r.stderr and "***" in r.stderr
    assert r.stdout == ""


def test_database_without_extensions(stack):
    pg = stack.pg
    _fresh_db(pg, "advbare", extensions=())
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v int)", db="advbare")
    r = _advise("--database", _url(pg, "advbare"))
    assert r.returncode == 1
    assert "pg_stat_statements" in r.stderr and "shared_preload_libraries" in r.stderr
    assert "CREATE EXTENSION" in r.stderr
    pg.sql("CREATE EXTENSION pg_stat_statements", db="advbare")
    r = _advise("--database", _url(pg, "advbare"), "--apply")
    assert r.returncode == 1
    assert "hypopg" in r.stderr and "CREATE EXTENSION hypopg" in r.stderr
    # nothing was changed: no history table, no index
    assert pg.sql("SELECT count(*) FROM pg_class WHERE relname = 'dbopt_index_history'",
                  db="advbare").strip() == "0"
    assert pg.sql("SELECT count(*) FROM pg_extension WHERE extname = 'hypopg'",
                  db="advbare").strip() == "0"


# ------------------------------------------------------------------------- the daemon
# dbopt advises its own database (the rooms database `quaver`). A probe table with a workload
# that a (k) index serves gives it something to propose; CREATE TABLE AS keeps its load out of
# the written-rows count (an INSERT of 60k rows would make it a write-heavy table).
PROBE = "advisor_probe"


@pytest.fixture(scope="module")
def probe(quaver):
    pg = quaver.pg
    pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pg.sql("CREATE EXTENSION IF NOT EXISTS hypopg")
    pg.sql(f"DROP TABLE IF EXISTS {PROBE}")
    pg.sql(f"CREATE TABLE {PROBE} AS SELECT g AS id, g % 20000 AS k, md5(g::text) AS v "
           "FROM generate_series(1, 60000) g")
    pg.sql(f"ALTER TABLE {PROBE} ADD PRIMARY KEY (id)")
    pg.sql(f"VACUUM ANALYZE {PROBE}")
    for i in range(10):
        pg.sql(f"SELECT id, v FROM {PROBE} WHERE k = {i * 997}")
    yield pg
    pg.sql(f"DROP TABLE IF EXISTS {PROBE}")


def _admin():
    from quaver.v1 import envelope_pb2
    return envelope_pb2.Caller(user_id=1, username="ops", admin=True)


def _probe_indexes(pg):
    return pg.sql(f"SELECT indexname FROM pg_indexes WHERE tablename = '{PROBE}' "
                  "AND indexname <> 'advisor_probe_pkey' ORDER BY 1").split()


def test_rpc_advise(quaver, mdp, probe):
    from quaver.v1 import dbopt_advise_pb2 as adv
    res = mdp.call("dbopt", "Advise", adv.AdviseRequest(), timeout_s=60)
    assert res.status == 200, (res.status, res.error)
    r = adv.AdviseReply()
    r.ParseFromString(res.payload)
    doc = json.loads(r.json)
    recs = [x for x in doc["recommendations"] if x["table"] == PROBE]
    assert [x["columns"] for x in recs] == [["k"]], doc["recommendations"]
    assert recs[0]["where"] is None and "WHERE k = $1" in " ".join(recs[0]["queries"])
    assert r.recommendations == len(doc["recommendations"]) and not r.cached
    assert _probe_indexes(probe) == []            # advice changes nothing
    # latest: the same result again, without a new run
    res = mdp.call("dbopt", "Advise", adv.AdviseRequest(latest=True), timeout_s=60)
    again = adv.AdviseReply()
    again.ParseFromString(res.payload)
    assert res.status == 200 and again.cached and again.json == r.json


def test_rpc_advise_apply_needs_admin(quaver, mdp, probe):
    from quaver.v1 import dbopt_advise_pb2 as adv
    res = mdp.call("dbopt", "Advise", adv.AdviseRequest(apply=True), timeout_s=60)
    assert res.status == 403, (res.status, res.error)
    res = mdp.call("dbopt", "ApplyIndex", adv.ApplyIndexRequest(table=PROBE, columns=["k"]),
                   timeout_s=60)
    assert res.status == 403, (res.status, res.error)
    assert _probe_indexes(probe) == []


def test_rpc_explain(quaver, mdp):
    from quaver.v1 import dbopt_advise_pb2 as adv, dbopt_pb2
    req = dbopt_pb2.QueryRequest(name="user_get", params=[dbopt_pb2.Value(text="1")])
    res = mdp.call("dbopt", "Explain", req, timeout_s=30)
    assert res.status == 200, (res.status, res.error)
    r = adv.ExplainReply()
    r.ParseFromString(res.payload)
    plan = json.loads(r.plan_json)
    assert plan[0]["Plan"]["Relation Name"] == "users" or "users" in r.plan_json
    assert "Index Scan" in r.shape and r.total_cost > 0
    res = mdp.call("dbopt", "Explain", dbopt_pb2.QueryRequest(name="no_such"), timeout_s=30)
    assert res.status == 404 and "no_such" in res.error
    res = mdp.call("dbopt", "Explain", dbopt_pb2.QueryRequest(name="user_get"), timeout_s=30)
    assert res.status == 400 and "takes 1 parameters" in res.error
    bad = dbopt_pb2.QueryRequest(name="user_get", params=[dbopt_pb2.Value(text="not a number")])
    res = mdp.call("dbopt", "Explain", bad, timeout_s=30)
    assert res.status == 400, (res.status, res.error)


def test_rpc_apply_index(quaver, mdp, probe):
    from quaver.v1 import dbopt_advise_pb2 as adv
    for bad, status, words in [
        (adv.ApplyIndexRequest(table=PROBE), 400, "1 to 3"),
        (adv.ApplyIndexRequest(table="no_such_table", columns=["k"]), 404, "no_such_table"),
        (adv.ApplyIndexRequest(table=PROBE, columns=["nope"]), 400, "nope"),
        (adv.ApplyIndexRequest(table=PROBE, columns=["k"], where="k > 5; DROP TABLE users"),
         400, "where"),
    ]:
        res = mdp.call("dbopt", "ApplyIndex", bad, timeout_s=60, caller=_admin())
        assert res.status == status and words in res.error, (bad, res.status, res.error)
    assert _probe_indexes(probe) == []
    sock = bus_sub(quaver, "db.index")
    time.sleep(0.5)   # the subscription reaches the bus
    res = mdp.call("dbopt", "ApplyIndex", adv.ApplyIndexRequest(table=PROBE, columns=["k"]),
                   timeout_s=120, caller=_admin())
    assert res.status == 200, (res.status, res.error)
    r = adv.ApplyIndexReply()
    r.ParseFromString(res.payload)
    assert r.kept and r.ms_before / r.ms_after >= 2, (r.reason, r.ms_before, r.ms_after)
    assert _probe_indexes(probe) == ["dbopt_advisor_probe_k_idx"]
    events = [e.doc for e in bus_read(sock, 3) if e.topic == "db.index"]
    sock.close()
    assert any(e["index_name"] == "dbopt_advisor_probe_k_idx" and e["kept"] for e in events), \
        events
    hist = probe.sql("SELECT kept FROM dbopt_index_history "
                     "WHERE index_name = 'dbopt_advisor_probe_k_idx'").split()
    assert hist == ["t"]
    # the same index again: an existing index already leads with k, nothing is built
    res = mdp.call("dbopt", "ApplyIndex", adv.ApplyIndexRequest(table=PROBE, columns=["k"]),
                   timeout_s=60, caller=_admin())
    assert res.status == 409 and "already leads" in res.error, (res.status, res.error)
    assert _probe_indexes(probe) == ["dbopt_advisor_probe_k_idx"]
    probe.sql("DROP INDEX dbopt_advisor_probe_k_idx")


def test_http_optimize_and_recommendations(quaver, api, probe):
    user = harness.register(api)
    # any logged-in user: the last result, without statement texts
    r = user.get("/api/v1/performance/recommendations", timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert isinstance(doc["recommendations"], list) and doc["query_texts"] == "administrators only"
    assert all("queries" not in x and "query_count" in x for x in doc["recommendations"])
    assert doc["top_statements"] and all("query" not in x and "calls" in x
                                         for x in doc["top_statements"]), doc["top_statements"]
    # optimize: administrators only, and nothing read or run before that check
    r = user.post("/api/v1/performance/database/optimize", json={"apply": True}, timeout=60)
    assert r.status_code == 403, r.text
    assert _probe_indexes(probe) == []
    assert api.get("/api/v1/performance/recommendations").status_code == 401
    quaver.pg.sql(f"UPDATE users SET is_admin = true WHERE id = {int(user.id)}")
    r = user.post("/api/v1/performance/database/optimize", json={"apply": "yes"}, timeout=60)
    assert r.status_code == 400 and "apply" in r.text
    r = user.post("/api/v1/performance/database/optimize", timeout=60)   # no body: advice only
    assert r.status_code == 200, r.text
    doc = r.json()
    recs = [x for x in doc["recommendations"] if x["table"] == PROBE]
    assert [x["columns"] for x in recs] == [["k"]] and recs[0]["queries"], doc
    assert "kept" not in recs[0] and _probe_indexes(probe) == []
    sock = bus_sub(quaver, "db.index")
    time.sleep(0.5)
    r = user.post("/api/v1/performance/database/optimize", json={"apply": True}, timeout=300)
    assert r.status_code == 200, r.text
    doc = r.json()
    rec = next(x for x in doc["recommendations"] if x["table"] == PROBE)
    assert rec["kept"] is True and rec["ms_before"] / rec["ms_after"] >= 2, rec
    assert _probe_indexes(probe) == [rec["index_name"]]
    events = [e.doc for e in bus_read(sock, 3) if e.doc is not None]
    sock.close()
    assert any(e.get("index_name") == rec["index_name"] for e in events), events
    r = user.get("/api/v1/performance/recommendations", timeout=60)
    assert r.status_code == 200 and r.json()["cached"] is True
    assert r.json()["query_texts"] == "shown"
    assert all("query" in x for x in r.json()["top_statements"])
    # leave the rooms database as it was for the tests after this one
    for x in doc["recommendations"]:
        if x["kept"]:
            probe.sql(f"DROP INDEX IF EXISTS {x['index_name']}")
