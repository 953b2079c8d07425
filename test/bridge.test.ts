import { spawnSync } from "node:child_process";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseStackConfig } from "../infra/config";
import { OPENCLAW_AGENT_COMMAND, OPENCLAW_IMAGE } from "../infra/openclaw";
import { BridgeError, EXIT, addAgentToStackFile, agentArgv, agentFailure, agentsFromInspect, budgetsFromMetrics, parseAgentOutput, parseArgs } from "../scripts/bridgeCore";
import { REPO_ROOT, devConfig } from "./support/mockStack";
import { tempDir } from "./support/tempDirs";

describe("parseArgs", () => {
    it.each<[string[], object]>([
        [["send", "bart", "fix the tests"], { stack: "dev", json: false, command: { name: "send", agent: "bart", task: "fix the tests", timeoutSeconds: 300, exec: "node openclaw.mjs agent --agent main -m {task} --json" } }],
        [["--stack", "prod", "--json", "send", "lisa", "x", "--timeout", "20"], { stack: "prod", json: true, command: { name: "send", agent: "lisa", task: "x", timeoutSeconds: 20 } }],
        [["list"], { command: { name: "list" } }],
        [["logs", "bart", "-f"], { command: { name: "logs", agent: "bart", follow: true } }],
        [["logs", "bart"], { command: { name: "logs", agent: "bart", follow: false } }],
        [["dashboard", "bart"], { stack: "dev", json: false, command: { name: "dashboard", agent: "bart", port: undefined, withToken: false } }],
        [["--stack", "prod", "dashboard", "lisa", "--port", "28801", "--with-token"], { stack: "prod", command: { name: "dashboard", agent: "lisa", port: 28801, withToken: true } }],
        [["add", "homer", "--port", "18810", "--daily-usd", "2"], { command: { name: "add", agent: "homer", port: 18810, dailyUsd: 2 } }],
        [["--help"], { command: { name: "help" } }],
    ])("%j", (argv, expected) => expect(parseArgs(argv)).toMatchObject(expected));

    it.each<[string[], RegExp]>([
        [[], /no command given/],
        [["deploy"], /unknown command 'deploy'/],
        [["send"], /send needs an agent name/],
        [["send", "bart"], /send needs a task/],
        [["send", "bart", "a", "b"], /one task: quote it/],
        [["send", "Bart", "x"], /not an agent name/],
        [["send", "bart", "x", "--timeout", "0"], /--timeout must be a number of at least 1/],
        [["send", "bart", "x", "--exec", "openclaw run"], /must contain \{task\}/],
        [["logs"], /logs needs an agent name/],
        [["dashboard"], /dashboard needs an agent name/],
        [["dashboard", "Bart"], /not an agent name/],
        [["dashboard", "bart", "--port", "80"], /--port must be a number of at least 1024/],
        [["dashboard", "bart", "--port", "x"], /--port must be a number/],
        [["dashboard", "bart", "--port"], /--port needs a value/],
        [["dashboard", "bart", "--token"], /unknown option --token/],
        [["list", "extra"], /list takes no arguments/],
        [["add", "x_y"], /not an agent name/],
        [["add", "homer", "--port", "80"], /--port must be a number of at least 1024/],
        [["--stack"], /--stack needs a value/],
        [["--stack", "../etc", "list"], /not a stack name/],
        [["--frob", "list"], /unknown option --frob/],
    ])("refuses %j", (argv, message) => {
        try {
            parseArgs(argv);
            throw new Error("accepted");
        } catch (error) {
            expect(error).toBeInstanceOf(BridgeError);
            expect((error as BridgeError).exitCode).toBe(EXIT.usage);
            expect((error as Error).message).toMatch(message);
        }
    });
});

