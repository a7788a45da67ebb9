"""The frozen encoders around the network: frames <-> latents (Wan2.2 VAE or DCT codec), instruction -> umT5 context.
Imports nothing from the rest of the package; they read the config's fields without importing its class."""
