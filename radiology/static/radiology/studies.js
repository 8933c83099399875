// Studies list: filters, status badges, and live job progress by polling the API.
import { api, channel, el, formatTime, statusBadge, verdictBadge } from "./common.js";

const form = document.getElementById("filters");
const body = document.getElementById("studies");
const updated = document.getElementById("studies-updated");
let timer = null;
let inFlight = null;

function query() {
  const data = new FormData(form);
  const params = new URLSearchParams();
  for (const key of ["search", "modality", "status"]) {
    const value = (data.get(key) || "").trim();
    if (value) params.set(key, value);
  }
  return params;
}

function inDateRange(series) {
  const since = form.elements.since.value;
  const until = form.elements.until.value;
  const day = (series.created_at || "").slice(0, 10);
  return (!since || day >= since) && (!until || day <= until);
}

function row(series) {
  const job = series.latest_job;
  const study = series.study || {};
  return el("tr", { dataset: { seriesId: series.id, status: job ? job.status : "none" } },
    el("td", { class: "patient" }, study.patient_display || "—",
      study.patient_name && study.patient_id
        ? el("div", { class: "small muted" }, study.patient_id) : null),
    el("td", { class: "study" }, study.description || study.study_instance_uid || "—",
      study.study_date
        ? el("div", { class: "small muted" }, study.study_date_iso) : null),
    el("td", {},
      el("img", { class: "thumb", loading: "lazy", alt: "", src: `/api/series/${series.id}/thumbnail?size=48` }),
      el("a", { href: `/series/${series.id}/` }, series.description || series.series_instance_uid)),
    el("td", {}, series.modality),
    el("td", { class: "small" }, (series.shape || []).join("×")),
    el("td", { class: "small" }, formatTime(series.created_at)),
    el("td", {}, statusBadge(job)),
    el("td", {}, verdictBadge(job)),
    el("td", {}, job && job.status === "succeeded"
      ? el("a", { class: "button small", href: `/jobs/${job.id}/compare/` }, "Compare")
      : el("a", { class: "button small", href: `/series/${series.id}/view/`, title: "The original alone" }, "View")),
  );
}

async function refresh() {
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  clearTimeout(timer);
  let active = false;
  try {
    const rows = (await api(`/series?${query()}`, { signal: inFlight.signal })).filter(inDateRange);
    active = rows.some((s) => s.latest_job && ["queued", "running"].includes(s.latest_job.status));
    body.replaceChildren(...(rows.length ? rows.map(row)
      : [el("tr", {}, el("td", { colspan: "9", class: "muted" }, "No series match. Upload DICOM to begin."))]));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}${active ? " · jobs running, refreshing every 2 s" : ""}`;
  } catch (error) {
    if (error.name === "AbortError") return;
    updated.textContent = `Could not load the list (${error.message}); retrying.`;
  }
  timer = setTimeout(refresh, active ? 2000 : 5000);
}

let debounce = null;
form.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(refresh, 250); });
form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
if (channel) channel.addEventListener("message", refresh);
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
refresh();
