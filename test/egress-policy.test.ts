import ipaddr from "ipaddr.js";
import { describe, expect, it } from "vitest";
import { parseQuery, refusal } from "../egress-image/src/dns";
import type { Arrival } from "../runtime/registry";
import { type EgressAgent, addressDenial, agentForArrival, decideTarget, parseAbsoluteHttp, parseConnect, vetAnswers } from "../egress-image/src/policy";
import { hostMatches } from "../runtime/hostnames";

const OWN = "198.51.100.77";
const policy = { ownAddresses: [OWN, "10.64.0.3"], allowRanges: [] };
const PUBLIC = "93.184.216.34";

describe("addressDenial: IPv4 is public only outside every IANA special-purpose range", () => {
    it.each<[string, string | undefined]>([
        [PUBLIC, undefined],
        ["1.1.1.1", undefined],
        ["11.0.0.1", undefined],
        ["100.63.255.255", undefined],
        ["100.128.0.1", undefined],
        ["172.32.0.1", undefined],
        ["192.0.1.255", undefined],
        ["192.0.3.1", undefined],
        ["198.17.255.255", undefined],
        ["198.20.0.1", undefined],
        ["223.255.255.255", undefined],
        ["0.1.2.3", "non_public:thisNetwork"],
        ["0.0.0.0", "non_public:unspecified"],
        ["10.1.2.3", "non_public:private"],
        ["100.64.0.1", "non_public:carrierGradeNat"],
        ["100.127.255.255", "non_public:carrierGradeNat"],
        ["127.0.0.1", "non_public:loopback"],
        ["127.255.255.254", "non_public:loopback"],
        ["169.254.1.1", "non_public:linkLocal"],
        ["169.254.169.254", "non_public:cloudMetadata"],
        ["100.100.100.200", "non_public:cloudMetadata"],
        ["172.16.0.1", "non_public:private"],
        ["172.31.255.255", "non_public:private"],
        ["192.0.0.1", "non_public:dsLite"],
        ["192.0.0.8", "non_public:dummy"],
        ["192.0.0.9", "non_public:pcpAnycast"],
        ["192.0.0.10", "non_public:turnAnycast"],
        ["192.0.0.170", "non_public:nat64Discovery"],
        ["192.0.0.171", "non_public:nat64Discovery"],
        ["192.0.0.192", "non_public:ietfProtocol"],
        ["192.0.2.10", "non_public:documentation"],
        ["192.31.196.1", "non_public:as112"],
        ["192.52.193.1", "non_public:amt"],
        ["192.88.99.1", "non_public:6to4Relay"],
        ["192.168.0.1", "non_public:private"],
        ["192.175.48.1", "non_public:as112"],
        ["198.18.0.1", "non_public:benchmarking"],
        ["198.19.255.255", "non_public:benchmarking"],
        ["198.51.100.1", "non_public:documentation"],
        ["203.0.113.1", "non_public:documentation"],
        ["224.0.0.251", "non_public:multicast"],
        ["239.255.255.250", "non_public:multicast"],
        ["240.0.0.1", "non_public:reserved"],
        ["255.255.255.254", "non_public:reserved"],
        ["255.255.255.255", "non_public:broadcast"],
        [OWN, "own_address"],
        ["10.64.0.3", "own_address"],
        ["not-an-ip", "bad_address"],
        ["127.1", "bad_address"],
        ["fe80::1%eth0", "bad_address"],
    ])("%s -> %s", (address, expected) => expect(addressDenial(address, policy)).toBe(expected));
});

