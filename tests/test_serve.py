"""serve: the inspection page, over HTTP and in a real headless browser (Debian chromium)."""

import base64
import glob
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
from bgad_jax.data import image_io
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


@pytest.fixture(scope='module')
def server(detector):
  """The page served from a thread on a free port: its base URL."""
  handler = serve.make_handler(detector, serve.render_page(detector, 'test model'))
  httpd = serve.http.server.HTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}/'
  httpd.shutdown()
  httpd.server_close()


def _post(url, data, name):
  request = urllib.request.Request(url + 'predict', data=data, method='POST',
                                   headers={'X-Filename': name})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


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
    process.terminate()
    process.wait(timeout=30)
  shutil.rmtree(tmp_path / 'profile', ignore_errors=True)


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
