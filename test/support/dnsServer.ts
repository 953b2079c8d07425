// A tiny authoritative DNS server over UDP on 127.0.0.1, for the gateway's real resolver in tests and bench/.
import dgram from "node:dgram";
import { once } from "node:events";
import ipaddr from "ipaddr.js";
import { parseQuery } from "../../egress-image/src/dns";

export const TYPE_A = 1;
export const TYPE_AAAA = 28;
const RCODE_NXDOMAIN = 3;

/** Names and their A / AAAA answers. A name not here gets NXDOMAIN; a name in `silent` gets no answer at all. */
export type Zone = Record<string, { a?: string[]; aaaa?: string[] }>;

export interface DnsServer {
    /** `127.0.0.1:port`, as the resolver's `servers` take it. */
    address: string;
    /** Every question received, in order. */
    asked: { name: string; type: number }[];
    close(): void;
}

/** A response to `query`: its header and question echoed, QR and RA set, then the answer records. */
function respond(query: Buffer, questionEnd: number, rcode: number, addresses: string[]): Buffer {
    const header = Buffer.from(query.subarray(0, questionEnd));
    header.writeUInt16BE(0x8000 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | rcode, 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(addresses.length, 6);
    header.writeUInt32BE(0, 8);
    const records = addresses.map((address) => {
        const rdata = Buffer.from(ipaddr.parse(address).toByteArray());
        const record = Buffer.alloc(12);
        record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
        record.writeUInt16BE(rdata.length === 4 ? TYPE_A : TYPE_AAAA, 2);
        record.writeUInt16BE(1, 4); // class IN
        record.writeUInt32BE(60, 6); // TTL
        record.writeUInt16BE(rdata.length, 10);
        return Buffer.concat([record, rdata]);
    });
    return Buffer.concat([header, ...records]);
}

export async function startDnsServer(zone: Zone, silent: ReadonlySet<string> = new Set()): Promise<DnsServer> {
    const socket = dgram.createSocket("udp4");
    const asked: DnsServer["asked"] = [];
    socket.on("message", (packet, remote) => {
        const question = parseQuery(packet);
        if (!question) return;
        asked.push({ name: question.name, type: question.type });
        if (silent.has(question.name)) return;
        const entry = Object.hasOwn(zone, question.name) ? zone[question.name] : undefined;
        const addresses = (question.type === TYPE_A ? entry?.a : question.type === TYPE_AAAA ? entry?.aaaa : undefined) ?? [];
        socket.send(respond(packet, question.questionEnd, entry ? 0 : RCODE_NXDOMAIN, addresses), remote.port, remote.address);
    });
    socket.bind(0, "127.0.0.1");
    await once(socket, "listening");
    return { address: `127.0.0.1:${socket.address().port}`, asked, close: () => socket.close() };
}
