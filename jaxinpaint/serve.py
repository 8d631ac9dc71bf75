"""An interactive inpainting page for a trained run: paint a hole on a photo in the browser, fill it, download it.

  python -m jaxinpaint.serve --workdir=RUN [--port=8000] [--host=127.0.0.1] [--max_pixels=12000000]

then open http://127.0.0.1:8000. A FastAPI app (served by uvicorn) with one static page (jaxinpaint/static/):
load a photo or pick a demo photo, paint with a brush of adjustable size, erase, undo, fill, see the result
beside the input and download it as PNG. Any image size: the server runs `inpaint.inpaint` (pad or tile mode).

API (what the page calls):
  GET  /api/info          the run: family, step, training size, limits, demo photo names
  GET  /api/demo/{name}   a demo photo (scikit-image's, shipped in its wheel) as PNG
  POST /api/fill          multipart: image (any image file), mask (image file, white = hole), mode (auto|pad|tile)
                          -> image/png of the input's size, known pixels the input's; on bad input a 4xx JSON
                          {"error": "..."} the page shows (never a crash of the server)
"""

from __future__ import annotations

import io
import os
import threading
from typing import Any

import numpy as np
from absl import logging
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from jaxinpaint import export, inpaint
from jaxinpaint.data import mask_files, sources

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DEFAULT_MAX_PIXELS = 12_000_000  # about 4000 x 3000; the model's working memory grows with it
MAX_UPLOAD_BYTES = 64 * 2**20
DEMO_SIDE = 256  # demo photos are scaled to this longer side: seconds per fill on a CPU
DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


class BadInput(ValueError):
  """A request the page can fix: `status` is the HTTP status, the message is shown on the page."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def demo_photo(name: str) -> np.ndarray:
  """uint8[H, W, 3]: scikit-image's `data.<name>()`, longer side scaled to DEMO_SIDE."""
  from skimage import data

  if name not in DEMO_PHOTOS:
    raise BadInput(f"no demo photo {name!r}; there are {', '.join(DEMO_PHOTOS)}", status=404)
  image = sources.to_rgb(getattr(data, name)())
  h, w = image.shape[:2]
  scale = DEMO_SIDE / max(h, w)
  return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BICUBIC))


def png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def decode_image(data: bytes, what: str, max_pixels: int) -> np.ndarray:
  """Uploaded bytes -> uint8[H, W, 3] (EXIF rotation applied); BadInput for empty, unreadable or huge files."""
  if not data:
    raise BadInput(f"the {what} is empty: choose a photo first")
  try:
    with Image.open(io.BytesIO(data)) as probe:  # reads the header only: the size is known before decoding
      w, h = probe.size
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    raise BadInput(f"the {what} is not an image file this server can read (PNG, JPEG, WebP, BMP, ...)") from None
  if w * h > max_pixels:
    raise BadInput(
      f"the {what} is {w}x{h} = {w * h / 1e6:.1f} megapixels; this server takes at most "
      f"{max_pixels / 1e6:.1f} (start it with a larger --max_pixels, or scale the photo down)",
      413,
    )
  try:
    return sources.read_rgb(io.BytesIO(data))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise BadInput(f"the {what} could not be decoded: {error}") from None


def decode_hole(data: bytes, shape: tuple[int, int], max_pixels: int) -> np.ndarray:
  """Uploaded mask bytes (white = hole) -> bool[H, W]; BadInput for an unreadable, coloured, mis-sized or empty one."""
  if not data:
    raise BadInput("no mask was sent: paint over the part of the photo to fill")
  try:
    with Image.open(io.BytesIO(data)) as probe:
      w, h = probe.size
      levels = None
      if w * h <= max_pixels:
        levels = np.asarray(probe.convert("RGBA") if probe.mode == "P" else probe)  # P: indices, not grey levels
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    raise BadInput("the mask is not an image file this server can read") from None
  if levels is None:
    raise BadInput(f"the mask is {w}x{h}, larger than this server takes", 413)
  try:
    hole = mask_files.read_hole(levels)
  except ValueError as error:
    raise BadInput(f"the mask cannot be used: {error}") from None
  if hole.shape != shape:
    raise BadInput(
      f"the mask is {hole.shape[1]}x{hole.shape[0]} but the photo is {shape[1]}x{shape[0]} (width x height)"
    )
  if not hole.any():
    raise BadInput("the mask is empty: paint over the part of the photo to fill, then press Fill")
  return hole


