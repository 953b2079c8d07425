import { describe, expect, it } from "vitest";
import { parseQuery, refusal } from "../egress-image/src/dns";
import { type EgressAgent, addressDenial, agentForSource, decideTarget, parseAbsoluteHttp, parseConnect, vetAnswers } from "../egress-image/src/policy";
import { hostMatches } from "../runtime/hostnames";

const policy = { ownAddresses: ["198.51.100.77", "10.64.0.3"], allowRanges: [] };

describe("addressDenial", () => {
    it.each([
        ["93.184.216.34", undefined],
        ["2606:4700::1111", undefined],
        ["::ffff:93.184.216.34", undefined],
        ["127.0.0.1", "non_public:loopback"],
        ["10.1.2.3", "non_public:private"],
        ["172.31.255.255", "non_public:private"],
        ["192.168.0.1", "non_public:private"],
        ["169.254.169.254", "non_public:linkLocal"],
        ["100.100.100.200", "non_public:carrierGradeNat"],
        ["100.64.0.1", "non_public:carrierGradeNat"],
        ["0.0.0.0", "non_public:unspecified"],
        ["255.255.255.255", "non_public:broadcast"],
        ["224.0.0.251", "non_public:multicast"],
        ["240.0.0.1", "non_public:reserved"],
        ["192.0.2.10", "non_public:reserved"],
        ["::1", "non_public:loopback"],
        ["::", "non_public:unspecified"],
        ["fd00:ec2::254", "non_public:uniqueLocal"],
        ["fc00::1", "non_public:uniqueLocal"],
        ["fe80::1", "non_public:linkLocal"],
        ["ff02::1", "non_public:multicast"],
        ["::ffff:127.0.0.1", "non_public:loopback"],
        ["::ffff:10.0.0.1", "non_public:private"],
        ["64:ff9b::a9fe:a9fe", "non_public:rfc6052"],
        ["2002:7f00:1::", "non_public:6to4"],
        ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "non_public:teredo"],
        ["2001:db8::1", "non_public:reserved"],
        ["198.51.100.77", "own_address"],
        ["10.64.0.3", "own_address"],
        ["not-an-ip", "bad_address"],
    ])("%s -> %s", (address, expected) => expect(addressDenial(address, policy)).toBe(expected));

    it("exempts only the ranges given explicitly", () => {
        expect(addressDenial("127.0.0.1", { ownAddresses: [], allowRanges: ["127.0.0.0/8"] })).toBeUndefined();
        expect(addressDenial("10.0.0.1", { ownAddresses: [], allowRanges: ["127.0.0.0/8"] })).toBe("non_public:private");
    });
});

describe("vetAnswers", () => {
    it("refuses a name if any answer is not public, and dials the first IPv4 answer otherwise", () => {
        expect(vetAnswers(["93.184.216.34", "10.0.0.5"], policy)).toEqual({ ok: false, reason: "resolved_non_public:private" });
        expect(vetAnswers(["2606:4700::1111", "93.184.216.34"], policy)).toEqual({ ok: true, address: "93.184.216.34" });
        expect(vetAnswers(["::ffff:93.184.216.34"], policy)).toEqual({ ok: true, address: "93.184.216.34" });
        expect(vetAnswers([], policy)).toEqual({ ok: false, reason: "no_answer" });
    });
});

describe("parseConnect", () => {
    it.each<[string, string | undefined, unknown]>([
        ["Example.COM.:443", undefined, { kind: "name", host: "example.com", port: 443 }],
        ["bücher.example:443", undefined, { kind: "name", host: "xn--bcher-kva.example", port: 443 }],
        ["0x7f.1:443", undefined, { kind: "ip", address: "127.0.0.1", port: 443 }],
        ["2130706433:443", undefined, { kind: "ip", address: "127.0.0.1", port: 443 }],
        ["0177.0.0.1:443", undefined, { kind: "ip", address: "127.0.0.1", port: 443 }],
        ["127.1:443", undefined, { kind: "ip", address: "127.0.0.1", port: 443 }],
        ["[::1]:443", undefined, { kind: "ip", address: "0:0:0:0:0:0:0:1", port: 443 }],
        ["example.com:443", "EXAMPLE.com:443", { kind: "name", host: "example.com", port: 443 }],
    ])("%s (Host %s)", (target, host, expected) => expect(parseConnect(target, host)).toEqual({ ok: true, value: expected }));

    it.each<[string, string | undefined, string]>([
        ["example.com", undefined, "bad_authority"],
        ["example.com:0", undefined, "bad_port"],
        ["example.com:65536", undefined, "bad_port"],
        ["example.com:44a", undefined, "bad_port"],
        ["example.com:443:443", undefined, "bad_authority"],
        ["::1:443", undefined, "bad_authority"],
        ["[::1:443", undefined, "bad_authority"],
        ["user@example.com:443", undefined, "bad_host"],
        ["example.com/x:443", undefined, "bad_host"],
        ["exa%2ample.com:443", undefined, "bad_host"],
        ["[fe80::1%eth0]:443", undefined, "bad_host"],
        ["1.2.3.4.5:443", undefined, "bad_host"],
        ["*.example.com:443", undefined, "bad_host"],
        [":443", undefined, "bad_host"],
        ["example.com:443", "evil.com:443", "authority_mismatch"],
        ["example.com:443", "example.com:444", "authority_mismatch"],
    ])("refuses %s (Host %s): %s", (target, host, reason) => expect(parseConnect(target, host)).toEqual({ ok: false, reason }));
});

