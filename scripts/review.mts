// Offline review of a stack, for pull requests: runs the program under mocks with the stack's config (no Pulumi
// CLI, no Docker), prints the plan and every policy verdict, and exits 1 on a config error or a mandatory
// violation.   npm run review -- --stack dev [--json]
import { existsSync } from "node:fs";
import path from "node:path";
import { ConfigError, type IngressStackConfig, enabledProviders, parseStackConfig, requiredSecretKeys, unreadSecretPlaceholder } from "../infra/config.ts";
import { ingressTlsMode } from "../components/ingress.ts";
import { X509Certificate } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { LABELS, agentNetworkAddresses } from "../infra/topology.ts";
import { CONTAINER, NETWORK, type Verdict, evaluate } from "../policy/policies.ts";
import { reveal, runUnderMocks } from "./mockProgram.ts";
import { isKubernetesPolicy, kubernetesReview } from "./reviewKubernetes.ts";
import { REPO_ROOT, readStackFile } from "./stackFile.ts";

function usage(message: string): never {
    console.error(`error: ${message}\nusage: npm run review -- --stack <name> [--json] [--config-dir <dir with Pulumi.<name>.yaml>]`);
    process.exit(2);
}

const args = process.argv.slice(2);
let stack = "dev";
let json = false;
let configDir = REPO_ROOT;
for (let i = 0; i < args.length; i++) {
    if (args[i] === "--json") json = true;
    else if (args[i] === "--config-dir") configDir = path.resolve(args[++i] ?? usage("--config-dir needs a directory"));
    else if (args[i] === "--stack") stack = args[++i] ?? usage("--stack needs a name");
    else usage(`unknown argument '${args[i]}'`);
}
if (!/^[a-z0-9-]+$/.test(stack)) usage(`'${stack}' is not a stack name`);
if (!existsSync(path.join(configDir, `Pulumi.${stack}.yaml`))) usage(`no Pulumi.${stack}.yaml in ${configDir}`);

function fail(heading: string, errors: readonly string[], file?: string): never {
    if (json) console.log(JSON.stringify({ stack, ok: false, ...(file !== undefined && { file }), errors }, null, 2));
    else console.error(`Stack ${stack}: ${heading}${file !== undefined ? ` in ${file}` : ""}:\n${errors.map((e) => `  - ${e}`).join("\n")}`);
    process.exit(1);
}

/** Where the Ingress's certificate comes from; for an operator's, what its leaf names and until when (never the key). */
function ingressTls(ingress: IngressStackConfig) {
    const mode = ingressTlsMode(ingress);
    if (!ingress.certificate) return { mode };
    const leaf = new X509Certificate(ingress.certificate.certPem);
    return { mode, subject: leaf.subject.replace(/\n/g, ", "), subjectAltName: leaf.subjectAltName ?? "", validTo: leaf.validToDate.toISOString() };
}

// Secrets are checked for presence only: offline, an encrypted value cannot be read, and a missing one is set at
// deploy time from the environment (npm run deploy).
const secretNotes: string[] = [];
const raw: Record<string, unknown> = {};
let config;
try {
    const file = readStackFile(stack, configDir);
    Object.assign(raw, file.raw);
    for (const key of requiredSecretKeys(raw)) {
        if (raw[key] !== undefined) continue;
        secretNotes.push(`${key}: ${file.encrypted.includes(key) ? "encrypted in the stack file, not read offline" : "not set in the stack file (npm run deploy stores it from the environment)"}`);
        raw[key] = unreadSecretPlaceholder(key);
    }
    config = parseStackConfig(raw, file.file);
} catch (error) {
    if (error instanceof ConfigError) fail(error.heading, error.problems, error.file);
    throw error;
}

