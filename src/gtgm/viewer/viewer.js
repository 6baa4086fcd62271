// gtgm report viewer: one NiiVue instance per case (see gtgm/viewer/__init__.py). Each viewer's element gets
// data-status "ok" once drawn (or "error: ...") and data-lit, the count of lit pixels of its first frame.
(function () {
  "use strict";
  const cases = JSON.parse(document.getElementById("gtgm-viewer-data").textContent);
  if (location.hash === "#viewers-only") {  // report.html#viewers-only: the viewers alone (for screenshots)
    for (const el of document.body.children) {
      if (!el.classList.contains("gtgm-viewer") && el.tagName !== "SCRIPT") el.style.display = "none";
    }
  }
  const fail = (el, msg) => { el.dataset.status = "error: " + msg; };
  const failAll = (msg) => document.querySelectorAll(".gtgm-viewer").forEach((el) => fail(el, msg));
  window.addEventListener("error", (e) => failAll(e.message || "script error"));
  window.addEventListener("unhandledrejection", (e) => failAll(String(e.reason)));
  const consoleError = console.error.bind(console);
  console.error = (...args) => {  // what the console shows as an error is recorded for headless checks
    document.body.dataset.consoleErrors = (document.body.dataset.consoleErrors || "") + args.join(" ") + "\n";
    consoleError(...args);
  };
  function labelMap(classes, shown) {
    const top = classes.reduce((m, c) => Math.max(m, c[0]), 1);
    const cm = { R: [], G: [], B: [], A: [], I: [] };
    for (let v = 0; v <= top; v++) {
      const c = classes.find((k) => k[0] === v);
      const rgb = c ? [1, 3, 5].map((j) => parseInt(c[2].slice(j, j + 2), 16)) : [0, 0, 0];
      cm.R.push(rgb[0]); cm.G.push(rgb[1]); cm.B.push(rgb[2]);
      cm.A.push(c && shown.has(v) ? 255 : 0); cm.I.push(v);
    }
    return cm;
  }
  function litPixels(nv) {
    const gl = nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const px = new Uint8Array(4 * w * h);
    nv.drawScene();
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    let lit = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 30) lit++;
    return lit;
  }
  async function show(i, c) {
    const el = document.getElementById("gtgm-viewer-" + i);
    const NV = window.niivue;
    if (!NV) return fail(el, "niivue.umd.js did not load");
    const nv = new NV.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: false, isColorbar: false });
    await nv.attachToCanvas(document.getElementById("gtgm-canvas-" + i));
    nv.setRadiologicalConvention(RADIOLOGICAL);
    const load = (b64, name) => NV.NVImage.loadFromBase64({
      base64: b64, name: name, colormap: "gray", cal_min: 0, cal_max: 255, trustCalMinMax: true });
    nv.addVolume(await load(c.image, "image.nii.gz"));
    const shown = new Set(c.classes.map((k) => k[0]));
    const overlays = {};
    for (const what of ["prediction", "reference"]) {
      const v = await load(c[what], what + ".nii.gz");
      v.setColormapLabel(labelMap(c.classes, shown));
      nv.addVolume(v);
      overlays[what] = v;
    }
    let current = "prediction", alpha = 0.5;
    const paint = () => {
      for (const what of ["prediction", "reference"]) {
        overlays[what].setColormapLabel(labelMap(c.classes, shown));
        nv.setOpacity(nv.getVolumeIndexByID(overlays[what].id), what === current ? alpha : 0);
      }
      nv.updateGLVolume();
    };
    el.querySelectorAll('input[type="radio"]').forEach((r) => r.addEventListener("change", () => { current = r.value; paint(); }));
    el.querySelector(".opacity").addEventListener("input", (e) => { alpha = e.target.value / 100; paint(); });
    el.querySelectorAll("input[data-class]").forEach((b) => b.addEventListener("change", () => {
      const v = Number(b.dataset.class);
      if (b.checked) shown.add(v); else shown.delete(v);
      paint();
    }));
    nv.setSliceType(nv.sliceTypeMultiplanar);
    paint();
    nv.scene.crosshairPos = c.focus;
    el.dataset.lit = String(litPixels(nv));
    el.dataset.status = "ok";
  }
  cases.forEach((c, i) => show(i, c).catch((e) => fail(document.getElementById("gtgm-viewer-" + i), String(e))));
})();
