"""The benchmarks of a source checkout: the harness behind `nfos bench` (bench/harness), the
peers (bench/peers), the runtime and live benchmarks, and the results (bench/results)."""
