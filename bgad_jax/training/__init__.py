"""Training: frozen features, training set, plan, state, jitted step, losses, schedule, checkpoints."""
