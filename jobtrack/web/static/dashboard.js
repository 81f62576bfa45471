// jobtrack dashboard: live updates without a page reload.
// The element marked data-live names a stream (Server-Sent Events) and a fragment URL.
// Whenever the stream reports a change (and every 30 s, so "2 minutes ago" stays true)
// the fragment is fetched again, and each of its [data-part] elements replaces the
// page's element of the same data-part. The server renders every fragment; this script
// inserts nothing of its own.
(function () {
  "use strict";
  // The browser's time zone, for the server to show times in it beside UTC (the next
  // render: a live page's first refresh, or the next page).
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && /^[A-Za-z0-9_\/+-]{1,64}$/.test(zone) &&
        document.cookie.split("; ").indexOf("jobtrack_tz=" + zone) < 0) {
      document.cookie = "jobtrack_tz=" + zone + "; path=/; max-age=31536000; SameSite=Strict";
    }
  } catch (e) { /* no Intl: times stay in UTC */ }
  var section = document.querySelector("[data-live]");
  var badge = document.getElementById("live");
  if (!section || !window.EventSource) { return; }
  if (section.hasAttribute("data-paused")) {  // an older page of the list: stays still
    if (badge) { badge.textContent = "paused"; }
    return;
  }
  var pending = null, pendingAt = 0, busy = false, again = false;
  // On a job page, its workflow's tree is a part of its own, read from the whole
  // workflow: it is fetched again at most every 2 s, or ten times as long as its last
  // fetch took, whichever is longer; the job's own parts follow each change of the job.
  var jobId = section.getAttribute("data-job-id");
  // Stale while changes !== shown; the page itself was rendered with a fresh one.
  var tree = {changes: 0, shown: 0, due: Date.now() + 2000};

  function keepOpen(old, part) {  // a group opened by hand stays open
    old.querySelectorAll("li.tree-group[data-group-id] > details[open]").forEach(function (d) {
      var id = d.parentNode.getAttribute("data-group-id");
      part.querySelectorAll("li.tree-group[data-group-id]").forEach(function (li) {
        if (li.getAttribute("data-group-id") === id) {
          li.querySelector(":scope > details").setAttribute("open", "");
        }
      });
    });
  }
  function keepPicked(old, part) {  // rows ticked for a selection stay ticked
    var picked = {};
    old.querySelectorAll('input[name="ids"]:checked').forEach(function (box) {
      picked[box.value] = true;
    });
    part.querySelectorAll('input[name="ids"]').forEach(function (box) {
      if (picked[box.value]) { box.checked = true; }
    });
  }
  function refresh() {
    pending = null;
    if (busy) { again = true; return; }
    busy = true;
    var url = section.getAttribute("data-fragment");
    var withTree = jobId === null || (tree.changes !== tree.shown && Date.now() >= tree.due);
    var started = Date.now(), changes = tree.changes;
    fetch(withTree ? url : url + "&tree=0", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = document.createElement("template");
        fresh.innerHTML = html;
        fresh.content.querySelectorAll("[data-part]").forEach(function (part) {
          var name = part.getAttribute("data-part");
          var old = section.querySelector('[data-part="' + name + '"]') ||
            document.querySelector('footer [data-part="' + name + '"]');  // which server
          if (old) {
            keepOpen(old, part);
            keepPicked(old, part);
            old.replaceWith(part);
          }
        });
        document.dispatchEvent(new CustomEvent("jobtrack:refreshed"));
        if (withTree) { tree.shown = changes; }  // a change during the fetch: still stale
      })
      .catch(function () { /* the next change or tick tries again (a stale tree: when due) */ })
      .then(function () {
        busy = false;
        if (withTree) { tree.due = Date.now() + Math.max(2000, 10 * (Date.now() - started)); }
        if (again) { again = false; soon(); }
        if (jobId !== null && tree.changes !== tree.shown) { soon(tree.due - Date.now()); }
      });
  }
  function soon(wait) {  // at most one fetch per 500 ms, however fast changes come
    var at = Date.now() + Math.max(wait || 0, 500);
    if (pending !== null) {
      if (pendingAt <= at) { return; }
      window.clearTimeout(pending);
    }
    pendingAt = at;
    pending = window.setTimeout(refresh, at - Date.now());
  }
  function changed(event) {
    if (jobId === null) { soon(); return; }
    tree.changes += 1;  // every change in the workflow shows in its tree, this job's too
    var id = null;
    try { id = JSON.parse(event.data).id; } catch (e) { /* then as another job's */ }
    soon(id === jobId ? 0 : tree.due - Date.now());
  }
  function tick() { tree.changes += 1; soon(); }
  function setLive(text, on) {
    if (!badge) { return; }
    badge.textContent = text;
    badge.classList.toggle("on", on);
  }

  var stream = new EventSource(section.getAttribute("data-stream"));
  stream.addEventListener("open", function () { setLive("live", true); tick(); });
  stream.addEventListener("job", changed);
  stream.addEventListener("error", function () { setLive("reconnecting…", false); });
  window.setInterval(tick, 30000);
})();

// Keys (? lists them): / search, j and k move between the list's rows, Enter opens the
// row (its link has the focus), x ticks it, r retries it (its confirmation page; on a job
// page, the job's). The help is in the page; the script only shows it.
(function () {
  "use strict";
  var current = null;
  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("tr.job[data-job-id]"));
  }
  function row() {
    return rows().filter(function (r) { return r.getAttribute("data-job-id") === current; })[0];
  }
  function mark(found, focus) {
    rows().forEach(function (r) { r.classList.remove("current"); });
    if (!found) { current = null; return; }
    current = found.getAttribute("data-job-id");
    found.classList.add("current");
    var link = found.querySelector("td.name a");
    if (link && focus) { link.focus(); }
    if (found.scrollIntoView) { found.scrollIntoView({block: "nearest"}); }
  }
  function move(step) {
    var all = rows(), at = all.indexOf(row());
    if (!all.length) { return; }
    var next = at < 0 ? (step > 0 ? 0 : all.length - 1) : at + step;
    mark(all[Math.min(Math.max(next, 0), all.length - 1)], true);
  }
  document.addEventListener("jobtrack:refreshed", function () {
    var found = row();
    if (found) { mark(found, document.activeElement === document.body); }
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target, tag = target && target.tagName;
    var keys = document.getElementById("keys");
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) {
      if (event.key === "Escape" && target.blur) { target.blur(); }
      return;
    }
    if (event.key === "/") {
      var search = document.querySelector('input[name="search"]');
      if (search) { event.preventDefault(); search.focus(); }
    } else if (event.key === "j") {
      move(1);
    } else if (event.key === "k") {
      move(-1);
    } else if (event.key === "x") {
      var box = row() && row().querySelector('input[name="ids"]');
      if (box) { box.checked = !box.checked; }
    } else if (event.key === "r") {
      var here = row() || document.querySelector(".job-head[data-retry]");
      var url = here && here.getAttribute("data-retry");
      if (url) { window.location.assign(url); }
    } else if (event.key === "?") {
      if (keys) { keys.hidden = !keys.hidden; }
    } else if (event.key === "Escape" && keys) {
      keys.hidden = true;
    }
  });
})();
