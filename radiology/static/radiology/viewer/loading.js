// Loading a series and its job's volumes: int16 slabs fetched four at a time, the
// shown slice's first, each drawn as soon as it is all there.
import { addScanPresets, applyPreset, setResidualWindow, setupPlanes, updateRoiStats } from "./controls.js";
import { $, modality, root, seriesId } from "./dom.js";
import { extract } from "./geometry.js";
import { scheduleRender } from "./render.js";
import { PRESETS, reformatsAvailable, state, vol } from "./state.js";
import { renderStudy } from "./ui/panel.js";
import { slabOrder, slicesPerSlab } from "./volume.js";
import { residualWindowFor } from "./window.js";

// Volumes arrive in slabs of about this many bytes.
const SLAB_BYTES = 4 * 1024 * 1024;

async function fetchSlab(url, target, z0, z1, planeVoxels) {
  const response = await fetch(`${url}?z0=${z0}&z1=${z1}`, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  const buffer = await response.arrayBuffer();
  const scale = Number(response.headers.get("X-Volume-Scale"));
  const offset = Number(response.headers.get("X-Volume-Offset"));
  if (!target.data) {
    target.scale = scale;
    target.offset = offset;
    target.data = new Int16Array(vol.shape[0] * planeVoxels);
  }
  target.data.set(new Int16Array(buffer), z0 * planeVoxels);
}

// Windows are measured on the shown slice: the residual's from its RMS, then the
// scan's own first window, else a CT preset, else the automatic one.
function initialWindows() {
  setResidualWindow(residualWindowFor(extract(vol, vol.res, "axial", state.index.axial), vol.res));
  if ("scan0" in PRESETS) applyPreset("scan0");
  else if (modality === "CT") applyPreset("soft");
  else applyPreset("auto");
}

export async function loadVolumes(job) {
  const [nz, ny, nx] = vol.shape;
  const planeVoxels = ny * nx;
  const per = slicesPerSlab(SLAB_BYTES, planeVoxels);
  vol.loaded = new Uint8Array(nz);
  vol.orig = { data: null, scale: 1, offset: 0 };
  vol.den = { data: null, scale: 1, offset: 0 };
  vol.res = { data: null, scale: 1, offset: 0 };
  const sources = [[`/api/series/${seriesId}/volume`, vol.orig]];
  if (job) {
    sources.push(
      [`/api/jobs/${job.id}/volume/reconstruction`, vol.den],
      [`/api/jobs/${job.id}/volume/residual`, vol.res],
    );
  } else {
    // The hidden panes show the original and a zero residual: every path that
    // reads them stays valid, and nothing is fetched for them.
    vol.den = vol.orig;
    vol.res = { data: new Int16Array(nz * planeVoxels), scale: 1, offset: 0 };
  }
  vol.sourceCount = sources.length;
  const queue = slabOrder(nz, state.index.axial, per).flatMap(([z0, z1]) => sources.map((s) => [s, z0, z1]));
  const total = queue.length;
  let done = 0;
  let lutsBuilt = false;
  const worker = async () => {
    while (queue.length) {
      const [[url, target], z0, z1] = queue.shift();
      await fetchSlab(url, target, z0, z1, planeVoxels);
      for (let z = z0; z < z1; z++) vol.loaded[z] += 1;
      done += 1;
      $("load-label").textContent = done < total ? `loading ${Math.round((done / total) * 100)}%` : "";
      // Windows are measured on the shown slice, so only once all three of its slabs
      // are here (a slow residual slab would otherwise give a window of ~0).
      if (!lutsBuilt && vol.loaded[state.index.axial] >= sources.length) {
        lutsBuilt = true;
        initialWindows();
      }
      if (z0 <= state.index.axial && state.index.axial < z1) { updateRoiStats(); scheduleRender(); }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  vol.complete = true;
  for (const b of document.querySelectorAll("[data-plane]")) b.disabled = b.dataset.plane !== "axial" && !reformatsAvailable();
  root.dataset.loaded = "1";
  scheduleRender();
}

export function setupSeries(series) {
  renderStudy(series);
  vol.shape = series.shape;
  vol.spacing = series.spacing;
  vol.display = series.display;
  vol.series = series;
  setupPlanes(series.display);
  addScanPresets(series.windows);
  state.index.axial = Math.floor(vol.shape[0] / 2);
  state.index.coronal = Math.floor(vol.shape[1] / 2);
  state.index.sagittal = Math.floor(vol.shape[2] / 2);
}
