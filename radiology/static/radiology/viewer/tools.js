// Input: the pointer tools on the panes (window/level, pan, ROI, length), the wheel,
// the keyboard and the toolbar's controls, bound once at start.
import {
  applyPreset, readoutAt, resizeCanvases, setAlpha, setLength, setMode, setPlane, setResidualWindow,
  setSlice, setTool, setWindow, toggleCine, toggleFlicker, toggleInvert, toggleOverlay, updateRoiStats,
} from "./controls.js";
import { $, panes, panesEl } from "./dom.js";
import { planeFor } from "./geometry.js";
import { scheduleRender, toImage } from "./render.js";
import { lineFrom, roiFrom } from "./roi.js";
import { MODES, dims, draft, state, vol } from "./state.js";
import { submitVerdict } from "./ui/panel.js";

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

const lineTo = (start, point) => lineFrom(vol, state.plane, state.index[state.plane], start, point);
function roiTo(start, point) {
  const { w, h } = dims();
  return roiFrom(state.tool, state.plane, start, point, w, h);
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
      draft.line = lineTo(drag.start, point);
      scheduleRender();
    } else {
      draft.roi = roiTo(drag.start, point);
      scheduleRender();
    }
  });
  const end = (event) => {
    if (drag && drag.kind === "length") {
      const line = lineTo(drag.start, toImage(pane, event));
      draft.line = null;
      if (Math.hypot(line.c1 - line.c0, line.r1 - line.r0) >= 1) setLength(line);
      scheduleRender();
    }
    if (drag && drag.kind === "roi") {
      const roi = roiTo(drag.start, toImage(pane, event));
      draft.roi = null;
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
  const plane = (anatomical) => () => setPlane(planeFor(vol.display, anatomical));
  const actions = {
    home: () => setSlice(0), end: () => setSlice(dims().depth - 1),
    "1": () => applyPreset("soft"), "2": () => applyPreset("lung"), "3": () => applyPreset("bone"),
    "4": () => applyPreset("brain"), "0": () => applyPreset("auto"),
    w: () => setTool("wl"), p: () => setTool("pan"), r: () => setTool("rect"), e: () => setTool("ellipse"), d: () => setTool("length"),
    m: () => setMode(MODES[(MODES.indexOf(state.mode) + 1) % MODES.length]),
    f: toggleFlicker, i: toggleInvert, " ": toggleCine, l: toggleOverlay, z: plane("axial"), c: plane("coronal"), s: plane("sagittal"),
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

export function bindControls() {
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
