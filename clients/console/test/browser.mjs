// The console in a real headless browser (Debian's chromium, driven by
// playwright-core: nothing is downloaded). scripts/test-console.sh starts
// the topology and passes:
//   CONSOLE_URL   the console (http://127.0.0.1:PORT/)
//   KILL_PID      the process of the node that is killed (SIGKILL)
//   KILL_NODE     its name
//   SCREENSHOT    where to save a screenshot of the console (optional)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   PY_SERVER     a Python server's name to call (optional; it reverses strings)
//   RO_URL        a second console, started with --console-read-only (optional)
// Every wait polls the page until a condition holds, with a deadline.
import { chromium } from "playwright-core";

const url = process.env.CONSOLE_URL ?? "http://127.0.0.1:7781/";
const killPid = Number(process.env.KILL_PID ?? "0");
const killNode = process.env.KILL_NODE ?? "c";
const screenshot = process.env.SCREENSHOT;
const WAIT = 15_000;

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e instanceof Error ? e.message.split("\n")[0] : e}`);
  }
}

// playwright gives the browser a fresh profile of its own (a temporary
// --user-data-dir, removed on close).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(url);
  /** Types `line` and Enter into the focused terminal. */
  const typeLine = async (line) => {
    await page.keyboard.type(line);
    await page.keyboard.press("Enter");
  };
  /** Waits until a row of the terminal reads exactly `line`. */
  const shellPrints = (line) =>
    page.waitForFunction(
      (want) => [...document.querySelectorAll("#terminal .xterm-rows > div")].some((r) => (r.textContent ?? "").trim() === want),
      line,
      { timeout: WAIT },
    );

  await check("the page joins the node over the WebSocket", async () => {
    await page.waitForSelector('body[data-connected="true"]', { timeout: WAIT });
  });
  await check("the graph shows every node, with servers", async () => {
    for (const n of ["a", "b", killNode]) await page.waitForSelector(`#graph [data-node="${n}"]`, { timeout: WAIT });
    await page.waitForSelector('#graph [data-server="upper"]', { timeout: WAIT });
    await page.waitForSelector('#graph [data-server="shell"]', { timeout: WAIT });
  });
  await check("links carry live stats", async () => {
    await page.waitForFunction(() => [...document.querySelectorAll("#graph .link-label")].some((t) => /frames/.test(t.textContent ?? "")), null, {
      timeout: WAIT,
    });
    await page.waitForSelector("#graph path.link.up", { state: "attached", timeout: WAIT });
    await page.waitForSelector('#link-rows tr[data-link="a|b"]', { timeout: WAIT });
  });
  /** The a|b link row's cells by class or column, as text. */
  const linkRow = () =>
    page.evaluate(() => {
      const tr = document.querySelector('#link-rows tr[data-link="a|b"]');
      if (!tr) return null;
      const td = [...tr.querySelectorAll("td")].map((c) => c.textContent ?? "");
      const cell = (c) => tr.querySelector(`td.${c}`)?.textContent ?? "";
      return { frames: td[5], rtt: cell("rtt"), retransmits: cell("retransmits"), stalls: cell("stalls") };
    });
  await check("links show RTT, retransmits and credit stalls", async () => {
    await page.waitForFunction(
      () => /^\d+(\.\d+)? ms$/.test(document.querySelector('#link-rows tr[data-link="a|b"] td.rtt')?.textContent ?? ""),
      null,
      { timeout: WAIT },
    );
    const row = await linkRow();
    if (!/^\d+$/.test(row?.retransmits ?? "") || !/^\d+$/.test(row?.stalls ?? "")) throw new Error(`link row ${JSON.stringify(row)}`);
    await page.waitForFunction(() => [...document.querySelectorAll("#graph .link-label")].some((t) => /rtt \d/.test(t.textContent ?? "")), null, {
      timeout: WAIT,
    });
  });
  await check("the registry lists the servers (watched)", async () => {
    await page.waitForSelector('#registry-rows tr[data-name="upper"]', { timeout: WAIT });
    await page.waitForSelector(`#registry-rows tr[data-name="oscloud.node.${killNode}"]`, { timeout: WAIT });
  });
  await check("a call with bad JSON is refused in the page", async () => {
    await page.fill("#call-name", "upper");
    await page.fill("#call-request", "{nope");
    await page.click("#call-button");
    await page.waitForFunction(() => (document.getElementById("call-result")?.textContent ?? "").startsWith("bad JSON"), null, { timeout: WAIT });
  });
  if (process.env.PY_SERVER) {
    await check(`a call to a Python server (${process.env.PY_SERVER}) from the form`, async () => {
      await page.waitForSelector(`#registry-rows tr[data-name="${process.env.PY_SERVER}"]`, { timeout: WAIT });
      await page.fill("#call-name", process.env.PY_SERVER);
      await page.fill("#call-request", '"console"');
      await page.click("#call-button");
      await page.waitForFunction(() => document.getElementById("call-result")?.textContent === '"elosnoc"', null, { timeout: WAIT });
    });
  }
  await check("a call to a Rust server (process kind) from the form; the link's stats move", async () => {
    const before = await linkRow();
    await page.fill("#call-name", "upper");
    await page.fill("#call-request", '"hello console"');
    await page.click("#call-button");
    await page.waitForFunction(() => document.getElementById("call-result")?.textContent === '"HELLO CONSOLE"', null, { timeout: WAIT });
    // The call crossed a→b: the next status shows more frames on the link.
    await page.waitForFunction(
      (was) => {
        const tr = document.querySelector('#link-rows tr[data-link="a|b"]');
        const frames = tr?.querySelectorAll("td")[5]?.textContent ?? "";
        return frames !== "" && frames !== was;
      },
      before?.frames ?? "",
      { timeout: WAIT },
    );
  });
  await check("a tap of a pipe scrolls its frames", async () => {
    await page.waitForSelector('#tap-pipe option[value="ticks"]', { state: "attached", timeout: WAIT });
    await page.selectOption("#tap-pipe", "ticks");
    await page.click("#tap-form button");
    await page.waitForFunction(() => (document.getElementById("tap-out")?.childElementCount ?? 0) >= 2, null, { timeout: WAIT });
    const text = await page.textContent("#tap-out");
    if (!/tick \d/.test(text ?? "")) throw new Error(`tap shows ${JSON.stringify(text)}`);
  });
  await check("typing into the terminal reaches the remote shell, its echo comes back", async () => {
    await page.waitForSelector('#term-server option[value="shell"]', { state: "attached", timeout: WAIT });
    await page.selectOption("#term-server", "shell");
    await page.click("#term-form button");
    await page.waitForFunction(() => (document.getElementById("term-state")?.textContent ?? "").startsWith("attached"), null, { timeout: WAIT });
    await page.click("#terminal .xterm");
    await typeLine("echo hello-$((6*7))-console");
    // The command line shows the keys as typed; only the shell prints 42.
    await shellPrints("hello-42-console");
  });
  await check("attaching again gets the same shell's screen", async () => {
    await page.click("#term-form button");
    await page.click("#terminal .xterm");
    await typeLine("echo again-$((2+3))");
    await shellPrints("again-5");
    await typeLine("echo hello-$((6*7))-console");
    await shellPrints("hello-42-console");
  });
  if (screenshot) {
    await check("screenshot", async () => {
      await page.screenshot({ path: screenshot, fullPage: true });
    });
  }
  if (process.env.RO_URL) {
    const ro = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    ro.on("pageerror", (e) => problems.push(`read-only page: ${e}`));
    ro.on("console", (m) => {
      if (m.type() === "error") problems.push(`read-only page: ${m.text()}`);
    });
    await ro.goto(process.env.RO_URL);
    await check("a read-only console says so and disables the call form", async () => {
      await ro.waitForSelector('body[data-connected="true"][data-read-only="true"]', { timeout: WAIT });
      if ((await ro.textContent("#mode")) !== "read-only") throw new Error("no read-only badge");
      for (const id of ["#call-button", "#cast-button", "#call-name"]) if (!(await ro.isDisabled(id))) throw new Error(`${id} enabled`);
    });
    await check("a read-only console gets live status (graph, link RTT) without calling", async () => {
      await ro.waitForSelector('#graph [data-server="upper"]', { timeout: WAIT });
      await ro.waitForFunction(() => /ms$/.test(document.querySelector('#link-rows tr[data-link="b|a"] td.rtt')?.textContent ?? ""), null, {
        timeout: WAIT,
      });
    });
    await check("a read-only console taps a pipe", async () => {
      await ro.waitForSelector('#tap-pipe option[value="ticks"]', { state: "attached", timeout: WAIT });
      await ro.selectOption("#tap-pipe", "ticks");
      await ro.click("#tap-form button");
      await ro.waitForFunction(() => (document.getElementById("tap-out")?.childElementCount ?? 0) >= 2, null, { timeout: WAIT });
    });
    await check("the node refuses a read-only console's call, saying why", async () => {
      // Forms re-enabled by hand: the node, not the page, refuses.
      await ro.evaluate(() => {
        for (const id of ["call-name", "call-request", "call-button"]) document.getElementById(id).disabled = false;
      });
      await ro.fill("#call-name", "upper");
      await ro.fill("#call-request", '"sneaky"');
      await ro.click("#call-button");
      // The page's own note already says "read-only": wait for the node's
      // answer, which says denied and why.
      await ro.waitForFunction(() => /denied/i.test(document.getElementById("call-result")?.textContent ?? ""), null, { timeout: WAIT });
      const text = await ro.textContent("#call-result");
      if (!/read-only/.test(text ?? "")) throw new Error(`call result ${JSON.stringify(text)}`);
    });
    await ro.close();
  }
  await check(`a killed node (${killNode}, SIGKILL) leaves the graph, the others stay`, async () => {
    if (!killPid) throw new Error("KILL_PID not set");
    process.kill(killPid, "SIGKILL");
    await page.waitForSelector(`#graph [data-node="${killNode}"]`, { state: "detached", timeout: WAIT });
    await page.waitForSelector(`#registry-rows tr[data-name="oscloud.node.${killNode}"]`, { state: "detached", timeout: WAIT });
    for (const n of ["a", "b"]) await page.waitForSelector(`#graph [data-node="${n}"]`, { timeout: 2000 });
    await page.waitForFunction((n) => (document.getElementById("graph-note")?.textContent ?? "").includes(n), killNode, { timeout: WAIT });
  });
  await check("no script or Content-Security-Policy errors in the page", async () => {
    if (problems.length) throw new Error(problems.join(" | "));
  });
} finally {
  await browser.close();
}
console.log(`console checks: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
