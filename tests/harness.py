"""Real processes for the integration tests: a private PostgreSQL 15, a private redis-server,
the five Quaver daemons, and the clients the tests drive them with (HTTP, MDP, audio files).

Everything here listens on free loopback ports and lives in a temporary folder; every network
call has a timeout, so a hang fails a test instead of blocking CI. conftest.py wires these into
session fixtures; test modules import the helpers directly (``from harness import ...``).
"""
import array
import contextlib
import ctypes
import glob
import io
import json
import math
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from typing import Any, NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = "/usr/lib/postgresql/15/bin"
SERVICES = ("dbopt", "cache", "stream", "monitor")   # MDP services (the gateway is the broker)
DAEMONS = ("monitor", "gateway", "dbopt", "cache", "stream")  # start order
# What a daemon's log shows when a sanitizer caught something.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: UndefinedBehaviorSanitizer", "AddressSanitizer:DEADLYSIGNAL")
NET_TIMEOUT = 10.0


def free_port():
    """A TCP port nobody listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value; returns it, or raises TimeoutError."""
    end = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_exc = e
        if time.monotonic() >= end:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}"
                               + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"(no log: {e})"


def _pdeathsig():
    """In the child before exec: die with the test runner, so CI never keeps orphans."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _is_root():
    return os.geteuid() == 0


def _as_postgres(cmd):
    """initdb and pg_ctl refuse to run as root: run them as the postgres user when we are."""
    if _is_root():
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


# --------------------------------------------------------------------------------------------
class Process:
    """A long-running child we start, stop, kill and restart, with its output in a log file.

    expect_running tells the crash checks whether the process is supposed to be alive; a
    process that exits while expected to run, or that exits non-zero on SIGTERM, is recorded
    in .problems."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc = None
        self.expect_running = False
        self.problems = []
        self.starts = 0
        self._log_checked = 0      # bytes of the log already scanned for sanitizer reports

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        logf = open(self.log_path, "ab")
        logf.write(f"==== start {self.name}: {' '.join(self.argv)}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                     preexec_fn=_pdeathsig)
        logf.close()
        self.expect_running = True
        self.starts += 1
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0, sig=signal.SIGTERM):
        """A clean stop: SIGTERM, then wait. Records a problem when the exit is not 0 or the
        process needed SIGKILL. Returns the exit code."""
        self.expect_running = False
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.problems.append(f"{self.name} did not stop within {timeout:.0f}s of "
                                     f"{signal.Signals(sig).name}; killed")
                return self.proc.returncode
            if self.proc.returncode != 0:
                self.problems.append(f"{self.name} exited {self.proc.returncode} on "
                                     f"{signal.Signals(sig).name} (a clean stop exits 0)")
        return self.proc.returncode

    def kill(self):
        """kill -9, as a crash would: not a problem, the test asked for it."""
        self.expect_running = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, n=40):
        return tail(self.log_path, n)

    def new_sanitizer_reports(self):
        """Sanitizer lines written to the log since the last call."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_checked)
                data = f.read()
                self._log_checked = f.tell()
        except OSError:
            return []
        text = data.decode("utf-8", "replace")
        return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKS)]

    def check(self):
        """Problems since the last check: an unexpected exit or a sanitizer report."""
        found = []
        if self.expect_running and not self.alive():
            self.expect_running = False
            found.append(f"{self.name} died unexpectedly (exit {self.proc.returncode})")
        reports = self.new_sanitizer_reports()
        if reports:
            found.append(f"{self.name} log has sanitizer reports: " + " | ".join(reports[:5]))
        found += self.problems
        self.problems = []
        return found


# --------------------------------------------------------------------------------------------
class Postgres:
    """A private PostgreSQL 15: initdb in a temporary folder owned by postgres (when we are
    root), a free loopback port, the socket in the same folder, pg_stat_statements and hypopg
    preloaded, database `quaver` with both extensions created."""

    def __init__(self, base_dir, port=None, dbname="quaver"):
        self.dir = os.path.join(base_dir, "pg")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = port or free_port()
        self.dbname = dbname
        self.running = False

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, cmd, timeout=120):
        r = subprocess.run(_as_postgres(cmd), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout, cwd="/")
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
                               f"\n--- postgres log ---\n{tail(self.log_path)}")
        return r.stdout

    def init(self):
        os.makedirs(self.dir, exist_ok=True)
        # The postgres user has to reach the folder: every parent must be traversable.
        os.chmod(os.path.dirname(self.dir), 0o755)
        os.chmod(self.dir, 0o700)
        if _is_root():
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        return self

    def start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c shared_preload_libraries=pg_stat_statements,hypopg -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60",
                   "-o", opts, "start"])
        self.running = True
        return self

    def create_db(self):
        have = self.sql("SELECT 1 FROM pg_database WHERE datname = %s" % _lit(self.dbname),
                        db="postgres")
        if have.strip() != "1":
            self.sql(f'CREATE DATABASE "{self.dbname}"', db="postgres")
        self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.sql("CREATE EXTENSION IF NOT EXISTS hypopg")
        return self

    def sql(self, query, db=None):
        """Runs one statement as the superuser through psql; returns its unaligned output."""
        cmd = [f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
               "-p", str(self.port), "-U", "postgres", "-d", db or self.dbname,
               "-tA", "-c", query]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql {query!r} failed: {r.stderr.strip()}")
        return r.stdout

    def stop(self):
        if not self.running:
            return
        self.running = False
        try:
            self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30",
                       "stop"], timeout=60)
        except Exception:  # noqa: BLE001 - last resort, never leave a postmaster behind
            subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m",
                                         "immediate", "stop"]), capture_output=True,
                           timeout=60)


def _lit(s):
    return "'" + s.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
class Redis(Process):
    """A private redis-server on a free port, no persistence (losing Redis loses no data)."""

    def __init__(self, base_dir, port=None):
        self.port = port or free_port()
        self.dir = os.path.join(base_dir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        argv = ["/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                "--loglevel", "warning"]
        super().__init__("redis", argv, os.path.join(base_dir, "redis.log"))

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args, timeout=5.0):
        """One RESP command; returns the reply decoded loosely (str, int, None or list)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return _resp_read(f)

    def ping(self):
        try:
            return self.command("PING", timeout=1.0) == "PONG"
        except OSError:
            return False

    def start(self):
        super().start()
        wait_for(self.ping, 20, what="redis-server to answer PING")
        return self


