"""The interactive page end to end in a real browser: `python -m jaxinpaint.serve` on a free localhost port, headless
Debian Chromium driven by selenium (chromedriver from /usr/bin: nothing is downloaded), a photo of an odd size
uploaded, a stroke painted with the mouse, Fill pressed; the returned image keeps the size and every known pixel
and changes the hole; brush size, erase and undo change what is sent; bad input (not an image, an empty mask, a
huge image) gets a message and the server keeps serving. A screenshot after the fill is saved under tmp_path, and
to $JAXINPAINT_SERVE_SCREENSHOT when set (the README's docs/serve_screenshot.png; $JAXINPAINT_SERVE_WORKDIR picks a
trained run to show)."""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import serve
from jaxinpaint.data import mask_files

from helpers import ROOT, make_run  # tests/helpers.py

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PHOTO_SIZE = (301, 213)  # width x height: not multiples of the tiny model's 32, so pad mode crops back
MAX_PIXELS = 100_000  # the server's limit in this test: the photo fits, a 400 x 300 image does not


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """The serve CLI in a subprocess on a free port; yields its base URL once /api/info answers."""
  workdir = os.environ.get("JAXINPAINT_SERVE_WORKDIR")
  if not workdir:
    workdir = str(tmp_path_factory.mktemp("run"))
    make_run(workdir, seed=5)
  port = free_port()
  log = open(tmp_path_factory.mktemp("log") / "serve.log", "w+")
  proc = subprocess.Popen(
    [sys.executable, "-m", "jaxinpaint.serve", f"--workdir={workdir}", f"--port={port}", f"--max_pixels={MAX_PIXELS}"],
    cwd=ROOT,
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 300
  while True:
    try:
      with urllib.request.urlopen(url + "/api/info", timeout=5) as response:
        info = json.load(response)
      break
    except OSError:
      log.seek(0)
      assert proc.poll() is None and time.time() < deadline, f"the server did not start:\n{log.read()[-3000:]}"
      time.sleep(0.5)
  yield dict(url=url, proc=proc, info=info, log=log)
  proc.terminate()
  proc.wait(timeout=30)
  log.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service

  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--window-size=1400,900",
    "--force-device-scale-factor=1",
    # no connections of its own: this machine's network is closed, and refused or unanswered lookups of Google's
    # hosts at start-up only slow Chromium down
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
  ):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # no selenium-manager
  driver.set_script_timeout(120)
  # selenium waits for chromedriver's answer without limit by default: a browser that stops answering would hang
  # the test instead of failing it
  driver.command_executor.client_config.timeout = 180
  yield driver
  driver.quit()


def photo() -> np.ndarray:
  from skimage import data

  return np.asarray(Image.fromarray(data.astronaut()[20:380, 60:480]).resize(PHOTO_SIZE, Image.BICUBIC))


def png_file(array: np.ndarray, path) -> str:
  Image.fromarray(array).save(path)
  return str(path)


