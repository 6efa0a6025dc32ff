"""corosync's node list, read with corosync-cmapctl: what key derivation (keys.py) and the
local node's name need.  The parser is pure; run_cmapctl is the one call to corosync."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .tools import ToolError, run_tool


class CmapError(ToolError):
    """corosync-cmapctl could not be run, failed, or did not answer within the budget."""


@dataclass(frozen=True)
class NodeEntry:
    name: str | None
    nodeid: int | None
    position: int  # N in nodelist.node.N.* -- what fence_scsi calls the node "id"
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterInfo:
    cluster_name: str | None
    nodes: list[NodeEntry] = field(default_factory=list)
    local_position: int | None = None

    def lookup(self, name_or_addr: str) -> NodeEntry | None:
        """Find a node by name, else by any ring address (fence_scsi's order of matching)."""
        for node in self.nodes:
            if node.name == name_or_addr:
                return node
        for node in self.nodes:
            if name_or_addr in node.addrs:
                return node
        return None

    def local(self) -> NodeEntry | None:
        """This host's entry, from nodelist.local_node_pos."""
        if self.local_position is None:
            return None
        return next((n for n in self.nodes if n.position == self.local_position), None)


_CMAP_LINE = re.compile(r"^(?P<key>\S+) \((?P<type>[a-z0-9]+)\) = (?P<value>.*)$")
_NODE_KEY = re.compile(r"^nodelist\.node\.(?P<pos>\d+)\.(?P<attr>[A-Za-z0-9_]+)$")
_RING_ADDR = re.compile(r"^ring\d+_addr$")


def parse_cmapctl(text: str) -> ClusterInfo:
    """Parse `corosync-cmapctl` output (`key (type) = value` lines); unknown lines are ignored."""
    cluster_name: str | None = None
    local_position: int | None = None
    attrs: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        m = _CMAP_LINE.match(line.rstrip("\r"))
        if m is None:
            continue
        key, value = m.group("key"), m.group("value")
        if key == "totem.cluster_name":
            cluster_name = value
        elif key == "nodelist.local_node_pos":
            local_position = int(value)
        elif (nm := _NODE_KEY.match(key)) is not None:
            attrs.setdefault(int(nm.group("pos")), {})[nm.group("attr")] = value
    nodes = []
    for pos in sorted(attrs):
        a = attrs[pos]
        ring_keys = sorted((k for k in a if _RING_ADDR.match(k)), key=lambda k: int(k[4:-5]))
        nodeid = a.get("nodeid")
        nodes.append(NodeEntry(
            name=a.get("name"),
            nodeid=int(nodeid) if nodeid is not None else None,
            position=pos,
            addrs=tuple(a[k] for k in ring_keys),
        ))
    return ClusterInfo(cluster_name=cluster_name, nodes=nodes, local_position=local_position)


def run_cmapctl(path: str = "corosync-cmapctl", *, timeout: float = 10.0) -> str:
    """Dump corosync's cmap (all keys: includes totem.cluster_name and nodelist.*)."""
    try:
        done = run_tool([path], timeout=timeout, error=CmapError,
                        hint="is corosync running and answering?")
    except OSError as exc:
        raise CmapError(f"cannot run {path}: {exc}") from exc
    if done.returncode != 0:
        raise CmapError(f"{path} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def load_cluster_info(reader: Callable[[], str] = run_cmapctl) -> ClusterInfo:
    return parse_cmapctl(reader())
