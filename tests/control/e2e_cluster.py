#!/usr/bin/env python3
"""End-to-end test of the rolling cluster deploy (`beava-control cluster deploy`, issue 14 item 6),
all real parts on loopback.

A docker-registry (htpasswd), images of the real server built with packaging/oci/build-image
(umoci) and pushed with skopeo, one real nats-server with JetStream, and three beava-control
daemons (bwrap runtime, their own state dirs, data dirs and ports), each running one node of a
3-node beava cluster (8 partitions, replicas 2) from a beava.yaml with a `cluster:` section
passed as runtime.config. The CLI rolls from a config listing the three control ports.

  bring-up   `cluster deploy A` on three empty hosts: one after the other, each gated; the
             manifests are registered by the first host and found present by the others.
  roll       `cluster deploy B` (by digest) while a client pushes through every node and reads
             every pushed entity back from another node right after each ack: every host runs
             B, the cluster step gated each host, no push or read failed, every read saw the
             pushes acknowledged before it, and the counts are exact on every node afterwards.
             Running the same command again skips every host.
  stop       an image that fails the gate on host 2 (it carries BEAVA_CLUSTER_NODE_ID=n1 in its
             environment, right for h1 only): h1 runs it, h2's deploy is rolled back by its own
             daemon (B runs again, its data restored), h3 is not touched (no deploy in its
             history), the CLI exits 1 naming h2; the counts are still exact.
  refuse     a roll while a host is down touches no host.
  gate       the cluster step against tests/control/fake_beava.c as a node that starts behind:
             it waits until lag 0; a node that applies nothing fails on runtime.ready_stall_s
             and is rolled back; a server that is another node than cluster.node_id too.

Skips (exit 0) only while the beava binary is not built. BEAVA_BIN, BEAVA_CONTROL_BIN,
BEAVA_SOURCE_DIR and FAKE_BEAVA_BIN are set by CTest.
"""
import json, os, random, shutil, socket, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_control as E  # noqa: E402
from e2e_control import check, log, steps_of, step, Control, http, run  # noqa: E402

NODES = ["n1", "n2", "n3"]
EPHEMERAL_PORT = E.free_port
PARTITIONS = 8
SESSIONS = 40

MANIFEST = """order: 10
events:
  PageView:
    fields: {session_id: str, path: str, dwell_ms: i64}
tables:
  SiteMetrics:
    source: PageView
    key: []
    features:
      page_views_24h: {op: count, window: 24h}
  SessionViews:
    source: PageView
    key: session_id
    features:
      sv_count: {op: count}
"""


def low_port(rng=random.Random(os.getpid())):
    """A free port below the kernel's ephemeral range: the beava nodes keep opening outgoing
    connections (NATS, forwarded reads), and one of them can take a port free_port() handed
    out (it comes from that range) before the daemon binds it."""
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(1000):
        port = rng.randrange(max(1024, lo - 12000), lo - 1)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    return EPHEMERAL_PORT()


def start_nats(tmp):
    port = E.free_port()
    nlog = open(f"{tmp}/nats.log", "w")
    p = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-js", "-sd", f"{tmp}/nats",
                          "-a", "127.0.0.1", "-p", str(port)], stdout=nlog, stderr=subprocess.STDOUT)
    E.procs.append(p)
    for _ in range(100):
        if "Server is ready" in open(f"{tmp}/nats.log").read():
            break
        time.sleep(0.1)
    check("Server is ready" in open(f"{tmp}/nats.log").read(), "nats-server with JetStream up")
    return f"nats://127.0.0.1:{port}"


