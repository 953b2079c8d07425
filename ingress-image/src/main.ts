// The Ingress's command line (see runtime/serviceCli.ts): serve, register, unregister (agents), healthcheck, and
// for users `register-user` (the entry as JSON on stdin) and `unregister-user <name>`.
import { readFileSync } from "node:fs";
import { jsonLogger } from "../../runtime/log";
import { removeEntry, watchEntries, writeEntry } from "../../runtime/registry";
import { main } from "../../runtime/serviceCli";
import { type IngressConfig, ingressAgentSchema, ingressUserSchema, loadIngressConfig, registryDirs } from "./config";
import { IngressServer } from "./server";

const log = jsonLogger("ingress");
const [command, name] = process.argv.slice(2);
let loaded: IngressConfig | undefined;
/** Read once: reading takes the key out of the environment. */
const config = () => (loaded ??= loadIngressConfig());

/** The user commands; any error is one `fatal` line (no stack, no input) and exit code 1, as for the others. */
function userCommand(run: () => void) {
    try {
        run();
    } catch (error) {
        log("fatal", { error: (error as Error).message.slice(0, 500) });
        process.exit(1);
    }
}

if (command === "register-user") {
    userCommand(() => {
        const user = ingressUserSchema.parse(JSON.parse(readFileSync(0, "utf8")));
        writeEntry(registryDirs(config()).users, user.name, user);
        log("user_registered", { user: user.name, agents: user.agents.join(",") });
    });
} else if (command === "unregister-user") {
    userCommand(() => log("user_unregistered", { user: name, existed: removeEntry(registryDirs(config()).users, name ?? "") }));
} else {
    main({
        log,
        settings: () => ({ registryDir: registryDirs(config()).agents, entrySchema: ingressAgentSchema, admin: config().admin[0] }),
        describe: (entry) => ({ gateway: `${entry.gateway.host}:${entry.gateway.port}` }),
        create() {
            const ingress = new IngressServer(config(), log);
            const stopWatchingUsers = watchEntries(registryDirs(config()).users, ingressUserSchema, log, (users) => ingress.setUsers(users));
            return {
                setAgents: async (agents) => ingress.setAgents(agents),
                listen: () => ingress.listen(),
                stop: () => {
                    stopWatchingUsers();
                    return ingress.close();
                },
            };
        },
    });
}
