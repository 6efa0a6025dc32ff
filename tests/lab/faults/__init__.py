"""Path faults, a target that stops answering, split brain, two runs at once."""
