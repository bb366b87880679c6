"""Ray side of the data stages: actor pools, Ray Data graphs, run directories, inputs."""
