// Painting the panes: the shown slice through the look-up tables onto each pane's
// canvas, with the ROI, the length, the orientation letters and the corner text;
// one render per animation frame however many changes asked for it.
import { $, panes, root, unit } from "./dom.js";
import { fmt } from "./format.js";
import { fitTransform } from "./geometry.js";
import {
  dims, draft, flaggedSet, geometry, noiseBySlice, shownSlice, sliceReady, state, stats, vol,
} from "./state.js";
import { buildLuts, makeLuts, paintBlend, paintGray, paintOverlay, paintResidual } from "./window.js";

const luts = makeLuts();

export function rebuildLuts() {
  if (!vol.orig) return;
  buildLuts(luts, vol.orig, vol.res, state);
}

function transformFor(pane) {
  return fitTransform(dims(), pane.canvas.width, pane.canvas.height, state, devicePixelRatio);
}

// The image column and row under a pointer event on a pane (fractional).
export function toImage(pane, event) {
  const rect = pane.canvas.getBoundingClientRect();
  const t = transformFor(pane);
  const x = (event.clientX - rect.left) * devicePixelRatio;
  const y = (event.clientY - rect.top) * devicePixelRatio;
  return { col: (x - t.ox) / t.s, row: (y - t.oy) / t.sy, t };
}

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

function layerFor(pane, layer, paint) {
  const { w, h } = dims();
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
  drawRoi(ctx, t, draft.roi || state.roi);
  drawLine(ctx, t, draft.line || state.line);
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
  const { depth } = dims();
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
export function scheduleRender() {
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
  const o = shownSlice(vol.orig);
  const d = shownSlice(vol.den);
  const r = shownSlice(vol.res);
  const [p0, p1, p2] = panes;
  if (state.mode === "side") {
    present(p0, layerFor(p0, 0, (out) => paintGray(out, o, luts)));
    present(p1, layerFor(p1, 0, (out) => paintBlend(out, o, d, state.alpha, luts)));
    present(p2, layerFor(p2, 0, (out) => paintResidual(out, r, luts)));
  } else if (state.mode === "swipe") {
    present(p0, layerFor(p0, 0, (out) => paintGray(out, o, luts)),
      layerFor(p0, 1, (out) => paintBlend(out, o, d, state.alpha, luts)));
  } else if (state.mode === "flicker") {
    present(p0, layerFor(p0, 0, (out) => (state.flickerDenoised
      ? paintBlend(out, o, d, state.alpha, luts) : paintGray(out, o, luts))));
  } else {
    present(p0, layerFor(p0, 0, (out) => paintOverlay(out, o, r, state.opacity, luts)));
  }
  stats.frames += 1;
  stats.lastFrameMs = performance.now() - started;
  if (stats.firstImageMs === null) {
    stats.firstImageMs = performance.now();
    root.dataset.firstImage = "1";
  }
  updateLabels();
}

function updateLabels() {
  const { depth } = dims();
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
