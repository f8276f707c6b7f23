// Test harness: starts the real server binary on loopback over a fresh data directory, a real
// device process, and headless Chromium; collects console errors; cleans everything up.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const ARTIFACTS = process.env.BLYNK_ARTIFACTS || join(process.cwd(), 'artifacts');
const SERVER = process.env.BLYNK_SERVER_BIN;
const DEVICE = process.env.BLYNK_DEVICE_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Lines of a child's stdout, read in order: each `next` consumes lines up to its match. */
class Lines {
  constructor(stream) {
    this.seen = [];
    this.cursor = 0;
    this.waiter = null;
    createInterface({ input: stream }).on('line', (line) => {
      this.seen.push(line);
      if (this.waiter) this.waiter();
    });
  }

  take(pattern) {
    while (this.cursor < this.seen.length) {
      const match = this.seen[this.cursor++].match(pattern);
      if (match) return match;
    }
    return null;
  }

  /** Resolves with the next line matching `pattern`, or rejects after `ms`. */
  next(pattern, ms = 5000) {
    const found = this.take(pattern);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`timed out waiting for ${pattern}; saw: ${this.seen.slice(-10).join(' | ')}`));
      }, ms);
      this.waiter = () => {
        const match = this.take(pattern);
        if (match) {
          clearTimeout(timer);
          this.waiter = null;
          resolve(match);
        }
      };
    });
  }
}

export async function startServer() {
  if (!SERVER) throw new Error('BLYNK_SERVER_BIN is not set (run through `cargo xtask test`)');
  const data = mkdtempSync(join(tmpdir(), 'blynk-browser-'));
  // The admin key is given, not read from the banner (which shows it on a first start only).
  const key = randomBytes(24).toString('base64url');
  const child = spawn(SERVER, ['--bind', '127.0.0.1', '--http-port', '0', '--native-port', '0', '--mqtt-port', '0', '--data', data], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, BLYNK_LOG: 'warn', BLYNK_ADMIN_KEY: key },
  });
  const lines = new Lines(child.stdout);
  const [, http] = await lines.next(/dashboard\s+http:\/\/([^/]+)\//);
  const [, native] = await lines.next(/native devices\s+(\S+)/);
  const [, token] = await lines.next(/demo device\s+token (\S+)/);
  return {
    url: `http://${http}/`, native, key, token,
    /** An app API request with the admin key; the parsed JSON answer. */
    async api(method, path, body) {
      const response = await fetch(`http://${http}${path}`, {
        method,
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
      return response.json();
    },
    async stop() { child.kill('SIGTERM'); rmSync(data, { recursive: true, force: true }); },
  };
}

/** The host build of the light firmware: prints what the LED does, takes commands on stdin. */
export function startDevice(server) {
  if (!DEVICE) throw new Error('BLYNK_DEVICE_BIN is not set (run through `cargo xtask test`)');
  const child = spawn(DEVICE, ['--server', server.native, '--token', server.token, '--heartbeat', '2'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = new Lines(child.stdout);
  return {
    lines,
    send(command) { child.stdin.write(`${command}\n`); },
    kill() { child.kill('SIGKILL'); },
  };
}

export async function openBrowser() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const problems = [];
  page.on('console', (message) => { if (message.type() === 'error') problems.push(message.text()); });
  page.on('pageerror', (error) => problems.push(error.message));
  return { browser, page, problems };
}
