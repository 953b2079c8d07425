// The CrossGuard pack: `pulumi preview --policy-pack policy`. The policies themselves live in policies.ts.
import { PolicyPack } from "@pulumi/policy";
import { CONTAINER, POLICIES, type PolicyResource, declaredExceptions } from "./policies";

const excuse = (resource: PolicyResource, policy: string) => (resource.type === CONTAINER ? declaredExceptions(resource.props).get(policy) : undefined);

new PolicyPack("openclaw", {
    policies: [
        ...POLICIES.map((policy) => ({
            name: policy.name,
            description: policy.description,
            enforcementLevel: policy.enforcementLevel,
            validateResource: (args: { type: string; name: string; props: Record<string, any> }, reportViolation: (message: string) => void) => {
                const resource = { type: args.type, name: args.name, props: args.props };
                if (policy.enforcementLevel === "mandatory" && excuse(resource, policy.name) !== undefined) return;
                for (const message of policy.validate(resource)) reportViolation(message);
            },
        })),
        {
            name: "declared-hardening-exceptions",
            description: "Mandatory rules a container declares it cannot meet, each with its reason (openclaw.hardening-exceptions).",
            enforcementLevel: "advisory",
            validateResource: (args, reportViolation) => {
                const resource = { type: args.type, name: args.name, props: args.props };
                for (const policy of POLICIES.filter((p) => p.enforcementLevel === "mandatory")) {
                    const reason = excuse(resource, policy.name);
                    if (reason === undefined) continue;
                    for (const message of policy.validate(resource)) reportViolation(`${policy.name}: ${message} (declared exception: ${reason})`);
                }
            },
        },
    ],
});
