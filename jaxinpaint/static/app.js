// The inpainting page: a photo canvas with a paint layer (the hole) on top, sent to /api/fill as two files.
// The paint layer has the photo's own pixel size, so the mask sent is exactly the photo's size whatever the zoom.
"use strict";

const $ = (id) => document.getElementById(id);
const photoCanvas = $("photo"), maskCanvas = $("mask"), mask = maskCanvas.getContext("2d");
const PAINT = "rgb(255, 40, 40)";  // shown at the layer's CSS opacity; sent as white = hole
const MAX_UNDO = 40;

const state = { photo: null, name: "", width: 0, height: 0, erasing: false, undo: [], painting: false, last: null,
                resultUrl: null, painted: false };

function setStatus(status) { document.body.dataset.status = status; }

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

function refreshButtons() {
  const loaded = state.photo !== null;
  $("undo").disabled = state.undo.length === 0;
  $("clear").disabled = !loaded;
  $("fill").disabled = !loaded || document.body.dataset.status === "filling";
}

// ------------------------------------------------------------------------------------------------ loading

async function loadPhoto(blob, name) {
  setStatus("loading");
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);  // EXIF orientation applied, as the server's reader does
  } catch (error) {
    showMessage(`${name} is not an image this browser can open (PNG, JPEG, WebP, ...).`);
    setStatus("error");
    return;
  }
  state.photo = blob;
  state.name = name.replace(/\.[^.]*$/, "") || "photo";
  state.width = bitmap.width;
  state.height = bitmap.height;
  for (const canvas of [photoCanvas, maskCanvas]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  photoCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  mask.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  state.undo = [];
  state.painted = false;
  $("stage").classList.remove("empty");
  $("input-size").textContent = `${bitmap.width} × ${bitmap.height}`;
  clearResult();
  showMessage("");
  setStatus("ready");
  refreshButtons();
}

function clearResult() {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = null;
  $("result").removeAttribute("src");
  $("result-box").classList.add("empty");
  $("result-info").textContent = "";
  const link = $("download");
  link.removeAttribute("href");
  link.classList.add("disabled");
  link.setAttribute("aria-disabled", "true");
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) loadPhoto(file, file.name);
  $("demo").value = "";
});

$("demo").addEventListener("change", async (event) => {
  const name = event.target.value;
  if (!name) return;
  const response = await fetch(`/api/demo/${encodeURIComponent(name)}`);
  if (!response.ok) {
    showMessage((await errorText(response)) || `cannot load the demo photo ${name}`);
    return;
  }
  await loadPhoto(await response.blob(), `${name}.png`);
});

// ------------------------------------------------------------------------------------------------ painting

function toImage(event) {
  const rect = maskCanvas.getBoundingClientRect();
  return { x: (event.clientX - rect.left) * maskCanvas.width / rect.width,
           y: (event.clientY - rect.top) * maskCanvas.height / rect.height };
}

function brushSize() { return Number($("size").value); }

function dab(from, to) {
  mask.globalCompositeOperation = state.erasing ? "destination-out" : "source-over";
  mask.strokeStyle = mask.fillStyle = PAINT;
  mask.lineWidth = brushSize();
  mask.lineCap = mask.lineJoin = "round";
  mask.beginPath();
  mask.moveTo(from.x, from.y);
  mask.lineTo(to.x, to.y);
  mask.stroke();
}

maskCanvas.addEventListener("pointerdown", (event) => {
  if (!state.photo || event.button !== 0) return;
  maskCanvas.setPointerCapture(event.pointerId);
  state.undo.push(mask.getImageData(0, 0, maskCanvas.width, maskCanvas.height));
  if (state.undo.length > MAX_UNDO) state.undo.shift();
  state.painting = true;
  state.last = toImage(event);
  dab(state.last, state.last);
  refreshButtons();
});

maskCanvas.addEventListener("pointermove", (event) => {
  if (!state.painting) return;
  const point = toImage(event);
  dab(state.last, point);
  state.last = point;
});

for (const type of ["pointerup", "pointercancel"]) {
  maskCanvas.addEventListener(type, () => { state.painting = false; state.painted = true; });
}

