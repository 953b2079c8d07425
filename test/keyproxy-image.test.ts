// The KeyProxy image, built from its Dockerfile on a locally assembled Node 24 base, run hardened.
// Host networking keeps every packet on loopback: the mock upstream listens there.
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { credentialDigest } from "../proxy-image/src/policy";
import { buildImage, buildLocalNodeBase } from "../scripts/images.mts";
import { docker, dockerWithInput, removeContainers, requireDocker } from "./support/docker";
import { REAL_KEYS, TOKENS, anthropicHeaders, send } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { waitUntil } from "./support/processes";
import { testPki } from "./support/tls";

const hasDocker = requireDocker();
const TAG = "openclaw-key-proxy:test";
const NAME = "openclaw-test-key-proxy-image";

function freePort(): Promise<number> {
    return new Promise((resolve) => {
        const server = createServer().listen(0, "127.0.0.1", () => {
            const { port } = server.address() as { port: number };
            server.close(() => resolve(port));
        });
    });
}

describe.skipIf(!hasDocker)("the KeyProxy image", () => {
    const upstream = new MockUpstream();
    let port: number;
    let adminPort: number;

    beforeAll(async () => {
        await upstream.start();
        removeContainers(NAME);
        await buildImage("keyProxy", buildLocalNodeBase(), TAG);
        [port, adminPort] = [await freePort(), await freePort()];
        const config = {
            listen: { host: "127.0.0.1", port },
            admin: [{ host: "127.0.0.1", port: adminPort }],
            upstreams: { anthropic: { baseUrl: upstream.baseUrl }, openai: { baseUrl: upstream.baseUrl } },
            extraCaFile: "/etc/keyproxy-ca/ca.pem",
        };
        docker(
            "run", "-d", "--name", NAME, "--network", "host",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "--user", "1000:1000", "--memory", "256m", "--pids-limit", "64",
            "--tmpfs", "/var/lib/keyproxy:rw,noexec,nosuid,size=1m,uid=1000,gid=1000",
            "-v", `${testPki().dir}:/etc/keyproxy-ca:ro`,
            "-e", `KEYPROXY_CONFIG=${JSON.stringify(config)}`,
            "-e", `KEYPROXY_KEY_ANTHROPIC=${REAL_KEYS.anthropic}`,
            "-e", `KEYPROXY_KEY_OPENAI=${REAL_KEYS.openai}`,
            TAG,
        );
        await waitUntil(() => docker("logs", NAME).includes('"event":"listening"'), "the proxy to listen");
    }, 180_000);

    afterAll(async () => {
        removeContainers(NAME);
        await upstream.stop();
    });

    it("runs as 1000:1000 with a read-only root and no shell", () => {
        const inspect = JSON.parse(docker("inspect", NAME))[0];
        expect(inspect.Config.User).toBe("1000:1000");
        expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
        expect(() => docker("exec", NAME, "/bin/sh", "-c", "true")).toThrow();
    });

    it("reports healthy through its own healthcheck command", () => {
        expect(() => docker("exec", NAME, "/nodejs/bin/node", "/app/keyproxy.cjs", "healthcheck")).not.toThrow();
    });

    it("takes an agent through `docker exec register` and forwards its request with the real key", async () => {
        const entry = { name: "bart", credentialSha256: credentialDigest(TOKENS.bart), subnet: "127.0.0.0/8" };
        dockerWithInput(JSON.stringify(entry), "exec", "-i", NAME, "/nodejs/bin/node", "/app/keyproxy.cjs", "register");
        await expect
            .poll(async () => (await send(port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: "{}" })).status, { timeout: 10_000, interval: 200 })
            .toBe(200);
        expect(upstream.received.at(-1)?.headers["x-api-key"]).toBe(REAL_KEYS.anthropic);
    });

    it("never prints a key or token in its logs", () => {
        const logs = docker("logs", NAME);
        expect(logs).toContain('"event":"request"');
        for (const secret of [...Object.values(REAL_KEYS), ...Object.values(TOKENS)]) expect(logs).not.toContain(secret);
    });

    it("drains on docker stop and exits 0", () => {
        docker("stop", "-t", "20", NAME);
        expect(JSON.parse(docker("inspect", NAME))[0].State.ExitCode).toBe(0);
        expect(docker("logs", NAME)).toContain('"event":"drained"');
    });
});
