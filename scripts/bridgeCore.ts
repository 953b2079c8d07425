// The operator CLI's pure parts: arguments, the agent command, parsing what comes back, adding an agent to a
// stack file. The shell around them (scripts/bridge.mts) only talks to Docker and prints.
import { Document, isMap, isSeq, parseDocument } from "yaml";
import { ConfigError, NAMESPACE, parseStackConfig, requiredSecretKeys, unreadSecretPlaceholder } from "../infra/config";
import { OPENCLAW_AGENT_COMMAND } from "../infra/openclaw";
import { LABELS, PORTS } from "../infra/topology";
import { AGENT_NAME } from "../runtime/registry";

export const EXIT = {
    ok: 0,
    usage: 2,
    unknownAgent: 3,
    notRunning: 4,
    timeout: 5,
    notJson: 6,
    commandFailed: 7,
    config: 8,
} as const;

export class BridgeError extends Error {
    constructor(
        message: string,
        readonly exitCode: number,
    ) {
        super(message);
    }
}

export const DEFAULT_AGENT_COMMAND = OPENCLAW_AGENT_COMMAND;

export const USAGE = `usage: npm run bridge -- [--stack NAME] [--json] <command>

commands:
  send <agent> "<task>"   run the agent's one-shot command with the task, print its JSON result
                          --timeout SECONDS (default 300), --exec "<command with {task}>" (default "${DEFAULT_AGENT_COMMAND}")
  list                    agents with state, health, dashboard URL and budget used
  dashboard <agent>       forward the agent's dashboard to 127.0.0.1:<its dashboardPort> until Ctrl-C
                          --port N (another local port), --with-token (print the URL with the gateway token)
  logs <agent> [-f]       the agent's container log; -f follows it
  add <name>              add an agent to Pulumi.<stack>.yaml (--image, --port, --daily-usd), then preview
                          without --image it runs the OpenClaw release the project pins

Agents are found by the labels the program sets on their containers (openclaw.stack, openclaw.role=agent,
openclaw.agent), on the Docker host in DOCKER_HOST or the stack's openclaw:dockerHost.
exit codes: 0 ok, 2 usage, 3 unknown agent, 4 not running, 5 timeout, 6 output not JSON, 7 command failed, 8 config error`;

export type Command =
    | { name: "send"; agent: string; task: string; timeoutSeconds: number; exec: string }
    | { name: "list" }
    | { name: "dashboard"; agent: string; port?: number; withToken: boolean }
    | { name: "logs"; agent: string; follow: boolean }
    | { name: "add"; agent: string; image?: string; port?: number; dailyUsd: number }
    | { name: "help" };

export interface Invocation {
    stack: string;
    json: boolean;
    command: Command;
}


