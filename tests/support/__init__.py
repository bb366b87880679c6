"""What the tests share, imported by them and never by the package: fakes, README commands run as a
user runs them, runs on simulated models, the multi-node scenario, the real-model stage checks and
the arena-hard-auto oracle."""
