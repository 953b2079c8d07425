// Agents are registered as one JSON file each in a directory on the service's volume, written by the
// deployment (`register` subcommand through docker exec) and reloaded on change: adding, removing or
// rotating an agent never restarts the service.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, watch, writeFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import type { Logger } from "./log";

export const AGENT_NAME = /^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/;

/** An agent's KeyProxy credential: this prefix, then this many random letters and digits. */
export const AGENT_CREDENTIAL = { prefix: "ocp_", randomChars: 48 } as const;

/** The fields every service's registry entry starts with: who the agent is, and the network it speaks from. */
export const agentIdentity = {
    name: z.string().regex(AGENT_NAME),
    subnet: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/),
};

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

/** Calls `onChange` with the current entries now and whenever the directory changes (watch, plus a poll). */
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
    reload();
    let timer: NodeJS.Timeout | undefined;
    const watcher = watch(dir, () => {
        clearTimeout(timer);
        timer = setTimeout(reload, 20);
    });
    const poll = setInterval(reload, pollMs);
    poll.unref();
    return () => {
        watcher.close();
        clearInterval(poll);
        clearTimeout(timer);
    };
}
