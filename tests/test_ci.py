"""The README's test command is exactly what .ci/run executes."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def test_ci_runs_the_readme_commands():
  blocks = re.findall(r'```bash\n(.*?)\n```', _read('README.md'), re.S)
  install_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
  assert install_cmd == 'pip install -e . && python main.py'
  ci_lines = [line.strip() for line in _read('.ci/run').splitlines()]
  assert test_cmd in ci_lines
