// Shared helpers for the pages: JSON API calls with the session's CSRF token, formatting.

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api${path}`, {
    method, headers, signal, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail ?? data);
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ISO 8601 in the browser's time zone ("2026-12-01 14:05"), whatever its locale.
export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "—";
  const two = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} `
    + `${two(date.getHours())}:${two(date.getMinutes())}`;
}

export function statusBadge(job) {
  if (!job) return el("span", { class: "badge none" }, "not denoised");
  const badge = el("span", { class: `badge ${job.status}`, dataset: { status: job.status } }, job.status);
  if (job.status === "running" || job.status === "queued") {
    const pct = Math.round((job.progress || 0) * 100);
    return el("span", { class: "progress-cell" }, badge,
      el("progress", { max: "100", value: String(pct), title: job.progress_message || "" }),
      el("span", { class: "small muted" }, `${pct}%`));
  }
  if (job.status === "failed") badge.title = job.error || "";
  return badge;
}

export function verdictBadge(job) {
  const review = job && job.reviews && job.reviews[0];
  if (!review) return el("span", { class: "muted" }, "—");
  return el("span", { class: `badge verdict-${review.verdict}`, title: `${review.reviewer}: ${review.comment}` },
    review.verdict.replace("_", " "), el("span", { class: "small" }, ` α ${review.strength.toFixed(2)}`));
}

export const channel = "BroadcastChannel" in window ? new BroadcastChannel("radiology") : null;
