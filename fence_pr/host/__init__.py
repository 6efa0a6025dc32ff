"""What fence_pr uses of the host beyond the block devices: the run's budget and the child
process that bounds it (budget, bounded), the node lock (lock), and the host's tools, each
run within the budget (tools): corosync's node list (corosync), device-mapper's path states
(dm), shared LVM volume groups (lvm), multipathd's key store (multipathd).  Below the
device model, above the pr.h binding.
"""
