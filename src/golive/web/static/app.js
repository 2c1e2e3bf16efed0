// golive web app: uploads, form submission, and a job page that follows its job (server-sent events).
"use strict";

function $(sel) { return document.querySelector(sel); }

async function answer(response) {
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
  return body;
}

function errorText(body) { return (body.error || "failed") + (body.hint ? " — " + body.hint : ""); }

// ------------------------------------------------------------ uploads: streamed as the request body
// Uploads still on their way, by input id: a form waits for them before it submits.
const pendingUploads = new Map();

async function uploadFile(input) {
  const id = input.dataset.upload, purpose = input.dataset.purpose;
  const status = document.getElementById(id + "-status"), hidden = document.getElementById(id + "-upload");
  const file = input.files[0];
  if (!file) return;
  hidden.value = "";
  status.className = "upload-status";
  status.textContent = "uploading " + file.name + "…";
  const kind = purpose === "data" ? "data" : "model";
  const guess = $("#framework-guess");
  if (guess && kind === "model") { guess.textContent = ""; guess.className = "guess"; }
  const response = await fetch("/api/uploads?name=" + encodeURIComponent(file.name) + "&purpose=" + kind, { method: "POST", body: file });
  const body = await answer(response);
  if (!response.ok) {
    status.className = "upload-status error";
    status.textContent = errorText(body);
    return;
  }
  hidden.value = body.id;
  status.textContent = body.name + " (" + (body.size / 1048576).toFixed(2) + " MB) uploaded";
  if (purpose === "visualize") { window.location = "/visualize?model=upload-" + body.id; return; }
  if (guess && kind === "model") {
    let text = body.framework ? "framework: " + body.framework + " (guessed from the file)" : (body.framework_error || "");
    if (body.task_text) text += "; Hugging Face folder: " + body.task_text;
    if (body.task_error) text += "; " + body.task_error;
    guess.textContent = text;
    guess.className = body.framework && !body.task_error ? "guess" : "guess error";
    const task = document.querySelector("select[name='convert.task']");
    if (task && task.options.length) task.options[0].textContent = body.task ? "(default: guessed " + body.task + ")" : "(default: guessed)";
  }
}

for (const input of document.querySelectorAll("input[type=file][data-upload]")) {
  input.addEventListener("change", () => {
    const id = input.dataset.upload;
    const done = uploadFile(input).finally(() => { if (pendingUploads.get(id) === done) pendingUploads.delete(id); });
    pendingUploads.set(id, done);
  });
}

// ------------------------------------------------------------ forms: JSON to /api/jobs/...
function formBody(form) {
  const body = {};
  for (const el of form.querySelectorAll("[name]")) {
    if (el.disabled || el.type === "file") continue;
    const [section, name] = el.name.includes(".") ? el.name.split(".", 2) : [null, el.name];
    let value;
    if (el.closest(".choices")) {
      if (!el.checked) { body[section] = body[section] || {}; body[section][name] = body[section][name] || []; continue; }
      body[section] = body[section] || {};
      (body[section][name] = body[section][name] || []).push(el.value);
      continue;
    }
    value = el.type === "checkbox" ? el.checked : el.value;
    if (section === null) { if (value) body[name] = value; continue; }
    if ((section === "model" || section === "data") && !value) continue;
    body[section] = body[section] || {};
    body[section][name] = value;
  }
  return body;
}

const jobForm = $("#job-form");
if (jobForm) {
  jobForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#form-error"), button = $("#submit");
    error.textContent = "";
    button.disabled = true;
    try {
      if (pendingUploads.size) {  // submitting now would send no upload id: wait for the file to arrive
        error.textContent = "waiting for the upload to finish…";
        await Promise.all(pendingUploads.values());
        error.textContent = "";
      }
      const response = await fetch(jobForm.dataset.action, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(formBody(jobForm)) });
      const body = await answer(response);
      if (!response.ok) { error.textContent = errorText(body); return; }
      window.location = body.url;
    } finally {
      button.disabled = false;
    }
  });
}

// ------------------------------------------------------------ a job page: log, progress and state as they happen
const jobBox = $("#job");
if (jobBox) {
  const id = jobBox.dataset.job;
  let source = null;

  function showState(job) {
    const state = $("#state");
    state.textContent = job.state;
    state.className = "state " + job.state;
    $("#attempt").textContent = job.attempt;
    $("#duration").textContent = job.duration_text;
    $("#job-error").textContent = job.error || "";
    $("#cancel").hidden = !job.cancellable;
    $("#retry").hidden = !job.retryable;
    jobBox.dataset.terminal = job.terminal ? "yes" : "no";
  }

  function follow() {
    $("#log").textContent = "";
    source = new EventSource("/api/jobs/" + id + "/events");
    source.addEventListener("log", (e) => {
      const log = $("#log");
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent += JSON.parse(e.data);
      if (atEnd) log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data), bar = $("#bar");
      if (p.total) { bar.max = p.total; bar.value = p.done || 0; } else { bar.removeAttribute("value"); }
      $("#progress-text").textContent = p.step + ": " + p.message;
    });
    source.addEventListener("state", (e) => showState(JSON.parse(e.data)));
    source.addEventListener("end", async (e) => {
      source.close();
      const bar = $("#bar");
      if (JSON.parse(e.data) === "succeeded") { bar.max = 1; bar.value = 1; }
      const response = await fetch("/jobs/" + id + "/results");
      if (response.ok) $("#results").innerHTML = await response.text();
    });
  }

  async function act(what) {
    const response = await fetch("/api/jobs/" + id + "/" + what, { method: "POST" });
    const body = await answer(response);
    if (!response.ok) { $("#job-error").textContent = errorText(body); return; }
    showState(body);
    if (what === "retry") { if (source) source.close(); follow(); }
  }

  $("#cancel").addEventListener("click", () => act("cancel"));
  $("#retry").addEventListener("click", () => act("retry"));
  follow();
}

// Where the time goes: the switch between the profiled graphs, the panel of a clicked node, the Profile action
document.addEventListener("change", (e) => {
  if (e.target.name !== "profile-graph") return;
  for (const view of document.querySelectorAll(".profile-view")) view.hidden = view.dataset.label !== e.target.value;
});
document.addEventListener("click", async (e) => {
  const node = e.target.closest && e.target.closest(".pnode");
  if (node) {
    const panel = document.getElementById("profile-panel");
    panel.replaceChildren();
    const title = document.createElement("h3");
    title.textContent = node.dataset.name + " (" + node.dataset.op + ")";
    const figures = document.createElement("p");
    figures.className = "figures";
    figures.textContent = node.dataset.figures;
    panel.append(title, figures);
    return;
  }
  if (e.target.id === "profile-job") {
    e.target.disabled = true;
    const response = await fetch("/api/jobs/" + e.target.dataset.job + "/profile", { method: "POST" });
    const body = await answer(response);
    if (response.ok) { window.location = body.url; } else { e.target.disabled = false; alert(errorText(body)); }
  }
});
