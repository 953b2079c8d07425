// The agent registry's entries: who an agent is is exactly one of its network (Docker) or its own port on the
// service (Kubernetes). Anything else is refused, and a refused file leaves its agent out (fail closed).
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { egressAgentSchema, egressConfigSchema, ownPorts as egressOwnPorts } from "../egress-image/src/config";
import { agentEntrySchema, ownPorts as keyProxyOwnPorts, runtimeConfigSchema } from "../proxy-image/src/config";
import { jsonLogger } from "../runtime/log";
import { agentEntrySchema as registryEntrySchema, directorySignature, ipv4InSubnet, loadEntries, watchEntries, writeEntry } from "../runtime/registry";
import { tempDir } from "./support/tempDirs";

const OWN = [8080, 9464];
const schema = registryEntrySchema(OWN, { mode: z.string() });
const bart = { name: "bart", mode: "enforce" };

describe.each<[string, Record<string, unknown>, boolean]>([
    ["a subnet", { ...bart, subnet: "10.64.0.0/28" }, true],
    ["a port", { ...bart, port: 18801 }, true],
    ["the lowest unprivileged port", { ...bart, port: 1024 }, true],
    ["the highest port", { ...bart, port: 65535 }, true],
    ["both a subnet and a port", { ...bart, subnet: "10.64.0.0/28", port: 18801 }, false],
    ["neither a subnet nor a port", { ...bart }, false],
    ["a privileged port", { ...bart, port: 1023 }, false],
    ["port 0", { ...bart, port: 0 }, false],
    ["a port past 65535", { ...bart, port: 65536 }, false],
    ["a negative port", { ...bart, port: -18801 }, false],
    ["a fractional port", { ...bart, port: 18801.5 }, false],
    ["a port as a string", { ...bart, port: "18801" }, false],
    ["a null port", { ...bart, port: null }, false],
    ["a null subnet beside a port", { ...bart, subnet: null, port: 18801 }, false],
    ["the service's own listener port", { ...bart, port: 8080 }, false],
    ["the service's own admin port", { ...bart, port: 9464 }, false],
    ["a subnet that is not a CIDR", { ...bart, subnet: "10.64.0.0" }, false],
    ["an unknown field beside a port", { ...bart, port: 18801, host: "10.0.0.1" }, false],
    ["a port entry without the service's fields", { name: "bart", port: 18801 }, false],
    ["a bad name with a port", { ...bart, name: "../bart", port: 18801 }, false],
])("an entry with %s", (_case, entry, accepted) => {
    it(accepted ? "is accepted" : "is refused", () => expect(schema.safeParse(entry).success).toBe(accepted));
});

describe("each service refuses its own ports", () => {
    const keyProxy = runtimeConfigSchema.parse({ upstreams: {}, admin: [{ host: "127.0.0.1", port: 9464 }, { host: "0.0.0.0", port: 9443 }] });
    const egress = egressConfigSchema.parse({ admin: [{ host: "127.0.0.1", port: 9465 }, { host: "0.0.0.0", port: 9444 }] });
    const keyProxyEntry = (port: number) => ({ name: "bart", credentialSha256: "a".repeat(64), port });
    const egressEntry = (port: number) => ({ name: "bart", mode: "enforce", allow: [], port });

    it.each([8080, 9464, 9443])("KeyProxy refuses %d", (port) => expect(agentEntrySchema(keyProxyOwnPorts(keyProxy)).safeParse(keyProxyEntry(port)).success).toBe(false));
    it.each([3128, 9465, 9444])("EgressGateway refuses %d", (port) => expect(egressAgentSchema(egressOwnPorts(egress)).safeParse(egressEntry(port)).success).toBe(false));
    it("both accept an agent's port, including the other service's ports", () => {
        for (const port of [18801, 3128]) expect(agentEntrySchema(keyProxyOwnPorts(keyProxy)).safeParse(keyProxyEntry(port)).success).toBe(true);
        for (const port of [18801, 8080]) expect(egressAgentSchema(egressOwnPorts(egress)).safeParse(egressEntry(port)).success).toBe(true);
    });
});

