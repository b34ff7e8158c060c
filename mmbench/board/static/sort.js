
(function () {
  "use strict";
  function value(td) {
    var s = td.getAttribute("data-sort");
    if (s === null) { s = td.textContent.trim(); }
    if (s === "" || s === "-") { return null; }
    var n = Number(s);
    return isNaN(n) ? s.toLowerCase() : n;
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : (a > b ? 1 : 0); }
    return typeof a === "number" ? -1 : 1;
  }
  function sortTable(table, col, desc) {
    var head = table.tHead.rows[0].cells, idx = -1, i;
    for (i = 0; i < head.length; i++) {
      if (head[i].getAttribute("data-col") === col) { idx = i; }
      head[i].removeAttribute("aria-sort");
    }
    if (idx < 0) { return false; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r, k) {
      return {row: r, key: value(r.cells[idx]), pos: k};
    });
    rows.sort(function (x, y) {
      if (x.key === null || y.key === null) {  // missing values always last
        return (x.key === null) - (y.key === null) || x.pos - y.pos;
      }
      var c = compare(x.key, y.key);
      return (desc ? -c : c) || x.pos - y.pos;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    head[idx].setAttribute("aria-sort", desc ? "descending" : "ascending");
    table.setAttribute("data-sorted-by", (desc ? "-" : "") + col);
    return true;
  }
  function sortAll(spec) {
    var desc = spec.charAt(0) === "-", col = desc ? spec.slice(1) : spec, n = 0;
    document.querySelectorAll("table.sortable").forEach(function (t) { if (sortTable(t, col, desc)) { n++; } });
    return n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      function go() {
        var col = th.getAttribute("data-col"), cur = th.getAttribute("aria-sort"), desc;
        if (cur === "ascending") { desc = true; }
        else if (cur === "descending") { desc = false; }
        else { desc = th.getAttribute("data-dir") === "desc"; }
        sortTable(table, col, desc);
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
    });
  });
  function fromHash() {
    var m = /^#sort=(.+)$/.exec(window.location.hash);
    if (m) { document.body.setAttribute("data-hash-sorted", String(sortAll(decodeURIComponent(m[1])))); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
  window.mmbenchSort = sortAll;
  document.body.setAttribute("data-js", "ready");
})();
