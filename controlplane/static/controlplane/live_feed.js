// The live feed page: prepends each tool call the websocket sends, newest first.
// Loaded as a static file (the Content Security Policy forbids inline scripts); every value
// from the server is written with textContent, never parsed as HTML.
(function () {
  "use strict";

  var table = document.getElementById("live-feed");
  if (!table) {
    return;
  }
  var rows = document.getElementById("live-feed-rows");
  var statusLabel = document.getElementById("live-feed-status");
  var tenantSelect = document.getElementById("live-feed-tenant");
  var MAX_ROWS = 200;
  var socket = null;
  var retryDelay = 1000;

  // As controlplane.operator.dashboard.outcome_group.
  var GROUPS = {
    ok: "ok",
    denied: "denied",
    rate_limited: "rate_limited",
    invalid_input: "client_error",
    upstream_error: "qontak_error",
  };

  function outcomeGroup(outcome) {
    return GROUPS[outcome] || "error";
  }

  function setStatus(state, text) {
    statusLabel.dataset.state = state;
    statusLabel.textContent = text;
  }

  function addCell(row, text, className) {
    var cell = document.createElement("td");
    if (className) {
      cell.className = className;
    }
    cell.textContent = text;
    row.appendChild(cell);
    return cell;
  }

  function showOnlySelectedTenant() {
    var tenant = tenantSelect.value;
    Array.prototype.forEach.call(rows.querySelectorAll("tr[data-tenant]"), function (row) {
      row.hidden = Boolean(tenant) && row.dataset.tenant !== tenant;
    });
  }

  function addCall(call) {
    var empty = rows.querySelector(".feed-empty");
    if (empty) {
      empty.remove();
    }
    var row = document.createElement("tr");
    row.className = "live-row fresh";
    row.dataset.tenant = call.tenant;
    row.dataset.callId = String(call.id);
    var time = document.createElement("a");
    time.href = table.dataset.auditUrl + encodeURIComponent(call.id) + "/change/";
    time.title = "Open the audit row";
    time.textContent = String(call.created_at).substring(11, 19);
    addCell(row, "").appendChild(time);
    addCell(row, call.tenant);
    var key = document.createElement("code");
    key.textContent = call.key_prefix;
    addCell(row, "").appendChild(key);
    addCell(row, call.tool, "tool");
    var badge = document.createElement("span");
    badge.className = "outcome outcome-" + outcomeGroup(call.outcome);
    badge.textContent = call.outcome;
    addCell(row, "").appendChild(badge);
    var reason = call.message || "";
    var reasonCell = addCell(row, reason.length > 80 ? reason.substring(0, 79) + "…" : reason || "–", "reason");
    reasonCell.title = reason;
    addCell(row, call.upstream_status === null ? "–" : String(call.upstream_status), "num");
    addCell(row, Number(call.latency_ms).toFixed(1), "num");
    rows.insertBefore(row, rows.firstChild);
    window.setTimeout(function () {
      row.classList.remove("fresh");
    }, 2500);
    while (rows.children.length > MAX_ROWS) {
      rows.removeChild(rows.lastChild);
    }
  }

  function socketUrl() {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var query = tenantSelect.value ? "?tenant=" + encodeURIComponent(tenantSelect.value) : "";
    return scheme + "//" + window.location.host + table.dataset.socketPath + query;
  }

  function connect() {
    setStatus("connecting", "Connecting…");
    socket = new WebSocket(socketUrl());
    socket.addEventListener("open", function () {
      retryDelay = 1000;
      setStatus("open", "Live");
    });
    socket.addEventListener("message", function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "tool_call") {
        addCall(message);
      }
    });
    socket.addEventListener("close", function () {
      setStatus("closed", "Disconnected, retrying… (still logged in?)");
      window.setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  tenantSelect.addEventListener("change", function () {
    var url = new URL(window.location.href);
    if (tenantSelect.value) {
      url.searchParams.set("tenant", tenantSelect.value);
    } else {
      url.searchParams.delete("tenant");
    }
    window.history.replaceState(null, "", url);
    showOnlySelectedTenant();
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ tenant: tenantSelect.value }));
    }
  });

  // Tell the server someone is still watching; without it, calls are not published at all.
  window.setInterval(function () {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "ping" }));
    }
  }, 30000);

  connect();
})();
