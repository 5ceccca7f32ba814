"""Recovery's parallel replay (beava/src/engine/push.c, "replay"): the WAL is read by one
thread and applied by applier threads that split the work by shard, with registry
records as barriers. These tests kill -9 a server whose state depends on the ORDER of
each entity's events, and on a registry change in the middle of the log, and require
the restarted server to hold exactly the live state: a replay that reordered one
entity's events across groups or shards, or applied an event on the wrong side of a
registry record, changes last/first_n/last_n/lag/streak values or refuses events that
the change made valid. Event records name their fields by schema position
(beava/src/engine/evrec.h): the change widens the schema with a field listed in the
middle of the new node, and a snapshot taken after it is the base of one recovery, so
positions are decoded against the registry rebuilt from the log and from a snapshot."""
import json
import os
import glob
import random
import shutil
import struct
import tempfile
import unittest

from harness import Beava, main
from test_engine_async import tcp_addr, wait_wal_durable
from test_tcp import Conn

SHARDS = 4
KEYS = ["k%d" % i for i in range(6)]     # few entities, many events each, over all shards
EVENTS = 12000                           # many of replay's groups (REPLAY_BATCH_MAX)

ORDERED = {"nodes": [
    {"kind": "event", "name": "Ev",
     "schema": {"fields": {"k": "str", "seq": "i64", "flag": "str"}, "optional_fields": []}},
    {"kind": "derivation", "name": "T", "output_kind": "table", "upstreams": ["Ev"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {
         "n": {"op": "count"},
         "last_seq": {"op": "last", "params": {"field": "seq"}},
         "first_seqs": {"op": "first_n", "params": {"field": "seq", "n": 5}},
         "last_seqs": {"op": "last_n", "params": {"field": "seq", "n": 7}},
         "lag3": {"op": "lag", "params": {"field": "seq", "n": 3}},
         "run": {"op": "streak", "params": {"where": "(flag == 'y')"}},
         "best_run": {"op": "max_streak", "params": {"where": "(flag == 'y')"}}}}],
     "table_primary_key": ["k"]},
]}


