// Port identity (Kubernetes) over real loopback sockets: each agent registered by port gets a listener of its own on
// KeyProxy and on EgressGateway, and the port a connection arrived on, not its source or anything it sends, names
// its agent. Registry ports cannot be 0, so free ones are found by binding port 0 briefly.
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { egressConfigSchema } from "../egress-image/src/config";
import type { EgressAgent } from "../egress-image/src/policy";
import { EgressGateway, type EgressDeps, dialAddress } from "../egress-image/src/server";
import { type AgentEntry, credentialDigest } from "../proxy-image/src/policy";
import { jsonLogger } from "../runtime/log";
import { ANTHROPIC_BODY, type RunningProxy, TOKENS, anthropicHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { freePort } from "./support/processes";
import { tempDir } from "./support/tempDirs";

/** Opens a connection, sends `text`, and resolves once `ready` matches what came back; `closed` settles when the peer ends it. */
async function openConnection(port: number, text: string, ready: RegExp) {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    const closed = new Promise((resolve) => socket.once("close", resolve));
    let received = "";
    await once(socket, "connect");
    socket.write(text);
    await new Promise<void>((resolve, reject) => {
        socket.on("data", (chunk: Buffer) => {
            received += chunk.toString("latin1");
            if (ready.test(received)) resolve();
        });
        socket.once("close", () => reject(new Error(`closed before ${ready}: ${JSON.stringify(received)}`)));
    });
    return { socket, closed, received: () => received };
}

/** Whether anything accepts a connection on the port now. */
function accepts(port: number): Promise<boolean> {
    return new Promise((resolve) => {
        const socket = net.connect(port, "127.0.0.1");
        socket.once("connect", () => {
            socket.destroy();
            resolve(true);
        });
        socket.once("error", () => resolve(false));
    });
}

const parsed = (logs: string[]) => logs.map((line) => JSON.parse(line) as Record<string, unknown>);

describe("KeyProxy", () => {
    const upstream = new MockUpstream();
    let proxy: RunningProxy;
    let bartPort: number;
    let lisaPort: number;
    const entry = (name: "bart" | "lisa", port: number): AgentEntry => ({ name, credentialSha256: credentialDigest(TOKENS[name]), port });
    const ask = (port: number, token: string) => send(port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(token), body: ANTHROPIC_BODY });

    beforeAll(async () => {
        await upstream.start();
        proxy = await startKeyProxy(upstream);
        [bartPort, lisaPort] = [await freePort(), await freePort()];
        await proxy.server.setAgents([entry("bart", bartPort), entry("lisa", lisaPort)]);
    });
    afterAll(async () => {
        await proxy.server.close();
        await upstream.stop();
    });

    it("accepts each agent's credential on its own port", async () => {
        expect((await ask(bartPort, TOKENS.bart)).status).toBe(200);
        expect((await ask(lisaPort, TOKENS.lisa)).status).toBe(200);
    });

    it.each([
        ["bart's credential on lisa's port", () => lisaPort, TOKENS.bart],
        ["lisa's credential on bart's port", () => bartPort, TOKENS.lisa],
        ["bart's credential on the main listener, from loopback", () => proxy.port, TOKENS.bart],
    ])("refuses %s with 401, echoing nothing", async (_case, port, token) => {
        const before = upstream.received.length;
        const res = await ask(port(), token);
        expect(res.status).toBe(401);
        expect(JSON.parse(res.body)).toEqual({ type: "error", error: { type: "authentication_error", message: "invalid credential" } });
        expect(JSON.stringify(res)).not.toContain("ocp_");
        expect(upstream.received.length).toBe(before);
        expect(parsed(proxy.logs).at(-1)).toMatchObject({ event: "request", status: 401, reason: "wrong_port" });
    });

    it("closes a removed agent's listener and ends its open connections, leaving the other agent's", async () => {
        const lisaPort2 = await freePort();
        await proxy.server.setAgents([entry("bart", bartPort), entry("lisa", lisaPort2)]);
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        upstream.handler = async (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            res.write("event: ping\ndata: {}\n\n");
            await held;
            res.end();
        };
        try {
            const body = ANTHROPIC_BODY;
            const head = Object.entries({ ...anthropicHeaders(TOKENS.lisa), host: "key-proxy", "content-length": String(Buffer.byteLength(body)) })
                .map(([k, v]) => `${k}: ${v}\r\n`)
                .join("");
            const stream = await openConnection(lisaPort2, `POST /anthropic/v1/messages HTTP/1.1\r\n${head}\r\n${body}`, /^HTTP\/1.1 200 /);
            await proxy.server.setAgents([entry("bart", bartPort)]);
            await stream.closed;
            release();
            upstream.handler = undefined;
            expect(await accepts(lisaPort2)).toBe(false);
            expect(await accepts(lisaPort)).toBe(false);
            expect((await ask(bartPort, TOKENS.bart)).status).toBe(200);
            expect(parsed(proxy.logs)).toContainEqual(expect.objectContaining({ event: "agent_listener_closed", agent: "lisa", port: lisaPort2, connections_ended: 1 }));
        } finally {
            release();
            upstream.handler = undefined;
        }
    });

    it("logs a port it cannot bind and refuses that agent (fails closed)", async () => {
        const holder = net.createServer().listen(0, "127.0.0.1");
        await once(holder, "listening");
        const taken = (holder.address() as net.AddressInfo).port;
        try {
            await proxy.server.setAgents([entry("bart", bartPort), entry("lisa", taken)]);
            expect(parsed(proxy.logs)).toContainEqual(expect.objectContaining({ event: "agent_listener_failed", agent: "lisa", port: taken, error: "EADDRINUSE" }));
            expect((await ask(proxy.port, TOKENS.lisa)).status).toBe(401);
            expect((await ask(bartPort, TOKENS.lisa)).status).toBe(401);
        } finally {
            await proxy.server.setAgents([entry("bart", bartPort)]);
            await new Promise((resolve) => holder.close(resolve));
        }
    });
});

