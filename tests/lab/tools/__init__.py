"""The lab's tools beside the tests: `make demo` and `make bench`."""
