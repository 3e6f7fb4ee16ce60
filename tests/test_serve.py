"""serve: the inspection page, over HTTP and in a real headless browser (Debian chromium)."""

import base64
import io
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from bgad_jax import Detector, serve
from tfds_mvtec import image_io
from tests.support import runs

CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
# .ci/run installs the browser and sets this: there the browser test must run, not skip.
BROWSER_REQUIRED = os.environ.get('BGAD_REQUIRE_BROWSER') == '1'


@pytest.fixture(scope='module')
def detector(trained):
  return Detector.load(str(trained[0]))


def _image_path(trained, name='test/good/000.png'):
  return str(trained[1] / 'images' / 'tissue' / name)


def _png_bytes(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def _decode_data_url(url):
  assert url.startswith('data:image/png;base64,')
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))).convert('RGB'))


def test_inspect_image_is_the_detectors_result_with_its_overlay(trained, detector):
  path = _image_path(trained)
  result = serve.inspect_image(detector, 'a.png', open(path, 'rb').read())
  expected = detector.predict([path])[0]
  assert result['nll_score'] == pytest.approx(expected.nll_score, rel=1e-6)
  assert result['anomalous'] == expected.anomalous and result['name'] == 'a.png'
  picture = _decode_data_url(result['overlay'])
  rgb = image_io.decode_image(path)
  assert picture.shape == (rgb.shape[0], 2 * rgb.shape[1], 3)
  np.testing.assert_array_equal(picture[:, :rgb.shape[1]], rgb)   # left: the image itself


def test_undecodable_upload_names_the_file(detector):
  with pytest.raises(image_io.ImageDecodeError, match='broken.png'):
    serve.inspect_image(detector, 'broken.png', b'not an image')


LIMITS = serve.Limits(max_upload_bytes=2 ** 20, max_pixels=10 ** 6, max_files=4,
                      read_timeout_s=2.0, request_timeout_s=3.0, max_connections=16, backlog=128)


@pytest.fixture(scope='module')
def server(detector):
  """The server in a thread on a free port, with small limits: its base URL."""
  httpd = serve.make_server(detector, 'test model', LIMITS)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}/'
  httpd.stop(grace_s=5)


def _request(url, data=None, headers=None, method=None, timeout=60):
  request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


def _post(url, data, name, path='predict'):
  return _request(url + path, data, {'X-Filename': name}, 'POST')


def _multipart(files):
  boundary = 'bgad-test-boundary'
  body = b''.join(
      f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
      f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b'\r\n'
      for name, data in files) + f'--{boundary}--\r\n'.encode()
  return body, {'Content-Type': f'multipart/form-data; boundary={boundary}'}


def _raw(server_url, payload: bytes, read=True, timeout=10):
  """Sends raw bytes on a new connection; (status line, socket) of the answer."""
  import socket
  port = int(server_url.rstrip('/').rsplit(':', 1)[1])
  sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
  sock.sendall(payload)
  if not read:
    return None, sock
  answer = b''
  while b'\r\n' not in answer:
    chunk = sock.recv(4096)
    if not chunk:
      break
    answer += chunk
  sock.close()
  return answer.split(b'\r\n', 1)[0].decode(), None


