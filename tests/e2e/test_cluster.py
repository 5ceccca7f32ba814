"""beava cluster on NATS JetStream (README "Cluster"): a real nats-server with JetStream
(temporary store dir, loopback) and three real beava nodes. Pushes through any node are
acknowledged once the stream stored them and applied by the owners of their partitions;
a node killed with SIGKILL and restarted loses no acknowledged event and counts none
twice; snapshots record the stream sequence per partition and a restart resumes from
there; the registry goes through the log.

nats-server must be installed (ci/install-deps installs it): without it this test fails,
it never skips."""
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import BEAVA_BIN, Beava, free_port, main
from harness import shared_path
from test_pipelines import batch_get, push_many, rejected
from test_tcp import Conn

OP_PUSH, OP_GET, OP_RESULT = 0x0010, 0x0020, 0x0023

NATS_BIN = shutil.which("nats-server") or "/usr/sbin/nats-server"

PIPE = {"nodes": [
    {"kind": "event", "name": "E", "schema": {"fields": {"k": "str", "m": "str", "v": "i64"}}},
    {"kind": "derivation", "name": "ByKey", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {"n": {"op": "count"}, "vs": {"op": "sum", "params": {"field": "v"}}}}],
     "table_primary_key": ["k"]},
    {"kind": "derivation", "name": "ByM", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["m"], "agg": {"mn": {"op": "count"}}}],
     "table_primary_key": ["m"]},
]}


