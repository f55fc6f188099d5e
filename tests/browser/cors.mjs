// Drives headless Chromium for tests/browser_cors.rs. Usage:
//
//   node tests/browser/cors.mjs '<setup JSON>'
//
// setup: {chromium, shell, origins: {allowed, other}, timeoutMs,
//         flows: [{name, sidecar, tokenMethod, token, badToken, tenant, user}]}
//
// For each flow it opens shell.html (the App Shell stand-in) with the app's page in an
// iframe, once on the allowed origin and once on the other one, runs the page's checks
// (app.js) and prints one JSON line per check: {"check", "ok", "detail", "ms"}. Exit
// status: 0 when every check passed, 1 when one failed, 2 when the run itself broke.

import { chromium } from 'playwright-core';

const setup = JSON.parse(process.argv[2] ?? process.env.BROWSER_CORS_SETUP ?? 'null');
if (!setup) {
  console.error('usage: node cors.mjs <setup JSON>');
  process.exit(2);
}

let failed = 0;
function report(check, ok, detail, ms = 0) {
  if (!ok) failed += 1;
  process.stdout.write(`${JSON.stringify({ check, ok, detail, ms })}\n`);
}

// The Rust test kills this process after its own timeout; this one is shorter, so the
// browser is closed and the reason printed first.
const deadline = setTimeout(() => {
  report('driver/deadline', false, `the run took longer than ${setup.timeoutMs} ms`);
  process.exit(2);
}, setup.timeoutMs ?? 45000);

async function runPage(browser, flow, mode) {
  const prefix = `${flow.name}/${mode}`;
  const origin = setup.origins[mode];
  // A context of its own: no preflight cache or connections shared between the runs.
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const messages = [];
    page.on('console', (message) => messages.push(message.text()));
    page.on('pageerror', (error) => messages.push(`page error: ${error.message}`));
    const shellSetup = { app: `${origin}/app.html`, tokens: { [flow.tokenMethod]: flow.token } };
    await page.goto(`${setup.shell}#${encodeURIComponent(JSON.stringify(shellSetup))}`);
    const frame = await waitForFrame(page, 'app');
    await frame.waitForFunction(() => typeof window.runChecks === 'function', null, { timeout: 10000 });

    const sidecarOrigin = new URL(flow.sidecar).origin;
    const frameOrigin = await frame.evaluate(() => location.origin);
    const shellOrigin = await page.evaluate(() => location.origin);
    report(
      `${prefix}/cross_origin`,
      frameOrigin === origin && frameOrigin !== sidecarOrigin && frameOrigin !== shellOrigin,
      `app page on ${frameOrigin} (expected ${origin}) in a shell on ${shellOrigin}, sidecar on ${sidecarOrigin}`,
    );

    const { results } = await frame.evaluate((pageSetup) => window.runChecks(pageSetup), {
      mode,
      sidecar: flow.sidecar,
      tokenMethod: flow.tokenMethod,
      badToken: flow.badToken,
      tenant: flow.tenant,
      user: flow.user,
    });
    for (const { check, ok, detail, ms } of results) report(`${prefix}/${check}`, ok, detail, ms);

    if (mode === 'other') {
      // A TypeError is also what a refused connection gives: the browser's console says
      // whether it was CORS that refused.
      const refusals = messages.filter((text) => text.includes('blocked by CORS policy'));
      report(
        `${prefix}/refused_by_cors_policy`,
        refusals.length >= 2,
        refusals.length >= 2
          ? refusals[0].slice(0, 300)
          : `the console has ${refusals.length} CORS refusals (expected 2): ${JSON.stringify(messages).slice(0, 600)}`,
      );
    } else {
      const errors = messages.filter((text) => /CORS|page error/.test(text));
      report(`${prefix}/no_cors_errors_in_console`, errors.length === 0, errors.length === 0 ? 'none' : JSON.stringify(errors).slice(0, 600));
    }
  } finally {
    await context.close();
  }
}

async function waitForFrame(page, name) {
  const started = Date.now();
  for (;;) {
    const frame = page.frame({ name });
    if (frame) {
      await frame.waitForLoadState('load');
      return frame;
    }
    if (Date.now() - started > 10000) throw new Error(`no iframe named ${name} in the shell`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

let browser;
try {
  browser = await chromium.launch({ executablePath: setup.chromium, headless: true, timeout: 20000 });
  report('driver/browser_launched', true, `${setup.chromium} ${browser.version()}`);
  for (const flow of setup.flows) {
    for (const mode of ['allowed', 'other']) {
      try {
        await runPage(browser, flow, mode);
      } catch (error) {
        report(`${flow.name}/${mode}/page`, false, `the page did not run its checks: ${error.message}`);
      }
    }
  }
} catch (error) {
  report(browser ? 'driver/run' : 'driver/browser_launched', false, `${setup.chromium}: ${error.message}`);
  process.exitCode = 2;
} finally {
  if (browser) await browser.close();
  clearTimeout(deadline);
}
if (process.exitCode === undefined) process.exitCode = failed === 0 ? 0 : 1;