def _resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError(f"bad RESP line {line!r}")


# --------------------------------------------------------------------------------------------
def find_bin_dir():
    """QUAVER_BIN, else the ASan build, else the plain build."""
    env = os.environ.get("QUAVER_BIN")
    if env:
        return env
    for d in ("build-asan/bin", "build/bin"):
        p = os.path.join(REPO, d)
        if os.path.isfile(os.path.join(p, "quaver-gateway")):
            return p
    return os.path.join(REPO, "build-asan/bin")


class Daemon(Process):
    """One Quaver daemon: <bin>/quaver-<name> with --set key=value for each config entry."""

    def __init__(self, name, bin_dir, config, log_dir, env=None):
        self.config = dict(config)
        argv = [os.path.join(bin_dir, f"quaver-{name}")]
        for k, v in self.config.items():
            argv += ["--set", f"{k}={v}"]
        super().__init__(name, argv, os.path.join(log_dir, f"{name}.log"), env=env)


class Quaver:
    """The whole system on free ports: PostgreSQL, Redis and the five daemons."""

    def __init__(self, base_dir, bin_dir=None, hb_ms=250):
        self.base = base_dir
        self.bin_dir = bin_dir or find_bin_dir()
        self.hb_ms = hb_ms
        self.log_dir = os.path.join(base_dir, "log")
        os.makedirs(self.log_dir, exist_ok=True)
        self.storage_dir = os.path.join(base_dir, "audio")
        os.makedirs(self.storage_dir, exist_ok=True)
        self.pg = Postgres(base_dir)
        self.redis = Redis(base_dir)
        self.http_port = free_port()
        self.broker_port = free_port()
        self.bus_in_port = free_port()
        self.bus_out_port = free_port()
        self.jwt_secret = os.urandom(48).hex()
        self.max_body_bytes = 1 << 20
        self.upload_max_bytes = 8 << 20
        self.daemons = {}

    # endpoints
    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.http_port}/ws"

    @property
    def broker(self):
        return f"tcp://127.0.0.1:{self.broker_port}"

    @property
    def bus_xpub(self):
        return f"tcp://127.0.0.1:{self.bus_out_port}"

    def daemon_env(self):
        env = dict(os.environ)
        # Nothing from the caller's shell may point a daemon somewhere else.
        for k in list(env):
            if k.startswith("QUAVER_") and k != "QUAVER_LOG_FORMAT":
                del env[k]
        for k in ("DATABASE_URL", "REDIS_URL"):
            env.pop(k, None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1:halt_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return env

    def configs(self):
        common = {
            "broker": self.broker,
            "bus_pub": f"tcp://127.0.0.1:{self.bus_in_port}",
            "heartbeat_ms": self.hb_ms,
            "log_level": "info",
        }
        return {
            "monitor": dict(common, instance="t-monitor",
                            bus_xsub_bind=f"tcp://127.0.0.1:{self.bus_in_port}",
                            bus_xpub_bind=f"tcp://127.0.0.1:{self.bus_out_port}"),
            "gateway": dict(common, instance="t-gateway", http_port=self.http_port,
                            broker_bind=f"tcp://127.0.0.1:{self.broker_port}",
                            bus_sub=self.bus_xpub, jwt_secret=self.jwt_secret,
                            redis_url=self.redis.url,
                            # every test shares 127.0.0.1: tests/test_ratelimit.py runs a
                            # gateway of its own with a small limit
                            max_requests_per_hour=1000000000,
                            max_body_bytes=self.max_body_bytes,
                            upload_max_bytes=self.upload_max_bytes),
            # The maintenance scheduler would VACUUM other tests' tables at its own times;
            # tests/test_dbopt_health.py runs it with settings of its own.
            "dbopt": dict(common, instance="t-dbopt", database_url=self.pg.url,
                          maintenance_interval_s=0),
            "cache": dict(common, instance="t-cache", redis_url=self.redis.url,
                          snapshot_path=os.path.join(self.base, "cache", "snapshot.bin")),
            "stream": dict(common, instance="t-stream", storage_dir=self.storage_dir),
        }

    def start_backends(self):
        self.pg.init().start().create_db()
        self.redis.start()

    def start_daemons(self):
        missing = [d for d in DAEMONS
                   if not os.access(os.path.join(self.bin_dir, f"quaver-{d}"), os.X_OK)]
        if missing:
            raise RuntimeError(f"daemons not built in {self.bin_dir}: {', '.join(missing)} "
                               "(run `make test`, or set QUAVER_BIN)")
        env = self.daemon_env()
        cfgs = self.configs()
        for name in DAEMONS:
            d = Daemon(name, self.bin_dir, cfgs[name], self.log_dir, env=env)
            self.daemons[name] = d
            d.start()
        self.wait_ready(60)

    def wait_ready(self, timeout=30):
        """Until GET /readyz answers 200; fails with the log tail of any daemon that died."""
        import requests
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            for d in self.daemons.values():
                if d.expect_running and not d.alive():
                    raise RuntimeError(f"{d.name} exited ({d.proc.returncode}) while starting;"
                                       f" log:\n{d.log_tail()}")
            try:
                r = requests.get(self.url + "/readyz", timeout=2)
                last = f"{r.status_code} {r.text[:300]}"
                if r.status_code == 200:
                    return
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        logs = "\n".join(f"--- {d.name} ---\n{d.log_tail(15)}" for d in self.daemons.values())
        raise RuntimeError(f"/readyz not 200 within {timeout}s (last: {last})\n{logs}")

    def processes(self):
        return list(self.daemons.values()) + [self.redis]

    def check(self):
        found = []
        for p in self.processes():
            found += p.check()
        return found

    def stop(self):
        """Stops every daemon (reverse order), Redis and PostgreSQL; returns the problems seen
        on the way (unclean exits, sanitizer reports)."""
        problems = []
        for name in reversed(DAEMONS):
            d = self.daemons.get(name)
            if d is not None:
                d.stop()
                problems += d.check()
        self.redis.stop()
        self.redis.problems = []  # redis-server's own exit code is not ours to judge
        try:
            self.pg.stop()
        except Exception as e:  # noqa: BLE001
            problems.append(f"postgres stop: {e}")
        return problems


# --------------------------------------------------------------------------------------------
# protobuf: Python modules generated from proto/ at session start (protoc --python_out).
def generate_protos(out_dir):
    protoc = shutil.which("protoc") or "/usr/bin/protoc"
    if not os.path.exists(protoc):
        raise RuntimeError("protoc not found: install protobuf-compiler (scripts/setup.sh)")
    protos = sorted(glob.glob(os.path.join(REPO, "proto/quaver/v1/*.proto")))
    subprocess.run([protoc, f"--proto_path={os.path.join(REPO, 'proto')}",
                    f"--python_out={out_dir}"] + protos, check=True, timeout=60)
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)


