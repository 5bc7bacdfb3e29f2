"""meshfabric's benchmarks: each prints a table and writes JSON results under bench/results/."""
