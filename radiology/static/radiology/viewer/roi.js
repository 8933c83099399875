// Regions of interest and lengths on a plane: the rectangle or ellipse a drag draws,
// the pixels inside it, their statistics and a length in mm. Pure: no DOM.
import { planeGeometry } from "./geometry.js";
import { value } from "./window.js";

// The region a drag from image point a to b draws, in whole pixels of a w × h plane.
export function roiFrom(kind, plane, a, b, w, h) {
  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  return {
    kind, plane,
    c0: clamp(Math.floor(Math.min(a.col, b.col)), w), c1: clamp(Math.ceil(Math.max(a.col, b.col)), w),
    r0: clamp(Math.floor(Math.min(a.row, b.row)), h), r1: clamp(Math.ceil(Math.max(a.row, b.row)), h),
  };
}

// Indices (row * w + col) of the pixels inside the region; an ellipse keeps the
// pixels whose centres lie inside it.
export function roiMask(roi, w) {
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

// Mean and population standard deviation.
export function meanSd(values) {
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let sq = 0;
  for (const v of values) sq += (v - mean) ** 2;
  return [mean, Math.sqrt(sq / values.length)];
}

function range(values) {
  return values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);
}

// Statistics of the original, the denoised image blended in by alpha and their
// difference under `mask`, on slice `index`: o and d are that slice of the original
// and denoised volumes (int16, see extract), orig and den their scales. Sizes in mm
// from the plane's column and row spacing.
export function roiStats({ vol, roi, index, mask, o, d, alpha }) {
  const ov = mask.map((i) => value(vol.orig, o[i]));
  const dv = mask.map((i) => { const x = value(vol.orig, o[i]); return x + alpha * (value(vol.den, d[i]) - x); });
  const rv = ov.map((x, i) => x - dv[i]);
  const [om, os] = meanSd(ov);
  const [dm, ds] = meanSd(dv);
  const [rm, rs] = meanSd(rv);
  const g = planeGeometry(vol, roi.plane);
  const [pw, ph] = [vol.spacing[g.col_axis], vol.spacing[g.row_axis]];
  const [omin, omax] = range(ov);
  const [dmin, dmax] = range(dv);
  const [rmin, rmax] = range(rv);
  return {
    kind: roi.kind, plane: roi.plane, index,
    c0: roi.c0, c1: roi.c1, r0: roi.r0, r1: roi.r1, n: mask.length, alpha,
    origMean: om, origSd: os, denMean: dm, denSd: ds, sdRatio: os > 0 ? ds / os : NaN,
    origMin: omin, origMax: omax, denMin: dmin, denMax: dmax,
    resMean: rm, resSd: rs, resMin: rmin, resMax: rmax,
    areaMm2: mask.length * pw * ph, widthMm: (roi.c1 - roi.c0) * pw, heightMm: (roi.r1 - roi.r0) * ph,
  };
}

// A length in the plane's own pixels, measured in mm from its column and row spacing.
export function lineFrom(vol, plane, index, a, b) {
  const g = planeGeometry(vol, plane);
  const line = { plane, index, c0: a.col, r0: a.row, c1: b.col, r1: b.row };
  const dx = (line.c1 - line.c0) * vol.spacing[g.col_axis];
  const dy = (line.r1 - line.r0) * vol.spacing[g.row_axis];
  line.lengthMm = Math.hypot(dx, dy);
  return line;
}
