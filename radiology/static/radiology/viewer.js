// Compare viewer: original | denoised | residual, rendered on canvas from int16 volumes
// fetched once; scrolling, window/level, blending and ROI statistics never call the server.
import { api, el, formatTime } from "./common.js";

const root = document.getElementById("viewer");
const jobId = root.dataset.jobId;
// Without a job (series/<id>/view/) the viewer shows the original alone.
const originalOnly = !jobId;
const seriesId = root.dataset.seriesId;
const modality = root.dataset.modality;
const unit = modality === "CT" ? " HU" : "";
const PRESETS = { soft: [400, 40], lung: [1500, -600], bone: [1800, 400], brain: [80, 40] };
const MODES = ["side", "swipe", "flicker", "overlay"];
// Volumes arrive in slabs of about this many bytes (a test may set smaller ones).
const SLAB_BYTES = window.VIEWER_SLAB_BYTES || 4 * 1024 * 1024;

const state = {
  plane: "axial", index: { axial: 0, coronal: 0, sagittal: 0 },
  zoom: 1, panX: 0, panY: 0, ww: 400, wc: 40, alpha: 1, mode: "side", tool: "wl",
  opacity: 0.6, swipe: 0.5, flickerDenoised: false, roi: null, residualWindow: 50,
  invert: false, cine: false, overlay: true,
};
const stats = { frames: 0, lastFrameMs: 0, firstImageMs: null };
const vol = { shape: null, spacing: null, orig: null, den: null, res: null, loaded: null, complete: false };
const viewerApi = { state, stats, vol, roiStats: null, ready: false, job: null, render: () => scheduleRender() };
window.viewer = viewerApi;

const panesEl = document.getElementById("panes");
const panes = [...panesEl.querySelectorAll(".pane")].map((figure) => ({
  name: figure.dataset.pane, figure, canvas: figure.querySelector("canvas"),
  readout: figure.querySelector(".readout"), label: figure.querySelector(".label"),
  layers: [document.createElement("canvas"), document.createElement("canvas")], images: [null, null],
}));
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- geometry

// The server's display geometry (radiology/dicomio/orientation.py): for each plane the
// viewer cuts ("axial" = one stored z slice, "coronal" = one y row, "sagittal" = one x
// column), the stored axes along its columns and rows, their flips into the
// radiological convention, its label from the geometry and its edge letters.
function geometry(plane = state.plane) { return vol.display.planes[plane]; }

function planeDims(plane = state.plane) {
  const g = geometry(plane);
  return {
    w: vol.shape[g.col_axis], h: vol.shape[g.row_axis], depth: vol.shape[g.through_axis],
    aspect: vol.spacing[g.row_axis] / vol.spacing[g.col_axis],
  };
}

function voxelOf(col, row, plane = state.plane, index = state.index[plane]) {
  const g = geometry(plane);
  const v = [0, 0, 0];
  v[g.through_axis] = index;
  v[g.col_axis] = g.col_flip ? vol.shape[g.col_axis] - 1 - col : col;
  v[g.row_axis] = g.row_flip ? vol.shape[g.row_axis] - 1 - row : row;
  return v;
}

function extract(volume, plane = state.plane, index = state.index[plane]) {
  const [, ny, nx] = vol.shape;
  const data = volume.data;
  const g = geometry(plane);
  if (g.through_axis === 0 && g.col_axis === 2 && !g.col_flip && !g.row_flip) {
    return data.subarray(index * ny * nx, (index + 1) * ny * nx);
  }
  const { w, h } = planeDims(plane);
  const stride = [ny * nx, nx, 1];
  const sc = stride[g.col_axis] * (g.col_flip ? -1 : 1);
  const sr = stride[g.row_axis] * (g.row_flip ? -1 : 1);
  const base = index * stride[g.through_axis]
    + (g.col_flip ? (w - 1) * stride[g.col_axis] : 0) + (g.row_flip ? (h - 1) * stride[g.row_axis] : 0);
  const out = new Int16Array(w * h);
  for (let r = 0; r < h; r++) {
    const rowStart = base + r * sr;
    if (sc === 1) out.set(data.subarray(rowStart, rowStart + w), r * w);
    else for (let c = 0; c < w; c++) out[r * w + c] = data[rowStart + c * sc];
  }
  return out;
}

// The plane shown for an anatomical plane's button or key: the one the geometry
// labels so, else the viewer's plane of that name.
function planeFor(anatomical) {
  const planes = vol.display ? vol.display.planes : null;
  if (planes) for (const [name, g] of Object.entries(planes)) if (g.plane === anatomical) return name;
  return anatomical;
}

function sliceReady() {
  if (geometry().through_axis !== 0) return vol.complete;
  return vol.loaded && vol.loaded[state.index.axial] === vol.sourceCount;
}

function transformFor(pane) {
  const { w, h, aspect } = planeDims();
  const cw = pane.canvas.width;
  const ch = pane.canvas.height;
  const base = Math.min(cw / w, ch / (h * aspect));
  const s = base * state.zoom;
  const ox = (cw - w * s) / 2 + state.panX * devicePixelRatio;
  const oy = (ch - h * aspect * s) / 2 + state.panY * devicePixelRatio;
  return { s, sy: s * aspect, ox, oy, w, h };
}

function toImage(pane, event) {
  const rect = pane.canvas.getBoundingClientRect();
  const t = transformFor(pane);
  const x = (event.clientX - rect.left) * devicePixelRatio;
  const y = (event.clientY - rect.top) * devicePixelRatio;
  return { col: (x - t.ox) / t.s, row: (y - t.oy) / t.sy, t };
}

// ---------------------------------------------------------------- look-up tables

const grayLut = new Uint32Array(65536);
const grayLevel = new Uint8Array(65536);
const residualLut = new Uint32Array(65536);
const overlayT = new Float32Array(65536);

function value(volume, q) { return volume.offset + volume.scale * q; }

