"""Example dicts as the input pipeline returns them, for the data tests."""

import numpy as np


def example(label, defect_type, name, size=8, value=100):
  """A flat grey image; anomalies get a 2x2 mask in the corner."""
  mask = np.zeros((size, size), np.uint8)
  if label:
    mask[:2, :2] = 1
  return dict(image=np.full((size, size, 3), value, np.uint8), mask=mask, has_mask=True,
              label=label, defect_type=defect_type, filename=name)
