"""What each machine of the machine lab finds in its /etc at boot (issue 15).

The root filesystem is shared and read-only; a machine is made a cluster node or the
storage machine by the files written into its transfer share's etc/, which the initramfs
copies over the root's /etc before systemd starts: hostname, machine-id, addresses,
corosync.conf, multipath.conf, the iSCSI initiator name, the NVMe host NQN and ID, and the
lab's own units (addresses, storage logins, the command channel).  Units a lab machine has
no use for are masked, because under TCG every service costs boot time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..fixtures import cluster

TARGET_IQN = "iqn.2026-01.lab.fence-pr:machines"
SUBSYS_NQN = "nqn.2026-01.lab.fence-pr:machines"
CLUSTER_NAME = "prmachines"
ISCSI_PORT = 3260
NVME_PORT = 4420
# network -> the /24 it carries; the storage machine is .1 on the storage networks and a
# node i is .(10 + i) on every network.
SUBNETS = {"c": "10.15.3", "s1": "10.15.1", "s2": "10.15.2"}
STORAGE_NETS = ("s1", "s2")
NODE_NETS = ("c", "s1", "s2")

MASK_ALL = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "systemd-timesyncd.service", "pcsd.service",
    "pcsd-ruby.service", "getty@tty1.service", "serial-getty@ttyS0.service",
    "lvm2-monitor.service", "rtslib-fb-targetctl.service", "targetclid.socket",
    "open-iscsi.service", "nvmefc-boot-connections.service", "nvmf-autoconnect.service",
    "systemd-networkd-wait-online.service", "dpkg-db-backup.timer", "logrotate.timer",
)
MASK_STORAGE = ("corosync.service", "pacemaker.service", "multipathd.service",
                "multipathd.socket", "iscsid.socket", "iscsid.service", "crm_mon.service")


def storage_addr(net: str) -> str:
    return f"{SUBNETS[net]}.1"


def node_addr(node: int, net: str) -> str:
    return f"{SUBNETS[net]}.{10 + node}"


def node_name(node: int) -> str:
    return f"node{node}"


def node_iqn(node: int) -> str:
    return f"iqn.2026-01.lab.fence-pr:machine-node{node}"


def host_nqn(node: int) -> str:
    return f"nqn.2014-08.org.nvmexpress:uuid:{host_id(node)}"


def host_id(node: int) -> str:
    h = hashlib.sha256(f"fence_pr machine lab node{node}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def mac(index: int, nic: int) -> str:
    return f"52:54:00:0f:{index:02x}:{nic:02x}"


@dataclass(frozen=True)
class Link:
    """A file that is a symlink (a masked or enabled unit)."""

    target: str


Files = dict[str, "str | Link"]


def _unit(name: str, body: str, wanted_by: str) -> Files:
    return {f"systemd/system/{name}": body,
            f"systemd/system/{wanted_by}.wants/{name}": Link(f"/etc/systemd/system/{name}")}


def _base(name: str, nets: tuple[str, ...], addrs: dict[str, str],
          hosts: dict[str, str], masks: tuple[str, ...]) -> Files:
    files: Files = {
        "hostname": f"{name}\n",
        "machine-id": hashlib.sha256(f"fence_pr machine {name}".encode()).hexdigest()[:32]
        + "\n",
        "hosts": "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for h, a in hosts.items()),
    }
    for unit in masks:
        files[f"systemd/system/{unit}"] = Link("/dev/null")
    # eth<i> is the i-th NIC on QEMU's command line (net.ifnames=0), in `nets` order.
    lines = ["#!/bin/sh", "# The machine's addresses, one /24 per lab network.", "set -e",
             "ip link set lo up"]
    for i, net in enumerate(nets):
        lines += [f"n=0; until [ -e /sys/class/net/eth{i} ]; do n=$((n+1)); "
                  f"[ $n -gt 600 ] && {{ echo 'fpl-net: no eth{i} after 60 s' >&2; exit 1; }}; "
                  "sleep 0.1; done",
                  f"ip addr add {addrs[net]}/24 dev eth{i}", f"ip link set eth{i} up"]
    files["fpl/net.sh"] = "\n".join(lines) + "\n"
    files.update(_unit("fpl-net.service", (
        "[Unit]\nDescription=lab machine addresses\nDefaultDependencies=no\n"
        "After=systemd-udevd.service systemd-udev-trigger.service\n"
        "Before=network.target network-online.target\nWants=network.target\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh /etc/fpl/net.sh\n"
        "[Install]\nWantedBy=network-online.target\n"), "network-online.target"))
    files.update(_unit("fpl-agent.service", (
        "[Unit]\nDescription=lab command channel (/xfer/q)\nDefaultDependencies=no\n"
        "After=local-fs.target\n"
        "[Service]\nExecStart=/bin/bash /xfer/agent.sh\nRestart=always\n"), "sysinit.target"))
    # multi-user.target pulls network-online.target in, so the addresses come up at boot.
    files["systemd/system/multi-user.target.wants/fpl-net.service"] = Link(
        "/etc/systemd/system/fpl-net.service")
    return files


def hosts_of(nodes: int) -> dict[str, str]:
    h = {node_name(n): node_addr(n, "c") for n in range(1, nodes + 1)}
    h["storage"] = storage_addr("s1")
    return h


def storage_files(nodes: int) -> Files:
    addrs = {net: storage_addr(net) for net in STORAGE_NETS}
    return _base("storage", STORAGE_NETS, addrs, hosts_of(nodes), MASK_ALL + MASK_STORAGE)


def corosync_conf(nodes: int, token_ms: int) -> str:
    """The one-kernel lab's corosync.conf (fixtures/cluster.py) on the machines' network."""
    return cluster.corosync_conf([(node_name(n), n) for n in range(1, nodes + 1)], token_ms,
                                 addr=lambda n: node_addr(n, "c"), cluster_name=CLUSTER_NAME)


MULTIPATH_CONF = (
    "defaults {\n    user_friendly_names no\n    find_multipaths no\n"
    "    polling_interval 5\n    reservation_key file\n}\n"
    "blacklist {\n    devnode \"^nvme\"\n}\n"
)


def storage_login_script() -> str:
    """A node's boot-time logins: both iSCSI portals and both NVMe/TCP ports, as an admin's
    node.startup=automatic records and nvmf-autoconnect would bring them up."""
    lines = ["#!/bin/sh", "# The node's shared storage over both storage networks.",
             "modprobe iscsi_tcp; modprobe nvme-tcp; modprobe dm-multipath"]
    for net in STORAGE_NETS:
        p = f"{storage_addr(net)}:{ISCSI_PORT}"
        lines += [f"iscsiadm -m discovery -t st -p {p} >/dev/null || "
                  f"echo 'fpl-storage: no iSCSI discovery on {p}' >&2"]
    # A path that stops answering fails its I/O to dm-multipath after 10 s, not 120.
    lines += ["iscsiadm -m node -o update -n node.session.timeo.replacement_timeout -v 10",
              "iscsiadm -m node -L all || echo 'fpl-storage: not every iSCSI login' >&2"]
    for net in STORAGE_NETS:
        lines += [f"nvme connect -t tcp -a {storage_addr(net)} -s {NVME_PORT} "
                  f"-n {SUBSYS_NQN} >/dev/null || "
                  f"echo 'fpl-storage: no NVMe/TCP on {storage_addr(net)}' >&2"]
    lines += ["udevadm settle -t 60", "exit 0"]
    return "\n".join(lines) + "\n"


def node_files(node: int, nodes: int, token_ms: int) -> Files:
    name = node_name(node)
    addrs = {net: node_addr(node, net) for net in NODE_NETS}
    files = _base(name, NODE_NETS, addrs, hosts_of(nodes), MASK_ALL)
    files["corosync/corosync.conf"] = corosync_conf(nodes, token_ms)
    files["multipath.conf"] = MULTIPATH_CONF
    files["iscsi/initiatorname.iscsi"] = f"InitiatorName={node_iqn(node)}\n"
    files["nvme/hostnqn"] = host_nqn(node) + "\n"
    files["nvme/hostid"] = host_id(node) + "\n"
    files["fpl/storage.sh"] = storage_login_script()
    files.update(_unit("fpl-storage.service", (
        "[Unit]\nDescription=lab node storage logins\n"
        "After=fpl-net.service network-online.target iscsid.socket\nWants=iscsid.socket\n"
        "Before=corosync.service pacemaker.service\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh /etc/fpl/storage.sh\n"
        ), "multi-user.target"))
    return files
