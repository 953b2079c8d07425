// EgressGateway over real sockets on loopback. The resolver and dialer are injected: names resolve to what a
// case says, and every dial lands on a local echo server, so nothing leaves this machine.
import dgram from "node:dgram";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { domainToASCII } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { egressConfigSchema } from "../egress-image/src/config";
import { type EgressAgent, addressDenial } from "../egress-image/src/policy";
import { EgressGateway, type EgressDeps, dialAddress, interfaceAddresses } from "../egress-image/src/server";
import { readAuditLines, verifyChain } from "../runtime/audit";
import { jsonLogger } from "../runtime/log";
import { tempDir } from "./support/tempDirs";

const PUBLIC = "93.184.216.34";
/** Where every dial lands. Not 127.0.0.1: a connection from this host's address to itself is refused as the gateway's own. */
const UPSTREAM = "127.0.0.2";
const OWN = "198.51.100.77";
const answers: Record<string, string[]> = {
    "allowed.test": [PUBLIC],
    "plain.test": [PUBLIC],
    "a.cdn.test": [PUBLIC],
    "b.cdn.test": [PUBLIC, "10.0.0.5"],
    "c.cdn.test": ["::ffff:10.0.0.1"],
    "d.cdn.test": ["169.254.169.254"],
    "g.cdn.test": ["64:ff9b::a9fe:a9fe"],
    "h.cdn.test": ["127.0.0.1"],
    "i.cdn.test": ["fd00:ec2::254"],
    "j.cdn.test": ["100.100.100.200"],
    "k.cdn.test": [OWN],
    "compat-loopback.cdn.test": ["::7f00:1"],
    "compat-loopback-dotted.cdn.test": ["::127.0.0.1"],
    "compat-metadata.cdn.test": ["::a9fe:a9fe"],
    "compat-public.cdn.test": ["::93.184.216.34"],
    "not-global.cdn.test": ["1::1"],
    "dummy-prefix.cdn.test": ["100:0:0:1::1"],
    "documentation-3fff.cdn.test": ["3fff::1"],
    "orchid2.cdn.test": ["2001:20::1"],
    "pcp-anycast.cdn.test": ["2001:1::1"],
    "as112.cdn.test": ["2620:4f:8000::1"],
    "srv6.cdn.test": ["5f00::1"],
    "siit-loopback.cdn.test": ["::ffff:0:7f00:1"],
    "nat64-local.cdn.test": ["64:ff9b:1::a00:1"],
    "6to4-metadata.cdn.test": ["2002:a9fe:a9fe::1"],
    "teredo-private.cdn.test": ["2001:0:4136:e378:8000:63bf:f5ff:fffe"],
    "public-then-compat.cdn.test": [PUBLIC, "::7f00:1"],
    "6to4-public.cdn.test": ["2002:5db8:d822::1"],
    "nat64-public.cdn.test": ["64:ff9b::5db8:d822"],
    "f.cdn.test": [],
    "evil.test": [PUBLIC],
};
let rebindCalls = 0;
const resolutions: string[] = [];
const dials: { address: string; port: number }[] = [];
let echo: net.Server;
let echoPort: number;
let web: http.Server;
let webPort: number;

/** Injected: answers from the table; "rebind.cdn.test" answers public first, then loopback. */
const fakeDeps: EgressDeps = {
    async resolve(host) {
        resolutions.push(host);
        if (host === "rebind.cdn.test") return rebindCalls++ === 0 ? [PUBLIC] : ["127.0.0.1"];
        if (host === "slow.cdn.test") return [PUBLIC];
        const found = answers[host];
        if (!found) throw Object.assign(new Error("ENOTFOUND"), { code: "ENOTFOUND" });
        return found;
    },
    async dial(address, port, timeoutMs) {
        dials.push({ address, port });
        if (port === 9) return new Promise((_, reject) => setTimeout(() => reject(new Error("connect timeout")), timeoutMs));
        return dialAddress(UPSTREAM, port === 80 ? webPort : echoPort, timeoutMs);
    },
    ownAddresses: () => [OWN],
};

const AGENTS: EgressAgent[] = [
    { name: "bart", subnet: "127.0.0.0/25", mode: "enforce", allow: [{ host: "allowed.test", ports: [443] }, { host: "*.cdn.test", ports: [443, 9] }, { host: "plain.test", ports: [80] }] },
    { name: "lisa", subnet: "127.0.0.128/25", mode: "report", allow: [] },
];
const BART = "127.0.0.1";
const LISA = "127.0.0.129";
const STRANGER = "127.1.0.1";

const logs: string[] = [];
let gateway: EgressGateway;
let port: number;
let dnsPort: number;

