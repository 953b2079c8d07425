// The spend ledger under `kill -9`: the bundled proxy is killed with a stream in flight, restarted on the same
// ledger, and must have lost no committed spend (and counted the in-flight request in full).
import { execFileSync } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { replayLedger } from "../proxy-image/src/ledgerStore";
import { credentialDigest } from "../proxy-image/src/policy";
import { bundle } from "../scripts/images.mts";
import { ANTHROPIC_BODY, REAL_KEYS, TOKENS, anthropicHeaders, send } from "./support/keyProxyHarness";
import { MockUpstream, anthropicStream } from "./support/mockUpstream";
import { type RunningProcess, startProcess } from "./support/processes";
import { tempDir } from "./support/tempDirs";
import { testPki } from "./support/tls";

const upstream = new MockUpstream();
const dir = tempDir("keyproxy-crash");
const ledgerFile = path.join(dir, "ledger.log");
let bundleFile: string;
/** leaseUsd 0 (the default here): every request has its own lease, written before it and settled after it. */
const env = ({ ledger = ledgerFile, registryDir = path.join(dir, "agents"), leaseUsd = 0 } = {}) => ({
    PATH: process.env.PATH,
    KEYPROXY_CONFIG: JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        admin: [{ host: "127.0.0.1", port: 0 }],
        upstreams: { anthropic: { baseUrl: upstream.baseUrl } },
        extraCaFile: testPki().caFile,
        registryDir,
        metering: { ledgerFile: ledger, leaseUsd },
    }),
    KEYPROXY_KEY_ANTHROPIC: REAL_KEYS.anthropic,
});
const BART = { name: "bart", credentialSha256: credentialDigest(TOKENS.bart), subnet: "127.0.0.0/8", budget: { totalUsd: 1 } };
// ANTHROPIC_BODY's bytes at $6/M plus its 64 output tokens at $15/M
const RESERVED = Math.ceil(Buffer.byteLength(ANTHROPIC_BODY) * 6 + 64 * 15) / 1e6;

async function start(environment = env()): Promise<{ proxy: RunningProcess; port: number; adminPort: number }> {
    const proxy = startProcess(process.execPath, [bundleFile, "serve"], environment);
    const listening = await proxy.waitFor("listening");
    await proxy.waitFor("registry_loaded");
    return { proxy, port: listening.port, adminPort: Number(listening.admin) };
}

/** Settled spend per window, straight from the ledger file, as a fresh process would see it. */
function ledgerTotals(file = ledgerFile): Record<string, number> {
    const totals: Record<string, number> = {};
    for (const record of replayLedger(readFileSync(file, "utf8")).records) {
        if (record.t === "balance" && record.agent === "bart") totals[record.key] = (totals[record.key] ?? 0) + record.micros;
    }
    return totals;
}

beforeAll(async () => {
    await upstream.start();
    bundleFile = await bundle("keyProxy");
    execFileSync(process.execPath, [bundleFile, "register"], { input: JSON.stringify(BART), env: env() });
});
afterAll(() => upstream.stop());

/** Opens a stream the upstream holds open, then kills the proxy with `kill -9` while it is in flight. */
async function killWithStreamInFlight(running: { proxy: RunningProcess; port: number }) {
    const held = Promise.withResolvers<void>();
    upstream.handler = (_req, res) => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(anthropicStream()[0], () => held.resolve());
    };
    const req = http.request({ host: "127.0.0.1", port: running.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false });
    req.on("error", () => undefined);
    req.end(ANTHROPIC_BODY);
    await held.promise;
    running.proxy.child.kill("SIGKILL");
    await running.proxy.exited();
    upstream.handler = undefined;
}

/** Settled cost of the requests a proxy has logged, once it has logged `count` of them. */
async function loggedCost(proxy: RunningProcess, count: number): Promise<number> {
    const requestLines = () => proxy.lines.map((l) => JSON.parse(l)).filter((l) => l.event === "request");
    await expect.poll(() => requestLines().length).toBe(count);
    return requestLines().reduce((sum, l) => sum + l.cost_usd, 0);
}

