// Measures the dashboard in headless Chromium against a running cluster
// (BENCHMARKS.md, "Dashboard"): first paint and first data of the
// Workloads page, and the time from a write (a PATCH the page itself sends)
// to the table showing it. Env: DASHBOARD_URL, DASHBOARD_TOKEN, CHROMIUM,
// PLAYWRIGHT_CORE, NAMESPACE (where the probe Deployment is made), RUNS.
'use strict';

const { chromium } = require(process.env.PLAYWRIGHT_CORE);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const base = process.env.DASHBOARD_URL;
  await page.goto(base);
  await page.evaluate((token) => sessionStorage.setItem('shoal.dashboard.token', token), process.env.DASHBOARD_TOKEN);
  const namespace = process.env.NAMESPACE;
  // A probe Deployment in the namespace of the 10,000 pods.
  await page.evaluate(async (namespace) => {
    const token = sessionStorage.getItem('shoal.dashboard.token');
    await fetch('/apis/apps/v1/namespaces/' + namespace + '/deployments', {
      method: 'POST', headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'aaa-probe' },
        spec: { replicas: 0, selector: { matchLabels: { app: 'aaa-probe' } },
          template: { metadata: { labels: { app: 'aaa-probe' } }, spec: { containers: [{ name: 'c', image: 'busybox:1' }] } } } }),
    });
  }, namespace);
  const runs = Number(process.env.RUNS || 5);
  for (let run = 0; run < runs; run += 1) {
    await page.goto(base + '#/workloads');
    await page.reload();
    await page.waitForSelector('tr[data-pod]', { timeout: 30000 });
    const timings = await page.evaluate(() => {
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      const data = performance.getEntriesByName('shoal:first-data')[0];
      return { firstContentfulPaint: paint && paint.startTime, firstData: data && data.startTime, podsShown: performance.now(),
        total: document.querySelector('[data-count="pods"]').textContent };
    });
    console.log('load ' + JSON.stringify(timings));
  }
  await page.waitForSelector('tr[data-deployment="aaa-probe"]');
  for (let run = 1; run <= runs; run += 1) {
    const latency = await page.evaluate(async ({ namespace, replicas }) => {
      const token = sessionStorage.getItem('shoal.dashboard.token');
      const cell = () => document.querySelector('tr[data-deployment="aaa-probe"] td[data-ready]');
      const seen = new Promise((resolve) => {
        const observer = new MutationObserver(() => {
          if (cell() && cell().textContent.endsWith('/' + replicas)) { observer.disconnect(); resolve(performance.now()); }
        });
        observer.observe(document.getElementById('main'), { subtree: true, childList: true, characterData: true });
      });
      const start = performance.now();
      const response = await fetch('/apis/apps/v1/namespaces/' + namespace + '/deployments/aaa-probe/scale', {
        method: 'PATCH', headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/merge-patch+json' },
        body: JSON.stringify({ spec: { replicas } }),
      });
      const answered = performance.now();
      const shown = await seen;
      return { status: response.status, writeMs: answered - start, shownMs: shown - start };
    }, { namespace, replicas: run });
    console.log('update ' + JSON.stringify(latency));
  }
  await browser.close();
}

main().catch((error) => { console.error(error); process.exit(1); });
