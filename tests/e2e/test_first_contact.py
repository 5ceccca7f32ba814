"""A newcomer's first ten minutes, run as written:

- the README's example (the first ```sh block under "## Using it", extracted from README.md
  so the two cannot drift), the curl commands of the site's quickstart page and the curl
  lines `beava quickstart` prints, each against a fresh server and against one that
  already holds config/manifests/ (as ./run leaves it): every answer 200, and the
  manifest's descriptors unchanged afterwards;
- ./run in a temporary copy of the repository on free ports (with BEAVA_BIN and
  BEAVA_CONTROL_BIN, so it skips the install and the build): run twice (the second
  refuses, naming the first's pid and addresses), with other addresses given by flags and
  by BEAVA_* variables, with a data dir another beava holds, and with manifests the server
  refuses; no process is left behind.
"""
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import BEAVA_BIN, SOURCE, Beava, free_port, main

CONTROL_BIN = os.environ.get("BEAVA_CONTROL_BIN",
                             os.path.join(os.path.dirname(BEAVA_BIN), "control", "beava-control"))


def rendered_manifests():
    r = subprocess.run([CONTROL_BIN, "manifests", "render", os.path.join(SOURCE, "config", "manifests")],
                       capture_output=True, text=True, timeout=60, check=True)
    return json.loads(r.stdout)


def readme_example():
    with open(os.path.join(SOURCE, "README.md")) as f:
        text = f.read()
    section = text.split("\n## Using it\n", 1)[1]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, "no ```sh block under '## Using it' in README.md"
    return m.group(1)


def site_quickstart_commands():
    with open(os.path.join(SOURCE, "site", "quickstart.html")) as f:
        text = f.read()
    blocks = [html.unescape(b) for b in re.findall(r"<pre><code>(.*?)</code></pre>", text, re.S)]
    return "\n".join(b for b in blocks if b.lstrip().startswith("curl"))


def quickstart_lines():
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([BEAVA_BIN, "quickstart", "--no-file"], capture_output=True, text=True, cwd=d, timeout=60)
        assert r.returncode == 0, r.stderr
        assert os.listdir(d) == []
    return "\n".join(l for l in r.stdout.splitlines() if l.startswith("curl "))


def run_commands(script, addr):
    """Run shell commands written for 127.0.0.1:8080 / localhost:8080 against `addr`;
    returns [(http status, body)] for every curl in order."""
    script = script.replace("localhost:8080", addr).replace("127.0.0.1:8080", addr)
    with tempfile.TemporaryDirectory() as out:
        prelude = ('set -u\nn=0\ncurl() { n=$((n+1)); command curl -sS -o "%s/$n.body" -w "%%{http_code}\\n" "$@" '
                   '>> "%s/status"; }\n' % (out, out))
        r = subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (r.returncode, r.stderr)
        with open(os.path.join(out, "status")) as f:
            statuses = [int(s) for s in f.read().split()]
        bodies = []
        for i in range(1, len(statuses) + 1):
            with open(os.path.join(out, "%d.body" % i), "rb") as f:
                bodies.append(f.read())
    return list(zip(statuses, bodies))