describe("the agent command and its output", () => {
    it("runs the pinned release's agent through its gateway by default", () => {
        expect(parseArgs(["send", "bart", "x"]).command).toMatchObject({ exec: OPENCLAW_AGENT_COMMAND });
        expect(agentArgv(OPENCLAW_AGENT_COMMAND, "x")).toEqual(["node", "openclaw.mjs", "agent", "--agent", "main", "-m", "x", "--json"]);
    });

    it("passes the task as one argument, whatever it holds", () => {
        expect(agentArgv("openclaw agent --local -m {task} --json", "rm -rf / ; echo $HOME")).toEqual(["openclaw", "agent", "--local", "-m", "rm -rf / ; echo $HOME", "--json"]);
    });

    it.each([
        ['{"reply":"ok"}', { reply: "ok" }],
        ['working...\n{"reply":"ok"}\n', { reply: "ok" }],
        ["[1,2]", [1, 2]],
    ])("parses %j", (stdout, expected) => expect(parseAgentOutput(stdout)).toEqual(expected));

    it.each(["", "thinking very hard", "ok\n42\n"])("refuses %j as not JSON", (stdout) => {
        expect(() => parseAgentOutput(stdout)).toThrow(expect.objectContaining({ exitCode: EXIT.notJson }));
    });

    it("reads agents, their health and dashboards from docker inspect", () => {
        expect(
            agentsFromInspect([
                { Name: "/openclaw-dev-agent-lisa", Config: { Labels: { "openclaw.agent": "lisa", "openclaw.dashboard-port": "18802" } }, State: { Status: "exited" } },
                { Name: "/openclaw-dev-agent-bart", Config: { Labels: { "openclaw.agent": "bart", "openclaw.dashboard-port": "18801" } }, State: { Status: "running", Health: { Status: "healthy" } } },
                { Name: "/openclaw-dev-agent-homer", Config: { Labels: { "openclaw.agent": "homer" } }, State: { Status: "running" } },
                { Name: "/stray", Config: { Labels: {} }, State: { Status: "running" } },
            ]),
        ).toEqual([
            { agent: "bart", container: "openclaw-dev-agent-bart", state: "running", health: "healthy", dashboardPort: 18801, dashboardUrl: "http://127.0.0.1:18801/" },
            { agent: "homer", container: "openclaw-dev-agent-homer", state: "running", health: "none", dashboardPort: null, dashboardUrl: null },
            { agent: "lisa", container: "openclaw-dev-agent-lisa", state: "exited", health: "none", dashboardPort: 18802, dashboardUrl: "http://127.0.0.1:18802/" },
        ]);
    });

    it.each(["", "0", "-1", "18801.5", "abc", "18801/tcp"])("reads no dashboard port from the label %j", (label) => {
        const [agent] = agentsFromInspect([{ Name: "/a", Config: { Labels: { "openclaw.agent": "a", "openclaw.dashboard-port": label } }, State: { Status: "running" } }]);
        expect(agent).toMatchObject({ dashboardPort: null, dashboardUrl: null });
    });

    it("reads budget used from KeyProxy's metrics", () => {
        const text = 'keyproxy_budget_limit_usd{agent="bart",window="day"} 5\nkeyproxy_budget_remaining_usd{agent="bart",window="day"} 4.25\nkeyproxy_budget_remaining_usd{agent="zed",window="day"} 1\n';
        expect(budgetsFromMetrics(text)).toEqual({ bart: { day: { limitUsd: 5, usedUsd: 0.75 } } });
    });
});

describe("agentFailure", () => {
    it.each<[string, number | null, string, string, string]>([
        ["OpenClaw's JSON error on stdout, over stderr's noise", 1, '{"ok":false,"error":{"message":"model not allowed"}}', "npm warn something", "model not allowed"],
        ["the error after progress lines", 1, 'starting\n{"ok":false,"error":{"message":"gateway closed"}}\n', "", "gateway closed"],
        ["an error given as a string", 2, '{"error":"boom"}', "", "boom"],
        ["stderr when stdout is not JSON", 126, "Segmentation fault", "OCI runtime exec failed", "OCI runtime exec failed"],
        ["stderr when the JSON names no error", 1, '{"ok":false}', "exited early", "exited early"],
        ["stderr when the error message is not text", 1, '{"error":{"message":42}}', "bad", "bad"],
        ["a placeholder when there is no output", null, "", "  ", "(no output)"],
    ])("says why from %s", (_case, status, stdout, stderr, reason) => {
        const error = agentFailure(status, stdout, stderr);
        expect(error).toBeInstanceOf(BridgeError);
        expect(error.exitCode).toBe(EXIT.commandFailed);
        expect(error.message).toBe(`the agent's command failed (exit ${status}): ${reason}`);
    });

    it("keeps at most 500 characters of the reason", () => {
        const message = agentFailure(1, JSON.stringify({ error: { message: "x".repeat(2000) } }), "").message;
        expect(message).toBe(`the agent's command failed (exit 1): ${"x".repeat(500)}`);
    });
});

