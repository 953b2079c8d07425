import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { AgentConfig, EnabledProvider } from "../../infra/config";
import { AGENT_STATE_CLAIM, agentPort, k8sNames, podLabels } from "../../infra/kubernetesTopology";
import { AGENT_HOME, AGENT_USER, PORTS } from "../../infra/topology";
import { AGENT_HEALTHCHECK, OPENCLAW_CONFIG_DIR, OPENCLAW_CONFIG_PATH, type ServiceEndpoint, agentEnvironment, agentSecrets } from "../agentSandbox";
import { agentPolicy } from "./networkPolicies";
import { envVars, hardenedPodSpec } from "./podSecurity";
import { type Placement, metadata } from "./sharedService";

export interface KubernetesAgentSandboxArgs extends Placement {
    /** The providers the stack enables (the agent\'s OpenClaw config names each). */
    providers: readonly EnabledProvider[];
    agent: AgentConfig;
    /** KeyProxy through the agent's own Service. */
    keyProxy: ServiceEndpoint;
    /** EgressGateway's HTTP proxy through the agent's own Service. */
    egressGateway: ServiceEndpoint;
    /** The only resolver of the agent's pod: EgressGateway's DNS sink. */
    dnsServer: pulumi.Input<string>;
    /** RuntimeClass of the pod (gVisor, Kata): the agent's own `runtime`, else the stack's. */
    runtimeClassName?: string;
    storageGi: number;
    storageClassName?: string;
}

/** The config file's mode: readable by the agent's group (fsGroup) only; Secret volumes are owned by root. */
const CONFIG_FILE_MODE = 0o440;
const CONFIG_KEY = OPENCLAW_CONFIG_PATH.slice(OPENCLAW_CONFIG_DIR.length + 1);

/**
 * One OpenClaw agent on Kubernetes: a StatefulSet of one hardened pod with its state volume, its OpenClaw config
 * from a Secret mounted read-only, its credential for KeyProxy (never a real key), and the NetworkPolicy that lets
 * it reach its own ports on KeyProxy and EgressGateway and the DNS sink, nothing else.
 */
export class KubernetesAgentSandbox extends pulumi.ComponentResource {
    public readonly agent: AgentConfig;
    public readonly statefulSet: k8s.apps.v1.StatefulSet;
    /** The agent's KeyProxy credential (secret). Rotates when the agent's credentialEpoch changes. */
    public readonly credential: pulumi.Output<string>;
    public readonly dashboardToken: pulumi.Output<string>;
    public readonly dashboardUrl: string;

    constructor(name: string, args: KubernetesAgentSandboxArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:kubernetes:AgentSandbox", name, {}, opts);
        const { agent, stack } = args;
        this.agent = agent;
        const labels = podLabels(stack, "agent", agent.name);

        const secrets = agentSecrets(name, agent, args.providers, args.keyProxy, this);
        this.credential = secrets.credential;
        this.dashboardToken = secrets.dashboardToken;
        const { config, origins } = secrets;
        const egressProxyUrl = pulumi.interpolate`http://${args.egressGateway.address}:${args.egressGateway.port}`;
        // A rotated credential reaches the running pod through the mounted Secret (OpenClaw reloads the file): no restart.
        const configSecret = new k8s.core.v1.Secret(
            `${name}-config`,
            { metadata: metadata(args, k8sNames.agentConfig(agent.name), labels), type: "Opaque", stringData: { [CONFIG_KEY]: config } },
            { parent: this },
        );

        const podSpec = pulumi.all([egressProxyUrl, args.keyProxy.address, args.dnsServer]).apply(([egress, keyProxyAddress, nameserver]) =>
            hardenedPodSpec({
                name: "openclaw",
                image: agent.image,
                user: AGENT_USER,
                resources: agent.resources,
                env: envVars(agentEnvironment(egress, keyProxyAddress)),
                ports: [{ name: "dashboard", containerPort: PORTS.agentDashboard }],
                probe: { command: AGENT_HEALTHCHECK.slice(1), initialDelaySeconds: 90, periodSeconds: 30 },
                volumes: [
                    { volume: { name: AGENT_STATE_CLAIM }, mountPath: AGENT_HOME, readOnly: false },
                    { volume: { name: "config", secret: { secretName: k8sNames.agentConfig(agent.name), defaultMode: CONFIG_FILE_MODE } }, mountPath: OPENCLAW_CONFIG_DIR, readOnly: true },
                ],
                tmpfs: { "/tmp": "256m" },
                nameserver,
                runtimeClassName: args.runtimeClassName,
            }),
        );
        // The state volume comes from the claim template; the pod spec must not also declare it as a volume.
        const volumes = podSpec.apply((spec) => (spec.volumes as k8s.types.input.core.v1.Volume[]).filter((v) => v.name !== AGENT_STATE_CLAIM));

        this.statefulSet = new k8s.apps.v1.StatefulSet(
            name,
            {
                metadata: metadata(args, k8sNames.agent(agent.name), labels),
                spec: {
                    replicas: 1,
                    selector: { matchLabels: labels },
                    persistentVolumeClaimRetentionPolicy: { whenDeleted: "Retain", whenScaled: "Retain" },
                    template: { metadata: { labels }, spec: pulumi.all([podSpec, volumes]).apply(([spec, vs]) => ({ ...spec, hostname: agent.name, volumes: vs })) },
                    volumeClaimTemplates: [
                        {
                            metadata: { name: AGENT_STATE_CLAIM, labels },
                            spec: {
                                accessModes: ["ReadWriteOnce"],
                                resources: { requests: { storage: `${args.storageGi}Gi` } },
                                ...(args.storageClassName ? { storageClassName: args.storageClassName } : {}),
                            },
                        },
                    ],
                },
            },
            { parent: this, dependsOn: [configSecret] },
        );

        new k8s.networking.v1.NetworkPolicy(
            `${name}-network`,
            { metadata: metadata(args, k8sNames.agent(agent.name), labels), spec: agentPolicy(stack, agent.name, agentPort(agent)) },
            { parent: this },
        );

        this.dashboardUrl = `${origins[0]}/`;
        this.registerOutputs({ statefulSet: this.statefulSet.metadata.name, dashboardUrl: this.dashboardUrl });
    }
}
