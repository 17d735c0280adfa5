// The streamgen page: frames from the camera or a video go to the server over one WebSocket,
// generated JPEG frames come back and are shown as they arrive. With a StreamDiT model the server
// streams text-to-video on its own ("kind": "dit"): the page only sends the prompt, guidance and seed.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, width: 512, height: 512, source: null, stream: null, running: false,
  inFlight: [], received: 0, times: [], lastUrl: null, promptTimer: null, pending: null,
};
const MAX_IN_FLIGHT = 2;  // frames sent but not answered: more only adds latency

function setStatus(text) { $('status').textContent = text; }
function showMessage(text) { $('message').textContent = text || ''; }

function tIndexFromStrength(strength) {
  // Strength s denoises the last s of the 50-step schedule: one slot at index round(50 * (1 - s)).
  return [Math.min(49, Math.max(0, Math.round(50 * (1 - strength))))];
}

function config() {
  if (isDiT()) return { type: 'config', prompt: $('prompt').value, guidance: Number($('guidance').value), seed: Number($('seed').value) || 0 };
  return {
    type: 'config',
    prompt: $('prompt').value,
    guidance: Number($('guidance').value),
    delta: Number($('delta').value),
    t_index: tIndexFromStrength(Number($('strength').value)),
    seed: Number($('seed').value) || 0,
  };
}

// A session the server closed (idle, restarted) is opened again by the next thing the user does;
// the message goes out once the new session is ready.
function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(obj));
  } else if (!state.ws || state.ws.readyState === WebSocket.CLOSED || state.ws.readyState === WebSocket.CLOSING) {
    state.pending = obj;
    connect();
  } else {
    state.pending = obj;
  }
}

function connect() {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.binaryType = 'blob';
  state.ws = ws;
  ws.onopen = () => setStatus('connected');
  ws.onclose = (e) => {
    setStatus(e.code === 1013 ? 'server busy' : e.code === 1008 ? 'disconnected (idle): start a source to reconnect' : 'disconnected');
    state.running = false;
  };
  ws.onmessage = (e) => (typeof e.data === 'string' ? onText(JSON.parse(e.data)) : onFrame(e.data));
}

function isDiT() { return document.body.dataset.kind === 'dit'; }

// Text-to-video: the controls start from the server's settings instead of overriding them.
function onDiTReady(msg) {
  $('prompt').value = msg.prompt;
  $('guidance').min = '1';
  $('guidance').max = '8';
  $('guidance').value = String(msg.guidance);
  $('guidance-value').textContent = String(msg.guidance);
  $('seed').value = String(msg.seed);
  $('vocabulary').textContent = `This model knows these words: ${msg.vocabulary.join(' ')}. ` +
    `Example: "a green triangle moving down and a red square moving left". The prompt changes the video as you type.`;
}

// One scale slider per adapter the server loaded, in `box`, made once: `items` [{name, scale}], ids
// `${prefix}-${i}`; a slider sends `field` (every slider's value, in order) when released, since a change
// may take a moment. Values from the server are shown unless the user is dragging that slider.
function showScaleSliders(box, prefix, title, items, range, field, onSend) {
  const sliders = () => Array.from(box.querySelectorAll(`input.${prefix}`));
  box.hidden = !items || items.length === 0;
  if (box.hidden) return;
  if (sliders().length !== items.length) {
    box.querySelectorAll(`label.${prefix}`).forEach((el) => el.remove());
    items.forEach((item, i) => {
      const label = document.createElement('label');
      label.className = prefix;
      const value = document.createElement('output');
      const input = document.createElement('input');
      Object.assign(input, { type: 'range', min: range[0], max: range[1], step: '0.05', id: `${prefix}-${i}`, className: prefix });
      input.oninput = () => { value.textContent = input.value; };
      input.onchange = () => {
        if (onSend) onSend();
        send({ type: 'config', [field]: sliders().map((el) => Number(el.value)) });
      };
      label.append(`${title} ${item.name} `, value, input);
      box.append(label);
    });
  }
  items.forEach((item, i) => {
    const input = $(`${prefix}-${i}`);
    if (document.activeElement !== input) {
      input.value = String(item.scale);
      input.previousSibling.textContent = String(item.scale);
    }
  });
}

// LoRAs (serve --lora) are fused into the shared models: a change made in any session arrives here as a
// "loras" message too.
function showLoras(loras) {
  showScaleSliders($('loras'), 'lora', 'LoRA', (loras || []).map((l) => ({ name: l.file, scale: l.scale })), ['-1', '2'],
    'lora_scales', () => showMessage('LoRA: re-fusing…'));
}

// ControlNets (serve --controlnet): a scale each and the input they see; per session, from the next frame.
function showControlNets(controlnets, control) {
  showScaleSliders($('controlnets'), 'controlnet', 'ControlNet', (controlnets || []).map((c) => ({ name: c.folder, scale: c.scale })),
    ['0', '2'], 'controlnet_scales');
  if (control === 'canny' || control === 'frame') $('control').value = control;
}

