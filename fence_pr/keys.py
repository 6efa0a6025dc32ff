"""64-bit reservation keys: derivation from the corosync node list, parsing, formatting.

Pure logic: the corosync node list comes from host/corosync.py.

Schemes (KeyScheme), named after fence_scsi's `key_value` option where they copy it:
- NODEID (fence_pr's default): high 32 bits from sha256(cluster name), low 32 bits the corosync
  node ID. Stable when other nodes join or leave, unique within a cluster by construction.
- ID: fence_scsi's default `key_value=id`: md5(cluster name) hex[:4] followed by the node's
  *position* in `corosync-cmapctl nodelist` printed as 4 decimal digits, read as hex. Changes when
  the node list is reordered (fence-agents #270, #289); offered only for interoperability.
- HASH: fence_scsi's `key_value=hash`: md5(cluster name) hex[:4] + md5(node name) hex[:4].
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum

from .host.corosync import ClusterInfo
from .pr.errors import FencePrError
from .pr.prtypes import Key, KeyRangeError

_U32_MAX = (1 << 32) - 1
_KEY_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")


class KeyFormatError(FencePrError, ValueError):
    """A configured key is not a usable reservation key."""


class KeyCollision(FencePrError, ValueError):
    """Two nodes would register the same key: fencing one would fence both."""


class KeyDerivationError(FencePrError, ValueError):
    """The node list lacks what a scheme needs (unknown node, no cluster name, no node ID)."""


class KeyScheme(Enum):
    NODEID = "nodeid"
    ID = "id"
    HASH = "hash"


# --- explicit keys ---------------------------------------------------------------------------

def parse_key(text: str) -> Key:
    """Parse a key written as hex, with or without 0x (leading zeros allowed)."""
    expected = "expected a non-zero hexadecimal key of at most 16 digits, e.g. 0x1a2b3c4d"
    m = _KEY_RE.fullmatch(text.strip())
    if m is None:
        raise KeyFormatError(f"invalid reservation key {text!r}: {expected}")
    value = int(m.group(1), 16)
    if value == 0:
        raise KeyFormatError(f"invalid reservation key {text!r}: 0 means 'no key'; {expected}")
    try:
        return Key(value)
    except KeyRangeError:
        raise KeyFormatError(
            f"invalid reservation key {text!r}: longer than 64 bits; {expected}") from None


def check_unique(mapping: dict[str, Key]) -> None:
    """Refuse a node -> key mapping in which two nodes share a key."""
    seen: dict[int, str] = {}
    for node, key in mapping.items():
        other = seen.setdefault(key, node)
        if other != node:
            raise KeyCollision(
                f"nodes {other!r} and {node!r} would both use key {key}; "
                "choose another key scheme or set explicit keys"
            )


# --- derivation ------------------------------------------------------------------------------

def corosync_key(cluster_name: str, node_id: int) -> Key:
    """fence_pr's default key: cluster hash in the high 32 bits, corosync node ID in the low."""
    if not 1 <= node_id <= _U32_MAX:
        raise KeyDerivationError(f"corosync node ID {node_id!r} is not in 1..{_U32_MAX}")
    digest = hashlib.sha256(cluster_name.encode("utf-8")).digest()
    # Take the first non-zero 32-bit word so the cluster part is never 0 (sha256 has 8 words).
    high = next((w for w in (int.from_bytes(digest[i : i + 4], "big") for i in range(0, 32, 4))
                 if w), 1)
    return Key((high << 32) | node_id)


def _md5_hex(text: str, what: str) -> str:
    # fence_scsi encodes as ASCII (non-ASCII names crash it); usedforsecurity=False as on FIPS.
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise KeyDerivationError(
            f"{what} {text!r} is not ASCII; fence_scsi cannot derive a key from it"
        ) from None
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _from_fence_scsi_string(text: str, what: str) -> Key:
    value = int(text, 16)
    if value == 0:
        raise KeyDerivationError(f"fence_scsi would derive key 0 for {what}; set an explicit key")
    return Key(value)


def fence_scsi_key(cluster_name: str, node_position: int) -> Key:
    """fence_scsi `key_value=id`: "%.4s%.4d" % (md5(cluster).hexdigest(), position), as hex."""
    if node_position < 0:
        raise KeyDerivationError(f"node position {node_position!r} is negative")
    # The format string is fence_scsi's, kept verbatim so the result cannot drift from it.
    text = "%.4s%.4d" % (_md5_hex(cluster_name, "cluster name"), node_position)  # noqa: UP031
    return _from_fence_scsi_string(text, f"position {node_position}")


def fence_scsi_hash_key(cluster_name: str, node_name: str) -> Key:
    """fence_scsi `key_value=hash`: "%.4s%.4s" % (md5(cluster), md5(node name)), as hex.

    node_name is the string fence_scsi was given as plug/nodename, verbatim.
    """
    cluster_hex = _md5_hex(cluster_name, "cluster name")
    text = "%.4s%.4s" % (cluster_hex, _md5_hex(node_name, "node name"))  # noqa: UP031
    return _from_fence_scsi_string(text, f"node {node_name!r}")


def derive_key(scheme: KeyScheme, cluster: ClusterInfo, node: str) -> Key:
    """Key for `node` (a name or ring address as Pacemaker passes it) under `scheme`."""
    if cluster.cluster_name is None:
        raise KeyDerivationError("corosync has no totem.cluster_name; cannot derive keys")
    if scheme is KeyScheme.HASH:
        return fence_scsi_hash_key(cluster.cluster_name, node)
    entry = cluster.lookup(node)
    if entry is None:
        raise KeyDerivationError(f"node {node!r} is not in the corosync node list")
    if scheme is KeyScheme.ID:
        return fence_scsi_key(cluster.cluster_name, entry.position)
    if entry.nodeid is None:
        raise KeyDerivationError(f"node {node!r} has no nodeid in the corosync node list")
    return corosync_key(cluster.cluster_name, entry.nodeid)
