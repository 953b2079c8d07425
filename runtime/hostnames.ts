import { domainToASCII } from "node:url";

const HOST_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * Canonicalises a host name, or an allowlist glob `*.suffix`: lowercase, no trailing dot, IDN to punycode.
 * Returns undefined for anything that is not a plain DNS name (IP literals, paths, userinfo, ports).
 * The stack config and EgressGateway both use this, so a rule matches exactly what the gateway compares.
 */
export function canonicalHost(input: string): string | undefined {
    const wildcard = input.startsWith("*.");
    const bare = (wildcard ? input.slice(2) : input).replace(/\.$/, "");
    // domainToASCII parses a URL host: it would cut "a.com/x" to "a.com" and turn "0x7f.1" into an address.
    if (!/^[\p{L}\p{N}.-]+$/u.test(bare)) return undefined;
    const ascii = domainToASCII(bare.toLowerCase());
    if (ascii === "" || ascii.length > 253) return undefined;
    const labels = ascii.split(".");
    if (labels.length < 2 || !labels.every((label) => HOST_LABEL.test(label))) return undefined;
    if (/^(\d+|0x[0-9a-f]*)$/.test(labels[labels.length - 1])) return undefined; // an IP literal, not a name
    return (wildcard ? "*." : "") + ascii;
}

/** Whether a canonical host matches a canonical rule: exact, or a `*.suffix` glob (subdomains only, not the apex). */
export function hostMatches(host: string, rule: string): boolean {
    if (rule.startsWith("*.")) return host.endsWith(rule.slice(1)) && host.length > rule.length - 1;
    return host === rule;
}