describe("parseAbsoluteHttp", () => {
    it("takes http:// targets with their path, port 80 by default", () => {
        expect(parseAbsoluteHttp("http://Example.com/a?b=1", "example.com")).toEqual({
            ok: true,
            value: { target: { kind: "name", host: "example.com", port: 80 }, path: "/a?b=1", authority: "Example.com" },
        });
        expect(parseAbsoluteHttp("http://example.com:8080", undefined)).toMatchObject({ ok: true, value: { path: "/", target: { port: 8080 } } });
    });

    it.each([
        ["https://example.com/", "example.com", "scheme"],
        ["/relative", "example.com", "not_proxy_request"],
        ["ftp://example.com/", undefined, "not_proxy_request"],
        ["http://user:pw@example.com/", undefined, "userinfo"],
        ["http://example.com/", "evil.com", "authority_mismatch"],
        ["http://example.com\\@evil.com/", undefined, "userinfo"],
        ["http://exam ple.com/", undefined, "bad_host"],
        ["http://example.com/a b", undefined, "bad_path"],
    ])("refuses %s: %s", (target, host, reason) => expect(parseAbsoluteHttp(target, host)).toEqual({ ok: false, reason }));
});

describe("allowlist", () => {
    const agent: EgressAgent = { name: "bart", subnet: "10.64.0.0/28", mode: "enforce", allow: [{ host: "github.com", ports: [443] }, { host: "*.npmjs.org", ports: [443, 80] }] };
    const name = (host: string, port = 443) => ({ kind: "name" as const, host, port });

    it.each<[string, number, boolean]>([
        ["github.com", 443, true],
        ["github.com", 80, false],
        ["api.github.com", 443, false],
        ["github.com.evil.com", 443, false],
        ["evilgithub.com", 443, false],
        ["registry.npmjs.org", 80, true],
        ["a.b.npmjs.org", 443, true],
        ["npmjs.org", 443, false],
        ["evilnpmjs.org", 443, false],
        ["npmjs.org.evil.com", 443, false],
    ])("%s:%d allowed: %s", (host, port, allowed) => expect(decideTarget(agent, name(host, port)).allow).toBe(allowed));

    it("denies IP literals, unknown sources, and in report mode allows while naming what enforce would deny", () => {
        expect(decideTarget(agent, { kind: "ip", address: "93.184.216.34", port: 443 })).toEqual({ allow: false, reason: "ip_literal" });
        expect(decideTarget(undefined, name("github.com"))).toEqual({ allow: false, reason: "unknown_source" });
        expect(decideTarget({ ...agent, mode: "report" }, name("evil.com"))).toEqual({ allow: true, reason: "report_mode", wouldDeny: "not_allowlisted" });
    });

    it("identifies agents by source subnet only", () => {
        expect(agentForSource("10.64.0.4", [agent])?.name).toBe("bart");
        expect(agentForSource("::ffff:10.64.0.4", [agent])?.name).toBe("bart");
        expect(agentForSource("10.64.0.16", [agent])).toBeUndefined();
        expect(agentForSource(undefined, [agent])).toBeUndefined();
        expect(hostMatches("x.a.com", "*.a.com")).toBe(true);
        expect(hostMatches("a.com", "*.a.com")).toBe(false);
    });
});

describe("DNS sink packets", () => {
    const query = (name: string, id = 0x1234, type = 1) => {
        const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
        const header = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        return Buffer.concat([header, ...labels, Buffer.from([0, 0, type, 0, 1])]);
    };

    it("reads the question and answers REFUSED with the id, RD and question echoed", () => {
        const packet = query("exfil-secret.example.test");
        const question = parseQuery(packet)!;
        expect(question).toMatchObject({ id: 0x1234, name: "exfil-secret.example.test", type: 1 });
        const answer = refusal(packet, question);
        expect(answer.readUInt16BE(0)).toBe(0x1234);
        expect(answer.readUInt16BE(2)).toBe(0x8105); // QR, RD, REFUSED
        expect(answer.readUInt16BE(6)).toBe(0);
        expect(answer.subarray(12)).toEqual(packet.subarray(12));
    });

    it.each([
        ["too short", Buffer.alloc(5)],
        ["a response", Buffer.from([0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1])],
        ["no question", Buffer.from([0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
        ["a compression pointer", Buffer.concat([Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])])],
        ["a label past the end", Buffer.concat([Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([40, 0x61])])],
    ])("ignores %s", (_case, packet) => expect(parseQuery(packet)).toBeUndefined());
});
