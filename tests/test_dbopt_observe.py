"""dbopt knowing every query: the pool in PgBouncer's terms (SHOW POOLS / SHOW STATS names in
Stats and on the metrics page), waiting bounded by db_pool_timeout, killed and recycled
connections, per-statement latency and plans, db.slow_query and SlowQueries, and the plan
regression alarm (db.plan_regression) against a real PostgreSQL and a real dbopt.

Tests that need other settings (a pool of one, short lifetimes, one-second sampling windows)
restart the session's dbopt with those settings and put the original back afterwards."""
import json
import subprocess
import threading
import time

import pytest
import zmq

import harness
from harness import (bus_read, bus_sub, bus_wait, create_room, dbopt_with, register, room_id,
                     wait_for)


# ---- helpers ---------------------------------------------------------------------------------
def stats(mdp, pb):
    res = mdp.call("dbopt", "Stats", pb.env.Empty())
    assert res.status == 200, res
    r = pb.env.StatsReply()
    r.ParseFromString(res.payload)
    return {s.name: s.value for s in r.stats}


def query(mdp, pb, name, *params, timeout_s=None):
    req = pb.dbopt.QueryRequest(name=name, params=[pb.dbopt.Value(text=str(p)) for p in params])
    return mdp.call("dbopt", "Query", req, timeout_s=timeout_s)


def dbopt_backends(pg):
    """pids of the pool's connections (application_name quaver-dbopt)."""
    out = pg.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'quaver-dbopt'")
    return {int(x) for x in out.split()}


def terminate(pg, pids):
    if pids:
        pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid IN ("
               + ",".join(str(p) for p in pids) + ")")


def bus_ready(quaver, sock, pb):
    """Subscriptions propagate asynchronously: wait until dbopt's metrics (every second)
    arrive on the same socket, so that what we wait for next cannot be missed."""
    sock.setsockopt(zmq.SUBSCRIBE, b"metrics.dbopt")
    wait_for(lambda: any(e.topic == "metrics.dbopt" for e in bus_read(sock, 0.5)), 15,
             what="metrics.dbopt on the bus")


class Locker:
    """Holds a table lock from psql for `seconds`, so that a statement reading the table
    waits that long: a slow query made on demand."""

    def __init__(self, pg, table, seconds):
        sql = (f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; "
               f"SELECT pg_sleep({seconds}); COMMIT;")
        self.proc = subprocess.Popen(
            [f"{harness.PG_BIN}/psql", "-X", "-q", "-h", pg.dir, "-p", str(pg.port), "-U",
             "postgres", "-d", pg.dbname, "-c", sql],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pg, self.table = pg, table
        wait_for(self.held, 10, what=f"the lock on {table}")

    def held(self):
        out = self.pg.sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = "
                          f"l.relation WHERE c.relname = '{self.table}' AND l.granted "
                          "AND l.mode = 'AccessExclusiveLock'")
        return out.strip() == "1"

    def wait(self):
        self.proc.wait(30)


# ---- the shared dbopt ------------------------------------------------------------------------
def test_stats_pool_and_statement_fields(quaver, api, mdp, pb):
    u = register(api)
    before = stats(mdp, pb)
    for _ in range(5):
        res = query(mdp, pb, "user_get", u.id)
        assert res.status == 200, res
    res = query(mdp, pb, "user_get", 999999999)        # no such user: 0 rows
    assert res.status == 200
    after = stats(mdp, pb)
    # the old entries are still there
    for k in ("db_pool.max", "db_pool.open", "stmt.user_get.calls", "stmt.user_get.avg_ms"):
        assert k in after, k
    # PgBouncer's SHOW POOLS / SHOW STATS names
    for k in ("cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait", "maxwait_us",
              "total_xact_count", "total_query_count", "total_query_time", "total_wait_time",
              "avg_xact_count", "avg_query_count", "avg_query_time", "avg_wait_time"):
        assert f"db_pool.{k}" in after, k
    assert after["db_pool.total_query_count"] - before["db_pool.total_query_count"] >= 6
    assert after["db_pool.total_xact_count"] == after["db_pool.total_query_count"]
    assert after["db_pool.sv_idle"] >= 1 and after["db_pool.cl_waiting"] == 0
    assert after["db_pool.maxwait"] == 0 and after["db_pool.maxwait_us"] == 0
    # per statement: rows counts what came back (5 x 1 + 0), latency percentiles are ordered
    assert after["stmt.user_get.rows"] - before.get("stmt.user_get.rows", 0) == 5
    assert after["stmt.user_get.calls"] - before["stmt.user_get.calls"] == 6
    p50, p95, p99 = (after[f"stmt.user_get.{q}_ms"] for q in ("p50", "p95", "p99"))
    assert 0 < p50 <= p95 <= p99 < 5000, (p50, p95, p99)
    assert "stmt.user_get.plan_hash" in after
    for st in ("user_create", "track_queue", "playback_set"):
        for q in ("rows", "p50_ms", "p95_ms", "p99_ms", "plan_hash"):
            assert f"stmt.{st}.{q}" in after


