// Budget leases, as accounting: which leases reach the ledger file, and what they settle to, for sequences of
// reservations and settlements. Admission stays exact and in memory; the disk holds leases only.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runtimeConfigSchema } from "../proxy-image/src/config";
import { replayLedger } from "../proxy-image/src/ledgerStore";
import { keyProxyMetrics } from "../proxy-image/src/metrics";
import type { AgentEntry } from "../proxy-image/src/policy";
import { NO_USAGE } from "../proxy-image/src/pricing";
import { SpendTracker, type Ticket } from "../proxy-image/src/spend";
import { tempDir } from "./support/tempDirs";

/** $1 per million input tokens and per request byte: a request of N bytes reserves N micro-dollars. */
const PRICE = { input: 1, output: 0, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 0 };
const trackers: SpendTracker[] = [];
afterEach(async () => {
    for (const tracker of trackers.splice(0)) await tracker.close().catch(() => undefined);
});

function tracker(leaseUsd: number, now: () => Date = () => new Date("2026-11-23T12:00:00Z")) {
    const ledgerFile = path.join(tempDir("lease-ledger"), "ledger.log");
    const config = runtimeConfigSchema.parse({ upstreams: {}, metering: { ledgerFile, leaseUsd, prices: { "test-model": PRICE } } });
    const spend = new SpendTracker(config, keyProxyMetrics(), () => undefined, now);
    trackers.push(spend);
    const records = () => replayLedger(readFileSync(ledgerFile, "utf8")).records;
    return { spend, records };
}

const agent = (budget?: AgentEntry["budget"]): AgentEntry => ({ name: "bart", credentialSha256: "0".repeat(64), subnet: "127.0.0.0/8", budget });

async function reserve(spend: SpendTracker, who: AgentEntry, maxMicros: number): Promise<Ticket> {
    const admission = await spend.reserve(who, "anthropic", { kind: "metered", format: "anthropic-messages", model: "test-model", stream: false, maxOutputTokens: 0, body: Buffer.alloc(maxMicros), hideUsageChunk: false });
    if (!admission.ok) throw new Error(`refused: ${admission.refusal}`);
    return admission.ticket;
}

const settle = (spend: SpendTracker, ticket: Ticket, costMicros: number) =>
    spend.settle(ticket, 200, { usage: { ...NO_USAGE, input: costMicros }, model: "test-model", complete: true, reported: true, unmeasured: false, problems: [] }).committed;

/** A step: reserve a request of `max` micro-dollars and settle it at `cost`, in turn (one in flight at a time). */
type Step = { max: number; cost: number };

describe("budget leases", () => {
    it.each<[string, number, AgentEntry["budget"], Step[], number[], number[]]>([
        ["requests that fit share one lease, settled to their sum when returned", 0.01, undefined, [{ max: 1500, cost: 100 }, { max: 1500, cost: 200 }, { max: 1500, cost: 300 }], [10_000], [600]],
        ["a request that no longer fits retires the lease and takes the next", 0.002, undefined, [{ max: 1500, cost: 1500 }, { max: 1500, cost: 1000 }], [2000, 2000], [1500, 1000]],
        ["a request above the lease size gets a lease of its own size", 0.001, undefined, [{ max: 5000, cost: 10 }], [5000], [10]],
        ["a lease never holds more than the budget has room for", 1, { totalUsd: 0.003 }, [{ max: 1000, cost: 1000 }, { max: 1000, cost: 1000 }], [3000], [2000]],
        ["the tightest window bounds the lease", 1, { dailyUsd: 0.002, totalUsd: 5 }, [{ max: 1000, cost: 500 }], [2000], [500]],
        ["leaseUsd 0: each request its own lease, returned when it settles", 0, undefined, [{ max: 1500, cost: 100 }, { max: 1500, cost: 200 }], [1500, 1500], [100, 200]],
    ])("%s", async (_case, leaseUsd, budget, steps, leases, settlements) => {
        const { spend, records } = tracker(leaseUsd);
        const who = agent(budget);
        for (const step of steps) await settle(spend, await reserve(spend, who, step.max), step.cost);
        expect(spend.settled("bart", "total")).toBeCloseTo(steps.reduce((sum, s) => sum + s.cost, 0) / 1e6, 12);
        await spend.close();
        expect(records().filter((r) => r.t === "reserve").map((r) => r.micros)).toEqual(leases);
        expect(records().filter((r) => r.t === "settle").map((r) => r.micros)).toEqual(settlements);
    });

    it("concurrent reservations wait for the one lease being written instead of writing their own", async () => {
        const { spend, records } = tracker(0.01);
        const tickets = await Promise.all(Array.from({ length: 5 }, () => reserve(spend, agent(), 1000)));
        expect(new Set(tickets.map((t) => t.lease.id)).size).toBe(1);
        await Promise.all(tickets.map((t) => settle(spend, t, 100)));
        await spend.close();
        expect(records().filter((r) => r.t === "reserve")).toHaveLength(1);
        expect(records().filter((r) => r.t === "settle").map((r) => r.micros)).toEqual([500]);
    });

    it("a new day takes a new lease: none spans a window boundary", async () => {
        let now = new Date("2026-11-23T23:59:59Z");
        const { spend, records } = tracker(0.01, () => now);
        await settle(spend, await reserve(spend, agent(), 1000), 400);
        now = new Date("2026-11-24T00:00:01Z");
        await settle(spend, await reserve(spend, agent(), 1000), 300);
        await spend.close();
        const reserves = records().filter((r) => r.t === "reserve");
        expect(reserves.map((r) => r.t === "reserve" && r.keys[0])).toEqual(["day:2026-11-23", "day:2026-11-24"]);
        expect(records().filter((r) => r.t === "settle").map((r) => r.micros)).toEqual([400, 300]);
    });

    it("a lease still in use at shutdown stays open on disk, so replay counts it in full", async () => {
        const { spend, records } = tracker(0.01);
        await reserve(spend, agent(), 1000);
        await spend.close();
        expect(records().filter((r) => r.t === "reserve").map((r) => r.micros)).toEqual([10_000]);
        expect(records().filter((r) => r.t === "settle")).toEqual([]);
    });
});
