// The CrossGuard pack: `pulumi preview --policy-pack policy`. The policies themselves live in policies.ts.
import { PolicyPack } from "@pulumi/policy";
import { POLICIES, type PolicyResource, STACK_POLICIES, declaredExceptions, mayDeclareExceptions } from "./policies";

const excuse = (resource: PolicyResource, policy: string) => (mayDeclareExceptions(resource) ? declaredExceptions(resource.props).get(policy) : undefined);

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
        ...STACK_POLICIES.map((policy) => ({
            name: policy.name,
            description: policy.description,
            enforcementLevel: policy.enforcementLevel,
            validateStack: (args: { resources: { type: string; name: string; props: Record<string, any> }[] }, reportViolation: (message: string) => void) => {
                for (const message of policy.validateStack(args.resources.map((r) => ({ type: r.type, name: r.name, props: r.props })))) reportViolation(message);
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
