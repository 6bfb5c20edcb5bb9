// The instructor dashboard, driven in Debian's Chromium (playwright-core) against the real
// server binary with a real SQLite file, real hyperon and real Python: sign-in (right and
// wrong token), the sessions list and search, one session's cells, results and a failed
// job's error, the failures filter, the .metta export run with hyperon's own metta-py, the
// live queue view updating without a reload, phone width, JavaScript off, sign-out, and
// refusals without a session.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const binary = path.join(root, "target/debug/metta-learner-backend");
const mettaPy = path.join(root, ".venv/bin/metta-py");
const artifacts = path.join(here, "artifacts");
const token = `browser-token-${process.pid}-${Date.now()}`;
const session = `browser-${process.pid}`;

let server;
let base;
let browser;
let work;
const jobs = {};

/** Starts the server on a free loopback port and resolves with its base URL. */
function startServer() {
  work = mkdtempSync(path.join(tmpdir(), "mlb-browser-"));
  const child = spawn(binary, [], {
    cwd: work,
    env: {
      PATH: process.env.PATH,
      PORT: "0",
      HOST: "127.0.0.1",
      DATABASE_URL: `sqlite://${work}/browser.db`,
      PYTHON: path.join(root, ".venv/bin/python"),
      INSTRUCTOR_TOKEN: token,
      RUST_LOG: "info",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  server = child;
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log}`)), 60000);
    child.stderr.on("data", (chunk) => {
      log += chunk.toString();
      const found = log.match(/listening on (http:\/\/[0-9.:]+)/);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`the server exited (${code}):\n${log}`)));
  });
  // (server.log is kept in `log` for the failure message only.)
}

/** Submits a job through the v1 API and waits for its final state. */
async function run(body) {
  const response = await fetch(`${base}/api/v1/jobs?wait=30`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const job = await response.json();
  assert.ok(response.status === 200, `the job finished: ${JSON.stringify(job)}`);
  return job;
}

async function newPage(options = {}) {
  const context = await browser.newContext({ acceptDownloads: true, ...options });
  return { context, page: await context.newPage() };
}

async function signIn(page, secret = token) {
  await page.goto(`${base}/instructor/sign-in`);
  await page.fill("input[name=token]", secret);
  await Promise.all([page.waitForLoadState("load"), page.click("button[type=submit]")]);
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  base = await startServer();
  // A learner's session: two cells, a MeTTa parse error, a Python exception, a time-out.
  jobs.definition = await run({ language: "metta", sessionId: session, codeId: "defs", code: "; squares\n(= (square $x) (* $x $x))" });
  jobs.use = await run({ language: "metta", sessionId: session, codeId: "use", code: "!(square 7)\n!(+ 2 3)" });
  jobs.parse = await run({ language: "metta", sessionId: session, code: "!(square 3" });
  jobs.python = await run({ language: "python", sessionId: session, code: "raise ValueError('boom from python')" });
  jobs.loop = await run({ language: "metta", sessionId: session, timeoutSecs: 1, code: "(= (spin $n) (spin (+ $n 1)))\n!(spin 0)" });
  assert.equal(jobs.use.result, "[49]\n[5]\n");
  assert.equal(jobs.python.status, "failed");
  assert.equal(jobs.loop.status, "timed_out");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
  });
});

after(async () => {
  if (browser) { await browser.close(); }
  if (server) { server.kill("SIGKILL"); }
  if (work) { rmSync(work, { recursive: true, force: true }); }
});

test("without a sign-in every page and data call is refused", async () => {
  const { context, page } = await newPage();
  for (const target of ["/instructor/sessions", `/instructor/sessions/${session}`, "/instructor/queue"]) {
    const response = await page.goto(`${base}${target}`);
    assert.equal(response.status(), 401, target);
    assert.match(await page.textContent("main"), /Sign in to see this page/, target);
  }
  for (const target of ["/instructor/queue/live", `/instructor/sessions/${session}/export`]) {
    const response = await fetch(`${base}${target}`);
    assert.equal(response.status, 401, target);
    assert.match((await response.json()).error, /sign in/);
  }
  const forged = await fetch(`${base}/instructor/queue/live`, { headers: { Cookie: "mlb_instructor=9999999999.abc.00" } });
  assert.equal(forged.status, 401, "a forged cookie is refused");
  await context.close();
});

test("a wrong token is refused with a clear message", async () => {
  const { context, page } = await newPage();
  await signIn(page, "not-the-token");
  assert.match(await page.textContent("[role=alert]"), /That token is not right/);
  assert.deepEqual(await context.cookies(), [], "no session cookie for a wrong token");
  await context.close();
});

test("an instructor finds the session and sees its cells, results, errors and export", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  assert.ok(page.url().endsWith("/instructor/sessions"), page.url());
  const cookies = await context.cookies();
  const cookie = cookies.find((c) => c.name === "mlb_instructor");
  assert.ok(cookie, "signed in with a session cookie");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(!cookie.value.includes(token), "the cookie does not carry the token");
  assert.ok(!(await page.content()).includes(token), "the page does not carry the token");
  assert.equal(await page.evaluate(() => document.cookie.includes("mlb_instructor")), false, "scripts cannot read the cookie");

  // Search by session id, then open it.
  await page.fill("input[name=q]", session);
  await Promise.all([page.waitForLoadState("load"), page.click("form.search button")]);
  const row = page.locator(`tr[data-session="${session}"]`);
  assert.equal(await row.count(), 1, "the search finds the session");
  assert.equal((await row.locator("td[data-label=Failed]").textContent()).trim(), "2");
  assert.equal((await row.locator("td[data-label='Timed out']").textContent()).trim(), "1");
  await Promise.all([page.waitForLoadState("load"), row.locator("a").click()]);

  // The history: both cells in order, highlighted, with their last results.
  const cells = page.locator("article.cell");
  assert.equal(await cells.count(), 2);
  assert.deepEqual(await cells.evaluateAll((nodes) => nodes.map((n) => n.dataset.codeId)), ["defs", "use"]);
  assert.ok((await cells.nth(0).locator("span.tok-kw").count()) > 0, "MeTTa is highlighted");
  assert.ok((await cells.nth(0).locator("span.tok-comment").count()) > 0);
  assert.equal((await cells.nth(1).locator("pre.result").textContent()).trim(), "[49]\n[5]");

  // The job log: every job, the failed ones with their errors, easy to filter.
  assert.equal(await page.locator("article.job").count(), 5);
  const python = page.locator(`article.job[data-job-id="${jobs.python.id}"]`);
  assert.equal(await python.getAttribute("data-status"), "failed");
  assert.match(await python.locator("pre.error").textContent(), /ValueError: boom from python/);
  const parse = page.locator(`article.job[data-job-id="${jobs.parse.id}"]`);
  assert.ok((await parse.locator("pre.error").textContent()).length > 0, "the parse error is shown");
  await Promise.all([page.waitForLoadState("load"), page.click("nav.filters >> text=Failures and time-outs")]);
  const shown = await page.locator("article.job").evaluateAll((nodes) => nodes.map((n) => n.dataset.status).sort());
  assert.deepEqual(shown, ["failed", "failed", "timed_out"]);
  await page.screenshot({ path: path.join(artifacts, "session.png"), fullPage: true });

  // The export downloads and runs with hyperon's metta-py to the same results.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("text=Download .metta")]);
  const file = path.join(artifacts, `${session}.metta`);
  await download.saveAs(file);
  assert.equal(download.suggestedFilename(), `${session}.metta`);
  const output = execFileSync(mettaPy, [file], { cwd: artifacts, encoding: "utf8" });
  assert.equal(output, jobs.use.result, `metta-py printed ${JSON.stringify(output)}`);
  assert.match(readFileSync(file, "utf8"), /; cell 2: use/);
  await context.close();
});

test("a missing session is refused", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  const response = await page.goto(`${base}/instructor/sessions/no-such-session`);
  assert.equal(response.status(), 404);
  assert.match(await page.textContent("[role=alert]"), /No session is named 'no-such-session'/);
  await context.close();
});

test("the live queue view shows a job start running without a reload", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${base}/instructor/queue`);
  assert.equal(await page.locator(".chart svg").count(), 1, "the chart is there");
  const finished = Number(await page.textContent("[data-field=finished]"));
  assert.ok(finished >= 5, `recent throughput counts the seeded jobs: ${finished}`);
  const submitted = await fetch(`${base}/api/v1/jobs`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ language: "python", sessionId: session, code: "import time\ntime.sleep(4)\nprint('slept')" }),
  });
  const job = await submitted.json();
  assert.equal(submitted.status, 202, JSON.stringify(job));
  await page.waitForSelector(`[data-running-job="${job.id}"]`, { timeout: 8000 });
  assert.equal((await page.textContent("[data-field=running]")).trim(), "1");
  await page.screenshot({ path: path.join(artifacts, "queue.png"), fullPage: true });
  await page.waitForSelector('[data-running-job=""]', { timeout: 15000 });
  await context.close();
});

