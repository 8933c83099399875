// Plane geometry of a stored volume: the size of each plane, the voxel under a
// plane's pixel and a plane's pixels cut out of the int16 volume. Pure: no DOM.
//
// `vol` carries the server's display geometry (dicomio/orientation.py): for each
// plane the viewer cuts ("axial" = one stored z slice, "coronal" = one y row,
// "sagittal" = one x column), the stored axes along its columns and rows, their flips
// into the radiological convention, its label from the geometry and its edge letters.
// Volumes are stored z, y, x; `vol.shape` and `vol.spacing` are in that order.

export function planeGeometry(vol, plane) { return vol.display.planes[plane]; }

export function planeDims(vol, plane) {
  const g = planeGeometry(vol, plane);
  return {
    w: vol.shape[g.col_axis], h: vol.shape[g.row_axis], depth: vol.shape[g.through_axis],
    aspect: vol.spacing[g.row_axis] / vol.spacing[g.col_axis],
  };
}

// The stored [z, y, x] of the pixel at (col, row) of slice `index` of `plane`.
export function voxelOf(vol, plane, index, col, row) {
  const g = planeGeometry(vol, plane);
  const v = [0, 0, 0];
  v[g.through_axis] = index;
  v[g.col_axis] = g.col_flip ? vol.shape[g.col_axis] - 1 - col : col;
  v[g.row_axis] = g.row_flip ? vol.shape[g.row_axis] - 1 - row : row;
  return v;
}

// Slice `index` of `plane` from `volume.data` as rows of pixels in display order: a
// view into the data for an unflipped stored slice, a copy otherwise.
export function extract(vol, volume, plane, index) {
  const [, ny, nx] = vol.shape;
  const data = volume.data;
  const g = planeGeometry(vol, plane);
  if (g.through_axis === 0 && g.col_axis === 2 && !g.col_flip && !g.row_flip) {
    return data.subarray(index * ny * nx, (index + 1) * ny * nx);
  }
  const { w, h } = planeDims(vol, plane);
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
export function planeFor(display, anatomical) {
  const planes = display ? display.planes : null;
  if (planes) for (const [name, g] of Object.entries(planes)) if (g.plane === anatomical) return name;
  return anatomical;
}

// Where a plane of `dims` lands on a canvas of cw × ch device pixels: fitted and
// centred, then zoomed and panned (pan in CSS pixels). s and sy are device pixels per
// image column and row (rows are stretched by the plane's aspect).
export function fitTransform(dims, cw, ch, { zoom, panX, panY }, dpr) {
  const { w, h, aspect } = dims;
  const base = Math.min(cw / w, ch / (h * aspect));
  const s = base * zoom;
  const ox = (cw - w * s) / 2 + panX * dpr;
  const oy = (ch - h * aspect * s) / 2 + panY * dpr;
  return { s, sy: s * aspect, ox, oy, w, h };
}
