// Validates a declared Kubernetes resource against the OpenAPI schema of a current Kubernetes release, as compiled
// by the npm package kubernetes-models (offline: the schemas ship in the package).
import * as apps from "kubernetes-models/apps/v1";
import * as networking from "kubernetes-models/networking.k8s.io/v1";
import * as core from "kubernetes-models/v1";

const MODELS: Record<string, { new (data: any): { validate(): void } }> = {
    "core/v1:Namespace": core.Namespace,
    "core/v1:Secret": core.Secret,
    "core/v1:Service": core.Service,
    "core/v1:PersistentVolumeClaim": core.PersistentVolumeClaim,
    "apps/v1:Deployment": apps.Deployment,
    "apps/v1:StatefulSet": apps.StatefulSet,
    "networking.k8s.io/v1:NetworkPolicy": networking.NetworkPolicy,
};

/** Schema errors of one resource (empty when valid). A Patch resource is checked as the object it patches. */
export function validateManifest(pulumiType: string, manifest: Record<string, unknown>): string[] {
    const kind = pulumiType.replace(/^kubernetes:/, "").replace(/Patch$/, "");
    const Model = MODELS[kind];
    if (!Model) return [`no schema for ${pulumiType}: add it to test/support/kubernetesSchema.ts`];
    try {
        new Model(manifest).validate();
        return [];
    } catch (error) {
        return [(error as Error).message];
    }
}