# --------------------------------------------------------------------------------------------
# MDP (7/MDP 0.1) client, written from the spec: a DEALER, frames "" "MDPC01" service body.
class MdpClient:
    def __init__(self, endpoint, timeout_s=5.0):
        import zmq
        self.zmq = zmq
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.ctx = zmq.Context.instance()
        self.sock = None
        self._connect()

    def _connect(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(self.zmq.DEALER)
        self.sock.setsockopt(self.zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def request(self, service, *body, timeout_s=None):
        """Sends body frames to service; returns the reply's body frames. Raises TimeoutError
        (and reconnects, so a late reply is never taken for the next request's)."""
        frames = [b"", b"MDPC01", service.encode()] + [
            b if isinstance(b, bytes) else b.encode() for b in body]
        self.sock.send_multipart(frames)
        if not self.sock.poll(int((timeout_s or self.timeout_s) * 1000)):
            self._connect()
            raise TimeoutError(f"no MDP reply from {service!r} within "
                               f"{timeout_s or self.timeout_s}s")
        reply = self.sock.recv_multipart()
        assert len(reply) >= 4, f"short MDP reply {reply!r}"
        assert reply[0] == b"", f"MDP reply must start with an empty frame: {reply!r}"
        assert reply[1] == b"MDPC01", f"MDP reply protocol frame {reply[1]!r}"
        assert reply[2] == service.encode(), f"MDP reply service frame {reply[2]!r}"
        return reply[3:]

    def call(self, service, method, payload=b"", timeout_s=None, caller=None, deadline_ms=None):
        """A quaver.v1.Call; returns the decoded quaver.v1.Result."""
        from quaver.v1 import envelope_pb2 as env
        if not isinstance(payload, (bytes, bytearray)):
            payload = payload.SerializeToString()
        t = timeout_s or self.timeout_s
        c = env.Call(method=method, request_id=f"py-{random.getrandbits(48):012x}",
                     deadline_ms=deadline_ms if deadline_ms is not None
                     else int(time.time() * 1000 + t * 1000), payload=bytes(payload))
        if caller is not None:
            c.caller.CopyFrom(caller)
        # Wait past the deadline: at the deadline the broker itself answers 503.
        frames = self.request(service, c.SerializeToString(), timeout_s=t + 2.0)
        assert len(frames) == 1, f"a Quaver reply body is one frame, got {len(frames)}"
        res = env.Result()
        res.ParseFromString(frames[0])
        return res

    def call_raw(self, service, body, timeout_s=None):
        """Sends body as is (not necessarily a Call); returns the decoded quaver.v1.Result."""
        from quaver.v1 import envelope_pb2 as env
        frames = self.request(service, body, timeout_s=timeout_s)
        assert len(frames) == 1, f"a Quaver reply body is one frame, got {len(frames)}"
        res = env.Result()
        res.ParseFromString(frames[0])
        return res

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


# --------------------------------------------------------------------------------------------
# HTTP helpers
class Api:
    """requests with the gateway's base URL and a timeout on every call."""

    def __init__(self, base, timeout=NET_TIMEOUT):
        import requests
        self.base = base
        self.timeout = timeout
        self.s = requests.Session()

    def req(self, method, path, token=None, headers=None, **kw):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        kw.setdefault("timeout", self.timeout)
        return self.s.request(method, self.base + path, headers=h, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, **kw):
        return self.req("POST", path, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)


class User:
    def __init__(self, api, username, email, password, uid, token):
        self.api, self.username, self.email, self.password = api, username, email, password
        self.id, self.token = uid, token

    def get(self, path, **kw):
        return self.api.get(path, token=self.token, **kw)

    def post(self, path, **kw):
        return self.api.post(path, token=self.token, **kw)

    def delete(self, path, **kw):
        return self.api.delete(path, token=self.token, **kw)


def unique(prefix="u"):
    return f"{prefix}{int(time.time() * 1000) % 10**9}{random.getrandbits(24):06x}"


def register(api, username=None, password="correct horse battery", email=None):
    """Registers (expects 201) and logs in; returns a User."""
    username = username or unique("user")
    email = email or f"{username}@example.test"
    r = api.post("/api/v1/auth/register",
                 json={"username": username, "email": email, "password": password})
    assert r.status_code == 201, f"register {username}: {r.status_code} {r.text}"
    body = r.json()
    uid = body.get("id") or (body.get("user") or {}).get("id")
    token = login(api, username, password)
    return User(api, username, email, password, uid, token)


def login(api, username, password):
    r = api.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, f"login {username}: {r.status_code} {r.text}"
    tok = r.json().get("token")
    assert isinstance(tok, str) and tok.count(".") == 2, f"login reply has no JWT: {r.text}"
    return tok


def create_room(user, name=None):
    r = user.post("/api/v1/rooms", json={"name": name or unique("room")})
    assert r.status_code == 201, f"create room: {r.status_code} {r.text}"
    return r.json()


def upload_wav(user, room_id, data=None, filename="tone.wav"):
    data = data or wav_bytes()
    r = user.post(f"/api/v1/rooms/{room_id}/tracks", data=data,
                  headers={"Content-Type": "audio/wav", "X-Filename": filename})
    assert r.status_code == 201, f"upload: {r.status_code} {r.text}"
    return r.json()


def track_id(body):
    """The id of an uploaded track, from the upload reply ({id} or {track:{id}})."""
    if "id" in body:
        return body["id"]
    return body["track"]["id"]


def room_id(body):
    if "id" in body:
        return body["id"]
    return body["room"]["id"]


def assert_error_shape(r, status=None):
    """Every error is {"error":{"code","message","request_id"}} with the response's id."""
    if status is not None:
        assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), \
        f"error Content-Type {r.headers.get('Content-Type')!r}: {r.text[:200]}"
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    for k in ("code", "message", "request_id"):
        assert k in err, f"error lacks {k!r}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    assert err["request_id"] == r.headers.get("X-Request-ID"), \
        f"error request_id {err['request_id']!r} != X-Request-ID {r.headers.get('X-Request-ID')!r}"
    return err


# --------------------------------------------------------------------------------------------
# Audio
def wav_bytes(seconds=1.0, rate=44100, freq=440.0, channels=1, amplitude=0.5):
    """A PCM 16-bit WAV of a sine tone, built with the stdlib wave module. Whole seconds repeat
    one computed second (an integer frequency makes that seamless), so long files are cheap."""
    one = array.array("h", (int(amplitude * 32767 * math.sin(2 * math.pi * freq * i / rate))
                            for i in range(rate)))
    if channels > 1:
        one = array.array("h", (v for v in one for _ in range(channels)))
    whole, part = int(seconds), seconds - int(seconds)
    frames = one.tobytes() * whole + one[:int(part * rate) * channels].tobytes()
    if sys.byteorder != "little":
        a = array.array("h", frames)
        a.byteswap()
        frames = a.tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def mp3_bytes(seconds=1.0):
    """An MP3 of a sine tone encoded with lame, or None when lame is missing."""
    lame = shutil.which("lame")
    if not lame:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.wav"), os.path.join(d, "out.mp3")
        with open(src, "wb") as f:
            f.write(wav_bytes(seconds))
        subprocess.run([lame, "--quiet", "-b", "128", src, dst], check=True, timeout=60)
        with open(dst, "rb") as f:
            return f.read()


def json_or_none(r):
    try:
        return r.json()
    except ValueError:
        return None


# ---- the bus (the monitor's XPUB), as an operator's subscriber sees it ----------------------

class BusEvent(NamedTuple):
    topic: str
    msg: Any          # quaver.v1.BusMessage
    doc: Any          # the JSON body (room, db, cache events) as a dict, else None
    t: float          # time.monotonic() when received


def bus_sub(quaver, *topics):
    """A SUB socket on the monitor's XPUB, subscribed to each topic prefix. Subscriptions
    reach the publisher asynchronously: wait a little, or for a message you know is coming,
    before doing what should publish."""
    import zmq
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t.encode())
    s.connect(quaver.bus_xpub)
    return s


