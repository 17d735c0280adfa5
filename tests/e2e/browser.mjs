// Real-browser end-to-end test of `streamgen serve`: starts the server on a free port with the tiny
// test model, opens the page in Debian's headless Chromium with its fake camera, starts the camera,
// waits for generated frames, changes the prompt, checks that the server switched to it and that the
// frames changed, and saves a screenshot.
//   node browser.mjs STREAMGEN_BINARY MODEL_DIR TAESD_DIR SCREENSHOT_PNG
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chromium } from 'playwright-core';

const [binary, model, taesd, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node browser.mjs STREAMGEN MODEL_DIR TAESD_DIR SCREENSHOT_PNG');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

function startServer() {
  const server = spawn(binary, ['-q', 'serve', '--model', model, '--taesd', taesd, '--port', '0', '-W', '64', '-H', '64',
    '--max-sessions', '2'], { stdio: ['ignore', 'pipe', 'inherit'] });
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

  // Camera -> frames arrive.
  await page.click('#camera');
  await page.waitForFunction(() => Number(document.body.dataset.received || 0) >= 5, null, { timeout: 60000 });
  // The shown frame's pixels (blob URLs are revoked as new frames arrive, so read the <img> itself).
  const outputHash = async () => {
    const data = await page.$eval('#output', (img) => {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      c.getContext('2d').drawImage(img, 0, 0);
      return c.toDataURL('image/png');
    });
    return createHash('sha256').update(data).digest('hex');
  };
  const before = await outputHash();
  const fps = Number(await page.textContent('#fps'));
  if (!(fps > 0)) fail(`no FPS shown (${fps})`);

  // Prompt change: the server confirms the new prompt with no restart, frames keep coming and change.
  const received = Number(await page.evaluate(() => document.body.dataset.received));
  await page.fill('#prompt', 'a watercolour of a lighthouse');
  await page.waitForFunction(() => document.body.dataset.prompt === 'a watercolour of a lighthouse', null, { timeout: 30000 });
  await page.waitForFunction((n) => Number(document.body.dataset.received) >= n + 5, received, { timeout: 60000 });
  const after = await outputHash();
  if (after === before) fail('the output did not change after the prompt change');
  const message = await page.textContent('#message');
  if (message) fail(`the page shows an error: ${message}`);
  await page.screenshot({ path: screenshot });

  const metrics = await (await fetch(`${url}metrics`)).text();
  if (!/streamgen_sessions_active 1/.test(metrics)) fail(`metrics do not show the session:\n${metrics}`);
  console.log(`ok: ${await page.evaluate(() => document.body.dataset.received)} frames, ${fps} FPS, screenshot ${screenshot}`);
} finally {
  await browser.close();
  server.kill('SIGINT');
}
