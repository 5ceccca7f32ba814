"""Configuration layers of the real binary: flags > BEAVA_* env > YAML > defaults,
unknown YAML keys and bad values are errors naming the key, --help, --version, and the
bound-address log lines (port 0 = OS-assigned)."""
import json
import os
import subprocess
import tempfile
import unittest

from harness import BEAVA_BIN, Beava, free_port, main


def run(args, env=None, timeout=20):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([BEAVA_BIN] + args, capture_output=True, text=True, env=e, timeout=timeout)


class Cli(unittest.TestCase):
    def test_help_and_version(self):
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        for flag in ("--config", "--http-addr", "--tcp-addr", "--admin-addr", "--data-dir", "--memory-only",
                     "--test-mode", "--durability", "--shards", "probe", "quickstart"):
            self.assertIn(flag, r.stdout)
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^beava \d+\.\d+\.\d+ \(revision [0-9a-f]+|unknown\)")

    def test_unknown_flag_and_bad_values(self):
        r = run(["--frobnicate"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--frobnicate", r.stderr)
        r = run(["--http-addr", "nonsense"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--http-addr", r.stderr)
        r = run(["--memory-only"], env={"BEAVA_TCP_PORT": "99999"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("BEAVA_TCP_PORT", r.stderr)
        r = run(["--config", "/nonexistent/beava.yaml"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/nonexistent/beava.yaml", r.stderr)

    def test_yaml_errors_name_the_key(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("listen_addr: 127.0.0.1:0\ntcp:\n  port: 0\n  bogus: 1\n")
        try:
            r = run(["--config", f.name])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("tcp.bogus", r.stderr)
            with open(f.name, "w") as g:
                g.write("log_level: loud\n")
            r = run(["--config", f.name])
            self.assertIn("log_level", r.stderr)
            with open(f.name, "w") as g:
                g.write("durability: sometimes\n")
            r = run(["--config", f.name])
            self.assertIn("durability", r.stderr)
            with open(f.name, "w") as g:
                g.write("listen_addr: [unclosed\n")
            r = run(["--config", f.name])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("line", r.stderr)
        finally:
            os.unlink(f.name)


class Precedence(unittest.TestCase):
    def test_flag_beats_env_beats_yaml(self):
        p_yaml, p_env, p_flag = free_port(), free_port(), free_port()
        cfg = "listen_addr: 127.0.0.1:%d\nadmin_addr: 127.0.0.1:0\n" % p_yaml
        with Beava(config_text=cfg, http_addr="127.0.0.1:%d" % p_env) as b:
            self.assertEqual(b.http_addr_bound, "127.0.0.1:%d" % p_env)   # env beats YAML
        with Beava(config_text=cfg, http_addr="127.0.0.1:%d" % p_env, args=["--http-addr", "127.0.0.1:%d" % p_flag]) as b:
            self.assertEqual(b.http_addr_bound, "127.0.0.1:%d" % p_flag)  # flag beats env
        # YAML beats default when no env is set
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "b.yaml")
            with open(path, "w") as f:
                f.write(cfg + "tcp:\n  enabled: false\n")
            proc = subprocess.Popen([BEAVA_BIN, "--config", path, "--memory-only"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, text=True)
            try:
                bound = None
                for line in proc.stdout:
                    obj = json.loads(line)
                    if obj["kind"] == "server.http_bound":
                        bound = obj["addr"]
                        break
                self.assertEqual(bound, "127.0.0.1:%d" % p_yaml)
            finally:
                proc.terminate()
                self.assertEqual(proc.wait(10), 0)

    def test_bound_lines_and_clean_exit(self):
        b = Beava()
        b.start()
        self.assertRegex(b.http_addr_bound, r"^127\.0\.0\.1:\d+$")
        self.assertNotEqual(b.http_addr_bound.split(":")[1], "0")
        self.assertRegex(b.admin_addr_bound, r"^127\.0\.0\.1:\d+$")
        self.assertEqual(b.stop(), 0)
        kinds = [json.loads(l)["kind"] for l in b.lines if l.startswith("{")]
        self.assertIn("server.ready", kinds)
        self.assertIn("server.stopped", kinds)


class Probe(unittest.TestCase):
    def test_probe_exit_codes(self):
        with Beava() as b:
            r = run(["probe", "--admin-addr", b.admin_addr_bound])
            self.assertEqual(r.returncode, 0, r.stderr)
        r = run(["probe", "--admin-addr", "127.0.0.1:%d" % free_port()])
        self.assertNotEqual(r.returncode, 0)


class Quickstart(unittest.TestCase):
    def test_quickstart_no_file(self):
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([BEAVA_BIN, "quickstart", "--no-file"], capture_output=True, text=True, cwd=d, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('"page_views_24h":5', r.stdout)
            self.assertIn("curl", r.stdout)
            self.assertEqual(os.listdir(d), [])
            r = subprocess.run([BEAVA_BIN, "quickstart"], capture_output=True, text=True, cwd=d, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(os.listdir(d), ["beava_quickstart.sh"])


if __name__ == "__main__":
    main()
