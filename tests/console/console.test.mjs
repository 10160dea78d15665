// The web console in a real browser: starts the aviary binary (AVIARY_BIN, default
// target/debug/aviary) on free loopback ports, opens /console/ in headless Chromium
// (/usr/bin/chromium, or AVIARY_CHROMIUM), signs in with the API key, sees a client
// connected with mosquitto_sub, kicks it out, deletes a retained message, changes a plan
// limit, changes a listener's allow-list and switches the listener off, checking each
// effect through the API and over MQTT.
// Run: node console.test.mjs (exit code 0 on success). Everything is bounded in time.

import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = fileURLToPath(new URL('.', import.meta.url));
const BIN = process.env.AVIARY_BIN || resolve(here, '../../target/debug/aviary');
const CHROMIUM = process.env.AVIARY_CHROMIUM || '/usr/bin/chromium';
const KEY = 'console-e2e-api-key-0123456789';
const CLIENT = 'console-e2e-sub';
const STEP = 15_000; // the bound on every wait
const TOTAL = 120_000; // the bound on the whole test

const work = mkdtempSync(join(tmpdir(), 'aviary-console-'));
const children = [];
let browser;

/** A loopback port that was free a moment ago. */
function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

/** Calls the API with the key: [status, JSON body or null]. */
async function api(base, method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP),
  });
  const text = await res.text();
  return [res.status, text ? JSON.parse(text) : null];
}

