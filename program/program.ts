import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { AgentSandbox } from "../components/agentSandbox";
import { EgressGateway } from "../components/egressGateway";
import { Ingress, type IngressTlsMode, gatewayIngressAccess } from "../components/ingress";
import { KeyProxy } from "../components/keyProxy";
import { MonitoringStack } from "../components/monitoringStack";
import type { WatchedEndpoint } from "../components/monitoringConfig";
import type { RemoteMetrics } from "../components/sharedService";
import { type StackConfig, enabledProviders } from "../infra/config";
import { type KubernetesStackOutputs, defineKubernetesStack, upstreamKeysOf } from "./kubernetesProgram";
import type { ApprovedSkill } from "../infra/skills";
import { LABELS, PORTS, agentNetworkAddresses, dockerNames, uplinkAddresses } from "../infra/topology";

export interface StackOutputs {
    agents: Record<string, { network: pulumi.Output<string>; subnet: string; container: pulumi.Output<string>; dashboardUrl: string }>;
    keyProxy: { container: string };
    egressGateway: { container: string };
    ingress?: {
        url: string;
        /** Where the listener's certificate comes from (`own-ca` or `operator-certificate`). */
        tlsMode: IngressTlsMode;
        /** The stack's own CA, for clients to trust; absent with an operator certificate (clients trust the operator's PKI). */
        caCertPem?: pulumi.Output<string>;
        /** Each user's bearer token (secret). */
        userTokens: Record<string, pulumi.Output<string>>;
    };
    monitoring?: {
        grafanaUrl: string;
        grafanaAdminPassword: pulumi.Output<string>;
        /** Import it to trust the UIs' certificates. */
        caCertPem: pulumi.Output<string>;
        uptimeKumaUrl: string;
        prometheusUrl: string;
        /** What Uptime Kuma should watch. */
        watchList: WatchedEndpoint[];
    };
}

/**
 * Declares the whole stack from validated config, on its backend. Config errors were raised before this runs
 * (skills on kubernetes among them: there they are not delivered yet).
 */
export function defineStack(config: StackConfig, stack: string, skills: ReadonlyMap<string, ApprovedSkill[]> = new Map()): StackOutputs | KubernetesStackOutputs {
    return config.backend === "kubernetes" ? defineKubernetesStack(config, stack) : defineDockerStack(config, stack, skills);
}

function defineDockerStack(config: StackConfig, stack: string, skills: ReadonlyMap<string, ApprovedSkill[]>): StackOutputs {
    const agentsHost = new docker.Provider("agents-host", { host: config.dockerHost });
    const onAgentsHost = { providers: { docker: agentsHost } };

    const uplinkAt = uplinkAddresses(config.network.uplinkSubnet);
    const uplink = new docker.Network(
        "uplink",
        {
            name: dockerNames.uplinkNetwork(stack),
            driver: "bridge",
            ipamConfigs: [{ subnet: config.network.uplinkSubnet, gateway: uplinkAt.gateway, ipRange: uplinkAt.dynamicRange }],
            labels: [{ label: LABELS.stack, value: stack }],
        },
        { provider: agentsHost },
    );

    // The monitoring VPS has its own Docker provider; the agents' host only serves it metrics.
    const monitoring = config.monitoring && new MonitoringStack("monitoring", { stack, config: config.monitoring });
    const remoteMetrics = (service: "keyProxy" | "egressGateway"): RemoteMetrics | undefined =>
        monitoring && config.monitoring && { publishAddress: config.monitoring.scrape.publishAddress, hostPort: config.monitoring.scrape.ports[service], ...monitoring.scrapeCredentials };

    const sandboxes = config.agents.map((agent) => {
        const addresses = agentNetworkAddresses(agent.subnet);
        return new AgentSandbox(
            `agent-${agent.name}`,
            {
                stack,
                agent,
                providers: enabledProviders(config.keyProxy),
                dockerHost: config.dockerHost,
                keyProxy: { address: addresses.keyProxy, port: PORTS.keyProxy },
                egressGateway: { address: addresses.egressGateway, port: PORTS.egressProxy },
                dnsServer: addresses.egressGateway,
                skills: skills.get(agent.name) ?? [],
                ingress: config.ingress && gatewayIngressAccess(config.ingress, config.network.publishAddress, agent.name, addresses.ingress),
            },
            onAgentsHost,
        );
    });

    const upstreamKeys = upstreamKeysOf(config);
    const keyProxy = new KeyProxy(
        "key-proxy",
        {
            stack,
            config: config.keyProxy,
            upstreamKeys,
            uplinkNetwork: uplink.name,
            uplinkAddress: uplinkAt.keyProxy,
            dockerHost: config.dockerHost,
            agents: sandboxes.map((sandbox) => ({ ...sandbox.link("keyProxy"), credential: sandbox.credential, budget: sandbox.agent.budget })),
            remoteMetrics: remoteMetrics("keyProxy"),
        },
        onAgentsHost,
    );

    // KeyProxy reaches its upstreams on the uplink directly, not through EgressGateway: its destinations are fixed
    // by the operator's config, never chosen by an agent, and it is the hot path. The gateway exists for the
    // destinations agents choose.
    const egressGateway = new EgressGateway(
        "egress-gateway",
        {
            stack,
            config: config.egress,
            uplinkNetwork: uplink.name,
            uplinkAddress: uplinkAt.egressGateway,
            dockerHost: config.dockerHost,
            remoteMetrics: remoteMetrics("egressGateway"),
            agents: sandboxes.map((sandbox) => ({ ...sandbox.link("egressGateway"), mode: sandbox.agent.egress.mode, allow: sandbox.agent.egress.allow })),
        },
        onAgentsHost,
    );

    const ingress =
        config.ingress &&
        new Ingress(
            "ingress",
            {
                stack,
                config: config.ingress,
                publishAddress: config.network.publishAddress,
                uplinkNetwork: uplink.name,
                uplinkAddress: uplinkAt.ingress,
                dockerHost: config.dockerHost,
                agents: sandboxes.map((sandbox) => ({ ...sandbox.link("ingress"), gatewayAddress: sandbox.addresses.agent })),
            },
            onAgentsHost,
        );

    const agents: StackOutputs["agents"] = {};
    for (const sandbox of sandboxes) {
        agents[sandbox.agent.name] = {
            network: sandbox.network.name,
            subnet: sandbox.agent.subnet,
            container: sandbox.container.name,
            dashboardUrl: sandbox.dashboardUrl,
        };
    }
    return {
        agents,
        keyProxy: { container: keyProxy.containerName },
        egressGateway: { container: egressGateway.containerName },
        ...(ingress && { ingress: { url: ingress.url, tlsMode: ingress.tlsMode, ...(ingress.caCertPem && { caCertPem: ingress.caCertPem }), userTokens: ingress.userTokens } }),
        ...(monitoring && {
            monitoring: {
                grafanaUrl: monitoring.grafanaUrl,
                grafanaAdminPassword: monitoring.grafanaAdminPassword,
                caCertPem: monitoring.caCertPem,
                uptimeKumaUrl: monitoring.uptimeKumaUrl,
                prometheusUrl: monitoring.prometheusUrl,
                watchList: monitoring.watchList,
            },
        }),
    };
}
