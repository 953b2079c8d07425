// The command line every service image shares: `serve` (default), `register` (an agent's entry as JSON on
// stdin, written to the live registry), `unregister <agent>`, `healthcheck` (for Docker's HEALTHCHECK).
import { readFileSync } from "node:fs";
import type { z } from "zod";
import { type Listen, probeHealth } from "./admin";
import type { LogFields, Logger } from "./log";
import { removeEntry, watchEntries, writeEntry } from "./registry";

export interface ServiceDefinition<T extends { name: string }> {
    log: Logger;
    /** Where the registry lives, its entries' schema (it knows the service's own ports) and the admin listener, from the service's own config. */
    settings(): { registryDir: string; entrySchema: z.ZodType<T>; admin: Listen };
    /** What to log of a registered entry (never a credential). */
    describe(entry: T): LogFields;
    /** Builds the server: it gets the registry's entries before it listens, and `stop` runs on SIGTERM. */
    create(): { setAgents(entries: T[]): Promise<void>; listen(): Promise<unknown>; stop(): Promise<void> };
}

export async function runServiceCli<T extends { name: string }>(service: ServiceDefinition<T>, args: string[]): Promise<void> {
    const [command = "serve", ...rest] = args;
    const { log } = service;
    switch (command) {
        case "serve": {
            const running = service.create();
            const { registryDir, entrySchema } = service.settings();
            const stopWatching = watchEntries(registryDir, entrySchema, log, (entries) => running.setAgents(entries));
            await running.listen();
            let stopping = false;
            for (const signal of ["SIGTERM", "SIGINT"] as const) {
                process.on(signal, () => {
                    if (stopping) return;
                    stopping = true;
                    stopWatching();
                    void running.stop().then(() => process.exit(0));
                });
            }
            return;
        }
        case "register": {
            const { registryDir, entrySchema } = service.settings();
            const entry = entrySchema.parse(JSON.parse(readFileSync(0, "utf8")));
            writeEntry(registryDir, entry.name, entry);
            log("agent_registered", { agent: entry.name, ...service.describe(entry) });
            return;
        }
        case "unregister":
            log("agent_unregistered", { agent: rest[0], existed: removeEntry(service.settings().registryDir, rest[0] ?? "") });
            return;
        case "healthcheck":
            process.exit((await probeHealth(service.settings().admin)) ? 0 : 1);
        default:
            throw new Error(`unknown command '${command}': use serve, register, unregister or healthcheck`);
    }
}

/** Runs the CLI; any error is one `fatal` log line (no stack, no secrets) and exit code 1. */
export function main<T extends { name: string }>(service: ServiceDefinition<T>): void {
    runServiceCli(service, process.argv.slice(2)).catch((error: Error) => {
        service.log("fatal", { error: error.message.slice(0, 500) });
        process.exit(1);
    });
}