function buildLuts() {
  if (!vol.orig) return;
  const { scale, offset } = vol.orig;
  const low = state.wc - state.ww / 2;
  const k = 255 / state.ww;
  for (let i = 0; i < 65536; i++) {
    let g = (offset + scale * (i - 32768) - low) * k;
    g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
    if (state.invert) g = 255 - g;
    grayLevel[i] = g;
    grayLut[i] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
  if (vol.res) {
    const rw = state.residualWindow;
    for (let i = 0; i < 65536; i++) {
      const v = vol.res.scale * (i - 32768);
      let g = ((v + rw) / (2 * rw)) * 255;
      g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
      residualLut[i] = 0xff000000 | (g << 16) | (g << 8) | g;
      const t = Math.abs(v) / rw;
      overlayT[i] = t > 1 ? 1 : t;
    }
  }
}

// ---------------------------------------------------------------- painting

function imageFor(pane, layer, w, h) {
  const canvas = pane.layers[layer];
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
    pane.images[layer] = null;
  }
  if (!pane.images[layer]) {
    const image = new ImageData(w, h);
    pane.images[layer] = { image, out: new Uint32Array(image.data.buffer) };
  }
  return pane.images[layer];
}

function paintGray(out, src) {
  for (let i = 0, n = src.length; i < n; i++) out[i] = grayLut[src[i] + 32768];
}

function paintBlend(out, o, d, alpha) {
  if (alpha >= 1) return paintGray(out, d);
  if (alpha <= 0) return paintGray(out, o);
  for (let i = 0, n = o.length; i < n; i++) {
    const q = o[i] + alpha * (d[i] - o[i]);
    out[i] = grayLut[(q + 32768.5) | 0];
  }
}

function paintResidual(out, r) {
  for (let i = 0, n = r.length; i < n; i++) out[i] = residualLut[r[i] + 32768];
}

function paintOverlay(out, o, r, opacity) {
  // Signed heat map: red where the original is brighter than the denoised image (noise
  // removed above the mean), blue where darker; strength grows with |residual|.
  for (let i = 0, n = o.length; i < n; i++) {
    const g = grayLevel[o[i] + 32768];
    const q = r[i] + 32768;
    const t = overlayT[q] * opacity;
    let red; let green; let blue;
    if (q >= 32768) { red = g + (255 - g) * t; green = g * (1 - t); blue = g * (1 - t); }
    else { red = g * (1 - t); green = g + (110 - g) * t; blue = g + (255 - g) * t; }
    out[i] = 0xff000000 | ((blue | 0) << 16) | ((green | 0) << 8) | (red | 0);
  }
}

function blendedSlice(o, d) {
  if (state.alpha >= 1) return d;
  if (state.alpha <= 0) return o;
  const out = new Int16Array(o.length);
  for (let i = 0; i < o.length; i++) out[i] = Math.round(o[i] + state.alpha * (d[i] - o[i]));
  return out;
}

function layerFor(pane, layer, paint) {
  const { w, h } = planeDims();
  const img = imageFor(pane, layer, w, h);
  paint(img.out);
  pane.layers[layer].getContext("2d").putImageData(img.image, 0, 0);
  return pane.layers[layer];
}

function present(pane, first, second) {
  const ctx = pane.canvas.getContext("2d");
  const t = transformFor(pane);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pane.canvas.width, pane.canvas.height);
  ctx.imageSmoothingEnabled = t.s < 1;
  const dw = t.w * t.s;
  const dh = t.h * t.sy;
  ctx.drawImage(first, t.ox, t.oy, dw, dh);
  if (second) {
    const split = pane.canvas.width * state.swipe;
    ctx.save();
    ctx.beginPath();
    ctx.rect(split, 0, pane.canvas.width - split, pane.canvas.height);
    ctx.clip();
    ctx.drawImage(second, t.ox, t.oy, dw, dh);
    ctx.restore();
    ctx.strokeStyle = "#ffd54a";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(split, 0);
    ctx.lineTo(split, pane.canvas.height);
    ctx.stroke();
    ctx.fillStyle = "#ffd54a";
    ctx.font = `${12 * devicePixelRatio}px sans-serif`;
    ctx.fillText("original", Math.max(4, split - 60 * devicePixelRatio), 16 * devicePixelRatio);
    ctx.fillText("denoised", split + 6, 16 * devicePixelRatio);
  }
  drawRoi(ctx, t, drawing || state.roi);
  drawLine(ctx, t, drawingLine || state.line);
  drawMarkers(ctx, pane);
  if (pane === panes[0]) drawInfo(ctx, pane);
}

// Patient, study and slice text in the corners of the first pane (L hides it, and
// the orientation letters, for screenshots).
function overlayLines() {
  const s = vol.series;
  if (!s) return { left: [], right: [], bottom: [] };
  const g = geometry();
  const index = state.index[state.plane];
  const { depth } = planeDims();
  const at = g.location_mm !== undefined ? `${g.location_axis} ${(g.location_mm + index * g.step_mm).toFixed(1)} mm` : "";
  return {
    left: [s.study.patient_display, s.study.patient_id ? `ID ${s.study.patient_id}` : ""].filter(Boolean),
    right: [s.study.study_date_iso, s.study.description].filter(Boolean),
    bottom: [
      s.description,
      `${g.label} ${index + 1}/${depth}${at ? ` · ${at}` : ""}`,
      `${vol.spacing[g.through_axis].toFixed(2)} mm apart · ${vol.spacing[g.col_axis].toFixed(2)} × ${vol.spacing[g.row_axis].toFixed(2)} mm px`,
    ].filter(Boolean),
  };
}

function drawInfo(ctx, pane) {
  const lines = overlayLines();
  root.dataset.overlay = state.overlay ? [...lines.left, ...lines.right, ...lines.bottom].join(" | ") : "";
  if (!state.overlay) return;
  const px = 11 * devicePixelRatio;
  const pad = 6 * devicePixelRatio;
  const top = pad + (state.mode === "swipe" ? 2 * px : 0);
  const { width, height } = pane.canvas;
  ctx.save();
  ctx.font = `${px}px sans-serif`;
  ctx.fillStyle = "#e5e7eb";
  ctx.shadowColor = "#000";
  ctx.shadowBlur = 3;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  lines.left.forEach((text, i) => ctx.fillText(text, pad, top + i * (px + 3)));
  ctx.textAlign = "right";
  lines.right.forEach((text, i) => ctx.fillText(text, width - pad, top + i * (px + 3)));
  ctx.textAlign = "left";
  ctx.textBaseline = "bottom";
  // Above the bottom edge's letter, which sits centred on the last line otherwise.
  const n = lines.bottom.length;
  const base = height - pad - (geometry().markers ? 13 * devicePixelRatio + 4 : 0);
  lines.bottom.forEach((text, i) => ctx.fillText(text, pad, base - (n - 1 - i) * (px + 3)));
  ctx.restore();
}

