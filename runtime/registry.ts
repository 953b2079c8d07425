// Agents are registered as one JSON file each in a directory on the service's volume, written by the
// deployment (`register` subcommand through docker exec) and reloaded on change: adding, removing or
// rotating an agent never restarts the service.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, watch, writeFileSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import type { Logger } from "./log";

export const AGENT_NAME = /^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/;

/** An agent's KeyProxy credential: this prefix, then this many random letters and digits. */
export const AGENT_CREDENTIAL = { prefix: "ocp_", randomChars: 48 } as const;

/** The ports an agent may be registered on: unprivileged ones. */
export const AGENT_PORTS = { min: 1024, max: 65535 } as const;

/**
 * Where an agent's connections come from: its own network (Docker: the connection's source address is in `subnet`)
 * or its own port on the service (Kubernetes: the connection arrived on `port`, which only its pod may reach).
 */
export type AgentIdentity = { name: string } & ({ subnet: string; port?: undefined } | { port: number; subnet?: undefined });

/** How a connection reached a service: on its main listener from `remoteAddress`, or on the listener of an agent's `port`. */
export type Arrival = { via: "network"; remoteAddress: string | undefined } | { via: "port"; port: number };

/** Whether a connection arrived the way an agent's identity says: on its own port, or from inside its subnet to the main listener. */
export function arrivedAs(identity: AgentIdentity, arrival: Arrival): boolean {
    if (identity.port !== undefined) return arrival.via === "port" && arrival.port === identity.port;
    return arrival.via === "network" && arrival.remoteAddress !== undefined && ipv4InSubnet(arrival.remoteAddress, identity.subnet);
}

function ipv4ToInt(address: string): number | undefined {
    const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
    if (!match) return undefined;
    const octets = match.slice(1).map(Number);
    if (octets.some((o) => o > 255)) return undefined;
    return octets.reduce((acc, o) => acc * 256 + o, 0);
}

/**
 * Whether an IPv4 address (or an IPv4-mapped IPv6 one, as Node reports a v4 peer on a dual-stack socket) lies in an
 * IPv4 subnet. Integer arithmetic: it runs on every request (ipaddr.js costs about ten times as much here).
 */
export function ipv4InSubnet(address: string, subnet: string): boolean {
    const plain = address.startsWith("::ffff:") ? address.slice(7) : address;
    const [base, bits] = subnet.split("/");
    const value = ipv4ToInt(plain);
    const network = ipv4ToInt(base);
    const prefix = Number(bits);
    if (value === undefined || network === undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return false;
    const size = 2 ** (32 - prefix);
    return Math.floor(value / size) === Math.floor(network / size);
}

/**
 * A registry entry's schema: the agent's name, exactly one of `subnet` and `port`, and the service's own `fields`,
 * strict. `ownPorts` are the service's own listeners: an agent's port may not be one of them.
 */
export function agentEntrySchema<F extends z.ZodRawShape>(ownPorts: readonly number[], fields: F) {
    const common = { name: z.string().regex(AGENT_NAME), ...fields };
    const port = z
        .number()
        .int()
        .min(AGENT_PORTS.min)
        .max(AGENT_PORTS.max)
        .refine((p) => !ownPorts.includes(p), "is one of the service's own ports");
    return z.union([
        z.strictObject({ ...common, subnet: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/) }),
        z.strictObject({ ...common, port }),
    ]);
}

/** What a service logs of an agent's identity. */
export function describeIdentity(entry: AgentIdentity): { subnet: string | null; port: number | null } {
    return { subnet: entry.subnet ?? null, port: entry.port ?? null };
}

export function writeEntry(dir: string, name: string, entry: unknown): string {
    if (!AGENT_NAME.test(name)) throw new Error(`'${name}' is not an agent name`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, `${name}.json`);
    const temporary = `${file}.tmp-${process.pid}`;
    writeFileSync(temporary, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
    renameSync(temporary, file);
    return file;
}

export function removeEntry(dir: string, name: string): boolean {
    if (!AGENT_NAME.test(name)) throw new Error(`'${name}' is not an agent name`);
    const file = path.join(dir, `${name}.json`);
    const existed = existsSync(file);
    rmSync(file, { force: true });
    return existed;
}

/** Reads every entry; an unreadable or invalid file is reported and its agent left out (fail closed). */
export function loadEntries<T extends { name: string }>(dir: string, schema: z.ZodType<T>, log: Logger): T[] {
    if (!existsSync(dir)) return [];
    const entries: T[] = [];
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
        const name = file.slice(0, -".json".length);
        try {
            const entry = schema.parse(JSON.parse(readFileSync(path.join(dir, file), "utf8")));
            if (entry.name !== name) throw new Error(`file name and agent name '${entry.name}' differ`);
            entries.push(entry);
        } catch (error) {
            log("registry_entry_invalid", { file, error: (error as Error).message.slice(0, 300) });
        }
    }
    return entries;
}

/**
 * What changes when an entry is renamed in (as `writeEntry` does), edited in place or removed: each file's name,
 * inode, size and modification time. Read off the event loop, so the poll holds a service's requests up by one
 * stat's answer at a time, never by reading and parsing every entry.
 */
export async function directorySignature(dir: string): Promise<string> {
    const files = (await readdir(dir)).filter((f) => f.endsWith(".json")).sort();
    let signature = "";
    // One at a time: each answer is handled in a loop turn of its own, never a burst of them in one.
    for (const file of files) signature += await stat(path.join(dir, file)).then((s) => `${file}:${s.ino}:${s.size}:${s.mtimeMs}|`, () => `${file}:gone|`);
    return signature;
}

/**
 * Calls `onChange` with the current entries now and whenever the directory changes: on a watch event, and on a
 * poll that re-reads the entries only when the directory's signature changed (a watch can miss events on some
 * filesystems; re-reading and parsing every entry each time blocked the event loop for about 10 µs an agent).
 */
export function watchEntries<T extends { name: string }>(
    dir: string,
    schema: z.ZodType<T>,
    log: Logger,
    onChange: (entries: T[]) => void,
    pollMs = 2000,
): () => void {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let last = "";
    const reload = () => {
        const entries = loadEntries(dir, schema, log);
        const fingerprint = JSON.stringify(entries);
        if (fingerprint === last) return;
        last = fingerprint;
        onChange(entries);
        log("registry_loaded", { agents: entries.map((e) => e.name).join(",") });
    };
    let signature = "";
    let polling = false;
    const pollOnce = () => {
        if (polling) return;
        polling = true;
        // The signature is taken before the entries are read: a change after it shows in the next one.
        directorySignature(dir)
            .then(
                (now) => {
                    if (now === signature) return;
                    signature = now;
                    reload();
                },
                () => reload(),
            )
            .finally(() => (polling = false));
    };
    reload();
    pollOnce();
    let timer: NodeJS.Timeout | undefined;
    const watcher = watch(dir, () => {
        clearTimeout(timer);
        timer = setTimeout(reload, 20);
    });
    const poll = setInterval(pollOnce, pollMs);
    poll.unref();
    return () => {
        watcher.close();
        clearInterval(poll);
        clearTimeout(timer);
    };
}
