// The operator CLI's pure parts: arguments, the agent command, parsing what comes back, adding an agent to a
// stack file. The shell around them (scripts/bridge.mts) only talks to Docker and prints.
import { Document, isMap, isSeq, parseDocument } from "yaml";
import { ConfigError, NAMESPACE, parseStackConfig } from "../infra/config";
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

export const DEFAULT_AGENT_COMMAND = "openclaw agent --local -m {task} --json";

export const USAGE = `usage: npm run bridge -- [--stack NAME] [--json] <command>

commands:
  send <agent> "<task>"   run the agent's one-shot command with the task, print its JSON result
                          --timeout SECONDS (default 300), --exec "<command with {task}>" (default "${DEFAULT_AGENT_COMMAND}")
  list                    agents with state, health, dashboard URL and budget used
  logs <agent> [-f]       the agent's container log; -f follows it
  add <name>              add an agent to Pulumi.<stack>.yaml (--image, --port, --daily-usd), then preview

Agents are found by the labels the program sets on their containers (openclaw.stack, openclaw.role=agent,
openclaw.agent), on the Docker host in DOCKER_HOST or the stack's openclaw:dockerHost.
exit codes: 0 ok, 2 usage, 3 unknown agent, 4 not running, 5 timeout, 6 output not JSON, 7 command failed, 8 config error`;

export type Command =
    | { name: "send"; agent: string; task: string; timeoutSeconds: number; exec: string }
    | { name: "list" }
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
        } else if (arg === "--json" || arg === "-f" || arg === "--follow") flags.set(arg === "--follow" ? "-f" : arg, true);
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
    dashboardUrl: string | null;
}

/** Reads `docker inspect` of agent containers (found by label) into what the CLI shows. */
export function agentsFromInspect(inspected: any[]): AgentContainer[] {
    return inspected
        .map((c) => {
            const binding = Object.values<any>(c.HostConfig?.PortBindings ?? {})[0]?.[0];
            return {
                agent: c.Config?.Labels?.["openclaw.agent"] ?? "",
                container: String(c.Name ?? "").replace(/^\//, ""),
                state: c.State?.Status ?? "unknown",
                health: c.State?.Health?.Status ?? "none",
                dashboardUrl: binding ? `http://${binding.HostIp || "127.0.0.1"}:${binding.HostPort}/` : null,
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
    const existing = agents.items.map((item) => (isMap(item) ? item.toJSON() : {})) as { name?: string; image?: string; dashboardPort?: number }[];
    if (existing.some((a) => a.name === agent)) throw new BridgeError(`agent '${agent}' is already in the stack file`, EXIT.config);
    const image = options.image ?? existing[0]?.image;
    if (!image) throw new BridgeError("give --image: the stack has no agent to copy one from", EXIT.usage);
    const port = options.port ?? Math.max(18800, ...existing.map((a) => a.dashboardPort ?? 0)) + 1;
    agents.add(doc.createNode({ name: agent, image, dashboardPort: port, budget: { dailyUsd: options.dailyUsd }, credentialEpoch: 1 }));
    const result = doc.toString();
    const raw: Record<string, unknown> = { anthropicApiKey: "checked-at-deploy", openaiApiKey: "checked-at-deploy" };
    for (const [key, value] of Object.entries((parseDocument(result).toJSON() as { config: Record<string, unknown> }).config)) {
        if (key.startsWith(`${NAMESPACE}:`) && !(value && typeof value === "object" && "secure" in value)) raw[key.slice(NAMESPACE.length + 1)] = value;
    }
    try {
        parseStackConfig(raw);
    } catch (error) {
        if (error instanceof ConfigError) throw new BridgeError(`the agent does not fit the stack:\n${error.problems.join("\n")}`, EXIT.config);
        throw error;
    }
    return result;
}
