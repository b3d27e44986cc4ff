// The preview page: listens to the server's event stream and shows the selected issue.
// The email itself is only ever loaded into sandboxed frames (no scripts run in it).
"use strict";

const $ = (id) => document.getElementById(id);
const page = {
  selected: null, // {period, language}
  version: -1, // the build the frames show
  state: null, // last state from the server
  view: localStorage.getItem("newsletter-preview-view") || "both",
  loads: 0,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function key(issue) {
  return `${issue.period}/${issue.language}`;
}

function fromHash() {
  const match = /^#(\d{4}-\d{2})\/([A-Za-z0-9-]+)$/.exec(location.hash);
  return match ? { period: match[1], language: match[2] } : null;
}

// --- views ---

function setView(view) {
  page.view = view;
  localStorage.setItem("newsletter-preview-view", view);
  $("frames").dataset.view = view;
  for (const button of document.querySelectorAll("[data-view]")) {
    if (button.tagName === "BUTTON") button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
}

// --- state from the server ---

function onState(state) {
  page.state = state;
  renderStatus(state);
  renderProblems(state.problems);
  const issues = state.issues;
  const wanted = page.selected || fromHash();
  const exists = (sel) => sel && issues.some((i) => key(i) === key(sel));
  let next = exists(wanted) ? wanted : null;
  if (!next && issues.length) {
    const live = issues.filter((i) => i.live);
    const pick = live[0] || issues[0];
    next = { period: pick.period, language: pick.language };
  }
  renderIndex(issues, next);
  $("empty").hidden = issues.length > 0;
  $("frames").hidden = issues.length === 0;
  $("envelope").hidden = issues.length === 0;
  if (!next) return;
  const changed = !page.selected || key(next) !== key(page.selected);
  const rebuilt = state.version !== page.version && state.live.period === next.period;
  if (changed || rebuilt) select(next, state.version);
}

function renderStatus(state) {
  const status = $("status");
  if (state.building) {
    status.dataset.state = "building";
    status.textContent = "Rebuilding…";
  } else if (!state.ok) {
    status.dataset.state = "failed";
    status.textContent = "Build failed";
  } else if (state.built_at) {
    status.dataset.state = "ok";
    const time = new Date(state.built_at).toLocaleTimeString();
    const took = state.duration_ms !== null ? ` in ${(state.duration_ms / 1000).toFixed(1)} s` : "";
    status.textContent = `Live · built ${time}${took}`;
  } else {
    status.dataset.state = "ok";
    status.textContent = "Live";
  }
}

function renderProblems(problems) {
  const box = $("problems");
  const list = $("problem-list");
  list.replaceChildren(
    ...problems.map((p) => {
      const where = p.path ? `${p.path}${p.line ? `:${p.line}` : ""}` : null;
      return el("li", { "data-path": p.path, "data-line": p.line }, where ? el("code", {}, where) : null, where ? ": " : "", p.message);
    }),
  );
  box.hidden = problems.length === 0;
}

function renderIndex(issues, current) {
  const byPeriod = new Map();
  for (const issue of issues) {
    if (!byPeriod.has(issue.period)) byPeriod.set(issue.period, []);
    byPeriod.get(issue.period).push(issue);
  }
  if (!byPeriod.size) {
    $("index").replaceChildren(el("p", { class: "none" }, "No issues built yet."));
    return;
  }
  const rows = [...byPeriod].map(([period, list]) =>
    el(
      "tr",
      {},
      el("th", { scope: "row" }, period, list[0].live ? el("span", { class: "live", title: "Rebuilt when you save" }, "live") : null),
      el(
        "td",
        {},
        list.map((issue) =>
          el(
            "a",
            {
              href: `#${key(issue)}`,
              "data-issue": key(issue),
              title: issue.subject,
              "aria-current": current && key(current) === key(issue) ? "true" : null,
            },
            issue.language,
          ),
        ),
      ),
    ),
  );
  $("index").replaceChildren(el("table", {}, el("tbody", {}, rows)));
}

// --- one issue ---

async function select(selection, version) {
  page.selected = selection;
  page.version = version;
  const load = ++page.loads;
  if (location.hash !== `#${key(selection)}`) history.replaceState(null, "", `#${key(selection)}`);
  for (const link of document.querySelectorAll("#index a[data-issue]")) {
    link.setAttribute("aria-current", String(link.dataset.issue === key(selection)));
  }
  const base = `/outbox/${selection.period}/${selection.language}/`;
  const stamp = `?v=${version}`;
  loadFrame($("frame-desktop"), base + "index.html" + stamp);
  loadFrame($("frame-mobile"), base + "index.html" + stamp);
  const [text, info] = await Promise.all([
    fetch(base + "digest.txt" + stamp).then((r) => (r.ok ? r.text() : "")),
    fetch(`/api/issues/${selection.period}/${selection.language}${stamp}`).then((r) => (r.ok ? r.json() : null)),
  ]).catch(() => ["", null]);
  if (load !== page.loads) return; // a newer selection or build won
  $("text").textContent = text;
  renderInfo(info, selection);
  document.body.dataset.version = String(version);
}

function loadFrame(frame, url) {
  frame.onload = () => {
    openLinksInNewTabs(frame);
    fitFrame(frame);
    frame.dataset.loaded = url;
  };
  frame.src = url;
}

// A link followed inside the frame would replace the email (and most sites refuse to be framed).
// Only the page's copy of the document changes, never the file in outbox/.
function openLinksInNewTabs(frame) {
  try {
    const doc = frame.contentDocument;
    if (!doc || !doc.head || doc.querySelector("base[target]")) return;
    const base = doc.createElement("base");
    base.target = "_blank";
    doc.head.prepend(base);
  } catch (error) {
    // Another origin: links behave as the browser decides.
  }
}

// The frames are as tall as the email, so only the page scrolls, and the frame's own width is
// all the email gets (no scrollbar eating into the 375 px).
function fitFrame(frame) {
  try {
    const doc = frame.contentDocument;
    if (!doc || !doc.documentElement || !doc.body) return;
    // Not documentElement.scrollHeight: that never drops below the frame's current height.
    const content = Math.max(doc.documentElement.getBoundingClientRect().height, doc.body.scrollHeight);
    frame.style.height = `${Math.max(300, Math.ceil(content))}px`;
  } catch (error) {
    // Another origin: keep the fixed height from the stylesheet.
  }
}

function renderInfo(info, selection) {
  const headers = $("headers");
  const checks = $("checks");
  if (!info) {
    headers.replaceChildren();
    checks.replaceChildren(el("li", { "data-status": "error" }, "This issue could not be read."));
    return;
  }
  $("current").textContent = `${selection.period} · ${selection.language} — ${info.subject}`;
  document.title = `Preview: ${info.subject}`;
  const rows = info.headers.map(([name, value]) => [
    el("dt", {}, name),
    el("dd", { class: name === "Subject" ? "subject" : null, "data-header": name }, value),
  ]);
  if (info.preheader) rows.push([el("dt", {}, "Preview text"), el("dd", { "data-header": "Preheader" }, info.preheader)]);
  headers.replaceChildren(...rows.flat());

  checks.replaceChildren(
    ...info.checks.map((check) => {
      const details = check.details.length
        ? el(
            "details",
            { open: check.status === "error" ? "" : null },
            el("summary", {}, check.details.length === 1 ? "1 detail" : `${check.details.length} details`),
            el("ul", {}, check.details.map((d) => el("li", {}, d))),
          )
        : null;
      return el(
        "li",
        { "data-check": check.id, "data-status": check.status },
        el("div", { class: "title" }, check.title),
        el("div", { class: "summary" }, check.summary),
        details,
      );
    }),
  );
  const overall = $("overall");
  overall.dataset.status = info.status;
  overall.textContent = { ok: "all good", warning: "warnings", error: "problems" }[info.status];
}

// --- wiring ---

function connect() {
  const events = new EventSource("/events");
  events.addEventListener("state", (event) => onState(JSON.parse(event.data)));
  events.addEventListener("error", () => {
    const status = $("status");
    status.dataset.state = "offline";
    status.textContent = "Server stopped? Reconnecting…";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setView(page.view);
  for (const button of document.querySelectorAll("button[data-view]")) {
    button.addEventListener("click", () => setView(button.dataset.view));
  }
  window.addEventListener("hashchange", () => {
    const wanted = fromHash();
    if (wanted && page.state && (!page.selected || key(wanted) !== key(page.selected))) {
      select(wanted, page.state.version);
    }
  });
  connect();
});
