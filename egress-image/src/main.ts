// EgressGateway's command line (see runtime/serviceCli.ts): serve, register, unregister, healthcheck.
import { jsonLogger } from "../../runtime/log";
import { main } from "../../runtime/serviceCli";
import { egressAgentSchema, loadEgressConfig } from "./config";
import { EgressGateway } from "./server";

const log = jsonLogger("egress-gateway");

main({
    log,
    settings() {
        const config = loadEgressConfig();
        return { registryDir: config.registryDir, admin: config.admin[0] };
    },
    entrySchema: egressAgentSchema,
    describe: (entry) => ({ subnet: entry.subnet, mode: entry.mode, rules: entry.allow.length }),
    create() {
        const config = loadEgressConfig();
        const gateway = new EgressGateway(config, log);
        return { setAgents: (agents) => gateway.setAgents(agents), listen: () => gateway.listen(), stop: () => gateway.close() };
    },
});