def test_pool_statistics_on_the_metrics_page(quaver, api, mdp, pb):
    query(mdp, pb, "user_get", 1)

    def page():
        t = api.get("/api/metrics").text
        return t if 'quaver_db_pool_query_total{service="dbopt"' in t else None
    text = wait_for(page, 15, interval=0.3, what="the pool metrics on /api/metrics")
    for name in ("quaver_db_pool_cl_active", "quaver_db_pool_cl_waiting",
                 "quaver_db_pool_sv_active", "quaver_db_pool_sv_idle",
                 "quaver_db_pool_maxwait_seconds", "quaver_db_pool_xact_total",
                 "quaver_db_pool_avg_query_per_second", "quaver_db_pool_avg_query_time_seconds",
                 "quaver_db_pool_avg_wait_time_seconds"):
        assert f"\n{name}{{" in text, name


def test_terminated_connections_are_replaced_and_the_next_query_answers(quaver, api, mdp, pb):
    u = register(api)
    for _ in range(3):
        assert query(mdp, pb, "user_get", u.id).status == 200
    opened = stats(mdp, pb)["db_pool.connections_opened"]
    pids = dbopt_backends(quaver.pg)
    assert pids, "dbopt holds no connection"
    terminate(quaver.pg, pids)
    wait_for(lambda: not (dbopt_backends(quaver.pg) & pids), 10, what="the backends to exit")
    # A read is retried once on a fresh connection, where every statement is PREPAREd
    # again (Query runs prepared statements only): the caller sees a 200.
    res = query(mdp, pb, "user_get", u.id)
    assert res.status == 200, (res.status, res.error)
    rows = pb.dbopt.QueryReply()
    rows.ParseFromString(res.payload)
    assert len(rows.rows) == 1 and rows.rows[0].cells[1].text == u.username
    for name, params in (("user_by_username", [u.username]), ("room_get", [1]),
                         ("track_queue", [1])):
        assert query(mdp, pb, name, *params).status == 200, name
    assert stats(mdp, pb)["db_pool.connections_opened"] > opened
    assert quaver.daemons["dbopt"].alive()


def test_bad_input_still_4xx_and_dbopt_stays_up(quaver, mdp, pb):
    assert query(mdp, pb, "no_such_statement").status == 404
    assert query(mdp, pb, "user_get").status == 400                  # count
    assert query(mdp, pb, "user_get", 1, 2).status == 400
    assert query(mdp, pb, "user_get", "abc").status == 400           # type
    res = mdp.call("dbopt", "SlowQueries", b"\xff\xff\xff")           # not protobuf
    assert res.status == 400, res
    res = mdp.call("dbopt", "SlowQueries", pb.obs.SlowQueriesRequest(name="nope"))
    assert res.status == 404 and "nope" in res.error, res
    res = mdp.call("dbopt", "SlowQueries", pb.obs.SlowQueriesRequest())
    assert res.status == 200
    assert quaver.daemons["dbopt"].alive()
    assert query(mdp, pb, "user_get", 1).status == 200


