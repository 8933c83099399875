// What the buttons, keys and pointer tools change: slice, window, plane, mode, blend,
// cine and the ROI and length read-outs; each change schedules one render.
import { el } from "../common.js";
import { $, modality, originalOnly, panes, panesEl, root, unit } from "./dom.js";
import { fmt } from "./format.js";
import { planeFor, voxelOf } from "./geometry.js";
import { roiMask, roiStats } from "./roi.js";
import { rebuildLuts, scheduleRender } from "./render.js";
import {
  HU_PRESETS, PRESETS, dims, geometry, reformatsAvailable, shownSlice, sliceReady, state, viewer, vol,
} from "./state.js";
import { autoWindow, value } from "./window.js";

// The values under the pointer in every pane, or nothing outside the image.
export function readoutAt(col, row) {
  const { w, h } = dims();
  const c = Math.floor(col);
  const r = Math.floor(row);
  if (c < 0 || r < 0 || c >= w || r >= h || !sliceReady()) {
    for (const pane of panes) pane.readout.textContent = "";
    $("pos-label").textContent = "";
    return;
  }
  const [z, y, x] = voxelOf(vol, state.plane, state.index[state.plane], c, r);
  const [, ny, nx] = vol.shape;
  const i = z * ny * nx + y * nx + x;
  const ov = value(vol.orig, vol.orig.data[i]);
  const dv = value(vol.den, vol.den.data[i]);
  const bv = ov + state.alpha * (dv - ov);
  const rv = value(vol.res, vol.res.data[i]);
  if (state.mode === "side") {
    panes[0].readout.textContent = `${fmt(ov)}${unit}`;
    panes[1].readout.textContent = `${fmt(bv)}${unit}`;
    panes[2].readout.textContent = `${fmt(rv)}${unit}`;
  } else {
    panes[0].readout.textContent = `O ${fmt(ov)} · D ${fmt(bv)} · R ${fmt(rv)}${unit}`;
  }
  $("pos-label").textContent = `x ${x} y ${y} z ${z}`;
}

export function setLength(line) {
  state.line = line;
  viewer.length = { kind: "length", plane: geometry(line.plane).label, index: line.index, lengthMm: line.lengthMm };
  $("length-out").textContent = `Length ${fmt(line.lengthMm)} mm on ${geometry(line.plane).label} ${line.index + 1}`;
  $("length-out").hidden = false;
}

export function updateRoiStats() {
  const table = $("roi-stats");
  const roi = state.roi;
  if (!roi || roi.plane !== state.plane || !sliceReady()) {
    table.hidden = true;
    viewer.roiStats = null;
    return;
  }
  const { w } = dims();
  const mask = roiMask(roi, w);
  if (mask.length < 2) { table.hidden = true; viewer.roiStats = null; return; }
  const result = roiStats({
    vol, roi, index: state.index[roi.plane], mask,
    o: shownSlice(vol.orig), d: shownSlice(vol.den), alpha: state.alpha,
  });
  viewer.roiStats = result;
  const cell = (k) => table.querySelector(`[data-k="${k}"]`);
  for (const key of ["orig", "den", "res"]) {
    cell(`${key}-mean`).textContent = `${fmt(result[`${key}Mean`])}${unit}`;
    cell(`${key}-sd`).textContent = fmt(result[`${key}Sd`]);
    cell(`${key}-min`).textContent = fmt(result[`${key}Min`]);
    cell(`${key}-max`).textContent = fmt(result[`${key}Max`]);
  }
  cell("sd-ratio").textContent = fmt(result.sdRatio, 3);
  cell("roi-desc").textContent = `${roi.kind} on ${geometry(roi.plane).label} ${result.index + 1}: ${fmt(result.areaMm2)} mm² (${fmt(result.widthMm)} × ${fmt(result.heightMm)} mm), ${mask.length} px${state.alpha < 1 ? `, denoised at α ${state.alpha.toFixed(2)}` : ""}`;
  table.hidden = false;
  $("roi-hint").hidden = true;
}

export function setSlice(index) {
  const { depth } = dims();
  const next = Math.max(0, Math.min(depth - 1, index));
  if (next === state.index[state.plane]) return;
  state.index[state.plane] = next;
  updateRoiStats();
  scheduleRender();
}

export function setWindow(ww, wc) {
  state.ww = Math.max(1, ww);
  state.wc = wc;
  rebuildLuts();
  scheduleRender();
}

// The residual is shown from -rw (black) to +rw (white); the reviewer can change rw.
export function setResidualWindow(rw) {
  if (!(rw > 0)) return;
  state.residualWindow = rw;
  $("colorbar").querySelector(".cb-max").textContent = `+${fmt(rw)}${unit}`;
  $("colorbar").querySelector(".cb-min").textContent = `−${fmt(rw)}${unit}`;
  $("rw").value = Number(rw.toPrecision(3));
  rebuildLuts();
  scheduleRender();
}

// The scan's own windows (Window Center/Width, with their explanations) come first;
// HU presets are offered on CT only.
export function addScanPresets(windows) {
  const group = $("presets");
  const buttons = (windows || []).map((w, i) => {
    const name = `scan${i}`;
    PRESETS[name] = [w.width, w.center];
    const button = el("button", {
      type: "button", "data-preset": name, class: "scan-window",
      title: `The scan's own window: W${fmt(w.width, 0)} L${fmt(w.center, 0)}`,
    }, w.explanation || `W${fmt(w.width, 0)} L${fmt(w.center, 0)}`);
    button.addEventListener("click", () => applyPreset(name));
    return button;
  });
  group.prepend(...buttons);
  if (modality !== "CT") {
    for (const b of group.querySelectorAll("[data-preset]")) {
      if (HU_PRESETS.includes(b.dataset.preset)) b.hidden = true;
    }
  }
}