def create_app(model: inpaint.Inpainter, *, max_pixels: int = DEFAULT_MAX_PIXELS, info: dict | None = None):
  """The FastAPI app serving `model`; `info` adds to what /api/info reports."""
  app = FastAPI(title="jaxinpaint", docs_url=None, redoc_url=None)
  lock = threading.Lock()  # one inference at a time: the model's compiled functions and memory are shared
  details = {
    "training_size": model.size,
    "max_pixels": max_pixels,
    "demos": list(DEMO_PHOTOS),
    "modes": list(inpaint.MODES),
    **(info or {}),
  }

  @app.exception_handler(BadInput)
  async def bad_input(request: Request, error: BadInput):
    return JSONResponse({"error": str(error)}, status_code=error.status)

  @app.exception_handler(RequestValidationError)
  async def bad_form(request: Request, error: RequestValidationError):
    missing = sorted({str(e["loc"][-1]) for e in error.errors()})
    return JSONResponse({"error": f"the request lacks or mangles: {', '.join(missing)}"}, status_code=400)

  @app.exception_handler(Exception)
  async def failure(request: Request, error: Exception):
    logging.exception("request %s failed", request.url.path)
    return JSONResponse(
      {"error": f"the server failed on this request ({type(error).__name__}: {error}); it is still running"},
      status_code=500,
    )

  @app.get("/")
  def index():
    return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")

  @app.get("/api/info")
  def api_info():
    return details

  @app.get("/api/demo/{name}")
  def api_demo(name: str):
    return Response(png_bytes(demo_photo(name)), media_type="image/png")

  @app.post("/api/fill")
  def api_fill(image: UploadFile = File(...), mask: UploadFile = File(...), mode: str = Form("auto")):
    if mode not in inpaint.MODES:
      raise BadInput(f"mode must be one of {', '.join(inpaint.MODES)}; got {mode!r}")
    photo = decode_image(_read_upload(image, "photo"), "photo", max_pixels)
    hole = decode_hole(_read_upload(mask, "mask"), photo.shape[:2], max_pixels)
    with lock:
      result = inpaint.inpaint(model, photo, hole, mode=mode)
    headers = {"X-Hole-Pixels": str(int(hole.sum())), "X-Image-Size": f"{photo.shape[1]}x{photo.shape[0]}"}
    return Response(png_bytes(result), media_type="image/png", headers=headers)

  app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
  return app


def _read_upload(upload: UploadFile, what: str) -> bytes:
  data = upload.file.read(MAX_UPLOAD_BYTES + 1)
  if len(data) > MAX_UPLOAD_BYTES:
    raise BadInput(f"the {what} file is over {MAX_UPLOAD_BYTES // 2**20} MB", 413)
  return data


def run_info(model: inpaint.Inpainter) -> dict[str, Any]:
  """What the page shows about the run."""
  return {
    "workdir": os.path.abspath(model.workdir),
    "family": export.family(model.run.config),
    "step": int(model.run.step),
  }


def main(argv=None) -> None:
  from absl import flags

  from jaxinpaint import cli

  flags.DEFINE_string("workdir", None, "Trained run directory (config.json + checkpoints).")
  flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on (0.0.0.0 to serve other machines).")
  flags.DEFINE_integer("port", 8000, "Port to listen on.")
  flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Largest photo (width x height) the page may send.")
  flags.mark_flags_as_required(["workdir"])
  FLAGS = flags.FLAGS

  def run() -> None:
    import uvicorn

    if FLAGS.max_pixels <= 0:
      raise ValueError(f"--max_pixels must be positive; got {FLAGS.max_pixels}")
    if not 0 < FLAGS.port < 65536:
      raise ValueError(f"--port must be in 1..65535; got {FLAGS.port}")
    model = inpaint.load(FLAGS.workdir)
    web = create_app(model, max_pixels=FLAGS.max_pixels, info=run_info(model))
    print(f"serving {FLAGS.workdir} on http://{FLAGS.host}:{FLAGS.port}", flush=True)
    try:
      uvicorn.run(web, host=FLAGS.host, port=FLAGS.port, log_level="warning")
    except (OSError, SystemExit) as e:  # uvicorn exits 1 when the port is taken
      cli.fail(f"cannot serve on {FLAGS.host}:{FLAGS.port}: {e}")

  cli.run_main(run, argv)


if __name__ == "__main__":
  main()