# ---- a pool of one: DB_POOL_TIMEOUT ------------------------------------------------------------
def test_pool_timeout_is_503_and_maxwait_shows_the_wait(quaver, api, mdp, pb):
    u = register(api)
    with dbopt_with(quaver, mdp, pb, db_pool_max=1, db_pool_timeout=2, workers=4):
        locker = Locker(quaver.pg, "users", 4)
        results = {}

        def call(key):
            c = harness.MdpClient(quaver.broker)
            try:
                results[key] = query(c, pb, "user_get", u.id, timeout_s=10)
            finally:
                c.close()
        holder = threading.Thread(target=call, args=("holder",))
        holder.start()
        # the holder's statement waits on the lock, holding the only connection
        wait_for(lambda: stats(mdp, pb)["db_pool.cl_active"] == 1, 5, what="cl_active 1")
        waiter = threading.Thread(target=call, args=("waiter",))
        t0 = time.monotonic()
        waiter.start()
        s = wait_for(lambda: (lambda s: s if s["db_pool.cl_waiting"] == 1 else None)(
            stats(mdp, pb)), 5, what="cl_waiting 1")
        assert s["db_pool.sv_active"] == 1 and s["db_pool.sv_idle"] == 0
        time.sleep(0.5)
        s = stats(mdp, pb)
        waited = s["db_pool.maxwait"] + s["db_pool.maxwait_us"] / 1e6
        assert 0.3 <= waited <= 2.5, s
        waiter.join(10)
        took = time.monotonic() - t0
        res = results["waiter"]
        assert res.status == 503, res
        assert "no database connection free" in res.error and "db_pool_max 1" in res.error
        assert took < 5, took          # db_pool_timeout, not the holder's 4 s, bounded it
        holder.join(15)
        locker.wait()
        assert results["holder"].status == 200, results["holder"]
        after = stats(mdp, pb)
        assert after["db_pool.cl_waiting"] == 0 and after["db_pool.maxwait"] == 0
        assert after["db_pool.total_wait_time"] >= 1.5e6     # us: the waiter's 2 s


# ---- short lifetimes: recycling ----------------------------------------------------------------
def test_connections_are_recycled_by_lifetime_and_idle_time(quaver, api, mdp, pb):
    u = register(api)
    with dbopt_with(quaver, mdp, pb, db_pool_max=4, workers=4, db_conn_max_lifetime_s=3,
                    db_conn_idle_timeout_s=1):
        locker = Locker(quaver.pg, "users", 1)
        # four concurrent calls waiting on the lock open four connections
        threads = []
        codes = []
        for _ in range(4):
            def run():
                c = harness.MdpClient(quaver.broker)
                try:
                    codes.append(query(c, pb, "user_get", u.id, timeout_s=10).status)
                finally:
                    c.close()
            threads.append(threading.Thread(target=run))
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        locker.wait()
        assert codes == [200] * 4, codes
        assert stats(mdp, pb)["db_pool.open"] >= 3
        first = dbopt_backends(quaver.pg)
        # idle for db_conn_idle_timeout_s: all but one are closed by the timer
        s = wait_for(lambda: (lambda s: s if s["db_pool.sv_idle"] == 1 else None)(
            stats(mdp, pb)), 5, interval=0.2, what="idle connections closed")
        assert s["db_pool.recycled"] >= 2 and s["db_pool.open"] == 1
        # past db_conn_max_lifetime_s every connection of the first set is gone, and a
        # query still answers through a fresh one
        wait_for(lambda: not (dbopt_backends(quaver.pg) & first), 8, interval=0.2,
                 what="the first connections to be closed for their lifetime")
        for _ in range(5):
            assert query(mdp, pb, "user_get", u.id).status == 200
        assert stats(mdp, pb)["db_pool.connections_opened"] >= 5


# ---- one-second sampling windows: slow queries and plan regressions ---------------------------
OBSERVE = dict(plan_sample_interval_s=1, plan_regression_min_calls=5, slow_query_threshold=150,
               db_stats_period_s=1, db_pool_max=4, workers=4)
ROWS = 200000


@pytest.fixture(scope="module")
def observed(quaver, api, mdp):
    from quaver.v1 import dbopt_observe_pb2, envelope_pb2, dbopt_pb2, bus_pb2

    class PB:
        env, dbopt, bus, obs = envelope_pb2, dbopt_pb2, bus_pb2, dbopt_observe_pb2
    with dbopt_with(quaver, mdp, PB, **OBSERVE) as d:
        yield d


@pytest.fixture
def pb(pb):
    from quaver.v1 import dbopt_observe_pb2
    pb.obs = dbopt_observe_pb2
    return pb


