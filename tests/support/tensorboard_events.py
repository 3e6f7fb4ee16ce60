"""Reads the scalars of TensorBoard event files (TFRecord framing + Event protos), no TF."""

import glob
import os
import struct
from typing import Dict, List, Tuple

from tensorboardX.proto import event_pb2


def _records(path: str):
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)   # uint64 length, uint32 masked crc of the length
      if len(header) < 12:
        return
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      f.read(4)             # masked crc of the data
      yield data


def scalars(logdir: str) -> Dict[str, List[Tuple[int, float]]]:
  """tag -> [(step, value)] over every event file in ``logdir``."""
  found: Dict[str, List[Tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    for record in _records(path):
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        number = value.simple_value if value.HasField('simple_value') else None
        if number is None and value.HasField('tensor') and value.tensor.float_val:
          number = value.tensor.float_val[0]
        if number is not None:
          found.setdefault(value.tag, []).append((event.step, number))
  return found
