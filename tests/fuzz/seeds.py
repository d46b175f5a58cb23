#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from real samples.

Usage: tests/fuzz/seeds.py [REFERENCE_SAMPLES_DIR]
  - stroke_statusall, pluto_status: the `ipsec statusall` / `ipsec status` texts in
    tests/golden and in the unit tests' samples, plus REFERENCE_SAMPLES_DIR if given;
  - ovsdb_updates, jsonrpc_framing: a session with a real ovsdb-server (monitor_cond_since,
    monitor_cond and monitor replies, then update3/update2/update notifications while
    ovs-vsctl adds, changes and deletes tunnels);
  - unixctl: the requests ovs-appctl sends;
  - vici_codec: packets shaped like charon's list-conns/list-sas answers;
  - xfrm_netlink: a kernel XFRM policy dump taken in a scratch network namespace, plus SA
    messages built field by field (the host kernel cannot hold ESP SAs);
  - certificate: certificates made by openssl (PEM and DER);
  - render: a few arbitrary byte strings (its input is structured; the fuzzer grows it).
The seeds are committed; run this again only to refresh them.
"""
import json, os, re, shutil, socket, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rust_samples(path):
    """The string literals of a Rust file's tests that look like daemon output."""
    text = open(os.path.join(ROOT, path)).read()
    out = []
    for m in re.finditer(r'"\\\n(.*?)(?<!\\)";', text, re.S):
        out.append(m.group(1).replace("\\n", "\n").replace('\\"', '"'))
    for m in re.finditer(r'r#"(.*?)"#', text, re.S):
        out.append(m.group(1))
    return [s for s in out if len(s) > 40]


def status_seeds(refdir):
    for i, s in enumerate(rust_samples("src/backend/strongswan_stroke/statusall.rs")):
        put("stroke_statusall", f"unit-{i}", s)
    for i, s in enumerate(rust_samples("src/backend/libreswan/status.rs")):
        put("pluto_status", f"unit-{i}", s)
    gold = os.path.join(ROOT, "tests/golden/libreswan")
    for f in sorted(os.listdir(gold)):
        if f.startswith("status-"):
            shutil.copy(os.path.join(gold, f), os.path.join(CORPUS, "pluto_status", f))
    # Libreswan v3.x: `000 ` prefixes, IKEv2 state names of the v3 series.
    put("pluto_status", "v3-up", V3_STATUS)
    if refdir:
        p = os.path.join(refdir, "libreswan-netns/left-ipsec-status.txt")
        if os.path.exists(p):
            shutil.copy(p, os.path.join(CORPUS, "pluto_status", "netns-left-status.txt"))


V3_STATUS = """000 using kernel interface: xfrm
000 interface lo/lo ::1@500
000 interface eth0/eth0 192.0.2.1@4500
000 "tun-in-1": 192.0.2.1/32:UDP/4789---192.0.2.1...192.0.2.2---192.0.2.2/32:UDP/0-65535; erouted; eroute owner: #2
000 "tun-in-1":     oriented; my_ip=unset; their_ip=unset; my_updown=ipsec _updown;
000 "tun-out-1": 192.0.2.1/32:UDP/0-65535---192.0.2.1...192.0.2.2---192.0.2.2/32:UDP/4789; erouted; eroute owner: #3
000 "gre9-1": 192.0.2.1/32:GRE---192.0.2.1...192.0.2.9---192.0.2.9/32:GRE; prospective erouted; eroute owner: #0
000 Total IPsec connections: loaded 3, active 2
000 #1: "tun-in-1":500 STATE_PARENT_I3 (PARENT SA established); EVENT_SA_REPLACE in 2487s; newest ISAKMP; isakmp#0; idle;
000 #2: "tun-in-1":500 STATE_V2_IPSEC_I (IPsec SA established); EVENT_SA_REPLACE in 28523s; newest IPSEC; eroute owner; isakmp#1; idle;
000 #2: "tun-in-1" esp.c0dc3410@192.0.2.2 esp.cb107296@192.0.2.1 ref=0 refhim=0 Traffic: ESPin=0B ESPout=0B! ESPmax=4194303B
000 #3: "tun-out-1":500 STATE_V2_IPSEC_I (IPsec SA established); EVENT_SA_REPLACE in 28523s; newest IPSEC; eroute owner; isakmp#1; idle;
000 #3: "tun-out-1" esp:ce04275e@192.0.2.2 esp:c41b58b3@192.0.2.1 ref=0 refhim=0
000 #4: "gre9-1":500 STATE_PARENT_I1 (sent v2I1, expected v2R1); EVENT_v2_RETRANSMIT in 8s; idle;
"""


