// Window/level maths: look-up tables, the automatic and residual windows, painters.
import assert from "node:assert/strict";
import test from "node:test";

import {
  autoWindow, buildLuts, makeLuts, paintBlend, paintGray, paintOverlay, paintResidual,
  residualWindowFor, value,
} from "../../radiology/static/radiology/viewer/window.js";

const at = (q) => q + 32768;  // a table's index of stored value q
const grey = (g) => (0xff000000 | (g << 16) | (g << 8) | g) >>> 0;
const unit = { scale: 1, offset: 0 };

function luts(settings, orig = unit, res = unit) {
  const tables = makeLuts();
  buildLuts(tables, orig, res, { ww: 102, wc: 51, invert: false, residualWindow: 10, ...settings });
  return tables;
}

test("value applies the volume's scale and offset", () => {
  assert.equal(value({ scale: 0.5, offset: -1024 }, 100), -974);
});

test("the window maps its low edge to black and its high edge to white", () => {
  const t = luts({});
  assert.equal(t.grayLevel[at(0)], 0);
  assert.equal(t.grayLevel[at(-500)], 0);
  assert.equal(t.grayLevel[at(51)], 127);
  assert.equal(t.grayLevel[at(102)], 255);
  assert.equal(t.grayLevel[at(3000)], 255);
  assert.equal(t.gray[at(51)] >>> 0, grey(127));
});

test("the window is on the volume's real values", () => {
  // Stored q means 2q - 1000: q = 551 is 102, the window's top.
  const t = luts({}, { scale: 2, offset: -1000 });
  assert.equal(t.grayLevel[at(551)], 255);
  assert.equal(t.grayLevel[at(500)], 0);
});

test("invert turns the grey scale over", () => {
  const t = luts({ invert: true });
  assert.equal(t.grayLevel[at(0)], 255);
  assert.equal(t.grayLevel[at(102)], 0);
});

test("the residual map runs from -rw black through grey to +rw white", () => {
  const t = luts({ residualWindow: 10 });
  assert.equal(t.residual[at(-10)] >>> 0, grey(0));
  assert.equal(t.residual[at(0)] >>> 0, grey(127));
  assert.equal(t.residual[at(10)] >>> 0, grey(255));
  assert.equal(t.overlayT[at(5)], 0.5);
  assert.equal(t.overlayT[at(-40)], 1);
});

test("without a residual volume only the grey tables are built", () => {
  const tables = makeLuts();
  buildLuts(tables, unit, null, { ww: 102, wc: 51, invert: false, residualWindow: 10 });
  assert.equal(tables.grayLevel[at(102)], 255);
  assert.equal(tables.residual[at(10)], 0);
});

test("the automatic CT window spans percentiles 1-99 of the body, not the air", () => {
  const slice = new Int16Array(3000).fill(-1000);
  for (let i = 0; i < 1000; i++) slice[i] = i % 100;  // body: 0..99, ten each
  assert.deepEqual(autoWindow(slice, unit, "CT"), { ww: 98, wc: 49 });
});

test("other modalities leave out what is darker than a twentieth of the brightest", () => {
  const slice = new Int16Array(3000).fill(10);  // background, below 0.05 × 1000
  for (let i = 0; i < 1000; i++) slice[i] = 901 + (i % 100);
  assert.deepEqual(autoWindow(slice, unit, "MR"), { ww: 98, wc: 950 });
});

test("a slice with hardly any body is windowed whole", () => {
  const slice = new Int16Array(1000).fill(-1000);
  slice[0] = 40;
  assert.deepEqual(autoWindow(slice, unit, "CT"), { ww: 1, wc: -1000 });
});

test("the residual window is three RMS, at least ten quantisation steps", () => {
  assert.equal(residualWindowFor(Int16Array.from([4, -4, 4, -4]), { scale: 1 }), 12);
  assert.equal(residualWindowFor(Int16Array.from([1, -1]), { scale: 0.5 }), 5);
  assert.equal(residualWindowFor(new Int16Array(0), { scale: 0 }), 1e-3);
});

test("painters write each pixel through the tables", () => {
  const t = luts({ residualWindow: 10 });
  const out = new Uint32Array(3);
  paintGray(out, Int16Array.from([0, 51, 102]), t);
  assert.deepEqual([...out], [grey(0), grey(127), grey(255)]);
  paintResidual(out, Int16Array.from([-10, 0, 10]), t);
  assert.deepEqual([...out], [grey(0), grey(127), grey(255)]);
});

test("a blend lies between the original and the denoised image", () => {
  const t = luts({});
  const o = Int16Array.from([0, 102]);
  const d = Int16Array.from([102, 0]);
  const out = new Uint32Array(2);
  paintBlend(out, o, d, 0.5, t);
  assert.deepEqual([...out], [grey(127), grey(127)]);
  paintBlend(out, o, d, 1, t);
  assert.deepEqual([...out], [grey(255), grey(0)]);
  paintBlend(out, o, d, 0, t);
  assert.deepEqual([...out], [grey(0), grey(255)]);
});

test("the overlay is red where noise above the mean was removed, blue below", () => {
  const t = luts({ residualWindow: 10 });
  const out = new Uint32Array(3);
  paintOverlay(out, Int16Array.from([51, 51, 51]), Int16Array.from([0, 10, -10]), 1, t);
  const rgb = (p) => [p & 0xff, (p >>> 8) & 0xff, (p >>> 16) & 0xff];
  assert.deepEqual(rgb(out[0]), [127, 127, 127]);
  assert.deepEqual(rgb(out[1]), [255, 0, 0]);
  assert.deepEqual(rgb(out[2]), [0, 110, 255]);
});
