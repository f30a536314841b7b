"""jtrans: a JAX/Flax Transformer research framework."""
