"""Entity lifecycle against the real binary: cold_after_ms idle TTL with the background
sweeper (entities are evicted even if their key never comes back), the Redis-TTL
restart of a returning entity, and the resident/eviction gauges in /metrics."""
import time
import unittest

from harness import Beava, main


def metrics(b):
    out = {}
    for line in b.admin("GET", "/metrics")[2].decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


PIPE = {"nodes": [
    {"kind": "event", "name": "Hit", "schema": {"fields": {"u": "str"}}, "cold_after_ms": 400},
    {"kind": "event", "name": "Keep", "schema": {"fields": {"u": "str"}}},
    {"kind": "derivation", "name": "Hits", "output_kind": "table", "upstreams": ["Hit"],
     "ops": [{"op": "group_by", "keys": ["u"], "agg": {"hits": {"op": "count"}}}], "table_primary_key": ["u"]},
    {"kind": "derivation", "name": "Keeps", "output_kind": "table", "upstreams": ["Keep"],
     "ops": [{"op": "group_by", "keys": ["u"], "agg": {"keeps": {"op": "count"}}}], "table_primary_key": ["u"]},
]}


class ColdEntities(unittest.TestCase):
    def test_sweeper_evicts_idle_entities(self):
        with Beava() as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            for u in ("a", "b", "c"):
                b.push("Hit", {"u": u})
                b.push("Keep", {"u": u})
            m = metrics(b)
            self.assertEqual(m["beava_entity_count_resident"], 6)
            self.assertEqual(m["beava_cold_entity_evictions_total"], 0)
            deadline = time.time() + 10
            while time.time() < deadline and metrics(b)["beava_entity_count_resident"] > 3:
                time.sleep(0.1)
            m = metrics(b)
            self.assertEqual(m["beava_entity_count_resident"], 3)      # only the TTL-less table remains
            self.assertEqual(m["beava_cold_entity_evictions_total"], 3)
            self.assertEqual(b.get("Hits", "a")[1], {})
            self.assertEqual(b.get("Keeps", "a")[1], {"keeps": 1})

    def test_returning_entity_starts_fresh_and_active_one_stays(self):
        with Beava() as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            for _ in range(3):
                b.push("Hit", {"u": "busy"})
                time.sleep(0.1)
            self.assertEqual(b.get("Hits", "busy")[1], {"hits": 3})    # never idle for 400 ms
            time.sleep(0.8)
            b.push("Hit", {"u": "busy"})
            self.assertEqual(b.get("Hits", "busy")[1], {"hits": 1})    # Redis-TTL: a fresh row


if __name__ == "__main__":
    main()
