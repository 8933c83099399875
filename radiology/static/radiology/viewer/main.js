// Compare viewer: original | denoised | residual, rendered on canvas from int16 volumes
// fetched once; scrolling, window/level, blending and ROI statistics never call the server.
// The compare page loads this module; it exports the viewer's state for whoever imports it.
import { api } from "../common.js";
import { resizeCanvases, setMode, setTool } from "./controls.js";
import { $, jobId, originalOnly, panes, root, seriesId } from "./dom.js";
import { loadVolumes, setupSeries } from "./loading.js";
import { scheduleRender } from "./render.js";
import { viewer } from "./state.js";
import { bindControls } from "./tools.js";
import { renderConcerns, renderFlags, renderProvenance, renderReviews } from "./ui/panel.js";

viewer.render = scheduleRender;
export { viewer };

async function startOriginalOnly() {
  const series = await api(`/series/${seriesId}`);
  setupSeries(series);
  panes[0].label.textContent = "Original";
  resizeCanvases();
  await loadVolumes(null);
}

async function start() {
  bindControls();
  setMode("side");
  setTool("wl");
  for (const b of document.querySelectorAll("[data-plane]")) b.disabled = b.dataset.plane !== "axial";
  if (originalOnly) return startOriginalOnly();
  let job = await api(`/jobs/${jobId}`);
  while (["queued", "running"].includes(job.status)) {
    $("load-label").textContent = `job ${job.status} ${Math.round(job.progress * 100)}%`;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    job = await api(`/jobs/${jobId}`);
  }
  viewer.job = job;
  renderProvenance(job);
  renderReviews(job);
  renderConcerns(job);
  if (job.status !== "succeeded") {
    $("load-label").textContent = `job ${job.status}: ${job.error || "no outputs to compare"}`;
    return;
  }
  const series = await api(`/series/${seriesId}`);
  setupSeries(series);
  renderFlags(job.metrics || {});
  resizeCanvases();
  await loadVolumes(job);
}

start().catch((error) => {
  $("load-label").textContent = `Could not load: ${error.message}`;
  root.dataset.error = error.message;
});