def ovsdb_seeds():
    tmp = tempfile.mkdtemp()
    db, sock = os.path.join(tmp, "conf.db"), os.path.join(tmp, "db.sock")
    subprocess.run(["ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"], check=True)
    server = subprocess.Popen(["ovsdb-server", db, "--remote=punix:" + sock, "--unixctl=" + os.path.join(tmp, "ctl")])
    while not os.path.exists(sock):
        time.sleep(0.05)
    vsctl = lambda *a: subprocess.run(["ovs-vsctl", "--db=unix:" + sock, "--no-wait", *a], check=True)
    vsctl("init")
    vsctl("add-br", "br0")
    vsctl("set", "Open_vSwitch", ".", "other_config:ipsec_skb_mark=0x1/0x1")
    vsctl("add-port", "br0", "t1", "--", "set", "Interface", "t1", "type=gre",
          "options:remote_ip=192.0.2.2", "options:psk=swordfish")
    cols = {"Interface": {"columns": ["name", "type", "options", "external_ids", "cfm_fault", "ofport"],
                          "where": [["type", "==", "gre"], ["type", "==", "geneve"], ["type", "==", "vxlan"]]},
            "Open_vSwitch": {"columns": ["other_config", "external_ids"]}}
    plain = {t: {"columns": c["columns"]} for t, c in cols.items()}
    frames = {}
    for method, params in [
        ("monitor_cond_since", ["Open_vSwitch", "ovs-monitor-ipsec", cols, "00000000-0000-0000-0000-000000000000"]),
        ("monitor_cond", ["Open_vSwitch", "ovs-monitor-ipsec", cols]),
        ("monitor", ["Open_vSwitch", "ovs-monitor-ipsec", plain]),
    ]:
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        c.sendall(json.dumps({"method": method, "params": params, "id": 1}).encode())
        frames[method] = [c, read_values(c, 1)]
    vsctl("add-port", "br0", "t2", "--", "set", "Interface", "t2", "type=vxlan",
          "options:remote_ip=fd00::2", "options:remote_name=peer", "options:ipsec_encapsulation=yes")
    vsctl("set", "Interface", "t1", "options:psk=new-secret", "options:local_ip=192.0.2.1")
    vsctl("set", "Interface", "t1", "external_ids:ipsec-status=up")
    vsctl("del-port", "br0", "t2")
    for method, (c, first) in frames.items():
        rest = read_values(c, 4)
        stream = b"".join(json.dumps(v).encode() for v in first + rest)
        selector = {"monitor_cond_since": b"\x00", "monitor_cond": b"\x01", "monitor": b"\x02"}[method]
        put("ovsdb_updates", method, selector + stream)
        put("jsonrpc_framing", method, b"\x00" + stream)
        for i, v in enumerate(first + rest):
            put("jsonrpc_framing", f"{method}-{i}", b"\x00" + json.dumps(v).encode())
        c.close()
    server.terminate()
    server.wait()
    shutil.rmtree(tmp)


