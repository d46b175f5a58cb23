#!/usr/bin/python3
"""Side-by-side benchmark: the Python ovs-monitor-ipsec and ours, same database, same stub.

For every (mode, N) each program gets its own freshly started ovsdb-server loaded with the same
N vxlan+PSK tunnels, and a fake root whose `usr/sbin/ipsec` is one counting stub that speaks
both programs' vocabularies (ours uses `statusall`/`addconn`/`whack`, Python `status`/`auto`).
The stub keeps state (loaded conns, SAs) so both programs' delete/down logic runs for real; in
Libreswan mode it also keeps each conn's `connalias=` and resolves a whack name that is no conn
to every conn with that alias, as pluto does (ours initiates a batch through one alias).

A step is converged when ipsec.conf holds the expected conns and the stub, called at least once in
the step, has seen no call for QUIET seconds; its time is the later of "file complete" and "last stub call", measured from
process start (cold) or from `ovs-vsctl` returning (+1, modify, -1). Calls are the stub calls
made in the step. RSS is VmHWM at the end; CPU is the monitor's own user+system time (the
stub's CPU is not in it). Our +1, modify and -1 start just after a periodic pass, once our CPU
has settled, so that a step's CPU holds no periodic pass; our cold start also waits for that.

VICI mode (`--modes vici`, ours only: Python has no VICI mode) runs a REAL charon in a fresh
network and mount namespace and our monitor beside it; the Python column is the Python monitor's
stroke mode at the same N (what the issue's "≥ 50× in VICI mode" compares against). Our end has
the higher address, so it loads and answers but initiates nothing (no IKE traffic to absent
peers). A step ends at the monitor's status write after its last action (from its own log);
"calls" are VICI messages; CPU of a step is the monitor's utime+stime across that step, and
charon's CPU over the same time is reported beside it; each step starts just after a periodic
pass, as in the stub modes.

Every mode ends with IDLE s in which nothing changes (two periodic passes): the monitor's CPU
per periodic pass, and the stub calls it makes (charon's CPU in VICI mode).

Static-key mode (`--ike-daemon=none`, ours only: Python has no such mode) runs the monitor in a
fresh network namespace and converges when `ip xfrm policy` shows the expected count; its floor
is `ip -batch` installing the same policies and states. Before each step the monitor must be
quiet (under 2 % of a core for QUIET s); "idle" is its CPU over XFRM_IDLE s in which nothing
changes, and each step's CPU is the monitor's across that step (started just after a periodic
pass, as in the other modes); how long `ovs-vsctl` itself
took (it reads every bridge, port and interface) is shown beside it. -1 ends when the policies are
gone (the SAs stay for the grace period by design). XFRM_BENCH_LOG=DIR keeps the monitor's
debug log there (what each pass did and how long it took).

usage: compare.py [--ours BIN] [--python SCRIPT] [--ours-only] [--modes stroke,libreswan,xfrm,vici] [--sizes 1,100,1000]
"""

import argparse
import calendar
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PY_MONITOR = "/usr/share/openvswitch/scripts/ovs-monitor-ipsec"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
QUIET = 3.0
CPU_SETTLE = 1.0
# A step that takes longer is cut off (BENCH_STEP_LIMIT, seconds): ours fails the run; the Python
# monitor's row then reads "> limit" and its ratio is a lower bound, and its later steps are skipped.
STEP_LIMIT = float(os.environ.get("BENCH_STEP_LIMIT", "900"))
# xfrm: the idle window whose CPU is reported (two periodic passes, 15 s apart).
XFRM_IDLE = 32.0
# Every mode: the window in which nothing changes whose CPU is reported per periodic pass.
# The passes run every 15 s, so a 30 s window holds exactly two.
IDLE = 30.0
IDLE_PASSES = 2
PERIOD = IDLE / IDLE_PASSES


class StepTimeout(Exception):
    """A step did not converge within STEP_LIMIT; carries the calls made so far."""

    def __init__(self, calls):
        super().__init__(f"step did not converge in {STEP_LIMIT} s")
        self.calls = calls


