// Runs the Pulumi CLI against this project with a local file backend and a passphrase it manages, so a
// fresh machine needs no Pulumi Cloud account. `up` first builds the service images (--skip-build to not).
// Before anything it checks the stack file, the Pulumi CLI, the docker CLI and the Docker host, each failing
// with one line that says what to do.
// Usage: npm run pulumi -- <up|preview|destroy|refresh> [--stack dev] [--skip-build] [pulumi args...]
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ConfigError, providerSecrets } from "../infra/config.ts";
import { readStackFile } from "./stackFile.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const STATE_DIR = path.join(ROOT, ".pulumi-state");

function fail(message: string, code = 1): never {
    console.error(`error: ${message}`);
    process.exit(code);
}

const [verb, ...rest] = process.argv.slice(2);
if (!verb || !["up", "preview", "destroy", "refresh"].includes(verb)) fail("usage: pulumi.mts <up|preview|destroy|refresh> [--stack NAME] [pulumi flags]", 2);
const stackIndex = rest.indexOf("--stack");
const stack = stackIndex >= 0 ? rest.splice(stackIndex, 2)[1] : "dev";
if (!stack || !/^[a-z0-9-]+$/.test(stack)) fail("--stack needs a name such as dev");
if (!existsSync(path.join(ROOT, `Pulumi.${stack}.yaml`))) fail(`no Pulumi.${stack}.yaml in ${ROOT}`);

let dockerHost: string | undefined;
let stackRaw: Record<string, unknown> = {};
try {
    // Read (and so checked) even when DOCKER_HOST overrides its dockerHost.
    stackRaw = readStackFile(stack).raw;
    dockerHost = process.env.DOCKER_HOST ?? (typeof stackRaw.dockerHost === "string" ? stackRaw.dockerHost : undefined);
} catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
}

const lastLine = (text: string) => text.trim().split("\n").pop() ?? "";

/**
 * The Pulumi CLI: one installed on PATH, else the npm package `pulumi` (a dependency), which fetches the CLI of
 * its own version into ~/.pulumi/versions on first use.
 */
function pulumiCli(): string {
    const bin = path.join(ROOT, "node_modules", ".bin");
    for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
        if (!dir || path.resolve(dir) === bin) continue;
        try {
            accessSync(path.join(dir, "pulumi"), constants.X_OK);
            return path.join(dir, "pulumi");
        } catch {
            // not here
        }
    }
    return path.join(bin, "pulumi");
}
const PULUMI = pulumiCli();
const version = spawnSync(PULUMI, ["version"], { encoding: "utf8" });
if (version.status !== 0) {
    const why = version.error ? version.error.message : lastLine(version.stderr) || `exit ${version.status}`;
    fail(`the Pulumi CLI could not be started or fetched (${why}): with internet access \`npm ci\` and this command fetch it; otherwise install it (https://www.pulumi.com/docs/iac/download-install/) and put it on PATH`, 127);
}

// The Docker host: the program's resources, the pids-limit commands and the image build all use it.
const dockerEnv = { ...process.env, ...(dockerHost ? { DOCKER_HOST: dockerHost } : {}) };
const engine = spawnSync("docker", ["version", "--format", "{{.Server.Version}}"], { env: dockerEnv, encoding: "utf8", timeout: 30_000 });
if ((engine.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") fail("the docker CLI is not on PATH: install it (Debian: apt-get install docker.io), then run this again", 127);
if (engine.status !== 0) {
    const source = process.env.DOCKER_HOST ? "DOCKER_HOST" : dockerHost ? `openclaw:dockerHost in Pulumi.${stack}.yaml` : "the default";
    fail(`no Docker Engine answers at ${dockerHost ?? "the local socket"} (from ${source}; docker version: ${lastLine(engine.stderr) || engine.error?.message}): start it, or point DOCKER_HOST or openclaw:dockerHost at the stack's host`);
}

mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
const env: NodeJS.ProcessEnv = { ...dockerEnv, PULUMI_SKIP_UPDATE_CHECK: "true" };
env.PULUMI_BACKEND_URL ??= `file://${STATE_DIR}`;
if (!env.PULUMI_CONFIG_PASSPHRASE && !env.PULUMI_CONFIG_PASSPHRASE_FILE) {
    const file = path.join(STATE_DIR, `${stack}.passphrase`);
    if (!existsSync(file)) {
        writeFileSync(file, randomBytes(32).toString("base64url"), { mode: 0o600 });
        console.log(`created ${path.relative(ROOT, file)}: it decrypts this stack's secrets; back it up with the state`);
    }
    env.PULUMI_CONFIG_PASSPHRASE_FILE = file;
}

function pulumi(args: string[], input?: string) {
    return spawnSync(PULUMI, [...args, "--cwd", ROOT], { env, input, stdio: [input === undefined ? "inherit" : "pipe", "inherit", "inherit"] });
}

if (pulumi(["stack", "select", stack, "--create", "--secrets-provider", "passphrase"]).status !== 0) fail(`could not select or create stack ${stack}`);

// Real keys go in as encrypted stack secrets, read from the environment and passed on stdin (never argv).
// Each provider's secret (anthropicApiKey, ... and one per OpenAI-compatible endpoint) from its variable (ANTHROPIC_API_KEY, ...).
for (const { secretKey: key, env: variable } of providerSecrets(stackRaw)) {
    const present = spawnSync(PULUMI, ["config", "get", key, "--stack", stack, "--cwd", ROOT], { env, stdio: "ignore" }).status === 0;
    const value = process.env[variable];
    if (!present && value) {
        if (pulumi(["config", "set", "--secret", key, "--stack", stack], value).status !== 0) fail(`could not store ${key}`);
        console.log(`stored ${key} from ${variable} as an encrypted secret of stack ${stack}`);
    }
}

// The service images are built where the stack's Docker host can use them (DOCKER_HOST, as for every command here).
const skipBuild = rest.indexOf("--skip-build");
if (skipBuild >= 0) rest.splice(skipBuild, 1);
else if (verb === "up") {
    const build = spawnSync(process.execPath, [path.join(ROOT, "scripts", "images.mts"), "build"], { env, stdio: "inherit" });
    if (build.status !== 0) fail("building the service images failed (see above); --skip-build deploys with images already present");
}

const result = pulumi([verb, "--stack", stack, ...rest]);
process.exit(result.status ?? 1);
