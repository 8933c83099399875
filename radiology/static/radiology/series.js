// Series page: queue a denoise job and follow its progress.
import { api, el, formatTime, statusBadge, verdictBadge } from "./common.js";

const meta = document.getElementById("series-meta");
const seriesId = meta.dataset.seriesId;
const modality = (meta.dataset.modality || "").toUpperCase();
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
    // The server refuses a model of another modality unless asked explicitly;
    // say so before the click rather than after it.
    if (!models.some((m) => m.modality.toUpperCase() === modality)) {
      const note = document.getElementById("modality-note");
      note.textContent = `No ${modality || "matching"} model is registered: the `
        + `registered models are for ${[...new Set(models.map((m) => m.modality))].join(", ")} `
        + "and would alter these images, so denoising is refused unless you run "
        + "one anyway (the override is recorded in the provenance).";
      note.hidden = false;
      document.getElementById("mismatch-label").hidden = false;
    }
  }).catch(() => {});
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("denoise-message");
    const model = form.elements.model.value || null;
    const params = form.elements.allow_modality_mismatch.checked
      ? { allow_modality_mismatch: true } : null;
    try {
      const job = await api(`/series/${seriesId}/denoise`, { method: "POST", body: { model, params } });
      message.textContent = `Job #${job.id} ${job.status}.`;
    } catch (error) {
      message.textContent = error.message;
    }
    refresh();
  });
}
const finetuneForm = document.getElementById("finetune-form");
if (finetuneForm) {
  finetuneForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("finetune-message");
    const minutes = Number(finetuneForm.elements.minutes.value) || 10;
    try {
      await api("/models/finetune", { method: "POST", body: { series: [Number(seriesId)], minutes } });
      message.textContent = `Queued: ${minutes} min of training, then the decision (see the audit log).`;
    } catch (error) {
      message.textContent = error.message;
    }
  });
}
refresh();
