// The side panel: the job's provenance, flagged slices, the study's other series,
// the reviews and the verdict form (with the ROI and length measurements attached).
import { api, el, formatTime } from "../../common.js";
import { setPlane, setSlice } from "../controls.js";
import { $, jobId, root, unit } from "../dom.js";
import { fmt } from "../format.js";
import { flaggedSet, geometry, noiseBySlice, state, viewer, vol } from "../state.js";

export function renderFlags(metrics) {
  const marks = $("slice-marks");
  marks.replaceChildren();
  const nz = vol.shape[0];
  const perSlice = metrics.per_slice || {};
  noiseBySlice.splice(0, noiseBySlice.length, ...(perSlice.noise_sd_before || []).map(Number));
  for (const entry of metrics.flagged_slices || []) {
    const index = typeof entry === "number" ? entry : entry.index ?? entry.slice;
    if (!Number.isInteger(index) || index < 0 || index >= nz) continue;
    flaggedSet.add(index);
    const score = (perSlice.structure_score || [])[index];
    const anatomy = (perSlice.anatomy_correlation || [])[index];
    const detail = [
      Number.isFinite(score) ? `edge energy ${fmt(score, 2)} (limit ${metrics.structure_threshold})` : null,
      Number.isFinite(anatomy) ? `anatomy r ${fmt(anatomy, 2)} (limit ${metrics.anatomy_threshold})` : null,
    ].filter(Boolean).join(", ");
    const mark = el("button", {
      type: "button", class: "mark", dataset: { slice: index },
      title: `slice ${index + 1}: structure in the residual${detail ? ` (${detail})` : ""}`,
      onclick: () => { setPlane("axial"); setSlice(index); },
    });
    // Through the CSSOM, which the Content-Security-Policy allows (no inline style).
    mark.style.left = `${nz > 1 ? (index / (nz - 1)) * 100 : 50}%`;
    marks.append(mark);
  }
  root.dataset.flagged = String(flaggedSet.size);
}

