// The device page's history in a real headless Chromium: the chart of a numeric datastream shows
// the values a real device wrote (stored ones at load, live ones as they come), and the export
// button downloads them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ARTIFACTS, openBrowser, startDevice, startServer } from './harness.mjs';

let server;
let device;
let chrome;

/** V2's stored history through the app API (as the test's own client, not the page). */
async function storedUptime() {
  const response = await fetch(`${server.url}api/devices/demo/history/V2?format=json&from=0`, {
    headers: { Authorization: `Bearer ${server.key}` },
  });
  assert.equal(response.status, 200);
  return (await response.json()).map((point) => point.value);
}

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

test('the V2 chart shows the values the device wrote, then new ones live', async () => {
  // Stored before the page opens, so the chart must read them from the history.
  // One at a time: the device library sends only the newest value of a pin still waiting.
  for (const value of [11, 22, 33]) {
    device.send(`write V2 ${value}`);
    for (let attempt = 0; attempt < 50 && !(await storedUptime()).includes(value); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  assert.deepEqual(await storedUptime(), [11, 22, 33]);

  const { page } = chrome;
  await page.goto(server.url);
  await page.fill('#key', server.key);
  await page.click('button[type=submit]');
  await page.click('tr[data-device] >> text=demo');
  const chart = page.locator('[data-chart="V2"]');
  await page.locator('[data-chart="V2"][data-points="3"][data-last="33"]').waitFor({ timeout: 3000 });
  // uPlot drew it: a canvas with a time axis labelled in the page.
  await chart.locator('.uplot canvas').waitFor();
  assert.ok(await chart.locator('.u-axis').count() >= 2, 'x and y axes drawn');

  device.send('write V2 44');
  await page.locator('[data-chart="V2"][data-points="4"][data-last="44"]').waitFor({ timeout: 2000 });
});

test('changing the range reloads the chart from the history', async () => {
  const { page } = chrome;
  await page.click('[data-range="7d"]');
  await page.locator('[data-range="7d"][aria-pressed="true"]').waitFor();
  await page.locator('[data-chart="V2"][data-points="4"][data-last="44"]').waitFor({ timeout: 3000 });
  await page.screenshot({ path: join(ARTIFACTS, 'history.png'), fullPage: true });
});

test('the CSV export downloads every value in the range', async () => {
  const { page } = chrome;
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 5000 }),
    page.click('[data-export="V2"][data-format="csv"]'),
  ]);
  assert.match(download.suggestedFilename(), /^demo-V2-7d\.csv$/);
  const text = await readFile(await download.path(), 'utf8');
  const lines = text.trim().split('\n');
  assert.equal(lines[0], 'time,at_ms,value,version,origin');
  assert.deepEqual(lines.slice(1).map((line) => line.split(',')[2]), ['11', '22', '33', '44']);
  assert.ok(lines.slice(1).every((line) => line.endsWith(',device')), text);
});

test('the history page logged no console errors', () => {
  assert.deepEqual(chrome.problems, []);
});
