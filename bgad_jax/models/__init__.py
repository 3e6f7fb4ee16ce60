"""Models: the frozen backbone, the conditional flows, the positional condition, weight import."""