describe("addressDenial: IPv6 is public only inside 2000::/3 and outside every IANA special-purpose range", () => {
    it.each<[string, string | undefined]>([
        ["2606:4700::1111", undefined],
        ["2a00:1450:4001::1", undefined],
        ["2001:200::1", undefined],
        ["2001:4:113::1", "non_public:ietfProtocol"],
        ["3fff:1000::1", undefined],
        ["2620:4f:8001::1", undefined],
        ["1::1", "non_public:notGlobalUnicast"],
        ["4000::1", "non_public:notGlobalUnicast"],
        ["8000::1", "non_public:notGlobalUnicast"],
        ["1fff:ffff::1", "non_public:notGlobalUnicast"],
        ["::1", "non_public:loopback"],
        ["::", "non_public:unspecified"],
        ["64:ff9b:1::a9fe:a9fe", "non_public:nat64LocalUse"],
        ["64:ff9b:1:ffff::1", "non_public:nat64LocalUse"],
        ["100::1", "non_public:discardOnly"],
        ["100:0:0:1::1", "non_public:dummyPrefix"],
        ["2001:1::1", "non_public:pcpAnycast"],
        ["2001:1::2", "non_public:turnAnycast"],
        ["2001:1::3", "non_public:dnsSdSrpAnycast"],
        ["2001:1::4", "non_public:ietfProtocol"],
        ["2001:2::1", "non_public:benchmarking"],
        ["2001:3::1", "non_public:amt"],
        ["2001:4:112::1", "non_public:as112"],
        ["2001:10::1", "non_public:orchid"],
        ["2001:20::1", "non_public:orchid2"],
        ["2001:30::1", "non_public:droneRemoteId"],
        ["2001:1ff:ffff::1", "non_public:ietfProtocol"],
        ["2001:db8::1", "non_public:documentation"],
        ["3fff::1", "non_public:documentation"],
        ["3fff:fff:ffff::1", "non_public:documentation"],
        ["2620:4f:8000::1", "non_public:as112"],
        ["5f00::1", "non_public:segmentRouting"],
        ["fc00::1", "non_public:uniqueLocal"],
        ["fd12:3456::1", "non_public:uniqueLocal"],
        ["fd00:ec2::254", "non_public:cloudMetadata"],
        ["fe80::1", "non_public:linkLocal"],
        ["fec0::1", "non_public:siteLocal"],
        ["ff02::1", "non_public:multicast"],
        ["ff0e::1", "non_public:multicast"],
        ["2002::1", "6to4:non_public:unspecified"],
        ["::2", "ipv4Compatible:non_public:thisNetwork"],
    ])("%s -> %s", (address, expected) => expect(addressDenial(address, policy)).toBe(expected));
});

/** The two 16-bit groups of an IPv4 address, optionally complemented (Teredo obfuscates its client address). */
function groups(ipv4: string, complement = false): string {
    const [a, b, c, d] = ipv4.split(".").map(Number);
    const word = (hi: number, lo: number) => ((complement ? ~((hi << 8) | lo) : (hi << 8) | lo) & 0xffff).toString(16);
    return `${word(a, b)}:${word(c, d)}`;
}

describe("addressDenial: every IPv6 form that embeds an IPv4 address is judged by that address", () => {
    // [form, encoding, reason prefix for a non-public payload, verdict with a public payload]
    const FORMS: [string, (ipv4: string) => string, string, string | undefined][] = [
        ["IPv4-mapped", (v4) => `::ffff:${v4}`, "", undefined],
        ["IPv4-mapped, hex", (v4) => `::ffff:${groups(v4)}`, "", undefined],
        ["IPv4-compatible", (v4) => `::${v4}`, "ipv4Compatible:", "non_public:ipv4Compatible"],
        ["IPv4-compatible, hex", (v4) => `::${groups(v4)}`, "ipv4Compatible:", "non_public:ipv4Compatible"],
        ["IPv4-translated (SIIT)", (v4) => `::ffff:0:${v4}`, "ipv4Translated:", "non_public:ipv4Translated"],
        ["NAT64 well-known prefix", (v4) => `64:ff9b::${v4}`, "nat64:", undefined],
        ["NAT64 well-known prefix, hex", (v4) => `64:ff9b::${groups(v4)}`, "nat64:", undefined],
        ["6to4", (v4) => `2002:${groups(v4)}::1`, "6to4:", undefined],
        ["6to4, full interface id", (v4) => `2002:${groups(v4)}:ffff:0:ffff:ffff:ffff`, "6to4:", undefined],
        ["Teredo", (v4) => `2001:0:4136:e378:8000:63bf:${groups(v4, true)}`, "teredo:", "non_public:teredo"],
    ];
    const PAYLOADS: [string, string, string][] = [
        ["loopback", "127.0.0.1", "non_public:loopback"],
        ["private", "10.0.0.1", "non_public:private"],
        ["metadata", "169.254.169.254", "non_public:cloudMetadata"],
        ["Alibaba metadata", "100.100.100.200", "non_public:cloudMetadata"],
        ["link-local", "169.254.10.10", "non_public:linkLocal"],
        ["CGNAT", "100.64.1.1", "non_public:carrierGradeNat"],
        ["documentation", "192.0.2.1", "non_public:documentation"],
        ["the gateway itself", OWN, "own_address"],
    ];

    describe.each(FORMS)("%s", (_form, encode, prefix, publicVerdict) => {
        it.each(PAYLOADS)("carrying %s (%s)", (_payload, ipv4, reason) => expect(addressDenial(encode(ipv4), policy)).toBe(`${prefix}${reason}`));
        it(`carrying a public address (control): ${publicVerdict ?? "public"}`, () => expect(addressDenial(encode(PUBLIC), policy)).toBe(publicVerdict));
    });
});

