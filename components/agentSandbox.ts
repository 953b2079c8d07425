import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { AgentConfig, EnabledProvider } from "../infra/config";
import { providerKind } from "../providers/index";
import type { ApprovedSkill } from "../infra/skills";
import { AGENT_HOME, AGENT_USER, ALIASES, EXCEPTION_LABELS, LABELS, PORTS, agentNetworkAddresses, dockerNames } from "../infra/topology";
import { GATEWAY_IDENTITY, agentBasePath } from "../contracts/ingress";
import { AGENT_CREDENTIAL } from "../runtime/registry";
import { hardenedContainer } from "./hardening";
import type { GatewayIngressAccess } from "./ingress";

export interface ServiceEndpoint {
    address: pulumi.Input<string>;
    port: number;
}

export interface AgentSandboxArgs {
    stack: string;
    agent: AgentConfig;
    /** The providers the stack enables (the agent's OpenClaw config names each). */
    providers: readonly EnabledProvider[];
    /** The Docker host, for the commands that finish what the provider cannot express. */
    dockerHost: string;
    /** KeyProxy on this agent's network. */
    keyProxy: ServiceEndpoint;
    /** EgressGateway's HTTP proxy on this agent's network. */
    egressGateway: ServiceEndpoint;
    /** The only resolver the agent's container may use: EgressGateway's DNS sink on this network. */
    dnsServer: pulumi.Input<string>;
    /** Skills the deploy gate approved (infra/skills.ts), delivered read-only beside the config. */
    skills: readonly ApprovedSkill[];
    /** The Ingress, when users reach this agent through it (gatewayIngressAccess). */
    ingress?: GatewayIngressAccess;
}

/**
 * Bridge options of every agent network. `internal` removes the route out; `inhibit_ipv4` leaves the bridge
 * without an address, so the host does not answer on a gateway address either (measured on Docker 20.10:
 * an internal network alone still reaches host listeners on 0.0.0.0 through the gateway).
 */
export const AGENT_NETWORK_OPTIONS: Record<string, string> = {
    "com.docker.network.bridge.inhibit_ipv4": "true",
    "com.docker.network.bridge.enable_ip_masquerade": "false",
    "com.docker.network.bridge.enable_icc": "true",
};

/**
 * Where the operator's OpenClaw config lives in the agent container: on its own volume, mounted read-only, so the
 * agent process can neither change it nor replace it (a file in its writable home could be renamed away).
 */
export const OPENCLAW_CONFIG_DIR = "/etc/openclaw";
export const OPENCLAW_CONFIG_PATH = `${OPENCLAW_CONFIG_DIR}/openclaw.json`;
/** Approved third-party skills, one folder each, on the read-only config volume (OpenClaw's `skills.load.extraDirs`). */
export const OPENCLAW_SKILLS_DIR = `${OPENCLAW_CONFIG_DIR}/skills`;
/** OpenClaw's mutable state: sessions, memory, media, plugin skills (on the agent's state volume). */
export const OPENCLAW_STATE_DIR = `${AGENT_HOME}/.openclaw`;

export interface OpenClawConfigInput {
    agent: AgentConfig;
    /** The providers the stack enables: each gets an OpenClaw provider entry pointing at KeyProxy. */
    providers: readonly EnabledProvider[];
    keyProxyUrl: string;
    credential: string;
    dashboardToken: string;
    /** The browser origins the Control UI is opened from. */
    dashboardOrigins: string[];
    /** Whether approved skills are delivered (then OpenClaw loads them from OPENCLAW_SKILLS_DIR). */
    withSkills?: boolean;
    /** The Ingress, when users reach this agent through it. */
    ingress?: GatewayIngressAccess;
}

/**
 * The agent's OpenClaw config. Both providers point at KeyProxy with the agent's credential as their key (the
 * only place the credential is given: no API-key variables in the environment); `models.mode: replace` so no
 * catalog the agent writes can add or redirect a provider; telemetry, update checks, the hosted model catalog and
 * mDNS off; the gateway's OpenAI-compatible HTTP endpoints off unless the stack turns on chat completions or users
 * reach the agent through the Ingress; failed sign-ins rate-limited.
 */
