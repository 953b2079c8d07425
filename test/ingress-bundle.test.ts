// The bundled Ingress as its image runs it: one file (RE2's WebAssembly beside it), its certificate and key from
// the environment, agents and users registered live through its command line, and its audit stream on the volume.
import { execFileSync, spawnSync } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeServer } from "../runtime/admin";
import { verifyDirectory } from "../runtime/audit";
import { tokenDigest } from "../ingress-image/src/policy";
import { bundle } from "../scripts/images.mts";
import { type RunningProcess, startProcess } from "./support/processes";
import { tempDir } from "./support/tempDirs";
import { testPki } from "./support/tls";

const TOKEN = "oci_bundleBundleBundleBundleBundleBundleBundle12";
const dataDir = tempDir("ingress-bundle");
const pki = testPki();
const client = new Agent({ connect: { ca: pki.ca } });
const gateway = http.createServer((req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ authorization: req.headers.authorization, user: req.headers["x-forwarded-user"] })));
let bundleFile: string;
let ingress: RunningProcess;
let port: number;

const env = () => ({
    PATH: process.env.PATH,
    INGRESS_CONFIG: JSON.stringify({ listen: { host: "127.0.0.1", port: 0 }, admin: [{ host: "127.0.0.1", port: 0 }], dataDir }),
    INGRESS_TLS_CERT_PEM: pki.cert,
    INGRESS_TLS_KEY_PEM: pki.key,
});
const cli = (args: string[], input = "") => execFileSync(process.execPath, [bundleFile, ...args], { input, env: env(), encoding: "utf8" });
const status = async () => (await fetch(`https://127.0.0.1:${port}/agents/bart/v1/models`, { dispatcher: client, headers: { authorization: `Bearer ${TOKEN}` } })).status;

beforeAll(async () => {
    gateway.listen(0, "127.0.0.1");
    await once(gateway, "listening");
    bundleFile = await bundle("ingress");
    ingress = startProcess(process.execPath, [bundleFile, "serve"], env());
    port = (await ingress.waitFor("listening")).port;
});
afterAll(async () => {
    await ingress?.stop();
    await client.destroy();
    await closeServer(gateway);
});

describe("the bundled Ingress", () => {
    it("takes agents and users registered through its command line, and drops a user unregistered, live", async () => {
        cli(["register"], JSON.stringify({ name: "bart", gateway: { host: "127.0.0.1", port: (gateway.address() as AddressInfo).port } }));
        expect(await status()).toBe(401);
        cli(["register-user"], JSON.stringify({ name: "ann", tokenSha256: tokenDigest(TOKEN), agents: ["bart"] }));
        await expect.poll(status, { timeout: 5_000 }).toBe(200);
        const answer = await fetch(`https://127.0.0.1:${port}/agents/bart/v1/models`, { dispatcher: client, headers: { authorization: `Bearer ${TOKEN}` } });
        expect(await answer.json()).toEqual({ user: "ann" });
        cli(["unregister-user", "ann"]);
        await expect.poll(status, { timeout: 5_000 }).toBe(401);
    });

    it("refuses a user entry that carries anything but the token's digest", () => {
        const result = spawnSync(process.execPath, [bundleFile, "register-user"], { input: JSON.stringify({ name: "ann", token: TOKEN, agents: ["bart"] }), env: env(), encoding: "utf8" });
        expect(result.status).toBe(1);
        expect(JSON.parse(result.stdout)).toMatchObject({ event: "fatal", error: expect.stringContaining("token") });
        expect(result.stdout + result.stderr).not.toContain(TOKEN);
    });

    it("reports healthy, and leaves an audit stream that verifies and holds no token, after a clean stop", async () => {
        for (const authorization of [undefined, `Bearer ${TOKEN}x`]) {
            const refused = await fetch(`https://127.0.0.1:${port}/agents/bart/`, { dispatcher: client, headers: authorization ? { authorization } : {} });
            expect(refused.status).toBe(401);
        }
        expect(spawnSync(process.execPath, [bundleFile, "healthcheck"], { env: { ...env(), INGRESS_CONFIG: JSON.stringify({ admin: [{ host: "127.0.0.1", port: Number((await ingress.waitFor("listening")).admin) }], dataDir }) } }).status).toBe(0);
        await ingress.stop();
        const [stream] = verifyDirectory(path.join(dataDir, "audit"));
        expect(stream.verdict).toMatchObject({ ok: true });
        expect(stream.verdict.lines).toBeGreaterThanOrEqual(2);
        for (const line of ingress.lines) for (const secret of [TOKEN, pki.key.split("\n")[1]]) expect(line).not.toContain(secret);
    });
});
