// gliomaseg viewer: upload files, show one sequence of each slice in grey (window/level, zoom, pan) with the
// predicted (yellow) and true (red) outlines, an error view (false positives / negatives) and the probability map.
// Talks only to the server that served this page (see serve/app.py for the routes).
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = { prediction: "#ffd700", truth: "#ff3030", fp: [255, 159, 26], fn: [39, 196, 255] };
const MAX_VIEW = 512;
const PRESETS = { full: [255, 127.5], bright: [128, 170] }; // [window width, level] on the 0..255 slice values

const state = {
  config: null, files: [], result: null, caseIndex: 0, slice: 0, images: new Map(), pixels: new Map(),
  zoom: 1, panX: 0, panY: 0, drag: null,
};

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

function megabytes(bytes) {
  return (bytes / (1024 * 1024)).toFixed(1) + " MiB";
}

async function loadConfig() {
  try {
    const response = await fetch("/api/config");
    state.config = await response.json();
    const info = state.config.model_info || {};
    $("model").textContent = "Model: " + (info.name || state.config.model || "given") +
      (info.validation ? " (" + info.validation + ")" : "") + ".";
    $("model-card").hidden = !state.config.model_card;
  } catch (err) {
    showError("The viewer's server does not answer: " + err);
  }
}

function chooseFiles(list) {
  state.files = Array.from(list);
  const total = state.files.reduce((sum, f) => sum + f.size, 0);
  $("chosen").textContent = state.files.length
    ? state.files.length + " file(s), " + megabytes(total) + ": " + state.files.slice(0, 4).map((f) => f.name).join(", ") +
      (state.files.length > 4 ? ", ..." : "")
    : "no file chosen";
  $("run").disabled = state.files.length === 0;
  showError("");
  const limits = state.config && state.config.limits;
  if (limits && total > limits.max_upload_bytes) {
    showError("These files add up to " + megabytes(total) + ", more than the limit of " +
      megabytes(limits.max_upload_bytes) + " per upload.");
    $("run").disabled = true;
  }
}

async function upload() {
  if (!state.files.length) return;
  const form = new FormData();
  for (const file of state.files) form.append("files", file, file.name);
  $("run").disabled = true;
  showError("");
  const started = performance.now();
  const what = "Segmenting " + state.files.length + " file(s)";
  setStatus(what + "...");
  $("progress").hidden = false;
  $("viewer").classList.add("stale"); // the old result stays visible, dimmed, until the new one replaces it
  const ticker = setInterval(() => setStatus(what + "... " + ((performance.now() - started) / 1000).toFixed(0) + " s"), 1000);
  try {
    const response = await fetch("/api/segment", { method: "POST", body: form });
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = { error: "the server answered " + response.status + " without a readable message" };
    }
    if (!response.ok) {
      setStatus("");
      showError((body && (body.error || body.detail)) || "upload failed (" + response.status + ")");
      clearResult();
      return;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const slices = body.cases.reduce((n, c) => n + c.slices.length, 0);
    setStatus("Segmented " + slices + " slice(s) of " + body.cases.length + " patient(s)/volume(s) in " + seconds + " s.");
    showResult(body);
  } catch (err) {
    setStatus("");
    showError("Upload failed: " + err);
    clearResult();
  } finally {
    clearInterval(ticker);
    $("progress").hidden = true;
    $("viewer").classList.remove("stale");
    $("run").disabled = state.files.length === 0;
  }
}

function clearResult() {
  // A failed upload leaves no older result on screen to be mistaken for this one.
  state.result = null;
  $("viewer").hidden = true;
}

function showResult(result) {
  state.result = result;
  state.images.clear();
  state.pixels.clear();
  state.zoom = 1; state.panX = 0; state.panY = 0;
  const select = $("case");
  select.replaceChildren(...result.cases.map((c, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = c.summary.patient + " (" + c.summary.slices + " slice" + (c.summary.slices === 1 ? "" : "s") + ")";
    return option;
  }));
  $("case-row").hidden = result.cases.length < 2;
  $("download-zip").href = result.masks_zip;
  $("download-report").href = result.report;
  $("download-overlays").href = result.overlays_zip;
  const notes = $("notes");
  notes.replaceChildren(...result.notes.map((n) => {
    const item = document.createElement("li");
    item.textContent = n;
    return item;
  }));
  $("viewer").hidden = false;
  selectCase(0);
}