describe("EgressGateway", () => {
    const PUBLIC = "93.184.216.34";
    let echo: net.Server;
    let echoPort: number;
    let gateway: EgressGateway;
    let mainPort: number;
    let dnsPort: number;
    let bartPort: number;
    let lisaPort: number;
    const logs: string[] = [];
    /** Names resolve to a public address; every dial lands on a local echo server, so nothing leaves this machine. */
    const deps: EgressDeps = {
        resolve: async () => [PUBLIC],
        dial: (_address, _port, timeoutMs) => dialAddress("127.0.0.2", echoPort, timeoutMs),
        ownAddresses: () => [],
    };
    const bart = (port: number): EgressAgent => ({ name: "bart", port, mode: "enforce", allow: [{ host: "bart.test", ports: [443] }] });
    const lisa = (port: number): EgressAgent => ({ name: "lisa", port, mode: "enforce", allow: [{ host: "lisa.test", ports: [443] }] });
    const connect = (port: number, host: string) => openConnection(port, `CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`, /\r\n\r\n/);
    const status = async (port: number, host: string) => {
        const c = await connect(port, host);
        c.socket.destroy();
        return Number(c.received().split(" ")[1]);
    };

    beforeAll(async () => {
        echo = net.createServer((socket) => socket.pipe(socket)).listen(0, "127.0.0.2");
        await once(echo, "listening");
        echoPort = (echo.address() as net.AddressInfo).port;
        const config = egressConfigSchema.parse({ listen: { host: "127.0.0.1", port: 0 }, dns: { host: "127.0.0.1", port: 0 }, admin: [{ host: "127.0.0.1", port: 0 }], auditDir: tempDir("egress-audit") });
        gateway = new EgressGateway(config, jsonLogger("egress-gateway", (l) => logs.push(l)), deps);
        ({ port: mainPort, dnsPort } = await gateway.listen());
        [bartPort, lisaPort] = [await freePort(), await freePort()];
        await gateway.setAgents([bart(bartPort), lisa(lisaPort)]);
    });
    afterAll(async () => {
        await gateway.close();
        await new Promise((resolve) => echo.close(resolve));
    });

    it.each([
        ["bart's port, bart's host: allowed", () => bartPort, "bart.test", 200, "bart"],
        ["lisa's port, lisa's host: allowed", () => lisaPort, "lisa.test", 200, "lisa"],
        ["lisa's port, bart's host: lisa's allowlist decides", () => lisaPort, "bart.test", 403, "lisa"],
        ["bart's port, lisa's host", () => bartPort, "lisa.test", 403, "bart"],
        ["the main listener from loopback: no subnet agent", () => mainPort, "bart.test", 403, "unknown"],
    ])("CONNECT on %s", async (_case, port, host, expected, agent) => {
        expect(await status(port(), host)).toBe(expected);
        expect(parsed(logs).filter((l) => l.event === "decision").at(-1)).toMatchObject({ agent, decision: expected === 200 ? "allow" : "deny" });
    });

    it("tunnels bytes on an agent's port", async () => {
        const tunnel = await connect(bartPort, "bart.test");
        tunnel.socket.write("ping");
        await expect.poll(() => tunnel.received().endsWith("ping")).toBe(true);
        tunnel.socket.destroy();
    });

    it("closes a removed agent's listener and ends her open tunnels, leaving the other agent's", async () => {
        const tunnel = await connect(lisaPort, "lisa.test");
        expect(tunnel.received()).toMatch(/^HTTP\/1.1 200 /);
        await gateway.setAgents([bart(bartPort)]);
        await tunnel.closed;
        expect(await accepts(lisaPort)).toBe(false);
        expect(await status(bartPort, "bart.test")).toBe(200);
        expect(parsed(logs)).toContainEqual(expect.objectContaining({ event: "agent_listener_closed", agent: "lisa", port: lisaPort, connections_ended: 1 }));
    });

    it("the DNS sink logs the querying pod's address when it is in no agent's subnet", async () => {
        const query = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 4, ...Buffer.from("leak"), 4, ...Buffer.from("test"), 0, 0, 1, 0, 1]);
        const client = dgram.createSocket("udp4");
        client.send(query, dnsPort, "127.0.0.1");
        await once(client, "message");
        client.close();
        expect(parsed(logs).filter((l) => l.event === "dns_refused").at(-1)).toMatchObject({ agent: "unknown", source: "127.0.0.1", name: "leak.test" });
    });
});