# One stub for both programs. Times come from bash's clock (no fork per call).
STUB = r"""#!/bin/bash
R=$(cd "$(dirname "$0")/../.." && pwd); S=$R/stub; mkdir -p $S
exec 9>>$S/lock; flock 9
touch $S/loaded $S/sas $S/active $S/aliases
echo "$EPOCHREALTIME ipsec $*" >> $R/ipsec-calls.log
drop() { grep -vxF "$1" $S/$2 > $S/$2.n; mv $S/$2.n $S/$2; }
forget() { grep -vxF -f $S/gone $S/$1 > $S/$1.n; mv $S/$1.n $S/$1; }
# Libreswan: like pluto, a whack name is a conn, else every loaded conn with that alias.
resolve() {
  if grep -qxF "$1" $S/loaded; then echo "$1"; return; fi
  awk -v x="$1" 'FILENAME == ARGV[1] { l[$1] = 1; next } ($1 in l) { for (i = 2; i <= NF; i++) if ($i == x) { print $1; next } }' $S/loaded $S/aliases
}
case "$1" in
  --version) echo "Libreswan 4.10"; exit 0 ;;
  update|reload)   # strongSwan: load ipsec.conf; an SA per conn that has none (trap routed)
    grep -oP '^conn \K\S+' $R/etc/ipsec.conf | grep -v -e '^%default$' -e '^prevent_' > $S/loaded
    awk 'FILENAME == ARGV[1] { have[$1]=1; print; n=($2>n?$2:n); next }
         !($1 in have) { n++; print $1, n }' $S/sas $S/loaded > $S/sas.n
    mv $S/sas.n $S/sas; exit 0 ;;
  stroke) t=$3; name=${t%[\{\[]*}; id=${t##*[\{\[]}; id=${id%[\}\]]}; drop "$name $id" sas; exit 0 ;;
  statusall|status)
    if [ -e $S/libreswan ]; then   # pluto 4.x format: loaded conns, totals, then states
      while read c; do echo "000 \"$c\": 198.17.0.1/32:UDP/0-65535===198.17.0.1...198.18.0.1===198.18.0.1/32:UDP/0-65535; unrouted; eroute owner: #0"; done < $S/loaded
      echo "000 Total IPsec connections: loaded $(wc -l < $S/loaded), active $(wc -l < $S/active)"
      n=1
      while read c; do
        echo "000 #$n: \"$c\":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); newest; idle;"
        echo "000 #$((n+1)): \"$c\":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); newest; eroute owner; IKE SA #$n; idle;"
        echo "000 #$((n+1)): \"$c\" esp.248d1071@198.18.0.1 esp.4e68b7a9@198.17.0.1 Traffic: ESPin=0B ESPout=0B ESPmax=2^63B"
        n=$((n+2))
      done < $S/active
      exit 0
    fi
    if [ "$1" = status ]; then   # strongSwan `status`: trap-routed children, as with no peer
      echo "Routed Connections:"
      awk '{ printf "%12s{%s}:  ROUTED, TRANSPORT, reqid %s\n", $1, $2, $2 }' $S/sas
      exit 0
    fi
    echo "Connections:"
    awk '{ printf "%12s:  %%any...192.0.2.2  IKEv2\n%12s:   child:  dynamic === dynamic TRANSPORT\n", $1, $1 }' $S/loaded
    echo "Security Associations ($(wc -l < $S/sas) up, 0 connecting):"
    awk '{ printf "%12s[%s]: ESTABLISHED 1 second ago, 192.0.2.1...192.0.2.2\n%12s{%s}:  INSTALLED, TRANSPORT, reqid %s, ESP SPIs: c0dc3410_i cb107296_o\n", $1, $2, $1, $2, $2 }' $S/sas
    exit 0 ;;
  addconn) # pluto keeps the connalias= each conn had in the config it was added from
    conf=$(echo "$*" | grep -oP -- '--config \K\S+'); shift; : > $S/names
    while [ $# -gt 0 ]; do case "$1" in --ctlsocket|--config) shift 2;; *) echo "$1" >> $S/names; shift;; esac; done
    awk '/^conn / { c = $2 } /^[ \t]+connalias=/ { v = $0; sub(/^[ \t]+connalias="?/, "", v); sub(/"$/, "", v); print c, v }' $conf \
      | awk 'FILENAME == ARGV[1] { n[$1] = 1; next } ($1 in n)' $S/names - >> $S/aliases
    cat $S/names >> $S/loaded; sort -u -o $S/loaded $S/loaded; exit 0 ;;
  whack) # ours initiates -out- (by name or alias); the peer's initiation brings -in- up
    c=$(echo "$*" | grep -oP -- '--name \K\S+')
    case "$*" in *--initiate*) resolve "$c" | sed 'p; s/-out-/-in-/' >> $S/active; sort -u -o $S/active $S/active ;; esac
    exit 0 ;;
esac
case "$*" in
  *--start*) for f in loaded active; do echo "${@: -1}" >> $S/$f; sort -u -o $S/$f $S/$f; done ;;
  *--delete*) resolve "${@: -1}" > $S/gone; forget active; forget loaded
    awk 'FILENAME == ARGV[1] { g[$1] = 1; next } !($1 in g)' $S/gone $S/aliases > $S/aliases.n; mv $S/aliases.n $S/aliases ;;
esac
exit 0
"""


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


