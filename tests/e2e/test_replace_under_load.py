"""A server replaced under load answers everything it applied (the listener outlives it, as
under beava-control and beava.socket): the test holds the listening socket, hands it to each
server as the inherited socket 'http' (LISTEN_FDS), and SIGTERMs one server after another
while clients push with sync durability, two over keep-alive connections (reconnecting when
an answer says Connection: close) and one over a new connection per push. Connections made
while one server stops and the next recovers wait in the socket's backlog.

Every push is its client's own key, so the table counts what each client's pushes applied:
an applied push whose connection closed without an answer shows as a count above the
client's acks; an answered push that was lost, as a count below. Both must be exact, no
request may fail (a server that stops must answer what it took and leave the rest in the
backlog for the next one), and every server must exit 0 without an abort.

BEAVA_REPLACE_CYCLES sets the number of replacements (default 12)."""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import BEAVA_BIN, Beava, main

CYCLES = int(os.environ.get("BEAVA_REPLACE_CYCLES", "12"))

PIPE = {"nodes": [
    {"kind": "event", "name": "E", "schema": {"fields": {"k": "str", "seq": "i64"}, "optional_fields": []}},
    {"kind": "derivation", "name": "T", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {"c": {"op": "count"}}}], "table_primary_key": ["k"]},
]}


class Server:
    """One beava process serving the test's listening socket as its inherited 'http'."""

    def __init__(self, lsock, data_dir):
        env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="http", BEAVA_ADMIN_ADDR="127.0.0.1:0",
                   BEAVA_TCP_PORT="0", BEAVA_WAL_DIR=os.path.join(data_dir, "wal"),
                   BEAVA_SNAPSHOT_DIR=os.path.join(data_dir, "snapshots"), BEAVA_SNAPSHOT_INTERVAL_S="3600")
        fd = lsock.fileno()
        # LISTEN_PID must name the server itself: sh sets it to its own pid, then execs beava
        self.proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', BEAVA_BIN, "--config", "/dev/null", "--durability", "sync",
             "--data-dir", data_dir],
            env=env, pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3) if fd != 3 else None,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        ready = threading.Event()

        def drain():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                if '"server.ready"' in line:
                    ready.set()
            ready.set()
        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            raise RuntimeError("beava did not become ready:\n" + "".join(self.lines[-40:]))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        self.proc.stdout.close()
        return rc, "".join(self.lines)


class Pusher(threading.Thread):
    def __init__(self, port, key, keepalive):
        super().__init__(daemon=True)
        self.port, self.key, self.keepalive = port, key, keepalive
        self.acks, self.errors, self.stop_flag = 0, [], False

    def run(self):
        conn = None
        seq = 0
        while not self.stop_flag:
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("POST", "/push/E", json.dumps({"k": self.key, "seq": seq}),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    self.acks += 1
                else:
                    self.errors.append("status %d" % r.status)
                if not self.keepalive or (r.getheader("Connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is reported
                self.errors.append("%r after %.3fs" % (e, time.monotonic() - t0))
                if conn is not None:
                    conn.close()
                conn = None
            seq += 1
        if conn is not None:
            conn.close()


def call(port, method, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


class ReplacedUnderLoad(unittest.TestCase):
    def test_keepalive_and_new_connections(self):
        self.replace_under_load(keepalive=2, new_connection=2)

    def test_new_connections_only(self):
        # no connection stays open, so a stopping server often finds none left at once:
        # a connection it accepted just before it stopped accepting must still be counted
        self.replace_under_load(keepalive=0, new_connection=6)

    def replace_under_load(self, keepalive, new_connection):
        """Replaces the server CYCLES times under the given clients; checks every client's
        count against its acks, that no request failed, and that every server exited 0."""
        tmp = tempfile.mkdtemp(prefix="beava-replace-")
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1024)
        port = lsock.getsockname()[1]
        srv = None
        clients = []
        try:
            srv = Server(lsock, tmp)
            st, body = call(port, "POST", "/register", PIPE)
            self.assertEqual(st, 200, body)
            clients = [Pusher(port, "keep%d" % i, True) for i in range(keepalive)]
            clients += [Pusher(port, "new%d" % i, False) for i in range(new_connection)]
            for t in clients:
                t.start()
            rnd = random.Random(7)
            for cycle in range(CYCLES):
                time.sleep(rnd.uniform(0.1, 0.4))
                rc, out = srv.stop()
                srv = None
                self.assertEqual(rc, 0, "server %d exited with %s:\n%s" % (cycle, rc, out[-4000:]))
                for marker in ("Fatal error", "ERROR: AddressSanitizer", "runtime error:"):
                    self.assertNotIn(marker, out, "server %d:\n%s" % (cycle, out[-4000:]))
                srv = Server(lsock, tmp)
            time.sleep(0.3)
            for t in clients:
                t.stop_flag = True
            for t in clients:
                t.join(60)
            for t in clients:
                self.assertEqual(t.errors, [], "client %s: %d acks" % (t.key, t.acks))
                self.assertGreater(t.acks, CYCLES, t.key)
                st, body = call(port, "POST", "/get", {"table": "T", "key": t.key})
                self.assertEqual(st, 200, body)
                self.assertEqual(body.get("c"), t.acks, "client %s: applied pushes vs acknowledged ones" % t.key)
        finally:
            for t in clients:
                t.stop_flag = True
            if srv:
                srv.stop()
            lsock.close()
            shutil.rmtree(tmp, ignore_errors=True)


class AdminWhileStopping(unittest.TestCase):
    def test_admin_calls_during_shutdown(self):
        """The admin listener serves until the end of a shutdown, while the TCP listener and
        the WAL stop and are freed: /metrics (TCP and WAL figures), /ready (the recovery
        progress once not ready) and /snapshot polled meanwhile must not touch them (the
        server must exit 0 without a sanitizer report; the harness checks both)."""
        for cycle in range(5):
            tmp = tempfile.mkdtemp(prefix="beava-adminstop-")
            b = Beava(memory_only=False, data_dir=tmp, args=["--durability", "sync"],
                      env={"BEAVA_WAL_DIR": os.path.join(tmp, "wal"),
                           "BEAVA_SNAPSHOT_DIR": os.path.join(tmp, "snapshots")})
            b.start()
            host, port = b.admin_addr_bound.rsplit(":", 1)
            stop = threading.Event()
            answers = []

            def poll(method, path):
                while not stop.is_set():
                    try:
                        c = http.client.HTTPConnection(host, int(port), timeout=10)
                        c.request(method, path)
                        answers.append(c.getresponse().status)
                        c.close()
                    except OSError:
                        pass    # refused once the listener is gone
            pollers = [threading.Thread(target=poll, args=mp, daemon=True)
                       for mp in (("GET", "/metrics"), ("GET", "/ready"), ("GET", "/metrics"), ("POST", "/snapshot"))]
            for t in pollers:
                t.start()
            time.sleep(0.2)
            try:
                b.stop()    # SIGTERM; raises on a non-zero exit or a sanitizer report
            finally:
                stop.set()
                for t in pollers:
                    t.join(30)
                shutil.rmtree(tmp, ignore_errors=True)
            self.assertTrue(answers, "cycle %d: the admin listener answered nothing" % cycle)


if __name__ == "__main__":
    main()
