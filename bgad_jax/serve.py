"""The inspection page: drop images, see each overlay, score and verdict, move the threshold.

  python main.py --mode=serve --workdir=runs/demo     # then open http://127.0.0.1:8080

A standard-library HTTP server and one self-contained HTML page (no scripts
or fonts from elsewhere: it works on a machine without internet), so the
page needs nothing beyond bgad_jax. ``POST /predict`` takes one image's bytes
and returns its overlay, scores and verdict as JSON; the threshold slider
re-decides the verdicts in the page, without asking the server again.
"""

import base64
import html as html_lib
import http.server
import json
import urllib.parse
from typing import Any, Callable, Dict

import numpy as np

from bgad_jax.data import image_io
from bgad_jax.detector import Detector
from bgad_jax.errors import ConfigError, DataError
from bgad_jax.evaluation import report

MAX_UPLOAD_BYTES = 64 * 2 ** 20

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bgad_jax inspection</title>
<style>
 body { font-family: sans-serif; margin: 1.5em; color: #222; }
 #drop { border: 2px dashed #888; padding: 1.5em; text-align: center; margin-bottom: 1em; }
 #drop.over { background: #eef; }
 #cards { display: flex; flex-wrap: wrap; gap: 1em; }
 .card { border: 1px solid #ccc; padding: .5em; }
 .card img { display: block; image-rendering: pixelated; max-width: 90vw; height: auto; }
 .verdict.anomalous { color: #b00; font-weight: bold; }
 .verdict.normal { color: #070; }
 .card.error { color: #b00; max-width: 30em; }
</style></head>
<body>
<h1>bgad_jax inspection: __MODEL__</h1>
<div id="drop">Drop images here, or <input id="files" type="file" accept="image/*" multiple></div>
<label>nll threshold <input id="threshold" type="range" min="__SLIDER_MIN__" max="__SLIDER_MAX__"
 step="__SLIDER_STEP__" value="__THRESHOLD__"></label>
<span id="threshold-value"></span>
(calibrated: __THRESHOLD__; <span id="summary">no images yet</span>)
<div id="cards"></div>
<script>
const slider = document.getElementById('threshold');
function decide() {
  const threshold = parseFloat(slider.value);
  document.getElementById('threshold-value').textContent = threshold.toFixed(3);
  const cards = document.querySelectorAll('.card[data-nll]');
  let flagged = 0;
  cards.forEach(card => {
    const anomalous = parseFloat(card.dataset.nll) > threshold;
    flagged += anomalous;
    const verdict = card.querySelector('.verdict');
    verdict.textContent = anomalous ? 'anomalous' : 'normal';
    verdict.className = 'verdict ' + verdict.textContent;
  });
  if (cards.length) {
    document.getElementById('summary').textContent = flagged + ' of ' + cards.length + ' anomalous';
  }
}
function line(parent, cls, text) {
  const div = document.createElement('div');
  div.className = cls;
  div.textContent = text;
  parent.appendChild(div);
}
async function inspect(file) {
  const card = document.createElement('div');
  card.className = 'card pending';
  line(card, 'name', file.name);
  document.getElementById('cards').appendChild(card);
  const response = await fetch('predict', {method: 'POST', body: file,
                                           headers: {'X-Filename': encodeURIComponent(file.name)}});
  const result = await response.json();
  if (!response.ok) {
    card.className = 'card error';
    line(card, 'message', result.error);
    return;
  }
  const img = document.createElement('img');
  img.className = 'overlay';
  img.alt = 'overlay of ' + file.name;
  img.src = result.overlay;
  card.insertBefore(img, card.firstChild);
  line(card, 'score',
       'score ' + result.score.toFixed(4) + ', nll score ' + result.nll_score.toFixed(3));
  line(card, 'verdict', '');
  card.dataset.nll = result.nll_score;
  card.className = 'card done';
  if (result.nll_score >= parseFloat(slider.max)) {   // keep every image within the slider
    slider.max = (result.nll_score + 1).toFixed(3);
  }
  decide();
}
function inspectAll(files) { for (const file of files) inspect(file); }
document.getElementById('files').addEventListener('change', e => inspectAll(e.target.files));
const drop = document.getElementById('drop');
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => {
  e.preventDefault(); drop.classList.remove('over'); inspectAll(e.dataTransfer.files);
});
slider.addEventListener('input', decide);
decide();
</script></body></html>
"""


def overlay_png(detector: Detector, image: np.ndarray, anomaly_map: np.ndarray) -> bytes:
  """The image and its heat map side by side (as ``--mode=predict`` draws it), PNG bytes."""
  high = max(float(detector.constants['score_threshold']) * 2, 1e-6)
  return image_io.encode_png(report.overlay(image, anomaly_map, 0.0, high))


def inspect_image(detector: Detector, name: str, data: bytes) -> Dict[str, Any]:
  """One uploaded image's result: name, width, height, score, nll_score, anomalous, overlay.

  ``overlay`` is a PNG data URL [H, 2W] at the image's own size.

  Raises:
    ImageDecodeError: ``data`` is not an image (the message names ``name``).
  """
  try:
    rgb = image_io.decode_image(data)
  except image_io.ImageDecodeError as error:
    raise image_io.ImageDecodeError(f'{name}: {error}') from error
  result = detector.predict([rgb])[0]
  png = overlay_png(detector, rgb, result.anomaly_map)
  return dict(name=name, width=rgb.shape[1], height=rgb.shape[0], score=result.score,
              nll_score=result.nll_score, anomalous=result.anomalous,
              overlay='data:image/png;base64,' + base64.b64encode(png).decode('ascii'))


def render_page(detector: Detector, title: str) -> bytes:
  """The page, with the model's name and calibrated threshold filled in."""
  threshold = detector.threshold
  span = 2 * max(abs(threshold), 1.0)   # nll scores can be slightly negative
  html = (PAGE.replace('__MODEL__', html_lib.escape(title))
          .replace('__SLIDER_MIN__', f'{threshold - span:.6g}')
          .replace('__SLIDER_MAX__', f'{threshold + span:.6g}')
          .replace('__SLIDER_STEP__', f'{span / 1000:.6g}')
          .replace('__THRESHOLD__', f'{threshold:.6g}'))
  return html.encode('utf-8')


def make_handler(detector: Detector, page: bytes) -> type:
  """A request handler class bound to ``detector`` and ``page``."""

  class Handler(http.server.BaseHTTPRequestHandler):
    """GET / -> the page; POST /predict (body: image bytes, X-Filename) -> JSON."""

    def _send(self, status: int, body: bytes, content_type: str):
      self.send_response(status)
      self.send_header('Content-Type', content_type)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def _json(self, status: int, payload: Dict[str, Any]):
      self._send(status, json.dumps(report.to_jsonable(payload)).encode(), 'application/json')

    def do_GET(self):   # pylint: disable=invalid-name
      if urllib.parse.urlparse(self.path).path in ('/', '/index.html'):
        self._send(200, page, 'text/html; charset=utf-8')
      else:
        self._json(404, dict(error=f'no page {self.path}'))

    def do_POST(self):   # pylint: disable=invalid-name
      if urllib.parse.urlparse(self.path).path != '/predict':
        self._json(404, dict(error=f'no endpoint {self.path}'))
        return
      name = urllib.parse.unquote(self.headers.get('X-Filename', 'upload'))
      length = int(self.headers.get('Content-Length') or 0)
      if length > MAX_UPLOAD_BYTES:
        self._json(413, dict(error=f'{name}: {length} bytes; at most {MAX_UPLOAD_BYTES}'))
        return
      data = self.rfile.read(length)
      try:
        self._json(200, inspect_image(detector, name, data))
      except DataError as error:
        self._json(400, dict(error=str(error)))

    def log_message(self, format, *args):   # pylint: disable=redefined-builtin
      pass   # one line per request would drown the URL line

  return Handler


def serve(config, workdir: str, ready: Callable[[str], None] = print) -> None:
  """Serves the inspection page for the model in ``workdir`` until interrupted.

  Args:
    config: the run's config (``serve.host``, ``serve.port``; 0 = any free port).
    ready: called with the page's URL once the model is loaded and compiled.

  Raises:
    NoTrainedModelError: ``workdir`` holds no finished training.
    ConfigError: the address cannot be used (e.g. the port is taken).
  """
  host, port = config.serve.host, config.serve.port
  try:   # the address first: a taken port fails before the model loads
    server = http.server.HTTPServer((host, port), http.server.BaseHTTPRequestHandler)
  except OSError as error:
    raise ConfigError(f'serve.host={host!r} serve.port={port}: cannot listen there ({error}); '
                      'pick another, e.g. --config.serve.port=0 for any free port') from error
  with server:
    detector = Detector.load(workdir, config)
    detector.predict([np.zeros((8, 8, 3), np.uint8)])   # compile before the first visitor
    server.RequestHandlerClass = make_handler(detector, render_page(detector, workdir))
    ready(f'http://{host}:{server.server_address[1]}/')
    try:
      server.serve_forever()
    except KeyboardInterrupt:
      pass