class Client(threading.Thread):
    """Pushes PageView through a random node; right after each ack reads the session's row from
    another random node and checks it counts at least the pushes acknowledged so far."""

    def __init__(self, hosts):
        super().__init__(daemon=True)
        self.hosts = hosts
        self.stop = False
        self.acked, self.unknown, self.closed = {}, {}, []
        self.push_errors, self.read_errors, self.stale = [], [], []
        self.reads = 0
        self.rng = random.Random(7)

    def run(self):
        i = 0
        while not self.stop:
            sid = f"s{i % SESSIONS}"
            h = self.rng.choice(self.hosts)
            st, body = http("POST", f"http://127.0.0.1:{h.http_port}/push/PageView",
                            {"session_id": sid, "path": "/", "dwell_ms": i}, timeout=30)
            if st == 200:
                self.acked[sid] = self.acked.get(sid, 0) + 1
            elif st == 0:
                # the connection closed without an answer: the push may or may not be applied
                self.unknown[sid] = self.unknown.get(sid, 0) + 1
                self.closed.append((h.name, "push", body, time.strftime("%H:%M:%S")))
            else:
                self.push_errors.append((h.name, st, body, time.strftime("%H:%M:%S")))
            i += 1
            r = self.rng.choice(self.hosts)
            for attempt in range(2):  # a read is idempotent: a client retries a closed connection once
                st, row = http("POST", f"http://127.0.0.1:{r.http_port}/get", {"table": "SessionViews", "key": sid},
                               timeout=30)
                if st != 0:
                    break
                self.closed.append((r.name, "get", row, time.strftime("%H:%M:%S")))
            self.reads += 1
            if st != 200 or not isinstance(row, dict):
                self.read_errors.append((r.name, st, row, time.strftime("%H:%M:%S")))
            elif (row.get("sv_count") or 0) < self.acked.get(sid, 0):
                self.stale.append((r.name, sid, row.get("sv_count"), self.acked.get(sid)))


def counts_exact(hosts, acked, unknown, what):
    """Every node answers the same count for every session: every acknowledged push, plus at
    most the pushes whose connection closed unanswered (none, unless the client saw some)."""
    bad, seen = [], {}
    for h in hosts:
        for sid in sorted(set(acked) | set(unknown)):
            st, row = http("POST", f"http://127.0.0.1:{h.http_port}/get", {"table": "SessionViews", "key": sid})
            n = row.get("sv_count") if st == 200 and isinstance(row, dict) else None
            if n is None or not acked.get(sid, 0) <= n <= acked.get(sid, 0) + unknown.get(sid, 0) or \
                    seen.setdefault(sid, n) != n:
                bad.append((h.name, sid, st, row, acked.get(sid, 0), unknown.get(sid, 0)))
        st, row = http("POST", f"http://127.0.0.1:{h.http_port}/get", {"table": "SiteMetrics", "key": ""})
        total = row.get("page_views_24h") if st == 200 and isinstance(row, dict) else None
        if total is None or total != sum(seen.values()):
            bad.append((h.name, "SiteMetrics", st, row, sum(seen.values())))
    check(not bad, f"{what}: exact counts, the same through every node ({sum(acked.values())} acked pushes"
          f"{', %d unanswered' % sum(unknown.values()) if unknown else ''})", bad[:5])


def roll(roll_cfg, *args):
    p = subprocess.run([E.CTL, "--config", roll_cfg, "cluster", *args], capture_output=True, text=True,
                       env=E.clean_env(), timeout=600)
    log("\n".join("    " + line for line in p.stdout.splitlines()[-60:]))
    if p.stderr.strip():
        log("    stderr: " + p.stderr.strip()[-2000:])
    return p


def cluster_of(h):
    return http("GET", f"http://127.0.0.1:{h.admin_port}/cluster")[1]


