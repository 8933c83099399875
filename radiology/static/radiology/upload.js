// Upload page: files, folders and zips by picker or drag and drop; one XHR per batch with
// per-file progress, then the per-file verdicts from the /api/uploads response.
import { api, channel, csrfToken, el } from "./common.js";

const zone = document.getElementById("dropzone");
const batches = document.getElementById("upload-batches");
const autoDenoise = document.getElementById("auto-denoise");

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 ** 2).toFixed(1)} MB`;
}

function readEntry(entry, prefix = "") {
  if (entry.isFile) {
    return new Promise((resolve, reject) => entry.file(
      (file) => { file.relativePath = prefix + file.name; resolve([file]); }, reject));
  }
  const reader = entry.createReader();
  const readAll = (acc) => new Promise((resolve, reject) => reader.readEntries(async (entries) => {
    if (!entries.length) { resolve(acc); return; }
    const nested = await Promise.all(entries.map((e) => readEntry(e, `${prefix}${entry.name}/`)));
    resolve(readAll(acc.concat(nested.flat())));
  }, reject));
  return readAll([]);
}

async function filesFromDrop(dataTransfer) {
  const entries = [...dataTransfer.items]
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null)).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  return (await Promise.all(entries.map((e) => readEntry(e)))).flat();
}

function rejectionsFor(name, rejected) {
  return rejected.filter((r) => r.name === name || r.name.startsWith(`${name}/`)
    || r.name.startsWith(`${name}:`) || r.name.startsWith(`${name}!`));
}

// Rejections grouped by what went wrong ("invalid UID", "not a DICOM file"), each
// group folded with its files, instead of one line per file in a wall of text.
function rejectionGroups(rejected) {
  const groups = new Map();
  for (const r of rejected) {
    const kind = r.duplicate ? "duplicate (kept once)" : r.reason.split(/[:;(]/)[0].trim().slice(0, 80) || "rejected";
    if (!groups.has(kind)) groups.set(kind, []);
    groups.get(kind).push(r);
  }
  return el("ul", { class: "rejection-groups" }, ...[...groups].map(([kind, items]) =>
    el("li", {}, el("details", {},
      el("summary", {}, `${kind}: ${items.length} file(s)`),
      el("ul", { class: "small" }, ...items.map((r) => el("li", {}, `${r.name}: ${r.reason}`)))))));
}

function upload(files) {
  files = files.filter((f) => f.size > 0 || f.name);
  if (!files.length) return;
  const rows = files.map((file) => {
    const bar = el("progress", { max: "100", value: "0" });
    const state = el("span", { class: "state muted" }, "waiting");
    const tr = el("tr", { class: "file", dataset: { name: file.name } },
      el("td", { class: "name" }, file.relativePath || file.webkitRelativePath || file.name),
      el("td", { class: "small" }, formatBytes(file.size)), el("td", {}, bar), el("td", {}, state));
    return { file, tr, bar, state };
  });
  const summary = el("p", { class: "summary" }, `Uploading ${files.length} file(s)…`);
  const seriesList = el("ul", { class: "series-created" });
  batches.prepend(el("section", { class: "card batch" }, summary,
    el("table", { class: "grid files" },
      el("thead", {}, el("tr", {}, el("th", {}, "File"), el("th", {}, "Size"), el("th", {}, "Progress"), el("th", {}, "Result"))),
      el("tbody", {}, rows.map((r) => r.tr))),
    seriesList));

  const data = new FormData();
  for (const { file } of rows) data.append("files", file, file.name);
  const ends = [];
  let total = 0;
  for (const { file } of rows) { total += file.size; ends.push(total); }

  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/uploads");
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.addEventListener("progress", (event) => {
    // Multipart sends files in order, so bytes sent map onto each file's share.
    const sent = event.lengthComputable ? (event.loaded / event.total) * total : 0;
    rows.forEach((r, i) => {
      const start = i === 0 ? 0 : ends[i - 1];
      const size = Math.max(r.file.size, 1);
      const pct = Math.max(0, Math.min(100, ((sent - start) / size) * 100));
      r.bar.value = pct;
      if (pct > 0 && pct < 100) r.state.textContent = "uploading";
      if (pct >= 100) r.state.textContent = "processing";
    });
  });
  xhr.addEventListener("error", () => {
    summary.textContent = "Upload failed: the server could not be reached. Nothing was stored.";
    summary.className = "summary error";
    rows.forEach((r) => { r.state.textContent = "not sent"; });
  });
  xhr.addEventListener("load", async () => {
    let report = {};
    try { report = JSON.parse(xhr.responseText); } catch { report = { detail: xhr.responseText }; }
    if (xhr.status !== 201) {
      summary.textContent = `Upload refused (${xhr.status}): ${report.detail || "unknown error"}`;
      summary.className = "summary error";
      rows.forEach((r) => { r.state.textContent = "refused"; r.tr.classList.add("rejected"); });
      return;
    }
    const rejected = report.rejected || [];
    let accepted = 0;
    let duplicates = 0;
    for (const r of rows) {
      r.bar.value = 100;
      const mine = rejectionsFor(r.file.name, rejected);
      const whole = mine.some((m) => m.name === r.file.name);
      if (whole && mine.every((m) => m.duplicate)) {
        // The same image again (e.g. a lossless transcode of a stored file): kept
        // once, not an error.
        duplicates += 1;
        r.tr.classList.add("duplicate");
        r.state.replaceChildren(el("span", { class: "badge queued" }, "duplicate"),
          el("div", { class: "reason small" }, mine.map((m) => m.reason).join("; ")));
      } else if (whole) {
        r.tr.classList.add("rejected");
        r.state.replaceChildren(el("span", { class: "badge failed" }, "rejected"),
          el("div", { class: "reason small" }, mine.map((m) => m.reason).join("; ")));
      } else {
        accepted += 1;
        r.tr.classList.add("accepted");
        r.state.replaceChildren(el("span", { class: "badge succeeded" }, "accepted"));
        if (mine.length) {
          r.state.append(el("div", { class: "reason small" },
            mine.map((m) => `${m.name}: ${m.reason}`).join("; ")));
        }
      }
    }
    const created = report.series || [];
    const errors = rejected.filter((m) => !m.duplicate).length;
    summary.textContent = `${accepted} of ${rows.length} file(s) accepted; ${created.length} series; ${errors} rejection(s)${duplicates ? `; ${duplicates} duplicate(s) kept once` : ""}.`;
    summary.after(rejectionGroups(rejected));
    for (const s of created) {
      const item = el("li", { dataset: { seriesId: s.id } },
        el("a", { href: `/series/${s.id}/` }, `${s.modality} ${s.description || s.series_instance_uid}`),
        ` · ${s.shape.join("×")} · ${s.instances} instance(s) `);
      seriesList.append(item);
      // Say so instead of skipping silently: this app's outputs are never denoised
      // again; other DERIVED images (a scanner's MPRs) are, but are processed already.
      if (s.derived) {
        item.append(el("span", { class: "small warn" }, "this app's own output: not denoised again "));
      } else if (s.scanner_derived) {
        item.append(el("span", { class: "small warn" }, "derived images (ImageType DERIVED, e.g. an MPR): processed by the scanner or another tool before; "));
      }
      if (autoDenoise.checked && !s.derived) {
        try {
          const job = await api(`/series/${s.id}/denoise`, { method: "POST", body: {} });
          item.append(el("span", { class: `badge ${job.status}` }, `job #${job.id} ${job.status}`));
        } catch (error) {
          item.append(el("span", { class: "error small" }, error.message));
        }
      }
    }
    if (channel) channel.postMessage({ kind: "uploaded", series: created.map((s) => s.id) });
  });
  xhr.send(data);
}

document.getElementById("file-input").addEventListener("change", (e) => { upload([...e.target.files]); e.target.value = ""; });
document.getElementById("folder-input").addEventListener("change", (e) => { upload([...e.target.files]); e.target.value = ""; });
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", async (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  upload(await filesFromDrop(e.dataTransfer));
});