describe("a budget lease under kill -9", () => {
    it("never under-counts what was spent within the lease, and over-counts by at most the lease", async () => {
        const LEASE = 0.01;
        const leaseEnv = env({ ledger: path.join(dir, "lease-ledger.log"), registryDir: path.join(dir, "lease-agents"), leaseUsd: LEASE });
        execFileSync(process.execPath, [bundleFile, "register"], { input: JSON.stringify(BART), env: leaseEnv });
        const first = await start(leaseEnv);
        for (let i = 0; i < 4; i++) expect((await send(first.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        const settled = await loggedCost(first.proxy, 4);
        expect(settled).toBeCloseTo(4 * 0.000111, 9);
        // The requests were spent in memory: on disk there is the lease alone, reserved and not settled.
        const onDisk = replayLedger(readFileSync(path.join(dir, "lease-ledger.log"), "utf8")).records;
        expect(onDisk.filter((r) => r.t === "reserve").map((r) => r.micros)).toEqual([LEASE * 1e6]);
        expect(onDisk.filter((r) => r.t === "settle")).toEqual([]);

        await killWithStreamInFlight(first);
        const second = await start(leaseEnv);
        await second.proxy.waitFor("ledger_recovered_reservation");
        const total = ledgerTotals(path.join(dir, "lease-ledger.log")).total / 1e6;
        expect(total).toBeGreaterThanOrEqual(settled + RESERVED);
        expect(total - (settled + RESERVED)).toBeLessThanOrEqual(LEASE);
        expect(total).toBeCloseTo(LEASE, 9);
        await second.proxy.stop();
    });
});

describe("the ledger under kill -9", () => {
    it("keeps every committed settlement and counts the in-flight request at its full reservation", async () => {
        const first = await start();
        for (let i = 0; i < 4; i++) expect((await send(first.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        const settled = await loggedCost(first.proxy, 4);
        expect(settled).toBeCloseTo(4 * 0.000111, 9);

        // A stream the upstream holds open: its reservation is on disk before the request left the proxy.
        await killWithStreamInFlight(first);

        const second = await start();
        const recovered = await second.proxy.waitFor("ledger_recovered_reservation");
        const reserved = RESERVED;
        expect(recovered.usd).toBeCloseTo(reserved, 9);
        expect(ledgerTotals().total / 1e6).toBeCloseTo(settled + reserved, 9);
        const metrics = await (await fetch(`http://127.0.0.1:${second.adminPort}/metrics`)).text();
        const remaining = Number(/keyproxy_budget_remaining_usd\{agent="bart",window="total"\} ([\d.e-]+)/.exec(metrics)?.[1]);
        expect(remaining).toBeCloseTo(1 - settled - reserved, 9);
        await second.proxy.stop();
    });

    it("starts past a record torn by a crash mid-write, reporting it, with totals intact", async () => {
        const before = ledgerTotals();
        const tear = '1a2b3c4d {"t":"settle","id":"x","mic';
        appendFileSync(ledgerFile, tear);
        const third = await start();
        const torn = third.proxy.lines.map((l) => JSON.parse(l)).find((l) => l.event === "ledger_torn_tail");
        expect(torn).toMatchObject({ bytes: Buffer.byteLength(tear) });
        expect(ledgerTotals()).toEqual(before);
        await third.proxy.stop();
    });

    it("refuses to start from a ledger corrupted anywhere but its end", async () => {
        const text = readFileSync(ledgerFile, "utf8");
        appendFileSync(ledgerFile, `${text.split("\n")[0].replace(/"micros":\d+/, '"micros":1')}\n`);
        const broken = startProcess(process.execPath, [bundleFile, "serve"], env());
        const fatal = await broken.waitFor("fatal");
        expect(fatal.error).toMatch(/fails its checksum; the ledger is corrupt/);
        expect(await broken.exited()).toBe(1);
    });
});
