"""Pacemaker clusters of two and three nodes, and fence_pr beside fence_scsi and fence_mpath."""
