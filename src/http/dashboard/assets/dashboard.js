// The instructor dashboard's only script: keeps the live queue view current by polling
// /instructor/queue/live every two seconds. Everything else works without it.
(function () {
  "use strict";
  var live = document.getElementById("queue-live");
  if (!live) { return; }
  var endpoint = live.getAttribute("data-endpoint");
  function setText(name, value) {
    var node = live.querySelector('[data-field="' + name + '"]');
    if (node) { node.textContent = value; }
  }
  function refresh() {
    fetch(endpoint, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.href = "/instructor/sign-in"; return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (!data) { return; }
        setText("queued", String(data.queued));
        setText("running", String(data.running));
        setText("finished", String(data.finishedRecently));
        setText("problems", String(data.problemsRecently));
        setText("mean-wait", data.meanWaitMs === null ? "–" : data.meanWaitMs.toFixed(1) + " ms");
        var running = live.querySelector('[data-field="running-job"]');
        if (running) { running.innerHTML = data.runningJobHtml; }
        var chart = live.querySelector('[data-field="chart"]');
        if (chart) { chart.innerHTML = data.chartSvg; }
        setText("updated", new Date().toLocaleTimeString());
      })
      .catch(function () { setText("updated", "connection lost; retrying"); });
  }
  refresh();
  window.setInterval(refresh, 2000);
}());
