// How a volume is fetched: in slabs of whole slices, nearest the shown slice first.
// Pure: no DOM.

// Whole slices of planeVoxels int16 values per slab of about slabBytes (at least one).
export function slicesPerSlab(slabBytes, planeVoxels) {
  return Math.max(1, Math.floor(slabBytes / (planeVoxels * 2)));
}

// The [z0, z1) slabs of nz slices, `per` slices each, in fetch order: the slab holding
// slice `start`, then outwards from it, alternately the next one after and before.
export function slabOrder(nz, start, per) {
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
