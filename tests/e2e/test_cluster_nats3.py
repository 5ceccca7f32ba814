"""beava cluster on a 3-server NATS JetStream cluster (README "Cluster"): three real
nats-server processes routed to each other on loopback (JetStream clustered, the stream
with 3 replicas) and three real beava nodes (16 partitions, 2 owners each) that know all
three NATS URLs.

- 100,000 events pushed through random nodes over framed TCP and HTTP; every entity read
  back from random nodes has exactly the rows of one node fed the same events.
- SIGKILL of a beava node during pushes: pushes through the others continue, its
  partitions are read from their other owner, after a restart it catches up; nothing
  acknowledged is lost or counted twice.
- SIGKILL of one nats-server during sync pushes: no acknowledged event is lost (503s are
  allowed, a false ack is not).
- A register on n1 while n2 pushes; two concurrent conflicting registers: one applies.
- The fraud-team pipeline gives the rows of one node fed the same events.

nats-server must be installed (ci/install-deps installs it): without it this test fails,
it never skips."""
import http.client
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from harness import Beava, free_port, main
from test_cluster import NATS_BIN, PIPE, Cluster, Nats, fraud_team_check, metric, wait_for
from test_pipelines import OP_PUSH_MANY, Tcp, batch_get, push_many, rejected

OP_PUSH_SYNC = 0x0011
NATS_CLUSTER = "beava-test"
PARTITIONS = 16
REPLICAS = 2
BIG_EVENTS = 100_000
BIG_KEYS = 3000
BIG_MS = 40
TCP_BATCH = 1000
HTTP_SHARE = 2000          # of the big stream, pushed one by one over HTTP
HTTP_THREADS = 4


class NatsServer(Nats):
    """One nats-server of the JetStream cluster: client, route and monitoring ports on
    loopback, its own store dir (kept across a kill and restart). `url`, `kill` and
    `stop` are test_cluster.Nats's."""

    def __init__(self, name):
        self.name = name
        self.port, self.cport, self.mport = free_port(), free_port(), free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="beava-nats3-")
        self.proc = None
        self.routes = []

    def start(self):
        if not os.path.exists(NATS_BIN):
            raise AssertionError("nats-server not found (%s): install it (ci/install-deps does)" % NATS_BIN)
        self.proc = subprocess.Popen(
            [NATS_BIN, "-js", "-sd", self.dir.name, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name,
             "-m", str(self.mport), "--cluster_name", NATS_CLUSTER,
             "--cluster", "nats://127.0.0.1:%d" % self.cport, "--routes", ",".join(self.routes)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def monitor(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.mport, path), timeout=5) as r:
            return json.loads(r.read())

    def meta_leader(self):
        try:
            return (self.monitor("/jsz").get("meta_cluster") or {}).get("leader")
        except OSError:
            return None


class Nats3:
    """Three routed nats-servers; `url` lists all three (beava fails over between them)."""

    def __init__(self):
        self.servers = [NatsServer("s%d" % i) for i in range(1, 4)]
        for s in self.servers:
            s.routes = ["nats://127.0.0.1:%d" % o.cport for o in self.servers if o is not s]

    @property
    def url(self):
        return ",".join(s.url for s in self.servers)

    def start(self):
        for s in self.servers:
            s.start()
        self.wait_whole()
        return self

    def wait_whole(self, timeout=60):
        """Every server running agrees on a JetStream meta leader (the cluster can place
        R=3 streams)."""
        def agreed():
            leaders = {s.meta_leader() for s in self.servers if s.proc.poll() is None}
            return len(leaders) == 1 and None not in leaders
        wait_for(agreed, timeout, "a JetStream meta leader on every nats-server")

    def stream_leader(self, stream):
        for s in self.servers:
            try:
                info = s.monitor("/jsz?streams=true")
            except OSError:
                continue
            for acc in info.get("account_details") or []:
                for st in acc.get("stream_detail") or []:
                    if st.get("name") == stream and (st.get("cluster") or {}).get("leader"):
                        return st["cluster"]["leader"]
        return None

    def stop(self):
        for s in self.servers:
            s.stop()


def expected_rows(events):
    """Rows of PIPE's tables after the events (count and sum per k, count per m)."""
    rows = {}
    for _, body in events:
        r = rows.setdefault(("ByKey", body["k"]), {"n": 0, "vs": 0})
        r["n"] += 1
        r["vs"] += body["v"]
        rows.setdefault(("ByM", body["m"]), {"mn": 0})["mn"] += 1
    return rows


class HttpPusher:
    """A keep-alive HTTP connection of its own (one per thread)."""

    def __init__(self, b):
        host, port = b.bound["server.http_bound"].rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=60)

    def push(self, event, body, sync=False):
        self.c.request("POST", "/push-sync" if sync else "/push", json.dumps({"event": event, "data": body}),
                       {"Content-Type": "application/json"})
        r = self.c.getresponse()
        return r.status, json.loads(r.read())

    def close(self):
        self.c.close()


