/* The report's Episodes view: a sortable, filterable, paginated table of every episode and a
   detail panel with the overlays, drawn from the embedded JSON (#ep-data, reports/explorer.py).
   Hand-written, no library, no network. Only the open detail decodes masks and images. */
(function () {
  "use strict";
  var PAGE = 50;
  var el = document.getElementById("ep-data");
  if (!el) return;
  var D = JSON.parse(el.textContent);
  var V = D.variants;
  var state = { key: "row", dir: 1, page: 0, view: [] };

  /* COCO compressed RLE counts (pycocotools' rleFrString): 5 bits per character (offset 48),
     0x20 = more chunks follow, 0x10 on the last chunk = negative; from the 4th count on (index 3), a count
     is stored as its difference from the count two before. */
  function rleCounts(s) {
    var cnts = [];
    var p = 0;
    while (p < s.length) {
      var x = 0, k = 0, more = true;
      while (more) {
        var c = s.charCodeAt(p) - 48;
        x += (c & 0x1f) * Math.pow(2, 5 * k);
        more = (c & 0x20) !== 0;
        p++;
        k++;
        if (!more && (c & 0x10)) x -= Math.pow(2, 5 * k);
      }
      if (cnts.length > 2) x += cnts[cnts.length - 2];
      cnts.push(x);
    }
    return cnts;
  }

  /* (h, w, counts) -> Uint8Array of h*w in column-major order (COCO's), 1 = foreground. */
  function rleDecode(h, w, s) {
    var cnts = rleCounts(s);
    var m = new Uint8Array(h * w);
    var pos = 0, v = 0;
    for (var i = 0; i < cnts.length; i++) {
      if (v) m.fill(1, pos, pos + cnts[i]);
      pos += cnts[i];
      v ^= 1;
    }
    return m;
  }
  window.fssRle = { counts: rleCounts, decode: rleDecode };

  function iouOf(row, v) { return row[9][v]; }
  function group(row) { return D.groups[row[0]]; }
  function className(row) {
    var names = D.classes[group(row)[0]] || [];
    return row[2] + " " + (names[row[2] - 1] || "");
  }
  function pct(x, digits) { return x === null || x === undefined ? "" : (100 * x).toFixed(digits); }
  function byId(id) { return document.getElementById(id); }
  function sel(id) { return byId(id).value; }

  function delta(row) {
    var a = Number(sel("ep-f-a")), b = Number(sel("ep-f-b"));
    var ia = iouOf(row, a), ib = iouOf(row, b);
    return ia === null || ib === null ? null : ia - ib;
  }

  function sortValue(i, key) {
    var row = D.episodes[i], g = group(row);
    switch (key) {
      case "row": return i;
      case "dataset": return g[0];
      case "fold": return g[1];
      case "shot": return g[2];
      case "seed": return g[3];
      case "episode": return row[1];
      case "class": return row[2];
      case "query": return row[3];
      case "supports": return row[4].join(" ");
      case "delta": return delta(row);
      default: return iouOf(row, Number(key.slice(1)));
    }
  }

  function passes(row) {
    var g = group(row);
    var f = sel("ep-f-dataset"), c = sel("ep-f-class"), v = sel("ep-f-variant");
    if (f !== "" && g[0] !== f) return false;
    if (c !== "" && g[0] + ":" + row[2] !== c) return false;
    if (sel("ep-f-fold") !== "" && String(g[1]) !== sel("ep-f-fold")) return false;
    if (sel("ep-f-shot") !== "" && String(g[2]) !== sel("ep-f-shot")) return false;
    if (v !== "" && iouOf(row, Number(v)) === null) return false;
    var x = parseFloat(sel("ep-f-x"));
    if (!isNaN(x)) {
      var d = delta(row);
      if (d === null || !(100 * d > x)) return false;
    }
    return true;
  }

  function compare(a, b) {
    var va = sortValue(a, state.key), vb = sortValue(b, state.key);
    if (va === null && vb === null) return a - b;
    if (va === null) return 1; /* missing values last, either way */
    if (vb === null) return -1;
    if (va < vb) return -state.dir;
    if (va > vb) return state.dir;
    return a - b;
  }

  function cell(tr, text, key, value) {
    var td = document.createElement("td");
    td.textContent = text;
    if (key) td.setAttribute("data-col", key);
    if (value !== undefined && value !== null) td.setAttribute("data-v", String(value));
    tr.appendChild(td);
  }

  function render() {
    var view = [];
    for (var i = 0; i < D.episodes.length; i++) if (passes(D.episodes[i])) view.push(i);
    view.sort(compare);
    state.view = view;
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var tbody = byId("ep-tbody");
    tbody.textContent = "";
    view.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (i) {
      var row = D.episodes[i], g = group(row);
      var tr = document.createElement("tr");
      tr.setAttribute("data-idx", String(i));
      tr.setAttribute("data-episode", String(row[1]));
      cell(tr, g[0], "dataset");
      cell(tr, String(g[1]), "fold");
      cell(tr, String(g[2]), "shot");
      cell(tr, String(g[3]), "seed");
      cell(tr, String(row[1]), "episode");
      cell(tr, className(row), "class", row[2]);
      cell(tr, row[3], "query");
      cell(tr, row[4].join(" "), "supports");
      for (var v = 0; v < V.length; v++) cell(tr, pct(iouOf(row, v), 1), "v" + v, iouOf(row, v));
      var d = delta(row);
      cell(tr, d === null ? "" : (d >= 0 ? "+" : "") + pct(d, 1), "delta", d);
      tr.addEventListener("click", function () { showDetail(i); });
      tbody.appendChild(tr);
    });
    var view_el = byId("ep-view");
    view_el.setAttribute("data-rows", String(view.length));
    byId("ep-count").textContent = view.length + " of " + D.episodes.length + " episodes";
    var info = byId("ep-pageinfo");
    info.textContent = "page " + (state.page + 1) + " of " + pages;
    info.setAttribute("data-page", String(state.page));
    info.setAttribute("data-pages", String(pages));
    var ths = document.querySelectorAll("#ep-table th[data-key]");
    for (var t = 0; t < ths.length; t++) {
      var on = ths[t].getAttribute("data-key") === state.key;
      ths[t].setAttribute("aria-sort", on ? (state.dir > 0 ? "ascending" : "descending") : "none");
    }
    byId("ep-delta-head").textContent =
      "\u0394 " + V[Number(sel("ep-f-a"))] + " \u2212 " + V[Number(sel("ep-f-b"))];
  }

  /* ---- detail panel: every overlay on a canvas at the mask's own size */

  function fillCanvas(canvas, h, w, m, rgba) {
    var ctx = canvas.getContext("2d");
    var img = ctx.createImageData(w, h);
    var px = img.data;
    for (var c = 0; c < w; c++) {
      for (var r = 0; r < h; r++) {
        if (m[c * h + r]) {
          var o = 4 * (r * w + c);
          px[o] = rgba[0]; px[o + 1] = rgba[1]; px[o + 2] = rgba[2]; px[o + 3] = rgba[3];
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  /* The inner outline of a column-major mask, `t` pixels thick (t rounds of erosion). */
  function outline(h, w, m, t) {
    var cur = m;
    for (var k = 0; k < t; k++) {
      var next = new Uint8Array(h * w);
      for (var c = 0; c < w; c++) {
        for (var r = 0; r < h; r++) {
          var i = c * h + r;
          next[i] = cur[i] && r > 0 && r < h - 1 && c > 0 && c < w - 1 &&
            cur[i - 1] && cur[i + 1] && cur[i - h] && cur[i + h] ? 1 : 0;
        }
      }
      cur = next;
    }
    var out = new Uint8Array(h * w);
    for (var j = 0; j < h * w; j++) out[j] = m[j] && !cur[j] ? 1 : 0;
    return out;
  }

  function layer(stack, cls, h, w) {
    var cv = document.createElement("canvas");
    cv.width = w;
    cv.height = h;
    cv.className = cls;
    stack.appendChild(cv);
    return cv;
  }

  var pending = 0, shown = 0;  /* shown: which detail is open, so a late image of an earlier one is ignored */
  function ready() { byId("ep-detail").setAttribute("data-ready", pending === 0 ? "1" : "0"); }

  /* One panel: the thumbnail drawn at (h, w), an optional filled mask and an optional outline. */
  function panel(box, kind, title, thumb, h, w, fill, line, lineRgba) {
    var fig = document.createElement("figure");
    fig.className = "ep-panel";
    fig.setAttribute("data-kind", kind);
    var stack = document.createElement("div");
    stack.className = "ep-stack";
    var base = layer(stack, "ep-img", h, w);
    if (thumb >= 0) {
      pending++;
      var im = new Image(), mine = shown;
      im.onload = function () {
        if (mine !== shown) return;
        base.getContext("2d").drawImage(im, 0, 0, w, h);
        pending--;
        ready();
      };
      im.onerror = function () { if (mine === shown) { pending--; ready(); } };
      im.src = D.thumbs[thumb];
    } else {
      var ctx = base.getContext("2d");
      ctx.fillStyle = "#888";
      ctx.fillRect(0, 0, w, h);
    }
    if (fill) fillCanvas(layer(stack, "ep-fill", h, w), h, w, fill, [40, 255, 40, 150]);
    if (line) {
      var t = Math.max(2, Math.round(Math.max(h, w) / 120));
      fillCanvas(layer(stack, "ep-line", h, w), h, w, outline(h, w, line, t), lineRgba);
    }
    fig.appendChild(stack);
    var cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.appendChild(cap);
    box.appendChild(fig);
    return fig;
  }

  function gtMask(index) {
    if (index < 0) return null;
    var e = D.masks[index];
    return { h: e[0], w: e[1], m: rleDecode(e[0], e[1], e[2]) };
  }

  function showDetail(i) {
    var row = D.episodes[i], g = group(row);
    var box = byId("ep-detail");
    box.textContent = "";
    box.hidden = false;
    box.setAttribute("data-idx", String(i));
    box.setAttribute("data-episode", String(row[1]));
    pending = 0;
    shown++;
    var head = document.createElement("h3");
    head.textContent = g[0] + " fold " + g[1] + " " + g[2] + "-shot seed " + g[3] + " (" + g[4] +
      "), episode " + row[1] + ": class " + className(row) + ", query " + row[3];
    box.appendChild(head);
    var gt = gtMask(row[7]);
    var magenta = [255, 0, 255, 255], yellow = [255, 216, 0, 255];
    var inputs = document.createElement("div");
    inputs.className = "ep-row";
    box.appendChild(inputs);
    var qh = gt ? gt.h : 120, qw = gt ? gt.w : 160;
    panel(inputs, "query", "query " + row[3] + " (ground truth outlined)", row[5], qh, qw, null,
      gt ? gt.m : null, magenta);
    row[4].forEach(function (sid, k) {
      var sm = gtMask(row[8][k]);
      panel(inputs, "support", "support " + (k + 1) + ": " + sid, row[6][k], sm ? sm.h : 120,
        sm ? sm.w : 160, null, sm ? sm.m : null, yellow);
    });
    var preds = document.createElement("div");
    preds.className = "ep-row";
    box.appendChild(preds);
    for (var v = 0; v < V.length; v++) {
      var iou = iouOf(row, v), p = row[10][v];
      if (iou === null) continue;
      var text = V[v] + ": IoU " + pct(iou, 2) + "%" + (p ? "" : " (no stored prediction)");
      var fig;
      if (p) {
        var m = rleDecode(p[0], p[1], p[2]);
        var line = gt && gt.h === p[0] && gt.w === p[1] ? gt.m : null;
        fig = panel(preds, "prediction", text, row[5], p[0], p[1], m, line, magenta);
      } else {
        fig = panel(preds, "prediction", text, row[5], qh, qw, null, gt ? gt.m : null, magenta);
      }
      fig.setAttribute("data-variant", V[v]);
      fig.setAttribute("data-iou", String(iou));
    }
    ready();
    var rows = document.querySelectorAll("#ep-tbody tr");
    for (var r = 0; r < rows.length; r++) {
      rows[r].classList.toggle("ep-open", rows[r].getAttribute("data-idx") === String(i));
    }
  }
  window.fssShowEpisode = showDetail;

  /* ---- controls */

  function option(selEl, value, text) {
    var o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    selEl.appendChild(o);
  }

  function setup() {
    var seen = {}, datasets = {}, folds = {}, shots = {};
    D.episodes.forEach(function (row) {
      var g = group(row);
      datasets[g[0]] = 1; folds[g[1]] = 1; shots[g[2]] = 1;
      seen[g[0] + ":" + row[2]] = [g[0], row[2]];
    });
    var cls = Object.keys(seen).map(function (k) { return seen[k]; });
    cls.sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]; });
    cls.forEach(function (c) {
      option(byId("ep-f-class"), c[0] + ":" + c[1], c[0] + " " + c[1] + " " + (D.classes[c[0]][c[1] - 1] || ""));
    });
    Object.keys(datasets).sort().forEach(function (d) { option(byId("ep-f-dataset"), d, d); });
    Object.keys(folds).sort().forEach(function (f) { option(byId("ep-f-fold"), f, f); });
    Object.keys(shots).sort(function (a, b) { return a - b; }).forEach(function (s) { option(byId("ep-f-shot"), s, s); });
    V.forEach(function (v, k) {
      option(byId("ep-f-variant"), String(k), v);
      option(byId("ep-f-a"), String(k), v);
      option(byId("ep-f-b"), String(k), v);
    });
    var ref = D.reference === null ? 0 : V.indexOf(D.reference);
    var other = 0;
    while (other < V.length - 1 && other === ref) other++;
    byId("ep-f-a").value = String(other);
    byId("ep-f-b").value = String(ref);
    ["ep-f-dataset", "ep-f-class", "ep-f-variant", "ep-f-fold", "ep-f-shot", "ep-f-a", "ep-f-b", "ep-f-x"]
      .forEach(function (id) {
        byId(id).addEventListener("change", function () { state.page = 0; render(); });
        byId(id).addEventListener("input", function () { state.page = 0; render(); });
      });
    var ths = document.querySelectorAll("#ep-table th[data-key]");
    for (var t = 0; t < ths.length; t++) {
      ths[t].addEventListener("click", function () {
        var key = this.getAttribute("data-key");
        state.dir = state.key === key ? -state.dir : 1;
        state.key = key;
        render();
      });
    }
    byId("ep-prev").addEventListener("click", function () { state.page = Math.max(0, state.page - 1); render(); });
    byId("ep-next").addEventListener("click", function () { state.page++; render(); });
    render();
  }
  setup();
})();