function toggleOverlay() {
  state.overlay = !state.overlay;
  $("labels").classList.toggle("active", state.overlay);
  scheduleRender();
}

// Orientation letters at the middle of each edge (patient left on screen right etc.).
function drawMarkers(ctx, pane) {
  const markers = geometry().markers;
  pane.figure.dataset.markers = markers ? [markers.left, markers.right, markers.top, markers.bottom].join(" ") : "";
  if (!markers || !state.overlay) return;
  const px = 13 * devicePixelRatio;
  const pad = 4 * devicePixelRatio;
  const { width, height } = pane.canvas;
  ctx.save();
  ctx.font = `bold ${px}px sans-serif`;
  ctx.fillStyle = "#fcd34d";
  ctx.shadowColor = "#000";
  ctx.shadowBlur = 3;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  ctx.fillText(markers.left, pad, height / 2);
  ctx.textAlign = "right";
  ctx.fillText(markers.right, width - pad, height / 2);
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  ctx.fillText(markers.top, width / 2, pad + (state.mode === "swipe" ? px + pad : 0));
  ctx.textBaseline = "bottom";
  ctx.fillText(markers.bottom, width / 2, height - pad);
  ctx.restore();
}

function drawRoi(ctx, t, roi) {
  if (!roi || roi.plane !== state.plane) return;
  const x = t.ox + roi.c0 * t.s;
  const y = t.oy + roi.r0 * t.sy;
  const w = (roi.c1 - roi.c0) * t.s;
  const h = (roi.r1 - roi.r0) * t.sy;
  ctx.strokeStyle = "#4ade80";
  ctx.lineWidth = 1.5 * devicePixelRatio;
  ctx.beginPath();
  if (roi.kind === "ellipse") ctx.ellipse(x + w / 2, y + h / 2, Math.abs(w / 2), Math.abs(h / 2), 0, 0, 2 * Math.PI);
  else ctx.rect(x, y, w, h);
  ctx.stroke();
}

function presentPlaceholder(pane, text) {
  const ctx = pane.canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pane.canvas.width, pane.canvas.height);
  ctx.fillStyle = "#9aa4b2";
  ctx.font = `${13 * devicePixelRatio}px sans-serif`;
  ctx.fillText(text, 12, 24 * devicePixelRatio);
}

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(render);
}

function render() {
  pending = false;
  if (!vol.orig) return;
  const started = performance.now();
  if (!sliceReady()) {
    for (const pane of panes) presentPlaceholder(pane, "loading slice…");
    updateLabels();
    return;
  }
  const o = extract(vol.orig);
  const d = extract(vol.den);
  const r = extract(vol.res);
  const [p0, p1, p2] = panes;
  if (state.mode === "side") {
    present(p0, layerFor(p0, 0, (out) => paintGray(out, o)));
    present(p1, layerFor(p1, 0, (out) => paintBlend(out, o, d, state.alpha)));
    present(p2, layerFor(p2, 0, (out) => paintResidual(out, r)));
  } else if (state.mode === "swipe") {
    present(p0, layerFor(p0, 0, (out) => paintGray(out, o)),
      layerFor(p0, 1, (out) => paintBlend(out, o, d, state.alpha)));
  } else if (state.mode === "flicker") {
    present(p0, layerFor(p0, 0, (out) => (state.flickerDenoised
      ? paintBlend(out, o, d, state.alpha) : paintGray(out, o))));
  } else {
    present(p0, layerFor(p0, 0, (out) => paintOverlay(out, o, r, state.opacity)));
  }
  stats.frames += 1;
  stats.lastFrameMs = performance.now() - started;
  if (stats.firstImageMs === null) {
    stats.firstImageMs = performance.now();
    root.dataset.firstImage = "1";
  }
  updateLabels();
}

// ---------------------------------------------------------------- labels and readout

function fmt(v, digits = 1) { return Number.isFinite(v) ? v.toFixed(digits) : "—"; }

function updateLabels() {
  const { depth } = planeDims();
  const index = state.index[state.plane];
  const flagged = state.plane === "axial" && flaggedSet.has(index);
  const noise = state.plane === "axial" ? noiseBySlice[index] : undefined;
  const noiseText = Number.isFinite(noise) ? ` · noise ${fmt(noise)}${unit}` : "";
  $("slice-label").textContent = `${geometry().label} ${index + 1}/${depth}${noiseText}${flagged ? " ⚑ flagged" : ""}`;
  $("slice-label").classList.toggle("flagged", flagged);
  $("zoom-label").textContent = `zoom ${state.zoom.toFixed(2)}× · W ${Math.round(state.ww)} L ${Math.round(state.wc)}`;
  const slider = $("slice");
  slider.max = String(depth - 1);
  if (slider.value !== String(index)) slider.value = String(index);
  if (document.activeElement !== $("ww")) $("ww").value = Math.round(state.ww);
  if (document.activeElement !== $("wc")) $("wc").value = Math.round(state.wc);
  const p0 = panes[0];
  p0.label.textContent = {
    side: "Original", swipe: "Swipe: original | denoised",
    flicker: state.flickerDenoised ? "Flicker: DENOISED" : "Flicker: ORIGINAL",
    overlay: "Original + residual overlay",
  }[state.mode];
  panes[1].label.textContent = state.alpha >= 1 ? "Denoised" : `Blend α ${state.alpha.toFixed(2)}`;
}

