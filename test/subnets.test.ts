import { describe, expect, it } from "vitest";
import { allocateSubnets, formatBlock, homeSlot, overlaps, parseBlock, slotCount } from "../infra/subnets";
import { agentNetworkAddresses, uplinkAddresses } from "../infra/topology";

const POOL = "10.64.0.0/10";
const names = (n: number, prefix = "agent") => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

function allocate(agentNames: string[], pool = POOL, prefix = 28) {
    const result = allocateSubnets(pool, prefix, agentNames.map((name) => ({ name })));
    if (!result.ok) throw new Error(result.conflicts.map((c) => c.message).join("\n"));
    return result.subnets;
}

describe("allocateSubnets", () => {
    it("gives 200 agents distinct, aligned, non-overlapping /28s inside the pool", () => {
        const subnets = allocate(names(200));
        expect(subnets.size).toBe(200);
        const blocks = [...subnets.values()].map(parseBlock);
        const pool = parseBlock(POOL);
        for (const [i, block] of blocks.entries()) {
            expect(block.prefix).toBe(28);
            expect(block.base % 16).toBe(0);
            expect(block.base >= pool.base && block.base + 16 <= pool.base + 2 ** 22).toBe(true);
            for (const other of blocks.slice(i + 1)) expect(overlaps(block, other)).toBe(false);
        }
    });

    it("depends on identity, not position: shuffling the list changes nothing", () => {
        const list = names(50);
        const reversed = allocate([...list].reverse());
        expect(allocate(list)).toEqual(reversed);
    });

    it("never moves another agent when one is added or removed (200 agents)", () => {
        const list = names(200);
        const before = allocate(list);
        for (const removed of [0, 57, 123, 199]) {
            const after = allocate(list.filter((_, i) => i !== removed));
            for (const [name, subnet] of after) expect(subnet).toBe(before.get(name));
        }
        const grown = allocate([...list, "newcomer"]);
        for (const [name, subnet] of before) expect(grown.get(name)).toBe(subnet);
    });

    it("detects a collision and suggests a free subnet to pin, instead of moving an agent", () => {
        // A /26 pool has four /28 slots: among five names two must share a home slot.
        const pool = "10.1.0.0/26";
        const list = names(5, "x");
        const result = allocateSubnets(pool, 28, list.map((name) => ({ name })));
        expect(result.ok).toBe(false);
        if (result.ok) return;
        expect(result.conflicts[0].message).toMatch(/collides with agent 'x-\d'/);
        expect(result.conflicts[0].message).toMatch(/pin a free one, e\.g\. subnet: 10\.1\.0\.\d+\/28|the pool is full/);
    });

    it("honours pins first and reports a pin that overlaps another pin", () => {
        const ok = allocateSubnets(POOL, 28, [{ name: "a", subnet: "10.64.0.16/28" }, { name: "b" }]);
        expect(ok.ok && ok.subnets.get("a")).toBe("10.64.0.16/28");
        const clash = allocateSubnets(POOL, 28, [
            { name: "a", subnet: "10.64.0.16/28" },
            { name: "b", subnet: "10.64.0.16/28" },
        ]);
        expect(clash.ok).toBe(false);
        if (!clash.ok) expect(clash.conflicts).toEqual([{ index: 1, message: expect.stringContaining("collides with agent 'a'") }]);
    });

    it.each([
        ["10.64.0.8/28", /host bits set/],
        ["10.64.0.0/27", /must be a \/28/],
        ["10.200.0.0/28", /outside the pool/],
        ["not-a-cidr", /not an IPv4 CIDR/],
    ])("rejects the pin %s", (subnet, message) => {
        const result = allocateSubnets(POOL, 28, [{ name: "a", subnet }]);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.conflicts[0].message).toMatch(message);
    });
});

describe("helpers", () => {
    it("maps a name to the same slot every time and spreads names over the pool", () => {
        expect(homeSlot("bart", 4096)).toBe(homeSlot("bart", 4096));
        const slots = new Set(names(100).map((n) => homeSlot(n, 1 << 18)));
        expect(slots.size).toBeGreaterThan(95);
    });

    it("counts slots and formats blocks", () => {
        expect(slotCount(parseBlock("10.0.0.0/24"), 28)).toBe(16);
        expect(slotCount(parseBlock("10.0.0.0/24"), 20)).toBe(0);
        expect(formatBlock(parseBlock("10.0.0.0/24"))).toBe("10.0.0.0/24");
    });

    it("lays out an agent network: gateway, KeyProxy, EgressGateway, agent, Ingress", () => {
        expect(agentNetworkAddresses("10.64.1.32/28")).toEqual({
            subnet: "10.64.1.32/28",
            gateway: "10.64.1.33",
            keyProxy: "10.64.1.34",
            egressGateway: "10.64.1.35",
            agent: "10.64.1.36",
            ingress: "10.64.1.37",
        });
        expect(() => agentNetworkAddresses("10.64.1.32/30")).toThrow(/between \/24 and \/29/);
    });
});

describe("uplinkAddresses", () => {
    it.each([
        ["10.63.255.0/24", "10.63.255.2", "10.63.255.3", "10.63.255.128/25"],
        ["10.63.255.248/29", "10.63.255.250", "10.63.255.251", "10.63.255.252/30"],
        ["10.60.0.0/16", "10.60.0.2", "10.60.0.3", "10.60.128.0/17"],
    ])("%s: KeyProxy %s and EgressGateway %s lie below the range Docker hands out, %s", (subnet, keyProxy, egressGateway, dynamicRange) => {
        expect(uplinkAddresses(subnet)).toMatchObject({ keyProxy, egressGateway, dynamicRange });
    });
});
