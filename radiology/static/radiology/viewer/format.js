// Numbers as the viewer prints them. Pure: no DOM.

export function fmt(v, digits = 1) { return Number.isFinite(v) ? v.toFixed(digits) : "—"; }
