// The compare page's elements and what its markup says about the series and job.
export const root = document.getElementById("viewer");
export const jobId = root.dataset.jobId;
// Without a job (series/<id>/view/) the viewer shows the original alone.
export const originalOnly = !jobId;
export const seriesId = root.dataset.seriesId;
export const modality = root.dataset.modality;
export const unit = modality === "CT" ? " HU" : "";

export const panesEl = document.getElementById("panes");
export const panes = [...panesEl.querySelectorAll(".pane")].map((figure) => ({
  name: figure.dataset.pane, figure, canvas: figure.querySelector("canvas"),
  readout: figure.querySelector(".readout"), label: figure.querySelector(".label"),
  layers: [document.createElement("canvas"), document.createElement("canvas")], images: [null, null],
}));
export const $ = (id) => document.getElementById(id);
