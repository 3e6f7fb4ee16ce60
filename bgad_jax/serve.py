"""The inspection server: a page for people, a JSON API for programs.

  python main.py --mode=serve --workdir=runs/demo     # then open http://127.0.0.1:8080

  GET  /               the inspection page: drop images, see each overlay, score and
                       verdict, move the threshold (one self-contained HTML page: no
                       scripts or fonts from elsewhere)
  GET  /health         {"status": "ok", "model", "threshold", "inp_size", "version",
                        "queued", "uptime_s"}
  POST /predict        one image: its bytes as the body (name in X-Filename), or
                       multipart/form-data with one file -> one result
  POST /predict/batch  multipart/form-data with files -> {"results": [...]}, one per
                       file in order (a file that is not an image gets {"name", "error"})
  ?overlay=0           answers without the overlay PNG (smaller, faster)

A result: {"name", "width", "height", "score", "nll_score", "anomalous",
"overlay": "data:image/png;base64,..."}; an error: {"error": "..."} with a
4xx status (5xx for a bug). Each connection has its own thread, so a slow or
stalled client holds only that thread, for at most ``serve.read_timeout_s``
per read and ``serve.request_timeout_s`` per request. Inference runs one
request at a time in arrival order; the others wait in a queue (never
refused). At most ``serve.max_connections`` connections are served at once;
later ones wait in the listen backlog (``serve.backlog``). Sizes are checked
before reading: a body over ``serve.max_upload_mb`` or an image over
``serve.max_pixels`` (read from its header, before decoding) gets 413.
SIGTERM or SIGINT stops accepting, lets requests in flight finish, and exits.
"""

import base64
import dataclasses
import email.parser
import email.policy
import html as html_lib
import http.server
import json
import os
import signal
import socket
import socketserver
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from bgad_jax.detector import Detector
from bgad_jax.errors import ConfigError, DataError
from bgad_jax.evaluation import report
from tfds_mvtec import image_io

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



@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request and the whole server may take (``config.serve``)."""
  max_upload_bytes: int = 64 * 2 ** 20
  max_pixels: int = 40_000_000
  max_files: int = 64
  read_timeout_s: float = 10.0
  request_timeout_s: float = 30.0
  max_connections: int = 128
  backlog: int = 256

  @classmethod
  def from_config(cls, serve_config) -> 'Limits':
    return cls(max_upload_bytes=int(serve_config.max_upload_mb * 2 ** 20),
               max_pixels=int(serve_config.max_pixels), max_files=serve_config.max_files,
               read_timeout_s=serve_config.read_timeout_s,
               request_timeout_s=serve_config.request_timeout_s,
               max_connections=serve_config.max_connections, backlog=serve_config.backlog)


class RequestError(Exception):
  """A request the server answers with a 4xx status and a JSON error."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def overlay_png(detector: Detector, image: np.ndarray, anomaly_map: np.ndarray) -> bytes:
  """The image and its heat map side by side (as ``--mode=predict`` draws it), PNG bytes."""
  high = max(float(detector.map_constants['score_threshold']) * 2, 1e-6)
  return image_io.encode_png(report.overlay(image, anomaly_map, 0.0, high))


def decode_upload(name: str, data: bytes, max_pixels: Optional[int] = None) -> np.ndarray:
  """An uploaded file as RGB uint8 [H, W, 3].

  Raises:
    ImageTooLargeError: more than ``max_pixels`` pixels (read from the header).
    ImageDecodeError: not an image. Both messages name ``name``.
  """
  try:
    return image_io.decode_image(data, max_pixels=max_pixels)
  except image_io.ImageDecodeError as error:
    raise type(error)(f'{name}: {error}') from error