let resources;
try {
    resources = await runUnderMocks(raw, stack, () => import("../program/index.ts"));
} catch (error) {
    // The program stops with a RunError naming the keys (a skill the deploy gate refused, for one).
    if (!(error instanceof pulumi.RunError)) throw error;
    const [heading, ...lines] = error.message.split("\n");
    fail(heading.replace(/:$/, ""), lines.map((line) => line.replace(/^\s*- /, "")));
}
if (config.backend === "kubernetes") {
    const { plan, text } = kubernetesReview(stack, config, resources, secretNotes);
    console.log(json ? JSON.stringify(plan, null, 2) : text);
    process.exit(plan.ok ? 0 : 1);
}
/** The Docker host a resource lands on, from its provider's name in the provider reference (urn::id). */
const dockerHosts: Record<string, string | undefined> = { "agents-host": config.dockerHost, "monitoring-host": config.monitoring?.host };
const hostOf = (provider: string | undefined) => dockerHosts[provider?.split("::")[3] ?? ""] ?? "unknown";
const byName = (type: string) => resources.filter((r) => r.type === type).map((r) => ({ name: r.name, host: hostOf(r.provider), props: reveal(r.inputs) as Record<string, any> }));
const containers = byName(CONTAINER);
const containerLabels = (agent: string): Record<string, string> => {
    const container = containers.find((c) => (c.props.labels ?? []).some((l: { label: string; value: string }) => l.label === LABELS.role && l.value === "agent") && (c.props.labels ?? []).some((l: { label: string; value: string }) => l.label === LABELS.agent && l.value === agent));
    return Object.fromEntries((container?.props.labels ?? []).map((l: { label: string; value: string }) => [l.label, l.value]));
};
const networks = byName(NETWORK);
const verdicts: Verdict[] = evaluate([...containers.map((c) => ({ ...c, type: CONTAINER })), ...networks.map((n) => ({ ...n, type: NETWORK }))]);
const mandatory = verdicts.filter((v) => v.enforcementLevel === "mandatory");

const plan = {
    stack,
    ok: mandatory.length === 0,
    agents: config.agents.map((a) => ({
        name: a.name,
        image: a.image,
        model: a.model,
        subnet: a.subnet,
        addresses: agentNetworkAddresses(a.subnet),
        // Agents publish no port: `npm run bridge -- dashboard <agent>` forwards the dashboard to this local port.
        dashboard: `127.0.0.1:${a.dashboardPort}`,
        resources: a.resources,
        budget: a.budget,
        egress: { mode: a.egress.mode, allow: [...a.egress.allow, ...config.egress.allowForAll].map((r) => `${r.host}:${(r.ports ?? config.egress.defaultPorts).join(",")}`) },
        credentialEpoch: a.credentialEpoch,
        // What the deploy gate let through, as the program labelled the agent's container.
        skills: (containerLabels(a.name)[LABELS.skills] ?? "").split(", ").filter(Boolean),
    })),
    networks: networks.map((n) => ({ name: n.props.name, host: n.host, internal: n.props.internal === true, subnet: n.props.ipamConfigs?.[0]?.subnet ?? "docker-assigned", options: n.props.options ?? {} })),
    containers: containers.map((c) => ({
        name: c.props.name,
        host: c.host,
        image: c.props.image,
        user: c.props.user,
        readOnly: c.props.readOnly === true,
        capabilitiesDropped: c.props.capabilities?.drops ?? [],
        noNewPrivileges: (c.props.securityOpts ?? []).includes("no-new-privileges:true"),
        privileged: c.props.privileged === true,
        memoryMb: c.props.memory,
        cpus: c.props.cpus,
        networks: c.props.networkMode ? [c.props.networkMode] : (c.props.networksAdvanced ?? []).map((n: any) => (n.ipv4Address ? `${n.name} (${n.ipv4Address})` : n.name)),
        runsOnce: c.props.attach === true,
        ports: (c.props.ports ?? []).map((p: any) => `${p.ip}:${p.external}->${p.internal}`),
        tmpfs: Object.keys(c.props.tmpfs ?? {}),
        volumes: (c.props.volumes ?? []).map((v: any) => `${v.volumeName ?? v.hostPath}:${v.containerPath}${v.readOnly ? ":ro" : ""}`),
    })),
    // Who may reach which agent through the Ingress, and the rules it applies to their chat requests.
    ingress: config.ingress && {
        url: `https://${config.network.publishAddress}:${config.ingress.port}/`,
        tls: ingressTls(config.ingress),
        users: config.ingress.users,
        rules: config.ingress.rules,
        limits: config.ingress.limits,
    },
    keyEpochs: Object.fromEntries(enabledProviders(config.keyProxy).map((p) => [p.id, p.keyEpoch])),
    verdicts,
    secretsNotChecked: secretNotes,
};

