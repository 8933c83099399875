// The viewer's shared state, one object each: what is shown (state), the volumes and
// their geometry (vol), frame counters (stats), shapes being drawn (draft) and the
// viewer object that main.js exports. Pure: no DOM.
import { extract, planeDims, planeGeometry } from "./geometry.js";

// Window presets [width, centre]; the scan's own windows are added as scan0, scan1...
export const PRESETS = { soft: [400, 40], lung: [1500, -600], bone: [1800, 400], brain: [80, 40] };
export const HU_PRESETS = ["soft", "lung", "bone", "brain"];
export const MODES = ["side", "swipe", "flicker", "overlay"];

export const state = {
  plane: "axial", index: { axial: 0, coronal: 0, sagittal: 0 },
  zoom: 1, panX: 0, panY: 0, ww: 400, wc: 40, alpha: 1, mode: "side", tool: "wl",
  opacity: 0.6, swipe: 0.5, flickerDenoised: false, roi: null, residualWindow: 50,
  invert: false, cine: false, overlay: true,
};
export const stats = { frames: 0, lastFrameMs: 0, firstImageMs: null };
export const vol = { shape: null, spacing: null, orig: null, den: null, res: null, loaded: null, complete: false };
// The ROI or line under the pointer while a drag draws it.
export const draft = { roi: null, line: null };
// Axial slices the job flagged, and the input's estimated noise SD per axial slice
// (what the model was told to remove).
export const flaggedSet = new Set();
export const noiseBySlice = [];

export const viewer = { state, stats, vol, roiStats: null, job: null, render: () => {} };

// The shown plane's geometry, size and pixels.
export function geometry(plane = state.plane) { return planeGeometry(vol, plane); }
export function dims(plane = state.plane) { return planeDims(vol, plane); }
export function shownSlice(volume) { return extract(vol, volume, state.plane, state.index[state.plane]); }

export function sliceReady() {
  if (geometry().through_axis !== 0) return vol.complete;
  return vol.loaded && vol.loaded[state.index.axial] === vol.sourceCount;
}

export function reformatsAvailable() { return vol.complete && vol.display.reformats.available; }
