// Slab order: the shown slice's slab first, then outwards, every slice once.
import assert from "node:assert/strict";
import test from "node:test";

import { slabOrder, slicesPerSlab } from "../../radiology/static/radiology/viewer/volume.js";

test("slabs start at the shown slice and alternate outwards", () => {
  assert.deepEqual(slabOrder(12, 6, 2), [[6, 8], [8, 10], [4, 6], [10, 12], [2, 4], [0, 2]]);
  assert.deepEqual(slabOrder(5, 0, 2), [[0, 2], [2, 4], [4, 5]]);
  assert.deepEqual(slabOrder(5, 4, 2), [[4, 5], [2, 4], [0, 2]]);
});

test("slabs cover every slice exactly once", () => {
  for (const [nz, start, per] of [[1, 0, 8], [37, 18, 8], [300, 299, 8], [10, 3, 100]]) {
    const seen = slabOrder(nz, start, per).flatMap(([z0, z1]) => Array.from({ length: z1 - z0 }, (_, i) => z0 + i));
    assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: nz }, (_, i) => i));
  }
});

test("a slab holds whole slices of about the byte budget, at least one", () => {
  assert.equal(slicesPerSlab(4 * 1024 * 1024, 512 * 512), 8);
  assert.equal(slicesPerSlab(4 * 1024 * 1024, 2048 * 2048), 1);
});