beforeAll(async () => {
    echo = net.createServer((socket) => socket.pipe(socket)).listen(0, UPSTREAM);
    await once(echo, "listening");
    echoPort = (echo.address() as net.AddressInfo).port;
    // Answers plain HTTP with what it received, as the gateway sent it upstream.
    web = http.createServer((req, res) => res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }))).listen(0, UPSTREAM);
    await once(web, "listening");
    webPort = (web.address() as net.AddressInfo).port;
    const config = egressConfigSchema.parse({
        listen: { host: "127.0.0.1", port: 0 },
        dns: { host: "127.0.0.1", port: 0 },
        admin: [{ host: "127.0.0.1", port: 0 }],
        auditDir: tempDir("egress-audit"),
        // Every hostile case audited (the budget is tested in test/egress-audit.test.ts).
        limits: { connectTimeoutMs: 300, idleTimeoutMs: 400, requestHeadTimeoutMs: 500, maxTunnelsPerAgent: 3, auditedDenialsBurst: 10_000 },
    });
    gateway = new EgressGateway(config, jsonLogger("egress-gateway", (l) => logs.push(l)), fakeDeps);
    gateway.setAgents(AGENTS);
    ({ port, dnsPort } = await gateway.listen());
});
afterAll(async () => {
    await gateway.close();
    echo.close();
    web.close();
});

/** Sends raw bytes from a chosen loopback source address and returns everything answered before close (or a pause). */
function exchange(source: string, text: string, waitMs = 1500, to = port): Promise<string> {
    return new Promise((resolve) => {
        const socket = net.connect({ port: to, host: "127.0.0.1", localAddress: source }, () => socket.write(text));
        let out = "";
        const timer = setTimeout(() => {
            socket.destroy();
            resolve(out);
        }, waitMs);
        socket.on("data", (c) => (out += c.toString("latin1")));
        socket.on("close", () => {
            clearTimeout(timer);
            resolve(out);
        });
        socket.on("error", () => undefined);
    });
}