def _bus_events(sock, timeout):
    from quaver.v1 import bus_pb2
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sock.poll(50):
            topic, body = sock.recv_multipart()[:2]
            m = bus_pb2.BusMessage()
            m.ParseFromString(body)
            doc = json.loads(m.json) if m.WhichOneof("body") == "json" else None
            yield BusEvent(topic.decode(), m, doc, time.monotonic())


def bus_read(sock, timeout):
    """Every BusEvent received within timeout seconds."""
    return list(_bus_events(sock, timeout))


def bus_wait(sock, pred, timeout):
    """The first BusEvent e within timeout seconds for which pred(e) is true, or None."""
    for e in _bus_events(sock, timeout):
        if pred(e):
            return e
    return None


# ---- dbopt with other settings --------------------------------------------------------------

def dbopt_answers(mdp, pb):
    """dbopt answers Health over MDP (connected to the broker and running)."""
    try:
        return mdp.call("dbopt", "Health", pb.env.Empty(), timeout_s=2).status == 200
    except TimeoutError:
        return False


@contextlib.contextmanager
def dbopt_with(quaver, mdp, pb, **overrides):
    """The session's dbopt restarted with config overrides (key=value as in its key table);
    the original comes back afterwards. Fails the test if either instance died or its log
    shows a sanitizer report."""
    old = quaver.daemons["dbopt"]
    old.stop()
    problems = old.check()
    d = Daemon("dbopt", quaver.bin_dir, dict(old.config, **overrides), quaver.log_dir,
               env=quaver.daemon_env())
    quaver.daemons["dbopt"] = d
    d.start()
    try:
        wait_for(lambda: dbopt_answers(mdp, pb), 30, interval=0.1, what="dbopt with overrides")
        yield d
    finally:
        # Whatever runs now: a nested dbopt_with (a test inside a module-scoped one) has put
        # its own "back" in place of d, and that one must stop too, or two dbopts would run.
        cur = quaver.daemons["dbopt"]
        for x in {id(d): d, id(cur): cur}.values():
            x.stop()
            problems += x.check()
        back = Daemon("dbopt", quaver.bin_dir, old.config, quaver.log_dir,
                      env=quaver.daemon_env())
        quaver.daemons["dbopt"] = back
        back.start()
        wait_for(lambda: dbopt_answers(mdp, pb), 30, interval=0.1, what="dbopt back")
    assert not problems, problems


# ---- the cache daemon -----------------------------------------------------------------------

def cache_get(mdp, pb, ns, key):
    """cache.Get over MDP; asserts a 200 and returns the CacheGetReply (found, value, tier)."""
    res = mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=key))
    assert res.status == 200, (res.status, res.error)
    g = pb.cache.CacheGetReply()
    g.ParseFromString(res.payload)
    return g
