// KeyProxy's command line (see runtime/serviceCli.ts): serve, register, unregister, healthcheck.
import { LogBuffer, jsonLogger } from "../../runtime/log";
import { main } from "../../runtime/serviceCli";
import { describeIdentity } from "../../runtime/registry";
import { agentEntrySchema, loadConfigFromEnv, ownPorts, runtimeConfigSchema } from "./config";
import { KeyProxyServer } from "./server";

// Access lines are batched and never block a request; a stalled stdout reader drops lines (counted in metrics).
const logBuffer = new LogBuffer(process.stdout);
process.on("exit", () => logBuffer.flushSync());
const log = jsonLogger("key-proxy", logBuffer.sink);

main({
    log,
    settings() {
        const config = runtimeConfigSchema.parse({ upstreams: {}, ...JSON.parse(process.env.KEYPROXY_CONFIG ?? "{}") });
        return { registryDir: config.registryDir, entrySchema: agentEntrySchema(ownPorts(config)), admin: config.admin[0] };
    },
    describe: (entry) => describeIdentity(entry),
    create() {
        const proxy = new KeyProxyServer(loadConfigFromEnv(), log);
        proxy.metrics.hooks.logLinesDropped = () => logBuffer.dropped;
        return { setAgents: (entries) => proxy.setAgents(entries), listen: () => proxy.listen(), stop: () => proxy.drain() };
    },
});
