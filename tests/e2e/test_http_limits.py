"""The HTTP data plane under hostile connections (README "HTTP limits"): the real binary
over loopback, driven with raw sockets.

- slow clients (one byte every few seconds) cost no thread each and do not lock a normal
  client out; an engine call that blocks (a paused shard) suspends only its own request;
- http.max_connections and http.max_connections_per_ip close new connections at accept
  and count them in admin /metrics;
- the header, body and idle deadlines close connections that miss them;
- limits.partial_body_budget_bytes bounds the memory of bodies being received: past it
  503 overloaded (or the body is dropped), never unbounded growth; TCP's partial frames
  take from the same budget;
- ambiguous framing (two Content-Length, Content-Length with Transfer-Encoding) is
  answered 400 http_protocol_error and the connection closes, nothing applied.
"""
import json
import os
import resource
import socket
import struct
import threading
import time
import unittest

from harness import Beava, main
from test_tcp import Conn

PIPE = {"nodes": [
    {"kind": "event", "name": "E", "schema": {"fields": {"k": "str", "v": "i64"}}},
    {"kind": "derivation", "name": "ByKey", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {"n": {"op": "count"}}}],
     "table_primary_key": ["k"]},
]}

SLOW_CONNECTIONS = 1500
# generous bound for anything that "should happen soon"; never a timing assertion
SOON = 20.0


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def addr_of(b):
    host, port = b.http_addr_bound.rsplit(":", 1)
    return host, int(port)