def result_of(detector: Detector, name: str, rgb: np.ndarray, prediction,
              with_overlay: bool = True) -> Dict[str, Any]:
  """The JSON answer for one image (see the module docstring)."""
  result = dict(name=name, width=rgb.shape[1], height=rgb.shape[0], score=prediction.score,
                nll_score=prediction.nll_score, anomalous=prediction.anomalous)
  if with_overlay:
    png = overlay_png(detector, rgb, prediction.anomaly_map)
    result['overlay'] = 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')
  return result


def inspect_image(detector: Detector, name: str, data: bytes) -> Dict[str, Any]:
  """One uploaded image's result: name, width, height, score, nll_score, anomalous, overlay.

  ``overlay`` is a PNG data URL [H, 2W] at the image's own size.

  Raises:
    ImageDecodeError: ``data`` is not an image (the message names ``name``).
  """
  rgb = decode_upload(name, data)
  return result_of(detector, name, rgb, detector.predict([rgb])[0])


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


def version() -> str:
  try:
    import importlib.metadata
    return importlib.metadata.version('bgad_jax')
  except Exception:   # pylint: disable=broad-except  (run from a checkout, not installed)
    return 'unknown'


class InferenceQueue:
  """The detector, one request at a time, strictly in arrival order (a ticket queue)."""

  def __init__(self, detector: Detector):
    self.detector = detector
    self._turn = threading.Condition()
    self._next_ticket = self._now_serving = 0

  @property
  def waiting(self) -> int:
    """Requests queued behind the one running."""
    with self._turn:
      return max(0, self._next_ticket - self._now_serving - 1)

  def predict(self, images: List[np.ndarray]):
    with self._turn:
      ticket = self._next_ticket
      self._next_ticket += 1
      self._turn.wait_for(lambda: self._now_serving == ticket)
    try:
      return self.detector.predict(images)
    finally:
      with self._turn:
        self._now_serving += 1
        self._turn.notify_all()


def parse_multipart(content_type: str, body: bytes) -> List[Tuple[str, bytes]]:
  """(file name, bytes) of each file part of a multipart/form-data body, in order.

  Raises:
    RequestError: 400 when the body is not multipart/form-data with a boundary.
  """
  message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
      b'Content-Type: ' + content_type.encode('latin-1') + b'\r\n\r\n' + body)
  if not message.is_multipart() or message.get_content_type() != 'multipart/form-data':
    raise RequestError(400, 'expected multipart/form-data with a boundary')
  files = []
  for part in message.iter_parts():
    name = part.get_filename() or part.get_param('name', header='content-disposition')
    if name is not None:
      files.append((str(name), part.get_payload(decode=True) or b''))
  return files


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
  """One thread per connection, at most ``limits.max_connections`` at once."""
  daemon_threads = True   # a stuck client never keeps the process alive

  def __init__(self, address, limits: Limits):
    self.request_queue_size = limits.backlog   # read by server_activate (listen)
    self.limits = limits
    self._slots = threading.BoundedSemaphore(limits.max_connections)
    self._stopping = threading.Event()
    self._active: set = set()
    super().__init__(address, http.server.BaseHTTPRequestHandler)

  def process_request(self, request, client_address):
    # Over the connection limit the accept loop waits here: new connections
    # queue in the kernel's backlog instead of being refused.
    while not self._slots.acquire(timeout=0.2):
      if self._stopping.is_set():
        self.shutdown_request(request)
        return
    super().process_request(request, client_address)

  def process_request_thread(self, request, client_address):
    self._active.add(threading.current_thread())
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._active.discard(threading.current_thread())
      self._slots.release()

  def stop(self, grace_s: float = 10.0) -> None:
    """Stops accepting; waits up to ``grace_s`` for the requests in flight."""
    self._stopping.set()
    self.shutdown()
    deadline = time.monotonic() + grace_s
    for thread in list(self._active):
      thread.join(max(0.0, deadline - time.monotonic()))
    self.server_close()


