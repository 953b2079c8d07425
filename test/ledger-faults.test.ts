// A ledger volume that fills up or turns read-only: KeyProxy refuses metered requests with a clear error (fails
// closed), keeps every committed settlement, and recovers when the volume does. The failing file system calls are
// injected into the ledger store's append path.
import { readFileSync } from "node:fs";
import path from "node:path";
import { type MockInstance, afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ledgerIo, replayLedger } from "../proxy-image/src/ledgerStore";
import { AGENTS, ANTHROPIC_BODY, OPENAI_BODY, type RunningProxy, anthropicHeaders, openaiHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { tempDir } from "./support/tempDirs";

const upstream = new MockUpstream();
const running: RunningProxy[] = [];
beforeAll(async () => {
    await upstream.start();
});
afterEach(() => {
    vi.restoreAllMocks();
    upstream.handler = undefined;
});
afterAll(async () => {
    for (const p of running) await p.server.close();
    await upstream.stop();
});

/** leaseUsd 0 by default: every request has its own lease, written before it goes upstream. */
async function proxy(ledgerFile?: string, leaseUsd = 0) {
    const p = await startKeyProxy(upstream, { metering: { ledgerFile: ledgerFile ?? path.join(tempDir("keyproxy-ledger"), "ledger.log"), leaseUsd } });
    p.server.setAgents([{ ...AGENTS[0], budget: { totalUsd: 1 } }, AGENTS[1]]);
    running.push(p);
    return p;
}

const failure = (code: string) => Object.assign(new Error(`${code}: simulated`), { code });
const realWrite = ledgerIo.write;
/** What the ledger file holds, as replay reads it (throws on corruption). */
const settlements = (file: string) => replayLedger(readFileSync(file, "utf8"), file).records.filter((r) => r.t === "settle");
/** $ of one default Anthropic request: 12 x $3/M + 5 x $15/M. */
const COST = 0.000111;
/** The maximum one default Anthropic request reserves: its body's bytes at $6/M plus 64 output tokens at $15/M. */
const RESERVED = Math.ceil(Buffer.byteLength(ANTHROPIC_BODY) * 6 + 64 * 15) / 1e6;

describe.each<[string, () => MockInstance]>([
    ["a full volume that takes half a write, then refuses (ENOSPC)", () => vi.spyOn(ledgerIo, "write").mockImplementation((fd, buffer, offset, length) => (offset === 0 ? realWrite(fd, buffer, 0, Math.ceil(length / 2)) : Promise.reject(failure("ENOSPC"))))],
    ["a read-only volume (EROFS)", () => vi.spyOn(ledgerIo, "write").mockRejectedValue(failure("EROFS"))],
    ["a failing sync (EIO)", () => vi.spyOn(ledgerIo, "fdatasync").mockRejectedValue(failure("EIO"))],
])("%s", (_case, breakVolume) => {
    it("refuses metered requests with a clear error before the upstream, loses no committed settlement, recovers", async () => {
        const p = await proxy();
        const file = p.config.metering.ledgerFile;
        for (let i = 0; i < 2; i++) expect((await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        await expect.poll(() => settlements(file).length, { timeout: 3000 }).toBe(2);

        breakVolume();
        upstream.received.length = 0;
        const refused = await send(p.port, { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: OPENAI_BODY });
        expect(refused.status).toBe(503);
        expect(JSON.parse(refused.body).error).toMatchObject({ type: "server_error", code: "spend_ledger_unavailable" });
        const anthropicRefused = await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        expect(JSON.parse(anthropicRefused.body).error.message).toMatch(/ledger cannot be written/);
        expect(upstream.received).toHaveLength(0);
        expect(p.logs.some((l) => l.includes('"event":"ledger_unavailable"'))).toBe(true);
        // Free endpoints need no ledger.
        expect((await send(p.port, { method: "GET", path: "/anthropic/v1/models", headers: anthropicHeaders() })).status).toBe(200);

        vi.restoreAllMocks();
        expect((await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        await expect.poll(() => settlements(file).length, { timeout: 3000 }).toBe(3);
        expect(p.server.spend.settled("bart", "total")).toBeCloseTo(3 * COST, 12);
        await p.server.close();
        expect((await proxy(file)).server.spend.settled("bart", "total")).toBeCloseTo(3 * COST, 12);
    });

    it("serves requests within an open lease without the disk, refuses the next lease, and returns the lease once the volume recovers", async () => {
        // Room for two requests: the second reserves on top of the first's settled cost.
        const lease = RESERVED + COST + 0.000005;
        const p = await proxy(undefined, lease);
        const file = p.config.metering.ledgerFile;
        const ask = async () => (await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status;
        expect(await ask()).toBe(200);
        const leases = () => replayLedger(readFileSync(file, "utf8"), file).records.filter((r) => r.t === "reserve");
        expect(leases()).toHaveLength(1);

        breakVolume();
        upstream.received.length = 0;
        expect(await ask()).toBe(200);
        expect(upstream.received).toHaveLength(1);
        // The lease is used up: the next one cannot be written, so the request stops before the upstream.
        expect(await ask()).toBe(503);
        expect(upstream.received).toHaveLength(1);
        expect(settlements(file)).toHaveLength(0);

        vi.restoreAllMocks();
        // The used-up lease is settled to what its two requests cost, once the volume takes writes again.
        await expect.poll(() => settlements(file).map((r) => r.micros), { timeout: 5000 }).toEqual([2 * COST * 1e6]);
        expect(await ask()).toBe(200);
        expect(p.server.spend.settled("bart", "total")).toBeCloseTo(3 * COST, 12);
    });

    it("keeps retrying a settlement the volume refused, and writes it once the volume recovers", async () => {
        const p = await proxy();
        const file = p.config.metering.ledgerFile;
        const answer = Promise.withResolvers<void>();
        upstream.handler = async (_req, res) => {
            await answer.promise;
            res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ model: "claude-sonnet-4-5", content: [], usage: { input_tokens: 12, output_tokens: 5 } }));
        };
        upstream.received.length = 0;
        const inFlight = send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        await expect.poll(() => upstream.received.length).toBeGreaterThan(0);
        const failing = breakVolume();
        answer.resolve();
        expect((await inFlight).status).toBe(200);
        // The settlement's write has been tried, and failed.
        await expect.poll(() => failing.mock.settledResults.some((r) => r.type === "rejected"), { timeout: 3000 }).toBe(true);
        // A failed sync's bytes are cut back right after the failure is seen.
        await expect.poll(() => settlements(file)).toHaveLength(0);
        vi.restoreAllMocks();
        await expect.poll(() => settlements(file).length, { timeout: 5000 }).toBe(1);
        expect(settlements(file)[0]).toMatchObject({ micros: COST * 1e6 });
    });
});