function onText(msg) {
  if (msg.type === 'loras') {
    showLoras(msg.loras);
    showMessage(`LoRA scales ${msg.loras.map((l) => l.scale).join(', ')} (re-fused in ${Math.round(msg.fuse_ms)} ms)`);
  } else if (msg.type === 'ready' || msg.type === 'config') {
    if (msg.kind !== 'dit') {
      showLoras(msg.loras);
      showControlNets(msg.controlnets, msg.control);
    }
    state.width = msg.width;
    state.height = msg.height;
    document.body.dataset.kind = msg.kind || 'sd';
    document.body.dataset.prompt = msg.prompt;  // what the server is using now
    const detail = msg.kind === 'dit' ? `StreamDiT text-to-video · c=${msg.chunk_frames} s=${msg.micro_steps}` : msg.mode;
    setStatus(`session ${msg.session} · ${detail} · ${msg.width}×${msg.height}`);
    if (msg.kind === 'dit') {
      if (msg.type === 'ready') onDiTReady(msg);
      showMessage(msg.unknown_words && msg.unknown_words.length
        ? `not in the model's vocabulary (ignored): ${msg.unknown_words.join(', ')}` : '');
    } else if (msg.type === 'ready') {
      send(config());
    }
    if (msg.type === 'ready' && state.pending) {
      const pending = state.pending;
      state.pending = null;
      send(pending);
    }
  } else if (msg.type === 'stats') {
    const lat = msg.stages && msg.stages.latency;
    if (lat) $('latency').textContent = lat.median_ms.toFixed(0);
  } else if (msg.type === 'busy') {
    showMessage(msg.message);
  } else if (msg.type === 'error') {
    showMessage(msg.message);
  }
}

function onFrame(blob) {
  state.inFlight.shift();
  state.received += 1;
  const now = performance.now();
  state.times.push(now);
  while (state.times.length > 30) state.times.shift();
  if (state.times.length > 1) {
    const fps = (state.times.length - 1) * 1000 / (now - state.times[0]);
    $('fps').textContent = fps.toFixed(1);
  }
  $('received').textContent = String(state.received);
  const url = URL.createObjectURL(blob);
  $('output').src = url;
  if (state.lastUrl) URL.revokeObjectURL(state.lastUrl);
  state.lastUrl = url;
  document.body.dataset.received = String(state.received);
}

// Centre-crop the playing video into the model's frame size and send it as JPEG.
function pump() {
  if (!state.running) return;
  const video = $('source');
  if (video.readyState >= 2 && state.inFlight.length < MAX_IN_FLIGHT && state.ws.readyState === WebSocket.OPEN) {
    const canvas = $('grab');
    canvas.width = state.width;
    canvas.height = state.height;
    const side = Math.min(video.videoWidth, video.videoHeight * state.width / state.height);
    const sh = side * state.height / state.width;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - sh) / 2, side, sh, 0, 0, state.width, state.height);
    state.inFlight.push(performance.now());
    canvas.toBlob((blob) => { if (blob) state.ws.send(blob); }, 'image/jpeg', 0.85);
  }
  // A frame that never comes back (skipped, dropped) must not stall the loop for ever.
  if (state.inFlight.length && performance.now() - state.inFlight[0] > 3000) state.inFlight.shift();
  requestAnimationFrame(pump);
}

function stopSource() {
  state.running = false;
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $('source').srcObject = null;
  $('stop').disabled = true;
}

async function startCamera() {
  stopSource();
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    showMessage(`camera: ${err.message}`);
    return;
  }
  $('source').srcObject = state.stream;
  await $('source').play();
  startImg2Img();
}

async function startFile(file) {
  stopSource();
  const video = $('source');
  video.src = URL.createObjectURL(file);
  await video.play();
  startImg2Img();
}

function startImg2Img() {
  send({ ...config(), mode: 'img2img' });
  state.running = true;
  $('stop').disabled = false;
  showMessage('');
  requestAnimationFrame(pump);
}

function startTxt2Img() {
  stopSource();
  send({ ...config(), mode: 'txt2img' });
  $('stop').disabled = false;
}

$('camera').onclick = startCamera;
$('file').onchange = (e) => e.target.files[0] && startFile(e.target.files[0]);
$('txt2img').onclick = startTxt2Img;
$('stop').onclick = () => { stopSource(); send({ type: 'config', mode: 'img2img' }); };
// The prompt hot-swaps as the user types (debounced): no restart, no blank frame.
$('prompt').oninput = () => {
  clearTimeout(state.promptTimer);
  state.promptTimer = setTimeout(() => send({ type: 'config', prompt: $('prompt').value }), 250);
};
for (const id of ['guidance', 'delta', 'strength']) {
  $(id).oninput = () => { $(`${id}-value`).textContent = $(id).value; };
  $(id).onchange = () => send(config());
}
$('seed').onchange = () => send(config());
$('control').onchange = () => send({ type: 'config', control: $('control').value });

connect();