const connect = (target: string, extra = "") => `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${extra}\r\n`;
const connectNoHost = (target: string) => `CONNECT ${target} HTTP/1.1\r\n\r\n`;
const get = (url: string, host: string, extra = "") => `GET ${url} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;

// [case, source, raw request, expected deny reason ("" = connection closed by the HTTP parser)]
const HOSTILE: [string, string, string, string][] = [
    // IP literals in every encoding, judged by address in report mode (enforce denies them all as ip_literal)
    ["loopback dotted", LISA, connectNoHost("127.0.0.1:443"), "non_public:loopback"],
    ["loopback hex", LISA, connectNoHost("0x7f.1:443"), "non_public:loopback"],
    ["loopback hex whole", LISA, connectNoHost("0x7f000001:443"), "non_public:loopback"],
    ["loopback decimal", LISA, connectNoHost("2130706433:443"), "non_public:loopback"],
    ["loopback octal", LISA, connectNoHost("0177.0.0.1:443"), "non_public:loopback"],
    ["loopback octal whole", LISA, connectNoHost("017700000001:443"), "non_public:loopback"],
    ["loopback short", LISA, connectNoHost("127.1:443"), "non_public:loopback"],
    ["loopback IPv6", LISA, connectNoHost("[::1]:443"), "non_public:loopback"],
    ["loopback mapped", LISA, connectNoHost("[::ffff:127.0.0.1]:443"), "non_public:loopback"],
    ["loopback mapped hex", LISA, connectNoHost("[::ffff:7f00:1]:443"), "non_public:loopback"],
    ["loopback mapped long", LISA, connectNoHost("[0:0:0:0:0:ffff:127.0.0.1]:443"), "non_public:loopback"],
    ["RFC 1918 10/8", LISA, connectNoHost("10.0.0.1:443"), "non_public:private"],
    ["RFC 1918 172.16/12", LISA, connectNoHost("172.16.5.4:443"), "non_public:private"],
    ["RFC 1918 192.168/16", LISA, connectNoHost("192.168.1.1:443"), "non_public:private"],
    ["RFC 1918 decimal", LISA, connectNoHost("167772161:443"), "non_public:private"],
    ["AWS metadata", LISA, connectNoHost("169.254.169.254:80"), "non_public:cloudMetadata"],
    ["AWS metadata octal", LISA, connectNoHost("0251.0376.0251.0376:80"), "non_public:cloudMetadata"],
    ["Alibaba metadata", LISA, connectNoHost("100.100.100.200:80"), "non_public:cloudMetadata"],
    ["CGNAT", LISA, connectNoHost("100.64.0.1:443"), "non_public:carrierGradeNat"],
    ["AWS IPv6 metadata", LISA, connectNoHost("[fd00:ec2::254]:80"), "non_public:cloudMetadata"],
    ["link-local IPv6", LISA, connectNoHost("[fe80::1]:443"), "non_public:linkLocal"],
    ["unspecified", LISA, connectNoHost("0.0.0.0:443"), "non_public:unspecified"],
    ["this network", LISA, connectNoHost("0.1.2.3:443"), "non_public:thisNetwork"],
    ["PCP anycast", LISA, connectNoHost("192.0.0.9:443"), "non_public:pcpAnycast"],
    ["AS112", LISA, connectNoHost("192.31.196.1:443"), "non_public:as112"],
    ["unspecified short", LISA, connectNoHost("0:443"), "non_public:unspecified"],
    ["unspecified IPv6", LISA, connectNoHost("[::]:443"), "non_public:unspecified"],
    ["broadcast", LISA, connectNoHost("255.255.255.255:443"), "non_public:broadcast"],
    ["multicast", LISA, connectNoHost("224.0.0.1:443"), "non_public:multicast"],
    ["multicast IPv6", LISA, connectNoHost("[ff02::1]:443"), "non_public:multicast"],
    ["NAT64 of metadata", LISA, connectNoHost("[64:ff9b::a9fe:a9fe]:443"), "nat64:non_public:cloudMetadata"],
    ["6to4 of loopback", LISA, connectNoHost("[2002:7f00:1::]:443"), "6to4:non_public:loopback"],
    ["Teredo", LISA, connectNoHost("[2001:0:4136:e378:8000:63bf:3fff:fdd2]:443"), "teredo:non_public:documentation"],
    ["documentation range", LISA, connectNoHost("192.0.2.1:443"), "non_public:documentation"],
    ["benchmark range", LISA, connectNoHost("198.18.0.1:443"), "non_public:benchmarking"],
    ["the gateway's own address", LISA, connectNoHost(`${OWN}:443`), "own_address"],
    ["IPv4-compatible loopback", LISA, connectNoHost("[::7f00:1]:443"), "ipv4Compatible:non_public:loopback"],
    ["IPv4-compatible loopback, dotted", LISA, connectNoHost("[::127.0.0.1]:443"), "ipv4Compatible:non_public:loopback"],
    ["IPv4-compatible metadata", LISA, connectNoHost("[::169.254.169.254]:80"), "ipv4Compatible:non_public:cloudMetadata"],
    ["IPv4-compatible public (deprecated form)", LISA, connectNoHost("[::93.184.216.34]:443"), "non_public:ipv4Compatible"],
    ["IPv6 outside global unicast", LISA, connectNoHost("[1::1]:443"), "non_public:notGlobalUnicast"],
    ["IPv6 dummy prefix", LISA, connectNoHost("[100:0:0:1::1]:443"), "non_public:dummyPrefix"],
    ["IPv6 documentation 3fff::/20", LISA, connectNoHost("[3fff::1]:443"), "non_public:documentation"],
    ["IPv6 ORCHIDv2", LISA, connectNoHost("[2001:20::1]:443"), "non_public:orchid2"],
    ["IPv6 SRv6 SIDs", LISA, connectNoHost("[5f00::1]:443"), "non_public:segmentRouting"],
    ["SIIT of metadata", LISA, connectNoHost("[::ffff:0:169.254.169.254]:80"), "ipv4Translated:non_public:cloudMetadata"],
    ["6to4 of private", LISA, connectNoHost("[2002:a00:1::1]:443"), "6to4:non_public:private"],
    ["NAT64 local-use prefix", LISA, connectNoHost("[64:ff9b:1::a9fe:a9fe]:80"), "non_public:nat64LocalUse"],
    ["IPv6 zone id", LISA, connectNoHost("[fe80::1%25eth0]:443"), "bad_host"],
    ["five-part address", LISA, connectNoHost("1.2.3.4.5:443"), "bad_host"],
    ["public IP literal in enforce mode", BART, connectNoHost(`${PUBLIC}:443`), "ip_literal"],
    ["loopback literal in enforce mode", BART, connectNoHost("0x7f.1:443"), "ip_literal"],
    // names: allowlist, lookalikes, ports
    ["not allowlisted", BART, connect("evil.test:443"), "not_allowlisted"],
    ["allowlisted host, wrong port", BART, connect("allowed.test:80"), "not_allowlisted"],
    ["allowlisted host, port 8443", BART, connect("allowed.test:8443"), "not_allowlisted"],
    ["lookalike suffix", BART, connect("allowed.test.evil.test:443"), "not_allowlisted"],
    ["lookalike prefix", BART, connect("evilallowed.test:443"), "not_allowlisted"],
    ["lookalike truncation", BART, connect("allowed.tes:443"), "not_allowlisted"],
    ["IDN homograph (Cyrillic e, as punycode)", BART, connect(`${domainToASCII("allow\u0435d.test")}:443`), "not_allowlisted"],
    ["raw UTF-8 in the target", BART, connectNoHost("allow\u0435d.test:443"), ""],
    ["glob apex", BART, connect("cdn.test:443"), "not_allowlisted"],
    ["port zero", BART, connect("allowed.test:0"), "bad_port"],
    ["port too large", BART, connect("allowed.test:65536"), "bad_port"],
    ["port with a leading zero", BART, connect("allowed.test:0443"), "bad_port"],
    ["port with a plus sign", BART, connectNoHost("allowed.test:+443"), "bad_port"],
    ["negative port", BART, connectNoHost("allowed.test:-1"), "bad_port"],
    ["Host header port with a leading zero", BART, `CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:0443\r\n\r\n`, "authority_mismatch"],
    ["double port", BART, connectNoHost("allowed.test:443:443"), "bad_authority"],
    ["no port", BART, connectNoHost("allowed.test"), "bad_authority"],
    ["userinfo", BART, connectNoHost("user@allowed.test:443"), "bad_host"],
    ["percent-encoding", BART, connectNoHost("allowed%2etest:443"), "bad_host"],
    ["Host disagrees with the target", BART, `CONNECT allowed.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n`, "authority_mismatch"],
    ["spoofed identity headers", BART, connect("evil.test:443", "X-Forwarded-For: 127.0.0.129\r\nX-Agent: lisa\r\nForwarded: for=127.0.0.129\r\n"), "not_allowlisted"],
    ["unknown source network", STRANGER, connect("allowed.test:443"), "unknown_source"],
    // names that resolve badly: rebinding and split answers
    ["name resolving to loopback", BART, connect("h.cdn.test:443"), "resolved_non_public:loopback"],
    ["multi-answer with one private", BART, connect("b.cdn.test:443"), "resolved_non_public:private"],
    ["mapped private answer", BART, connect("c.cdn.test:443"), "resolved_non_public:private"],
    ["name resolving to metadata", BART, connect("d.cdn.test:443"), "resolved_non_public:cloudMetadata"],
    ["NAT64 answer", BART, connect("g.cdn.test:443"), "resolved_nat64:non_public:cloudMetadata"],
    ["ULA metadata answer", BART, connect("i.cdn.test:443"), "resolved_non_public:cloudMetadata"],
    ["CGNAT metadata answer", BART, connect("j.cdn.test:443"), "resolved_non_public:cloudMetadata"],
    ["answer is the gateway itself", BART, connect("k.cdn.test:443"), "resolved_own_address"],
    ["IPv4-compatible loopback answer", BART, connect("compat-loopback.cdn.test:443"), "resolved_ipv4Compatible:non_public:loopback"],
    ["IPv4-compatible loopback answer, dotted", BART, connect("compat-loopback-dotted.cdn.test:443"), "resolved_ipv4Compatible:non_public:loopback"],
    ["IPv4-compatible metadata answer", BART, connect("compat-metadata.cdn.test:443"), "resolved_ipv4Compatible:non_public:cloudMetadata"],
    ["IPv4-compatible public answer (deprecated form)", BART, connect("compat-public.cdn.test:443"), "resolved_non_public:ipv4Compatible"],
    ["answer outside global unicast", BART, connect("not-global.cdn.test:443"), "resolved_non_public:notGlobalUnicast"],
    ["dummy-prefix answer", BART, connect("dummy-prefix.cdn.test:443"), "resolved_non_public:dummyPrefix"],
    ["3fff::/20 documentation answer", BART, connect("documentation-3fff.cdn.test:443"), "resolved_non_public:documentation"],
    ["ORCHIDv2 answer", BART, connect("orchid2.cdn.test:443"), "resolved_non_public:orchid2"],
    ["PCP anycast answer", BART, connect("pcp-anycast.cdn.test:443"), "resolved_non_public:pcpAnycast"],
    ["AS112 direct-delegation answer", BART, connect("as112.cdn.test:443"), "resolved_non_public:as112"],
    ["SRv6 answer", BART, connect("srv6.cdn.test:443"), "resolved_non_public:segmentRouting"],
    ["SIIT loopback answer", BART, connect("siit-loopback.cdn.test:443"), "resolved_ipv4Translated:non_public:loopback"],
    ["NAT64 local-use answer", BART, connect("nat64-local.cdn.test:443"), "resolved_non_public:nat64LocalUse"],
    ["6to4 metadata answer", BART, connect("6to4-metadata.cdn.test:443"), "resolved_6to4:non_public:cloudMetadata"],
    ["Teredo answer with a private client", BART, connect("teredo-private.cdn.test:443"), "resolved_teredo:non_public:private"],
    ["public answer plus IPv4-compatible loopback", BART, connect("public-then-compat.cdn.test:443"), "resolved_ipv4Compatible:non_public:loopback"],
    ["no answers", BART, connect("f.cdn.test:443"), "no_answer"],
    ["resolver failure", BART, connect("e.cdn.test:443"), "resolver_failure"],
    // plain HTTP
    ["https in absolute form", BART, get("https://plain.test/", "plain.test"), "scheme"],
    ["origin-form request", BART, get("/relative", "plain.test"), "not_proxy_request"],
    ["userinfo in URL", BART, get("http://u:p@plain.test/", "plain.test"), "userinfo"],
    ["Host disagrees with the URL", BART, get("http://plain.test/", "evil.test"), "authority_mismatch"],
    ["plain HTTP on a port not allowed", BART, get("http://plain.test:8080/", "plain.test:8080"), "not_allowlisted"],
    ["plain HTTP to an IP literal", BART, get("http://127.0.0.1/", "127.0.0.1"), "ip_literal"],
    ["plain HTTP to a hex IP", BART, get("http://0x7f.1/", "0x7f.1"), "ip_literal"],
    ["plain HTTP to IPv6 loopback", BART, get("http://[::1]/", "[::1]"), "ip_literal"],
    ["plain HTTP port with a leading zero", BART, get("http://plain.test:080/", "plain.test:080"), "bad_port"],
    ["plain HTTP port with a plus sign", BART, get("http://plain.test:+80/", "plain.test:+80"), "bad_port"],
    ["plain HTTP empty port", BART, get("http://plain.test:/", "plain.test"), "bad_port"],
    ["plain HTTP Host port with a leading zero", BART, get("http://plain.test/", "plain.test:080"), "authority_mismatch"],
    ["plain HTTP not allowlisted", BART, get("http://evil.test/", "evil.test"), "not_allowlisted"],
    ["TRACE", BART, `TRACE http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n`, "method"],
    ["smuggling: CL and TE", BART, `POST http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, ""],
    ["smuggling: TE not chunked", BART, `POST http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: gzip\r\n\r\n`, ""],
    ["smuggling: double Content-Length", BART, `POST http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`, ""],
    ["smuggling: space before colon", BART, `POST http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding : chunked\r\n\r\n`, ""],
    ["smuggling: signed Content-Length", BART, `POST http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nContent-Length: +4\r\n\r\nabcd`, ""],
    ["smuggling: obsolete line folding", BART, `GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n`, ""],
];

