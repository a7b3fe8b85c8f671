// The Retouch mask painter: paint on the picture, then submit the mask (white = may change) at
// the picture's exact size with the member's choices. Plain JavaScript, no dependencies, loaded
// under a CSP that allows only this origin. Every request is relative to the link's own path.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const stage = $("stage");
  const board = $("board");
  const picture = $("picture");
  const mask = $("mask");
  const ink = mask.getContext("2d", { willReadFrequently: true });
  const INK = [255, 40, 120];
  const HISTORY = 30;
  const WORKING = new Set(["queued", "submitting", "running", "delivering"]);

  let tool = "brush";
  let scale = 1;
  let tx = 0;
  let ty = 0;
  let offer = null;
  let stroke = null;
  let gesture = null;
  const pointers = new Map();
  const undoStack = [];
  const redoStack = [];

  const say = (text, bad = false) => {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("bad", bad);
  };

  // View: the board is moved and scaled with a CSS transform; the canvases keep full size.
  const view = () => {
    board.style.transform = `translate(${tx}px, ${ty}px) scale(${scale})`;
  };
  const fit = () => {
    const box = stage.getBoundingClientRect();
    scale = Math.min(box.width / mask.width, box.height / mask.height);
    tx = (box.width - mask.width * scale) / 2;
    ty = (box.height - mask.height * scale) / 2;
    view();
  };
  const zoomAt = (factor, x, y) => {
    const next = Math.min(Math.max(scale * factor, 0.05), 40);
    tx = x - ((x - tx) * next) / scale;
    ty = y - ((y - ty) * next) / scale;
    scale = next;
    view();
  };
  const stagePoint = (e) => {
    const box = stage.getBoundingClientRect();
    return { x: e.clientX - box.left, y: e.clientY - box.top };
  };
  const imagePoint = (e) => {
    const box = mask.getBoundingClientRect();
    return {
      x: ((e.clientX - box.left) * mask.width) / box.width,
      y: ((e.clientY - box.top) * mask.height) / box.height,
    };
  };

  // History: one snapshot of the mask before each change.
  const history = () => {
    $("undo").disabled = undoStack.length === 0;
    $("redo").disabled = redoStack.length === 0;
  };
  const snapshot = () => {
    undoStack.push(ink.getImageData(0, 0, mask.width, mask.height));
    if (undoStack.length > HISTORY) undoStack.shift();
    redoStack.length = 0;
    history();
  };
  const swap = (from, to) => {
    if (!from.length) return;
    to.push(ink.getImageData(0, 0, mask.width, mask.height));
    ink.putImageData(from.pop(), 0, 0);
    history();
  };

  // Painting.
  const width = (e) => {
    const base = (Number($("size").value) * Math.max(mask.width, mask.height)) / 400;
    const pressure = e.pointerType === "pen" && e.pressure > 0 ? 0.4 + e.pressure : 1;
    return Math.max(1, base * pressure);
  };
  const paintTo = (e) => {
    const point = imagePoint(e);
    ink.globalCompositeOperation = tool === "eraser" ? "destination-out" : "source-over";
    ink.strokeStyle = ink.fillStyle = `rgb(${INK.join(",")})`;
    ink.lineCap = ink.lineJoin = "round";
    ink.lineWidth = width(e);
    ink.beginPath();
    if (stroke.last) {
      ink.moveTo(stroke.last.x, stroke.last.y);
      ink.lineTo(point.x, point.y);
      ink.stroke();
    } else {
      ink.arc(point.x, point.y, ink.lineWidth / 2, 0, Math.PI * 2);
      ink.fill();
    }
    stroke.last = point;
  };

  const spread = () => {
    const [a, b] = [...pointers.values()];
    return {
      distance: Math.hypot(a.x - b.x, a.y - b.y) || 1,
      middle: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 },
    };
  };

  stage.addEventListener("pointerdown", (e) => {
    if (!offer) return;
    e.preventDefault();
    stage.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, stagePoint(e));
    if (pointers.size === 2) {
      stroke = null; // a second finger turns the stroke into a pinch
      gesture = { kind: "pinch", ...spread() };
    } else if (pointers.size === 1 && (tool === "pan" || e.button === 1 || e.button === 2)) {
      gesture = { kind: "pan", from: stagePoint(e) };
    } else if (pointers.size === 1) {
      snapshot();
      stroke = { id: e.pointerId, last: null };
      paintTo(e);
    }
  });
  stage.addEventListener("pointermove", (e) => {
    if (!pointers.has(e.pointerId)) return;
    pointers.set(e.pointerId, stagePoint(e));
    if (gesture && gesture.kind === "pinch" && pointers.size >= 2) {
      const now = spread();
      tx += now.middle.x - gesture.middle.x;
      ty += now.middle.y - gesture.middle.y;
      zoomAt(now.distance / gesture.distance, now.middle.x, now.middle.y);
      gesture = { kind: "pinch", ...now };
    } else if (gesture && gesture.kind === "pan") {
      const here = stagePoint(e);
      tx += here.x - gesture.from.x;
      ty += here.y - gesture.from.y;
      gesture.from = here;
      view();
    } else if (stroke && stroke.id === e.pointerId) {
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
      for (const each of events.length ? events : [e]) paintTo(each);
    }
  });
  const release = (e) => {
    pointers.delete(e.pointerId);
    if (stroke && stroke.id === e.pointerId) stroke = null;
    if (pointers.size < 2 && gesture && gesture.kind === "pinch") gesture = null;
    if (pointers.size === 0) gesture = null;
  };
  stage.addEventListener("pointerup", release);
  stage.addEventListener("pointercancel", release);
  stage.addEventListener("contextmenu", (e) => e.preventDefault());
  stage.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      const at = stagePoint(e);
      zoomAt(Math.exp(-e.deltaY * 0.0015), at.x, at.y);
    },
    { passive: false },
  );

  // Tools.
  const choose = (name) => {
    tool = name;
    for (const id of ["brush", "eraser", "pan"]) {
      $(id).classList.toggle("active", id === name);
      $(id).setAttribute("aria-pressed", String(id === name));
    }
    stage.classList.toggle("pan", name === "pan");
  };
  for (const id of ["brush", "eraser", "pan"]) $(id).addEventListener("click", () => choose(id));
  $("undo").addEventListener("click", () => swap(undoStack, redoStack));
  $("redo").addEventListener("click", () => swap(redoStack, undoStack));
  $("clear").addEventListener("click", () => {
    snapshot();
    ink.clearRect(0, 0, mask.width, mask.height);
  });
  $("invert").addEventListener("click", () => {
    snapshot();
    const data = ink.getImageData(0, 0, mask.width, mask.height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      px[i] = INK[0];
      px[i + 1] = INK[1];
      px[i + 2] = INK[2];
      px[i + 3] = px[i + 3] >= 128 ? 0 : 255;
    }
    ink.putImageData(data, 0, 0);
  });
  const centre = () => {
    const box = stage.getBoundingClientRect();
    return [box.width / 2, box.height / 2];
  };
  $("zoom-in").addEventListener("click", () => zoomAt(1.25, ...centre()));
  $("zoom-out").addEventListener("click", () => zoomAt(0.8, ...centre()));
  $("fit").addEventListener("click", fit);
  window.addEventListener("resize", () => offer && fit());
  document.addEventListener("keydown", (e) => {
    // Typing in the form (or choosing in a list by letter) never switches tools.
    if (e.target instanceof Element && e.target.closest("form, input, select, textarea")) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") {
      e.preventDefault();
      if (e.shiftKey) swap(redoStack, undoStack);
      else swap(undoStack, redoStack);
    } else if ((e.ctrlKey || e.metaKey) && key === "y") {
      e.preventDefault();
      swap(redoStack, undoStack);
    } else if (key === "b") choose("brush");
    else if (key === "e") choose("eraser");
  });

  // The mask as the bot takes it: black, white where painted, at the picture's exact size.
  const maskPng = () => {
    const painted = ink.getImageData(0, 0, mask.width, mask.height).data;
    const out = document.createElement("canvas");
    out.width = mask.width;
    out.height = mask.height;
    const context = out.getContext("2d");
    const image = context.createImageData(mask.width, mask.height);
    let any = false;
    for (let i = 0; i < painted.length; i += 4) {
      const value = painted[i + 3] >= 128 ? 255 : 0;
      any = any || value === 255;
      image.data[i] = image.data[i + 1] = image.data[i + 2] = value;
      image.data[i + 3] = 255;
    }
    context.putImageData(image, 0, 0);
    return new Promise((resolve) => out.toBlob((blob) => resolve(any ? blob : null), "image/png"));
  };

  const price = () => {
    if (!offer) return;
    const cost = offer.prices[$("quality").value][$("count").value];
    $("credits").textContent = String(cost);
    $("balance").textContent = String(offer.balance);
    const short = cost > offer.balance;
    $("submit").disabled = short;
    if (short) say(`You have ${offer.balance} credits; this costs ${cost}. Pick a lower quality or fewer versions.`, true);
    else if ($("status").classList.contains("bad")) say("");
  };
  $("quality").addEventListener("change", price);
  $("count").addEventListener("change", price);

  const finish = (disable) => {
    for (const element of document.querySelectorAll("#order textarea, #order select, #submit")) {
      element.disabled = disable;
    }
  };

  const follow = async () => {
    const answer = await (await fetch("status", { cache: "no-store" })).json();
    if (WORKING.has(answer.state)) {
      say(`Working on it (${answer.state})… the result will appear in Discord where you pressed Paint.`);
      setTimeout(follow, 1500);
    } else if (answer.state === "done") {
      say("Done: the result is in Discord. ");
      if (answer.message_url) {
        const link = document.createElement("a");
        link.href = answer.message_url;
        link.textContent = "Open it in Discord";
        link.id = "result-link";
        link.rel = "noreferrer";
        $("status").append(link);
      }
      document.body.dataset.outcome = "done";
    } else if (answer.state === "refused") {
      say(answer.message, true);
      document.body.dataset.outcome = "refused";
    } else {
      say("The edit did not finish; Discord shows why, and nothing was charged for it.", true);
      document.body.dataset.outcome = answer.state;
    }
  };

  $("order").addEventListener("submit", async (e) => {
    e.preventDefault();
    const blob = await maskPng();
    if (!blob) {
      say("Paint the area to change first.", true);
      return;
    }
    const form = new FormData();
    form.append("prompt", $("prompt").value);
    form.append("quality", $("quality").value);
    form.append("count", $("count").value);
    form.append("mask", blob, "mask.png");
    finish(true);
    say("Sending…");
    let answer;
    try {
      answer = await (await fetch("submit", { method: "POST", body: form })).json();
    } catch (error) {
      finish(false);
      say("The bot could not be reached; check your connection and press Submit again.", true);
      return;
    }
    if (answer.state === "queued") {
      say("Queued: the result will appear in Discord where you pressed Paint.");
      document.body.dataset.outcome = "queued";
      setTimeout(follow, 1000);
    } else if (answer.state === "invalid") {
      finish(false);
      say(answer.message, true);
    } else {
      say(answer.message, true);
      document.body.dataset.outcome = "refused";
    }
  });

  // Start: the member's choices and prices, then the picture.
  const start = async () => {
    const answer = await fetch("state", { cache: "no-store" });
    const data = await answer.json();
    if (!answer.ok) {
      say(data.error, true);
      $("loading").textContent = data.error;
      return;
    }
    $("prompt").value = data.prompt;
    $("quality").value = data.quality;
    $("count").value = String(data.count);
    const image = new Image();
    image.addEventListener("load", () => {
      picture.width = mask.width = image.naturalWidth;
      picture.height = mask.height = image.naturalHeight;
      picture.getContext("2d").drawImage(image, 0, 0);
      $("loading").classList.add("hidden");
      offer = data;
      fit();
      price();
      history();
      document.body.dataset.ready = "true";
    });
    image.addEventListener("error", () => {
      $("loading").textContent = "The picture could not be loaded; press Paint in Discord again.";
    });
    image.src = "image";
  };
  start();
})();
