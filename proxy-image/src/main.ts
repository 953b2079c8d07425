// KeyProxy's command line (see runtime/serviceCli.ts): serve, register, unregister, healthcheck.
import { jsonLogger } from "../../runtime/log";
import { main } from "../../runtime/serviceCli";
import { describeIdentity } from "../../runtime/registry";
import { agentEntrySchema, loadConfigFromEnv, ownPorts, runtimeConfigSchema } from "./config";
import { KeyProxyServer } from "./server";

const log = jsonLogger("key-proxy");

main({
    log,
    settings() {
        const config = runtimeConfigSchema.parse({ upstreams: {}, ...JSON.parse(process.env.KEYPROXY_CONFIG ?? "{}") });
        return { registryDir: config.registryDir, entrySchema: agentEntrySchema(ownPorts(config)), admin: config.admin[0] };
    },
    describe: (entry) => describeIdentity(entry),
    create() {
        const proxy = new KeyProxyServer(loadConfigFromEnv(), log);
        return { setAgents: (entries) => proxy.setAgents(entries), listen: () => proxy.listen(), stop: () => proxy.drain() };
    },
});
