"""The machinery every stage runs on: the table of stages, the run directory and its folders,
fingerprints, the one stage runner and the connection to the cluster."""
