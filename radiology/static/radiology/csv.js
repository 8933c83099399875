// CSV cells that a spreadsheet opens as text. Pure: no DOM.

// A spreadsheet runs a cell that starts with = + - @ (or a tab or CR) as a formula:
// such text from user names or comments is prefixed with ' so it stays text.
export function csvCell(value) {
  let text = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}
