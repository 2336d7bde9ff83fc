"""Model checking: exhaustive exploration of a bounded world, properties, mutants."""
