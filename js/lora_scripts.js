// lora-scripts front end: a live loss chart + progress + latest sample on Train LoRA, and an editable caption
// list on Auto Caption. Existing node callbacks are chained, never replaced.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TRAIN = "LoraScriptsTrainLoRA";
const CAPTION = "LoraScriptsAutoCaption";

function chain(object, name, fn) {
  const original = object[name];
  object[name] = function (...args) {
    const result = original?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

function drawChart(canvas, state) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#1e1e1e"; ctx.fillRect(0, 0, w, h);
  ctx.fillStyle = "#ddd"; ctx.font = "12px sans-serif";
  const head = state.total ? `step ${state.step}/${state.total}` : "waiting for training";
  const loss = state.losses.length ? `  loss ${state.losses[state.losses.length - 1][1].toFixed(4)}` : "";
  const eta = state.eta != null ? `  eta ${Math.round(state.eta)}s` : "";
  ctx.fillText(head + loss + eta + (state.message ? `  ${state.message}` : ""), 8, 16);
  if (state.total) {
    ctx.fillStyle = "#3a6"; ctx.fillRect(8, 24, (w - 16) * Math.min(1, state.step / state.total), 4);
  }
  if (state.estimate) {
    ctx.fillStyle = "#999"; ctx.font = "11px sans-serif";
    ctx.fillText(state.estimate, 8, 42);
  }
  // training (blue) and validation (orange) loss on one scale, so the gap between them reads at a glance
  const series = [[state.losses, "#4af"], [state.validation || [], "#f93"]];
  const all = series.flatMap(([pts]) => pts);
  if (all.length > 1) {
    const values = all.map(p => p[1]), steps = all.map(p => p[0]);
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const s0 = Math.min(...steps), s1 = Math.max(...steps);
    const at = ([s, v]) => [8 + ((s - s0) / Math.max(1, s1 - s0)) * (w - 16), h - 8 - ((v - lo) / span) * (h - 56)];
    for (const [pts, colour] of series) {
      if (pts.length < 2) continue;
      ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
      pts.forEach((p, i) => { const [x, y] = at(p); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.stroke();
    }
  }
  const val = state.validation || [];
  if (val.length) {
    ctx.fillStyle = "#f93"; ctx.font = "11px sans-serif";
    ctx.fillText(`validation ${val[val.length - 1][1].toFixed(4)}`, w - 120, 42);
  }
}

function addTrainWidgets(node) {
  const box = document.createElement("div");
  box.className = "lora-scripts-train";
  const canvas = document.createElement("canvas");
  canvas.width = 360; canvas.height = 140; canvas.className = "lora-scripts-loss-chart";
  const sample = document.createElement("img");
  sample.className = "lora-scripts-sample"; sample.style.maxWidth = "128px"; sample.style.display = "none";
  box.append(canvas, sample);
  node.addDOMWidget("lora_scripts_progress", "lora_scripts_progress", box, { serialize: false });
  node.loraScripts = { canvas, sample, state: { losses: [], validation: [], step: 0, total: 0, eta: null, message: "" } };
  drawChart(canvas, node.loraScripts.state);
}

function captionEditor(node) {
  const box = document.createElement("div");
  box.className = "lora-scripts-captions";
  box.style.maxHeight = "240px"; box.style.overflowY = "auto";
  node.addDOMWidget("lora_scripts_captions", "lora_scripts_captions", box, { serialize: false });
  node.loraScriptsCaptions = box;
}

function showCaptions(node, data) {
  const box = node.loraScriptsCaptions;
  if (!box || !data) return;
  box.replaceChildren();
  for (const row of data.rows) {
    const label = document.createElement("div");
    label.textContent = row.file; label.style.fontSize = "11px"; label.style.opacity = "0.7";
    const text = document.createElement("textarea");
    text.value = row.caption; text.rows = 2; text.style.width = "100%";
    text.className = "lora-scripts-caption"; text.dataset.file = row.file;
    text.addEventListener("change", async () => {
      const res = await api.fetchApi("/lora_scripts/caption", {
        method: "POST",
        body: JSON.stringify({ metadata_path: data.metadata_path, file: row.file, caption: text.value }),
      });
      text.style.outline = res.ok ? "1px solid #3a6" : "1px solid #c33";
    });
    box.append(label, text);
  }
}

app.registerExtension({
  name: "lora-scripts.nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === TRAIN) {
      chain(nodeType.prototype, "onNodeCreated", function () { addTrainWidgets(this); });
      chain(nodeType.prototype, "onExecuted", function (message) {
        const result = message?.lora_scripts_result?.[0];
        if (result && this.loraScripts) {
          const st = this.loraScripts.state;
          if (result.losses?.length) st.losses = result.losses;
          if (result.validation?.length) st.validation = result.validation;
          st.message = result.reused ? `reused ${result.lora}` : `saved ${result.lora}`;
          drawChart(this.loraScripts.canvas, st);
        }
      });
    }
    if (nodeData.name === CAPTION) {
      chain(nodeType.prototype, "onNodeCreated", function () { captionEditor(this); });
      chain(nodeType.prototype, "onExecuted", function (message) {
        showCaptions(this, message?.lora_scripts_captions?.[0]);
      });
    }
  },
  setup() {
    api.addEventListener("lora_scripts.progress", ({ detail }) => {
      const node = app.graph?.getNodeById(Number(detail.node));
      if (!node?.loraScripts) return;
      const st = node.loraScripts.state;
      if (detail.event === "estimate") st.estimate = detail.summary;
      if (detail.event === "started") { st.losses = []; st.validation = []; st.total = detail.total_steps; st.step = detail.start_step; }
      if (detail.event === "validation") st.validation.push([detail.step, detail.loss]);
      if (detail.event === "step") { st.step = detail.step; st.total = detail.total_steps; st.eta = detail.eta_s; st.losses.push([detail.step, detail.loss]); }
      if (detail.event === "sample" && detail.images?.length) {
        const ref = detail.images[detail.images.length - 1];
        const query = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder, type: ref.type });
        node.loraScripts.sample.src = api.apiURL(`/view?${query}`);
        node.loraScripts.sample.style.display = "block";
        st.message = "sample written";
      }
      if (detail.event === "finished") st.message = "finished";
      if (detail.event === "error") st.message = `error: ${detail.message}`;
      if (detail.event === "reused") st.message = "reused the finished LoRA";
      drawChart(node.loraScripts.canvas, st);
    });
  },
});
