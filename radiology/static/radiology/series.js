// Series page: queue a denoise job and follow its progress.
import { api, el, formatTime, statusBadge, verdictBadge } from "./common.js";

const seriesId = document.getElementById("series-meta").dataset.seriesId;
const jobsBody = document.getElementById("jobs");
const form = document.getElementById("denoise-form");
let timer = null;

function jobRow(job) {
  return el("tr", { dataset: { jobId: job.id, status: job.status } },
    el("td", {}, `#${job.id}`),
    el("td", {}, `${job.model.name}:${job.model.version}`,
      el("div", { class: "small mono" }, job.model.weights_sha256.slice(0, 12))),
    el("td", {}, statusBadge(job), job.error ? el("div", { class: "small error" }, job.error) : null),
    el("td", { class: "small" }, job.worker || "—"),
    el("td", { class: "small" }, `${job.requested_by || "—"} · ${formatTime(job.created_at)}`),
    el("td", {}, verdictBadge(job)),
    el("td", {}, job.status === "succeeded"
      ? el("a", { class: "button small primary", href: `/jobs/${job.id}/compare/` }, "Compare") : null),
  );
}

async function refresh() {
  clearTimeout(timer);
  const series = await api(`/series/${seriesId}`);
  const jobs = series.jobs || [];
  jobsBody.replaceChildren(...(jobs.length ? jobs.map(jobRow)
    : [el("tr", {}, el("td", { colspan: "7", class: "muted" }, "Not denoised yet."))]));
  if (jobs.some((j) => ["queued", "running"].includes(j.status))) timer = setTimeout(refresh, 1500);
}

if (form) {
  api("/models").then((models) => {
    const select = document.getElementById("model-select");
    for (const m of models) {
      select.append(el("option", { value: `${m.name}:${m.version}` },
        `${m.name} ${m.version}${m.default ? " (default)" : ""} · ${m.modality}`));
    }
  }).catch(() => {});
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("denoise-message");
    const model = form.elements.model.value || null;
    try {
      const job = await api(`/series/${seriesId}/denoise`, { method: "POST", body: { model } });
      message.textContent = `Job #${job.id} ${job.status}.`;
    } catch (error) {
      message.textContent = error.message;
    }
    refresh();
  });
}
refresh();