class Db:
    """A private ovsdb-server on a unix socket, loaded with N vxlan tunnels."""

    def __init__(self, top, n, extra=()):
        self.dir = os.path.join(top, "db")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "db.sock")
        run("ovsdb-tool", "create", os.path.join(self.dir, "conf.db"), SCHEMA)
        self.proc = subprocess.Popen(
            ["ovsdb-server", os.path.join(self.dir, "conf.db"), f"--remote=punix:{self.sock}",
             "--no-chdir", f"--unixctl={self.dir}/db.ctl", f"--log-file={self.dir}/db.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while not os.path.exists(self.sock):
            if time.time() > deadline:
                sys.exit("ovsdb-server did not start")
            time.sleep(0.01)
        self.vsctl("init", "--", "add-br", "br0")
        # One transaction per 1000 ports over the JSON-RPC socket: ovs-vsctl's add-port costs
        # O(ports already there) each and timed out loading 10,000.
        opts = [e.removeprefix("options:").split("=", 1) for e in extra]
        for lo in range(0, n, 1000):
            ops, ports = [], []
            for i in range(lo, min(n, lo + 1000)):
                options = ["map", [["remote_ip", ip(i)], ["psk", f"secret{i}"], *opts]]
                ops += [{"op": "insert", "table": "Interface", "uuid-name": f"i{i}",
                         "row": {"name": f"vx{i}", "type": "vxlan", "options": options}},
                        {"op": "insert", "table": "Port", "uuid-name": f"p{i}",
                         "row": {"name": f"vx{i}", "interfaces": ["named-uuid", f"i{i}"]}}]
                ports.append(["named-uuid", f"p{i}"])
            ops.append({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
                        "mutations": [["ports", "insert", ["set", ports]]]})
            self.transact(ops)

    def transact(self, ops):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(json.dumps({"method": "transact", "params": ["Open_vSwitch", *ops],
                                  "id": 0}).encode())
            buf = b""
            while True:
                buf += s.recv(1 << 20)
                try:
                    reply = json.loads(buf)
                    break
                except json.JSONDecodeError:
                    continue
        if reply.get("error") or any("error" in r for r in reply["result"] if r):
            sys.exit(f"loading the database failed: {str(reply)[:500]}")

    def vsctl(self, *args):
        run("ovs-vsctl", f"--db=unix:{self.sock}", "--no-wait", "--timeout=120", *args)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def ip(i):
    return f"198.18.{i // 250 % 250}.{i % 250 + 1}" if i < 62500 else f"198.19.{i // 250 % 250}.{i % 250 + 1}"


class Root:
    """The fake root prefix with the counting stub."""

    def __init__(self, top, mode):
        self.root = os.path.join(top, "root")
        for d in ["etc/strongswan.d", "etc/ipsec.d", "usr/sbin", "sbin", "run/pluto", "stub"]:
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.symlink("/usr/sbin/ip", os.path.join(self.root, "sbin/ip"))
        stub = os.path.join(self.root, "usr/sbin/ipsec")
        with open(stub, "w") as f:
            f.write(STUB)
        os.chmod(stub, 0o755)
        if mode == "libreswan":
            open(os.path.join(self.root, "stub/libreswan"), "w").close()
            run("certutil", "-N", "--empty-password", "-d", f"sql:{self.root}/etc/ipsec.d")
        self.conf = os.path.join(self.root, "etc/ipsec.conf")
        self.log = os.path.join(self.root, "ipsec-calls.log")

    def conns(self):
        try:
            with open(self.conf) as f:
                return [m for m in re.findall(r"^conn (\S+)", f.read(), re.M) if m.startswith("vx")]
        except FileNotFoundError:
            return []

    def calls(self):
        try:
            with open(self.log) as f:
                return [l.split(" ", 1) for l in f.read().splitlines()]
        except FileNotFoundError:
            return []


def command(prog, mode, ours, db, root, top):
    rundir = os.path.join(top, "run")
    os.makedirs(rundir, exist_ok=True)
    common = [f"unix:{db.sock}", f"--root-prefix={root.root}", "--no-restart-ike-daemon",
              f"--log-file={top}/mon.log", "-vconsole:off", "--no-chdir"]
    if prog == "python":
        argv = [PY_MONITOR, *common, f"--ike-daemon={mode}"]
        if mode == "libreswan":
            argv += ["--ipsec-conf=/etc/ipsec.conf", "--ipsec-secrets=/etc/ipsec.secrets",
                     "--ipsec-d=/etc/ipsec.d", "--ipsec-ctl=/run/pluto/pluto.ctl"]
        argv.append("-vfile:info")
    else:
        argv = [ours, *common, f"--unixctl={rundir}/m.ctl", "-vfile:info"]
        argv += ["--ike-daemon=strongswan", "--strongswan-mode=stroke"] if mode == "stroke" \
            else [f"--ike-daemon={mode}"]
    env = dict(os.environ, OVS_RUNDIR=rundir, OVS_LOGDIR=rundir)
    return argv, env


def converge(root, t0, want, start_calls, pid=None, cpu0=0):
    """Waits until ipsec.conf matches `want` and the stub is quiet; returns (seconds, calls,
    monitor CPU). The CPU (of `pid`, when given, from `cpu0`) is taken CPU_SETTLE after the
    step's last stub call: late enough for the status write that follows it, early enough that the periodic
    pass seldom falls inside (when it does, its `statusall` shows as one more call)."""
    t_files = None
    last_n, last_change = len(root.calls()), time.time()
    cpu_at = []  # (time, CPU ns) samples
    while True:
        now = time.time()
        if pid:
            cpu_at.append((now, cpu_ns(pid)))
        if now - t0 > STEP_LIMIT:
            raise StepTimeout(len(root.calls()) - start_calls)
        if t_files is None and want(root.conns()):
            t_files = now
        n = len(root.calls())
        if n != last_n:
            last_n, last_change = n, now
        # Every step makes at least one call in both programs; before it, quiet means nothing.
        if t_files is not None and n > start_calls and now - last_change >= QUIET:
            break
        time.sleep(0.002)
    calls = root.calls()[start_calls:]
    t_last = float(calls[-1][0]) if calls else t0
    cpu = next((c for t, c in cpu_at if t >= t_last + CPU_SETTLE), cpu0) - cpu0
    return max(t_files, t_last) - t0, len(calls), cpu / 1e9


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm / 1024.0, cpu


def bench_stub(prog, mode, n, ours):
    top = tempfile.mkdtemp(prefix=f"bench-{mode}-{prog}-{n}-")
    db = Db(top, n)
    root = Root(top, mode)
    argv, env = command(prog, mode, ours, db, root, top)
    r = {}
    t0 = time.time()
    mon = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Ours is the process itself; the Python monitor's CPU per step is not reported.
    pid = mon.pid if prog == "ours" else None
    base = 0

    def step(key, want, *vsctl):
        nonlocal base
        if pid and vsctl:
            # Start right after a periodic pass (PERIOD s apart) so that none falls inside
            # the step's CPU window.
            deadline = time.time() + PERIOD + 5
            while len(root.calls()) == base and time.time() < deadline:
                time.sleep(0.05)
            settle(pid)
            base = len(root.calls())
        cpu0 = cpu_ns(pid) if pid else 0
        t = t0
        if vsctl:
            db.vsctl(*vsctl)
            t = time.time()
        r[key] = converge(root, t, want, base, pid, cpu0)
        if pid and key == "cold":
            # On a loaded machine a gap inside our cold start can outlast QUIET (Libreswan at
            # 10,000: the rest of it landed in +1): it ends when our CPU has settled too.
            settle(pid)
            calls = root.calls()[base:]
            if len(calls) > r[key][1]:
                r[key] = (float(calls[-1][0]) - t, len(calls), r[key][2])
        base = len(root.calls())

    conf_has = lambda s: (lambda c: s in open(root.conf).read())
    try:
        step("cold", lambda c: len(c) >= 2 * n)
        step("add", lambda c: len(c) >= 2 * n + 2, "add-port", "br0", "vxnew", "--", "set",
             "interface", "vxnew", "type=vxlan", "options:remote_ip=198.20.0.1", "options:psk=new")
        step("modify", conf_has("198.20.0.2"), "set", "interface", "vxnew",
             "options:remote_ip=198.20.0.2")
        step("del", lambda c: len(c) == 2 * n, "del-port", "br0", "vxnew")
        if pid:  # the periodic pass on an unchanged host: its CPU and its stub calls
            settle(pid)
            c, k = cpu_ns(pid), len(root.calls())
            time.sleep(IDLE)
            r["idle"] = ((cpu_ns(pid) - c) / 1e9 / IDLE_PASSES,
                         (len(root.calls()) - k) / IDLE_PASSES)
    except StepTimeout as e:
        if prog == "ours":
            sys.exit(str(e))
        r["timeout"] = (next(k for k in ("cold", "add", "modify", "del") if k not in r), e.calls)
    finally:
        r["rss"], r["cpu"] = proc_stats(mon.pid)
        mon.send_signal(signal.SIGTERM)
        try:
            mon.wait(10)
        except subprocess.TimeoutExpired:
            mon.kill()
            mon.wait()
        db.stop()
    shutil.rmtree(top, ignore_errors=True)
    return r


LOCAL = "198.17.0.1"
PEER_GEN = "0123456789abcdef0123456789abcdef"


def xfrm_counts(ns):
    """(policies, SAs) in the namespace's kernel."""
    pol = run("ip", "-n", ns, "xfrm", "policy", "count").split("\n")[0]
    sas = run("ip", "-n", ns, "xfrm", "state", "count")
    return (sum(int(x) for x in re.findall(r"(?:IN|OUT|FWD)\s+(\d+)", pol)),
            int(re.search(r"count (\d+)", sas).group(1)))


def wait_xfrm(ns, t0, done, watch=(0, 1)):
    """Polls the kernel until `done(policies)` holds and none of the `watch`ed counts (0:
    policies, 1: SAs) has moved for QUIET s; returns (seconds from `t0` to the last change,
    (policies, SAs))."""
    last, t_last = xfrm_counts(ns), time.time()
    while not done(last[0]) or time.time() - t_last < QUIET:
        if time.time() - t0 > STEP_LIMIT:
            sys.exit("xfrm step did not converge")
        time.sleep(0.002)
        c = xfrm_counts(ns)
        if any(c[i] != last[i] for i in watch):
            t_last = time.time()
        last = c
    return t_last - t0, last


def settle(pid, limit=180.0):
    """Waits (at most `limit` s) until `pid` used under 2 % of a core over QUIET s: the tail of
    the cold start (the N-row status write and its echo) must not land in the next step."""
    t0 = time.time()
    while time.time() - t0 < limit:
        c = cpu_ns(pid)
        time.sleep(QUIET)
        if cpu_ns(pid) - c < 0.02 * QUIET * 1e9:
            return


def after_periodic_pass(pid):
    """Waits for the next periodic pass (our CPU moving after it settled, at most PERIOD s
    away) and its end: a step started then has no periodic pass inside its CPU window."""
    settle(pid)
    c, deadline = cpu_ns(pid), time.time() + PERIOD + 5
    while cpu_ns(pid) - c < 2e6 and time.time() < deadline:
        time.sleep(0.05)
    settle(pid)


def floor_batches(dump, n):
    """`ip -batch` inputs doing what our cold start does: an inbound and an outbound SA per
    tunnel (same algorithm, ESN, replay window, selector; dummy keys and SPIs), then the very
    policies ours installed (from `ip xfrm policy`)."""
    sas = []
    key = "0x" + "5a" * 20
    for i in range(n):
        for k, (src, dst) in enumerate([(ip(i), LOCAL), (LOCAL, ip(i))]):
            sas.append(f"xfrm state add src {src} dst {dst} proto esp spi {0x1000 + 2 * i + k} "
                       f"reqid 1331057408 mode transport aead 'rfc4106(gcm(aes))' {key} 128 "
                       f"replay-window 128 flag esn sel src {src} dst {dst} proto udp dport 4789")
    pols = ["xfrm policy add " + " ".join(rec.split())
            for rec in re.split(r"\n(?=src )", dump.strip())]
    return ["\n".join(sas) + "\n", "\n".join(pols) + "\n"]


def netns(name):
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    run("ip", "-n", name, "addr", "add", f"{LOCAL}/32", "dev", "lo")


def bench_xfrm(n, ours, floor=True):
    """Ours with --ike-daemon=none in a fresh netns, converged when the kernel's policy and SA
    counts stop moving; the floor is `ip -batch` of the same SA and policy adds in another fresh
    netns (skipped with floor=False: 2036 s at N=10000 under TCG)."""
    top = tempfile.mkdtemp(prefix=f"bench-xfrm-{n}-")
    ns = os.path.basename(top)
    db = Db(top, n, [f"options:local_ip={LOCAL}", f"options:ipsec_peer_generation={PEER_GEN}"])
    root = Root(top, "none")
    argv, env = command("ours", "none", ours, db, root, top)
    if os.environ.get("XFRM_BENCH_LOG"):  # what each pass does and how long: the debug log
        argv = [a if a != "-vfile:info" else "-vfile:dbg" for a in argv]
    r = {}
    mon = None
    try:
        netns(ns)
        t0 = time.time()
        mon = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r["cold"] = wait_xfrm(ns, t0, lambda c: c > 0)
        pid = monitor_pid(mon.pid)
        per = r["cold"][1][0] // max(n, 1)
        dump = run("ip", "-n", ns, "xfrm", "policy")
        settle(pid)
        # Nothing changes for XFRM_IDLE s (two periodic passes and a full observation).
        c = cpu_ns(pid)
        time.sleep(XFRM_IDLE)
        r["idle"] = (cpu_ns(pid) - c) / 1e9

        def step(key, wait, *vsctl):
            after_periodic_pass(pid)
            c, t = cpu_ns(pid), time.time()
            db.vsctl(*vsctl)
            r[key + "-vsctl"] = time.time() - t  # the client's own share of the step
            r[key] = wait(t)
            r[key + "-cpu"] = (cpu_ns(pid) - c) / 1e9

        step("add", lambda t: wait_xfrm(ns, t, lambda c: c >= per * (n + 1)), "add-port", "br0",
             "vxnew", "--", "set", "interface", "vxnew", "type=vxlan",
             "options:remote_ip=198.20.0.1", "options:psk=new", f"options:local_ip={LOCAL}",
             f"options:ipsec_peer_generation={PEER_GEN}")
        on = lambda dst: run("ip", "-n", ns, "xfrm", "policy", "list", "dst", dst).strip() != ""

        def moved(t):
            while on("198.20.0.1/32") or not on("198.20.0.2/32"):
                if time.time() - t > STEP_LIMIT:
                    sys.exit("xfrm modify did not converge")
                time.sleep(0.002)
            return (time.time() - t, 0)

        step("modify", moved, "set", "interface", "vxnew", "options:remote_ip=198.20.0.2")
        # The policies go at once; the SAs stay for the grace period (--static-rekey-grace,
        # 60 s), so -1 ends at the last change of the policy count.
        step("del", lambda t: wait_xfrm(ns, t, lambda c: c <= per * n, watch=(0,)), "del-port",
             "br0", "vxnew")
        r["rss"], r["cpu"] = proc_stats(pid)
        r["floor"], r["floor_counts"] = None, (None, "not measured")
        if not floor:
            return r
        floor = ns + "-floor"
        netns(floor)
        # `ip xfrm` stops a batch at its first refused command (even with -force): where the
        # kernel has no esp4 the floor installs the policies only, while ours still pays for
        # its refused SA adds.
        r["floor"] = 0.0
        for k, text in enumerate(floor_batches(dump, n)):
            batch = os.path.join(top, f"floor{k}.batch")
            with open(batch, "w") as f:
                f.write(text)
            t = time.time()
            subprocess.run(["ip", "-n", floor, "-batch", batch],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r["floor"] += time.time() - t
        r["floor_counts"] = xfrm_counts(floor)
        assert r["floor_counts"][0] == r["cold"][1][0], "the floor installs the same policies"
        subprocess.run(["ip", "netns", "del", floor])
    finally:
        if mon:
            mon.send_signal(signal.SIGTERM)
            mon.wait()
        if os.environ.get("XFRM_BENCH_LOG"):
            shutil.copy(os.path.join(top, "mon.log"),
                        os.path.join(os.environ["XFRM_BENCH_LOG"], f"xfrm-{n}.log"))
        db.stop()
        subprocess.run(["ip", "netns", "del", ns])
        # Here, not after: --no-floor returns from inside the try.
        shutil.rmtree(top, ignore_errors=True)
    return r


VICI_LOCAL = "198.21.0.1"  # above every remote: this end never initiates
CHARON = "/usr/lib/ipsec/charon"
CHARON_CONF = """charon {{
  load_modular = yes
  install_routes = no
  plugins {{
    include /etc/strongswan.d/charon/*.conf
    stroke {{
      load = no
    }}
    vici {{
      socket = unix://{top}/charon.vici
    }}
  }}
}}
"""
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def log_events(path):
    """(unix time, message) of each line of our monitor's log."""
    out = []
    if not os.path.exists(path):  # not created yet
        return out
    with open(path) as f:
        for line in f:
            m = LOG_TIME.match(line)
            if m:
                t = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
                out.append((t + float("0" + m.group(1)[19:]), line.rstrip("\n")))
    return out


VICI_ACTION = re.compile(r"\|main\|(?:INFO|DBG)\|(load |unload |initiate )")


def vici_step(log, t0, since, done):
    """Waits until `done(new lines)` holds, then returns (seconds from t0 to the status write
    after the last action, VICI messages sent, seconds from the step's first log line — the
    OVSDB update seen — to that write) and the new log length. An initiation is one message per
    child (2 for vxlan); the monitor plans none for a tunnel it leaves to the peer."""
    deadline = t0 + STEP_LIMIT
    while True:
        ev = log_events(log)[since:]
        if done([l for _, l in ev]):
            acts = [i for i, (_, l) in enumerate(ev) if VICI_ACTION.search(l)]
            last = acts[-1] if acts else 0
            st = next((t for t, l in ev[last:] if "status: updated" in l), None)
            if st is not None:
                msgs = sum(2 if "initiate connection" in ev[i][1] else 1 for i in acts)
                return (st - t0, msgs, st - ev[0][0]), since + len(ev)
        if time.time() > deadline:
            sys.exit("VICI step did not converge")
        time.sleep(0.05)


def cpu_ns(pid):
    """CPU time of every thread of `pid` in nanoseconds (schedstat: finer than clock ticks)."""
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with open(f) as fh:
            total += int(fh.read().split()[0])
    return total


def monitor_pid(wrapper_pid):
    """`ip netns exec` execs the monitor in place, so the pid is the same; checked here."""
    with open(f"/proc/{wrapper_pid}/comm") as f:
        assert f.read().strip().startswith("ovs-monitor"), "ip netns exec forked"
    return wrapper_pid


def bench_vici(n, ours):
    """Ours in VICI mode against a real charon in its own netns and mount namespace."""
    if not os.path.exists(CHARON):
        sys.exit(f"missing {CHARON}: apt-get install strongswan-charon strongswan-swanctl (compare.sh does)")
    top = tempfile.mkdtemp(prefix=f"bench-vici-{n}-")
    ns = os.path.basename(top)
    db = Db(top, n, [f"options:local_ip={VICI_LOCAL}"])
    root = Root(top, "none")
    with open(os.path.join(top, "strongswan.conf"), "w") as f:
        f.write(CHARON_CONF.format(top=top))
    sock = os.path.join(top, "charon.vici")
    charon = mon = None
    r = {}
    try:
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "addr", "add", f"{VICI_LOCAL}/32", "dev", "lo")
        charon = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs tmpfs /run && mount --bind {top}/strongswan.conf "
             f"/etc/strongswan.conf && exec {CHARON}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while subprocess.run(["swanctl", "--stats", "--uri", f"unix://{sock}"],
                             capture_output=True).returncode != 0:
            if time.time() > deadline:
                sys.exit("charon did not start")
            time.sleep(0.05)
        argv, env = command("ours", "none", ours, db, root, top)
        argv = [a for a in argv if a not in ("-vfile:info", "--ike-daemon=none")] + [
            "-vfile:dbg", "--ike-daemon=strongswan", "--strongswan-mode=vici",
            f"--vici-socket={sock}"]
        log = os.path.join(top, "mon.log")
        charon_cpu0 = cpu_ns(charon.pid)  # `ip netns exec`, `unshare` and `sh -c exec` exec in place
        t0 = time.time()
        mon = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loaded = lambda k: (lambda ls: sum("load connection" in l for l in ls) >= k)
        r["cold"], seen = vici_step(log, t0, 0, loaded(n))
        mon_pid = monitor_pid(mon.pid)
        # Which side a cold start is bound by: our CPU (the whole process so far) and charon's.
        r["cold-cpu"] = cpu_ns(mon_pid) / 1e9
        r["cold-charon-cpu"] = (cpu_ns(charon.pid) - charon_cpu0) / 1e9
        listed = run("swanctl", "--list-conns", "--raw", "--uri", f"unix://{sock}")
        assert listed.count("list-conn event") == n, "every connection is in charon"
        # Let the cold start's tail (the echo of its N-row status write) pass before +1.
        time.sleep(QUIET)
        seen = len(log_events(log))

        def step(key, done, *vsctl):
            nonlocal seen
            after_periodic_pass(mon_pid)
            seen = len(log_events(log))
            cpu0, charon0 = cpu_ns(mon_pid), cpu_ns(charon.pid)
            t = time.time()
            db.vsctl(*vsctl)
            before = seen
            r[key], seen = vici_step(log, t, seen, done)
            if os.environ.get("VICI_BENCH_LOG"):  # where a step's time goes
                sys.stderr.write("\n".join(l for _, l in log_events(log)[before:seen]) + "\n")
            r[key + "-cpu"] = (cpu_ns(mon_pid) - cpu0) / 1e9
            r[key + "-charon-cpu"] = (cpu_ns(charon.pid) - charon0) / 1e9

        step("add", lambda ls: any("load connection vxnew-1" in l for l in ls), "add-port", "br0",
             "vxnew", "--", "set", "interface", "vxnew", "type=vxlan",
             "options:remote_ip=198.20.0.1", "options:psk=new", f"options:local_ip={VICI_LOCAL}")
        step("modify", lambda ls: any("unload connection vxnew-1" in l for l in ls), "set",
             "interface", "vxnew", "options:remote_ip=198.20.0.2")
        step("del", lambda ls: any("unload connection vxnew-2" in l for l in ls), "del-port",
             "br0", "vxnew")
        # The periodic pass on an unchanged host: ours and charon's CPU per pass.
        settle(mon_pid)
        c, ch = cpu_ns(mon_pid), cpu_ns(charon.pid)
        time.sleep(IDLE)
        r["idle"] = (cpu_ns(mon_pid) - c) / 1e9 / IDLE_PASSES
        r["idle-charon"] = (cpu_ns(charon.pid) - ch) / 1e9 / IDLE_PASSES
        r["rss"], r["cpu"] = proc_stats(mon_pid)
    finally:
        for p in [mon, charon]:
            if p:
                p.kill()
                p.wait()
        db.stop()
        subprocess.run(["ip", "netns", "del", ns])
    shutil.rmtree(top, ignore_errors=True)
    return r


def fmt_s(x):
    if x is None:
        return "not measured"
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def ratio(p, o):
    return f"{p / o:.1f}×" if p is not None and o > 0 else "–"


def py_step(p, k):
    """The Python column of step `k`: (time, calls, seconds for the ratio, ratio prefix). A step
    cut off at STEP_LIMIT gives a lower bound; the steps after it did not run."""
    if not p:
        return "–", "–", None, ""
    if k in p:
        return fmt_s(p[k][0]), p[k][1], p[k][0], ""
    if p.get("timeout", ("",))[0] == k:
        return f"> {STEP_LIMIT:.0f} s (cut off)", f"≥ {p['timeout'][1]}", STEP_LIMIT, "> "
    return "not run", "–", None, ""


def mb(p, key="rss"):
    return f"{p[key]:.1f} MB" if p else "–"


def secs(p, key="cpu"):
    return f"{p[key]:.2f} s" if p else "–"


def cpu_ms(step):
    """Our monitor's CPU for a step (stub modes: third field; VICI: its own key)."""
    return f"{step[2] * 1000:.1f} ms" if len(step) > 2 else "–"


def main():
    global PY_MONITOR
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", default=os.path.join(os.path.dirname(__file__),
                                                   "../../target/release/ovs-monitor-ipsec"))
    ap.add_argument("--python", default=PY_MONITOR,
                    help="the Python monitor (e.g. unpacked from openvswitch-ipsec's .deb)")
    ap.add_argument("--modes", default="stroke,libreswan")
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--ours-only", action="store_true",
                    help="skip the Python monitor (its column shows –): for profiling ours")
    ap.add_argument("--no-floor", action="store_true",
                    help="xfrm: skip the ip -batch floor (its cold ratio is then not measured)")
    a = ap.parse_args()
    PY_MONITOR = a.python
    # xfrm mode has no Python peer: it needs only OVS's tools (and `ip`, `nft`).
    peer = [PY_MONITOR, "/usr/bin/certutil"] if a.modes != "xfrm" and not a.ours_only else []
    for tool in [*peer, "/usr/sbin/ovsdb-server", "/usr/bin/ovs-vsctl"]:
        if not os.path.exists(tool):
            sys.exit(f"missing {tool}: compare.sh installs it; or apt-get install openvswitch-ipsec python3-openvswitch "
                     "libnss3-tools")
    if not os.access(a.ours, os.X_OK):
        sys.exit(f"missing {a.ours}: cargo build --release")
    sizes = [int(s) for s in a.sizes.split(",")]
    python = (lambda mode, n: None) if a.ours_only else \
        (lambda mode, n: bench_stub("python", mode, n, a.ours))
    steps = [("cold", "cold start"), ("add", "+1 tunnel"), ("modify", "modify 1"),
             ("del", "-1 tunnel")]
    print("| mode | N | step | Python | ours | ratio | calls Python / ours | our CPU |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for mode in a.modes.split(","):
        for n in sizes:
            if mode == "xfrm":
                o = bench_xfrm(n, a.ours, floor=not a.no_floor)
                (pols, sas), floor_sas = o["cold"][1], o["floor_counts"][1]
                print(f"| xfrm | {n} | cold start (floor: ip -batch) | {fmt_s(o['floor'])} | "
                      f"{fmt_s(o['cold'][0])} | {ratio(o['floor'], o['cold'][0])} | "
                      f"{pols} policies, {sas} SAs (floor {floor_sas}) | |")
                print(f"| xfrm | {n} | idle, {XFRM_IDLE:.0f} s after the cold start | – | – | – | "
                      f"| {o['idle'] * 1000:.0f} ms |")
                for k, label in steps[1:]:
                    print(f"| xfrm | {n} | {label} | – | {fmt_s(o[k][0])} | – | "
                          f"ovs-vsctl itself: {fmt_s(o[k + '-vsctl'])} | "
                          f"{o[k + '-cpu'] * 1000:.0f} ms |")
                print(f"| xfrm | {n} | peak RSS / CPU | – | {o['rss']:.1f} MB / {o['cpu']:.2f} s "
                      "| – | | |")
                sys.stdout.flush()
                continue
            if mode == "vici":
                p = python("strongswan", n)
                o = bench_vici(n, a.ours)
                for k, label in steps:
                    py_t, py_calls, py_s, bound = py_step(p, k)
                    cpu = f"{o[k + '-cpu'] * 1000:.1f} ms" if k + "-cpu" in o else "–"
                    if k == "cold":
                        cpu += f" (charon {o['cold-charon-cpu'] * 1000:.0f} ms)"
                    else:
                        cpu += f" (charon {o[k + '-charon-cpu'] * 1000:.1f} ms)"
                    print(f"| vici (Python: stroke) | {n} | {label} | {py_t} | {fmt_s(o[k][0])} | "
                          f"{bound}{ratio(py_s, o[k][0])} | {py_calls} calls / {o[k][1]} VICI msgs "
                          f"| {cpu} |")
                print(f"| vici (Python: stroke) | {n} | +1 monitor-side (OVSDB update → status "
                      f"written) | – | {o['add'][2] * 1000:.1f} ms | – | | |")
                print(f"| vici (Python: stroke) | {n} | periodic pass, nothing changed | – | – | – "
                      f"| list-sas + list-conns | {o['idle'] * 1000:.1f} ms "
                      f"(charon {o['idle-charon'] * 1000:.1f} ms) |")
                print(f"| vici (Python: stroke) | {n} | peak RSS | "
                      f"{mb(p)} | "
                      f"{o['rss']:.1f} MB | {ratio(p and p['rss'], o['rss'])} | | |")
                print(f"| vici (Python: stroke) | {n} | CPU (whole run) | "
                      f"{secs(p)} | "
                      f"{o['cpu']:.2f} s | {ratio(p and p['cpu'], o['cpu'])} | | |")
                sys.stdout.flush()
                continue
            p = python("strongswan" if mode == "stroke" else mode, n)
            o = bench_stub("ours", mode, n, a.ours)
            for k, label in steps:
                py_t, py_calls, py_s, bound = py_step(p, k)
                print(f"| {mode} | {n} | {label} | {py_t} | {fmt_s(o[k][0])} | "
                      f"{bound}{ratio(py_s, o[k][0])} | {py_calls} / {o[k][1]} | "
                      f"{cpu_ms(o[k]) if k != 'cold' else '–'} |")
            print(f"| {mode} | {n} | periodic pass, nothing changed | – | – | – | "
                  f"– / {o['idle'][1]:.1f} | {o['idle'][0] * 1000:.1f} ms |")
            print(f"| {mode} | {n} | peak RSS | {mb(p)} | "
                  f"{o['rss']:.1f} MB | {ratio(p and p['rss'], o['rss'])} | | |")
            print(f"| {mode} | {n} | CPU (whole run) | {secs(p)} | "
                  f"{o['cpu']:.2f} s | {ratio(p and p['cpu'], o['cpu'])} | | |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
