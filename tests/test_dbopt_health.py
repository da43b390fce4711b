"""dbopt's health detail and maintenance (issue 4, "Health and maintenance"), as an operator
sees them: the DatabaseHealth and Maintenance methods over MDP, db.maintenance on the bus,
GET /api/v1/performance/database through the gateway, and the daemon refusing a bad
maintenance_window. Everything runs against the session's real PostgreSQL 15."""
import contextlib
import os
import subprocess
import time

import pytest

from harness import (PG_BIN, bus_sub, bus_wait, dbopt_with, find_bin_dir, register, unique,
                     wait_for)


# ---- helpers ---------------------------------------------------------------------------------


def _maint_event(bus, table, timeout):
    """The body of the first db.maintenance event about public.<table>, or None."""
    e = bus_wait(bus, lambda e: e.doc is not None and e.doc.get("table") == f"public.{table}",
                 timeout)
    return e.doc if e else None


def db_health(mdp, pb):
    from quaver.v1 import dbopt_health_pb2 as h
    res = mdp.call("dbopt", "DatabaseHealth", pb.env.Empty(), timeout_s=10)
    assert res.status == 200, (res.status, res.error)
    rep = h.DbHealthReply()
    rep.ParseFromString(res.payload)
    return rep


def maintenance(mdp, pb, admin=False, timeout_s=30, **req):
    from quaver.v1 import dbopt_health_pb2 as h
    caller = pb.env.Caller(user_id=1, username="ops", admin=True) if admin else None
    res = mdp.call("dbopt", "Maintenance", h.MaintenanceRequest(**req), timeout_s=timeout_s,
                   caller=caller)
    rep = h.MaintenanceReply()
    if res.status == 200:
        rep.ParseFromString(res.payload)
    return res, rep


def table_stats(pg, name):
    out = pg.sql("SELECT vacuum_count, n_dead_tup, n_live_tup FROM pg_stat_user_tables "
                 f"WHERE relname = '{name}'").strip()
    vc, dead, live = (int(x) for x in out.split("|"))
    return vc, dead, live


def make_dirty_table(pg, name, rows=100_000):
    """A table autovacuum leaves alone, with half its rows updated (so half are dead)."""
    pg.sql(f'CREATE TABLE "{name}" (id int PRIMARY KEY, v int NOT NULL, pad text) '
           "WITH (autovacuum_enabled = false)")
    pg.sql(f'INSERT INTO "{name}" SELECT g, g, repeat(\'x\', 40) FROM generate_series(1, {rows}) g')
    pg.sql(f'UPDATE "{name}" SET v = v + 1 WHERE id % 2 = 0')
    # the statistics of the writes above reach shared memory when each psql session ends;
    # wait until they are visible
    wait_for(lambda: table_stats(pg, name)[1] >= rows // 2, timeout=10, interval=0.1,
             what=f"n_dead_tup of {name}")


@contextlib.contextmanager
def idle_in_transaction(pg, appname):
    """A psql session that ran BEGIN; SELECT 1 and then waits: idle in transaction."""
    env = dict(os.environ, PGAPPNAME=appname)
    p = subprocess.Popen([f"{PG_BIN}/psql", "-X", "-q", "-h", pg.dir, "-p", str(pg.port),
                          "-U", "postgres", "-d", pg.dbname],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    try:
        p.stdin.write(b"BEGIN;\nSELECT 1;\n")
        p.stdin.flush()
        wait_for(lambda: pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                f"'{appname}' AND state = 'idle in transaction'").strip() == "1",
                 timeout=10, interval=0.1, what="the idle-in-transaction session")
        yield p
    finally:
        p.kill()
        p.wait(10)