function readoutAt(col, row) {
  const { w, h } = planeDims();
  const c = Math.floor(col);
  const r = Math.floor(row);
  if (c < 0 || r < 0 || c >= w || r >= h || !sliceReady()) {
    for (const pane of panes) pane.readout.textContent = "";
    $("pos-label").textContent = "";
    return;
  }
  const [z, y, x] = voxelOf(c, r);
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

// ---------------------------------------------------------------- ROI and length

let drawing = null;
let drawingLine = null;

// A length in the plane's own pixels, measured in mm from its column and row spacing.
function lineFrom(a, b) {
  const g = geometry();
  const line = { plane: state.plane, index: state.index[state.plane], c0: a.col, r0: a.row, c1: b.col, r1: b.row };
  const dx = (line.c1 - line.c0) * vol.spacing[g.col_axis];
  const dy = (line.r1 - line.r0) * vol.spacing[g.row_axis];
  line.lengthMm = Math.hypot(dx, dy);
  return line;
}

function setLength(line) {
  state.line = line;
  viewerApi.length = { kind: "length", plane: geometry(line.plane).label, index: line.index, lengthMm: line.lengthMm };
  $("length-out").textContent = `Length ${fmt(line.lengthMm)} mm on ${geometry(line.plane).label} ${line.index + 1}`;
  $("length-out").hidden = false;
}

function drawLine(ctx, t, line) {
  if (!line || line.plane !== state.plane || line.index !== state.index[state.plane]) return;
  const x0 = t.ox + line.c0 * t.s;
  const y0 = t.oy + line.r0 * t.sy;
  const x1 = t.ox + line.c1 * t.s;
  const y1 = t.oy + line.r1 * t.sy;
  ctx.save();
  ctx.strokeStyle = "#38bdf8";
  ctx.fillStyle = "#38bdf8";
  ctx.lineWidth = 1.5 * devicePixelRatio;
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
  ctx.font = `${12 * devicePixelRatio}px sans-serif`;
  ctx.fillText(`${fmt(line.lengthMm)} mm`, x1 + 6, y1);
  ctx.restore();
}

function roiFrom(kind, a, b) {
  const { w, h } = planeDims();
  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  return {
    kind, plane: state.plane,
    c0: clamp(Math.floor(Math.min(a.col, b.col)), w), c1: clamp(Math.ceil(Math.max(a.col, b.col)), w),
    r0: clamp(Math.floor(Math.min(a.row, b.row)), h), r1: clamp(Math.ceil(Math.max(a.row, b.row)), h),
  };
}

function roiMask(roi, w) {
  const idx = [];
  const cx = (roi.c0 + roi.c1) / 2;
  const cy = (roi.r0 + roi.r1) / 2;
  const rx = (roi.c1 - roi.c0) / 2;
  const ry = (roi.r1 - roi.r0) / 2;
  for (let r = roi.r0; r < roi.r1; r++) {
    for (let c = roi.c0; c < roi.c1; c++) {
      if (roi.kind === "ellipse") {
        const u = (c + 0.5 - cx) / rx;
        const v = (r + 0.5 - cy) / ry;
        if (u * u + v * v > 1) continue;
      }
      idx.push(r * w + c);
    }
  }
  return idx;
}

function meanSd(values) {
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let sq = 0;
  for (const v of values) sq += (v - mean) ** 2;
  return [mean, Math.sqrt(sq / values.length)];
}

function updateRoiStats() {
  const table = $("roi-stats");
  const roi = state.roi;
  if (!roi || roi.plane !== state.plane || !sliceReady()) {
    table.hidden = true;
    viewerApi.roiStats = null;
    return;
  }
  const { w } = planeDims();
  const mask = roiMask(roi, w);
  if (mask.length < 2) { table.hidden = true; viewerApi.roiStats = null; return; }
  const o = extract(vol.orig);
  const d = extract(vol.den);
  const ov = mask.map((i) => value(vol.orig, o[i]));
  const dv = mask.map((i) => { const x = value(vol.orig, o[i]); return x + state.alpha * (value(vol.den, d[i]) - x); });
  const rv = ov.map((x, i) => x - dv[i]);
  const [om, os] = meanSd(ov);
  const [dm, ds] = meanSd(dv);
  const [rm, rs] = meanSd(rv);
  // Pixel size of this plane in mm (spacing is z, y, x).
  const g = geometry(roi.plane);
  const [pw, ph] = [vol.spacing[g.col_axis], vol.spacing[g.row_axis]];
  const range = (values) => values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);
  const [omin, omax] = range(ov);
  const [dmin, dmax] = range(dv);
  const [rmin, rmax] = range(rv);
  const result = {
    kind: roi.kind, plane: roi.plane, index: state.index[roi.plane],
    c0: roi.c0, c1: roi.c1, r0: roi.r0, r1: roi.r1, n: mask.length, alpha: state.alpha,
    origMean: om, origSd: os, denMean: dm, denSd: ds, sdRatio: os > 0 ? ds / os : NaN,
    origMin: omin, origMax: omax, denMin: dmin, denMax: dmax,
    resMean: rm, resSd: rs, resMin: rmin, resMax: rmax,
    areaMm2: mask.length * pw * ph, widthMm: (roi.c1 - roi.c0) * pw, heightMm: (roi.r1 - roi.r0) * ph,
  };
  viewerApi.roiStats = result;
  const cell = (k) => table.querySelector(`[data-k="${k}"]`);
  for (const [key, mean, sd, lo, hi] of [["orig", om, os, omin, omax], ["den", dm, ds, dmin, dmax], ["res", rm, rs, rmin, rmax]]) {
    cell(`${key}-mean`).textContent = `${fmt(mean)}${unit}`;
    cell(`${key}-sd`).textContent = fmt(sd);
    cell(`${key}-min`).textContent = fmt(lo);
    cell(`${key}-max`).textContent = fmt(hi);
  }
  cell("sd-ratio").textContent = fmt(result.sdRatio, 3);
  cell("roi-desc").textContent = `${roi.kind} on ${geometry(roi.plane).label} ${result.index + 1}: ${fmt(result.areaMm2)} mm² (${fmt(result.widthMm)} × ${fmt(result.heightMm)} mm), ${mask.length} px${state.alpha < 1 ? `, denoised at α ${state.alpha.toFixed(2)}` : ""}`;
  table.dataset.stats = JSON.stringify(result);
  table.hidden = false;
  $("roi-hint").hidden = true;
}

// ---------------------------------------------------------------- interaction

function setSlice(index) {
  const { depth } = planeDims();
  const next = Math.max(0, Math.min(depth - 1, index));
  if (next === state.index[state.plane]) return;
  state.index[state.plane] = next;
  updateRoiStats();
  scheduleRender();
}

function setWindow(ww, wc) {
  state.ww = Math.max(1, ww);
  state.wc = wc;
  buildLuts();
  scheduleRender();
}

// The residual is shown from -rw (black) to +rw (white); the reviewer can change rw.
function setResidualWindow(rw) {
  if (!(rw > 0)) return;
  state.residualWindow = rw;
  $("colorbar").querySelector(".cb-max").textContent = `+${fmt(rw)}${unit}`;
  $("colorbar").querySelector(".cb-min").textContent = `−${fmt(rw)}${unit}`;
  $("rw").value = Number(rw.toPrecision(3));
  buildLuts();
  scheduleRender();
}

