// The service images, built from their Dockerfiles on a locally assembled Node 24 base, run hardened.
// Host networking keeps every packet on loopback: the mock upstream listens there.
import dgram from "node:dgram";
import { once } from "node:events";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { credentialDigest } from "../proxy-image/src/policy";
import { buildImage, buildLocalNodeBase } from "../scripts/images.mts";
import { docker, dockerWithInput, removeContainers, requireDocker } from "./support/docker";
import { ANTHROPIC_BODY, REAL_KEYS, TOKENS, anthropicHeaders, send } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { freePort, waitUntil } from "./support/processes";
import { testPki } from "./support/tls";

const hasDocker = requireDocker();
const TAG = "openclaw-key-proxy:test";
const NAME = "openclaw-test-key-proxy-image";
const HARDENED = ["--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--user", "1000:1000", "--memory", "256m", "--pids-limit", "64"];
let base: string;

describe.skipIf(!hasDocker)("the KeyProxy image", () => {
    const upstream = new MockUpstream();
    let port: number;
    let adminPort: number;

    beforeAll(async () => {
        await upstream.start();
        removeContainers(NAME);
        base = buildLocalNodeBase();
        await buildImage("keyProxy", base, TAG);
        [port, adminPort] = [await freePort(), await freePort()];
        const config = {
            listen: { host: "127.0.0.1", port },
            admin: [{ host: "127.0.0.1", port: adminPort }],
            upstreams: { anthropic: { baseUrl: upstream.baseUrl }, openai: { baseUrl: upstream.baseUrl } },
            extraCaFile: "/etc/keyproxy-ca/ca.pem",
        };
        docker(
            "run", "-d", "--name", NAME, ...HARDENED,
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
            .poll(async () => (await send(port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status, { timeout: 10_000, interval: 200 })
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

describe.skipIf(!hasDocker)("the EgressGateway image", () => {
    const EGRESS_TAG = "openclaw-egress-gateway:test";
    const EGRESS_NAME = "openclaw-test-egress-image";
    let port: number;
    let dnsPort: number;

    beforeAll(async () => {
        removeContainers(EGRESS_NAME);
        await buildImage("egressGateway", base ?? buildLocalNodeBase(), EGRESS_TAG);
        [port, dnsPort] = [await freePort(), await freePort()];
        const config = { listen: { host: "127.0.0.1", port }, dns: { host: "127.0.0.1", port: dnsPort }, admin: [{ host: "127.0.0.1", port: await freePort() }] };
        docker("run", "-d", "--name", EGRESS_NAME, ...HARDENED, "--tmpfs", "/var/lib/egress:rw,noexec,nosuid,size=1m,uid=1000,gid=1000", "-e", `EGRESS_CONFIG=${JSON.stringify(config)}`, EGRESS_TAG);
        await waitUntil(() => docker("logs", EGRESS_NAME).includes('"event":"listening"'), "the gateway to listen");
    }, 180_000);

    afterAll(() => removeContainers(EGRESS_NAME));

    it("runs as 1000:1000 with a read-only root, healthy by its own command", () => {
        const inspect = JSON.parse(docker("inspect", EGRESS_NAME))[0];
        expect(inspect.Config.User).toBe("1000:1000");
        expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
        expect(() => docker("exec", EGRESS_NAME, "/nodejs/bin/node", "/app/egress.cjs", "healthcheck")).not.toThrow();
    });

    it("registers an agent through `docker exec register` and denies what its allowlist does not hold", async () => {
        const entry = { name: "bart", subnet: "127.0.0.0/8", mode: "enforce", allow: [{ host: "allowed.example", ports: [443] }] };
        dockerWithInput(JSON.stringify(entry), "exec", "-i", EGRESS_NAME, "/nodejs/bin/node", "/app/egress.cjs", "register");
        await waitUntil(() => docker("logs", EGRESS_NAME).includes('"agents":"bart"'), "the registry reload");
        const answer = await new Promise<string>((resolve) => {
            const socket = connect(port, "127.0.0.1", () => socket.write("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"));
            let out = "";
            socket.on("data", (c) => (out += c));
            socket.on("close", () => resolve(out));
        });
        expect(answer).toMatch(/^HTTP\/1\.1 403/);
        expect(answer).toContain("not_allowlisted");
    });

    it("answers DNS queries with REFUSED and logs them", async () => {
        const socket = dgram.createSocket("udp4");
        const query = Buffer.concat([Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([5]), Buffer.from("exfil"), Buffer.from([4]), Buffer.from("test"), Buffer.from([0, 0, 1, 0, 1])]);
        socket.send(query, dnsPort, "127.0.0.1");
        const [answer] = (await once(socket, "message")) as [Buffer];
        socket.close();
        expect(answer.readUInt16BE(0)).toBe(0xabcd);
        expect(answer.readUInt16BE(2) & 0xf).toBe(5);
        await waitUntil(() => docker("logs", EGRESS_NAME).includes('"name":"exfil.test"'), "the DNS log line");
    });
});
