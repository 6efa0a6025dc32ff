"""The lab names the cause when a cluster cannot unfence, instead of timing out on storage.

pacemaker-fenced gives an agent's `metadata` a fixed 10 s.  On a busy machine fence_pr's
metadata once took longer (it imported fencing.py for it), and the fencer registered the
device without the metadata, so without on_target="1": no node ever unfenced itself, and
the lab said only that it had waited 300 s for keys on the storage.  Here each node's
fence_pr answers `metadata` after 12 s on purpose; the lab restarts such a fencer once (a
loaded guest can do this to a fencer), and the cluster's start must then fail with the one
line that says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..fixtures.cluster import STONITH_ID, Cluster, ClusterError, LabNotice
from ..fixtures.packaged import LAB_PREFIX

# pacemaker-fenced asks for metadata on stdin (`action=metadata`), not with -o.
SLOW_METADATA = f"""#!/bin/sh
input=$(cat)
case "$input" in *action=metadata*) sleep 12;; esac
printf '%s\\n' "$input" | exec {LAB_PREFIX}/sbin/fence_pr "$@"
"""


def test_fencer_without_metadata_is_named(lio) -> None:  # type: ignore[no-untyped-def]
    links = {f"node{n}": {"lun0": lio.maps[n][0]} for n in (1, 2)}
    c = Cluster(Path("/tmp/fence_pr-cluster-diagnosis"), links, agent=SLOW_METADATA)
    with pytest.warns(LabNotice, match="without fence_pr's metadata"), \
            pytest.raises(ClusterError) as e, c.running():
        pass
    first = str(e.value).splitlines()[0]
    assert f"registered {STONITH_ID} without metadata" in first, str(e.value)[:3000]
    assert "pacemaker-fenced on node" in first and "fence_pr -o metadata takes" in first, first
    assert first.endswith("the same again after the lab restarted it"), first
