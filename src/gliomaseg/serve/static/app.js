// gliomaseg viewer: upload files, show each slice with the predicted (green) and true (red) outlines.
// Talks only to the server that served this page (see serve/app.py for the routes).
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = { prediction: "#3fb950", truth: "#ff5555" };
const MAX_VIEW = 512;

const state = { config: null, files: [], result: null, caseIndex: 0, slice: 0, images: new Map() };

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
    $("model").textContent = state.config.model ? "Model: " + state.config.model + "." : "";
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
  setStatus("Segmenting " + state.files.length + " file(s)...");
  const started = performance.now();
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
      return;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const slices = body.cases.reduce((n, c) => n + c.slices.length, 0);
    setStatus("Segmented " + slices + " slice(s) of " + body.cases.length + " patient(s)/volume(s) in " + seconds + " s.");
    showResult(body);
  } catch (err) {
    setStatus("");
    showError("Upload failed: " + err);
  } finally {
    $("run").disabled = state.files.length === 0;
  }
}

function showResult(result) {
  state.result = result;
  state.images.clear();
  const select = $("case");
  select.replaceChildren(...result.cases.map((c, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = c.summary.patient + " (" + c.summary.slices + " slice" + (c.summary.slices === 1 ? "" : "s") + ")";
    return option;
  }));
  $("case-row").hidden = result.cases.length < 2;
  $("download-zip").href = result.masks_zip;
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

function summaryRows(s) {
  const rows = [["Patient / volume", s.patient], ["Slices", s.slices],
    ["Slices with tumour", s.slices_with_tumour + (s.tumour_slice_numbers.length ? " (" + compactRanges(s.tumour_slice_numbers) + ")" : "")],
    ["Tumour volume", s.tumour_volume_voxels + " voxels" + (s.tumour_volume_ml !== undefined ? " = " + s.tumour_volume_ml + " mL" : "")]];
  if (s.true_volume_voxels !== undefined) rows.push(["True volume", s.true_volume_voxels + " voxels"]);
  if (s.dice_3d !== undefined) rows.push(["Dice (3D, whole patient)", s.dice_3d.toFixed(3)]);
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

async function draw() {
  const c = currentCase();
  const index = state.slice;
  const s = c.slices[index];
  const canvas = $("view");
  canvas.dataset.ready = "0";
  let img;
  try {
    img = await image(s.image);
  } catch (err) {
    showError(String(err));
    return;
  }
  if (state.slice !== index || currentCase() !== c) return; // a newer slice was chosen meanwhile
  const scale = Math.min(MAX_VIEW / s.width, MAX_VIEW / s.height);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(s.width * scale * ratio);
  canvas.height = Math.round(s.height * scale * ratio);
  canvas.style.width = Math.round(s.width * scale) + "px";
  canvas.style.height = Math.round(s.height * scale) + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const k = scale * ratio;
  const opacity = Number($("opacity").value) / 100;
  const layers = [];
  if ($("show-truth").checked && s.truth) layers.push([s.truth, COLOURS.truth]);
  if ($("show-prediction").checked) layers.push([s.prediction, COLOURS.prediction]);
  for (const [polygons, colour] of layers) {
    if (!polygons.length) continue;
    ctx.beginPath();
    for (const polygon of polygons) {
      polygon.forEach(([x, y], i) => {
        const px = (x + 0.5) * k;
        const py = (y + 0.5) * k;
        if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      ctx.closePath();
    }
    if ($("fill").checked) {
      ctx.globalAlpha = opacity * 0.3;
      ctx.fillStyle = colour;
      ctx.fill("evenodd");
    }
    ctx.globalAlpha = opacity;
    ctx.strokeStyle = colour;
    ctx.lineWidth = Math.max(1.5, ratio * 2);
    ctx.stroke();
    ctx.globalAlpha = 1;
  }
  canvas.dataset.slice = String(index + 1);
  canvas.dataset.ready = "1";
}

function onKey(event) {
  if (!state.result || $("viewer").hidden) return;
  const target = event.target;
  if (target && target.tagName === "INPUT" && target.type !== "range" && target.type !== "checkbox") return;
  if (target === $("slice") || target === $("opacity")) return; // the slider moves itself
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
  for (const id of ["show-prediction", "show-truth", "fill"]) $(id).addEventListener("change", draw);
  document.addEventListener("keydown", onKey);
  loadConfig();
}

document.addEventListener("DOMContentLoaded", init);
