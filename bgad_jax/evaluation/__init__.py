"""Evaluation: lp inference, anomaly maps, metrics, reports."""
