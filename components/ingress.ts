import type * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { type IngressAgent, type IngressConfigInput, type IngressUser, TLS_ENV, USER_TOKEN, tokenDigest } from "../contracts/ingress";
import type { IngressStackConfig } from "../infra/config";
import { ALIASES, INGRESS_DATA_DIR, INGRESS_ENTRY, LABELS, PORTS, dockerNames } from "../infra/topology";
import { ownCa } from "./certificates";
import { connectAgent, registryCommand, sharedServiceContainer } from "./sharedService";

/** What the Ingress needs to know of one agent. */
export interface IngressAgentLink {
    name: string;
    network: pulumi.Input<string>;
    subnet: string;
    /** The Ingress's fixed address on the agent's network. */
    address: string;
    /** Where the agent's OpenClaw gateway listens on that network. */
    gatewayAddress: string;
}

/**
 * What an agent's gateway is told of the Ingress (openClawConfig's `ingress`): the one address it trusts to say who
 * is asking, the users it accepts from there, and the browser origins the Control UI is opened from.
 */
export interface GatewayIngressAccess {
    address: string;
    users: string[];
    origins: string[];
}

/**
 * Pure: the origins a browser has on the Ingress: `https://` and each name its certificate carries (the publish
 * address unless it is a wildcard, localhost, the host names), with the port unless it is 443.
 */
export function ingressOrigins(publishAddress: string, port: number, hostnames: readonly string[]): string[] {
    const hosts = [...(["0.0.0.0", "::"].includes(publishAddress) ? [] : [publishAddress.includes(":") ? `[${publishAddress}]` : publishAddress]), "localhost", ...hostnames];
    return hosts.map((host) => (port === 443 ? `https://${host}` : `https://${host}:${port}`));
}

/** Pure: the agent's side of the Ingress, or none when no user may reach it (its gateway then keeps token auth). */
export function gatewayIngressAccess(config: Pick<IngressStackConfig, "users" | "port" | "hostnames">, publishAddress: string, agent: string, ingressAddress: string): GatewayIngressAccess | undefined {
    const users = config.users.filter((user) => user.agents.includes(agent)).map((user) => user.name);
    return users.length === 0 ? undefined : { address: ingressAddress, users, origins: ingressOrigins(publishAddress, config.port, config.hostnames) };
}

export interface IngressArgs {
    stack: string;
    config: IngressStackConfig;
    /** The host address the listener is published on (network.publishAddress). */
    publishAddress: string;
    uplinkNetwork: pulumi.Input<string>;
    /** The Ingress's fixed address on the uplink. */
    uplinkAddress: string;
    dockerHost: string;
    agents: IngressAgentLink[];
}

/**
 * Pure: the INGRESS_CONFIG the service reads. The listener binds the uplink address only, where the published port
 * arrives: on the agents' networks nothing of the Ingress answers. The certificate and key travel in their own
 * (secret) variables.
 */
export function ingressRuntimeConfig(config: Pick<IngressStackConfig, "rules" | "limits" | "auditRotation">, uplinkAddress: string) {
    return {
        listen: { host: uplinkAddress, port: PORTS.ingress },
        admin: [{ host: "127.0.0.1", port: PORTS.ingressMetrics }],
        dataDir: INGRESS_DATA_DIR,
        rules: config.rules,
        limits: config.limits,
        auditRotation: config.auditRotation,
    } satisfies Omit<IngressConfigInput, "tls">;
}

/** Pure: an agent's registry entry, as `ingress register` reads it on stdin. */
export function ingressAgentEntry(agent: Pick<IngressAgentLink, "name" | "gatewayAddress">): string {
    const entry: IngressAgent = { name: agent.name, gateway: { host: agent.gatewayAddress, port: PORTS.agentDashboard } };
    return JSON.stringify(entry);
}

/** Pure: a user's registry entry, as `ingress register-user` reads it on stdin: only the token's digest. */
export function ingressUserEntry(user: { name: string; agents: string[] }, token: string): string {
    const entry: IngressUser = { name: user.name, tokenSha256: tokenDigest(token), agents: user.agents };
    return JSON.stringify(entry);
}

