"""What fence_pr uses of the host beyond the block devices: the run's budget and the child
process that bounds it (budget, bounded), the node lock (lock), multipathd's key store
(multipathd).  Below the device model, above the pr.h binding.
"""
