// The dashboard's own script: what htmx does not do. It never builds HTML; the server renders
// every fragment (escaped) and htmx swaps it in.
(function () {
  "use strict";
  var htmx = window.htmx;
  if (!htmx) return;

  // Reconnect soon after a restart: 0.5-1 s, doubling per failed try up to 10 s.
  htmx.config.wsReconnectDelay = function (retryCount) {
    var ceiling = Math.min(10000, 1000 * Math.pow(2, retryCount));
    return ceiling * (0.5 + Math.random() / 2);
  };

  // Every (re)connect says which seq the page reflects, so the server sends what came after.
  htmx.createWebSocket = function (url) {
    var marker = document.getElementById("live-seq");
    var seq = marker ? marker.getAttribute("data-seq") : null;
    var target = new URL(url, window.location.href);
    if (seq !== null && /^\d+$/.test(seq)) target.searchParams.set("after_seq", seq);
    var socket = new WebSocket(target.toString());
    socket.binaryType = htmx.config.wsBinaryType;
    return socket;
  };

  function setBadge(state, text) {
    var badge = document.getElementById("live-badge");
    if (!badge) return;
    badge.className = "live-badge " + state;
    badge.textContent = text;
  }
  // A page that stays away for more than a few seconds says plainly that what it shows is old.
  var STALE_AFTER_MS = 5000;
  var lostAt = null;
  var staleTimer = null;
  var stale = false;
  function lost() {
    if (lostAt === null) lostAt = new Date();
    if (!stale) setBadge("reconnecting", "reconnecting");
    if (staleTimer === null) {
      staleTimer = window.setTimeout(function () {
        stale = true;
        setBadge("stale", "stale: not updated since " + lostAt.toLocaleTimeString() + "; reconnecting");
      }, STALE_AFTER_MS);
    }
  }
  document.addEventListener("htmx:wsConnecting", function () {
    var badge = document.getElementById("live-badge");
    if (badge && !badge.classList.contains("connecting")) lost();
  });
  document.addEventListener("htmx:wsOpen", function () {
    window.clearTimeout(staleTimer);
    staleTimer = null;
    lostAt = null;
    stale = false;
    setBadge("live", "live");
  });
  document.addEventListener("htmx:wsClose", lost);

  // Lists that grow live keep their newest rows only: the first ones of a newest-first list, the
  // last ones of a list that grows at its end (a task's timeline), whose "older" links then lead
  // to the events before the first row left.
  function trimLists() {
    // A page reads its seq before its lists, so a row that committed in between arrives again
    // with the catch-up (never missed, at worst twice): the copy goes.
    var eventLists = document.querySelectorAll("ol.events");
    for (var e = 0; e < eventLists.length; e++) {
      var seen = {};
      var all = eventLists[e].querySelectorAll(":scope > li[data-seq]");
      for (var r = 0; r < all.length; r++) {
        var key = all[r].getAttribute("data-seq");
        if (seen[key]) all[r].remove();
        else seen[key] = true;
      }
    }
    var lists = document.querySelectorAll("[data-cap]");
    for (var i = 0; i < lists.length; i++) {
      var cap = parseInt(lists[i].getAttribute("data-cap"), 10);
      if (!(cap > 0)) continue;
      var rows = lists[i].querySelectorAll(":scope > li[data-seq]");
      if (lists[i].getAttribute("data-keep") !== "last") {
        for (var j = cap; j < rows.length; j++) rows[j].remove();
        continue;
      }
      if (rows.length <= cap) continue;
      for (var k = 0; k < rows.length - cap; k++) rows[k].remove();
      var firstSeq = rows[rows.length - cap].getAttribute("data-seq");
      var links = document.querySelectorAll('a[data-older-of="' + lists[i].id + '"]');
      for (var n = 0; n < links.length; n++) {
        var cursor = links[n].getAttribute("data-cursor");
        if (cursor) {
          var url = new URL(links[n].href, window.location.href);
          url.searchParams.set(cursor, firstSeq);
          links[n].href = url.toString();
        }
        links[n].hidden = false;
      }
    }
  }
  document.addEventListener("htmx:wsAfterMessage", trimLists);

  // Relative times ("12s ago", "in 4s") stay true between pushes; the exact time is the title.
  function relative(ms) {
    var seconds = Math.round(ms / 1000);
    var size = Math.abs(seconds);
    if (size < 2) return "just now";
    var text =
      size < 60
        ? size + "s"
        : size < 3600
          ? Math.floor(size / 60) + "m"
          : size < 86400
            ? Math.floor(size / 3600) + "h"
            : Math.floor(size / 86400) + "d";
    return seconds < 0 ? "in " + text : text + " ago";
  }
  function refreshTimes() {
    var now = Date.now();
    var times = document.querySelectorAll("time[data-relative], time[data-countdown]");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (isNaN(at)) continue;
      var text = times[i].hasAttribute("data-countdown") && at <= now ? "closing" : relative(now - at);
      if (times[i].textContent !== text) times[i].textContent = text;
    }
  }
  setInterval(refreshTimes, 1000);
})();
