"""beava cluster membership (README "Cluster", "Adding and removing a node"): the member
list lives in the log; POST /cluster/members adds or removes a node; the nodes that gain
partitions build them (a peer's snapshot over the admin port, then the stream) before the
ownership switches, the nodes that lost some drop them after. A node whose data dir was
wiped rebuilds from a peer's snapshot when the stream no longer holds the beginning, and
/ready says why while no peer can serve it. Real nats-server, real beava nodes.

nats-server must be installed (ci/install-deps installs it): without it this test fails,
it never skips."""
import http.client
import http.server
import json
import socket
import os
import random
import shutil
import subprocess
import threading
import time
import unittest

from harness import BEAVA_BIN, main
import test_cluster
from test_cluster import Cluster, Nats, metric, wait_for

# Reads during a membership change: forwarded to the current epoch's owners, answered
# after they caught up to the read (README "Adding and removing a node": no error).
READ_ERRORS_ALLOWED = 0


def info(b):
    return json.loads(b.admin("GET", "/cluster")[2])


def members(b, body):
    st, _, data = b.raw("POST", "/cluster/members", body, {"Content-Type": "application/json"}, which="admin")
    try:
        return st, json.loads(data)
    except ValueError:
        return st, data


def nats_publish(port, subject, payload):
    """Publish on a JetStream-captured subject over the raw NATS protocol and wait for the
    stream's acknowledgement (no NATS client library needed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    f.readline()                                            # INFO
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.t 1\r\nPUB %s _INBOX.t %d\r\n%s\r\n'
              % (subject.encode(), len(payload), payload))
    while True:
        line = f.readline()
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        elif line.startswith(b"MSG"):
            ack = f.read(int(line.split()[-1]) + 2)
            assert b'"seq"' in ack, ack
            break
        elif not line or line.startswith(b"-ERR"):
            raise AssertionError("NATS publish failed: %r" % line)
    s.close()


class FakePeer:
    """An HTTP server posing as a peer's admin port: its partition snapshots are corrupt
    (mode "crc") or larger than the cap (mode "big")."""

    def __init__(self):
        peer = self
        self.mode = "crc"
        self.hits = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                peer.hits += 1
                if peer.mode == "crc":
                    body = b"BVCLPS01" + bytes(range(256)) * 4      # a valid magic, a wrong CRC
                else:
                    body = b"BVCLPS01" + b"\0" * (3 << 20)        # 3 MiB, over a 1 MiB cap
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass                                         # the reader gave up: expected

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Client:
    """A writer and reader on its own connections (the harness' are not thread-safe):
    each push is followed by a get of the same entity on a random node, which must show
    exactly what was acknowledged so far."""

    def __init__(self, nodes, keys, expected, rng):
        self.addrs = {i: b.bound["server.http_bound"] for i, b in nodes.items()}
        self.keys, self.expected, self.rng = keys, expected, rng
        self.conns = {}
        self.stop = threading.Event()
        self.errors = []
        self.ops = 0
        self.lock = threading.Lock()

    def call(self, node, path, body):
        c = self.conns.get(node)
        if c is None:
            host, port = self.addrs[node].rsplit(":", 1)
            c = self.conns[node] = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read())

    def run(self):
        i = 0
        try:
            while not self.stop.is_set():
                k = self.rng.choice(self.keys)
                ids = sorted(self.addrs)
                st, body = self.call(self.rng.choice(ids), "/push", {"event": "E", "data": {"k": k, "m": "c", "v": i}})
                if st != 200:
                    self.errors.append(("push", k, st, body))
                    continue
                with self.lock:
                    e = self.expected.setdefault(("ByKey", k), [0, 0])
                    e[0] += 1
                    e[1] += i
                    self.expected.setdefault(("ByM", "c"), [0, 0])[0] += 1
                    want = {"n": e[0], "vs": e[1]}
                node = self.rng.choice(ids)
                st, row = self.call(node, "/get", {"table": "ByKey", "key": k})
                if st != 200 or row != want:
                    self.errors.append(("get", node, k, want, st, row))
                i += 1
                self.ops += 1
        except Exception as e:          # reported in the test's thread
            self.errors.append(("exception", repr(e)))
        for c in self.conns.values():
            c.close()


class MembersTest(unittest.TestCase):
    # test_cluster's fixtures and checks (not its tests)
    setUp = test_cluster.ClusterTest.setUp
    tearDown = test_cluster.ClusterTest.tearDown
    register_everywhere = test_cluster.ClusterTest.register_everywhere
    push_many = test_cluster.ClusterTest.push_many
    check_reads = test_cluster.ClusterTest.check_reads

    def start_extra(self, c, node_id, seed):
        """Start a node that is not in the member list yet (its config lists itself: the
        log decides)."""
        import tempfile
        c.dirs[node_id] = tempfile.TemporaryDirectory(prefix="beava-node-")
        env = c.env
        c.env = lambda nid: dict(env(nid), **({"BEAVA_CLUSTER_NODES": ",".join(seed)} if nid == node_id else {}))
        return c.start(node_id)

    def wait_epoch(self, c, epoch, nodes):
        for i, b in c.nodes.items():
            wait_for(lambda: (lambda x: x["epoch"] == epoch and x["members"]["next"] is None and
                              x["nodes"] == nodes)(info(b)), 60, "epoch %d on %s" % (epoch, i))

    def test_add_a_node_while_reading_and_writing(self):
        fast = {"BEAVA_CLUSTER_READ_WAIT_MS": "1500", "BEAVA_CLUSTER_PUBLISH_TIMEOUT_MS": "1000"}
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2, extra_env=fast).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["a%d" % i for i in range(30)]
        self.push_many(c, 150, keys, ["m1", "m2", "m3"], expected, rng=random.Random(11))
        n4 = self.start_extra(c, "n4", ["n1", "n2", "n3", "n4"])
        before = info(n4)
        self.assertEqual(before["nodes"], ["n1", "n2", "n3"])         # the log wins over its config
        self.assertEqual(before["applying"], [])                      # not a member: owns nothing yet
        self.assertTrue(before["caught_up"])
        # every node advertised its admin and data addresses
        addrs = info(c.nodes["n1"])["addresses"]
        for i in ("n1", "n2", "n3"):
            self.assertEqual(addrs[i]["admin"], c.nodes[i].bound["server.admin_bound"])
            self.assertEqual(addrs[i]["data"], c.nodes[i].bound["server.http_bound"])
        client = Client(c.nodes, keys, expected, random.Random(12))
        t = threading.Thread(target=client.run)
        t.start()
        try:
            wait_for(lambda: client.ops > 30, 60, "client running")
            st, body = members(c.nodes["n2"], {"add": "n4"})
            self.assertEqual(st, 200, body)
            self.assertEqual((body["epoch"], body["nodes"], body["next"]), (1, ["n1", "n2", "n3"], ["n1", "n2", "n3", "n4"]))
            self.wait_epoch(c, 2, ["n1", "n2", "n3", "n4"])
            ops = client.ops
            wait_for(lambda: client.ops > ops + 30, 60, "client running after the switch")
        finally:
            client.stop.set()
            t.join()
        self.assertLessEqual(len(client.errors), READ_ERRORS_ALLOWED, client.errors[:5])
        self.assertGreater(client.ops, 60)
        # n4 built what it gained from its peers' snapshots, then the stream
        self.assertGreater(metric(n4, "beava_cluster_peer_snapshots_fetched_total"), 0)
        self.assertIn("cluster.peer_snapshot", n4.output())
        mine = [o["partition"] for o in info(n4)["ownership"] if "n4" in o["owners"]]
        self.assertGreater(len(mine), 0)
        self.assertEqual(info(n4)["applying"], mine)
        self.assertEqual(sum(metric(b, "beava_cluster_peer_snapshots_served_total") for b in c.nodes.values()),
                         sum(metric(b, "beava_cluster_peer_snapshots_fetched_total") for b in c.nodes.values()))
        # exact counts on every node, old and new
        for b in c.nodes.values():
            self.check_reads(b, expected)
        # the old owners drop what they lost (after read_wait_ms + publish_timeout_ms)
        for i in ("n1", "n2", "n3"):
            b = c.nodes[i]
            wait_for(lambda: info(b)["applying"] == [o["partition"] for o in info(b)["ownership"] if i in o["owners"]],
                     30, "%s applies only what it owns" % i)
        self.assertGreater(sum(metric(c.nodes[i], "beava_cluster_partitions_dropped_total") for i in ("n1", "n2", "n3")), 0)
        # pushes and reads after the drop: still exact everywhere
        self.push_many(c, 60, keys, ["m1"], expected, rng=random.Random(13))
        for b in c.nodes.values():
            self.check_reads(b, expected)

    def test_remove_a_node(self):
        fast = {"BEAVA_CLUSTER_READ_WAIT_MS": "1500", "BEAVA_CLUSTER_PUBLISH_TIMEOUT_MS": "1000"}
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2, extra_env=fast).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["r%d" % i for i in range(30)]
        self.push_many(c, 150, keys, ["q1", "q2"], expected, rng=random.Random(21))
        owned_by_n2 = len(info(c.nodes["n2"])["applying"])
        self.assertGreater(owned_by_n2, 0)
        p = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "members", "remove", "n9", "--admin-addr",
                            c.nodes["n3"].bound["server.admin_bound"]], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"not_a_member", p.stdout)
        # the command line form: beava members remove n2 (through n3's admin port)
        p = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "members", "remove", "n2", "--admin-addr",
                            c.nodes["n3"].bound["server.admin_bound"]], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        st, body = p.stdout.decode().split(" ", 1)
        self.assertEqual(st, "200", body)
        self.assertEqual(json.loads(body)["next"], ["n1", "n3"])
        p = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "members", "remove"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"beava members add|remove ID", p.stderr)
        self.wait_epoch(c, 2, ["n1", "n3"])
        # n2 still runs: it owns nothing, forwards every read, and drops what it had
        n2 = c.nodes["n2"]
        wait_for(lambda: info(n2)["applying"] == [], 30, "n2 drops its partitions")
        self.assertEqual(metric(n2, "beava_cluster_partitions_dropped_total"), owned_by_n2)
        for b in c.nodes.values():
            self.check_reads(b, expected)
        for o in info(c.nodes["n1"])["ownership"]:
            self.assertEqual(sorted(o["owners"]), ["n1", "n3"])
        c.nodes.pop("n2").stop()
        self.push_many(c, 60, keys, ["q1"], expected, rng=random.Random(22))
        for b in c.nodes.values():
            self.check_reads(b, expected)

    def test_wiped_node_rebuilds_from_a_peer_snapshot(self):
        """The stream keeps only the last 40 messages: the registry record and the early
        events are gone from it, so a wiped node can only rebuild from its peers. While
        no peer can serve, /ready is 503 and says why."""
        small = {"BEAVA_CLUSTER_STREAM_MAX_MSGS": "40"}
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2, extra_env=small).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        keys = ["w%d" % i for i in range(25)]
        self.push_many(c, 200, keys, ["x1", "x2", "x3"], expected, rng=random.Random(31))
        first = info(c.nodes["n1"])["stream_first"]
        self.assertGreater(first, 100)                   # the beginning is gone from the stream
        rows = {i: self.rows(c.nodes[i], expected) for i in c.nodes}
        self.assertEqual(rows["n1"], rows["n2"])
        # wipe n3: it rebuilds from n1's and n2's snapshots, then the stream
        c.kill("n3")
        self.wipe(c, "n3")
        n3 = c.start("n3")
        self.assertIn("cluster.peer_snapshot", n3.output())
        self.assertGreater(metric(n3, "beava_cluster_peer_snapshots_fetched_total"), 0)
        self.assertEqual(self.rows(n3, expected), rows["n1"])
        self.check_reads(n3, expected)
        self.push_many(c, 40, keys, ["x1"], expected, rng=random.Random(32))
        for b in c.nodes.values():
            self.check_reads(b, expected)
        # no peer alive: /ready stays 503 with the reason; it builds once a peer is back
        for i in ("n1", "n2"):
            st, _, body = c.nodes[i].raw("POST", "/snapshot", which="admin")
            self.assertEqual(st, 200, body)
        for i in ("n1", "n2", "n3"):
            c.kill(i)
        self.wipe(c, "n3")
        from harness import Beava
        b3 = Beava(memory_only=False, data_dir=c.dirs["n3"].name, env=c.env("n3"), wait_ready=False)
        b3.start(60)
        c.nodes["n3"] = b3
        st, _, body = wait_for(lambda: (lambda r: r if r[0] == 503 and b"no peer snapshot" in r[2] else None)(
            b3.admin("GET", "/ready")), 60, "503 with the reason")
        why = json.loads(body)["progress"]["cluster"]
        self.assertIn("the stream no longer holds", why)
        self.assertIn("/ready stays 503", why)
        self.assertIn("build_error", info(b3))
        self.assertIsNotNone(info(b3)["build_error"])
        for i in ("n1", "n2"):
            c.start(i)                                   # their local snapshots cover them: ready
        try:
            wait_for(lambda: b3.admin("GET", "/ready")[0] == 200, 60, "n3 ready once its peers can serve")
        except AssertionError:
            raise AssertionError("n3 not ready: %r\n%s" % (b3.admin("GET", "/ready"), b3.output()[-3000:]))
        self.assertIsNone(info(b3)["build_error"])
        self.assertEqual(self.rows(b3, expected), self.rows(c.nodes["n1"], expected))
        for b in c.nodes.values():
            self.check_reads(b, expected)

    def test_corrupt_or_oversized_peer_snapshot_is_refused(self):
        """n1's advertised admin address is replaced by a fake peer: its snapshots fail the
        CRC-32C, then exceed cluster.peer_snapshot_max_mb. A wiped n3 refuses them (nothing
        merged), stays 503 saying why, and rebuilds once n1's real address is back."""
        env = {"BEAVA_CLUSTER_STREAM_MAX_MSGS": "40", "BEAVA_CLUSTER_PEER_SNAPSHOT_MAX_MB": "1"}
        self.cluster = c = Cluster(self.nats, partitions=8, replicas=2, extra_env=env).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        self.push_many(c, 200, ["f%d" % i for i in range(25)], ["z1", "z2"], expected, rng=random.Random(51))
        real = info(c.nodes["n1"])["addresses"]["n1"]
        fake = FakePeer()
        self.addCleanup(fake.close)
        c.kill("n3")
        self.wipe(c, "n3")
        subject = "beava-members.beava.addr.n1"
        nats_publish(self.nats.port, subject, json.dumps({"node": "n1", "admin": fake.addr, "data": real["data"]}).encode())
        from harness import Beava
        b3 = Beava(memory_only=False, data_dir=c.dirs["n3"].name, env=c.env("n3"), wait_ready=False)
        b3.start(60)
        c.nodes["n3"] = b3

        def reason(text):
            st, _, body = b3.admin("GET", "/ready")
            return st == 503 and text in body.decode()
        wait_for(lambda: reason("does not verify"), 60, "the CRC refusal in /ready")
        fake.mode = "big"
        wait_for(lambda: reason("larger than 1048576 bytes"), 60, "the size cap in /ready")
        self.assertGreater(metric(b3, "beava_cluster_peer_snapshot_failures_total"), 0)
        nats_publish(self.nats.port, subject, json.dumps(dict(real, node="n1")).encode())
        wait_for(lambda: b3.admin("GET", "/ready")[0] == 200, 60, "n3 ready once n1's address is back")
        self.assertGreater(fake.hits, 1)
        self.assertEqual(self.rows(b3, expected), self.rows(c.nodes["n1"], expected))
        self.check_reads(b3, expected)

    def rows(self, b, expected):
        items = sorted(expected)
        st, body = b.call("POST", "/batch_get", {"requests": [{"table": t, "key": k} for t, k in items]})
        self.assertEqual(st, 200, body)
        return body["results"]

    def wipe(self, c, node_id):
        d = c.dirs[node_id].name
        for name in os.listdir(d):
            p = os.path.join(d, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)

    def test_bad_membership_requests_change_nothing(self):
        self.cluster = c = Cluster(self.nats, partitions=4, replicas=2).start_all()
        self.register_everywhere(c, "n1")
        expected = {}
        self.push_many(c, 30, ["b%d" % i for i in range(6)], ["y"], expected, rng=random.Random(41))
        n1 = c.nodes["n1"]
        before = info(n1)
        cases = [
            ("not json", 400, "bad_request"),
            ([], 400, "bad_request"),
            ({}, 400, "bad_request"),
            ({"add": "n4", "remove": "n1"}, 400, "bad_request"),
            ({"join": "n4"}, 400, "bad_request"),
            ({"cancel": False}, 400, "bad_request"),
            ({"add": ""}, 400, "invalid_node_id"),
            ({"add": 5}, 400, "invalid_node_id"),
            ({"add": None}, 400, "invalid_node_id"),
            ({"add": "../etc"}, 400, "invalid_node_id"),
            ({"add": "a b"}, 400, "invalid_node_id"),
            ({"add": "n4\u0000x"}, 400, "bad_request"),
            ({"add": "x" * 64}, 400, "invalid_node_id"),
            ({"add": "n1"}, 409, "already_member"),
            ({"remove": "n9"}, 404, "not_a_member"),
            ({"cancel": True}, 409, "nothing_pending"),
        ]
        for body, status, code in cases:
            st, got = members(n1, body)
            self.assertEqual((st, got["error"]["code"]), (status, code), (body, got))
            self.assertTrue(got["error"]["reason"], body)
        self.assertEqual(n1.raw("GET", "/cluster/members", which="admin")[0], 405)
        self.assertEqual(n1.raw("POST", "/cluster/nope", {}, which="admin")[0], 404)
        for q in ("", "?parts=99", "?parts=1,1", "?parts=x", "?parts=-1", "?nope=1"):
            st, _, body = n1.raw("GET", "/cluster/snapshot" + q, which="admin")
            self.assertEqual(st, 400, (q, body))
        # a snapshot of a partition n1 does not apply is refused, one it applies is served
        mine = info(n1)["applying"]
        other = [p for p in range(4) if p not in mine]
        if other:
            st, _, body = n1.raw("GET", "/cluster/snapshot?parts=%d" % other[0], which="admin")
            self.assertEqual(st, 503, body)
        st, h, body = n1.raw("GET", "/cluster/snapshot?parts=%d" % mine[0], which="admin")
        self.assertEqual((st, h["content-type"]), (200, "application/octet-stream"))
        self.assertEqual(body[:8], b"BVCLPS01")
        # a change nobody can finish (n9 never starts) is pending until cancelled; one
        # change at a time; the cluster serves meanwhile
        st, got = members(c.nodes["n3"], {"add": "n9"})
        self.assertEqual(st, 200, got)
        st, got = members(n1, {"remove": "n2"})
        self.assertEqual((st, got["error"]["code"]), (409, "change_in_progress"), got)
        self.push_many(c, 20, ["b%d" % i for i in range(6)], ["y"], expected, rng=random.Random(42))
        for b in c.nodes.values():
            self.check_reads(b, expected)
        self.assertEqual(info(n1)["members"]["next"], ["n1", "n2", "n3", "n9"])
        st, got = members(n1, {"cancel": True})
        self.assertEqual(st, 200, got)
        for b in c.nodes.values():
            wait_for(lambda: info(b)["members"]["next"] is None, 30, "cancel seen")
        after = info(n1)
        self.assertEqual((after["epoch"], after["nodes"]), (before["epoch"], before["nodes"]))
        self.assertEqual([o["owners"] for o in after["ownership"]], [o["owners"] for o in before["ownership"]])
        for b in c.nodes.values():
            self.check_reads(b, expected)
        # with replicas 2, a 2-node cluster cannot lose another node
        self.cluster.stop()
        self.cluster = None
        self.nats.stop()
        self.nats = Nats().start()
        self.cluster = c = Cluster(self.nats, n=2, partitions=4, replicas=2).start_all()
        st, got = members(c.nodes["n1"], {"remove": "n2"})
        self.assertEqual((st, got["error"]["code"]), (409, "too_few_nodes"), got)


if __name__ == "__main__":
    main()