test("at phone width and with JavaScript off the pages still work", async () => {
  const { context, page } = await newPage({ viewport: { width: 390, height: 844 }, javaScriptEnabled: false });
  await signIn(page);
  await page.goto(`${base}/instructor/sessions/${session}`);
  assert.equal(await page.locator("article.cell").count(), 2);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at 390 px (overflow ${overflow}px)`);
  await page.screenshot({ path: path.join(artifacts, "session-phone.png"), fullPage: false });
  await page.goto(`${base}/instructor/queue`);
  assert.ok(Number(await page.textContent("[data-field=finished]")) >= 5, "the queue page renders on the server");
  await context.close();
});

test("signing out ends the session, and its old cookie no longer works", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  const cookie = (await context.cookies()).find((c) => c.name === "mlb_instructor");
  await Promise.all([page.waitForLoadState("load"), page.click("header.top button:has-text('Sign out')")]);
  assert.ok(page.url().endsWith("/instructor/sign-in"), page.url());
  const response = await page.goto(`${base}/instructor/sessions`);
  assert.equal(response.status(), 401);
  const replayed = await fetch(`${base}/instructor/queue/live`, { headers: { Cookie: `mlb_instructor=${cookie.value}` } });
  assert.equal(replayed.status, 401, "the signed-out cookie is revoked");
  await context.close();
});