describe("loading the registry", () => {
    it("leaves out an entry with both identities, logs it, and keeps the valid ones", () => {
        const dir = tempDir("registry");
        writeEntry(dir, "bart", { ...bart, port: 18801 });
        writeEntry(dir, "lisa", { name: "lisa", mode: "enforce", subnet: "10.64.0.16/28", port: 18802 });
        const logs: string[] = [];
        const entries = loadEntries(dir, schema, jsonLogger("test", (line) => logs.push(line)));
        expect(entries).toEqual([{ ...bart, port: 18801 }]);
        expect(logs.map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ event: "registry_entry_invalid", file: "lisa.json" })]);
    });
});

describe("an address in a subnet (both services' network identity)", () => {
    it.each<[string, string, boolean]>([
        ["10.0.0.15", "10.0.0.0/28", true],
        ["10.0.0.0", "10.0.0.0/28", true],
        ["10.0.0.16", "10.0.0.0/28", false],
        ["9.255.255.255", "10.0.0.0/28", false],
        ["::ffff:10.0.0.4", "10.0.0.0/28", true],
        ["::ffff:10.0.0.16", "10.0.0.0/28", false],
        ["::1", "0.0.0.0/0", false],
        ["fe80::1", "10.0.0.0/8", false],
        ["256.0.0.1", "0.0.0.0/0", false],
        ["10.0.0.1", "10.0.0.0/33", false],
        ["10.0.0.1", "10.0.0.0", false],
        ["127.0.0.1", "127.0.0.0/8", true],
        ["127.1", "127.0.0.0/8", false],
        ["0x7f.0.0.1", "127.0.0.0/8", false],
        ["", "0.0.0.0/0", false],
    ])("%s in %s: %s", (address, subnet, expected) => expect(ipv4InSubnet(address, subnet)).toBe(expected));
});

describe("the registry directory's signature, which the poll compares before reading any entry", () => {
    const withEntries = () => {
        const dir = tempDir("registry-signature");
        for (const name of ["bart", "lisa"]) writeEntry(dir, name, { name, mode: "enforce" });
        return dir;
    };
    it("stays the same while nothing changes", async () => {
        const dir = withEntries();
        expect(await directorySignature(dir)).toBe(await directorySignature(dir));
    });
    it.each<[string, (dir: string) => void]>([
        ["an entry written (renamed in)", (dir) => writeEntry(dir, "homer", { name: "homer", mode: "enforce" })],
        ["an entry rewritten with the same bytes", (dir) => writeEntry(dir, "bart", { name: "bart", mode: "enforce" })],
        ["an entry edited in place", (dir) => writeFileSync(path.join(dir, "bart.json"), `${JSON.stringify({ name: "bart", mode: "report" })}\n`)],
        ["an entry removed", (dir) => rmSync(path.join(dir, "lisa.json"))],
    ])("changes with %s", async (_change, change) => {
        const dir = withEntries();
        const before = await directorySignature(dir);
        change(dir);
        expect(await directorySignature(dir)).not.toBe(before);
    });
    it("ignores files that are not entries (a writer's temporary file)", async () => {
        const dir = withEntries();
        const before = await directorySignature(dir);
        writeFileSync(path.join(dir, "marge.json.tmp-1"), "{");
        expect(await directorySignature(dir)).toBe(before);
    });
});

describe("watching the registry", () => {
    const quiet = jsonLogger("test", () => undefined);

    it("sees an entry edited in place, and one removed (the agent left out: fail closed)", async () => {
        const dir = tempDir("registry-watch");
        for (const name of ["bart", "lisa"]) writeEntry(dir, name, { name, mode: "enforce" });
        const seen: { name: string; mode: string }[][] = [];
        const stop = watchEntries(dir, z.object({ name: z.string(), mode: z.string() }), quiet, (entries) => seen.push(entries), 10);
        try {
            writeFileSync(path.join(dir, "bart.json"), JSON.stringify({ name: "bart", mode: "report" }));
            await expect.poll(() => seen.at(-1)?.find((e) => e.name === "bart")?.mode).toBe("report");
            rmSync(path.join(dir, "lisa.json"));
            await expect.poll(() => seen.at(-1)?.map((e) => e.name)).toEqual(["bart"]);
        } finally {
            stop();
        }
    });
});