export function applyPreset(name) {
  if (!(name in PRESETS) && name !== "auto") return;
  if (modality !== "CT" && HU_PRESETS.includes(name)) return;
  if (name === "auto") {
    if (sliceReady()) {
      const { ww, wc } = autoWindow(shownSlice(vol.orig), vol.orig, modality);
      setWindow(ww, wc);
    }
  } else setWindow(...PRESETS[name]);
  for (const b of document.querySelectorAll("[data-preset]")) b.classList.toggle("active", b.dataset.preset === name);
  root.dataset.preset = name;
}

export function setMode(mode) {
  // The original alone has nothing to swipe, flicker or overlay against.
  if (originalOnly && mode !== "side") return;
  state.mode = mode;
  panesEl.className = `panes mode-${mode}`;
  for (const b of document.querySelectorAll("[data-mode]")) b.classList.toggle("active", b.dataset.mode === mode);
  for (const l of document.querySelectorAll(".mode-only")) l.hidden = l.dataset.for !== mode;
  $("colorbar").hidden = mode !== "overlay";
  root.dataset.mode = mode;
  resizeCanvases();
}

export function setPlane(plane) {
  if (plane !== "axial" && !reformatsAvailable()) return;
  state.plane = plane;
  state.roi = null;
  // The zoom is relative to the fitted view, so it carries over; a pan is in the
  // old plane's coordinates, so it does not.
  state.panX = 0; state.panY = 0;
  for (const b of document.querySelectorAll("[data-plane]")) b.classList.toggle("active", b.dataset.plane === plane);
  $("slice-marks").hidden = plane !== "axial";
  updateRoiStats();
  scheduleRender();
}

export function setTool(tool) {
  state.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
  panesEl.dataset.tool = tool;
}

export function setAlpha(alpha) {
  if (originalOnly) return; // no denoised image to blend in
  state.alpha = Math.round(Math.max(0, Math.min(1, alpha)) * 100) / 100;
  $("alpha").value = String(state.alpha);
  $("alpha-out").textContent = state.alpha.toFixed(2);
  $("verdict-alpha").textContent = state.alpha.toFixed(2);
  updateRoiStats();
  scheduleRender();
}

// Invert the greyscale of the original and denoised panes (the residual keeps its map).
export function toggleInvert() {
  state.invert = !state.invert;
  $("invert").classList.toggle("active", state.invert);
  rebuildLuts();
  scheduleRender();
}

export function toggleOverlay() {
  state.overlay = !state.overlay;
  $("labels").classList.toggle("active", state.overlay);
  scheduleRender();
}

// Cine: step through the slices of the current plane at the chosen frame rate,
// round and round, until stopped.
let cineTimer = null;
export function toggleCine() {
  clearInterval(cineTimer);
  state.cine = !state.cine;
  $("cine").classList.toggle("active", state.cine);
  $("cine").textContent = state.cine ? "❚❚ Cine" : "▶ Cine";
  if (!state.cine) return;
  const fps = Math.max(1, Math.min(30, Number($("fps").value) || 8));
  cineTimer = setInterval(() => {
    const { depth } = dims();
    setSlice((state.index[state.plane] + 1) % depth);
  }, 1000 / fps);
}

export function toggleFlicker() {
  if (originalOnly) return;
  if (state.mode !== "flicker") setMode("flicker");
  state.flickerDenoised = !state.flickerDenoised;
  root.dataset.flicker = state.flickerDenoised ? "denoised" : "original";
  scheduleRender();
}

// The Ax/Cor/Sag buttons show the plane the geometry calls so (for a coronal
// acquisition "Cor" is the stored slices); reformats that the geometry does not
// support stay disabled with the reason.
export function setupPlanes(display) {
  for (const b of document.querySelectorAll("[data-plane]")) {
    b.dataset.anatomical = b.dataset.anatomical || b.dataset.plane;
    b.dataset.plane = planeFor(display, b.dataset.anatomical);
    const g = display.planes[b.dataset.plane];
    const stored = b.dataset.plane === "axial" ? ", the stored slices" : "";
    b.title = `${g.label}${stored} (${b.dataset.anatomical[0].toUpperCase()})`;
    b.classList.toggle("active", b.dataset.plane === state.plane);
  }
  const note = $("plane-note");
  note.textContent = display.orientation_known
    ? (display.reformats.available ? "" : `No reformats: ${display.reformats.reason}`)
    : `Orientation unknown: shown as stored${display.reformats.available ? "" : `; no reformats: ${display.reformats.reason}`}`;
  note.hidden = !note.textContent;
  root.dataset.acquired = display.acquired;
}

export function resizeCanvases() {
  for (const pane of panes) {
    const w = Math.max(1, Math.round(pane.canvas.clientWidth * devicePixelRatio));
    const h = Math.max(1, Math.round(pane.canvas.clientHeight * devicePixelRatio));
    if (pane.canvas.width !== w || pane.canvas.height !== h) { pane.canvas.width = w; pane.canvas.height = h; }
  }
  scheduleRender();
}
