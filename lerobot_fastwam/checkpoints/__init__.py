"""Weights in and out: strict safetensors loading, the built-in's configs, the Wan key layout, official ``.pt``
files. Imports ``network`` (the shapes a checkpoint must fit) and ``configuration_fastwam``, nothing above them."""