function findKey(object, key, depth = 0) {
  if (!object || typeof object !== "object" || depth > 3) return undefined;
  if (key in object && typeof object[key] !== "object") return object[key];
  for (const value of Object.values(object)) {
    const found = findKey(value, key, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

export function renderProvenance(job) {
  const prov = job.provenance || {};
  const list = $("prov-list");
  const timings = Object.entries(job.timings_s || {})
    .map(([k, v]) => `${k} ${Number(v).toFixed(2)} s`).join(", ");
  const metrics = job.metrics || {};
  const rows = [
    ["Model", `${job.model.name}`],
    ["Version", job.model.version],
    ["Weights", el("span", { class: "mono", title: job.model.weights_sha256 }, job.model.weights_sha256.slice(0, 12))],
    ["Params", el("span", { class: "mono small" }, JSON.stringify(job.params))],
    ["Device", findKey(prov, "device") ?? "—"],
    ["Precision", findKey(prov, "precision") ?? job.params.precision ?? "—"],
    ["Timings", timings || "—"],
    ["Worker", job.worker || "—"],
    ["Code", (findKey(prov, "git_commit") || "—").toString().slice(0, 12)],
    ["Noise SD", metrics.noise_sd_before !== undefined
      ? `${fmt(metrics.noise_sd_before)} → ${fmt(metrics.noise_sd_after)}${unit}` : "—"],
    ["Flagged", `${(metrics.flagged_slices || []).length} slice(s)`],
  ];
  if ((job.warnings || []).length) rows.push(["Warnings", el("span", { class: "warn" }, job.warnings.join("; "))]);
  list.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("prov-json").textContent = JSON.stringify(prov, null, 2);
  $("audit-link").href = `${root.dataset.auditUrl}?target_type=denoisejob&target_id=${job.id}`;
}

export function renderConcerns(job) {
  const note = $("verdict-concerns");
  const concerns = job.review_concerns || [];
  note.hidden = !concerns.length;
  note.textContent = concerns.length ? `Accepting needs a comment: ${concerns.join("; ")}.` : "";
}

export function renderReviews(job) {
  $("reviews").replaceChildren(...job.reviews.map((r) => el("li", {},
    el("span", { class: `badge verdict-${r.verdict}` }, r.verdict.replace("_", " ")),
    ` ${r.reviewer} · α ${r.strength.toFixed(2)} · ${formatTime(r.created_at)}`,
    r.comment ? el("div", { class: "small" }, r.comment) : null,
    ...(r.measurements || []).map((m) => el("div", { class: "small muted measurement" }, describeMeasurement(m))))));
  // A reviewer who has given a verdict changes it explicitly; every verdict stays.
  const mine = job.reviews.some((r) => r.reviewer === root.dataset.user);
  $("verdict-submit").textContent = mine ? "Change verdict" : "Record verdict";
}

// The study's series as thumbnails: each opens its latest comparison, or the
// original alone when it has none.
export function renderStudy(series) {
  const others = series.study_series || [];
  $("study-card").hidden = others.length < 2;
  $("study-series").replaceChildren(...others.map((s) => el("a", {
    href: s.compare_job ? `/jobs/${s.compare_job}/compare/` : `/series/${s.id}/view/`,
    class: s.id === series.id ? "current" : "", title: s.description, dataset: { seriesId: s.id },
  }, el("img", { loading: "lazy", alt: "", src: `/api/series/${s.id}/thumbnail?size=96` }),
  el("span", {}, `${s.modality} ${s.description}`))));
}

// The ROI's statistics (original, denoised, residual) and the length, as recorded
// with a verdict: numbers rounded to what the table shows.
function currentMeasurements() {
  const out = [];
  const roi = viewer.roiStats;
  if (roi) {
    const keep = ["n", "alpha", "areaMm2", "widthMm", "heightMm", "origMean", "origSd", "origMin", "origMax",
      "denMean", "denSd", "denMin", "denMax", "resMean", "resSd", "resMin", "resMax"];
    const item = { kind: roi.kind, plane: geometry(roi.plane).label, index: roi.index };
    for (const k of keep) if (Number.isFinite(roi[k])) item[k] = Math.round(roi[k] * 100) / 100;
    out.push(item);
  }
  if (viewer.length) out.push({ ...viewer.length, lengthMm: Math.round(viewer.length.lengthMm * 100) / 100 });
  return out;
}

function describeMeasurement(m) {
  if (m.kind === "length") return `length ${fmt(m.lengthMm)} mm (${m.plane} ${m.index + 1})`;
  return `${m.kind} ${fmt(m.areaMm2)} mm² on ${m.plane} ${m.index + 1}: original ${fmt(m.origMean)} ± ${fmt(m.origSd)}, denoised ${fmt(m.denMean)} ± ${fmt(m.denSd)}, residual ${fmt(m.resMean)} ± ${fmt(m.resSd)}${unit}`;
}

export async function submitVerdict(event) {
  event.preventDefault();
  const form = event.target;
  const message = $("verdict-message");
  const verdict = form.elements.verdict.value;
  if (!verdict) { message.textContent = "Choose accept, reject or needs review."; message.className = "small error"; return; }
  const concerns = (viewer.job && viewer.job.review_concerns) || [];
  if (verdict === "accept" && concerns.length && !form.elements.comment.value.trim()) {
    message.textContent = `Accepting needs a comment saying why: ${concerns.join("; ")}.`;
    message.className = "small error";
    form.elements.comment.focus();
    return;
  }
  const measurements = form.elements.attach.checked ? currentMeasurements() : [];
  try {
    const review = await api(`/jobs/${jobId}/review`, {
      method: "POST", body: { verdict, comment: form.elements.comment.value, strength: state.alpha, measurements },
    });
    const changed = $("verdict-submit").textContent === "Change verdict" ? " (changed; the earlier verdict stays in the log)" : "";
    message.textContent = `Recorded: ${review.verdict.replace("_", " ")} by ${review.reviewer} at α ${review.strength.toFixed(2)}${changed}.`;
    message.className = "small ok";
    form.reset();
    const job = await api(`/jobs/${jobId}`);
    renderReviews(job);
  } catch (error) {
    message.textContent = error.message;
    message.className = "small error";
  }
}
