"""notebooks/colab_tpu.ipynb runs top to bottom on the CPU (RUN = 'ci')."""

import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_notebook_runs_on_cpu():
  notebook = nbformat.read(os.path.join(REPO, 'notebooks', 'colab_tpu.ipynb'), as_version=4)
  (params,) = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  assert "RUN = 'colab'" in params.source
  params.source = params.source.replace("RUN = 'colab'", "RUN = 'ci'")
  NotebookClient(notebook, timeout=900, kernel_name='python3',
                 resources={'metadata': {'path': REPO}}).execute()
  outputs = ''.join(o.get('text', '') for c in notebook.cells if c.cell_type == 'code'
                    for o in c.get('outputs', []))
  assert 'device(s)' in outputs and 'checkpoints and results go to' in outputs
  results = [o for c in notebook.cells for o in c.get('outputs', [])
             if 'text/markdown' in o.get('data', {})]
  assert results and 'image AUROC' in results[0]['data']['text/markdown']
  images = [o for c in notebook.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(images) == 4