class FirstExamples(unittest.TestCase):
    def check(self, script, fresh, expect_min):
        with Beava() as b:
            manifests = None
            if not fresh:
                manifests = rendered_manifests()
                st, body = b.register(manifests)
                self.assertEqual(st, 200, body)
                self.assertEqual(b.push("PageView", {"session_id": "x", "path": "/", "dwell_ms": 5})[0], 200)
            answers = run_commands(script, b.http_addr_bound)
            self.assertGreaterEqual(len(answers), expect_min, answers)
            for st, body in answers:
                self.assertEqual(st, 200, (body, answers))
            if manifests:
                # every manifest descriptor is still registered exactly as rendered
                st, body = b.register(manifests, mode="merge", dry_run=True)
                self.assertEqual(st, 200, body)
                self.assertEqual((body["diff"]["additive"], body["diff"]["destructive"]), ([], []), body)
                self.assertEqual(sorted(body["diff"]["already_present"]),
                                 sorted(n["name"] for n in manifests["nodes"]))
                # and SiteMetrics kept the view pushed before the example ran
                st, row = b.get("SiteMetrics", "", ["page_views_24h"])
                self.assertEqual(st, 200)
                self.assertGreaterEqual(row["page_views_24h"], 1)
            return b, answers

    def test_readme_example_on_a_fresh_server(self):
        _, answers = self.check(readme_example(), fresh=True, expect_min=3)
        self.assertEqual(json.loads(answers[-1][1]), {"dwell_p50": 1200.0, "views_1h": 1})

    def test_readme_example_after_run(self):
        _, answers = self.check(readme_example(), fresh=False, expect_min=3)
        self.assertEqual(json.loads(answers[0][1])["added"], ["PathStats"])
        self.assertEqual(json.loads(answers[-1][1])["views_1h"], 1)

    def test_site_quickstart_page(self):
        for fresh in (True, False):
            _, answers = self.check(site_quickstart_commands(), fresh=fresh, expect_min=5)
            self.assertIn(b'"page_views_24h":', answers[-1][1])

    def test_printed_quickstart_lines(self):
        lines = quickstart_lines()
        self.assertIn('"mode":"merge"', lines)
        for fresh in (True, False):
            _, answers = self.check(lines, fresh=fresh, expect_min=7)
            self.assertIn(b'"page_views_24h":', answers[-1][1])

    def test_quickstart_next_to_a_server_on_the_default_ports(self):
        # `beava quickstart` binds every listener on port 0, so a server holding 8081 (TCP)
        # does not stop it; here the TCP port it would have used is taken.
        taken = free_port()
        with Beava(args=["--tcp-addr", "127.0.0.1:%d" % taken]):
            with tempfile.TemporaryDirectory() as d:
                r = subprocess.run([BEAVA_BIN, "quickstart", "--no-file"], capture_output=True, text=True, cwd=d,
                                   timeout=60, env=dict(os.environ, BEAVA_TCP_PORT=str(taken)))
                self.assertEqual(r.returncode, 0, r.stderr)


# ---- ./run -------------------------------------------------------------------------------

def procs_in(path):
    """Pids of processes whose working directory is `path` (what ./run leaves behind)."""
    found = []
    real = os.path.realpath(path)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.path.realpath(os.readlink("/proc/%s/cwd" % pid)) == real:
                found.append(int(pid))
        except OSError:
            pass
    return found


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()


