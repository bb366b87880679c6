"""Tasks whose answers a program can check: data, verifiers and the functions that play model roles."""