// Percentiles 1-99 of the body: air outside it (below -500 HU on CT, below a
// twentieth of the brightest on other modalities) would widen the window.
function autoWindow() {
  if (!sliceReady()) return;
  const o = extract(vol.orig);
  const hist = new Uint32Array(65536);
  for (let i = 0; i < o.length; i++) hist[o[i] + 32768] += 1;
  let top = 65535;
  while (top > 0 && !hist[top]) top--;
  const air = modality === "CT" ? -500 : 0.05 * value(vol.orig, top - 32768);
  let first = 0;
  while (first < 65535 && value(vol.orig, first - 32768) < air) first++;
  let body = 0;
  for (let i = first; i < 65536; i++) body += hist[i];
  if (body < o.length * 0.05) { first = 0; body = o.length; }  // hardly any body
  for (let i = 0; i < first; i++) hist[i] = 0;
  const lowCount = body * 0.01;
  const highCount = body * 0.99;
  let acc = 0; let lo = 0; let hi = 65535;
  for (let i = 0; i < 65536; i++) { acc += hist[i]; if (acc >= lowCount) { lo = i; break; } }
  acc = 0;
  for (let i = 0; i < 65536; i++) { acc += hist[i]; if (acc >= highCount) { hi = i; break; } }
  const vlo = value(vol.orig, lo - 32768);
  const vhi = value(vol.orig, hi - 32768);
  setWindow(Math.max(vhi - vlo, 1), (vhi + vlo) / 2);
}

const HU_PRESETS = ["soft", "lung", "bone", "brain"];