export function openClawConfig({ agent, providers, keyProxyUrl, credential, dashboardToken, dashboardOrigins, withSkills = false, ingress }: OpenClawConfigInput) {
    // With `replace` there is no discovery: the catalog is what is declared here, the agent's own model.
    const [modelProvider, modelId] = [agent.model.slice(0, agent.model.indexOf("/")), agent.model.slice(agent.model.indexOf("/") + 1)];
    const models = (provider: string) => (provider === modelProvider ? [{ id: modelId, name: modelId }] : []);
    return {
        gateway: {
            mode: "local",
            bind: "lan",
            port: PORTS.agentDashboard,
            ...(ingress ? behindIngress(agent.name, ingress, dashboardToken, dashboardOrigins) : { auth: { mode: "token", token: dashboardToken, rateLimit: DASHBOARD_AUTH_RATE_LIMIT }, controlUi: { allowedOrigins: dashboardOrigins } }),
            http: { endpoints: { chatCompletions: { enabled: agent.chatCompletionsApi || ingress !== undefined }, responses: { enabled: false } } },
        },
        models: {
            mode: "replace",
            catalogRefresh: { enabled: false },
            providers: Object.fromEntries(
                providers.map(({ id, kind }) => {
                    const { api, basePath } = providerKind(kind)!.openClaw;
                    return [id, { baseUrl: `${keyProxyUrl}/${id}${basePath}`, apiKey: credential, api, models: models(id) }];
                }),
            ),
        },
        agents: { defaults: { model: { primary: agent.model } } },
        discovery: { mdns: { mode: "off" } },
        telemetry: { enabled: false },
        update: { checkOnStart: false, auto: { enabled: false } },
        ...(withSkills && { skills: { load: { extraDirs: [OPENCLAW_SKILLS_DIR] } } }),
    };
}

/**
 * The gateway behind the Ingress (OpenClaw's trusted-proxy auth): it believes who is asking only from the Ingress's
 * address on this network and only for the users the stack lets reach this agent, caps them to GATEWAY_IDENTITY's
 * scopes, and enrols their browsers without a manual pairing. The Control UI moves under `/agents/<name>` as the
 * Ingress serves it. Callers inside the container (`npm run bridge -- send`, the forwarded dashboard) sign in with
 * the dashboard token as the gateway's local password: trusted-proxy mode refuses a shared token.
 */
function behindIngress(agent: string, ingress: GatewayIngressAccess, dashboardToken: string, dashboardOrigins: string[]) {
    return {
        trustedProxies: [ingress.address],
        auth: {
            mode: "trusted-proxy",
            password: dashboardToken,
            rateLimit: DASHBOARD_AUTH_RATE_LIMIT,
            trustedProxy: {
                userHeader: GATEWAY_IDENTITY.userHeader,
                requiredHeaders: [...GATEWAY_IDENTITY.requiredHeaders],
                allowUsers: ingress.users,
                deviceAutoApprove: { enabled: true, scopes: [...GATEWAY_IDENTITY.scopes] },
            },
        },
        controlUi: { basePath: agentBasePath(agent), allowedOrigins: [...dashboardOrigins, ...ingress.origins] },
    };
}

/** Failed gateway sign-ins: 10 a minute, then a 5-minute lockout (OpenClaw's audit warns without a limit). */
const DASHBOARD_AUTH_RATE_LIMIT = { maxAttempts: 10, windowMs: 60_000, lockoutMs: 300_000 };