describe("hostile requests", () => {
    it("number at least 120", () => expect(HOSTILE.length).toBeGreaterThanOrEqual(120));

    it.each(HOSTILE)("%s: denied (%s)", async (_case, source, request, reason) => {
        const dialsBefore = dials.length;
        const answer = await exchange(source, request);
        if (reason === "") {
            expect(answer).not.toMatch(/^HTTP\/1\.1 200/);
            expect(answer).toMatch(/^(HTTP\/1\.1 4\d\d|$)/);
        } else {
            expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
            expect(answer).toContain(`egress denied: ${reason}\n`);
        }
        expect(dials.length).toBe(dialsBefore);
    });

    it("logs every denial as JSON with its reason and agent", () => {
        const decisions = logs.map((l) => JSON.parse(l)).filter((l) => l.event === "decision" && l.decision === "deny");
        expect(decisions.length).toBeGreaterThanOrEqual(HOSTILE.filter((h) => h[3] !== "").length);
        expect(decisions).toContainEqual(expect.objectContaining({ agent: "unknown", reason: "unknown_source" }));
        expect(decisions).toContainEqual(expect.objectContaining({ agent: "lisa", reason: "non_public:cloudMetadata" }));
    });

    it("audits every denial: each reason fits the declared fields, and the chain holds", async () => {
        // Failures on the way (5xx) are logged, not audited.
        const failures = new Set(["resolver_timeout", "dial_failed", "shutting_down"]);
        const denials = logs.map((l) => JSON.parse(l)).filter((l) => l.event === "decision" && l.decision === "deny" && !failures.has(l.reason));
        const audited = () => readAuditLines(readFileSync(gateway.audit.file, "utf8")).filter((l) => l.type === "egress_denied");
        await expect.poll(() => audited().map((l) => l.reason).sort()).toEqual(denials.map((l) => l.reason).sort());
        expect(logs.filter((l) => l.includes('"event":"audit_refused"'))).toEqual([]);
        expect(verifyChain(readFileSync(gateway.audit.file, "utf8"))).toMatchObject({ ok: true });
    });
});