class Nats:
    """One nats-server with JetStream on a loopback port, store in a temporary dir."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="beava-nats-")
        self.proc = None

    def start(self, timeout=20):
        if not os.path.exists(NATS_BIN):
            raise AssertionError("nats-server not found (%s): install it (ci/install-deps does)" % NATS_BIN)
        self.proc = subprocess.Popen([NATS_BIN, "-js", "-sd", self.dir.name, "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        for raw in iter(self.proc.stderr.readline, b""):      # nats-server logs to stderr
            if b"Server is ready" in raw:
                threading.Thread(target=lambda: [None for _ in iter(self.proc.stderr.readline, b"")],
                                 daemon=True).start()
                return self
            if time.time() > deadline:
                break
        raise AssertionError("nats-server did not start (rc %s)" % self.proc.poll())

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def kill(self):
        self.proc.kill()
        self.proc.wait(20)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.dir.cleanup()


class GateProxy:
    """A loopback TCP proxy to nats-server whose server-to-client direction can be held
    (bytes are kept, in order, until release)."""

    def __init__(self, port):
        self.port = port
        self.gate = threading.Event()
        self.gate.set()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.url = "nats://127.0.0.1:%d" % self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                cs, _ = self.ls.accept()
            except OSError:
                return
            ss = socket.create_connection(("127.0.0.1", self.port))
            self.socks += [cs, ss]
            threading.Thread(target=self.pipe, args=(cs, ss, None), daemon=True).start()
            threading.Thread(target=self.pipe, args=(ss, cs, self.gate), daemon=True).start()

    @staticmethod
    def pipe(src, dst, gate):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if gate:
                    gate.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold(self):
        self.gate.clear()

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        self.ls.close()
        for s in self.socks:
            s.close()


class Cluster:
    """Three beava nodes on one NATS server, each with its own data dir."""

    def __init__(self, nats, n=3, partitions=8, replicas=3, snapshot_interval_s=3600, extra_env=None):
        self.extra_env = dict(extra_env or {})
        self.nats = nats
        self.ids = ["n%d" % i for i in range(1, n + 1)]
        self.partitions = partitions
        self.replicas = replicas
        self.snapshot_interval_s = snapshot_interval_s
        self.dirs = {i: tempfile.TemporaryDirectory(prefix="beava-node-") for i in self.ids}
        self.nodes = {}

    def env(self, node_id):
        return {
            "BEAVA_CLUSTER_NATS_URL": self.nats.url,
            "BEAVA_CLUSTER_NODE_ID": node_id,
            "BEAVA_CLUSTER_NODES": ",".join(self.ids),
            "BEAVA_CLUSTER_PARTITIONS": str(self.partitions),
            "BEAVA_CLUSTER_REPLICAS": str(self.replicas),
            "BEAVA_SNAPSHOT_INTERVAL_S": str(self.snapshot_interval_s),
            "BEAVA_SHARDS": "2",
            **self.extra_env,
        }

    def start(self, node_id, timeout=60):
        b = Beava(memory_only=False, data_dir=self.dirs[node_id].name, env=self.env(node_id))
        b.start(timeout)
        self.nodes[node_id] = b
        return b

    def start_all(self):
        for i in self.ids:
            self.start(i)
        return self

    def kill(self, node_id):
        b = self.nodes.pop(node_id)
        b.stop(signal.SIGKILL)
        return b

    def stop_one(self, node_id):
        self.nodes.pop(node_id).stop()

    def stop(self):
        for b in self.nodes.values():
            b.stop()
        self.nodes = {}
        for d in self.dirs.values():
            d.cleanup()


class StreamReader:
    """Reads stored messages of the cluster's stream by sequence over the NATS protocol
    itself (JetStream's STREAM.MSG.GET API): what the nodes published, byte for byte."""

    def __init__(self, nats, stream="BEAVA_beava"):
        self.stream = stream
        self.sock = socket.create_connection(("127.0.0.1", nats.port), timeout=10)
        self.buf = b""
        self.line()                                     # INFO {...}
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _INBOX.t 1\r\nPING\r\n')
        while self.line() != b"PONG":
            pass

    def fill(self, enough):
        while not enough():
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("NATS closed the connection")
            self.buf += chunk

    def line(self):
        self.fill(lambda: b"\r\n" in self.buf)
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        """n payload bytes and the CRLF after them."""
        self.fill(lambda: len(self.buf) >= n + 2)
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def get(self, seq):
        """(subject, data) of the message at seq, or None when there is none."""
        req = json.dumps({"seq": seq}).encode()
        self.sock.sendall(b"PUB $JS.API.STREAM.MSG.GET.%s _INBOX.t %d\r\n%s\r\n" % (self.stream.encode(), len(req), req))
        while True:
            ln = self.line()
            if ln == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif ln.startswith(b"MSG "):
                reply = json.loads(self.exact(int(ln.split()[-1])))
                break
            elif ln.startswith(b"-ERR"):
                raise AssertionError(ln.decode())
        if "error" in reply:
            return None
        m = reply["message"]
        return m["subject"], base64.b64decode(m.get("data", ""))

    def event_records(self, first=1):
        """(seq, by_position) of every event record in the partition messages from seq
        first on: a message body is records, each a u32 length and an evrec whose event
        word (after the u64 arrival ms) has bit 31 set when its fields go by position."""
        out, seq = [], first
        while True:
            m = self.get(seq)
            if m is None:
                return out
            subject, data = m
            if ".p." in subject:
                off = 0
                while off < len(data):
                    n, = struct.unpack_from("<I", data, off)
                    word, = struct.unpack_from("<I", data, off + 4 + 8)
                    out.append((seq, bool(word & 0x80000000)))
                    off += 4 + n
            seq += 1

    def close(self):
        self.sock.close()


def metric(b, name):
    text = b.admin("GET", "/metrics")[2].decode()
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else None


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.nats = Nats().start()
        self.cluster = None

    def tearDown(self):
        if self.cluster:
            self.cluster.stop()
        self.nats.stop()

    def register_everywhere(self, c, via):
        st, body = c.nodes[via].register(PIPE)
        self.assertEqual(st, 200, body)
        version = body["registry_version"] if isinstance(body, dict) and "registry_version" in body else None
        # every node applies the registry record from the log
        for b in c.nodes.values():
            wait_for(lambda: json.loads(b.admin("GET", "/registry")[2]).get("node_count", 0) == 3,
                     what="registry on every node")
        return version

    def push_many(self, c, n, keys, ms, expected, via=None, rng=None):
        """n pushes through random nodes, alternately over HTTP and framed TCP (msgpack)."""
        rng = rng or random.Random(1)
        ids = list(c.nodes) if via is None else via
        tcp = {i: Conn(c.nodes[i].bound["server.tcp_bound"]) for i in ids}
        for i in range(n):
            k = rng.choice(keys)
            m = rng.choice(ms)
            node = rng.choice(ids)
            if i % 2:
                op, _, body = tcp[node].call(OP_PUSH, {"event": "E", "body": {"k": k, "m": m, "v": i}}, ct=2)
                st = 200 if op == OP_PUSH else op
            else:
                st, body = c.nodes[node].push("E", {"k": k, "m": m, "v": i})
            self.assertEqual(st, 200, body)
            self.assertGreater(body["ack_lsn"], 0)
            e = expected.setdefault(("ByKey", k), [0, 0])
            e[0] += 1
            e[1] += i
            expected.setdefault(("ByM", m), [0, 0])[0] += 1
        for conn in tcp.values():
            conn.close()

    def check_reads(self, b, expected):
        """Every entity read through node b right now has exactly the acknowledged count:
        a read after an ack sees it on any node (owned partitions catch up first, the
        others are forwarded to an owner)."""
        bad = []
        tcp = Conn(b.bound["server.tcp_bound"])
        for j, ((table, key), (n, vs)) in enumerate(sorted(expected.items())):
            if j % 2:                                   # OP_GET over framed TCP (msgpack)
                op, _, row = tcp.call(OP_GET, {"table": table, "key": key}, ct=2)
                st = 200 if op == OP_RESULT else op
            else:
                st, row = b.get(table, key)
            want = {"n": n, "vs": vs} if table == "ByKey" else {"mn": n}
            if st != 200 or row != want:
                bad.append((table, key, want, st, row))
        tcp.close()
        # one batch_get with every entity (entries of partitions owned elsewhere are
        # answered by their owners), plus an unknown table and a bad key arity
        items = sorted(expected.items())
        reqs = [{"table": t, "key": k} for (t, k), _ in items]
        reqs += [{"table": "Nope", "key": "x"}, {"table": "ByKey", "key": "a|b"}]
        st, body = b.call("POST", "/batch_get", {"requests": reqs})
        self.assertEqual(st, 200, body)
        results = body["results"]
        self.assertEqual(len(results), len(reqs))
        for ((table, key), (n, vs)), row in zip(items, results):
            want = {"n": n, "vs": vs} if table == "ByKey" else {"mn": n}
            if row != want:
                bad.append(("batch_get", table, key, want, row))
        self.assertEqual(results[-2]["error"]["code"], "unknown_table")
        self.assertEqual(results[-1]["error"]["code"], "key_parse_failure")
        self.assertEqual(bad, [], "rows differ from what was acknowledged (first 5): %r" % bad[:5])

    def test_pushes_through_any_node_readable_everywhere(self):
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2).start_all()
        self.register_everywhere(c, "n2")
        expected = {}
        self.push_many(c, 300, ["u%d" % i for i in range(40)], ["m%d" % i for i in range(7)], expected)
        for b in c.nodes.values():
            self.check_reads(b, expected)
        # a push is split by partition: several partitions hold messages, every node applied
        for b in c.nodes.values():
            self.assertGreater(metric(b, "beava_cluster_applied_msgs_total"), 0)
            self.assertEqual(metric(b, "beava_cluster_apply_errors_total"), 0)
        acked = sum(metric(b, "beava_cluster_pushes_acked_total") for b in c.nodes.values())
        self.assertEqual(acked, 300)
        self.assertGreater(sum(metric(b, "beava_cluster_publish_seconds_count") for b in c.nodes.values()), 0)
        # with 2 owners of 3, each node forwarded some reads and served some for its peers
        for b in c.nodes.values():
            self.assertGreater(metric(b, "beava_cluster_reads_forwarded_total"), 0)
            self.assertGreater(metric(b, "beava_cluster_reads_served_for_peers_total"), 0)
            self.assertGreater(metric(b, "beava_cluster_reads_local_total"), 0)
        # admin GET /cluster: members, every partition's 2 owners, no lag once caught up
        infos = {i: json.loads(b.admin("GET", "/cluster")[2]) for i, b in c.nodes.items()}
        owners = None
        for i, info in infos.items():
            self.assertEqual(info["node"], i)
            self.assertEqual(info["nodes"], ["n1", "n2", "n3"])
            self.assertTrue(info["caught_up"])
            self.assertEqual(len(info["ownership"]), 8)
            mine = [o for o in info["ownership"] if i in o["owners"]]
            self.assertTrue(all(len(o["owners"]) == 2 for o in info["ownership"]))
            self.assertTrue(all(o["lag"] == 0 and o["applied"] == o["stream"] for o in mine), mine)
            self.assertEqual(info["registry"]["applied"], info["registry"]["stream"])
            got = [o["owners"] for o in info["ownership"]]
            self.assertTrue(owners is None or owners == got)     # every node computes the same map
            owners = got
        self.assertGreater(sum(o["stream"] > 0 for o in infos["n1"]["ownership"] if "stream" in o), 0)
        # an unknown table is answered like a single node answers it, whoever owns it
        st, body = c.nodes["n1"].get("Nope", "x")
        self.assertEqual(st, 404, body)

    def test_legacy_reads_forwarded_to_owners(self):
        """GET /get/<name>/<key>, OP_MGET and OP_GET_MULTI on any node answer from the
        partitions' owners: with one owner per partition most keys live elsewhere."""
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=1).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys, ms = ["u%d" % i for i in range(16)], ["m%d" % i for i in range(5)]
        self.push_many(c, 80, keys, ms, expected, via=["n1"])
        for i, b in c.nodes.items():
            before = metric(b, "beava_cluster_reads_forwarded_total")
            for k in keys:
                n, vs = expected[("ByKey", k)]
                self.assertEqual(b.call("GET", "/get/ByKey/" + k), (200, {"n": n, "vs": vs}), (i, k))
                self.assertEqual(b.call("GET", "/get/vs/" + k), (200, {"value": vs}), (i, k))
            for m in ms:
                self.assertEqual(b.call("GET", "/get/mn/" + m), (200, {"value": expected[("ByM", m)][0]}), (i, m))
            for path in ("/get/n/nobody", "/get/ByKey/nobody"):
                st, body = b.call("GET", path)
                self.assertEqual((st, body["error"]["code"]), (404, "key_not_found"), (i, path))
            st, body = b.call("GET", "/get/nofeature/u0")
            self.assertEqual((st, body["error"]["code"]), (404, "feature_not_found"))
            tcp = Conn(b.bound["server.tcp_bound"])
            op, _, body = tcp.call(0x0021, {"feature": "vs", "keys": keys + ["nobody"]})
            self.assertEqual((op, body), (OP_RESULT, {k: {"vs": expected[("ByKey", k)][1]} for k in keys}), i)
            want = {k: {"n": expected[("ByKey", k)][0], "vs": expected[("ByKey", k)][1]} for k in keys}
            want.update({m: {"mn": expected[("ByM", m)][0]} for m in ms})
            op, _, body = tcp.call(0x0022, {"keys": keys + ms + ["nobody"], "features": ["mn", "n", "vs"]}, ct=2)
            self.assertEqual((op, body), (OP_RESULT, want), i)
            tcp.close()
            self.assertGreater(metric(b, "beava_cluster_reads_forwarded_total"), before, i)

    def test_partition_lag_in_metrics(self):
        """/metrics has the applied sequence, the stream's last and the lag of exactly the
        partitions this node owns (as GET /cluster lists them)."""
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2).start_all()
        self.register_everywhere(c, "n1")
        self.push_many(c, 60, ["u%d" % i for i in range(20)], ["m%d" % i for i in range(5)], {}, via=["n1"])
        for i, b in c.nodes.items():
            info = json.loads(b.admin("GET", "/cluster")[2])
            mine = {o["partition"]: o for o in info["ownership"] if i in o["owners"]}
            text = b.admin("GET", "/metrics")[2].decode()

            def series(name):
                return {int(p): int(v) for p, v in
                        re.findall(r'^%s\{partition="(\d+)"\} (\d+)$' % name, text, re.M)}
            lag = series("beava_cluster_partition_lag")
            applied = series("beava_cluster_partition_applied_seq")
            stream = series("beava_cluster_partition_stream_seq")
            self.assertEqual(sorted(lag), sorted(mine), i)
            self.assertEqual(sorted(stream), sorted(mine), i)
            for p in mine:
                self.assertEqual(lag[p], stream[p] - applied[p], (i, p))
                self.assertGreaterEqual(stream[p], mine[p]["stream"], (i, p))
            self.assertGreater(sum(stream.values()), 0, i)
            # every push was acknowledged and read-after-ack holds: nothing is left to apply
            wait_for(lambda: all(o["lag"] == 0 for o in json.loads(b.admin("GET", "/cluster")[2])["ownership"]
                                 if i in o["owners"]), what="lag 0")
            text = b.admin("GET", "/metrics")[2].decode()
            self.assertEqual(set(series("beava_cluster_partition_lag").values()), {0}, i)

    def test_push_right_after_a_register_on_another_node(self):
        """A push (HTTP and TCP) or a get on another node right after n1 registered a new
        event and table is not 404: that node catches up with the registry subject
        (bounded by read_wait_ms) before answering. To make the window certain, n2 talks to
        NATS through a proxy that holds what NATS sends n2 until 0.3 s after the push."""
        proxy = GateProxy(self.nats.port)
        self.addCleanup(proxy.close)
        self.cluster = c = Cluster(self.nats, partitions=4, replicas=3)
        env = c.env
        c.env = lambda nid: dict(env(nid), **({"BEAVA_CLUSTER_NATS_URL": proxy.url} if nid == "n2" else {}))
        c.start_all()
        self.register_everywhere(c, "n1")
        n2, n3 = c.nodes["n2"], c.nodes["n3"]
        tcp = Conn(n3.bound["server.tcp_bound"])
        nodes = list(PIPE["nodes"])
        for r in range(4):
            ev, tab = "F%d" % r, "ByF%d" % r
            nodes += [{"kind": "event", "name": ev, "schema": {"fields": {"k": "str"}}},
                      {"kind": "derivation", "name": tab, "output_kind": "table", "upstreams": [ev],
                       "ops": [{"op": "group_by", "keys": ["k"], "agg": {"c%d" % r: {"op": "count"}}}],
                       "table_primary_key": ["k"]}]
            held = r % 2 == 1
            if held:
                proxy.hold()
            st, body = c.nodes["n1"].register({"nodes": nodes})
            self.assertEqual(st, 200, body)
            if held:
                t = threading.Timer(0.3, proxy.release)
                t.start()
            st, body = n2.push(ev, {"k": "a"})
            if held:
                t.join()
            self.assertEqual(st, 200, (r, body))
            op, _, body = tcp.call(OP_PUSH, {"event": ev, "body": {"k": "b"}}, ct=2)
            self.assertEqual(op, OP_PUSH, (r, body))
            op, _, body = tcp.call(OP_PUSH, {"event": ev + "x", "body": {"k": "a"}}, ct=2)
            self.assertEqual(body["error"]["code"], "event_not_found")    # unknown stays 404
            for b in (n2, n3):
                self.assertEqual(b.get(tab, "a"), (200, {"c%d" % r: 1}), r)
        tcp.close()

    def test_registry_catch_up_does_not_hold_the_io_thread(self):
        """A push naming an event n2 does not know waits for n2 to catch up with the
        registry (a JetStream request) off the I/O thread: with one HTTP and one TCP I/O
        thread, and NATS's answers to n2 held by a proxy, pings on other connections are
        answered meanwhile; the push is answered 404 once NATS answers."""
        proxy = GateProxy(self.nats.port)
        self.addCleanup(proxy.close)
        self.cluster = c = Cluster(self.nats, partitions=4, replicas=3,
                                   extra_env={"BEAVA_HTTP_THREADS": "1", "BEAVA_IO_THREADS": "1"})
        env = c.env
        c.env = lambda nid: dict(env(nid), **({"BEAVA_CLUSTER_NATS_URL": proxy.url} if nid == "n2" else {}))
        c.start_all()
        self.register_everywhere(c, "n1")
        n2 = c.nodes["n2"]
        done = {}

        def unknown_push():
            host, port = n2.bound["server.http_bound"].rsplit(":", 1)
            h = http.client.HTTPConnection(host, int(port), timeout=60)
            h.request("POST", "/push", json.dumps({"event": "Nope", "data": {"k": "a"}}))
            r = h.getresponse()
            done["push"] = (r.status, json.loads(r.read()))
            h.close()
        proxy.hold()
        t = threading.Thread(target=unknown_push)
        t.start()
        time.sleep(0.3)                       # the push is in: its catch-up waits for NATS
        tcp = Conn(n2.bound["server.tcp_bound"])
        for _ in range(3):
            st, body = n2.call("POST", "/ping")
            self.assertEqual(st, 200, body)
            op, _, body = tcp.call(0x0000, {})
            self.assertEqual(op, 0x0000, body)
        self.assertNotIn("push", done)        # still waiting, and the pings were answered
        proxy.release()
        t.join()
        tcp.close()
        st, body = done["push"]
        self.assertEqual((st, body["error"]["code"]), (404, "event_not_found"), body)
        self.assertGreaterEqual(metric(n2, "beava_cluster_catch_up_batches_total"), 1)

    def test_kill_and_restart_loses_nothing_acknowledged(self):
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["u%d" % i for i in range(30)]
        ms = ["m%d" % i for i in range(5)]
        self.push_many(c, 150, keys, ms, expected, rng=random.Random(2))
        # SIGKILL n3 while pushes through the others go on: they continue, all acknowledged
        errors = []

        def pusher():
            try:
                self.push_many(c, 300, keys, ms, expected, via=["n1", "n2"], rng=random.Random(3))
            except Exception as e:          # reported below, in the test's thread
                errors.append(e)
        t = threading.Thread(target=pusher)
        t.start()
        c.kill("n3")
        t.join()
        self.assertEqual(errors, [])
        # its partitions are read from their other owner meanwhile
        self.check_reads(c.nodes["n1"], expected)
        b = c.start("n3")               # /ready waits until its partitions caught up
        self.check_reads(b, expected)
        for other in ("n1", "n2"):
            self.check_reads(c.nodes[other], expected)

    def test_snapshot_then_restart_resumes_from_recorded_sequence(self):
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=3).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["s%d" % i for i in range(25)]
        ms = ["x%d" % i for i in range(4)]
        self.push_many(c, 120, keys, ms, expected, rng=random.Random(4))
        self.check_reads(c.nodes["n2"], expected)
        applied_before = metric(c.nodes["n2"], "beava_cluster_applied_msgs_total")
        st, _, body = c.nodes["n2"].raw("POST", "/snapshot", which="admin")
        self.assertEqual(st, 200, body)
        snap = json.loads(body)
        self.assertTrue(any(v > 0 for v in snap["applied"].values()), snap)
        self.push_many(c, 80, keys, ms, expected, via=["n1", "n3"], rng=random.Random(5))
        c.kill("n2")
        self.push_many(c, 50, keys, ms, expected, via=["n1", "n3"], rng=random.Random(6))
        b = c.start("n2")
        out = b.output()
        self.assertIn("cluster.recovered", out)          # the snapshot was loaded ...
        # ... and the stream resumed after its sequences: nothing counted twice, nothing lost
        self.check_reads(b, expected)
        self.check_reads(c.nodes["n1"], expected)
        # every node owns every partition here: n1 applied every message; n2 after its
        # restart exactly those after its snapshot
        total = metric(c.nodes["n1"], "beava_cluster_applied_msgs_total")
        self.assertEqual(metric(b, "beava_cluster_applied_msgs_total"), total - applied_before)

    def test_snapshot_during_pushes_then_restart_exact(self):
        """Cluster snapshots are written by a fork()ed child while pushes go on: each one
        taken in the middle of pushes holds exactly the state of the sequences it records,
        so a node restarted from it (and the stream after) counts every push once."""
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=3).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["f%d" % i for i in range(30)]
        errors = []

        def pusher():
            try:
                self.push_many(c, 400, keys, ["y1", "y2"], expected, via=["n1", "n3"], rng=random.Random(12))
            except Exception as e:          # reported below, in the test's thread
                errors.append(e)
        t = threading.Thread(target=pusher)
        t.start()
        snaps = []
        while t.is_alive() and len(snaps) < 5:
            st, _, body = c.nodes["n2"].raw("POST", "/snapshot", which="admin")
            self.assertEqual(st, 200, body)
            snaps.append(json.loads(body)["snapshot"])
        t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(snaps), 1)
        self.assertEqual(metric(c.nodes["n2"], "beava_cluster_snapshots_total"), len(snaps))
        self.assertEqual(metric(c.nodes["n2"], "beava_cluster_snapshot_failures_total"), 0)
        c.kill("n2")
        b = c.start("n2")
        self.assertIn("cluster.recovered", b.output())
        self.check_reads(b, expected)

    def test_registry_goes_through_the_log(self):
        self.cluster = c = Cluster(self.nats, partitions=4, replicas=2).start_all()
        self.register_everywhere(c, "n3")
        # concurrent conflicting registers on two nodes (each replaces the pipeline with
        # its own extra table): each is applied everywhere or refused 409, never both
        # applied on a stale base; every node ends with the same registry
        statuses = []
        for rnd in range(6):
            results = {}

            def reg(node, name):
                extra = {"kind": "derivation", "name": name, "output_kind": "table", "upstreams": ["E"],
                         "ops": [{"op": "group_by", "keys": ["k"], "agg": {name.lower(): {"op": "count"}}}],
                         "table_primary_key": ["k"]}
                body = {"nodes": PIPE["nodes"] + [extra]}
                results[node] = c.nodes[node].register(body, force=True)

            ts = [threading.Thread(target=reg, args=(n, "T%d%s" % (rnd, n))) for n in ("n1", "n2")]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for node, (st, body) in results.items():
                self.assertIn(st, (200, 409), body)
                if st == 409:
                    self.assertEqual(body["error"]["code"], "registry_conflict", body)
            statuses += [st for st, _ in results.values()]
            self.assertIn(200, [st for st, _ in results.values()])

            def same_registry():
                infos = [json.loads(b.admin("GET", "/registry")[2]) for b in c.nodes.values()]
                return all(i == infos[0] for i in infos) and infos[0]
            info = wait_for(same_registry, what="the same registry on every node")
            self.assertEqual(info["node_count"], 4)      # E, ByKey, ByM and the winner's table
        conflicts = sum(metric(b, "beava_cluster_reg_conflicts_total") for b in c.nodes.values())
        self.assertEqual(conflicts, statuses.count(409))
        # pushes validated against the new registry apply everywhere
        expected = {}
        self.push_many(c, 60, ["r%d" % i for i in range(9)], ["q1", "q2"], expected, rng=random.Random(7))
        for b in c.nodes.values():
            self.check_reads(b, expected)

    def test_dedupe_by_event_key_across_nodes(self):
        """The same event key pushed through several nodes (HTTP and TCP, one after the
        other and at once) is applied once by every owner, as one node applies it once;
        past the event's window it counts again. Each partition decides in its log order."""
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2).start_all()
        pipe = {"nodes": [
            {"kind": "event", "name": "D", "schema": {"fields": {"id": "str", "k": "str", "m": "str"}},
             "dedupe_key": "id", "dedupe_window_ms": 600000},
            {"kind": "event", "name": "S", "schema": {"fields": {"id": "str", "k": "str"}},
             "dedupe_key": "id", "dedupe_window_ms": 50},
            {"kind": "derivation", "name": "DK", "output_kind": "table", "upstreams": ["D"],
             "ops": [{"op": "group_by", "keys": ["k"], "agg": {"dn": {"op": "count"}}}], "table_primary_key": ["k"]},
            {"kind": "derivation", "name": "DM", "output_kind": "table", "upstreams": ["D"],
             "ops": [{"op": "group_by", "keys": ["m"], "agg": {"dmn": {"op": "count"}}}], "table_primary_key": ["m"]},
            {"kind": "derivation", "name": "SK", "output_kind": "table", "upstreams": ["S"],
             "ops": [{"op": "group_by", "keys": ["k"], "agg": {"sn": {"op": "count"}}}], "table_primary_key": ["k"]},
        ]}
        st, body = c.nodes["n1"].register(pipe)
        self.assertEqual(st, 200, body)
        for b in c.nodes.values():
            wait_for(lambda: json.loads(b.admin("GET", "/registry")[2]).get("node_count", 0) == 5, what="registry")
        ids = list(c.nodes)
        tcp = {i: Conn(c.nodes[i].bound["server.tcp_bound"]) for i in ids}
        rng = random.Random(11)
        events = [{"id": "e%d" % i, "k": "k%d" % rng.randrange(12), "m": "m%d" % rng.randrange(5)} for i in range(60)]

        def push(node, ev, via_tcp):
            if via_tcp:
                conn = Conn(c.nodes[node].bound["server.tcp_bound"])
                op, _, body = conn.call(OP_PUSH, {"event": "D", "body": ev}, ct=2)
                conn.close()
                return 200 if op == OP_PUSH else op, body
            return c.nodes[node].push("D", ev)
        # one after the other: every event through every node, alternately HTTP and TCP
        for j, ev in enumerate(events[:30]):
            for r, node in enumerate(ids):
                if (j + r) % 2:
                    op, _, body = tcp[node].call(OP_PUSH, {"event": "D", "body": ev}, ct=2)
                    self.assertEqual(op, OP_PUSH, body)
                else:
                    st, body = c.nodes[node].push("D", ev)
                    self.assertEqual(st, 200, body)
        # at once: the same event through the three nodes concurrently
        for j, ev in enumerate(events[30:]):
            res = []
            ts = [threading.Thread(target=lambda n=n, r=r: res.append(push(n, ev, (j + r) % 2 == 1)))
                  for r, n in enumerate(ids)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual([st for st, _ in res], [200] * 3, res)
        for t in tcp.values():
            t.close()
        want = {}
        for ev in events:                                # once each, as one node counts them
            want[("DK", ev["k"])] = want.get(("DK", ev["k"]), 0) + 1
            want[("DM", ev["m"])] = want.get(("DM", ev["m"]), 0) + 1
        for i, b in c.nodes.items():
            for (t, k), n in want.items():
                self.assertEqual(b.get(t, k), (200, {"dn" if t == "DK" else "dmn": n}), (i, t, k))
        self.assertGreater(sum(metric(b, "beava_events_replayed_total") or 0 for b in c.nodes.values()), 0)
        # a short window: the same key again after it counts again (through another node)
        self.assertEqual(c.nodes["n1"].push("S", {"id": "s1", "k": "a"})[0], 200)
        self.assertEqual(c.nodes["n2"].push("S", {"id": "s1", "k": "a"})[0], 200)     # within 50 ms: or not
        time.sleep(0.3)
        self.assertEqual(c.nodes["n3"].push("S", {"id": "s1", "k": "a"})[0], 200)     # past it: counts
        for b in c.nodes.values():
            st, row = b.get("SK", "a")
            self.assertEqual(st, 200, row)
            self.assertIn(row["sn"], (2, 3), row)
        # a node restarted from its snapshot keeps deciding alike (the cache is in it)
        st, _, body = c.nodes["n2"].raw("POST", "/snapshot", which="admin")
        self.assertEqual(st, 200, body)
        c.kill("n2")
        for ev in events[:10]:
            self.assertEqual(c.nodes["n1"].push("D", ev)[0], 200)
        b = c.start("n2")
        for node in ("n1", "n2", "n3"):
            for (t, k), n in want.items():
                self.assertEqual(c.nodes[node].get(t, k), (200, {"dn" if t == "DK" else "dmn": n}), (node, t, k))

    def test_reset_ordered_with_the_events_before_it(self):
        """A reset is applied by every owner after every event acknowledged before it and
        before every event pushed after it: events pushed just before a reset (owners still
        applying them) never reappear once the pipeline is registered again."""
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2,
                                   extra_env={"BEAVA_TEST_MODE": "1"}).start_all()
        ids = list(c.nodes)
        rng = random.Random(21)
        for rnd in range(3):
            self.register_everywhere(c, ids[rnd % 3])
            before = [("E", {"k": "old%d" % rng.randrange(200), "m": "old", "v": 1}) for _ in range(6000)]
            for k, start in enumerate(range(0, len(before), 1000)):   # through every node, no waiting
                self.assertEqual(rejected(push_many(c.nodes[ids[k % 3]], before[start:start + 1000])), [])
            st, body = c.nodes[ids[(rnd + 1) % 3]].call("POST", "/reset")
            self.assertEqual((st, body.get("reset")), (200, True), body)
            st, body = c.nodes[ids[(rnd + 2) % 3]].register(PIPE)
            self.assertEqual(st, 200, body)
            for b in c.nodes.values():
                wait_for(lambda: json.loads(b.admin("GET", "/registry")[2]).get("node_count", 0) == 3,
                         what="registry on every node")
            after = {}
            self.push_many(c, 40, ["new%d" % i for i in range(8)], ["new"], after, rng=rng)
            for i, b in c.nodes.items():
                st, row = b.get("ByM", "old")
                self.assertEqual(st, 200, row)
                self.assertIn(row, ({}, {"mn": None}), (rnd, i))
                got = batch_get(b, [("ByKey", "old%d" % j) for j in range(200)])
                self.assertEqual([g for g in got if g.get("n") is not None], [], (rnd, i))
                self.check_reads(b, after)
        for b in c.nodes.values():
            self.assertEqual(metric(b, "beava_cluster_apply_errors_total"), 0)

    def test_record_format_by_name_until_raised(self):
        """cluster.record_format 1 (the default) publishes every event record by field name,
        the form builds before WAL format 2 read, so a cluster can be rolled onto a new build
        node by node; raised to 2 on every node (a rolling restart), new records go by schema
        position, and every node applies the mixed stream: the same rows everywhere, before
        and after a restart that reads the whole stream again."""
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys, ms = ["u%d" % i for i in range(30)], ["m%d" % i for i in range(5)]
        self.push_many(c, 120, keys, ms, expected)
        rd = StreamReader(self.nats)
        try:
            recs = rd.event_records()
            self.assertGreaterEqual(len(recs), 120)     # a push touches one or two partitions
            self.assertEqual([r for r in recs if r[1]], [], "records by position under record_format 1")
            last = max(seq for seq, _ in recs)
            for i in list(c.ids):                       # the raise: one node at a time
                c.stop_one(i)
                c.extra_env["BEAVA_CLUSTER_RECORD_FORMAT"] = "2"
                c.start(i)
                c.extra_env.pop("BEAVA_CLUSTER_RECORD_FORMAT")
            c.extra_env["BEAVA_CLUSTER_RECORD_FORMAT"] = "2"
            self.push_many(c, 120, keys, ms, expected, rng=random.Random(2))
            newer = rd.event_records(last + 1)
            self.assertGreaterEqual(len(newer), 120)
            self.assertEqual([r for r in newer if not r[1]], [], "records by name under record_format 2")
        finally:
            rd.close()
        for b in c.nodes.values():
            self.check_reads(b, expected)
            self.assertEqual(metric(b, "beava_cluster_apply_errors_total"), 0)
        # a node that starts over from the stream alone reads both forms
        c.kill("n3")
        c.dirs["n3"].cleanup()
        c.dirs["n3"] = tempfile.TemporaryDirectory(prefix="beava-node-")
        b3 = c.start("n3")
        wait_for(lambda: b3.admin("GET", "/ready")[0] == 200, timeout=60, what="n3 ready")
        self.check_reads(b3, expected)
        self.assertEqual(metric(b3, "beava_cluster_apply_errors_total"), 0)

    def run_beava(self, env, timeout=30):
        full = dict(os.environ)
        full.update({"BEAVA_LISTEN_ADDR": "127.0.0.1:0", "BEAVA_ADMIN_ADDR": "127.0.0.1:0", "BEAVA_TCP_PORT": "0"})
        full.update(env)
        d = tempfile.TemporaryDirectory(prefix="beava-node-")
        try:
            p = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "--data-dir", d.name], env=full,
                               capture_output=True, timeout=timeout)
        finally:
            d.cleanup()
        return p.returncode, (p.stdout + p.stderr).decode()

    def test_misconfigured_nodes_refuse_to_start(self):
        base = {"BEAVA_CLUSTER_NATS_URL": self.nats.url, "BEAVA_CLUSTER_NODES": "n1,n2"}
        rc, out = self.run_beava(dict(base, BEAVA_CLUSTER_NODE_ID="n7"))
        self.assertNotEqual(rc, 0)
        self.assertIn("cluster.node_id 'n7' is not one of cluster.nodes", out)
        rc, out = self.run_beava(dict(base, BEAVA_CLUSTER_NODE_ID="n1", BEAVA_CLUSTER_RECORD_FORMAT="3"))
        self.assertNotEqual(rc, 0)
        self.assertIn("BEAVA_CLUSTER_RECORD_FORMAT: 3 is out of range [1, 2]", out)
        rc, out = self.run_beava(dict(base, BEAVA_CLUSTER_NODE_ID="n1", BEAVA_CLUSTER_NATS_URL="nats://127.0.0.1:1"))
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot connect to NATS at nats://127.0.0.1:1", out)
        # the stream remembers its partition count: a node configured otherwise refuses
        self.cluster = c = Cluster(self.nats, n=2, partitions=8, replicas=1)
        c.start("n1")
        rc, out = self.run_beava(dict(base, BEAVA_CLUSTER_NODE_ID="n2", BEAVA_CLUSTER_PARTITIONS="16"))
        self.assertNotEqual(rc, 0)
        self.assertIn("cluster.partitions is fixed when the cluster is created", out)

    def test_nats_server_killed_no_false_ack(self):
        self.cluster = c = Cluster(self.nats, partitions=4, replicas=2,
                                   extra_env={"BEAVA_CLUSTER_PUBLISH_TIMEOUT_MS": "300"}).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["z%d" % i for i in range(12)]
        self.push_many(c, 60, keys, ["w"], expected, rng=random.Random(8))
        self.nats.kill()                    # SIGKILL: the log is gone for a while
        maybe = {}                          # pushes answered 503: applied or not, never acked
        for i in range(5):
            k = keys[i]
            st, body = c.nodes["n%d" % (i % 3 + 1)].push("E", {"k": k, "m": "w", "v": 1000 + i})
            self.assertEqual(st, 503, body)
            self.assertEqual(body["error"]["code"], "cluster_unavailable", body)
            maybe[k] = maybe.get(k, 0) + 1
        self.nats.start()                   # same port, same store: the stream is back
        def pushed():
            st, body = c.nodes["n2"].push("E", {"k": "after", "m": "w", "v": 1})
            return st == 200
        wait_for(pushed, 60, "pushes accepted again")
        expected[("ByKey", "after")] = [1, 1]
        expected[("ByM", "w")][0] += 1
        self.push_many(c, 30, keys, ["w"], expected, rng=random.Random(9))
        # every acknowledged push is there; a 503 one at most once
        for b in c.nodes.values():
            for (table, key), (n, vs) in expected.items():
                if table != "ByKey" or key == "after":
                    continue
                st, row = b.get(table, key)
                self.assertEqual(st, 200, row)
                self.assertGreaterEqual(row["n"], n)
                self.assertLessEqual(row["n"], n + maybe.get(key, 0))
            self.assertGreaterEqual(b.get("ByKey", "after")[1]["n"], 1)

    def test_fraud_team_same_rows_as_a_single_node(self):
        """The fraud-team pipeline fed to one node and, in the same order, through the
        three nodes of a cluster: every feature that depends only on the events and their
        order (not on arrival or query time) is identical, read from any node."""
        def make():
            self.cluster = Cluster(self.nats, partitions=8, replicas=2).start_all()
            return self.cluster
        fraud_team_check(self, make)


