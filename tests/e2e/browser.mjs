// Real-browser end-to-end test of `streamgen serve`: starts the server on a free port, opens the page
// in Debian's headless Chromium and saves a screenshot.
//   sd:  the tiny Stable Diffusion test pipeline; starts the fake camera, waits for generated frames,
//        changes the prompt, checks that the server switched to it and that the frames changed.
//   dit: a StreamDiT model (text-to-video); frames arrive with no input, the img2img controls are
//        hidden, the vocabulary is shown, a prompt change is confirmed with no restart while frames
//        keep coming, and words outside the vocabulary are named on the page.
//        With a LoRA file, the server loads it and the page's LoRA slider re-fuses it live; with a
//        ControlNet folder, the page switches the ControlNet's input and scale while frames flow.
//   node browser.mjs sd  STREAMGEN_BINARY MODEL_DIR TAESD_DIR SCREENSHOT_PNG [LORA_FILE [CONTROLNET_DIR]]
//   node browser.mjs dit STREAMGEN_BINARY MODEL_DIR - SCREENSHOT_PNG
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chromium } from 'playwright-core';

const [mode, binary, model, taesd, screenshot, lora, controlnet] = process.argv.slice(2);
if (!screenshot || !['sd', 'dit'].includes(mode)) {
  console.error('usage: node browser.mjs sd|dit STREAMGEN MODEL_DIR TAESD_DIR|- SCREENSHOT_PNG');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

function startServer() {
  const args = mode === 'sd' ? ['--taesd', taesd, '-W', '64', '-H', '64', ...(lora ? ['--lora', lora] : []), ...(controlnet ? ['--controlnet', controlnet] : [])] : ['-W', '128', '-H', '128', '--dtype', 'bf16'];
  const server = spawn(binary, ['-q', 'serve', '--model', model, '--port', '0', '--max-sessions', '2', ...args],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 60000);
    server.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/serving on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolve({ server, url: m[1] }); }
    });
    server.on('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
}

// The shown frame's pixels (blob URLs are revoked as new frames arrive, so read the <img> itself).
async function outputHash(page) {
  const data = await page.$eval('#output', (img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    c.getContext('2d').drawImage(img, 0, 0);
    return c.toDataURL('image/png');
  });
  return createHash('sha256').update(data).digest('hex');
}

const received = (page) => page.evaluate(() => Number(document.body.dataset.received || 0));

async function imageToImage(page) {
  // Camera -> frames arrive.
  await page.click('#camera');
  await page.waitForFunction(() => Number(document.body.dataset.received || 0) >= 5, null, { timeout: 60000 });
  const before = await outputHash(page);
  const fps = Number(await page.textContent('#fps'));
  if (!(fps > 0)) fail(`no FPS shown (${fps})`);

  // Prompt change: the server confirms the new prompt with no restart, frames keep coming and change.
  const n = await received(page);
  await page.fill('#prompt', 'a watercolour of a lighthouse');
  await page.waitForFunction(() => document.body.dataset.prompt === 'a watercolour of a lighthouse', null, { timeout: 30000 });
  await page.waitForFunction((k) => Number(document.body.dataset.received) >= k + 5, n, { timeout: 60000 });
  const after = await outputHash(page);
  if (after === before) fail('the output did not change after the prompt change');
  const message = await page.textContent('#message');
  if (message) fail(`the page shows an error: ${message}`);
  if (lora) await loraSlider(page);
  if (controlnet) await controlNetControls(page);
}

// The ControlNet's input switches from edges to the frame itself, its scale to 0.5: confirmed, frames go on.
async function controlNetControls(page) {
  if (!(await page.isVisible('#controlnet-0'))) fail('no ControlNet slider for the server\'s --controlnet');
  const n = await received(page);
  await page.selectOption('#control', 'frame');
  await page.$eval('#controlnet-0', (el) => { el.value = '0.5'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); });
  await page.waitForFunction((k) => Number(document.body.dataset.received) >= k + 5, n, { timeout: 60000 });
  if ((await page.inputValue('#control')) !== 'frame') fail('the ControlNet input did not stay on frame');
  const message = await page.textContent('#message');
  if (message && !message.startsWith('LoRA')) fail(`the page shows an error: ${message}`);
}

// The LoRA's slider: released at a new scale, the server re-fuses, the page says so and frames change.
async function loraSlider(page) {
  if (!(await page.isVisible('#lora-0'))) fail('no LoRA slider for the server\'s --lora');
  const before = await outputHash(page);
  const n = await received(page);
  await page.$eval('#lora-0', (el) => { el.value = '0.25'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); });
  await page.waitForFunction(() => document.getElementById('message').textContent.startsWith('LoRA scales 0.25 (re-fused in'), null, { timeout: 30000 });
  await page.waitForFunction((k) => Number(document.body.dataset.received) >= k + 5, n, { timeout: 60000 });
  if ((await outputHash(page)) === before) fail('the output did not change with the LoRA scale');
}

async function textToVideo(page) {
  // No input: the video starts by itself.
  await page.waitForFunction(() => Number(document.body.dataset.received || 0) >= 10, null, { timeout: 60000 });
  const status = await page.textContent('#status');
  if (!status.includes('StreamDiT')) fail(`status does not name the model: ${status}`);
  if (await page.isVisible('#camera')) fail('the camera button is shown for a text-to-video model');
  const vocabulary = await page.textContent('#vocabulary');
  if (!vocabulary.includes('circle')) fail(`vocabulary not shown: ${vocabulary}`);
  const fps = Number(await page.textContent('#fps'));
  if (!(fps > 0)) fail(`no FPS shown (${fps})`);
  const before = await outputHash(page);

  const n = await received(page);
  const prompt = 'a blue square moving up';
  await page.fill('#prompt', prompt);
  await page.waitForFunction((p) => document.body.dataset.prompt === p, prompt, { timeout: 30000 });
  await page.waitForFunction((k) => Number(document.body.dataset.received) >= k + 10, n, { timeout: 60000 });
  if ((await outputHash(page)) === before) fail('the video did not move');
  const message = await page.textContent('#message');
  if (message) fail(`the page shows an error: ${message}`);

  await page.fill('#prompt', 'a purple square moving up');
  await page.waitForFunction(() => document.getElementById('message').textContent.includes('purple'), null, { timeout: 30000 });
  await page.fill('#prompt', prompt);
  await page.waitForFunction(() => document.getElementById('message').textContent === '', null, { timeout: 30000 });
}

const { server, url } = await startServer();
const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => fail(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('session'), null, { timeout: 30000 });

  if (mode === 'sd') await imageToImage(page); else await textToVideo(page);
  await page.screenshot({ path: screenshot });
  const metrics = await (await fetch(`${url}metrics`)).text();
  if (!/streamgen_sessions_active 1/.test(metrics)) fail(`metrics do not show the session:\n${metrics}`);
  console.log(`ok (${mode}): ${await received(page)} frames, ${await page.textContent('#fps')} FPS, screenshot ${screenshot}`);
} finally {
  await browser.close();
  server.kill('SIGINT');
}