def start(d, shards=SHARDS):
    env = {"BEAVA_WAL_DIR": os.path.join(d, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(d, "snapshots"),
           "BEAVA_SNAPSHOT_INTERVAL_S": "3600"}
    return Beava(memory_only=False, data_dir=d, test_mode=True, env=env,
                 args=["--durability", "batch", "--shards", str(shards)]).start()


def push_all(c, events, chunk=500):
    """Push (name, body) events over TCP in batch frames, in order; every one must be acked."""
    for i in range(0, len(events), chunk):
        part = [{"event": n, "body": body} for n, body in events[i:i + chunk]]
        op, _, body = c.call(0x0012, {"events": part}, ct=2)
        acks = body["acks"]
        assert len(acks) == len(part), body
        for a in acks:
            assert "ack_lsn" in a, a


def rows(b, table, keys):
    out = {}
    for k in keys:
        st, row = b.get(table, k)
        assert st == 200, row
        out[k] = row
    return out


def crash_and_recover(tc, b, d, table, keys):
    """Live rows and registry, wait for the WAL, kill -9, restart: the same rows and registry."""
    live = rows(b, table, keys)
    registry = b.admin("GET", "/registry")[2]
    wait_wal_durable(b)
    b.stop(sig=9)
    b.check_clean_exit = False            # killed on purpose: its cleanup must not call that unclean
    b2 = start(d)
    tc.addCleanup(b2.stop)
    m = b2.admin("GET", "/metrics")[2].decode()
    tc.assertIn("beava_recovery_replay_errors 0", m)
    tc.assertEqual(rows(b2, table, keys), live)
    tc.assertEqual(b2.admin("GET", "/registry")[2], registry)
    return live, b2


def wal_event_forms(d):
    """(records by position, records by name) among the WAL's event records (wal.c framing:
    u32 length, u32 crc, u64 LSN, u8 kind, payload; an event record's u32 at payload offset
    8 has bit 31 set when its fields are named by schema position)."""
    by_pos = by_name = 0
    for path in sorted(glob.glob(os.path.join(d, "wal", "*.seg"))):
        with open(path, "rb") as f:
            data = f.read()
        off = 64
        while off + 17 <= len(data):
            n = struct.unpack_from("<I", data, off)[0]
            if off + 17 + n > len(data):
                break
            if data[off + 16] == 1 and n >= 12:
                word = struct.unpack_from("<I", data, off + 17 + 8)[0]
                if word & 0x80000000:
                    by_pos += 1
                else:
                    by_name += 1
            off += 17 + n
    return by_pos, by_name


class ParallelReplayOrder(unittest.TestCase):
    def test_each_entity_replays_in_log_order_across_shards(self):
        d = tempfile.mkdtemp(prefix="beava-replay-")
        self.addCleanup(shutil.rmtree, d, True)
        b = start(d)
        try:
            self.assertEqual(b.register(ORDERED)[0], 200)
            shards = {json.loads(b.raw("POST", "/debug/shard-of", {"table": "T", "key": k}, which="admin")[2])["shard"]
                      for k in KEYS}
            self.assertGreater(len(shards), 1, "the keys must spread over several shards")
            rnd = random.Random(7)
            events, seqs, flags = [], {k: [] for k in KEYS}, {k: [] for k in KEYS}
            for i in range(EVENTS):
                k = KEYS[rnd.randrange(len(KEYS))]
                flag = "y" if rnd.random() < 0.8 else "n"
                events.append(("Ev", {"k": k, "seq": i, "flag": flag}))
                seqs[k].append(i)
                flags[k].append(flag)
            c = Conn(tcp_addr(b))
            push_all(c, events)
            c.close()
            live, b = crash_and_recover(self, b, d, "T", KEYS)
            # and the live state is the log order's (so equality above is about order)
            for k in KEYS:
                run = best = 0
                for f in flags[k]:
                    run = run + 1 if f == "y" else 0
                    best = max(best, run)
                row = live[k]
                self.assertEqual(row["n"], len(seqs[k]))
                self.assertEqual(row["last_seq"], seqs[k][-1])
                self.assertEqual(row["first_seqs"], seqs[k][:5])
                self.assertEqual(row["last_seqs"], seqs[k][-7:])
                self.assertEqual(row["run"], run)
                self.assertEqual(row["best_run"], best)
        finally:
            if b.proc and b.proc.poll() is None:
                b.stop()


class RegistryRecordMidLog(unittest.TestCase):
    def test_events_around_a_register_replay_on_their_own_side_of_it(self):
        d = tempfile.mkdtemp(prefix="beava-replay-")
        self.addCleanup(shutil.rmtree, d, True)
        b = start(d)
        try:
            self.assertEqual(b.register(ORDERED)[0], 200)
            c = Conn(tcp_addr(b))
            push_all(c, [("Ev", {"k": KEYS[i % len(KEYS)], "seq": i, "flag": "y"}) for i in range(1300)])
            # the change adds a field and features: events after it use the field (invalid
            # before it), and the new features count only what follows the change. The new
            # node lists the field second: the widened schema keeps the old positions and
            # appends it, so records after the change carry positions the node's order does
            # not show
            v2 = json.loads(json.dumps(ORDERED))
            fields = v2["nodes"][0]["schema"]["fields"]
            v2["nodes"][0]["schema"]["fields"] = {"k": fields["k"], "extra": "i64", "seq": fields["seq"],
                                                  "flag": fields["flag"]}
            agg = v2["nodes"][1]["ops"][0]["agg"]
            agg["n_after"] = {"op": "count"}
            agg["extra_sum"] = {"op": "sum", "params": {"field": "extra"}}
            agg["last_extra"] = {"op": "last", "params": {"field": "extra"}}
            st, body = b.register(v2)
            self.assertEqual(st, 200, body)
            # rows list their fields in two orders (each its own shape)
            push_all(c, [("Ev", {"k": KEYS[i % len(KEYS)], "seq": 1300 + i, "flag": "n", "extra": i}) if i % 3 else
                         ("Ev", {"extra": i, "flag": "y", "k": KEYS[i % len(KEYS)], "seq": 1300 + i})
                         for i in range(1100)])
            live, b = crash_and_recover(self, b, d, "T", KEYS)
            self.assertEqual(sum(r["n"] for r in live.values()), 2400)
            self.assertEqual(sum(r["n_after"] for r in live.values()), 1100)
            self.assertEqual(sum(r["extra_sum"] for r in live.values()), sum(range(1100)))
            self.assertEqual(sorted(r["last_extra"] for r in live.values()), list(range(1094, 1100)))
            by_pos, by_name = wal_event_forms(d)
            self.assertEqual(by_pos, 2400, (by_pos, by_name))   # every row had distinct schema fields
            # a snapshot after the change, then more events: recovery decodes the records
            # after the snapshot against the registry its history rebuilds
            self.assertEqual(b.raw("POST", "/snapshot", which="admin")[0], 200)
            c = Conn(tcp_addr(b))
            push_all(c, [("Ev", {"seq": 2400 + i, "k": KEYS[i % len(KEYS)], "extra": -i, "flag": "y"})
                         for i in range(700)])
            c.close()
            live, b = crash_and_recover(self, b, d, "T", KEYS)
            self.assertEqual(sum(r["n"] for r in live.values()), 3100)
            self.assertEqual(sum(r["extra_sum"] for r in live.values()), sum(range(1100)) - sum(range(700)))
        finally:
            if b.proc and b.proc.poll() is None:
                b.stop()


if __name__ == "__main__":
    main()