/** Parses the CLI's arguments, or throws a BridgeError with the usage exit code. */
export function parseArgs(argv: readonly string[]): Invocation {
    const flags = new Map<string, string | true>();
    const positional: string[] = [];
    const valued = new Set(["--stack", "--timeout", "--exec", "--image", "--port", "--daily-usd"]);
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        if (arg === "--help" || arg === "-h") return { stack: "dev", json: false, command: { name: "help" } };
        if (valued.has(arg)) {
            const value = argv[++i];
            if (value === undefined) throw new BridgeError(`${arg} needs a value`, EXIT.usage);
            flags.set(arg, value);
        } else if (arg === "--json" || arg === "-f" || arg === "--follow" || arg === "--with-token") flags.set(arg === "--follow" ? "-f" : arg, true);
        else if (arg.startsWith("-")) throw new BridgeError(`unknown option ${arg}`, EXIT.usage);
        else positional.push(arg);
    }
    const stack = String(flags.get("--stack") ?? "dev");
    if (!/^[a-z0-9-]+$/.test(stack)) throw new BridgeError(`'${stack}' is not a stack name`, EXIT.usage);
    const [name, ...rest] = positional;
    const agentArg = () => {
        const agent = rest[0];
        if (!agent) throw new BridgeError(`${name} needs an agent name`, EXIT.usage);
        if (!AGENT_NAME.test(agent)) throw new BridgeError(`'${agent}' is not an agent name (a DNS label)`, EXIT.usage);
        return agent;
    };
    const number = (flag: string, fallback: number, min: number) => {
        const raw = flags.get(flag);
        if (raw === undefined) return fallback;
        const value = Number(raw);
        if (!Number.isFinite(value) || value < min) throw new BridgeError(`${flag} must be a number of at least ${min}`, EXIT.usage);
        return value;
    };
    const base = { stack, json: flags.has("--json") };
    switch (name) {
        case "send": {
            const agent = agentArg();
            const task = rest[1];
            if (task === undefined || task.trim() === "") throw new BridgeError("send needs a task", EXIT.usage);
            if (rest.length > 2) throw new BridgeError("send takes one task: quote it", EXIT.usage);
            const exec = String(flags.get("--exec") ?? DEFAULT_AGENT_COMMAND);
            if (!exec.split(/\s+/).includes("{task}")) throw new BridgeError("--exec must contain {task} as one word", EXIT.usage);
            return { ...base, command: { name, agent, task, timeoutSeconds: number("--timeout", 300, 1), exec } };
        }
        case "logs":
            return { ...base, command: { name, agent: agentArg(), follow: flags.has("-f") } };
        case "dashboard": {
            if (rest.length > 1) throw new BridgeError("dashboard takes one agent", EXIT.usage);
            const port = flags.has("--port") ? number("--port", 0, 1024) : undefined;
            if (port !== undefined && (!Number.isInteger(port) || port > 65535)) throw new BridgeError("--port must be a whole number from 1024 to 65535", EXIT.usage);
            return { ...base, command: { name, agent: agentArg(), port, withToken: flags.has("--with-token") } };
        }
        case "list":
            if (rest.length > 0) throw new BridgeError("list takes no arguments", EXIT.usage);
            return { ...base, command: { name } };
        case "add": {
            const agent = agentArg();
            const port = flags.has("--port") ? number("--port", 0, 1024) : undefined;
            const image = flags.get("--image");
            return { ...base, command: { name, agent, image: image === undefined ? undefined : String(image), port, dailyUsd: number("--daily-usd", 5, 0.01) } };
        }
        case undefined:
            throw new BridgeError("no command given", EXIT.usage);
        default:
            throw new BridgeError(`unknown command '${name}'`, EXIT.usage);
    }
}

/** What to check when a stack has no agent containers on the Docker host the CLI asked. */
export function noAgentsHint(stack: string, dockerHost: string | undefined): string {
    return [
        `no agents of stack ${stack} on ${dockerHost ?? "the local Docker host"}. Check:`,
        `  - is the stack deployed? (npm run deploy, or npm run pulumi -- up --stack ${stack})`,
        `  - is this the Docker host it runs on? (DOCKER_HOST, or openclaw:dockerHost in Pulumi.${stack}.yaml)`,
        `  - is the stack name right? (--stack NAME; the default is dev)`,
    ].join("\n");
}

/** The argv to run in the agent's container: the template's words, {task} replaced by the task as one argument. */
export function agentArgv(template: string, task: string): string[] {
    return template.split(/\s+/).filter(Boolean).map((word) => (word === "{task}" ? task : word));
}

/**
 * Why the agent's command failed: OpenClaw prints its errors as JSON on stdout (`{"ok":false,"error":{"message"}}`),
 * other tools on stderr.
 */
export function agentFailure(status: number | null, stdout: string, stderr: string): BridgeError {
    let reason = stderr.trim();
    try {
        const value = parseAgentOutput(stdout) as { error?: { message?: unknown } | string };
        const message = typeof value.error === "string" ? value.error : value.error?.message;
        if (typeof message === "string") reason = message;
    } catch {
        // stdout is not JSON: stderr says why
    }
    return new BridgeError(`the agent's command failed (exit ${status}): ${(reason || "(no output)").slice(0, 500)}`, EXIT.commandFailed);
}

/** The agent's JSON result: the whole output, or its last line that is a JSON value (tools print progress first). */
export function parseAgentOutput(stdout: string): unknown {
    const text = stdout.trim();
    try {
        return JSON.parse(text);
    } catch {
        for (const line of text.split("\n").reverse()) {
            try {
                const value = JSON.parse(line);
                if (typeof value === "object" && value !== null) return value;
            } catch {
                // not this line
            }
        }
    }
    throw new BridgeError(`the agent's output is not JSON: ${text.slice(0, 200) || "(empty)"}`, EXIT.notJson);
}

export interface AgentContainer {
    agent: string;
    container: string;
    state: string;
    health: string;
    /** The local port `dashboard` forwards from (the origin the agent's gateway allows). */
    dashboardPort: number | null;
    dashboardUrl: string | null;
}

