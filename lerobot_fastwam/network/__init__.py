"""The network: both experts, the Mixture-of-Transformers layer loop, the masks, the loss and the samplers.
Imports only ``configuration_fastwam`` from the rest of the package (the config it is built from)."""
