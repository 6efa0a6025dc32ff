"""A real two-node corosync 3 + Pacemaker cluster in one kernel, fencing through fence_pr.

Each node is a set of namespaces kept alive by a holder process (`sleep`):
- network: its own veth end (10.77.0.<nodeid>), so corosync's knet links and every libqb
  IPC socket (abstract unix sockets) are the node's own;
- mount: private copies of /etc/corosync, /var/lib/{corosync,pacemaker}, /var/log/*, /run,
  /dev/shm (state lives in <workdir>/<node>/ on the host side, readable from outside), and
  /usr/sbin as an overlay holding the node's /usr/sbin/fence_pr wrapper;
- UTS: hostname = node name.
corosync and pacemakerd are started by hand (no systemd), with a pre-seeded CIB. The shared
storage is the lab's LIO LUNs; each node's namespace sees its own dm-multipath map of LUN i
as /run/fence_pr-lab/lun<i>, so one stonith resource (devices=/run/fence_pr-lab/lun0,...)
fits both nodes. Keys are not configured: fence_pr derives them from corosync's cmap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import pace
from .packaged import LAB_PREFIX, install
from .topology import wait_for

PROJECT = Path(__file__).resolve().parent.parent.parent
# fence_pr as the .deb lays it out, on the guest's own file system (packaged.py): what
# every node's pacemaker-fenced runs as /usr/sbin/fence_pr.
PACKAGED = LAB_PREFIX
CLUSTER_NAME = "prlab"
SUBNET = "10.77.0"
LINK_DIR = "/run/fence_pr-lab"
STONITH_ID = "pr-fence"
# pacemaker-fenced's words when fence_pr's metadata action failed or timed out (its fixed
# 10 s): it then registers the device without the metadata, so without on_target="1", and
# no node can unfence itself.
METADATA_FAILED = ("Could not retrieve metadata for fencing agent fence_pr",
                   "metadata action for fence_pr", "Metadata action for fence_pr",
                   "Metadata for fence_pr is invalid")

# Everything the node's daemons write goes to a private directory bound over these.
PRIVATE_DIRS = {
    "etc-corosync": "/etc/corosync",
    "lib-corosync": "/var/lib/corosync",
    "lib-pacemaker": "/var/lib/pacemaker",
    "log-corosync": "/var/log/corosync",
    "log-pacemaker": "/var/log/pacemaker",
    "shm": "/dev/shm",
    "run": "/run",
}


class ClusterError(RuntimeError):
    """The lab cluster could not be built or did not behave in time."""


def corosync_conf(nodes: list[tuple[str, int]], token_ms: int) -> str:
    nodelist = "".join(
        f"    node {{\n        name: {name}\n        nodeid: {nid}\n"
        f"        ring0_addr: {SUBNET}.{nid}\n    }}\n" for name, nid in nodes)
    two_node = "    two_node: 1\n" if len(nodes) == 2 else ""
    return (
        "totem {\n    version: 2\n"
        f"    cluster_name: {CLUSTER_NAME}\n    transport: knet\n"
        "    crypto_cipher: none\n    crypto_hash: none\n"
        f"    token: {token_ms}\n}}\n"
        f"nodelist {{\n{nodelist}}}\n"
        f"quorum {{\n    provider: corosync_votequorum\n{two_node}}}\n"
        "logging {\n    to_logfile: yes\n    logfile: /var/log/corosync/corosync.log\n"
        "    to_stderr: no\n    to_syslog: no\n    timestamp: on\n}\n"
        "uidgid {\n    uid: hacluster\n    gid: haclient\n}\n"
    )


def cib_xml(nodes: list[tuple[str, int]], devices: str, extra_params: dict[str, str]) -> str:
    """The CIB both nodes start from: fencing on, fence_pr with unfencing, a Dummy whose probe
    makes Pacemaker unfence every node before anything runs there."""
    host_list = " ".join(n for n, _ in nodes)
    params = {"devices": devices, "pcmk_host_list": host_list, "pcmk_host_check": "static-list",
              **extra_params}
    nv = "".join(f'<nvpair id="{STONITH_ID}-ia-{k}" name="{k}" value="{v}"/>'
                 for k, v in params.items())
    props = {"stonith-enabled": "true", "dc-deadtime": "5s", "stonith-timeout": "120s",
             "cluster-recheck-interval": "60s", "no-quorum-policy": "stop",
             "have-watchdog": "false"}
    pv = "".join(f'<nvpair id="opt-{k}" name="{k}" value="{v}"/>' for k, v in props.items())
    node_xml = "".join(f'<node id="{nid}" uname="{name}"/>' for name, nid in nodes)
    return (
        '<cib validate-with="pacemaker-3.9" epoch="1" '
        'num_updates="0" admin_epoch="0">'
        "<configuration>"
        f'<crm_config><cluster_property_set id="cib-bootstrap-options">{pv}'
        "</cluster_property_set></crm_config>"
        f"<nodes>{node_xml}</nodes>"
        "<resources>"
        f'<primitive id="{STONITH_ID}" class="stonith" type="fence_pr">'
        f'<instance_attributes id="{STONITH_ID}-ia">{nv}</instance_attributes>'
        f'<meta_attributes id="{STONITH_ID}-meta">'
        f'<nvpair id="{STONITH_ID}-meta-provides" name="provides" value="unfencing"/>'
        "</meta_attributes>"
        f'<operations><op id="{STONITH_ID}-monitor" name="monitor" interval="120s" '
        'timeout="60s"/></operations>'
        "</primitive>"
        '<primitive id="dummy" class="ocf" provider="pacemaker" type="Dummy">'
        '<operations><op id="dummy-monitor" name="monitor" interval="120s"/></operations>'
        "</primitive>"
        "</resources><constraints/>"
        "</configuration><status/></cib>\n"
    )


def _ns_inode(pid: int | str, kind: str = "net") -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@dataclass
class FenceEvent:
    target: str
    action: str
    status: str
    delegate: str
    origin: str
    completed: str


@dataclass
class ClusterNode:
    name: str
    nodeid: int
    workdir: Path
    links: dict[str, str] = field(default_factory=dict)  # name in LINK_DIR -> device
    holder: subprocess.Popen[bytes] | None = None
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"{SUBNET}.{self.nodeid}"

    @property
    def pid(self) -> int:
        assert self.holder is not None, f"{self.name} has no namespaces"
        return self.holder.pid

    @property
    def state(self) -> Path:
        return self.workdir / self.name

    def nsenter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-u", "--"]

    def run(self, *argv: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's namespaces; `timeout` is nominal (pace.py)."""
        timeout = pace.scaled(timeout)
        try:
            r = subprocess.run([*self.nsenter(), *argv], capture_output=True, text=True,
                               timeout=timeout, input=input)
        except subprocess.TimeoutExpired as e:
            raise ClusterError(f"{self.name}: {' '.join(argv)} did not finish in "
                               f"{timeout}s") from e
        if check and r.returncode != 0:
            raise ClusterError(f"{self.name}: {' '.join(argv)} -> {r.returncode}\n"
                               f"{r.stdout}{r.stderr}")
        return r

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return self.run("sh", "-ec", script, check=check, timeout=timeout).stdout

    # --- namespaces ------------------------------------------------------------------------

    def create(self, conf: str, cib: str, agent: str) -> None:
        """The namespaces and private state; `agent` is the node's /usr/sbin/fence_pr."""
        if self.state.exists():
            shutil.rmtree(self.state)
        for d in (*PRIVATE_DIRS, "sbin-upper", "sbin-work"):
            (self.state / d).mkdir(parents=True)
        (self.state / "etc-corosync/corosync.conf").write_text(conf)
        lib = self.state / "lib-pacemaker"
        for d in ("cib", "pengine", "blackbox", "cores"):
            (lib / d).mkdir()
        (lib / "cib/cib.xml").write_text(cib)
        (self.state / "sbin-upper/fence_pr").write_text(agent)
        (self.state / "sbin-upper/fence_pr").chmod(0o755)
        mine = _ns_inode("self")
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--uts", "--propagation", "private",
             "sleep", "infinity"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while _ns_inode(self.holder.pid) == mine:
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"{self.name}: unshare failed (rc {self.holder.returncode})")
            time.sleep(0.05)
        s = self.state
        binds = "\n".join(f"mount --bind {s}/{d} {target}" for d, target in PRIVATE_DIRS.items()
                          if d != "run")
        links = "\n".join(f"ln -s {dev} {LINK_DIR}/{name}" for name, dev in self.links.items())
        self.sh(f"""
hostname {self.name}
ip link set lo up
{binds}
if [ -d /run/udev ]; then mkdir -p {s}/run/udev; mount --bind /run/udev {s}/run/udev; fi
mount --rbind {s}/run /run
mkdir -p /run/crm /run/pacemaker /run/lock {LINK_DIR}
chmod 1777 /run/lock
{links}
chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker
chmod 750 /var/lib/pacemaker/cib
chmod 600 /var/lib/pacemaker/cib/cib.xml
chmod 1777 /dev/shm
mount -t overlay overlay -o lowerdir=/usr/sbin,upperdir={s}/sbin-upper,workdir={s}/sbin-work \
    /usr/sbin
""")

    def destroy(self) -> None:
        self.kill_daemons()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder = None

    # --- daemons ---------------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Every process in this node's network namespace except the holder."""
        want = _ns_inode(self.pid)
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == self.pid:
                continue
            try:
                if _ns_inode(p) == want:
                    pids.append(int(p))
            except OSError:
                continue
        return pids

    def start(self) -> None:
        """corosync, then pacemakerd once corosync answers on its IPC."""
        log = open(self.state / "daemons.out", "ab")  # noqa: SIM115 - owned by the daemons
        env = dict(os.environ, PCMK_logfile="/var/log/pacemaker/pacemaker.log",
                   PCMK_debug="no", PCMK_logfacility="none")
        self.daemons.append(subprocess.Popen([*self.nsenter(), "corosync", "-f"],
                                             stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             env=env))
        corosync = self.daemons[-1]

        def answers() -> bool:
            if corosync.poll() is not None:
                raise ClusterError(f"{self.name}: corosync exited ({corosync.returncode}):\n"
                                   + self.log_tail("log-corosync/corosync.log"))
            return not self.run("corosync-cmapctl", "totem.cluster_name", check=False).returncode

        try:
            wait_for(answers, f"{self.name}'s corosync to answer on its IPC", 60, interval=0.2)
        except TimeoutError as e:
            raise ClusterError(f"{e}:\n{self.log_tail('log-corosync/corosync.log')}") from None
        self.daemons.append(subprocess.Popen([*self.nsenter(), "pacemakerd"],
                                             stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             env=env))
        log.close()

    def kill_daemons(self, sig: int = signal.SIGKILL) -> list[int]:
        """SIGKILL every process of the node (corosync, pacemakerd and its children, agents)."""
        pids = self.processes() if self.holder is not None else []
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        for d in self.daemons:
            try:
                d.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
        self.daemons.clear()
        deadline = time.monotonic() + 30
        while self.holder is not None and self.processes():
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name}: processes survive SIGKILL: {self.processes()}")
            time.sleep(0.1)
        return pids

    def pacemakerd_running(self) -> bool:
        return any(d.poll() is None for d in self.daemons[1:])

    def fence(self, target: str) -> subprocess.CompletedProcess[str]:
        """`stonith_admin --fence target` from this node, allowed 150 s nominal (pace.py)."""
        return self.run("stonith_admin", "--fence", target, "--timeout",
                        f"{pace.scaled(150):.0f}", check=False, timeout=200)

    def fencer_devices(self) -> list[str]:
        """The devices this node's pacemaker-fenced has registered."""
        r = self.run("stonith_admin", "--list-registered", check=False, timeout=60)
        return r.stdout.split() if r.returncode == 0 else []

    def fencer_words(self) -> list[str]:
        """pacemaker-fenced's log lines about the device, its agent or its device list."""
        return [line.strip() for line in self._pacemaker_log()
                if "pacemaker-fenced" in line
                and any(w in line for w in (STONITH_ID, "fence_pr", "device list"))]

    def _pacemaker_log(self) -> list[str]:
        p = self.state / "log-pacemaker/pacemaker.log"
        return p.read_text(errors="replace").splitlines() if p.exists() else []

    def metadata_failures(self) -> list[str]:
        """pacemaker-fenced's log lines saying it did not get fence_pr's metadata."""
        return [line.strip() for line in self._pacemaker_log()
                if any(m in line for m in METADATA_FAILED)]

    def log_tail(self, rel: str, n: int = 40) -> str:
        p = self.state / rel
        if not p.exists():
            return f"({rel}: no file)"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])

    # --- the cluster's view ----------------------------------------------------------------

    def crm_mon(self) -> str:
        return self.run("crm_mon", "-1", "-r", "--fence-history=2", check=False,
                        timeout=60).stdout

    def online(self) -> set[str]:
        """Nodes this node's Pacemaker shows online (crm_mon XML)."""
        r = self.run("crm_mon", "-1", "--output-as=xml", check=False, timeout=60)
        if r.returncode != 0:
            return set()
        try:
            root = ET.fromstring(r.stdout)
        except ET.ParseError:
            return set()
        return {n.get("name", "") for n in root.iter("node") if n.get("online") == "true"}

    def fence_history(self, target: str | None = None) -> list[FenceEvent]:
        """Every fencing operation this node's fencer knows, newest first (crm_mon's full
        history: `stonith_admin --history` shows only the last success per target)."""
        r = self.run("crm_mon", "-1", "--output-as=xml", "--fence-history=3", check=False,
                     timeout=60)
        try:
            root = ET.fromstring(r.stdout)
        except ET.ParseError:
            return []
        return [FenceEvent(e.get("target", ""), e.get("action", ""), e.get("status", ""),
                           e.get("delegate", ""), e.get("origin", ""), e.get("completed", ""))
                for e in root.iter("fence_event")
                if target is None or e.get("target") == target]

    def node_attribute(self, node: str, name: str) -> str | None:
        r = self.run("crm_attribute", "--type", "status", "--node", node, "--name", name,
                     "--query", "--quiet", check=False, timeout=60)
        return r.stdout.strip() if r.returncode == 0 else None


