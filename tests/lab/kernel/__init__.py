"""What the kernels do (the facts fence_pr builds on), and the lab's own fault injection."""