def fraud_team_check(self, make_cluster):
    """The fraud-team comparison of a single node with the cluster make_cluster() starts
    (test_fraud_team_same_rows_as_a_single_node; test_cluster_nats3 uses it too)."""
    with open(shared_path("data", "bench", "fraud-team.json")) as f:
        cfg = json.load(f)
    rng = random.Random(2026)
    events = []
    for i in range(FRAUD_EVENTS):
        body = {cfg["key_field"]: "u%03d" % rng.randrange(FRAUD_USERS), "event_time": i}
        for fname, ftype in cfg["extra_fields"].items():
            if ftype == "f64":
                body[fname] = rng.random() * 1000.0
            elif ftype == "i64":
                body[fname] = rng.randrange(2)
            else:
                body[fname] = "s%d" % rng.randrange(FRAUD_STRS)
        events.append(("Txn", body))
    tables = {}
    for n in cfg["register"]["nodes"]:
        if n["kind"] == "derivation" and n["upstreams"] == ["Txn"]:
            gb = [o for o in n["ops"] if o["op"] == "group_by"][0]
            tables[n["name"]] = (gb["keys"][0], {f for f, a in gb["agg"].items() if order_only(a)})
    with Beava(test_mode=True) as single:
        self.assertEqual(single.register(cfg["register"])[0], 200)
        pushed = push_many(single, events)
        self.assertEqual(rejected(pushed), [])
        events = pushed.applied(events)     # the single node's order, fed to the cluster
        c = make_cluster()
        st, body = c.nodes["n1"].register(cfg["register"])
        self.assertEqual(st, 200, body)
        for b in c.nodes.values():
            wait_for(lambda: json.loads(b.admin("GET", "/registry")[2]).get("node_count", 0) ==
                     len(cfg["register"]["nodes"]), what="registry on every node")
        ids = list(c.nodes)
        for k, start in enumerate(range(0, len(events), 250)):   # batches through every node
            chunk = events[start:start + 250]
            self.assertEqual(rejected(push_many(c.nodes[ids[k % 3]], chunk)), [])
        reqs = []
        for t, (keyf, _) in sorted(tables.items()):
            reqs += [(t, k) for k in sorted({e[keyf] for _, e in events})[:40]]
        want = batch_get(single, reqs)
        compared = 0
        for node in ids:
            got = batch_get(c.nodes[node], reqs)
            for (t, k), w, g in zip(reqs, want, got):
                self.assertNotIn("error", g, (node, t, k, g))
                for f in tables[t][1]:
                    self.assertIn(f, w, (t, k, f))
                    self.assertEqual(g.get(f), w[f], (node, t, k, f))
                    compared += w[f] is not None
        self.assertGreater(compared, 3 * len(reqs) * 3)     # values, not just nulls


FRAUD_EVENTS = 3000
FRAUD_USERS = 300
FRAUD_STRS = 200
# ops whose value depends only on the events and their order, plus windows long enough
# that a test run is inside them (no arrival-time or query-time dependence)
ORDER_ONLY_OPS = {"count", "sum", "max", "min", "mean", "var", "std", "quantile", "n_unique", "top_k", "entropy",
                  "bloom_member", "first", "last", "first_n", "last_n", "lag", "delta_from_prev", "streak",
                  "max_streak", "negative_streak", "most_recent_n", "geo_distance", "geo_spread",
                  "distance_from_home", "has_seen", "z_score"}


def order_only(agg):
    window = (agg.get("params") or {}).get("window")
    return agg["op"] in ORDER_ONLY_OPS and window not in ("5m", "10m")


if __name__ == "__main__":
    main()