function currentCase() {
  return state.result.cases[state.caseIndex];
}

function selectCase(index) {
  state.caseIndex = index;
  $("case").value = String(index);
  const c = currentCase();
  const slider = $("slice");
  slider.max = String(c.slices.length);
  slider.disabled = c.slices.length < 2;
  const sizes = new Set(c.slices.map((s) => s.width + "x" + s.height));
  const nifti = $("download-nifti");
  nifti.href = c.nifti;
  nifti.setAttribute("aria-disabled", sizes.size === 1 ? "false" : "true");
  const gif = $("download-gif");
  gif.href = c.gif || "#";
  gif.setAttribute("aria-disabled", c.gif ? "false" : "true");
  const hasTruth = c.slices.some((s) => s.truth);
  document.querySelector("#legend .truth-legend").hidden = !hasTruth;
  $("errors-label").hidden = !hasTruth;
  if (!hasTruth) $("errors").checked = false;
  $("show-truth").parentElement.hidden = !hasTruth;
  buildStrip(c);
  fillTable($("summary"), summaryRows(c.summary));
  // Start on the slice with the most predicted tumour: the interesting one.
  let best = 0;
  c.slices.forEach((s, i) => { if (s.tumour_pixels > c.slices[best].tumour_pixels) best = i; });
  selectSlice(best);
}

function buildStrip(c) {
  const strip = $("strip");
  strip.replaceChildren(...c.slices.map((s, i) => {
    const cell = document.createElement("span");
    cell.title = s.name + (s.tumour_pixels ? ": predicted tumour" : "") + (s.true_pixels ? ", true tumour" : "");
    if (s.tumour_pixels) cell.classList.add("tumour");
    if (s.true_pixels) cell.classList.add("truth");
    cell.addEventListener("click", () => selectSlice(i));
    return cell;
  }));
  strip.hidden = c.slices.length < 2;
}

function volume(voxels, ml) {
  // mL only when the voxel size is known; kaggle_3m slices and converted volumes record none.
  return ml !== undefined && ml !== null ? ml + " mL (" + voxels + " voxels)" : voxels + " voxels (spacing unknown)";
}

function summaryRows(s) {
  const rows = [["Patient / volume", s.patient], ["Slices", s.slices],
    ["Slices with predicted tumour", s.slices_with_tumour + (s.tumour_slice_numbers.length ? " (" + compactRanges(s.tumour_slice_numbers) + ")" : "")],
    ["Predicted tumour volume", volume(s.tumour_volume_voxels, s.tumour_volume_ml)]];
  if (s.slices_with_true_tumour !== undefined) rows.push(["Slices with true tumour", s.slices_with_true_tumour]);
  if (s.true_volume_voxels !== undefined) rows.push(["True volume", volume(s.true_volume_voxels, s.true_volume_ml)]);
  if (s.dice_3d !== undefined) rows.push(["Dice (3D, whole patient)", s.dice_3d.toFixed(3)]);
  rows.push(["Voxel size", s.spacing || "spacing unknown"]);
  if (s.missing_sequences) rows.push(["Sequences", s.missing_sequences.split("+").join(" and ") + " missing (a copy of FLAIR)"]);
  return rows;
}

function compactRanges(numbers) {
  const parts = [];
  let start = numbers[0];
  let prev = numbers[0];
  for (const n of numbers.slice(1).concat([null])) {
    if (n !== prev + 1) {
      parts.push(start === prev ? String(start) : start + "-" + prev);
      start = n;
    }
    prev = n;
  }
  return parts.join(", ");
}

function fillTable(table, rows) {
  table.tBodies[0].replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const a = document.createElement("td");
    const b = document.createElement("td");
    a.textContent = k;
    b.textContent = String(v);
    tr.append(a, b);
    return tr;
  }));
}

