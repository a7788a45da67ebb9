"""What the network is fed from a dataset or a robot: camera tiling and fitting, latent statistics, the latent cache.
Imports ``encoders`` and ``safety`` (every camera frame is checked finite where it is tiled), nothing else."""
