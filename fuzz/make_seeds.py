#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; re-run to regenerate).
Protobuf messages are encoded by hand (wire format), so nothing beyond python3 is needed.
Audio seeds for fuzz_stream_probe come from make_audio_seeds.sh (libsndfile, lame)."""
import os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def varint(n):
    if n < 0:
        n += 1 << 64
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def f_len(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def f_int(num, n):
    return varint(num << 3 | 0) + varint(n)


def f_double(num, x):
    return varint(num << 3 | 1) + struct.pack("<d", x)


def call(method, payload=b"", admin=False, deadline=0, rid="seed"):
    caller = f_int(1, 7) + f_len(2, "alice") + (f_int(3, 1) if admin else b"")
    m = f_len(1, method) + f_len(2, rid)
    if deadline:
        m += f_int(3, deadline)
    return m + f_len(4, caller) + f_len(5, payload)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    # ---- fuzz_rpc_dispatch: byte 0 = table (0 cache, 1 stream, 2 dbopt, 3 any) | 4 wrapped | 8 admin
    key = f_len(1, "rooms") + f_len(2, "k1")
    cset = key + f_len(3, b"hello") + f_int(4, 1000)
    pref = f_len(1, "rooms") + f_len(2, "k")
    sha = "a" * 64
    sread = f_len(1, sha) + f_int(2, 0) + f_int(3, 100)
    qreq = f_len(1, "user_get") + f_len(2, f_len(2, "1")) + f_len(2, f_int(1, 1))
    fam = f_len(1, "quaver_x_total") + f_len(2, "help") + f_len(3, "counter") + \
        f_len(4, f_len(1, "") + f_len(2, f_len(1, "method") + f_len(2, "Get")) + f_double(3, 2.0))
    snap = f_len(1, "cache") + f_len(2, "cache-1") + f_len(3, fam)
    bus = f_len(1, "cache/cache-1") + f_int(2, 1) + f_int(3, 1700000000000) + f_len(10, snap)
    seeds = {
        "cache_get_raw": b"\x00" + call("Get", key),
        "cache_set_raw": b"\x00" + call("Set", cset),
        "cache_del_raw": b"\x00" + call("Delete", key),
        "cache_inval_raw": b"\x00" + call("InvalidatePrefix", pref),
        "cache_health_raw": b"\x00" + call("Health"),
        "cache_stats_raw": b"\x00" + call("Stats", admin=True),
        "cache_deadline_raw": b"\x00" + call("Get", key, deadline=1),
        "cache_unknown_raw": b"\x00" + call("Nope"),
        "cache_set_wrapped": b"\x04\x01" + cset,
        "cache_inval_wrapped": b"\x0c\x03" + pref,
        "stream_read_raw": b"\x01" + call("Read", sread),
        "stream_stat_raw": b"\x01" + call("Stat", f_len(1, "../" * 20 + "etc/passwd")),
        "stream_put_wrapped": b"\x05\x00" + f_len(1, b"RIFF\x24\x00\x00\x00WAVEfmt ") + f_len(2, "x.wav"),
        "stream_read_wrapped": b"\x05\x01" + sread,
        "dbopt_query_raw": b"\x02" + call("Query", qreq),
        "dbopt_exec_wrapped": b"\x06\x01" + qreq,
        "any_bus_wrapped": b"\x07\x00" + bus,
        "any_snapshot_wrapped": b"\x07\x01" + snap,
        "any_result_wrapped": b"\x07\x03" + f_int(1, 200) + f_len(2, "ok") + f_len(3, b"x"),
        "empty": b"",
    }
    # Real uploads, when make_audio_seeds.sh has run: Put reaches the probe and the store.
    for name in ("tiny.wav", "tiny.mp3"):
        path = os.path.join(CORPUS, "fuzz_stream_probe", name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                seeds["stream_put_" + name.replace(".", "_")] = \
                    b"\x05\x00" + f_len(1, f.read()) + f_len(2, name)
    for k, v in seeds.items():
        write("fuzz_rpc_dispatch", k, v)

    # ---- fuzz_mon_bus: packed BusMessage
    write("fuzz_mon_bus", "metrics", bus)
    hist = f_len(1, "quaver_rpc_duration_seconds") + f_len(3, "histogram") + \
        f_len(4, f_len(1, "_bucket") + f_len(2, f_len(1, "le") + f_len(2, "0.1")) + f_double(3, 1)) + \
        f_len(4, f_len(1, "_sum") + f_double(3, 0.5)) + f_len(4, f_len(1, "_count") + f_double(3, 1))
    write("fuzz_mon_bus", "histogram", f_len(1, "stream/s-1") + f_int(2, 2) +
          f_len(10, f_len(1, "stream") + f_len(2, "s-1") + f_len(3, hist)))
    write("fuzz_mon_bus", "health", f_len(1, "monitor/m") + f_len(11, f_len(1, "cache") + f_len(2, "up")))
    write("fuzz_mon_bus", "json", f_len(1, "gateway/g") + f_len(12, '{"room":1}'))

    # ---- fuzz_config_file: file bytes [NUL set NUL set ...]
    write("fuzz_config_file", "all_types",
          b"# comment\nname = quaver\nsecret = s3cret\nany = \"quoted value\"\ncount = -3\n"
          b"big = 9000000000000000000\nflag = true\nflag2 = off\nratio = 0.25\nwide = -1e299\n"
          b"workers = 8\nbroker = tcp://a:1,tcp://b:2\n")
    write("fuzz_config_file", "bad_bounds", b"count = 101\n")
    write("fuzz_config_file", "unknown_key", b"nosuchkey = 1\n")
    write("fuzz_config_file", "with_sets", b"count = 1\n\x00count=2\x00flag=yes\x00ratio=1\x00name=")
    write("fuzz_config_file", "odd_lines", b"  \t\nname=\n=x\nname\n  count   =   0x10  # hex?\nratio = nan\nwide = inf\r\n")

    # ---- fuzz_range: 8-byte size (LE; bit 0 = raw huge, else (u>>1) % 100000) then header
    sz = struct.pack("<Q", 10000 << 1)
    for i, h in enumerate([b"bytes=0-99", b"bytes=100-", b"bytes=-500", b"bytes=0-0,5-9",
                           b"bytes=20000-30000", b"bytes = 1-2", b"items=0-1", b"bytes=9223372036854775807-",
                           b"bytes=-9223372036854775808", b"bytes=5-1"]):
        write("fuzz_range", "h%02d" % i, sz + h)
    write("fuzz_range", "huge", struct.pack("<Q", (1 << 62) | 1) + b"bytes=4611686018427387000-")

    # ---- fuzz_multipart: Content-Type line, then body
    b = b"XyZ"
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nSong\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n"
            b"Content-Type: audio/mpeg\r\n\r\nID3\x03\x00data\r\n--XyZ--\r\n")
    write("fuzz_multipart", "one_file", b"multipart/form-data; boundary=" + b + b"\n" + body)
    write("fuzz_multipart", "quoted", b"multipart/form-data; boundary=\"XyZ\"; charset=utf-8\n" + body)
    write("fuzz_multipart", "two_files", b"multipart/form-data; boundary=XyZ\n" +
          body.replace(b"--XyZ--", b"--XyZ\r\nContent-Disposition: form-data; name=\"f2\"; filename=\"b\"\r\n\r\nzz\r\n--XyZ--"))
    write("fuzz_multipart", "truncated", b"multipart/form-data; boundary=XyZ\n" + body[:90])

    # ---- fuzz_json_body
    for name, j in {
        "login": b'{"username":"alice","password":"hunter2hunter2"}',
        "room": b'{"name":"r\\u00e9","tracks":[1,2,3],"meta":{"a":null,"b":true}}',
        "ws_subscribe": b'{"type":"subscribe","room":12}',
        "deep_ok": b'{"a":' * 31 + b"1" + b"}" * 31,
        "deep_bad": b"[" * 40 + b"]" * 40,
        "deep_2000": b"[" * 2000 + b"]" * 2000,   # overflows a 100 KB stack without the guard
        "string_brackets": b'{"name":"[[[[\\"{{{{"}',
        "dup": b'{"a":1,"a":2}',
    }.items():
        write("fuzz_json_body", name, j)

    # ---- fuzz_mdp_broker: byte0 = header (0 none, 1 ""+MDPC01, 2 ""+MDPW01, 3 "") | 4 second socket
    def frames(*fs):
        return b"".join(bytes([len(f)]) + f for f in fs)
    write("fuzz_mdp_broker", "client_req", b"\x01" + frames(b"svc", b"hello"))
    write("fuzz_mdp_broker", "client_mmi", b"\x01" + frames(b"mmi.service", b"svc"))
    write("fuzz_mdp_broker", "client_call", b"\x01" + frames(b"cache", call("Get", key, deadline=1)))
    write("fuzz_mdp_broker", "worker_ready", b"\x02" + frames(b"\x01", b"svc"))
    write("fuzz_mdp_broker", "worker_ready_then_req", b"\x06" + frames(b"\x01", b"echo") + b"\xff" +
          frames(b"\x04"))
    write("fuzz_mdp_broker", "worker_reply", b"\x02" + frames(b"\x03", b"\x00\x6b\x8b\x45\x67", b"", b"ok"))
    write("fuzz_mdp_broker", "worker_hb_disc", b"\x02" + frames(b"\x04") + b"\xff" + frames(b"\x05"))
    write("fuzz_mdp_broker", "raw", b"\x00" + frames(b"junk", b"", b"MDPC01"))


if __name__ == "__main__":
    sys.exit(main())