describe("allowed requests", () => {
    it("tunnels bytes for an allowlisted name, dialling the vetted address with one resolution", async () => {
        resolutions.length = 0;
        const dialsBefore = dials.length;
        const answer = await exchange(BART, `${connect("ALLOWED.test.:443")}ping`, 700);
        expect(answer).toBe("HTTP/1.1 200 Connection Established\r\n\r\nping");
        expect(resolutions).toEqual(["allowed.test"]);
        expect(dials.slice(dialsBefore)).toEqual([{ address: PUBLIC, port: 443 }]);
    });

    it("resolves once: a rebinding name is dialled at the answer it was vetted with", async () => {
        rebindCalls = 0;
        resolutions.length = 0;
        const dialsBefore = dials.length;
        const answer = await exchange(BART, `${connect("rebind.cdn.test:443")}x`, 700);
        expect(answer).toMatch(/^HTTP\/1\.1 200/);
        expect(resolutions).toEqual(["rebind.cdn.test"]);
        expect(dials.slice(dialsBefore)).toEqual([{ address: PUBLIC, port: 443 }]);
    });

    it.each([
        ["6to4", "6to4-public.cdn.test", "2002:5db8:d822::1"],
        ["NAT64", "nat64-public.cdn.test", "64:ff9b::5db8:d822"],
    ])("dials a %s answer that carries a public IPv4 address (control)", async (_form, host, address) => {
        const dialsBefore = dials.length;
        const answer = await exchange(BART, `${connect(`${host}:443`)}x`, 700);
        expect(answer).toMatch(/^HTTP\/1\.1 200/);
        expect(dials.slice(dialsBefore)).toEqual([{ address, port: 443 }]);
    });

    it("in report mode allows a name enforce would deny, and logs it", async () => {
        const answer = await exchange(LISA, `${connect("evil.test:443")}hi`, 700);
        expect(answer).toMatch(/^HTTP\/1\.1 200/);
        const allowed = logs.map((l) => JSON.parse(l)).find((l) => l.event === "decision" && l.agent === "lisa" && l.decision === "allow");
        expect(allowed).toMatchObject({ would_deny: "not_allowlisted", address: PUBLIC });
    });

    it("forwards allowlisted plain HTTP to the vetted address with the original Host", async () => {
        const dialsBefore = dials.length;
        const answer = await exchange(BART, get("http://plain.test/path?q=1", "plain.test", "Proxy-Authorization: Basic eA==\r\n"), 700);
        expect(answer).toMatch(/^HTTP\/1\.1 200/);
        const seen = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
        expect(seen).toMatchObject({ method: "GET", url: "/path?q=1", headers: { host: "plain.test" } });
        expect(seen.headers["proxy-authorization"]).toBeUndefined();
        expect(dials.slice(dialsBefore)).toEqual([{ address: PUBLIC, port: 80 }]);
    });
});