describe("addAgentToStackFile", () => {
    const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");

    it("appends one entry, keeps the file's comments, picks the next dashboard port, and leaves the image to the pinned default", () => {
        const result = addAgentToStackFile(dev, "homer", { dailyUsd: 3 });
        expect(result.startsWith(dev.split("\n")[0])).toBe(true);
        const agents = parse(result).config["openclaw:agents"];
        expect(agents).toHaveLength(3);
        expect(agents[2]).toEqual({ name: "homer", dashboardPort: 18803, budget: { dailyUsd: 3 }, credentialEpoch: 1 });
        expect(parse(result).config["openclaw:agents"].slice(0, 2)).toEqual(parse(dev).config["openclaw:agents"]);
        const homer = parseStackConfig({ ...devConfig(), agents }).agents[2];
        expect(homer.image).toBe(OPENCLAW_IMAGE);
    });

    it("writes the image only when one is given", () => {
        const agents = parse(addAgentToStackFile(dev, "homer", { dailyUsd: 1, image: "ghcr.io/openclaw/openclaw:2026.11.1", port: 18900 })).config["openclaw:agents"];
        expect(agents[2]).toEqual({ name: "homer", image: "ghcr.io/openclaw/openclaw:2026.11.1", dashboardPort: 18900, budget: { dailyUsd: 1 }, credentialEpoch: 1 });
        expect(() => addAgentToStackFile(dev, "homer", { dailyUsd: 1, image: "ghcr.io/openclaw/openclaw:latest" })).toThrow(/agents\[2\]\.image: must be pinned/);
    });

    it("refuses a name already there, and a port the stack's checks reject", () => {
        expect(() => addAgentToStackFile(dev, "bart", { dailyUsd: 1 })).toThrow(/already in the stack file/);
        expect(() => addAgentToStackFile(dev, "homer", { dailyUsd: 1, port: 18801 })).toThrow(/host port 18801 is already used/);
    });
});

describe("npm run bridge against a Docker host without the stack", () => {
    /** Runs the CLI with a stub `docker` that knows no containers, and the stack files of `stackDir`. */
    function bridge(args: string[], env: Record<string, string> = {}, stackFile?: string) {
        const dir = tempDir("bridge");
        writeFileSync(path.join(dir, "docker"), '#!/bin/sh\n[ "$1" = ps ] && exit 0\necho "Error: No such container" >&2; exit 1\n');
        chmodSync(path.join(dir, "docker"), 0o755);
        if (stackFile !== undefined) writeFileSync(path.join(dir, "Pulumi.dev.yaml"), stackFile);
        const result = spawnSync(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), [path.join(REPO_ROOT, "scripts", "bridge.mts"), ...args], {
            encoding: "utf8",
            env: { PATH: `${dir}:${path.dirname(process.execPath)}:/usr/bin:/bin`, OPENCLAW_STACK_DIR: stackFile === undefined ? REPO_ROOT : dir, ...env },
            timeout: 30_000,
        });
        return { code: result.status, stdout: result.stdout, stderr: result.stderr };
    }

    it.each<[string, string[], Record<string, string>, RegExp]>([
        ["list, the local host", ["list"], {}, /no agents of stack dev on the local Docker host/],
        ["list, DOCKER_HOST", ["--stack", "prod", "list"], { DOCKER_HOST: "tcp://127.0.0.1:2375" }, /no agents of stack prod on tcp:\/\/127\.0\.0\.1:2375/],
    ])("%s: says what to check", (_case, args, env, where) => {
        const { code, stdout } = bridge(args, env);
        expect(code).toBe(EXIT.ok);
        expect(stdout).toMatch(where);
        for (const check of ["is the stack deployed? (npm run deploy", "DOCKER_HOST, or openclaw:dockerHost in Pulumi.", "is the stack name right? (--stack"]) expect(stdout).toContain(check);
    });

    it("send to an agent of a stack that is not there: the same checks, exit 3", () => {
        const { code, stderr } = bridge(["send", "bart", "hi"]);
        expect(code).toBe(EXIT.unknownAgent);
        expect(stderr).toMatch(/no agents of stack dev on the local Docker host\. Check:/);
    });

    it("uses the stack file's dockerHost, and names the file when it is broken", () => {
        expect(bridge(["list"], {}, "config:\n  openclaw:dockerHost: tcp://127.0.0.1:2376\n").stdout).toMatch(/on tcp:\/\/127\.0\.0\.1:2376/);
        const broken = bridge(["list"], {}, "config:\n  openclaw:dockerHost: [tcp://127.0.0.1:2376\n");
        expect(broken.code).toBe(EXIT.config);
        expect(broken.stderr).toMatch(/invalid config in \/.*Pulumi\.dev\.yaml:\n {2}- not valid YAML: .*line \d+, column \d+/);
    });
});
