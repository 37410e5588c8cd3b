// Opens a fanfare-loadtest HTML report in headless Chromium: it must load with no console
// errors, no page errors and no requests beyond the file itself, and draw its charts. Keeps a
// screenshot. Usage: node open.mjs REPORT.html SCREENSHOT.png (PLAYWRIGHT: the path of
// playwright-core; CHROMIUM: the browser).
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [report, screenshot] = process.argv.slice(2);
const { chromium } = await import(pathToFileURL(join(process.env.PLAYWRIGHT, "index.mjs")).href);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 800 } });
  const target = pathToFileURL(report).href;
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("request", (r) => { if (r.url() !== target) problems.push(`request: ${r.url()}`); });
  await page.goto(target, { waitUntil: "load" });
  const charts = await page.locator("svg polyline").count();
  const svgs = await page.locator("svg").count();
  await page.screenshot({ path: screenshot, fullPage: true });
  if (charts === 0) problems.push("no lines drawn");
  if (problems.length) {
    console.log(problems.join("\n"));
    process.exitCode = 1;
  } else {
    console.log(`opened: ${svgs} charts, ${charts} lines; screenshot ${screenshot}`);
  }
} finally {
  await browser.close();
}
