"""Weights in and out: strict safetensors loading with a checksum, the built-in's configs, the Wan key layout,
official ``.pt`` files, and a checkpoint's cameras and statistics against the config and data it loads with.
Imports ``network`` (the shapes a checkpoint must fit) and ``configuration_fastwam``, nothing above them."""
