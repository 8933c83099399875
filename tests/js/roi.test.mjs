// ROI masks and statistics, and lengths in mm.
import assert from "node:assert/strict";
import test from "node:test";

import { lineFrom, meanSd, roiFrom, roiMask, roiStats } from "../../radiology/static/radiology/viewer/roi.js";

const planes = {
  axial: { through_axis: 0, col_axis: 2, row_axis: 1, col_flip: false, row_flip: false },
  coronal: { through_axis: 1, col_axis: 2, row_axis: 0, col_flip: false, row_flip: true },
};
const close = (actual, expected) => assert.ok(Math.abs(actual - expected) < 1e-9, `${actual} != ${expected}`);

test("a drag's region is ordered, whole pixels and clamped to the plane", () => {
  const roi = roiFrom("rect", "axial", { col: 5.5, row: 1.2 }, { col: -3, row: 7.9 }, 6, 6);
  assert.deepEqual(roi, { kind: "rect", plane: "axial", c0: 0, c1: 6, r0: 1, r1: 6 });
});

test("a rectangle's mask is every pixel inside it", () => {
  const mask = roiMask({ kind: "rect", c0: 1, c1: 3, r0: 2, r1: 4 }, 10);
  assert.deepEqual(mask, [21, 22, 31, 32]);
});

test("an ellipse's mask keeps the pixels whose centres lie inside it", () => {
  const mask = new Set(roiMask({ kind: "ellipse", c0: 0, c1: 10, r0: 0, r1: 10 }, 10));
  assert.equal(mask.size, 80);  // π·5² ≈ 78.5, in whole pixels
  assert.ok(mask.has(5 * 10 + 5) && mask.has(5 * 10 + 0) && mask.has(0 * 10 + 5));
  for (const corner of [0, 9, 90, 99]) assert.ok(!mask.has(corner));
  // Symmetric about both axes.
  for (const i of mask) assert.ok(mask.has(i - (i % 10) + 9 - (i % 10)) && mask.has((9 - Math.floor(i / 10)) * 10 + (i % 10)));
});

test("meanSd is the mean and population standard deviation", () => {
  const [mean, sd] = meanSd([1, 2, 3, 4]);
  assert.equal(mean, 2.5);
  close(sd, Math.sqrt(1.25));
});

function statsOf(alpha) {
  const vol = {
    spacing: [2.5, 0.5, 0.8], display: { planes },
    orig: { scale: 2, offset: -1000 }, den: { scale: 1, offset: 0 },
  };
  // Original 10 ± 2 (stored 504 and 506), denoised exactly 10 (stored 10).
  const o = Int16Array.from([504, 506, 504, 506, 0, 0]);
  const d = Int16Array.from([10, 10, 10, 10, 0, 0]);
  const roi = { kind: "rect", plane: "coronal", c0: 0, c1: 2, r0: 0, r1: 2 };
  return roiStats({ vol, roi, index: 7, mask: [0, 1, 2, 3], o, d, alpha });
}

test("ROI statistics of the original, the denoised image and their difference", () => {
  const s = statsOf(1);
  assert.deepEqual([s.kind, s.plane, s.index, s.n, s.alpha], ["rect", "coronal", 7, 4, 1]);
  assert.deepEqual([s.origMean, s.origSd, s.origMin, s.origMax], [10, 2, 8, 12]);
  assert.deepEqual([s.denMean, s.denSd, s.denMin, s.denMax], [10, 0, 10, 10]);
  assert.deepEqual([s.resMean, s.resSd, s.resMin, s.resMax], [0, 2, -2, 2]);
  assert.equal(s.sdRatio, 0);
  // Coronal pixels are x (0.8 mm) by z (2.5 mm).
  close(s.areaMm2, 4 * 0.8 * 2.5);
  close(s.widthMm, 1.6);
  close(s.heightMm, 5);
});

test("ROI statistics of a blend count the denoised image by alpha", () => {
  const s = statsOf(0.5);
  assert.deepEqual([s.denMean, s.denSd, s.denMin, s.denMax], [10, 1, 9, 11]);
  assert.equal(s.sdRatio, 0.5);
  assert.deepEqual([s.resMin, s.resMax], [-1, 1]);
});

test("a length is measured in mm with the plane's column and row spacing", () => {
  const vol = { spacing: [2.5, 0.5, 0.8], display: { planes } };
  const line = lineFrom(vol, "axial", 3, { col: 1, row: 2 }, { col: 6, row: 8 });
  assert.deepEqual({ ...line, lengthMm: undefined }, { plane: "axial", index: 3, c0: 1, r0: 2, c1: 6, r1: 8, lengthMm: undefined });
  close(line.lengthMm, 5);  // 5 columns of 0.8 mm, 6 rows of 0.5 mm: a 4-3-5 triangle
  close(lineFrom(vol, "coronal", 0, { col: 0, row: 0 }, { col: 0, row: 2 }).lengthMm, 5);
});