function setTool(erasing) {
  state.erasing = erasing;
  $("brush").classList.toggle("active", !erasing);
  $("erase").classList.toggle("active", erasing);
}

function undo() {
  const previous = state.undo.pop();
  if (previous) mask.putImageData(previous, 0, 0);
  refreshButtons();
}

$("brush").addEventListener("click", () => setTool(false));
$("erase").addEventListener("click", () => setTool(true));
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", () => {
  state.undo.push(mask.getImageData(0, 0, maskCanvas.width, maskCanvas.height));
  mask.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  refreshButtons();
});
$("size").addEventListener("input", () => { $("size-value").textContent = $("size").value; });
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
  if ((event.ctrlKey || event.metaKey) && event.key === "z") { event.preventDefault(); undo(); }
  else if (event.key === "b") setTool(false);
  else if (event.key === "e") setTool(true);
});

// ------------------------------------------------------------------------------------------------ filling

// The paint layer as the server's mask: white = hole (painted, any alpha as grey), black = keep, opaque PNG.
function maskBlob() {
  const white = document.createElement("canvas");
  white.width = maskCanvas.width;
  white.height = maskCanvas.height;
  const w = white.getContext("2d");
  w.drawImage(maskCanvas, 0, 0);
  w.globalCompositeOperation = "source-in";
  w.fillStyle = "#fff";
  w.fillRect(0, 0, white.width, white.height);
  const out = document.createElement("canvas");
  out.width = white.width;
  out.height = white.height;
  const o = out.getContext("2d");
  o.fillStyle = "#000";
  o.fillRect(0, 0, out.width, out.height);
  o.drawImage(white, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

async function errorText(response) {
  try {
    return (await response.json()).error;
  } catch (error) {
    return `the server answered ${response.status} ${response.statusText}`;
  }
}

async function fill() {
  if (!state.photo) return;
  const form = new FormData();
  form.append("image", state.photo, `${state.name}.png`);
  form.append("mask", await maskBlob(), "mask.png");
  form.append("mode", $("mode").value);
  setStatus("filling");
  refreshButtons();
  showMessage("filling… (the first fill at a new size compiles the model)", "info");
  const started = performance.now();
  let response;
  try {
    response = await fetch("/api/fill", { method: "POST", body: form });
  } catch (error) {
    showMessage(`the server cannot be reached: ${error.message}`);
    setStatus("error");
    refreshButtons();
    return;
  }
  if (!response.ok) {
    showMessage(await errorText(response));
    setStatus("error");
    refreshButtons();
    return;
  }
  const blob = await response.blob();
  clearResult();
  state.resultUrl = URL.createObjectURL(blob);
  const result = $("result");
  await new Promise((resolve) => { result.onload = resolve; result.src = state.resultUrl; });
  $("result-box").classList.remove("empty");
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  $("result-info").textContent = `${result.naturalWidth} × ${result.naturalHeight}, ` +
      `${Number(response.headers.get("X-Hole-Pixels")).toLocaleString()} pixels filled in ${seconds} s`;
  const link = $("download");
  link.href = state.resultUrl;
  link.download = `${state.name}_inpainted.png`;
  link.classList.remove("disabled");
  link.removeAttribute("aria-disabled");
  showMessage("");
  setStatus("done");
  refreshButtons();
}

$("fill").addEventListener("click", fill);

// ------------------------------------------------------------------------------------------------ start-up

(async () => {
  try {
    const info = await (await fetch("/api/info")).json();
    $("model-info").textContent = `${info.family}, step ${info.step}, trained at ${info.training_size} px — ` +
        `photos up to ${(info.max_pixels / 1e6).toFixed(1)} megapixels`;
    for (const name of info.demos) $("demo").add(new Option(name, name));
    for (const mode of info.modes) $("mode").add(new Option(mode, mode));
  } catch (error) {
    showMessage(`cannot read the model's details from the server: ${error.message}`);
  }
  setStatus("empty");
  refreshButtons();
})();

// For scripts and tests: the mask exactly as the next fill would send it.
window.jaxinpaint = { state, maskBlob, loadPhoto };
