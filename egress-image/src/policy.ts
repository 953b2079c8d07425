// The pure core of EgressGateway: parse what an agent asks for, classify addresses, decide. No I/O.
import ipaddr from "ipaddr.js";
import { canonicalHost, hostMatches } from "../../runtime/hostnames";

export interface AllowRule {
    /** Canonical host or `*.suffix` glob. */
    host: string;
    ports: number[];
}

export interface EgressAgent {
    name: string;
    subnet: string;
    mode: "enforce" | "report";
    allow: AllowRule[];
}

/** What the agent asked to reach: a DNS name, or an IP literal in canonical form. */
export type Target = { kind: "name"; host: string; port: number } | { kind: "ip"; address: string; port: number };

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

const deny = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

/**
 * Canonicalises a request's host the way a URL parser does (so 0x7f.1, 2130706433, 0177.0.0.1 and 127.1 are
 * all 127.0.0.1, and IDNs become punycode), and refuses anything with userinfo, zones, paths or odd characters.
 */
export function parseHost(rawHost: string, port: number): Parsed<Target> {
    if (rawHost.length === 0 || rawHost.length > 255) return deny("bad_host");
    if (/[@/\\?#%\s]/.test(rawHost)) return deny("bad_host");
    if (rawHost.startsWith("[")) {
        if (!rawHost.endsWith("]")) return deny("bad_host");
        const inner = rawHost.slice(1, -1);
        if (!ipaddr.IPv6.isValid(inner)) return deny("bad_host");
        return { ok: true, value: { kind: "ip", address: ipaddr.IPv6.parse(inner).toNormalizedString(), port } };
    }
    if (rawHost.includes(":")) return deny("bad_host"); // an unbracketed IPv6 literal or a stray colon
    let hostname: string;
    try {
        hostname = new URL(`http://${rawHost}`).hostname;
    } catch {
        return deny("bad_host");
    }
    if (ipaddr.IPv4.isValidFourPartDecimal(hostname)) return { ok: true, value: { kind: "ip", address: hostname, port } };
    const host = canonicalHost(hostname);
    if (!host || host.startsWith("*.")) return deny("bad_host");
    return { ok: true, value: { kind: "name", host, port } };
}

function parsePort(text: string): number | undefined {
    if (!/^\d{1,5}$/.test(text)) return undefined;
    const port = Number(text);
    return port >= 1 && port <= 65535 ? port : undefined;
}

/** Splits `host:port` / `[v6]:port` authority; the port is required. */
export function parseAuthority(authority: string): Parsed<Target> {
    const match = /^(\[[^\]]*\]|[^:[\]]*):([^:]*)$/.exec(authority);
    if (!match) return deny("bad_authority");
    const port = parsePort(match[2]);
    if (port === undefined) return deny("bad_port");
    return parseHost(match[1], port);
}

function sameTarget(a: Target, b: Target): boolean {
    return a.kind === b.kind && a.port === b.port && (a.kind === "name" ? a.host === (b as typeof a).host : a.address === (b as typeof a).address);
}

/** A CONNECT request: the target is its authority; a Host header, if sent, must name the same place. */
export function parseConnect(target: string, hostHeader: string | undefined): Parsed<Target> {
    const parsed = parseAuthority(target);
    if (!parsed.ok || hostHeader === undefined) return parsed;
    const host = parseAuthority(hostHeader);
    if (!host.ok || !sameTarget(host.value, parsed.value)) return deny("authority_mismatch");
    return parsed;
}

/** An absolute-form plain-HTTP request: http:// only (https goes through CONNECT), no userinfo, Host must agree. */
export function parseAbsoluteHttp(target: string, hostHeader: string | undefined): Parsed<{ target: Target; path: string; authority: string }> {
    if (!/^http:\/\//i.test(target)) return deny(/^https:\/\//i.test(target) ? "scheme" : "not_proxy_request");
    const afterScheme = target.slice("http://".length);
    const authority = afterScheme.split(/[/?#]/, 1)[0];
    if (authority.includes("@")) return deny("userinfo");
    const withPort = /:\d+$/.test(authority) && !/^\[[^\]]*\]$/.test(authority) ? authority : `${authority}:80`;
    const parsed = parseAuthority(withPort);
    if (!parsed.ok) return parsed;
    if (hostHeader !== undefined) {
        const hostWithPort = /:\d+$/.test(hostHeader) && !/^\[[^\]]*\]$/.test(hostHeader) ? hostHeader : `${hostHeader}:80`;
        const host = parseAuthority(hostWithPort);
        if (!host.ok || !sameTarget(host.value, parsed.value)) return deny("authority_mismatch");
    }
    const path = afterScheme.slice(authority.length) || "/";
    if (!path.startsWith("/") || path.includes("#") || /[\s\\]/.test(path)) return deny("bad_path");
    return { ok: true, value: { target: parsed.value, path, authority } };
}

/** Ranges never reachable through the gateway, beyond what ipaddr.js already calls non-unicast. */
export const DENY_TABLE: readonly string[] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    // Cloud metadata services, named even where a range above already holds them.
    "169.254.169.254/32",
    "100.100.100.200/32",
    "fd00:ec2::254/128",
];

const DENY_CIDRS = DENY_TABLE.map((cidr) => ipaddr.parseCIDR(cidr));

export interface AddressPolicy {
    /** The gateway's own addresses: never a destination. */
    ownAddresses: readonly string[];
    /** Ranges exempted from the private-range denial. Empty by default; tests use loopback. */
    allowRanges: readonly string[];
}

/**
 * Why an address may not be dialled, or undefined when it is public unicast. IPv4-mapped IPv6 is judged as
 * the IPv4 it carries; NAT64, 6to4 and Teredo forms are refused outright.
 */
export function addressDenial(address: string, policy: AddressPolicy): string | undefined {
    let parsed: ipaddr.IPv4 | ipaddr.IPv6;
    try {
        parsed = ipaddr.parse(address);
    } catch {
        return "bad_address";
    }
    if (parsed.kind() === "ipv6" && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) parsed = (parsed as ipaddr.IPv6).toIPv4Address();
    const canonical = parsed.toString();
    if (policy.ownAddresses.some((own) => ipaddr.isValid(own) && ipaddr.process(own).toString() === canonical)) return "own_address";
    if (policy.allowRanges.some((range) => inRange(parsed, range))) return undefined;
    const range = parsed.range();
    if (range !== "unicast") return `non_public:${range}`;
    const listed = DENY_CIDRS.find(([base, bits]) => base.kind() === parsed.kind() && parsed.match([base, bits] as never));
    return listed ? `deny_table:${listed[0].toString()}/${listed[1]}` : undefined;
}

function inRange(address: ipaddr.IPv4 | ipaddr.IPv6, cidr: string): boolean {
    const [base, bits] = ipaddr.parseCIDR(cidr);
    return base.kind() === address.kind() && address.match([base, bits] as never);
}

/** The agent whose subnet holds the source address: identity comes from the network, never from the request. */
export function agentForSource(remoteAddress: string | undefined, agents: readonly EgressAgent[]): EgressAgent | undefined {
    if (!remoteAddress || !ipaddr.isValid(remoteAddress)) return undefined;
    const source = ipaddr.process(remoteAddress);
    return agents.find((agent) => inRange(source, agent.subnet));
}

export function allowedByRules(target: Target, rules: readonly AllowRule[]): boolean {
    if (target.kind !== "name") return false; // rules name hosts; IP literals are never allowlisted
    return rules.some((rule) => rule.ports.includes(target.port) && hostMatches(target.host, rule.host));
}

export type Decision =
    | { allow: true; reason: "allowlisted" | "report_mode"; wouldDeny?: string }
    | { allow: false; reason: string };

/** The allowlist step. Address safety is separate and applies in every mode. */
export function decideTarget(agent: EgressAgent | undefined, target: Target): Decision {
    if (!agent) return { allow: false, reason: "unknown_source" };
    if (allowedByRules(target, agent.allow)) return { allow: true, reason: "allowlisted" };
    const reason = target.kind === "ip" ? "ip_literal" : "not_allowlisted";
    if (agent.mode === "report") return { allow: true, reason: "report_mode", wouldDeny: reason };
    return { allow: false, reason };
}

/**
 * Vets a name's answers: every one must be public, or the name is refused (one private answer among public
 * ones is how rebinding and split-horizon tricks get in). Returns the address to dial.
 */
export function vetAnswers(answers: readonly string[], policy: AddressPolicy): { ok: true; address: string } | { ok: false; reason: string } {
    if (answers.length === 0) return { ok: false, reason: "no_answer" };
    for (const answer of answers) {
        const denial = addressDenial(answer, policy);
        if (denial) return { ok: false, reason: `resolved_${denial}` };
    }
    const first = ipaddr.process(answers.find((a) => ipaddr.process(a).kind() === "ipv4") ?? answers[0]).toString();
    return { ok: true, address: first };
}