def read_values(c, n):
    """n JSON values from the socket (ovsdb-server sends them back to back)."""
    dec = json.JSONDecoder()
    buf, out = "", []
    c.settimeout(5)
    while len(out) < n:
        try:
            chunk = c.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk.decode()
        while buf.strip():
            try:
                v, end = dec.raw_decode(buf.lstrip())
            except ValueError:
                break
            out.append(v)
            buf = buf.lstrip()[end:]
    return out


def unixctl_seeds():
    reqs = [("version", []), ("tunnels/show", []), ("tunnels/show", ["--json"]), ("refresh", []),
            ("vlog/set", ["ANY:console:dbg"]), ("vlog/list", []), ("list-commands", []),
            ("exit", ["--no-cleanup"]), ("vlog/reopen", []), ("help", [])]
    for i, (m, p) in enumerate(reqs):
        put("unixctl", f"req-{i}", json.dumps({"id": i, "method": m, "params": p}))
    put("unixctl", "pipelined", "".join(json.dumps({"id": i, "method": m, "params": p}) for i, (m, p) in enumerate(reqs)))


def vici_seeds():
    def name(s):
        return bytes([len(s)]) + s.encode()

    def val(v):
        v = v.encode() if isinstance(v, str) else v
        return struct.pack(">H", len(v)) + v

    def kv(k, v):
        return b"\x03" + name(k) + val(v)

    def lst(k, items):
        return b"\x04" + name(k) + b"".join(b"\x05" + val(i) for i in items) + b"\x06"

    def sec(k, body):
        return b"\x01" + name(k) + body + b"\x02"

    def packet(kind, pname, body):
        p = bytes([kind]) + (name(pname) if kind in (0, 3, 4, 7) else b"") + body
        return struct.pack(">I", len(p)) + p

    conn = sec("tun-in-1", kv("local_addrs", "192.0.2.1") + lst("remote_addrs", ["192.0.2.2"]) + kv("version", "IKEv2")
               + sec("children", sec("tun-in-1", kv("mode", "TRANSPORT") + lst("local-ts", ["dynamic[gre]"]))))
    sa = sec("tun-in-1", kv("uniqueid", "1") + kv("state", "ESTABLISHED") + kv("remote-host", "192.0.2.2")
             + sec("child-sas", sec("tun-in-1-1", kv("name", "tun-in-1") + kv("state", "INSTALLED") + kv("spi-in", "c0dc3410"))))
    put("vici_codec", "list-conns", packet(7, "list-conn", conn) + packet(1, "", kv("success", "yes")))
    put("vici_codec", "list-sas", packet(7, "list-sa", sa) + packet(1, "", b""))
    put("vici_codec", "load-conn", packet(0, "load-conn", conn))
    put("vici_codec", "errmsg", packet(1, "", kv("success", "no") + kv("errmsg", "unknown child")))
    put("vici_codec", "event-confirm", packet(5, "", b"") + packet(3, "list-sa", b""))


