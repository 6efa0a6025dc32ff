"""fence_pr and fence_pr_check as an admin runs them: every action, each kind of storage,
bad input, no privilege."""