def gate_phase(tmp, repo, build_push):
    """The cluster step's waiting and stall paths, against tests/control/fake_beava.c as a cluster
    node whose partitions start behind and apply a few sequences per look (or none)."""
    log("# gate")
    build_push("fake-slow", "d" * 40, binary=E.FAKE_BEAVA,
               env=["FAKE_BEAVA_CLUSTER_NODE=n1", "FAKE_BEAVA_CLUSTER_LAG=30", "FAKE_BEAVA_CLUSTER_STEP=3"])
    build_push("fake-stuck", "e" * 40, binary=E.FAKE_BEAVA,
               env=["FAKE_BEAVA_CLUSTER_NODE=n1", "FAKE_BEAVA_CLUSTER_LAG=30", "FAKE_BEAVA_CLUSTER_STEP=0"])
    build_push("fake-n2", "f" * 40, binary=E.FAKE_BEAVA, env=["FAKE_BEAVA_CLUSTER_NODE=n2"])
    c = Control(tmp, "gate", repo, manifests=f"{tmp}/empty-manifests", extra_yaml="cluster: {node_id: n1}\n")
    os.makedirs(f"{tmp}/empty-manifests")
    c.start("runtime.ready_stall_s=2")
    p = c.cli("deploy", f"{repo}:fake-slow", "--wait")
    d = c.last(1)[0]
    cs = step(d, "cluster") or {}
    det = cs.get("detail", {})
    check(p.returncode == 0 and d["status"] == "succeeded" and det.get("lag_at_start") == 60 and det.get("lag") == 0
          and det.get("owned_partitions") == 2,
          "a node 30 sequences behind on each of its 2 partitions: the cluster step waited until lag 0", (d["status"], cs))
    check("60 stream sequence(s) behind at start, 0 now" in p.stdout, "the CLI shows the catch-up", p.stdout[-1500:])
    p = c.cli("deploy", f"{repo}:fake-stuck", "--wait")
    d = c.last(1)[0]
    cs = step(d, "cluster") or {}
    check(p.returncode == 1 and d["status"] == "rolled_back" and not cs.get("ok") and
          "no partition applied anything for 2s (runtime.ready_stall_s), 60 stream sequences behind" in
          cs.get("message", ""), "a node that applies nothing: the cluster step fails on the stall limit, rolled back",
          (d["status"], cs.get("message")))
    rc = step(d, "rollback.cluster") or {}
    check(rc.get("ok") and c.status()["current"]["image"].endswith("fake-slow"),
          "the previous release runs again, its own cluster step passed", rc)
    p = c.cli("deploy", f"{repo}:fake-n2", "--wait")
    d = c.last(1)[0]
    check(p.returncode == 1 and d["status"] == "rolled_back" and
          "the server runs cluster node 'n2'; this host's is 'n1'" in (step(d, "cluster") or {}).get("message", ""),
          "a server that is another node than cluster.node_id is rolled back", d.get("message"))
    c.stop()
    c.kill_server()


