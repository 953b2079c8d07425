// The operator CLI (the multi-agent bridge): npm run bridge -- --help
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { ConfigError } from "../infra/config.ts";
import { dockerNames } from "../infra/topology.ts";
import {
    type AgentContainer,
    type Command,
    BridgeError,
    EXIT,
    type Invocation,
    USAGE,
    addAgentToStackFile,
    DASHBOARD_PIPE,
    agentArgv,
    agentFailure,
    agentsFromInspect,
    budgetsFromMetrics,
    noAgentsHint,
    parseAgentOutput,
    parseArgs,
} from "./bridgeCore.ts";
import { REPO_ROOT, dockerHostOf } from "./stackFile.ts";

function dockerEnv(stack: string): NodeJS.ProcessEnv {
    if (process.env.DOCKER_HOST) return process.env;
    const dir = process.env.OPENCLAW_STACK_DIR ?? REPO_ROOT;
    const host = existsSync(path.join(dir, `Pulumi.${stack}.yaml`)) ? dockerHostOf(stack, dir) : undefined;
    return host ? { ...process.env, DOCKER_HOST: host } : process.env;
}

function docker(env: NodeJS.ProcessEnv, args: string[], timeoutMs = 30_000) {
    const result = spawnSync("docker", args, { env, encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    if (result.error && (result.error as NodeJS.ErrnoException).code === "ENOENT") throw new BridgeError("the docker CLI is not on PATH", EXIT.commandFailed);
    return result;
}

function agents(env: NodeJS.ProcessEnv, stack: string): AgentContainer[] {
    const ids = docker(env, ["ps", "-aq", "--filter", `label=openclaw.stack=${stack}`, "--filter", "label=openclaw.role=agent"]);
    if (ids.status !== 0) throw new BridgeError(`docker: ${ids.stderr.trim()}`, EXIT.commandFailed);
    const list = ids.stdout.split("\n").filter(Boolean);
    if (list.length === 0) return [];
    return agentsFromInspect(JSON.parse(docker(env, ["inspect", ...list]).stdout));
}

function findAgent(env: NodeJS.ProcessEnv, stack: string, agent: string): AgentContainer {
    const found = agents(env, stack).find((a) => a.agent === agent);
    if (!found) {
        const known = agents(env, stack).map((a) => a.agent);
        throw new BridgeError(known.length > 0 ? `no agent '${agent}' in stack ${stack} (known: ${known.join(", ")})` : noAgentsHint(stack, env.DOCKER_HOST), EXIT.unknownAgent);
    }
    return found;
}

function print(json: boolean, value: unknown, text: string) {
    console.log(json ? JSON.stringify(value, null, 2) : text);
}

async function run({ stack, json, command }: Invocation): Promise<number> {
    const env = dockerEnv(stack);
    switch (command.name) {
        case "help":
            console.log(USAGE);
            return EXIT.ok;
        case "send": {
            const agent = findAgent(env, stack, command.agent);
            if (agent.state !== "running") throw new BridgeError(`agent '${command.agent}' is ${agent.state}, not running`, EXIT.notRunning);
            const result = docker(env, ["exec", agent.container, ...agentArgv(command.exec, command.task)], command.timeoutSeconds * 1000);
            if (result.error && (result.error as NodeJS.ErrnoException).code === "ETIMEDOUT") {
                throw new BridgeError(`agent '${command.agent}' gave no answer within ${command.timeoutSeconds} s`, EXIT.timeout);
            }
            if (result.status !== 0) throw agentFailure(result.status, result.stdout, result.stderr);
            const value = parseAgentOutput(result.stdout);
            print(json, { agent: command.agent, result: value }, JSON.stringify(value, null, 2));
            return EXIT.ok;
        }
        case "list": {
            const list = agents(env, stack);
            const metrics = docker(env, ["exec", dockerNames.keyProxyContainer(stack), "/nodejs/bin/node", "-e", "fetch('http://127.0.0.1:9464/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"]);
            const budgets = metrics.status === 0 ? budgetsFromMetrics(metrics.stdout) : {};
            const rows = list.map((a) => ({ ...a, budget: budgets[a.agent] ?? null }));
            const text = rows.length === 0
                ? noAgentsHint(stack, env.DOCKER_HOST)
                : rows
                      .map((r) => {
                          const budget = r.budget ? Object.entries(r.budget).map(([w, b]) => `${w} $${b.usedUsd.toFixed(4)} of $${b.limitUsd}`).join(", ") : "budget unknown (KeyProxy not reachable)";
                          return `${r.agent.padEnd(12)} ${r.state.padEnd(8)} ${r.health.padEnd(9)} ${r.dashboardUrl ?? "-"}  ${budget}`;
                      })
                      .join("\n");
            print(json, rows, text);
            return EXIT.ok;
        }
        case "dashboard":
            return forwardDashboard(env, stack, command);
        case "logs": {
            const agent = findAgent(env, stack, command.agent);
            const child = spawn("docker", ["logs", ...(command.follow ? ["-f"] : []), agent.container], { env, stdio: "inherit" });
            const [code] = await new Promise<[number | null]>((resolve) => child.on("exit", (c) => resolve([c])));
            return code === 0 ? EXIT.ok : EXIT.commandFailed;
        }
        case "add": {
            const file = path.join(process.env.OPENCLAW_STACK_DIR ?? REPO_ROOT, `Pulumi.${stack}.yaml`);
            if (!existsSync(file)) throw new BridgeError(`no ${file}`, EXIT.config);
            writeFileSync(file, addAgentToStackFile(readFileSync(file, "utf8"), command.agent, command));
            print(json, { added: command.agent, file }, `added agent '${command.agent}' to ${path.relative(process.cwd(), file)}; review it with \`npm run review -- --stack ${stack}\` and \`npm run preview\`, then deploy`);
            return EXIT.ok;
        }
    }
}

/**
 * Serves the agent's dashboard on 127.0.0.1: each connection becomes a `docker exec` pipe to the gateway on the
 * container's loopback, so it works for any Docker host the CLI reaches (local socket or ssh://) and the agent
 * network needs no route from the host.
 */
async function forwardDashboard(env: NodeJS.ProcessEnv, stack: string, command: Extract<Command, { name: "dashboard" }>): Promise<number> {
    const agent = findAgent(env, stack, command.agent);
    if (agent.state !== "running") throw new BridgeError(`agent '${command.agent}' is ${agent.state}, not running`, EXIT.notRunning);
    const port = command.port ?? agent.dashboardPort;
    if (port === null) throw new BridgeError(`agent '${command.agent}' has no dashboard port label; give one with --port`, EXIT.usage);
    const sockets = new Set<net.Socket>();
    const server = net.createServer((socket) => {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        const pipe = spawn("docker", ["exec", "-i", agent.container, ...DASHBOARD_PIPE], { env, stdio: ["pipe", "pipe", "ignore"] });
        socket.pipe(pipe.stdin);
        pipe.stdout.pipe(socket);
        socket.on("error", () => pipe.kill());
        socket.on("close", () => pipe.kill());
        pipe.on("exit", () => socket.destroy());
    });
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", resolve));
    // Behind the Ingress the dashboard lives under its base path, and the token is the gateway's local password.
    const read = docker(env, ["exec", agent.container, "node", "-e", `const g=require(process.env.OPENCLAW_CONFIG_PATH).gateway;process.stdout.write(JSON.stringify({basePath:g.controlUi?.basePath??"",secret:g.auth.token??g.auth.password}))`]);
    if (read.status !== 0) throw new BridgeError(`could not read the agent's gateway config: ${read.stderr.trim()}`, EXIT.commandFailed);
    const gateway = JSON.parse(read.stdout) as { basePath: string; secret: string };
    let url = `http://127.0.0.1:${port}${gateway.basePath}/`;
    if (command.withToken) url += `#token=${gateway.secret}`;
    console.log(`dashboard of '${command.agent}' at ${url} (Ctrl-C to stop)`);
    if (!command.withToken) console.log("sign in with the agent's gateway token (shown by --with-token, or `pulumi stack output --show-secrets`)");
    await new Promise<void>((resolve) => {
        for (const signal of ["SIGINT", "SIGTERM"] as const) {
            process.once(signal, () => {
                server.close(() => resolve());
                for (const socket of sockets) socket.destroy();
            });
        }
    });
    return EXIT.ok;
}

try {
    process.exitCode = await run(parseArgs(process.argv.slice(2)));
} catch (caught) {
    const error = caught instanceof ConfigError ? new BridgeError(caught.message, EXIT.config) : caught;
    if (!(error instanceof BridgeError)) throw error;
    const json = process.argv.includes("--json");
    if (json) console.log(JSON.stringify({ error: error.message, exitCode: error.exitCode }));
    else console.error(`error: ${error.message}${error.exitCode === EXIT.usage ? `\n\n${USAGE}` : ""}`);
    process.exitCode = error.exitCode;
}
