import { createHash } from "node:crypto";
import ipaddr from "ipaddr.js";

/** An IPv4 CIDR block held as integers: `base` is the network address, `prefix` its length. */
export interface Block {
    base: number;
    prefix: number;
}

/** Docker's default address pools (bridge and user networks): an agent pool must not overlap them. */
export const DOCKER_DEFAULT_POOLS: readonly string[] = [
    ...Array.from({ length: 15 }, (_, i) => `172.${17 + i}.0.0/16`),
    "192.168.0.0/16",
];

/** Ranges an agent pool may come from: RFC 1918 and the shared address space (RFC 6598). */
export const PRIVATE_RANGES: readonly string[] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];

export function parseBlock(cidr: string): Block {
    if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(cidr) || !ipaddr.IPv4.isValidFourPartDecimal(cidr.split("/")[0])) {
        throw new Error(`'${cidr}' is not an IPv4 CIDR such as 10.64.0.0/10`);
    }
    const [address, prefix] = ipaddr.IPv4.parseCIDR(cidr);
    const base = toInt(address.toString());
    if (base % size(prefix) !== 0) {
        throw new Error(`'${cidr}' has host bits set; the network address is ${formatBlock({ base: base - (base % size(prefix)), prefix })}`);
    }
    return { base, prefix };
}

export function formatBlock(block: Block): string {
    return `${toDotted(block.base)}/${block.prefix}`;
}

export function toInt(dotted: string): number {
    return ipaddr.IPv4.parse(dotted).octets.reduce((acc, octet) => acc * 256 + octet, 0);
}

export function toDotted(value: number): string {
    return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}

export function size(prefix: number): number {
    return 2 ** (32 - prefix);
}

export function overlaps(a: Block, b: Block): boolean {
    return a.base < b.base + size(b.prefix) && b.base < a.base + size(a.prefix);
}

export function contains(outer: Block, inner: Block): boolean {
    return inner.prefix >= outer.prefix && inner.base >= outer.base && inner.base + size(inner.prefix) <= outer.base + size(outer.prefix);
}

/** How many subnets of `prefix` fit in `pool`. */
export function slotCount(pool: Block, prefix: number): number {
    return prefix < pool.prefix ? 0 : size(prefix) === 0 ? 0 : size(pool.prefix) / size(prefix);
}

/**
 * The slot an agent's name maps to. It depends on nothing but the name and the slot count, so adding or
 * removing another agent can never move it.
 */
export function homeSlot(agentName: string, slots: number): number {
    const digest = createHash("sha256").update(`openclaw-agent-subnet:${agentName}`).digest();
    return Number(digest.readBigUInt64BE(0) % BigInt(slots));
}

export interface SubnetRequest {
    name: string;
    /** An explicit subnet pinned in config; otherwise the name's home slot is used. */
    subnet?: string;
}

export interface SubnetConflict {
    /** Index in the request list of the agent that cannot get its subnet. */
    index: number;
    message: string;
}

export type Allocation = { ok: true; subnets: Map<string, string> } | { ok: false; conflicts: SubnetConflict[] };

/**
 * Gives every agent its own subnet of `prefix` bits inside `pool`: the pinned one when config names it,
 * else the slot its name hashes to. No probing: a collision is reported (with a free subnet to pin)
 * instead of silently moving one of the two agents, so an allocation never changes unless its own agent does.
 */
export function allocateSubnets(poolCidr: string, prefix: number, requests: readonly SubnetRequest[]): Allocation {
    const pool = parseBlock(poolCidr);
    const slots = slotCount(pool, prefix);
    const conflicts: SubnetConflict[] = [];
    const owners: { name: string; block: Block }[] = [];
    const subnets = new Map<string, string>();

    const claim = (index: number, name: string, block: Block, how: string) => {
        const holder = owners.find((owner) => overlaps(owner.block, block));
        if (holder) {
            conflicts.push({
                index,
                message: `${how} ${formatBlock(block)} collides with agent '${holder.name}' (${formatBlock(holder.block)})`,
            });
            return;
        }
        owners.push({ name, block });
        subnets.set(name, formatBlock(block));
    };

    // Pins first: an operator's explicit choice wins over any hashed slot.
    requests.forEach((request, index) => {
        if (request.subnet === undefined) return;
        let block: Block;
        try {
            block = parseBlock(request.subnet);
        } catch (error) {
            conflicts.push({ index, message: (error as Error).message });
            return;
        }
        if (block.prefix !== prefix) {
            conflicts.push({ index, message: `pinned subnet ${request.subnet} must be a /${prefix}` });
        } else if (!contains(pool, block)) {
            conflicts.push({ index, message: `pinned subnet ${request.subnet} is outside the pool ${poolCidr}` });
        } else {
            claim(index, request.name, block, "pinned subnet");
        }
    });
    requests.forEach((request, index) => {
        if (request.subnet !== undefined) return;
        const block = { base: pool.base + homeSlot(request.name, slots) * size(prefix), prefix };
        claim(index, request.name, block, "hashed subnet");
    });

    if (conflicts.length > 0) {
        for (const conflict of conflicts) {
            const free = firstFreeSlot(pool, prefix, owners.map((owner) => owner.block));
            conflict.message += free ? `; pin a free one, e.g. subnet: ${free}` : "; the pool is full";
        }
        return { ok: false, conflicts };
    }
    return { ok: true, subnets };
}

function firstFreeSlot(pool: Block, prefix: number, taken: Block[]): string | undefined {
    const slots = slotCount(pool, prefix);
    for (let slot = 0; slot < slots; slot++) {
        const block = { base: pool.base + slot * size(prefix), prefix };
        if (!taken.some((owner) => overlaps(owner, block))) return formatBlock(block);
    }
    return undefined;
}