def scenario(tmp):
    t_all = time.time()
    if not shutil.which("nats-server"):
        check(False, "nats-server is installed (Debian: nats-server)")
        return 1
    run("htpasswd", "-Bbc", f"{tmp}/htpasswd", "ci", "ci-password")
    reg = E.start_registry(tmp, "registry", f"{{htpasswd: {{realm: e2e, path: {tmp}/htpasswd}}}}")
    repo = f"{reg}/beava"
    mdir = f"{tmp}/manifests"
    os.makedirs(mdir)
    with open(f"{mdir}/10-views.yaml", "w") as f:
        f.write(MANIFEST)

    def build_push(tag, revision, env=(), binary=None):
        args = [E.BUILD_IMAGE, "--binary", binary or E.BEAVA, "--revision", revision, "--version", "0.0.1",
                "--layout", f"{tmp}/layout-{tag}", "--push", f"{repo}:{tag}", "--creds", E.CREDS]
        for e in env:
            args += ["--env", e]
        return run(*args).stdout.strip().splitlines()[-1]

    dig_a = build_push("sha-a", "a" * 40)
    dig_b = build_push("sha-b", "b" * 40)
    dig_c = build_push("sha-c", "c" * 40, env=["BEAVA_CLUSTER_NODE_ID=n1"])
    url = start_nats(tmp)
    hosts = []
    for i, n in enumerate(NODES):
        conf = f"{tmp}/beava-h{i + 1}.yaml"
        with open(conf, "w") as f:
            f.write(f"""cluster:
  nats_url: {url}
  name: e2e
  node_id: {n}
  nodes: [{", ".join(NODES)}]
  partitions: {PARTITIONS}
  replicas: 2
snapshot:
  interval_s: 5
""")
        os.chmod(conf, 0o644)
        h = Control(tmp, f"h{i + 1}", repo, manifests=mdir, server_config=conf,
                    extra_yaml=f"cluster: {{node_id: {n}}}\n")
        h.start("runtime.stop_grace_s=10")
        hosts.append(h)
    roll_cfg = f"{tmp}/roll.yaml"
    with open(roll_cfg, "w") as f:
        f.write(f"state_dir: {tmp}/roll-state\ncluster:\n  host_timeout_s: 120\n  hosts:\n")
        for h in hosts:
            f.write(f"    - {{name: {h.name}, url: 'http://127.0.0.1:{h.cport}', secret_file: {h.dir}/secret}}\n")

    # ---- bring-up: three empty hosts, one after the other --------------------------------------
    log("# bring-up")
    p = roll(roll_cfg, "deploy", f"{repo}:sha-a")
    check(p.returncode == 0 and "roll done" in p.stdout, "bring-up: `cluster deploy A` on three empty hosts", p.stderr)
    for h in hosts:
        d = h.last(1)[0]
        cs = step(d, "cluster") or {}
        check(d["status"] == "succeeded" and h.status()["current"]["digest"] == dig_a and cs.get("ok"),
              f"{h.name}: A runs, the deploy passed the cluster step", (d["status"], steps_of(d)))
        c = cluster_of(h)
        check(isinstance(c, dict) and c.get("node") == f"n{h.name[1]}" and c.get("caught_up") is True,
              f"{h.name}: the server is cluster node n{h.name[1]} (runtime.config passed through), caught up", c)
    first = [s for s in hosts[0].last(1)[0]["steps"] if s["step"].startswith("apply ")]
    later = [s for s in hosts[1].last(1)[0]["steps"] if s["step"].startswith("apply ")]
    check(first and first[0].get("detail", {}).get("result") == "additive",
          "h1 registered the manifests (through the log)", first)
    check(later and later[0].get("message") == "no changes: skipped",
          "h2 found them registered already (the registry came through the log)", later)

    # ---- roll B under a pushing and reading client -----------------------------------------------
    log("# roll")
    client = Client(hosts)
    client.start()
    time.sleep(1.5)
    t0 = time.time()
    p = roll(roll_cfg, "deploy", f"{repo}@{dig_b}")
    took = time.time() - t0
    time.sleep(1.0)
    client.stop = True
    client.join(timeout=120)
    check(p.returncode == 0, f"`cluster deploy B` rolled over three hosts in {took:.1f}s", p.stderr)
    for h in hosts:
        d = h.last(1)[0]
        cs = step(d, "cluster") or {}
        check(d["status"] == "succeeded" and h.status()["current"]["digest"] == dig_b and cs.get("ok") and
              "lag" in cs.get("detail", {}) and cs["detail"]["lag"] == 0 and cs["detail"].get("node") == f"n{h.name[1]}",
              f"{h.name}: B runs; its cluster step saw node n{h.name[1]} reach lag 0", (d["status"], cs))
    log(f"# client: {sum(client.acked.values())} acked pushes, {client.reads} reads, "
        f"{len(client.push_errors)} push errors, {len(client.read_errors)} read errors, {len(client.stale)} stale, "
        f"connections closed unanswered: {client.closed}")
    check(len(client.closed) <= 3, "at most a few connections closed without an answer by a node being replaced "
          "(reads are retried; such a push counts as unanswered, never as acknowledged)", client.closed)
    check(sum(client.acked.values()) > 20 and not client.push_errors,
          "the client's pushes through every node during the roll: all acknowledged", client.push_errors[:5])
    check(client.reads > 20 and not client.read_errors, "its reads through every node: no error",
          client.read_errors[:5])
    check(not client.stale, "every read saw every push acknowledged before it", client.stale[:5])
    counts_exact(hosts, client.acked, client.unknown, "after the roll")
    p = roll(roll_cfg, "deploy", f"{repo}@{dig_b}", "--json")
    doc = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    check(p.returncode == 0 and [x.get("status") for x in doc.get("hosts", [])] == ["skipped"] * 3,
          "the same roll again skips every host (already running the digest)", doc)

    # ---- a release that fails the gate on host 2 stops the roll ----------------------------------
    log("# stop")
    n_h3 = len(hosts[2].last(50))
    t0 = time.time()
    p = roll(roll_cfg, "deploy", f"{repo}@{dig_c}", "--json")
    doc = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    st = {x["host"]: x for x in doc.get("hosts", [])}
    check(p.returncode == 1 and doc.get("status") == "stopped" and doc.get("stopped_at") == "h2",
          f"the roll stopped at h2 ({time.time() - t0:.1f}s), exit 1", (p.returncode, doc))
    check(st.get("h1", {}).get("status") == "succeeded" and hosts[0].status()["current"]["digest"] == dig_c,
          "h1 runs the new release (right for n1)", st.get("h1"))
    d2 = hosts[1].last(1)[0]
    cs = step(d2, "cluster") or {}
    check(d2["status"] == "rolled_back" and st.get("h2", {}).get("status") == "rolled_back" and
          "this host's is 'n2'" in cs.get("message", "") and not cs.get("ok"),
          "h2: the cluster step failed (the server ran as n1) and its daemon rolled back", (d2["status"], cs))
    check("rollback.restore-data" in steps_of(d2) and hosts[1].status()["current"]["digest"] == dig_b and
          hosts[1].status()["state"] == "running", "h2 runs B again on its restored data", steps_of(d2))
    check(st.get("h3", {}).get("status") == "not_touched" and len(hosts[2].last(50)) == n_h3 and
          hosts[2].status()["current"]["digest"] == dig_b, "h3 not touched: no new deploy, B runs", st.get("h3"))
    c2 = cluster_of(hosts[1])
    check(isinstance(c2, dict) and c2.get("node") == "n2", "h2's server is n2 again", c2)
    counts_exact(hosts, client.acked, client.unknown, "after the stopped roll")

    # ---- refused before anything when a host is down ---------------------------------------------
    log("# refuse")
    hosts[2].stop()
    p = roll(roll_cfg, "deploy", f"{repo}@{dig_b}")
    check(p.returncode == 3 and "h3" in p.stderr and "no host was touched" in p.stderr and
          hosts[0].status()["current"]["digest"] == dig_c, "a roll while h3's daemon is unreachable touches no host",
          (p.returncode, p.stderr))
    hosts[2].start()
    p = roll(roll_cfg, "status", "--json")
    doc = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    check(p.returncode == 0 and [x.get("digest") for x in doc.get("hosts", [])] == [dig_c, dig_b, dig_b],
          "`cluster status`: each host's release", doc)
    for h in hosts:
        h.stop()
    gate_phase(tmp, repo, build_push)
    p = subprocess.run([E.CTL, "--config", os.path.join(E.SRC, "config", "cluster", "control-h1.yaml"), "config"],
                       capture_output=True, text=True, env=E.clean_env())
    cfg = json.loads(p.stdout) if p.returncode == 0 else {}
    check(cfg.get("cluster.node_id") == "n1" and [x["name"] for x in cfg.get("cluster.hosts", [])] == ["h1", "h2", "h3"]
          and cfg.get("runtime.config") == "/etc/beava/beava-h1.yaml",
          "the shipped config/cluster/control-h1.yaml loads (node n1, three hosts, its beava-h1.yaml)", p.stderr)
    return E.finish(hosts, t_all, tail=3000)


if __name__ == "__main__":
    E.scenario = scenario
    E.free_port = low_port  # every port the shared helpers hand out (Control, registry)
    E.entry()