def xfrm_seeds():
    ns = f"ovsfuzz{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip = lambda *a: subprocess.run(["ip", "-n", ns, "xfrm", *a], check=True)
        tmpl = ["tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "reqid", str(0x4F565300), "mode", "transport"]
        ip("policy", "add", "src", "192.0.2.1/32", "dst", "192.0.2.2/32", "proto", "gre", "dir", "out", "priority", str(0x4F56), *tmpl)
        ip("policy", "add", "src", "fd00::1/128", "dst", "fd00::2/128", "proto", "udp", "dport", "4789", "dir", "in", "priority", str(0x4F56), "tmpl", "src", "fd00::1", "dst", "fd00::2", "proto", "esp", "reqid", "1", "mode", "transport")
        ip("policy", "add", "src", "10.0.0.0/8", "dst", "10.1.0.0/16", "dir", "fwd")
        dump = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", DUMP], check=True, capture_output=True).stdout
        put("xfrm_netlink", "policy-dump", dump)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    put("xfrm_netlink", "sa-ours-v4", sa_msg(2, "192.0.2.1", "192.0.2.2", 0x4F565300))
    put("xfrm_netlink", "sa-foreign-v6", sa_msg(10, "fd00::1", "fd00::2", 7))
    put("xfrm_netlink", "sa-pair", sa_msg(2, "192.0.2.1", "192.0.2.2", 0x4F565300) + sa_msg(2, "192.0.2.2", "192.0.2.1", 0x4F565300))


DUMP = """
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6)
s.bind((0, 0))
s.send(struct.pack('=IHHII', 16, 21, 0x301, 1, 0))
out = b''
while True:
    d = s.recv(65536)
    out += d
    if struct.unpack_from('=H', d, 4)[0] == 3:
        break
import sys; sys.stdout.buffer.write(out)
"""


def addr(family, a):
    return socket.inet_pton(socket.AF_INET if family == 2 else socket.AF_INET6, a).ljust(16, b"\0")


def sa_msg(family, src, dst, reqid):
    """XFRM_MSG_NEWSA with an ESP transport SA, its ESN replay state and a key attribute."""
    host = 32 if family == 2 else 128
    sel = addr(family, dst) + addr(family, src) + struct.pack("=HHHHHBBB3xiI", 0, 0, 0, 0, family, host, host, 47, 0, 0)
    xid = addr(family, dst) + struct.pack(">I", 0xC0DC3410) + struct.pack("=B3x", 50)
    lft = struct.pack("=8Q", *([2**64 - 1] * 4 + [0] * 4))
    cur = struct.pack("=4Q", 1234, 10, 0, 0)
    stats = struct.pack("=3I", 0, 1, 2)
    info = sel + xid + addr(family, src) + lft + cur + stats + struct.pack("=IIHBBB7x", 0, reqid, family, 0, 0, 0)
    assert len(info) == 224, len(info)
    esn = struct.pack("=IIIIIII", 8, 7, 0, 3, 0, 128, 0) + b"\0" * 4
    key = b"rfc4106(gcm(aes))".ljust(64, b"\0") + struct.pack("=II", 288, 128) + b"k" * 36
    attrs = nla(23, esn) + nla(18, key)
    body = info + attrs
    return struct.pack("=IHHII", 16 + len(body), 16, 2, 1, 0) + body


def nla(kind, data):
    n = struct.pack("=HH", 4 + len(data), kind) + data
    return n + b"\0" * (-len(n) % 4)


def cert_seeds():
    tmp = tempfile.mkdtemp()
    key, pem, der = (os.path.join(tmp, f) for f in ("k.pem", "c.pem", "c.der"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", pem, "-subj", "/O=OVS/CN=host-1", "-days", "1"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-in", pem, "-outform", "DER", "-out", der], check=True)
    shutil.copy(pem, os.path.join(CORPUS, "certificate", "ec.pem"))
    shutil.copy(der, os.path.join(CORPUS, "certificate", "ec.der"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", key, "-out", pem,
                    "-subj", "/CN=peer/O=x", "-days", "1"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "x509", "-in", pem, "-pubkey", "-noout"], check=True, capture_output=True).stdout
    put("certificate", "rsa-after-pubkey.pem", pub + open(pem, "rb").read())
    shutil.rmtree(tmp)


def render_seeds():
    for i, s in enumerate([b"", b"\x01" * 64, bytes(range(256)), b"\x00\x02gre\x00" * 16]):
        put("render", f"seed-{i}", s)


if __name__ == "__main__":
    os.makedirs(os.path.join(CORPUS, "certificate"), exist_ok=True)
    os.makedirs(os.path.join(CORPUS, "pluto_status"), exist_ok=True)
    status_seeds(sys.argv[1] if len(sys.argv) > 1 else None)
    ovsdb_seeds()
    unixctl_seeds()
    vici_seeds()
    xfrm_seeds()
    cert_seeds()
    render_seeds()
