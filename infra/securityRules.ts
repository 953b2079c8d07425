// Security facts that several layers check (the config schema, the components that build containers and pods, the
// policy pack): one definition each, so no layer can be looser than another.
import ipaddr from "ipaddr.js";

const DIGEST = /@sha256:[0-9a-f]{64}$/;
/** Docker's tag grammar. */
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** An image reference pinned by digest (`name@sha256:<64 hex>`). */
export function isPinnedByDigest(reference: string): boolean {
    return DIGEST.test(reference);
}

/** An image reference pinned to a digest, or to a well-formed tag other than `latest`. */
export function isPinnedImage(reference: string): boolean {
    if (isPinnedByDigest(reference)) return true;
    const lastSegment = reference.slice(reference.lastIndexOf("/") + 1);
    const colon = lastSegment.indexOf(":");
    if (colon < 0) return false;
    const tag = lastSegment.slice(colon + 1);
    return TAG.test(tag) && tag !== "latest";
}

/**
 * Whether a Docker `user` (`name`, `uid`, `name:group` or `uid:gid`) is root: the name `root`, or uid 0 however it is
 * written (Docker reads `00` as 0 too).
 */
export function isRootUser(user: string): boolean {
    const name = user.split(":")[0];
    return name === "root" || /^0+$/.test(name);
}

/** The uid and gid of a numeric, non-root `uid:gid`; undefined for anything else (names, a uid alone, root). */
export function numericNonRootUser(user: string): { uid: number; gid: number } | undefined {
    const match = /^(\d+):(\d+)$/.exec(user);
    if (!match || isRootUser(user)) return undefined;
    return { uid: Number(match[1]), gid: Number(match[2]) };
}

/** Whether a port published on `ip` would listen on every address: no address given, or an unspecified one in any spelling. */
export function publishesOnEveryAddress(ip: string | undefined): boolean {
    if (ip === undefined || ip === "") return true;
    return ipaddr.isValid(ip) && ipaddr.process(ip).range() === "unspecified";
}

/** A sysctl a container may set: one of its own network namespace (`net.*`), never one of the host kernel's. */
export function isNamespacedSysctl(name: string): boolean {
    return name.startsWith("net.");
}