def make_handler(queue: InferenceQueue, page: bytes, limits: Limits, title: str = '') -> type:
  """A request handler class bound to the inference queue, the page and the limits."""
  detector = queue.detector
  started = time.time()

  class Handler(http.server.BaseHTTPRequestHandler):
    """See the module docstring for the endpoints."""
    timeout = limits.read_timeout_s   # every read and write of the connection
    default_request_version = 'HTTP/1.0'   # errors on a malformed request line get a status line

    def setup(self):
      super().setup()
      # The whole request (line, headers, body) must arrive within
      # request_timeout_s: a client trickling bytes cannot hold its thread.
      self._reading = True
      self._watchdog = threading.Timer(limits.request_timeout_s, self._expire)
      self._watchdog.daemon = True
      self._watchdog.start()

    def _expire(self):
      if self._reading:
        try:
          self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
          pass

    def _read_done(self):
      self._reading = False
      self._watchdog.cancel()

    def finish(self):
      self._read_done()
      super().finish()

    def _send(self, status: int, body: bytes, content_type: str):
      try:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        if status >= 400:
          self.send_header('Connection', 'close')
          self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
      except OSError:   # the client left (or was cut off): nobody to answer
        self.close_connection = True

    def _json(self, status: int, payload: Dict[str, Any]):
      self._send(status, json.dumps(report.to_jsonable(payload)).encode(), 'application/json')

    def _body(self) -> bytes:
      """The request body, its size checked before any of it is read."""
      if self.headers.get('Transfer-Encoding'):
        raise RequestError(411, 'send a Content-Length (chunked bodies are not accepted)')
      length = self.headers.get('Content-Length')
      if length is None:
        raise RequestError(411, 'a POST needs a Content-Length header')
      try:
        length = int(length)
      except ValueError:
        raise RequestError(400, f'Content-Length {length!r} is not a number') from None
      if length < 0:
        raise RequestError(400, f'Content-Length {length} is negative')
      if length > limits.max_upload_bytes:
        raise RequestError(413, f'{length} bytes; at most {limits.max_upload_bytes} '
                                '(serve.max_upload_mb)')
      chunks, left = [], length
      while left:
        chunk = self.rfile.read1(min(left, 2 ** 16))   # waits at most `timeout` per read
        if not chunk:   # the client stopped sending (or the watchdog cut it off)
          raise RequestError(400, f'the body ended after {length - left} of {length} bytes')
        chunks.append(chunk)
        left -= len(chunk)
      return b''.join(chunks)

    def _uploads(self, body: bytes) -> List[Tuple[str, bytes]]:
      content_type = self.headers.get('Content-Type', '')
      if content_type.startswith('multipart/'):
        files = parse_multipart(content_type, body)
        if not files:
          raise RequestError(400, 'the multipart body holds no file')
        return files
      return [(urllib.parse.unquote(self.headers.get('X-Filename', 'upload')), body)]

    def _predict(self, files: List[Tuple[str, bytes]], with_overlay: bool):
      decoded, results = [], []
      for name, data in files:
        try:
          decoded.append((name, decode_upload(name, data, limits.max_pixels)))
          results.append(None)
        except DataError as error:
          results.append(error)
      predictions = iter(queue.predict([rgb for _, rgb in decoded]) if decoded else [])
      images = iter(decoded)
      for i, outcome in enumerate(results):
        if outcome is None:
          name, rgb = next(images)
          results[i] = result_of(detector, name, rgb, next(predictions), with_overlay)
      return results

    def do_GET(self):   # pylint: disable=invalid-name
      self._read_done()
      path = urllib.parse.urlparse(self.path).path
      if path in ('/', '/index.html'):
        self._send(200, page, 'text/html; charset=utf-8')
      elif path == '/health':
        self._json(200, dict(status='ok', model=title, threshold=detector.threshold,
                             inp_size=detector.config.data.inp_size, version=version(),
                             queued=queue.waiting, uptime_s=round(time.time() - started, 1)))
      else:
        self._json(404, dict(error=f'no page {path}'))

    def do_POST(self):   # pylint: disable=invalid-name
      url = urllib.parse.urlparse(self.path)
      with_overlay = urllib.parse.parse_qs(url.query).get('overlay', ['1'])[0] != '0'
      try:
        if url.path not in ('/predict', '/predict/batch'):
          raise RequestError(404, f'no endpoint {url.path}')
        body = self._body()
        self._read_done()   # waiting in the inference queue is not a slow client
        files = self._uploads(body)
        if url.path == '/predict':
          if len(files) != 1:
            raise RequestError(400, f'/predict takes one image, got {len(files)}: '
                                    'use /predict/batch')
          (result,) = self._predict(files, with_overlay)
          if isinstance(result, DataError):
            raise result
          self._json(200, result)
          return
        if len(files) > limits.max_files:
          raise RequestError(413, f'{len(files)} files; at most {limits.max_files} '
                                  '(serve.max_files)')
        results = self._predict(files, with_overlay)
        self._json(200, dict(results=[
            dict(name=name, error=str(r)) if isinstance(r, DataError) else r
            for (name, _), r in zip(files, results)]))
      except RequestError as error:
        self._json(error.status, dict(error=str(error)))
      except image_io.ImageTooLargeError as error:
        self._json(413, dict(error=str(error)))
      except DataError as error:
        self._json(400, dict(error=str(error)))
      except (TimeoutError, ConnectionError):
        self.close_connection = True   # the client stalled or left: nobody to answer
      except Exception as error:   # pylint: disable=broad-except  (a bug: say so, keep serving)
        self.log_error('%s', f'{type(error).__name__}: {error}')
        self._json(500, dict(error=f'internal error: {type(error).__name__}: {error}'))

    def log_message(self, format, *args):   # pylint: disable=redefined-builtin
      pass   # one line per request would drown the URL line

  return Handler


