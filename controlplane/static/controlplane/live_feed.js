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
    pending_approval: "denied",
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
    if (call.person) {
      var person = document.createElement("span");
      person.className = "person";
      person.title = call.oauth_client || "";
      person.textContent = call.person;
      addCell(row, "").appendChild(person);
    } else {
      var key = document.createElement("code");
      key.textContent = call.key_prefix;
      addCell(row, "").appendChild(key);
    }
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

  // A held call (status "pending") joins the approvals table; a decided one shows its status
  // and loses its Decide button.
  var approvals = document.getElementById("pending-approvals");
  var approvalRows = document.getElementById("approval-rows");
  var approvalsCount = document.getElementById("approvals-count");

  function showApproval(approval) {
    if (!approvals) {
      return;
    }
    var row = approvalRows.querySelector('tr[data-approval="' + String(approval.id) + '"]');
    if (!row) {
      if (approval.status !== "pending") {
        return;
      }
      var empty = approvalRows.querySelector(".approvals-empty");
      if (empty) {
        empty.remove();
      }
      row = document.createElement("tr");
      row.dataset.approval = String(approval.id);
      row.dataset.tenant = approval.tenant;
      addCell(row, String(approval.id));
      addCell(row, String(approval.created_at).substring(11, 19));
      addCell(row, approval.tenant);
      addCell(row, approval.tool);
      addCell(row, approval.asked_by);
      addCell(row, String(approval.expires_at).substring(11, 16));
      addCell(row, approval.status, "approval-status");
      var link = document.createElement("a");
      link.className = "button";
      link.href = approvals.dataset.decideUrl + encodeURIComponent(approval.id) + "/decide/";
      link.textContent = "Decide";
      addCell(row, "").appendChild(link);
      approvalRows.insertBefore(row, approvalRows.firstChild);
    } else {
      row.querySelector(".approval-status").textContent =
        approval.status + (approval.decided_by ? " by " + approval.decided_by : "");
      if (approval.status !== "pending") {
        var button = row.querySelector("a.button");
        if (button) {
          button.remove();
        }
      }
    }
    approvalsCount.textContent = String(
      approvalRows.querySelectorAll("tr[data-approval] a.button").length
    );
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
      } else if (message.type === "approval") {
        showApproval(message);
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
