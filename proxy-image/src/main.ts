// KeyProxy's command line: `serve` (default), `register` (entry JSON on stdin), `unregister <agent>`, `healthcheck`.
import { readFileSync } from "node:fs";
import { probeHealth } from "../../runtime/admin";
import { agentEntrySchema, loadConfigFromEnv, runtimeConfigSchema } from "./config";
import { jsonLogger } from "../../runtime/log";
import { removeEntry, watchEntries, writeEntry } from "../../runtime/registry";
import { KeyProxyServer } from "./server";

const log = jsonLogger("key-proxy");

function registryDir(): string {
    return runtimeConfigSchema.parse({ upstreams: {}, ...JSON.parse(process.env.KEYPROXY_CONFIG ?? "{}") }).registryDir;
}

async function serve() {
    const loaded = loadConfigFromEnv();
    const proxy = new KeyProxyServer(loaded, log);
    const stopWatching = watchEntries(loaded.config.registryDir, agentEntrySchema, log, (entries) => proxy.setAgents(entries));
    await proxy.listen();
    let stopping = false;
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
        process.on(signal, () => {
            if (stopping) return;
            stopping = true;
            stopWatching();
            void proxy.drain().then(() => process.exit(0));
        });
    }
}

async function healthcheck() {
    const admin = runtimeConfigSchema.parse({ upstreams: {}, ...JSON.parse(process.env.KEYPROXY_CONFIG ?? "{}") }).admin[0];
    process.exit((await probeHealth(admin)) ? 0 : 1);
}

async function main(args: string[]) {
    const [command = "serve", ...rest] = args;
    switch (command) {
        case "serve":
            return serve();
        case "register": {
            const entry = agentEntrySchema.parse(JSON.parse(readFileSync(0, "utf8")));
            writeEntry(registryDir(), entry.name, entry);
            log("agent_registered", { agent: entry.name, subnet: entry.subnet });
            return;
        }
        case "unregister": {
            const removed = removeEntry(registryDir(), rest[0] ?? "");
            log("agent_unregistered", { agent: rest[0], existed: removed });
            return;
        }
        case "healthcheck":
            return healthcheck();
        default:
            throw new Error(`unknown command '${command}': use serve, register, unregister or healthcheck`);
    }
}

main(process.argv.slice(2)).catch((error: Error) => {
    log("fatal", { error: error.message.slice(0, 500) });
    process.exit(1);
});