/** Polls `check` (truthy when done) every 100 ms for at most STEP. */
async function until(what, check) {
  const deadline = Date.now() + STEP;
  for (;;) {
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether a TCP connection to `port` is accepted. */
function accepts(port) {
  return new Promise((ok) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(2000, () => { s.destroy(); ok(false); });
    s.once('connect', () => { s.destroy(); ok(true); });
    s.once('error', () => ok(false));
  });
}

function start(cmd, args, log) {
  // AVIARY_BIN is this script's setting, not broker config (the broker warns about it).
  const env = { ...process.env };
  delete env.AVIARY_BIN;
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  child.output = '';
  const keep = (d) => { child.output += d; };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  children.push(child);
  child.label = log;
  return child;
}

async function main() {
  assert.ok(existsSync(BIN), `no aviary binary at ${BIN}: build it (cargo build -p aviary) or set AVIARY_BIN`);
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium`);
  const [mqttPort, apiPort] = [await freePort(), await freePort()];
  const config = join(work, 'aviary.toml');
  writeFileSync(config, [
    `data_dir = "${join(work, 'data')}"`,
    '[listener]', `bind = "127.0.0.1:${mqttPort}"`,
    '[api]', `bind = "127.0.0.1:${apiPort}"`, `api_key = "${KEY}"`, '',
  ].join('\n'));
  const broker = start(BIN, ['--config', config], 'aviary');
  const base = `http://127.0.0.1:${apiPort}`;
  await until('the API', async () => (await api(base, 'GET', '/api/v1/health'))[0] === 200);

  const sub = start('mosquitto_sub', ['-V', '5', '-h', '127.0.0.1', '-p', String(mqttPort), '-i', CLIENT, '-t', 'e2e/#'], 'mosquitto_sub');
  await until('the subscriber in the API', async () => (await api(base, 'GET', `/api/v1/clients/${CLIENT}`))[0] === 200);

  const profile = join(work, 'chromium-profile');
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: STEP,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  browser.setDefaultTimeout(STEP);
  const page = browser.pages()[0] ?? await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Destructive actions ask first: the operator says yes; the questions are checked.
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.accept(); });

  // Sign in: a wrong key is refused with a message, the right one opens the overview.
  await page.goto(`${base}/console/`);
  await page.fill('#api-key', 'wrong-key');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#status.error');
  assert.match(await page.textContent('#status'), /refused/);
  await page.fill('#api-key', KEY);
  await page.click('#login-form button[type=submit]');
  const connections = page.locator('[data-figure="Connections"] dd');
  await connections.waitFor();
  await until('one connection in the overview', async () => (await connections.textContent()).startsWith('1 /'));

  // Clients: the subscriber is listed; its details show its subscription; kick it out.
  await page.click('nav button[data-view=clients]');
  const row = page.locator('#client-table tr', { hasText: CLIENT });
  await row.waitFor();
  assert.match(await row.textContent(), /5\.0/);
  await row.locator('button', { hasText: 'Details' }).click();
  await page.locator('#client-detail', { hasText: 'e2e/#' }).waitFor();
  await page.click(`button[data-kick="${CLIENT}"]`);
  await page.locator('#status', { hasText: 'kicked out' }).waitFor();
  assert.deepEqual(dialogs, [`Disconnect client ${CLIENT}?`]);
  assert.equal((await api(base, 'GET', `/api/v1/clients/${CLIENT}`))[0], 404);
  // A 5.0 client told to go (DISCONNECT 0x98) leaves: mosquitto_sub exits.
  const code = await Promise.race([sub.exited, new Promise((r) => setTimeout(() => r('still running'), STEP).unref())]);
  assert.equal(code, 0, `mosquitto_sub after the kick: ${code}\n${sub.output}`);
  await row.waitFor({ state: 'detached' });

  // Retained messages: one published through the API is listed, then deleted.
  assert.equal((await api(base, 'POST', '/api/v1/publish', { topic: 'e2e/kept', payload: 'keep me', retain: true }))[0], 200);
  await page.click('nav button[data-view=retained]');
  const kept = page.locator('#retained-table tr', { hasText: 'e2e/kept' });
  await kept.waitFor();
  assert.match(await kept.textContent(), /keep me/);
  await page.click('button[data-delete="e2e/kept"]');
  await page.locator('#status', { hasText: 'deleted' }).waitFor();
  assert.equal((await api(base, 'GET', '/api/v1/retained/e2e%2Fkept'))[0], 404);

  // Plan limits: change one; the others keep their values.
  const [, before] = await api(base, 'GET', '/api/v1/limits');
  await page.click('nav button[data-view=limits]');
  await page.fill('#limit-connect_rate', '77');
  await page.click('#limits-form button[type=submit]');
  await page.locator('#status', { hasText: 'Plan limits saved' }).waitFor();
  assert.deepEqual((await api(base, 'GET', '/api/v1/limits'))[1], { ...before, connect_rate: 77 });

  // Listeners: change the default listener's allow-list, then switch it off.
  await page.click('nav button[data-view=listeners]');
  const listener = page.locator('#listener-table tr', { hasText: 'default' });
  await listener.waitFor();
  await listener.locator('input').fill('127.0.0.0/8, 10.0.0.0/8');
  await listener.locator('button', { hasText: 'Save' }).click();
  await page.locator('#status', { hasText: 'Listener default updated' }).waitFor();
  let [, state] = await api(base, 'GET', '/api/v1/listeners/default');
  assert.deepEqual(state.allow, ['127.0.0.0/8', '10.0.0.0/8']);
  assert.equal(state.enabled, true);
  assert.ok(await accepts(mqttPort), 'the listener accepts before it is disabled');
  await page.click('button[data-toggle="default"]');
  await page.locator('#status', { hasText: 'Listener default updated' }).waitFor();
  assert.match(dialogs.at(-1), /Switch listener default off/);
  await until('the listener off in the API', async () => (await api(base, 'GET', '/api/v1/listeners/default'))[1].enabled === false);
  await page.locator('button[data-toggle="default"]', { hasText: 'Enable' }).waitFor();
  assert.equal(await accepts(mqttPort), false, 'the disabled listener still accepts MQTT connections');

  assert.deepEqual(pageErrors, [], 'the page threw');
  [, state] = await api(base, 'GET', '/api/v1/stats');
  assert.equal(state.connections, 0);
  broker.kill('SIGTERM');
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}

const guard = setTimeout(async () => {
  console.error(`console test: gave up after ${TOTAL / 1000} s`);
  await cleanup();
  process.exit(1);
}, TOTAL);

try {
  await main();
  console.log('console test: ok');
} catch (e) {
  console.error('console test FAILED:', e);
  for (const child of children) console.error(`--- ${child.label} output ---\n${child.output.slice(-3000)}`);
  process.exitCode = 1;
} finally {
  clearTimeout(guard);
  await cleanup();
}
