"""Recovery with missing WAL records (issue 12 item 3), on the real binary: when no usable
snapshot covers the LSNs before the first WAL record still on disk (both snapshots
corrupt or deleted after the early segments were truncated, or the first segment
deleted), beava refuses to start with one JSON error line naming the missing LSN range
and the files it expected, exits non-zero, and changes no file. --accept-data-loss then
starts, says so in the log and in /metrics, and keeps every old file in
<data_dir>/data-loss-<time>/; the next plain start finds the new baseline."""
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import BEAVA_BIN, Beava, main

PAD = "x" * 2000
PIPE = {"nodes": [
    {"kind": "event", "name": "E", "schema": {"fields": {"k": "str", "pad": "str"}, "optional_fields": []}},
    {"kind": "derivation", "name": "T", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {"c": {"op": "count"}}}],
     "table_primary_key": ["k"]},
]}
SEGMENT_BYTES = 1 << 20          # the smallest allowed: ~500 events of PAD per segment


def env_for(d, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")}
    env.update({"BEAVA_WAL_DIR": os.path.join(d, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(d, "snapshots"),
                "BEAVA_WAL_SEGMENT_BYTES": str(SEGMENT_BYTES), "BEAVA_SNAPSHOT_INTERVAL_S": "3600"})
    env.update(extra or {})
    return env


def server(d, args=()):
    b = Beava(memory_only=False, data_dir=d, args=["--durability", "sync"] + list(args))
    b.env_extra.update({k: v for k, v in env_for(d).items() if k.startswith("BEAVA_")})
    return b


def tree(d):
    """Every file under d (but the lock file, rewritten with the PID at each start) with
    its SHA-256."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            if f == "LOCK":
                continue
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def start_refused(d, extra_env=None):
    r = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "--data-dir", d, "--http-addr", "127.0.0.1:0",
                        "--admin-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, env=env_for(d, extra_env))
    lines = []
    for line in r.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return r, [l for l in lines if l.get("kind") == "storage.recovery_refused"]


class RecoveryGap(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="beava-gap-")
        self.addCleanup(shutil.rmtree, self.d, True)

    def fill(self, b, n):
        for i in range(n):
            st, body = b.push("E", {"k": "a", "pad": PAD})
            self.assertEqual(st, 200, body)

    def segments(self):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.d, "wal", "*.seg")))

    def snapshots(self):
        return sorted(glob.glob(os.path.join(self.d, "snapshots", "snapshot-*.bvs")))

    def assert_refused(self, lo, hi, expected_files):
        before = tree(self.d)
        r, refused = start_refused(self.d)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(refused), 1, r.stdout + r.stderr)
        line = refused[0]
        self.assertEqual(line["level"], "error")
        self.assertEqual(line["missing"][0]["from"], lo, line)
        self.assertEqual(line["missing"][0]["to"], hi, line)
        self.assertEqual(line["gap_lsns"], hi - lo + 1)
        self.assertIn("LSN %d..%d" % (lo, hi), line["msg"])
        for f in expected_files:
            self.assertIn(f, line["msg"])
        self.assertIn("--accept-data-loss", line["msg"])
        self.assertIn("LSN %d..%d" % (lo, hi), r.stderr)          # and the reason on stderr
        self.assertEqual(tree(self.d), before, "a refused start changed files")
        # and again: refusing is repeatable, still nothing changes
        r2, refused2 = start_refused(self.d)
        self.assertNotEqual(r2.returncode, 0)
        self.assertEqual(refused2[0]["missing"], line["missing"])
        self.assertEqual(tree(self.d), before)
        return before

    def assert_accepts(self, before, lost, rejected_snapshots):
        b = server(self.d, ["--accept-data-loss"]).start()
        out = b.output()
        metrics = b.admin("GET", "/metrics")[2].decode()
        b.stop()
        accepted = [json.loads(l) for l in out.splitlines() if '"storage.data_loss_accepted"' in l]
        self.assertEqual(len(accepted), 1, out)
        self.assertEqual(accepted[0]["level"], "warn")
        self.assertEqual(accepted[0]["gap_lsns"], lost)
        self.assertIn("beava_recovery_accepted_data_loss 1", metrics)
        # the records after the gap no longer apply (their registration is gone): counted,
        # not logged one line each
        self.assertLessEqual(out.count('"storage.replay_error"'), 10)
        recovered = [json.loads(l) for l in out.splitlines() if '"storage.recovered"' in l][0]
        self.assertEqual(recovered["lost_lsns"], lost)
        self.assertTrue(recovered["accepted_data_loss"])
        self.assertIn("beava_recovery_lost_lsns %d" % lost, metrics)
        # every old file is still there, in place or in the aside directory, unchanged
        aside = glob.glob(os.path.join(self.d, "data-loss-*"))
        self.assertEqual(len(aside), 1, os.listdir(self.d))
        now = tree(self.d)
        name = os.path.basename(aside[0])
        for rel, digest in before.items():
            base = os.path.basename(rel)
            kept = [r for r, h in now.items() if os.path.basename(r) == base and h == digest
                    and (r == rel or r.startswith(name + os.sep))]
            self.assertTrue(kept, "%s was not kept (now: %s)" % (rel, sorted(now)))
        for s in rejected_snapshots:
            self.assertTrue(os.path.exists(os.path.join(aside[0], "snapshots", os.path.basename(s))))
            self.assertFalse(os.path.exists(s), "a rejected snapshot stayed in the snapshot dir")
        with open(os.path.join(aside[0], "REASON")) as f:
            self.assertIn("--accept-data-loss", f.read())
        # the accepted start took a baseline snapshot: a plain start now succeeds
        b = server(self.d).start()
        metrics = b.admin("GET", "/metrics")[2].decode()
        self.assertIn("beava_recovery_accepted_data_loss 0", metrics)
        self.assertEqual(b.register(PIPE)[0], 200)
        self.fill(b, 3)
        self.assertEqual(b.get("T", "a")[1]["c"], 3)
        b.stop()

    def test_both_snapshots_corrupt_refused_then_accepted(self):
        b = server(self.d).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        self.fill(b, 700)
        self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
        self.fill(b, 700)
        self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
        self.fill(b, 100)
        b.stop(signal.SIGKILL)
        segs = self.segments()
        self.assertNotEqual(segs[0], "0000000000000001.seg", "the snapshots did not truncate the WAL: %s" % segs)
        first = int(segs[0][:16], 16)
        snaps = self.snapshots()
        self.assertEqual(len(snaps), 2)
        for s in snaps:                              # CRC-invalid bodies: both rejected
            with open(s, "r+b") as f:
                f.seek(os.path.getsize(s) - 8)
                f.write(b"\xde\xad\xbe\xef")
        before = self.assert_refused(1, first - 1, ["0000000000000001.seg"] + [os.path.basename(p) for p in snaps])
        self.assert_accepts(before, first - 1, snaps)

    def test_both_snapshots_deleted_refused(self):
        b = server(self.d).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        self.fill(b, 700)
        self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
        self.fill(b, 700)
        self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
        b.stop(signal.SIGKILL)
        first = int(self.segments()[0][:16], 16)
        self.assertGreater(first, 1)
        for s in self.snapshots():
            os.unlink(s)
        self.assert_refused(1, first - 1, ["0000000000000001.seg"])

    def test_first_segment_deleted_refused_then_accepted(self):
        b = server(self.d).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        self.fill(b, 1200)
        b.stop(signal.SIGKILL)
        segs = self.segments()
        self.assertGreaterEqual(len(segs), 3, segs)
        self.assertEqual(segs[0], "0000000000000001.seg")
        os.unlink(os.path.join(self.d, "wal", segs[0]))
        second = int(segs[1][:16], 16)
        before = self.assert_refused(1, second - 1, ["0000000000000001.seg", segs[1]])
        self.assert_accepts(before, second - 1, [])

    def test_middle_segment_deleted_refused(self):
        b = server(self.d).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        self.fill(b, 1200)
        b.stop(signal.SIGKILL)
        segs = self.segments()
        self.assertGreaterEqual(len(segs), 3, segs)
        os.unlink(os.path.join(self.d, "wal", segs[1]))
        lo, hi = int(segs[1][:16], 16), int(segs[2][:16], 16) - 1
        self.assert_refused(lo, hi, [segs[1], segs[0], segs[2]])

    def test_intact_data_dir_starts_without_the_flag(self):
        b = server(self.d).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        self.fill(b, 700)
        self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
        self.fill(b, 700)
        self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
        self.fill(b, 50)
        b.stop(signal.SIGKILL)
        b = server(self.d).start()
        self.assertEqual(b.get("T", "a")[1]["c"], 1450)
        metrics = b.admin("GET", "/metrics")[2].decode()
        self.assertIn("beava_recovery_lost_lsns 0", metrics)
        self.assertIn("beava_recovery_accepted_data_loss 0", metrics)
        b.stop()


if __name__ == "__main__":
    main()
