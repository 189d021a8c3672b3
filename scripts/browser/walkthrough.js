// The chat demo page in headless Chromium: connect with the pre-filled demo token (sent in
// Sec-WebSocket-Protocol), ping, subscribe, send, flood, unknown dialog, disconnect, then a
// forged token, refused over HTTP (the browser only sees a failure) or, in close mode,
// accepted and closed with 4401. Usage: node walkthrough.js URL http|close
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, mode] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    const log = () => page.locator("#log").innerText();
    const waitFor = async (text) => {
      for (let i = 0; i < 200; i++) {
        if ((await log()).includes(text)) return;
        await page.waitForTimeout(50);
      }
      throw new Error(`timed out waiting for ${text}; the page's log:\n${await log()}`);
    };
    const step = async (what, action, expect) => {
      await action();
      await waitFor(expect);
      console.log(`ok: ${what}`);
    };
    await step("connect (subprotocol bearer selected)", () => page.click("#connect"),
      "connected (protocol bearer)");
    await step("ping", () => page.click("#ping"), '{"type":"pong"}');
    await step("subscribe", () => page.click("#subscribe"), '"type":"subscribed"');
    await step("send", () => page.click("#send"), '"type":"message"');
    await step("flood is rate limited", () => page.click("#flood"), "rate_limited");
    await step("unknown dialog", async () => {
      await page.fill("#dialog", "no-such-dialog");
      await page.click("#subscribe");
    }, "not_found");
    await step("disconnect", () => page.click("#disconnect"), "closed: 1000");
    const refused = mode === "close" ? "closed: 4401" : "connection failed";
    await step(`forged token (${refused})`, async () => {
      await page.fill("#token", "not.a.token");
      await page.click("#connect");
    }, refused);
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