# ---- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["25:00-01:00", "always", "10:00-10:00", "9:00-10:00"])
def test_bad_maintenance_window_refuses_to_start(value):
    exe = os.path.join(find_bin_dir(), "quaver-dbopt")
    r = subprocess.run([exe, "--set", f"maintenance_window={value}", "--set",
                        "broker=tcp://127.0.0.1:1", "--set", "bus_pub=",
                        "--set", "database_url=postgresql://127.0.0.1:1/none"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "maintenance_window" in r.stderr and value in r.stderr, r.stderr


# ---- Maintenance ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dirty(quaver):
    name = unique("maint_dry_")
    make_dirty_table(quaver.pg, name)
    yield name
    quaver.pg.sql(f'DROP TABLE IF EXISTS "{name}"')


def test_maintenance_dry_run_names_the_table(quaver, mdp, pb, dirty):
    vc0 = table_stats(quaver.pg, dirty)[0]
    res, rep = maintenance(mdp, pb, dry_run=True)
    assert res.status == 200, res.error
    assert rep.dry_run and rep.window == "00:00-24:00" and rep.in_window
    acts = {a.table: a for a in rep.actions}
    a = acts.get(f"public.{dirty}")
    assert a is not None, list(acts)
    # 50k dead of 100k live: 0.5 > 0.2; never analysed, so every change counts too
    assert "dead ratio" in a.reason and "modified ratio" in a.reason, a.reason
    assert 0.45 < a.dead_ratio < 0.55, a.dead_ratio
    assert a.modified_ratio > 0.1
    assert not a.done
    # a dry run changed nothing
    assert table_stats(quaver.pg, dirty)[0] == vc0

    # the same table asked for by name, schema-qualified or not
    for name in (dirty, f"public.{dirty}"):
        res, rep = maintenance(mdp, pb, dry_run=True, table=name)
        assert res.status == 200, res.error
        assert [x.table for x in rep.actions] == [f"public.{dirty}"]


def test_maintenance_unknown_table_is_404(mdp, pb):
    res, _ = maintenance(mdp, pb, dry_run=True, table="no_such_table_h3")
    assert res.status == 404 and "no_such_table_h3" in res.error, (res.status, res.error)
    res, _ = maintenance(mdp, pb, admin=True, table="x; DROP TABLE users")
    assert res.status == 404 and "x; DROP TABLE users" in res.error, (res.status, res.error)


def test_maintenance_ambiguous_name_is_400(quaver, mdp, pb):
    name = unique("maint_twice_")
    pg = quaver.pg
    pg.sql(f'CREATE SCHEMA IF NOT EXISTS h3other; CREATE TABLE public."{name}" (id int); '
           f'CREATE TABLE h3other."{name}" (id int)')
    try:
        res, _ = maintenance(mdp, pb, dry_run=True, table=name)
        assert res.status == 400 and "schema.table" in res.error, (res.status, res.error)
        res, rep = maintenance(mdp, pb, dry_run=True, table=f"h3other.{name}")
        assert res.status == 200, res.error
        assert [x.table for x in rep.actions] == [f"h3other.{name}"]
    finally:
        pg.sql(f'DROP TABLE IF EXISTS public."{name}"; DROP SCHEMA IF EXISTS h3other CASCADE')


def test_maintenance_run_needs_an_administrator(mdp, pb, dirty):
    res, _ = maintenance(mdp, pb, table=dirty)
    assert res.status == 403, (res.status, res.error)
    res, _ = maintenance(mdp, pb, dry_run=True, force=True)
    assert res.status == 400 and "table" in res.error, (res.status, res.error)


def test_maintenance_quotes_an_odd_table_name(quaver, mdp, pb):
    """A name with a quote, a space and a semicolon is vacuumed as that one table."""
    odd = 'Odd "name"; DROP TABLE users --'
    q = '"' + odd.replace('"', '""') + '"'
    quaver.pg.sql(f"CREATE TABLE {q} (id int) WITH (autovacuum_enabled = false)")
    try:
        quaver.pg.sql(f"INSERT INTO {q} SELECT generate_series(1, 10)")
        vc0 = int(quaver.pg.sql("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = "
                                "'" + odd.replace("'", "''") + "'").strip())
        res, rep = maintenance(mdp, pb, admin=True, table=odd, force=True)
        assert res.status == 200, res.error
        (a,) = rep.actions
        assert a.table == f"public.{odd}" and a.done, a
        assert a.vacuum_count_after == a.vacuum_count_before + 1 == vc0 + 1
        assert quaver.pg.sql("SELECT count(*) FROM users").strip().isdigit()
    finally:
        quaver.pg.sql(f"DROP TABLE IF EXISTS {q}")


def test_scheduler_vacuums_a_dirty_table(quaver, mdp, pb):
    name = unique("maint_sched_")
    make_dirty_table(quaver.pg, name)
    try:
        vc0, dead0, _ = table_stats(quaver.pg, name)
        assert dead0 >= 50_000
        bus = bus_sub(quaver, "db.maintenance")
        try:
            time.sleep(0.3)     # the subscription reaches the monitor's XPUB
            with dbopt_with(quaver, mdp, pb, maintenance_interval_s=1):
                doc = _maint_event(bus, name, 60)
                assert doc is not None, "no db.maintenance for the table within 60 s"
                assert doc["done"] is True and doc["error"] == "", doc
                assert doc["trigger"] == "scheduler"
                assert doc["vacuum_count_after"] > doc["vacuum_count_before"] == vc0, doc
                assert doc["dead_tuples_after"] < doc["dead_tuples_before"], doc
                # what PostgreSQL itself says
                vc1, dead1, live1 = table_stats(quaver.pg, name)
                assert vc1 > vc0 and dead1 < dead0, (vc0, vc1, dead0, dead1)
                assert live1 >= 99_000
                # and the next pass leaves it alone: it is no longer due
                res, rep = maintenance(mdp, pb, dry_run=True)
                assert res.status == 200
                assert f"public.{name}" not in [a.table for a in rep.actions]
        finally:
            bus.close()
    finally:
        quaver.pg.sql(f'DROP TABLE IF EXISTS "{name}"')


def test_window_and_lock_timeout(quaver, mdp, pb):
    """Outside its window the scheduler leaves a dirty table alone (and says so); a VACUUM that
    cannot get its lock gives up after lock_timeout and reports why."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now + datetime.timedelta(hours=2)).strftime("%H:%M")
    end = (now + datetime.timedelta(hours=3)).strftime("%H:%M")
    name = unique("maint_win_")
    make_dirty_table(quaver.pg, name)
    try:
        vc0 = table_stats(quaver.pg, name)[0]
        bus = bus_sub(quaver, "db.maintenance")
        try:
            time.sleep(0.3)
            with dbopt_with(quaver, mdp, pb, maintenance_interval_s=1,
                            maintenance_window=f"{start}-{end}",
                            maintenance_lock_timeout_ms=300):
                doc = _maint_event(bus, name, 4)
                assert doc is None, f"vacuumed outside its window: {doc}"
                assert table_stats(quaver.pg, name)[0] == vc0
                res, rep = maintenance(mdp, pb, dry_run=True, table=name)
                assert res.status == 200 and rep.window == f"{start}-{end}"
                assert not rep.in_window

                # someone holds the table: the operator's run gives up after 300 ms
                p = subprocess.Popen([f"{PG_BIN}/psql", "-X", "-q", "-h", quaver.pg.dir, "-p",
                                      str(quaver.pg.port), "-U", "postgres", "-d",
                                      quaver.pg.dbname], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    p.stdin.write(f'BEGIN;\nLOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE;\n'
                                  .encode())
                    p.stdin.flush()
                    wait_for(lambda: quaver.pg.sql(
                        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        f"WHERE c.relname = '{name}' AND l.mode = 'AccessExclusiveLock' "
                        "AND l.granted").strip() == "1", timeout=10, interval=0.1,
                        what="the test's lock")
                    res, rep = maintenance(mdp, pb, admin=True, table=name)
                finally:
                    p.kill()
                    p.wait(10)
                assert res.status == 200, res.error
                (a,) = rep.actions
                # the configured lock_timeout, not the default 5 s and not a wait forever
                assert not a.done and "lock_timeout (300 ms)" in a.error, a
                assert a.vacuum_count_after == a.vacuum_count_before == vc0
                doc = _maint_event(bus, name, 5)
                assert doc and doc["done"] is False and doc["trigger"] == "rpc", doc
        finally:
            bus.close()
    finally:
        quaver.pg.sql(f'DROP TABLE IF EXISTS "{name}"')


# ---- DatabaseHealth --------------------------------------------------------------------------

def test_database_health_detail(quaver, mdp, pb):
    dirty = unique("health_")
    make_dirty_table(quaver.pg, dirty)
    app = unique("h3idle")
    try:
        with idle_in_transaction(quaver.pg, app):
            time.sleep(0.2)
            rep = db_health(mdp, pb)
    finally:
        quaver.pg.sql(f'DROP TABLE IF EXISTS "{dirty}"')
    assert rep.database == quaver.pg.dbname and rep.server_version.startswith("15")
    assert 0.0 <= rep.cache_hit_ratio <= 1.0 and rep.blks_hit > 0
    assert rep.max_connections == 200
    states = {c.state: c.count for c in rep.connections}
    assert states.get("idle in transaction", 0) >= 1, states
    idle = [s for s in rep.idle_in_transaction if s.application_name == app]
    assert len(idle) == 1, list(rep.idle_in_transaction)
    assert idle[0].state == "idle in transaction" and idle[0].pid > 0
    assert idle[0].age_s >= 0 and idle[0].xact_age_s >= idle[0].age_s - 0.01
    assert idle[0].query == "SELECT 1;"
    # wraparound
    assert rep.datfrozenxid_age > 0 and rep.autovacuum_freeze_max_age == 200_000_000
    assert rep.wraparound_level == "ok"
    # the dirty table: dead tuples, ratios, never vacuumed by anyone
    t = {f"{x.schema}.{x.name}": x for x in rep.tables}.get(f"public.{dirty}")
    assert t is not None, [x.name for x in rep.tables]
    assert t.dead_tuples >= 50_000 and t.live_tuples >= 99_000, t
    assert 0.45 < t.dead_ratio < 0.55
    assert t.xid_age > 0 and t.wraparound_level == "ok"
    assert t.pages > 0 and t.size_bytes >= t.pages * 8192
    assert t.last_vacuum_age_s == -1 and t.last_autovacuum_age_s == -1
    assert rep.bloat_method and "pgexperts" in rep.bloat_method
    assert t.bloat_ratio == -1          # no ANALYZE yet: no pg_stats widths, no estimate
    assert any(i.name == f"{dirty}_pkey" for i in rep.indexes)
    # pg_stat_statements is there in the test cluster
    assert rep.statements_available and rep.statements_note == ""
    assert rep.top_queries and all(q.calls > 0 and q.total_ms >= 0 for q in rep.top_queries)
    assert all(q.hit_ratio == -1 or 0 <= q.hit_ratio <= 1 for q in rep.top_queries)
    totals = [q.total_ms for q in rep.top_queries]
    assert totals == sorted(totals, reverse=True)
    assert not rep.warnings, list(rep.warnings)


def test_database_health_bloat_estimate(quaver, mdp, pb):
    """Half the rows updated once, then ANALYZE (not VACUUM): a third of the table's tuples
    are dead versions, so the estimate must say roughly a third of it is bloat."""
    name = unique("bloat_")
    make_dirty_table(quaver.pg, name)
    try:
        quaver.pg.sql(f'ANALYZE "{name}"')
        rep = db_health(mdp, pb)
        t = {x.name: x for x in rep.tables}[name]
        assert 0.15 < t.bloat_ratio < 0.5, t
        assert t.bloat_bytes > 0 and t.last_analyze_age_s >= 0
        idx = {x.name: x for x in rep.indexes}[f"{name}_pkey"]
        assert idx.bloat_ratio >= 0 and idx.pages > 0, idx
    finally:
        quaver.pg.sql(f'DROP TABLE IF EXISTS "{name}"')


def test_database_health_long_running_query(quaver, mdp, pb):
    app = unique("h3long")
    with dbopt_with(quaver, mdp, pb, health_long_query_s=0.5):
        env = dict(os.environ, PGAPPNAME=app)
        p = subprocess.Popen([f"{PG_BIN}/psql", "-X", "-q", "-h", quaver.pg.dir, "-p",
                              str(quaver.pg.port), "-U", "postgres", "-d", quaver.pg.dbname,
                              "-c", "SELECT pg_sleep(20)"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            def seen():
                rep = db_health(mdp, pb)
                return [s for s in rep.long_running if s.application_name == app]
            (s,) = wait_for(seen, timeout=10, interval=0.3, what="the long-running query")
            assert s.state == "active" and s.age_s >= 0.5 and "pg_sleep" in s.query
            assert s.wait_event == "Timeout:PgSleep"
        finally:
            p.kill()
            p.wait(10)


def test_database_health_without_pg_stat_statements(quaver, mdp, pb):
    quaver.pg.sql("DROP EXTENSION pg_stat_statements")
    try:
        rep = db_health(mdp, pb)
        assert not rep.statements_available and not rep.top_queries
        assert "CREATE EXTENSION pg_stat_statements" in rep.statements_note
        assert rep.cache_hit_ratio >= 0      # the rest is still answered
    finally:
        quaver.pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    assert db_health(mdp, pb).statements_available


# ---- the gateway ---------------------------------------------------------------------------------

def test_gateway_performance_database(quaver, api, mdp, pb):
    assert api.get("/api/v1/performance/database").status_code == 401
    user = register(api)
    app = unique("h3gw")
    with idle_in_transaction(quaver.pg, app):
        r = user.get("/api/v1/performance/database")
        assert r.status_code == 200, r.text
        doc = r.json()
        db = doc["database"]
        assert 0 <= db["cache_hit_ratio"] <= 1
        assert db["wraparound"]["level"] == "ok" and db["wraparound"]["datfrozenxid_age"] > 0
        idle = [s for s in db["idle_in_transaction"] if s["application_name"] == app]
        assert len(idle) == 1 and idle[0]["age_s"] >= 0
        # a non-administrator sees no statement text at all
        assert "query" not in idle[0]
        assert db["statements"]["available"] is True
        assert db["statements"]["top"] and all("query" not in q for q in db["statements"]["top"])
        assert doc["query_texts"] == "administrators only"
        pool = doc["pool"]
        assert pool["max"] == 10 and pool["open"] >= 1 and pool["up"] == 1, pool

        quaver.pg.sql(f"UPDATE users SET is_admin = true WHERE id = {int(user.id)}")
        r = user.get("/api/v1/performance/database")
        assert r.status_code == 200, r.text
        doc = r.json()
        idle = [s for s in doc["database"]["idle_in_transaction"] if s["application_name"] == app]
        assert idle and idle[0]["query"] == "SELECT 1;"
        assert all(isinstance(q["query"], str) for q in doc["database"]["statements"]["top"])
        assert doc["query_texts"] == "shown"
