"""Session fixtures: one real PostgreSQL 15, one real redis-server and the five daemons for the
whole run, torn down at the end; plus a check around every test that no daemon died or
reported a sanitizer error while it ran (a crash fails the test during which it happened).

Environment:
  QUAVER_BIN        where quaver-<daemon> binaries are (default build-asan/bin, else build/bin)
  QUAVER_KEEP_TMP   keep the temporary folder (logs, data) after the run
"""
import os
import shutil
import signal
import tempfile

import pytest

import harness

_proto_dir = None


def pytest_configure(config):
    # Generate the Python protobuf modules before test modules are imported.
    global _proto_dir
    _proto_dir = tempfile.mkdtemp(prefix="quaver-pb-")
    harness.generate_protos(_proto_dir)
    # CI stops a run with SIGTERM: turn it into KeyboardInterrupt so teardown still runs and
    # no PostgreSQL, Redis or daemon outlives the run.
    signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def pytest_unconfigure(config):
    if _proto_dir:
        shutil.rmtree(_proto_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def backends_dir():
    d = tempfile.mkdtemp(prefix="quaver-it-")
    os.chmod(d, 0o755)   # the postgres user must traverse it
    yield d
    if os.environ.get("QUAVER_KEEP_TMP"):
        print(f"\nkept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(backends_dir):
    """PostgreSQL and Redis only (the daemons come with `quaver`)."""
    q = harness.Quaver(backends_dir)
    try:
        q.start_backends()
    except Exception:
        q.stop()
        raise
    yield q
    problems = q.stop()
    q.final_problems = problems


@pytest.fixture(scope="session")
def quaver(stack):
    """The whole system, ready (GET /readyz is 200)."""
    try:
        stack.start_daemons()
    except Exception as e:
        problems = stack.stop()
        pytest.fail(f"could not start Quaver: {e}\n" + "\n".join(problems), pytrace=False)
    yield stack
    if getattr(stack, "shutdown_checked", False):
        return
    problems = stack.stop()
    stack.shutdown_checked = True
    if problems:
        pytest.fail("daemons did not stop cleanly:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _no_crash(request):
    """Fails the test during which a daemon died or a sanitizer fired, with the log tail, and
    brings back whatever a test left stopped, so that the rest of the run goes on."""
    if "quaver" not in request.fixturenames:
        yield
        return
    q = request.getfixturevalue("quaver")
    before = q.check()       # e.g. during a module fixture's setup
    if before:
        _revive(q)
        pytest.fail("before this test:\n" + "\n".join(before) + _logs(q, before),
                    pytrace=False)
    yield
    problems = q.check()
    if getattr(q, "stopping", False):
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
        return
    _revive(q)
    if problems:
        pytest.fail("\n".join(problems) + _logs(q, problems), pytrace=False)


def _logs(q, problems):
    return "".join(f"\n--- {d.name} log ---\n{d.log_tail(30)}" for d in q.daemons.values()
                   if any(d.name in p for p in problems))


def _revive(q):
    """Starts again what is down: PostgreSQL, Redis, any daemon."""
    if not q.pg.running:
        q.pg.start()
    if not q.redis.alive():
        q.redis.start()
    dead = [d for d in q.daemons.values() if not d.alive()]
    for d in dead:
        d.start()
    if dead:
        try:
            q.wait_ready(30)
        except Exception:  # noqa: BLE001 - the next test will say what is wrong
            pass


@pytest.fixture(scope="session")
def api(quaver):
    return harness.Api(quaver.url)


@pytest.fixture(scope="session")
def mdp(quaver):
    c = harness.MdpClient(quaver.broker)
    yield c
    c.close()


@pytest.fixture
def pb():
    """The generated protobuf modules: pb.env, pb.dbopt, pb.cache, pb.stream, pb.monitor."""
    from quaver.v1 import envelope_pb2, dbopt_pb2, cache_pb2, stream_pb2, monitor_pb2, bus_pb2

    class _PB:
        env = envelope_pb2
        dbopt = dbopt_pb2
        cache = cache_pb2
        stream = stream_pb2
        monitor = monitor_pb2
        bus = bus_pb2
    return _PB
