/*
 * brainlearn report: the 3D viewer. Opens the volumes of each `.viewer` block in NiiVue (window.niivue, from the
 * bundled niivue.umd.js). Plain ES2017 and classic scripts only, so that the page works from disk (file://), and no
 * network access: every volume comes from a viewer/<key>.js script that sets window.brainlearnVolumes[key] to a
 * gzipped NIfTI-1 file in base64 (brainlearn.report.viewer.write_volume).
 *
 * The page holds, for each viewer:
 *   <div class="viewer" data-items='[{"title": "...", "layers": [{"key": "v3", "colormap": "gray", "opacity": 1},
 *        {"key": "v4", "colormap": "red", "opacity": 0.6, "cal_min": 0.5, "cal_max": 1}],
 *        "focus_mm": [12.5, -30, 8]}, ...]'>
 * (focus_mm, optional: where the crosshair starts, in world millimetres)
 *     <select class="viewer-select"></select> <canvas class="viewer-canvas"></canvas> <p class="viewer-status"></p>
 *   </div>
 * and loads, in this order: niivue.umd.js, the viewer/<key>.js scripts, viewer.js.
 *
 * Each viewer's `data-state` tells tests and readers where it is: "idle" (not yet scrolled near; a viewer starts
 * when it comes into view, which keeps the number of WebGL contexts low), "loading", "ready", "error" (the message
 * is in .viewer-status and on the console) or "unavailable" (NiiVue was not bundled; a note says so).
 */
(function () {
  "use strict";

  var DEFAULT_HEIGHT = 420; // px, when the page gives the canvas no height of its own
  var UNAVAILABLE =
    "The 3D viewer is not available: NiiVue was not bundled with this brainlearn installation. " +
    "Reinstall brainlearn where npm can reach its registry (make install, or pip install .) and rerun brainlearn report.";

  function setState(div, state, message) {
    div.dataset.state = state;
    var status = div.querySelector(".viewer-status");
    if (status) {
      status.textContent = message || "";
    }
  }

  function fail(div, error) {
    var message = "3D viewer: " + (error && error.message ? error.message : String(error));
    setState(div, "error", message);
    console.error(message);
  }

  function parseItems(div) {
    var items = JSON.parse(div.dataset.items || "[]");
    if (!Array.isArray(items) || items.length === 0) {
      throw new Error("this viewer lists no volumes (data-items is empty)");
    }
    return items;
  }

  // A block element around the canvas: NiiVue sizes the canvas to its parent and paints the parent black.
  function frameCanvas(canvas) {
    var height = canvas.getBoundingClientRect().height;
    var frame = document.createElement("div");
    frame.className = "viewer-frame";
    frame.style.position = "relative";
    frame.style.height = (height >= 200 ? height : DEFAULT_HEIGHT) + "px";
    canvas.parentNode.insertBefore(frame, canvas);
    frame.appendChild(canvas);
    return frame;
  }

  async function loadLayer(layer) {
    var volumes = window.brainlearnVolumes || {};
    var base64 = volumes[layer.key];
    if (typeof base64 !== "string") {
      throw new Error("volume " + layer.key + " is missing (viewer/" + layer.key + ".js did not load)");
    }
    var options = { base64: base64, name: layer.key + ".nii.gz", colormap: layer.colormap || "gray" };
    options.opacity = typeof layer.opacity === "number" ? layer.opacity : 1;
    if (typeof layer.cal_min === "number") {
      options.cal_min = layer.cal_min;
    }
    if (typeof layer.cal_max === "number") {
      options.cal_max = layer.cal_max;
    }
    var image = null;
    try {
      image = await window.niivue.NVImage.loadFromBase64(options);
    } catch (error) {
      throw new Error("volume " + layer.key + " could not be read (" + error.message + ")");
    }
    if (!image) {
      throw new Error("volume " + layer.key + " could not be read");
    }
    return image;
  }

  // Show item `index` of the viewer, replacing what it showed; a later call wins over one still loading.
  async function show(viewer, index) {
    var token = ++viewer.token;
    var item = viewer.items[index];
    setState(viewer.div, "loading", "Loading " + (item.title || "volume") + " ...");
    var images;
    try {
      images = await Promise.all((item.layers || []).map(loadLayer));
    } catch (error) {
      if (token !== viewer.token) {
        return; // the reader has already picked another item
      }
      throw error;
    }
    if (token !== viewer.token) {
      return;
    }
    if (images.length === 0) {
      throw new Error("item '" + item.title + "' has no layers");
    }
    var nv = viewer.nv;
    while (nv.volumes.length > 0) {
      nv.removeVolume(nv.volumes[nv.volumes.length - 1]);
    }
    images.forEach(function (image) {
      nv.addVolume(image);
    });
    if (Array.isArray(item.focus_mm) && item.focus_mm.length === 3) {
      nv.scene.crosshairPos = nv.mm2frac(item.focus_mm); // on the lesion or the map's peak, not the volume's centre
      nv.updateGLVolume();
    }
    setState(viewer.div, "ready", "");
  }

  async function start(div) {
    var canvas = div.querySelector(".viewer-canvas");
    var select = div.querySelector(".viewer-select");
    var items = parseItems(div);
    frameCanvas(canvas);
    canvas.addEventListener("webglcontextlost", function () {
      fail(div, new Error("the browser dropped this viewer's WebGL context (too many 3D views at once?); reload the page"));
    });
    var nv = new window.niivue.Niivue({
      backColor: [0, 0, 0, 1],
      crosshairColor: [0.2, 0.8, 1, 0.7],
      crosshairWidth: 1,
      crosshairWidthUnit: "mm", // NiiVue's default is one voxel: a thick bar on coarse (4 mm) volumes
      show3Dcrosshair: true,
      sliceType: window.niivue.SLICE_TYPE.MULTIPLANAR,
      multiplanarShowRender: window.niivue.SHOW_RENDER.AUTO,
      dragAndDropEnabled: false,
      logLevel: "warn",
    });
    try {
      await nv.attachToCanvas(canvas);
    } catch (error) {
      throw new Error("this browser cannot draw the viewer (WebGL2: " + error.message + ")");
    }
    var viewer = { div: div, nv: nv, items: items, token: 0 };
    items.forEach(function (item, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = item.title || "volume " + (i + 1);
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      show(viewer, Number(select.value)).catch(function (error) {
        fail(div, error);
      });
    });
    await show(viewer, 0);
  }

  function startWhenVisible(div) {
    var begin = function () {
      start(div).catch(function (error) {
        fail(div, error);
      });
    };
    if (typeof IntersectionObserver === "undefined") {
      begin();
      return;
    }
    var observer = new IntersectionObserver(
      function (entries) {
        if (entries.some(function (entry) { return entry.isIntersecting; })) {
          observer.disconnect();
          begin();
        }
      },
      { rootMargin: "200px" }
    );
    observer.observe(div);
  }

  function main() {
    var divs = Array.prototype.slice.call(document.querySelectorAll(".viewer"));
    divs.forEach(function (div) {
      if (typeof window.niivue === "undefined") {
        div.querySelectorAll(".viewer-select, .viewer-canvas").forEach(function (element) {
          element.style.display = "none";
        });
        setState(div, "unavailable", UNAVAILABLE);
        return;
      }
      setState(div, "idle", "");
      startWhenVisible(div);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", main);
  } else {
    main();
  }
})();
