// Scoped keys in the dashboard: the page shows a key only what it may do. A `read` key sees
// values but no controls, tokens or admin forms; a `control` key gets the controls of its own
// devices only. (The server refuses the rest anyway, with a 403 naming the missing scope.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, openBrowser, startServer } from './harness.mjs';

let server;
let chrome;

before(async () => {
  server = await startServer();
  chrome = await openBrowser();
});

after(async () => {
  if (chrome) await chrome.browser.close();
  if (server) await server.stop();
});

/** Logs in with `key` in a fresh page (its own storage) and opens the demo device. */
async function openDemoAs(key) {
  const context = await chrome.browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  // A refused call would show here too ("Failed to load resource: 403"): the page makes none.
  page.on('console', (message) => { if (message.type() === 'error') chrome.problems.push(message.text()); });
  page.on('pageerror', (error) => chrome.problems.push(error.message));
  await page.goto(server.url);
  await page.fill('#key', key);
  await page.click('button[type=submit]');
  await page.locator('tr[data-device] >> text=demo').waitFor();
  return { context, page };
}

test('a read key sees values but no controls, token or admin forms', async () => {
  const { key } = await server.api('POST', '/api/keys', { name: 'viewer', scope: 'read' });
  await server.api('PUT', '/api/devices/demo/values/V2', { value: 77, wait_ms: 0 });
  const { context, page } = await openDemoAs(key);
  assert.equal(await page.locator('text=Add a device').count(), 0);
  await page.click('text=demo');
  await page.locator('[data-widget="V0"]').waitFor();
  await page.locator('[data-value="V2"]', { hasText: '77' }).waitFor({ timeout: 3000 });
  assert.equal(await page.locator('[data-control]').count(), 0, 'no write controls');
  assert.equal(await page.locator('[data-token]').count(), 0, 'no device token');
  assert.doesNotMatch(await page.locator('main').innerText(), /\bnull\b/, 'nothing hidden leaves a trace');
  await page.screenshot({ path: join(ARTIFACTS, 'read-key-device-page.png'), fullPage: true });
  await page.click('[data-nav="templates"]');
  await page.locator('h1', { hasText: 'Templates' }).waitFor();
  assert.equal(await page.locator('text=Create template').count(), 0);
  await context.close();
});

test('a control key gets the controls of its own devices only', async () => {
  await server.api('POST', '/api/devices', { name: 'porch', template: 'light' });
  const { key } = await server.api('POST', '/api/keys', { name: 'porch-switch', scope: 'control', devices: ['porch'] });
  const { context, page } = await openDemoAs(key);
  await page.click('text=demo');
  await page.locator('[data-widget="V0"]').waitFor();
  assert.equal(await page.locator('[data-control]').count(), 0, 'no controls on another device');
  await page.goto(`${server.url}#/`);
  await page.click('text=porch');
  await page.locator('[data-control="V0"]').waitFor({ timeout: 3000 });
  await page.click('[data-control="V0"]');
  await page.locator('[data-status="V0"][data-state="pending"]').waitFor({ timeout: 3000 });
  await context.close();
});

test('the pages logged no errors', () => {
  assert.deepEqual(chrome.problems, []);
});
