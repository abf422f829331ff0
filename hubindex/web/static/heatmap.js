/* hubindex web explorer: the kappa heatmap of a corpus page.
 *
 * Reads the page's data (its #heatmap-data JSON block, else the URL in #heatmap's data-json), then
 * draws one SVG: the ward dendrogram on top (scipy's segments, as `hubindex plot kappa` draws them), the cells below
 * (painted on a canvas, placed in the SVG as an image: 300^2 SVG rectangles would be slow), row
 * and column labels, a viridis legend, and outlines for the newest MMI selection. Hover shows a
 * cell's value, a click opens the column's checkpoint. Catalog text (checkpoint ids) only ever
 * goes through textContent or setAttribute, never through HTML parsing: ids can hold markup.
 * When drawn, #heatmap gets data-rendered="N" (N checkpoints) and data-order="dendrogram|alphabetical".
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  // matplotlib's viridis at 0, 0.1, ..., 1.
  var VIRIDIS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70",
                 "#7ad151", "#bddf26", "#fde725"];
  // matplotlib's default cycle: scipy names the dendrogram's cluster colours C0, C1, ...
  var CYCLE = {C0: "#1f77b4", C1: "#ff7f0e", C2: "#2ca02c", C3: "#d62728", C4: "#9467bd", C5: "#8c564b",
               C6: "#e377c2", C7: "#7f7f7f", C8: "#bcbd22", C9: "#17becf"};
  var MISSING = "#d0d0d0";
  var HIGHLIGHT = "#ff2d55";
  var DENDROGRAM_HEIGHT = 110;
  var LEGEND_WIDTH = 80;

  function hexToRgb(hex) {
    return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)];
  }

  var ANCHORS = VIRIDIS.map(hexToRgb);

  function colour(value) {
    if (value === null || typeof value !== "number" || !isFinite(value)) {
      return MISSING;
    }
    var t = Math.min(1, Math.max(0, value)) * (ANCHORS.length - 1);
    var low = Math.min(ANCHORS.length - 2, Math.floor(t));
    var f = t - low;
    var rgb = [0, 1, 2].map(function (k) {
      return Math.round(ANCHORS[low][k] + f * (ANCHORS[low + 1][k] - ANCHORS[low][k]));
    });
    return "rgb(" + rgb.join(",") + ")";
  }

  // Like render.checkpoint_url: each path segment encoded, '/', ':' and '@' kept.
  function checkpointUrl(id) {
    return "/checkpoints/" + id.split("/").map(function (segment) {
      return encodeURIComponent(segment).replace(/%3A/gi, ":").replace(/%40/g, "@");
    }).join("/");
  }

  function node(tag, attributes, parent) {
    var element = document.createElementNS(SVG_NS, tag);
    Object.keys(attributes || {}).forEach(function (name) {
      element.setAttribute(name, String(attributes[name]));
    });
    if (parent) {
      parent.appendChild(element);
    }
    return element;
  }

  function label(parent, content, attributes) {
    var text = node("text", attributes, parent);
    text.textContent = content;
    return text;
  }

  /* The display order: matrix indices (the JSON's matrix is in dendrogram order) by position. */
  function permutation(data, mode) {
    var n = data.ordered_ids.length;
    var positions = [];
    for (var a = 0; a < n; a += 1) {
      positions.push(a);
    }
    if (mode === "alphabetical") {
      positions.sort(function (a, b) {
        var x = data.ordered_ids[a], y = data.ordered_ids[b];
        return x < y ? -1 : x > y ? 1 : 0;
      });
    }
    return positions;
  }

  function layout(data) {
    var n = data.ordered_ids.length;
    var cell = Math.max(3, Math.min(48, Math.floor(720 / n)));
    var labels = cell >= 8;  // smaller cells cannot carry readable text: the tooltip names them
    var font = Math.min(12, cell - 2);
    var longest = data.labels.reduce(function (m, s) { return Math.max(m, s.length); }, 0);
    var margin = labels ? Math.min(320, Math.ceil(longest * font * 0.62) + 20) : 8;
    var size = n * cell;
    return {n: n, cell: cell, labels: labels, font: font, left: margin, top: DENDROGRAM_HEIGHT, size: size,
            width: margin + size + LEGEND_WIDTH, height: DENDROGRAM_HEIGHT + size + margin};
  }

  function paintCells(data, box, perm) {
    var canvas = document.createElement("canvas");
    canvas.width = box.size;
    canvas.height = box.size;
    var context = canvas.getContext("2d");
    for (var a = 0; a < box.n; a += 1) {
      var row = data.matrix[perm[a]];
      for (var b = 0; b < box.n; b += 1) {
        context.fillStyle = colour(row[perm[b]]);
        context.fillRect(b * box.cell, a * box.cell, box.cell, box.cell);
      }
    }
    return canvas.toDataURL("image/png");
  }

  function drawDendrogram(svg, data, box, mode) {
    var group = node("g", {id: "heatmap-dendrogram"}, svg);
    if (mode !== "dendrogram") {
      label(group, "(the tree is drawn in dendrogram order)", {
        x: 4, y: box.top - 12, "font-size": 12, fill: "#6b7280"});
      return;
    }
    var tree = data.dendrogram;
    var highest = 0;
    tree.dcoord.forEach(function (ys) { ys.forEach(function (y) { highest = Math.max(highest, y); }); });
    var scale = highest > 0 ? (box.top - 16) / highest : 0;
    tree.icoord.forEach(function (xs, k) {
      var points = xs.map(function (x, t) {
        return (box.left + x / 10 * box.cell).toFixed(2) + "," + (box.top - 6 - tree.dcoord[k][t] * scale).toFixed(2);
      });
      node("polyline", {points: points.join(" "), fill: "none", "stroke-width": 1.2,
                        stroke: CYCLE[tree.colors[k]] || "#555555"}, group);
    });
  }

  function drawLabels(svg, data, box, perm, marked) {
    if (!box.labels) {
      return;
    }
    var group = node("g", {id: "heatmap-labels", "font-size": box.font}, svg);
    perm.forEach(function (index, p) {
      var id = data.ordered_ids[index];
      var short = data.labels[data.order[index]];
      var centre = (p + 0.5) * box.cell;
      var style = marked[id] ? {fill: HIGHLIGHT, "font-weight": "bold"} : {fill: "#1d2430"};
      var rowLink = node("a", {href: checkpointUrl(id), class: "heatmap-row-label"}, group);
      var row = label(rowLink, short, Object.assign({x: box.left - 4, y: box.top + centre, "text-anchor": "end",
                                                     "dominant-baseline": "middle"}, style));
      node("title", {}, row).textContent = id;
      var x = box.left + centre, y = box.top + box.size + 4;
      var columnLink = node("a", {href: checkpointUrl(id), class: "heatmap-column-label"}, group);
      var column = label(columnLink, short, Object.assign({x: x, y: y, "text-anchor": "end",
                                                           "dominant-baseline": "middle",
                                                           transform: "rotate(-90 " + x + " " + y + ")"}, style));
      node("title", {}, column).textContent = id;
    });
  }

  function drawLegend(svg, box) {
    var x = box.left + box.size + 16, height = Math.min(box.size, 240), top = box.top;
    var defs = node("defs", {}, svg);
    var gradient = node("linearGradient", {id: "heatmap-gradient", x1: 0, y1: 1, x2: 0, y2: 0}, defs);
    VIRIDIS.forEach(function (hex, k) {
      node("stop", {offset: k / (VIRIDIS.length - 1), "stop-color": hex}, gradient);
    });
    var group = node("g", {id: "heatmap-legend", "font-size": 11, fill: "#1d2430"}, svg);
    node("rect", {x: x, y: top, width: 14, height: height, fill: "url(#heatmap-gradient)", stroke: "#999999"}, group);
    [0, 0.5, 1].forEach(function (v) {
      label(group, String(v), {x: x + 18, y: top + height - v * height, "dominant-baseline": "middle"});
    });
    label(group, "kappa", {x: x, y: top - 14});
  }

  function drawHighlight(svg, box, perm, data, marked) {
    var group = node("g", {id: "heatmap-highlight-marks", fill: "none", stroke: HIGHLIGHT, "stroke-width": 1.5,
                           "pointer-events": "none"}, svg);
    var count = 0;
    perm.forEach(function (index, p) {
      if (!marked[data.ordered_ids[index]]) {
        return;
      }
      count += 1;
      node("rect", {x: box.left, y: box.top + p * box.cell, width: box.size, height: box.cell}, group);
      node("rect", {x: box.left + p * box.cell, y: box.top, width: box.cell, height: box.size}, group);
    });
    return count;
  }

  function Heatmap(container, data) {
    this.container = container;
    this.data = data;
    this.wrap = container.querySelector(".heatmap-wrap");
    this.status = container.querySelector("#heatmap-status");
    this.orderControl = container.querySelector("#heatmap-order");
    this.highlightControl = container.querySelector("#heatmap-highlight");
    this.tooltip = document.createElement("div");
    this.tooltip.className = "tooltip";
    this.tooltip.setAttribute("role", "status");
    this.tooltip.id = "heatmap-tooltip";
  }

  Heatmap.prototype.mode = function () {
    return this.orderControl && this.orderControl.value === "alphabetical" ? "alphabetical" : "dendrogram";
  };

  Heatmap.prototype.marked = function () {
    var marked = {};
    if (this.highlightControl && this.highlightControl.checked) {
      this.data.highlight.forEach(function (id) { marked[id] = true; });
    }
    return marked;
  };

  Heatmap.prototype.draw = function () {
    var data = this.data, mode = this.mode(), marked = this.marked();
    var box = layout(data), perm = permutation(data, mode);
    var svg = node("svg", {width: box.width, height: box.height, viewBox: "0 0 " + box.width + " " + box.height,
                           id: "heatmap-svg", role: "img", "aria-label": "kappa heatmap"});
    drawDendrogram(svg, data, box, mode);
    node("image", {href: paintCells(data, box, perm), x: box.left, y: box.top, width: box.size, height: box.size,
                   preserveAspectRatio: "none"}, svg);
    var cells = node("rect", {id: "heatmap-cells", x: box.left, y: box.top, width: box.size, height: box.size,
                              fill: "transparent", cursor: "pointer", "data-cell-size": box.cell}, svg);
    var highlighted = drawHighlight(svg, box, perm, data, marked);
    drawLabels(svg, data, box, perm, marked);
    drawLegend(svg, box);
    this.listen(cells, box, perm);
    this.wrap.replaceChildren(svg, this.tooltip);
    this.container.setAttribute("data-order", mode);
    this.container.setAttribute("data-highlighted", String(highlighted));
    this.container.setAttribute("data-rendered", String(box.n));
  };

  /* The cell under the pointer: [row matrix index, column matrix index], or null outside. */
  Heatmap.prototype.cellAt = function (event, cells, box, perm) {
    var rect = cells.getBoundingClientRect();
    var column = Math.floor((event.clientX - rect.left) / rect.width * box.n);
    var row = Math.floor((event.clientY - rect.top) / rect.height * box.n);
    if (row < 0 || column < 0 || row >= box.n || column >= box.n) {
      return null;
    }
    return [perm[row], perm[column]];
  };

  Heatmap.prototype.listen = function (cells, box, perm) {
    var self = this, data = this.data, tooltip = this.tooltip;
    cells.addEventListener("mousemove", function (event) {
      var at = self.cellAt(event, cells, box, perm);
      if (!at) {
        tooltip.style.display = "none";
        return;
      }
      var value = data.matrix[at[0]][at[1]], items = data.n_items[at[0]][at[1]];
      tooltip.textContent = data.ordered_ids[at[0]] + " x " + data.ordered_ids[at[1]] + ": kappa " +
        (typeof value === "number" ? value.toFixed(4) : "missing") + " (" + items + " items)";
      var origin = self.wrap.getBoundingClientRect();
      tooltip.style.left = (event.clientX - origin.left + 14) + "px";
      tooltip.style.top = (event.clientY - origin.top + 14) + "px";
      tooltip.style.display = "block";
    });
    cells.addEventListener("mouseleave", function () {
      tooltip.style.display = "none";
    });
    cells.addEventListener("click", function (event) {
      var at = self.cellAt(event, cells, box, perm);
      if (at) {
        window.location.assign(checkpointUrl(data.ordered_ids[at[1]]));
      }
    });
  };

  function start(container) {
    var status = container.querySelector("#heatmap-status");
    var controls = container.querySelector("#heatmap-controls");
    if (status) {
      status.textContent = "Loading the heatmap...";
    }
    // The page carries its data in a JSON block (no second request, no second computation of the
    // matrix); the page's JSON URL is the fallback.
    var embedded = document.getElementById("heatmap-data");
    var loaded = embedded
      ? Promise.resolve().then(function () { return JSON.parse(embedded.textContent); })
      : fetch(container.getAttribute("data-json"), {headers: {Accept: "application/json"}})
        .then(function (response) {
          if (!response.ok) {
            throw new Error("the page's JSON answered " + response.status);
          }
          return response.json();
        });
    loaded
      .then(function (data) {
        var heatmap = new Heatmap(container, data);
        heatmap.draw();
        if (controls) {
          controls.hidden = false;
          controls.addEventListener("change", function () { heatmap.draw(); });
        }
        if (status) {
          status.textContent = data.shown + " checkpoints; rows and columns in the order chosen above.";
        }
      })
      .catch(function (error) {
        if (status) {
          status.textContent = "The heatmap could not be drawn (" + error.message + "); the table below holds the values.";
        }
        container.setAttribute("data-error", String(error.message));
      });
  }

  function init() {
    var container = document.getElementById("heatmap");
    if (container && container.getAttribute("data-json")) {
      start(container);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
