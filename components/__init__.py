"""behaviorflow's pipeline stages, one folder each; `flows/` wires them, `serving/` runs the result."""
