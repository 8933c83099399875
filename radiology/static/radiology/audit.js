// Audit log: filtered reads of /api/audit (each read is audited by the API) and CSV export.
import { api, el, formatTime } from "./common.js";
import { csvCell } from "./csv.js";

const form = document.getElementById("audit-filters");
const body = document.getElementById("audit");
let events = [];

for (const [key, value] of new URLSearchParams(location.search)) {
  if (form.elements[key]) form.elements[key].value = value;
}

function params() {
  const out = new URLSearchParams({ limit: "500" });
  for (const key of ["action", "actor", "target_type", "target_id"]) {
    const value = form.elements[key].value.trim();
    if (value) out.set(key, value);
  }
  if (form.elements.since.value) out.set("since", `${form.elements.since.value}T00:00:00`);
  if (form.elements.until.value) {
    const until = new Date(`${form.elements.until.value}T00:00:00`);
    until.setDate(until.getDate() + 1);
    out.set("until", until.toISOString().slice(0, 19));
  }
  return out;
}

// An object inside a list (a measurement) as "key value" pairs, not JSON.
function pairsText(object) {
  return Object.entries(object).map(([k, v]) => `${k} ${v && typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

// An event's details as "name: value" lines (nested keys joined with dots, lists
// with commas, long values cut); the whole JSON stays in the tooltip and the CSV.
function flatten(value, prefix, out) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else {
    const text = Array.isArray(value)
      ? value.length === 0 ? "none" : value.map((v) => (v && typeof v === "object" ? pairsText(v) : String(v))).join("; ")
      : value === null || value === undefined ? "—" : String(value);
    out.push([prefix, text]);
  }
  return out;
}

function details(extra) {
  const pairs = flatten(extra || {}, "", []);
  if (!pairs.length) return "";
  return el("dl", { class: "kv", title: JSON.stringify(extra, null, 1) },
    pairs.flatMap(([key, text]) => [el("dt", {}, key), el("dd", {}, text.length > 160 ? `${text.slice(0, 157)}…` : text)]));
}

async function load() {
  events = await api(`/audit?${params()}`);
  body.replaceChildren(...events.map((e) => el("tr", { dataset: { action: e.action } },
    el("td", {}, e.id), el("td", { class: "small" }, formatTime(e.created_at)), el("td", {}, e.actor),
    el("td", {}, el("span", { class: `badge action` }, e.action)),
    el("td", {}, e.target_type ? `${e.target_type}:${e.target_id}` : "—"),
    el("td", { class: "small details" }, details(e.extra_data)),
    el("td", { class: "mono small", title: e.hash }, e.hash.slice(0, 10)))));
  if (!events.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No events match.")));
}

document.getElementById("csv-export").addEventListener("click", () => {
  const columns = ["id", "created_at", "actor", "action", "target_type", "target_id", "study", "extra_data", "prev_hash", "hash"];
  const lines = [columns.join(",")].concat(events.map((e) => columns.map((c) => csvCell(e[c])).join(",")));
  const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `audit-${new Date().toISOString().slice(0, 19)}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});
form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
load();
