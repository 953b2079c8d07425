import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { AgentSandbox } from "../components/agentSandbox";
import type { StackConfig } from "./config";
import { PORTS, agentNetworkAddresses } from "./topology";

export interface StackOutputs {
    agents: Record<string, { network: pulumi.Output<string>; subnet: string; container: pulumi.Output<string>; dashboardUrl: string }>;
}

/** Declares the whole stack from validated config. Config errors were raised before this runs. */
export function defineStack(config: StackConfig, stack: string): StackOutputs {
    const agentsHost = new docker.Provider("agents-host", { host: config.dockerHost });

    const agents: StackOutputs["agents"] = {};
    for (const agent of config.agents) {
        const addresses = agentNetworkAddresses(agent.subnet);
        const sandbox = new AgentSandbox(
            `agent-${agent.name}`,
            {
                stack,
                agent,
                publishAddress: config.network.publishAddress,
                dockerHost: config.dockerHost,
                keyProxy: { address: addresses.keyProxy, port: PORTS.keyProxy },
                egressGateway: { address: addresses.egressGateway, port: PORTS.egressProxy },
                dnsServer: addresses.egressGateway,
            },
            { providers: { docker: agentsHost } },
        );
        agents[agent.name] = {
            network: sandbox.network.name,
            subnet: sandbox.subnet,
            container: sandbox.container.name,
            dashboardUrl: sandbox.dashboardUrl,
        };
    }
    return { agents };
}