class Nats3ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.nats = Nats3().start()

    @classmethod
    def tearDownClass(cls):
        cls.nats.stop()

    def setUp(self):
        self.cluster = None

    def tearDown(self):
        if self.cluster:
            self.cluster.stop()

    def make_cluster(self, name, **env):
        """Three beava nodes on the NATS cluster, their own stream (cluster name), R=3."""
        extra = {"BEAVA_CLUSTER_NAME": name, "BEAVA_CLUSTER_STREAM_REPLICAS": "3"}
        extra.update(env)
        self.cluster = c = Cluster(self.nats, partitions=PARTITIONS, replicas=REPLICAS, extra_env=extra)
        return c.start_all()

    def register(self, c, via="n1", pipe=PIPE):
        st, body = c.nodes[via].register(pipe)
        self.assertEqual(st, 200, body)
        want = len(pipe["nodes"])
        for b in c.nodes.values():
            wait_for(lambda: json.loads(b.admin("GET", "/registry")[2]).get("node_count", 0) == want,
                     what="registry on every node")

    def read_all(self, b, keys):
        """batch_get of every (table, key) through node b, as a dict."""
        got = batch_get(b, keys)
        return dict(zip(keys, got))

    def assert_rows(self, c, rows, rng, what):
        keys = sorted(rows)
        for node in rng.sample(list(c.nodes), len(c.nodes)):
            got = self.read_all(c.nodes[node], keys)
            bad = [(k, rows[k], got[k]) for k in keys if got[k] != rows[k]]
            self.assertEqual(bad, [], "%s: rows read through %s differ (first 5 of %d): %r"
                             % (what, node, len(bad), bad[:5]))
        # single gets through random nodes, a sample of them
        for k in rng.sample(keys, 60):
            b = c.nodes[rng.choice(list(c.nodes))]
            self.assertEqual(b.get(*k), (200, rows[k]), k)

    # ---------------------------------------------------------------------------------------

    def test_100k_events_through_random_nodes_exact_like_a_single_node(self):
        rng = random.Random(14)
        events = [("E", {"k": "u%d" % rng.randrange(BIG_KEYS), "m": "m%d" % rng.randrange(BIG_MS),
                         "v": rng.randrange(1000)}) for _ in range(BIG_EVENTS)]
        c = self.make_cluster("big")
        self.register(c, "n2")
        ids = list(c.nodes)
        http_part, tcp_part = events[:HTTP_SHARE], events[HTTP_SHARE:]
        errors = []

        def http_pusher(chunk, seed):
            r = random.Random(seed)
            conns = {i: HttpPusher(c.nodes[i]) for i in ids}
            try:
                for ev, body in chunk:
                    st, ack = conns[r.choice(ids)].push(ev, body)
                    if st != 200 or not ack.get("ack_lsn"):
                        errors.append((st, ack))
            finally:
                for h in conns.values():
                    h.close()
        per = len(http_part) // HTTP_THREADS
        threads = [threading.Thread(target=http_pusher, args=(http_part[i * per:(i + 1) * per], i))
                   for i in range(HTTP_THREADS)]
        for t in threads:
            t.start()
        tcp = {i: Tcp(c.nodes[i].bound["server.tcp_bound"]) for i in ids}
        for start in range(0, len(tcp_part), TCP_BATCH):
            chunk = tcp_part[start:start + TCP_BATCH]
            op, res = tcp[rng.choice(ids)].call(OP_PUSH_MANY, {"events": [{"event": e, "body": b} for e, b in chunk]})
            self.assertEqual(op, OP_PUSH_MANY, res)
            bad = [a for a in res["acks"] if "error" in a or not a.get("ack_lsn")]
            self.assertEqual(bad, [], bad[:3])
        for t in threads:
            t.join()
        for t in tcp.values():
            t.close()
        self.assertEqual(errors, [], errors[:3])
        self.assertEqual(sum(metric(b, "beava_cluster_pushes_acked_total") for b in c.nodes.values()), BIG_EVENTS)
        with Beava(test_mode=True) as single:
            self.assertEqual(single.register(PIPE)[0], 200)
            self.assertEqual(rejected(push_many(single, events)), [])
            keys = sorted(expected_rows(events))
            want = self.read_all(single, keys)
        self.assertEqual(want, expected_rows(events))      # the single node counts exactly
        self.assert_rows(c, want, rng, "100k events")
        for b in c.nodes.values():
            self.assertEqual(metric(b, "beava_cluster_apply_errors_total"), 0)
            self.assertGreater(metric(b, "beava_cluster_reads_forwarded_total"), 0)

    def test_fraud_team_same_rows_as_a_single_node(self):
        """The fraud-team pipeline through the three nodes gives the rows of one node."""
        fraud_team_check(self, lambda: self.make_cluster("fraud"))

    def test_beava_node_killed_during_pushes_loses_nothing(self):
        rng = random.Random(15)
        c = self.make_cluster("killnode")
        self.register(c)
        acked = []                 # events acknowledged (200) by n1 or n2
        errors = []
        stop = threading.Event()
        started = threading.Event()

        def pusher(node, seed):
            r = random.Random(seed)
            tcp = Tcp(c.nodes[node].bound["server.tcp_bound"])
            h = HttpPusher(c.nodes[node])
            try:
                i = 0
                while not stop.is_set():
                    batch = [("E", {"k": "k%d" % r.randrange(300), "m": "m%d" % r.randrange(7), "v": r.randrange(100)})
                             for _ in range(50)]
                    op, res = tcp.call(OP_PUSH_MANY, {"events": [{"event": e, "body": b} for e, b in batch]})
                    if op != OP_PUSH_MANY:
                        errors.append(res)
                        return
                    for ev, a in zip(batch, res["acks"]):
                        if "error" in a:
                            errors.append(a)
                        else:
                            acked.append(ev)
                    ev = ("E", {"k": "k%d" % r.randrange(300), "m": "h", "v": i})
                    st, a = h.push(*ev)
                    if st != 200:
                        errors.append(a)
                    else:
                        acked.append(ev)
                    i += 1
                    if i == 5:
                        started.set()
            finally:
                tcp.close()
                h.close()
        threads = [threading.Thread(target=pusher, args=(n, k)) for k, n in enumerate(("n1", "n2"))]
        for t in threads:
            t.start()
        started.wait(60)
        time.sleep(0.5)
        before = len(acked)
        c.kill("n3")                                   # SIGKILL
        wait_for(lambda: len(acked) > before + 2000, 60, "pushes through n1 and n2 after the kill")
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(errors, [], errors[:3])
        rows = expected_rows(acked)
        # n3's partitions are read from their other owner meanwhile
        self.assert_rows(c, rows, rng, "n3 down")
        b = c.start("n3")                              # /ready once its partitions caught up
        self.assertEqual(metric(b, "beava_cluster_caught_up"), 1)
        self.assert_rows(c, rows, rng, "n3 restarted")
        # n3 alone: exactly what was acknowledged in the partitions it owns
        info = json.loads(b.admin("GET", "/cluster")[2])
        owned = [o for o in info["ownership"] if "n3" in o["owners"]]
        self.assertTrue(all(o["lag"] == 0 for o in owned), owned)

    def test_nats_server_killed_during_sync_pushes_no_false_ack(self):
        c = self.make_cluster("killnats", BEAVA_CLUSTER_PUBLISH_TIMEOUT_MS="1000")
        self.register(c)
        leader = self.nats.stream_leader("BEAVA_killnats")
        self.assertIsNotNone(leader)
        victim = [s for s in self.nats.servers if s.name == leader][0]
        acked, maybe, errors = [], [], []
        stop = threading.Event()
        counter = iter(range(10 ** 9))
        lock = threading.Lock()

        def pusher(node):
            h = HttpPusher(c.nodes[node])
            tcp = Tcp(c.nodes[node].bound["server.tcp_bound"])
            try:
                while not stop.is_set():
                    with lock:
                        i = next(counter)
                    ev = ("E", {"k": "s%d" % (i % 97), "m": "sync", "v": i})
                    if i % 2:
                        st, a = h.push(*ev, sync=True)
                        code = None if st == 200 else (a.get("error") or {}).get("code")
                    else:
                        op, a = tcp.call(OP_PUSH_SYNC, {"event": ev[0], "body": ev[1]})
                        code = None if op == OP_PUSH_SYNC else (a.get("error") or {}).get("code")
                    if code is None and a.get("ack_lsn"):
                        acked.append(ev)
                    elif code == "cluster_unavailable":
                        maybe.append(ev)
                    else:
                        errors.append(a)
            finally:
                h.close()
                tcp.close()
        threads = [threading.Thread(target=pusher, args=(n,)) for n in ("n1", "n2", "n3")]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) > 300, 60, "sync pushes before the kill")
        victim.kill()                                  # SIGKILL of the stream's leader
        n = len(acked)
        wait_for(lambda: len(acked) > n + 300, 90, "sync pushes acknowledged after the kill")
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(errors, [], errors[:3])
        victim.start()                                 # back for the other tests
        self.nats.wait_whole()
        # the owners' consumers moved to the surviving servers and caught up
        for i, b in c.nodes.items():
            def caught_up():
                info = json.loads(b.admin("GET", "/cluster")[2])
                return all(o["lag"] == 0 for o in info["ownership"] if i in o["owners"])
            wait_for(caught_up, 60, "%s caught up after the nats-server kill" % i)
        # every acknowledged push is applied once; one answered 503 at most once
        rows, extra = expected_rows(acked), expected_rows(maybe)
        for b in c.nodes.values():
            keys = sorted(k for k in rows if k[0] == "ByKey")
            got = self.read_all(b, keys)
            for k in keys:
                self.assertIn("n", got[k], (k, got[k]))
                self.assertGreaterEqual(got[k]["n"], rows[k]["n"], k)
                self.assertLessEqual(got[k]["n"], rows[k]["n"] + extra.get(k, {"n": 0})["n"], k)
            st, row = b.get("ByM", "sync")
            self.assertEqual(st, 200, row)
            self.assertGreaterEqual(row["mn"], len(acked))
            self.assertLessEqual(row["mn"], len(acked) + len(maybe))

    def test_register_on_one_node_while_pushing_on_another(self):
        c = self.make_cluster("regpush")
        self.register(c)
        stop = threading.Event()
        results = []

        def pusher():
            h = HttpPusher(c.nodes["n2"])
            try:
                i = 0
                while not stop.is_set():
                    results.append(h.push("E", {"k": "p%d" % (i % 10), "m": "r", "v": 1}))
                    i += 1
            finally:
                h.close()
        t = threading.Thread(target=pusher)
        t.start()
        wait_for(lambda: len(results) > 20, 30, "pushes on n2")
        nodes = list(PIPE["nodes"]) + [
            {"kind": "event", "name": "F", "schema": {"fields": {"k": "str"}}},
            {"kind": "derivation", "name": "ByF", "output_kind": "table", "upstreams": ["F"],
             "ops": [{"op": "group_by", "keys": ["k"], "agg": {"fc": {"op": "count"}}}], "table_primary_key": ["k"]}]
        st, body = c.nodes["n1"].register({"nodes": nodes})
        self.assertEqual(st, 200, body)
        st, body = c.nodes["n2"].push("F", {"k": "a"})     # right after the ack, on another node
        self.assertEqual(st, 200, body)
        n = len(results)
        wait_for(lambda: len(results) > n + 20, 30, "pushes on n2 after the register")
        stop.set()
        t.join()
        self.assertEqual([r for r in results if r[0] != 200], [])
        for b in c.nodes.values():
            self.assertEqual(b.get("ByF", "a"), (200, {"fc": 1}))
            st, row = b.get("ByM", "r")
            self.assertEqual((st, row), (200, {"mn": len(results)}))

    def test_concurrent_conflicting_registers_exactly_one_applies(self):
        c = self.make_cluster("regreg")
        self.register(c)
        for rnd in range(4):
            results = {}
            barrier = threading.Barrier(2)

            def reg(node, op):
                # the same new table, a different feature: destructive against each other
                extra = {"kind": "derivation", "name": "T%d" % rnd, "output_kind": "table", "upstreams": ["E"],
                         "ops": [{"op": "group_by", "keys": ["k"], "agg": {"f%d" % rnd: {"op": op, "params": {"field": "v"}}}}],
                         "table_primary_key": ["k"]}
                barrier.wait()
                results[node] = c.nodes[node].register({"nodes": [extra]}, mode="merge")
            ts = [threading.Thread(target=reg, args=a) for a in (("n1", "sum"), ("n3", "max"))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            won = [n for n, (st, _) in results.items() if st == 200]
            self.assertEqual(len(won), 1, results)
            lost = [body for n, (st, body) in results.items() if st != 200]
            self.assertEqual(results[[n for n in results if n not in won][0]][0], 409, results)
            self.assertIn(lost[0]["error"]["code"], ("registry_conflict", "force_required"), lost)
            want = 10 if won == ["n1"] else 5          # sum or max of two pushes of 5
            for b in c.nodes.values():
                def has_winner():
                    return json.loads(b.admin("GET", "/registry")[2]).get("node_count") == 4 + rnd
                wait_for(has_winner, what="the winner's registry everywhere")
            for _ in range(2):
                st, body = c.nodes["n2"].push("E", {"k": "w%d" % rnd, "m": "x", "v": 5})
                self.assertEqual(st, 200, body)
            for b in c.nodes.values():
                self.assertEqual(b.get("T%d" % rnd, "w%d" % rnd), (200, {"f%d" % rnd: want}), won)
        # a record stored on a stale base (clustered JetStream lets that through) is
        # skipped by every node alike
        voids = {i: metric(b, "beava_cluster_reg_void_total") for i, b in c.nodes.items()}
        self.assertEqual(len(set(voids.values())), 1, voids)

if __name__ == "__main__":
    main()