class Cluster:
    """Two (or more) nodes on a veth pair/bridge, sharing the lab's LUNs."""

    def __init__(self, workdir: Path, node_links: dict[str, dict[str, str]],
                 token_ms: int = 10000, stonith_params: dict[str, str] | None = None,
                 agent: str | None = None) -> None:
        self.workdir = workdir
        names = list(node_links)
        self.nodes = [ClusterNode(n, i, workdir, node_links[n])
                      for i, n in enumerate(names, start=1)]
        self.token_ms = token_ms
        link_names = sorted({k for links in node_links.values() for k in links})
        self.devices = ",".join(f"{LINK_DIR}/{k}" for k in link_names)
        self.stonith_params = stonith_params or {}
        self.agent = agent
        self._bridge: subprocess.Popen[bytes] | None = None

    def __getitem__(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def build(self) -> None:
        """`agent` or else the packaged fence_pr is each node's /usr/sbin/fence_pr."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        packaged = install(PACKAGED).read_text()
        pairs = [(n.name, n.nodeid) for n in self.nodes]
        conf = corosync_conf(pairs, self.token_ms)
        cib = cib_xml(pairs, self.devices, self.stonith_params)
        for n in self.nodes:
            n.create(conf, cib, self.agent or packaged)
        self._wire()

    def _wire(self) -> None:
        def ip(*argv: str) -> None:
            subprocess.run(["ip", *argv], check=True, capture_output=True)

        if len(self.nodes) == 2:
            a, b = self.nodes
            ip("link", "add", "cl-a", "type", "veth", "peer", "name", "cl-b")
            ip("link", "set", "cl-a", "netns", str(a.pid), "name", "eth0")
            ip("link", "set", "cl-b", "netns", str(b.pid), "name", "eth0")
        else:  # a bridge in a namespace of its own
            self._bridge = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
            time.sleep(0.2)
            br = ["nsenter", "-t", str(self._bridge.pid), "-n", "--"]
            subprocess.run([*br, "ip", "link", "add", "br0", "type", "bridge"], check=True)
            subprocess.run([*br, "ip", "link", "set", "br0", "up"], check=True)
            for n in self.nodes:
                ip("link", "add", f"cl-{n.nodeid}", "type", "veth", "peer", "name", "cl-x")
                ip("link", "set", f"cl-{n.nodeid}", "netns", str(n.pid), "name", "eth0")
                ip("link", "set", "cl-x", "netns", str(self._bridge.pid),
                   "name", f"port{n.nodeid}")
                subprocess.run([*br, "ip", "link", "set", f"port{n.nodeid}", "master", "br0",
                                "up"], check=True)
        for n in self.nodes:
            n.sh(f"ip addr add {n.addr}/24 dev eth0\nip link set eth0 up")

    def start(self) -> None:
        """Every node's corosync and Pacemaker, then the wait for their fencers."""
        for n in self.nodes:
            n.start()
        self.wait_fencers()

    def wait_fencers(self) -> None:
        """Every node's pacemaker-fenced has registered the device, with its metadata:
        before that, nothing unfences, and without the metadata nothing ever will."""
        try:
            self.wait(lambda: all(STONITH_ID in n.fencer_devices() for n in self.nodes),
                      f"every node's pacemaker-fenced to register {STONITH_ID}", 120)
        except ClusterError as e:
            missing = [n for n in self.nodes if STONITH_ID not in n.fencer_devices()]
            said = "; ".join(f"{n.name}: {n.fencer_words()[-3:] or 'nothing'}" for n in missing)
            raise ClusterError(f"pacemaker-fenced on {', '.join(n.name for n in missing)} did "
                               f"not register {STONITH_ID}; what it logged about it: {said}\n"
                               f"{e}") from None
        cause = self.cause()
        if cause:
            raise ClusterError(cause)

    def cause(self) -> str | None:
        """One line that explains a cluster that does not do what a test waits for, where
        the lab knows one."""
        for n in self.nodes:
            failed = n.metadata_failures()
            if failed:
                t0 = time.monotonic()
                n.run("fence_pr", "-o", "metadata", check=False, timeout=60)
                return (f"pacemaker-fenced on {n.name} registered {STONITH_ID} without "
                        f"metadata (so without on_target: no unfencing); its log: "
                        f"{failed[-1]!r}; fence_pr -o metadata takes "
                        f"{time.monotonic() - t0:.1f}s on {n.name} now (pacemaker-fenced "
                        f"allows 10 s)")
        return None

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        """Built and started for the `with` block, torn down after it whatever happens."""
        try:
            self.build()
            self.start()
            yield self
        finally:
            self.teardown()

    def teardown(self) -> None:
        for n in self.nodes:
            n.destroy()
        if self._bridge is not None:
            self._bridge.kill()
            self._bridge.wait()

    def diagnostics(self) -> str:
        out = []
        for n in self.nodes:
            out.append(f"===== {n.name}: crm_mon =====\n{n.crm_mon() if n.holder else ''}")
            out.append(f"===== {n.name}: pacemaker.log tail =====\n"
                       + n.log_tail("log-pacemaker/pacemaker.log", 60))
            out.append(f"===== {n.name}: pacemaker-fenced on {STONITH_ID} =====\n"
                       + "\n".join(n.fencer_words()[-15:]))
            out.append(f"===== {n.name}: corosync.log tail =====\n"
                       + n.log_tail("log-corosync/corosync.log", 15))
        return "\n".join(out)

    def wait(self, pred, what: str, timeout: float):  # type: ignore[no-untyped-def]
        """wait_for, failing with every node's logs: a cluster that never converges says why."""
        try:
            return wait_for(pred, what, timeout, interval=1.0)
        except TimeoutError as e:
            cause = self.cause()
            first = f"{cause}\n{e}" if cause else str(e)
            raise ClusterError(f"{first}\n{self.diagnostics()}") from None


if __name__ == "__main__":  # a quick look: python -m tests.lab.cluster (no storage)
    c = Cluster(Path("/tmp/fence_pr-cluster"), {"node1": {}, "node2": {}})
    c.build()
    try:
        c.start()
        t0 = time.monotonic()
        c.wait(lambda: all(n.online() == {"node1", "node2"} for n in c.nodes),
               "both nodes online", 120)
        print(f"both online after {time.monotonic() - t0:.1f}s")
        print(c["node1"].crm_mon())
    finally:
        c.teardown()