/** The first and last address of a CIDR, as text. */
function ends([base, bits]: [ipaddr.IPv4 | ipaddr.IPv6, number]): string[] {
    const bytes = base.toByteArray();
    const last = bytes.map((byte, i) => byte | (0xff >> Math.max(0, Math.min(8, bits - i * 8))));
    return [base.toString(), ipaddr.fromByteArray(last).toString()];
}

describe("addressDenial agrees with a second source", () => {
    type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];
    // ipaddr.js's own table of special ranges (not in its typings): one range or a list of them per name.
    const tables = [ipaddr.IPv4, ipaddr.IPv6].map((family) => (family.prototype as unknown as { SpecialRanges: Record<string, Range | Range[]> }).SpecialRanges);
    const specials = tables.flatMap((table) =>
        Object.entries(table).flatMap(([name, ranges]) => (Array.isArray(ranges[0]) ? (ranges as Range[]) : [ranges as Range]).flatMap((range) => ends(range).map((address) => [name, address]))),
    );

    it("covers every named range of ipaddr.js", () => expect(specials.length).toBeGreaterThan(50));

    it.each(specials)("ipaddr.js calls %s %s special: denied", (_name, address) => expect(addressDenial(address, policy)).toMatch(/^(.+:)?(non_public:|own_address)/));
});

describe("addressDenial: the allow-range override", () => {
    it("exempts only the ranges given explicitly, and never a form that embeds them", () => {
        const loopbackAllowed = { ownAddresses: [], allowRanges: ["127.0.0.0/8"] };
        expect(addressDenial("127.0.0.1", loopbackAllowed)).toBeUndefined();
        expect(addressDenial("::ffff:127.0.0.1", loopbackAllowed)).toBeUndefined();
        expect(addressDenial("10.0.0.1", loopbackAllowed)).toBe("non_public:private");
        expect(addressDenial("2002:7f00:1::1", loopbackAllowed)).toBe("6to4:non_public:loopback");
    });
});