def make_server(detector: Detector, title: str, limits: Limits, host: str = '127.0.0.1',
                port: int = 0) -> _Server:
  """A server for ``detector`` on (host, port) (0: any free port); run ``serve_forever``."""
  server = _Server((host, port), limits)
  server.RequestHandlerClass = make_handler(InferenceQueue(detector),
                                            render_page(detector, title), limits, title)
  return server


def serve(config, workdir: str, ready: Callable[[str], None] = print) -> None:
  """Serves the page and the API for the model in ``workdir`` until SIGTERM or SIGINT.

  Args:
    config: the run's config (``config.serve``: host, port (0 = any free one), limits).
    ready: called with the page's URL once the model is loaded and compiled.

  Raises:
    NoTrainedModelError: ``workdir`` holds no finished training.
    ConfigError: the address cannot be used (e.g. the port is taken).
  """
  host, port = config.serve.host, config.serve.port
  limits = Limits.from_config(config.serve)
  try:   # the address first: a taken port fails before the model loads
    server = _Server((host, port), limits)
  except OSError as error:
    raise ConfigError(f'serve.host={host!r} serve.port={port}: cannot listen there ({error}); '
                      'pick another, e.g. --config.serve.port=0 for any free port') from error
  detector = Detector.load(workdir, config)
  detector.predict([np.zeros((8, 8, 3), np.uint8)])   # compile before the first visitor
  title = os.path.basename(os.path.normpath(workdir))
  server.RequestHandlerClass = make_handler(InferenceQueue(detector),
                                            render_page(detector, workdir), limits, title)
  stop = threading.Event()
  previous = {sig: signal.signal(sig, lambda *_: stop.set())
              for sig in (signal.SIGTERM, signal.SIGINT)}
  thread = threading.Thread(target=server.serve_forever, name='bgad-serve', daemon=True)
  thread.start()
  ready(f'http://{host}:{server.server_address[1]}/')
  try:
    while not stop.wait(0.5) and thread.is_alive():
      pass
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    server.stop()
    print('Stopped serving.', flush=True)