def test_slow_query_is_published_with_its_plan_and_listed(quaver, api, mdp, pb, observed):
    u = register(api)
    marker = 900000000 + int(u.id)          # a parameter value to look for (and not find)
    sock = bus_sub(quaver, "db.slow_query")
    try:
        bus_ready(quaver, sock, pb)
        # fast calls are not slow
        for _ in range(3):
            assert query(mdp, pb, "user_get", marker).status == 200
        locker = Locker(quaver.pg, "users", 1.0)
        t0 = time.time()
        res = query(mdp, pb, "user_get", marker)
        assert res.status == 200
        locker.wait()
        e = bus_wait(sock, lambda e: e.topic == "db.slow_query" and e.doc["name"] == "user_get",
                     5)
        assert e is not None, "no db.slow_query for user_get"
        ev = e.doc
        assert ev["duration_ms"] >= 400 and ev["threshold_ms"] == 150
        assert abs(ev["time_ms"] / 1000 - t0) < 10
        # the plan (sampled by the timer, or made at the time when none was known yet)
        assert ev["plan"]["hash"] > 0
        assert ev["plan"]["shape"] == "Index Scan on users using users_pkey", ev["plan"]
        assert ev["plan"]["json"][0]["Plan"]["Index Name"] == "users_pkey"
        # never a parameter value: not in the event, not in the dbopt log
        assert str(marker) not in json.dumps(ev)
        assert str(marker) not in quaver.daemons["dbopt"].log_tail(200)
    finally:
        sock.close(0)
    res = mdp.call("dbopt", "SlowQueries", pb.obs.SlowQueriesRequest(name="user_get"))
    assert res.status == 200, res
    r = pb.obs.SlowQueriesReply()
    r.ParseFromString(res.payload)
    assert r.queries, "SlowQueries is empty"
    q = r.queries[0]
    assert q.name == "user_get" and q.duration_ms >= 400 and q.threshold_ms == 150
    assert q.plan_shape == "Index Scan on users using users_pkey"
    assert json.loads(q.plan_json)[0]["Plan"]["Node Type"] == "Index Scan"
    assert str(marker) not in q.plan_json
    assert abs(q.time_ms / 1000 - t0) < 10
    # newest first, limit respected
    res = mdp.call("dbopt", "SlowQueries", pb.obs.SlowQueriesRequest(limit=1))
    r1 = pb.obs.SlowQueriesReply()
    r1.ParseFromString(res.payload)
    assert len(r1.queries) == 1 and r1.queries[0].time_ms == max(x.time_ms for x in r.queries)


@pytest.fixture(scope="module")
def big_room(quaver, api, observed):
    """A room with a long history: ROWS played tracks and 20 queued ones. The queue query
    reads tracks_queue_idx (partial: unplayed only); without an index that serves it, it
    reads the whole history."""
    u = register(api)
    rid = room_id(create_room(u))
    pg = quaver.pg
    pg.sql("INSERT INTO tracks (room_id, uploader_id, sha256, filename, mime_type, size_bytes, "
           f"played_at) SELECT {rid}, {u.id}, md5(i::text) || md5(i::text), 'old.wav', "
           f"'audio/wav', 1000, now() FROM generate_series(1, {ROWS}) i")
    pg.sql("INSERT INTO tracks (room_id, uploader_id, sha256, filename, mime_type, size_bytes,"
           f" vote_score) SELECT {rid}, {u.id}, md5(i::text) || md5((i+1)::text), 'q.wav', "
           "'audio/wav', 1000, i % 3 FROM generate_series(1, 20) i")
    # VACUUM too: autovacuum would otherwise pick the table up during the tests, and a DROP
    # INDEX queued behind it blocks the queue reads for a while
    pg.sql("VACUUM ANALYZE tracks")
    yield rid
    pg.sql("DROP INDEX IF EXISTS tracks_queue_alt_idx")
    pg.sql("CREATE INDEX IF NOT EXISTS tracks_queue_idx ON tracks (room_id, vote_score DESC, "
           "created_at ASC, id ASC) WHERE played_at IS NULL")
    pg.sql(f"DELETE FROM tracks WHERE room_id = {rid}")
    pg.sql("ANALYZE tracks")


class Loop:
    """track_queue of one room, called in a loop through MDP (the hot query)."""

    def __init__(self, quaver, pb, rid):
        self.stop_ev = threading.Event()
        self.codes = []
        self.t = threading.Thread(target=self.run, args=(quaver.broker, pb, rid), daemon=True)
        self.t.start()

    def run(self, broker, pb, rid):
        c = harness.MdpClient(broker)
        try:
            while not self.stop_ev.is_set():
                self.codes.append(query(c, pb, "track_queue", rid, timeout_s=10).status)
        finally:
            c.close()

    def stop(self):
        self.stop_ev.set()
        self.t.join(15)


def plan_hash(mdp, pb, name="track_queue"):
    return int(stats(mdp, pb)[f"stmt.{name}.plan_hash"])


