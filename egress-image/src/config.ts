import { type EgressConfig, egressConfigSchema } from "../../contracts/egressGateway";

export { type EgressConfig, egressAgentSchema, egressConfigSchema, ownPorts } from "../../contracts/egressGateway";

export function loadEgressConfig(env: NodeJS.ProcessEnv = process.env): EgressConfig {
    return egressConfigSchema.parse(JSON.parse(env.EGRESS_CONFIG ?? "{}"));
}
