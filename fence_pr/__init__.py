"""fence_pr: a Pacemaker fence agent built on Linux <linux/pr.h> persistent reservations."""

__version__ = "0.1.0"