function selectSlice(index) {
  const c = currentCase();
  index = Math.max(0, Math.min(c.slices.length - 1, index));
  state.slice = index;
  $("slice").value = String(index + 1);
  const s = c.slices[index];
  $("slice-label").textContent = (index + 1) + " / " + c.slices.length + " (" + s.name + ")";
  Array.from($("strip").children).forEach((cell, i) => cell.classList.toggle("current", i === index));
  const rows = [["This slice: tumour pixels", s.tumour_pixels], ["Highest probability", s.max_probability]];
  if (s.true_pixels !== undefined) rows.push(["True pixels", s.true_pixels], ["Dice (this slice)", s.dice.toFixed(3)]);
  fillTable($("slice-info"), rows);
  draw();
}

function image(url) {
  if (!state.images.has(url)) {
    state.images.set(url, new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("slice image did not load"));
      img.src = url;
    }));
  }
  return state.images.get(url);
}

async function pixels(url) {
  // The slice's RGBA pixels at its own size (same-origin image, so the canvas can be read back).
  if (!state.pixels.has(url)) {
    const img = await image(url);
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    state.pixels.set(url, ctx.getImageData(0, 0, c.width, c.height));
  }
  return state.pixels.get(url);
}

function channel() {
  const value = $("sequence").value;
  return value === "rgb" ? null : Number(value);
}

function autoWindow(data, ch) {
  // 1st to 99th percentile of the sequence's non-zero (brain) pixels.
  const counts = new Uint32Array(256);
  let n = 0;
  for (let i = ch; i < data.data.length; i += 4) if (data.data[i] > 0) { counts[data.data[i]]++; n++; }
  if (!n) return PRESETS.full;
  let lo = 0, hi = 255, seen = 0;
  for (let v = 0; v < 256; v++) { seen += counts[v]; if (seen >= 0.01 * n) { lo = v; break; } }
  seen = 0;
  for (let v = 255; v >= 0; v--) { seen += counts[v]; if (seen >= 0.01 * n) { hi = v; break; } }
  const width = Math.max(1, hi - lo);
  return [width, lo + width / 2];
}

function setWindow(width, level) {
  $("window").value = String(Math.round(width));
  $("level").value = String(Math.round(level));
  $("window-label").textContent = $("window").value;
  $("level-label").textContent = $("level").value;
}

function displayed(data) {
  // The slice as shown: one sequence in grey through the window, or the stored RGB composite.
  const ch = channel();
  const out = new ImageData(data.width, data.height);
  if (ch === null) { out.data.set(data.data); return out; }
  const width = Number($("window").value);
  const low = Number($("level").value) - width / 2;
  const lut = new Uint8ClampedArray(256);
  for (let v = 0; v < 256; v++) lut[v] = ((v - low) / width) * 255;
  for (let i = 0; i < data.data.length; i += 4) {
    const g = lut[data.data[i + ch]];
    out.data[i] = g; out.data[i + 1] = g; out.data[i + 2] = g; out.data[i + 3] = 255;
  }
  return out;
}

function maskOf(polygons, w, h) {
  // Rasterize outlines (even-odd, holes kept) into a 0/1 array of the slice's size.
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d");
  ctx.beginPath();
  for (const polygon of polygons || []) {
    polygon.forEach(([x, y], i) => { if (i === 0) ctx.moveTo(x + 0.5, y + 0.5); else ctx.lineTo(x + 0.5, y + 0.5); });
    ctx.closePath();
  }
  ctx.fillStyle = "#fff";
  ctx.fill("evenodd");
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 1;
  ctx.stroke();
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const mask = new Uint8Array(w * h);
  for (let i = 0; i < mask.length; i++) mask[i] = rgba[4 * i + 3] > 127 ? 1 : 0;
  return mask;
}

function errorLayer(s) {
  const pred = maskOf(s.prediction, s.width, s.height);
  const truth = maskOf(s.truth, s.width, s.height);
  const out = new ImageData(s.width, s.height);
  for (let i = 0; i < pred.length; i++) {
    const colour = pred[i] && !truth[i] ? COLOURS.fp : truth[i] && !pred[i] ? COLOURS.fn : null;
    if (colour) { out.data.set(colour, 4 * i); out.data[4 * i + 3] = 255; }
  }
  return out;
}