/** The browser origins of the dashboard: `npm run bridge -- dashboard` forwards it to this loopback port. */
export function dashboardOrigins(port: number): string[] {
    return [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
}

/** The agent's environment: where its config is, and the egress proxy. No credential, no provider URL. */
export function agentEnvironment(egressProxyUrl: string, keyProxyAddress: string): string[] {
    const noProxy = [keyProxyAddress, ALIASES.keyProxy, "localhost", "127.0.0.1"].join(",");
    return [
        `HOME=${AGENT_HOME}`,
        `OPENCLAW_CONFIG_PATH=${OPENCLAW_CONFIG_PATH}`,
        // Without it OpenClaw keeps media and plugin skills beside the config, which is read-only.
        `OPENCLAW_STATE_DIR=${OPENCLAW_STATE_DIR}`,
        // The config is the deployment's: OpenClaw's own writers refuse instead of failing on the read-only file.
        "OPENCLAW_CONFIG_READONLY=1",
        "OPENCLAW_NO_AUTO_UPDATE=1",
        "DO_NOT_TRACK=1",
        `HTTP_PROXY=${egressProxyUrl}`,
        `HTTPS_PROXY=${egressProxyUrl}`,
        `http_proxy=${egressProxyUrl}`,
        `https_proxy=${egressProxyUrl}`,
        `NO_PROXY=${noProxy}`,
        `no_proxy=${noProxy}`,
    ];
}

/** Health: the gateway answers /healthz. Uses the image's node, since it has no curl. */
export const AGENT_HEALTHCHECK = [
    "CMD",
    "node",
    "-e",
    `fetch("http://127.0.0.1:${PORTS.agentDashboard}/healthz").then((r)=>process.exit(r.ok?0:1),()=>process.exit(1))`,
];

const CONFIG_WRITER_RESOURCES = { memoryMb: 128, cpus: 0.5, pids: 16 };
/** Where the uploads land in the writer's view of the config volume (its home), relative to that directory. */
const CONFIG_UPLOAD = ".incoming.json";
/** The approved skills as one JSON file, `{ <skill>: { <path>: <base64> } }`: Docker uploads cannot create folders. */
const SKILLS_UPLOAD = ".incoming-skills.json";
const CONFIG_FILE_NAME = OPENCLAW_CONFIG_PATH.slice(OPENCLAW_CONFIG_DIR.length + 1);
const SKILLS_DIR_NAME = OPENCLAW_SKILLS_DIR.slice(OPENCLAW_CONFIG_DIR.length + 1);

/**
 * The writer's script, run in `dir` (the config volume). The config becomes a 0400 file of the agent's user. The
 * skills are unpacked into a fresh folder (files 0400) that then replaces the previous one, so a skill that is no
 * longer approved is gone; a path that would leave its skill's folder stops the writer.
 */
export function configWriterScript(dir: string): string {
    const at = (name: string) => JSON.stringify(`${dir}/${name}`);
    return [
        `const fs=require("fs"),path=require("path"),to=${at(CONFIG_FILE_NAME)},next=to+".next";`,
        `fs.rmSync(next,{force:true});fs.writeFileSync(next,fs.readFileSync(${at(CONFIG_UPLOAD)}),{mode:0o400});`,
        `fs.renameSync(next,to);fs.rmSync(${at(CONFIG_UPLOAD)});`,
        `const skills=${at(SKILLS_DIR_NAME)},staging=skills+".next",bundle=${at(SKILLS_UPLOAD)};`,
        `fs.rmSync(staging,{recursive:true,force:true});`,
        `if(fs.existsSync(bundle)){`,
        `for(const[name,files]of Object.entries(JSON.parse(fs.readFileSync(bundle,"utf8")))){`,
        `const root=path.join(staging,name);if(path.dirname(root)!==staging)throw new Error("bad skill name "+name);`,
        `for(const[rel,data]of Object.entries(files)){const file=path.join(root,rel);`,
        `if(!file.startsWith(root+path.sep))throw new Error("bad path "+rel);`,
        `fs.mkdirSync(path.dirname(file),{recursive:true,mode:0o700});fs.writeFileSync(file,Buffer.from(data,"base64"),{mode:0o400});}}`,
        `fs.rmSync(bundle);}`,
        `fs.rmSync(skills,{recursive:true,force:true});if(fs.existsSync(staging))fs.renameSync(staging,skills);`,
    ].join("");
}

/** The skills bundle the writer unpacks. */
export function skillsBundle(skills: readonly ApprovedSkill[]): string {
    return JSON.stringify(Object.fromEntries(skills.map((skill) => [skill.name, Object.fromEntries(skill.files.map((f) => [f.path, f.content.toString("base64")]))])));
}

/**
 * Labels that tell reviewers and the policy pack what the gate let through: every skill with its hash and standing,
 * and each override with who accepted which findings (reported as advisory).
 */
export function skillLabels(skills: readonly ApprovedSkill[]): Record<string, string> {
    if (skills.length === 0) return {};
    const id = (skill: ApprovedSkill) => `${skill.name}@${skill.hash.slice(0, 16)}`;
    const overrides = skills
        .filter((skill) => skill.override)
        .map((skill) => {
            const rules = skill.findings.map((f) => `${f.rule} ${f.file}:${f.line}`).join(", ");
            return `${id(skill)}: overridden by ${skill.override!.user} at ${skill.override!.at} ("${skill.override!.acknowledgment}") despite ${rules}`.replaceAll(";", ",");
        });
    return {
        [LABELS.skills]: skills.map((skill) => `${id(skill)} ${skill.status}`).join(", "),
        ...(overrides.length > 0 && { [EXCEPTION_LABELS.skillOverrides]: overrides.join("; ") }),
    };
}

/**
 * What makes an agent's identity and its OpenClaw config, on either backend: its KeyProxy credential (rotated by
 * `credentialEpoch`), its dashboard token, and the config text (secret) pointing both providers at KeyProxy.
 */
export function agentSecrets(name: string, agent: AgentConfig, providers: readonly EnabledProvider[], keyProxy: ServiceEndpoint, parent: pulumi.Resource, withSkills = false, ingress?: GatewayIngressAccess) {
    const credential = new random.RandomPassword(
        `${name}-credential`,
        { length: AGENT_CREDENTIAL.randomChars, special: false, keepers: { agent: agent.name, epoch: String(agent.credentialEpoch) } },
        { parent },
    );
    const dashboardToken = new random.RandomPassword(`${name}-dashboard-token`, { length: 40, special: false, keepers: { agent: agent.name } }, { parent });
    const secrets = {
        credential: pulumi.secret(pulumi.interpolate`${AGENT_CREDENTIAL.prefix}${credential.result}`),
        dashboardToken: pulumi.secret(dashboardToken.result),
        origins: dashboardOrigins(agent.dashboardPort),
    };
    const keyProxyUrl = pulumi.interpolate`http://${keyProxy.address}:${keyProxy.port}`;
    const config = pulumi
        .all([keyProxyUrl, secrets.credential, secrets.dashboardToken])
        .apply(([url, cred, token]) =>
            JSON.stringify(openClawConfig({ agent, providers, keyProxyUrl: url, credential: cred, dashboardToken: token, dashboardOrigins: secrets.origins, withSkills, ingress }), null, 2),
        );
    return { ...secrets, config: pulumi.secret(config) };
}

/**
 * One OpenClaw agent: its internal network with its own subnet, its hardened container, its state volume,
 * its loopback-only dashboard, and its credential for KeyProxy (never a real provider key).
 */
export class AgentSandbox extends pulumi.ComponentResource {
    public readonly agent: AgentConfig;
    public readonly network: docker.Network;
    public readonly container: docker.Container;
    public readonly addresses: ReturnType<typeof agentNetworkAddresses>;
    /** The agent's KeyProxy credential (secret). Rotates when the agent's credentialEpoch changes. */
    public readonly credential: pulumi.Output<string>;
    public readonly dashboardToken: pulumi.Output<string>;
    public readonly dashboardUrl: string;
    /** How a shared service reaches this agent: the agent's network and the service's fixed address on it. */
    public readonly link: (service: "keyProxy" | "egressGateway" | "ingress") => { name: string; network: pulumi.Output<string>; subnet: string; address: string };

    constructor(name: string, args: AgentSandboxArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:AgentSandbox", name, {}, opts);
        const { agent, stack } = args;
        this.agent = agent;
        this.addresses = agentNetworkAddresses(agent.subnet);

        this.network = new docker.Network(
            `${name}-network`,
            {
                name: dockerNames.agentNetwork(stack, agent.name),
                driver: "bridge",
                internal: true,
                ipamConfigs: [{ subnet: agent.subnet, gateway: this.addresses.gateway }],
                options: AGENT_NETWORK_OPTIONS,
                labels: [
                    { label: LABELS.stack, value: stack },
                    { label: LABELS.agent, value: agent.name },
                ],
            },
            { parent: this, deleteBeforeReplace: true },
        );

        const state = new docker.Volume(
            `${name}-state`,
            { name: dockerNames.agentStateVolume(stack, agent.name), labels: [{ label: LABELS.agent, value: agent.name }] },
            { parent: this },
        );

        const secrets = agentSecrets(name, agent, args.providers, args.keyProxy, this, args.skills.length > 0, args.ingress);
        this.credential = secrets.credential;
        this.dashboardToken = secrets.dashboardToken;
        const { config, origins } = secrets;
        const egressProxyUrl = pulumi.interpolate`http://${args.egressGateway.address}:${args.egressGateway.port}`;
        const configVolume = this.writeConfig(name, args, config);
        const envs = pulumi.all([egressProxyUrl, args.keyProxy.address]).apply(([egress, address]) => agentEnvironment(egress, address));

        // No published port: the agent network has no host address, so the host cannot reach the container. The
        // dashboard is forwarded into the container's own loopback by `npm run bridge -- dashboard <agent>`.
        const { container } = hardenedContainer(
            name,
            {
                containerName: dockerNames.agentContainer(stack, agent.name),
                image: agent.image,
                user: AGENT_USER,
                resources: agent.resources,
                labels: {
                    [LABELS.stack]: stack,
                    [LABELS.role]: "agent",
                    [LABELS.agent]: agent.name,
                    [LABELS.dashboardPort]: String(agent.dashboardPort),
                    ...skillLabels(args.skills),
                },
                healthcheck: { tests: AGENT_HEALTHCHECK, startPeriod: "90s" },
                networks: [{ name: this.network.name, ipv4Address: this.addresses.agent }],
                envs,
                volumes: [
                    { volumeName: state.name, containerPath: AGENT_HOME },
                    { volumeName: configVolume.volume.name, containerPath: OPENCLAW_CONFIG_DIR, readOnly: true },
                ],
                tmpfs: { "/tmp": "256m" },
                dns: [args.dnsServer],
                hostname: agent.name,
                runtime: agent.runtime,
            },
            args.dockerHost,
            { parent: this, dependsOn: [configVolume.writer] },
        );
        this.container = container;
        this.dashboardUrl = `${origins[0]}/`;

        this.link = (service) => ({ name: agent.name, network: this.network.name, subnet: agent.subnet, address: this.addresses[service] });

        this.registerOutputs({
            network: this.network.name,
            subnet: agent.subnet,
            container: this.container.name,
            dashboardUrl: this.dashboardUrl,
        });
    }

    /**
     * The config volume and the one-shot container that fills it. Docker uploads the config into the volume as
     * root (world-readable, 0444); the writer, running once as the agent's user, turns it into a file the agent's
     * user owns with mode 0400 (OpenClaw's audit rejects a world-readable config) and exits. The agent mounts the
     * volume read-only. A new config replaces only the writer; the agent's gateway reloads the file. Approved skills
     * travel the same way, so the agent can read them but never change them.
     */
    private writeConfig(name: string, args: AgentSandboxArgs, content: pulumi.Output<string>) {
        const { agent, stack } = args;
        const volume = new docker.Volume(
            `${name}-config`,
            { name: dockerNames.agentConfigVolume(stack, agent.name), labels: [{ label: LABELS.agent, value: agent.name }] },
            { parent: this },
        );
        const { container: writer } = hardenedContainer(
            `${name}-config-writer`,
            {
                containerName: dockerNames.agentConfigWriter(stack, agent.name),
                image: agent.image,
                user: AGENT_USER,
                resources: CONFIG_WRITER_RESOURCES,
                labels: { [LABELS.stack]: stack, [LABELS.role]: "agent-config", [LABELS.agent]: agent.name },
                healthcheck: { tests: ["NONE"] },
                networks: [],
                // Mounted where the image has the agent user's home, so a new volume starts owned by that user.
                volumes: [{ volumeName: volume.name, containerPath: AGENT_HOME }],
                uploads: [
                    { file: `${AGENT_HOME}/${CONFIG_UPLOAD}`, content, permissions: "0444" },
                    ...(args.skills.length > 0 ? [{ file: `${AGENT_HOME}/${SKILLS_UPLOAD}`, content: skillsBundle(args.skills), permissions: "0444" }] : []),
                ],
                command: ["node", "-e", configWriterScript(AGENT_HOME)],
                runOnce: true,
            },
            args.dockerHost,
            { parent: this },
        );
        return { volume, writer };
    }
}