def test_harmless_plan_change_raises_nothing(quaver, mdp, pb, big_room):
    sock = bus_sub(quaver, "db.plan_regression")
    loop = Loop(quaver, pb, big_room)
    try:
        bus_ready(quaver, sock, pb)
        h0 = wait_for(lambda: plan_hash(mdp, pb), 10, what="a plan for track_queue")
        time.sleep(3)      # a baseline: windows with the same plan and enough calls
        assert plan_hash(mdp, pb) == h0
        # an equivalent index, then the original dropped: the plan changes (another index
        # name), its speed does not
        quaver.pg.sql("CREATE INDEX tracks_queue_alt_idx ON tracks (room_id, vote_score DESC,"
                      " created_at ASC, id ASC) WHERE played_at IS NULL")
        quaver.pg.sql("DROP INDEX tracks_queue_idx")
        h1 = wait_for(lambda: (lambda h: h if h not in (0, h0) else None)(plan_hash(mdp, pb)),
                      5, interval=0.2, what="the plan change to be seen")
        got = bus_read(sock, 4)            # two windows after the change, and slack
        alarms = [e.doc for e in got if e.topic == "db.plan_regression"]
        assert not alarms, alarms
        assert any(e.topic == "metrics.dbopt" for e in got), "the bus went quiet: no proof"
        assert plan_hash(mdp, pb) == h1
        assert set(loop.codes) == {200}, set(loop.codes)
    finally:
        loop.stop()
        sock.close(0)


def test_dropped_index_raises_plan_regression_within_a_window(quaver, mdp, pb, big_room):
    pg = quaver.pg
    # whichever equivalent index is there (the previous test may have swapped it)
    idx = "tracks_queue_alt_idx" if pg.sql(
        "SELECT 1 FROM pg_class WHERE relname = 'tracks_queue_alt_idx'").strip() \
        else "tracks_queue_idx"
    sock = bus_sub(quaver, "db.plan_regression")
    loop = Loop(quaver, pb, big_room)
    try:
        bus_ready(quaver, sock, pb)
        h0 = wait_for(lambda: plan_hash(mdp, pb), 10, what="a plan for track_queue")
        time.sleep(3)
        before = stats(mdp, pb)
        pg.sql(f"DROP INDEX {idx}")
        t_drop = time.monotonic()
        window = OBSERVE["plan_sample_interval_s"]
        # the change is seen at the next window's end, judged at the one after: two
        # windows at most, plus slack for a loaded machine
        e = bus_wait(sock, lambda e: e.doc is not None and e.doc.get("name") == "track_queue",
                     2 * window + 6)
        assert e is not None, "no db.plan_regression after dropping " + idx
        ev, took = e.doc, e.t - t_drop
        print(f"\nindex {idx} dropped -> db.plan_regression after {took:.2f} s "
              f"(window {window} s); p95 {ev['old_p95_ms']:.3f} -> {ev['new_p95_ms']:.3f} ms")
        assert idx in ev["old"]["shape"] and idx not in ev["new"]["shape"], ev
        assert ev["old"]["hash"] == h0 and ev["new"]["hash"] != h0
        assert ev["new_p95_ms"] >= 2 * ev["old_p95_ms"], ev
        assert ev["new"]["p95_ms"] == ev["new_p95_ms"] and ev["calls"] >= 5
        assert ev["new"]["json"][0]["Plan"]["Node Type"], ev["new"]
        text = json.dumps(ev)
        assert "Cond" not in text and "Filter" not in text      # redacted plans
        after = stats(mdp, pb)
        assert after["stmt.track_queue.p99_ms"] >= before["stmt.track_queue.p99_ms"]
        assert set(loop.codes) == {200}, set(loop.codes)
    finally:
        loop.stop()
        sock.close(0)


def test_performance_monitoring_off_samples_no_plans(quaver, api, mdp, pb):
    """ENABLE_PERFORMANCE_MONITORING=false (key performance_monitoring): calls and latencies
    are still counted, but no plan is sampled (no EXPLAIN runs on the database)."""
    u = register(api)
    with harness.dbopt_with(quaver, mdp, pb, performance_monitoring="false",
                            plan_sample_interval_s=1):
        for _ in range(20):
            assert query(mdp, pb, "user_get", u.id).status == 200
        time.sleep(2.5)      # two sampling windows
        st = stats(mdp, pb)
        assert st["stmt.user_get.calls"] >= 20 and st["stmt.user_get.p50_ms"] > 0, st
        assert st["stmt.user_get.plan_hash"] == 0, st