class RunScript(unittest.TestCase):
    def setUp(self):
        self.clone = tempfile.mkdtemp(prefix="beava-run-clone-")
        shutil.copy2(os.path.join(SOURCE, "run"), self.clone)
        for d in ("config", "site"):
            shutil.copytree(os.path.join(SOURCE, d), os.path.join(self.clone, d))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")}
        self.env.update({"BEAVA_BIN": os.path.abspath(BEAVA_BIN), "BEAVA_CONTROL_BIN": os.path.abspath(CONTROL_BIN),
                         "ASAN_OPTIONS": "detect_leaks=0"})
        self.started = []

    def tearDown(self):
        for p in self.started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for pid in procs_in(self.clone):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.clone, ignore_errors=True)

    def ports(self):
        return {k: free_port() for k in ("http", "tcp", "admin")}

    @staticmethod
    def flags(p, data_dir=None):
        f = ["--http-addr", "127.0.0.1:%d" % p["http"], "--tcp-addr", "127.0.0.1:%d" % p["tcp"],
             "--admin-addr", "127.0.0.1:%d" % p["admin"]]
        return f + (["--data-dir", data_dir] if data_dir else [])

    def start(self, args, env=None):
        e = dict(self.env)
        e.update(env or {})
        p = subprocess.Popen([os.path.join(self.clone, "run")] + args, cwd="/", env=e, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(p)
        return p

    def wait_running(self, p, timeout=60):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("beava is running"):
                return line
        self.fail("./run did not come up:\n" + "".join(seen[-40:]))

    def finish(self, p, timeout=60):
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out

    def stop(self, p):
        os.killpg(p.pid, signal.SIGINT)
        rc, _ = self.finish(p)
        return rc

    def assert_nothing_left(self):
        deadline = time.time() + 10
        while procs_in(self.clone) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(procs_in(self.clone), [])

    def registry(self, admin_port):
        r = subprocess.run(["curl", "-sS", "http://127.0.0.1:%d/registry" % admin_port],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout)

    def test_twice_and_with_other_addresses(self):
        nodes = len(rendered_manifests()["nodes"])
        a = self.ports()
        first = self.start(self.flags(a))
        line = self.wait_running(first)
        self.assertIn("http://127.0.0.1:%d/" % a["http"], line)
        self.assertEqual(self.registry(a["admin"])["node_count"], nodes)
        # the same again: refused, naming the running server, which keeps running
        rc, out = self.finish(self.start(self.flags(a)))
        self.assertEqual(rc, 1, out)
        self.assertIn("already running", out)
        pid = [p for p in procs_in(self.clone) if comm(p) == "beava"]
        self.assertEqual(len(pid), 1)
        self.assertIn("pid %d" % pid[0], out)
        self.assertIn("127.0.0.1:%d" % a["admin"], out)
        self.assertIn("127.0.0.1:%d" % a["http"], out)
        # the same addresses through the environment: refused too
        env = {"BEAVA_LISTEN_ADDR": "127.0.0.1:%d" % a["http"], "BEAVA_ADMIN_ADDR": "127.0.0.1:%d" % a["admin"]}
        rc, out = self.finish(self.start([], env=env))
        self.assertEqual(rc, 1, out)
        self.assertIn("already running", out)
        # other addresses through BEAVA_* (and the data dir by flag): a second server
        b = self.ports()
        env = {"BEAVA_LISTEN_ADDR": "127.0.0.1:%d" % b["http"], "BEAVA_ADMIN_ADDR": "127.0.0.1:%d" % b["admin"],
               "BEAVA_TCP_PORT": str(b["tcp"])}
        second = self.start(["--data-dir", os.path.join(self.clone, "second")], env=env)
        line = self.wait_running(second)
        self.assertIn("http://127.0.0.1:%d/" % b["http"], line)
        self.assertEqual(self.registry(b["admin"])["node_count"], nodes)
        self.assertEqual(self.stop(second), 0)
        self.assertEqual(self.stop(first), 0)
        self.assert_nothing_left()
        # run again on the same data: the manifests are already there (a no-op), so it starts
        first = self.start(self.flags(a))
        self.wait_running(first)
        self.assertEqual(self.registry(a["admin"]), {"node_count": nodes, "version": 1})
        self.assertEqual(self.stop(first), 0)
        self.assert_nothing_left()

    def test_data_dir_held_by_another_beava(self):
        a = self.ports()
        first = self.start(self.flags(a))
        self.wait_running(first)
        rc, out = self.finish(self.start(self.flags(self.ports())))   # other ports, same ./.beava
        self.assertEqual(rc, 1, out)
        self.assertIn("wal_locked", out)
        self.assertEqual(self.stop(first), 0)
        self.assert_nothing_left()

    def test_manifests_refused_stops_the_server(self):
        # the data dir already holds a PageView of another shape: the manifests are a
        # destructive change, refused with 409; ./run prints it and stops its server
        data = os.path.join(self.clone, ".beava")
        with Beava(memory_only=False, data_dir=data,
                   env={"BEAVA_WAL_DIR": os.path.join(data, "wal"),
                        "BEAVA_SNAPSHOT_DIR": os.path.join(data, "snapshots")}) as b:
            st, body = b.register({"nodes": [{"kind": "event", "name": "PageView",
                                              "schema": {"fields": {"path": "str", "dwell_ms": "str"}}}]})
            self.assertEqual(st, 200, body)
        a = self.ports()
        rc, out = self.finish(self.start(self.flags(a)))
        self.assertEqual(rc, 1, out)
        self.assertIn("force_required", out)
        self.assertIn("stopped the server", out)
        self.assert_nothing_left()
        r = subprocess.run([BEAVA_BIN, "probe", "--admin-addr", "127.0.0.1:%d" % a["admin"]], capture_output=True)
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    main()