// The scan's own windows (Window Center/Width, with their explanations) come first;
// HU presets are offered on CT only.
function addScanPresets(windows) {
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

function applyPreset(name) {
  if (!(name in PRESETS) && name !== "auto") return;
  if (modality !== "CT" && HU_PRESETS.includes(name)) return;
  if (name === "auto") autoWindow();
  else setWindow(...PRESETS[name]);
  for (const b of document.querySelectorAll("[data-preset]")) b.classList.toggle("active", b.dataset.preset === name);
  root.dataset.preset = name;
}

function setMode(mode) {
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

function setPlane(plane) {
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

function setTool(tool) {
  state.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
  panesEl.dataset.tool = tool;
}

function setAlpha(alpha) {
  if (originalOnly) return; // no denoised image to blend in
  state.alpha = Math.round(Math.max(0, Math.min(1, alpha)) * 100) / 100;
  $("alpha").value = String(state.alpha);
  $("alpha-out").textContent = state.alpha.toFixed(2);
  $("verdict-alpha").textContent = state.alpha.toFixed(2);
  updateRoiStats();
  scheduleRender();
}

// Invert the greyscale of the original and denoised panes (the residual keeps its map).
function toggleInvert() {
  state.invert = !state.invert;
  $("invert").classList.toggle("active", state.invert);
  buildLuts();
  scheduleRender();
}

// Cine: step through the slices of the current plane at the chosen frame rate,
// round and round, until stopped.
let cineTimer = null;
function toggleCine() {
  clearInterval(cineTimer);
  state.cine = !state.cine;
  $("cine").classList.toggle("active", state.cine);
  $("cine").textContent = state.cine ? "❚❚ Cine" : "▶ Cine";
  if (!state.cine) return;
  const fps = Math.max(1, Math.min(30, Number($("fps").value) || 8));
  cineTimer = setInterval(() => {
    const { depth } = planeDims();
    setSlice((state.index[state.plane] + 1) % depth);
  }, 1000 / fps);
}

function toggleFlicker() {
  if (originalOnly) return;
  if (state.mode !== "flicker") setMode("flicker");
  state.flickerDenoised = !state.flickerDenoised;
  root.dataset.flicker = state.flickerDenoised ? "denoised" : "original";
  scheduleRender();
}

function reformatsAvailable() { return vol.complete && vol.display.reformats.available; }

// The Ax/Cor/Sag buttons show the plane the geometry calls so (for a coronal
// acquisition "Cor" is the stored slices); reformats that the geometry does not
// support stay disabled with the reason.
function setupPlanes(display) {
  for (const b of document.querySelectorAll("[data-plane]")) {
    b.dataset.anatomical = b.dataset.anatomical || b.dataset.plane;
    b.dataset.plane = planeFor(b.dataset.anatomical);
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

function resizeCanvases() {
  for (const pane of panes) {
    const w = Math.max(1, Math.round(pane.canvas.clientWidth * devicePixelRatio));
    const h = Math.max(1, Math.round(pane.canvas.clientHeight * devicePixelRatio));
    if (pane.canvas.width !== w || pane.canvas.height !== h) { pane.canvas.width = w; pane.canvas.height = h; }
  }
  scheduleRender();
}

// A mouse wheel notch (50 px or more, 100 in Chrome) moves one slice; the small
// deltas of a trackpad add up, one slice per 50 px, and a change of direction
// starts the count again.
const WHEEL_SLICE_PX = 50;
let wheelRest = 0;

function wheelSlices(event, pageHeight) {
  const px = event.deltaY * (event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? pageHeight : 1);
  if (!px) return 0;
  if (Math.abs(px) >= WHEEL_SLICE_PX) { wheelRest = 0; return Math.sign(px); }
  if (Math.sign(px) !== Math.sign(wheelRest)) wheelRest = 0;
  wheelRest += px;
  const steps = Math.trunc(wheelRest / WHEEL_SLICE_PX);
  wheelRest -= steps * WHEEL_SLICE_PX;
  return steps;
}

function bindPane(pane) {
  const canvas = pane.canvas;
  let drag = null;
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey) {
      const factor = event.deltaY < 0 ? 1.15 : 1 / 1.15;
      state.zoom = Math.max(0.25, Math.min(16, state.zoom * factor));
      scheduleRender();
    } else {
      const steps = wheelSlices(event, canvas.clientHeight);
      if (steps) setSlice(state.index[state.plane] + steps);
    }
  }, { passive: false });
  canvas.addEventListener("pointerdown", (event) => {
    if (!vol.orig) return;
    canvas.setPointerCapture(event.pointerId);
    const kind = event.button === 1 || event.shiftKey || state.tool === "pan" ? "pan"
      : state.tool === "rect" || state.tool === "ellipse" ? "roi"
        : state.tool === "length" ? "length" : "wl";
    drag = { kind, x: event.clientX, y: event.clientY, ww: state.ww, wc: state.wc,
      panX: state.panX, panY: state.panY, start: toImage(pane, event) };
    event.preventDefault();
  });
  canvas.addEventListener("pointermove", (event) => {
    const point = toImage(pane, event);
    readoutAt(point.col, point.row);
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.kind === "pan") {
      state.panX = drag.panX + dx;
      state.panY = drag.panY + dy;
      scheduleRender();
    } else if (drag.kind === "wl") {
      const perPixel = Math.max(0.5, drag.ww / 200);
      setWindow(drag.ww + dx * perPixel, drag.wc + dy * perPixel);
      for (const b of document.querySelectorAll("[data-preset]")) b.classList.remove("active");
    } else if (drag.kind === "length") {
      drawingLine = lineFrom(drag.start, point);
      scheduleRender();
    } else {
      drawing = roiFrom(state.tool, drag.start, point);
      scheduleRender();
    }
  });
  const end = (event) => {
    if (drag && drag.kind === "length") {
      const line = lineFrom(drag.start, toImage(pane, event));
      drawingLine = null;
      if (Math.hypot(line.c1 - line.c0, line.r1 - line.r0) >= 1) setLength(line);
      scheduleRender();
    }
    if (drag && drag.kind === "roi") {
      const roi = roiFrom(state.tool, drag.start, toImage(pane, event));
      drawing = null;
      if (roi.c1 - roi.c0 >= 2 && roi.r1 - roi.r0 >= 2) state.roi = roi;
      updateRoiStats();
      scheduleRender();
    }
    drag = null;
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("pointerleave", () => { if (!drag) readoutAt(-1, -1); });
  canvas.addEventListener("auxclick", (event) => event.preventDefault());
}

function onKey(event) {
  const target = event.target;
  if (target instanceof HTMLElement && target.closest("input, textarea, select") && target.type !== "range") return;
  if ($("help").open && event.key !== "?" ) return;
  const step = { ArrowUp: -1, ArrowDown: 1, PageUp: -10, PageDown: 10 }[event.key];
  if (step !== undefined) {
    // The slice slider keeps the viewer's meaning of the keys (up: previous slice);
    // the other sliders move as sliders do.
    if (target.type === "range" && target.id !== "slice") return;
    event.preventDefault();
    setSlice(state.index[state.plane] + step);
    return;
  }
  const key = event.key.toLowerCase();
  const actions = {
    home: () => setSlice(0), end: () => setSlice(planeDims().depth - 1),
    "1": () => applyPreset("soft"), "2": () => applyPreset("lung"), "3": () => applyPreset("bone"),
    "4": () => applyPreset("brain"), "0": () => applyPreset("auto"),
    w: () => setTool("wl"), p: () => setTool("pan"), r: () => setTool("rect"), e: () => setTool("ellipse"), d: () => setTool("length"),
    m: () => setMode(MODES[(MODES.indexOf(state.mode) + 1) % MODES.length]),
    f: toggleFlicker, i: toggleInvert, " ": toggleCine, l: toggleOverlay, z: () => setPlane(planeFor("axial")), c: () => setPlane(planeFor("coronal")), s: () => setPlane(planeFor("sagittal")),
    "[": () => setAlpha(state.alpha - 0.05), "]": () => setAlpha(state.alpha + 0.05),
    "+": () => { state.zoom = Math.min(16, state.zoom * 1.25); scheduleRender(); },
    "=": () => { state.zoom = Math.min(16, state.zoom * 1.25); scheduleRender(); },
    "-": () => { state.zoom = Math.max(0.25, state.zoom / 1.25); scheduleRender(); },
    x: () => { state.zoom = 1; state.panX = 0; state.panY = 0; scheduleRender(); },
    "?": () => ($("help").open ? $("help").close() : $("help").showModal()),
  };
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const action = actions[key];
  if (action) { event.preventDefault(); action(); }
}

function bindControls() {
  panes.forEach(bindPane);
  document.addEventListener("keydown", onKey);
  for (const b of document.querySelectorAll("[data-mode]")) b.addEventListener("click", () => setMode(b.dataset.mode));
  for (const b of document.querySelectorAll("[data-plane]")) b.addEventListener("click", () => setPlane(b.dataset.plane));
  for (const b of document.querySelectorAll("[data-preset]")) b.addEventListener("click", () => applyPreset(b.dataset.preset));
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("slice").addEventListener("input", (e) => setSlice(Number(e.target.value)));
  $("alpha").addEventListener("input", (e) => setAlpha(Number(e.target.value)));
  $("swipe").addEventListener("input", (e) => { state.swipe = Number(e.target.value); scheduleRender(); });
  $("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value); scheduleRender(); });
  $("ww").addEventListener("change", (e) => setWindow(Number(e.target.value), state.wc));
  $("wc").addEventListener("change", (e) => setWindow(state.ww, Number(e.target.value)));
  $("rw").addEventListener("change", (e) => setResidualWindow(Number(e.target.value)));
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("invert").addEventListener("click", toggleInvert);
  $("labels").addEventListener("click", toggleOverlay);
  $("cine").addEventListener("click", toggleCine);
  $("fps").addEventListener("change", () => { if (state.cine) { toggleCine(); toggleCine(); } });
  let flickerTimer = null;
  $("auto-flicker").addEventListener("change", (e) => {
    clearInterval(flickerTimer);
    if (e.target.checked) flickerTimer = setInterval(toggleFlicker, 500);
  });
  new ResizeObserver(resizeCanvases).observe(panesEl);
  $("verdict-form").addEventListener("submit", submitVerdict);
}

// ---------------------------------------------------------------- side panel

const flaggedSet = new Set();
// The input's estimated noise SD per axial slice (what the model was told to remove).
const noiseBySlice = [];

function renderFlags(metrics) {
  const marks = $("slice-marks");
  marks.replaceChildren();
  const nz = vol.shape[0];
  const perSlice = metrics.per_slice || {};
  noiseBySlice.splice(0, noiseBySlice.length, ...(perSlice.noise_sd_before || []).map(Number));
  for (const entry of metrics.flagged_slices || []) {
    const index = typeof entry === "number" ? entry : entry.index ?? entry.slice;
    if (!Number.isInteger(index) || index < 0 || index >= nz) continue;
    flaggedSet.add(index);
    const score = (perSlice.structure_score || [])[index];
    const anatomy = (perSlice.anatomy_correlation || [])[index];
    const detail = [
      Number.isFinite(score) ? `edge energy ${fmt(score, 2)} (limit ${metrics.structure_threshold})` : null,
      Number.isFinite(anatomy) ? `anatomy r ${fmt(anatomy, 2)} (limit ${metrics.anatomy_threshold})` : null,
    ].filter(Boolean).join(", ");
    const mark = el("button", {
      type: "button", class: "mark", dataset: { slice: index },
      title: `slice ${index + 1}: structure in the residual${detail ? ` (${detail})` : ""}`,
      onclick: () => { setPlane("axial"); setSlice(index); },
    });
    // Through the CSSOM, which the Content-Security-Policy allows (no inline style).
    mark.style.left = `${nz > 1 ? (index / (nz - 1)) * 100 : 50}%`;
    marks.append(mark);
  }
  root.dataset.flagged = String(flaggedSet.size);
}

function findKey(object, key, depth = 0) {
  if (!object || typeof object !== "object" || depth > 3) return undefined;
  if (key in object && typeof object[key] !== "object") return object[key];
  for (const value of Object.values(object)) {
    const found = findKey(value, key, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

function renderProvenance(job) {
  const prov = job.provenance || {};
  const list = $("prov-list");
  const timings = Object.entries(job.timings_s || {})
    .map(([k, v]) => `${k} ${Number(v).toFixed(2)} s`).join(", ");
  const metrics = job.metrics || {};
  const rows = [
    ["Model", `${job.model.name}`],
    ["Version", job.model.version],
    ["Weights", el("span", { class: "mono", title: job.model.weights_sha256 }, job.model.weights_sha256.slice(0, 12))],
    ["Params", el("span", { class: "mono small" }, JSON.stringify(job.params))],
    ["Device", findKey(prov, "device") ?? "—"],
    ["Precision", findKey(prov, "precision") ?? job.params.precision ?? "—"],
    ["Timings", timings || "—"],
    ["Worker", job.worker || "—"],
    ["Code", (findKey(prov, "git_commit") || "—").toString().slice(0, 12)],
    ["Noise SD", metrics.noise_sd_before !== undefined
      ? `${fmt(metrics.noise_sd_before)} → ${fmt(metrics.noise_sd_after)}${unit}` : "—"],
    ["Flagged", `${(metrics.flagged_slices || []).length} slice(s)`],
  ];
  if ((job.warnings || []).length) rows.push(["Warnings", el("span", { class: "warn" }, job.warnings.join("; "))]);
  list.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("prov-json").textContent = JSON.stringify(prov, null, 2);
  $("audit-link").href = `${root.dataset.auditUrl}?target_type=denoisejob&target_id=${job.id}`;
}

function renderConcerns(job) {
  const note = $("verdict-concerns");
  const concerns = job.review_concerns || [];
  note.hidden = !concerns.length;
  note.textContent = concerns.length ? `Accepting needs a comment: ${concerns.join("; ")}.` : "";
}

function renderReviews(job) {
  $("reviews").replaceChildren(...job.reviews.map((r) => el("li", {},
    el("span", { class: `badge verdict-${r.verdict}` }, r.verdict.replace("_", " ")),
    ` ${r.reviewer} · α ${r.strength.toFixed(2)} · ${formatTime(r.created_at)}`,
    r.comment ? el("div", { class: "small" }, r.comment) : null,
    ...(r.measurements || []).map((m) => el("div", { class: "small muted measurement" }, describeMeasurement(m))))));
  // A reviewer who has given a verdict changes it explicitly; every verdict stays.
  const mine = job.reviews.some((r) => r.reviewer === root.dataset.user);
  $("verdict-submit").textContent = mine ? "Change verdict" : "Record verdict";
}

// The ROI's statistics (original, denoised, residual) and the length, as recorded
// with a verdict: numbers rounded to what the table shows.
function currentMeasurements() {
  const out = [];
  const roi = viewerApi.roiStats;
  if (roi) {
    const keep = ["n", "alpha", "areaMm2", "widthMm", "heightMm", "origMean", "origSd", "origMin", "origMax",
      "denMean", "denSd", "denMin", "denMax", "resMean", "resSd", "resMin", "resMax"];
    const item = { kind: roi.kind, plane: geometry(roi.plane).label, index: roi.index };
    for (const k of keep) if (Number.isFinite(roi[k])) item[k] = Math.round(roi[k] * 100) / 100;
    out.push(item);
  }
  if (viewerApi.length) out.push({ ...viewerApi.length, lengthMm: Math.round(viewerApi.length.lengthMm * 100) / 100 });
  return out;
}

function describeMeasurement(m) {
  if (m.kind === "length") return `length ${fmt(m.lengthMm)} mm (${m.plane} ${m.index + 1})`;
  return `${m.kind} ${fmt(m.areaMm2)} mm² on ${m.plane} ${m.index + 1}: original ${fmt(m.origMean)} ± ${fmt(m.origSd)}, denoised ${fmt(m.denMean)} ± ${fmt(m.denSd)}, residual ${fmt(m.resMean)} ± ${fmt(m.resSd)}${unit}`;
}

async function submitVerdict(event) {
  event.preventDefault();
  const form = event.target;
  const message = $("verdict-message");
  const verdict = form.elements.verdict.value;
  if (!verdict) { message.textContent = "Choose accept, reject or needs review."; message.className = "small error"; return; }
  const concerns = (viewerApi.job && viewerApi.job.review_concerns) || [];
  if (verdict === "accept" && concerns.length && !form.elements.comment.value.trim()) {
    message.textContent = `Accepting needs a comment saying why: ${concerns.join("; ")}.`;
    message.className = "small error";
    form.elements.comment.focus();
    return;
  }
  const measurements = form.elements.attach.checked ? currentMeasurements() : [];
  try {
    const review = await api(`/jobs/${jobId}/review`, {
      method: "POST", body: { verdict, comment: form.elements.comment.value, strength: state.alpha, measurements },
    });
    const changed = $("verdict-submit").textContent === "Change verdict" ? " (changed; the earlier verdict stays in the log)" : "";
    message.textContent = `Recorded: ${review.verdict.replace("_", " ")} by ${review.reviewer} at α ${review.strength.toFixed(2)}${changed}.`;
    message.className = "small ok";
    form.reset();
    const job = await api(`/jobs/${jobId}`);
    renderReviews(job);
  } catch (error) {
    message.textContent = error.message;
    message.className = "small error";
  }
}

// ---------------------------------------------------------------- loading

function slabOrder(nz, start, per) {
  const slabs = [];
  for (let z0 = 0; z0 < nz; z0 += per) slabs.push([z0, Math.min(nz, z0 + per)]);
  const first = Math.floor(start / per);
  const order = [first];
  for (let k = 1; order.length < slabs.length; k++) {
    if (first + k < slabs.length) order.push(first + k);
    if (first - k >= 0) order.push(first - k);
  }
  return order.map((i) => slabs[i]);
}

async function fetchSlab(url, target, z0, z1, planeVoxels) {
  const response = await fetch(`${url}?z0=${z0}&z1=${z1}`, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  const buffer = await response.arrayBuffer();
  const scale = Number(response.headers.get("X-Volume-Scale"));
  const offset = Number(response.headers.get("X-Volume-Offset"));
  if (!target.data) {
    target.scale = scale;
    target.offset = offset;
    target.data = new Int16Array(vol.shape[0] * planeVoxels);
  }
  target.data.set(new Int16Array(buffer), z0 * planeVoxels);
}

async function loadVolumes(job) {
  const [nz, ny, nx] = vol.shape;
  const planeVoxels = ny * nx;
  const per = Math.max(1, Math.floor(SLAB_BYTES / (planeVoxels * 2)));
  vol.loaded = new Uint8Array(nz);
  vol.orig = { data: null, scale: 1, offset: 0 };
  vol.den = { data: null, scale: 1, offset: 0 };
  vol.res = { data: null, scale: 1, offset: 0 };
  const sources = [[`/api/series/${seriesId}/volume`, vol.orig]];
  if (job) {
    sources.push(
      [`/api/jobs/${job.id}/volume/reconstruction`, vol.den],
      [`/api/jobs/${job.id}/volume/residual`, vol.res],
    );
  } else {
    // The hidden panes show the original and a zero residual: every path that
    // reads them stays valid, and nothing is fetched for them.
    vol.den = vol.orig;
    vol.res = { data: new Int16Array(nz * planeVoxels), scale: 1, offset: 0 };
  }
  vol.sourceCount = sources.length;
  const queue = slabOrder(nz, state.index.axial, per).flatMap(([z0, z1]) => sources.map((s) => [s, z0, z1]));
  const total = queue.length;
  let done = 0;
  let lutsBuilt = false;
  const worker = async () => {
    while (queue.length) {
      const [[url, target], z0, z1] = queue.shift();
      await fetchSlab(url, target, z0, z1, planeVoxels);
      for (let z = z0; z < z1; z++) vol.loaded[z] += 1;
      done += 1;
      $("load-label").textContent = done < total ? `loading ${Math.round((done / total) * 100)}%` : "";
      // Windows are measured on the shown slice, so only once all three of its slabs
      // are here (a slow residual slab would otherwise give a window of ~0).
      if (!lutsBuilt && vol.loaded[state.index.axial] >= sources.length) {
        lutsBuilt = true;
        initialWindows();
      }
      if (z0 <= state.index.axial && state.index.axial < z1) { updateRoiStats(); scheduleRender(); }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  vol.complete = true;
  for (const b of document.querySelectorAll("[data-plane]")) b.disabled = b.dataset.plane !== "axial" && !reformatsAvailable();
  root.dataset.loaded = "1";
  viewerApi.ready = true;
  scheduleRender();
}

function initialWindows() {
  const r = extract(vol.res, "axial", state.index.axial);
  let sq = 0;
  for (let i = 0; i < r.length; i++) { const v = vol.res.scale * r[i]; sq += v * v; }
  setResidualWindow(Math.max(3 * Math.sqrt(sq / Math.max(r.length, 1)), vol.res.scale * 10, 1e-3));
  if ("scan0" in PRESETS) applyPreset("scan0");
  else if (modality === "CT") applyPreset("soft");
  else applyPreset("auto");
}

async function startOriginalOnly() {
  const series = await api(`/series/${seriesId}`);
  setupSeries(series);
  panes[0].label.textContent = "Original";
  resizeCanvases();
  await loadVolumes(null);
}

// The study's series as thumbnails: each opens its latest comparison, or the
// original alone when it has none.
function renderStudy(series) {
  const others = series.study_series || [];
  $("study-card").hidden = others.length < 2;
  $("study-series").replaceChildren(...others.map((s) => el("a", {
    href: s.compare_job ? `/jobs/${s.compare_job}/compare/` : `/series/${s.id}/view/`,
    class: s.id === series.id ? "current" : "", title: s.description, dataset: { seriesId: s.id },
  }, el("img", { loading: "lazy", alt: "", src: `/api/series/${s.id}/thumbnail?size=96` }),
  el("span", {}, `${s.modality} ${s.description}`))));
}

function setupSeries(series) {
  renderStudy(series);
  vol.shape = series.shape;
  vol.spacing = series.spacing;
  vol.display = series.display;
  vol.series = series;
  setupPlanes(series.display);
  addScanPresets(series.windows);
  state.index.axial = Math.floor(vol.shape[0] / 2);
  state.index.coronal = Math.floor(vol.shape[1] / 2);
  state.index.sagittal = Math.floor(vol.shape[2] / 2);
}

async function start() {
  bindControls();
  setMode("side");
  setTool("wl");
  for (const b of document.querySelectorAll("[data-plane]")) b.disabled = b.dataset.plane !== "axial";
  if (originalOnly) return startOriginalOnly();
  let job = await api(`/jobs/${jobId}`);
  while (["queued", "running"].includes(job.status)) {
    $("load-label").textContent = `job ${job.status} ${Math.round(job.progress * 100)}%`;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    job = await api(`/jobs/${jobId}`);
  }
  viewerApi.job = job;
  renderProvenance(job);
  renderReviews(job);
  renderConcerns(job);
  if (job.status !== "succeeded") {
    $("load-label").textContent = `job ${job.status}: ${job.error || "no outputs to compare"}`;
    return;
  }
  const series = await api(`/series/${seriesId}`);
  setupSeries(series);
  renderFlags(job.metrics || {});
  resizeCanvases();
  await loadVolumes(job);
}

start().catch((error) => {
  $("load-label").textContent = `Could not load: ${error.message}`;
  root.dataset.error = error.message;
});
