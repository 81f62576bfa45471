// jobtrack dashboard: live updates without a page reload.
// The element marked data-live names a stream (Server-Sent Events) and a fragment URL.
// Whenever the stream reports a change (and every 30 s, so "2 minutes ago" stays true)
// the fragment is fetched again, and each of its [data-part] elements replaces the
// page's element of the same data-part. The server renders every fragment; this script
// inserts nothing of its own.
(function () {
  "use strict";
  var section = document.querySelector("[data-live]");
  var badge = document.getElementById("live");
  if (!section || !window.EventSource) { return; }
  if (section.hasAttribute("data-paused")) {  // an older page of the list: stays still
    if (badge) { badge.textContent = "paused"; }
    return;
  }
  var pending = null, busy = false, again = false;

  function refresh() {
    pending = null;
    if (busy) { again = true; return; }
    busy = true;
    fetch(section.getAttribute("data-fragment"), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = document.createElement("template");
        fresh.innerHTML = html;
        fresh.content.querySelectorAll("[data-part]").forEach(function (part) {
          var name = part.getAttribute("data-part");
          var old = section.querySelector('[data-part="' + name + '"]');
          if (old) { old.replaceWith(part); }
        });
      })
      .catch(function () { /* the next change or tick tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; soon(); }
      });
  }
  function soon() {  // at most one fetch per 500 ms, however fast changes come
    if (pending === null) { pending = window.setTimeout(refresh, 500); }
  }
  function setLive(text, on) {
    if (!badge) { return; }
    badge.textContent = text;
    badge.classList.toggle("on", on);
  }

  var stream = new EventSource(section.getAttribute("data-stream"));
  stream.addEventListener("open", function () { setLive("live", true); soon(); });
  stream.addEventListener("job", soon);
  stream.addEventListener("error", function () { setLive("reconnecting…", false); });
  window.setInterval(soon, 30000);
})();
