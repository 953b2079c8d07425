// The pure core of EgressGateway: parse what an agent asks for, classify addresses, decide. No I/O.
import net from "node:net";
import ipaddr from "ipaddr.js";
import { canonicalHost, hostMatches } from "../../runtime/hostnames";
import type { AllowRule, EgressAgent } from "../../contracts/egressGateway";
import { type Arrival, arrivedAs } from "../../runtime/registry";

export type { AllowRule, EgressAgent } from "../../contracts/egressGateway";

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
        const address = parseAddress(rawHost.slice(1, -1));
        if (!(address instanceof ipaddr.IPv6)) return deny("bad_host");
        return { ok: true, value: { kind: "ip", address: address.toNormalizedString(), port } };
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

/** Decimal without sign or leading zeros: `0443` and `+443` are refused, not read as 443. */
function parsePort(text: string): number | undefined {
    if (!/^[1-9]\d{0,4}$/.test(text)) return undefined;
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

/** Port 80 filled in where no port is written; a written port, even an empty one, must then be valid. */
function withDefaultPort(authority: string): string {
    return /^(\[[^\]]*\]|[^:[\]]*)$/.test(authority) ? `${authority}:80` : authority;
}

/** An absolute-form plain-HTTP request: http:// only (https goes through CONNECT), no userinfo, Host must agree. */
export function parseAbsoluteHttp(target: string, hostHeader: string | undefined): Parsed<{ target: Target; path: string; authority: string }> {
    if (!/^http:\/\//i.test(target)) return deny(/^https:\/\//i.test(target) ? "scheme" : "not_proxy_request");
    const afterScheme = target.slice("http://".length);
    const authority = afterScheme.split(/[/?#]/, 1)[0];
    if (authority.includes("@")) return deny("userinfo");
    const parsed = parseAuthority(withDefaultPort(authority));
    if (!parsed.ok) return parsed;
    if (hostHeader !== undefined) {
        const host = parseAuthority(withDefaultPort(hostHeader));
        if (!host.ok || !sameTarget(host.value, parsed.value)) return deny("authority_mismatch");
    }
    const path = afterScheme.slice(authority.length) || "/";
    if (!path.startsWith("/") || path.includes("#") || /[\s\\]/.test(path)) return deny("bad_path");
    return { ok: true, value: { target: parsed.value, path, authority } };
}

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/**
 * An address as the system will dial it. Resolver answers and canonical IP literals only: strict dotted IPv4, or
 * IPv6 without a zone (Node's own checks, which are inet_pton's). ipaddr.js reads IPv4-compatible `::a.b.c.d` as IPv4-mapped `::ffff:a.b.c.d`, a different
 * address, so IPv6 goes through the WHATWG URL parser first (as inet_pton reads it), which writes it back in hex.
 */
export function parseAddress(text: string): Address | undefined {
    if (net.isIPv4(text)) return ipaddr.IPv4.parse(text);
    if (!net.isIPv6(text) || text.includes("%")) return undefined;
    return ipaddr.IPv6.parse(new URL(`http://[${text}]/`).hostname.slice(1, -1));
}

/** How an IPv6 form carries an IPv4 address. */
const carriedIPv4 = {
    /** In the last 32 bits (IPv4-compatible, IPv4-translated, NAT64 with the well-known /96 prefix). */
    last32: (bytes: number[]) => bytes.slice(12, 16),
    /** In bits 16 to 47 (RFC 3056). */
    sixToFour: (bytes: number[]) => bytes.slice(2, 6),
    /** Teredo's client address, complemented in the last 32 bits (RFC 4380). */
    teredoClient: (bytes: number[]) => bytes.slice(12, 16).map((byte) => byte ^ 0xff),
};

interface SpecialRange {
    cidr: string;
    /** The reason a denial names. */
    name: string;
    /** Where an IPv6 form carries an IPv4 address, which is then judged as itself first. */
    carries?: keyof typeof carriedIPv4;
    /** The form reaches the IPv4 address it carries (a translation), so is exactly as public as that address. */
    translates?: boolean;
}

/**
 * The IANA IPv4 Special-Purpose Address Registry (2025), whatever its "globally reachable" column says, plus
 * multicast and the cloud metadata addresses (named, though ranges above hold them). IPv4 outside all of these is
 * public. The most specific match names the reason.
 */
export const IPV4_SPECIAL: readonly SpecialRange[] = [
    { cidr: "0.0.0.0/8", name: "thisNetwork" },
    { cidr: "0.0.0.0/32", name: "unspecified" },
    { cidr: "10.0.0.0/8", name: "private" },
    { cidr: "100.64.0.0/10", name: "carrierGradeNat" },
    { cidr: "127.0.0.0/8", name: "loopback" },
    { cidr: "169.254.0.0/16", name: "linkLocal" },
    { cidr: "172.16.0.0/12", name: "private" },
    { cidr: "192.0.0.0/24", name: "ietfProtocol" },
    { cidr: "192.0.0.0/29", name: "dsLite" },
    { cidr: "192.0.0.8/32", name: "dummy" },
    { cidr: "192.0.0.9/32", name: "pcpAnycast" },
    { cidr: "192.0.0.10/32", name: "turnAnycast" },
    { cidr: "192.0.0.170/32", name: "nat64Discovery" },
    { cidr: "192.0.0.171/32", name: "nat64Discovery" },
    { cidr: "192.0.2.0/24", name: "documentation" },
    { cidr: "192.31.196.0/24", name: "as112" },
    { cidr: "192.52.193.0/24", name: "amt" },
    { cidr: "192.88.99.0/24", name: "6to4Relay" },
    { cidr: "192.168.0.0/16", name: "private" },
    { cidr: "192.175.48.0/24", name: "as112" },
    { cidr: "198.18.0.0/15", name: "benchmarking" },
    { cidr: "198.51.100.0/24", name: "documentation" },
    { cidr: "203.0.113.0/24", name: "documentation" },
    { cidr: "240.0.0.0/4", name: "reserved" },
    { cidr: "255.255.255.255/32", name: "broadcast" },
    { cidr: "224.0.0.0/4", name: "multicast" },
    { cidr: "169.254.169.254/32", name: "cloudMetadata" },
    { cidr: "100.100.100.200/32", name: "cloudMetadata" },
];

/** IPv6 is public only in global unicast, and outside every range of IPV6_SPECIAL. */
export const IPV6_GLOBAL_UNICAST = "2000::/3";

/**
 * The IANA IPv6 Special-Purpose Address Registry (2025), plus the deprecated forms and ranges older stacks still
 * route (IPv4-compatible, IPv4-translated, site-local), multicast and the cloud metadata address. IPv4-mapped
 * (::ffff:0:0/96) is not here: the gateway dials it as the IPv4 address it is.
 */
export const IPV6_SPECIAL: readonly SpecialRange[] = [
    { cidr: "::1/128", name: "loopback" },
    { cidr: "::/128", name: "unspecified" },
    { cidr: "::/96", name: "ipv4Compatible", carries: "last32" },
    { cidr: "::ffff:0:0:0/96", name: "ipv4Translated", carries: "last32" },
    { cidr: "64:ff9b::/96", name: "nat64", carries: "last32", translates: true },
    // Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the operator's prefix length.
    { cidr: "64:ff9b:1::/48", name: "nat64LocalUse" },
    { cidr: "100::/64", name: "discardOnly" },
    { cidr: "100:0:0:1::/64", name: "dummyPrefix" },
    { cidr: "2001::/23", name: "ietfProtocol" },
    { cidr: "2001::/32", name: "teredo", carries: "teredoClient" },
    { cidr: "2001:1::1/128", name: "pcpAnycast" },
    { cidr: "2001:1::2/128", name: "turnAnycast" },
    { cidr: "2001:1::3/128", name: "dnsSdSrpAnycast" },
    { cidr: "2001:2::/48", name: "benchmarking" },
    { cidr: "2001:3::/32", name: "amt" },
    { cidr: "2001:4:112::/48", name: "as112" },
    { cidr: "2001:10::/28", name: "orchid" },
    { cidr: "2001:20::/28", name: "orchid2" },
    { cidr: "2001:30::/28", name: "droneRemoteId" },
    { cidr: "2001:db8::/32", name: "documentation" },
    { cidr: "2002::/16", name: "6to4", carries: "sixToFour", translates: true },
    { cidr: "2620:4f:8000::/48", name: "as112" },
    { cidr: "3fff::/20", name: "documentation" },
    { cidr: "5f00::/16", name: "segmentRouting" },
    { cidr: "fc00::/7", name: "uniqueLocal" },
    { cidr: "fe80::/10", name: "linkLocal" },
    { cidr: "fec0::/10", name: "siteLocal" },
    { cidr: "ff00::/8", name: "multicast" },
    { cidr: "fd00:ec2::254/128", name: "cloudMetadata" },
];

type ParsedRange = SpecialRange & { range: [Address, number] };

/** Most specific first, so the first match is the one to name. */
function compile(table: readonly SpecialRange[]): ParsedRange[] {
    return table.map((entry) => ({ ...entry, range: ipaddr.parseCIDR(entry.cidr) })).sort((a, b) => b.range[1] - a.range[1]);
}

const IPV4_RANGES = compile(IPV4_SPECIAL);
const IPV6_RANGES = compile(IPV6_SPECIAL);
const GLOBAL_UNICAST = ipaddr.parseCIDR(IPV6_GLOBAL_UNICAST);

function inRange(address: Address, [base, bits]: [Address, number]): boolean {
    return base.kind() === address.kind() && address.match(base, bits);
}

export interface AddressPolicy {
    /** The gateway's own addresses: never a destination. */
    ownAddresses: readonly string[];
    /** Ranges exempted from the private-range denial. Empty by default; tests use loopback. */
    allowRanges: readonly string[];
}

/** IPv4-mapped IPv6 is an IPv4 socket: it is judged, and dialled, as that IPv4 address. */
function unmapped(address: Address): Address {
    return address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress() ? address.toIPv4Address() : address;
}

/** Canonical text of the gateway's own addresses, memoised: they are few, and judged against on every request. */
const ownCanonical = new Map<string, string | undefined>();

function isOwn(address: Address, ownAddresses: readonly string[]): boolean {
    if (ownCanonical.size > 4096) ownCanonical.clear();
    const text = address.toString();
    return ownAddresses.some((own) => {
        if (!ownCanonical.has(own)) {
            const parsed = parseAddress(own);
            ownCanonical.set(own, parsed && unmapped(parsed).toString());
        }
        return ownCanonical.get(own) === text;
    });
}

/** Why an address (IPv4-mapped already unwrapped) may not be dialled, ignoring the allow-range override. */
function denial(address: Address, ownAddresses: readonly string[]): string | undefined {
    return isOwn(address, ownAddresses) ? "own_address" : rangeDenial(address, ownAddresses);
}

/** Which special range holds the address; an IPv6 form carrying an IPv4 address is judged by that address first. */
function rangeDenial(address: Address, ownAddresses: readonly string[]): string | undefined {
    if (address instanceof ipaddr.IPv4) {
        const special = IPV4_RANGES.find((entry) => inRange(address, entry.range));
        return special && `non_public:${special.name}`;
    }
    const special = IPV6_RANGES.find((entry) => inRange(address, entry.range));
    if (special?.carries) {
        const carried = new ipaddr.IPv4(carriedIPv4[special.carries](address.toByteArray()));
        const carriedDenial = denial(carried, ownAddresses);
        if (carriedDenial) return `${special.name}:${carriedDenial}`;
        if (special.translates) return undefined;
    }
    if (special) return `non_public:${special.name}`;
    return inRange(address, GLOBAL_UNICAST) ? undefined : "non_public:notGlobalUnicast";
}

/**
 * Vets one address: undefined (with the address to dial) when it is public, else why not. Embedded IPv4 in any
 * IPv6 form is judged as that IPv4 first; the allow-range override applies to the dialled address only.
 */
function vetAddress(text: string, policy: AddressPolicy): { ok: true; address: Address } | { ok: false; reason: string } {
    const parsed = parseAddress(text);
    if (!parsed) return { ok: false, reason: "bad_address" };
    const address = unmapped(parsed);
    if (isOwn(address, policy.ownAddresses)) return { ok: false, reason: "own_address" };
    if (policy.allowRanges.some((cidr) => inRange(address, ipaddr.parseCIDR(cidr)))) return { ok: true, address };
    const reason = rangeDenial(address, policy.ownAddresses);
    return reason ? { ok: false, reason } : { ok: true, address };
}

/** Why an address may not be dialled, or undefined when it is public. */
export function addressDenial(text: string, policy: AddressPolicy): string | undefined {
    const vetted = vetAddress(text, policy);
    return vetted.ok ? undefined : vetted.reason;
}

/**
 * The agent a connection belongs to: on an agent's port, the agent registered for that port (whatever the source);
 * on the main listener, the subnet agent whose network holds the source. Never anything the request says.
 */
export function agentForArrival(arrival: Arrival, agents: readonly EgressAgent[]): EgressAgent | undefined {
    return agents.find((agent) => arrivedAs(agent, arrival));
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
 * ones is how rebinding and split-horizon tricks get in). Returns the address to dial: the first IPv4 one, if any.
 */
export function vetAnswers(answers: readonly string[], policy: AddressPolicy): AddressVerdict {
    if (answers.length === 0) return { ok: false, reason: "no_answer" };
    const dialable: Address[] = [];
    for (const answer of answers) {
        const vetted = vetAddress(answer, policy);
        if (!vetted.ok) return { ok: false, reason: `resolved_${vetted.reason}` };
        dialable.push(vetted.address);
    }
    return { ok: true, address: (dialable.find((address) => address.kind() === "ipv4") ?? dialable[0]).toString() };
}

export type AddressVerdict = { ok: true; address: string } | { ok: false; reason: string };

/** Vets an IP literal target: the address to dial, or why not. */
export function vetLiteral(address: string, policy: AddressPolicy): AddressVerdict {
    const vetted = vetAddress(address, policy);
    return vetted.ok ? { ok: true, address: vetted.address.toString() } : vetted;
}