/** Reads `docker inspect` of agent containers (found by label) into what the CLI shows. */
export function agentsFromInspect(inspected: any[]): AgentContainer[] {
    return inspected
        .map((c) => {
            const port = Number(c.Config?.Labels?.[LABELS.dashboardPort]);
            return {
                agent: c.Config?.Labels?.[LABELS.agent] ?? "",
                container: String(c.Name ?? "").replace(/^\//, ""),
                state: c.State?.Status ?? "unknown",
                health: c.State?.Health?.Status ?? "none",
                dashboardPort: Number.isInteger(port) && port > 0 ? port : null,
                dashboardUrl: Number.isInteger(port) && port > 0 ? `http://127.0.0.1:${port}/` : null,
            };
        })
        .filter((a) => a.agent !== "")
        .sort((a, b) => a.agent.localeCompare(b.agent));
}

/** Budget used per agent and window, from KeyProxy's Prometheus text. */
export function budgetsFromMetrics(text: string): Record<string, Record<string, { limitUsd: number; usedUsd: number }>> {
    const limits = new Map<string, number>();
    const out: Record<string, Record<string, { limitUsd: number; usedUsd: number }>> = {};
    for (const match of text.matchAll(/^keyproxy_budget_limit_usd\{agent="([^"]+)",window="([^"]+)"\} ([\d.e+-]+)$/gm)) limits.set(`${match[1]}/${match[2]}`, Number(match[3]));
    for (const match of text.matchAll(/^keyproxy_budget_remaining_usd\{agent="([^"]+)",window="([^"]+)"\} ([\d.e+-]+)$/gm)) {
        const limit = limits.get(`${match[1]}/${match[2]}`);
        if (limit === undefined) continue;
        (out[match[1]] ??= {})[match[2]] = { limitUsd: limit, usedUsd: Math.round((limit - Number(match[3])) * 1e6) / 1e6 };
    }
    return out;
}

/**
 * Adds one agent entry to a stack file, keeping its comments and layout, and checks the result with the
 * program's own config schema. Returns the new file text.
 */
export function addAgentToStackFile(text: string, agent: string, options: { image?: string; port?: number; dailyUsd: number }): string {
    const doc: Document = parseDocument(text);
    const agents = doc.getIn(["config", `${NAMESPACE}:agents`]);
    if (!isSeq(agents)) throw new BridgeError(`the stack file has no ${NAMESPACE}:agents list`, EXIT.config);
    const existing = agents.items.map((item) => (isMap(item) ? item.toJSON() : {})) as { name?: string; dashboardPort?: number }[];
    if (existing.some((a) => a.name === agent)) throw new BridgeError(`agent '${agent}' is already in the stack file`, EXIT.config);
    const port = options.port ?? Math.max(18800, ...existing.map((a) => a.dashboardPort ?? 0)) + 1;
    // Without --image the agent runs the release the project pins (OPENCLAW_IMAGE), so the file names no image.
    const image = options.image === undefined ? {} : { image: options.image };
    agents.add(doc.createNode({ name: agent, ...image, dashboardPort: port, budget: { dailyUsd: options.dailyUsd }, credentialEpoch: 1 }));
    const result = doc.toString();
    const raw: Record<string, unknown> = {};
    for (const [key, value] of Object.entries((parseDocument(result).toJSON() as { config: Record<string, unknown> }).config)) {
        if (key.startsWith(`${NAMESPACE}:`) && !(value && typeof value === "object" && "secure" in value)) raw[key.slice(NAMESPACE.length + 1)] = value;
    }
    // Secrets are checked at deploy: here only that the agent fits.
    for (const key of requiredSecretKeys(raw)) raw[key] ??= unreadSecretPlaceholder(key);
    try {
        parseStackConfig(raw);
    } catch (error) {
        if (error instanceof ConfigError) throw new BridgeError(`the agent does not fit the stack:\n${error.problems.join("\n")}`, EXIT.config);
        throw error;
    }
    return result;
}

/**
 * What runs inside the agent's container for one forwarded connection: a pipe between stdin/stdout and the
 * gateway on the container's own loopback, where OpenClaw sees a local client (and pairs a browser that
 * presents the token without a manual approval).
 */
export const DASHBOARD_PIPE = [
    "node",
    "-e",
    `const s=require("net").connect(${PORTS.agentDashboard},"127.0.0.1");process.stdin.pipe(s).pipe(process.stdout);s.on("error",()=>process.exit(1));s.on("close",()=>process.exit(0))`,
];
