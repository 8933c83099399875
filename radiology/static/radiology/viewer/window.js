// Window/level maths: stored int16 values to display grey levels through look-up
// tables, the automatic window of a slice, the residual's window and the painters
// that apply the tables to a slice. Pure: no DOM.

// Stored values are int16 q; a volume's real values (HU on CT) are offset + scale * q.
export function value(volume, q) { return volume.offset + volume.scale * q; }

// One entry per int16 value (index q + 32768): ABGR pixels for the grey and residual
// images, the grey level alone and the overlay's strength.
export function makeLuts() {
  return {
    gray: new Uint32Array(65536), grayLevel: new Uint8Array(65536),
    residual: new Uint32Array(65536), overlayT: new Float32Array(65536),
  };
}

// Fills `luts` for a window (ww, wc), optionally inverted, on the original's scale;
// with a residual volume also the residual map from -residualWindow (black) to
// +residualWindow (white).
export function buildLuts(luts, orig, res, { ww, wc, invert, residualWindow }) {
  const { scale, offset } = orig;
  const low = wc - ww / 2;
  const k = 255 / ww;
  for (let i = 0; i < 65536; i++) {
    let g = (offset + scale * (i - 32768) - low) * k;
    g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
    if (invert) g = 255 - g;
    luts.grayLevel[i] = g;
    luts.gray[i] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
  if (res) {
    const rw = residualWindow;
    for (let i = 0; i < 65536; i++) {
      const v = res.scale * (i - 32768);
      let g = ((v + rw) / (2 * rw)) * 255;
      g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
      luts.residual[i] = 0xff000000 | (g << 16) | (g << 8) | g;
      const t = Math.abs(v) / rw;
      luts.overlayT[i] = t > 1 ? 1 : t;
    }
  }
}

// Percentiles 1-99 of the body as { ww, wc }: air outside it (below -500 HU on CT,
// below a twentieth of the brightest on other modalities) would widen the window.
export function autoWindow(slice, orig, modality) {
  const hist = new Uint32Array(65536);
  for (let i = 0; i < slice.length; i++) hist[slice[i] + 32768] += 1;
  let top = 65535;
  while (top > 0 && !hist[top]) top--;
  const air = modality === "CT" ? -500 : 0.05 * value(orig, top - 32768);
  let first = 0;
  while (first < 65535 && value(orig, first - 32768) < air) first++;
  let body = 0;
  for (let i = first; i < 65536; i++) body += hist[i];
  if (body < slice.length * 0.05) { first = 0; body = slice.length; }  // hardly any body
  for (let i = 0; i < first; i++) hist[i] = 0;
  const lowCount = body * 0.01;
  const highCount = body * 0.99;
  let acc = 0; let lo = 0; let hi = 65535;
  for (let i = 0; i < 65536; i++) { acc += hist[i]; if (acc >= lowCount) { lo = i; break; } }
  acc = 0;
  for (let i = 0; i < 65536; i++) { acc += hist[i]; if (acc >= highCount) { hi = i; break; } }
  const vlo = value(orig, lo - 32768);
  const vhi = value(orig, hi - 32768);
  return { ww: Math.max(vhi - vlo, 1), wc: (vhi + vlo) / 2 };
}

// The residual's first window: three RMS of the slice's residual, at least ten of its
// quantisation steps (a clean slice would otherwise show its rounding noise).
export function residualWindowFor(slice, res) {
  let sq = 0;
  for (let i = 0; i < slice.length; i++) { const v = res.scale * slice[i]; sq += v * v; }
  return Math.max(3 * Math.sqrt(sq / Math.max(slice.length, 1)), res.scale * 10, 1e-3);
}

export function paintGray(out, src, luts) {
  const lut = luts.gray;
  for (let i = 0, n = src.length; i < n; i++) out[i] = lut[src[i] + 32768];
}

// The original blended towards the denoised image by alpha (0 original, 1 denoised).
export function paintBlend(out, o, d, alpha, luts) {
  if (alpha >= 1) return paintGray(out, d, luts);
  if (alpha <= 0) return paintGray(out, o, luts);
  const lut = luts.gray;
  for (let i = 0, n = o.length; i < n; i++) {
    const q = o[i] + alpha * (d[i] - o[i]);
    out[i] = lut[(q + 32768.5) | 0];
  }
}

export function paintResidual(out, r, luts) {
  const lut = luts.residual;
  for (let i = 0, n = r.length; i < n; i++) out[i] = lut[r[i] + 32768];
}

export function paintOverlay(out, o, r, opacity, luts) {
  // Signed heat map: red where the original is brighter than the denoised image (noise
  // removed above the mean), blue where darker; strength grows with |residual|.
  const { grayLevel, overlayT } = luts;
  for (let i = 0, n = o.length; i < n; i++) {
    const g = grayLevel[o[i] + 32768];
    const q = r[i] + 32768;
    const t = overlayT[q] * opacity;
    let red; let green; let blue;
    if (q >= 32768) { red = g + (255 - g) * t; green = g * (1 - t); blue = g * (1 - t); }
    else { red = g * (1 - t); green = g + (110 - g) * t; blue = g + (255 - g) * t; }
    out[i] = 0xff000000 | ((blue | 0) << 16) | ((green | 0) << 8) | (red | 0);
  }
}