async function probabilityLayer(s) {
  const data = await pixels(s.image.replace(/\.png$/, "/probability.png"));
  const out = new ImageData(data.width, data.height);
  for (let i = 0; i < data.data.length; i += 4) {
    out.data[i] = 255; out.data[i + 1] = 0; out.data[i + 2] = 255; out.data[i + 3] = data.data[i];
  }
  return out;
}

function toCanvas(imageData) {
  const c = document.createElement("canvas");
  c.width = imageData.width; c.height = imageData.height;
  c.getContext("2d").putImageData(imageData, 0, 0);
  return c;
}

async function draw() {
  const c = currentCase();
  const index = state.slice;
  const s = c.slices[index];
  const canvas = $("view");
  canvas.dataset.ready = "0";
  let data, prob = null;
  try {
    data = await pixels(s.image);
    if ($("probability").checked) prob = await probabilityLayer(s);
  } catch (err) {
    showError(String(err));
    return;
  }
  if (state.slice !== index || currentCase() !== c) return; // a newer slice was chosen meanwhile
  if ($("preset").value === "auto" && channel() !== null) setWindow(...autoWindow(data, channel()));
  const base = toCanvas(displayed(data));
  const fit = Math.min(MAX_VIEW / s.width, MAX_VIEW / s.height);
  const ratio = window.devicePixelRatio || 1;
  const k = fit * ratio * state.zoom;
  const targets = [canvas];
  $("raw").hidden = !$("side-by-side").checked;
  if ($("side-by-side").checked) targets.push($("raw"));
  for (const target of targets) {
    target.width = Math.round(s.width * fit * ratio);
    target.height = Math.round(s.height * fit * ratio);
    target.style.width = Math.round(s.width * fit) + "px";
    target.style.height = Math.round(s.height * fit) + "px";
    const ctx = target.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, target.width, target.height);
    // zoom about the centre, then pan (in screen pixels)
    ctx.setTransform(k, 0, 0, k, target.width / 2 * (1 - state.zoom) + state.panX * ratio, target.height / 2 * (1 - state.zoom) + state.panY * ratio);
    ctx.imageSmoothingEnabled = state.zoom < 2;
    ctx.drawImage(base, 0, 0);
  }
  const ctx = canvas.getContext("2d");
  const opacity = Number($("opacity").value) / 100;
  if (prob) {
    ctx.globalAlpha = 0.6;
    ctx.drawImage(toCanvas(prob), 0, 0);
    ctx.globalAlpha = 1;
  }
  const errors = $("errors").checked && s.truth;
  if (errors) {
    ctx.globalAlpha = opacity;
    ctx.drawImage(toCanvas(errorLayer(s)), 0, 0);
    ctx.globalAlpha = 1;
  }
  const layers = [];
  if ($("show-truth").checked && s.truth) layers.push([s.truth, COLOURS.truth]);
  if ($("show-prediction").checked) layers.push([s.prediction, COLOURS.prediction]);
  for (const [polygons, colour] of layers) {
    if (!polygons.length) continue;
    ctx.beginPath();
    for (const polygon of polygons) {
      polygon.forEach(([x, y], i) => {
        if (i === 0) ctx.moveTo(x + 0.5, y + 0.5); else ctx.lineTo(x + 0.5, y + 0.5);
      });
      ctx.closePath();
    }
    if ($("fill").checked && !errors) {
      ctx.globalAlpha = opacity * 0.3;
      ctx.fillStyle = colour;
      ctx.fill("evenodd");
    }
    ctx.globalAlpha = opacity;
    ctx.strokeStyle = colour;
    ctx.lineWidth = Math.max(2, 2.5 * ratio) / k;
    ctx.stroke();
    ctx.globalAlpha = 1;
  }
  document.querySelector("#legend .error-legend").hidden = !errors;
  document.querySelector("#legend .prob-legend").hidden = !prob;
  $("zoom-label").textContent = Math.round(state.zoom * 100) + "%";
  canvas.dataset.slice = String(index + 1);
  canvas.dataset.sequence = $("sequence").value;
  canvas.dataset.window = $("window").value + "/" + $("level").value;
  canvas.dataset.zoom = String(state.zoom);
  canvas.dataset.ready = "1";
}