describe("limits", () => {
    it("caps tunnels per agent", async () => {
        const held = await Promise.all([0, 1, 2].map(() => openTunnel(BART, "allowed.test:443")));
        const fourth = await exchange(BART, connect("allowed.test:443"), 500);
        expect(fourth).toMatch(/^HTTP\/1\.1 429/);
        expect(fourth).toContain("tunnel_limit");
        for (const socket of held) socket.destroy();
        await expect.poll(async () => (await exchange(BART, connect("allowed.test:443"), 300)).startsWith("HTTP/1.1 200")).toBe(true);
    });

    it("closes idle tunnels", async () => {
        const socket = await openTunnel(BART, "allowed.test:443");
        const closedAt = await new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now())));
        expect(closedAt).toBeGreaterThan(0);
    });

    it("answers 502 when the upstream does not connect in time", async () => {
        const answer = await exchange(BART, connect("slow.cdn.test:9"), 2000);
        expect(answer).toMatch(/^HTTP\/1\.1 502/);
        expect(answer).toContain("dial_failed");
    });

    it("drops a client that never finishes its request head", async () => {
        const started = Date.now();
        const answer = await exchange(BART, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allo", 5000);
        expect(answer).not.toMatch(/^HTTP\/1\.1 200/);
        expect(Date.now() - started).toBeLessThan(4500);
    });
});

/** Settles with the promise's value, or with `fallback` once `ms` have passed (and leaves no timer behind). */
async function within<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<T>((resolve) => (timer = setTimeout(resolve, ms, fallback)));
    try {
        return await Promise.race([promise, late]);
    } finally {
        clearTimeout(timer);
    }
}