def connect(b, source=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(SOON)
    s.connect(addr_of(b))
    return s


def metrics(b):
    st, _, body = b.raw("GET", "/metrics", which="admin")
    assert st == 200, body
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_metric(b, name, pred):
    deadline = time.time() + SOON
    while True:
        v = metrics(b).get(name, 0)
        if pred(v) or time.time() > deadline:
            return v
        time.sleep(0.05)


def closed_by_peer(s, timeout=SOON):
    """True when the server closes s (EOF or reset) within timeout; any bytes it sends
    first (an answer) are read and ignored."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def read_response(s):
    """Read one HTTP response (Content-Length framed). Returns (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response: %r" % buf)
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    need = int(headers.get("content-length", "0"))
    while len(rest) < need:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:need]


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def thread_count(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads")


def other(b):
    """A second client of the same server with its own keep-alive connection."""
    o = Beava.__new__(Beava)
    o.__dict__.update(b.__dict__)
    o._conns = {}
    return o


class HttpLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fd_soft = raise_fd_limit()

    def test_slowloris_does_not_lock_out_a_normal_client(self):
        if self.fd_soft < SLOW_CONNECTIONS + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d is below %d" % (self.fd_soft, SLOW_CONNECTIONS + 200))
        # deadlines far away: every slow connection stays open while the client works
        env = {"BEAVA_HTTP_HEADER_TIMEOUT_MS": "120000", "BEAVA_HTTP_THREADS": "2"}
        with Beava(env=env) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            slow = []
            try:
                for i in range(SLOW_CONNECTIONS):
                    s = connect(b)
                    s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    slow.append(s)
                self.assertGreaterEqual(wait_metric(b, "beava_http_connections_open",
                                                    lambda v: v >= SLOW_CONNECTIONS), SLOW_CONNECTIONS)
                stop = threading.Event()

                def dribble():
                    while not stop.is_set():
                        for s in slow:
                            try:
                                s.send(b"a")
                            except OSError:
                                pass
                        stop.wait(2.0)

                t = threading.Thread(target=dribble, daemon=True)
                t.start()
                try:
                    client = other(b)
                    for i in range(50):
                        st, body = client.push("E", {"k": "normal", "v": i})
                        self.assertEqual(st, 200, body)
                    self.assertEqual(client.get("ByKey", "normal")[1]["n"], 50)
                    # no thread per connection: the process stays small in threads
                    self.assertLess(thread_count(b.proc.pid), 200)
                    self.assertGreaterEqual(metrics(b)["beava_http_connections_open"], SLOW_CONNECTIONS)
                finally:
                    stop.set()
                    t.join(10)
            finally:
                for s in slow:
                    s.close()

    def test_connection_cap_refuses_and_counts(self):
        cap = 20
        with Beava(env={"BEAVA_HTTP_MAX_CONNECTIONS": str(cap), "BEAVA_HTTP_THREADS": "2"}) as b:
            held = [connect(b) for _ in range(cap)]
            try:
                self.assertEqual(wait_metric(b, "beava_http_connections_open", lambda v: v >= cap), cap)
                extra = [connect(b) for _ in range(5)]
                for s in extra:
                    self.assertTrue(closed_by_peer(s), "a connection past the cap was kept")
                    s.close()
                m = metrics(b)
                self.assertEqual(m['beava_http_connections_refused_total{limit="max_connections"}'], 5)
                self.assertEqual(m["beava_http_connections_open"], cap)
                # a held connection is served normally
                held[0].sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                st, _, body = read_response(held[0])
                self.assertEqual(st, 200, body)
                # room again once one closes
                held.pop().close()
                wait_metric(b, "beava_http_connections_open", lambda v: v < cap)
                s = connect(b)
                s.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                self.assertEqual(read_response(s)[0], 200)
                s.close()
            finally:
                for s in held:
                    s.close()

    def test_per_address_limit(self):
        with Beava(env={"BEAVA_HTTP_MAX_CONNECTIONS_PER_IP": "3"}) as b:
            held = [connect(b, "127.0.0.1") for _ in range(3)]
            try:
                wait_metric(b, "beava_http_connections_open", lambda v: v >= 3)
                s = connect(b, "127.0.0.1")
                self.assertTrue(closed_by_peer(s))
                s.close()
                # another address is not affected
                s = connect(b, "127.0.0.2")
                s.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                self.assertEqual(read_response(s)[0], 200)
                s.close()
                self.assertEqual(metrics(b)['beava_http_connections_refused_total{limit="max_connections_per_ip"}'], 1)
            finally:
                for s in held:
                    s.close()

    def test_idle_timeout_closes_keepalive_connection(self):
        with Beava(env={"BEAVA_HTTP_IDLE_TIMEOUT_S": "1"}) as b:
            s = connect(b)
            s.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            st, h, _ = read_response(s)
            self.assertEqual(st, 200)
            self.assertNotEqual(h.get("connection", "").lower(), "close")
            self.assertTrue(closed_by_peer(s), "an idle keep-alive connection stayed open")
            s.close()
            self.assertGreaterEqual(metrics(b)['beava_http_timeouts_total{phase="idle"}'], 1)

    def test_header_deadline(self):
        with Beava(env={"BEAVA_HTTP_HEADER_TIMEOUT_MS": "1000"}) as b:
            # a client that keeps sending header bytes, never the blank line
            s = connect(b)
            s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\n")
            closed = False
            deadline = time.time() + SOON
            while time.time() < deadline:
                try:
                    s.send(b"X")
                except OSError:
                    closed = True
                    break
                if closed_by_peer(s, 0.3):
                    closed = True
                    break
            self.assertTrue(closed, "headers that never end kept the connection open")
            s.close()
            # a connection that sends nothing at all
            s = connect(b)
            self.assertTrue(closed_by_peer(s))
            s.close()
            self.assertGreaterEqual(metrics(b)['beava_http_timeouts_total{phase="header"}'], 2)
            # a prompt client is still served
            self.assertEqual(b.call("POST", "/ping")[0], 200)

    def test_crowd_missing_the_header_deadline_is_closed(self):
        """A crowd that misses its header deadline together is reaped in slices and small
        bursts (never one long hold of the connection table): every one of them is
        closed and counted, twice over (the table is reused after its entries moved),
        while a keep-alive client opened before the crowd keeps being served."""
        crowd = 600
        if self.fd_soft < crowd + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d is below %d" % (self.fd_soft, crowd + 200))
        with Beava(env={"BEAVA_HTTP_HEADER_TIMEOUT_MS": "1000", "BEAVA_HTTP_THREADS": "2"}) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            client = other(b)
            self.assertEqual(client.push("E", {"k": "crowd", "v": 0})[0], 200)
            for wave in (1, 2):
                slow = []
                try:
                    for i in range(crowd):
                        s = connect(b)
                        s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        slow.append(s)
                    # the keep-alive client is served while the crowd waits for its deadline
                    self.assertEqual(client.push("E", {"k": "crowd", "v": wave})[0], 200)
                    for s in slow:
                        self.assertTrue(closed_by_peer(s), "a connection past its header deadline stayed open")
                finally:
                    for s in slow:
                        s.close()
                self.assertGreaterEqual(wait_metric(b, 'beava_http_timeouts_total{phase="header"}',
                                                    lambda v: v >= wave * crowd), wave * crowd)
                # and after it was reaped
                st, body = client.push("E", {"k": "crowd", "v": 10 + wave})
                self.assertEqual(st, 200, body)
            self.assertEqual(client.get("ByKey", "crowd")[1]["n"], 5)
            # the client's own connection was never reaped (it was never idle that long),
            # and nothing of the crowd is left open
            self.assertLessEqual(wait_metric(b, "beava_http_connections_open", lambda v: v <= 2), 2)

    def test_body_deadline(self):
        with Beava(env={"BEAVA_HTTP_BODY_TIMEOUT_MS": "1000"}) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            body = json.dumps({"event": "E", "data": {"k": "late", "v": 1}}).encode()
            s = connect(b)
            s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
            closed = False
            deadline = time.time() + SOON
            for ch in body[5:-1]:
                if time.time() > deadline:
                    break
                try:
                    s.send(bytes([ch]))
                except OSError:
                    closed = True
                    break
                if closed_by_peer(s, 0.3):
                    closed = True
                    break
            self.assertTrue(closed, "a body slower than the deadline kept the connection open")
            s.close()
            self.assertGreaterEqual(metrics(b)['beava_http_timeouts_total{phase="body"}'], 1)
            self.assertEqual(b.get("ByKey", "late"), (200, {}))      # nothing was applied

    def test_partial_body_budget_bounds_memory(self):
        budget = 8 << 20
        env = {
            "BEAVA_PARTIAL_BODY_BUDGET_BYTES": str(budget),
            "BEAVA_HTTP_BODY_TIMEOUT_MS": "120000",
            # freed blocks must not linger in the sanitizer's quarantine for the RSS check
            "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1").lstrip(":"),
        }
        with Beava(env=env) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            base = rss_bytes(b.proc.pid)
            declared, sent, n = 4 << 20, 1 << 20, 60
            chunk = b"x" * sent
            conns, overloaded = [], 0
            try:
                for _ in range(n):
                    s = connect(b)
                    s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
                    try:
                        s.sendall(chunk)          # then stall
                    except OSError:
                        pass                      # answered and closed before the body was read
                    conns.append(s)
                for s in conns:
                    s.settimeout(0.5)
                    try:
                        st, _, body = read_response(s)
                    except (socket.timeout, ConnectionError, OSError):
                        continue                  # still stalled, body dropped or held
                    self.assertEqual(st, 503, body)
                    self.assertEqual(json.loads(body)["error"]["code"], "overloaded")
                    overloaded += 1
                m = metrics(b)
                # a refusal sent while the client was still sending its body can reach it as a
                # reset instead of the 503 (the server closes without reading the body), so the
                # server's own count is the measure; every 503 read must be among those counted
                refused = m["beava_http_overloaded_total"] + m.get("beava_body_budget_refused_total", 0)
                self.assertGreater(max(refused, overloaded), 0, {k: v for k, v in m.items() if "budget" in k or "http" in k})
                self.assertLessEqual(m["beava_body_budget_used_bytes"], budget)
                self.assertLessEqual(m["beava_body_budget_peak_bytes"], budget)
                # refused before the body (Content-Length cannot fit) or once a growth failed
                self.assertGreaterEqual(m["beava_http_overloaded_total"], overloaded)
                # 60 MiB of stalled bodies without a budget; 8 MiB with it, plus slack
                grown = rss_bytes(b.proc.pid) - base
                self.assertLess(grown, 40 << 20, "RSS grew by %d bytes" % grown)
                # a normal small push still gets through while the budget is spent
                st, body = other(b).push("E", {"k": "small", "v": 1})
                self.assertEqual(st, 200, body)
            finally:
                for s in conns:
                    s.close()
            # every stalled body gave its bytes back when its connection closed
            self.assertEqual(wait_metric(b, "beava_body_budget_used_bytes", lambda v: v == 0), 0)

    def test_body_budget_is_shared_with_tcp_frames(self):
        budget = 5 << 19                                  # 2.5 MiB for both listeners
        with Beava(env={"BEAVA_PARTIAL_BODY_BUDGET_BYTES": str(budget)}) as b:
            # an HTTP body stalls after 1.5 MiB of 2: its buffer holds about 2 MiB of the budget
            h = connect(b)
            h.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 << 20))
            h.sendall(b"x" * (3 << 19))
            used = wait_metric(b, "beava_body_budget_used_bytes", lambda v: v >= 1 << 20)
            self.assertGreaterEqual(used, 1 << 20)
            # a TCP frame of 1 MiB no longer fits in what is left
            t = Conn(b.bound["server.tcp_bound"])
            t.send(struct.pack(">IHB", (1 << 20) + 3, 0x0010, 1) + b" " * (64 << 10))
            op, _, body = t.recv_frame()
            self.assertEqual((op, body["error"]["code"]), (0xFFFF, "overloaded"))
            self.assertTrue(t.closed())
            t.close()
            # the HTTP body's bytes come back when its connection goes, and TCP fits again
            h.close()
            self.assertEqual(wait_metric(b, "beava_body_budget_used_bytes", lambda v: v == 0), 0)
            t = Conn(b.bound["server.tcp_bound"])
            t.send(struct.pack(">IHB", (1 << 20) + 3, 0x0010, 1) + b" " * (64 << 10))
            self.assertGreaterEqual(wait_metric(b, "beava_body_budget_used_bytes", lambda v: v >= 1 << 20), 1 << 20)
            t.close()

    def test_abandoned_bodies_give_their_budget_back(self):
        # Clients that close right after their last bytes, before the declared body is
        # complete: the end of stream often arrives together with those bytes, and each
        # connection's buffer and budget must come back without waiting for the body
        # deadline (30 s by default, longer than SOON).
        with Beava() as b:
            for i in range(24):
                s = connect(b)
                s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1 << 20))
                s.sendall(b"y" * ((1 << 19) + i * 4096))
                s.close()
            self.assertEqual(wait_metric(b, "beava_body_budget_used_bytes", lambda v: v == 0), 0)
            self.assertEqual(wait_metric(b, "beava_http_connections_open", lambda v: v == 0), 0)
            self.assertEqual(metrics(b).get('beava_http_timeouts_total{phase="body"}', 0), 0)

    def _framing_case(self, b, head, body):
        s = connect(b)
        s.sendall(head + b"\r\n" + body)
        st, h, data = read_response(s)
        self.assertEqual(st, 400, data)
        self.assertEqual(json.loads(data)["error"]["code"], "http_protocol_error")
        self.assertEqual(h.get("connection", "").lower(), "close")
        self.assertTrue(closed_by_peer(s), "the connection stayed open after ambiguous framing")
        s.close()

    def test_ambiguous_framing_is_refused(self):
        with Beava() as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            body = json.dumps({"event": "E", "data": {"k": "smuggled", "v": 1}}).encode()
            n = len(body)
            cases = [
                b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 5\r\n" % n,
                b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: %d\r\n" % n,
                b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: %d\r\n" % (n, n),
                b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n" % n,
                b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n" % n,
            ]
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (n, body)
            for i, head in enumerate(cases):
                with self.subTest(case=i):
                    self._framing_case(b, head, chunked if b"chunked" in head else body)
            self.assertEqual(b.get("ByKey", "smuggled"), (200, {}))  # nothing was applied
            self.assertEqual(metrics(b)["beava_http_framing_errors_total"], len(cases))
            # a well-framed chunked push on a kept-alive connection works
            s = connect(b)
            s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
            self.assertEqual(read_response(s)[0], 200)
            s.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            self.assertEqual(read_response(s)[0], 200)
            s.close()

    def test_blocked_engine_call_suspends_only_its_request(self):
        # one I/O thread: a push stuck on a paused shard must not hold it
        env = {"BEAVA_HTTP_THREADS": "1"}
        with Beava(test_mode=True, args=["--shards", "2"], env=env) as b:
            self.assertEqual(b.register(PIPE)[0], 200)

            def shard_of(key):
                st, _, body = b.raw("POST", "/debug/shard-of", {"table": "ByKey", "key": key}, which="admin")
                return json.loads(body)["shard"]

            hot = next(k for k in ("h%d" % i for i in range(100)) if shard_of(k) == 0)
            cold = next(k for k in ("c%d" % i for i in range(100)) if shard_of(k) == 1)
            self.assertEqual(b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": True}, which="admin")[0], 200)
            result = []
            blocked = other(b)
            t = threading.Thread(target=lambda: result.append(blocked.push("E", {"k": hot, "v": 1})))
            t.start()
            try:
                self.assertEqual(wait_metric(b, "beava_http_requests_suspended", lambda v: v >= 1), 1)
                self.assertEqual(result, [], "the push to the paused shard was answered")
                c = other(b)
                self.assertEqual(c.call("POST", "/ping")[0], 200)
                self.assertEqual(c.push("E", {"k": cold, "v": 1})[0], 200)
                self.assertEqual(c.get("ByKey", cold)[1]["n"], 1)
                self.assertEqual(result, [])
            finally:
                b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            t.join(SOON)
            self.assertEqual(result[0][0], 200, result)
            self.assertEqual(b.get("ByKey", hot)[1]["n"], 1)
            self.assertEqual(wait_metric(b, "beava_http_requests_suspended", lambda v: v == 0), 0)

    def test_only_the_listeners_serve(self):
        # libmicrohttpd's I/O threads keep a private loopback listening socket of their own
        # (http.c acceptor_main); a local process that finds its port is refused unserved:
        # every connection comes through the configured listener and its limits.
        with Beava() as b:
            pid = b.proc.pid
            inodes = set()
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
            ports = set()
            for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
                with open(table) as f:
                    for line in f.readlines()[1:]:
                        cols = line.split()
                        if cols[3] == "0A" and cols[9] in inodes:        # LISTEN, ours
                            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
            configured = {int(a.rsplit(":", 1)[1]) for a in
                          (b.http_addr_bound, b.admin_addr_bound, b.bound["server.tcp_bound"])}
            private = sorted(ports - configured)
            self.assertTrue(private, "no private listening socket found among %s" % sorted(ports))
            for port in private:
                s = socket.create_connection(("127.0.0.1", port), timeout=SOON)
                try:
                    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                    try:
                        got = s.recv(4096)
                    except ConnectionResetError:
                        got = b""
                    self.assertEqual(got, b"", "port %d served a request: %r" % (port, got[:80]))
                finally:
                    s.close()
            self.assertEqual(b.call("GET", "/health")[0], 200)   # the listener itself serves

    def test_limit_keys_are_validated(self):
        for var, value in (("BEAVA_HTTP_MAX_CONNECTIONS", "0"), ("BEAVA_HTTP_HEADER_TIMEOUT_MS", "ten"),
                           ("BEAVA_PARTIAL_BODY_BUDGET_BYTES", "1")):
            with self.subTest(var=var):
                b = Beava(env={var: value})
                with self.assertRaises(RuntimeError) as ctx:
                    b.start()
                b.check_clean_exit = False
                b.stop()
                self.assertIn(var, str(ctx.exception))


if __name__ == "__main__":
    main()