function zoomBy(factor) {
  state.zoom = Math.max(1, Math.min(16, state.zoom * factor));
  if (state.zoom === 1) { state.panX = 0; state.panY = 0; }
  draw();
}

function customWindow() {
  const preset = $("preset");
  if (!preset.querySelector('option[value="custom"]')) {
    const option = document.createElement("option");
    option.value = "custom";
    option.textContent = "custom";
    preset.append(option);
  }
  preset.value = "custom";
}

function onPointer(event) {
  const view = $("view");
  if (event.type === "pointerdown") {
    state.drag = { x: event.clientX, y: event.clientY, pan: event.shiftKey || event.button === 1,
      width: Number($("window").value), level: Number($("level").value), panX: state.panX, panY: state.panY };
    view.setPointerCapture(event.pointerId);
    return;
  }
  if (event.type === "pointerup" || event.type === "pointercancel") { state.drag = null; return; }
  const d = state.drag;
  if (!d || !state.result) return;
  const dx = event.clientX - d.x;
  const dy = event.clientY - d.y;
  if (Math.abs(dx) + Math.abs(dy) < 2) return; // a click, not a drag
  if (d.pan) {
    state.panX = d.panX + dx;
    state.panY = d.panY + dy;
  } else {
    if (channel() === null) $("sequence").value = "1"; // window/level applies to one sequence
    customWindow();
    setWindow(Math.max(1, Math.min(255, d.width + dx)), Math.max(0, Math.min(255, d.level - dy)));
  }
  draw();
}

function onKey(event) {
  if (!state.result || $("viewer").hidden) return;
  const target = event.target;
  if (target && target.tagName === "INPUT" && target.type !== "range" && target.type !== "checkbox") return;
  if (target && target.type === "range") return; // the slider moves itself
  if (target && target.tagName === "SELECT") return;
  if (event.key === "+" || event.key === "=") { zoomBy(1.25); event.preventDefault(); return; }
  if (event.key === "-") { zoomBy(0.8); event.preventDefault(); return; }
  const steps = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1, PageDown: -10, PageUp: 10 };
  if (event.key in steps) {
    selectSlice(state.slice + steps[event.key]);
    event.preventDefault();
  } else if (event.key === "Home") {
    selectSlice(0);
    event.preventDefault();
  } else if (event.key === "End") {
    selectSlice(currentCase().slices.length - 1);
    event.preventDefault();
  }
}

function init() {
  const drop = $("drop");
  $("files").addEventListener("change", (e) => chooseFiles(e.target.files));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => chooseFiles(e.dataTransfer.files));
  $("run").addEventListener("click", upload);
  $("case").addEventListener("change", (e) => selectCase(Number(e.target.value)));
  $("slice").addEventListener("input", (e) => selectSlice(Number(e.target.value) - 1));
  $("opacity").addEventListener("input", (e) => { $("opacity-label").textContent = e.target.value + "%"; draw(); });
  for (const id of ["show-prediction", "show-truth", "fill", "errors", "probability", "side-by-side", "sequence"]) $(id).addEventListener("change", draw);
  $("preset").addEventListener("change", (e) => {
    if (PRESETS[e.target.value]) setWindow(...PRESETS[e.target.value]);
    draw();
  });
  for (const id of ["window", "level"]) {
    $(id).addEventListener("input", () => {
      customWindow();
      setWindow(Number($("window").value), Number($("level").value));
      draw();
    });
  }
  $("zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("zoom-reset").addEventListener("click", () => { state.zoom = 1; state.panX = 0; state.panY = 0; draw(); });
  const view = $("view");
  for (const name of ["pointerdown", "pointermove", "pointerup", "pointercancel"]) view.addEventListener(name, onPointer);
  view.addEventListener("wheel", (e) => { if (!state.result) return; e.preventDefault(); zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1); }, { passive: false });
  document.addEventListener("keydown", onKey);
  loadConfig();
}

document.addEventListener("DOMContentLoaded", init);