describe("a resolver that never answers", () => {
    const lookups: string[] = [];
    const HANGING = "hang.test";
    const SLOW_DIAL = "slow-dial.test";
    let finishDial: () => void = () => undefined;
    const slowDials: net.Socket[] = [];
    /** Never settles for HANGING; everything else is public. Dials to SLOW_DIAL's port wait for the test. */
    const hangingDeps: EgressDeps = {
        ...fakeDeps,
        resolve(host) {
            lookups.push(host);
            return host === HANGING ? new Promise<string[]>(() => undefined) : Promise.resolve([PUBLIC]);
        },
        async dial(address, dialPort, timeoutMs) {
            const socket = await fakeDeps.dial(address, dialPort === 444 ? 443 : dialPort, timeoutMs);
            if (dialPort !== 444) return socket;
            slowDials.push(socket);
            await new Promise<void>((resolve) => (finishDial = resolve));
            return socket;
        },
    };
    const agent: EgressAgent = { name: "bart", subnet: "127.0.0.0/25", mode: "enforce", allow: [{ host: HANGING, ports: [443, 80] }, { host: SLOW_DIAL, ports: [444] }, { host: "ok.test", ports: [443] }] };
    const start = async (resolveTimeoutMs: number) => {
        const config = egressConfigSchema.parse({
            listen: { host: "127.0.0.1", port: 0 },
            dns: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            auditDir: tempDir("egress-audit"),
            limits: { resolveTimeoutMs, maxTunnelsPerAgent: 1 },
        });
        const started = new EgressGateway(config, jsonLogger("egress-gateway", () => undefined), hangingDeps);
        started.setAgents([agent]);
        return { gateway: started, port: (await started.listen()).port };
    };

    it("is bounded by a default of a few seconds", () => {
        const { resolveTimeoutMs } = egressConfigSchema.parse({}).limits;
        expect(resolveTimeoutMs).toBeGreaterThanOrEqual(1000);
        expect(resolveTimeoutMs).toBeLessThanOrEqual(10_000);
    });

    it.each([
        ["CONNECT", connect(`${HANGING}:443`)],
        ["plain HTTP", get(`http://${HANGING}/`, HANGING)],
    ])("%s: the client gets 504 with a reason, and the agent's slot is held meanwhile and then freed", async (_kind, request) => {
        const { gateway: bounded, port: boundedPort } = await start(1500);
        try {
            lookups.length = 0;
            const first = exchange(BART, request, 10_000, boundedPort);
            await expect.poll(() => lookups.includes(HANGING)).toBe(true);
            // The one slot is taken while the lookup hangs: an agent cannot pile up unbounded hanging lookups.
            expect(await exchange(BART, connect("ok.test:443"), 1000, boundedPort)).toMatch(/^HTTP\/1\.1 429/);
            const answer = await first;
            expect(answer).toMatch(/^HTTP\/1\.1 504 Gateway Timeout\r\n/);
            expect(answer).toContain("egress denied: resolver_timeout\n");
            expect(await exchange(BART, `${connect("ok.test:443")}x`, 700, boundedPort)).toMatch(/^HTTP\/1\.1 200/);
        } finally {
            await bounded.close();
        }
    });

    it("close() during a dial: the client is ended, and the upstream that connects afterwards is closed, not relayed", async () => {
        const { gateway: closing, port: closingPort } = await start(10_000);
        slowDials.length = 0;
        const answer = exchange(BART, connect(`${SLOW_DIAL}:444`), 20_000, closingPort);
        await expect.poll(() => slowDials.length).toBe(1);
        expect(await within(closing.close().then(() => "closed"), 5000, "still closing")).toBe("closed");
        expect(await within(answer, 5000, "client still connected")).toBe("");
        finishDial();
        await expect.poll(() => slowDials[0].destroyed).toBe(true);
    });

    it.each([
        ["CONNECT", connect(`${HANGING}:443`)],
        ["plain HTTP", get(`http://${HANGING}/`, HANGING)],
    ])("%s: close() finishes promptly while the lookup hangs, and ends the waiting client", async (_kind, request) => {
        const { gateway: closing, port: closingPort } = await start(60_000);
        lookups.length = 0;
        const answer = exchange(BART, request, 20_000, closingPort);
        await expect.poll(() => lookups.includes(HANGING)).toBe(true);
        expect(await within(closing.close().then(() => "closed"), 5000, "still closing")).toBe("closed");
        expect(await within(answer, 5000, "client still connected")).not.toMatch(/^HTTP\/1\.1 200|client still connected/);
    });
});

function openTunnel(source: string, target: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
        const socket = net.connect({ port, host: "127.0.0.1", localAddress: source }, () => socket.write(connect(target)));
        socket.once("data", (chunk) => (chunk.toString().startsWith("HTTP/1.1 200") ? resolve(socket) : reject(new Error(chunk.toString()))));
        socket.on("error", () => undefined);
    });
}

