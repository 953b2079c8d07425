import { describe, expect, it } from "vitest";
import { CONTAINER_HARDENING, type HardenedContainerSpec, hardenedContainerArgs, pidsLimitCommand } from "../components/hardening";

const spec = (overrides: Partial<HardenedContainerSpec> = {}): HardenedContainerSpec => ({
    containerName: "c",
    image: "img:1",
    user: "1000:1000",
    resources: { memoryMb: 256, cpus: 0.5, pids: 64 },
    labels: { role: "test" },
    healthcheck: { tests: ["CMD", "true"] },
    networks: [{ name: "n" }],
    ...overrides,
});

describe("hardenedContainerArgs", () => {
    it("applies every hardening setting of invariant 4 with the spec's limits", () => {
        const args = hardenedContainerArgs(spec({ tmpfs: { "/tmp": "32m" }, ports: [{ internal: 1, external: 2000, ip: "127.0.0.1" }] }));
        expect(args).toMatchObject({
            readOnly: true,
            privileged: false,
            capabilities: { drops: ["ALL"] },
            securityOpts: ["no-new-privileges:true"],
            user: "1000:1000",
            memory: 256,
            memorySwap: 256,
            cpus: "0.5",
            restart: "unless-stopped",
            logDriver: "json-file",
            tmpfs: { "/tmp": "rw,noexec,nosuid,nodev,size=32m" },
            ports: [{ internal: 1, external: 2000, ip: "127.0.0.1", protocol: "tcp" }],
        });
        expect(args.capabilities).not.toHaveProperty("adds");
    });

    it("does not share its defaults: a caller mutating the result cannot weaken the next container", () => {
        const first = hardenedContainerArgs(spec());
        (first.capabilities as { drops: string[] }).drops.pop();
        (first.securityOpts as string[]).pop();
        expect(hardenedContainerArgs(spec())).toMatchObject({ capabilities: { drops: ["ALL"] }, securityOpts: ["no-new-privileges:true"] });
        expect(CONTAINER_HARDENING.capabilities.drops).toEqual(["ALL"]);
    });

    it.each(["0:0", "root", "0", "root:1000", "node", "1000", "00:1000", "000:0", "-1:1000", " 1000:1000"])("refuses user '%s'", (user) => {
        expect(() => hardenedContainerArgs(spec({ user }))).toThrow(/numeric non-root uid:gid/);
    });

    it.each(["0.0.0.0", "::", "", "::0", "0:0:0:0:0:0:0:0", "::ffff:0.0.0.0"])("refuses to publish on '%s'", (ip) => {
        expect(() => hardenedContainerArgs(spec({ ports: [{ internal: 1, external: 2000, ip }] }))).toThrow(/one address, not all/);
    });

    it("publishes on one address it is given, IPv4 or IPv6", () => {
        for (const ip of ["127.0.0.1", "203.0.113.7", "::1"]) expect(hardenedContainerArgs(spec({ ports: [{ internal: 1, external: 2000, ip }] })).ports).toEqual([{ internal: 1, external: 2000, ip, protocol: "tcp" }]);
    });

    it.each(["kernel.shm_rmid_forced", "vm.overcommit_memory", "network.x", ""])("refuses the sysctl '%s' (not in the container's network namespace)", (name) => {
        expect(() => hardenedContainerArgs(spec({ sysctls: { [name]: "1" } }))).toThrow(/not namespaced/);
    });

    it.each<[string, Partial<HardenedContainerSpec>, Record<string, unknown>]>([
        ["a long-running service: kept running, restarted unless stopped, on its networks", {}, { mustRun: true, restart: "unless-stopped", networksAdvanced: [{ name: "n" }], networkMode: undefined, attach: undefined }],
        ["a one-shot job: waited for, never restarted", { runOnce: true }, { attach: true, mustRun: false, restart: "no", networksAdvanced: [{ name: "n" }] }],
        ["a container with no networks: network mode none, not Docker's default bridge", { networks: [] }, { networkMode: "none", networksAdvanced: undefined }],
        ["a container on another OCI runtime", { runtime: "runsc" }, { runtime: "runsc" }],
    ])("declares %s", (_case, overrides, expected) => {
        const args: Record<string, unknown> = { ...hardenedContainerArgs(spec(overrides)) };
        for (const [key, value] of Object.entries(expected)) expect(args[key], key).toEqual(value);
        expect(args).toMatchObject({ readOnly: true, capabilities: { drops: ["ALL"] }, securityOpts: ["no-new-privileges:true"] });
    });

    it("sets the pids cgroup limit with docker update, re-run when the container changes", () => {
        const cmd = pidsLimitCommand("abc123", 64, "unix:///var/run/docker.sock");
        expect(cmd.environment).toEqual({ DOCKER_HOST: "unix:///var/run/docker.sock" });
        expect(cmd.triggers).toEqual(["abc123", 64]);
    });
});
