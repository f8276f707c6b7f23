// Test harness: starts the real server binary on loopback over a fresh data directory, a real
// device process, and headless Chromium; collects console errors; cleans everything up.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
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

/**
 * Waits for the server's ready file (`--ready-file`, written by rename, so whole once there) and
 * returns it; rejects when the child ends first or after `ms`.
 */
async function readyFile(child, path, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`blynk-server ended before it was ready (${child.exitCode ?? child.signalCode})`);
    }
    try {
      const ready = JSON.parse(readFileSync(path, 'utf8'));
      if (ready.pid === child.pid) return ready;
    } catch (error) {
      if (error.code !== 'ENOENT') throw error;
    }
    if (Date.now() > deadline) throw new Error(`blynk-server wrote no ready file within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export async function startServer() {
  if (!SERVER) throw new Error('BLYNK_SERVER_BIN is not set (run through `cargo xtask test`)');
  const data = mkdtempSync(join(tmpdir(), 'blynk-browser-'));
  // The admin key is given, not read from the server (which makes one on a first start only).
  const key = randomBytes(24).toString('base64url');
  const child = spawn(SERVER, ['--bind', '127.0.0.1', '--http-port', '0', '--native-port', '0', '--mqtt-port', '0', '--data', join(data, 'data'), '--ready-file', join(data, 'ready.json')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, BLYNK_LOG: 'warn', BLYNK_ADMIN_KEY: key },
  });
  let ready;
  try {
    ready = await readyFile(child, join(data, 'ready.json'));
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const { http, native, demo_token: token } = ready;
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