if (json) {
    console.log(JSON.stringify(plan, null, 2));
} else {
    const out: string[] = [`Stack ${stack}: offline review (Pulumi mocks: no CLI, no Docker)`, "", "Agents"];
    for (const a of plan.agents) {
        const budget = Object.entries(a.budget).map(([k, v]) => `${k.replace("Usd", "")} $${v}`).join(", ");
        out.push(`  ${a.name}  ${a.image}  model ${a.model}  credential epoch ${a.credentialEpoch}`);
        out.push(`    subnet ${a.subnet}: agent ${a.addresses.agent}, key-proxy ${a.addresses.keyProxy}, egress+dns ${a.addresses.egressGateway}`);
        out.push(`    dashboard ${a.dashboard} (npm run bridge -- dashboard ${a.name})  budget ${budget}  memory ${a.resources.memoryMb} MB, cpus ${a.resources.cpus}, pids ${a.resources.pids}`);
        out.push(`    egress (${a.egress.mode}): ${a.egress.allow.join(" ") || "nothing"}`);
        out.push(`    skills (deploy gate): ${a.skills.join(", ") || "none"}`);
    }
    out.push("", "Networks");
    for (const n of plan.networks) out.push(`  ${n.name}  on ${n.host}  ${n.subnet}  ${n.internal ? "internal" : "uplink"}${n.options["com.docker.network.bridge.inhibit_ipv4"] === "true" ? ", bridge without host address" : ""}`);
    out.push("", "Containers");
    for (const c of plan.containers) {
        const hardening = [c.readOnly ? "read-only" : "WRITABLE", c.capabilitiesDropped.includes("ALL") ? "caps dropped" : "CAPS KEPT", c.noNewPrivileges ? "no-new-privileges" : "NEW PRIVILEGES", c.privileged ? "PRIVILEGED" : "unprivileged"].join(", ");
        out.push(`  ${c.name}  on ${c.host}  ${c.image}  user ${c.user}  ${hardening}  ${c.memoryMb} MB, ${c.cpus} cpus${c.runsOnce ? "  runs once" : ""}`);
        out.push(`    networks ${c.networks.join(", ")}  ports ${c.ports.join(", ") || "none"}  tmpfs ${c.tmpfs.join(", ") || "none"}  volumes ${c.volumes.join(", ") || "none"}`);
    }
    if (plan.ingress) {
        const { url, tls, users, rules, limits } = plan.ingress;
        out.push("", "Ingress", `  ${url}  ${limits.ratePerSecond} requests/s per user (burst ${limits.burst}), ${limits.maxConcurrentPerUser} at once`);
        out.push(`  TLS: ${"subject" in tls ? `operator certificate ${tls.subject} (${tls.subjectAltName}), valid until ${tls.validTo}` : "a certificate from the stack's own CA (stack output ingress.caCertPem)"}`);
        out.push("  users (token epoch): agents they reach (the API at /agents/<name>/v1, the Control UI at /agents/<name>/ after /signin)");
        for (const u of users) out.push(`    ${u.name} (${u.tokenEpoch}): ${u.agents.join(", ")}`);
        if (users.length === 0) out.push("    none: nobody can reach an agent");
        out.push("  prompt-injection rules (RE2, case-insensitive): id  action  roles  pattern");
        for (const r of rules) out.push(`    ${r.id}  ${r.action}  ${r.roles.join(",")}  ${r.pattern}`);
    }
    out.push("", `Upstream key epochs: ${Object.entries(plan.keyEpochs).map(([id, e]) => `${id} ${e}`).join(", ")}`, "", "Policies");
    const failing = new Set(verdicts.map((v) => v.policy));
    for (const policy of (await import("../policy/policies.ts")).POLICIES.filter((p) => !isKubernetesPolicy(p.name))) {
        if (!failing.has(policy.name)) out.push(`  pass  ${policy.name} (${policy.enforcementLevel})`);
    }
    for (const v of verdicts) out.push(`  ${v.enforcementLevel === "mandatory" ? "FAIL" : "warn"}  ${v.policy} (${v.enforcementLevel})  ${v.resource}: ${v.message}`);
    if (secretNotes.length > 0) out.push("", "Secrets (presence only)", ...secretNotes.map((n) => `  ${n}`));
    out.push("", plan.ok ? `OK: no mandatory violation (${verdicts.length} advisory)` : `FAILED: ${mandatory.length} mandatory violation(s)`);
    console.log(out.join("\n"));
}
process.exit(plan.ok ? 0 : 1);
