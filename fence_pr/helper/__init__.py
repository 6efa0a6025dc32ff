"""fence_pr_helper: QEMU's pr-manager-helper protocol on fence_pr's engine (main.py)."""
