"""Standing a federation up: the simulated demo, local loopback deployments, benchmarks."""
