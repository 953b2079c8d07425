// EgressGateway's command line: `serve` (default), `register` (entry JSON on stdin), `unregister <agent>`, `healthcheck`.
import { readFileSync } from "node:fs";
import { probeHealth } from "../../runtime/admin";
import { jsonLogger } from "../../runtime/log";
import { removeEntry, watchEntries, writeEntry } from "../../runtime/registry";
import { egressAgentSchema, loadEgressConfig } from "./config";
import { EgressGateway, systemDeps } from "./server";

const log = jsonLogger("egress-gateway");

async function serve() {
    const config = loadEgressConfig();
    const gateway = new EgressGateway(config, log, {
        ...systemDeps,
        resolve: (host) => (config.staticHosts[host] ? Promise.resolve(config.staticHosts[host]) : systemDeps.resolve(host)),
    });
    const stopWatching = watchEntries(config.registryDir, egressAgentSchema, log, (agents) => gateway.setAgents(agents));
    await gateway.listen();
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
        process.once(signal, () => {
            stopWatching();
            void gateway.close().then(() => process.exit(0));
        });
    }
}

async function main(args: string[]) {
    const [command = "serve", ...rest] = args;
    switch (command) {
        case "serve":
            return serve();
        case "register": {
            const entry = egressAgentSchema.parse(JSON.parse(readFileSync(0, "utf8")));
            writeEntry(loadEgressConfig().registryDir, entry.name, entry);
            log("agent_registered", { agent: entry.name, subnet: entry.subnet, mode: entry.mode, rules: entry.allow.length });
            return;
        }
        case "unregister":
            log("agent_unregistered", { agent: rest[0], existed: removeEntry(loadEgressConfig().registryDir, rest[0] ?? "") });
            return;
        case "healthcheck":
            process.exit((await probeHealth(loadEgressConfig().admin[0])) ? 0 : 1);
        default:
            throw new Error(`unknown command '${command}': use serve, register, unregister or healthcheck`);
    }
}

main(process.argv.slice(2)).catch((error: Error) => {
    log("fatal", { error: error.message.slice(0, 500) });
    process.exit(1);
});