/** Where the listener's certificate comes from: the operator's (ingress.certificate) or the stack's own CA. */
export type IngressTlsMode = "operator-certificate" | "own-ca";

export function ingressTlsMode(config: Pick<IngressStackConfig, "certificate">): IngressTlsMode {
    return config.certificate ? "operator-certificate" : "own-ca";
}

/**
 * The listener's chain and key: the operator's as configured (nothing declared for it), or a certificate for the
 * publish address, localhost and the configured host names from a CA of the stack's own.
 */
function listenerCertificate(parent: pulumi.Resource, name: string, args: IngressArgs): { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; caCertPem?: pulumi.Output<string> } {
    const { config, stack, publishAddress } = args;
    if (config.certificate) return { certPem: config.certificate.certPem, keyPem: pulumi.secret(config.certificate.keyPem) };
    const ca = ownCa(parent, name, `OpenClaw ${stack} ingress CA`);
    return { ...ca.issue("server", publishAddress, ["localhost", ...config.hostnames]), caCertPem: ca.caCertPem };
}

/**
 * The Ingress: TLS on one host port, per-user bearer tokens, prompt-injection rules, and every agent's gateway behind
 * it. Like KeyProxy, its container knows nothing of agents or users: agents are attached and registered by commands,
 * users registered by commands, so adding either recreates nothing else.
 */
export class Ingress extends pulumi.ComponentResource {
    public readonly container: docker.Container;
    public readonly containerName: string;
    public readonly url: string;
    /** The stack's own CA that signed the listener's certificate, for clients to trust; absent with an operator certificate. */
    public readonly caCertPem?: pulumi.Output<string>;
    /** Where the listener's certificate comes from. */
    public readonly tlsMode: IngressTlsMode;
    /** Each user's bearer token (secret): `pulumi stack output --show-secrets ingress`. */
    public readonly userTokens: Record<string, pulumi.Output<string>> = {};

    constructor(name: string, args: IngressArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:Ingress", name, {}, opts);
        const { stack, config } = args;
        this.containerName = dockerNames.ingressContainer(stack);
        this.url = `https://${args.publishAddress}:${config.port}/`;

        const certificate = listenerCertificate(this, name, args);
        this.tlsMode = ingressTlsMode(config);
        this.caCertPem = certificate.caCertPem;
        const service = sharedServiceContainer(this, name, {
            stack,
            role: "ingress",
            containerName: this.containerName,
            volumeName: dockerNames.ingressVolume(stack),
            dataDir: INGRESS_DATA_DIR,
            entry: INGRESS_ENTRY,
            image: config.image,
            resources: config.resources,
            uplinkNetwork: args.uplinkNetwork,
            uplinkAddress: args.uplinkAddress,
            dockerHost: args.dockerHost,
            alias: ALIASES.ingress,
            labels: { [LABELS.ingressTls]: this.tlsMode },
            runtimeConfig: { variable: "INGRESS_CONFIG", build: () => ingressRuntimeConfig(config, args.uplinkAddress) },
            envs: pulumi.secret(pulumi.all([certificate.certPem, certificate.keyPem]).apply(([cert, key]) => [`${TLS_ENV.certPem}=${cert}`, `${TLS_ENV.keyPem}=${key}`])),
            metricsPort: PORTS.ingressMetrics,
            published: [{ internal: PORTS.ingress, external: config.port, ip: args.publishAddress }],
        });
        this.container = service.container;

        for (const agent of args.agents) {
            connectAgent(this, name, service, agent, ingressAgentEntry(agent));
        }
        for (const user of config.users) {
            const password = new random.RandomPassword(
                `${name}-user-${user.name}-token`,
                { length: USER_TOKEN.randomChars, special: false, keepers: { user: user.name, epoch: String(user.tokenEpoch) } },
                { parent: this },
            );
            const token = pulumi.secret(pulumi.interpolate`${USER_TOKEN.prefix}${password.result}`);
            this.userTokens[user.name] = token;
            registryCommand(this, `${name}-user-${user.name}`, service, { register: "register-user", unregister: `unregister-user ${user.name}` }, token.apply((value) => ingressUserEntry(user, value)));
        }

        this.registerOutputs({ container: this.containerName, url: this.url });
    }
}
