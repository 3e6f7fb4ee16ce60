"""Data: image decoding, input pipeline, known anomalies, anomaly strategies, demo data."""