describe("DNS sink", () => {
    const query = (name: string, id: number) => {
        const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
        return Buffer.concat([Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
    };

    it("answers REFUSED over UDP and logs the name with the agent it came from", async () => {
        const socket = dgram.createSocket("udp4");
        socket.bind(0, BART);
        await once(socket, "listening");
        socket.send(query("exfil-secret.example.test", 0xbeef), dnsPort, "127.0.0.1");
        const [answer] = (await once(socket, "message")) as [Buffer];
        socket.close();
        expect(answer.readUInt16BE(0)).toBe(0xbeef);
        expect(answer.readUInt16BE(2) & 0x000f).toBe(5);
        await expect.poll(() => logs.some((l) => l.includes('"event":"dns_refused"') && l.includes('"name":"exfil-secret.example.test"') && l.includes('"agent":"bart"'))).toBe(true);
    });

    it("answers REFUSED over TCP", async () => {
        const packet = query("tcp.example.test", 7);
        const framed = Buffer.concat([Buffer.from([0, packet.length]), packet]);
        const socket = net.connect(dnsPort, "127.0.0.1", () => socket.write(framed));
        const [chunk] = (await once(socket, "data")) as [Buffer];
        socket.destroy();
        expect(chunk.readUInt16BE(2)).toBe(7);
        expect(chunk.readUInt16BE(4) & 0x000f).toBe(5);
    });
});

describe("operations", () => {
    it("exposes decisions, tunnels, bytes and DNS refusals as metrics on the admin listener", async () => {
        const text = await gateway.metrics.registry.metrics();
        expect(text).toMatch(/egress_decisions_total\{agent="bart",decision="deny",reason="not_allowlisted"\} \d+/);
        expect(text).toMatch(/egress_decisions_total\{agent="bart",decision="allow",reason="allowlisted"\} \d+/);
        expect(text).toMatch(/egress_bytes_total\{agent="bart",direction="out"\} \d+/);
        expect(text).toMatch(/egress_dns_queries_total\{agent="bart"\} \d+/);
        expect(text).toContain("egress_active_tunnels");
    });

    it("is not an HTTP origin: a plain request to the gateway itself is refused", async () => {
        const res = await new Promise<number>((resolve) => http.get({ host: "127.0.0.1", port, path: "/metrics" }, (r) => resolve(r.statusCode!)));
        expect(res).toBe(403);
    });
});

describe("the loopback allow-range override (tests only)", () => {
    it("is off by default, and never exempts the gateway's own addresses", () => {
        expect(egressConfigSchema.parse({}).allowRanges).toEqual([]);
        expect(addressDenial("127.0.0.1", { ownAddresses: interfaceAddresses(), allowRanges: ["127.0.0.0/8"] })).toBe("own_address");
    });

    it("lets a gateway with the override tunnel real bytes to a loopback server, with the real dialer", async () => {
        const config = egressConfigSchema.parse({
            listen: { host: "127.0.0.1", port: 0 },
            dns: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            auditDir: tempDir("egress-audit"),
            allowRanges: ["127.0.0.0/8"],
        });
        const resolved: string[] = [];
        const local = new EgressGateway(config, jsonLogger("egress-gateway", () => undefined), {
            dial: dialAddress,
            ownAddresses: interfaceAddresses,
            resolve: async (host) => {
                resolved.push(host);
                if (host !== "echo.test") throw new Error("ENOTFOUND");
                return [UPSTREAM];
            },
        });
        local.setAgents([{ name: "bart", subnet: "127.0.0.0/25", mode: "enforce", allow: [{ host: "echo.test", ports: [echoPort] }] }]);
        const { port: localPort } = await local.listen();
        try {
            const payload = "x".repeat(100_000);
            const received = await new Promise<string>((resolve) => {
                const socket = net.connect(localPort, "127.0.0.1", () => socket.write(`CONNECT echo.test:${echoPort} HTTP/1.1\r\nHost: echo.test:${echoPort}\r\n\r\n`));
                let out = "";
                socket.on("data", (chunk) => {
                    out += chunk.toString();
                    if (out === "HTTP/1.1 200 Connection Established\r\n\r\n") socket.write(payload);
                    if (out.length >= 39 + payload.length) socket.destroy();
                });
                socket.on("close", () => resolve(out));
            });
            expect(received.slice(39)).toBe(payload);
            expect(resolved).toEqual(["echo.test"]);
        } finally {
            await local.close();
        }
    });
});

describe("the gateway's own addresses", () => {
    const start = async (deps: EgressDeps) => {
        const config = egressConfigSchema.parse({
            listen: { host: "127.0.0.1", port: 0 },
            dns: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            auditDir: tempDir("egress-audit"),
            allowRanges: ["127.0.0.0/8"],
        });
        const started = new EgressGateway(config, jsonLogger("egress-gateway", () => undefined), deps);
        started.setAgents(AGENTS);
        return { gateway: started, port: (await started.listen()).port };
    };

    it("are read once per refresh period, not per request, and again when the agents change", async () => {
        let reads = 0;
        const { gateway: counting, port: countingPort } = await start({ ...fakeDeps, ownAddresses: () => (reads++, [OWN]) });
        try {
            for (let i = 0; i < 3; i++) expect(await exchange(BART, `${connect("allowed.test:443")}x`, 300, countingPort)).toMatch(/^HTTP\/1\.1 200/);
            expect(await exchange(BART, connect("k.cdn.test:443"), 1000, countingPort)).toContain("egress denied: resolved_own_address\n");
            expect(reads).toBe(1);
            counting.setAgents(AGENTS);
            expect(await exchange(BART, connect("k.cdn.test:443"), 1000, countingPort)).toContain("egress denied: resolved_own_address\n");
            expect(reads).toBe(2);
        } finally {
            await counting.close();
        }
    });

    it("gained since the last reading: a dial that lands on one is closed before any byte, refused, and the reading renewed", async () => {
        const received: Buffer[] = [];
        let accepted = 0;
        // 127.0.0.1 stands for an address the gateway gained after it last read its interfaces.
        const self = net.createServer((socket) => {
            accepted++;
            socket.on("data", (chunk) => received.push(chunk));
            socket.on("error", () => undefined);
        });
        self.listen(0, "127.0.0.1");
        await once(self, "listening");
        let reads = 0;
        const { gateway: stale, port: stalePort } = await start({
            resolve: async () => ["127.0.0.1"],
            dial: (address) => dialAddress(address, (self.address() as net.AddressInfo).port, 1000),
            ownAddresses: () => (reads++, []),
        });
        try {
            const answer = await exchange(BART, `${connect("self.cdn.test:443")}smuggled`, 1500, stalePort);
            expect(answer).toMatch(/^HTTP\/1\.1 403 /);
            expect(answer).toContain("egress denied: resolved_own_address\n");
            expect(accepted).toBe(1);
            expect(Buffer.concat(received).length).toBe(0);
            await exchange(BART, connect("self.cdn.test:443"), 1500, stalePort);
            expect(reads).toBe(2);
        } finally {
            await stale.close();
            self.close();
        }
    });
});
