// Plane geometry: sizes, voxel lookup and slice extraction for every plane and flip.
import assert from "node:assert/strict";
import test from "node:test";

import {
  extract, fitTransform, planeDims, planeFor, voxelOf,
} from "../../radiology/static/radiology/viewer/geometry.js";

// A 3 × 4 × 5 (z, y, x) volume whose value is its own flat index, with planes as the
// server describes an axial acquisition: coronal and sagittal shown head up, the
// sagittal also mirrored.
function volume() {
  const shape = [3, 4, 5];
  const data = Int16Array.from({ length: 60 }, (_, i) => i);
  const planes = {
    axial: { plane: "axial", through_axis: 0, col_axis: 2, row_axis: 1, col_flip: false, row_flip: false },
    coronal: { plane: "coronal", through_axis: 1, col_axis: 2, row_axis: 0, col_flip: false, row_flip: true },
    sagittal: { plane: "sagittal", through_axis: 2, col_axis: 1, row_axis: 0, col_flip: true, row_flip: true },
  };
  return { shape, spacing: [2.5, 0.5, 0.8], display: { planes }, orig: { data, scale: 1, offset: 0 } };
}

test("plane sizes follow the plane's column and row axes", () => {
  const vol = volume();
  assert.deepEqual(planeDims(vol, "axial"), { w: 5, h: 4, depth: 3, aspect: 0.5 / 0.8 });
  assert.deepEqual(planeDims(vol, "coronal"), { w: 5, h: 3, depth: 4, aspect: 2.5 / 0.8 });
  assert.deepEqual(planeDims(vol, "sagittal"), { w: 4, h: 3, depth: 5, aspect: 2.5 / 0.5 });
});

test("voxelOf undoes the plane's flips", () => {
  const vol = volume();
  assert.deepEqual(voxelOf(vol, "axial", 2, 1, 3), [2, 3, 1]);
  // Coronal row 0 is the top of the screen: the last stored slice.
  assert.deepEqual(voxelOf(vol, "coronal", 1, 4, 0), [2, 1, 4]);
  // Sagittal column 0 is the last y row; row 2 (bottom) the first slice.
  assert.deepEqual(voxelOf(vol, "sagittal", 3, 0, 2), [0, 3, 3]);
});

for (const plane of ["axial", "coronal", "sagittal"]) {
  test(`extract of a ${plane} slice holds the voxel voxelOf names at every pixel`, () => {
    const vol = volume();
    const [, ny, nx] = vol.shape;
    const { w, h, depth } = planeDims(vol, plane);
    for (let index = 0; index < depth; index++) {
      const slice = extract(vol, vol.orig, plane, index);
      assert.equal(slice.length, w * h);
      for (let r = 0; r < h; r++) {
        for (let c = 0; c < w; c++) {
          const [z, y, x] = voxelOf(vol, plane, index, c, r);
          assert.equal(slice[r * w + c], z * ny * nx + y * nx + x, `${plane} ${index} (${c}, ${r})`);
        }
      }
    }
  });
}

test("an unflipped axial slice is a view of the volume, not a copy", () => {
  const vol = volume();
  const slice = extract(vol, vol.orig, "axial", 1);
  assert.equal(slice.buffer, vol.orig.data.buffer);
  assert.deepEqual([...slice.slice(0, 3)], [20, 21, 22]);
});

test("a flipped axial slice is mirrored", () => {
  const vol = volume();
  vol.display.planes.axial = { ...vol.display.planes.axial, col_flip: true, row_flip: true };
  const slice = extract(vol, vol.orig, "axial", 0);
  assert.deepEqual([...slice.slice(0, 5)], [19, 18, 17, 16, 15]);
  assert.deepEqual([...slice.slice(15)], [4, 3, 2, 1, 0]);
});

test("planeFor picks the plane the geometry labels so", () => {
  const planes = {
    axial: { plane: "coronal" }, coronal: { plane: "axial" }, sagittal: { plane: "sagittal" },
  };
  assert.equal(planeFor({ planes }, "coronal"), "axial");
  assert.equal(planeFor({ planes }, "axial"), "coronal");
  assert.equal(planeFor({ planes }, "sagittal"), "sagittal");
  // Before the series is loaded, or for a label no plane has, the name itself.
  assert.equal(planeFor(undefined, "coronal"), "coronal");
  assert.equal(planeFor({ planes: { axial: { plane: "oblique" } } }, "axial"), "axial");
});

test("fitTransform fits, centres, zooms and pans", () => {
  const dims = { w: 100, h: 50, aspect: 2 };
  const fitted = fitTransform(dims, 400, 300, { zoom: 1, panX: 0, panY: 0 }, 1);
  // Height limits: 50 rows × 2 stretched into 300 px.
  assert.deepEqual(fitted, { s: 3, sy: 6, ox: 50, oy: 0, w: 100, h: 50 });
  const moved = fitTransform(dims, 400, 300, { zoom: 2, panX: 10, panY: -5 }, 2);
  assert.deepEqual(moved, { s: 6, sy: 12, ox: -100 + 20, oy: -150 - 10, w: 100, h: 50 });
});
