"""The host side: kernels, booting the guest, one run, the two lanes of `make lab`."""