def wait_for(driver, status: str, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  while (now := driver.execute_script("return document.body.dataset.status")) != status:
    assert now != "error" or status == "error", driver.find_element("id", "message").text
    assert time.time() < deadline, f"page status {now!r}, waited for {status!r}"
    time.sleep(0.2)


def send_file(driver, path) -> None:
  """Choose a file in the page's file input, first clearing the status a previous step left ("error", "done")."""
  driver.execute_script("document.body.dataset.status = 'sending'")
  driver.find_element("id", "file").send_keys(str(path))


def as_array(data_url: str) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def sent_mask(driver) -> np.ndarray:
  """The mask the page would send now, as bool[H, W] by the server's own reader (white = hole)."""
  url = driver.execute_async_script("""
    const done = arguments[arguments.length - 1];
    window.jaxinpaint.maskBlob().then((blob) => { const r = new FileReader(); r.onload = () => done(r.result);
                                                   r.readAsDataURL(blob); });""")
  return mask_files.read_hole(as_array(url))


def result_image(driver) -> np.ndarray:
  url = driver.execute_script("""
    const img = document.getElementById('result'), c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight; c.getContext('2d').drawImage(img, 0, 0);
    return c.toDataURL('image/png');""")
  return as_array(url)[..., :3]


def stroke(driver, points, size=None):
  """Drags the mouse over the paint layer through `points` (image pixels)."""
  from selenium.webdriver.common.action_chains import ActionChains

  if size is not None:  # the range input: set its value and fire 'input' as a drag would
    driver.execute_script(
      "const s = document.getElementById('size'); s.value = arguments[0];s.dispatchEvent(new Event('input'));", size
    )
  canvas = driver.find_element("id", "mask")
  scale = canvas.size["width"] / PHOTO_SIZE[0]  # CSS pixels per image pixel
  to_css = [(x * scale - canvas.size["width"] / 2, y * scale - canvas.size["height"] / 2) for x, y in points]
  chain = ActionChains(driver).move_to_element_with_offset(canvas, *map(round, to_css[0])).click_and_hold()
  for x, y in to_css[1:]:
    chain = chain.move_to_element_with_offset(canvas, round(x), round(y))
  chain.release().perform()


def test_paint_fill_and_download_in_chromium(server, browser, tmp_path):
  image = photo()
  browser.get(server["url"])
  wait_for(browser, "empty")
  assert server["info"]["demos"] and "step" in browser.find_element("id", "model-info").text
  send_file(browser, png_file(image, tmp_path / "astronaut.png"))
  wait_for(browser, "ready")

  stroke(browser, [(40, 60), (120, 90), (200, 70)], size=30)  # brush
  painted = sent_mask(browser)
  stroke(browser, [(150, 150), (260, 170)], size=12)
  thin = sent_mask(browser) & ~painted
  assert painted.shape == image.shape[:2] and 0.03 < painted.mean() < 0.5
  assert 0 < thin.sum() < painted.sum() / 2  # a smaller brush paints a thinner line
  browser.find_element("id", "undo").click()
  np.testing.assert_array_equal(sent_mask(browser), painted)  # undo removed the last stroke, nothing else
  browser.find_element("id", "erase").click()
  stroke(browser, [(40, 60), (60, 66)], size=20)
  erased = painted & ~sent_mask(browser)
  assert erased.sum() > 100 and not (sent_mask(browser) & ~painted).any()  # erasing only removes paint
  browser.find_element("id", "brush").click()
  hole = sent_mask(browser)

  browser.find_element("id", "fill").click()
  wait_for(browser, "done")
  result = result_image(browser)
  assert result.shape == image.shape  # size kept (pad mode: padded to multiples of 32, cropped back)
  np.testing.assert_array_equal(result[~hole], image[~hole])  # every known pixel is the upload's
  assert (result[hole] != image[hole]).any(-1).mean() > 0.5  # the hole holds the model's fill
  link = browser.find_element("id", "download")
  assert link.get_attribute("download") == "astronaut_inpainted.png" and link.get_attribute("href").startswith("blob:")
  assert "pixels filled" in browser.find_element("id", "result-info").text

  shot = tmp_path / "serve_screenshot.png"
  browser.save_screenshot(str(shot))
  assert Image.open(shot).size[0] >= 1000
  if os.environ.get("JAXINPAINT_SERVE_SCREENSHOT"):
    shutil.copyfile(shot, os.environ["JAXINPAINT_SERVE_SCREENSHOT"])


def test_demo_photo_and_bad_input_get_a_message_on_the_page(server, browser, tmp_path):
  browser.get(server["url"])
  wait_for(browser, "empty")
  from selenium.webdriver.support.ui import Select

  Select(browser.find_element("id", "demo")).select_by_value("chelsea")
  wait_for(browser, "ready")
  h, w = serve.demo_photo("chelsea").shape[:2]
  assert browser.execute_script("return [window.jaxinpaint.state.width, window.jaxinpaint.state.height]") == [w, h]
  browser.find_element("id", "fill").click()  # nothing painted: the server says so
  wait_for(browser, "error")
  assert "the mask is empty" in browser.find_element("id", "message").text

  text = tmp_path / "notes.png"
  text.write_text("not an image")
  send_file(browser, text)
  wait_for(browser, "error")
  assert "is not an image this browser can open" in browser.find_element("id", "message").text

  big = np.zeros((300, 400, 3), np.uint8)  # 120 000 pixels > this server's MAX_PIXELS
  send_file(browser, png_file(big, tmp_path / "big.png"))
  wait_for(browser, "ready")
  stroke(browser, [(10, 10), (40, 40)], size=20)
  browser.find_element("id", "fill").click()
  wait_for(browser, "error")
  assert "400x300 = 0.1 megapixels; this server takes at most 0.1" in browser.find_element("id", "message").text
  assert server["proc"].poll() is None


def post_fill(url, image: bytes, mask: bytes, mode="auto"):
  """multipart/form-data POST to /api/fill -> (status, body bytes, content type)."""
  boundary = "jaxinpaintboundary"
  parts = []
  for name, data in (("image", image), ("mask", mask)):
    parts.append(
      f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
      f"Content-Type: application/octet-stream\r\n\r\n".encode()
      + data
      + b"\r\n"
    )
  parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\n{mode}\r\n'.encode())
  body = b"".join(parts) + f"--{boundary}--\r\n".encode()
  request = urllib.request.Request(
    url + "/api/fill", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
  )
  try:
    with urllib.request.urlopen(request, timeout=240) as response:
      return response.status, response.read(), response.headers["Content-Type"]
  except urllib.error.HTTPError as error:
    return error.code, error.read(), error.headers["Content-Type"]


def png(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def test_api_answers_bad_input_with_one_message_and_keeps_serving(server):
  image = photo()
  hole = np.zeros(image.shape[:2], np.uint8)
  hole[50:90, 100:180] = 255
  red = np.zeros(image.shape, np.uint8)
  red[..., 0] = 255
  cases = [
    (b"GIF89a not really", png(hole), 400, "the photo is not an image file"),
    (png(image), png(np.zeros_like(hole)), 400, "the mask is empty"),
    (png(image), png(hole[:100]), 400, "the mask is 301x100 but the photo is 301x213"),
    (png(image), png(red), 400, "the mask cannot be used"),
    (png(np.zeros((300, 400, 3), np.uint8)), png(hole), 413, "megapixels; this server takes at most"),
    (b"", png(hole), 400, "the photo is empty"),
  ]
  for image_bytes, mask_bytes, status, message in cases:
    code, body, kind = post_fill(server["url"], image_bytes, mask_bytes)
    assert (code, kind) == (status, "application/json") and message in json.loads(body)["error"], body
  code, body, _ = post_fill(server["url"], png(image), png(hole), mode="sideways")
  assert code == 400 and "mode must be one of auto, pad, tile" in json.loads(body)["error"]
  code, body, kind = post_fill(server["url"], png(image), png(hole), mode="tile")  # still serving, tile mode too
  result = np.asarray(Image.open(io.BytesIO(body)))
  assert code == 200 and kind == "image/png" and result.shape == image.shape
  np.testing.assert_array_equal(result[hole == 0], image[hole == 0])
  palette = Image.fromarray((hole == 0).astype(np.uint8), "P")  # index 0 = white = hole, 1 = black
  palette.putpalette([255, 255, 255, 0, 0, 0])
  buffer = io.BytesIO()
  palette.save(buffer, format="PNG")
  code, body, _ = post_fill(server["url"], png(image), buffer.getvalue())  # read by colour, not by index
  assert code == 200 and (np.asarray(Image.open(io.BytesIO(body))) != image)[hole > 0].any(-1).mean() > 0.5
  assert server["proc"].poll() is None


def test_cli_refuses_a_missing_run_in_one_line(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "jaxinpaint.serve", f"--workdir={tmp_path / 'nope'}", "--port=1"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 1 and last.startswith("error: ") and "does not exist" in last, proc.stderr[-2000:]