def _png_claiming(width, height):
  """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
  import struct
  import zlib
  chunk = lambda kind, data: (struct.pack('>I', len(data)) + kind + data
                              + struct.pack('>I', zlib.crc32(kind + data)))
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
          + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))


def test_http_endpoints(trained, detector, server):
  with urllib.request.urlopen(server, timeout=60) as response:
    page = response.read().decode()
  assert 'bgad_jax inspection: test model' in page
  assert f'value="{detector.threshold:.6g}"' in page
  status, result = _post(server, open(_image_path(trained), 'rb').read(), 'good.png')
  assert status == 200 and result['name'] == 'good.png' and 'overlay' in result
  status, result = _post(server, b'garbage', 'bad%20file.png')
  assert status == 400 and result['error'].startswith('bad file.png: cannot decode image')
  status, _ = _post(server[:-1] + '/nothing/', b'', 'x')
  assert status == 404


def test_health_names_the_model_and_its_threshold(detector, server):
  status, health = _request(server + 'health')
  assert status == 200 and health['status'] == 'ok' and health['model'] == 'test model'
  assert health['threshold'] == pytest.approx(detector.threshold)
  assert health['inp_size'] == detector.config.data.inp_size and health['queued'] == 0
  assert health['version'] == '0.1.0'


def test_json_api_single_multipart_batch_and_without_overlay(trained, detector, server):
  good = open(_image_path(trained), 'rb').read()
  defect = open(_image_path(trained, 'test/hole/000.png'), 'rb').read()
  expected = detector.predict([_image_path(trained), _image_path(trained, 'test/hole/000.png')])
  body, headers = _multipart([('one.png', good)])
  status, result = _request(server + 'predict?overlay=0', body, headers, 'POST')
  assert status == 200 and result['name'] == 'one.png' and 'overlay' not in result
  assert result['nll_score'] == pytest.approx(expected[0].nll_score, rel=1e-6)
  body, headers = _multipart([('a.png', good), ('not an image.txt', b'hello'), ('b.png', defect)])
  status, answer = _request(server + 'predict/batch', body, headers, 'POST')
  assert status == 200
  a, bad, b = answer['results']
  assert (a['name'], b['name']) == ('a.png', 'b.png') and 'overlay' in a
  assert [a['nll_score'], b['nll_score']] == pytest.approx([p.nll_score for p in expected],
                                                            rel=1e-6)
  assert bad['name'] == 'not an image.txt' and 'cannot decode image' in bad['error']
  body, headers = _multipart([('x.png', good)] * 5)   # LIMITS.max_files = 4
  assert _request(server + 'predict/batch', body, headers, 'POST')[0] == 413
  body, headers = _multipart([('x.png', good)] * 2)
  status, result = _request(server + 'predict', body, headers, 'POST')
  assert status == 400 and 'use /predict/batch' in result['error']


def test_a_burst_of_50_concurrent_uploads_is_answered(trained, server):
  from concurrent.futures import ThreadPoolExecutor
  data = open(_image_path(trained), 'rb').read()
  with ThreadPoolExecutor(50) as pool:
    statuses = list(pool.map(lambda i: _post(server + '', data, f'{i}.png',
                                             'predict?overlay=0')[0], range(50)))
  assert statuses == [200] * 50


def test_a_slow_client_does_not_delay_others(trained, server):
  data = open(_image_path(trained), 'rb').read()
  _post(server, data, 'warm.png', 'predict?overlay=0')
  t0 = time.monotonic()
  _post(server, data, 'alone.png', 'predict?overlay=0')
  alone = time.monotonic() - t0
  # Promises 100000 bytes, sends 3 and stalls (it will be cut off after its timeouts).
  _, stalled = _raw(server, b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000'
                    b'\r\n\r\nabc', read=False)
  _, trickle = _raw(server, b'POST /predict HTTP/1.1\r\nHo', read=False)   # stalls in headers
  try:
    t0 = time.monotonic()
    status, _ = _post(server, data, 'beside.png', 'predict?overlay=0')
    beside = time.monotonic() - t0
  finally:
    stalled.close()
    trickle.close()
  assert status == 200 and beside < alone + 1.0


def test_malformed_and_oversized_requests_get_4xx_and_the_server_goes_on(trained, server):
  head = b'POST /predict HTTP/1.1\r\nHost: x\r\n'
  assert _raw(server, head + b'Content-Length: -5\r\n\r\n')[0].split()[1] == '400'
  assert _raw(server, head + b'Content-Length: lots\r\n\r\n')[0].split()[1] == '400'
  assert _raw(server, head + b'\r\n')[0].split()[1] == '411'
  assert _raw(server, head + b'Transfer-Encoding: chunked\r\n\r\n')[0].split()[1] == '411'
  # Too large: answered from the headers alone, before any of the body is read.
  assert _raw(server, head + b'Content-Length: 99999999999\r\n\r\n')[0].split()[1] == '413'
  assert _raw(server, b'GARBAGE\r\n\r\n')[0].split()[1] == '400'
  assert _raw(server, b'GET /' + b'x' * 70000 + b' HTTP/1.1\r\n\r\n')[0].split()[1] == '414'
  status, result = _post(server, _png_claiming(100_000, 100_000), 'bomb.png')
  assert status == 413 and 'bomb.png' in result['error']
  status, result = _post(server, _png_claiming(2000, 1000), 'big.png')   # over max_pixels 1e6
  assert status == 413 and '2000x1000 = 2000000 pixels; at most 1000000' in result['error']
  status, _ = _post(server, open(_image_path(trained), 'rb').read(), 'after.png')
  assert status == 200


def _browser(profile_dir):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  # No first-run, sync or update traffic: this machine has no internet.
  for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update',
              '--disable-sync', '--no-first-run', '--disable-quic',
              '--force-device-scale-factor=1', '--window-size=1200,900',
              f'--user-data-dir={profile_dir}'):
    options.add_argument(arg)
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _start_page_server(trained):
  """`python main.py --mode=serve` on a free port: (process, URL)."""
  workdir, data_root, _ = trained
  process = subprocess.Popen(
      runs.main_command(workdir, data_root, '--mode=serve', '--config.serve.port=0'),
      cwd=runs.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline:
    line = process.stdout.readline()
    if line.startswith('Inspection page: '):
      return process, line.split(': ', 1)[1].strip()
    if not line and process.poll() is not None:
      break
  process.kill()
  raise AssertionError('the page server did not start: ' + process.stderr.read()[-3000:])


@pytest.mark.slow
def test_page_in_a_headless_browser(trained, detector, tmp_path):
  """Upload an image, see its overlay and verdict, move the threshold slider."""
  have_browser = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
  if not have_browser:
    if BROWSER_REQUIRED:
      pytest.fail(f'{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium '
                  'chromium-driver)')
    pytest.skip('no Debian chromium/chromedriver here (apt-get install chromium chromium-driver)')
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  # A blatant defect, so the verdict at the calibrated threshold is known.
  image = image_io.decode_image(_image_path(trained))
  image[8:40, 8:40] = (255, 0, 255)
  upload = tmp_path / 'magenta square.png'
  upload.write_bytes(_png_bytes(image))
  expected = detector.predict([image])[0]
  assert expected.anomalous
  expected_overlay = np.asarray(Image.open(io.BytesIO(
      serve.overlay_png(detector, image, expected.anomaly_map))).convert('RGB'))

  process, url = _start_page_server(trained)
  driver = _browser(tmp_path / 'profile')
  try:
    driver.get(url)
    assert driver.find_element(By.ID, 'summary').text == 'no images yet'
    driver.find_element(By.ID, 'files').send_keys(str(upload))
    card = WebDriverWait(driver, 120).until(
        lambda d: d.find_element(By.CSS_SELECTOR, '.card.done'))
    assert card.find_element(By.CLASS_NAME, 'name').text == 'magenta square.png'
    verdict = card.find_element(By.CLASS_NAME, 'verdict')
    assert verdict.text == 'anomalous'
    assert f'nll score {expected.nll_score:.3f}' in card.find_element(By.CLASS_NAME, 'score').text
    assert driver.find_element(By.ID, 'summary').text == '1 of 1 anomalous'

    # What the browser rendered is our overlay, at the image's size.
    img = card.find_element(By.CLASS_NAME, 'overlay')
    assert (img.get_property('naturalHeight'), img.get_property('naturalWidth')) == (
        expected_overlay.shape[0], expected_overlay.shape[1])
    shown = np.asarray(Image.open(io.BytesIO(img.screenshot_as_png)).convert('RGB'))
    assert shown.shape == expected_overlay.shape
    assert np.abs(shown.astype(int) - expected_overlay).mean() < 2.0
    heat = shown[:, image.shape[1]:].astype(int)
    # The defect's region is the reddest part of the heat map.
    redness = heat[..., 0] - heat[..., 2]
    assert redness[8:40, 8:40].mean() > redness.mean()

    # Threshold slider above the image's nll score: the verdict turns normal.
    driver.execute_script(
        "const s = document.getElementById('threshold'); s.value = s.max;"
        "s.dispatchEvent(new Event('input'));")
    assert verdict.text == 'normal'
    assert driver.find_element(By.ID, 'summary').text == '0 of 1 anomalous'
    driver.save_screenshot(str(tmp_path / 'page.png'))
  finally:
    driver.quit()
    process.terminate()   # SIGTERM: a clean stop
    out, _ = process.communicate(timeout=30)
  shutil.rmtree(tmp_path / 'profile', ignore_errors=True)
  assert process.returncode == 0 and 'Stopped serving.' in out


@pytest.mark.slow
def test_taken_port_is_a_one_line_error(trained):
  import socket
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    _, stderr = runs.run_main(trained[0], trained[1], '--mode=serve',
                              f'--config.serve.port={port}', returncode=2, with_stderr=True)
  assert f"error: serve.host='127.0.0.1' serve.port={port}: cannot listen there" in stderr
  assert 'Traceback' not in stderr
