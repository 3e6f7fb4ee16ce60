"""What a built dataset was built from, so that a changed source is never read stale.

A fingerprint lists the category's source (its resolved folder, or the archive)
and every image file under it with size and modification time. `build` stores
it next to the built dataset and rebuilds when the source's fingerprint differs.
"""

import json
import os
from typing import Dict, Optional

from tfds_mvtec.image_io import IMAGE_EXTENSIONS
from tfds_mvtec import layout

FILENAME = 'source_fingerprint.json'
_FORMAT = 1


def of_source(manual_dir: str, category: str, dataset: layout.Dataset) -> Dict:
  """The fingerprint of ``category`` in ``manual_dir`` (see `layout.category_source`).

  A folder source also covers the dataset's shared paths beside it (VisA's
  split file), named ``../<path>``.

  Returns:
    dict(format, source: absolute path, files: sorted [relative path, size, mtime_ns]).
  """
  source = os.path.realpath(layout.category_source(dataset, manual_dir, category))
  if os.path.isfile(source):
    stats = {os.path.basename(source): os.stat(source)}
  else:
    stats = {}
    for folder in [source] + [os.path.join(os.path.dirname(source), shared)
                              for shared in dataset.shared]:
      for parent, _, names in os.walk(folder):
        for name in names:
          if name.lower().endswith(IMAGE_EXTENSIONS + ('.csv',)) and not name.startswith('.'):
            path = os.path.join(parent, name)
            stats[os.path.relpath(path, source)] = os.stat(path)
  files = [[name, stat.st_size, stat.st_mtime_ns] for name, stat in sorted(stats.items())]
  return dict(format=_FORMAT, source=source, files=files)


def read(data_path: str) -> Optional[Dict]:
  """The fingerprint stored in a built dataset's folder, or None."""
  path = os.path.join(data_path, FILENAME)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def write(data_path: str, fingerprint: Dict) -> None:
  temporary = os.path.join(data_path, FILENAME + '.tmp')
  with open(temporary, 'w') as f:
    json.dump(fingerprint, f)
  os.replace(temporary, os.path.join(data_path, FILENAME))


def difference(stored: Optional[Dict], current: Dict) -> str:
  """Why ``stored`` (None: no fingerprint) does not describe ``current``, in a few words."""
  if stored is None or stored.get('format') != current['format']:
    return 'it has no source fingerprint (built by an older bgad_jax)'
  if stored['source'] != current['source']:
    return f"it was built from {stored['source']}, this run reads {current['source']}"
  old = {name: tuple(rest) for name, *rest in stored['files']}
  new = {name: tuple(rest) for name, *rest in current['files']}
  changes = [(what, sorted(names)) for what, names in (
      ('added', new.keys() - old.keys()), ('removed', old.keys() - new.keys()),
      ('changed', {n for n in new.keys() & old.keys() if new[n] != old[n]})) if names]
  return 'files in its source changed since: ' + ', '.join(
      f'{len(names)} {what} (e.g. {names[0]})' for what, names in changes)
