// The dashboard in a real headless Chromium against a real server and a real device (the host
// build of the light firmware on blynk-device). Every step awaits what a person would see.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, openBrowser, startDevice, startServer } from './harness.mjs';

let server;
let device;
let chrome;

before(async () => {
  server = await startServer();
  device = startDevice(server);
  await device.lines.next(/sync complete/);
  chrome = await openBrowser();
});

after(async () => {
  if (chrome) await chrome.browser.close();
  if (device) device.kill();
  if (server) await server.stop();
});

test('log in with the admin key and see the device online', async () => {
  const { page } = chrome;
  await page.goto(server.url);
  await page.fill('#key', server.key);
  await page.click('button[type=submit]');
  const row = page.locator('tr[data-device] >> text=demo');
  await row.waitFor();
  await page.locator('tr[data-device] [data-presence="online"]').waitFor({ timeout: 3000 });
});

test('toggling the V0 switch fires the device handler', async () => {
  const { page } = chrome;
  await page.click('text=demo');
  await page.locator('[data-widget="V0"]').waitFor();
  const handled = device.lines.next(/^V0 = 1$/);
  await page.click('[data-control="V0"]');
  await handled;
  await page.locator('[data-status="V0"][data-state="delivered"]').waitFor({ timeout: 3000 });
  await page.locator('[data-led="V1"][data-level="255"]').waitFor({ timeout: 3000 });
});

test('a device virtual_write shows in the page within a second, without reload', async () => {
  const { page } = chrome;
  device.send('write V2 4242');
  await page.locator('[data-value="V2"]', { hasText: '4242' }).waitFor({ timeout: 1000 });
});

test('the device going offline shows in the page', async () => {
  const { page } = chrome;
  device.kill();
  await page.locator('[data-device] [data-presence="offline"]').waitFor({ timeout: 8000 });
});

test('a write made while the device is offline is pending, then delivered after reconnect', async () => {
  const { page } = chrome;
  await page.click('[data-control="V0"]');
  await page.locator('[data-status="V0"][data-state="pending"]').waitFor({ timeout: 3000 });
  device = startDevice(server);
  await device.lines.next(/^V0 = 0$/);
  await page.locator('[data-status="V0"][data-state="delivered"]').waitFor({ timeout: 5000 });
  await page.locator('[data-device] [data-presence="online"]').waitFor({ timeout: 3000 });
  await page.screenshot({ path: join(ARTIFACTS, 'device-page.png'), fullPage: true });
});

test('the page logged no console errors', () => {
  assert.deepEqual(chrome.problems, []);
});