describe("vetAnswers", () => {
    it("refuses a name if any answer is not public, and dials the first IPv4 answer otherwise", () => {
        expect(vetAnswers(["93.184.216.34", "10.0.0.5"], policy)).toEqual({ ok: false, reason: "resolved_non_public:private" });
        expect(vetAnswers(["2606:4700::1111", "93.184.216.34"], policy)).toEqual({ ok: true, address: "93.184.216.34" });
        expect(vetAnswers(["::ffff:93.184.216.34"], policy)).toEqual({ ok: true, address: "93.184.216.34" });
        expect(vetAnswers([], policy)).toEqual({ ok: false, reason: "no_answer" });
    });

    it("dials exactly the address it judged: IPv4-compatible text is not read as IPv4-mapped", () => {
        expect(vetAnswers(["::93.184.216.34"], policy)).toEqual({ ok: false, reason: "resolved_non_public:ipv4Compatible" });
        expect(vetAnswers(["::127.0.0.1"], policy)).toEqual({ ok: false, reason: "resolved_ipv4Compatible:non_public:loopback" });
        expect(vetAnswers(["2002:5db8:d822::1"], policy)).toEqual({ ok: true, address: "2002:5db8:d822::1" });
        expect(vetAnswers(["64:ff9b::93.184.216.34"], policy)).toEqual({ ok: true, address: "64:ff9b::5db8:d822" });
        expect(vetAnswers(["2606:4700::1111", "::7f00:1"], policy)).toEqual({ ok: false, reason: "resolved_ipv4Compatible:non_public:loopback" });
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
        ["[::127.0.0.1]:443", undefined, { kind: "ip", address: "0:0:0:0:0:0:7f00:1", port: 443 }],
        ["[::ffff:127.0.0.1]:443", undefined, { kind: "ip", address: "0:0:0:0:0:ffff:7f00:1", port: 443 }],
        ["example.com:443", "EXAMPLE.com:443", { kind: "name", host: "example.com", port: 443 }],
    ])("%s (Host %s)", (target, host, expected) => expect(parseConnect(target, host)).toEqual({ ok: true, value: expected }));

    it.each<[string, string | undefined, string]>([
        ["example.com", undefined, "bad_authority"],
        ["example.com:0", undefined, "bad_port"],
        ["example.com:65536", undefined, "bad_port"],
        ["example.com:44a", undefined, "bad_port"],
        ["example.com:0443", undefined, "bad_port"],
        ["example.com:00443", undefined, "bad_port"],
        ["example.com:+443", undefined, "bad_port"],
        ["example.com:-1", undefined, "bad_port"],
        ["example.com:-0", undefined, "bad_port"],
        ["example.com:443.0", undefined, "bad_port"],
        ["example.com:0x1bb", undefined, "bad_port"],
        ["example.com:4e2", undefined, "bad_port"],
        ["example.com: 443", undefined, "bad_port"],
        ["example.com:\u0664\u0664\u0663", undefined, "bad_port"],
        ["example.com:", undefined, "bad_port"],
        ["[::1]:0443", undefined, "bad_port"],
        ["example.com:443", "example.com:0443", "authority_mismatch"],
        ["example.com:443", "example.com:+443", "authority_mismatch"],
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
        ["http://example.com:080/", undefined, "bad_port"],
        ["http://example.com:0/", undefined, "bad_port"],
        ["http://example.com:+80/", undefined, "bad_port"],
        ["http://example.com:-80/", undefined, "bad_port"],
        ["http://example.com:/", undefined, "bad_port"],
        ["http://[::1]:080/", undefined, "bad_port"],
        ["http://example.com/", "example.com:080", "authority_mismatch"],
        ["http://example.com/", "example.com:+80", "authority_mismatch"],
        ["http://example.com/", "example.com:", "authority_mismatch"],
        ["http://example.com:80/", "example.com:0080", "authority_mismatch"],
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
        const from = (remoteAddress: string | undefined) => agentForArrival({ via: "network", remoteAddress }, [agent]);
        expect(from("10.64.0.4")?.name).toBe("bart");
        expect(from("::ffff:10.64.0.4")?.name).toBe("bart");
        expect(from("10.64.0.16")).toBeUndefined();
        expect(from(undefined)).toBeUndefined();
        expect(hostMatches("x.a.com", "*.a.com")).toBe(true);
        expect(hostMatches("a.com", "*.a.com")).toBe(false);
    });

    describe("the agent a connection belongs to", () => {
        const homer: EgressAgent = { name: "homer", port: 20001, mode: "enforce", allow: [] };
        const marge: EgressAgent = { name: "marge", port: 20002, mode: "enforce", allow: [] };
        const agents = [agent, homer, marge];
        it.each<[string, Arrival, string | undefined]>([
            ["bart's network, main listener", { via: "network", remoteAddress: "10.64.0.4" }, "bart"],
            ["another network, main listener", { via: "network", remoteAddress: "10.64.0.20" }, undefined],
            ["no source address", { via: "network", remoteAddress: undefined }, undefined],
            ["homer's port", { via: "port", port: 20001 }, "homer"],
            ["marge's port", { via: "port", port: 20002 }, "marge"],
            ["a port with no agent", { via: "port", port: 20003 }, undefined],
            ["the main listener's port is no agent's", { via: "port", port: 3128 }, undefined],
        ])("%s: %s", (_case, arrival, expected) => expect(agentForArrival(arrival, agents)?.name).toBe(expected));

        it("never takes a port agent for a source address (port entries have no network)", () => {
            for (const remoteAddress of ["10.64.0.20", "127.0.0.1", "0.0.0.0", "::"]) expect(agentForArrival({ via: "network", remoteAddress }, [homer, marge])).toBeUndefined();
        });
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
