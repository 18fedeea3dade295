// The dashboard in a real browser: headless Chromium (Debian's), driven by
// Playwright's core library, against a running cluster. Run by
// crates/shoal/tests/dashboard.rs, which starts the cluster and passes:
// DASHBOARD_URL, DASHBOARD_TOKEN, KUBECTL, KUBECONFIG, CHROMIUM,
// PLAYWRIGHT_CORE (the package's directory) and SCREENSHOTS (a directory).
// Prints one `step: ...` line per step and `timing NAME MS` lines; exits
// non-zero on the first failed check.
'use strict';

const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const url = process.env.DASHBOARD_URL;
const screenshots = process.env.SCREENSHOTS;
// How long the page may take to show a change it is watching.
const FOLLOW_MS = 2000;
// How long pods may take to start or stop on a loaded machine.
const POD_MS = 90000;

function kubectl(...args) {
  return execFileSync(process.env.KUBECTL, args, {
    env: { ...process.env, KUBECONFIG: process.env.KUBECONFIG },
    encoding: 'utf8',
    timeout: 60000,
  });
}

function step(text) { console.log('step: ' + text); }

async function shot(page, name) {
  const file = path.join(screenshots, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  console.log('screenshot: ' + file);
}

async function text(locator) { return (await locator.textContent({ timeout: 5000 })).trim(); }

let page = null;

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    // Root has no user namespaces for Chromium's sandbox here.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    timeout: 60000,
  });
  try {
    // The cluster CA is not one the browser trusts.
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
    page = await context.newPage();
    const consoleErrors = [];
    page.on('pageerror', (error) => consoleErrors.push(String(error)));
    page.setDefaultTimeout(10000);

    step('the page loads without a token and asks for one; its data does not');
    await page.goto(url);
    await page.locator('#login-form').waitFor();
    const anonymous = await page.evaluate(async () => (await fetch('/ui/api/store')).status);
    if (anonymous !== 401) throw new Error('/ui/api/store without a token answered ' + anonymous);
    const firstPaint = await page.evaluate(() => performance.getEntriesByType('paint').map((entry) => [entry.name, entry.startTime]));
    console.log('paint ' + JSON.stringify(firstPaint));

    step('a wrong token is refused');
    await page.fill('#token', 'not-a-token');
    await page.click('#login-form button');
    await page.locator('#login-error', { hasText: 'does not know this token' }).waitFor();

    step('log in: the store page shows the leader and the member');
    await page.fill('#token', process.env.DASHBOARD_TOKEN);
    await page.click('#login-form button');
    await page.locator('[data-card="Leader"] .value.ok').waitFor();
    const members = await page.locator('tr[data-member]').count();
    if (members !== 1) throw new Error('expected 1 member row, found ' + members);
    const revision = Number(await text(page.locator('[data-card="Revision"] .value')));
    if (!(revision > 1)) throw new Error('no store revision shown: ' + revision);
    await shot(page, '1-store');

    step('machines: the server is Ready, with its pods counted');
    await page.click('a[data-page="machines"]');
    const node = page.locator('tr[data-node]').first();
    await node.locator('td.ok', { hasText: 'Ready' }).waitFor();
    await node.locator('td[data-pods]', { hasText: /^\d+ \/ \d+$/ }).waitFor();
    await shot(page, '2-machines');

    step('workloads: the deployment web with 2 of 2 ready');
    await page.click('a[data-page="workloads"]');
    const web = page.locator('tr[data-deployment="web"]');
    await web.locator('td[data-ready]', { hasText: '2/2' }).waitFor({ timeout: POD_MS });
    await shot(page, '3-deployment');

    step('kubectl scale to 3: the page follows');
    const scaleStart = Date.now();
    kubectl('scale', 'deployment/web', '--replicas=3');
    const scaled = Date.now();
    await web.locator('td[data-ready]', { hasText: /\/3$/ }).waitFor({ timeout: FOLLOW_MS });
    console.log('timing scale-followed ' + (Date.now() - scaled) + ' (kubectl took ' + (scaled - scaleStart) + ')');
    await web.locator('td[data-ready]', { hasText: '3/3' }).waitFor({ timeout: POD_MS });
    const webPods = page.locator('tr[data-pod^="web-"]');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-pod^="web-"]').length === 3);
    await shot(page, '4-scaled');

    step('delete a pod: the page shows it go and a new one come up');
    const victim = await webPods.first().getAttribute('data-pod');
    kubectl('delete', 'pod', victim, '--wait=false');
    const deleted = Date.now();
    await page.waitForFunction((name) => {
      const row = document.querySelector('tr[data-pod="' + name + '"]');
      return !row || row.querySelector('td[data-status]').textContent === 'Terminating';
    }, victim, { timeout: FOLLOW_MS });
    console.log('timing delete-followed ' + (Date.now() - deleted));
    await page.waitForFunction((name) => {
      const rows = [...document.querySelectorAll('tr[data-pod^="web-"]')];
      return rows.some((row) => row.dataset.pod !== name && row.querySelector('td[data-status]').textContent !== 'Running');
    }, victim, { timeout: POD_MS }).catch(() => { /* the new pod may be Running before a frame shows it starting */ });
    await shot(page, '5-pod-deleted');
    await page.waitForFunction((name) => {
      const rows = [...document.querySelectorAll('tr[data-pod^="web-"]')];
      return !rows.some((row) => row.dataset.pod === name)
        && rows.length === 3
        && rows.every((row) => row.querySelector('td[data-status]').textContent === 'Running');
    }, victim, { timeout: POD_MS });
    await web.locator('td[data-ready]', { hasText: '3/3' }).waitFor({ timeout: POD_MS });
    await shot(page, '6-recovered');

    step('filters: another namespace hides web, a label selector finds it');
    await page.fill('#namespace', 'kube-system');
    await page.press('#namespace', 'Enter');
    await page.locator('[data-count="deployments"]').waitFor();
    await page.waitForFunction(() => !document.querySelector('tr[data-deployment="web"]'));
    await page.fill('#namespace', '');
    await page.fill('#labels', 'app=web');
    await page.press('#labels', 'Enter');
    await web.waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('tr[data-pod]')].every((row) => row.dataset.pod.startsWith('web-')));
    await page.fill('#labels', 'app=nothing-has-this');
    await page.press('#labels', 'Enter');
    await page.waitForFunction(() => !document.querySelector('tr[data-deployment]') && !document.querySelector('tr[data-pod]'));
    await page.fill('#labels', '');
    await page.press('#labels', 'Enter');

    step('an event whose text is markup is shown as text');
    kubectl('apply', '-f', process.env.HOSTILE_EVENT);
    await page.click('a[data-page="events"]');
    await page.locator('td', { hasText: '<img src=x onerror="window.pwned=1">' }).waitFor();
    const pwned = await page.evaluate(() => window.pwned === 1 || document.querySelector('main img') !== null);
    if (pwned) throw new Error('the event message was parsed as markup');
    await shot(page, '7-events');

    step('services: kubernetes with its endpoint');
    await page.click('a[data-page="services"]');
    await page.locator('tr[data-service="kubernetes"] td[data-endpoints] .pill').waitFor();
    await shot(page, '8-services');

    step('log out: the login comes back and the token is gone');
    await page.click('#logout');
    await page.locator('#login-form').waitFor();
    const kept = await page.evaluate(() => sessionStorage.length);
    if (kept !== 0) throw new Error('the token was kept after logout');
    if (consoleErrors.length) throw new Error('page errors: ' + consoleErrors.join('; '));
    console.log('dashboard: all steps passed');
  } catch (error) {
    if (page) await shot(page, 'failed').catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error('dashboard test failed: ' + (error && error.stack || error));
  process.exit(1);
});
