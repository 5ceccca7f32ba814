"""Apply shards of the real binary (README "The engine: shards, sequencing, asynchronous acks"): entities are partitioned by
hash(table, key) mod N, a key always lands on the same shard, a global table lives on
one shard, reads see every acknowledged write from any connection, and a stalled shard
turns into 503 overloaded (bounded queues) instead of unbounded memory, with nothing
half-applied and everything queued applied once the shard resumes."""
import json
import os
import threading
import time
import unittest

from harness import Beava, main

PIPE = {"nodes": [
    {"kind": "event", "name": "E", "schema": {"fields": {"k": "str", "v": "i64"}}},
    {"kind": "derivation", "name": "ByKey", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {"n": {"op": "count"}, "vs": {"op": "sum", "params": {"field": "v"}}}}],
     "table_primary_key": ["k"]},
    {"kind": "derivation", "name": "All", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": [], "agg": {"total": {"op": "count"}}}], "table_primary_key": []},
]}


def shard_of(b, table, key):
    st, _, body = b.raw("POST", "/debug/shard-of", {"table": table, "key": key}, which="admin")
    assert st == 200, body
    return json.loads(body)["shard"]


class Shards(unittest.TestCase):
    def test_routing_is_stable_and_spreads(self):
        with Beava(test_mode=True, args=["--shards", "4"]) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            shards = {k: shard_of(b, "ByKey", k) for k in ("k%d" % i for i in range(64))}
            self.assertEqual(set(shards.values()), {0, 1, 2, 3})        # spread over all 4
            for k, sh in shards.items():
                self.assertEqual(shard_of(b, "ByKey", k), sh)          # same key, same shard
            self.assertIn(shard_of(b, "All", ""), {0, 1, 2, 3})
            metrics = b.admin("GET", "/metrics")[2].decode()
            self.assertIn("beava_shards 4", metrics)
            # every key's count is right whichever shard holds it
            for i in range(200):
                b.push("E", {"k": "k%d" % (i % 64), "v": 1})
            rows = b.call("POST", "/batch_get", {"requests": [{"table": "ByKey", "key": "k%d" % i} for i in range(64)]})[1]
            self.assertEqual(sum(r["n"] for r in rows["results"]), 200)
            self.assertEqual(b.get("All", "")[1], {"total": 200})

    def test_default_is_two_shards_per_core(self):
        with Beava(test_mode=True) as b:
            metrics = b.admin("GET", "/metrics")[2].decode()
            self.assertIn("beava_shards %d\n" % min(2 * os.cpu_count(), 256), metrics)

    def test_read_your_writes_across_connections(self):
        with Beava(args=["--shards", "3"]) as a:
            self.assertEqual(a.register(PIPE)[0], 200)
            other = Beava.__new__(Beava)
            other.__dict__.update(a.__dict__)
            other._conns = {}                       # a second keep-alive connection
            for i in range(100):
                self.assertEqual(a.push("E", {"k": "ryw", "v": i})[0], 200)
                self.assertEqual(other.get("ByKey", "ryw")[1]["n"], i + 1)
            for c in other._conns.values():
                c.close()

    def test_paused_shard_overloads_then_recovers(self):
        with Beava(test_mode=True, args=["--shards", "2"], env={"BEAVA_SHARD_QUEUE": "16"}) as b:
            self.assertEqual(b.register({"nodes": PIPE["nodes"][:2]})[0], 200)
            hot = next(k for k in ("h%d" % i for i in range(100)) if shard_of(b, "ByKey", k) == 0)
            cold = next(k for k in ("c%d" % i for i in range(100)) if shard_of(b, "ByKey", k) == 1)
            st, _, _ = b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": True}, which="admin")
            self.assertEqual(st, 200)
            results = []
            lock = threading.Lock()

            def push_one():
                p = Beava.__new__(Beava)
                p.__dict__.update(b.__dict__)
                p._conns = {}
                st, body = p.push("E", {"k": hot, "v": 1})
                with lock:
                    results.append((st, body))
                for c in p._conns.values():
                    c.close()

            threads = [threading.Thread(target=push_one) for _ in range(40)]
            for t in threads:
                t.start()
            deadline = time.time() + 20
            while time.time() < deadline:
                with lock:
                    if len(results) >= 40 - 16:
                        break
                time.sleep(0.05)
            with lock:
                refused = [r for r in results if r[0] == 503]
            self.assertGreaterEqual(len(refused), 40 - 16)
            for st, body in refused:
                self.assertEqual(body["error"]["code"], "overloaded")
            # the other shard keeps serving
            self.assertEqual(b.push("E", {"k": cold, "v": 1})[0], 200)
            self.assertEqual(b.get("ByKey", cold)[1]["n"], 1)
            b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            for t in threads:
                t.join(20)
            accepted = sum(1 for st, _ in results if st == 200)
            self.assertEqual(len(results), 40)
            self.assertEqual(accepted + len([r for r in results if r[0] == 503]), 40)
            self.assertEqual(b.get("ByKey", hot)[1]["n"], accepted)     # nothing half-applied


if __name__ == "__main__":
    main()
