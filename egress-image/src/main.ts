// EgressGateway's command line (see runtime/serviceCli.ts): serve, register, unregister, healthcheck.
import { jsonLogger } from "../../runtime/log";
import { main } from "../../runtime/serviceCli";
import { describeIdentity } from "../../runtime/registry";
import { egressAgentSchema, loadEgressConfig, ownPorts } from "./config";
import { EgressGateway } from "./server";

const log = jsonLogger("egress-gateway");

main({
    log,
    settings() {
        const config = loadEgressConfig();
        return { registryDir: config.registryDir, entrySchema: egressAgentSchema(ownPorts(config)), admin: config.admin[0] };
    },
    describe: (entry) => ({ ...describeIdentity(entry), mode: entry.mode, rules: entry.allow.length }),
    create() {
        const config = loadEgressConfig();
        const gateway = new EgressGateway(config, log);
        return { setAgents: (agents) => gateway.setAgents(agents), listen: () => gateway.listen(), stop: () => gateway.close() };
    },
});
